/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Seeds for the fuzz harnesses, made at run time from the project's own
 * writers so they always match the current formats, and the way back from
 * a reader input to a snapshot file:
 *
 *   fuzz-seeds encode SNAP OUT      a snapshot -> a fuzz-reader input (resealed)
 *   fuzz-seeds decode INPUT SNAP    a fuzz-reader input -> the file it opens
 *   fuzz-seeds protocol DIR         one packet per message type, by sl_msg_encode()
 *   fuzz-seeds qemu DIR             QEMU mapped-ram streams (tests/unit/qemu-stream.h)
 *                                   as fuzz-qemu inputs
 *   fuzz-seeds qemu-decode INPUT F  a fuzz-qemu input -> the stream file it opens
 *   fuzz-seeds index DIR            indexes of fuzz-index's fixed stream (index-seed.h),
 *                                   with and without a hot-page list, as fuzz-index inputs
 *   fuzz-seeds index-stream FILE    that fixed stream, to attach a fuzz-index input to
 *   fuzz-seeds parent FILE          the parent incremental reader inputs name (chain-seed.h)
 *   fuzz-seeds chain FILE           a child of that parent (to encode as a reader seed)
 *
 * `decode` and `qemu-decode` turn a crash artifact into a file
 * `snapload inspect` can read.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "snapload/snapload.h"
#include "migration/protocol.h"
#include "chain-seed.h"
#include "index-seed.h"
#include "qemu-stream.h"
#include "reseal.h"
#include "sparse.h"

static int fail(const char *what, GError *err)
{
    fprintf(stderr, "fuzz-seeds: %s%s%s\n", what, err ? ": " : "", err ? err->message : "");
    g_clear_error(&err);
    return 1;
}

static int encode(const char *snap, const char *out)
{
    g_autofree char *data = NULL;
    g_autoptr(GByteArray) in = g_byte_array_new();
    const uint8_t flags = SPARSE_RESEAL;
    GError *err = NULL;
    gsize len;

    if (!g_file_get_contents(snap, &data, &len, &err)) {
        return fail("reading the snapshot", err);
    }
    g_byte_array_append(in, &flags, 1);
    sparse_encode((const uint8_t *)data, len, in);
    if (!g_file_set_contents(out, (const char *)in->data, in->len, &err)) {
        return fail("writing the seed", err);
    }
    return 0;
}

/* Writes the file fuzz input @input stands for to @snap, resealed if it asks and @reseal_ok. */
static int decode_input(const char *input, const char *snap, bool reseal_ok)
{
    g_autofree char *data = NULL;
    GError *err = NULL;
    gsize len;
    int64_t size;
    int fd;

    if (!g_file_get_contents(input, &data, &len, &err)) {
        return fail("reading the input", err);
    }
    if (len == 0) {
        return fail("an empty input describes no file", NULL);
    }
    fd = open(snap, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return fail("creating the snapshot file", NULL);
    }
    size = sparse_write(fd, (const uint8_t *)data + 1, len - 1, UINT64_MAX / 2);
    if (size >= 0 && reseal_ok && (data[0] & SPARSE_RESEAL)) {
        reseal(fd, (uint64_t)size);
    }
    close(fd);
    return size < 0 ? fail("writing the snapshot file", NULL) : 0;
}

static int decode(const char *input, const char *snap)
{
    return decode_input(input, snap, true);
}

/* fuzz-qemu's flags byte picks lazy blocks: its inputs are never resealed. */
static int qemu_decode(const char *input, const char *stream)
{
    return decode_input(input, stream, false);
}

/* Writes the encoding of @m to DIR/NAME. */
static bool write_packet(const char *dir, const char *name, const sl_msg *m)
{
    uint8_t buf[SL_PROTO_MAX];
    size_t len = sl_msg_encode(m, buf);
    g_autofree char *path = g_build_filename(dir, name, NULL);
    GError *err = NULL;

    if (!g_file_set_contents(path, (const char *)buf, (gssize)len, &err)) {
        fail("writing a packet", err);
        return false;
    }
    return true;
}

static int protocol(const char *dir)
{
    sl_msg hello = { .type = SL_MSG_HELLO, .u.hello = { 1, 1, "qemu-system-x86_64" } };
    sl_msg welcome = { .type = SL_MSG_WELCOME, .u.welcome = { 1, 2 } };
    sl_msg reg = { .type = SL_MSG_REGISTER, .u.reg = { "pc.ram", 0x7f0000000000ull,
                                                         1ull << 30, 0, 2u << 20 } };
    sl_msg ok = { .type = SL_MSG_REGISTERED, .u.status = { 0, "registered" } };
    sl_msg refused = { .type = SL_MSG_REGISTERED, .u.status = { -22, "no block 'vga'" } };
    sl_msg done = { .type = SL_MSG_DONE };
    sl_msg reg_wp = { .type = SL_MSG_REGISTER_WP, .u.reg = reg.u.reg };
    sl_msg written = { .type = SL_MSG_WRITTEN, .u.written = { "pc.ram", 0x7f0000000000ull,
                                                                1ull << 30, 0 } };
    sl_msg query = { .type = SL_MSG_WRITTEN_QUERY, .u.query = { .block = "ram0",
                                                                .identity = { 1, 2, 3 } } };
    sl_msg untracked = { .type = SL_MSG_UNTRACKED, .u.untracked = { "ram0" } };
    sl_msg wpages = { .type = SL_MSG_WRITTEN_PAGES,
                      .u.wpages = { .pages = 262144, .written = 2621, .message = "ok" } };
    sl_msg reg_mover = { .type = SL_MSG_REGISTER_MOVER, .u.reg = reg.u.reg };
    sl_msg move = { .type = SL_MSG_MOVE, .u.move = { 1, 0x7f0000200000ull, 2u << 20, 1ull << 40 } };
    sl_msg moved = { .type = SL_MSG_MOVED, .u.moved = { -16, 1u << 20, 0x7f0000200000ull } };

    reg_mover.u.reg.staging_addr = 0x7f1000000000ull;
    reg_mover.u.reg.staging_slots = 4;
    if (g_mkdir_with_parents(dir, 0755) < 0) {
        return fail("creating the seed directory", NULL);
    }
    return write_packet(dir, "hello", &hello) && write_packet(dir, "welcome", &welcome) &&
           write_packet(dir, "register", &reg) && write_packet(dir, "registered", &ok) &&
           write_packet(dir, "refused", &refused) && write_packet(dir, "done", &done) &&
           write_packet(dir, "register-wp", &reg_wp) && write_packet(dir, "written", &written) &&
           write_packet(dir, "written-query", &query) && write_packet(dir, "written-pages", &wpages) &&
           write_packet(dir, "untracked", &untracked) &&
           write_packet(dir, "register-mover", &reg_mover) && write_packet(dir, "move", &move) &&
           write_packet(dir, "moved", &moved)
           ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* fuzz-qemu seeds: streams from the generator the unit tests use      */
/* ------------------------------------------------------------------ */

static const char *const caps_plain[] = { "mapped-ram", NULL };
static const char *const caps_shared[] = { "x-ignore-shared", "mapped-ram", NULL };
#define SEED_JSON "{\"page_size\": 4096, \"devices\": []}"

/* Few stored pages (their bytes are no structure to mutate), bitmaps of several words. */
static const qs_block plain_blocks[] = {
    { .idstr = "pc.ram", .length = 128 * QS_PAGE, .stored_every = 61, .seed = 1 },
    { .idstr = "/rom@etc/acpi/tables", .length = 10 * QS_PAGE, .stored_every = 4, .seed = 2 },
    { .idstr = "pc.bios", .length = 16 * QS_PAGE, .stored_every = 15, .seed = 3 },
};

static const qs_block shared_blocks[] = {
    { .idstr = "pc.rom", .length = 8 * QS_PAGE, .gpa = 0xc0000, .stored_every = 7, .seed = 4 },
    { .idstr = "pc.ram", .length = 64 * QS_PAGE, .left_out = true },
    { .idstr = "pc.bios", .length = 16 * QS_PAGE, .gpa = 0xfffc0000, .stored_every = 8,
      .seed = 5 },
    { .idstr = "vga.vram", .length = 32 * QS_PAGE, .gpa = 0xfd000000, .left_out = true },
};

static const qs_block postcopy_blocks[] = {
    { .idstr = "pc.ram", .length = 64 * QS_PAGE, .postcopy_page_size = 2u << 20,
      .stored_every = 33, .seed = 6 },
    { .idstr = "pc.rom", .length = 8 * QS_PAGE, .stored_every = 5, .seed = 7 },
};

/* Bitmaps of five words, the last holding 44 bits, and of one bit. */
static const qs_block word_blocks[] = {
    { .idstr = "pc.ram", .length = 300 * QS_PAGE, .stored_every = 97, .seed = 10 },
    { .idstr = "tiny", .length = QS_PAGE, .seed = 8 },
};

static const qs_block one_page[] = { { .idstr = "ram", .length = QS_PAGE, .seed = 9 } };

/* Plain streams for the splitter (fuzz-qemu splits pc.ram of 64 MiB, and
 * pc.bios of 4 pages with flag bit 7): a few pages of pc.ram in records,
 * and a kept block, or a second split one (seed "split-two"). */
static const qs_block split_blocks[] = {
    { .idstr = "pc.ram", .length = 64u << 20, .stored_every = 4096, .seed = 11 },
    { .idstr = "pc.bios", .length = 4 * QS_PAGE, .stored_every = 3, .seed = 12 },
};
static const qs_block split_shared_blocks[] = {
    { .idstr = "pc.bios", .length = 2 * QS_PAGE, .gpa = 0xfffe0000, .stored_every = 2,
      .seed = 13 },
    { .idstr = "pc.ram", .length = 64u << 20, .stored_every = 2731, .seed = 14 },
};
static const char *const caps_none[] = { NULL };
static const char *const caps_ignore_shared[] = { "x-ignore-shared", NULL };

/* A seed: a description, and the flags byte (which blocks its device stream leaves lazy). */
typedef struct {
    const char *name;
    qs_desc d;
    uint8_t flags;
} qemu_seed;

static const qemu_seed qemu_seeds[] = {
    { "plain", { .machine = "pc-i440fx-10.0", .caps = caps_plain, .target_page_bits = true,
                 .uuid = true, .section_id = 2, .blocks = plain_blocks, .nblocks = 3,
                 .devstate_len = 64, .json = SEED_JSON }, 0x01 },
    { "shared", { .machine = "pc-q35-10.0", .caps = caps_shared, .section_id = 1,
                  .blocks = shared_blocks, .nblocks = 4, .devstate_len = 32,
                  .json = SEED_JSON }, 0x05 },
    { "postcopy", { .machine = "pc-q35-10.0", .caps = caps_plain, .section_id = 3,
                    .no_footer = true, .blocks = postcopy_blocks, .nblocks = 2,
                    .devstate_len = 16 }, 0x02 },
    { "words", { .machine = "pc", .caps = caps_plain, .section_id = 2,
                 .blocks = word_blocks, .nblocks = 2, .devstate_len = 8, .json = "{}" }, 0xff },
    { "small", { .machine = "m", .caps = caps_plain, .section_id = 7, .blocks = one_page,
                 .nblocks = 1, .pages_align = QS_PAGE }, 0x00 },
    { "split", { .machine = "pc-i440fx-7.2", .caps = caps_none, .section_id = 2,
                 .blocks = split_blocks, .nblocks = 2, .devstate_len = 48,
                 .plain = true }, 0x00 },
    { "split-shared", { .machine = "pc-q35-10.0", .caps = caps_ignore_shared, .section_id = 3,
                        .blocks = split_shared_blocks, .nblocks = 2, .devstate_len = 24,
                        .plain = true }, 0x00 },
    { "split-two", { .machine = "pc-i440fx-7.2", .caps = caps_none, .section_id = 2,
                     .blocks = split_blocks, .nblocks = 2, .devstate_len = 48,
                     .plain = true }, 0x80 },
};

/* Writes seed @q as a fuzz-qemu input to DIR/NAME (@tmp: a scratch file). */
static bool write_qemu_seed(const char *dir, const char *tmp, const qemu_seed *q)
{
    g_autofree char *path = g_build_filename(dir, q->name, NULL);
    g_autoptr(GByteArray) in = g_byte_array_new();
    g_autofree char *data = NULL;
    GError *err = NULL;
    qs_layout l;
    gsize len;
    bool ok = qs_write(&q->d, tmp, &l, &err);

    qs_layout_clear(&l);
    if (!ok || !g_file_get_contents(tmp, &data, &len, &err)) {
        fail("generating a QEMU stream", err);
        return false;
    }
    g_byte_array_append(in, &q->flags, 1);
    sparse_encode((const uint8_t *)data, len, in);
    if (!g_file_set_contents(path, (const char *)in->data, in->len, &err)) {
        fail("writing a seed", err);
        return false;
    }
    return true;
}

static int qemu_streams(const char *dir)
{
    g_autofree char *tmp = g_build_filename(dir, ".stream", NULL);
    bool ok = true;

    if (g_mkdir_with_parents(dir, 0755) < 0) {
        return fail("creating the seed directory", NULL);
    }
    for (size_t i = 0; ok && i < G_N_ELEMENTS(qemu_seeds); i++) {
        ok = write_qemu_seed(dir, tmp, &qemu_seeds[i]);
    }
    unlink(tmp);
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* fuzz-index seeds: indexes of the harness's fixed stream             */
/* ------------------------------------------------------------------ */

/* Writes the index of @stream (hot list or not) as fuzz-index input DIR/NAME. */
static bool write_index_seed(const char *dir, const char *stream, const char *name, bool hot)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autofree char *idx = g_strconcat(stream, ".idx", NULL);
    g_autoptr(GByteArray) in = g_byte_array_new();
    g_autofree char *data = NULL;
    const uint8_t flags = SPARSE_RESEAL;
    GError *err = NULL;
    gsize len;
    bool ok = index_seed_index(stream, idx, hot, &err) &&
              g_file_get_contents(idx, &data, &len, &err);

    unlink(idx);
    if (!ok) {
        fail("indexing the fixed stream", err);
        return false;
    }
    g_byte_array_append(in, &flags, 1);
    sparse_encode((const uint8_t *)data, len, in);
    if (!g_file_set_contents(path, (const char *)in->data, in->len, &err)) {
        fail("writing a seed", err);
        return false;
    }
    return true;
}

static int index_seeds(const char *dir)
{
    g_autofree char *stream = g_build_filename(dir, ".stream", NULL);
    GError *err = NULL;
    bool ok;

    if (g_mkdir_with_parents(dir, 0755) < 0) {
        return fail("creating the seed directory", NULL);
    }
    ok = index_seed_stream(stream, &err);
    if (!ok) {
        fail("writing the fixed stream", err);
    }
    ok = ok && write_index_seed(dir, stream, "index", false) &&
         write_index_seed(dir, stream, "index-hot", true);
    unlink(stream);
    return ok ? 0 : 1;
}

/* A child of the fuzz parent at @path (the parent written beside it, then removed). */
static int write_chain_seed(const char *path)
{
    g_autofree char *parent = g_strdup_printf("%s.parent", path);
    GError *err = NULL;
    bool ok = fuzz_write_parent(parent, &err) && fuzz_write_child(parent, path, &err);

    unlink(parent);
    return ok ? 0 : fail("writing the incremental seed", err);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "encode")) {
        return encode(argv[2], argv[3]);
    }
    if (argc == 4 && !strcmp(argv[1], "decode")) {
        return decode(argv[2], argv[3]);
    }
    if (argc == 3 && !strcmp(argv[1], "protocol")) {
        return protocol(argv[2]);
    }
    if (argc == 3 && !strcmp(argv[1], "qemu")) {
        return qemu_streams(argv[2]);
    }
    if (argc == 4 && !strcmp(argv[1], "qemu-decode")) {
        return qemu_decode(argv[2], argv[3]);
    }
    if (argc == 3 && !strcmp(argv[1], "index")) {
        return index_seeds(argv[2]);
    }
    if (argc == 3 && !strcmp(argv[1], "index-stream")) {
        GError *err = NULL;
        return index_seed_stream(argv[2], &err) ? 0 : fail("writing the fixed stream", err);
    }
    if (argc == 3 && !strcmp(argv[1], "parent")) {
        GError *err = NULL;
        return fuzz_write_parent(argv[2], &err) ? 0 : fail("writing the parent", err);
    }
    if (argc == 3 && !strcmp(argv[1], "chain")) {
        return write_chain_seed(argv[2]);
    }
    fprintf(stderr, "usage: fuzz-seeds encode SNAP OUT | decode INPUT SNAP | protocol DIR | "
            "qemu DIR | qemu-decode INPUT STREAM | index DIR | index-stream FILE | parent FILE | "
            "chain FILE\n");
    return 2;
}
