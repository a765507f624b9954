/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Guest RAM on a tmpfs that runs out of room.  A restore whose stored pages
 * cannot fit in the tmpfs is refused at start, naming the block and the
 * sizes, while one whose guest is larger than the tmpfs but whose stored
 * pages fit goes ahead (zero pages stay holes).  A tmpfs that fills up
 * during the restore fails it (ENOSPC, or ENOMEM from UFFDIO_COPY), said as
 * such: no consumer's view
 * is dropped for it (the memory ran out, not the consumer), and a page not
 * placed is sealed, never read as zeros.  Each case is run with our own
 * mapping as the view and with a view handed over as another process's (a
 * VMM served by the daemon), and mounts a small tmpfs of its own, which
 * needs CAP_SYS_ADMIN (capability "mount").
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include "testutil.h"
#include "backends/backend.h"
#include "migration/uffd.h"

#define PSIZE 4096u
#define GUEST (8u << 20)

typedef struct {
    const char *name;
    sl_backend_kind kind;
    uint64_t hugepage;
    const char *cap;
    bool other_process; /* the view is handed over, as a daemon's VMM's */
} space_case;

static const space_case cases[] = {
    { "shmem-own-view", SL_BACKEND_SHMEM, 0, "mount", false },
    { "shmem-other-process-view", SL_BACKEND_SHMEM, 0, "mount", true },
};

typedef struct {
    const space_case *c;
    char *dir, *snap_path, *mnt;
    int fd, filler;      /* the memory file and a second file on the small tmpfs */
    uint8_t *map;        /* the view's mapping of the memory file */
    int view_uffd;       /* other_process: the view's uffd (-1 otherwise) */
    sl_snapshot *snap;
    sl_restore *r;
    _Atomic unsigned drops;
    _Atomic bool filled;
} fixture;

static int setup(void **state)
{
    fixture *f = g_new0(fixture, 1);

    f->c = *state;
    f->fd = f->filler = f->view_uffd = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    sl_restore_free(f->r);
    sl_snapshot_close(f->snap);
    if (f->map) {
        munmap(f->map, GUEST);
    }
    for (int *fd = &f->fd; fd <= &f->view_uffd; fd++) {
        if (*fd >= 0) {
            close(*fd);
        }
    }
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
 * The memory file (GUEST bytes, mapped shared) and an empty filler file on
 * a tmpfs of @size bytes of our own, detached at once: the open files keep
 * it alive, and nothing is left mounted whatever the test does.
 */
static void small_tmpfs(fixture *f, uint64_t size)
{
    g_autofree char *opts = g_strdup_printf("size=%" G_GUINT64_FORMAT, size);
    g_autofree char *mem = NULL, *fill = NULL;
    g_autofree char *why = NULL;
    bool have;

    f->mnt = g_build_filename(f->dir, "tmpfs", NULL);
    g_assert(mkdir(f->mnt, 0700) == 0);
    have = mount("snapload-test", f->mnt, "tmpfs", 0, opts) == 0;
    why = have ? NULL : g_strdup_printf("mounting a small tmpfs: %s", g_strerror(errno));
    SL_TEST_NEED("mount", have, why);
    mem = g_build_filename(f->mnt, "ram", NULL);
    fill = g_build_filename(f->mnt, "filler", NULL);
    f->fd = open(mem, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    f->filler = open(fill, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    assert_int_equal(umount2(f->mnt, MNT_DETACH), 0);
    assert_true(f->fd >= 0 && f->filler >= 0 && ftruncate(f->fd, GUEST) == 0);
    f->map = mmap(NULL, GUEST, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    assert_true(f->map != MAP_FAILED);
}

/* config.view_dropped: counts the views the engine gave up on. */
static void count_drop(void *opaque, uint64_t tag, int err)
{
    atomic_fetch_add(&((fixture *)opaque)->drops, 1);
}

/* A snapshot of one GUEST-byte block "b0", every @zero_every-th page zero. */
static void make_snapshot(fixture *f, unsigned zero_every)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *why = NULL;
    uint64_t len = GUEST;
    bool have = sl_test_have_uffd(&why);

    SL_TEST_NEED("uffd", have, why);
    f->dir = sl_test_tmpdir();
    f->snap_path = g_build_filename(f->dir, "snap", NULL);
    sl_test_make_snapshot(f->snap_path, &len, 1, PSIZE, zero_every, 0);
    f->snap = sl_snapshot_open(f->snap_path, &err);
    assert_non_null(f->snap);
}

/*
 * A restore of the snapshot into the memory file, attached as the case
 * says, with @hook (NULL: none) as its loader hook.
 */
static bool attach_and_start(fixture *f, unsigned loaders,
                             void (*hook)(void *, unsigned, uint64_t, uint64_t), GError **errp)
{
    g_autoptr(GError) err = NULL;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = loaders,
                              .view_dropped = count_drop, .view_dropped_opaque = f };

    f->r = sl_restore_new(f->snap, &cfg, &err);
    assert_non_null(f->r);
    if (hook) {
        sl_test_set_loader_hook(f->r, hook, f);
    }
    assert_true(sl_restore_attach_file(f->r, "b0", f->c->other_process ? NULL : f->map, GUEST,
                                       SL_BACKEND_SHMEM, f->fd, 0, &err));
    if (f->c->other_process) {
        const sl_backend_ops *ops = sl_backend_get(SL_BACKEND_SHMEM);
        f->view_uffd = sl_uffd_open(ops->uffd_features, 0, NULL, &err);
        assert_true(f->view_uffd >= 0);
        assert_true(sl_uffd_register(f->view_uffd, f->map, GUEST, ops->register_mode,
                                     ops->range_ioctls, NULL, &err));
        assert_true(sl_restore_add_view_tagged(f->r, "b0", f->view_uffd, (uintptr_t)f->map, 1,
                                               &err));
    }
    return sl_restore_start(f->r, errp);
}

/* True if page @i of the memory file (read without mapping) is the snapshot's. */
static bool file_page_ok(const fixture *f, uint64_t i, unsigned zero_every)
{
    uint8_t want[PSIZE], got[PSIZE];

    sl_test_fill_page(want, PSIZE, i, 1, zero_every);
    return pread(f->fd, got, PSIZE, (off_t)(i * PSIZE)) == PSIZE && !memcmp(want, got, PSIZE);
}

static void test_stored_pages_beyond_the_tmpfs_are_refused_at_start(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;

    make_snapshot(f, 2); /* 4 MiB stored of 8 */
    small_tmpfs(f, 3u << 20);
    assert_false(attach_and_start(f, 2, NULL, &err));
    assert_non_null(err);
    if (!strstr(err->message, "block 'b0'") || !strstr(err->message, "tmpfs") ||
        !strstr(err->message, "4194304 bytes")) {
        fail_msg("unexpected error: %s", err->message);
    }
    assert_int_equal(atomic_load(&f->drops), 0);
}

static void test_a_guest_larger_than_its_tmpfs_restores_when_its_stored_pages_fit(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    sl_stats st = { .size = sizeof(st) };

    make_snapshot(f, 2);
    small_tmpfs(f, 6u << 20);
    if (!attach_and_start(f, 2, NULL, &err)) {
        fail_msg("sl_restore_start: %s", err->message);
    }
    assert_int_equal(sl_restore_wait(f->r, -1), 0);
    sl_restore_stop(f->r);
    sl_restore_get_stats(f->r, &st);
    assert_int_equal(st.pages_present, GUEST / PSIZE);
    assert_int_equal(st.pages_placed_twice, 0);
    for (uint64_t i = 0; i < GUEST / PSIZE; i++) {
        assert_true(file_page_ok(f, i, 2));
    }
    assert_int_equal(atomic_load(&f->drops), 0);
}

/* Loader hook: before the first placement, another file takes the tmpfs's last byte. */
static void fill_the_tmpfs(void *opaque, unsigned region, uint64_t u, uint64_t n)
{
    fixture *f = opaque;
    off_t off = 0;

    if (atomic_exchange(&f->filled, true)) {
        return;
    }
    while (fallocate(f->filler, 0, off, 64 << 10) == 0) {
        off += 64 << 10;
    }
    while (fallocate(f->filler, 0, off, PSIZE) == 0) {
        off += PSIZE;
    }
}

static __thread sigjmp_buf *fault_jump;

static void on_fault(int sig)
{
    siglongjmp(*fault_jump, 1);
}

/*
 * Reads page @i of the view: 1 the snapshot's bytes, 0 other bytes, -1
 * refused (SIGBUS: poisoned; SIGSEGV: sealed where the kernel cannot poison).
 */
static int read_view_page(const fixture *f, uint64_t i)
{
    struct sigaction sa = { .sa_handler = on_fault }, old_bus, old_segv;
    uint8_t want[PSIZE], got[PSIZE];
    sigjmp_buf jb;
    int ret = -1;

    sl_test_fill_page(want, PSIZE, i, 1, 0);
    sigaction(SIGBUS, &sa, &old_bus);
    sigaction(SIGSEGV, &sa, &old_segv);
    fault_jump = &jb;
    if (sigsetjmp(jb, 1) == 0) {
        memcpy(got, f->map + i * PSIZE, PSIZE);
        ret = memcmp(want, got, PSIZE) == 0;
    }
    sigaction(SIGBUS, &old_bus, NULL);
    sigaction(SIGSEGV, &old_segv, NULL);
    return ret;
}

static void test_a_tmpfs_filled_during_the_restore_fails_it_and_drops_no_view(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    sl_stats st = { .size = sizeof(st) };
    GError *why;
    uint64_t sealed = 0;
    int ret;

    make_snapshot(f, 0); /* every page stored */
    small_tmpfs(f, 2 * GUEST);
    if (!attach_and_start(f, 1, fill_the_tmpfs, &err)) {
        fail_msg("sl_restore_start: %s", err->message);
    }
    ret = sl_restore_wait(f->r, 20000);
    if (ret != -ENOSPC && ret != -ENOMEM) { /* COPY into shmem says ENOMEM, pwrite ENOSPC */
        fail_msg("the restore ended with %d (%s), not for want of room", ret, g_strerror(-ret));
    }
    why = sl_restore_error(f->r);
    assert_non_null(why);
    if (!strstr(why->message, "tmpfs holding it is full") || !strstr(why->message, "never")) {
        fail_msg("unexpected error: %s", why->message);
    }
    g_error_free(why);
    assert_int_equal(atomic_load(&f->drops), 0); /* no consumer was to blame */
    sl_restore_stop(f->r);
    sl_restore_get_stats(f->r, &st);
    assert_true(st.pages_present < GUEST / PSIZE);
    assert_int_equal(st.pages_placed_twice, 0);
    for (uint64_t i = 0; i < GUEST / PSIZE; i++) {
        int got = read_view_page(f, i);
        assert_int_not_equal(got, 0); /* the snapshot's bytes or sealed: never zeros */
        sealed += got < 0;
    }
    assert_int_equal(sealed, GUEST / PSIZE - st.pages_present);
}

int main(void)
{
    static const sl_test_feature features[] = {
        { "stored_pages_beyond_the_tmpfs_are_refused_at_start",
          test_stored_pages_beyond_the_tmpfs_are_refused_at_start },
        { "a_guest_larger_than_its_tmpfs_restores_when_its_stored_pages_fit",
          test_a_guest_larger_than_its_tmpfs_restores_when_its_stored_pages_fit },
        { "a_tmpfs_filled_during_the_restore_fails_it_and_drops_no_view",
          test_a_tmpfs_filled_during_the_restore_fails_it_and_drops_no_view },
    };
    return sl_test_run_matrix("space", cases, G_N_ELEMENTS(cases), sizeof(cases[0]), features,
                              G_N_ELEMENTS(features), setup, teardown);
}
