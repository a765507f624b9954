/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the files of the preload client (libsnapload-preload.so) share: the
 * configured blocks, the mappings handed to the daemon, the locks that
 * guard them, and the look-up of the libc calls the wrappers go on to.
 * preload.c owns the state (its constructor fills it, mmap, munmap and
 * mremap change it); preload-writes.c (write tracking for restarts) and
 * preload-handoff.c (guest RAM sent to a peer) read it and mark blocks
 * untracked through the calls below.  The module is built with hidden
 * visibility: none of these names reaches the VMM.
 */
#ifndef SNAPLOAD_PRELOAD_H
#define SNAPLOAD_PRELOAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <glib.h>
#include "client.h"
#include "preload-guard.h"

#define MAX_BLOCKS 16
#define MAX_TRACKED 32

/* A guest RAM block of SNAPLOAD_BLOCKS. */
typedef struct {
    char *name;
    char *path;       /* NULL: anonymous */
    uint64_t size;    /* anonymous: its length */
    bool handed;      /* anonymous: registered already */
    dev_t dev;        /* identity of the file, once it was seen mapped */
    ino_t ino;
    bool untracked;   /* tracking: the file changed where no list shows it */
} pl_block;

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

/*
 * The client's state.  Written by the constructor before any other thread
 * exists, then only under `lock` (mmap may be called from any thread), but
 * for `pending` (atomic) and `guards` (under `glock`: a supervisor thread
 * updates them at DONE while a thread holding `lock` may wait for it).
 */
typedef struct {
    pthread_mutex_t lock;         /* recursive: pl_init_lock() */
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
     * lock that a write is to no block (preload-writes.c); written by the
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
} pl_state;

/** The client's one state (preload.c). */
extern pl_state pl;

/** Set while this thread talks to the daemon: its own sendmsg of a block's
 * file (REGISTER) is not a hand-off to a peer. */
extern __thread bool pl_talking;

/** Ends the process (SIGKILL) after one line on stderr. */
void pl_die(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;

/** The configured block whose file @st describes, or NULL (lock held). */
pl_block *pl_match_stat(const struct stat *st);

/** The configured block whose file @fd is, or NULL (lock held). */
pl_block *pl_match_block(int fd);

/** Whether tracked mapping @t overlaps [@addr, +@len). */
bool pl_tracked_overlaps(const pl_tracked *t, const void *addr, size_t len);

/**
 * Tracking: block @b's file is about to change where no list shows it
 * (lock held); the daemon is told first.  False (errno EIO) if it did not
 * confirm: the caller must not make the change.
 */
bool pl_mark_untracked(pl_block *b);

/** pl_mark_untracked() of the block whose file @st describes, if any (takes
 * the lock); false if refused. */
bool pl_note_untracked_stat(const struct stat *st);

/** pl_note_untracked_stat() of the file @fd is, if any. */
bool pl_note_untracked_fd(int fd);

/*
 * The wrapped calls go on to the next definition of their name (libc's),
 * looked up once: not to the raw system call, which would drop what libc
 * does around it (a blocking write or open is a cancellation point; found
 * by review: pthread_cancel no longer ended them in any process run with
 * this library).  Each slot is written once with the same value: relaxed
 * would do, acquire/release keeps a reader from a half-made lookup.
 */
typedef void *_Atomic pl_fn_slot;

/* Every libc call a wrapper goes on to. */
#define PL_NEXT_FNS(X)                                                                    \
    X(fallocate) X(write) X(writev) X(sendfile) X(splice) X(truncate) X(openat)        \
    X(__openat_2) X(fopen) X(freopen) X(fdopen) X(pwrite) X(pwritev) X(pwritev2)      \
    X(copy_file_range) X(ftruncate) X(sendmsg) X(sendmmsg)

#define PL_NEXT_SLOT(name) pl_fn_slot name;
/* One slot per name of PL_NEXT_FNS. */
typedef struct {
    PL_NEXT_FNS(PL_NEXT_SLOT)
} pl_next_fns;
#undef PL_NEXT_SLOT

/** The slots (preload.c), filled by its constructor. */
extern pl_next_fns pl_next;

/** The next definition of @name, looked up into *@slot if not yet there. */
void *pl_next_fn(pl_fn_slot *slot, const char *name);

/* The libc function our wrapper @name stands in front of, typed as ours. */
#define NEXT(name) ((__typeof__(&name))pl_next_fn(&pl_next.name, #name))

#endif
