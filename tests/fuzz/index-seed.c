/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The fixed QEMU stream of fuzz-index and its seed indexes (index-seed.h).
 */
#include "index-seed.h"
#include "migration/format/format.h"
#include "qemu-stream.h"

static const char *const caps[] = { "mapped-ram", NULL };

/* Few stored pages; pc.ram crosses a segment (8192 pages) of the index. */
static const qs_block blocks[] = {
    { .idstr = "pc.ram", .length = 8300 * QS_PAGE, .stored_every = 97, .seed = 21 },
    { .idstr = "/rom@etc/acpi/tables", .length = 10 * QS_PAGE, .stored_every = 3, .seed = 22 },
    { .idstr = "pc.bios", .length = 16 * QS_PAGE, .zero_every = 4, .seed = 23 },
};

static const qs_desc desc = {
    .machine = "pc-i440fx-10.0", .caps = caps, .target_page_bits = true, .section_id = 2,
    .blocks = blocks, .nblocks = G_N_ELEMENTS(blocks), .devstate_len = 96,
    .json = "{\"page_size\": 4096, \"devices\": []}",
};

bool index_seed_stream(const char *path, GError **errp)
{
    qs_layout l;
    bool ok = qs_write(&desc, path, &l, errp);

    qs_layout_clear(&l);
    return ok;
}

/* Hot-page entries (docs/format.md, section type 2): block, 0, page; little-endian. */
static GBytes *hot_list(void)
{
    static const struct { uint32_t block; uint64_t page; } pick[] = {
        { 0, 0 }, { 0, 97 }, { 0, 8245 }, { 1, 3 }, { 2, 15 }, { 0, 1 },
    };
    GByteArray *a = g_byte_array_new();

    for (size_t i = 0; i < G_N_ELEMENTS(pick); i++) {
        uint8_t e[16] = { 0 };
        sl_put_le32(e, pick[i].block);
        sl_put_le64(e + 8, pick[i].page);
        g_byte_array_append(a, e, sizeof(e));
    }
    return g_byte_array_free_to_bytes(a);
}

bool index_seed_index(const char *stream, const char *out, bool hot, GError **errp)
{
    sl_snapshot *s = sl_snapshot_open(stream, errp);
    g_autoptr(GBytes) list = hot ? hot_list() : NULL;
    bool ok = s && sl_index_write(s, out, list, errp);

    sl_snapshot_close(s);
    return ok;
}
