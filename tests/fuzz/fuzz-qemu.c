/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer harness of the reader of QEMU's mapped-ram migration streams
 * (migration/format/qemu.c) and of the device-stream copy made from them
 * (sl_qemu_write_device_stream).  Each input is a sparse file (sparse.h),
 * never resealed: QEMU's stream has no checksums to fix.  Inputs that do
 * not start with "QEVM" are left to fuzz-reader.  The file is opened fully
 * and lazily (the same for this format); what opens is walked with every
 * read call of the API: blocks and find_block, where their pages lie,
 * every page bit, page data at the start, middle and end of each block
 * with and without verification, sections, and out-of-range arguments.
 * Then its device stream is written with the blocks the flags byte picks
 * left lazy (bit i % 8 for block i) and opened in turn: it must open, with
 * the same blocks, no page of a lazy block, the same pages of an eager one,
 * and the same header and device state.  Every input also goes through the
 * splitter of plain streams (check_split()), from the file and from a pipe,
 * taking off pc.ram, and pc.bios too when flag bit 7 is set.  Beside the
 * sanitizers' findings, FUZZ_CHECK reports any of these promises broken.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "migration/format/format.h"
#include "fuzz-common.h"
#include "qemu-stream.h"
#include "sparse.h"

/*
 * Larger files are refused: every run must stay fast, and a file's size
 * costs at each open (the reader scans the device state for the JSON
 * description) and at each copy (holes in a block marked stored, or in the
 * device state, are written out).  Streams of several 1 MiB aligned blocks fit.
 */
#define MAX_FILE   (8ull << 20)
#define PAGE       4096u
#define READ_PAGES 64u           /* pages per window of page data */
#define TAIL_CMP   (64u << 10)   /* device-state bytes compared at each end of the tail */

/* The input's file, and where device streams are written. */
static int image_fd = -1;
static char image_path[64];
static char *copy_dir, *copy_path;

static void remove_copy_dir(void)
{
    unlink(copy_path);
    rmdir(copy_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char tmpl[] = "/dev/shm/snapload-fuzz-qemu-XXXXXX";

    signal(SIGPIPE, SIG_IGN); /* a refused split closes the pipe its feeder writes */
    image_fd = memfd_create("fuzz-qemu", 0);
    FUZZ_CHECK(image_fd >= 0, "memfd_create");
    snprintf(image_path, sizeof(image_path), "/proc/self/fd/%d", image_fd);
    /* tmpfs when there is one: a copy is as large as its (sparse) original. */
    copy_dir = g_mkdtemp(g_strdup(tmpl));
    if (!copy_dir) {
        copy_dir = g_dir_make_tmp("snapload-fuzz-qemu-XXXXXX", NULL);
    }
    FUZZ_CHECK(copy_dir != NULL, "a directory for device streams");
    copy_path = g_build_filename(copy_dir, "device.mig", NULL);
    atexit(remove_copy_dir);
    return 0;
}

static bool is_zero(const uint8_t *p, size_t len)
{
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

static sl_snapshot *open_path(const char *path, unsigned flags)
{
    GError *err = NULL;
    sl_snapshot *s = sl_snapshot_open_flags(path, flags, &err);

    FUZZ_CHECK((s == NULL) == (err != NULL), "an open fails exactly when it sets an error");
    FUZZ_CHECK(!err || (err->domain == SL_ERROR && err->message[0]),
               "open errors are in SL_ERROR, with a message");
    g_clear_error(&err);
    return s;
}

/* ------------------------------------------------------------------ */
/* One opened stream                                                   */
/* ------------------------------------------------------------------ */

/* What a successful open promises about block @i of a file of @size bytes. */
static void check_block_info(sl_snapshot *s, unsigned i, const sl_block_info *bi, uint64_t size)
{
    bool in_file = sl_snapshot_block_in_file(s, i);
    int found = sl_snapshot_find_block(s, bi->name);
    sl_block_info other;

    FUZZ_CHECK(bi->name && bi->name[0] && strlen(bi->name) <= 255, "idstrs are 1-255 bytes");
    FUZZ_CHECK(found >= 0 && found <= (int)i, "find_block finds a block of each name");
    FUZZ_CHECK(sl_snapshot_block(s, (unsigned)found, &other) && !strcmp(other.name, bi->name),
               "find_block returns a block of that name");
    FUZZ_CHECK(bi->page_size == PAGE && bi->numa_node == -1, "4 KiB pages, no node hint");
    FUZZ_CHECK(bi->pages && bi->length == bi->pages * PAGE, "length is a number of pages");
    FUZZ_CHECK(bi->present_pages <= bi->pages, "present_pages <= pages");
    FUZZ_CHECK(bi->pages_offset % PAGE == 0, "pages_offset is page aligned");
    FUZZ_CHECK(!in_file || (bi->pages_offset <= size && bi->length <= size - bi->pages_offset),
               "the page data of a block in the file lies inside it");
    FUZZ_CHECK(in_file || bi->present_pages == 0, "a left-out block has no page here");
}

/* Every bit of block @i: as many set as present_pages says; returns the count. */
static uint64_t count_bits(sl_snapshot *s, unsigned i, const sl_block_info *bi)
{
    uint64_t n = 0;

    for (uint64_t p = 0; p < bi->pages; p++) {
        n += sl_snapshot_page_present(s, i, p);
    }
    FUZZ_CHECK(!sl_snapshot_page_present(s, i, bi->pages), "page_present past the end");
    return n;
}

/*
 * Pages [first, first + n) of block @i into @buf: a read that cannot fail,
 * zeros where absent; or, for a block left in shared memory, a read that
 * always fails (-EREMOTE: its pages are not in the file).
 */
static void read_window(sl_snapshot *s, unsigned i, uint64_t first, uint64_t n, uint8_t *buf)
{
    if (!sl_snapshot_block_in_file(s, i)) {
        FUZZ_CHECK(sl_snapshot_read_pages(s, i, first, n, buf, false) == -EREMOTE,
                   "a block left in shared memory is never read as zeros");
        memset(buf, 0, n * PAGE); /* so that comparisons of two such reads agree */
        return;
    }
    FUZZ_CHECK(sl_snapshot_read_pages(s, i, first, n, buf, false) == 0,
               "an unverified read of page data inside the file succeeds");
    FUZZ_CHECK(sl_snapshot_has_checksums(s) ||
               sl_snapshot_read_pages(s, i, first, n, buf + n * PAGE, true) == -ENODATA,
               "a verified read without checksums is -ENODATA");
    for (uint64_t p = 0; p < n; p++) {
        FUZZ_CHECK(sl_snapshot_page_present(s, i, first + p) || is_zero(buf + p * PAGE, PAGE),
                   "a page not stored reads as zeros");
    }
}

/* The first window of each of a block's start, middle and end. */
static unsigned windows(const sl_block_info *bi, uint64_t first[3], uint64_t *n)
{
    *n = MIN(bi->pages, READ_PAGES);
    first[0] = 0;
    first[1] = (bi->pages - *n) / 2;
    first[2] = bi->pages - *n;
    return bi->pages > *n ? 3 : 1;
}

/* Arguments past the end of block @i, or past the last block, are refused. */
static void check_out_of_range(sl_snapshot *s, unsigned i, const sl_block_info *bi)
{
    unsigned nb = sl_snapshot_n_blocks(s);
    uint8_t page[2 * PAGE];
    sl_block_info none;

    FUZZ_CHECK(!sl_snapshot_block(s, nb, &none), "block(n_blocks) is refused");
    FUZZ_CHECK(!sl_snapshot_block_in_file(s, nb), "block_in_file(n_blocks) is false");
    FUZZ_CHECK(sl_snapshot_find_block(s, "") == -1, "no block has an empty name");
    FUZZ_CHECK(!sl_snapshot_page_present(s, nb, 0), "page_present of block n_blocks");
    FUZZ_CHECK(sl_snapshot_page_checksum(s, nb, 0) == 0, "page_checksum of block n_blocks");
    FUZZ_CHECK(sl_snapshot_read_pages(s, i, bi->pages, 1, page, false) < 0,
               "read_pages past the end");
    FUZZ_CHECK(sl_snapshot_read_pages(s, i, 1, UINT64_MAX, page, false) < 0,
               "read_pages of a count that overflows");
    FUZZ_CHECK(sl_snapshot_read_pages(s, nb, 0, 1, page, false) < 0,
               "read_pages of block n_blocks");
}

static void visit_block(sl_snapshot *s, unsigned i, uint64_t size)
{
    sl_block_info bi;
    uint64_t first[3], n;
    unsigned nw;

    FUZZ_CHECK(sl_snapshot_block(s, i, &bi), "block(i < n_blocks) answers");
    check_block_info(s, i, &bi, size);
    /* A left-out block may be terabytes of clear bits: not counted one by one. */
    FUZZ_CHECK(!sl_snapshot_block_in_file(s, i) || count_bits(s, i, &bi) == bi.present_pages,
               "present_pages counts the bits");
    /* Without checksums every page's is 0 (it once read a NULL array). */
    FUZZ_CHECK(sl_snapshot_has_checksums(s) || sl_snapshot_page_checksum(s, i, 0) == 0,
               "page_checksum of a stream without checksums is 0");
    nw = windows(&bi, first, &n);
    g_autofree uint8_t *buf = g_malloc(2 * n * PAGE);
    for (unsigned w = 0; w < nw; w++) {
        read_window(s, i, first[w], n, buf);
    }
    check_out_of_range(s, i, &bi);
}

static void visit_stream(sl_snapshot *s, uint64_t size)
{
    GError *err = NULL;
    uint32_t type;
    uint64_t len;

    FUZZ_CHECK(sl_snapshot_get_format(s) == SL_FORMAT_QEMU, "a QEVM file is a QEMU stream");
    FUZZ_CHECK(sl_snapshot_file_size(s) == size, "file_size is the file's size");
    FUZZ_CHECK(sl_snapshot_n_blocks(s) > 0, "a stream has a block");
    FUZZ_CHECK(s->qemu->tail_offset <= size && s->qemu->tail_length == size - s->qemu->tail_offset,
               "the device state runs from the RAM section's end to the file's");
    FUZZ_CHECK(s->qemu->vmdesc_length <= s->qemu->tail_length, "the JSON lies in the tail");
    for (unsigned i = 0; i < sl_snapshot_n_blocks(s); i++) {
        visit_block(s, i, size);
    }
    FUZZ_CHECK(!sl_snapshot_section(s, sl_snapshot_n_sections(s), &type, &len),
               "section(n_sections) is refused");
    FUZZ_CHECK(!sl_snapshot_read_section(s, SL_SECTION_DEVICE_STATE, &err) && err,
               "a stream has no device-state section to read");
    g_clear_error(&err);
}

/* ------------------------------------------------------------------ */
/* Its device stream                                                   */
/* ------------------------------------------------------------------ */

/* @len bytes at @off of both files agree. */
static bool same_bytes(int a, int b, uint64_t off, uint64_t len)
{
    g_autofree uint8_t *x = g_malloc(len + 1), *y = g_malloc(len + 1);

    return sl_pread_full(a, x, len, off) == 0 && sl_pread_full(b, y, len, off) == 0 &&
           memcmp(x, y, len) == 0;
}

/* Block @i of the copy against the original: no page if lazy, else the same pages. */
static void compare_block(sl_snapshot *orig, sl_snapshot *copy, unsigned i, bool lazy)
{
    sl_block_info a, b;
    uint64_t first[3], n;
    unsigned nw;

    FUZZ_CHECK(sl_snapshot_block(copy, i, &b), "the copy has each block");
    sl_snapshot_block(orig, i, &a);
    FUZZ_CHECK(!strcmp(a.name, b.name) && a.length == b.length &&
               a.pages_offset == b.pages_offset &&
               sl_snapshot_block_in_file(orig, i) == sl_snapshot_block_in_file(copy, i),
               "the copy's blocks are the original's");
    FUZZ_CHECK(b.present_pages == (lazy ? 0 : a.present_pages),
               "a lazy block has no page in the copy, an eager one all of its own");
    nw = windows(&a, first, &n);
    g_autofree uint8_t *x = g_malloc(2 * n * PAGE), *y = g_malloc(2 * n * PAGE);
    for (unsigned w = 0; w < nw && !lazy; w++) {
        for (uint64_t p = first[w]; p < first[w] + n; p++) {
            FUZZ_CHECK(sl_snapshot_page_present(orig, i, p) == sl_snapshot_page_present(copy, i, p),
                       "an eager block's bits are the original's");
        }
        read_window(orig, i, first[w], n, x);
        read_window(copy, i, first[w], n, y);
        FUZZ_CHECK(!memcmp(x, y, n * PAGE), "an eager block's pages are the original's");
    }
}

/* The copy's stream header and device state are the original's bytes. */
static void compare_stream(sl_snapshot *orig, sl_snapshot *copy)
{
    const sl_qemu_stream *a = orig->qemu, *b = copy->qemu;
    uint64_t head = MIN(orig->blocks[0].record_offset, TAIL_CMP);
    uint64_t n = MIN(a->tail_length, TAIL_CMP);

    FUZZ_CHECK(sl_snapshot_file_size(copy) == sl_snapshot_file_size(orig),
               "the copy is as large as the original");
    FUZZ_CHECK(a->tail_offset == b->tail_offset && a->tail_length == b->tail_length &&
               a->vmdesc_length == b->vmdesc_length && !strcmp(a->machine, b->machine) &&
               a->caps->len == b->caps->len, "the copy's stream is the original's");
    FUZZ_CHECK(same_bytes(orig->fd, copy->fd, 0, head) &&
               same_bytes(orig->fd, copy->fd, a->tail_offset, n) &&
               same_bytes(orig->fd, copy->fd, a->tail_offset + a->tail_length - n, n),
               "the copy's header and device state are the original's bytes");
}

static void check_device_stream(sl_snapshot *orig, uint8_t pattern)
{
    unsigned nb = sl_snapshot_n_blocks(orig);
    g_autofree bool *lazy = g_new0(bool, nb);
    GError *err = NULL;
    sl_snapshot *copy;
    bool ok;

    for (unsigned i = 0; i < nb; i++) {
        lazy[i] = pattern >> (i % 8) & 1;
    }
    unlink(copy_path);
    ok = sl_qemu_write_device_stream(orig, copy_path, lazy, &err);
    FUZZ_CHECK(ok && !err, "the device stream of a stream that opened is written");
    copy = open_path(copy_path, 0);
    FUZZ_CHECK(copy != NULL, "the device stream of a stream that opened opens");
    FUZZ_CHECK(sl_snapshot_n_blocks(copy) == nb, "the copy has as many blocks");
    for (unsigned i = 0; i < nb; i++) {
        compare_block(orig, copy, i, lazy[i]);
    }
    compare_stream(orig, copy);
    sl_snapshot_close(copy);
    unlink(copy_path);
}

/* Blocks a split takes off: pc.ram, and pc.bios too when the flags byte has SPLIT_TWO. */
#define SPLIT_TWO  0x80u
#define SPLIT_MAX  2u
static const char *const split_names[SPLIT_MAX] = { "pc.ram", "pc.bios" };
static const uint64_t split_sizes[SPLIT_MAX] = { 64u << 20, 4 * PAGE };

/* What one split gave: its verdict, and the bytes it wrote (the rest, each block's pages). */
typedef struct {
    bool ok;
    GByteArray *out, *ram[SPLIT_MAX];
} split_result;

static GByteArray *file_bytes(int fd)
{
    struct stat st;
    GByteArray *b = g_byte_array_new();

    FUZZ_CHECK(fstat(fd, &st) == 0, "fstat of a split's output");
    g_byte_array_set_size(b, (guint)st.st_size);
    FUZZ_CHECK(sl_pread_full(fd, b->data, b->len, 0) == 0, "reading a split's output back");
    return b;
}

/* The input, to be written into a pipe by feed_pipe(). */
typedef struct {
    int fd;
    GByteArray *data;
    unsigned first;         /* where in the cycle of piece sizes the first starts */
} feeder;

/*
 * Writes the input into its pipe in lock-step pieces (qs_feed_pipe()):
 * each read of the splitter gets one piece, mostly 1-97 bytes, now and
 * then a page, so reads end inside headers and records and a run is
 * deterministic.
 */
static gpointer feed_pipe(gpointer opaque)
{
    feeder *f = opaque;

    qs_feed_pipe(f->fd, f->data->data, f->data->len, f->first, PAGE, true);
    close(f->fd);
    return NULL;
}

/* A pipe of one page that a thread fills with the input in pieces from @seed. */
static GThread *start_feeder(feeder *f, uint64_t len, unsigned seed, int *in)
{
    int p[2];

    f->first = seed;
    f->data = g_byte_array_sized_new((guint)len);
    g_byte_array_set_size(f->data, (guint)len);
    FUZZ_CHECK(sl_pread_full(image_fd, f->data->data, len, 0) == 0, "reading the input back");
    FUZZ_CHECK(pipe(p) == 0, "pipe");
    (void)fcntl(p[1], F_SETPIPE_SZ, 4096);
    f->fd = p[1];
    *in = p[0];
    return g_thread_new("fuzz-feed", feed_pipe, f);
}

/*
 * One split of the input into fresh memory files, the @n blocks of
 * split_names[] taken off: from the file itself, or (@from_pipe) from a
 * pipe that a thread fills in pieces (@pipe_seed picks the first), as QEMU
 * does during qemu-save, so reads end anywhere and the reader keeps only
 * its window.
 */
static split_result split_once(uint64_t len, unsigned n, bool from_pipe, unsigned pipe_seed)
{
    const char *lazy[SPLIT_MAX + 1] = { NULL };
    int out = memfd_create("fuzz-split-out", 0), ram[SPLIT_MAX];
    int in = image_fd;
    feeder f = { 0 };
    GThread *th = NULL;
    GError *err = NULL;
    split_result res = { 0 };

    for (unsigned b = 0; b < n; b++) {
        lazy[b] = split_names[b];
        ram[b] = memfd_create("fuzz-split-ram", 0);
        FUZZ_CHECK(ram[b] >= 0, "memfd_create");
    }
    FUZZ_CHECK(out >= 0, "memfd_create");
    if (from_pipe) {
        th = start_feeder(&f, len, pipe_seed, &in);
    }
    res.ok = sl_qemu_split_stream(in, out, lazy, ram, split_sizes, false, &err);
    FUZZ_CHECK(res.ok == !err && (!err || (err->domain == SL_ERROR && err->message[0])),
               "a split fails exactly when it sets an error, in SL_ERROR, with a message");
    if (th) {
        close(in); /* a writer still blocked gets EPIPE */
        g_thread_join(th);
        g_byte_array_unref(f.data);
    }
    res.out = file_bytes(out);
    close(out);
    for (unsigned b = 0; b < n; b++) {
        res.ram[b] = file_bytes(ram[b]);
        FUZZ_CHECK(!res.ok || res.ram[b]->len <= split_sizes[b],
                   "a split writes no page beyond its block");
        close(ram[b]);
    }
    g_clear_error(&err);
    return res;
}

static bool same_array(const GByteArray *a, const GByteArray *b)
{
    return a->len == b->len && (a->len == 0 || !memcmp(a->data, b->data, a->len));
}

static void split_result_clear(split_result *r)
{
    g_byte_array_unref(r->out);
    for (unsigned b = 0; b < SPLIT_MAX; b++) {
        g_clear_pointer(&r->ram[b], g_byte_array_unref);
    }
}

/*
 * The same input as a plain precopy stream for sl_qemu_split_stream()
 * (qemu-split.c), with pc.ram taken off, and pc.bios too when @flags has
 * SPLIT_TWO: it returns false exactly when it sets an error in SL_ERROR,
 * and what it writes stays within each block.  Split from a pipe it gives
 * the same verdict and, when it succeeds, the same bytes as from the file:
 * the pipe's window never refuses a read the stream needs.
 */
static void check_split(uint64_t len, uint8_t flags)
{
    unsigned n = flags & SPLIT_TWO ? 2 : 1;
    split_result file = split_once(len, n, false, 0);
    split_result piped = split_once(len, n, true, flags);
    bool same = same_array(file.out, piped.out);

    FUZZ_CHECK(file.ok == piped.ok, "a split from a pipe succeeds exactly when one from the file does");
    for (unsigned b = 0; b < n; b++) {
        same = same && same_array(file.ram[b], piped.ram[b]);
    }
    FUZZ_CHECK(!file.ok || same, "a split from a pipe writes what one from the file does");
    split_result_clear(&file);
    split_result_clear(&piped);
}

/* ------------------------------------------------------------------ */
/* One input                                                           */
/* ------------------------------------------------------------------ */

static bool starts_with_qevm(uint64_t len)
{
    char magic[4];

    return len >= 4 && sl_pread_full(image_fd, magic, 4, 0) == 0 && !memcmp(magic, "QEVM", 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_snapshot *full, *lazy;
    int64_t len;

    if (size == 0 || (len = sparse_write(image_fd, data + 1, size - 1, MAX_FILE)) < 0 ||
        !starts_with_qevm((uint64_t)len)) {
        return -1; /* no file, one too large, or not a QEMU stream: not worth keeping */
    }
    full = open_path(image_path, 0);
    lazy = open_path(image_path, SL_OPEN_LAZY_CHECKSUMS);
    FUZZ_CHECK(!full == !lazy, "a stream opens lazily exactly when it opens fully");
    if (full) {
        visit_stream(full, (uint64_t)len);
        visit_stream(lazy, (uint64_t)len);
        check_device_stream(full, data[0]);
    }
    sl_snapshot_close(full);
    sl_snapshot_close(lazy);
    check_split((uint64_t)len, data[0]);
    return 0;
}
