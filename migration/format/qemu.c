/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reader of QEMU's own snapshot files: the migration stream that
 * `migrate file:PATH` writes with the mapped-ram capability (QEMU >= 9.0),
 * in which every RAM page sits at a fixed offset.  All stream integers are
 * big-endian.  What is read, in order:
 *
 *   "QEVM" u32 3
 *   [0x07 u32 len  machine-type  { 0x05 u8 len name u32 version  fields }*]
 *   0x01 u32 section-id  u8 3 "ram"  u32 instance  u32 version (4)
 *   u64 total-bytes | 0x04 (MEM_SIZE)
 *   per block:  u8 len idstr  u64 used-length  [u64 page-size]  [u64 GPA]
 *               u32 1  u64 4096  u64 bitmap-offset  u64 pages-offset
 *               (the stream goes on at pages-offset + used-length)
 *   u64 0x10 (EOS) [0x7e u32 section-id]  ...device state...  0x00
 *   [0x06 u32 len JSON]
 *
 * The bitmap (host-endian unsigned longs, one bit per 4 KiB page) says
 * which pages are in the file; a clear bit is a zero page the file leaves
 * as a hole.  A block x-ignore-shared left out has both offsets 0 and no
 * page area.  The page-size field is only there when the source had
 * postcopy-ram and a block of another page size; the GPA only with
 * x-ignore-shared (recorded in the configuration's capabilities).
 *
 * The device state that follows cannot be walked without QEMU's
 * vmstate descriptions (sections carry no length), and need not be: it is
 * the tail from the RAM section's end-of-stream marker to the end of the
 * file, which a restore hands to QEMU as it is.  As strict as our own
 * container: every offset, length and name checked against the file and
 * each other, errors naming the field.  QEMU's file has no checksums: a
 * sidecar index adds them (see sl_snapshot_open_flags()).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include "migration/format/format.h"
#include "migration/format/qemu-int.h"

/* What the parser reads ahead: one page, so the header's fields and each
 * block's record cost a pread or two, not one each; a cold file is read
 * no further than the kernel's own read-ahead goes. */
#define QEMU_PARSE_WINDOW 4096u

void sl_qs_window(qctx *c, size_t cap)
{
    g_free(c->win);
    c->win = g_malloc(cap);
    c->win_cap = cap;
    c->win_len = 0;
    c->win_off = 0;
}

void sl_qs_window_free(qctx *c)
{
    g_clear_pointer(&c->win, g_free);
    c->win_cap = c->win_len = 0;
}

/*
 * The window from @at on, as much of it as the file has.  Fewer than @n
 * bytes there (a short file, a failed read): the read of those @n alone
 * says why, as it would without a window.
 */
static bool fill_window(qctx *c, uint64_t at, size_t n, const char *what, GError **errp)
{
    size_t got = 0;

    c->win_off = at;
    c->win_len = 0;
    while (got < c->win_cap) {
        ssize_t r = pread(c->fd, c->win + got, c->win_cap - got, (off_t)(at + got));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    if (got < n && !sl_read_at(c->fd, c->win, n, at, what, errp)) {
        return false;
    }
    c->win_len = MAX(got, n);
    return true;
}

void sl_qs_window_pipe(qctx *c, size_t cap)
{
    sl_qs_window(c, cap);
    c->pipe = true;
    c->keep = 0;
}

/* What a pipe's window keeps before a read besides @c->keep: the last
 * fields read (an end-of-section record and a footer, 13 bytes). */
#define PIPE_BEHIND 16u

/*
 * The pipe's window: what it holds from PIPE_BEHIND bytes before @at (or
 * from @c->keep, if that is earlier) moved to its start, then read on in
 * order until @n bytes from @at are there.
 */
static bool fill_pipe(qctx *c, uint64_t at, size_t n, const char *what, GError **errp)
{
    uint64_t end = c->win_off + c->win_len, lo = MIN(at, end);
    uint64_t from = MAX(MIN(lo - MIN(lo, PIPE_BEHIND), c->keep), c->win_off);
    if (at < from || at + n - from > c->win_cap) {
        return SL_BAD(errp, "reading %s at offset %" G_GUINT64_FORMAT ": %s", what, at,
                      at < from ? "the stream was read past it (a pipe is read once)"
                                : "more than the reader keeps of a pipe");
    }
    memmove(c->win, c->win + (from - c->win_off), (size_t)(end - from));
    c->win_len = (size_t)(end - from);
    c->win_off = from;
    while (c->win_off + c->win_len < at + n) {
        ssize_t r = read(c->fd, c->win + c->win_len, c->win_cap - c->win_len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            g_set_error(errp, SL_ERROR, r < 0 ? SL_ERROR_IO : SL_ERROR_FORMAT,
                        "reading %s at offset %" G_GUINT64_FORMAT ": %s", what, at,
                        r < 0 ? g_strerror(errno) : "the stream ends early");
            return false;
        }
        c->win_len += (size_t)r;
    }
    return true;
}

bool sl_qs_view(qctx *c, uint64_t at, size_t n, const uint8_t **p, const char *what,
                GError **errp)
{
    g_assert(c->win && n <= c->win_cap);
    if (at < c->win_off || at - c->win_off > c->win_len ||
        n > c->win_len - (at - c->win_off)) {
        if (!(c->pipe ? fill_pipe(c, at, n, what, errp) : fill_window(c, at, n, what, errp))) {
            return false;
        }
    }
    *p = c->win + (at - c->win_off);
    return true;
}

bool sl_qs_take(qctx *c, size_t n, const uint8_t **p, const char *what, GError **errp)
{
    if (!sl_qs_view(c, c->off, n, p, what, errp)) {
        return false;
    }
    c->off += n;
    return true;
}

bool sl_qs_peek(qctx *c, void *buf, size_t n, const char *what, GError **errp)
{
    const uint8_t *p;

    if (!c->win || n > c->win_cap) {
        g_assert(!c->pipe);
        return sl_read_at(c->fd, buf, n, c->off, what, errp);
    }
    if (!sl_qs_view(c, c->off, n, &p, what, errp)) {
        return false;
    }
    memcpy(buf, p, n);
    return true;
}

bool sl_qs_get(qctx *c, void *buf, size_t n, const char *what, GError **errp)
{
    if (!sl_qs_peek(c, buf, n, what, errp)) {
        return false;
    }
    c->off += n;
    return true;
}

bool sl_qs_u8(qctx *c, uint8_t *v, const char *what, GError **errp)
{
    return sl_qs_get(c, v, 1, what, errp);
}

bool sl_qs_be32(qctx *c, uint32_t *v, const char *what, GError **errp)
{
    uint8_t b[4];

    if (!sl_qs_get(c, b, 4, what, errp)) {
        return false;
    }
    *v = sl_be32(b);
    return true;
}

bool sl_qs_be64(qctx *c, uint64_t *v, const char *what, GError **errp)
{
    uint8_t b[8];

    if (!sl_qs_get(c, b, 8, what, errp)) {
        return false;
    }
    *v = sl_be64(b);
    return true;
}

/* A u8-length string (QEMU's idstr): 1..255 bytes, no NUL inside. */
bool sl_qs_str8(qctx *c, char out[SL_BLOCK_NAME_MAX], const char *what, GError **errp)
{
    uint8_t n;

    if (!sl_qs_u8(c, &n, what, errp) || !sl_qs_get(c, out, n, what, errp)) {
        return false;
    }
    out[n] = '\0';
    if (n == 0 || strlen(out) != n) {
        return SL_BAD(errp, "%s at offset %" G_GUINT64_FORMAT ": empty or holds a NUL byte",
                      what, c->off - n);
    }
    if (!sl_name_printable(out)) {
        return SL_BAD(errp, "%s at offset %" G_GUINT64_FORMAT ": not UTF-8 text (a control "
                      "character or invalid bytes)", what, c->off - n);
    }
    return true;
}

static bool parse_capabilities(qctx *c, GError **errp)
{
    uint32_t n;

    if (!sl_qs_be32(c, &n, "capabilities count", errp)) {
        return false;
    }
    if (n > MAX_CAPS) {
        return SL_BAD(errp, "configuration: %u capabilities (at most %u)", n, MAX_CAPS);
    }
    for (uint32_t i = 0; i < n; i++) {
        char name[SL_BLOCK_NAME_MAX];
        if (!sl_qs_str8(c, name, "capability name", errp)) {
            return false;
        }
        g_ptr_array_add(c->q->caps, g_strdup(name));
        c->q->ignore_shared |= !strcmp(name, "x-ignore-shared");
    }
    return true;
}

/* The configuration subsections this reader knows, each allowed once. */
static const char *const config_subsections[] = {
    "configuration/capabilities", "configuration/uuid", "configuration/target-page-bits",
};

/*
 * One subsection of the configuration section, by its name; @seen: a bit
 * per config_subsections[] entry already read (QEMU writes each once; a
 * repeat would let a stream grow the header without bound).
 */
static bool parse_config_subsection(qctx *c, unsigned *seen, GError **errp)
{
    char name[SL_BLOCK_NAME_MAX];
    uint8_t uuid[16];
    uint32_t version, bits;

    if (!sl_qs_str8(c, name, "configuration subsection name", errp) ||
        !sl_qs_be32(c, &version, "configuration subsection version", errp)) {
        return false;
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(config_subsections); i++) {
        if (strcmp(name, config_subsections[i])) {
            continue;
        }
        if (*seen & 1u << i) {
            return SL_BAD(errp, "configuration subsection '%s' appears twice", name);
        }
        *seen |= 1u << i;
    }
    if (!strcmp(name, "configuration/capabilities")) {
        return parse_capabilities(c, errp);
    }
    if (!strcmp(name, "configuration/uuid")) {
        return sl_qs_get(c, uuid, sizeof(uuid), "configuration uuid", errp);
    }
    if (!strcmp(name, "configuration/target-page-bits")) {
        if (!sl_qs_be32(c, &bits, "target page bits", errp)) {
            return false;
        }
        return bits == 12 || SL_BAD(errp, "configuration: target page bits %u: this reader "
                                    "reads 4 KiB target pages", bits);
    }
    return SL_BAD(errp, "configuration subsection '%s' is not known to this reader", name);
}

/* "QEVM" 3, then the optional configuration section. */
bool sl_qs_header(qctx *c, GError **errp)
{
    uint32_t magic, version, len;
    unsigned seen = 0;
    uint8_t type;

    if (!sl_qs_be32(c, &magic, "magic", errp) || !sl_qs_be32(c, &version, "version", errp)) {
        return false;
    }
    if (magic != QEVM_MAGIC || version != QEVM_VERSION) {
        return SL_BAD(errp, "version: QEMU stream version %u is not supported (QEMU writes 3)",
                      version);
    }
    if (!sl_qs_u8(c, &type, "section type", errp)) {
        return false;
    }
    if (type != SEC_CONFIGURATION) {
        c->off--;
        return true;
    }
    if (!sl_qs_be32(c, &len, "machine type length", errp)) {
        return false;
    }
    if (len == 0 || len >= sizeof(c->q->machine)) {
        return SL_BAD(errp, "configuration: machine type length %u is not between 1 and 256",
                      len);
    }
    if (!sl_qs_get(c, c->q->machine, len, "machine type", errp)) {
        return false;
    }
    c->q->machine[len] = '\0';
    if (strlen(c->q->machine) != len || !sl_name_printable(c->q->machine)) {
        return SL_BAD(errp, "configuration: the machine type is not UTF-8 text (a NUL byte, a "
                      "control character or invalid bytes)");
    }
    for (;;) {
        if (!sl_qs_u8(c, &type, "section type", errp)) {
            return false;
        }
        if (type != SEC_SUBSECTION) {
            c->off--;
            return true;
        }
        if (!parse_config_subsection(c, &seen, errp)) {
            return false;
        }
    }
}

/* The RAM section's start: its header and the total size. */
static bool parse_ram_start(qctx *c, uint64_t *total, GError **errp)
{
    char idstr[SL_BLOCK_NAME_MAX];
    uint32_t instance, version;
    uint8_t type;

    if (!sl_qs_u8(c, &type, "section type", errp) ||
        !sl_qs_be32(c, &c->q->ram_section_id, "section id", errp) ||
        !sl_qs_str8(c, idstr, "section name", errp) ||
        !sl_qs_be32(c, &instance, "section instance", errp) ||
        !sl_qs_be32(c, &version, "section version", errp)) {
        return false;
    }
    if (type != SEC_START || strcmp(idstr, "ram")) {
        return SL_BAD(errp, "the first section is '%s' (type %u), not the start of 'ram'",
                      idstr, type);
    }
    if (version != RAM_VERSION) {
        return SL_BAD(errp, "section 'ram': version %u is not supported (want %u)", version,
                      RAM_VERSION);
    }
    if (!g_ptr_array_find_with_equal_func(c->q->caps, "mapped-ram", g_str_equal, NULL)) {
        return SL_BAD(errp, "not a mapped-ram stream: it was saved without the mapped-ram "
                      "capability, so its pages have no fixed offsets");
    }
    if (!sl_qs_be64(c, total, "RAM total size", errp)) {
        return false;
    }
    if (!(*total & RAM_MEM_SIZE)) {
        return SL_BAD(errp, "section 'ram': the total size carries no MEM_SIZE flag "
                      "(0x%" G_GINT64_MODIFIER "x)", *total);
    }
    *total &= ~(TARGET_PAGE - 1);
    /* Blocks QEMU left out of the file (x-ignore-shared) get a bitmap sized
     * from this total alone, so it needs a bound of its own. */
    if (*total > QEMU_MAX_RAM) {
        return SL_BAD(errp, "section 'ram': a RAM total of %" G_GUINT64_FORMAT " bytes is "
                      "more than the %llu TiB of guest RAM snapload restores", *total,
                      QEMU_MAX_RAM >> 40);
    }
    return true;
}

/* Whether @h is a mapped-ram header this reader reads: version 1, 4 KiB pages. */
static bool mr_header_at(const uint8_t *h)
{
    return sl_be32(h) == SL_MR_VERSION && sl_be64(h + 4) == TARGET_PAGE;
}

/*
 * After the used length: the page-size field QEMU writes only for postcopy
 * with another page size, then the GPA (x-ignore-shared), then the
 * mapped-ram header.  The page size is told apart by where the header's
 * fixed version 1 and page size 4096 are found.
 */
static bool parse_mr_header(qctx *c, sl_block *b, unsigned i, GError **errp)
{
    uint64_t gpa = b->has_gpa ? 8 : 0;
    uint8_t h[8 + 8 + SL_MR_HEADER_SIZE];
    const uint8_t *mr = h + gpa;

    if (!sl_qs_peek(c, h, gpa + SL_MR_HEADER_SIZE, "mapped-ram header", errp)) {
        return false;
    }
    if (!mr_header_at(mr)) {
        uint64_t ps = sl_be64(h);
        if (ps <= TARGET_PAGE || ps > SL_MAX_PAGE || (ps & (ps - 1)) ||
            !sl_qs_peek(c, h, 8 + gpa + SL_MR_HEADER_SIZE, "mapped-ram header", errp) ||
            !mr_header_at(mr = h + 8 + gpa)) {
            return (errp && *errp) ? false
                : SL_BAD(errp, "block %u ('%s'): mapped-ram version %u / page size %"
                         G_GUINT64_FORMAT " not supported (want version %u, 4096-byte pages)",
                         i, b->name, sl_be32(mr), sl_be64(mr + 4), SL_MR_VERSION);
        }
        c->off += 8; /* the postcopy page size of the block */
    }
    b->gpa = gpa ? sl_be64(mr - 8) : 0;
    c->off += gpa;
    b->ramhdr_offset = c->off;
    b->bitmap_offset = sl_be64(mr + SL_MR_BITMAP);
    b->pages_offset = sl_be64(mr + SL_MR_PAGES);
    c->off += SL_MR_HEADER_SIZE;
    return true;
}

/* Reads and checks @b's bitmap: host-endian longs (little-endian here). */
static bool load_bitmap(qctx *c, sl_block *b, unsigned i, GError **errp)
{
    uint64_t bmb = sl_bitmap_bytes(b->npages);

    b->bitmap = sl_alloc_large(bmb); /* read in whole right away */
    if (!sl_read_at(c->s->fd, b->bitmap, bmb, b->bitmap_offset, "bitmap", errp)) {
        return false;
    }
    for (uint64_t w = 0; w < bmb / 8; w++) {
        b->bitmap[w] = GUINT64_FROM_LE(b->bitmap[w]);
    }
    if (b->npages % 64 && b->bitmap[bmb / 8 - 1] >> (b->npages % 64)) {
        return SL_BAD(errp, "block %u ('%s'): bitmap has bits set past its %"
                      G_GUINT64_FORMAT " pages", i, b->name, b->npages);
    }
    b->present_pages = sl_bitmap_count(b->bitmap, b->npages);
    return true;
}

/*
 * QEMU writes each block's bitmap right after its mapped-ram header (every
 * version since 9.0).  One elsewhere that overlaps nothing means a damaged
 * bitmap_offset: read from there, the bitmap would give wrong pages (zeros
 * where data is stored), which nothing could catch without an index.
 */
static bool bitmaps_follow_headers(const qctx *c, GError **errp)
{
    for (guint i = 0; i < c->blocks->len; i++) {
        const sl_block *b = &g_array_index(c->blocks, sl_block, i);
        uint64_t end = b->ramhdr_offset + SL_MR_HEADER_SIZE;
        if (b->in_file && b->bitmap_offset != end) {
            return SL_BAD(errp, "block %u ('%s'): bitmap_offset %" G_GUINT64_FORMAT " is not "
                          "the end of its mapped-ram header (%" G_GUINT64_FORMAT "), where "
                          "QEMU writes the bitmap: the header is damaged", i, b->name,
                          b->bitmap_offset, end);
        }
    }
    return true;
}

/*
 * The bitmaps of the blocks in the file, read only once every record is
 * parsed, every region found apart and every bitmap where QEMU writes it: a hostile file of many huge blocks
 * that overlap is refused before it costs the memory of their bitmaps
 * (1024 of 32 GiB: 1 GiB for a 4 MB file).
 */
static bool load_bitmaps(qctx *c, GError **errp)
{
    for (guint i = 0; i < c->blocks->len; i++) {
        sl_block *b = &g_array_index(c->blocks, sl_block, i);
        if (b->in_file && !load_bitmap(c, b, i, errp)) {
            return false;
        }
    }
    return true;
}

/* Offsets and regions of block @b, whose header was just read (its bitmap: load_bitmaps()). */
static bool place_block(qctx *c, sl_block *b, unsigned i, uint64_t record, GError **errp)
{
    b->record_offset = record;
    b->record_len = c->off - record;
    if (!sl_regions_claim(c->regions, record, b->record_len, errp,
                          "block %u ('%s') record", i, b->name)) {
        return false;
    }
    if (b->bitmap_offset == 0 && b->pages_offset == 0 && c->q->ignore_shared) {
        b->bitmap = g_malloc0(sl_bitmap_bytes(b->npages)); /* left out: x-ignore-shared */
        return true;
    }
    b->in_file = true;
    if (b->bitmap_offset == 0 || b->pages_offset == 0) {
        return SL_BAD(errp, "block %u ('%s'): bitmap_offset %" G_GUINT64_FORMAT ", pages_offset "
                      "%" G_GUINT64_FORMAT ": offset 0 is the stream's header (both are 0 only "
                      "for a block that x-ignore-shared left out of the file%s)", i, b->name,
                      b->bitmap_offset, b->pages_offset,
                      c->q->ignore_shared ? "" : ", and this stream was saved without it");
    }
    if (b->pages_offset % TARGET_PAGE) {
        return SL_BAD(errp, "block %u ('%s'): pages_offset %" G_GUINT64_FORMAT " is not "
                      "page aligned", i, b->name, b->pages_offset);
    }
    if (!sl_regions_claim(c->regions, b->bitmap_offset, sl_bitmap_bytes(b->npages), errp,
                          "block %u ('%s') bitmap (bitmap_offset)", i, b->name) ||
        !sl_regions_claim(c->regions, b->pages_offset, b->length, errp,
                          "block %u ('%s') page data (pages_offset, length)", i, b->name)) {
        return false;
    }
    c->off = b->pages_offset + b->length; /* the stream goes on after the pages */
    return true;
}

/* One block record at c->off; adds its length to *@acc. */
static bool parse_block(qctx *c, unsigned i, uint64_t total, uint64_t *acc, GError **errp)
{
    sl_block b = { .page_size = TARGET_PAGE, .numa_node = -1 };
    uint64_t record = c->off;

    if (!sl_qs_str8(c, b.name, "block name", errp) ||
        !sl_qs_be64(c, &b.length, "block used length", errp)) {
        return false;
    }
    if (b.length == 0 || b.length % TARGET_PAGE || b.length > total - *acc) {
        return SL_BAD(errp, "block %u ('%s'): used length %" G_GUINT64_FORMAT " is zero, not "
                      "page aligned, or beyond the RAM total %" G_GUINT64_FORMAT, i, b.name,
                      b.length, total);
    }
    *acc += b.length;
    b.npages = b.length / TARGET_PAGE;
    b.nsegs = sl_nsegs(b.npages);
    b.has_gpa = c->q->ignore_shared;
    for (guint k = 0; k < c->blocks->len; k++) {
        if (!strcmp(g_array_index(c->blocks, sl_block, k).name, b.name)) {
            return SL_BAD(errp, "block %u: name '%s' is used by block %u too", i, b.name, k);
        }
    }
    if (!parse_mr_header(c, &b, i, errp)) {
        return false;
    }
    g_array_append_val(c->blocks, b); /* owned by the array (bitmap freed with it) */
    return place_block(c, &g_array_index(c->blocks, sl_block, i), i, record, errp);
}

/* The end of the RAM section's start: EOS, and its footer if the stream has footers. */
static bool parse_ram_end(qctx *c, GError **errp)
{
    uint64_t eos, tail = c->off;
    uint32_t sid;
    uint8_t type;

    if (!sl_qs_be64(c, &eos, "RAM end-of-section flag", errp)) {
        return false;
    }
    if (eos != RAM_EOS) {
        return SL_BAD(errp, "after the last block's pages (offset %" G_GUINT64_FORMAT "): "
                      "0x%" G_GINT64_MODIFIER "x, not the RAM end-of-section flag", tail, eos);
    }
    if (!sl_qs_u8(c, &type, "section footer", errp)) {
        return false;
    }
    if (type == SEC_FOOTER) {
        if (!sl_qs_be32(c, &sid, "section footer id", errp)) {
            return false;
        }
        if (sid != c->q->ram_section_id) {
            return SL_BAD(errp, "section footer names section %u, not 'ram' (%u)", sid,
                          c->q->ram_section_id);
        }
    }
    c->q->tail_offset = tail;
    c->q->tail_length = c->s->file_size - tail;
    return sl_regions_claim(c->regions, tail, c->q->tail_length, errp, "device state");
}

/* The JSON description in the last @n bytes of the stream, if there. */
static bool vmdesc_within(qctx *c, uint64_t n)
{
    g_autofree uint8_t *buf = g_malloc(n + 1);

    if (n < 6 || sl_pread_full(c->s->fd, buf, n, c->s->file_size - n) < 0) {
        return false;
    }
    for (uint64_t p = n - 5; p >= 1; p--) { /* the end of the file first */
        if (buf[p - 1] == SEC_EOF && buf[p] == SEC_VMDESC && sl_be32(buf + p + 1) == n - p - 5) {
            c->q->vmdesc_length = n - p;
            return true;
        }
    }
    return false;
}

/*
 * The JSON description QEMU may append: 0x00 0x06 u32 len JSON, ending the
 * file.  Looked for in growing windows from the end (it is some 100 KB),
 * so an open does not read a large device state whole.
 */
static void find_vmdesc(qctx *c)
{
    for (uint64_t n = 256u << 10;; n *= 8) {
        uint64_t w = MIN(MIN(n, c->q->tail_length), MAX_VMDESC_SCAN);
        if (vmdesc_within(c, w) || w < n) {
            return;
        }
    }
}

/*
 * The stream ends with QEMU's end-of-stream marker (0x00), alone or before
 * its JSON description (which find_vmdesc() found with the marker before
 * it).  The device state between cannot be walked without QEMU's device
 * descriptions, so a file cut inside it passes only if its last byte
 * happens to be 0x00; QEMU refuses those when it loads the device state,
 * before the guest runs.
 */
static bool check_stream_end(qctx *c, GError **errp)
{
    uint8_t last = 0xff;

    if (c->q->vmdesc_length) {
        return true;
    }
    if (c->q->tail_length == 0 ||
        sl_pread_full(c->s->fd, &last, 1, c->s->file_size - 1) < 0 || last != SEC_EOF) {
        return SL_BAD(errp, "the device state (%" G_GUINT64_FORMAT " bytes from offset %"
                      G_GUINT64_FORMAT ") does not end with QEMU's end-of-stream marker: the "
                      "file is cut short or was not written to its end", c->q->tail_length,
                      c->q->tail_offset);
    }
    return true;
}

void sl_qemu_stream_free(sl_qemu_stream *q)
{
    if (q) {
        g_ptr_array_unref(q->caps);
        g_free(q);
    }
}

static bool parse_stream(qctx *c, GError **errp)
{
    uint64_t total = 0, acc = 0;

    if (!sl_qs_header(c, errp) || !parse_ram_start(c, &total, errp) ||
        !sl_regions_claim(c->regions, 0, c->off, errp, "stream header and RAM section start")) {
        return false;
    }
    for (unsigned i = 0; acc < total; i++) {
        if (i == SL_MAX_BLOCKS) {
            return SL_BAD(errp, "more than %u RAM blocks", SL_MAX_BLOCKS);
        }
        if (!parse_block(c, i, total, &acc, errp)) {
            return false;
        }
    }
    if (c->blocks->len == 0) {
        return SL_BAD(errp, "section 'ram' has no blocks (total size 0)");
    }
    if (!parse_ram_end(c, errp)) {
        return false;
    }
    find_vmdesc(c);
    return check_stream_end(c, errp) && sl_regions_check(c->regions, errp) &&
           bitmaps_follow_headers(c, errp) && load_bitmaps(c, errp);
}

bool sl_qemu_parse(sl_snapshot *s, GError **errp)
{
    qctx c = { .s = s, .fd = s->fd, .regions = sl_regions_new(s->file_size),
               .blocks = g_array_new(false, true, sizeof(sl_block)) };
    bool ok;

    sl_qs_window(&c, QEMU_PARSE_WINDOW);
    s->format = SL_FORMAT_QEMU;
    s->qemu = c.q = g_new0(sl_qemu_stream, 1);
    c.q->caps = g_ptr_array_new_with_free_func(g_free);
    ok = parse_stream(&c, errp);
    sl_qs_window_free(&c);
    sl_regions_free(c.regions);
    s->nblocks = c.blocks->len;
    s->blocks = (sl_block *)(void *)g_array_free(c.blocks, false);
    s->sections = g_new0(sl_section, 1);
    return ok;
}

/* Copies [@off, +@len) of @from to the same offset of @to. */
static bool copy_range(int from, int to, uint64_t off, uint64_t len, GError **errp)
{
    g_autofree uint8_t *buf = g_malloc(MIN(len, 1u << 20) + 1);

    for (uint64_t done = 0; done < len;) {
        size_t n = (size_t)MIN(len - done, 1u << 20);
        int ret = sl_pread_full(from, buf, n, off + done);
        ret = ret ? ret : sl_pwrite_full(to, buf, n, off + done);
        if (ret < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "copying the device stream at offset %"
                        G_GUINT64_FORMAT ": %s", off + done, g_strerror(-ret));
            return false;
        }
        done += n;
    }
    return true;
}

/* The first page of [@p, +@n) of block @i that fails its checksum (-EBADMSG came back). */
static uint64_t first_bad_page(sl_snapshot *s, unsigned i, uint64_t p, uint64_t n, uint8_t *buf)
{
    for (uint64_t k = 0; k < n; k++) {
        if (sl_snapshot_read_pages(s, i, p + k, 1, buf, true) == -EBADMSG) {
            return p + k;
        }
    }
    return p;
}

/*
 * Stored pages [@p, +@n) of block @i to their offsets in @to, each checked
 * against the sidecar index's checksum first: QEMU loads these itself, so
 * this copy is the only check they get.
 */
static bool copy_verified(sl_snapshot *s, unsigned i, uint64_t p, uint64_t n, int to,
                          GError **errp)
{
    const sl_block *b = &s->blocks[i];
    const uint64_t per = MAX(1, (1u << 20) / b->page_size);
    g_autofree uint8_t *buf = g_malloc(MIN(n, per) * b->page_size);

    for (uint64_t k = 0; k < n; k += per) {
        uint64_t m = MIN(per, n - k), at = p + k;
        int ret = sl_snapshot_read_pages(s, i, at, m, buf, true);
        if (ret == -EBADMSG) {
            g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "block '%s' page %" G_GUINT64_FORMAT
                        ": checksum mismatch (the file changed since it was indexed, or is "
                        "corrupt): refused, not handed to QEMU", b->name,
                        first_bad_page(s, i, at, m, buf));
            return false;
        }
        ret = ret ? ret : sl_pwrite_full(to, buf, m * b->page_size,
                                         b->pages_offset + at * b->page_size);
        if (ret < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block '%s' pages from %" G_GUINT64_FORMAT
                        ": %s", b->name, at, g_strerror(-ret));
            return false;
        }
    }
    return true;
}

/* An eager block: its record, bitmap and stored pages (runs), for QEMU to load. */
static bool copy_eager_block(const sl_snapshot *s, unsigned i, int to, GError **errp)
{
    const sl_block *b = &s->blocks[i];

    if (!copy_range(s->fd, to, b->bitmap_offset, sl_bitmap_bytes(b->npages), errp)) {
        return false;
    }
    for (uint64_t p = 0; p < b->npages;) {
        uint64_t n = 0;
        while (p + n < b->npages && sl_bit_test(b->bitmap, p + n)) {
            n++;
        }
        if (n && !(s->has_checksums
                       ? copy_verified((sl_snapshot *)s, i, p, n, to, errp)
                       : copy_range(s->fd, to, b->pages_offset + p * b->page_size,
                                    n * b->page_size, errp))) {
            return false;
        }
        p += n ? n : 1;
    }
    return true;
}

bool sl_qemu_write_device_stream(const sl_snapshot *s, const char *path, const bool *lazy,
                                 GError **errp)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && ftruncate(fd, (off_t)s->file_size) == 0;

    if (!ok) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", path, g_strerror(errno));
    }
    ok = ok && copy_range(s->fd, fd, 0, s->blocks[0].record_offset, errp); /* header */
    for (unsigned i = 0; ok && i < s->nblocks; i++) {
        const sl_block *b = &s->blocks[i];
        ok = copy_range(s->fd, fd, b->record_offset, b->record_len, errp) &&
             (lazy[i] || !b->in_file || copy_eager_block(s, i, fd, errp));
    }
    ok = ok && copy_range(s->fd, fd, s->qemu->tail_offset, s->qemu->tail_length, errp);
    if (fd >= 0 && close(fd) < 0 && ok) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", path, g_strerror(errno));
        ok = false;
    }
    if (!ok && fd >= 0) {
        unlink(path);
    }
    return ok;
}
