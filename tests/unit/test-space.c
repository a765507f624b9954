/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Guest RAM on a tmpfs that runs out of room.  A restore whose stored pages
 * cannot fit in the tmpfs is refused at start, naming the block and the
 * sizes (blocks on one tmpfs counted together), while one whose guest is
 * larger than the tmpfs but whose stored pages fit goes ahead (zero pages
 * stay holes).  A tmpfs that fills up during the restore fails it (ENOSPC,
 * or ENOMEM from UFFDIO_COPY), said as such, whether a loader or a fault
 * (on a zero page: fallocate) finds no room: no consumer's view is dropped
 * for it (the memory ran out, not the consumer), and a page not placed is
 * sealed, never read as zeros; in a unit of several pages (snapshot pages
 * larger than 4 KiB) whose placement stopped part-way, each page it did
 * not reach is poisoned (SIGBUS; capability "uffd-poison", UFFDIO_POISON) and
 * the others keep their bytes.  Each case is run with our own mapping as
 * the view and with views handed over as another process's (a VMM served
 * by the daemon), and mounts a small tmpfs of its own, which needs
 * CAP_SYS_ADMIN (capability "mount").
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "testutil.h"
#include "backends/backend.h"
#include "migration/uffd.h"

#define PSIZE 4096u
#define GUEST (8u << 20) /* bytes per block */
#define MAX_BLOCKS 2
/* Snapshot pages of 64 KiB on the tmpfs's 4 KiB pages: units of 16 pages,
 * which a placement that runs out of room leaves partly mapped. */
#define BIG_PAGE (64u << 10)
#define UNIT_PAGES (BIG_PAGE / PSIZE)
#define ROOM_PAGES 5u /* what the tmpfs still takes: less than a unit */

typedef struct {
    const char *name;
    sl_backend_kind kind;
    uint64_t hugepage;
    const char *cap;
    bool other_process; /* the views are handed over, as a daemon's VMM's */
} space_case;

static const space_case cases[] = {
    { "shmem-own-view", SL_BACKEND_SHMEM, 0, "mount", false },
    { "shmem-other-process-view", SL_BACKEND_SHMEM, 0, "mount", true },
};

typedef struct {
    const space_case *c;
    unsigned nblocks;
    char *dir, *snap_path, *mnt;
    int fd[MAX_BLOCKS];        /* the memory files, on the small tmpfs */
    int filler;                /* a third file there, to fill it */
    uint8_t *map[MAX_BLOCKS];  /* the views' mappings of the memory files */
    int view_uffd[MAX_BLOCKS]; /* other_process: the views' uffds (-1 otherwise) */
    uint64_t snap_psize;       /* the snapshot's page size; 0: PSIZE */
    sl_snapshot *snap;
    sl_restore *r;
    _Atomic unsigned drops;
    _Atomic bool filled;
} fixture;

static int setup(void **state)
{
    fixture *f = g_new0(fixture, 1);

    f->c = *state;
    f->filler = -1;
    for (unsigned b = 0; b < MAX_BLOCKS; b++) {
        f->fd[b] = f->view_uffd[b] = -1;
    }
    *state = f;
    return 0;
}

static void close_fd(int fd)
{
    if (fd >= 0) {
        close(fd);
    }
}

static int teardown(void **state)
{
    fixture *f = *state;

    sl_restore_free(f->r);
    sl_snapshot_close(f->snap);
    for (unsigned b = 0; b < MAX_BLOCKS; b++) {
        if (f->map[b]) {
            munmap(f->map[b], GUEST);
        }
        close_fd(f->fd[b]);
        close_fd(f->view_uffd[b]);
    }
    close_fd(f->filler);
    if (f->mnt) {
        rmdir(f->mnt);
        g_free(f->mnt);
    }
    if (f->dir) {
        sl_test_rmdir(f->dir);
    }
    g_free(f->snap_path);
    g_free(f);
    return 0;
}

/*
 * Skips (or fails, where required) without userfaultfd or without a tmpfs
 * of our own, before the test allocates anything (a skip leaves the test
 * by longjmp: what it holds then leaks).  Mounts the tmpfs (@size bytes)
 * at f->mnt when it can.
 */
static void need_uffd_and_tmpfs(fixture *f, uint64_t size)
{
    char why[200] = "", opts[64];
    char *uffd_why = NULL;
    bool have = sl_test_have_uffd(&uffd_why);

    if (!have) {
        snprintf(why, sizeof(why), "%s", uffd_why ? uffd_why : "no userfaultfd");
    }
    g_free(uffd_why);
    SL_TEST_NEED("uffd", have, why);
    f->dir = sl_test_tmpdir();
    f->mnt = g_build_filename(f->dir, "tmpfs", NULL);
    assert_int_equal(mkdir(f->mnt, 0700), 0);
    snprintf(opts, sizeof(opts), "size=%" G_GUINT64_FORMAT, size);
    have = !sl_test_withheld("mount") && mount("snapload-test", f->mnt, "tmpfs", 0, opts) == 0;
    snprintf(why, sizeof(why), "mounting a small tmpfs: %s",
             sl_test_withheld("mount") ? "withheld (SNAPLOAD_WITHOUT)" : g_strerror(errno));
    SL_TEST_NEED("mount", have, why);
}

/*
 * The memory files (GUEST bytes each, mapped shared) and an empty filler
 * file on the tmpfs, which is then detached: the open files keep it alive,
 * and nothing is left mounted whatever the test does.
 */
static void open_files(fixture *f)
{
    g_autofree char *fill = g_build_filename(f->mnt, "filler", NULL);

    for (unsigned b = 0; b < f->nblocks; b++) {
        g_autofree char *name = g_strdup_printf("ram%u", b);
        g_autofree char *path = g_build_filename(f->mnt, name, NULL);
        f->fd[b] = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        assert_true(f->fd[b] >= 0 && ftruncate(f->fd[b], GUEST) == 0);
        f->map[b] = mmap(NULL, GUEST, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd[b], 0);
        assert_true(f->map[b] != MAP_FAILED);
    }
    f->filler = open(fill, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    assert_true(f->filler >= 0);
    assert_int_equal(umount2(f->mnt, MNT_DETACH), 0);
}

/*
 * @nblocks blocks of GUEST bytes ("b0", ...), every @zero_every-th page
 * zero, on a tmpfs of @tmpfs bytes of our own.
 */
static void prepare(fixture *f, unsigned nblocks, unsigned zero_every, uint64_t tmpfs)
{
    g_autoptr(GError) err = NULL;
    uint64_t len[MAX_BLOCKS] = { GUEST, GUEST };

    need_uffd_and_tmpfs(f, tmpfs);
    f->nblocks = nblocks;
    open_files(f);
    f->snap_path = g_build_filename(f->dir, "snap", NULL);
    sl_test_make_snapshot(f->snap_path, len, nblocks, f->snap_psize ? f->snap_psize : PSIZE,
                          zero_every, 0);
    f->snap = sl_snapshot_open(f->snap_path, &err);
    assert_non_null(f->snap);
}

/* config.view_dropped: counts the views the engine gave up on. */
static void count_drop(void *opaque, uint64_t tag, int err)
{
    atomic_fetch_add(&((fixture *)opaque)->drops, 1);
}

/* Block @b attached as the case says: our mapping, or a view handed over. */
static void attach_block(fixture *f, unsigned b)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *name = g_strdup_printf("b%u", b);
    const sl_backend_ops *ops = sl_backend_get(SL_BACKEND_SHMEM);

    assert_true(sl_restore_attach_file(f->r, name, f->c->other_process ? NULL : f->map[b],
                                       GUEST, SL_BACKEND_SHMEM, f->fd[b], 0, &err));
    if (!f->c->other_process) {
        return;
    }
    f->view_uffd[b] = sl_uffd_open(ops->uffd_features, 0, NULL, &err);
    assert_true(f->view_uffd[b] >= 0);
    assert_true(sl_uffd_register(f->view_uffd[b], f->map[b], GUEST, ops->register_mode,
                                 ops->range_ioctls, NULL, &err));
    assert_true(sl_restore_add_view_tagged(f->r, name, f->view_uffd[b], (uintptr_t)f->map[b],
                                           b + 1, &err));
}

/*
 * A restore of the snapshot into the memory files with @loaders (0: faults
 * only) and @hook (NULL: none) as its loader hook.
 */
static bool attach_and_start(fixture *f, unsigned loaders,
                             void (*hook)(void *, unsigned, uint64_t, uint64_t), GError **errp)
{
    g_autoptr(GError) err = NULL;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = loaders,
                              .no_loaders = loaders == 0, .view_dropped = count_drop,
                              .view_dropped_opaque = f };

    f->r = sl_restore_new(f->snap, &cfg, &err);
    assert_non_null(f->r);
    if (hook) {
        sl_test_set_loader_hook(f->r, hook, f);
    }
    for (unsigned b = 0; b < f->nblocks; b++) {
        attach_block(f, b);
    }
    return sl_restore_start(f->r, errp);
}

/* The snapshot's bytes of 4 KiB page @i of block @b, whatever its page size. */
static void want_page(const fixture *f, unsigned b, uint64_t i, unsigned zero_every,
                      uint8_t *want)
{
    const uint64_t ps = f->snap_psize ? f->snap_psize : PSIZE;
    g_autofree uint8_t *page = g_malloc(ps);

    sl_test_fill_page(page, ps, i * PSIZE / ps, b + 1, zero_every);
    memcpy(want, page + i * PSIZE % ps, PSIZE);
}

/* True if page @i of block @b's file (read without mapping) is the snapshot's. */
static bool file_page_ok(const fixture *f, unsigned b, uint64_t i, unsigned zero_every)
{
    uint8_t want[PSIZE], got[PSIZE];

    want_page(f, b, i, zero_every, want);
    return pread(f->fd[b], got, PSIZE, (off_t)(i * PSIZE)) == PSIZE &&
           !memcmp(want, got, PSIZE);
}

/* Fails unless @err refuses the restore for want of @need bytes of tmpfs. */
static void expect_refused(const GError *err, const char *block, uint64_t need)
{
    g_autofree char *names = g_strdup_printf("block '%s'", block);
    g_autofree char *bytes = g_strdup_printf("%" G_GUINT64_FORMAT " bytes", need);

    assert_non_null(err);
    if (!strstr(err->message, names) || !strstr(err->message, "tmpfs") ||
        !strstr(err->message, bytes)) {
        fail_msg("unexpected error: %s", err->message);
    }
}

static void test_stored_pages_beyond_the_tmpfs_are_refused_at_start(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;

    prepare(f, 1, 2, 3u << 20); /* 4 MiB stored of 8 */
    assert_false(attach_and_start(f, 2, NULL, &err));
    expect_refused(err, "b0", GUEST / 2);
    assert_int_equal(atomic_load(&f->drops), 0);
}

/* Two blocks that each fit the tmpfs alone, but not together. */
static void test_blocks_on_one_tmpfs_are_counted_together(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;

    prepare(f, 2, 2, 6u << 20); /* 4 + 4 MiB stored */
    assert_false(attach_and_start(f, 2, NULL, &err));
    expect_refused(err, "b0", GUEST);
}

static void test_a_guest_larger_than_its_tmpfs_restores_when_its_stored_pages_fit(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    sl_stats st = { .size = sizeof(st) };

    prepare(f, 1, 2, 6u << 20);
    if (!attach_and_start(f, 2, NULL, &err)) {
        fail_msg("sl_restore_start: %s", err->message);
    }
    assert_int_equal(sl_restore_wait(f->r, -1), 0);
    sl_restore_stop(f->r);
    sl_restore_get_stats(f->r, &st);
    assert_int_equal(st.pages_present, GUEST / PSIZE);
    assert_int_equal(st.pages_placed_twice, 0);
    for (uint64_t i = 0; i < GUEST / PSIZE; i++) {
        assert_true(file_page_ok(f, 0, i, 2));
    }
    assert_int_equal(atomic_load(&f->drops), 0);
}

/* Another file takes the tmpfs's last byte. */
static void fill_tmpfs(fixture *f)
{
    off_t off = 0;

    while (fallocate(f->filler, 0, off, 64 << 10) == 0) {
        off += 64 << 10;
    }
    while (fallocate(f->filler, 0, off, PSIZE) == 0) {
        off += PSIZE;
    }
}

/*
 * The tmpfs has room again.  A read fault on a hole of a full tmpfs gets
 * SIGBUS from the kernel (no room for the page), which would pass for
 * poison: with room, a page left unsealed reads as zeros, as it would in
 * a guest's memory that did not run out.
 */
static void make_room(fixture *f)
{
    assert_int_equal(ftruncate(f->filler, 0), 0);
}

/* Loader hook: before the first placement, the tmpfs fills up. */
static void fill_before_first_placement(void *opaque, unsigned region, uint64_t u, uint64_t n)
{
    fixture *f = opaque;

    if (!atomic_exchange(&f->filled, true)) {
        fill_tmpfs(f);
    }
}

static __thread sigjmp_buf *fault_jump;

static void on_fault(int sig)
{
    if (!fault_jump) {
        abort(); /* a signal meant for a reader reached another thread */
    }
    siglongjmp(*fault_jump, sig);
}

/* A timer that sends SIGALRM to this thread alone after 2 s; 0 on success. */
static int arm_timer(timer_t *t)
{
    struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGALRM };
    struct itimerspec its = { .it_value = { .tv_sec = 2 } };

    sev._sigev_un._tid = gettid(); /* sigev_notify_thread_id: glibc 2.36 lacks the name */
    if (timer_create(CLOCK_MONOTONIC, &sev, t) < 0) {
        return -1;
    }
    return timer_settime(*t, 0, &its, NULL);
}

#define READ_POISONED (-1)
#define READ_BLOCKED (-2)
#define READ_PROTECTED (-3)

/*
 * Reads page @i of block 0's view: 1 the snapshot's bytes (@zero_every as
 * made), 0 other bytes, below 0 refused: READ_POISONED (SIGBUS) or
 * READ_PROTECTED (SIGSEGV: sealed with PROT_NONE where the kernel cannot
 * poison), READ_BLOCKED if the read still waited after 2 s (a view of
 * another process that the kernel cannot poison stays registered:
 * blocked, never zeros).
 */
static int read_view_page(const fixture *f, uint64_t i, unsigned zero_every)
{
    struct sigaction sa = { .sa_handler = on_fault }, old_bus, old_segv, old_alrm;
    uint8_t want[PSIZE], got[PSIZE];
    sigjmp_buf jb;
    timer_t timer;
    int ret, sig;

    want_page(f, 0, i, zero_every, want);
    sigaction(SIGBUS, &sa, &old_bus);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGALRM, &sa, &old_alrm);
    fault_jump = &jb;
    assert_int_equal(arm_timer(&timer), 0);
    sig = sigsetjmp(jb, 1);
    if (sig == 0) {
        memcpy(got, f->map[0] + i * PSIZE, PSIZE);
        ret = memcmp(want, got, PSIZE) == 0;
    } else {
        ret = sig == SIGALRM ? READ_BLOCKED : sig == SIGBUS ? READ_POISONED : READ_PROTECTED;
    }
    timer_delete(timer); /* before the handlers go: a late SIGALRM finds it gone */
    fault_jump = NULL;
    sigaction(SIGBUS, &old_bus, NULL);
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGALRM, &old_alrm, NULL);
    return ret;
}

/* The restore failed for want of room, said so, and dropped no view. */
static void expect_no_room(fixture *f)
{
    int ret = sl_restore_wait(f->r, 20000);
    GError *why;

    if (ret != -ENOSPC && ret != -ENOMEM) { /* COPY into shmem says ENOMEM, pwrite ENOSPC */
        fail_msg("the restore ended with %d (%s), not for want of room", ret, g_strerror(-ret));
    }
    why = sl_restore_error(f->r);
    assert_non_null(why);
    if (!strstr(why->message, "the tmpfs holding it may be full") ||
        !strstr(why->message, "never served as zeros")) {
        fail_msg("unexpected error: %s", why->message);
    }
    g_error_free(why);
    assert_int_equal(atomic_load(&f->drops), 0); /* no consumer was to blame */
}

static void test_a_tmpfs_filled_during_the_restore_fails_it_and_drops_no_view(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    sl_stats st = { .size = sizeof(st) };
    uint64_t refused = 0;
    int got = 0;

    prepare(f, 1, 0, 2 * GUEST); /* every page stored */
    if (!attach_and_start(f, 1, fill_before_first_placement, &err)) {
        fail_msg("sl_restore_start: %s", err->message);
    }
    expect_no_room(f);
    sl_restore_stop(f->r);
    sl_restore_get_stats(f->r, &st);
    assert_true(st.pages_present < GUEST / PSIZE);
    assert_int_equal(st.pages_placed_twice, 0);
    /* Only now, the threads joined: nothing can place a page with the
     * room, and a hole the stop left unsealed reads as zeros, not as the
     * full tmpfs's SIGBUS. */
    make_room(f);
    for (uint64_t i = 0; i < GUEST / PSIZE && got != READ_BLOCKED; i++) {
        got = read_view_page(f, i, 0);
        assert_int_not_equal(got, 0); /* the snapshot's bytes or refused: never zeros */
        refused += got < 0;
    }
    if (got != READ_BLOCKED) { /* every page not placed was sealed */
        assert_int_equal(refused, GUEST / PSIZE - st.pages_present);
    }
}

/* A reader of one page, in a thread of its own (a vCPU faulting). */
typedef struct {
    const fixture *f;
    uint64_t page;
    unsigned zero_every;
    int got;
} page_reader;

static gpointer read_in_thread(gpointer opaque)
{
    page_reader *pr = opaque;

    pr->got = read_view_page(pr->f, pr->page, pr->zero_every);
    return NULL;
}

/*
 * Faults only: a fault on a zero page of a full tmpfs (its fallocate finds
 * no room) fails the restore; the faulting thread gets the page sealed at
 * the stop, never zeros mapped without the file's consent.
 */
static void test_a_fault_on_a_zero_page_of_a_full_tmpfs_fails_the_restore(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    page_reader pr = { .f = f, .page = 0, .zero_every = 2 }; /* page 0 is a zero page */
    GThread *th;

    prepare(f, 1, 2, 2 * GUEST);
    if (!attach_and_start(f, 0, NULL, &err)) {
        fail_msg("sl_restore_start: %s", err->message);
    }
    fill_tmpfs(f);
    th = g_thread_new("reader", read_in_thread, &pr);
    expect_no_room(f);
    /* Before the stop, which may be what wakes the reader: a fault let go
     * unsealed then reads the zero page's zeros (1), not the full tmpfs's
     * SIGBUS.  Failed, the restore serves no page with the room. */
    make_room(f);
    sl_restore_stop(f->r);
    g_thread_join(th);
    assert_int_not_equal(pr.got, 0);
    assert_int_not_equal(pr.got, 1); /* the fault was not served, and was sealed */
}

/* Skips (fails, where required) on a kernel without UFFDIO_POISON (before 6.6). */
static void need_poison(void)
{
    g_autofree char *why = NULL;
    bool have = sl_test_have_uffd(&why);

    SL_TEST_NEED("uffd", have, why);
    have = !sl_test_withheld("uffd-poison") && sl_uffd_has_features(UFFD_FEATURE_POISON);
    SL_TEST_NEED("uffd-poison", have,
                 sl_test_withheld("uffd-poison") ? "withheld by SNAPLOAD_WITHOUT"
                                                 : "UFFDIO_POISON needs Linux 6.6: without it a "
                                                   "missing page is sealed with PROT_NONE or "
                                                   "waits");
}

/* The tmpfs fills up but for @pages pages: a placement of more stops part-way. */
static void leave_room(fixture *f, unsigned pages)
{
    fill_tmpfs(f);
    assert_int_equal(fallocate(f->filler, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                               (off_t)pages * PSIZE), 0);
}

/* Loader hook: before the first placement, the tmpfs keeps room for ROOM_PAGES only. */
static void leave_room_before_first_placement(void *opaque, unsigned region, uint64_t u,
                                              uint64_t n)
{
    fixture *f = opaque;

    if (!atomic_exchange(&f->filled, true)) {
        leave_room(f, ROOM_PAGES);
    }
}

static const char *read_said(int got)
{
    switch (got) {
    case 1:
        return "the snapshot's bytes";
    case 0:
        return "other bytes (zeros: left unsealed)";
    case READ_POISONED:
        return "SIGBUS (poisoned)";
    case READ_PROTECTED:
        return "SIGSEGV (the mapping protected: poisoning it failed)";
    default:
        return "nothing in 2 s (still registered: never sealed)";
    }
}

/*
 * Page @i of block 0's view: if the file holds its bytes (placed before
 * the tmpfs ran out: UFFDIO_COPY fills the page cache and maps the page in
 * one go), the view reads them; else it was poisoned there (SIGBUS).
 * Whether it was placed.
 */
static bool expect_placed_or_poisoned(const fixture *f, uint64_t i, const char *when)
{
    bool placed = file_page_ok(f, 0, i, 0);
    int got = read_view_page(f, i, 0);

    if (got != (placed ? 1 : READ_POISONED)) {
        fail_msg("%s: page %" G_GUINT64_FORMAT " (page %" G_GUINT64_FORMAT " of unit %"
                 G_GUINT64_FORMAT "), %s, read %s", when, i, i % UNIT_PAGES, i / UNIT_PAGES,
                 placed ? "placed" : "never placed", read_said(got));
    }
    return placed;
}

/* Unit @u was placed part-way, and reads as expect_placed_or_poisoned() says. */
static void expect_unit_part_way_poisoned(const fixture *f, uint64_t u, const char *when)
{
    unsigned placed = 0;

    for (uint64_t i = u * UNIT_PAGES; i < (u + 1) * UNIT_PAGES; i++) {
        placed += expect_placed_or_poisoned(f, i, when);
    }
    if (placed == 0 || placed == UNIT_PAGES) {
        fail_msg("%s: unit %" G_GUINT64_FORMAT " has %u of its %u pages: not placed part-way",
                 when, u, placed, UNIT_PAGES);
    }
}

/*
 * A fault on a unit of 16 pages (64 KiB snapshot pages in 4 KiB shmem)
 * when the tmpfs has room for 5: its UFFDIO_COPY stops part-way (ENOMEM)
 * and the restore fails with the unit partly mapped.  The fault thread
 * then seals the touched unit, where one UFFDIO_POISON of the whole unit
 * meets the pages mapped (EEXIST): each page not mapped must be poisoned
 * alone, so the faulting thread wakes to SIGBUS at once, never waits for
 * a stop nor reads zeros; the pages mapped keep the snapshot's bytes.  So
 * it stays after the stop, whose seal meets the same unit.
 */
static void test_a_unit_placed_part_way_is_poisoned_where_missing_at_its_touch(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    int got;

    need_poison();
    f->snap_psize = BIG_PAGE;
    prepare(f, 1, 0, 2 * GUEST); /* every page stored */
    if (!attach_and_start(f, 0, NULL, &err)) { /* faults alone: only unit 0 is placed */
        fail_msg("sl_restore_start: %s", err->message);
    }
    leave_room(f, ROOM_PAGES);
    got = read_view_page(f, UNIT_PAGES - 1, 0); /* unit 0's last page: beyond the room */
    expect_no_room(f);
    make_room(f);
    if (got != READ_POISONED) {
        fail_msg("the touch that failed the restore (a page its unit's placement did not "
                 "reach) read %s", read_said(got));
    }
    expect_unit_part_way_poisoned(f, 0, "failed, not stopped");
    sl_restore_stop(f->r);
    expect_unit_part_way_poisoned(f, 0, "stopped");
}

/*
 * The same unit placed part-way by a loader, nothing touched: the stop
 * seals it (its POISON of the missing units meets the pages mapped), and
 * every page of the block is the snapshot's where it was placed and
 * poisoned where it was not.
 */
static void test_a_unit_a_loader_placed_part_way_is_poisoned_where_missing_at_the_stop(
    void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    unsigned part_way = 0;

    need_poison();
    f->snap_psize = BIG_PAGE;
    prepare(f, 1, 0, 2 * GUEST);
    if (!attach_and_start(f, 1, leave_room_before_first_placement, &err)) {
        fail_msg("sl_restore_start: %s", err->message);
    }
    expect_no_room(f);
    make_room(f);
    sl_restore_stop(f->r);
    for (uint64_t u = 0; u < GUEST / BIG_PAGE; u++) {
        unsigned placed = 0;
        for (uint64_t i = u * UNIT_PAGES; i < (u + 1) * UNIT_PAGES; i++) {
            placed += expect_placed_or_poisoned(f, i, "stopped");
        }
        part_way += placed > 0 && placed < UNIT_PAGES;
    }
    assert_int_equal(part_way, 1); /* the placement that ran out of room */
}

int main(void)
{
    static const sl_test_feature features[] = {
        { "stored_pages_beyond_the_tmpfs_are_refused_at_start",
          test_stored_pages_beyond_the_tmpfs_are_refused_at_start, NULL },
        { "blocks_on_one_tmpfs_are_counted_together",
          test_blocks_on_one_tmpfs_are_counted_together, NULL },
        { "a_guest_larger_than_its_tmpfs_restores_when_its_stored_pages_fit",
          test_a_guest_larger_than_its_tmpfs_restores_when_its_stored_pages_fit, NULL },
        { "a_tmpfs_filled_during_the_restore_fails_it_and_drops_no_view",
          test_a_tmpfs_filled_during_the_restore_fails_it_and_drops_no_view, NULL },
        { "a_fault_on_a_zero_page_of_a_full_tmpfs_fails_the_restore",
          test_a_fault_on_a_zero_page_of_a_full_tmpfs_fails_the_restore, NULL },
        { "a_unit_placed_part_way_is_poisoned_where_missing_at_its_touch",
          test_a_unit_placed_part_way_is_poisoned_where_missing_at_its_touch, NULL },
        { "a_unit_a_loader_placed_part_way_is_poisoned_where_missing_at_the_stop",
          test_a_unit_a_loader_placed_part_way_is_poisoned_where_missing_at_the_stop, NULL },
    };
    return sl_test_run_matrix("space", cases, G_N_ELEMENTS(cases), sizeof(cases[0]), features,
                              G_N_ELEMENTS(features), setup, teardown);
}
