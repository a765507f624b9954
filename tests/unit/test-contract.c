/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a caller of the public API may get wrong, and what the library does
 * then: a snapshot closed while its restore still reads from it, a fork
 * while memory is still being filled (the child must never read a hole as
 * zeros), memory the caller kept from forks itself, a file mapping that is
 * not the file or offset it is attached as, memory unmapped or moved while
 * its restore runs, and NULL arguments.  The fork
 * cases read the child's memory with process_vm_readv(), so a missing
 * mapping shows as EFAULT instead of a signal in the child.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "testutil.h"
#include "backends/backend.h"
#include "migration/restore-int.h"
#include "migration/uffd.h"

#define PSIZE 4096u

typedef sl_test_case backend_case;

static const backend_case backend_cases[] = {
    { "anon", SL_BACKEND_ANON, 0, "uffd" },
    { "shmem", SL_BACKEND_SHMEM, 0, "uffd" },
    { "hugetlbfs-2M", SL_BACKEND_HUGETLBFS, 2u << 20, "hugepages" },
    { "hugetlbfs-1G", SL_BACKEND_HUGETLBFS, 1u << 30, "hugepages-1G" },
};

/* One block "b0" of known contents and memory to restore it into. */
typedef struct {
    const backend_case *bc;
    char *dir, *path;
    uint64_t len;
    sl_snapshot *snap;
    sl_mem mem;
    sl_restore *r;
    uint64_t withheld;  /* uffd features the restore takes as absent (test hook) */
    void *held;         /* a gate holding a loader (start_held()): opened at teardown */
} fixture;

static uint64_t unit_of(const backend_case *bc)
{
    return bc->hugepage ? bc->hugepage : PSIZE;
}

static void need_backend(const backend_case *bc, uint64_t units)
{
    g_autofree char *why = NULL;
    g_autoptr(GError) err = NULL;
    bool have = sl_test_have_uffd(&why);

    SL_TEST_NEED("uffd", have, why);
    if (bc->hugepage) {
        have = sl_hugetlb_check(bc->hugepage, units, &err);
        SL_TEST_NEED(bc->cap, have, err->message);
    }
}

/* @units backend pages of snapshot data (no zero page) and fresh memory for them. */
static void fixture_build(fixture *f, uint64_t units)
{
    g_autoptr(GError) err = NULL;

    need_backend(f->bc, units);
    f->len = units * unit_of(f->bc);
    f->dir = sl_test_tmpdir();
    f->path = g_build_filename(f->dir, "snap", NULL);
    sl_test_make_snapshot(f->path, &f->len, 1, PSIZE, 0, 0);
    f->snap = sl_snapshot_open(f->path, &err);
    assert_non_null(f->snap);
    if (!sl_mem_map(&f->mem, f->bc->kind, f->len, f->bc->hugepage, &err)) {
        fail_msg("sl_mem_map: %s", err->message);
    }
}

static void fixture_start(fixture *f, bool no_loaders)
{
    g_autoptr(GError) err = NULL;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1,
                              .no_loaders = no_loaders };

    f->r = sl_restore_new(f->snap, &cfg, &err);
    assert_non_null(f->r);
    sl_test_withhold_uffd_features(f->r, f->withheld);
    assert_true(sl_mem_attach(f->r, "b0", &f->mem, &err));
    if (!sl_restore_start(f->r, &err)) {
        fail_msg("sl_restore_start: %s", err->message);
    }
}

static int fixture_setup(void **state)
{
    fixture *f = g_new0(fixture, 1);
    f->bc = *state;
    *state = f;
    return 0;
}

static void gate_open(void *g);

static int fixture_teardown(void **state)
{
    fixture *f = *state;

    if (f->held) {
        gate_open(f->held); /* a test that failed before it let its loader go */
    }
    sl_restore_free(f->r);
    g_free(f->held); /* after the free: its loader may hold it until then */
    sl_mem_release(&f->mem);
    sl_snapshot_close(f->snap);
    if (f->dir) {
        sl_test_rmdir(f->dir);
    }
    g_free(f->path);
    g_free(f);
    return 0;
}

/* Pages of [first, first + n) of @base that differ from the snapshot's. */
static uint64_t wrong_pages(const uint8_t *base, uint64_t first, uint64_t n)
{
    g_autofree uint8_t *want = g_malloc(PSIZE);
    uint64_t bad = 0;

    for (uint64_t i = first; i < first + n; i++) {
        sl_test_fill_page(want, PSIZE, i, 1, 0);
        bad += memcmp(want, base + (i - first) * PSIZE, PSIZE) != 0;
    }
    return bad;
}

/* Reads every page of our memory (faults fill it), then waits for completion. */
static void touch_all_and_wait(fixture *f)
{
    sl_stats st = { .size = sizeof(st) };

    assert_int_equal(wrong_pages(f->mem.host, 0, f->len / PSIZE), 0);
    assert_int_equal(sl_restore_wait(f->r, 30000), 0);
    sl_restore_get_stats(f->r, &st);
    assert_int_equal(st.pages_present, f->len / unit_of(f->bc));
    assert_int_equal(st.pages_placed_twice, 0);
}

/*
 * The restore holds its own reference on the snapshot: the caller closing
 * it right after the start leaves every read of the restore valid (ASan
 * would see a use after free otherwise) and every page right.
 */
static void test_closing_the_snapshot_mid_restore_leaves_the_restore_whole(void **state)
{
    fixture *f = *state;

    fixture_build(f, unit_of(f->bc) <= (2u << 20) ? 8 : 1);
    fixture_start(f, false);
    sl_snapshot_close(f->snap);
    f->snap = NULL;
    touch_all_and_wait(f);
}

/* A forked child that waits until its parent writes to @hold (or dies). */
static pid_t fork_waiting_child(int *hold)
{
    pid_t pid = sl_test_fork_waiting(hold);

    assert_true(pid > 0);
    return pid;
}

static void end_child(pid_t pid, int hold)
{
    int status;

    assert_int_equal(write(hold, "x", 1), 1);
    close(hold);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/*
 * A child forked while pages are still missing has no copy of the memory
 * (MADV_DONTFORK), so it can read neither a hole (zeros, without the
 * guard) nor a placed page; once the restore completes, a child forked
 * then reads every page right.
 */
static void test_a_child_forked_mid_restore_never_reads_a_hole(void **state)
{
    fixture *f = *state;
    uint64_t unit = unit_of(f->bc);
    g_autofree uint8_t *buf = NULL;
    int hold;
    pid_t pid;

    /* more 4 KiB units than one fault serves with its neighbours */
    fixture_build(f, unit == PSIZE ? 4 * SL_FAULT_AROUND_DEFAULT / PSIZE : 4);
    buf = g_malloc(f->len);
    fixture_start(f, true); /* no loaders: the last unit stays missing */
    assert_int_equal(wrong_pages(f->mem.host, 0, 1), 0);
    assert_int_equal(sl_restore_poll(f->r), -EINPROGRESS);
    pid = fork_waiting_child(&hold);
    assert_int_equal(sl_test_read_child(pid, f->mem.host + f->len - unit, buf, unit), -EFAULT);
    assert_int_equal(sl_test_read_child(pid, f->mem.host, buf, PSIZE), -EFAULT);
    end_child(pid, hold);
    touch_all_and_wait(f);
    pid = fork_waiting_child(&hold);
    assert_int_equal(sl_test_read_child(pid, f->mem.host, buf, f->len), 0);
    assert_int_equal(wrong_pages(buf, 0, f->len / PSIZE), 0);
    end_child(pid, hold);
}

/*
 * Memory the caller marked MADV_DONTFORK itself (QEMU does so with guest
 * RAM) stays marked after the restore; the rest is forked again.
 */
static void test_memory_the_caller_kept_from_forks_stays_kept(void **state)
{
    fixture *f = *state;
    g_autofree uint8_t *buf = NULL;
    uint64_t half;
    int hold;
    pid_t pid;

    fixture_build(f, 4);
    half = f->len / 2;
    buf = g_malloc(half);
    assert_int_equal(madvise(f->mem.host, half, MADV_DONTFORK), 0);
    fixture_start(f, false);
    assert_int_equal(sl_restore_wait(f->r, 30000), 0);
    pid = fork_waiting_child(&hold);
    assert_int_equal(sl_test_read_child(pid, f->mem.host, buf, half), -EFAULT);
    assert_int_equal(sl_test_read_child(pid, f->mem.host + half, buf, half), 0);
    assert_int_equal(wrong_pages(buf, half / PSIZE, half / PSIZE), 0);
    end_child(pid, hold);
}

/*
 * Statistics may be asked for between the attach and the start (a daemon
 * stopped while it waits for a block's first consumer reports what it
 * reached): no page map exists yet, so nothing is counted, and the call
 * does not crash (found by review: it read the NULL page map); after the
 * start they count every page.
 */
static void test_stats_of_a_restore_not_started_yet_count_nothing(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    sl_stats st = { .size = sizeof(st) };

    fixture_build(f, 4);
    f->r = sl_restore_new(f->snap, NULL, &err);
    assert_non_null(f->r);
    assert_true(sl_mem_attach(f->r, "b0", &f->mem, &err));
    sl_restore_get_stats(f->r, &st);
    assert_int_equal(st.pages_total, 0);
    assert_int_equal(st.pages_present, 0);
    assert_int_equal(st.map_bytes, 0);
    assert_int_equal(st.error, 0);
    assert_true(st.time_to_complete_ms < 0); /* not reached */
    if (!sl_restore_start(f->r, &err)) {
        fail_msg("sl_restore_start: %s", err->message);
    }
    touch_all_and_wait(f);
}

/* Whether the kernel tells a restore that its memory was unmapped or moved. */
static void need_unmap_events(void)
{
    SL_TEST_NEED("uffd-poison",
                 !sl_test_withheld("uffd-poison") &&
                     sl_uffd_has_features(UFFD_FEATURE_POISON | UFFD_FEATURE_EVENT_UNMAP |
                                          UFFD_FEATURE_EVENT_REMAP),
                 "no UFFDIO_POISON (kernel 6.6+; or withheld by SNAPLOAD_WITHOUT): a restore "
                 "does not watch for unmaps then");
}

/* A loader held at its first claim until the test opens the gate. */
typedef struct {
    GMutex lock;
    GCond cond;
    bool claimed, open;
    uint64_t first;      /* the first unit of the held claim */
} gate;

/* Test hook (loader_claimed): the first claim waits for the gate, 30 s at most. */
static void hold_at_gate(void *opaque, unsigned region, uint64_t u, uint64_t n)
{
    gate *g = opaque;
    gint64 deadline = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;

    g_mutex_lock(&g->lock);
    if (!g->claimed) {
        g->first = u;
    }
    g->claimed = true;
    g_cond_broadcast(&g->cond);
    while (!g->open && g_cond_wait_until(&g->cond, &g->lock, deadline)) {
        continue;
    }
    g_mutex_unlock(&g->lock);
}

static void gate_wait_claimed(gate *g)
{
    gint64 deadline = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;

    g_mutex_lock(&g->lock);
    while (!g->claimed) {
        if (!g_cond_wait_until(&g->cond, &g->lock, deadline)) {
            fail_msg("no loader claimed a page within 30 s");
        }
    }
    g_mutex_unlock(&g->lock);
}

static void gate_open(void *opaque)
{
    gate *g = opaque;

    g_mutex_lock(&g->lock);
    g->open = true;
    g_cond_broadcast(&g->cond);
    g_mutex_unlock(&g->lock);
}

/* Resident pages of [p, p + len) (mincore). */
static uint64_t resident_pages(void *p, uint64_t len)
{
    g_autofree unsigned char *vec = g_malloc(len / PSIZE);
    uint64_t n = 0;

    assert_int_equal(mincore(p, len, vec), 0);
    for (uint64_t i = 0; i < len / PSIZE; i++) {
        n += vec[i] & 1;
    }
    return n;
}

/*
 * Starts a restore of @f whose one loader holds its first claim at the
 * gate returned (once it does).  The gate is the fixture's: a test that
 * fails before it opens it has it opened at teardown.
 */
static gate *start_held(fixture *f)
{
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1 };
    g_autoptr(GError) err = NULL;
    gate *g = g_new0(gate, 1);

    f->r = sl_restore_new(f->snap, &cfg, &err);
    assert_non_null(f->r);
    assert_true(sl_mem_attach(f->r, "b0", &f->mem, &err));
    f->r->loader_claimed = hold_at_gate;
    f->r->loader_claimed_opaque = g;
    f->held = g;
    assert_true(sl_restore_start(f->r, &err));
    gate_wait_claimed(g);
    return g;
}

/* The restore failed with -EFAULT, its error naming block b0 and @what. */
static void assert_lost(fixture *f, const char *what)
{
    g_autoptr(GError) why = NULL;

    assert_int_equal(sl_restore_wait(f->r, 30000), -EFAULT);
    why = sl_restore_error(f->r);
    assert_non_null(why);
    if (!strstr(why->message, "block 'b0'") || !strstr(why->message, what)) {
        fail_msg("the error does not say the memory was %s: %s", what, why->message);
    }
}

/*
 * Memory unmapped during its restore (here a new mapping put over it, as a
 * VMM reusing the address at once would) fails the restore, naming what
 * happened, and the mmap returns.  A loader that had claimed pages of it
 * before and goes on afterwards places nothing into that new memory,
 * registered on another uffd as the next restore's would be, which the
 * kernel lets any uffd of the process fill (found by an API review: the
 * old restore filled the new one's memory).
 */
static void test_memory_unmapped_mid_restore_fails_it_and_its_successor_stays_untouched(
    void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    gate *g;
    uint8_t *next;
    int uffd;

    need_unmap_events();
    fixture_build(f, unit_of(f->bc) == PSIZE ? 64 : 2);
    g = start_held(f);
    /* Put over it in one call: between a munmap and a new mmap the address
     * may be taken by another mapping (ASan's, found by CI). */
    next = mmap(f->mem.host, f->len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    assert_ptr_equal(next, f->mem.host);
    assert_lost(f, "unmapped");
    uffd = sl_uffd_open(0, 0, NULL, &err);
    assert_true(uffd >= 0);
    assert_true(sl_uffd_register(uffd, next, f->len, UFFDIO_REGISTER_MODE_MISSING, 0, NULL,
                                 &err));
    gate_open(g);
    sl_restore_stop(f->r); /* joins the loader, which went on from its claim */
    assert_int_equal(resident_pages(next, f->len), 0);
    close(uffd);
}

/* Units of a fixture whose fault on page 0 leaves its last quarter missing. */
static uint64_t units_past_fault_around(const fixture *f)
{
    return unit_of(f->bc) == PSIZE ? 4 * SL_FAULT_AROUND_DEFAULT / PSIZE : 4;
}

/* A restore watching for unmaps, no loaders: page 0 served by its fault,
 * the last quarter of the memory missing. */
static void start_with_page_0_served(fixture *f)
{
    need_unmap_events();
    fixture_build(f, units_past_fault_around(f));
    fixture_start(f, true); /* no loaders: only what faults bring is placed */
    assert_int_equal(wrong_pages(f->mem.host, 0, 1), 0);
}

/*
 * Reads through the kernel the page at @p of our memory, which must be the
 * snapshot's page @i, or (@i < 0) must not be readable at all: sealed,
 * never zeros.
 */
static void assert_page(const uint8_t *p, int64_t i)
{
    g_autofree uint8_t *buf = g_malloc(PSIZE);
    int ret = sl_test_read_child(getpid(), p, buf, PSIZE);

    if (i < 0 && ret == 0) {
        fail_msg("a page never placed is readable (%s)",
                 sl_all_zero(buf, PSIZE) ? "zeros" : "bytes");
    }
    if (i >= 0) {
        assert_int_equal(ret, 0);
        assert_int_equal(wrong_pages(buf, (uint64_t)i, 1), 0);
    }
}

/*
 * Part of the memory unmapped during its restore: the rest is sealed at
 * once, as a stop leaves it.  A page served before keeps its bytes; a page
 * never placed cannot be read (SIGBUS), never zeros.
 */
static void test_what_is_left_of_memory_unmapped_mid_restore_is_sealed(void **state)
{
    fixture *f = *state;
    uint64_t quarter;

    start_with_page_0_served(f);
    quarter = f->len / 4;
    assert_int_equal(munmap(f->mem.host + 3 * quarter, quarter), 0);
    assert_lost(f, "unmapped");
    assert_page(f->mem.host, 0);
    assert_page(f->mem.host + 3 * quarter - PSIZE, -1);
}

/*
 * Memory moved (mremap) during its restore fails the restore; where it
 * went, a page served before keeps its bytes and a page never placed
 * cannot be read: the moved mapping kept its registration, and without
 * the seal its holes would have read as zeros once the restore's uffd
 * was closed.
 */
static void test_memory_moved_mid_restore_fails_it_and_is_sealed_where_it_went(void **state)
{
    fixture *f = *state;
    uint8_t *to;

    start_with_page_0_served(f);
    to = mmap(NULL, f->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(to != MAP_FAILED);
    assert_ptr_equal(mremap(f->mem.host, f->len, f->len, MREMAP_MAYMOVE | MREMAP_FIXED, to), to);
    f->mem.host = to; /* released there */
    assert_lost(f, "moved");
    sl_restore_free(f->r); /* closes the restore's uffd */
    f->r = NULL;
    assert_page(to, 0);
    assert_page(to + f->len - PSIZE, -1);
}

/* A thread reading one byte of memory that may wait for ever. */
typedef struct {
    const volatile uint8_t *at;
    _Atomic bool done;
} byte_read;

static gpointer read_byte(gpointer opaque)
{
    byte_read *br = opaque;

    (void)*br->at;
    atomic_store(&br->done, true);
    return NULL;
}

/* Whether @br is still reading after @ms milliseconds. */
static bool still_reading(byte_read *br, unsigned ms)
{
    for (unsigned i = 0; i < ms && !atomic_load(&br->done); i++) {
        g_usleep(1000); /* the reader waits in the kernel: nothing to wait on */
    }
    return !atomic_load(&br->done);
}

/* Where a guarded read of this thread jumps on SIGSEGV or SIGBUS. */
static __thread sigjmp_buf *fault_jump;

static void on_fault(int sig)
{
    siglongjmp(*fault_jump, sig);
}

/*
 * A thread reading a byte of our memory as a vCPU would, from user mode
 * (a read through the kernel, process_vm_readv, would hold the mmap lock
 * while it waits, and no munmap could go on): 0 once read, or minus the
 * signal it got.
 */
typedef struct {
    const volatile uint8_t *at;
    int ret;
    _Atomic bool done;
} page_read;

static gpointer read_page(gpointer opaque)
{
    page_read *pr = opaque;
    sigjmp_buf jb;
    int sig;

    fault_jump = &jb;
    sig = sigsetjmp(jb, 1);
    if (sig == 0) {
        (void)*pr->at;
    }
    pr->ret = -sig;
    atomic_store(&pr->done, true);
    return NULL;
}

/* Waits up to @ms milliseconds for @done; whether it came. */
static bool came(_Atomic bool *done, unsigned ms)
{
    for (unsigned i = 0; i < ms && !atomic_load(done); i++) {
        g_usleep(1000); /* the other thread waits in the kernel: nothing to wait on */
    }
    return atomic_load(done);
}

/*
 * A thread whose fault on a page a loader holds waits for that loader;
 * when the memory is unmapped meanwhile it is let go at once (its read
 * then finds nothing mapped: EFAULT), not left waiting until the restore
 * is freed (found by review: the lost range was never woken).
 */
static void test_a_thread_waiting_on_memory_unmapped_mid_restore_is_let_go(void **state)
{
    fixture *f = *state;
    page_read pr = { 0 };
    gate *g;
    GThread *t;

    struct sigaction sa = { .sa_handler = on_fault }, old_segv, old_bus;

    need_unmap_events();
    fixture_build(f, unit_of(f->bc) == PSIZE ? 64 : 2);
    g = start_held(f);
    sigaction(SIGSEGV, &sa, &old_segv); /* cmocka's handlers must not catch these */
    sigaction(SIGBUS, &sa, &old_bus);
    pr.at = f->mem.host + g->first * unit_of(f->bc);
    t = g_thread_new("reader", read_page, &pr);
    assert_false(came(&pr.done, 200)); /* its unit is the held loader's */
    assert_int_equal(munmap(f->mem.host, f->len), 0);
    assert_lost(f, "unmapped");
    if (!came(&pr.done, 10000)) {
        fail_msg("the reader still waits 10 s after its memory was unmapped");
    }
    g_thread_join(t);
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    assert_int_equal(pr.ret, -SIGSEGV); /* nothing is mapped there any more */
    gate_open(g);
}

/* Thread body: munmap of @mu's range; @done once it returned. */
typedef struct {
    void *addr;
    uint64_t len;
    int ret;
    _Atomic bool done;
} unmapping;

static gpointer unmap_range(gpointer opaque)
{
    unmapping *mu = opaque;

    mu->ret = munmap(mu->addr, mu->len);
    atomic_store(&mu->done, true);
    return NULL;
}

static gpointer stop_restore(gpointer opaque)
{
    sl_restore_stop(opaque);
    return NULL;
}

/*
 * A munmap of the memory while the restore is being stopped, once the
 * fault thread has left (nobody reads its event then, and the kernel keeps
 * the munmap waiting for a reader): the stop reads it, fails the restore
 * for it, and the munmap returns (found by review: it waited for ever).
 */
static void test_a_munmap_racing_the_stop_returns(void **state)
{
    fixture *f = *state;
    unmapping mu = { 0 };
    gate *g;
    GThread *stopper, *unmapper;

    need_unmap_events();
    fixture_build(f, unit_of(f->bc) == PSIZE ? 64 : 2);
    g = start_held(f);
    stopper = g_thread_new("stopper", stop_restore, f->r); /* waits for the held loader */
    for (unsigned i = 0; i < 10000 && sl_test_threads_named("sl-fault"); i++) {
        g_usleep(1000); /* the fault thread leaves on the stop: nothing to wait on */
    }
    assert_int_equal(sl_test_threads_named("sl-fault"), 0);
    mu.addr = f->mem.host;
    mu.len = f->len;
    unmapper = g_thread_new("unmapper", unmap_range, &mu);
    assert_false(came(&mu.done, 200)); /* its event waits for a reader */
    gate_open(g);
    g_thread_join(stopper);
    if (!came(&mu.done, 10000)) {
        fail_msg("the munmap still waits 10 s after the stop returned");
    }
    g_thread_join(unmapper);
    assert_int_equal(mu.ret, 0);
    assert_lost(f, "unmapped");
}

/*
 * Memory moved with MREMAP_DONTUNMAP during its restore: the old range
 * stays mapped and registered, but empty (even the pages placed there
 * moved away), and no unmap event follows the move's.  Every page of it
 * is sealed, never read as zeros once the restore's uffd is closed (found
 * by review); where it went, placed pages keep their bytes.
 */
static void test_memory_moved_with_dontunmap_leaves_its_old_range_sealed(void **state)
{
    fixture *f = *state;
    uint8_t *to;

    start_with_page_0_served(f);
    to = mremap(f->mem.host, f->len, f->len, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
    assert_true(to != MAP_FAILED);
    assert_lost(f, "moved");
    sl_restore_free(f->r); /* closes the restore's uffd */
    f->r = NULL;
    assert_page(f->mem.host, -1); /* placed, then moved away */
    assert_page(f->mem.host + f->len - PSIZE, -1);
    assert_page(to, 0);
    assert_page(to + f->len - PSIZE, -1);
    munmap(to, f->len);
}

/*
 * Without UFFDIO_POISON (kernels before 6.6, Debian 12's 6.1; withheld
 * here) a restore does not watch for unmaps (a seal that cannot protect
 * every missing page keeps the range registered, and a later munmap of it
 * would wait for ever for a reader of its event): a quarter of the memory
 * unmapped mid-restore goes unnoticed, and its munmap returns.  The stop
 * then protects what it can up to the hole (mprotect stops there); the
 * rest stays registered on the restore's uffd, kept open past the free, so
 * a read there waits: never zeros, whichever side of the hole.
 */
static void test_without_poison_memory_partly_unmapped_mid_restore_is_never_read_as_zeros(
    void **state)
{
    fixture *f = *state;
    byte_read beyond = { 0 };
    uint64_t quarter;
    GThread *th;
    int uffd;

    fixture_build(f, units_past_fault_around(f));
    quarter = f->len / 4;
    f->withheld = UFFD_FEATURE_POISON;
    fixture_start(f, true); /* no loaders: only what faults bring is placed */
    assert_false(((const sl_region *)g_ptr_array_index(f->r->regions, 0))->ioctls &
                 SL_IOCTL(_UFFDIO_POISON));
    assert_false(f->r->unmap_events);
    assert_int_equal(wrong_pages(f->mem.host, 0, 1), 0);
    assert_int_equal(munmap(f->mem.host + 2 * quarter, quarter), 0);
    assert_int_equal(sl_restore_wait(f->r, 500), -EINPROGRESS); /* nothing noticed it */
    sl_restore_stop(f->r);
    assert_int_equal(sl_restore_poll(f->r), -ECANCELED);
    assert_true(f->r->keep_uffd);
    assert_page(f->mem.host + quarter, -1); /* before the hole: PROT_NONE */
    uffd = f->r->uffd;
    beyond.at = f->mem.host + 3 * quarter + 7;
    th = g_thread_new("read-beyond", read_byte, &beyond);
    if (still_reading(&beyond, 1000)) {
        g_clear_pointer(&f->r, sl_restore_free);
    }
    if (!still_reading(&beyond, 1000)) {
        g_thread_join(th);
        fail_msg("a page never placed, beyond the hole, was read%s",
                 f->r ? "" : " once the restore was freed");
    }
    close(uffd); /* the test lets it go: the read goes on */
    g_thread_join(th);
}

/* How an attach_file test case gets its address, fd and offset wrong. */
typedef enum { RIGHT, OTHER_OFFSET, OTHER_FILE, ANONYMOUS, HOLE, PRIVATE } pairing;

/* Attaches block b0 as @how describes; true if the library accepted it. */
static bool attach_as(fixture *f, pairing how, GError **err)
{
    sl_restore *r = sl_restore_new(f->snap, NULL, err);
    uint8_t *addr = f->mem.host;
    int fd = f->mem.fd, other = memfd_create("other", MFD_CLOEXEC);
    uint64_t offset = how == OTHER_OFFSET ? unit_of(f->bc) : 0;
    bool ok;

    assert_true(other >= 0 && ftruncate(other, (off_t)f->len) == 0);
    if (how == OTHER_FILE) {
        fd = other;
    } else if (how == ANONYMOUS) {
        addr = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    } else if (how == PRIVATE) {
        addr = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    } else if (how == HOLE) {
        addr = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        assert_true(addr != MAP_FAILED);
        munmap(addr + f->len / 2, f->len / 2);
    }
    assert_true(addr != MAP_FAILED);
    ok = sl_restore_attach_file(r, "b0", addr, f->len, f->bc->kind, fd, offset, err);
    if (addr != f->mem.host) {
        munmap(addr, f->len);
    }
    close(other);
    sl_restore_free(r);
    return ok;
}

/* An address that does not map the attached file at the attached offset is refused. */
static void test_attach_file_refuses_a_mapping_of_another_place(void **state)
{
    static const struct {
        pairing how;
        const char *says;
    } cases[] = {
        { RIGHT, NULL },
        { OTHER_OFFSET, "maps the file at another offset" },
        { OTHER_FILE, "maps another file" },
        { ANONYMOUS, "maps another file" },
        { HOLE, "is not mapped" },
        { PRIVATE, "maps the file privately" },
    };
    fixture *f = *state;

    fixture_build(f, 4);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) err = NULL;
        bool ok = attach_as(f, cases[i].how, &err);
        if (ok != !cases[i].says || (err && !strstr(err->message, cases[i].says))) {
            fail_msg("case %zu: %s", i, err ? err->message : "accepted");
        }
    }
}

/* Every public entry point refuses NULL with an error, never a crash. */
static void test_null_arguments_are_refused_with_an_error(void **state)
{
    g_autoptr(GError) e1 = NULL, e2 = NULL, e3 = NULL, e4 = NULL, e5 = NULL;
    uint8_t buf[PSIZE];

    assert_null(sl_snapshot_open(NULL, &e1));
    assert_true(strstr(e1->message, "path is NULL") != NULL);
    g_clear_error(&e1); /* and an empty path is named as such, not ": No such file" */
    assert_null(sl_snapshot_open("", &e1));
    assert_true(g_error_matches(e1, SL_ERROR, SL_ERROR_INVALID) &&
                strstr(e1->message, "empty") != NULL);
    assert_null(sl_restore_new(NULL, NULL, &e2));
    assert_true(strstr(e2->message, "snap is NULL") != NULL);
    assert_false(sl_restore_attach(NULL, "b0", buf, PSIZE, SL_BACKEND_ANON, &e3));
    assert_true(strstr(e3->message, "r is NULL") != NULL);
    assert_false(sl_restore_start(NULL, &e4));
    assert_false(sl_restore_write_blocks(NULL, NULL, &e5));
    assert_int_equal(sl_snapshot_read_pages(NULL, 0, 0, 1, buf, false), -EINVAL);
    assert_int_equal(sl_restore_wait(NULL, 0), -EINVAL);
    assert_int_equal(sl_restore_poll(NULL), -EINVAL);
    assert_int_equal(sl_eager_load(NULL, 0, buf, 1, false), -EINVAL);
    g_autoptr(GBytes) rec = sl_restore_recorded(NULL);
    assert_int_equal(g_bytes_get_size(rec), 0);
    g_autoptr(GError) e6 = sl_restore_error(NULL);
    assert_true(e6 && strstr(e6->message, "r is NULL"));
    assert_int_equal(sl_snapshot_n_blocks(NULL), 0);
    assert_int_equal(sl_snapshot_find_block(NULL, "b0"), -1);
    assert_false(sl_snapshot_page_present(NULL, 0, 0));
    sl_restore_stop(NULL);
    sl_restore_free(NULL);
    sl_snapshot_close(NULL);
}

/* A restore config from a newer caller with a byte set past this library's
 * struct is refused (found by review: silently dropped), as copy_struct_
 * from_user() does in the kernel; zeros there are fine: a newer caller
 * that sets none of its new fields. */
static void unknown_config_bytes_are_refused(sl_snapshot *s)
{
    struct {
        sl_restore_config c;
        uint64_t newer;
    } big = { .c = { .size = sizeof(big) } };
    g_autoptr(GError) err = NULL;
    sl_restore *r = sl_restore_new(s, &big.c, &err);

    assert_non_null(r);
    sl_restore_free(r);
    big.newer = 1;
    assert_null(sl_restore_new(s, &big.c, &err));
    assert_true(g_error_matches(err, SL_ERROR, SL_ERROR_INVALID) &&
                strstr(err->message, "a newer option") != NULL);
    g_clear_error(&err);
    big.c.size = 1u << 20; /* garbage: refused without a read past the struct */
    assert_null(sl_restore_new(s, &big.c, &err));
    assert_true(strstr(err->message, "no struct's size") != NULL);
}

/* A flag this library does not know is refused, not ignored; so is a
 * config field. */
static void test_unknown_open_flags_are_refused(void **state)
{
    const uint64_t len = 64 * PSIZE;
    g_autoptr(GError) err = NULL;
    char *dir = sl_test_tmpdir();
    g_autofree char *path = g_build_filename(dir, "snap", NULL);
    sl_snapshot *s;

    sl_test_make_snapshot(path, &len, 1, PSIZE, 0, 0);
    s = sl_snapshot_open_flags(path, 1u << 7, &err);
    assert_null(s);
    assert_true(strstr(err->message, "unknown open flags 0x80") != NULL);
    s = sl_snapshot_open_flags(path, SL_OPEN_LAZY_CHECKSUMS, NULL);
    assert_non_null(s);
    unknown_config_bytes_are_refused(s);
    sl_snapshot_close(s);
    sl_test_rmdir(dir);
}

/*
 * An eager load without verification of a snapshot rewritten since it was
 * opened (truncated and extended: its pages now read as zeros) says so
 * (-ESTALE), where nothing else could tell its zeros from the snapshot's.
 */
static void test_an_eager_load_of_a_rewritten_snapshot_says_so(void **state)
{
    const uint64_t len = 64 * PSIZE;
    char *dir = sl_test_tmpdir();
    g_autofree char *path = g_build_filename(dir, "snap", NULL);
    g_autofree uint8_t *mem = g_malloc0(len);
    struct stat st;
    sl_snapshot *s;

    sl_test_make_snapshot(path, &len, 1, PSIZE, 0, 0);
    s = sl_snapshot_open(path, NULL);
    assert_non_null(s);
    assert_int_equal(sl_eager_load(s, 0, mem, 2, false), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, 0), 0);
    /* a page longer: its size tells even where the clock has not moved */
    assert_int_equal(truncate(path, st.st_size + PSIZE), 0);
    memset(mem, 0, len);
    assert_int_equal(sl_eager_load(s, 0, mem, 2, false), -ESTALE);
    sl_snapshot_close(s);
    sl_test_rmdir(dir);
}

/*
 * Forks need two or more units, and a part unmapped beside a part never
 * placed four: at most 2 MiB pages (1 GiB ones are few: CI reserves two,
 * scripts/test.sh).
 */
static bool small_units(const sl_test_case *tc)
{
    return !tc->hugepage || tc->hugepage <= (2u << 20);
}

static bool anon_only(const sl_test_case *tc)
{
    return tc->kind == SL_BACKEND_ANON; /* MREMAP_DONTUNMAP: private anonymous memory */
}

static bool shared_small(const sl_test_case *tc)
{
    return tc->kind != SL_BACKEND_ANON && small_units(tc);
}

int main(void)
{
    static const sl_test_feature features[] = {
        { "closing_the_snapshot_mid_restore_leaves_the_restore_whole",
          test_closing_the_snapshot_mid_restore_leaves_the_restore_whole, NULL },
        { "a_child_forked_mid_restore_never_reads_a_hole",
          test_a_child_forked_mid_restore_never_reads_a_hole, small_units },
        { "memory_the_caller_kept_from_forks_stays_kept",
          test_memory_the_caller_kept_from_forks_stays_kept, small_units },
        { "stats_of_a_restore_not_started_yet_count_nothing",
          test_stats_of_a_restore_not_started_yet_count_nothing, small_units },
        { "attach_file_refuses_a_mapping_of_another_place",
          test_attach_file_refuses_a_mapping_of_another_place, shared_small },
        { "memory_unmapped_mid_restore_fails_it_and_its_successor_stays_untouched",
          test_memory_unmapped_mid_restore_fails_it_and_its_successor_stays_untouched, NULL },
        { "what_is_left_of_memory_unmapped_mid_restore_is_sealed",
          test_what_is_left_of_memory_unmapped_mid_restore_is_sealed, small_units },
        { "memory_moved_mid_restore_fails_it_and_is_sealed_where_it_went",
          test_memory_moved_mid_restore_fails_it_and_is_sealed_where_it_went, small_units },
        { "a_thread_waiting_on_memory_unmapped_mid_restore_is_let_go",
          test_a_thread_waiting_on_memory_unmapped_mid_restore_is_let_go, NULL },
        { "a_munmap_racing_the_stop_returns", test_a_munmap_racing_the_stop_returns, NULL },
        { "memory_moved_with_dontunmap_leaves_its_old_range_sealed",
          test_memory_moved_with_dontunmap_leaves_its_old_range_sealed, anon_only },
        { "without_poison_memory_partly_unmapped_mid_restore_is_never_read_as_zeros",
          test_without_poison_memory_partly_unmapped_mid_restore_is_never_read_as_zeros,
          small_units },
    };
    static const struct CMUnitTest plain[] = {
        cmocka_unit_test(test_null_arguments_are_refused_with_an_error),
        cmocka_unit_test(test_unknown_open_flags_are_refused),
        cmocka_unit_test(test_an_eager_load_of_a_rewritten_snapshot_says_so),
    };

    return sl_test_run_matrix_and("contract", backend_cases, G_N_ELEMENTS(backend_cases),
                                  sizeof(backend_cases[0]), features, G_N_ELEMENTS(features),
                                  fixture_setup, fixture_teardown, plain, G_N_ELEMENTS(plain));
}
