/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reader of snapload's own container (docs/format.md): validates all of a
 * snapshot's metadata before anything uses it.  Every offset and length is
 * checked for overflow and against the file size, regions may not overlap,
 * the bitmap must fit its block, and every table is checksummed.  Errors
 * name the field and the bad value.  Page data is read later, page by page,
 * by sl_snapshot_read_pages() (snapshot.c), as for every format.
 */
#include <errno.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "migration/format/format.h"

typedef struct {
    sl_snapshot *s;
    sl_regions *regions;
    bool lazy;          /* SL_OPEN_LAZY_CHECKSUMS */
    bool index;         /* a sidecar index: its blocks are external */
} ctx;

#define BAD SL_BAD
#define claim_region(c, ...) sl_regions_claim((c)->regions, __VA_ARGS__)
#define read_at(c, ...) sl_read_at((c)->s->fd, __VA_ARGS__)

static bool parse_header(ctx *c, const uint8_t *h, GError **errp)
{
    sl_snapshot *s = c->s;
    uint64_t fsize = sl_le64(h + SL_H_FILESIZE);
    uint64_t want = sl_le64(h + SL_H_HEADER_CSUM), got = sl_hash(h, SL_H_HEADER_CSUM);

    if (memcmp(h, SL_MAGIC, 8) != 0) {
        return BAD(errp, "magic: not a snapload snapshot (first bytes are not \"%s\")", SL_MAGIC);
    }
    if (want != got) {
        return BAD(errp, "header_csum: stored 0x%016" G_GINT64_MODIFIER "x, computed 0x%016"
                   G_GINT64_MODIFIER "x (header corrupted)", want, got);
    }
    if (sl_le32(h + SL_H_VERSION) != SL_VERSION) {
        return BAD(errp, "version: %u is not supported (this reader reads version %u%s)",
                   sl_le32(h + SL_H_VERSION), SL_VERSION, sl_le32(h + SL_H_VERSION) == 1
                   ? "; version 1 has no segment digests: save the snapshot again" : "");
    }
    if (sl_le32(h + SL_H_HDRSIZE) != SL_HEADER_SIZE) {
        return BAD(errp, "header_size: %u, expected %u", sl_le32(h + SL_H_HDRSIZE),
                   SL_HEADER_SIZE);
    }
    if (fsize != s->file_size) {
        return BAD(errp, "file_size: header says %" G_GUINT64_FORMAT " bytes but the file has %"
                   G_GUINT64_FORMAT " (%s)", fsize, s->file_size,
                   fsize > s->file_size ? "truncated" : "trailing bytes");
    }
    s->nblocks = sl_le32(h + SL_H_NBLOCKS);
    s->nsections = sl_le32(h + SL_H_NSECTIONS);
    if (s->nblocks == 0 || s->nblocks > SL_MAX_BLOCKS) {
        return BAD(errp, "n_blocks: %u is not between 1 and %u", s->nblocks, SL_MAX_BLOCKS);
    }
    if (s->nsections > SL_MAX_SECTIONS) {
        return BAD(errp, "n_sections: %u exceeds %u", s->nsections, SL_MAX_SECTIONS);
    }
    return claim_region(c, 0, SL_HEADER_SIZE, errp, "file header");
}

static bool parse_block_entry(ctx *c, unsigned i, const uint8_t *e, GError **errp)
{
    sl_block *b = &c->s->blocks[i];
    uint32_t node = sl_le32(e + SL_B_NODE);
    const char *nul = memchr(e + SL_B_NAME, 0, SL_NAME_MAX);

    if (!nul || nul == (const char *)e) {
        return BAD(errp, "block %u: name is empty or not NUL-terminated within %u bytes",
                   i, SL_NAME_MAX);
    }
    memcpy(b->name, e + SL_B_NAME, SL_NAME_MAX);
    if (!sl_name_printable(b->name)) {
        return BAD(errp, "block %u: name is not UTF-8 text (it holds a control character or "
                   "invalid bytes)", i);
    }
    for (unsigned j = 0; j < i; j++) {
        if (strcmp(c->s->blocks[j].name, b->name) == 0) {
            return BAD(errp, "block %u: name '%s' is used by block %u too", i, b->name, j);
        }
    }
    b->length = sl_le64(e + SL_B_LENGTH);
    b->page_size = sl_le64(e + SL_B_PAGESIZE);
    if (b->page_size < SL_MIN_PAGE || b->page_size > SL_MAX_PAGE ||
        (b->page_size & (b->page_size - 1))) {
        return BAD(errp, "block %u ('%s'): page_size %" G_GUINT64_FORMAT " is not a power of "
                   "two from 4096 to 1 GiB", i, b->name, b->page_size);
    }
    if (b->length == 0 || b->length % b->page_size) {
        return BAD(errp, "block %u ('%s'): length %" G_GUINT64_FORMAT " is not a non-zero "
                   "multiple of page_size %" G_GUINT64_FORMAT, i, b->name, b->length,
                   b->page_size);
    }
    if (node != SL_NO_NODE && node >= SL_MAX_NODE_HINT) {
        return BAD(errp, "block %u ('%s'): numa_node %u is out of range", i, b->name, node);
    }
    b->external = sl_le32(e + SL_B_FLAGS) == SL_BLOCK_EXTERNAL;
    b->delta = sl_le32(e + SL_B_FLAGS) == SL_BLOCK_DELTA;
    if (sl_le32(e + SL_B_FLAGS) && !b->external && !b->delta) {
        return BAD(errp, "block %u ('%s'): flags 0x%x are not known", i, b->name,
                   sl_le32(e + SL_B_FLAGS));
    }
    if (b->external != c->index) {
        return BAD(errp, "block %u ('%s'): %s", i, b->name, c->index
                   ? "its pages are in this file: not a sidecar index"
                   : "its pages live in another file: this is a sidecar index (open the "
                     "QEMU file it indexes, beside which it lies)");
    }
    b->numa_node = node == SL_NO_NODE ? -1 : (int)node;
    b->in_file = true;
    b->npages = b->length / b->page_size;
    b->ramhdr_offset = sl_le64(e + SL_B_RAMHDR);
    b->csum_offset = sl_le64(e + SL_B_CSUMS);
    b->digest_offset = sl_le64(e + SL_B_DIGESTS);
    b->nsegs = sl_nsegs(b->npages);
    b->present_pages = sl_le64(e + SL_B_PRESENT);
    return true;
}

static bool parse_ramhdr(ctx *c, sl_block *b, unsigned i, GError **errp)
{
    uint8_t h[SL_MR_HEADER_SIZE];
    uint64_t psize;

    if (!claim_region(c, b->ramhdr_offset, SL_MR_HEADER_SIZE, errp,
                      "block %u ('%s') mapped-ram header (ramhdr_offset)", i, b->name) ||
        !read_at(c, h, sizeof(h), b->ramhdr_offset, "mapped-ram header", errp)) {
        return false;
    }
    if (sl_be32(h + SL_MR_VER) != SL_MR_VERSION) {
        return BAD(errp, "block %u ('%s'): mapped-ram version %u is not supported (want %u; "
                   "read at ramhdr_offset %" G_GUINT64_FORMAT ", which may itself be damaged)",
                   i, b->name, sl_be32(h + SL_MR_VER), SL_MR_VERSION, b->ramhdr_offset);
    }
    psize = sl_be64(h + SL_MR_PAGESIZE);
    if (psize != b->page_size) {
        return BAD(errp, "block %u ('%s'): mapped-ram page_size %" G_GUINT64_FORMAT
                   " differs from the block table's %" G_GUINT64_FORMAT, i, b->name,
                   psize, b->page_size);
    }
    b->bitmap_offset = sl_be64(h + SL_MR_BITMAP);
    b->pages_offset = sl_be64(h + SL_MR_PAGES);
    if (b->external && b->pages_offset) {
        return BAD(errp, "block %u ('%s'): an external block with pages_offset %"
                   G_GUINT64_FORMAT " (want 0)", i, b->name, b->pages_offset);
    }
    if (b->pages_offset % SL_MR_ALIGN || b->pages_offset % b->page_size) {
        return BAD(errp, "block %u ('%s'): pages_offset %" G_GUINT64_FORMAT " is not aligned "
                   "to 1 MiB and to the page size", i, b->name, b->pages_offset);
    }
    return claim_region(c, b->bitmap_offset, sl_bitmap_bytes(b->npages), errp,
                        "block %u ('%s') bitmap (bitmap_offset)", i, b->name) &&
           claim_region(c, b->csum_offset, b->npages * 8, errp,
                        "block %u ('%s') checksum array (csum_offset)", i, b->name) &&
           claim_region(c, b->digest_offset, b->nsegs * 8, errp,
                        "block %u ('%s') segment digests (digest_offset)", i, b->name) &&
           (b->external || claim_region(c, b->pages_offset, b->length, errp,
                                        "block %u ('%s') page data (pages_offset, length)", i,
                                        b->name));
}

/*
 * Reads the segment digests of block @i and checks them against @meta_csum
 * from the (checksummed) block table: from then on they prove the rest.
 */
static bool load_digests(ctx *c, sl_block *b, unsigned i, uint64_t meta_csum, GError **errp)
{
    /* Zeroed, so touched here first: on one host the kernel's read into
     * 16 KiB of untouched heap took 1.5 ms, 0.2 ms after this (64 GiB guest). */
    b->digests = g_new0(uint64_t, b->nsegs);
    if (!read_at(c, b->digests, b->nsegs * 8, b->digest_offset, "segment digests", errp)) {
        return false;
    }
    if (sl_hash(b->digests, b->nsegs * 8) != meta_csum) {
        return BAD(errp, "block %u ('%s'): meta_csum does not match its segment digests "
                   "(metadata corrupted)", i, b->name);
    }
    for (uint64_t k = 0; k < b->nsegs; k++) {
        b->digests[k] = GUINT64_FROM_LE(b->digests[k]);
    }
    return true;
}

/* Full open: reads the checksum array and proves every segment of @b. */
static bool load_all_csums(ctx *c, sl_block *b, unsigned i, GError **errp)
{
    if (!read_at(c, b->csums, b->npages * 8, b->csum_offset, "checksum array", errp)) {
        return false;
    }
    for (uint64_t k = 0; k < b->nsegs; k++) {
        if (sl_seg_digest(b->bitmap, b->csums, b->npages, k) != b->digests[k]) {
            uint64_t first = k * SL_CSUM_SEG, last = MIN(first + SL_CSUM_SEG, b->npages) - 1;
            return BAD(errp, "block %u ('%s'): segment %" G_GUINT64_FORMAT " (pages %"
                       G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT "): its bitmap words and "
                       "checksum entries do not match its digest (metadata corrupted)",
                       i, b->name, k, first, last);
        }
    }
    for (uint64_t p = 0; p < b->npages; p++) {
        b->csums[p] = GUINT64_FROM_LE(b->csums[p]);
    }
    return true;
}

/* Tail bits and present_pages against the bitmap (as stored, not yet proven). */
static bool check_bitmap_counts(sl_block *b, unsigned i, GError **errp)
{
    uint64_t bmb = sl_bitmap_bytes(b->npages), count;

    if (b->npages % 64 && b->bitmap[bmb / 8 - 1] >> (b->npages % 64)) {
        return BAD(errp, "block %u ('%s'): bitmap has bits set past its %" G_GUINT64_FORMAT
                   " pages", i, b->name, b->npages);
    }
    count = sl_bitmap_count(b->bitmap, b->npages);
    if (count != b->present_pages) {
        return BAD(errp, "block %u ('%s'): present_pages %" G_GUINT64_FORMAT " but the bitmap "
                   "has %" G_GUINT64_FORMAT " bits set: the bitmap or the block entry is "
                   "corrupt", i, b->name, b->present_pages, count);
    }
    return true;
}

/*
 * Reads the bitmap and the segment digests; a full open also reads and
 * proves the whole checksum array.  Lazily (little-endian hosts only) the
 * array is left to segments.c, which proves each segment before its first use.
 */
static bool load_block_meta(ctx *c, sl_block *b, unsigned i, uint64_t meta_csum,
                            GError **errp)
{
    uint64_t bmb = sl_bitmap_bytes(b->npages);
    bool lazy = c->lazy && G_BYTE_ORDER == G_LITTLE_ENDIAN;

    b->bitmap = sl_alloc_large(bmb); /* read in whole right away */
    if (!sl_csums_alloc(b)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block %u ('%s'): no memory for the "
                    "checksum array of %" G_GUINT64_FORMAT " pages", i, b->name, b->npages);
        return false;
    }
    if (!read_at(c, b->bitmap, bmb, b->bitmap_offset, "bitmap", errp) ||
        !load_digests(c, b, i, meta_csum, errp) || (!lazy && !load_all_csums(c, b, i, errp))) {
        return false;
    }
    for (uint64_t w = 0; w < bmb / 8; w++) {
        b->bitmap[w] = GUINT64_FROM_LE(b->bitmap[w]);
    }
    if (lazy) {
        b->seg_state = g_new0(_Atomic uint32_t, b->nsegs);
    }
    return check_bitmap_counts(b, i, errp);
}

static bool parse_blocks(ctx *c, const uint8_t *tab, GError **errp)
{
    sl_snapshot *s = c->s;

    s->blocks = g_new0(sl_block, s->nblocks);
    for (unsigned i = 0; i < s->nblocks; i++) {
        const uint8_t *e = tab + (size_t)i * SL_BLOCK_ENTRY_SIZE;
        if (!parse_block_entry(c, i, e, errp) || !parse_ramhdr(c, &s->blocks[i], i, errp)) {
            return false;
        }
    }
    return true;
}

/*
 * Every block's bitmap and checksums, once the layout is known to hold no
 * overlap: 1024 blocks pointing at the same metadata were each allocated
 * and read before the overlap was seen (found by review: 2 GB of memory
 * to refuse a 136 KiB file).
 */
static bool load_blocks_meta(ctx *c, const uint8_t *tab, GError **errp)
{
    for (unsigned i = 0; i < c->s->nblocks; i++) {
        const uint8_t *e = tab + (size_t)i * SL_BLOCK_ENTRY_SIZE;
        if (!load_block_meta(c, &c->s->blocks[i], i, sl_le64(e + SL_B_META_CSUM), errp)) {
            return false;
        }
    }
    return true;
}

static bool parse_sections(ctx *c, const uint8_t *tab, GError **errp)
{
    sl_snapshot *s = c->s;

    s->sections = g_new0(sl_section, s->nsections ? s->nsections : 1);
    for (unsigned i = 0; i < s->nsections; i++) {
        const uint8_t *e = tab + (size_t)i * SL_SECTION_ENTRY_SIZE;
        sl_section *sec = &s->sections[i];
        sec->type = sl_le32(e + SL_S_TYPE);
        sec->offset = sl_le64(e + SL_S_OFFSET);
        sec->length = sl_le64(e + SL_S_LENGTH);
        sec->csum = sl_le64(e + SL_S_CSUM);
        sec->fd = s->fd;
        if (sl_le32(e + SL_S_FLAGS)) {
            return BAD(errp, "section %u: flags 0x%x are not zero (or the header's "
                       "section_table_offset, where it was read, is damaged)", i,
                       sl_le32(e + SL_S_FLAGS));
        }
        if (!claim_region(c, sec->offset, sec->length, errp, "section %u (type %u, offset/length)", i,
                          sec->type)) {
            return false;
        }
    }
    return true;
}

static bool parse_tables(ctx *c, const uint8_t *h, GError **errp)
{
    sl_snapshot *s = c->s;
    uint64_t boff = sl_le64(h + SL_H_BLKTAB), soff = sl_le64(h + SL_H_SECTAB);
    size_t blen = (size_t)s->nblocks * SL_BLOCK_ENTRY_SIZE;
    size_t slen = (size_t)s->nsections * SL_SECTION_ENTRY_SIZE;
    g_autofree uint8_t *btab = g_malloc(blen);
    g_autofree uint8_t *stab = g_malloc(slen + 1);

    if (!claim_region(c, boff, blen, errp, "block table (block_table_offset)") ||
        !claim_region(c, soff, slen, errp, "section table (section_table_offset)") ||
        !read_at(c, btab, blen, boff, "block table", errp) ||
        !read_at(c, stab, slen, soff, "section table", errp)) {
        return false;
    }
    if (sl_hash2(btab, blen, stab, slen) != sl_le64(h + SL_H_TABLES_CSUM)) {
        return BAD(errp, "tables_csum: block/section tables do not match their checksum "
                   "(tables corrupted)");
    }
    return parse_blocks(c, btab, errp) && parse_sections(c, stab, errp) &&
           sl_regions_check(c->regions, errp) && load_blocks_meta(c, btab, errp);
}

/*
 * Full open, after the layout checks: no page whose bit is clear has a
 * checksum entry (format.md: its entry is 0).  A lazy open checks each
 * segment as it proves it (segments.c).
 */
static bool no_stray_entries(const sl_snapshot *s, bool lazy, GError **errp)
{
    for (unsigned i = 0; i < s->nblocks && !lazy; i++) {
        const sl_block *b = &s->blocks[i];
        for (uint64_t k = 0; k < b->nsegs && b->csums; k++) {
            uint64_t stray = sl_seg_stray_entry(b->bitmap, b->csums, b->npages, k);
            if (stray != UINT64_MAX) {
                return BAD(errp, "block %u ('%s'): page %" G_GUINT64_FORMAT " is not stored "
                           "(its bitmap bit is clear) but has a checksum entry: the metadata "
                           "is inconsistent (a writer's bug, or a bit cleared by damage)", i,
                           b->name, stray);
            }
        }
    }
    return true;
}

bool sl_container_parse(sl_snapshot *s, bool lazy, bool index, GError **errp)
{
    ctx c = { .s = s, .regions = sl_regions_new(s->file_size), .lazy = lazy, .index = index };
    uint8_t h[SL_HEADER_SIZE];
    bool ok;

    s->format = SL_FORMAT_SNAPLOAD;
    s->has_checksums = true;
    s->csum_fd = s->fd;
    ok = (s->file_size >= SL_HEADER_SIZE ||
          BAD(errp, "file is %" G_GUINT64_FORMAT " bytes, smaller than the %u-byte header",
              s->file_size, SL_HEADER_SIZE)) &&
         read_at(&c, h, sizeof(h), 0, "file header", errp) &&
         parse_header(&c, h, errp) && parse_tables(&c, h, errp) &&
         no_stray_entries(s, lazy, errp);
    sl_regions_free(c.regions);
    return ok;
}
