/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer harness of the snapshot reader, through the public API only.
 * Each input is a sparse snapshot file (sparse.h), written to a memfd and
 * resealed when its flags ask (reseal.h).  The file is opened fully
 * (sl_snapshot_open) and lazily (SL_OPEN_LAZY_CHECKSUMS); whatever opens is
 * walked with every read call of the reader: blocks and find_block, page
 * bits and checksums, page data read with and without verification at the
 * start, middle and end of each block, sections and their data, and every
 * kind of out-of-range argument.  Besides what the sanitizers catch, it
 * checks the API's promises: an open fails exactly when it sets an error,
 * a file that opens fully opens lazily too and then answers every call the
 * same way, a verified read returns what an unverified one does, zero
 * pages read as zeros, and out-of-range arguments are refused.  An input
 * with a parent section names the one parent the harness keeps at
 * /proc/self/fd/1000 (chain-seed.h): its chain is opened, checked and read
 * merged, with the same promises.
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include "snapload/snapload.h"
#include "chain-seed.h"
#include "fuzz-common.h"
#include "reseal.h"
#include "sparse.h"

#define MAX_FILE   (64ull << 20) /* larger files are refused: every run must stay fast */
#define READ_BYTES (256u << 10)  /* page data read per window (at least one page) */
#define MAX_BITS   64u           /* pages per window whose bit and checksum are asked */

/* The file the inputs are written to, and its name for sl_snapshot_open(). */
static int image_fd = -1;
static char image_path[64];

/* The same file opened fully (s[0]) and lazily (s[1]), or lazily only (n = 1). */
typedef struct {
    sl_snapshot *s[2];
    unsigned n;
} opened;

#define EACH(o, k) for (unsigned k = 0; k < (o)->n; k++)
#define AGREE(o, cond, what) FUZZ_CHECK((o)->n < 2 || (cond), "lazy and full opens disagree: " what)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    image_fd = memfd_create("fuzz-snapshot", 0);
    FUZZ_CHECK(image_fd >= 0, "memfd_create");
    FUZZ_CHECK(fuzz_install_parent(NULL), "the parent of incremental inputs is written");
    snprintf(image_path, sizeof(image_path), "/proc/self/fd/%d", image_fd);
    return 0;
}

static bool is_zero(const uint8_t *p, size_t len)
{
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

static sl_snapshot *open_image(unsigned flags)
{
    GError *err = NULL;
    sl_snapshot *s = flags ? sl_snapshot_open_flags(image_path, flags, &err)
                           : sl_snapshot_open(image_path, &err);

    FUZZ_CHECK((s == NULL) == (err != NULL), "an open fails exactly when it sets an error");
    FUZZ_CHECK(!err || err->domain == SL_ERROR, "open errors are in SL_ERROR");
    g_clear_error(&err);
    return s;
}

static void open_both(opened *o)
{
    sl_snapshot *full = open_image(0), *lazy = open_image(SL_OPEN_LAZY_CHECKSUMS);

    FUZZ_CHECK(!full || lazy, "a file that opens fully opens lazily too");
    o->n = 0;
    if (full) {
        o->s[o->n++] = full;
    }
    if (lazy) {
        o->s[o->n++] = lazy;
    }
}

/* What a successful open promises about a block of a file of @file_size bytes. */
static void check_block_info(const sl_block_info *bi, uint64_t file_size)
{
    FUZZ_CHECK(bi->name && bi->name[0] && strlen(bi->name) < 64, "block names are 1-63 bytes");
    FUZZ_CHECK(bi->page_size >= 4096 && !(bi->page_size & (bi->page_size - 1)),
               "page_size is a power of two from 4 KiB");
    FUZZ_CHECK(bi->pages && bi->length == bi->pages * bi->page_size,
               "length is a non-zero number of pages");
    FUZZ_CHECK(bi->present_pages <= bi->pages, "present_pages <= pages");
    FUZZ_CHECK(bi->pages_offset % bi->page_size == 0, "pages_offset is page aligned");
    FUZZ_CHECK(bi->pages_offset <= file_size && bi->length <= file_size - bi->pages_offset,
               "page data lies inside the file");
}

static bool same_block(const sl_block_info *a, const sl_block_info *b)
{
    return !strcmp(a->name, b->name) && a->length == b->length &&
           a->page_size == b->page_size && a->numa_node == b->numa_node &&
           a->pages == b->pages && a->present_pages == b->present_pages &&
           a->pages_offset == b->pages_offset;
}

/* Bits and checksums of pages [first, first + n), the first MAX_BITS of them. */
static void visit_bits(const opened *o, unsigned i, uint64_t first, uint64_t n)
{
    for (uint64_t p = first; p < first + MIN(n, MAX_BITS); p++) {
        bool present[2];
        uint64_t csum[2];

        EACH(o, k) {
            present[k] = sl_snapshot_page_present(o->s[k], i, p);
            csum[k] = sl_snapshot_page_checksum(o->s[k], i, p);
        }
        AGREE(o, present[0] == present[1], "page_present");
        AGREE(o, csum[0] == csum[1], "page_checksum");
    }
}

/* A read of pages [first, first + n) of block @i with and without verify. */
static void check_read(sl_snapshot *s, unsigned i, const sl_block_info *bi, uint64_t first,
                       uint64_t n, int plain_ret, const uint8_t *plain, int ver_ret,
                       const uint8_t *ver)
{
    size_t len = (size_t)(n * bi->page_size);

    FUZZ_CHECK(plain_ret <= 0 && ver_ret <= 0, "read_pages returns 0 or -errno");
    FUZZ_CHECK(ver_ret < 0 || (plain_ret == 0 && !memcmp(plain, ver, len)),
               "a verified read returns what an unverified one does");
    for (uint64_t p = 0; plain_ret == 0 && p < n; p++) {
        FUZZ_CHECK(sl_snapshot_page_present(s, i, first + p) ||
                   is_zero(plain + p * bi->page_size, bi->page_size),
                   "a page not stored reads as zeros");
    }
}

/* Reads a window of pages of block @i from every open, and compares. */
static void visit_window(const opened *o, unsigned i, const sl_block_info *bi, uint64_t first,
                         uint64_t n)
{
    size_t len = (size_t)(n * bi->page_size);
    g_autofree uint8_t *buf = g_malloc(4 * len);
    uint8_t *plain[2] = { buf, buf + len }, *ver[2] = { buf + 2 * len, buf + 3 * len };
    int plain_ret[2], ver_ret[2];

    visit_bits(o, i, first, n);
    EACH(o, k) {
        plain_ret[k] = sl_snapshot_read_pages(o->s[k], i, first, n, plain[k], false);
        ver_ret[k] = sl_snapshot_read_pages(o->s[k], i, first, n, ver[k], true);
        check_read(o->s[k], i, bi, first, n, plain_ret[k], plain[k], ver_ret[k], ver[k]);
    }
    AGREE(o, plain_ret[0] == plain_ret[1] && ver_ret[0] == ver_ret[1], "read_pages result");
    AGREE(o, plain_ret[0] || !memcmp(plain[0], plain[1], len), "read_pages data");
    AGREE(o, ver_ret[0] || !memcmp(ver[0], ver[1], len), "verified read_pages data");
}

/* Arguments past the end of block @i (or past the last block) are refused. */
static void visit_out_of_range(sl_snapshot *s, unsigned i, const sl_block_info *bi)
{
    unsigned nb = sl_snapshot_n_blocks(s);
    g_autofree uint8_t *page = g_malloc(bi->page_size);
    sl_block_info none;

    FUZZ_CHECK(!sl_snapshot_block(s, nb, &none), "block(n_blocks) is refused");
    FUZZ_CHECK(sl_snapshot_find_block(s, "") == -1, "no block has an empty name");
    FUZZ_CHECK(!sl_snapshot_page_present(s, i, bi->pages), "page_present past the end");
    FUZZ_CHECK(!sl_snapshot_page_present(s, nb, 0), "page_present of block n_blocks");
    FUZZ_CHECK(sl_snapshot_page_checksum(s, i, bi->pages) == 0, "page_checksum past the end");
    FUZZ_CHECK(sl_snapshot_page_checksum(s, nb, 0) == 0, "page_checksum of block n_blocks");
    FUZZ_CHECK(sl_snapshot_read_pages(s, i, bi->pages, 1, page, false) < 0,
               "read_pages past the end");
    FUZZ_CHECK(sl_snapshot_read_pages(s, i, 1, UINT64_MAX, page, true) < 0,
               "read_pages of a count that overflows");
    FUZZ_CHECK(sl_snapshot_read_pages(s, nb, 0, 1, page, false) < 0,
               "read_pages of block n_blocks");
    FUZZ_CHECK(sl_snapshot_read_pages(s, i, bi->pages, 0, page, true) <= 0,
               "an empty read at the end");
}

/* Block @i: its description, then windows at its start, middle and end. */
static void visit_block(const opened *o, unsigned i, uint64_t file_size)
{
    sl_block_info bi[2];
    uint64_t per;

    EACH(o, k) {
        FUZZ_CHECK(sl_snapshot_block(o->s[k], i, &bi[k]), "block(i < n_blocks) answers");
        FUZZ_CHECK(sl_snapshot_find_block(o->s[k], bi[k].name) == (int)i,
                   "find_block finds each block by its name");
        check_block_info(&bi[k], file_size);
        visit_out_of_range(o->s[k], i, &bi[k]);
    }
    AGREE(o, same_block(&bi[0], &bi[1]), "block info");
    per = MIN(bi[0].pages, MAX(1, READ_BYTES / bi[0].page_size));
    visit_window(o, i, &bi[0], 0, per);
    if (bi[0].pages > per) {
        visit_window(o, i, &bi[0], (bi[0].pages - per) / 2, per);
        visit_window(o, i, &bi[0], bi[0].pages - per, per);
    }
}

/* A section type that @s does not have: of the n + 1 types 0..n, one is free. */
static uint32_t absent_type(sl_snapshot *s)
{
    unsigned n = sl_snapshot_n_sections(s);
    g_autofree bool *used = g_new0(bool, n + 1);
    uint32_t type = 0;
    uint64_t len;

    for (unsigned j = 0; j < n; j++) {
        if (sl_snapshot_section(s, j, &type, &len) && type <= n) {
            used[type] = true;
        }
    }
    for (type = 0; used[type]; type++) {
    }
    return type;
}

/* Whether section @j is the first of its type (the one read_section reads). */
static bool first_of_type(sl_snapshot *s, unsigned j, uint32_t type)
{
    uint32_t t;
    uint64_t len;

    for (unsigned e = 0; e < j; e++) {
        if (sl_snapshot_section(s, e, &t, &len) && t == type) {
            return false;
        }
    }
    return true;
}

/* read_section of @type: the first section's bytes, or NULL with an error. */
static GBytes *read_section(sl_snapshot *s, uint32_t type, uint64_t expect_len)
{
    GError *err = NULL;
    GBytes *b = sl_snapshot_read_section(s, type, &err);

    FUZZ_CHECK((b == NULL) == (err != NULL), "read_section fails exactly when it sets an error");
    FUZZ_CHECK(!b || g_bytes_get_size(b) == expect_len, "read_section returns the section's length");
    g_clear_error(&err);
    return b;
}

/* Section @j: its entry, and its data if it is the first of its type. */
static void visit_section(const opened *o, unsigned j)
{
    uint32_t type[2];
    uint64_t len[2];
    GBytes *data[2] = { NULL, NULL };

    EACH(o, k) {
        FUZZ_CHECK(sl_snapshot_section(o->s[k], j, &type[k], &len[k]),
                   "section(j < n_sections) answers");
        if (first_of_type(o->s[k], j, type[k])) {
            data[k] = read_section(o->s[k], type[k], len[k]);
        }
    }
    AGREE(o, type[0] == type[1] && len[0] == len[1], "section entry");
    AGREE(o, (!data[0] && !data[1]) || (data[0] && data[1] && g_bytes_equal(data[0], data[1])),
          "read_section data");
    EACH(o, k) {
        g_clear_pointer(&data[k], g_bytes_unref);
    }
}

static void visit_sections(const opened *o)
{
    unsigned n[2];
    uint32_t type;
    uint64_t len;

    EACH(o, k) {
        n[k] = sl_snapshot_n_sections(o->s[k]);
        FUZZ_CHECK(!sl_snapshot_section(o->s[k], n[k], &type, &len), "section(n_sections) is refused");
        FUZZ_CHECK(!read_section(o->s[k], absent_type(o->s[k]), 0),
                   "read_section of a type the file lacks fails");
    }
    AGREE(o, n[0] == n[1], "n_sections");
    for (unsigned j = 0; j < n[0]; j++) {
        visit_section(o, j);
    }
}

static void visit(const opened *o, uint64_t file_size)
{
    unsigned nb[2];

    EACH(o, k) {
        FUZZ_CHECK(sl_snapshot_file_size(o->s[k]) == file_size, "file_size is the file's size");
        nb[k] = sl_snapshot_n_blocks(o->s[k]);
        FUZZ_CHECK(nb[k] > 0, "a snapshot has a block");
    }
    AGREE(o, nb[0] == nb[1], "n_blocks");
    for (unsigned i = 0; i < nb[0]; i++) {
        visit_block(o, i, file_size);
    }
    visit_sections(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    opened o;
    int64_t len;

    if (size == 0 || (len = sparse_write(image_fd, data + 1, size - 1, MAX_FILE)) < 0) {
        return -1; /* no file, or one too large to try: not worth keeping */
    }
    if (data[0] & SPARSE_RESEAL) {
        reseal(image_fd, (uint64_t)len);
    }
    open_both(&o);
    if (o.n) {
        visit(&o, (uint64_t)len);
    }
    EACH(&o, k) {
        sl_snapshot_close(o.s[k]);
    }
    sl_snapshot_close(NULL);
    return 0;
}
