/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the exactly-once page map: under many racing threads each
 * page is claimed by exactly one of them, waiters are woken and see what the
 * placer wrote before publishing, failed placements can be retried, and the
 * placement audit counts double and missing placements.
 */
#include <stdatomic.h>
#include "testutil.h"
#include "migration/large.h"
#include "migration/pagemap.h"

#define NPAGES   (64 * 1024)
#define NTHREADS 8

typedef struct {
    sl_pagemap *m;
    _Atomic uint32_t *wins;     /* per page: how many threads claimed it */
    uint64_t *data;             /* per page: written by the claimer before publish */
    unsigned id;
} race_arg;

static gpointer claim_everything(gpointer opaque)
{
    race_arg *a = opaque;

    /* Each thread walks the pages from a different start to maximise races. */
    for (uint64_t k = 0; k < NPAGES; k++) {
        uint64_t i = (k + a->id * (NPAGES / NTHREADS)) % NPAGES;
        if (sl_pagemap_claim(a->m, i)) {
            atomic_fetch_add(&a->wins[i], 1);
            a->data[i] = i ^ 0xabcdef;
            sl_pagemap_note_placed(a->m, i, 1);
            sl_pagemap_publish(a->m, i, 1);
        }
    }
    return NULL;
}

static gpointer wait_everything(gpointer opaque)
{
    race_arg *a = opaque;
    uint64_t bad = 0;

    for (uint64_t k = 0; k < NPAGES; k++) {
        uint64_t i = NPAGES - 1 - k;
        sl_pagemap_wait(a->m, i, true);
        bad += a->data[i] != (i ^ 0xabcdef);
    }
    return GSIZE_TO_POINTER(bad);
}

static void test_claim_is_exclusive_under_racing_threads(void **state)
{
    /* One argument per thread, never reused: a thread reads its own while
     * the next ones are being started. */
    race_arg claimer_args[NTHREADS], waiter_args[2];
    GThread *th[NTHREADS], *waiters[2];
    g_autofree _Atomic uint32_t *wins = g_new0(_Atomic uint32_t, NPAGES);
    g_autofree uint64_t *data = g_new0(uint64_t, NPAGES);
    sl_pagemap *m = sl_pagemap_new(NPAGES, NULL);
    uint64_t twice, never;

    for (unsigned w = 0; w < 2; w++) {
        waiter_args[w] = (race_arg){ .m = m, .wins = wins, .data = data };
        waiters[w] = g_thread_new("waiter", wait_everything, &waiter_args[w]);
    }
    for (unsigned t = 0; t < NTHREADS; t++) {
        claimer_args[t] = (race_arg){ .m = m, .wins = wins, .data = data, .id = t };
        th[t] = g_thread_new("claimer", claim_everything, &claimer_args[t]);
    }
    for (unsigned t = 0; t < NTHREADS; t++) {
        g_thread_join(th[t]);
    }
    for (unsigned w = 0; w < 2; w++) {
        assert_int_equal(GPOINTER_TO_SIZE(g_thread_join(waiters[w])), 0);
    }
    for (uint64_t i = 0; i < NPAGES; i++) {
        assert_int_equal(wins[i], 1);
        assert_int_equal(sl_pagemap_state(m, i), SL_PAGE_PRESENT);
    }
    assert_int_equal(sl_pagemap_present(m), NPAGES);
    sl_pagemap_audit(m, &twice, &never);
    assert_int_equal(twice, 0);
    assert_int_equal(never, 0);
    sl_pagemap_free(m);
}

typedef struct {
    sl_pagemap *m;
    uint64_t page;
    _Atomic bool returned;
} waiter_arg;

static gpointer wait_one(gpointer opaque)
{
    waiter_arg *a = opaque;
    sl_pagemap_wait(a->m, a->page, true);
    atomic_store(&a->returned, true);
    return NULL;
}

static void test_waiter_sleeps_until_publish(void **state)
{
    sl_pagemap *m = sl_pagemap_new(4, NULL);
    waiter_arg a = { .m = m, .page = 2 };
    GThread *t;

    assert_true(sl_pagemap_claim(m, 2));
    t = g_thread_new("waiter", wait_one, &a);
    g_usleep(50 * 1000); /* give the waiter time to block (it must not return) */
    assert_false(atomic_load(&a.returned));
    sl_pagemap_publish(m, 2, 1);
    g_thread_join(t);
    assert_true(atomic_load(&a.returned));
    sl_pagemap_free(m);
}

static void test_unclaimed_page_can_be_claimed_again(void **state)
{
    sl_pagemap *m = sl_pagemap_new(8, NULL);

    assert_true(sl_pagemap_claim(m, 3));
    assert_false(sl_pagemap_claim(m, 3));
    assert_int_equal(sl_pagemap_state(m, 3), SL_PAGE_CLAIMED);
    sl_pagemap_unclaim(m, 3, 1);
    assert_int_equal(sl_pagemap_state(m, 3), SL_PAGE_ABSENT);
    assert_true(sl_pagemap_claim(m, 3));
    assert_int_equal(sl_pagemap_publish(m, 3, 1), 1);
    assert_false(sl_pagemap_claim(m, 3));
    sl_pagemap_free(m);
}

/* A map whose memory cannot be had is an error for the caller, not an abort. */
static void test_map_too_large_for_memory_is_an_error(void **state)
{
    GError *err = NULL;

    assert_null(sl_pagemap_new(UINT64_MAX / 8, &err));
    assert_non_null(err);
    assert_non_null(strstr(err->message, "page map of"));
    g_error_free(err);
}

static void test_audit_counts_double_and_missing_placements(void **state)
{
    sl_pagemap *m = sl_pagemap_new(10, NULL);
    uint64_t twice, never;

    sl_pagemap_note_placed(m, 0, 5);
    sl_pagemap_note_placed(m, 2, 2); /* pages 2 and 3 placed twice */
    sl_pagemap_audit(m, &twice, &never);
    assert_int_equal(twice, 2);
    assert_int_equal(never, 5);
    sl_pagemap_free(m);
}

/*
 * The metadata arrays' hugepage advice covers their whole 2 MiB parts, and
 * rounds up to the next one only when that wastes at most an eighth: a
 * 256 KiB checksum array (a 128 MiB guest) took a whole 2 MiB hugepage
 * before, 2 MiB of resident memory per snapshot of a chain (found by a
 * user's test: 136 MB for 63 links).
 */
static void test_metadata_arrays_take_hugepages_only_where_they_fill_them(void **state)
{
    const size_t M = 2u << 20;
    const struct { size_t len, huge; } cases[] = {
        { 1, 0 }, { 256u << 10, 0 }, { M - (M / 16), M }, { M, M }, { M + 1, M },
        { 2 * M + (M / 4), 2 * M }, { 2 * M + (M / 2), 2 * M }, { 7 * M + (M / 2), 8 * M },
        { 64 * M, 64 * M },
    };

    (void)state;
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        if (sl_large_huge_bytes(cases[i].len) != cases[i].huge) {
            fail_msg("an array of %zu bytes: %zu advised as hugepages, expected %zu",
                     cases[i].len, sl_large_huge_bytes(cases[i].len), cases[i].huge);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claim_is_exclusive_under_racing_threads),
        cmocka_unit_test(test_waiter_sleeps_until_publish),
        cmocka_unit_test(test_unclaimed_page_can_be_claimed_again),
        cmocka_unit_test(test_audit_counts_double_and_missing_placements),
        cmocka_unit_test(test_map_too_large_for_memory_is_an_error),
        cmocka_unit_test(test_metadata_arrays_take_hugepages_only_where_they_fill_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
