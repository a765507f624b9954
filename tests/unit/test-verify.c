/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The CLI's byte-for-byte check of restored memory (tools/memload.c),
 * table-driven over anonymous memory, shmem, hugetlbfs-2M and
 * hugetlbfs-1G.  The check compares a page with no memory behind it with
 * zeros instead of reading it (so that verifying a sparse guest does not
 * allocate all of its RAM): these tests prove that this shortcut still
 * finds a data page that was never placed and a zero page that was
 * written, and that it leaves absent pages absent.
 */
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "backends/backend.h"
#include "tools/memload.h"
#include "testutil.h"

/* The check's progress line is the CLI's (tools/snapload.c): silent here. */
void cli_progress(const char *what, uint64_t done, uint64_t total)
{
    (void)what, (void)done, (void)total;
}

#define PAGE 4096u
#define ZERO_EVERY 4 /* snapshot pages 0, 4, 8... are zeros */

typedef struct {
    const char *name;
    sl_backend_kind kind;
    uint64_t hugepage; /* 0: 4 KiB pages */
    const char *cap;
} verify_case;
G_STATIC_ASSERT(offsetof(verify_case, cap) == offsetof(sl_test_case, cap)); /* begins like it */

static const verify_case cases[] = {
    { "anon", SL_BACKEND_ANON, 0, "uffd" },
    { "shmem", SL_BACKEND_SHMEM, 0, "uffd" },
    { "hugetlbfs-2M", SL_BACKEND_HUGETLBFS, 2u << 20, "hugepages" },
    { "hugetlbfs-1G", SL_BACKEND_HUGETLBFS, 1u << 30, "hugepages-1G" },
};

typedef struct {
    const verify_case *vc;
    char *dir;
    sl_snapshot *snap;
    sl_mem mem;
    uint64_t unit, npages; /* the memory's page size; snapshot pages in the block */
} fixture;

static int setup(void **state)
{
    fixture *f = g_new0(fixture, 1);

    f->vc = *state;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    sl_mem_release(&f->mem);
    sl_snapshot_close(f->snap);
    sl_test_rmdir(f->dir);
    g_free(f);
    return 0;
}

/* A one-block snapshot of 4 memory pages (one for 1 GiB pages) and fresh memory for it. */
static void start(fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *path = NULL;
    uint64_t units, len;

    f->unit = f->vc->hugepage ? f->vc->hugepage : PAGE;
    units = f->unit >= (1u << 30) ? 1 : 4;
    len = units * MAX(f->unit, 2048 * PAGE / 4); /* 4 KiB memory: 8 MiB */
    if (f->vc->hugepage) {
        bool have = sl_hugetlb_check(f->vc->hugepage, len / f->unit, &err);
        SL_TEST_NEED(f->vc->cap, have, err->message);
    }
    f->dir = sl_test_tmpdir();
    path = g_build_filename(f->dir, "s.sl", NULL);
    sl_test_make_snapshot(path, &len, 1, PAGE, ZERO_EVERY, 0);
    f->snap = sl_snapshot_open(path, &err);
    assert_non_null(f->snap);
    f->npages = len / PAGE;
    if (!sl_mem_map(&f->mem, f->vc->kind, len, f->vc->hugepage, &err)) {
        fail_msg("sl_mem_map: %s", err->message);
    }
    /* 4 KiB pages only: a THP filled around a zero page would give it memory. */
    assert_true(f->vc->hugepage || madvise(f->mem.host, len, MADV_NOHUGEPAGE) == 0);
}

/* Copies the snapshot's data pages into memory, but not page @skip (-1: none); zeros stay unwritten. */
static void fill(fixture *f, int64_t skip)
{
    g_autofree uint8_t *buf = g_malloc(PAGE);

    for (uint64_t p = 0; p < f->npages; p++) {
        assert_int_equal(sl_snapshot_read_pages(f->snap, 0, p, 1, buf, true), 0);
        if (p % ZERO_EVERY != 0 && (int64_t)p != skip) {
            memcpy(f->mem.host + p * PAGE, buf, PAGE);
        }
    }
}

/* Whether snapshot page @p has memory behind it in our mapping (mincore: a byte per 4 KiB). */
static bool resident(fixture *f, uint64_t p)
{
    uint64_t per = f->unit / PAGE;
    g_autofree unsigned char *v = g_malloc0(per);

    assert_int_equal(mincore(f->mem.host + p / per * f->unit, f->unit, v), 0);
    return v[0] & 1;
}

/* Exact memory checks clean, and its absent zero pages stay absent. */
static void test_exact_memory_checks_clean_and_absent_pages_stay_absent(void **state)
{
    fixture *f = *state;

    start(f);
    fill(f, -1);
    for (uint64_t p = 0; f->unit == PAGE && p < f->npages; p += ZERO_EVERY) {
        assert_false(resident(f, p)); /* what the test starts from */
    }
    assert_int_equal(cli_verify_blocks(f->snap, &f->mem, NULL), 0);
    for (uint64_t p = 0; f->unit == PAGE && p < f->npages; p += ZERO_EVERY) {
        if (resident(f, p)) {
            fail_msg("zero page %" G_GUINT64_FORMAT " was given memory by the check", p);
        }
    }
}

/* A data page never placed reads as zeros: a mismatch, whether or not its memory exists. */
static void test_a_data_page_never_placed_is_a_mismatch(void **state)
{
    fixture *f = *state;

    start(f);
    fill(f, 1);
    assert_int_equal(cli_verify_blocks(f->snap, &f->mem, NULL), 1);
}

/* A data page never placed, in a memory page that has nothing else: found without memory behind it. */
static void test_an_unbacked_data_page_is_a_mismatch(void **state)
{
    fixture *f = *state;
    uint64_t per, first;

    start(f);
    per = f->unit / PAGE;
    /* The second hugepage, or the only one (1 GiB pages: the block is one). */
    first = f->npages > per ? per : 0;
    fill(f, -1);
    if (f->unit == PAGE) {
        assert_int_equal(madvise(f->mem.host + 5 * PAGE, PAGE,
                                 f->vc->kind == SL_BACKEND_ANON ? MADV_DONTNEED : MADV_REMOVE), 0);
    } else {
        assert_int_equal(madvise(f->mem.host + first * PAGE, f->unit, MADV_REMOVE), 0);
    }
    assert_false(resident(f, f->unit == PAGE ? 5 : first));
    /* One 4 KiB page, or a whole hugepage's data pages (all but the
     * multiples of ZERO_EVERY: per / ZERO_EVERY of them, ZERO_EVERY
     * dividing per and first). */
    assert_int_equal(cli_verify_blocks(f->snap, &f->mem, NULL),
                     f->unit == PAGE ? 1 : per - per / ZERO_EVERY);
}

/* A zero page that was written is a mismatch. */
static void test_a_written_zero_page_is_a_mismatch(void **state)
{
    fixture *f = *state;

    start(f);
    fill(f, -1);
    f->mem.host[ZERO_EVERY * PAGE + 9] = 1;
    assert_int_equal(cli_verify_blocks(f->snap, &f->mem, NULL), 1);
}

/*
 * A snapshot cut short after the restore: the check says the snapshot
 * could not be read again, and counts no page of the (exact) memory as
 * wrong.
 */
static void test_a_snapshot_changed_after_the_restore_fails_the_check_not_the_memory(void **state)
{
    fixture *f = *state;
    g_autofree char *path = NULL;
    GError *err = NULL;
    struct stat st;

    start(f);
    fill(f, -1);
    path = g_build_filename(f->dir, "s.sl", NULL);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size / 2), 0);
    assert_int_equal(cli_verify_blocks(f->snap, &f->mem, &err), -1);
    assert_non_null(err);
    if (!strstr(err->message, "could not be read again")) {
        fail_msg("unexpected error: %s", err->message);
    }
    g_error_free(err);
}

int main(void)
{
    static const sl_test_feature features[] = {
        { "exact_memory_checks_clean_and_absent_pages_stay_absent",
          test_exact_memory_checks_clean_and_absent_pages_stay_absent, NULL },
        { "a_data_page_never_placed_is_a_mismatch", test_a_data_page_never_placed_is_a_mismatch, NULL },
        { "an_unbacked_data_page_is_a_mismatch", test_an_unbacked_data_page_is_a_mismatch, NULL },
        { "a_written_zero_page_is_a_mismatch", test_a_written_zero_page_is_a_mismatch, NULL },
        { "a_snapshot_changed_after_the_restore_fails_the_check_not_the_memory",
          test_a_snapshot_changed_after_the_restore_fails_the_check_not_the_memory, NULL },
    };
    return sl_test_run_matrix("verify", cases, G_N_ELEMENTS(cases), sizeof(cases[0]), features,
                              G_N_ELEMENTS(features), setup, teardown);
}
