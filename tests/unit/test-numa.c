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
#include <inttypes.h>
#include <numa.h>
#include <numaif.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include "testutil.h"
#include "backends/backend.h"
#include "migration/format/format.h"
#include "migration/numa.h"
#include "migration/restore-int.h"
#include "migration/uffd.h"

#define PSIZE 4096u

/* ------------------------------ topology -------------------------------- */

/*
 * A machine to check SPECs against: CPUs 0-3 online, 0-2 allowed; nodes 0-3
 * online, node N holding CPU N, node 2 without memory, node 3 not allowed;
 * node 2 is nearer to node 1 (20) than to node 0 (30).
 */
static void fake_machine(sl_machine *m)
{
    memset(m, 0, sizeof(*m));
    for (int i = 0; i < 4; i++) {
        CPU_SET(i, &m->cpus_online);
        CPU_SET(i, &m->nodes_online);
        CPU_SET(i, &m->node_cpus[i]);
        if (i != 3) {
            CPU_SET(i, &m->cpus_allowed);
            CPU_SET(i, &m->nodes_allowed);
        }
        if (i != 2) {
            CPU_SET(i, &m->nodes_with_memory);
        }
        for (int k = 0; k < 4; k++) {
            m->distance[i][k] = i == k ? 10 : 30;
        }
    }
    m->distance[1][2] = m->distance[2][1] = 20;
}

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
        if (numa_available() >= 0) {
            assert_int_equal(t.distance[0][i], 10); /* real node 0 to its own memory */
        }
    }
}

static void test_spec_count_deals_only_allowed_cpus(void **state)
{
    g_autoptr(GError) err = NULL;
    sl_machine m;
    sl_topology t;

    fake_machine(&m);
    assert_true(sl_topology_parse_on("4", &m, &t, &err));
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(t.nodes[i].ncpus, 1);
        assert_true(CPU_ISSET((int)(i % 3), &t.nodes[i].cpus)); /* CPU 3 is not allowed */
    }
}

static void test_spec_explicit_nodes_round_trip(void **state)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *desc = NULL;
    sl_machine m;
    sl_topology t;

    fake_machine(&m);
    assert_true(sl_topology_parse_on("3:0-1@0;7:2@1", &m, &t, &err));
    assert_int_equal(t.nnodes, 2);
    assert_int_equal(sl_topology_index(&t, 7), 1);
    assert_int_equal(t.nodes[0].ncpus, 2);
    desc = sl_topology_describe(&t);
    assert_string_equal(desc, "3:0-1@0;7:2@1");
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

static void test_spec_values_the_machine_lacks_are_rejected_by_name(void **state)
{
    static const struct {
        const char *spec, *why;
    } bad[] = {
        { "0:0;1:4@0", "node 1: CPU 4 does not exist here (online CPUs: 0-3)" },
        { "0:0-3@0", "node 0: CPU 3 is not allowed for this process (allowed CPUs: 0-2)" },
        { "0:0@5", "node 0: memory node 5 does not exist here (nodes: 0-3)" },
        { "0:0@5000", "node 0: memory node 5000 does not exist here" },
        { "4:0@2", "node 4: memory node 2 has no memory (nodes with memory: 0-1,3)" },
        { "0:0@3", "node 0: memory node 3 is not allowed for this process (allowed memory "
                   "nodes: 0-2)" },
    };
    sl_machine m;
    sl_topology t;

    fake_machine(&m);
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) err = NULL;
        if (sl_topology_parse_on(bad[i].spec, &m, &t, &err)) {
            fail_msg("spec '%s' was accepted", bad[i].spec);
        }
        if (!strstr(err->message, bad[i].why)) {
            fail_msg("spec '%s': got \"%s\", want \"%s\"", bad[i].spec, err->message, bad[i].why);
        }
    }
    assert_true(sl_topology_parse_on("0:0-2@0;1:1@1", &m, &t, NULL)); /* all of it exists */
}

static void test_spec_naming_a_cpu_or_node_this_machine_lacks_is_refused(void **state)
{
    g_autofree char *cpu = g_strdup_printf("0:%ld@0", sysconf(_SC_NPROCESSORS_CONF));
    g_autofree char *mem = g_strdup_printf("0:0@%d", numa_max_node() + 1);
    g_autofree char *cpu_why = g_strdup_printf("CPU %ld does not exist",
                                               sysconf(_SC_NPROCESSORS_CONF));
    g_autofree char *mem_why = g_strdup_printf("memory node %d does not exist",
                                               numa_max_node() + 1);
    GError *err = NULL;
    sl_topology t;

    assert_false(sl_topology_parse(cpu, &t, &err));
    assert_non_null(strstr(err->message, cpu_why));
    g_clear_error(&err);
    assert_false(sl_topology_parse(mem, &t, &err));
    assert_non_null(strstr(err->message, mem_why));
    g_clear_error(&err);
}

/* In a thread allowed only CPU 0, a node with CPU 1 is refused. */
static gpointer parse_on_cpu0(gpointer spec)
{
    cpu_set_t one;
    sl_topology t;
    GError *err = NULL;

    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof(one), &one) < 0 || sl_topology_parse(spec, &t, &err)) {
        return g_strdup("accepted");
    }
    return g_strdup(err->message);
}

static void test_spec_cpu_outside_the_affinity_is_refused(void **state)
{
    g_autofree char *why = NULL;
    GThread *th;

    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
        print_message("# SKIP: needs 2 CPUs\n");
        skip();
    }
    th = g_thread_new("affinity", parse_on_cpu0, (gpointer) "0:0@0;1:1@0");
    why = g_thread_join(th);
    assert_non_null(strstr(why, "node 1: CPU 1 is not allowed for this process"));
}

static void test_hint_goes_to_its_node_else_nearest_else_modulo(void **state)
{
    g_autoptr(GError) err = NULL;
    sl_machine m;
    sl_topology t;

    fake_machine(&m);
    assert_true(sl_topology_parse_on("0:0@0;1:1@1", &m, &t, &err));
    assert_int_equal(sl_topology_hint_index(&t, 1), 1);  /* in the topology */
    assert_int_equal(sl_topology_hint_index(&t, 2), 1);  /* nearer node 1 (modulo: 0) */
    assert_int_equal(sl_topology_hint_index(&t, 3), 0);  /* a tie: the first (modulo: 1) */
    assert_int_equal(sl_topology_hint_index(&t, 41), 1); /* no distance known: modulo */
    assert_int_equal(sl_topology_hint_index(&t, 1000), 0);
}

/*
 * A policy the memory carries names real nodes: its first goes to the node
 * whose memory is there (node 7 here, the second), else the nearest, else
 * the first node.
 */
static void test_a_policy_node_goes_to_the_node_of_its_memory_else_nearest(void **state)
{
    g_autoptr(GError) err = NULL;
    sl_machine m;
    sl_topology t;

    fake_machine(&m);
    assert_true(sl_topology_parse_on("3:0@1;7:1@0", &m, &t, &err));
    assert_int_equal(sl_topology_memory_index(&t, 0), 1);  /* node 7's memory */
    assert_int_equal(sl_topology_memory_index(&t, 1), 0);  /* node 3's */
    assert_int_equal(sl_topology_memory_index(&t, 2), 0);  /* nearer real node 1 (20 to 30) */
    assert_int_equal(sl_topology_memory_index(&t, 3), 0);  /* a tie: the first */
    assert_int_equal(sl_topology_memory_index(&t, 41), 0); /* no distance known: the first */
}

static void test_discovery_keeps_allowed_cpus_and_memory_a_node_may_use(void **state)
{
    g_autofree char *desc = NULL;
    sl_machine m;
    sl_topology t;

    fake_machine(&m);
    sl_topology_discover_on(&m, &t);
    desc = sl_topology_describe(&t);
    /* Node 3's only CPU is not allowed: no group; node 2 has no memory: the
     * nearer node 1 holds it. */
    assert_string_equal(desc, "0:0@0;1:1@1;2:2@1");
    assert_int_equal(t.distance[2][0], 30);
    assert_int_equal(t.distance[2][2], 20); /* to node 2's memory, on node 1 */
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

#define MAX_BLOCKS 2

typedef struct {
    const numa_case *nc;
    char *dir, *path;
    unsigned nblocks;
    uint64_t len[MAX_BLOCKS]; /* block b is named "b<b>", its pages seeded b + 1 */
    uint64_t data[MAX_BLOCKS]; /* and zero from this offset on */
    sl_mem mem[MAX_BLOCKS];
    sl_snapshot *snap;
    sl_restore *r;
    atomic_bool open; /* wait_for_open()'s gate: here, so that it outlives a failed test */
} fixture;

typedef struct {
    uint64_t len;
    int node;      /* hint in the block table, -1: none */
    uint64_t data; /* bytes at the start that hold data, the rest zero (0: all) */
} block_def;

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

static void write_block(sl_writer *w, unsigned b, uint64_t len)
{
    g_autoptr(GError) err = NULL;
    g_autofree uint8_t *page = g_malloc(PSIZE);

    for (uint64_t i = 0; i < len / PSIZE; i++) {
        sl_test_fill_page(page, PSIZE, i, b + 1, 6);
        assert_true(sl_writer_write(w, b, i * PSIZE, page, PSIZE, &err));
    }
}

static void add_hot_list(sl_writer *w, const uint64_t *hot, size_t nhot)
{
    g_autoptr(GError) err = NULL;
    g_autofree uint8_t *e = g_malloc0(nhot * 16);

    for (size_t i = 0; i < nhot; i++) {
        sl_put_le64(e + i * 16 + 8, hot[i]);
    }
    assert_true(sl_writer_add_section(w, SL_SECTION_HOT_PAGES, e, nhot * 16, &err));
}

/* A snapshot of the blocks @defs (plus a hot list of @nhot pages of b0), and their memory. */
static void build_blocks(fixture *f, const block_def *defs, unsigned n, const uint64_t *hot,
                         size_t nhot)
{
    g_autoptr(GError) err = NULL;
    uint64_t total = 0;
    sl_writer *w;

    for (unsigned b = 0; b < n; b++) {
        total += defs[b].len;
    }
    need(f->nc, total);
    f->dir = sl_test_tmpdir();
    f->path = g_build_filename(f->dir, "snap", NULL);
    f->nblocks = n;
    w = sl_writer_new(f->path, &err);
    for (unsigned b = 0; b < n; b++) {
        g_autofree char *name = g_strdup_printf("b%u", b);
        f->len[b] = defs[b].len;
        f->data[b] = defs[b].data ? defs[b].data : defs[b].len;
        assert_int_equal(sl_writer_add_block(w, name, defs[b].len, PSIZE, defs[b].node, &err), b);
    }
    for (unsigned b = 0; b < n; b++) {
        write_block(w, b, f->data[b]);
    }
    if (nhot) {
        add_hot_list(w, hot, nhot);
    }
    assert_true(sl_writer_finish(w, &err));
    sl_writer_free(w);
    f->snap = sl_snapshot_open(f->path, &err);
    assert_non_null(f->snap);
    for (unsigned b = 0; b < n; b++) {
        if (!sl_mem_map(&f->mem[b], f->nc->kind, f->len[b], f->nc->hugepage, &err)) {
            fail_msg("sl_mem_map: %s", err->message);
        }
    }
}

/* A one-block snapshot of @len bytes, plus a hot list of @nhot pages. */
static void build(fixture *f, uint64_t len, const uint64_t *hot, size_t nhot)
{
    block_def def = { .len = len, .node = -1, .data = 0 };

    build_blocks(f, &def, 1, hot, nhot);
}

static void attach_all(fixture *f, const sl_restore_config *cfg)
{
    g_autoptr(GError) err = NULL;

    f->r = sl_restore_new(f->snap, cfg, &err);
    assert_non_null(f->r);
    for (unsigned b = 0; b < f->nblocks; b++) {
        g_autofree char *name = g_strdup_printf("b%u", b);
        assert_true(sl_mem_attach(f->r, name, &f->mem[b], &err));
    }
}

static void start(fixture *f, const sl_restore_config *cfg)
{
    g_autoptr(GError) err = NULL;

    attach_all(f, cfg);
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
    for (unsigned b = 0; b < f->nblocks; b++) {
        sl_mem_release(&f->mem[b]);
    }
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

    for (unsigned b = 0; b < f->nblocks; b++) {
        for (uint64_t i = 0; i < f->len[b] / PSIZE; i++) {
            if (i < f->data[b] / PSIZE) {
                sl_test_fill_page(want, PSIZE, i, b + 1, 6);
            } else {
                memset(want, 0, PSIZE);
            }
            bad += memcmp(want, f->mem[b].host + i * PSIZE, PSIZE) != 0;
        }
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

/* Touchers stay in the first half of the first stripe (node 0's): faults
 * race node 0's loaders there, yet every node keeps stripes that only its
 * own loaders fill, whatever the scheduling. */
#define TOUCH_BYTES (16u << 20)

static gpointer touch(gpointer opaque)
{
    toucher *t = opaque;
    g_autofree uint8_t *want = g_malloc(PSIZE);
    GRand *rng = g_rand_new_with_seed(t->id + 7);
    uint64_t n = MIN(t->f->len[0], TOUCH_BYTES) / PSIZE;

    while (!atomic_load(t->stop)) {
        uint64_t i = (uint64_t)g_rand_int_range(rng, 0, (gint32)n);
        sl_test_fill_page(want, PSIZE, i, 1, 6);
        t->bad += memcmp(want, t->f->mem[0].host + i * PSIZE, PSIZE) != 0;
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
    attach_all(f, &cfg);
    assert_false(sl_restore_bind(f->r, "b0", 99, &err)); /* no such node */
    g_clear_error(&err);
    assert_true(sl_restore_bind(f->r, "b0", (int)last, &err));
    assert_true(sl_restore_start(f->r, &err));
    sl_stats st = finish(f);
    assert_int_equal(st.pages_by_node[last], st.pages_by_loader);
    assert_int_equal(st.pages_wrong_node, 0);
}

/* Loader hook: every claim waits (bounded) until @open. */
static void wait_for_open(void *opaque, unsigned region, uint64_t u, uint64_t n)
{
    const atomic_bool *open = opaque;

    (void)region;
    (void)u;
    (void)n;
    /* seq_cst: the test's store after the fault was served */
    for (int i = 0; i < 10000 && !atomic_load(open); i++) {
        g_usleep(1000); /* a test hook: nothing to wait on */
    }
}

/*
 * Every group's loader holds its first claim until the fault on the last
 * page was served, so that the loaders cannot reach that page first
 * however long the test thread is descheduled (found by review).
 */
static void test_fault_is_served_while_every_group_is_busy(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = f->nc->spec, .interleave = true };
    g_autofree uint8_t *want = g_malloc(PSIZE);
    g_autoptr(GError) err = NULL;
    uint64_t last;

    build(f, 256u << 20, NULL, 0);
    last = f->len[0] / PSIZE - 1;
    attach_all(f, &cfg);
    f->r->loader_claimed = wait_for_open;
    f->r->loader_claimed_opaque = &f->open;
    assert_true(sl_restore_start(f->r, &err));
    /* Groups fill their stripes in file order; the last page is furthest. */
    sl_test_fill_page(want, PSIZE, last, 1, 6);
    assert_memory_equal(want, f->mem[0].host + last * PSIZE, PSIZE);
    assert_int_equal(sl_restore_poll(f->r), -EINPROGRESS);
    atomic_store(&f->open, true);
    sl_stats st = finish(f);
    assert_true(st.pages_by_fault >= 1);
}

/*
 * The hot list is loaded first, in its order.  Where the loaders move whole
 * 2 MiB chunks (anonymous memory of our own: pages_moved), a hot unit
 * brings its chunk, so the order holds chunk by chunk (@grain units).
 */
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
    uint64_t grain;
    const uint32_t *order;

    /* Every third unit from the end backwards: nothing coalesces. */
    for (unsigned i = 0; i < nhot; i++) {
        hot_units[i] = nunits - 1 - 3 * i;
        hot[i] = hot_units[i] * (unit / PSIZE);
    }
    build(f, len, hot, nhot);
    start(f, &cfg);
    sl_stats st = finish(f);
    assert_int_equal(st.hot_pages, nhot);
    grain = st.pages_moved ? (2u << 20) / unit : 1;
    for (unsigned i = 0; i < nhot; i++) {
        uint64_t u0 = hot_units[i] - hot_units[i] % grain;
        for (uint64_t u = u0; u < MIN(nunits, u0 + grain); u++) {
            is_hot[u] = true;
        }
    }
    order = sl_test_restore_order(f->r, 0);
    for (unsigned i = 1; i < nhot; i++) { /* in list order, grain by grain */
        uint64_t a = hot_units[i - 1] / grain, b = hot_units[i] / grain;
        assert_true(a == b || order[b * grain] > order[a * grain + grain - 1]);
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

/* Whether every page of [p, p + len) is resident in this process's mapping. */
static bool resident(const uint8_t *p, uint64_t len)
{
    g_autofree unsigned char *vec = g_malloc(len / PSIZE);

    assert_int_equal(mincore((void *)p, len, vec), 0);
    for (uint64_t i = 0; i < len / PSIZE; i++) {
        if (!(vec[i] & 1)) {
            return false;
        }
    }
    return true;
}

static void test_hot_zero_pages_get_memory_and_other_zero_pages_stay_holes(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1, .numa_topology = "1" };
    uint64_t unit = f->nc->hugepage ? f->nc->hugepage : PSIZE;
    uint64_t len = unit == PSIZE ? 8u << 20 : 32u << 20;
    /* Data in the first 2 MiB only: no later 2 MiB range holds data, so
     * nothing (THP collapse included) gives those units memory but the list. */
    const block_def def = { .len = len, .node = -1, .data = 2u << 20 };
    const uint64_t zero0 = (4u << 20) / unit, nunits = len / unit;
    const uint64_t hot_units[] = { 0, zero0 + 3, zero0 + 1, nunits - 1 };
    uint64_t hot[G_N_ELEMENTS(hot_units)];

    for (size_t i = 0; i < G_N_ELEMENTS(hot_units); i++) {
        hot[i] = hot_units[i] * (unit / PSIZE);
    }
    build_blocks(f, &def, 1, hot, G_N_ELEMENTS(hot));
    start(f, &cfg);
    assert_int_equal(sl_restore_wait(f->r, -1), 0);
    /* Before anything reads the memory (a read would give a hole a page). */
    for (uint64_t u = (2u << 20) / unit; u < nunits; u++) {
        bool listed = u == zero0 + 3 || u == zero0 + 1 || u == nunits - 1;
        if (resident(f->mem[0].host + u * unit, unit) != listed) {
            fail_msg("zero unit %" PRIu64 " (%s) is %s", u, listed ? "listed" : "not listed",
                     listed ? "a hole" : "resident");
        }
    }
    finish(f); /* and every byte is right: data, then zeros */
}

/*
 * An 8 MiB snapshot restored with @cfg (faults only, recording): pages
 * @touched read in order, then every page; the list it recorded.
 */
static GBytes *record_touches(fixture *f, const sl_restore_config *cfg, const uint64_t *touched,
                              size_t n)
{
    build(f, 8u << 20, NULL, 0);
    start(f, cfg);
    for (size_t i = 0; i < n; i++) {
        (void)*(volatile uint8_t *)(f->mem[0].host + touched[i] * PSIZE);
    }
    for (uint64_t i = 0; i < f->len[0] / PSIZE; i++) { /* finish the restore */
        (void)*(volatile uint8_t *)(f->mem[0].host + i * PSIZE);
    }
    finish(f);
    return sl_restore_recorded(f->r);
}

static void test_recorder_lists_faulted_pages_in_fault_order(void **state)
{
    fixture *f = *state;
    /* No fault-around: only the touched units are listed (see the next test). */
    sl_restore_config cfg = { .size = sizeof(cfg), .no_loaders = true, .record = true,
                              .numa_topology = "2", .fault_around = PSIZE };
    static const uint64_t touched[] = { 700, 3, 1500, 3, 42 };
    uint64_t unit = f->nc->hugepage ? f->nc->hugepage : PSIZE;
    g_autoptr(GBytes) rec = record_touches(f, &cfg, touched, G_N_ELEMENTS(touched));
    gsize len;
    const uint8_t *p = g_bytes_get_data(rec, &len);

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

/*
 * With fault-around, the list names what the fault path placed: each
 * faulted unit, then the neighbours served with it (those holding data,
 * unbroken from it within its 64 KiB block), in ascending order.
 */
static void test_recorder_lists_fault_around_neighbours_after_their_fault(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .no_loaders = true, .record = true,
                              .numa_topology = "2" };
    const uint64_t unit = f->nc->hugepage ? f->nc->hugepage : PSIZE, per = unit / PSIZE;
    const uint64_t block = unit == PSIZE ? SL_FAULT_AROUND_DEFAULT / PSIZE : 1; /* units */
    static const uint64_t touched[] = { 700, 3 };
    g_autoptr(GBytes) rec = record_touches(f, &cfg, touched, G_N_ELEMENTS(touched));
    gsize len;
    const uint8_t *p = g_bytes_get_data(rec, &len);
    uint64_t k = 0;

    assert_true(len >= 2 * 16);
    for (size_t i = 0; i < G_N_ELEMENTS(touched); i++) {
        uint64_t t = touched[i] / per, a = t / block * block, lo = t, hi = t + 1; /* units */
        /* The run stops at zero pages (write_block: every 6th) and at the block. */
        while (lo > a && (lo - 1) * per % 6) {
            lo--;
        }
        while (hi < a + block && hi * per % 6) {
            hi++;
        }
        assert_true(per > 1 || hi - lo > 1);
        assert_int_equal(sl_le64(p + k++ * 16 + 8), t * per);
        for (uint64_t u = lo; u < hi; u++) {
            if (u != t) {
                assert_int_equal(sl_le64(p + k++ * 16 + 8), u * per);
            }
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
    attach_all(f, &cfg);
    assert_false(sl_restore_start(f->r, &err));
    assert_non_null(strstr(err->message, "hot-page list entry 1"));
}

static unsigned nodes_of(const fixture *f)
{
    return (unsigned)atoi(f->nc->spec);
}

static uint64_t unit_of(const fixture *f)
{
    return f->nc->hugepage ? f->nc->hugepage : PSIZE;
}

static void test_interleave_gives_every_node_part_of_a_small_snapshot(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = f->nc->spec, .interleave = true };
    static const block_def defs[] = { { 64u << 20, -1, 0 }, { 8u << 20, -1, 0 } };
    /* MiB per node: stripes of 72/2 = 36 or 72/4 = 18 MiB, the rotation running
     * on into b1, whose 8 MiB fall to node 2 % 2 or 4 % 4 = 0. */
    static const uint64_t mib2[] = { 36 + 8, 28 }, mib4[] = { 18 + 8, 18, 18, 10 };
    const uint64_t *want = nodes_of(f) == 2 ? mib2 : mib4;

    build_blocks(f, defs, 2, NULL, 0);
    start(f, &cfg);
    sl_stats st = finish(f);
    assert_int_equal(st.pages_by_fault, 0); /* nobody touched: loaders placed all */
    for (unsigned n = 0; n < st.nodes; n++) {
        assert_int_equal(st.pages_by_node[n], (want[n] << 20) / unit_of(f));
    }
    assert_int_equal(st.pages_wrong_node, 0);
}

static void test_hinted_block_is_filled_by_its_node_only(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = f->nc->spec };
    const block_def defs[] = { { 8u << 20, 1, 0 }, { 4u << 20, -1, 0 } };

    build_blocks(f, defs, 2, NULL, 0);
    start(f, &cfg);
    sl_stats st = finish(f);
    assert_int_equal(st.pages_by_fault, 0);
    assert_int_equal(st.pages_by_node[1], (8u << 20) / unit_of(f)); /* b0: hint 1 */
    assert_int_equal(st.pages_by_node[0], (4u << 20) / unit_of(f)); /* b1: no hint */
    for (unsigned n = 2; n < st.nodes; n++) {
        assert_int_equal(st.pages_by_node[n], 0);
    }
    assert_int_equal(st.pages_wrong_node, 0);
}

static void test_hint_for_a_node_the_topology_lacks_goes_modulo(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = f->nc->spec };
    const block_def defs[] = { { 8u << 20, 63, 0 } };
    unsigned owner = 63 % nodes_of(f);

    if (g_file_test("/sys/devices/system/node/node63", G_FILE_TEST_EXISTS)) {
        print_message("# SKIP: real node 63 exists: its distance decides, not the modulo\n");
        skip();
    }
    build_blocks(f, defs, 1, NULL, 0);
    start(f, &cfg);
    sl_stats st = finish(f);
    assert_int_equal(st.pages_by_fault, 0);
    assert_int_equal(st.pages_by_node[owner], (8u << 20) / unit_of(f));
}

/* Policy of the page at @addr; @mask gets its nodes. */
static int policy_at(const uint8_t *addr, unsigned long mask[16])
{
    int mode = -1;

    memset(mask, 0, 16 * sizeof(mask[0]));
    if (get_mempolicy(&mode, mask, 16 * 64, (void *)addr, MPOL_F_ADDR) < 0) {
        fail_msg("get_mempolicy: %s", g_strerror(errno));
    }
    return mode;
}

/*
 * Every MiB of block @b is bound to real node 0 alone, and its second page
 * (the first may be a zero page, which anon maps to the shared zero page) is
 * on node 0.
 */
static void assert_bound_to_node0(const fixture *f, unsigned b)
{
    unsigned long mask[16];
    uint64_t step = MAX(1u << 20, unit_of(f));

    for (uint64_t off = 0; off < f->len[b]; off += step) {
        void *page = f->mem[b].host + off + PSIZE;
        int status = -1;
        if (policy_at(f->mem[b].host + off, mask) != MPOL_BIND || mask[0] != 1) {
            fail_msg("block b%u offset %" G_GUINT64_FORMAT ": policy is not MPOL_BIND to "
                     "node 0", b, off);
        }
        assert_int_equal(move_pages(0, 1, &page, NULL, &status, 0), 0);
        assert_int_equal(status, 0);
    }
}

static void test_every_range_is_bound_to_its_nodes_memory(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = f->nc->spec, .interleave = true };
    static const block_def defs[] = { { 64u << 20, -1, 0 }, { 8u << 20, -1, 0 } };
    unsigned long mask[16];

    build_blocks(f, defs, 2, NULL, 0);
    for (unsigned b = 0; b < 2; b++) {
        assert_int_equal(policy_at(f->mem[b].host, mask), MPOL_DEFAULT); /* not yet bound */
    }
    start(f, &cfg);
    finish(f);
    for (unsigned b = 0; b < 2; b++) {
        assert_bound_to_node0(f, b);
    }
}

/*
 * The memory carries a policy before the restore, a VMM's (QEMU's
 * host-nodes/policy mbind on its own mapping of a memory file sets the
 * file's shared policy; for anonymous memory the caller's mapping holds
 * it): here MPOL_INTERLEAVE on node 0, which the restore never sets
 * itself.  With no hint and no binding asked, the restore leaves it as it
 * is, and the block's units go to the node of the policy's first node.
 * Before, its mbind(MPOL_BIND) replaced it for good.
 */
static void test_a_policy_the_memory_carries_outlives_the_restore(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = f->nc->spec };
    const uint64_t len = 8u << 20;
    unsigned long node0[16] = { 1 }, mask[16];
    uint8_t *vmm;

    build(f, len, NULL, 0);
    vmm = f->nc->kind == SL_BACKEND_ANON
              ? f->mem[0].host
              : mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f->mem[0].fd, 0);
    assert_true(vmm != MAP_FAILED);
    assert_int_equal(mbind(vmm, len, MPOL_INTERLEAVE, node0, 16 * 64, 0), 0);
    start(f, &cfg);
    sl_stats st = finish(f);
    assert_int_equal(st.pages_by_node[0], st.pages_by_loader); /* node 0's memory */
    assert_int_equal(st.pages_wrong_node, 0);
    g_clear_pointer(&f->r, sl_restore_free);
    assert_int_equal(policy_at(vmm, mask), MPOL_INTERLEAVE);
    assert_int_equal(mask[0], 1);
    if (vmm != f->mem[0].host) {
        munmap(vmm, len);
    }
}

/*
 * A block with no hint, no binding and memory without a policy prefers its
 * node (MPOL_PREFERRED): its memory may spill to another node when that
 * one is full, as an eager load's would, instead of failing for want of
 * room there; a hinted block is bound (MPOL_BIND).  Read where the restore
 * binds: our mapping of anonymous memory, the fill alias of a memory file
 * (shmem: the file's own policy; hugetlbfs keeps it on the alias alone).
 */
static void test_an_unhinted_block_prefers_its_node_and_a_hinted_one_is_bound(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .numa_topology = f->nc->spec };
    const block_def defs[] = { { 8u << 20, 1, 0 }, { 4u << 20, -1, 0 } };
    static const int want[] = { MPOL_BIND, MPOL_PREFERRED };
    unsigned long mask[16];

    build_blocks(f, defs, 2, NULL, 0);
    start(f, &cfg);
    finish(f);
    for (unsigned b = 0; b < 2; b++) {
        g_autofree char *name = g_strdup_printf("b%u", b);
        const sl_region *reg = sl_region_of_block(f->r, name);
        int mode = policy_at(reg->mem.alias ? reg->mem.alias : reg->mem.host, mask);
        if (mode != want[b] || mask[0] != 1) {
            fail_msg("block %s: policy %d on nodes 0x%lx, want %d on node 0", name, mode,
                     mask[0], want[b]);
        }
    }
}

/*
 * What the threads that allocate hugetlbfs pages with fallocate() (the
 * prefault thread, zeros placed by a loader or a fault) ran under at each
 * allocation.  hugetlbfs keeps no shared policy, so fallocate() takes the
 * calling thread's, never the binding of our alias mapping: each must run
 * under its block's policy then.  On this one-node host every simulated
 * node's memory is real node 0, so the mode tells one block's policy from
 * another's and from none; which node a block gets is checked above.
 */
typedef struct {
    GMutex lock;
    int want[MAX_BLOCKS];      /* the mode each block is bound with */
    unsigned by_prefault, by_fault, by_loader;
    unsigned wrong;
    char why[256];             /* the first wrong one */
} alloc_audit;

typedef struct {
    alloc_audit *a;
    unsigned block;
} alloc_hook;

/* sl_mem.allocating: the calling thread's policy, checked and counted by thread kind. */
static void audit_allocation(void *opaque, uint64_t off, uint64_t len)
{
    const alloc_hook *h = opaque;
    alloc_audit *a = h->a;
    unsigned long mask[16] = { 0 };
    char name[16] = "";
    int mode = -1;

    (void)len;
    (void)!get_mempolicy(&mode, mask, 16 * 64, NULL, 0);
    pthread_getname_np(pthread_self(), name, sizeof(name));
    g_mutex_lock(&a->lock);
    a->by_prefault += strcmp(name, "sl-prefault") == 0;
    a->by_fault += strcmp(name, "sl-fault") == 0;
    a->by_loader += strcmp(name, "sl-loader") == 0;
    if ((mode != a->want[h->block] || mask[0] != 1) && a->wrong++ == 0) {
        g_snprintf(a->why, sizeof(a->why), "%s allocated block b%u at offset 0x%" PRIx64
                 " under policy %d on nodes 0x%lx, want %d on node 0", name, h->block, off,
                 mode, mask[0], a->want[h->block]);
    }
    g_mutex_unlock(&a->lock);
}

/* Starts a restore with @cfg whose allocations @a audits (through @hooks). */
static void start_audited(fixture *f, const sl_restore_config *cfg, alloc_audit *a,
                          alloc_hook *hooks)
{
    g_autoptr(GError) err = NULL;

    attach_all(f, cfg);
    for (unsigned b = 0; b < f->nblocks; b++) {
        g_autofree char *name = g_strdup_printf("b%u", b);
        sl_region *reg = sl_region_of_block(f->r, name);
        hooks[b] = (alloc_hook){ .a = a, .block = b };
        reg->mem.allocating = audit_allocation;
        reg->mem.allocating_opaque = &hooks[b];
    }
    assert_true(sl_restore_start(f->r, &err));
}

static unsigned audited(alloc_audit *a, const unsigned *count)
{
    unsigned n;

    g_mutex_lock(&a->lock);
    n = *count;
    g_mutex_unlock(&a->lock);
    return n;
}

/*
 * b0 (hinted for node 1: MPOL_BIND) with zero units past 4 MiB, b1
 * (unhinted: MPOL_PREFERRED) past 2 MiB.  First the loaders alone, which
 * give b0's zero units of the hot list their pages; then faults alone,
 * after the prefault thread began, touching every unit (zero ones too).
 * Before, the prefault and fault threads allocated under the policy they
 * were started with (none), and loaders under their own preference.
 */
static void test_hugetlbfs_pages_are_allocated_under_their_blocks_policy(void **state)
{
    fixture *f = *state;
    const block_def defs[] = { { 8u << 20, 1, 4u << 20 }, { 4u << 20, -1, 2u << 20 } };
    const uint64_t hot[] = { (4u << 20) / PSIZE, (6u << 20) / PSIZE }; /* b0's zero units */
    sl_restore_config loaders = { .size = sizeof(loaders), .loader_threads = 1,
                                  .numa_topology = f->nc->spec };
    sl_restore_config faults = { .size = sizeof(faults), .no_loaders = true,
                                 .numa_topology = f->nc->spec };
    alloc_audit a = { .want = { MPOL_BIND, MPOL_PREFERRED } };
    alloc_hook hooks[MAX_BLOCKS];

    g_mutex_init(&a.lock);
    build_blocks(f, defs, 2, hot, G_N_ELEMENTS(hot));
    start_audited(f, &loaders, &a, hooks);
    finish(f);
    assert_true(a.by_loader > 0);
    g_clear_pointer(&f->r, sl_restore_free);
    start_audited(f, &faults, &a, hooks);
    for (int i = 0; i < 10000 && audited(&a, &a.by_prefault) == 0; i++) {
        g_usleep(1000);
    }
    assert_true(audited(&a, &a.by_prefault) > 0);
    for (unsigned b = 0; b < 2; b++) {
        for (uint64_t off = 0; off < f->len[b]; off += unit_of(f)) {
            (void)*(volatile uint8_t *)(f->mem[b].host + off);
        }
    }
    finish(f);
    assert_true(a.by_fault > 0);
    g_mutex_clear(&a.lock);
    if (a.wrong) {
        fail_msg("%u of the allocations ran under another policy; the first: %s", a.wrong,
                 a.why);
    }
}

/* Units loaders claimed in all, and of them once they could see a stop
 * request; @held: a loader waits for the stop (once). */
typedef struct {
    sl_restore *r;
    _Atomic uint64_t claimed, after_stop;
    atomic_bool held;
} claim_count;

static void count_claims(void *opaque, unsigned region, uint64_t u, uint64_t n)
{
    claim_count *c = opaque;

    (void)region;
    (void)u;
    /* seq_cst counters: the test polls @claimed, and reads @after_stop once
     * sl_restore_stop() joined the loaders */
    uint64_t before = atomic_fetch_add(&c->claimed, n);
    /* acquire: pairs with the release store of @stopping in sl_restore_stop() */
    if (atomic_load_explicit(&c->r->stopping, memory_order_acquire)) {
        atomic_fetch_add(&c->after_stop, n);
    }
    /* The loader whose claim passes the test's trigger (4 units) waits for
     * the stop, bounded: the restore cannot complete first, however long
     * the test thread is descheduled (found by review: on a stalled test
     * thread the loaders had up to 37376 of 65536 units done). */
    if (before < 4 && before + n >= 4 && !atomic_exchange(&c->held, true)) {
        for (int i = 0; i < 5000 && !atomic_load_explicit(&c->r->stopping, memory_order_acquire);
             i++) {
            g_usleep(1000); /* a test hook: nothing to wait on */
        }
    }
}

/*
 * A loader looks for a stop between pieces of work, so a piece must be
 * bounded: with a hot list of every unit in file order (data in the first
 * half, zeros after; the list starts with the zeros, which no loader moves
 * as chunks), stopped soon after the start, the loaders claim at most one
 * loader chunk each once the stop is visible.  Before, the neighbours
 * coalesced into one run of the whole list: a stop (or a failure) waited
 * for all of it, and one loader did it alone.
 */
static void test_a_stop_waits_for_at_most_a_chunk_of_the_hot_list_per_loader(void **state)
{
    fixture *f = *state;
    const unsigned loaders = 2;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = loaders,
                              .numa_topology = "1" };
    const uint64_t len = 256u << 20, unit = unit_of(f), nunits = len / unit;
    const block_def def = { .len = len, .node = -1, .data = len / 2 };
    g_autofree uint64_t *hot = g_new(uint64_t, nunits);
    g_autoptr(GError) err = NULL;
    claim_count c = { 0 };
    uint64_t bound;

    for (uint64_t i = 0; i < nunits; i++) {
        hot[i] = (i + nunits / 2) % nunits * (unit / PSIZE);
    }
    build_blocks(f, &def, 1, hot, nunits);
    attach_all(f, &cfg);
    c.r = f->r;
    f->r->loader_claimed = count_claims;
    f->r->loader_claimed_opaque = &c;
    assert_true(sl_restore_start(f->r, &err));
    while (atomic_load(&c.claimed) < 4 && sl_restore_poll(f->r) == -EINPROGRESS) {
        g_usleep(100);
    }
    sl_restore_stop(f->r);
    bound = loaders * sl_region_of_block(f->r, "b0")->chunk_units;
    print_message("# %s: %" PRIu64 " units claimed after the stop (bound %" PRIu64 "), %"
                  PRIu64 " of %" PRIu64 " in all\n", f->nc->name, atomic_load(&c.after_stop),
                  bound, atomic_load(&c.claimed), nunits);
    assert_int_equal(sl_restore_poll(f->r), -ECANCELED); /* stopped before the end */
    assert_true(atomic_load(&c.after_stop) <= bound);
}

/*
 * Where the loaders move whole 2 MiB chunks, a hot unit right after a hot
 * chunk (the next chunk's first unit, a zero one here) starts a run of its
 * own: it stretched the chunk's run past the chunk, which was then copied
 * in unit by unit instead of moved (pages_moved 0).
 */
static void test_a_hot_unit_after_a_hot_chunk_leaves_the_chunk_whole(void **state)
{
    fixture *f = *state;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1, .numa_topology = "1" };
    const block_def def = { .len = 4u << 20, .node = -1, .data = 2u << 20 };
    const uint64_t hot[] = { 0, (2u << 20) / PSIZE }; /* chunk 0 (data), chunk 1's first unit */

    SL_TEST_NEED("uffd-move",
                 !sl_test_withheld("uffd-move") && sl_uffd_has_features(UFFD_FEATURE_MOVE),
                 sl_test_withheld("uffd-move") ? "withheld by SNAPLOAD_WITHOUT"
                                                : "the kernel has no UFFDIO_MOVE (6.8+)");
    build_blocks(f, &def, 1, hot, G_N_ELEMENTS(hot));
    start(f, &cfg);
    sl_stats st = finish(f);
    assert_int_equal(st.hot_pages, 2);
    assert_int_equal(st.pages_moved, (2u << 20) / PSIZE); /* the first chunk, whole */
}

static bool any(const numa_case *nc)
{
    return true;
}

/* hugetlbfs keeps no shared policy to read back */
static bool not_hugetlbfs(const numa_case *nc)
{
    return nc->kind != SL_BACKEND_HUGETLBFS;
}

/* about the loaders' moving of whole chunks (anonymous memory) */
static bool anon_only(const numa_case *nc)
{
    return nc->kind == SL_BACKEND_ANON;
}

/* about allocations under the thread's policy (hugetlbfs) */
static bool hugetlbfs_only(const numa_case *nc)
{
    return nc->kind == SL_BACKEND_HUGETLBFS;
}

typedef struct {
    const char *name;
    CMUnitTestFunction fn;
    bool all_specs; /* false: run once per backend (on its 2-node case) */
    bool (*applies)(const numa_case *nc);
} feature;

static const feature features[] = {
    { "every_page_is_placed_by_its_own_node", test_every_page_is_placed_by_its_own_node, true, any },
    { "bound_block_is_filled_by_that_node_only", test_bound_block_is_filled_by_that_node_only, true, any },
    { "fault_is_served_while_every_group_is_busy", test_fault_is_served_while_every_group_is_busy, true, any },
    { "hot_list_is_fetched_first_in_recorded_order", test_hot_list_is_fetched_first_in_recorded_order, false, any },
    { "recorder_lists_faulted_pages_in_fault_order", test_recorder_lists_faulted_pages_in_fault_order, false, any },
    { "recorder_lists_fault_around_neighbours_after_their_fault", test_recorder_lists_fault_around_neighbours_after_their_fault, false, any },
    { "hot_zero_pages_get_memory_and_other_zero_pages_stay_holes", test_hot_zero_pages_get_memory_and_other_zero_pages_stay_holes, false, any },
    { "hot_list_entry_out_of_range_is_an_error", test_hot_list_entry_out_of_range_is_an_error, false, any },
    { "interleave_gives_every_node_part_of_a_small_snapshot", test_interleave_gives_every_node_part_of_a_small_snapshot, true, any },
    { "hinted_block_is_filled_by_its_node_only", test_hinted_block_is_filled_by_its_node_only, true, any },
    { "hint_for_a_node_the_topology_lacks_goes_modulo", test_hint_for_a_node_the_topology_lacks_goes_modulo, true, any },
    { "every_range_is_bound_to_its_nodes_memory", test_every_range_is_bound_to_its_nodes_memory, true, not_hugetlbfs },
    { "a_policy_the_memory_carries_outlives_the_restore", test_a_policy_the_memory_carries_outlives_the_restore, false, not_hugetlbfs },
    { "an_unhinted_block_prefers_its_node_and_a_hinted_one_is_bound", test_an_unhinted_block_prefers_its_node_and_a_hinted_one_is_bound, false, any },
    { "hugetlbfs_pages_are_allocated_under_their_blocks_policy", test_hugetlbfs_pages_are_allocated_under_their_blocks_policy, false, hugetlbfs_only },
    { "a_stop_waits_for_at_most_a_chunk_of_the_hot_list_per_loader", test_a_stop_waits_for_at_most_a_chunk_of_the_hot_list_per_loader, false, any },
    { "a_hot_unit_after_a_hot_chunk_leaves_the_chunk_whole", test_a_hot_unit_after_a_hot_chunk_leaves_the_chunk_whole, false, anon_only },
};

#define TOPOLOGY_TEST(fn) { #fn, fn }

static const struct {
    const char *name;
    CMUnitTestFunction fn;
} topology_tests[] = {
    TOPOLOGY_TEST(test_spec_count_deals_cpus_round_robin),
    TOPOLOGY_TEST(test_spec_count_deals_only_allowed_cpus),
    TOPOLOGY_TEST(test_spec_explicit_nodes_round_trip),
    TOPOLOGY_TEST(test_bad_specs_are_rejected_with_a_reason),
    TOPOLOGY_TEST(test_spec_values_the_machine_lacks_are_rejected_by_name),
    TOPOLOGY_TEST(test_spec_naming_a_cpu_or_node_this_machine_lacks_is_refused),
    TOPOLOGY_TEST(test_spec_cpu_outside_the_affinity_is_refused),
    TOPOLOGY_TEST(test_hint_goes_to_its_node_else_nearest_else_modulo),
    TOPOLOGY_TEST(test_a_policy_node_goes_to_the_node_of_its_memory_else_nearest),
    TOPOLOGY_TEST(test_discovery_keeps_allowed_cpus_and_memory_a_node_may_use),
    TOPOLOGY_TEST(test_host_topology_has_at_least_one_node_with_cpus),
};

int main(void)
{
    size_t nc = G_N_ELEMENTS(cases), nf = G_N_ELEMENTS(features), n = 0;
    size_t nt = G_N_ELEMENTS(topology_tests);
    struct CMUnitTest *tests = g_new0(struct CMUnitTest, nt + nc * nf);

    for (size_t i = 0; i < nt; i++) {
        tests[n++] = (struct CMUnitTest){ .name = topology_tests[i].name,
                                          .test_func = topology_tests[i].fn };
    }
    for (size_t c = 0; c < nc; c++) {
        for (size_t i = 0; i < nf; i++) {
            if ((!features[i].all_specs && strcmp(cases[c].spec, "2") != 0) ||
                !features[i].applies(&cases[c])) {
                continue;
            }
            tests[n++] = (struct CMUnitTest){
                .name = g_strdup_printf("%s/%s", cases[c].name, features[i].name),
                .test_func = features[i].fn, .setup_func = setup, .teardown_func = teardown,
                .initial_state = (void *)&cases[c],
            };
        }
    }
    if (g_getenv("SL_TEST_FILTER")) { /* a cmocka glob: run only matching cases */
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    return _cmocka_run_group_tests("numa", tests, n, NULL, NULL);
}
