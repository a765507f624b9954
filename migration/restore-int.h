/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Internal state of a lazy restore, shared by the lifecycle code
 * (restore.c) and the engine: placement (engine.c), the fault thread
 * (fault.c) and the loaders (loader.c).
 *
 * Ownership:
 * - Everything set by sl_restore_new()/attach()/start() (regions, their
 *   memory, unit sizes, fds, times t_start/t_ready) is written by the
 *   caller's thread before the worker threads exist, and read-only after.
 * - The uffd message stream is read only by the fault thread, which alone
 *   unregisters the ranges on completion.
 * - Placement ioctls are issued by whichever thread won the page's claim in
 *   the region's page map.
 * - Counters and the histogram are relaxed atomics (statistics only).
 * - status/stopping/remaining are the synchronising atomics; each use says
 *   what it pairs with.
 */
#ifndef SNAPLOAD_RESTORE_INT_H
#define SNAPLOAD_RESTORE_INT_H

#include <stdatomic.h>
#include "migration/format/format.h"
#include "histogram.h"
#include "numa.h"
#include "pagemap.h"
#include "../backends/backend.h"

#define SL_CHUNK_BYTES (1u << 20) /* loader read size for runs of pages */
#define SL_MOVE_BYTES (2u << 20)   /* chunk of a region whose loaders move (reg->move) */
#define SL_CLAIM_BYTES (64u << 10) /* in-place loaders claim at most this before reading */
#define SL_STRIPE_BYTES (64u << 20) /* largest interleave stripe (docs/numa.md) */
#define SL_WINDOW_BYTES (128u << 10) /* locality window after a fault (>= 2 units up to 2 MiB) */
#define SL_HINTS 256               /* ring of recent faults for the locality window */
#define SL_NODEMASK_WORDS 16       /* node masks: real memory nodes up to 1023 */

/* A run of units of one region: a piece of prefetch work. */
typedef struct {
    uint32_t region;
    uint64_t unit, n;
} sl_run;

/*
 * Global chunk numbers [first, first + n) that one group owns; @before:
 * how many chunks the group's earlier spans hold (its cursor's index of
 * @first).  A group holds one span per stripe, not one entry per chunk,
 * so setting them up does not grow with guest RAM.
 */
typedef struct {
    uint64_t first, n, before;
} sl_span;

/*
 * One prefetch group: the loader threads of one NUMA node.  Set up by the
 * caller's thread in sl_restore_start() and read-only after, except the
 * cursors (relaxed fetch_add: they only hand out distinct indices).
 */
typedef struct {
    unsigned index;            /* topology index of the node */
    unsigned nthreads;
    sl_span *spans;            /* the global chunks this node owns, file order */
    unsigned nspans;
    uint64_t nchunks;          /* in all spans */
    _Atomic uint64_t next_chunk;
    /* Units a reset dropped, of this node's memory (reset.c): set by the
     * caller's thread while no loader runs, read-only once they run. */
    sl_run *redo;
    uint64_t nredo;
    _Atomic uint64_t next_redo;
    sl_run *hot;               /* hot-page list entries of this node, coalesced */
    uint64_t nhot;
    _Atomic uint64_t next_hot;
    _Atomic uint64_t next_hint; /* next fault hint (sequence number) to look at */
} sl_group;

/* Block offsets [lo, hi) of a mapping of ours whose block starts at @base
 * (where it was, or where a move put it): still registered, to seal (lost.c). */
typedef struct {
    uint64_t base, lo, hi;
    bool emptied; /* a move's source, left registered and empty by MREMAP_DONTUNMAP
                   * unless its unmap event clips it away first */
} sl_lost_piece;

typedef struct sl_region {
    sl_restore *r;
    unsigned index;          /* position in r->regions */
    unsigned block;          /* index in the snapshot */
    int bind;                /* topology index of the node, -1: interleaved stripes */
    /* How we bind the memory to its node (set up before the workers exist,
     * read-only after): MPOL_BIND (a caller's binding, a node hint, or
     * interleave), MPOL_PREFERRED (nothing asked, the memory had no
     * policy), or MPOL_DEFAULT: not at all, the memory keeps the policy it
     * carried (a VMM's, on a memory file's shared policy). */
    int policy;
    uint64_t stripe_units;   /* interleave granule, a multiple of chunk_units */
    uint64_t first_stripe;   /* interleave: rotation position of the first stripe */
    uint64_t window;         /* units prefetched after a fault (0: none) */
    uint64_t around;         /* fault-around block in units, a power of two (1: off) */
    uint32_t *order;         /* trace_order: placement sequence number of each unit */
    uint64_t *recorded;      /* record: units already in the fault list (fault thread) */
    uint64_t last_fault;     /* fault thread: last unit the previous fault served, for the window */
    const sl_block *blk;
    sl_mem mem;
    sl_pagemap *map;         /* one entry per placement unit */
    uint64_t unit;           /* placement unit: max(snapshot page, backend page) */
    uint64_t ratio;          /* snapshot pages per unit */
    uint64_t nunits;
    uint64_t chunk_units;    /* units per loader chunk */
    uint64_t first_chunk;    /* global index of this region's first chunk */
    uint64_t nchunks;
    uint64_t claim_units;    /* in_place: units claimed per read */
    uint64_t ioctls;         /* range ioctls granted at our registration */
    /* keep_memory with sl_restore_keep_known(): one bit per snapshot page
     * that may differ from the snapshot in the reused file (listed by the
     * caller, or a hole); set before start; after it, only a dropping reset
     * sets more bits (its thread, before it forgets those units: a fault
     * reads them only once the pagemap shows them absent).  NULL: every
     * unit is checked. */
    uint64_t *changed;
    /* busy.c mark on the memory file while pages are missing (-1: none):
     * set at start by the caller's thread, cleared by the fault thread at
     * completion (finish()) or by sl_restore_free(). */
    int busy;
    /* Pieces of our own mapping still registered on r->uffd once part of
     * it was unmapped or moved (lost.c), to seal; NULL until then.  The
     * fault thread's, then the stopping thread's once it was joined. */
    GArray *lost;            /* sl_lost_piece */
    bool registered;         /* our own view is registered on r->uffd: set at start
                              * (caller's thread); cleared by the fault thread
                              * (completion, or lost.c) or the stop's seal, which
                              * runs after the fault thread was joined */
    /* Ranges of our own mapping marked MADV_DONTFORK while pages are
     * missing (fork.c): set by the caller's thread at start, given back
     * and cleared where our view is unregistered at completion (under
     * views_lock), else freed with the region (a restore that did not
     * complete keeps its memory out of children). */
    GArray *fork_guard;
    bool move;               /* loaders move whole chunks into our own view (ops->adopt):
                              * set before the loaders start, read-only after */
    /* Consumer mappings.  A slot is filled, then nviews is raised with a
     * release store (under views_lock); readers load nviews with acquire,
     * then the slot (sl_region_view: acquire).  A slot whose view died may
     * be refilled (release store, under views_lock): the dead view moves to
     * dead_views, so a thread still holding it finds it dead. */
    _Atomic(sl_view *) views[SL_MAX_VIEWS];
    _Atomic unsigned nviews;
    GPtrArray *dead_views;   /* under views_lock: views replaced in their slot (freed last) */
} sl_region;

typedef struct {
    _Atomic uint64_t faults, faults_on_claimed, faults_on_present;
    _Atomic uint64_t pages_by_fault, pages_by_loader, zero_pages;
    _Atomic uint64_t bytes_read, checksum_failures, eexist, eagain;
    _Atomic uint64_t checksum_ns, loader_ns_max;
    _Atomic uint64_t pages_by_node[SL_MAX_NODES];
    _Atomic uint64_t wrong_node, cpu_violations, pages_by_hint;
    _Atomic uint64_t thp_bytes, pages_kept, pages_known;
    _Atomic uint64_t bytes_direct;
    _Atomic uint64_t pages_moved, pages_around, faults_split;
} sl_counters;

struct sl_restore {
    sl_snapshot *snap;
    sl_restore_config cfg;
    GPtrArray *regions;        /* sl_region *, fixed once started */
    int uffd;
    int ctl_efd;               /* wakes the fault thread: stop or complete */
    int done_efd;              /* readable once the restore has finished */
    GThread *fault_thread;
    int fault_fd;              /* the snapshot opened again for the fault thread's reads
                                * (own readahead state, random), or -1: read through
                                * snap->fd; set before it starts, closed in free */
    int direct_fd;             /* the snapshot opened O_DIRECT for the loaders' direct
                                * reads (config.direct_reads), or -1: set before they
                                * start (spawn_loaders), closed in free */
    uint64_t direct_chunk;     /* with direct_fd: the largest chunk read directly (its
                                * buffers' size); set before the loaders start */
    GThread *prefault_thread;  /* ops->prefault of the units with data, ahead of all */
    /* Why a metadata segment failed the restore (engine.c sl_prove_units()):
     * set once by CAS (release) before the
     * status; sl_restore_error() loads it (acquire).  Freed with @r. */
    _Atomic(GError *) meta_error;
    GThread **loaders;
    unsigned nloaders;
    uint64_t total_chunks;
    sl_topology topo;
    sl_group *groups;          /* one per topology node */
    unsigned ngroups;
    uint64_t hot_units;
    GArray *recorded;          /* record: 16-byte hot-list entries (fault thread) */
    /* Fault hints: the fault thread writes hints[seq % SL_HINTS] then bumps
     * hint_seq (release); loaders load hint_seq (acquire) and read the slot.
     * A slot overwritten meanwhile only yields a stale hint (harmless). */
    _Atomic uint64_t hint_seq;
    _Atomic uint64_t hints[SL_HINTS];
    _Atomic uint32_t order_seq; /* trace_order counter (relaxed) */
    uint64_t max_bounce;       /* largest unit of a bounce (non in-place) region */
    uint64_t max_chunk;        /* bytes of the largest chunk of a bounce region: a
                                * loader's buffer (0: no bounce region) */
    GMutex views_lock;         /* serialises adding views against their unregistration */
    /* Held by the fault thread from finding a unit settled to mapping it
     * into the faulting view (fault.c, serve_other); a dropping reset
     * passes it between forgetting its units and dropping them (reset.c). */
    GMutex show_lock;
    /* Held by sl_restore_reset(), sl_restore_written(), the saves (save.c)
     * and sl_restore_stop() for their whole call, on the caller's thread:
     * one of them at a time.  A save beside a dropping reset read dropped
     * units of shared memory as holes; a stop beside one sealed what the
     * reset then dropped.  Taken after stop_lock, never before it. */
    GMutex save_reset_lock;
    /* Held by sl_restore_stop() for its whole call: a second stop (another
     * thread's) returns only once the first has sealed the memory. */
    GMutex stop_lock;
    bool views_closed;         /* under views_lock: completed or stopped, no view joins */
    bool keep_uffd;            /* under views_lock (the stop's seal, or lost.c on the fault
                                * thread): our view stayed registered, never close */
    bool unmap_events;         /* our uffd reports unmaps and moves of our mappings
                                * (lost.c); set before the fault thread starts */
    _Atomic bool lost_memory;  /* a mapping of ours was unmapped or moved: set once by
                                * the fault thread, or by the stop's drain once it was
                                * joined (lost.c); read by sl_engine_fail() */
    /* Held for reading by each placement into our own views, from its
     * check of the view's dead flag to the end of its ioctl; for writing by
     * the fault thread across a read of our uffd whenever an unmap may be
     * in progress: @held_back was set (a placement met EAGAIN; exchanged
     * by the fault thread, seq_cst, pairs with the store in uffd.c), or
     * sl_uffd_changing() says so. */
    pthread_rwlock_t place_lock;
    _Atomic bool held_back;
    /* Bumped (release) after a view is added; the fault thread (acquire)
     * rebuilds its poll set when it changes. */
    _Atomic unsigned views_gen;
    /* Fault thread only: the generation whose completion it handled last
     * (0: none yet).  Generation 1 is the restore; each reset starts one. */
    uint64_t finished_gen;
    /* Bumped (release) by a reset after it raised @remaining; the fault
     * thread loads it (acquire) before @remaining to tell a completion it
     * has not handled yet. */
    _Atomic uint64_t generation;
    int pagemap_fd;            /* track_writes: /proc/self/pagemap (set at start), else -1 */
    /* reset_in_place: units that may have been written while a reset ran
     * (a writer was not paused), owed to the next reset and listed by
     * sl_restore_written() until then (sl_run, sorted, disjoint).  The
     * caller's thread only (reset.c); NULL when none. */
    GArray *raced;
    uint32_t tracking;         /* SL_TRACK_*: set at start, read-only after */
    _Atomic uint64_t resets;   /* resets that brought units back (statistics, relaxed) */
    /* reset_in_place (reset-inplace.c, caller's thread only): the snapshot file
     * mapped read-only and populated at the first in-place reset, so that
     * rewriting a unit is a copy, not a read call; NULL: not (yet) mapped,
     * or not mappable (a chain, an external block): pread then. */
    const uint8_t *snap_map;
    uint64_t snap_map_len;
    bool snap_map_tried;
    bool started;              /* caller's thread only */
    bool stopped;              /* written under stop_lock and save_reset_lock */

    /* Units not yet PRESENT; acq_rel decrement, the one reaching 0 signals. */
    _Atomic uint64_t remaining;
    /* Set (release) before writing ctl_efd; workers load it (acquire). */
    _Atomic bool stopping;
    /* Set (release) by sl_restore_stop() before @stopping: the fault
     * thread ends.  @stopping alone (a failure) leaves it answering each
     * fault on a missing unit by sealing it there (fault.c), so that a
     * thread touching guest RAM gets SIGBUS at once, not a wait until the
     * stop.  Loaded (acquire) by the fault thread once it saw @stopping. */
    _Atomic bool halting;
    /* -EINPROGRESS, then 0 or -errno; set once by CAS (release), read
     * acquire.  A reset (reset.c, caller's thread) sets a 0 back to
     * -EINPROGRESS before it publishes its generation (release). */
    _Atomic int status;
    /* First per-page error that did not stop the restore (e.g. -EBADMSG). */
    _Atomic int page_error;
    /* The first refused page, sl_bad_page_pack()ed, 0 if none: set once by
     * CAS (release) before its unit is counted done; read (acquire) by
     * sl_restore_error() once the restore has ended. */
    _Atomic uint64_t bad_page;
    /* The first read of the snapshot that failed, for sl_restore_error():
     * the thread that wins @read_failure_claimed (CAS, relaxed) writes
     * @read_failure_pages and @read_failure_errno (relaxed), then stores
     * @read_failure, sl_bad_page_pack()ed block and first page (release;
     * read acquire, then the other two). */
    _Atomic bool read_failure_claimed;
    _Atomic uint64_t read_failure, read_failure_pages;
    _Atomic int read_failure_errno;

    /* Test hook, NULL in production: called by a loader right after it
     * claimed units [u, u+n) of region @region, before reading or placing
     * them.  Set before sl_restore_start(), read-only after. */
    void (*loader_claimed)(void *opaque, unsigned region, uint64_t u, uint64_t n);
    void *loader_claimed_opaque;
    /* Test hook, NULL in production: called by a loader that staged the
     * whole chunk [u, u+n) of region @region to move it (reg->move), right
     * before it claims the chunk's units.  Set before sl_restore_start(). */
    void (*loader_staged)(void *opaque, unsigned region, uint64_t u, uint64_t n);
    void *loader_staged_opaque;
    /* Test hook, NULL in production: called by a thread other than the
     * fault thread about to leave a consumer's view that is dead (retired
     * or dropped), still inside it.  Set before sl_restore_start(). */
    void (*dead_view_leaving)(void *opaque);
    void *dead_view_leaving_opaque;
    /* Test hook, NULL in production: called by the fault thread's around
     * assistant when it starts on the neighbours of a cold fault, the run
     * [u, u+n) of region @region (its faulted unit already served).  Set
     * before sl_restore_start(). */
    void (*around_posted)(void *opaque, unsigned region, uint64_t u, uint64_t n);
    void *around_posted_opaque;
    /* Test hook, NULL in production: called by an in-place reset on the
     * caller's thread after it rewrote the written units and before it
     * protects them again (where a racing writer's bytes would be hidden
     * from the tracking).  Set while no reset runs. */
    void (*reset_rewritten)(void *opaque);
    void *reset_rewritten_opaque;
    /* Test hook, NULL in production: called by an in-place reset on the
     * caller's thread once it found the mapped snapshot whole and before
     * it copies from it (where the file may be truncated under it).  Set
     * while no reset runs. */
    void (*reset_rewriting)(void *opaque);
    void *reset_rewriting_opaque;
    /* Test hook, NULL in production: called by a dropping reset on the
     * caller's thread right after it set the status back to in progress
     * (where a failure of the fault thread, serving a reader, may land).
     * Set while no reset runs. */
    void (*reset_reopened)(void *opaque);
    void *reset_reopened_opaque;
    /* Test hook, NULL in production: called by a reset on the caller's
     * thread between its scan of the pages that left the page tables and
     * its scan of the written ones (where a reader's fault may map a
     * page).  Set while no reset runs. */
    void (*reset_between_scans)(void *opaque);
    void *reset_between_scans_opaque;
    /* Test hook, NULL in production: called by the fault thread, holding
     * views_lock, after it set the status of a completion and before it
     * signals done_efd (where it may be preempted).  Set before
     * sl_restore_start(). */
    void (*finish_signalling)(void *opaque);
    void *finish_signalling_opaque;
    /* Test hook, NULL in production: called by the fault thread when every
     * unit is settled, before completion checks the snapshot file one last
     * time (a change after the last placement's own check).  Set before
     * sl_restore_start(). */
    void (*finish_checking)(void *opaque);
    void *finish_checking_opaque;
    /* Test hook, NULL in production: called by the fault thread when a
     * fault found unit @u of region @region settled (PRESENT or POISONED),
     * right before it maps the unit into the faulting view (a page the
     * guest discarded gets zeros there).  Set before sl_restore_start(). */
    void (*fault_showing)(void *opaque, unsigned region, uint64_t u);
    void *fault_showing_opaque;
    /* Test hook, NULL in production: called by a full save on the
     * caller's thread after it found where a run's bytes are and before it
     * reads them.  Set while no save runs. */
    void (*save_reading)(void *opaque);
    void *save_reading_opaque;
    /* Test hook, 0 in production: optional UFFD_FEATURE_* bits (POISON,
     * MOVE, the async WP set, EVENT_UNMAP/REMAP) that the restore takes as
     * absent from the kernel for its own uffd, so that a host that has
     * them all also runs the paths of kernels without them (Debian 12's
     * 6.1 has none of these).  Set before sl_restore_start(). */
    uint64_t uffd_features_withheld;

    uint64_t t_start, t_ready;
    _Atomic uint64_t t_first_fault, t_complete;
    sl_histogram fault_hist;
    sl_counters c;
};

/* bad_page: snapshot block index above bit 52, page index below, plus one. */
#define SL_BAD_PAGE_SHIFT 52

/** The bad_page value of page @page of snapshot block @block (never 0: 0 is none). */
static inline uint64_t sl_bad_page_pack(unsigned block, uint64_t page)
{
    return ((uint64_t)block << SL_BAD_PAGE_SHIFT | page) + 1;
}

/** The block of @packed (sl_bad_page_pack()'s, not 0). */
static inline unsigned sl_bad_page_block(uint64_t packed)
{
    return (unsigned)((packed - 1) >> SL_BAD_PAGE_SHIFT);
}

/** The page of @packed (sl_bad_page_pack()'s, not 0). */
static inline uint64_t sl_bad_page_index(uint64_t packed)
{
    return (packed - 1) & ((1ull << SL_BAD_PAGE_SHIFT) - 1);
}

/**
 * sl_mem_attach (restore.c): attach @m (backends/) as block @name of
 * restore @r, through sl_restore_attach_file() for file-backed memory,
 * sl_restore_attach() else.  The restore knows the backends; they never
 * call back into it.
 */
bool sl_mem_attach(sl_restore *r, const char *name, const sl_mem *m, GError **errp);

/**
 * sl_region_known_unit (keep.c): whether unit @u of @reg's reused file is
 * known to hold the snapshot (sl_restore_keep_known() listed none of its
 * pages as changed, and none is a hole); false when nothing is known.
 */
bool sl_region_known_unit(const sl_region *reg, uint64_t u);

/**
 * sl_region_file_pages (keep.c): which pages of @reg's part of its shared
 * memory file (shmem or hugetlbfs) the page cache holds, one byte per page
 * of the file (1: held; *@fp: that page's size), read with one mincore()
 * of a fresh read-only mapping that neither faults nor populates.  A
 * hugepage may read as absent (no room for the aligned mapping it needs),
 * never an absent one as held.  A swapped-out shmem page reads as absent.
 * NULL with *@err = -errno on failure; the caller frees.
 */
unsigned char *sl_region_file_pages(const sl_region *reg, uint64_t *fp, int *err);

/** sl_region_of_block (restore.c): the region of block @name in @r, or NULL. */
sl_region *sl_region_of_block(sl_restore *r, const char *name);

/*
 * The engine's allocation of every view: the backend's sl_view, then the
 * bytes [off, off + len) of the block it maps.  A consumer may map only a
 * part of a block: a vhost-user back-end maps each memory region QEMU
 * sends it, and QEMU splits a pc guest's RAM below and above 4 GiB.  The
 * backends never see the range: they are only ever asked to place inside
 * it, at v->base + (offset in the block), v->base being where the block's
 * first byte would be in that process (the range's address less @off; it
 * may wrap, no address outside the range is ever used).  Set before the
 * view is published and read-only after, like sl_view's own fields.  Kept
 * out of sl_view (backends/backend.h) so that backends stay unaware.
 */
typedef struct {
    sl_view v;          /* first: every sl_view * of the engine points at one of these */
    uint64_t off, len;  /* the block's bytes this view maps; unit-aligned (views.c) */
} sl_ranged_view;

/** The sl_ranged_view that view @v is the first member of (every engine view is). */
static inline const sl_ranged_view *sl_view_ranged(const sl_view *v)
{
    return (const sl_ranged_view *)(const void *)v;
}

/** Where view @v's range starts in its process. */
static inline uint64_t sl_view_addr(const sl_view *v)
{
    return v->base + sl_view_ranged(v)->off;
}

/** Bytes of the block view @v maps. */
static inline uint64_t sl_view_len(const sl_view *v)
{
    return sl_view_ranged(v)->len;
}

/** The units of @reg that view @v maps: [*u0, *u1) (none before the units are laid out). */
static inline void sl_view_units(const sl_region *reg, const sl_view *v, uint64_t *u0,
                                 uint64_t *u1)
{
    *u0 = reg->unit ? sl_view_ranged(v)->off / reg->unit : 0;
    *u1 = reg->unit ? (sl_view_ranged(v)->off + sl_view_ranged(v)->len) / reg->unit : 0;
}

/** Whether view @v maps every unit of [@u, @u + @n). */
static inline bool sl_view_covers(const sl_region *reg, const sl_view *v, uint64_t u, uint64_t n)
{
    uint64_t u0, u1;

    sl_view_units(reg, v, &u0, &u1);
    return u >= u0 && u + n <= u1;
}

/**
 * Clips the run [*@u, *@u + *@n) of @reg to the units view @v maps; false
 * when none of them is (nothing to place there).
 */
static inline bool sl_view_clip(const sl_region *reg, const sl_view *v, uint64_t *u, uint64_t *n)
{
    uint64_t u0, u1, lo, hi;

    sl_view_units(reg, v, &u0, &u1);
    lo = MAX(*u, u0);
    hi = MIN(*u + *n, u1);
    if (lo >= hi) {
        return false;
    }
    *u = lo;
    *n = hi - lo;
    return true;
}

/**
 * sl_view_alloc (views.c): a view of block bytes [@off, +@len) at @addr
 * (where byte @off is mapped) on @uffd (not duplicated), with every other
 * field zero; freed with g_free().
 */
sl_view *sl_view_alloc(int uffd, uint64_t addr, uint64_t off, uint64_t len);

/** View @j of @reg (j < nviews); acquire: pairs with the release stores in restore.c. */
static inline sl_view *sl_region_view(const sl_region *reg, unsigned j)
{
    return atomic_load_explicit(&((sl_region *)reg)->views[j], memory_order_acquire);
}

/**
 * sl_engine_drop_view: view @v (not ours) failed with @err or its consumer
 * went away: mark it dead and tell the caller (config.view_dropped), once.
 */
void sl_engine_drop_view(sl_restore *r, sl_view *v, int err);

/** Monotonic clock in nanoseconds. */
uint64_t sl_now_ns(void);

/** Start the fault thread and the loaders (engine.c, fault.c, loader.c). */
bool sl_engine_start(sl_restore *r, GError **errp);

/**
 * sl_engine_join_loaders (loader.c): waits for the loaders to end (after
 * completion they have run out of work).  Caller's thread.
 */
void sl_engine_join_loaders(sl_restore *r);

/**
 * sl_engine_refill (loader.c): starts the loaders again, on the work a
 * reset queued (sl_group.redo), joining any left first.  Caller's thread.
 */
bool sl_engine_refill(sl_restore *r, GError **errp);

/**
 * sl_restore_seal (seal.c): after an unfinished restore's threads are gone,
 * make every unit that is not PRESENT unreadable in every view (poison, or
 * PROT_NONE in our own mapping), then unregister each view sealed
 * completely; one that is not stays registered (then keep_uffd is set if it
 * is ours).  Caller holds views_lock.
 */
void sl_restore_seal(sl_restore *r);

/**
 * sl_seal_let_go (seal.c): seals view @v of @reg (every unit not PRESENT
 * made unreadable there), then unregisters it; false if it could not be
 * sealed completely and so stays registered.  No other thread may use @v.
 */
bool sl_seal_let_go(sl_region *reg, sl_view *v);

/**
 * sl_seal_own_range (seal.c): seals bytes [@lo, @hi) of @reg (page
 * aligned) as our own view @own would be sealed, the block's first byte
 * being at @base (own->base, or where a move put it), then unregisters
 * that range; false if it could not be sealed completely (it then stays
 * registered).  @emptied: the range holds none of the snapshot's pages
 * any more, PRESENT or not (what MREMAP_DONTUNMAP leaves behind): every
 * page not mapped is poisoned.  @bail: an EAGAIN (an unmap in progress,
 * whose event only the caller can read) ends the seal, false, with no
 * PROT_NONE fallback, to be tried again.  For the parts of our mapping
 * still ours once another part was unmapped or moved (lost.c); no other
 * thread may place there any more.
 */
bool sl_seal_own_range(sl_region *reg, const sl_view *own, uint64_t base, uint64_t lo,
                       uint64_t hi, bool emptied, bool bail);

/**
 * sl_lost_read (lost.c): reads what our uffd holds now, without waiting,
 * and handles its unmap and move events (sl_lost_memory()); its faults
 * are dropped.  On the fault thread once it serves no fault any more, or
 * once it was joined.
 */
void sl_lost_read(sl_restore *r);

/**
 * sl_lost_drain (lost.c): reads what our uffd still holds and handles its
 * unmap and move events (sl_lost_memory()); its faults are dropped (the
 * seal or the unregister of their range wakes them).  While an unmap has
 * begun whose event is not posted yet, it waits for it, 2 s at most.  For
 * sl_restore_stop(), once the fault thread was joined.
 */
void sl_lost_drain(sl_restore *r);

/**
 * sl_lost_seal (lost.c): seals and lets go every piece left of a mapping
 * of ours that was unmapped or moved (sl_seal_own_range()).  Unless @now,
 * waits for a later call while the kernel holds ioctls on our uffd back
 * (sl_uffd_changing()): returns true then, pieces still pending.  A piece
 * that cannot be sealed stays registered and sets keep_uffd.  Caller holds
 * views_lock.
 */
bool sl_lost_seal(sl_restore *r, bool now);

/** Wakes whoever polls eventfd @efd (the fault thread, or waiters on done_efd). */
void sl_engine_kick(int efd);

/**
 * sl_view_publish: puts view @v in a slot of @reg, a dead view's (which
 * moves to dead_views) or a new one; false if every slot holds a live view.
 * Caller holds views_lock or owns @r alone (views.c).
 */
bool sl_view_publish(sl_restore *r, sl_region *reg, sl_view *v);

/** Ends the restore with @err (first caller wins); wakes everyone. */
void sl_engine_fail(sl_restore *r, int err);

/* prefetch.c: NUMA groups, memory binding, hot list, fault hints. */

/** Group index (node) that owns unit @u of @reg. */
unsigned sl_unit_node(const sl_restore *r, const sl_region *reg, uint64_t u);

/** Topology, per-region node policy and window, memory binding, groups, hot list. */
bool sl_prefetch_setup(sl_restore *r, GError **errp);

/** Releases what sl_prefetch_setup() allocated. */
void sl_prefetch_free(sl_restore *r);

/* Where a piece of prefetch work comes from (sl_group_next()). */
typedef enum {
    SL_WORK_WINDOW, /* a window after a fault that walks forward */
    SL_WORK_HOT,    /* the snapshot's hot-page list */
    SL_WORK_REDO,   /* a reset's run */
    SL_WORK_CHUNK,  /* the next chunk of the group in file order */
} sl_work;

/**
 * Next piece of work for group @g: a fault window, a hot run, a reset's
 * run, then a chunk; *@from says which.  False when there is none left.
 */
bool sl_group_next(sl_restore *r, sl_group *g, sl_run *out, sl_work *from);

/**
 * Asks the kernel to start reading the chunk @ahead places after group @g's
 * cursor (posix_fadvise WILLNEED): a cold snapshot's reads then overlap
 * the loaders' checking and placing instead of waiting behind them.
 * Fewer places where chunks are large, so that no more than @max_bytes
 * lie between (but at least the next chunk).
 */
void sl_group_readahead(sl_restore *r, sl_group *g, unsigned ahead, uint64_t max_bytes);

/**
 * A loader of group @g, at its start: the memory its thread allocates
 * from then on (the hugepages it reads chunks into and moves into place)
 * prefers group @g's memory node, as the memory it fills is bound there.
 * Best effort: without it pages are still correct, only maybe remote.
 */
void sl_group_prefer_node(sl_restore *r, unsigned g);

/* A thread's own memory policy, kept to be put back (sl_alloc_policy_enter()). */
typedef struct {
    int mode;
    unsigned long mask[SL_NODEMASK_WORDS];
    bool set;                  /* changed: put @mode and @mask back */
} sl_thread_policy;

/**
 * Where @reg's memory is allocated under the calling thread's policy
 * (ops->alloc_by_thread: hugetlbfs's fallocate, which no mbind of a
 * mapping reaches), the calling thread takes the policy the memory of unit
 * @u is bound with (reg->policy, on its node's memory) until
 * sl_alloc_policy_exit(@saved) puts its own back; elsewhere, or for memory
 * left to its own policy, nothing changes.  Best effort.
 */
void sl_alloc_policy_enter(sl_restore *r, const sl_region *reg, uint64_t u,
                           sl_thread_policy *saved);

/** Puts back the policy sl_alloc_policy_enter() changed. */
void sl_alloc_policy_exit(const sl_thread_policy *saved);

/**
 * Fault thread: unit @u of @reg was faulted and [@u0, @u0 + @n) served with
 * it (fault-around); feed the window (past them) and the recorder (@u, then
 * the others).
 */
void sl_prefetch_note_fault(sl_restore *r, sl_region *reg, uint64_t u, uint64_t u0, uint64_t n);

#endif /* SNAPLOAD_RESTORE_INT_H */
