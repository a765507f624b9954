/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The benchmark's peer strategies (bench/strategies.c, run as
 * $SNAPLOAD_PEERS) must restore correctly, or the comparison means
 * nothing: table-driven over {anon, shmem, hugetlbfs-2M, hugetlbfs-1G} x
 * {qemu-missing, first-fault-copy-all, eager, memcpy}, each run touches
 * random pages, then compares every byte with the snapshot (--verify) and
 * must report 0 wrong pages and exit 0.
 */
#include <string.h>
#include <sys/wait.h>
#include "backends/backend.h"
#include "tests/unit/testutil.h"

typedef struct {
    const char *name, *backend, *hps, *cap;
    uint64_t hugepage;
} peer_backend;

static const peer_backend backends[] = {
    { "anon", "anon", NULL, "uffd", 0 },
    { "shmem", "shmem", NULL, "uffd", 0 },
    { "hugetlbfs-2M", "hugetlbfs", "2M", "hugepages", 2u << 20 },
    { "hugetlbfs-1G", "hugetlbfs", "1G", "hugepages-1G", 1u << 30 },
};

static const char *const strategies[] = { "qemu-missing", "first-fault-copy-all", "eager",
                                          "memcpy" };

typedef struct {
    const peer_backend *b;
    const char *strategy;
} peer_case;

/* A snapshot of one block of @len: every 7th page (and page 1) stored, the
 * rest zero, so that a 1 GiB block stays a small file. */
static void make_sparse_snapshot(const char *path, uint64_t len)
{
    g_autoptr(GError) err = NULL;
    sl_writer *w = sl_writer_new(path, &err);
    uint8_t page[4096];

    assert_non_null(w);
    assert_int_equal(sl_writer_add_block(w, "pc.ram", len, 4096, -1, &err), 0);
    for (uint64_t p = 1; p < len / 4096; p += (p < 64 ? 7 : 4099)) {
        sl_test_fill_page(page, sizeof(page), p, 1, 0);
        assert_true(sl_writer_write(w, 0, p * 4096, page, sizeof(page), &err));
    }
    assert_true(sl_writer_finish(w, &err));
    sl_writer_free(w);
}

static void test_peer_strategy_restores_every_byte(void **state)
{
    const peer_case *c = *state;
    uint64_t len = c->b->hugepage > (2u << 20) ? c->b->hugepage : 8u << 20;
    g_autofree char *dir = sl_test_tmpdir(), *snap = g_build_filename(dir, "s.sl", NULL);
    g_autofree char *out = NULL, *err = NULL, *why = NULL;
    g_autoptr(GError) gerr = NULL;
    const char *argv[] = { g_getenv("SNAPLOAD_PEERS"), c->strategy, snap, "--backend",
                           c->b->backend, "--verify", "--touch", "500",
                           c->b->hps ? "--hugepage-size" : NULL, c->b->hps, NULL };
    int status = -1;

    SL_TEST_NEED("uffd", sl_test_have_uffd(&why), why ? why : "");
    if (c->b->hugepage) {
        bool have = sl_hugetlb_check(c->b->hugepage, len / c->b->hugepage, &gerr);
        SL_TEST_NEED(c->b->cap, have, gerr->message);
    }
    assert_non_null(argv[0]);
    make_sparse_snapshot(snap, len);
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                      &status, &gerr)) {
        fail_msg("running %s: %s", argv[0], gerr->message);
    }
    if (!g_spawn_check_wait_status(status, NULL) || !strstr(out, "\"verify_mismatches\": 0,") ||
        !strstr(out, "\"touch_mismatches\": 0,")) {
        fail_msg("%s on %s: status %d, out: %s err: %s", c->strategy, c->b->name, status, out,
                 err);
    }
    sl_test_rmdir(g_steal_pointer(&dir));
}

int main(void)
{
    enum { NB = G_N_ELEMENTS(backends), NS = G_N_ELEMENTS(strategies) };
    static peer_case cases[NB * NS];
    struct CMUnitTest tests[NB * NS];

    for (unsigned b = 0; b < NB; b++) {
        for (unsigned s = 0; s < NS; s++) {
            peer_case *c = &cases[b * NS + s];
            *c = (peer_case){ &backends[b], strategies[s] };
            tests[b * NS + s] = (struct CMUnitTest){
                .name = g_strdup_printf("%s/%s_restores_every_byte", backends[b].name,
                                        strategies[s]),
                .test_func = test_peer_strategy_restores_every_byte,
                .initial_state = c,
            };
            sl_test_skip_if_absent(&tests[b * NS + s], backends[b].cap, backends[b].hugepage);
        }
    }
    int failed = _cmocka_run_group_tests("peers", tests, NB * NS, NULL, NULL);

    for (unsigned i = 0; i < NB * NS; i++) {
        g_free((char *)tests[i].name);
    }
    return failed;
}
