/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libsnapload-preload.so: makes an unmodified VMM (stock QEMU) a consumer
 * of the restore daemon.  Loaded with LD_PRELOAD, it wraps mmap/mmap64;
 * when the process maps one of the configured guest-RAM files MAP_SHARED,
 * it registers that mapping on a fresh userfaultfd and hands it, with the
 * file, to the daemon (client.c) before mmap returns, so every later touch
 * of guest RAM — by QEMU's own threads or by KVM for a vCPU — is served.
 *
 * Configuration, read once when the library loads (docs/qemu.md):
 *   SNAPLOAD_SOCKET  the daemon's socket; unset: the library does nothing
 *   SNAPLOAD_BLOCKS  NAME=PATH[;NAME=PATH...]: snapshot block and its file,
 *                    or NAME=anon:BYTES: a block of anonymous RAM (plain
 *                    `-m`, memory-backend-ram), recognised as the first
 *                    MAP_FIXED private anonymous read-write mapping of
 *                    exactly that size (how QEMU maps guest RAM over its
 *                    reservation) and registered in MISSING mode
 *   SNAPLOAD_EXE     optional: act only in the process running this binary
 *   SNAPLOAD_TRACK   optional, "1": track the writes to each file mapping
 *                    (qemu-restore --reuse-ram) where the kernel can (6.7+;
 *                    else plainly registered, no list): in WP mode too,
 *                    and before the mapping goes (munmap, exit) the daemon
 *                    is asked to read what this process wrote, so that the
 *                    next restart over the same file rewrites only that
 *   SNAPLOAD_TIMEOUT_MS optional: how long a registration (connect, HELLO,
 *                    REGISTER) or a retirement may wait for the daemon
 *                    (default 30000); a registration that times out ends
 *                    the process, saying so, rather than hang in mmap
 * An active instance removes itself from LD_PRELOAD and these variables
 * from the environment, so helpers QEMU starts (exec: migration) stay
 * plain.  It never lets the VMM run on memory it could not hand over: a
 * failed registration, or the daemon's death before every page is in
 * place, ends the process with one line on stderr (docs/protocol.md).
 *
 * Nor does it let guest RAM reach a process that would use it unserved:
 * a block's file sent to a peer over a unix socket goes only to one that
 * registers it too (preload-handoff.c).
 *
 * Nor does a child this process forks during the fill get a copy of guest
 * RAM that no uffd serves: each mapping handed over is MADV_DONTFORK until
 * its DONE (preload-guard.c).
 *
 * A mapping handed over that the process unmaps (munmap, or a MAP_FIXED
 * mapping over it; libvhost-user does so for every region at each
 * SET_MEM_TABLE) is retired first: its connection is hung up and the
 * daemon, having removed its views, closes its end; only then does the
 * unmap happen, and only after it is the uffd closed (a fault in the old
 * mapping waits meanwhile, never reads a hole).  So the daemon never
 * places into a range that is gone, which it would take for a failed
 * consumer, and a later mapping of the file is registered afresh.  A
 * mapping's uffd is closed at its DONE, its connection when it is retired
 * (kept until then: qemu-restore's daemon stays while a client is
 * connected, for back-ends that map guest RAM after the fill).
 * mremap retires what it moves or maps over like munmap; moving a mapping
 * before its DONE ends the process (the moved range would not be served).
 *
 * While tracking, a block whose file this process changes where no page
 * table shows it (a write by descriptor or path or a punched hole:
 * preload-writes.c; advice that drops pages: madvise below), or unmaps or
 * moves in part, is reported as changed where the list cannot show it: the
 * next restart then checks the whole file.
 *
 * The state and who may change it: preload.h.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "preload.h"
#include "migration/protocol.h"
#include "migration/uffd.h"

/* How long the daemon may take to answer, unless SNAPLOAD_TIMEOUT_MS says. */
#define DEFAULT_TIMEOUT_MS 30000

pl_state pl = {
    .glock = PTHREAD_MUTEX_INITIALIZER, /* `lock`: init_lock(), by the constructor */
};

__thread bool pl_talking;

/* Written by the constructor (resolve_next_fns()), or at a first call before it. */
pl_next_fns pl_next;

void pl_die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("snapload-preload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
    va_end(ap);
    /* A vCPU blocked in KVM on a fault reacts to nothing gentler. */
    kill(getpid(), SIGKILL);
    _exit(70);
}

static void daemon_died(void)
{
    pl_die("the restore daemon went away before every page of guest RAM was in place; "
        "ending this process rather than let it read missing pages");
}

/* A supervised mapping's DONE: every page of its block is in place; a
 * child may copy it again (@opaque: its guard's token). */
static void block_done(void *opaque)
{
    /* Not `lock`: a munmap holding it may be waiting for this thread. */
    pthread_mutex_lock(&pl.glock);
    pg_guard_done(&pl.guards, GPOINTER_TO_UINT(opaque));
    pthread_mutex_unlock(&pl.glock);
    atomic_fetch_sub_explicit(&pl.pending, 1, memory_order_relaxed); /* relaxed: pl.pending */
}

/* pg_guard_forget() under glock. */
static void forget_guards(const void *addr, size_t len)
{
    pthread_mutex_lock(&pl.glock);
    pg_guard_forget(&pl.guards, addr, len);
    pthread_mutex_unlock(&pl.glock);
}

/* Keeps the new mapping [@p, +@len) of block @b out of forked children
 * until its DONE (lock held); its guard's token. */
static uint32_t guard(const pl_block *b, void *p, size_t len, bool keep)
{
    int err = 0;
    uint32_t token;

    pthread_mutex_lock(&pl.glock);
    token = pg_guard_add(&pl.guards, p, len, keep, &err);
    pthread_mutex_unlock(&pl.glock);

    if (err) {
        pl_die("block '%s': cannot keep its mapping out of forked children (madvise): %s",
            b->name, g_strerror(-err));
    }
    return token;
}

/* Whether this process runs the binary SNAPLOAD_EXE names (if it names one). */
static bool is_target_exe(void)
{
    const char *want = getenv("SNAPLOAD_EXE");
    g_autofree char *self = NULL, *target = NULL;

    if (!want || !*want) {
        return true;
    }
    self = g_file_read_link("/proc/self/exe", NULL);
    target = realpath(want, NULL);
    return self && target && strcmp(self, target) == 0;
}

static bool parse_blocks(const char *spec)
{
    g_auto(GStrv) items = g_strsplit(spec, ";", -1);

    for (char **it = items; *it; it++) {
        char *eq = strchr(*it, '=');
        if (!**it) {
            continue;
        }
        if (!eq || eq == *it || !eq[1] || pl.nblocks == MAX_BLOCKS) {
            return false;
        }
        pl.blocks[pl.nblocks].name = g_strndup(*it, (gsize)(eq - *it));
        if (g_str_has_prefix(eq + 1, "anon:")) {
            char *end = NULL;
            pl.blocks[pl.nblocks].size = g_ascii_strtoull(eq + 6, &end, 10);
            if (!pl.blocks[pl.nblocks].size || *end) {
                return false;
            }
        } else {
            pl.blocks[pl.nblocks].path = g_strdup(eq + 1);
        }
        pl.nblocks++;
    }
    return pl.nblocks > 0;
}

/*
 * (Re)makes `lock`, recursive: an interposed call (munmap, madvise, the
 * mmap of the mover's staging slots) may come while this thread holds it,
 * from inside a hand-over or a report.  The constructor and the fork
 * handler both make it here: a plain mutex made anew in a child deadlocked
 * the child's first hand-over of anonymous guest RAM (found by review).
 */
static void init_lock(void)
{
    pthread_mutexattr_t a;

    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&pl.lock, &a);
    pthread_mutexattr_destroy(&a);
}

/*
 * fork() waits until no thread is inside an interposed call: between its
 * mapping of a block and the guard that keeps the mapping out of children
 * (hand_over()), a child would otherwise copy that mapping unserved and
 * read its holes as zeros; and the child's copy of the state the locks
 * guard (the mappings' records) would be whatever another thread left
 * half changed.  `lock` before `glock`, as everywhere.
 */
static void before_fork(void)
{
    pthread_mutex_lock(&pl.lock);
    pthread_mutex_lock(&pl.glock);
}

/* In the parent, after fork(): what before_fork() took. */
static void after_fork_in_parent(void)
{
    pthread_mutex_unlock(&pl.glock);
    pthread_mutex_unlock(&pl.lock);
}

/*
 * In a child of fork(): the mappings handed over and the tracked ones are
 * the parent's.  Their sockets are shared with the parent and their
 * supervisors did not come along, so a munmap here must not retire them
 * (that ended the parent's registration, and the parent with it, while
 * the child waited for good: found by review); the child has no copy of
 * them before DONE anyway (the fork guard).  The locks are made anew:
 * before_fork() took them, but the forking thread has another id in the
 * child, which may not unlock them.  The child's own mappings are
 * registered as any process's.  `pending` keeps the parent's count: the
 * child never hears those DONEs, but set to 0 it would let the child hand
 * a block's file (an fd it inherited) to an unregistered peer while the
 * restore still fills it, to be read as zeros; kept, such a child refuses
 * unregistered peers for its whole life, also after the fill.
 */
static void forget_parents_mappings(void)
{
    init_lock();
    pthread_mutex_init(&pl.glock, NULL);
    if (pl.mappings) {
        g_ptr_array_set_size(pl.mappings, 0); /* frees the records, not the parent's fds */
    }
    pl.ntracked = 0;
}

/* Removes @self from LD_PRELOAD and our variables from the environment. */
static void scrub_environment(void)
{
    const char *lp = getenv("LD_PRELOAD");
    GString *rest = g_string_new(NULL);

    if (lp) {
        g_auto(GStrv) parts = g_strsplit_set(lp, ": ", -1);
        for (char **p = parts; *p; p++) {
            if (**p && !strstr(*p, "libsnapload-preload")) {
                g_string_append_printf(rest, "%s%s", rest->len ? ":" : "", *p);
            }
        }
    }
    if (rest->len) {
        setenv("LD_PRELOAD", rest->str, 1);
    } else {
        unsetenv("LD_PRELOAD");
    }
    g_string_free(rest, true);
    unsetenv("SNAPLOAD_SOCKET");
    unsetenv("SNAPLOAD_BLOCKS");
    unsetenv("SNAPLOAD_EXE");
    unsetenv("SNAPLOAD_TRACK");
    unsetenv("SNAPLOAD_TIMEOUT_MS");
}

/* pl.block_devs: the device of each block file's directory (constructor). */
static void note_block_devs(void)
{
    pl.block_devs_all = true;
    for (unsigned i = 0; i < pl.nblocks; i++) {
        g_autofree char *dir = pl.blocks[i].path ? g_path_get_dirname(pl.blocks[i].path) : NULL;
        struct stat st;
        if (dir && stat(dir, &st) == 0) {
            pl.block_devs[pl.nblock_devs++] = st.st_dev;
        } else if (dir) {
            pl.block_devs_all = false;
        }
        /* And the file's own, where a symlink or a bind mount puts it on
         * another file system than its directory (found by review: writes
         * to it were taken for none of ours). */
        if (dir && stat(pl.blocks[i].path, &st) == 0) {
            pl.block_devs[pl.nblock_devs++] = st.st_dev;
        }
    }
}

static void resolve_next_fns(void);

__attribute__((constructor)) static void preload_init(void)
{
    const char *sock = getenv("SNAPLOAD_SOCKET");
    const char *blocks = getenv("SNAPLOAD_BLOCKS");
    const char *exe = getenv("SNAPLOAD_EXE");

    init_lock();
    resolve_next_fns();
    if (!sock || !*sock || !is_target_exe()) {
        return;
    }
    if (!blocks || !parse_blocks(blocks)) {
        pl_die("SNAPLOAD_BLOCKS must be NAME=PATH|NAME=anon:BYTES[;...], got '%s'",
            blocks ? blocks : "");
    }
    pl.socket = g_strdup(sock);
    /* Where the kernel cannot track (no asynchronous uffd write-protection,
     * Linux 6.7+: Debian 12's 6.1) the views are registered plainly: the
     * daemon then keeps no list of written pages, so the next restart checks
     * every page (found on 6.1: the tracked registration failed and ended
     * QEMU). */
    pl.track = g_strcmp0(getenv("SNAPLOAD_TRACK"), "1") == 0 &&
               sl_uffd_has_features(SL_UFFD_TRACK_FEATURES);
    pl.timeout_ms = getenv("SNAPLOAD_TIMEOUT_MS") ? atoi(getenv("SNAPLOAD_TIMEOUT_MS")) : 0;
    if (pl.timeout_ms <= 0) {
        pl.timeout_ms = DEFAULT_TIMEOUT_MS;
    }
    pl.mappings = g_ptr_array_new_with_free_func(g_free);
    note_block_devs();
    /* Named (QEMU's), the active instance hides itself from the helpers it
     * starts.  Not named (a consumer: snapload attach, --vhost-user), it
     * stays for whatever the command execs or starts: a wrapper script's
     * `exec BACKEND` ran the back-end unregistered, and it read the holes
     * of guest RAM as zeros (found by a user's test). */
    if (exe && *exe) {
        scrub_environment();
    }
    pthread_atfork(before_fork, after_fork_in_parent, forget_parents_mappings);
    pl.active = true;
}

/* The configured block whose file @st describes, or NULL (lock held). */
pl_block *pl_match_stat(const struct stat *st)
{
    struct stat bst;

    if (!S_ISREG(st->st_mode)) {
        return NULL;
    }
    for (unsigned i = 0; i < pl.nblocks; i++) {
        pl_block *b = &pl.blocks[i];
        if (!b->path) {
            continue;
        }
        if (!b->ino && stat(b->path, &bst) == 0) {
            b->dev = bst.st_dev;
            b->ino = bst.st_ino;
        }
        if (b->ino && b->ino == st->st_ino && b->dev == st->st_dev) {
            return b;
        }
    }
    return NULL;
}

/* The configured block whose file @fd is, or NULL (lock held). */
pl_block *pl_match_block(int fd)
{
    struct stat st;

    return fstat(fd, &st) < 0 ? NULL : pl_match_stat(&st);
}

/* Remembers mapping [@p, +@len) of @b, supervised by @sup (lock held). */
static void remember(pl_block *b, void *p, size_t len, sl_client_sup *sup)
{
    pl_mapping *m = g_new0(pl_mapping, 1);

    *m = (pl_mapping){ b, p, len, sup };
    g_ptr_array_add(pl.mappings, m);
}

/* Hands the new mapping [@p, +@len) of @b's file to the daemon, or dies.
 * Each mapping gets its own connection, so that its supervisor is the only
 * reader of that socket once the registration has been answered. */
static void hand_over(pl_block *b, void *p, size_t len, int fd, off_t off)
{
    g_autoptr(GError) err = NULL;
    bool track = pl.track && pl.ntracked < MAX_TRACKED;
    uint32_t token = guard(b, p, len, track);
    int sock, uffd;

    pl_talking = true;
    sock = sl_client_connect_timeout(pl.socket, "preload", pl.timeout_ms, NULL, &err);
    /* The uffd stays open until every page is in place: if the daemon dies
     * before, faults block (and the supervisor ends us) instead of reading
     * holes as zeros.  Untracked, the supervisor closes it at DONE (the
     * daemon unregistered the range); tracked, once the daemon has gone
     * after DONE; retired, munmap closes it once the mapping is gone. */
    uffd = sock < 0 ? -1
           : track ? sl_client_register_tracked(sock, b->name, p, len, fd, (uint64_t)off, &err)
                   : sl_client_register(sock, b->name, p, len, fd, (uint64_t)off, &err);
    if (uffd < 0) {
        pl_die("block '%s' (%s): %s", b->name, b->path, err->message);
    }
    pl_talking = false;
    if (track) {
        pl.tracked[pl.ntracked++] = (pl_tracked){ b, p, len };
    }
    atomic_fetch_add_explicit(&pl.pending, 1, memory_order_relaxed); /* relaxed: pl.pending */
    remember(b, p, len, sl_client_supervise_mapping(sock, uffd, track, daemon_died, block_done,
                                                    GUINT_TO_POINTER(token)));
}

/* The anonymous block a new mapping of @len bytes with @prot/@flags is, or NULL. */
static pl_block *match_anon(size_t len, int prot, int flags)
{
    const int want = MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS;

    if ((flags & want) != want || (prot & (PROT_READ | PROT_WRITE)) != (PROT_READ | PROT_WRITE)) {
        return NULL;
    }
    for (unsigned i = 0; i < pl.nblocks; i++) {
        pl_block *b = &pl.blocks[i];
        if (!b->path && !b->handed && b->size == len) {
            return b;
        }
    }
    return NULL;
}

/* Whether any page of [@p, +@len) is in memory (mincore). */
static bool any_resident(uint8_t *p, size_t len)
{
    const size_t ps = (size_t)sysconf(_SC_PAGESIZE), step = 65536, n = (len + ps - 1) / ps;
    g_autofree unsigned char *vec = g_malloc(MIN(n, step));

    for (size_t i = 0; i < n; i += step) {
        size_t k = MIN(n - i, step);
        if (mincore(p + i * ps, k * ps, vec) < 0) {
            return true; /* cannot tell: take it as there */
        }
        for (size_t j = 0; j < k; j++) {
            if (vec[j] & 1) {
                return true;
            }
        }
    }
    return false;
}

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24 /* Linux 5.18 */
#endif

/*
 * A fresh anonymous mapping that came populated (MAP_POPULATE, or after
 * mlockall(MCL_FUTURE)) holds zero pages where MISSING faults never fire:
 * the restore's pages would never land, and the guest would read zeros
 * (found by review: 819 wrong pages, exit 0).  Its pages hold nothing yet,
 * so they are dropped (on an empty mapping that costs next to nothing),
 * locked ones too where the kernel can; where pages stay, we die.
 */
static void make_missing(const pl_block *b, uint8_t *p, size_t len)
{
    /* Raw system calls: not our own madvise wrapper. */
    if (syscall(SYS_madvise, p, len, MADV_DONTNEED) == 0 ||
        syscall(SYS_madvise, p, len, MADV_DONTNEED_LOCKED) == 0 || !any_resident(p, len)) {
        return;
    }
    pl_die("block '%s' (anonymous): its mapping was populated as it was made and this kernel "
        "cannot empty it (locked: no MADV_DONTNEED_LOCKED before Linux 5.18; QEMU's "
        "-overcommit mem-lock=on-fault locks without populating), so the restore's pages "
        "could never land", b->name);
}

/* Hands the fresh anonymous mapping [@p, +@len) of @b to the daemon, or dies. */
static void hand_over_anon(pl_block *b, void *p, size_t len)
{
    g_autoptr(GError) err = NULL;
    uint32_t token;
    unsigned level = 0;

    make_missing(b, p, len);
    token = guard(b, p, len, false);
    int sock = sl_client_connect_timeout(pl.socket, "preload", pl.timeout_ms, &level, &err);
    int uffd = sock < 0 ? -1 : sl_client_register_anon(sock, level, b->name, p, len, &err);

    if (uffd < 0) {
        pl_die("block '%s' (anonymous, %zu bytes): %s", b->name, len, err->message);
    }
    b->handed = true;
    atomic_fetch_add_explicit(&pl.pending, 1, memory_order_relaxed); /* relaxed: pl.pending */
    remember(b, p, len, sl_client_supervise_mapping(sock, uffd, false, daemon_died, block_done,
                                                    GUINT_TO_POINTER(token)));
}

/* Whether [@a, +@len) overlaps mapping @m. */
static bool overlaps_mapping(const pl_mapping *m, const uint8_t *a, size_t len)
{
    return a < m->addr + m->len && m->addr < a + len;
}

/*
 * Retires mapping @m, which [@addr, +@len) unmaps or maps over (lock
 * held): the daemon lets go of it before it goes.  Its uffd, if still
 * open, goes into *@uffds (made if NULL), to be closed once the range is
 * gone.  Dies if
 * only part of it goes before its DONE: the rest would stay registered
 * with nobody serving it.  Returns whether its DONE had come.
 */
static bool retire(pl_mapping *m, const uint8_t *addr, size_t len, GArray **uffds)
{
    bool done = false;
    int uffd = -1;

    if (!sl_client_retire(m->sup, pl.timeout_ms, &uffd, &done)) {
        fprintf(stderr, "snapload-preload: block '%s': the restore daemon did not let go of a "
                "mapping being unmapped within %d ms; unmapping it anyway\n", m->block->name,
                pl.timeout_ms);
    }
    if (!done) {
        /* Relaxed: see pl.pending.  No DONE will come. */
        atomic_fetch_sub_explicit(&pl.pending, 1, memory_order_relaxed);
    }
    if (uffd >= 0) {
        *uffds = *uffds ? *uffds : g_array_new(false, false, sizeof(int));
        g_array_append_val(*uffds, uffd);
    }
    if (!done && (addr > m->addr || addr + len < m->addr + m->len)) {
        pl_die("block '%s': this process unmapped part of its guest RAM mapping while the restore "
            "still fills it; only whole mappings can be given back", m->block->name);
    }
    return done;
}

/*
 * Retires every mapping [@addr, +@len) overlaps (lock held); their uffds
 * still open, or NULL.  Not for arguments the kernel refuses (length 0,
 * an address not page-aligned): those leave every mapping in place.
 */
static GArray *retire_overlapping(const void *addr, size_t len, bool *pending)
{
    GArray *uffds = NULL;

    *pending = false;
    for (guint i = 0; i < pl.mappings->len;) {
        pl_mapping *m = g_ptr_array_index(pl.mappings, i);
        if (overlaps_mapping(m, addr, len)) {
            *pending |= !retire(m, addr, len, &uffds);
            g_ptr_array_remove_index_fast(pl.mappings, i);
        } else {
            i++;
        }
    }
    return uffds;
}

/* After the unmap: the retired mappings' uffds (from retire_overlapping()). */
static void close_retired(GArray *uffds)
{
    for (guint i = 0; uffds && i < uffds->len; i++) {
        close(g_array_index(uffds, int, i));
    }
    if (uffds) {
        g_array_free(uffds, true);
    }
}

/* Whether the kernel refuses to (un)map [@addr, +@len) before touching anything. */
static bool bad_range(const void *addr, size_t len)
{
    return !len || (uintptr_t)addr % (uintptr_t)sysconf(_SC_PAGESIZE);
}

static void report_overlapping(const void *addr, size_t len);
static bool untrack_uncovered(const void *addr, size_t len);
static unsigned tracked_blocks_in(const void *addr, size_t len, pl_block **hit);

/*
 * A call that would have unmapped or replaced guest RAM failed (errno
 * set) after retire_overlapping() let go of what it covered (lock held).
 * With @pending (a mapping still being restored), that mapping stays
 * mapped and registered, served by nobody: we die, saying what @failed.
 * Otherwise the tracked blocks @hit it reported become untracked (their
 * mappings stay, retired), errno kept.
 */
static void after_refused(bool pending, const char *failed, pl_block **hit, unsigned nhit)
{
    int e = errno; /* pl_mark_untracked() talks to the daemon */

    if (pending) {
        pl_die("%s failed (%s) after the restore daemon let go of the guest RAM there", failed,
            g_strerror(e));
    }
    for (unsigned i = 0; i < nhit; i++) {
        (void)pl_mark_untracked(hit[i]); /* reported and retired, yet still mapped */
    }
    errno = e;
}

static void *real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

/** mmap: the libc call, plus the hand-over of configured guest-RAM files. */
__attribute__((visibility("default")))
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    bool fixed = (flags & MAP_FIXED) && !bad_range(addr, len);
    GArray *gone = NULL;
    pl_block *b, *hit[MAX_TRACKED];
    unsigned nhit = 0;
    bool pending = false;
    void *p;

    if (!pl.active) {
        return real_mmap(addr, len, prot, flags, fd, off);
    }
    pthread_mutex_lock(&pl.lock);
    if (fixed) { /* whatever was mapped there goes: retired first, */
        if (pl.track && !untrack_uncovered(addr, len)) {
            pthread_mutex_unlock(&pl.lock);
            errno = EIO; /* as munmap: no change no list would show */
            return MAP_FAILED;
        }
        if (pl.track) { /* its writes reported, as munmap and mremap do (found by review) */
            nhit = tracked_blocks_in(addr, len, hit);
            report_overlapping(addr, len);
        }
        gone = retire_overlapping(addr, len, &pending);
    }
    p = real_mmap(addr, len, prot, flags, fd, off);
    if (p == MAP_FAILED) {
        after_refused(pending, "mapping over guest RAM", hit, nhit);
    }
    close_retired(gone);
    if (fixed) {
        forget_guards(addr, len);
    }
    if (p == MAP_FAILED) {
        b = NULL;
    } else if (fd >= 0 && !(flags & MAP_SHARED)) {
        b = NULL; /* a private copy of a file is no guest RAM we hand over */
    } else if (fd >= 0 && (b = pl_match_block(fd))) {
        hand_over(b, p, len, fd, off);
    } else if (fd < 0 && (b = match_anon(len, prot, flags))) {
        hand_over_anon(b, p, len);
    }
    pthread_mutex_unlock(&pl.lock);
    return p;
}

/** mmap64: the same (QEMU calls this name). */
__attribute__((visibility("default")))
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}


/* Asks the daemon to read what tracked mapping @t wrote (lock held). */
static void report_written(pl_tracked *t)
{
    g_autoptr(GError) err = NULL;

    if (!sl_client_report_written(pl.socket, t->block->name, t->addr, t->len,
                                  t->block->untracked ? SL_WRITTEN_UNTRACKED : 0, &err)) {
        fprintf(stderr, "snapload-preload: block '%s': the pages this process wrote could not "
                "be reported (%s): a restart over its file checks all of it\n", t->block->name,
                err->message);
    }
    *t = pl.tracked[--pl.ntracked];
}

/* Whether tracked mapping @t overlaps [@addr, +@len). */
bool pl_tracked_overlaps(const pl_tracked *t, const void *addr, size_t len)
{
    const uint8_t *a = addr, *m = t->addr;

    return a < m + t->len && m < a + len;
}

/* Reports every tracked mapping that overlaps [@addr, +@len) (lock held). */
static void report_overlapping(const void *addr, size_t len)
{
    for (unsigned i = 0; i < pl.ntracked;) {
        if (pl_tracked_overlaps(&pl.tracked[i], addr, len)) {
            report_written(&pl.tracked[i]); /* moves the last one here */
        } else {
            i++;
        }
    }
}

/*
 * Tracking: the blocks of the tracked mappings that [@addr, +@len) covers
 * only in part become untracked (lock held).  The part left mapped is
 * reported and retired with the rest, its writes from then on in no list
 * (found by review: a later restart kept such a page as the snapshot's).
 * False (errno EIO) if the daemon was not told: the caller must not go on.
 */
static bool untrack_uncovered(const void *addr, size_t len)
{
    const uint8_t *a = addr;
    bool ok = true;

    for (unsigned i = 0; i < pl.ntracked; i++) {
        const pl_tracked *t = &pl.tracked[i];
        const uint8_t *m = t->addr;
        if (pl_tracked_overlaps(t, addr, len) && (a > m || a + len < m + t->len)) {
            ok = pl_mark_untracked(t->block) && ok;
        }
    }
    return ok;
}

/* The blocks of the tracked mappings [@addr, +@len) overlaps, into @hit
 * (MAX_TRACKED); how many (lock held). */
static unsigned tracked_blocks_in(const void *addr, size_t len, pl_block **hit)
{
    unsigned n = 0;

    for (unsigned i = 0; i < pl.ntracked; i++) {
        if (pl_tracked_overlaps(&pl.tracked[i], addr, len)) {
            hit[n++] = pl.tracked[i].block;
        }
    }
    return n;
}

/** munmap: reports a tracked mapping's writes first (they vanish with it),
 * and retires the mappings handed over that it removes. */
__attribute__((visibility("default")))
int munmap(void *addr, size_t len)
{
    pl_block *hit[MAX_TRACKED];
    unsigned nhit;
    GArray *gone;
    bool pending;
    int ret;

    if (!pl.active || bad_range(addr, len)) { /* refused: every mapping stays */
        return (int)syscall(SYS_munmap, addr, len);
    }
    pthread_mutex_lock(&pl.lock);
    nhit = pl.track ? tracked_blocks_in(addr, len, hit) : 0;
    if (pl.track && !untrack_uncovered(addr, len)) {
        pthread_mutex_unlock(&pl.lock);
        errno = EIO; /* as madvise and fallocate do: no change no list would show */
        return -1;
    }
    if (pl.track) {
        report_overlapping(addr, len);
    }
    gone = retire_overlapping(addr, len, &pending);
    forget_guards(addr, len);
    ret = (int)syscall(SYS_munmap, addr, len);
    if (ret < 0) { /* found by review: a mapping left served by nobody */
        after_refused(pending, "unmapping guest RAM", hit, nhit);
    }
    close_retired(gone);
    pthread_mutex_unlock(&pl.lock);
    return ret;
}

/*
 * Retires the mappings handed over that a move of [@addr, +@len) takes
 * (lock held; their uffds as retire_overlapping() gives them).  A move
 * drops the range's registration, so before DONE the moved memory would
 * read its holes as zeros: the process is ended instead.
 */
static GArray *retire_moved(const void *addr, size_t len)
{
    GArray *uffds = NULL;

    for (guint i = 0; i < pl.mappings->len;) {
        pl_mapping *m = g_ptr_array_index(pl.mappings, i);
        if (!overlaps_mapping(m, addr, len)) {
            i++;
            continue;
        }
        if (!retire(m, addr, len, &uffds)) {
            pl_die("block '%s': this process moved (mremap) its guest RAM mapping while the "
                "restore still fills it", m->block->name);
        }
        g_ptr_array_remove_index_fast(pl.mappings, i);
    }
    return uffds;
}

/** mremap: a tracked mapping moved or resized loses its trace of writes
 * (the kernel drops the registration): its block becomes untracked, and
 * the mappings handed over that it takes are retired first (found by
 * review: a list then said nothing was written). */
__attribute__((visibility("default")))
void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
    void *new_addr = NULL, *p;
    size_t span = old_len ? old_len : 1; /* 0: a duplicate of a shared mapping */
    pl_block *hit[MAX_TRACKED], *ohit[MAX_TRACKED];
    unsigned nhit, nohit = 0;
    bool pending = false;
    GArray *gone, *over = NULL;
    va_list ap;

    if (flags & MREMAP_FIXED) {
        va_start(ap, flags);
        new_addr = va_arg(ap, void *);
        va_end(ap);
    }
    /* Refused by the kernel before it changes anything: every mapping stays. */
    if (!pl.active || bad_range(old, span) ||
        ((flags & MREMAP_FIXED) && !(flags & MREMAP_MAYMOVE))) {
        return (void *)syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
    }
    pthread_mutex_lock(&pl.lock);
    nhit = pl.track ? tracked_blocks_in(old, span, hit) : 0;
    for (unsigned i = 0; i < nhit; i++) {
        (void)pl_mark_untracked(hit[i]);
    }
    if (pl.track) {
        report_overlapping(old, span);
    }
    gone = retire_moved(old, span);
    if (new_addr && !bad_range(new_addr, new_len)) { /* what the move maps over goes too */
        if (pl.track) {
            (void)untrack_uncovered(new_addr, new_len); /* the rest stays: untracked */
            nohit = tracked_blocks_in(new_addr, new_len, ohit);
            report_overlapping(new_addr, new_len);
        }
        over = retire_overlapping(new_addr, new_len, &pending);
    }
    p = (void *)syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
    if (p == MAP_FAILED) { /* what it would have mapped over stays */
        after_refused(pending, "moving a mapping over guest RAM", ohit, nohit);
    }
    close_retired(gone);
    close_retired(over);
    pthread_mutex_unlock(&pl.lock);
    return p;
}

/* At exit: the writes of every tracked mapping still there.  Skipped if
 * another thread holds the lock (then the next restart checks it all). */
__attribute__((destructor)) static void preload_fini(void)
{
    if (pl.active && pl.track && pthread_mutex_trylock(&pl.lock) == 0) {
        while (pl.ntracked) {
            report_written(&pl.tracked[pl.ntracked - 1]);
        }
        pthread_mutex_unlock(&pl.lock);
    }
}

/*
 * Tracking: block @b's file is about to change where no list shows it
 * (lock held).  The daemon is told at once, before the change, so that a
 * query of what was written (qemu-save --parent) never gets a list that
 * misses it; the WRITTEN report says it again when the mapping goes.
 * Returns false (errno EIO) if the daemon did not confirm: the caller must
 * not make the change, or a later child snapshot would miss it.
 */
bool pl_mark_untracked(pl_block *b)
{
    g_autoptr(GError) err = NULL;

    if (b->untracked) {
        return true;
    }
    if (!sl_client_report_untracked(pl.socket, b->name, &err)) {
        fprintf(stderr, "snapload-preload: refusing to change block '%s' where no list of "
                "written pages shows it: %s\n", b->name, err->message);
        errno = EIO;
        return false;
    }
    b->untracked = true;
    return true;
}

/* Tracking: a change to block file @fd that no list shows; false if refused. */
bool pl_note_untracked_stat(const struct stat *st)
{
    pl_block *b;
    bool ok = true;

    pthread_mutex_lock(&pl.lock);
    if ((b = pl_match_stat(st))) {
        ok = pl_mark_untracked(b);
    }
    pthread_mutex_unlock(&pl.lock);
    return ok;
}

/* pl_note_untracked_stat() of the file @fd is, if any. */
bool pl_note_untracked_fd(int fd)
{
    struct stat st;

    return fstat(fd, &st) < 0 || pl_note_untracked_stat(&st);
}

/* The next definition of @name, looked up into *@slot the first time. */
void *pl_next_fn(pl_fn_slot *slot, const char *name)
{
    /* Acquire: pairs with the release stores below and in resolve_next_fns(). */
    void *f = atomic_load_explicit(slot, memory_order_acquire);

    if (!f) {
        f = dlsym(RTLD_NEXT, name);
        if (!f) {
            pl_die("no definition of %s after this library: %s", name, dlerror());
        }
        atomic_store_explicit(slot, f, memory_order_release); /* pairs: the load above */
    }
    return f;
}

/*
 * Looks every one up now, from the constructor, in every process the
 * library is loaded in, before the program's threads exist: dlsym takes
 * the dynamic linker's lock, and a first write() that looked up there
 * waited for another thread's dlopen whose constructor waited for the
 * writer (found by review: a deadlock even where the library is
 * inactive).  A call before the constructor still looks up at once.  A
 * name this libc lacks (the fortified opens and pwritev2 outside glibc)
 * stays unset: the program cannot call it either, and pl_next_fn() ends the
 * process only if it is called.
 */
static void resolve_next_fns(void)
{
    /* Release: pairs with the acquire load in pl_next_fn(). */
#define RESOLVE(name)                                                         \
    atomic_store_explicit(&pl_next.name, dlsym(RTLD_NEXT, #name), memory_order_release);
    PL_NEXT_FNS(RESOLVE)
#undef RESOLVE
}

/*
 * Advice that takes pages out of a shared mapping's page tables, and with
 * them the trace PAGEMAP_SCAN keeps of a write: REMOVE punches the file;
 * DONTNEED and PAGEOUT zap (or swap out) pages whose write the file keeps,
 * which no list would show (found by review: a child snapshot then kept
 * the parent's bytes).
 */
static bool drops_written_trace(int advice)
{
    return advice == MADV_REMOVE || advice == MADV_DONTNEED || advice == MADV_PAGEOUT ||
           advice == 24 /* MADV_DONTNEED_LOCKED, Linux 5.18 */ ||
           advice == 25 /* MADV_COLLAPSE, 6.1: the small pages leave every mapping */;
}

/** madvise: the libc call; advice that loses a tracked mapping's written
 * pages is noted first (drops_written_trace()), and the process's own fork
 * advice on a guarded mapping is kept for its DONE. */
__attribute__((visibility("default")))
int madvise(void *addr, size_t len, int advice)
{
    if (pl.active && (advice == MADV_DONTFORK || advice == MADV_DOFORK)) {
        int ret;

        pthread_mutex_lock(&pl.glock);
        ret = pg_guard_madvise(&pl.guards, addr, len, advice);
        pthread_mutex_unlock(&pl.glock);
        return ret;
    }
    if (pl.active && pl.track && drops_written_trace(advice)) {
        bool ok = true;

        pthread_mutex_lock(&pl.lock);
        for (unsigned i = 0; ok && i < pl.ntracked; i++) {
            if (pl_tracked_overlaps(&pl.tracked[i], addr, len)) {
                ok = pl_mark_untracked(pl.tracked[i].block);
            }
        }
        pthread_mutex_unlock(&pl.lock);
        if (!ok) {
            return -1;
        }
    }
    return (int)syscall(SYS_madvise, addr, len, advice);
}
