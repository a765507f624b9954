/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Written-page tracking (migration/track.c), table-driven over anonymous
 * memory, shmem, hugetlbfs-2M and hugetlbfs-1G: the tracker reports
 * exactly the pages written since it started (populated before or not,
 * at the memory's page granularity), never a page that was only read, and
 * after a collect that re-arms (in its walk, or after it), only the pages
 * written since; a written page discarded since is reported empty, not
 * written, until touched again.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "backends/backend.h"
#include "migration/track.h"
#include "testutil.h"

typedef struct {
    const char *name;
    sl_backend_kind kind;
    uint64_t hugepage;   /* 0: 4 KiB pages */
    const char *cap;
} track_case;
G_STATIC_ASSERT(offsetof(track_case, cap) == offsetof(sl_test_case, cap)); /* begins like it */

static const track_case cases[] = {
    { "anon", SL_BACKEND_ANON, 0, "uffd" },
    { "shmem", SL_BACKEND_SHMEM, 0, "uffd" },
    { "hugetlbfs-2M", SL_BACKEND_HUGETLBFS, 2u << 20, "hugepages" },
    { "hugetlbfs-1G", SL_BACKEND_HUGETLBFS, 1u << 30, "hugepages-1G" },
};

typedef struct {
    const track_case *tc;
    sl_mem mem;
    uint64_t unit, n;    /* the memory's page, and how many */
    sl_tracker *t;
} fixture;

static int setup(void **state)
{
    fixture *f = g_new0(fixture, 1);

    f->tc = *state;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    sl_tracker_free(f->t);
    sl_mem_release(&f->mem);
    g_free(f);
    return 0;
}

/* @n pages of the case's memory, the first half written before tracking. */
static void start(fixture *f, uint64_t n)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *why = NULL;
    bool have = sl_test_have_uffd(&why);

    SL_TEST_NEED("uffd", have, why);
    /* found by running Debian 12's 6.1 kernel (scripts/vm-test.sh) */
    SL_TEST_NEED("uffd-wp-async", sl_uffd_has_features(SL_UFFD_TRACK_FEATURES),
                 "the kernel has no asynchronous uffd write-protection (6.7+)");
    f->unit = f->tc->hugepage ? f->tc->hugepage : 4096;
    f->n = n;
    if (f->tc->hugepage) {
        have = sl_hugetlb_check(f->tc->hugepage, n, &err);
        SL_TEST_NEED(f->tc->cap, have, err->message);
    }
    if (!sl_mem_map(&f->mem, f->tc->kind, n * f->unit, f->tc->hugepage, &err)) {
        fail_msg("sl_mem_map: %s", err->message);
    }
    for (uint64_t i = 0; i < n / 2; i++) {
        f->mem.host[i * f->unit] = (uint8_t)(i + 1); /* populated before tracking */
    }
    f->t = sl_tracker_new(f->mem.host, n * f->unit, &err);
    if (!f->t) {
        fail_msg("sl_tracker_new: %s", err->message);
    }
}

/* The pages a collect reports, as a bitmap of @f->n flags (caller frees). */
static bool *collect(fixture *f, bool rearm)
{
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(sl_written_run));
    bool *hit = g_new0(bool, f->n);
    uint64_t base = (uint64_t)(uintptr_t)f->mem.host;
    int64_t bytes = sl_tracker_collect(f->t, rearm, runs);

    assert_true(bytes >= 0);
    for (guint i = 0; i < runs->len; i++) {
        sl_written_run *w = &g_array_index(runs, sl_written_run, i);
        assert_true(w->start >= base && w->end <= base + f->n * f->unit && w->start < w->end);
        for (uint64_t a = w->start; a < w->end; a += 4096) {
            hit[(a - base) / f->unit] = true;
        }
    }
    return hit;
}

/* Fails unless exactly the pages with want(i) were reported. */
static void expect(fixture *f, const bool *hit, bool (*want)(uint64_t, uint64_t), uint64_t arg,
                   const char *when)
{
    for (uint64_t i = 0; i < f->n; i++) {
        if (hit[i] != want(i, arg)) {
            fail_msg("%s: page %" G_GUINT64_FORMAT " %s reported", when, i,
                     hit[i] ? "was" : "was not");
        }
    }
}

static bool every_third(uint64_t i, uint64_t arg)
{
    return i % 3 == arg;
}

static bool only(uint64_t i, uint64_t arg)
{
    return i == arg;
}

static bool none(uint64_t i, uint64_t arg)
{
    return false;
}

static uint64_t pages_for(const track_case *tc)
{
    return tc->hugepage > (2u << 20) ? 2 : tc->hugepage ? 8 : 256;
}

/* Writes to every third page (populated before tracking or not) are reported, and only they. */
static void test_written_pages_are_reported_and_only_they(void **state)
{
    fixture *f = *state;
    volatile uint8_t sink = 0;

    start(f, pages_for(f->tc));
    for (uint64_t i = 0; i < f->n; i++) {
        sink += f->mem.host[i * f->unit + 17]; /* reads: never reported */
    }
    for (uint64_t i = 1; i < f->n; i += 3) {
        f->mem.host[i * f->unit + 100] = 0x5a;
    }
    g_autofree bool *hit = collect(f, false);
    expect(f, hit, every_third, 1, "after writes to every third page");
    (void)sink;
}

/* A collect that re-arms protects again: the next reports only later
 * writes; protecting in the walk, or after it when @after. */
static void rearmed_collect_reports_only_later_writes(fixture *f, bool after)
{
    uint64_t last;

    start(f, pages_for(f->tc));
    sl_tracker_set_rearm_after(f->t, after);
    last = f->n - 1;
    for (uint64_t i = 0; i < f->n; i += 3) {
        f->mem.host[i * f->unit] ^= 1;
    }
    g_autofree bool *first = collect(f, true);
    expect(f, first, every_third, 0, "first collect");
    g_autofree bool *quiet = collect(f, true);
    expect(f, quiet, none, 0, "a second collect with no write between");
    f->mem.host[last * f->unit + 5] = 7;
    g_autofree bool *later = collect(f, true);
    expect(f, later, only, last, "after one more write");
}

static void test_rearmed_collect_reports_only_later_writes(void **state)
{
    rearmed_collect_reports_only_later_writes(*state, false);
}

/* The same with each run protected after the walk found it, as the walk
 * itself does for a hugetlbfs page it cannot protect (1 GiB pages on
 * kernels before the fix): tried on every memory, since that page is only
 * found on hosts with 1 GiB pages. */
static void test_a_collect_protecting_after_its_walk_reports_only_later_writes(void **state)
{
    rearmed_collect_reports_only_later_writes(*state, true);
}

/* The pages sl_scan_unmapped() reports (no entry in the page tables), as a bitmap (caller frees). */
static bool *empty_pages(fixture *f)
{
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(sl_written_run));
    bool *hit = g_new0(bool, f->n);
    uint64_t base = (uint64_t)(uintptr_t)f->mem.host;
    int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

    assert_true(pagemap >= 0);
    assert_true(sl_scan_unmapped(pagemap, base, base + f->n * f->unit, false, runs) >= 0);
    close(pagemap);
    for (guint i = 0; i < runs->len; i++) {
        sl_written_run *w = &g_array_index(runs, sl_written_run, i);
        for (uint64_t a = w->start; a < w->end; a += 4096) {
            hit[(a - base) / f->unit] = true;
        }
    }
    return hit;
}

static bool one_of_two(uint64_t i, uint64_t arg)
{
    return i == (arg & 0xffffffff) || i == arg >> 32;
}

/*
 * A written page whose entry then leaves the page tables (MADV_DONTNEED,
 * as a balloon does) keeps no trace of its write: a collect no longer
 * reports it (it asks for pages written and populated; an empty entry
 * would otherwise read as written), sl_scan_unmapped() reports it instead,
 * and only it (a page never populated keeps its protection), which is how
 * a reset finds it (collect_empty() in reset.c).  Touched again, it is
 * populated unprotected and reported written again, by a read too: it
 * then holds zeros (anonymous) or still the write (shared memory keeps the
 * page in the file), neither what it held when protected.  One page
 * populated before tracking, one first populated by its write.
 */
static void test_a_discarded_written_page_is_empty_then_written_once_touched(void **state)
{
    fixture *f = *state;
    uint64_t before, after, both;
    volatile uint8_t sink;

    start(f, pages_for(f->tc));
    before = f->n / 2 - 1; /* populated before tracking */
    after = f->n - 1;      /* first populated by the write */
    both = before | after << 32;
    f->mem.host[before * f->unit + 9] = 0x11;
    f->mem.host[after * f->unit + 9] = 0x22;
    g_autofree bool *written = collect(f, false);
    expect(f, written, one_of_two, both, "after the two writes");
    assert_int_equal(madvise(f->mem.host + before * f->unit, f->unit, MADV_DONTNEED), 0);
    assert_int_equal(madvise(f->mem.host + after * f->unit, f->unit, MADV_DONTNEED), 0);
    g_autofree bool *gone = collect(f, false);
    expect(f, gone, none, 0, "after the written pages were discarded");
    g_autofree bool *empty = empty_pages(f);
    expect(f, empty, one_of_two, both, "empty entries after the discard");
    sink = f->mem.host[before * f->unit + 9];
    g_autofree bool *read = collect(f, false);
    expect(f, read, only, before, "after a read of one discarded page");
    f->mem.host[after * f->unit + 9] = 0x33;
    g_autofree bool *again = collect(f, true);
    expect(f, again, one_of_two, both, "after a write to the other");
    g_autofree bool *quiet = collect(f, false);
    expect(f, quiet, none, 0, "after the collect that re-armed them");
    (void)sink;
}

int main(void)
{
    static const sl_test_feature features[] = {
        { "written_pages_are_reported_and_only_they",
          test_written_pages_are_reported_and_only_they, NULL },
        { "rearmed_collect_reports_only_later_writes",
          test_rearmed_collect_reports_only_later_writes, NULL },
        { "a_collect_protecting_after_its_walk_reports_only_later_writes",
          test_a_collect_protecting_after_its_walk_reports_only_later_writes, NULL },
        { "a_discarded_written_page_is_empty_then_written_once_touched",
          test_a_discarded_written_page_is_empty_then_written_once_touched, NULL },
    };
    return sl_test_run_matrix("track", cases, G_N_ELEMENTS(cases), sizeof(cases[0]), features,
                              G_N_ELEMENTS(features), setup, teardown);
}
