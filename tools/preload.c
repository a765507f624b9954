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
 *                    (qemu-restore --reuse-ram): registered in WP mode too,
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
 * it also wraps sendmsg and sendmmsg, and while a restore still fills the blocks, a
 * block's file sent over a unix socket (how QEMU gives a vhost-user
 * back-end guest RAM) goes only over a connected stream socket to a peer
 * that runs this library set up for the same daemon and block (its /proc
 * maps and environment say so, as `snapload attach` starts it), else the
 * process ends naming the peer (or saying it cannot be told: a datagram
 * socket, a peer in a pid namespace this one does not see), before any
 * byte could be read as a hole or written and then lost.
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
 * While tracking, a block whose file this process punches holes in (or
 * MADV_REMOVEs, DONTNEEDs, PAGEOUTs, COLLAPSEs), writes through a
 * descriptor (write, pwrite and kin, sendfile, splice, copy_file_range,
 * ftruncate) or by path (truncate, an open with O_TRUNC), unmaps or moves
 * in part, or hands to a peer that does not track its writes after the
 * fill, is reported as changed where the list cannot show it: the next
 * restart then checks the whole file.
 *
 * State: written by the constructor before any other thread exists, then
 * only under `lock` (mmap may be called from any thread), but for
 * `pending` (atomic) and `guards` (under `glock`: a supervisor thread
 * updates them at DONE while a thread holding `lock` may wait for it).
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include "client.h"
#include "preload-guard.h"
#include "migration/protocol.h"

#define MAX_BLOCKS 16

typedef struct {
    char *name;
    char *path;       /* NULL: anonymous */
    uint64_t size;    /* anonymous: its length */
    bool handed;      /* anonymous: registered already */
    dev_t dev;        /* identity of the file, once it was seen mapped */
    ino_t ino;
    bool untracked;   /* tracking: the file changed where no list shows it */
} pl_block;

#define MAX_TRACKED 32

/* A tracked mapping handed to the daemon, until its writes are reported. */
typedef struct {
    pl_block *block;
    void *addr;
    size_t len;
} pl_tracked;

/* A mapping handed to the daemon, until it is unmapped. */
typedef struct {
    pl_block *block;
    uint8_t *addr;
    size_t len;
    sl_client_sup *sup;   /* its supervisor, for the retirement */
} pl_mapping;

/* How long the daemon may take to answer, unless SNAPLOAD_TIMEOUT_MS says. */
#define DEFAULT_TIMEOUT_MS 30000

static struct {
    pthread_mutex_t lock;
    bool active;
    char *socket;
    pl_block blocks[MAX_BLOCKS];
    unsigned nblocks;
    bool track;                   /* SNAPLOAD_TRACK=1 */
    pl_tracked tracked[MAX_TRACKED];
    unsigned ntracked;
    GPtrArray *mappings;          /* pl_mapping *: every mapping handed over */
    int timeout_ms;               /* SNAPLOAD_TIMEOUT_MS */
    /* The file systems the blocks' files live on (the devices of their
     * directories and of the files found at start), to tell without the
     * lock that a write is to no block (may_change()); written by the
     * constructor only. */
    dev_t block_devs[2 * MAX_BLOCKS]; /* of each block's directory and file */
    unsigned nblock_devs;
    bool block_devs_all;          /* every block file's directory was found */
    /* Mappings handed over whose DONE has not come: a restore still runs.
     * Incremented under `lock` before the supervisor starts, decremented by
     * it (block_done); relaxed: a count read as a hint of state, ordered by
     * the socket messages that change it. */
    _Atomic unsigned pending;
    /* Taken after `lock` when both are, never before it. */
    pthread_mutex_t glock;
    pg_guards guards;             /* mappings kept out of forked children */
} pl = {
    .glock = PTHREAD_MUTEX_INITIALIZER, /* `lock`: init_lock(), by the constructor */
};

/* Set while this thread talks to the daemon: its own sendmsg of a block's
 * file (REGISTER) is not a hand-off to a peer. */
static __thread bool pl_talking;

static void die(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;

static void die(const char *fmt, ...)
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
    die("the restore daemon went away before every page of guest RAM was in place; "
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
    atomic_fetch_sub_explicit(&pl.pending, 1, memory_order_relaxed);
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
        die("block '%s': cannot keep its mapping out of forked children (madvise): %s",
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

    init_lock();
    resolve_next_fns();
    if (!sock || !*sock || !is_target_exe()) {
        return;
    }
    if (!blocks || !parse_blocks(blocks)) {
        die("SNAPLOAD_BLOCKS must be NAME=PATH|NAME=anon:BYTES[;...], got '%s'",
            blocks ? blocks : "");
    }
    pl.socket = g_strdup(sock);
    pl.track = g_strcmp0(getenv("SNAPLOAD_TRACK"), "1") == 0;
    pl.timeout_ms = getenv("SNAPLOAD_TIMEOUT_MS") ? atoi(getenv("SNAPLOAD_TIMEOUT_MS")) : 0;
    if (pl.timeout_ms <= 0) {
        pl.timeout_ms = DEFAULT_TIMEOUT_MS;
    }
    pl.mappings = g_ptr_array_new_with_free_func(g_free);
    note_block_devs();
    scrub_environment();
    pthread_atfork(before_fork, after_fork_in_parent, forget_parents_mappings);
    pl.active = true;
}

/* The configured block whose file @st describes, or NULL (lock held). */
static pl_block *match_stat(const struct stat *st)
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
static pl_block *match_block(int fd)
{
    struct stat st;

    return fstat(fd, &st) < 0 ? NULL : match_stat(&st);
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
        die("block '%s' (%s): %s", b->name, b->path, err->message);
    }
    pl_talking = false;
    if (track) {
        pl.tracked[pl.ntracked++] = (pl_tracked){ b, p, len };
    }
    atomic_fetch_add_explicit(&pl.pending, 1, memory_order_relaxed);
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
    die("block '%s' (anonymous): its mapping was populated as it was made and this kernel "
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
        die("block '%s' (anonymous, %zu bytes): %s", b->name, len, err->message);
    }
    b->handed = true;
    atomic_fetch_add_explicit(&pl.pending, 1, memory_order_relaxed);
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
        atomic_fetch_sub_explicit(&pl.pending, 1, memory_order_relaxed); /* no DONE will come */
    }
    if (uffd >= 0) {
        *uffds = *uffds ? *uffds : g_array_new(false, false, sizeof(int));
        g_array_append_val(*uffds, uffd);
    }
    if (!done && (addr > m->addr || addr + len < m->addr + m->len)) {
        die("block '%s': this process unmapped part of its guest RAM mapping while the restore "
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
static bool mark_untracked(pl_block *b);

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
    int e = errno; /* mark_untracked() talks to the daemon */

    if (pending) {
        die("%s failed (%s) after the restore daemon let go of the guest RAM there", failed,
            g_strerror(e));
    }
    for (unsigned i = 0; i < nhit; i++) {
        (void)mark_untracked(hit[i]); /* reported and retired, yet still mapped */
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
    } else if (fd >= 0 && (b = match_block(fd))) {
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

static bool mark_untracked(pl_block *b);

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
static bool overlaps(const pl_tracked *t, const void *addr, size_t len)
{
    const uint8_t *a = addr, *m = t->addr;

    return a < m + t->len && m < a + len;
}

/* Reports every tracked mapping that overlaps [@addr, +@len) (lock held). */
static void report_overlapping(const void *addr, size_t len)
{
    for (unsigned i = 0; i < pl.ntracked;) {
        if (overlaps(&pl.tracked[i], addr, len)) {
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
        if (overlaps(t, addr, len) && (a > m || a + len < m + t->len)) {
            ok = mark_untracked(t->block) && ok;
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
        if (overlaps(&pl.tracked[i], addr, len)) {
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
            die("block '%s': this process moved (mremap) its guest RAM mapping while the "
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
        (void)mark_untracked(hit[i]);
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
static bool mark_untracked(pl_block *b)
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
static bool note_untracked_stat(const struct stat *st)
{
    pl_block *b;
    bool ok = true;

    pthread_mutex_lock(&pl.lock);
    if ((b = match_stat(st))) {
        ok = mark_untracked(b);
    }
    pthread_mutex_unlock(&pl.lock);
    return ok;
}

/* note_untracked_stat() of the file @fd is, if any. */
static bool note_untracked_fd(int fd)
{
    struct stat st;

    return fstat(fd, &st) < 0 || note_untracked_stat(&st);
}

/*
 * The wrapped calls go on to the next definition of their name (libc's),
 * looked up once: not to the raw system call, which would drop what libc
 * does around it (a blocking write or open is a cancellation point; found
 * by review: pthread_cancel no longer ended them in any process run with
 * this library).  Each slot is written once with the same value: relaxed
 * would do, acquire/release keeps a reader from a half-made lookup.
 */
typedef void *_Atomic fn_slot;

/* Every libc call a wrapper here goes on to, in the order of next_fns. */
#define NEXT_FNS(X)                                                               \
    X(fallocate) X(write) X(writev) X(sendfile) X(splice) X(truncate) X(openat)        \
    X(__openat_2) X(fopen) X(freopen) X(fdopen) X(pwrite) X(pwritev) X(pwritev2)      \
    X(copy_file_range) X(ftruncate) X(sendmsg) X(sendmmsg)

#define NEXT_SLOT(name) fn_slot name;
static struct {
    NEXT_FNS(NEXT_SLOT)
} next_fns;
#undef NEXT_SLOT

/* The next definition of @name, looked up into *@slot the first time. */
static void *next_fn(fn_slot *slot, const char *name)
{
    void *f = atomic_load_explicit(slot, memory_order_acquire);

    if (!f) {
        f = dlsym(RTLD_NEXT, name);
        if (!f) {
            die("no definition of %s after this library: %s", name, dlerror());
        }
        atomic_store_explicit(slot, f, memory_order_release);
    }
    return f;
}

/* The libc function our wrapper @name stands in front of, typed as ours. */
#define NEXT(name) ((__typeof__(&name))next_fn(&next_fns.name, #name))

/*
 * Looks every one up now, from the constructor, in every process the
 * library is loaded in, before the program's threads exist: dlsym takes
 * the dynamic linker's lock, and a first write() that looked up there
 * waited for another thread's dlopen whose constructor waited for the
 * writer (found by review: a deadlock even where the library is
 * inactive).  A call before the constructor still looks up at once.  A
 * name this libc lacks (the fortified opens and pwritev2 outside glibc)
 * stays unset: the program cannot call it either, and next_fn() ends the
 * process only if it is called.
 */
static void resolve_next_fns(void)
{
#define RESOLVE(name)                                                         \
    atomic_store_explicit(&next_fns.name, dlsym(RTLD_NEXT, #name), memory_order_release);
    NEXT_FNS(RESOLVE)
#undef RESOLVE
}

/* fallocate modes that leave a file's data as it is: allocation alone. */
#define FALLOC_KEEPS_DATA(mode) (((mode) & ~FALLOC_FL_KEEP_SIZE) == 0)

/** fallocate: the libc call; a change of a tracked block's data (a punched
 * hole, a zeroed, collapsed or inserted range) is noted first. */
__attribute__((visibility("default")))
int fallocate(int fd, int mode, off_t off, off_t len)
{
    if (pl.active && pl.track && !FALLOC_KEEPS_DATA(mode) && !note_untracked_fd(fd)) {
        return -1;
    }
    return NEXT(fallocate)(fd, mode, off, len);
}

/** fallocate64: the same. */
__attribute__((visibility("default")))
int fallocate64(int fd, int mode, off_t off, off_t len)
{
    return fallocate(fd, mode, off, len);
}

/*
 * Whether a change of the file @st describes, which no page table and so
 * no list of written pages shows, may go ahead: a block's file is
 * untracked first, and the change refused (EIO) if the daemon cannot be
 * told.  Found by review: a back-end's pwrite into guest RAM was kept as
 * the snapshot's by the next restart.
 */
static bool may_change(const struct stat *st)
{
    /* Without the lock, which a retirement holds across daemon round trips:
     * a write to a file on no block's file system (a disk image, a socket)
     * is none of ours. */
    if (!S_ISREG(st->st_mode)) {
        return true;
    }
    for (unsigned i = 0; i < pl.nblock_devs; i++) {
        if (pl.block_devs[i] == st->st_dev) {
            return note_untracked_stat(st);
        }
    }
    return pl.block_devs_all ? true : note_untracked_stat(st); /* a directory unknown */
}

/* may_change() of the file @fd is: writes through a descriptor (write,
 * pwrite and kin, sendfile, splice, copy_file_range, ftruncate). */
static bool may_write_fd(int fd)
{
    struct stat st;

    return !pl.active || !pl.track || fstat(fd, &st) < 0 || may_change(&st);
}

/* may_change() of the file @path names (from @dirfd), if it exists:
 * truncate by path, an open with O_TRUNC.  A path that does not resolve
 * is no block's file. */
static bool may_change_path(int dirfd, const char *path)
{
    struct stat st;

    return !pl.active || !pl.track || !path || fstatat(dirfd, path, &st, 0) < 0 ||
           may_change(&st);
}

/** write: the libc call, after may_write_fd() (a write after an lseek). */
__attribute__((visibility("default")))
ssize_t write(int fd, const void *buf, size_t n)
{
    return may_write_fd(fd) ? NEXT(write)(fd, buf, n) : -1;
}

/** writev: the same. */
__attribute__((visibility("default")))
ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    return may_write_fd(fd) ? NEXT(writev)(fd, iov, cnt) : -1;
}

/** sendfile: the libc call, after may_write_fd() of the file written. */
__attribute__((visibility("default")))
ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
    return may_write_fd(out) ? NEXT(sendfile)(out, in, off, n) : -1;
}

/** sendfile64: the same. */
__attribute__((visibility("default")))
ssize_t sendfile64(int out, int in, off_t *off, size_t n)
{
    return sendfile(out, in, off, n);
}

/** splice: the libc call, after may_write_fd() of the file written. */
__attribute__((visibility("default")))
ssize_t splice(int in, off_t *in_off, int out, off_t *out_off, size_t n, unsigned int flags)
{
    return may_write_fd(out) ? NEXT(splice)(in, in_off, out, out_off, n, flags) : -1;
}

/** truncate: the libc call, after may_change_path(). */
__attribute__((visibility("default")))
int truncate(const char *path, off_t len)
{
    return may_change_path(AT_FDCWD, path) ? NEXT(truncate)(path, len) : -1;
}

/** truncate64: the same. */
__attribute__((visibility("default")))
int truncate64(const char *path, off_t len)
{
    return truncate(path, len);
}

/* The mode an open call with @flags carries after them, in @mode. */
#define OPEN_MODE(flags, mode)                                                \
    do {                                                                      \
        if ((flags) & (O_CREAT | __O_TMPFILE)) {                              \
            va_list ap_;                                                      \
            va_start(ap_, flags);                                             \
            (mode) = va_arg(ap_, mode_t);                                     \
            va_end(ap_);                                                      \
        }                                                                     \
    } while (0)

/* Whether an open of @path (from @dirfd) with @flags may go ahead:
 * may_change_path() where it truncates. */
static bool may_open(int dirfd, const char *path, int flags)
{
    return !(flags & O_TRUNC) || may_change_path(dirfd, path);
}

/** openat: the libc call, after may_open(). */
__attribute__((visibility("default")))
int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return may_open(dirfd, path, flags) ? NEXT(openat)(dirfd, path, flags, mode) : -1;
}

/** open, open64, openat64, creat, creat64: as openat() (glibc's open is
 * openat of AT_FDCWD). */
__attribute__((visibility("default")))
int open(const char *path, int flags, ...)
{
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return openat(AT_FDCWD, path, flags, mode);
}

__attribute__((visibility("default")))
int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return openat(AT_FDCWD, path, flags, mode);
}

__attribute__((visibility("default")))
int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return openat(dirfd, path, flags, mode);
}

__attribute__((visibility("default")))
int creat(const char *path, mode_t mode)
{
    return openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

__attribute__((visibility("default")))
int creat64(const char *path, mode_t mode)
{
    return creat(path, mode);
}

/*
 * What -D_FORTIFY_SOURCE makes of an open whose flags the compiler cannot
 * see (QEMU imports __open64_2): as open() and openat(), without a mode.
 * Found by review: an O_TRUNC through them went unseen.
 */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

__attribute__((visibility("default")))
int __openat_2(int dirfd, const char *path, int flags)
{
    return may_open(dirfd, path, flags) ? NEXT(__openat_2)(dirfd, path, flags) : -1;
}

__attribute__((visibility("default")))
int __open_2(const char *path, int flags)
{
    return __openat_2(AT_FDCWD, path, flags);
}

__attribute__((visibility("default")))
int __open64_2(const char *path, int flags)
{
    return __openat_2(AT_FDCWD, path, flags);
}

__attribute__((visibility("default")))
int __openat64_2(int dirfd, const char *path, int flags)
{
    return __openat_2(dirfd, path, flags);
}

/* Whether stdio @mode lets the stream write ("w", "a" or "+"). */
static bool writable_mode(const char *mode)
{
    return mode && strpbrk(mode, "wa+") != NULL;
}

/*
 * stdio: a stream writes with libc's own calls, which no wrapper sees, so
 * a block's file opened (or a descriptor of it wrapped) for writing is
 * taken as changed at once.  Found by review: fopen(block, "r+") and a
 * fputc changed it unseen.
 */
__attribute__((visibility("default")))
FILE *fopen(const char *path, const char *mode)
{
    if (writable_mode(mode) && !may_change_path(AT_FDCWD, path)) {
        return NULL;
    }
    return NEXT(fopen)(path, mode);
}

__attribute__((visibility("default")))
FILE *fopen64(const char *path, const char *mode)
{
    return fopen(path, mode);
}

__attribute__((visibility("default")))
FILE *freopen(const char *path, const char *mode, FILE *stream)
{
    if (writable_mode(mode) && !(path ? may_change_path(AT_FDCWD, path)
                                      : may_write_fd(fileno(stream)))) {
        return NULL;
    }
    return NEXT(freopen)(path, mode, stream);
}

__attribute__((visibility("default")))
FILE *freopen64(const char *path, const char *mode, FILE *stream)
{
    return freopen(path, mode, stream);
}

__attribute__((visibility("default")))
FILE *fdopen(int fd, const char *mode)
{
    if (writable_mode(mode) && !may_write_fd(fd)) {
        return NULL;
    }
    return NEXT(fdopen)(fd, mode);
}

/** pwrite: the libc call, after may_write_fd(). */
__attribute__((visibility("default")))
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return may_write_fd(fd) ? NEXT(pwrite)(fd, buf, n, off) : -1;
}

/** pwrite64: the same. */
__attribute__((visibility("default")))
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite(fd, buf, n, off);
}

/** pwritev2: the libc call, after may_write_fd(). */
__attribute__((visibility("default")))
ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return may_write_fd(fd) ? NEXT(pwritev2)(fd, iov, cnt, off, flags) : -1;
}

/** pwritev, pwritev64, pwritev64v2: the same. */
__attribute__((visibility("default")))
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return may_write_fd(fd) ? NEXT(pwritev)(fd, iov, cnt, off) : -1;
}

__attribute__((visibility("default")))
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return pwritev(fd, iov, cnt, off);
}

__attribute__((visibility("default")))
ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return pwritev2(fd, iov, cnt, off, flags);
}

/** copy_file_range: the libc call, after may_write_fd() of the file written. */
__attribute__((visibility("default")))
ssize_t copy_file_range(int in, off_t *in_off, int out, off_t *out_off, size_t n,
                        unsigned flags)
{
    return may_write_fd(out) ? NEXT(copy_file_range)(in, in_off, out, out_off, n, flags) : -1;
}

/** ftruncate: the libc call, after may_write_fd(). */
__attribute__((visibility("default")))
int ftruncate(int fd, off_t len)
{
    return may_write_fd(fd) ? NEXT(ftruncate)(fd, len) : -1;
}

/** ftruncate64: the same. */
__attribute__((visibility("default")))
int ftruncate64(int fd, off_t len)
{
    return ftruncate(fd, len);
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
            if (overlaps(&pl.tracked[i], addr, len)) {
                ok = mark_untracked(pl.tracked[i].block);
            }
        }
        pthread_mutex_unlock(&pl.lock);
        if (!ok) {
            return -1;
        }
    }
    return (int)syscall(SYS_madvise, addr, len, advice);
}

/* Whether process @pid's file @what (under /proc/PID) contains @needle. */
static bool proc_has(pid_t pid, const char *what, const char *needle, gsize nlen)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/%s", (int)pid, what);
    g_autofree char *text = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &text, &len, NULL)) {
        return false;
    }
    for (gsize i = 0; i + nlen <= len; i++) {
        if (memcmp(text + i, needle, nlen) == 0) {
            return true;
        }
    }
    return false;
}

/* Whether @pid started with SNAPLOAD_BLOCKS holding exactly the item NAME=PATH of @b. */
static bool peer_names_block(pid_t pid, const pl_block *b)
{
    g_autofree char *blocks = sl_client_env_of(pid, "SNAPLOAD_BLOCKS");
    g_autofree char *item = g_strdup_printf("%s=%s", b->name, b->path);
    g_auto(GStrv) items = blocks ? g_strsplit(blocks, ";", -1) : NULL;

    return items && g_strv_contains((const char *const *)items, item);
}

/*
 * Whether process @pid will register its mappings of block @b with our
 * daemon: it has this library loaded and started with our socket and a
 * SNAPLOAD_BLOCKS naming @b with the same file (environ holds the strings
 * it was started with, NUL-separated).
 */
static bool peer_registers(pid_t pid, const pl_block *b)
{
    g_autofree char *sock = g_strdup_printf("SNAPLOAD_SOCKET=%s", pl.socket);

    return proc_has(pid, "maps", "libsnapload-preload", strlen("libsnapload-preload")) &&
           proc_has(pid, "environ", sock, strlen(sock) + 1) && peer_names_block(pid, b);
}

/* Whether @pid tracks its writes too (started with SNAPLOAD_TRACK=1). */
static bool peer_tracks(pid_t pid)
{
    return proc_has(pid, "environ", "SNAPLOAD_TRACK=1", sizeof("SNAPLOAD_TRACK=1"));
}

/* Who receives what a socket sends (receiver_of()). */
typedef enum {
    RECEIVER_NONE,    /* nobody: the kernel refuses the send (not a connected unix socket) */
    RECEIVER_KNOWN,   /* the process of that pid */
    RECEIVER_UNKNOWN, /* some process this one cannot name */
} receiver;

/*
 * Who gets the fds sent on @sock, in *@pid when known.  Only a connected
 * unix stream or seqpacket socket has one peer that SO_PEERCRED names; a
 * datagram goes wherever each send (msg_name) or the connect says, or to
 * whoever holds the other end of a pair, and SO_PEERCRED gives pid 0 for a
 * peer in a pid namespace this process does not see.
 */
static receiver receiver_of(int sock, pid_t *pid)
{
    int domain = 0, type = 0;
    socklen_t len = sizeof(int), clen = sizeof(struct ucred);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    struct ucred cred = { 0 };

    if (getsockopt(sock, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX) {
        return RECEIVER_NONE; /* not a socket, or one that carries no fds */
    }
    len = sizeof(int);
    if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        (type != SOCK_STREAM && type != SOCK_SEQPACKET)) {
        return RECEIVER_UNKNOWN;
    }
    if (getpeername(sock, (struct sockaddr *)&peer, &plen) < 0) {
        return RECEIVER_NONE; /* not connected: the send fails */
    }
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 || cred.pid <= 0) {
        return RECEIVER_UNKNOWN;
    }
    *pid = cred.pid;
    return RECEIVER_KNOWN;
}

/* Ends the process: block @b would go to @pid (0: a process that cannot be named). */
static void refuse_handoff(const pl_block *b, pid_t pid) G_GNUC_NORETURN;

static void refuse_handoff(const pl_block *b, pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/comm", (int)pid);
    g_autofree char *comm = NULL;

    if (pid == 0) {
        die("refusing to hand guest RAM block '%s' (%s) over a socket whose receiving process "
            "cannot be told (a datagram socket, a peer in a pid namespace this process does "
            "not see, or the other end in flight between processes) while the restore still "
            "fills it: it could not be checked to be "
            "registered with the restore, and would read zeros where pages are not in place "
            "yet; hand it over a connected unix stream socket to a process started with "
            "`snapload attach %s -- COMMAND...`", b->name, b->path, pl.socket);
    }
    if (!g_file_get_contents(path, &comm, NULL, NULL)) {
        comm = g_strdup("?");
    }
    g_strchomp(comm);
    die("refusing to hand guest RAM block '%s' (%s) to process %d (%s) while the restore "
        "still fills it: that process is not registered with the restore, so it would read "
        "zeros where pages are not in place yet and its writes there would be overwritten; "
        "start it with `snapload attach %s -- COMMAND...` (or qemu-restore --vhost-user)",
        b->name, b->path, (int)pid, comm, pl.socket);
}

/* Whether @pid may have block @b without more ado: it registers it, and
 * tracks its writes if this process does. */
static bool receiver_ok(pid_t pid, const pl_block *b)
{
    return pid > 0 && peer_registers(pid, b) && (!pl.track || peer_tracks(pid));
}

/*
 * Dies if block @b would reach process @pid (0: one that cannot be named)
 * and that process would not register it; false (errno EIO) if the
 * hand-off must not happen because the daemon did not take note that no
 * list will show the receiver's writes.
 */
static bool check_receiver(pl_block *b, pid_t pid)
{
    if (receiver_ok(pid, b)) {
        return true;
    }
    if (atomic_load_explicit(&pl.pending, memory_order_relaxed) == 0 ||
        (pid > 0 && peer_registers(pid, b))) {
        /* Filled, or served: the receiver reads correct bytes, but no list
         * will show what it writes (nothing to say when not tracking). */
        bool ok = true;

        if (pl.track) {
            pthread_mutex_lock(&pl.lock);
            ok = mark_untracked(b);
            pthread_mutex_unlock(&pl.lock);
        }
        return ok;
    }
    refuse_handoff(b, pid);
}

/* The inode of the unix socket at the other end of @sock (sock_diag), or
 * 0 if it cannot be told. */
static uint64_t peer_inode(int sock)
{
    struct {
        struct nlmsghdr h;
        struct unix_diag_req r;
    } q = { .h = { .nlmsg_len = sizeof(q), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                   .nlmsg_flags = NLM_F_REQUEST },
            .r = { .sdiag_family = AF_UNIX, .udiag_states = ~0u, .udiag_show = UDIAG_SHOW_PEER,
                   .udiag_cookie = { ~0u, ~0u } } };
    union {
        struct nlmsghdr h;
        char b[1024];
    } a;
    struct stat st;
    uint64_t peer = 0;
    ssize_t n = 0;
    int nl;

    if (fstat(sock, &st) < 0 ||
        (nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG)) < 0) {
        return 0;
    }
    q.r.udiag_ino = (uint32_t)st.st_ino;
    if (send(nl, &q, sizeof(q), 0) == (ssize_t)sizeof(q)) {
        n = recv(nl, &a, sizeof(a), MSG_DONTWAIT); /* answered within the send */
    }
    if (n > 0 && NLMSG_OK(&a.h, (size_t)n) && a.h.nlmsg_type == SOCK_DIAG_BY_FAMILY &&
        a.h.nlmsg_len >= NLMSG_LENGTH(sizeof(struct unix_diag_msg))) {
        int len = (int)(a.h.nlmsg_len - NLMSG_LENGTH(sizeof(struct unix_diag_msg)));
        struct rtattr *at = (struct rtattr *)((struct unix_diag_msg *)NLMSG_DATA(&a.h) + 1);

        for (; RTA_OK(at, len); at = RTA_NEXT(at, len)) {
            if (at->rta_type == UNIX_DIAG_PEER && RTA_PAYLOAD(at) >= sizeof(uint32_t)) {
                uint32_t v;
                memcpy(&v, RTA_DATA(at), sizeof(v));
                peer = v;
            }
        }
    }
    close(nl);
    return peer;
}

/* Whether process @pid runs as (real or effective uid) this process's
 * effective user, as /proc/PID/status says (readable for any process). */
static bool same_user(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)pid);
    g_autofree char *text = NULL;
    const char *uid;
    unsigned real, eff;

    if (!g_file_get_contents(path, &text, NULL, NULL) || !(uid = strstr(text, "\nUid:")) ||
        sscanf(uid + strlen("\nUid:"), "%u %u", &real, &eff) != 2) {
        return true; /* cannot tell: as if it were */
    }
    return real == geteuid() || eff == geteuid();
}

/* 1 if process @pid holds a descriptor whose link reads @want, 0 if not
 * (or it is gone, or it is another user's that this one may not look
 * into, or the link cannot be read: taken as not holding it), -1 if the
 * descriptors of a process of this user cannot be listed. */
static int holds(pid_t pid, const char *want)
{
    g_autofree char *dir = g_strdup_printf("/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;

    if (!d) {
        return errno == ENOENT ? 0 : errno == EACCES && !same_user(pid) ? 0 : -1;
    }
    while (found == 0 && (e = readdir(d))) {
        g_autofree char *link = g_strdup_printf("%s/%s", dir, e->d_name);
        char target[64];
        ssize_t n = readlink(link, target, sizeof(target) - 1);

        if (n > 0) { /* one it may not read (init's, under some sandboxes) is taken as not it */
            target[n] = '\0';
            found = strcmp(target, want) == 0;
        }
    }
    closedir(d);
    return found;
}

/* Whether process @pid is exiting or gone: a live process has a memory
 * map, and the kernel drops an exiting one's before its descriptors. */
static bool exiting(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/maps", (int)pid);
    g_autofree char *maps = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &maps, &len, NULL)) {
        g_autofree char *dir = g_strdup_printf("/proc/%d", (int)pid);
        return access(dir, F_OK) != 0; /* unreadable (another user's): not gone */
    }
    return len == 0;
}

/* The processes that hold the socket whose link reads @want, this one
 * included, into @pids; false if some process of this user cannot be
 * looked into. */
static bool holders_of(const char *want, GArray *pids)
{
    DIR *proc = opendir("/proc");
    struct dirent *e;
    bool all = proc != NULL;

    while (all && (e = readdir(proc))) {
        char *end;
        pid_t pid = (pid_t)strtol(e->d_name, &end, 10);
        int h;

        if (pid <= 0 || *end) {
            continue;
        }
        h = holds(pid, want);
        all = h >= 0;
        if (h > 0) {
            g_array_append_val(pids, pid);
        }
    }
    if (proc) {
        closedir(proc);
    }
    return all;
}

/*
 * check_receiver() of whoever holds the other end of @sock now, where
 * SO_PEERCRED named this process (@pid, a pair of its own) or one that
 * does not register the block: it names who made a pair or connected, not
 * who holds the other end now.  A holder that lets the end go or exits
 * while it is looked at (a back-end's forked child) is not held against
 * the send; no holder at all is an end in flight between processes.
 * Where the holders cannot be told, check_receiver() of @pid itself (0
 * for this process).
 */
static bool check_holders(pl_block *b, int sock, pid_t pid)
{
    g_autoptr(GArray) pids = g_array_new(false, false, sizeof(pid_t));
    uint64_t peer = peer_inode(sock);
    g_autofree char *want = g_strdup_printf("socket:[%" G_GUINT64_FORMAT "]", peer);

    if (!peer || !holders_of(want, pids)) {
        return check_receiver(b, pid == getpid() ? 0 : pid);
    }
    if (pids->len == 0) {
        return check_receiver(b, 0);
    }
    for (guint i = 0; i < pids->len; i++) {
        pid_t h = g_array_index(pids, pid_t, i);
        if (h == getpid() || receiver_ok(h, b) || holds(h, want) == 0 || exiting(h)) {
            continue;
        }
        if (!check_receiver(b, h)) {
            return false;
        }
    }
    return true;
}

/*
 * Dies if @fd is a block's file and the receiver of @sock would not
 * register it (or cannot be told to); false (errno EIO) as
 * check_receiver().
 */
static bool check_handoff(int sock, int fd)
{
    pid_t pid = 0;
    receiver who;
    pl_block *b;

    pthread_mutex_lock(&pl.lock);
    b = match_block(fd);
    pthread_mutex_unlock(&pl.lock);
    who = b ? receiver_of(sock, &pid) : RECEIVER_NONE;
    if (who == RECEIVER_NONE) {
        return true; /* no block, or a send the kernel refuses */
    }
    if (who == RECEIVER_UNKNOWN) {
        return check_receiver(b, 0);
    }
    if (pid != getpid() && receiver_ok(pid, b)) {
        return true; /* the usual case, a registered back-end: no scan */
    }
    /* A pair of its own (found by review: one whose other end went to a
     * child that exec'd a plain program, or was in flight to one, passed as
     * a send to itself), or one whose maker registers nothing (a launcher
     * such as libvirt made it, and a registered back-end holds the other
     * end: found by review, the VMM was ended).  Whoever holds it now. */
    return check_holders(b, sock, pid);
}

/*
 * Whether control message @c of @msg lies whole in msg_control; its fds,
 * if it carries any, in *@fds and *@n.  One that does not (cmsg_len below
 * the header's or past msg_controllen) makes the kernel refuse the whole
 * send with EINVAL, so nothing is handed over, and the bytes it claims
 * past the buffer are not ours to read.
 */
static bool carried_fds(const struct msghdr *msg, const struct cmsghdr *c, const int **fds,
                        size_t *n)
{
    size_t room = msg->msg_controllen - (size_t)((const uint8_t *)c -
                                                 (const uint8_t *)msg->msg_control);

    *n = 0;
    if (c->cmsg_len < CMSG_LEN(0) || c->cmsg_len > room) {
        return false;
    }
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        *fds = (const int *)CMSG_DATA(c);
        *n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    }
    return true;
}

/* check_handoff() of every fd @msg carries on @sock; false at the first refused. */
static bool check_msg(int sock, const struct msghdr *msg)
{
    if (!msg || !msg->msg_control) {
        return true;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        const int *fds = NULL;
        size_t nfds;

        if (!carried_fds(msg, c, &fds, &nfds)) {
            break; /* malformed: the kernel refuses the send */
        }
        for (size_t i = 0; i < nfds; i++) {
            int fd;

            memcpy(&fd, fds + i, sizeof(fd));
            if (!check_handoff(sock, fd)) {
                return false;
            }
        }
    }
    return true;
}

/* Whether a send of fds must be checked: a restore runs or writes are tracked. */
static bool checks_sends(void)
{
    return pl.active && !pl_talking &&
           (pl.track || atomic_load_explicit(&pl.pending, memory_order_relaxed) > 0);
}

/** sendmsg: the libc call, after checking the guest RAM it hands to a peer. */
__attribute__((visibility("default")))
ssize_t sendmsg(int sock, const struct msghdr *msg, int flags)
{
    if (checks_sends() && !check_msg(sock, msg)) {
        return -1;
    }
    return NEXT(sendmsg)(sock, msg, flags);
}

/**
 * sendmmsg: the libc call, after checking the guest RAM each of its
 * messages hands to a peer; none is sent if one is refused.
 */
__attribute__((visibility("default")))
int sendmmsg(int sock, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    if (checks_sends() && vec) {
        for (unsigned int i = 0; i < vlen && i < UIO_MAXIOV; i++) {
            if (!check_msg(sock, &vec[i].msg_hdr)) {
                return -1;
            }
        }
    }
    return NEXT(sendmmsg)(sock, vec, vlen, flags);
}
