/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer harness of the sidecar index of a QEMU mapped-ram file
 * (migration/format/index.c, and the container parser on a file of
 * external blocks).  At start it writes one fixed QEMU stream
 * (index-seed.h) into a directory under /dev/shm and opens it without an
 * index, as the reference.  Each input is the index file written sparsely
 * (sparse.h) beside that stream and resealed when its flags ask; then the
 * stream is opened fully and lazily, which attaches the index.  Beside the
 * sanitizers' findings it checks what an index may and may not change:
 * an open fails exactly when it sets an error, and then names the index;
 * a stream that opens fully opens lazily too; what opens has checksums and
 * the reference's blocks and bits (the index never changes which pages are
 * stored, nor where); a read verified against the index's checksums either
 * fails or returns the reference's bytes, zero pages as zeros; a hot-page
 * list that passes its check lies inside the blocks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "migration/format/format.h"
#include "fuzz-common.h"
#include "index-seed.h"
#include "reseal.h"
#include "sparse.h"

#define MAX_FILE   (4ull << 20) /* an index of the fixed stream is well under 1 MiB */
#define READ_PAGES 32u          /* pages per window of page data */

/* The stream's directory, the stream, its index (the input) and the reference open. */
static char *dir, *stream_path, *index_path;
static int index_fd = -1;
static sl_snapshot *ref;

static void remove_dir(void)
{
    sl_snapshot_close(ref);
    unlink(index_path);
    unlink(stream_path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    GError *err = NULL;

    dir = g_mkdtemp(g_strdup("/dev/shm/snapload-fuzz-index-XXXXXX"));
    if (!dir) {
        dir = g_dir_make_tmp("snapload-fuzz-index-XXXXXX", NULL);
    }
    FUZZ_CHECK(dir != NULL, "a directory for the stream");
    stream_path = g_build_filename(dir, "vm.mig", NULL);
    index_path = g_strconcat(stream_path, ".slidx", NULL);
    FUZZ_CHECK(index_seed_stream(stream_path, &err), "the fixed stream is written");
    ref = sl_snapshot_open(stream_path, &err);
    FUZZ_CHECK(ref && !sl_snapshot_has_checksums(ref), "the stream opens, without checksums");
    atexit(remove_dir);
    return 0;
}

static sl_snapshot *open_stream(unsigned flags)
{
    GError *err = NULL;
    sl_snapshot *s = sl_snapshot_open_flags(stream_path, flags, &err);

    FUZZ_CHECK((s == NULL) == (err != NULL), "an open fails exactly when it sets an error");
    FUZZ_CHECK(!err || (err->domain == SL_ERROR && strstr(err->message, index_path)),
               "an open refused for its index names the index");
    g_clear_error(&err);
    return s;
}

/* Block @i of @s is the reference's, bit for bit. */
static void check_block(sl_snapshot *s, unsigned i)
{
    sl_block_info a, b;

    FUZZ_CHECK(sl_snapshot_block(s, i, &a) && sl_snapshot_block(ref, i, &b), "block(i)");
    FUZZ_CHECK(!strcmp(a.name, b.name) && a.length == b.length && a.page_size == b.page_size &&
               a.pages == b.pages && a.present_pages == b.present_pages &&
               a.pages_offset == b.pages_offset, "an index leaves the blocks as they are");
    for (uint64_t p = 0; p < a.pages; p++) {
        FUZZ_CHECK(sl_snapshot_page_present(s, i, p) == sl_snapshot_page_present(ref, i, p),
                   "an index leaves the stored pages as they are");
    }
}

/* Pages [first, first + n) of block @i: verified, either refused or the reference's bytes. */
static void check_window(sl_snapshot *s, unsigned i, const sl_block_info *bi, uint64_t first,
                         uint64_t n)
{
    size_t len = (size_t)(n * bi->page_size);
    g_autofree uint8_t *want = g_malloc(len), *got = g_malloc(len);
    int ret;

    FUZZ_CHECK(sl_snapshot_read_pages(ref, i, first, n, want, false) == 0, "reference read");
    ret = sl_snapshot_read_pages(s, i, first, n, got, true);
    FUZZ_CHECK(ret <= 0, "read_pages returns 0 or -errno");
    FUZZ_CHECK(ret < 0 || !memcmp(want, got, len), "a verified read returns the file's bytes");
    FUZZ_CHECK(sl_snapshot_read_pages(s, i, first, n, got, false) == 0 && !memcmp(want, got, len),
               "an unverified read is the reference's");
}

/* A hot-page list that passes its check names pages inside the blocks. */
static void check_hot(sl_snapshot *s)
{
    g_autoptr(GBytes) hot = NULL;
    const uint8_t *p;
    gsize len;

    for (unsigned j = 0; j < sl_snapshot_n_sections(s); j++) {
        uint32_t type;
        uint64_t slen;
        FUZZ_CHECK(sl_snapshot_section(s, j, &type, &slen), "section(j)");
        if (type == SL_SECTION_HOT_PAGES) {
            hot = sl_snapshot_read_section(s, type, NULL);
            break;
        }
    }
    if (!hot) {
        return;
    }
    p = g_bytes_get_data(hot, &len);
    if (!sl_hot_list_check(s, p, len, NULL)) {
        return;
    }
    for (gsize e = 0; e < len / 16; e++) {
        sl_block_info bi;
        FUZZ_CHECK(sl_snapshot_block(s, sl_le32(p + 16 * e), &bi) &&
                   sl_le64(p + 16 * e + 8) < bi.pages, "a checked hot list lies inside the blocks");
    }
}

static void visit(sl_snapshot *s)
{
    FUZZ_CHECK(sl_snapshot_has_checksums(s), "an attached index gives checksums");
    FUZZ_CHECK(sl_snapshot_n_blocks(s) == sl_snapshot_n_blocks(ref), "n_blocks");
    for (unsigned i = 0; i < sl_snapshot_n_blocks(s); i++) {
        sl_block_info bi;
        check_block(s, i);
        sl_snapshot_block(s, i, &bi);
        for (uint64_t first = 0; first < bi.pages; first += bi.pages / 3 + 1) {
            check_window(s, i, &bi, first, MIN(READ_PAGES, bi.pages - first));
        }
    }
    check_hot(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_snapshot *full, *lazy;
    int64_t len;

    if (size == 0) {
        return -1;
    }
    index_fd = open(index_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    FUZZ_CHECK(index_fd >= 0, "the index file opens");
    len = sparse_write(index_fd, data + 1, size - 1, MAX_FILE);
    if (len >= 0 && (data[0] & SPARSE_RESEAL)) {
        reseal(index_fd, (uint64_t)len);
    }
    close(index_fd);
    if (len < 0) {
        return -1; /* too large to try: not worth keeping */
    }
    full = open_stream(0);
    lazy = open_stream(SL_OPEN_LAZY_CHECKSUMS);
    FUZZ_CHECK(!full || lazy, "a stream that opens fully opens lazily too");
    if (full) {
        visit(full);
    }
    if (lazy) {
        visit(lazy);
    }
    sl_snapshot_close(full);
    sl_snapshot_close(lazy);
    return 0;
}
