/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Snapshot writer.  Blocks are declared first; the layout is then frozen
 * (header, block table, per block: mapped-ram header, bitmap, checksum array
 * and the 1 MiB aligned page area) and page data is written straight to its
 * final offset.  Zero pages are detected and left out, so the file stays
 * sparse there.  sl_writer_finish() appends the sections and their table and
 * writes every header last, so an interrupted save never looks valid.
 *
 * A child (sl_writer_set_parent()) records its parent in a parent section
 * (chain.c) and has the parent's blocks; in it a page never written is
 * absent (the parent's), and a zero page written is stored: its bit set,
 * the checksum of zeros, a hole in the page area.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include "migration/busy.h"
#include "migration/format/format.h"

typedef struct {
    sl_block b;           /* layout + bitmap/csums in host order */
    uint64_t zero_csum;   /* a child's: the checksum of a zero page of this size (0: not
                             computed yet) */
} wblock;

/* What a child must agree on with its parent, per block. */
typedef struct {
    char name[SL_BLOCK_NAME_MAX];
    uint64_t length, page_size;
} pblock;

typedef struct {
    uint32_t type;
    GBytes *data;
} wsection;

struct sl_writer {
    int fd;
    char *path;
    GArray *blocks;       /* wblock */
    GArray *sections;     /* wsection */
    bool frozen;          /* layout fixed: no more blocks */
    uint64_t data_end;    /* end of the last block's page area */
    sl_busy_range plain;  /* private memory the last write came from (busy.c) */
    GArray *parent;       /* a child's: its parent's blocks (pblock); NULL otherwise */
    char *parent_path;    /* a child's: its parent's path, for errors */
};

static bool io_error(GError **errp, sl_writer *w, const char *what, int err)
{
    g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s: %s", w->path, what, g_strerror(err));
    return false;
}

sl_writer *sl_writer_new(const char *path, GError **errp)
{
    int fd;
    sl_writer *w;

    SL_ARG(path, errp, NULL);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", path, g_strerror(errno));
        return NULL;
    }
    w = g_new0(sl_writer, 1);
    w->fd = fd;
    w->path = g_strdup(path);
    w->blocks = g_array_new(false, true, sizeof(wblock));
    w->sections = g_array_new(false, true, sizeof(wsection));
    return w;
}

/* A child's block @i is its parent's block @i: same name, length and page size. */
static bool parent_has(const sl_writer *w, unsigned i, const char *name, uint64_t length,
                       uint64_t page_size, GError **errp)
{
    const pblock *p = i < w->parent->len ? &g_array_index(w->parent, pblock, i) : NULL;

    if (!p) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block %u ('%s'): the parent %s has "
                    "only %u blocks, and a child has exactly its parent's", i, name,
                    w->parent_path, w->parent->len);
        return false;
    }
    if (strcmp(p->name, name) || p->length != length || p->page_size != page_size) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block %u is '%s' (%" G_GUINT64_FORMAT
                    " bytes, %" G_GUINT64_FORMAT "-byte pages) here but '%s' (%"
                    G_GUINT64_FORMAT " bytes, %" G_GUINT64_FORMAT "-byte pages) in the parent "
                    "%s: a child has its parent's blocks, in its order", i, name, length,
                    page_size, p->name, p->length, p->page_size, w->parent_path);
        return false;
    }
    return true;
}

int sl_writer_add_block(sl_writer *w, const char *name, uint64_t length,
                        uint64_t page_size, int numa_node, GError **errp)
{
    wblock wb = { 0 };

    SL_ARG(w, errp, -1);
    SL_ARG(name, errp, -1);
    if (w->frozen) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "blocks must be added before data");
        return -1;
    }
    if (!name || !*name || strlen(name) >= SL_NAME_MAX || !sl_name_printable(name)) {
        g_autofree char *shown = name ? g_strescape(name, NULL) : NULL;
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block name '%s' must be 1 to %u bytes "
                    "of UTF-8 text without control characters", shown ? shown : "",
                    SL_NAME_MAX - 1);
        return -1;
    }
    if (page_size < SL_MIN_PAGE || page_size > SL_MAX_PAGE || (page_size & (page_size - 1)) ||
        length == 0 || length % page_size) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': length %" G_GUINT64_FORMAT
                    " must be a non-zero multiple of page size %" G_GUINT64_FORMAT
                    " (a power of two from 4 KiB to 1 GiB)", name, length, page_size);
        return -1;
    }
    if (numa_node < -1 || numa_node >= (int)SL_MAX_NODE_HINT) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': NUMA node hint %d is not "
                    "between 0 and %u (or -1 for none)", name, numa_node, SL_MAX_NODE_HINT - 1);
        return -1;
    }
    for (guint i = 0; i < w->blocks->len; i++) {
        if (strcmp(g_array_index(w->blocks, wblock, i).b.name, name) == 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s' added twice", name);
            return -1;
        }
    }
    if (w->blocks->len >= SL_MAX_BLOCKS) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "more than %u blocks", SL_MAX_BLOCKS);
        return -1;
    }
    if (w->parent && !parent_has(w, w->blocks->len, name, length, page_size, errp)) {
        return -1;
    }
    g_strlcpy(wb.b.name, name, SL_NAME_MAX);
    wb.b.length = length;
    wb.b.page_size = page_size;
    wb.b.npages = length / page_size;
    wb.b.numa_node = numa_node;
    /* Sizes a QEMU file can claim (a left-out block of terabytes): an error, not an abort. */
    wb.b.bitmap = g_try_malloc0(sl_bitmap_bytes(wb.b.npages));
    wb.b.csums = g_try_malloc0(wb.b.npages * 8);
    if (!wb.b.bitmap || !wb.b.csums) {
        g_free(wb.b.bitmap);
        g_free(wb.b.csums);
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block '%s': no memory for the bitmap "
                    "and checksums of its %" G_GUINT64_FORMAT " pages", name, wb.b.npages);
        return -1;
    }
    g_array_append_val(w->blocks, wb);
    return (int)w->blocks->len - 1;
}

/* Fix every block's offsets; see the layout in docs/format.md. */
static void freeze_layout(sl_writer *w)
{
    uint64_t off = SL_HEADER_SIZE + (uint64_t)w->blocks->len * SL_BLOCK_ENTRY_SIZE;

    for (guint i = 0; i < w->blocks->len; i++) {
        sl_block *b = &g_array_index(w->blocks, wblock, i).b;
        b->ramhdr_offset = sl_align_up(off, 8);
        b->bitmap_offset = b->ramhdr_offset + SL_MR_HEADER_SIZE;
        b->csum_offset = sl_align_up(b->bitmap_offset + sl_bitmap_bytes(b->npages), 8);
        b->digest_offset = b->csum_offset + b->npages * 8;
        b->nsegs = sl_nsegs(b->npages);
        if (b->external) { /* its pages are in another file: no page area here */
            b->pages_offset = 0;
            off = b->digest_offset + b->nsegs * 8;
            continue;
        }
        b->pages_offset = sl_align_up(b->digest_offset + b->nsegs * 8,
                                      MAX(SL_MR_ALIGN, b->page_size));
        off = b->pages_offset + b->length;
    }
    w->data_end = off;
    w->frozen = true;
}

/*
 * A child's zero page @p of @block: stored (it hides the parent's page) as
 * a hole with the checksum of zeros.  Bytes written there before are
 * punched out (or overwritten with zeros where the file system cannot).
 */
static bool store_zero_page(sl_writer *w, unsigned block, uint64_t p, GError **errp)
{
    wblock *wb = &g_array_index(w->blocks, wblock, block);
    sl_block *b = &wb->b;
    uint64_t off = b->pages_offset + p * b->page_size;

    if (!wb->zero_csum) {
        wb->zero_csum = sl_zero_hash(b->page_size);
    }
    if (sl_bit_test(b->bitmap, p) && b->csums[p] != wb->zero_csum &&
        fallocate(w->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                  (off_t)b->page_size) < 0) {
        g_autofree uint8_t *zeros = g_malloc0(MIN(b->page_size, 1u << 20));
        for (uint64_t done = 0; done < b->page_size; done += 1u << 20) {
            int ret = sl_pwrite_full(w->fd, zeros, MIN(b->page_size - done, 1u << 20),
                                     off + done);
            if (ret < 0) {
                return io_error(errp, w, "clearing a page that became zero", -ret);
            }
        }
    }
    sl_bit_set(b->bitmap, p);
    b->csums[p] = wb->zero_csum;
    return true;
}

bool sl_writer_write(sl_writer *w, unsigned block, uint64_t offset, const void *data,
                     size_t len, GError **errp)
{
    const uint8_t *src = data;
    sl_block *b;
    uint64_t first, n, run = 0;

    SL_ARG(w, errp, false);
    SL_ARG(data || len == 0, errp, false);
    if (block >= w->blocks->len) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block %u does not exist", block);
        return false;
    }
    b = &g_array_index(w->blocks, wblock, block).b;
    if (offset % b->page_size || len % b->page_size || offset > b->length ||
        len > b->length - offset) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': write of %zu bytes at %"
                    G_GUINT64_FORMAT " is unaligned or out of range", b->name, len, offset);
        return false;
    }
    if (!sl_busy_check_memory(data, len, &w->plain, errp)) {
        return false; /* pages still missing there would be stored as zeros */
    }
    if (!w->frozen) {
        freeze_layout(w);
    }
    first = offset / b->page_size;
    n = len / b->page_size;
    /* Write runs of non-zero pages with one pwrite each. */
    for (uint64_t k = 0; k <= n; k++) {
        const uint8_t *pg = src + k * b->page_size;
        bool nz = k < n && !sl_all_zero(pg, b->page_size);

        if (nz) {
            sl_bit_set(b->bitmap, first + k);
            b->csums[first + k] = sl_hash(pg, b->page_size);
            run++;
            continue;
        }
        if (k < n && !w->parent) {
            b->bitmap[(first + k) / 64] &= ~(1ull << ((first + k) % 64));
            b->csums[first + k] = 0;
        } else if (k < n && !store_zero_page(w, block, first + k, errp)) {
            return false;
        }
        if (run) {
            uint64_t start = first + k - run;
            int ret = sl_pwrite_full(w->fd, src + (k - run) * b->page_size,
                                     run * b->page_size, b->pages_offset + start * b->page_size);
            if (ret < 0) {
                return io_error(errp, w, "writing page data", -ret);
            }
            run = 0;
        }
    }
    return true;
}

bool sl_writer_write_changed(sl_writer *w, sl_snapshot *parent, unsigned block,
                             uint64_t offset, const uint8_t *buf, size_t len, uint64_t *stored,
                             GError **errp)
{
    const uint64_t ps = parent ? parent->blocks[block].page_size : 0;
    const uint64_t first = parent ? offset / ps : 0, n = parent ? len / ps : 0;
    uint64_t start = 0, run = 0;

    if (!parent) {
        return sl_writer_write(w, block, offset, buf, len, errp);
    }
    for (uint64_t k = 0; k <= n; k++) {
        if (k < n && !sl_snapshot_page_matches(parent, block, first + k, buf + k * ps)) {
            start = run ? start : k;
            run++;
            continue;
        }
        if (run && !sl_writer_write(w, block, (first + start) * ps, buf + start * ps,
                                    run * ps, errp)) {
            return false;
        }
        *stored += run;
        run = 0;
    }
    return true;
}

bool sl_writer_set_external(sl_writer *w, unsigned block, const uint64_t *bitmap,
                            const uint64_t *csums, GError **errp)
{
    sl_block *b;

    if (block >= w->blocks->len || w->frozen) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block %u: %s", block,
                    w->frozen ? "the layout is fixed already" : "no such block");
        return false;
    }
    b = &g_array_index(w->blocks, wblock, block).b;
    b->external = true;
    memcpy(b->bitmap, bitmap, sl_bitmap_bytes(b->npages));
    memcpy(b->csums, csums, b->npages * 8);
    return true;
}

/* Copies @parent's block geometry into @w, checking the blocks @w has already. */
static bool take_parent_blocks(sl_writer *w, const sl_snapshot *parent, GError **errp)
{
    w->parent = g_array_new(false, true, sizeof(pblock));
    for (unsigned i = 0; i < parent->nblocks; i++) {
        pblock p = { .length = parent->blocks[i].length,
                     .page_size = parent->blocks[i].page_size };
        g_strlcpy(p.name, parent->blocks[i].name, sizeof(p.name));
        if (!parent->blocks[i].in_file) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s' of %s is not in its "
                        "file (x-ignore-shared): it cannot be a parent", p.name, parent->path);
            return false;
        }
        g_array_append_val(w->parent, p);
    }
    for (guint i = 0; i < w->blocks->len; i++) {
        const sl_block *b = &g_array_index(w->blocks, wblock, i).b;
        if (!parent_has(w, i, b->name, b->length, b->page_size, errp)) {
            return false;
        }
    }
    return true;
}

bool sl_writer_set_parent(sl_writer *w, sl_snapshot *parent, const char *parent_path,
                          GError **errp)
{
    uint8_t id[SL_IDENTITY_LEN];
    g_autoptr(GBytes) sec = NULL;

    SL_ARG(w, errp, false);
    SL_ARG(parent, errp, false);
    SL_ARG(parent_path, errp, false);
    if (w->frozen || w->parent) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "%s: a parent is set once, before the "
                    "first page is written", w->path);
        return false;
    }
    if (parent && sl_snapshot_chain_length(parent) >= SL_MAX_CHAIN) {
        /* The child could be written, but never opened again. */
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s: the parent's chain already holds "
                    "%u snapshots, the most one chain may: save a full snapshot (or `snapload "
                    "flatten` the parent) and start a new chain from it", w->path,
                    sl_snapshot_chain_length(parent));
        return false;
    }
    if (!parent || !sl_snapshot_identity(parent, id, errp) ||
        !(sec = sl_parent_section(id, parent_path, errp))) {
        if (!parent) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s: no parent snapshot", w->path);
        }
        return false;
    }
    w->parent_path = g_strdup(parent_path);
    if (!take_parent_blocks(w, parent, errp)) {
        g_array_free(w->parent, true);
        w->parent = NULL;
        g_clear_pointer(&w->parent_path, g_free);
        return false;
    }
    return sl_writer_add_section(w, SL_SECTION_PARENT, g_bytes_get_data(sec, NULL),
                                 g_bytes_get_size(sec), errp);
}

bool sl_writer_add_section(sl_writer *w, uint32_t type, const void *data, size_t len,
                           GError **errp)
{
    wsection s;

    SL_ARG(w, errp, false);
    SL_ARG(data || len == 0, errp, false);
    s = (wsection){ .type = type, .data = g_bytes_new(data, len) };
    if (w->sections->len >= SL_MAX_SECTIONS) {
        g_bytes_unref(s.data);
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "more than %u sections", SL_MAX_SECTIONS);
        return false;
    }
    g_array_append_val(w->sections, s);
    return true;
}

/* Writes ramhdr, bitmap, checksums, digests of @b; fills its block table entry @e. */
static int write_block_meta(sl_writer *w, sl_block *b, uint8_t *e)
{
    uint64_t bmb = sl_bitmap_bytes(b->npages), present = 0;
    g_autofree uint64_t *bm = g_malloc(bmb);
    g_autofree uint64_t *cs = g_malloc(b->npages * 8);
    g_autofree uint64_t *dg = g_malloc(b->nsegs * 8);
    uint8_t h[SL_MR_HEADER_SIZE];
    int ret;

    for (uint64_t i = 0; i < bmb / 8; i++) {
        bm[i] = GUINT64_TO_LE(b->bitmap[i]);
        present += (uint64_t)__builtin_popcountll(b->bitmap[i]);
    }
    for (uint64_t i = 0; i < b->npages; i++) {
        cs[i] = GUINT64_TO_LE(b->csums[i]);
    }
    for (uint64_t k = 0; k < b->nsegs; k++) {
        dg[k] = GUINT64_TO_LE(sl_seg_digest(bm, cs, b->npages, k));
    }
    sl_put_be32(h + SL_MR_VER, SL_MR_VERSION);
    sl_put_be64(h + SL_MR_PAGESIZE, b->page_size);
    sl_put_be64(h + SL_MR_BITMAP, b->bitmap_offset);
    sl_put_be64(h + SL_MR_PAGES, b->pages_offset);
    ret = sl_pwrite_full(w->fd, h, sizeof(h), b->ramhdr_offset);
    /* A child's bitmap and checksums are zero for the pages it leaves to
     * its parent: holes (found by a user's test: an empty child took
     * 268 KiB of disk for a 128 MiB guest, its arrays written as zeros). */
    ret = ret ? ret : sl_pwrite_nonzero(w->fd, bm, bmb, b->bitmap_offset);
    ret = ret ? ret : sl_pwrite_nonzero(w->fd, cs, b->npages * 8, b->csum_offset);
    ret = ret ? ret : sl_pwrite_full(w->fd, dg, b->nsegs * 8, b->digest_offset);

    memset(e, 0, SL_BLOCK_ENTRY_SIZE);
    memcpy(e + SL_B_NAME, b->name, SL_NAME_MAX);
    sl_put_le64(e + SL_B_LENGTH, b->length);
    sl_put_le64(e + SL_B_PAGESIZE, b->page_size);
    sl_put_le32(e + SL_B_NODE, b->numa_node < 0 ? SL_NO_NODE : (uint32_t)b->numa_node);
    sl_put_le32(e + SL_B_FLAGS, b->external ? SL_BLOCK_EXTERNAL : b->delta ? SL_BLOCK_DELTA : 0);
    sl_put_le64(e + SL_B_RAMHDR, b->ramhdr_offset);
    sl_put_le64(e + SL_B_CSUMS, b->csum_offset);
    sl_put_le64(e + SL_B_PRESENT, present);
    sl_put_le64(e + SL_B_DIGESTS, b->digest_offset);
    sl_put_le64(e + SL_B_META_CSUM, sl_hash(dg, b->nsegs * 8));
    return ret;
}

/* Appends section data after the blocks; fills the section table. */
static int write_sections(sl_writer *w, uint8_t *stab, uint64_t *off)
{
    for (guint i = 0; i < w->sections->len; i++) {
        wsection *s = &g_array_index(w->sections, wsection, i);
        gsize len;
        const void *d = g_bytes_get_data(s->data, &len);
        uint8_t *e = stab + (size_t)i * SL_SECTION_ENTRY_SIZE;
        int ret = sl_pwrite_full(w->fd, d, len, *off);

        if (ret < 0) {
            return ret;
        }
        memset(e, 0, SL_SECTION_ENTRY_SIZE);
        sl_put_le32(e + SL_S_TYPE, s->type);
        sl_put_le64(e + SL_S_OFFSET, *off);
        sl_put_le64(e + SL_S_LENGTH, len);
        sl_put_le64(e + SL_S_CSUM, sl_hash(d, len));
        *off += len;
    }
    *off = sl_align_up(*off, 8);
    return 0;
}

static bool finish(sl_writer *w, GError **errp);

bool sl_writer_finish(sl_writer *w, GError **errp)
{
    SL_ARG(w, errp, false);
    return finish(w, errp);
}

/* sl_writer_finish() of a writer that exists. */
static bool finish(sl_writer *w, GError **errp)
{
    size_t blen = (size_t)w->blocks->len * SL_BLOCK_ENTRY_SIZE;
    size_t slen = (size_t)w->sections->len * SL_SECTION_ENTRY_SIZE;
    g_autofree uint8_t *btab = g_malloc0(blen + 1);
    g_autofree uint8_t *stab = g_malloc0(slen + 1);
    uint8_t h[SL_HEADER_SIZE] = { 0 };
    uint64_t off;
    int ret = 0;

    if (w->blocks->len == 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "a snapshot needs at least one block");
        return false;
    }
    if (w->parent && w->blocks->len != w->parent->len) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s has %u blocks, its parent %s %u: a "
                    "child has every block of its parent", w->path, w->blocks->len,
                    w->parent_path, w->parent->len);
        return false;
    }
    if (!w->frozen) {
        freeze_layout(w);
    }
    for (guint i = 0; i < w->blocks->len && ret == 0; i++) {
        g_array_index(w->blocks, wblock, i).b.delta = w->parent != NULL;
        ret = write_block_meta(w, &g_array_index(w->blocks, wblock, i).b,
                               btab + (size_t)i * SL_BLOCK_ENTRY_SIZE);
    }
    off = w->data_end;
    ret = ret ? ret : write_sections(w, stab, &off);
    ret = ret ? ret : sl_pwrite_full(w->fd, btab, blen, SL_HEADER_SIZE);
    ret = ret ? ret : sl_pwrite_full(w->fd, stab, slen, off);
    memcpy(h + SL_H_MAGIC, SL_MAGIC, 8);
    sl_put_le32(h + SL_H_VERSION, SL_VERSION);
    sl_put_le32(h + SL_H_HDRSIZE, SL_HEADER_SIZE);
    sl_put_le64(h + SL_H_FILESIZE, off + slen);
    sl_put_le32(h + SL_H_NBLOCKS, w->blocks->len);
    sl_put_le32(h + SL_H_NSECTIONS, w->sections->len);
    sl_put_le64(h + SL_H_BLKTAB, SL_HEADER_SIZE);
    sl_put_le64(h + SL_H_SECTAB, off);
    sl_put_le64(h + SL_H_TABLES_CSUM, sl_hash2(btab, blen, stab, slen));
    sl_put_le64(h + SL_H_HEADER_CSUM, sl_hash(h, SL_H_HEADER_CSUM));
    if (ret == 0 && ftruncate(w->fd, (off_t)(off + slen)) < 0) {
        ret = -errno;
    }
    ret = ret ? ret : sl_pwrite_full(w->fd, h, sizeof(h), 0);
    return ret == 0 || io_error(errp, w, "writing metadata", -ret);
}

void sl_writer_free(sl_writer *w)
{
    if (!w) {
        return;
    }
    for (guint i = 0; i < w->blocks->len; i++) {
        sl_block *b = &g_array_index(w->blocks, wblock, i).b;
        g_free(b->bitmap);
        g_free(b->csums);
    }
    for (guint i = 0; i < w->sections->len; i++) {
        g_bytes_unref(g_array_index(w->sections, wsection, i).data);
    }
    g_array_free(w->blocks, true);
    g_array_free(w->sections, true);
    if (w->parent) {
        g_array_free(w->parent, true);
    }
    g_free(w->parent_path);
    close(w->fd);
    g_free(w->path);
    g_free(w);
}
