/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The fault thread.  It polls {control eventfd, our uffd, each remote
 * consumer's uffd} (no sleeps), reads fault messages in batches and serves
 * each: claim the unit (and the unclaimed data units of its aligned
 * fault-around block), read it, check it and place it in the faulting view
 * (engine.c).  It never waits for background work: a fault on a unit a
 * loader is filling is deferred; the loader's placement wakes the faulting
 * thread, and settling the (watched) unit kicks the fault thread, which
 * then maps it into any view the loader did not (see serve_other()).  It
 * alone closes the uffds of dropped views, and at completion unregisters
 * every view and collapses our own anonymous memory into THPs.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "engine.h"
#include "busy.h"
#include "thp.h"
#include "uffd.h"
#include "fork.h"

#define MSG_BATCH 64
#define FAULT_NICE (-10) /* needs CAP_SYS_NICE; ignored without it */

/* Drops every view on @fd (its consumer went away or misbehaved: @err). */
static void drop_uffd(sl_restore *r, int fd, int err)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        unsigned nv = sl_view_count(reg);
        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            if (v->uffd == fd) {
                sl_engine_drop_view(r, v, err);
            }
        }
    }
}

/*
 * The live view that fault @addr read from @uffd belongs to.  Each view has
 * a uffd of its own (sl_restore_add_view_tagged() refuses one already
 * handed over), so its fd and the address find it: the address must lie
 * in the part of the block the view maps (offsets from v->base wrap
 * round like it).
 */
static bool find_view(sl_restore *r, int uffd, uint64_t addr, sl_region **regp, sl_view **vp)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        unsigned nv = sl_view_count(reg);
        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            if (sl_view_live(v) && v->uffd == uffd && addr - sl_view_addr(v) < sl_view_len(v)) {
                *regp = reg;
                *vp = v;
                return true;
            }
        }
    }
    return false;
}

/* A fault the fault thread could not serve yet: a loader holds its unit. */
typedef struct {
    sl_region *reg;
    sl_view *v;
    uint64_t u;
    uint64_t t0;           /* when the fault was read */
} deferred_fault;

/*
 * The fault-around neighbours of a cold fault, read and placed by the
 * around assistant after the faulted unit was served (serve_split()).  The
 * fault thread fills it while the assistant is idle; the assistant reads
 * it while the job is posted (assist.c's handshake orders the two).
 */
typedef struct {
    sl_restore *r;
    sl_region *reg;
    sl_view *v;            /* entered by the fault thread; the job leaves it */
    uint64_t u0, n, u;     /* the claimed run [u0, u0+n) and its unit u, already served */
    uint8_t *bounce;       /* bounce backends: one fault-around block, the job's own */
    int fd;
} around_job;

/* What the fault thread owns. */
typedef struct {
    sl_restore *r;
    uint8_t *bounce;       /* bounce backends: one unit, or a fault-around block */
    uint8_t *check;        /* keep_memory: CHECK_BYTES to read the reused file into */
    GArray *deferred;      /* deferred_fault */
    int fd;                /* r->fault_fd */
    sl_assist *assist;     /* reads half of each large unit; NULL: none needed */
    sl_assist *around;     /* reads a cold fault's neighbours; NULL: no fault-around */
    uint8_t *around_bounce; /* the around job's bounce buffer (bounce backends) */
    around_job job;        /* the around assistant's job (see around_job) */
} fault_ctx;

#define PM_PRESENT (1ull << 63)
#define PM_UFFD_WP (1ull << 57)
#define PM_BATCH 64 /* pagemap entries read per call */

/*
 * A restore tracking writes, our own view of shared memory, a fault on
 * placed unit @u: a page of it left our page tables (a unit is never
 * placed there without being mapped, and zero units' holes carry
 * markers).  A uffd-wp marker left in its entry says it left protected:
 * unwritten (swapped out, discarded).  An empty entry says it had been
 * written, and the file kept the write: the unit must be mapped back as
 * written, not protected as if it held the snapshot's bytes (found by
 * review: a read after the write's page was swapped out or zapped hid it
 * from every later reset and child).  Every 4 KiB entry of the unit is
 * looked at where the backend maps 4 KiB pages (a unit of 2 MiB snapshot
 * pages in shmem: found by review, a later page's write was missed); a
 * hugetlbfs unit is one entry.  Unreadable: counted as written, which
 * costs a reset a needless drop at most.
 */
static bool left_written(const sl_restore *r, const sl_region *reg, const sl_view *v,
                         uint64_t u)
{
    const uint64_t pg = reg->mem.page_size ? reg->mem.page_size : 4096;
    uint64_t first = (v->base + u * reg->unit) / 4096, n = pg == 4096 ? reg->unit / 4096 : 1;
    uint64_t e[PM_BATCH];

    if (!v->own || !v->wp || !reg->mem.ops->in_place || r->pagemap_fd < 0) {
        return false;
    }
    for (uint64_t i = 0; i < n; i += PM_BATCH) {
        uint64_t k = MIN(PM_BATCH, n - i);
        if (pread(r->pagemap_fd, e, k * sizeof(e[0]), (off_t)((first + i) * sizeof(e[0]))) !=
            (ssize_t)(k * sizeof(e[0]))) {
            return true;
        }
        for (uint64_t j = 0; j < k; j++) {
            if (!(e[j] & (PM_PRESENT | PM_UFFD_WP))) {
                return true;
            }
        }
    }
    return false;
}

/* Maps settled unit @u (PRESENT or POISONED) into view @v. */
static int show_settled(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, int st)
{
    if (st == SL_PAGE_POISONED) {
        if (reg->ioctls & SL_IOCTL(_UFFDIO_POISON)) {
            sl_poison_unit(reg, v, u);
        }
        return 0;
    }
    if (left_written(r, reg, v, u)) {
        /* Mapped unprotected in the one ioctl: shown protected first and
         * unprotected by a second, the page sat protected with written
         * bytes in between, and a scan took it for unwritten (found by
         * review: the write was lost in 1 run of 3). */
        return sl_show_written(r, reg, v, u, 1);
    }
    return sl_show_run(r, reg, v, u, 1);
}

/*
 * Claims the units next to claimed unit @u that hold data and that nobody
 * has claimed, within its aligned fault-around block [@a, @e), as far as
 * they run unbroken from @u either way: the run [*u0, *u0 + return).
 */
static uint64_t claim_around(sl_region *reg, uint64_t u, uint64_t a, uint64_t e, uint64_t *u0)
{
    uint64_t lo = u, hi = u + 1;

    while (lo > a && sl_unit_has_data(reg, lo - 1) && sl_pagemap_claim(reg->map, lo - 1)) {
        lo--;
    }
    while (hi < e && sl_unit_has_data(reg, hi) && sl_pagemap_claim(reg->map, hi)) {
        hi++;
    }
    /* (A unit a dropping reset forgot is CLAIMED by it until its memory is
     * gone, so no neighbour claimed here still holds a page to be dropped.) */
    *u0 = lo;
    return hi - lo;
}

/* Units of [@u0, @u0 + @n) other than @u that are PRESENT (not refused). */
static uint64_t placed_besides(const sl_region *reg, uint64_t u0, uint64_t n, uint64_t u)
{
    uint64_t placed = 0;

    for (uint64_t i = u0; i < u0 + n; i++) {
        placed += i != u && sl_pagemap_state(reg->map, i) == SL_PAGE_PRESENT;
    }
    return placed;
}

/* The around assistant's job: the neighbours of the served unit, in one read. */
static void fill_neighbours(void *opaque)
{
    around_job *j = opaque;
    sl_restore *r = j->r;
    uint8_t *dst = j->reg->mem.ops->stage(&j->reg->mem, j->u0 * j->reg->unit, j->bounce);
    int ret;

    if (r->around_posted) {
        r->around_posted(r->around_posted_opaque, j->reg->index, j->u0, j->n);
    }
    ret = sl_fill_besides(r, j->reg, j->v, j->u0, j->n, j->u, dst, BY_FAULT, j->fd);
    if (ret < 0) {
        sl_engine_fail(r, ret);
    } else {
        add(&r->c.pages_around, placed_besides(j->reg, j->u0, j->n, j->u));
    }
    sl_view_exit(r, j->v);
}

/*
 * A cold fault (its block not in the page cache) on unit @u, in the
 * claimed run [@u0, @u0+@n): @u alone is read and placed, which wakes
 * the vCPU after one small read, and the around assistant reads the rest
 * of the run meanwhile (a fault on one of those waits for it, deferred as
 * behind a loader).  @v was entered for the job.
 */
static int serve_split(fault_ctx *fc, sl_region *reg, sl_view *v, uint64_t u, uint64_t u0,
                       uint64_t n)
{
    sl_restore *r = fc->r;
    int ret = sl_fill_claimed(r, reg, v, u, 1,
                              reg->mem.ops->stage(&reg->mem, u * reg->unit, fc->bounce),
                              BY_FAULT, fc->fd);

    if (ret < 0) {
        sl_pagemap_unclaim(reg->map, u0, u - u0);
        sl_pagemap_unclaim(reg->map, u + 1, u0 + n - u - 1);
        sl_view_exit(r, v);
        return ret;
    }
    fc->job = (around_job){ .r = r, .reg = reg, .v = v, .u0 = u0, .n = n, .u = u,
                            .bounce = fc->around_bounce, .fd = fc->fd };
    add(&r->c.faults_split, 1);
    sl_assist_post(fc->around, fill_neighbours, &fc->job);
    return 0;
}

/*
 * Whether a fault on unit @u continues a walk: its fault-around block is
 * the last fault's or next to it.  The walker's next touches want the rest
 * of the block at once: one read of the whole block serves them sooner
 * than two reads one after the other.
 */
static bool walking(const sl_region *reg, uint64_t u)
{
    uint64_t b = u / reg->around, last = reg->last_fault / reg->around;

    return b + 1 >= last && b <= last + 1;
}

/* Whether fault-around block [@a, @e) of @reg is cold: not all in the page cache. */
static bool cold_block(const fault_ctx *fc, const sl_region *reg, uint64_t a, uint64_t e)
{
    return fc->around &&
           sl_snapshot_cached(fc->r->snap, reg->block, a * reg->ratio, (e - a) * reg->ratio) == 0;
}

/*
 * Serve the fault on unit @u, which the fault thread claimed: with its
 * neighbours (config.fault_around) when it holds data; the units served
 * (or, for a cold block, handed to the around assistant) are
 * [*u0, *u0 + *n).  A warm block, or one a walk reaches, goes in one read
 * and one placement.  A cold one that a random touch reaches costs a disk
 * read per request, so the vCPU waits only for its own unit
 * (serve_split()); while the assistant is still busy with another block,
 * the unit is served alone.  The block's metadata is proven before its
 * bits choose the neighbours.
 */
static int serve_fault(fault_ctx *fc, sl_region *reg, sl_view *v, uint64_t u, uint64_t *u0,
                       uint64_t *n)
{
    sl_restore *r = fc->r;
    uint64_t a = u - u % reg->around, e = MIN(a + reg->around, reg->nunits), n_ae;
    bool around = reg->around > 1 && !reg->mem.keep, cold;
    int ret;

    /* Neighbours only where the view maps them: the run goes into it. */
    n_ae = e - a;
    sl_view_clip(reg, v, &a, &n_ae);
    e = a + n_ae;
    ret = around ? sl_prove_units(r, reg, a, e - a) : 0;

    *u0 = u;
    *n = 1;
    if (ret < 0) {
        sl_pagemap_unclaim(reg->map, u, 1);
        return ret;
    }
    around = around && sl_unit_has_data(reg, u); /* a zero unit stays one unit */
    cold = around && !walking(reg, u) && cold_block(fc, reg, a, e);
    if (!around || (cold && !sl_assist_idle(fc->around))) {
        return sl_serve_unit(r, reg, v, u, fc->bounce, fc->check, fc->fd, fc->assist);
    }
    *n = claim_around(reg, u, a, e, u0);
    if (cold && *n > 1 && sl_view_enter(r, v)) {
        return serve_split(fc, reg, v, u, *u0, *n);
    }
    ret = sl_fill_claimed(r, reg, v, *u0, *n, reg->mem.ops->stage(&reg->mem, *u0 * reg->unit,
                                                                  fc->bounce), BY_FAULT, fc->fd);
    add(&r->c.pages_around, ret == 0 ? placed_besides(reg, *u0, *n, u) : 0);
    return ret;
}

/*
 * show_settled() of unit @u, seen settled as @st, if it still is.  A
 * dropping reset may forget the unit and drop its page right after that
 * look: a show then (zeros, where the page is missing) would land after
 * the drop, and the refill's placement would find it there (EEXIST) and
 * keep it (found by review: zeros for data after a reset).  So the state
 * is looked at again under show_lock, which the reset passes after
 * forgetting: a show begun before ends before the drop; one after sees
 * the unit CLAIMED or ABSENT.  1 if the state changed (look again).
 */
static int show_if_still(fault_ctx *fc, sl_region *reg, sl_view *v, uint64_t u, int st)
{
    int ret = 1; /* show_settled() never returns 1 */

    g_mutex_lock(&fc->r->show_lock);
    if (sl_pagemap_state(reg->map, u) == st) {
        if (fc->r->fault_showing) {
            fc->r->fault_showing(fc->r->fault_showing_opaque, reg->index, u);
        }
        ret = show_settled(fc->r, reg, v, u, st);
    }
    g_mutex_unlock(&fc->r->show_lock);
    return ret;
}

/*
 * A fault on unit @u that the fault thread did not claim.  Never waits:
 * while a loader holds the unit the fault is deferred (returns 1).
 *
 * No wake-up is lost.  The kernel queues the faulting thread on the uffd's
 * wait queue before the message becomes readable, and it rechecks the page
 * table under the page-table lock before sleeping.  Every placement ioctl
 * the loader issues (COPY, ZEROPAGE, CONTINUE, POISON, none with DONTWAKE)
 * wakes the threads faulting in its range after installing the page, and
 * the loader issues it in every view it knows (show_everywhere): a thread
 * that faulted before is woken, one that faults after finds the page.  A
 * view the loader did not know (it joined meanwhile), or a loader that
 * gave the unit back (unclaim), is covered by the watch: settling a watched
 * unit kicks the fault thread, which retries the deferred fault
 * (settle_deferred): it maps the unit there (EEXIST: it wakes the range),
 * or claims and serves it.  Returns 0 when served, 1 when deferred so, or
 * -errno.
 */
static int serve_other(fault_ctx *fc, sl_region *reg, sl_view *v, uint64_t u, uint64_t t0)
{
    for (;;) {
        int st = sl_pagemap_state(reg->map, u), ret;

        if (st == SL_PAGE_CLAIMED && sl_pagemap_watch(reg->map, u)) {
            deferred_fault d = { .reg = reg, .v = v, .u = u, .t0 = t0 };
            g_array_append_val(fc->deferred, d);
            return 1;
        }
        if (st == SL_PAGE_ABSENT && sl_pagemap_claim(reg->map, u)) {
            /* its filler gave up */
            return sl_serve_unit(fc->r, reg, v, u, fc->bounce, fc->check, fc->fd, fc->assist);
        }
        if (st >= SL_PAGE_PRESENT && (ret = show_if_still(fc, reg, v, u, st)) <= 0) {
            return ret;
        }
        /* The state changed under us: look again. */
    }
}

/* A fault is over: served (0, its latency recorded), deferred (1) or failed. */
static void fault_done(sl_restore *r, int ret, uint64_t t0)
{
    if (ret < 0) {
        sl_engine_fail(r, ret);
    } else if (ret == 0) {
        sl_hist_record(&r->fault_hist, sl_now_ns() - t0);
    }
}

/*
 * A failed restore (a fatal error, no stop yet) answers a fault on unit @u
 * that is not present by sealing it in view @v (poison: the thread gets
 * SIGBUS), not by leaving the thread to wait until sl_restore_stop()
 * seals every missing unit: a VMM thread touching guest RAM may be the
 * one that would call it (found by an API review).  Without
 * UFFDIO_POISON (kernels before 6.6) the thread waits for the stop.
 */
static void seal_fault(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u)
{
    if ((reg->ioctls & SL_IOCTL(_UFFDIO_POISON)) && sl_view_enter(r, v)) {
        sl_poison_unit(reg, v, u);
        sl_view_exit(r, v);
    }
}

/* A fault on unit @u of @reg in @v once the restore failed: a present unit
 * is shown as usual, any other sealed. */
static void fault_after_failure(fault_ctx *fc, sl_region *reg, sl_view *v, uint64_t u,
                                uint64_t t0)
{
    int ret = 1;

    if (sl_pagemap_state(reg->map, u) == SL_PAGE_PRESENT) {
        ret = serve_other(fc, reg, v, u, t0);
    }
    if (ret != 0) {
        seal_fault(fc->r, reg, v, u);
    }
}

static void handle_fault(fault_ctx *fc, int uffd, uint64_t addr)
{
    sl_restore *r = fc->r;
    uint64_t t0 = sl_now_ns(), zero = 0, u, u0, n = 1;
    sl_region *reg;
    sl_view *v;
    int ret;

    add(&r->c.faults, 1);
    /* relaxed: the first fault's time, a figure ordered with nothing */
    atomic_compare_exchange_strong_explicit(&r->t_first_fault, &zero, t0,
                                            memory_order_relaxed, memory_order_relaxed);
    if (!find_view(r, uffd, addr, &reg, &v)) {
        /* A consumer's uffd reports a fault outside what it said it
         * registered: nobody could serve it, so that consumer is dropped. */
        if (uffd != r->uffd) {
            drop_uffd(r, uffd, -EFAULT);
        }
        return;
    }
    u = u0 = (addr - v->base) / reg->unit;
    /* Acquire: pairs with the release store in sl_engine_fail(). */
    if (atomic_load_explicit(&r->stopping, memory_order_acquire)) {
        fault_after_failure(fc, reg, v, u, t0);
        return;
    }
    if (sl_pagemap_claim(reg->map, u)) {
        ret = serve_fault(fc, reg, v, u, &u0, &n);
    } else {
        int st = sl_pagemap_state(reg->map, u);
        add(st == SL_PAGE_CLAIMED ? &r->c.faults_on_claimed : &r->c.faults_on_present, 1);
        ret = serve_other(fc, reg, v, u, t0);
    }
    sl_prefetch_note_fault(r, reg, u, ret == 0 ? u0 : u, ret == 0 ? n : 1);
    fault_done(r, ret, t0);
    if (ret < 0) {
        seal_fault(r, reg, v, u); /* the fault that failed the restore */
    }
}

/*
 * Retries deferred faults (a watched unit was settled): serves or re-defers;
 * once the restore failed (@failed) seals them instead: nothing may settle
 * their units any more (see seal_fault()).
 */
static void settle_deferred(fault_ctx *fc, bool failed)
{
    GArray *old = fc->deferred;

    if (old->len == 0) {
        return;
    }
    fc->deferred = g_array_new(false, false, sizeof(deferred_fault));
    for (guint i = 0; i < old->len; i++) {
        deferred_fault *d = &g_array_index(old, deferred_fault, i);
        if (failed && sl_view_live(d->v)) {
            seal_fault(fc->r, d->reg, d->v, d->u);
            continue;
        }
        int ret = sl_view_live(d->v) ? serve_other(fc, d->reg, d->v, d->u, d->t0) : 0;
        fault_done(fc->r, ret, d->t0);
    }
    g_array_free(old, true);
}

/* Pagemap notify: a unit with a deferred fault was settled (any thread). */
static void kick_fault_thread(void *opaque)
{
    sl_engine_kick(((sl_restore *)opaque)->ctl_efd);
}

/* Unregisters every view: consumers stop faulting. */
static void unregister_all(sl_restore *r)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        unsigned nv = sl_view_count(reg);
        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            if ((v->own && !reg->registered) || v->uffd < 0) {
                continue;
            }
            sl_uffd_unregister(v->uffd, (void *)(uintptr_t)sl_view_addr(v), sl_view_len(v));
        }
        sl_fork_release(reg->fork_guard); /* complete: a child may copy it again */
        reg->fork_guard = NULL;
        reg->registered = false;
    }
}

void sl_view_reclaim(sl_region *reg, sl_view *v)
{
    /* seq_cst: pairs with sl_view_enter() (dead was set before, seq_cst). */
    if (v->own || v->uffd < 0 || v->kept || !atomic_load(&v->dead) || atomic_load(&v->users)) {
        return;
    }
    if (sl_seal_let_go(reg, v)) {
        close(v->uffd);
        v->uffd = -1;
    } else {
        v->kept = true; /* closing would unregister it: its holes would read as zeros */
    }
}

/*
 * Fault thread, between poll rounds: closes the uffd of every dead view no
 * loader uses any more, so a consumer that left costs no fd.  Before, each
 * page still missing is sealed in that view (its process, if alive, gets
 * SIGBUS there, never zeros).
 */
static void reclaim_views_locked(sl_restore *r)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        unsigned nv = sl_view_count(reg);
        for (unsigned j = 0; j < nv; j++) {
            sl_view_reclaim(reg, sl_region_view(reg, j));
        }
        for (guint j = 0; j < reg->dead_views->len; j++) {
            sl_view_reclaim(reg, g_ptr_array_index(reg->dead_views, j));
        }
    }
}

static void reclaim_views(sl_restore *r)
{
    g_mutex_lock(&r->views_lock);
    reclaim_views_locked(r);
    g_mutex_unlock(&r->views_lock);
}

/* Ends the busy marks of every memory file (busy.c). */
static void clear_busy(sl_restore *r)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        sl_busy_clear(reg->busy);
        reg->busy = -1;
    }
}

/* Every view unregistered and no view joins any more; caller holds views_lock. */
static void let_views_go(sl_restore *r)
{
    unregister_all(r);
    /* A view removed since the last round (its consumer retired it as the
     * last unit was placed) is closed here: the fault thread leaves its
     * loop now, and sl_restore_views_released() waited on that uffd for
     * good, its consumer's munmap 30 s (found by review). */
    reclaim_views_locked(r);
    r->views_closed = true;
}

/*
 * Every unit of generation @gen is settled.  Returns true if the fault
 * thread may exit: not while a refused page must keep trapping, nor while
 * writes are tracked (the views stay registered in WP mode, and a reset
 * needs the fault thread again).
 */
static bool finish(sl_restore *r, uint64_t gen)
{
    int expect = -EINPROGRESS;
    /* relaxed: ordered by the acquire load of @remaining == 0 before the
     * call, which pairs with the acq_rel count-down sl_refuse_unit() does
     * after its CAS of @page_error */
    int final = atomic_load_explicit(&r->page_error, memory_order_relaxed);
    bool track = r->cfg.track_writes;

    if (r->finish_checking) {
        r->finish_checking(r->finish_checking_opaque);
    }
    if (final == 0 && r->cfg.no_checksum && sl_snapshot_unchanged(r->snap) < 0) {
        /* The last placements' checks may have raced a change that moves
         * the file's time only after its bytes (a punched hole): no
         * success over bytes nothing proves (found by review). */
        final = -ESTALE;
    }

    g_mutex_lock(&r->views_lock); /* no view joins between unregistering and the status */
    if (final == 0 && !track) {
        let_views_go(r);
    }
    if (final == 0) {
        clear_busy(r); /* every page is in place: saves may read the files */
    }
    r->finished_gen = gen;
    /* Release: pairs with the acquire load in sl_restore_poll(): what the
     * restore did is seen with its status.  Only from in progress: a
     * failure stored meanwhile (sl_engine_fail()) is kept. */
    if (atomic_compare_exchange_strong_explicit(&r->status, &expect, final,
                                                memory_order_release, memory_order_relaxed)) {
        if (r->finish_signalling) {
            r->finish_signalling(r->finish_signalling_opaque);
        }
        /* Still under views_lock: a reset drains done_efd under it too, so
         * it never drains before this signal and leaves it for later. */
        sl_engine_kick(r->done_efd);
    }
    g_mutex_unlock(&r->views_lock);
    return final == 0 && !track;
}

/* Stopping a completed restore that tracked writes: our views let go. */
static void release_tracked(sl_restore *r)
{
    g_mutex_lock(&r->views_lock);
    let_views_go(r);
    g_mutex_unlock(&r->views_lock);
}

/*
 * Reads a batch from @fd.  On our own uffd, whenever an unmap may be in
 * progress (a placement met EAGAIN, or the kernel's count says so), the
 * read and the marking of the views it kills happen under the placement
 * lock (uffd.h): the unmapping thread
 * goes on as soon as read() returns, and no placement may slip in before
 * its view is dead (found by review: a loader retrying its EAGAIN filled
 * the new mapping while this thread was preempted before the mark).
 * Unmaps and moves are handled before any fault of the batch is served (a
 * fault's disk read let a loader in too).
 */
static ssize_t read_batch(sl_restore *r, int fd, struct uffd_msg *msgs, size_t size)
{
    /* seq_cst: pairs with the store of a placer that met EAGAIN (uffd.c);
     * else the kernel's own count says whether an unmap is in progress
     * (one more system call per read: a loader that had not met the
     * EAGAIN filled the new mapping while this thread was preempted). */
    bool fence = fd == r->uffd && r->unmap_events &&
                 (atomic_exchange(&r->held_back, false) || sl_uffd_changing(fd));
    ssize_t n;
    int err;

    if (fence) {
        pthread_rwlock_wrlock(&r->place_lock);
    }
    n = sl_uffd_read(fd, msgs, size);
    err = errno;
    for (ssize_t i = 0; fd == r->uffd && i < n / (ssize_t)sizeof(msgs[0]); i++) {
        if (msgs[i].event == UFFD_EVENT_UNMAP || msgs[i].event == UFFD_EVENT_REMAP) {
            sl_lost_memory(r, &msgs[i]); /* only our own uffd asks for them */
        }
    }
    if (fence) {
        pthread_rwlock_unlock(&r->place_lock);
    }
    errno = err;
    return n;
}

/* Reads a batch of messages from @fd and serves its faults; false when the fd is finished. */
static bool read_faults(fault_ctx *fc, int fd)
{
    sl_restore *r = fc->r;
    struct uffd_msg msgs[MSG_BATCH];
    ssize_t n = read_batch(r, fd, msgs, sizeof(msgs));

    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            return true;
        }
        if (fd == r->uffd) {
            sl_engine_fail(r, -errno);
        }
        return false;
    }
    for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
        if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
            handle_fault(fc, fd, msgs[i].arg.pagefault.address);
        }
    }
    return n > 0;
}

/*
 * Seals what is left of a mapping of ours that was unmapped or moved
 * (lost.c), once the kernel takes ioctls on our uffd again; true while
 * that is still pending.  The kernel tells nobody when it does: the caller
 * polls with a short timeout meanwhile.
 */
static bool seal_lost(sl_restore *r)
{
    bool pending;

    g_mutex_lock(&r->views_lock); /* as the stop's seal */
    pending = sl_lost_seal(r, false);
    g_mutex_unlock(&r->views_lock);
    return pending;
}

/*
 * After completion, until the stop, where our uffd reports unmaps: the
 * memory was let go (unregistered), but a munmap begun before may still
 * post its event, and its thread waits in the kernel until someone reads
 * it (it may be the caller's only thread, which would then never stop the
 * restore).  Reads them; no fault comes any more, and the memory, complete,
 * has nothing to seal.
 */
static void read_events_until_stop(sl_restore *r)
{
    struct pollfd p[2] = { { .fd = r->ctl_efd, .events = POLLIN },
                           { .fd = r->uffd, .events = POLLIN } };
    uint64_t v;

    /* Acquire: pairs with the release store in sl_restore_stop(). */
    while (r->unmap_events && !atomic_load_explicit(&r->halting, memory_order_acquire)) {
        if (poll(p, 2, -1) < 0 && errno != EINTR) {
            return;
        }
        if (p[0].revents & POLLIN) {
            ssize_t n = read(r->ctl_efd, &v, sizeof(v));
            (void)n;
        }
        if (p[1].revents & (POLLERR | POLLHUP)) {
            return;
        }
        if (p[1].revents & POLLIN) {
            sl_lost_read(r); /* read is all an event needs: its thread goes on */
        }
    }
}

/* Poll set: the control eventfd, our uffd, each live remote uffd once. */
static void build_pollset(sl_restore *r, GArray *pfds)
{
    struct pollfd p = { .fd = r->ctl_efd, .events = POLLIN };

    g_array_set_size(pfds, 0);
    g_array_append_val(pfds, p);
    p.fd = r->uffd;
    g_array_append_val(pfds, p);
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        unsigned nv = sl_view_count(reg);
        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            bool seen = v->own || !sl_view_live(v);
            for (guint k = 0; k < pfds->len && !seen; k++) {
                seen = g_array_index(pfds, struct pollfd, k).fd == v->uffd;
            }
            if (!seen) {
                p.fd = v->uffd;
                g_array_append_val(pfds, p);
            }
        }
    }
}

/* One poll round over @pfds (@timeout_ms as poll()); false when the thread must stop. */
static bool poll_round(fault_ctx *fc, GArray *pfds, int timeout_ms, bool *rebuild)
{
    sl_restore *r = fc->r;
    struct pollfd *p = (struct pollfd *)pfds->data;
    uint64_t v;

    if (poll(p, pfds->len, timeout_ms) < 0 && errno != EINTR) {
        sl_engine_fail(r, -errno);
        return false;
    }
    if (p[0].revents & POLLIN) {
        ssize_t n = read(r->ctl_efd, &v, sizeof(v));
        (void)n;
    }
    for (guint i = 1; i < pfds->len; i++) {
        bool ok = true;
        if (p[i].revents & POLLIN) {
            ok = read_faults(fc, p[i].fd);
        }
        if (!ok || (p[i].revents & (POLLERR | POLLHUP))) {
            if (p[i].fd == r->uffd) {
                sl_engine_fail(r, -ESRCH);
                return false;
            }
            drop_uffd(r, p[i].fd, -ESRCH); /* a remote consumer exited or its uffd broke */
            *rebuild = true;
        }
    }
    return true;
}

/*
 * Every unit is done, but the around assistant may still be counting the
 * neighbours it placed (pages_around, after its last commit): wait for it,
 * so that stats read once the restore reports its end are whole.  Short:
 * its units are done, so it only has its counting left.  Always true.
 */
static bool around_settled(fault_ctx *fc)
{
    if (fc->around && !sl_assist_idle(fc->around)) {
        sl_assist_wait(fc->around);
    }
    return true;
}

/* The fault thread's loop; returns when the restore stops or completes. */
static void fault_loop(fault_ctx *fc)
{
    sl_restore *r = fc->r;
    GArray *pfds = g_array_new(false, false, sizeof(struct pollfd));
    unsigned gen = ~0u;
    uint64_t want;

    for (;;) {
        bool rebuild = false;
        bool sealing = r->unmap_events && seal_lost(r);
        /* Acquire: pairs with the release store in sl_engine_fail()/stop;
         * @halting (acquire) with the one sl_restore_stop() made before. */
        if (atomic_load_explicit(&r->stopping, memory_order_acquire)) {
            if (atomic_load_explicit(&r->halting, memory_order_acquire)) {
                break;
            }
            settle_deferred(fc, true); /* failed: faults are sealed until the stop */
        } else {
            settle_deferred(fc, false);
            /* Acquire: pairs with the release increment in sl_restore_reset(),
             * which raised @remaining before; then @remaining (acquire: pairs
             * with the acq_rel decrement in sl_units_done()). */
            want = atomic_load_explicit(&r->generation, memory_order_acquire);
            if (r->finished_gen != want &&
                atomic_load_explicit(&r->remaining, memory_order_acquire) == 0 &&
                around_settled(fc) && finish(r, want)) {
                break;
            }
        }
        /* Acquire: pairs with the release increment in sl_restore_add_view(). */
        if (atomic_load_explicit(&r->views_gen, memory_order_acquire) != gen) {
            gen = atomic_load_explicit(&r->views_gen, memory_order_acquire);
            reclaim_views(r);
            build_pollset(r, pfds);
        }
        if (!poll_round(fc, pfds, sealing ? 1 : -1, &rebuild)) {
            break;
        }
        gen = rebuild ? ~0u : gen;
    }
    g_array_free(pfds, true);
}

/*
 * After completion: our own anonymous mappings into THPs (thp.c), range by
 * range, to the end, even if a stop comes meanwhile: the usual way to end
 * a completed restore is to stop it at once (sl_restore_stop() then joins
 * this), and the guest is to run on THPs as after an eager load.  Checking
 * for a stop here made the collapse depend on a race with the caller's
 * next call: at 4 GiB it was skipped whenever the stop came first.  Remote
 * anonymous views are their owner's to collapse (the daemon does, on the
 * consumer's pidfd).
 */
static void collapse_own(sl_restore *r)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (reg->mem.ops->thp && reg->mem.host) {
            add(&r->c.thp_bytes, sl_thp_collapse(-1, (uintptr_t)reg->mem.host, r->snap,
                                                 reg->block, NULL));
        }
    }
}

/*
 * The snapshot opened once more, for the fault thread alone: its own
 * readahead state, set to random, so that a fault on a page not yet in the
 * page cache reads that unit and nothing more, and the loaders' sequential
 * readahead is not reset by the faults' jumps.  -1 when it cannot be
 * opened again (the fault thread then reads through the loaders' file).
 */
static int open_fault_fd(const sl_restore *r)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", r->snap->fd);
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    }
    return fd;
}

/*
 * The fault thread's assistant, where a unit is large enough to split and
 * there is a second CPU to split it with (else NULL: serve alone).
 */
static sl_assist *start_assist(sl_restore *r)
{
    bool large = false;

    for (guint i = 0; i < r->regions->len; i++) {
        large |= ((sl_region *)g_ptr_array_index(r->regions, i))->ratio >= SPLIT_MIN_PAGES;
    }
    return large && g_get_num_processors() > 1 ? sl_assist_new("sl-fault-assist", NULL) : NULL;
}

/*
 * The around assistant, where some region serves faults with their
 * neighbours and its blocks can be told cold (else NULL: a snapshot with
 * parents, or a kernel without cachestat(2), counts every block warm): it
 * reads a cold fault's neighbours after the fault was served, into *@buf
 * (@bounce bytes, for bounce backends).  Best effort: without it, cold
 * blocks go whole.
 */
static sl_assist *start_around(sl_restore *r, uint64_t bounce, uint8_t **buf)
{
    bool around = false;

    for (guint i = 0; i < r->regions->len; i++) {
        const sl_region *reg = g_ptr_array_index(r->regions, i);
        around |= reg->around > 1 && !reg->mem.keep && reg->nunits &&
                  sl_snapshot_cached(r->snap, reg->block, 0, 1) >= 0;
    }
    if (!around || (bounce && posix_memalign((void **)buf, 4096, bounce))) {
        return NULL;
    }
    return sl_assist_new("sl-fault-around", NULL);
}

/* The fault thread's bounce buffer: a unit, or a fault-around block, of every bounce region. */
static uint64_t fault_bounce_bytes(const sl_restore *r)
{
    uint64_t bytes = 0;

    for (guint i = 0; i < r->regions->len; i++) {
        const sl_region *reg = g_ptr_array_index(r->regions, i);
        if (reg->mem.ops->bounce) {
            bytes = MAX(bytes, reg->unit * reg->around);
        }
    }
    return bytes;
}

static gpointer fault_thread(gpointer opaque)
{
    fault_ctx fc = { .r = opaque };
    uint64_t bounce = fault_bounce_bytes(fc.r);

    if (bounce && posix_memalign((void **)&fc.bounce, 4096, bounce)) {
        sl_engine_fail(fc.r, -ENOMEM);
        return NULL;
    }
    fc.deferred = g_array_new(false, false, sizeof(deferred_fault));
    fc.check = fc.r->cfg.keep_memory ? g_malloc(CHECK_BYTES) : NULL;
    /* Best effort: a blocked vCPU waits on this thread, so it goes first. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), FAULT_NICE);
    fc.fd = fc.r->fault_fd >= 0 ? fc.r->fault_fd : fc.r->snap->fd;
    fc.assist = start_assist(fc.r);
    fc.around = start_around(fc.r, bounce, &fc.around_bounce);
    fault_loop(&fc);
    sl_assist_free(fc.assist);
    sl_assist_free(fc.around); /* after its job, if one is posted */
    if (fc.r->finished_gen && sl_restore_poll(fc.r) == 0) {
        if (fc.r->cfg.track_writes) {
            release_tracked(fc.r); /* WP bits go too: THP collapse works again */
        }
        collapse_own(fc.r);
        read_events_until_stop(fc.r);
    }
    free(fc.bounce);
    free(fc.around_bounce);
    g_free(fc.check);
    g_array_free(fc.deferred, true);
    return NULL;
}

bool sl_fault_start(sl_restore *r, GError **errp)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        sl_pagemap_set_notify(reg->map, kick_fault_thread, r);
    }
    r->fault_fd = open_fault_fd(r);
    r->fault_thread = g_thread_try_new("sl-fault", fault_thread, r, errp);
    return r->fault_thread != NULL;
}
