/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * NUMA-local prefetch and prefetch order, on simulated 2- and 4-node
 * topologies over this machine's CPUs: every page a loader places is placed
 * by a thread of its own node and loaders run on their node's CPUs (audited
 * from real placements), a fault is served while every group is busy, the
 * hot-page list is fetched before the rest in its recorded order, the
 * recorder returns faulted pages in fault order, and every byte is right.
 * Also the topology SPEC parser and its errors.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include "testutil.h"
#include "backends/backend.h"
#include "migration/format.h"
#include "migration/numa.h"

#define PSIZE 4096u

/* ------------------------------ topology -------------------------------- */

static void test_spec_count_deals_cpus_round_robin(void **state)
{
    g_autoptr(GError) err = NULL;
    sl_topology t;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    assert_true(sl_topology_parse("4", &t, &err));
    assert_int_equal(t.nnodes, 4);
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(t.nodes[i].id, (int)i);
        assert_int_equal(t.nodes[i].mem_node, 0);
        assert_true(CPU_ISSET((int)(i % ncpu), &t.nodes[i].cpus));
        assert_int_equal(t.distance[i][i], 10);
    }
}

static void test_spec_explicit_nodes_round_trip(void **state)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *desc = NULL;
    sl_topology t;

    assert_true(sl_topology_parse("3:0-1,4@0;7:2@0", &t, &err));
    assert_int_equal(t.nnodes, 2);
    assert_int_equal(sl_topology_index(&t, 7), 1);
    assert_int_equal(t.nodes[0].ncpus, 3);
    desc = sl_topology_describe(&t);
    assert_string_equal(desc, "3:0-1,4@0;7:2@0");
}

static void test_bad_specs_are_rejected_with_a_reason(void **state)
{
    static const char *bad[] = { "0", "65", "x", "0:", "0:a", "0:3-1", "0:0;0:1", "0:0@x",
                                 "1-2", ":0", "" };
    sl_topology t;

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        GError *err = NULL;
        if (sl_topology_parse(bad[i], &t, &err)) {
            fail_msg("spec '%s' was accepted", bad[i]);
        }
        assert_non_null(strstr(err->message, "--numa-topology"));
        g_error_free(err);
    }
}

static void test_host_topology_has_at_least_one_node_with_cpus(void **state)
{
    g_autoptr(GError) err = NULL;
    sl_topology t;

    assert_true(sl_topology_discover(&t, &err));
    assert_true(t.nnodes >= 1);
    for (unsigned i = 0; i < t.nnodes; i++) {
        assert_true(t.nodes[i].ncpus > 0);
    }
}

/* ------------------------- restores on fake nodes ------------------------ */

typedef struct {
    const char *name;
    sl_backend_kind kind;
    uint64_t hugepage;
    const char *cap;
    const char *spec;
} numa_case;

static const numa_case cases[] = {
    { "anon/2-nodes", SL_BACKEND_ANON, 0, "uffd", "2" },
    { "anon/4-nodes", SL_BACKEND_ANON, 0, "uffd", "4" },
    { "shmem/2-nodes", SL_BACKEND_SHMEM, 0, "uffd", "2" },
    { "shmem/4-nodes", SL_BACKEND_SHMEM, 0, "uffd", "4" },
    { "hugetlbfs-2M/2-nodes", SL_BACKEND_HUGETLBFS, 2u << 20, "hugepages", "2" },
    { "hugetlbfs-2M/4-nodes", SL_BACKEND_HUGETLBFS, 2u << 20, "hugepages", "4" },
};

typedef struct {
    const numa_case *nc;
    char *dir, *path;
    uint64_t len;
    sl_snapshot *snap;
    sl_mem mem;
    sl_restore *r;
} fixture;

static void need(const numa_case *nc, uint64_t len)
{
    g_autofree char *why = NULL;
    g_autoptr(GError) err = NULL;
    bool have = sl_test_have_uffd(&why);

    SL_TEST_NEED("uffd", have, why);
    if (nc->hugepage) {
        have = sl_hugetlb_check(nc->hugepage, len / nc->hugepage, &err);
        SL_TEST_NEED(nc->cap, have, err->message);
    }
}

/* A one-block snapshot of @len bytes, plus a hot list of @nhot pages. */
static void build(fixture *f, uint64_t len, const uint64_t *hot, size_t nhot)
{
    g_autoptr(GError) err = NULL;
    g_autofree uint8_t *page = g_malloc(PSIZE);
    sl_writer *w;

    need(f->nc, len);
    f->dir = sl_test_tmpdir();
    f->path = g_build_filename(f->dir, "snap", NULL);
    f->len = len;
    w = sl_writer_new(f->path, &err);
    assert_int_equal(sl_writer_add_block(w, "b0", len, PSIZE, -1, &err), 0);
    for (uint64_t i = 0; i < len / PSIZE; i++) {
        sl_test_fill_page(page, PSIZE, i, 1, 6);
        assert_true(sl_writer_write(w, 0, i * PSIZE, page, PSIZE, &err));
    }
    if (nhot) {
        g_autofree uint8_t *e = g_malloc0(nhot * 16);
        for (size_t i = 0; i < nhot; i++) {
            sl_put_le64(e + i * 16 + 8, hot[i]);
        }
        assert_true(sl_writer_add_section(w, SL_SECTION_HOT_PAGES, e, nhot * 16, &err));
    }
    assert_true(sl_writer_finish(w, &err));
    sl_writer_free(w);
    f->snap = sl_snapshot_open(f->path, &err);
    assert_non_null(f->snap);
    if (!sl_mem_map(&f->mem, f->nc->kind, len, f->nc->hugepage, &err)) {
        fail_msg("sl_mem_map: %s", err->message);
    }
}

static void start(fixture *f, const sl_restore_config *cfg)
{
    g_autoptr(GError) err = NULL;

    f->r = sl_restore_new(f->snap, cfg, &err);
    assert_non_null(f->r);
    assert_true(sl_mem_attach(f->r, "b0", &f->mem, &err));
    if (!sl_restore_start(f->r, &err)) {
        fail_msg("sl_restore_start: %s", err->message);
    }
}

static int setup(void **state)
{
    fixture *f = g_new0(fixture, 1);
    f->nc = *state;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    sl_restore_free(f->r);
    sl_mem_release(&f->mem);
    sl_snapshot_close(f->snap);
    if (f->dir) {
        sl_test_rmdir(f->dir);
    }
    g_free(f->path);
    g_free(f);
    return 0;
}

static uint64_t bad_pages(const fixture *f)
{
    g_autofree uint8_t *want = g_malloc(PSIZE);
    uint64_t bad = 0;

    for (uint64_t i = 0; i < f->len / PSIZE; i++) {
        sl_test_fill_page(want, PSIZE, i, 1, 6);
        bad += memcmp(want, f->mem.host + i * PSIZE, PSIZE) != 0;
    }
    return bad;
}

static sl_stats finish(fixture *f)
{
    sl_stats st = { .size = sizeof(st) };

    assert_int_equal(sl_restore_wait(f->r, -1), 0);
    sl_restore_stop(f->r);
    sl_restore_get_stats(f->r, &st);
    assert_int_equal(st.pages_placed_twice, 0);
    assert_int_equal(st.pages_never_placed, 0);
    assert_int_equal(bad_pages(f), 0);
    return st;
}

typedef struct {
    fixture *f;
    _Atomic bool *stop;
    unsigned id;
    uint64_t bad;
} toucher;

static gpointer touch(gpointer opaque)
{
    toucher *t = opaque;
    g_autofree uint8_t *want = g_malloc(PSIZE);
    GRand *rng = g_rand_new_with_seed(t->id + 7);
    uint64_t n = t->f->len / PSIZE;

    while (!atomic_load(t->stop)) {
        uint64_t i = (uint64_t)g_rand_int_range(rng, 0, (gint32)n);
        sl_test_fill_page(want, PSIZE, i, 1, 6);
        t->bad += memcmp(want, t->f->mem.host + i * PSIZE, PSIZE) != 0;
    }
    g_rand_free(rng);
    return NULL;
}

static void test_every_page_is_placed_by_its_own_node(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = f->nc->spec, .interleave = true };
    _Atomic bool stop = false;
    toucher t[2];
    GThread *th[2];
    uint64_t sum = 0;

    /* 256 MiB: four 64 MiB stripes, so each of up to four nodes owns one. */
    build(f, 256u << 20, NULL, 0);
    start(f, &cfg);
    for (unsigned i = 0; i < 2; i++) {
        t[i] = (toucher){ .f = f, .stop = &stop, .id = i };
        th[i] = g_thread_new("touch", touch, &t[i]);
    }
    assert_int_equal(sl_restore_wait(f->r, -1), 0);
    atomic_store(&stop, true);
    for (unsigned i = 0; i < 2; i++) {
        g_thread_join(th[i]);
        assert_int_equal(t[i].bad, 0);
    }
    sl_stats st = finish(f);
    assert_int_equal(st.nodes, (unsigned)atoi(f->nc->spec));
    for (unsigned n = 0; n < st.nodes; n++) {
        assert_true(st.pages_by_node[n] > 0); /* every node's group did its part */
        assert_int_equal(st.threads_by_node[n], 1);
        sum += st.pages_by_node[n];
    }
    assert_int_equal(sum, st.pages_by_loader);
    assert_int_equal(st.pages_wrong_node, 0);
    assert_int_equal(st.loader_cpu_violations, 0);
}

static void test_bound_block_is_filled_by_that_node_only(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = f->nc->spec };
    g_autoptr(GError) err = NULL;
    unsigned last = (unsigned)atoi(f->nc->spec) - 1;

    build(f, 32u << 20, NULL, 0);
    f->r = sl_restore_new(f->snap, &cfg, &err);
    assert_true(sl_mem_attach(f->r, "b0", &f->mem, &err));
    assert_false(sl_restore_bind(f->r, "b0", 99, &err)); /* no such node */
    g_clear_error(&err);
    assert_true(sl_restore_bind(f->r, "b0", (int)last, &err));
    assert_true(sl_restore_start(f->r, &err));
    sl_stats st = finish(f);
    assert_int_equal(st.pages_by_node[last], st.pages_by_loader);
    assert_int_equal(st.pages_wrong_node, 0);
}

static void test_fault_is_served_while_every_group_is_busy(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = f->nc->spec, .interleave = true };
    g_autofree uint8_t *want = g_malloc(PSIZE);
    uint64_t last;

    build(f, 256u << 20, NULL, 0);
    last = f->len / PSIZE - 1;
    start(f, &cfg);
    /* Groups fill their stripes in file order; the last page is furthest. */
    sl_test_fill_page(want, PSIZE, last, 1, 6);
    assert_memory_equal(want, f->mem.host + last * PSIZE, PSIZE);
    assert_int_equal(sl_restore_poll(f->r), -EINPROGRESS);
    sl_stats st = finish(f);
    assert_true(st.pages_by_fault >= 1);
}

static void test_hot_list_is_fetched_first_in_recorded_order(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = "1", .trace_order = true };
    uint64_t unit = f->nc->hugepage ? f->nc->hugepage : PSIZE;
    uint64_t len = unit == PSIZE ? 8u << 20 : 256u << 20, nunits = len / unit;
    uint64_t hot[64] = { 0 }, hot_units[64] = { 0 }, max_hot = 0, min_rest = UINT64_MAX;
    unsigned nhot = (unsigned)MIN(64, nunits / 3);
    g_autofree bool *is_hot = g_new0(bool, nunits);
    const uint32_t *order;

    /* Every third unit from the end backwards: nothing coalesces. */
    for (unsigned i = 0; i < nhot; i++) {
        hot_units[i] = nunits - 1 - 3 * i;
        hot[i] = hot_units[i] * (unit / PSIZE);
        is_hot[hot_units[i]] = true;
    }
    build(f, len, hot, nhot);
    start(f, &cfg);
    sl_stats st = finish(f);
    assert_int_equal(st.hot_pages, nhot);
    order = sl_test_restore_order(f->r, 0);
    for (unsigned i = 1; i < nhot; i++) {
        assert_true(order[hot_units[i]] > order[hot_units[i - 1]]); /* in list order */
    }
    for (uint64_t u = 0; u < nunits; u++) {
        if (is_hot[u]) {
            max_hot = MAX(max_hot, order[u]);
        } else {
            min_rest = MIN(min_rest, order[u]);
        }
    }
    assert_true(max_hot < min_rest);
}

static void test_recorder_lists_faulted_pages_in_fault_order(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .no_loaders = true, .record = true,
                              .numa_topology = "2" };
    static const uint64_t touched[] = { 700, 3, 1500, 3, 42 };
    uint64_t unit = f->nc->hugepage ? f->nc->hugepage : PSIZE;
    g_autoptr(GBytes) rec = NULL;
    const uint8_t *p;
    gsize len;

    build(f, 8u << 20, NULL, 0);
    start(f, &cfg);
    for (size_t i = 0; i < G_N_ELEMENTS(touched); i++) {
        (void)*(volatile uint8_t *)(f->mem.host + touched[i] * PSIZE);
    }
    for (uint64_t i = 0; i < f->len / PSIZE; i++) { /* finish the restore */
        (void)*(volatile uint8_t *)(f->mem.host + i * PSIZE);
    }
    finish(f);
    rec = sl_restore_recorded(f->r);
    p = g_bytes_get_data(rec, &len);
    assert_true(len >= 4 * 16);
    /* The first entries are the distinct units touched, in touch order. */
    {
        uint64_t want[4], n = 0;
        for (size_t i = 0; i < G_N_ELEMENTS(touched); i++) {
            uint64_t u = touched[i] * PSIZE / unit * (unit / PSIZE);
            bool seen = false;
            for (uint64_t k = 0; k < n; k++) {
                seen |= want[k] == u;
            }
            if (!seen) {
                want[n++] = u;
            }
        }
        for (uint64_t k = 0; k < n; k++) {
            assert_int_equal(sl_le32(p + k * 16), 0);
            assert_int_equal(sl_le64(p + k * 16 + 8), want[k]);
        }
    }
}

static void test_hot_list_entry_out_of_range_is_an_error(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .numa_topology = "2" };
    uint64_t hot[2] = { 1, 1u << 30 };
    g_autoptr(GError) err = NULL;

    build(f, 4u << 20, hot, 2);
    f->r = sl_restore_new(f->snap, &cfg, &err);
    assert_true(sl_mem_attach(f->r, "b0", &f->mem, &err));
    assert_false(sl_restore_start(f->r, &err));
    assert_non_null(strstr(err->message, "hot-page list entry 1"));
}

typedef struct {
    const char *name;
    CMUnitTestFunction fn;
    bool all_specs; /* false: run once per backend (on its 2-node case) */
} feature;

static const feature features[] = {
    { "every_page_is_placed_by_its_own_node", test_every_page_is_placed_by_its_own_node, true },
    { "bound_block_is_filled_by_that_node_only", test_bound_block_is_filled_by_that_node_only, true },
    { "fault_is_served_while_every_group_is_busy", test_fault_is_served_while_every_group_is_busy, true },
    { "hot_list_is_fetched_first_in_recorded_order", test_hot_list_is_fetched_first_in_recorded_order, false },
    { "recorder_lists_faulted_pages_in_fault_order", test_recorder_lists_faulted_pages_in_fault_order, false },
    { "hot_list_entry_out_of_range_is_an_error", test_hot_list_entry_out_of_range_is_an_error, false },
};

int main(void)
{
    size_t nc = G_N_ELEMENTS(cases), nf = G_N_ELEMENTS(features), n = 0;
    struct CMUnitTest *tests = g_new0(struct CMUnitTest, nc * nf + 4);

    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_spec_count_deals_cpus_round_robin);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_spec_explicit_nodes_round_trip);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_bad_specs_are_rejected_with_a_reason);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_host_topology_has_at_least_one_node_with_cpus);
    for (size_t c = 0; c < nc; c++) {
        for (size_t i = 0; i < nf; i++) {
            if (!features[i].all_specs && strcmp(cases[c].spec, "2") != 0) {
                continue;
            }
            tests[n++] = (struct CMUnitTest){
                .name = g_strdup_printf("%s/%s", cases[c].name, features[i].name),
                .test_func = features[i].fn, .setup_func = setup, .teardown_func = teardown,
                .initial_state = (void *)&cases[c],
            };
        }
    }
    return _cmocka_run_group_tests("numa", tests, n, NULL, NULL);
}
