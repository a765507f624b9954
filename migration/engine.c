/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore engine's placement core, generic over backends through
 * sl_backend_ops: one fault thread (fault.c) and N background loaders
 * (loader.c) both claim units in the page map, read them from the snapshot
 * into the backend's staging area (a bounce buffer for anon, the page
 * cache through the alias for shared files), check their checksums, and
 * commit them here: place in one view, publish, map into every other view,
 * and only then count them done.
 *
 * The thread that makes the last unit present wakes the fault thread, which
 * unregisters every view, so consumers stop faulting, and reports
 * completion.  A restore that tracks writes (config.track_writes) keeps its
 * views registered and the fault thread serving instead, until it is
 * stopped: a reset (reset.c) makes units absent again, and the loaders,
 * started again, and the faults bring them back.  A unit whose data does
 * not match its checksum is never placed: it is discarded and poisoned
 * (SIGBUS on access) where the kernel allows; the restore then ends with
 * -EBADMSG and keeps the views registered, serving poison, until it is
 * stopped.  A placement that finds no room (a full tmpfs) fails the
 * restore and drops no view.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>
#include "engine.h"
#include "uffd.h"

void sl_engine_kick(int efd)
{
    uint64_t one = 1;
    ssize_t n = write(efd, &one, sizeof(one));
    (void)n; /* an eventfd write only fails on overflow: still readable */
}

void sl_engine_fail(sl_restore *r, int err)
{
    /* Relaxed: the CAS below checks it. */
    int cur = atomic_load_explicit(&r->status, memory_order_relaxed);

    /* A placement stopped by a view that died of an unmap fails as the
     * unmap does (seq_cst: pairs with the store in lost.c, made before the
     * view's dead flag, which that placement saw). */
    if (atomic_load(&r->lost_memory)) {
        err = -EFAULT;
    }

    /*
     * Release: pairs with the acquire load in sl_restore_poll().  A
     * completed restore (0) fails too: its engine stops here, and a reset
     * going ahead on a 0 would wait for a refill no fault thread serves.
     * In progress or completed, whichever it is by then (a reset turns 0
     * into in progress at any moment): retried until one of them became
     * the error, or an earlier failure is found and kept.
     */
    while (cur == -EINPROGRESS || cur == 0) {
        if (atomic_compare_exchange_weak_explicit(&r->status, &cur, err, memory_order_release,
                                                  memory_order_relaxed)) {
            sl_engine_kick(r->done_efd);
            break;
        }
    }
    /* Release: pairs with the acquire loads of @stopping in the fault thread
     * (fault.c), the loaders (loader.c) and views.c: the status is set first. */
    atomic_store_explicit(&r->stopping, true, memory_order_release);
    sl_engine_kick(r->ctl_efd);
}

unsigned sl_view_count(const sl_region *reg)
{
    /* Acquire: pairs with the release store in sl_restore_add_view(). */
    return atomic_load_explicit(&((sl_region *)reg)->nviews, memory_order_acquire);
}

bool sl_view_live(const sl_view *v)
{
    /* Relaxed: a hint that spares work.  @dead is set once and never cleared
     * (the exchange in sl_engine_drop_view()); whoever acts on a view it may
     * race with enters it first (sl_view_enter(), seq_cst) or is the fault
     * thread, the only one that closes a dead view's uffd. */
    return !atomic_load_explicit(&((sl_view *)v)->dead, memory_order_relaxed);
}

/*
 * A thread other than the fault thread is done with view @v.  The last user
 * of a dead view kicks the fault thread, which may now close its uffd.
 */
void sl_view_exit(sl_restore *r, sl_view *v)
{
    if (!v || v->own) {
        return;
    }
    /* seq_cst: pairs with the exchange in sl_engine_drop_view(). */
    if (r->dead_view_leaving && atomic_load(&v->dead)) {
        r->dead_view_leaving(r->dead_view_leaving_opaque);
    }
    /* seq_cst: pairs with the dead/users reads in sl_engine_reclaim_views(). */
    if (atomic_fetch_sub(&v->users, 1) == 1 && atomic_load(&v->dead)) {
        /* Release: pairs with the fault thread's acquire load of @views_gen
         * (fault.c), which then reclaims the view. */
        atomic_fetch_add_explicit(&r->views_gen, 1, memory_order_release);
        sl_engine_kick(r->ctl_efd);
    }
}

/*
 * Enters view @v before an ioctl on its uffd from a thread other than the
 * fault thread (which alone closes uffds of dead views, between its poll
 * rounds).  False if @v is dead: leave it alone.
 */
bool sl_view_enter(sl_restore *r, sl_view *v)
{
    if (v->own) {
        /* Our own mapping is never reclaimed, so no count; it dies only
         * when it was unmapped or moved (seq_cst: pairs with lost.c). */
        return !atomic_load(&v->dead);
    }
    /* seq_cst, Dekker-style: we raise users then read dead; the reclaimer
     * marked dead before it reads users.  One of us sees the other. */
    atomic_fetch_add(&v->users, 1);
    if (atomic_load(&v->dead)) {
        sl_view_exit(r, v);
        return false;
    }
    return true;
}

void sl_engine_drop_view(sl_restore *r, sl_view *v, int err)
{
    bool was = false;

    /* One exchange decides who reports it (seq_cst: pairs with sl_view_enter()). */
    if (v->own || !atomic_compare_exchange_strong(&v->dead, &was, true)) {
        return;
    }
    /* Release: pairs with the fault thread's acquire load of @views_gen
     * (fault.c): it builds a new poll set without this view. */
    atomic_fetch_add_explicit(&r->views_gen, 1, memory_order_release);
    sl_engine_kick(r->ctl_efd);
    if (r->cfg.view_dropped) {
        r->cfg.view_dropped(r->cfg.view_dropped_opaque, v->tag, err);
    }
}

/*
 * -ENOENT for a range of several units that stopped short: the range may
 * span two VMAs (an mbind, say, split the mapping), which one placement
 * ioctl cannot cross.  Only one unit at a time tells that from a range that
 * is no longer registered.
 */
static bool spans_vmas(int ret, uint64_t len, uint64_t k)
{
    return ret == -ENOENT && len > 1 && k < len;
}

/* The consumer behind a view has gone away (its mm is gone, or it
 * unregistered or unmapped the range). */
static bool consumer_gone(int err)
{
    return err == -ESRCH || err == -ENOENT;
}

/*
 * The memory itself ran out: a full tmpfs, an empty hugetlbfs pool, a
 * memory cgroup's limit.  No consumer is to blame, so no view is dropped
 * for it: the restore fails with it (sl_restore_error() names it), and
 * what is not placed is sealed at the stop, never left as zeros.
 */
static bool out_of_memory_room(int err)
{
    return err == -ENOSPC || err == -ENOMEM;
}

/* Placing into view @v failed with @err: drop that view alone? */
static bool drop_for(const sl_view *v, int err)
{
    return err < 0 && !out_of_memory_room(err) && (!v->own || consumer_gone(err));
}

/* Units [u, u+n) left the work list; the caller that empties it signals. */
void sl_units_done(sl_restore *r, uint64_t n)
{
    /* acq_rel: the last decrement sees every earlier publish. */
    if (n && atomic_fetch_sub_explicit(&r->remaining, n, memory_order_acq_rel) == n) {
        /* relaxed: a figure for sl_restore_get_stats(), ordered with nothing */
        atomic_store_explicit(&r->t_complete, sl_now_ns(), memory_order_relaxed);
        sl_engine_kick(r->ctl_efd);
    }
}

bool sl_unit_has_data(const sl_region *reg, uint64_t u)
{
    return sl_bit_any(reg->blk->bitmap, u * reg->ratio, (u + 1) * reg->ratio);
}

/*
 * First snapshot page of [p0, p0+np) (staged at @buf) failing its checksum,
 * or UINT64_MAX.  Their checksums were loaded (sl_csums_get) by the caller.
 */
static uint64_t first_bad_in(sl_restore *r, const sl_region *reg, uint64_t p0, uint64_t np,
                             const uint8_t *buf)
{
    const uint64_t ps = reg->blk->page_size;
    uint64_t t0 = sl_now_ns(), bad = UINT64_MAX;

    for (uint64_t k = 0; k < np && bad == UINT64_MAX; k++) {
        uint64_t p = p0 + k;
        if (sl_bit_test(reg->blk->bitmap, p) && sl_hash(buf + k * ps, ps) != reg->blk->csums[p]) {
            bad = p;
        }
    }
    add(&r->c.checksum_ns, sl_now_ns() - t0);
    return bad;
}

/* First page of unit @u (staged at @buf) failing its checksum, or UINT64_MAX. */
static uint64_t first_bad_page(sl_restore *r, const sl_region *reg, uint64_t u,
                               const uint8_t *buf)
{
    return first_bad_in(r, reg, u * reg->ratio, reg->ratio, buf);
}

bool sl_unit_verifies(sl_restore *r, const sl_region *reg, uint64_t u, const uint8_t *buf)
{
    return r->cfg.no_checksum || first_bad_page(r, reg, u, buf) == UINT64_MAX;
}

/* Keeps the first refused page (block and page) for sl_restore_error(). */
static void note_bad_page(sl_restore *r, const sl_region *reg, uint64_t u, const uint8_t *staged)
{
    uint64_t expect = 0, page;

    /* Relaxed: only spares the search once a page is kept; the exchange
     * below decides which one is. */
    if (atomic_load_explicit(&r->bad_page, memory_order_relaxed)) {
        return; /* only the first one is reported */
    }
    page = first_bad_page(r, reg, u, staged);
    page = page == UINT64_MAX ? u * reg->ratio : page;
    /* Release: pairs with the acquire load in sl_restore_error(). */
    atomic_compare_exchange_strong_explicit(&r->bad_page, &expect,
                                            sl_bad_page_pack(reg->block, page),
                                            memory_order_release, memory_order_relaxed);
}

/*
 * ops->zero of [@off, +@len) of @reg into @v.  Where the memory is
 * allocated under the calling thread's policy (hugetlbfs), the thread runs
 * under the policy of the units' node meanwhile: the mbind of our alias
 * does not reach fallocate(), and the page came from wherever the thread
 * (the fault thread, a loader) happened to prefer (found by review).
 */
static int zero_range(sl_restore *r, sl_region *reg, sl_view *v, uint64_t off, uint64_t len,
                      uint64_t *done, uint64_t *eagain)
{
    sl_thread_policy saved;
    int ret;

    sl_alloc_policy_enter(r, reg, off / reg->unit, &saved);
    ret = reg->mem.ops->zero(&reg->mem, v, off, len, done, eagain);
    sl_alloc_policy_exit(&saved);
    return ret;
}

/* ops->show likewise: a hole it finds (the guest discarded the page) gets a zeroed page. */
static int show_range(sl_restore *r, sl_region *reg, sl_view *v, uint64_t off, uint64_t len,
                      unsigned how, uint64_t *done, uint64_t *eagain)
{
    sl_thread_policy saved;
    int ret;

    sl_alloc_policy_enter(r, reg, off / reg->unit, &saved);
    ret = reg->mem.ops->show(&reg->mem, v, off, len, how, done, eagain);
    sl_alloc_policy_exit(&saved);
    return ret;
}

#define SHOW_ON 4u /* map_unit_from(): show (with SL_SHOW_WRITTEN), not zero */

/*
 * EEXIST @off bytes into unit @u of @reg in view @v: a page of it is
 * mapped there already.  A unit of one backend page is then mapped.  One
 * of several (snapshot pages larger than the backend's: 2 MiB units of
 * 4 KiB pages) is mapped only once each of its pages is: one may have been
 * discarded since (a balloon), or a placement may have stopped part-way
 * (ENOMEM), and taking the unit as mapped left a thread faulting on the
 * missing page to fault again for ever, or (sealed) zeros (found by
 * review).  Maps the rest of the unit around the pages already there:
 * with @src (the unit's staged bytes) by placing, else with ops->show
 * (@show: SHOW_ON, with its SL_SHOW_WRITTEN passed on) or ops->zero (@show
 * 0).  0 or -errno.
 */
static int map_unit_from(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t at,
                         const uint8_t *src, unsigned show)
{
    const sl_backend_ops *ops = reg->mem.ops;
    const uint64_t pg = reg->mem.page_size ? reg->mem.page_size : reg->unit;
    const uint64_t base = u * reg->unit;
    uint64_t most = reg->unit; /* bytes per call: the rest, or a page once a VMA ends inside */

    while (at < reg->unit) {
        uint64_t done = 0, eagain = 0, len = MIN(most, reg->unit - at);
        int ret = src    ? ops->place(&reg->mem, v, base + at, src + at, len, &done, &eagain)
                  : show ? show_range(r, reg, v, base + at, len,
                                      (sl_unit_has_data(reg, u) ? SL_SHOW_DATA : 0) |
                                          (show & SL_SHOW_WRITTEN), &done, &eagain)
                         : zero_range(r, reg, v, base + at, len, &done, &eagain);
        add(&r->c.eagain, eagain);
        at += done + (ret == -EEXIST ? pg : 0); /* past a page already there */
        if (ret == -ENOENT && len > pg) {
            most = pg; /* the unit spans two VMAs: one ioctl takes one, go page by page */
            continue;
        }
        if (ret < 0 && ret != -EEXIST) {
            return ret;
        }
    }
    return 0;
}

static int map_rest_of_unit(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u,
                            uint64_t off, const uint8_t *src, unsigned show)
{
    return map_unit_from(r, reg, v, u, off + (reg->mem.page_size ? reg->mem.page_size
                                                                 : reg->unit), src, show);
}

/*
 * -ENOENT for one unit of several backend pages (snapshot pages larger
 * than the backend's), nothing of it mapped: a VMA may end inside the unit
 * (an madvise or mprotect of part of the mapping), which one ioctl cannot
 * cross.  Only page by page tells that from a range no longer registered
 * (found by review: the unit was taken for a consumer gone: its view
 * dropped, or sealed as done, and it read as zeros).
 */
static bool unit_may_span_vmas(const sl_region *reg, int ret, uint64_t len, uint64_t k)
{
    return ret == -ENOENT && len == 1 && k == 0 && reg->mem.page_size &&
           reg->unit > reg->mem.page_size;
}

/*
 * Map present units [u, u+n) into view @v, those it maps (a view of a part
 * of the block is shown that part), all holding data or none (@how, for
 * ops->show), skipping units already mapped there (EEXIST: wake them).  A
 * vanished consumer marks the view dead: 1.
 */
static int show_alike(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n,
                      unsigned how)
{
    uint64_t step;

    if (!sl_view_clip(reg, v, &u, &n)) {
        return 0;
    }
    step = n;
    while (n) {
        uint64_t done = 0, eagain = 0, k, len = MIN(n, step);
        int ret = show_range(r, reg, v, u * reg->unit, len * reg->unit, how, &done, &eagain);

        add(&r->c.eagain, eagain);
        k = done / reg->unit;
        if (spans_vmas(ret, len, k)) {
            step = 1; /* the kernel takes one VMA at a time: go unit by unit */
        } else if (ret == -EEXIST &&
                   (ret = map_rest_of_unit(r, reg, v, u + k, done - k * reg->unit, NULL,
                                           SHOW_ON | how)) == 0) {
            add(&r->c.eexist, 1);
            sl_uffd_wake(v->uffd, (void *)(uintptr_t)(v->base + (u + k) * reg->unit), reg->unit);
            k++;
        } else if (unit_may_span_vmas(reg, ret, len, k) &&
                   (ret = map_unit_from(r, reg, v, u, 0, NULL, SHOW_ON | how)) == 0) {
            sl_uffd_wake(v->uffd, (void *)(uintptr_t)(v->base + u * reg->unit), reg->unit);
            k = 1;
        } else if (drop_for(v, ret)) {
            sl_engine_drop_view(r, v, ret); /* that view alone: the others go on */
            return 1;
        } else if (ret < 0) {
            return ret;
        }
        u += k;
        n -= k;
    }
    return 0;
}

/*
 * Map present units [u, u+n) into view @v, in runs that hold data or do
 * not (see show in backend.h), with @written (SL_SHOW_WRITTEN or 0) for
 * all of them.  A vanished consumer marks the view dead.
 */
static int show_run(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n,
                    unsigned written)
{
    if (!v->wp) { /* @how changes only what a protected view gets: one call */
        int ret = show_alike(r, reg, v, u, n, written);
        return ret < 0 ? ret : 0;
    }
    while (n) {
        bool data = sl_unit_has_data(reg, u);
        uint64_t k = 1;
        int ret;

        while (k < n && sl_unit_has_data(reg, u + k) == data) {
            k++;
        }
        ret = show_alike(r, reg, v, u, k, (data ? SL_SHOW_DATA : 0) | written);
        if (ret != 0) {
            return ret < 0 ? ret : 0; /* 1: the view is gone, nothing more to show it */
        }
        u += k;
        n -= k;
    }
    return 0;
}

int sl_show_run(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n)
{
    return show_run(r, reg, v, u, n, 0);
}

int sl_show_written(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n)
{
    return show_run(r, reg, v, u, n, SL_SHOW_WRITTEN);
}

/* Map [u, u+n) into every live view except @skip (in-place backends). */
static int show_everywhere(sl_restore *r, sl_region *reg, const sl_view *skip, uint64_t u,
                           uint64_t n)
{
    unsigned nv = sl_view_count(reg);

    for (unsigned i = 0; i < nv && reg->mem.ops->in_place; i++) {
        sl_view *v = sl_region_view(reg, i);
        int ret = 0;
        if (v != skip && sl_view_enter(r, v)) {
            ret = sl_show_run(r, reg, v, u, n);
            sl_view_exit(r, v);
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * First live view of @reg, entered (sl_view_exit() when done), or NULL (a
 * shared file nobody maps yet).
 */
sl_view *sl_first_view(sl_restore *r, sl_region *reg)
{
    unsigned nv = sl_view_count(reg);

    for (unsigned i = 0; i < nv; i++) {
        sl_view *v = sl_region_view(reg, i);
        if (sl_view_enter(r, v)) {
            return v;
        }
    }
    return NULL;
}

/*
 * Refuse unit @u (claimed by the caller, staged at @staged) whose data is
 * corrupt: note which page failed, throw its bytes away and poison it in
 * every view, so an access raises SIGBUS, never zeros (UFFDIO_POISON wakes
 * threads faulting there).  Returns 0 if the restore can go on.
 */
int sl_refuse_unit(sl_restore *r, sl_region *reg, uint64_t u, const uint8_t *staged)
{
    bool poison = reg->ioctls & SL_IOCTL(_UFFDIO_POISON);
    unsigned nv = sl_view_count(reg);
    int expect = 0;

    add(&r->c.checksum_failures, 1);
    note_bad_page(r, reg, u, staged);
    /* relaxed: sl_units_done() below counts @remaining down (acq_rel) after
     * it, and finish() (fault.c) reads it only once it saw 0 (acquire) */
    atomic_compare_exchange_strong_explicit(&r->page_error, &expect, -EBADMSG,
                                            memory_order_relaxed, memory_order_relaxed);
    if (reg->mem.ops->discard) {
        reg->mem.ops->discard(&reg->mem, u * reg->unit, reg->unit);
    }
    for (unsigned i = 0; i < nv && poison; i++) {
        sl_view *v = sl_region_view(reg, i);
        if (sl_view_covers(reg, v, u, 1) && sl_view_enter(r, v)) {
            sl_poison_unit(reg, v, u);
            sl_view_exit(r, v);
        }
    }
    sl_pagemap_poison(reg->map, u);
    sl_units_done(r, 1);
    return poison ? 0 : -EBADMSG; /* without poison, faults on it stay blocked */
}

/* Audit of units [u, u+k) just placed by @who: counts, node, order. */
static void account(sl_restore *r, sl_region *reg, uint64_t u, uint64_t k, int who)
{
    sl_pagemap_note_placed(reg->map, u, k);
    if (who == BY_FAULT) {
        add(&r->c.pages_by_fault, k);
    } else {
        unsigned g = (unsigned)who & 0xff;
        add(&r->c.pages_by_loader, k);
        add(&r->c.pages_by_node[g], k);
        add(&r->c.pages_by_hint, who & HINTED ? k : 0);
        for (uint64_t i = u; i < u + k; i++) {
            add(&r->c.wrong_node, sl_unit_node(r, reg, i) != g);
        }
    }
    for (uint64_t i = u; reg->order && i < u + k; i++) {
        /* Relaxed: a unique number for the trace, nothing read through it.
         * 32 bits: wraps after 2^32 placements (16 TiB of 4 KiB pages). */
        reg->order[i] = atomic_fetch_add_explicit(&r->order_seq, 1, memory_order_relaxed);
    }
}

/*
 * Units [u, u+n) are claimed and staged at @src (NULL: zero run): place them
 * in @v (NULL: in no view yet), publish them, map them into the other views,
 * and only then count them done: the restore completes (and unregisters
 * every view) only once every view was shown every unit.  EEXIST (already
 * mapped in @v) wakes the unit and counts as placed.  @move: the staged
 * pages are moved into @v (ops->adopt), or copied from where a move stops.
 * Bytes no checksum proves are placed only while the snapshot's file is
 * still the one opened (sl_snapshot_unchanged(): -ESTALE, nothing placed).
 */
int sl_commit_run(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n,
                  const uint8_t *src, int who, bool move)
{
    const sl_backend_ops *ops = reg->mem.ops;
    const uint64_t u0 = u, n0 = n;
    uint64_t step = n;
    int ret;

    if (!v && !ops->in_place) { /* anonymous memory whose one view is gone */
        sl_pagemap_unclaim(reg->map, u, n);
        return -ESRCH;
    }
    if (src && r->cfg.no_checksum && (ret = sl_snapshot_unchanged(r->snap)) < 0) {
        if (ops->in_place && ops->discard) { /* staged in the shared file: not left there */
            ops->discard(&reg->mem, u * reg->unit, n * reg->unit);
        }
        sl_pagemap_unclaim(reg->map, u, n);
        return ret;
    }
    if (v && !sl_view_covers(reg, v, u, n)) {
        /* A view of a part of the block (only shared files have them)
         * that does not map all of the run: the run goes into the page
         * cache alone, and each view is shown its part below. */
        v = NULL;
    }
    while (n) {
        uint64_t done = 0, eagain = 0, k, len = MIN(n, step);
        if (!src) {
            ret = zero_range(r, reg, v, u * reg->unit, len * reg->unit, &done, &eagain);
        } else if (move) {
            ret = ops->adopt(&reg->mem, v, u * reg->unit, (uint8_t *)src, len * reg->unit,
                             &done, &eagain);
        } else {
            ret = ops->place(&reg->mem, v, u * reg->unit, src, len * reg->unit, &done, &eagain);
        }
        k = done / reg->unit;
        add(&r->c.eagain, eagain);
        account(r, reg, u, k, who);
        add(&r->c.zero_pages, src ? 0 : k);
        add(&r->c.pages_moved, move ? k : 0);
        if (move && ret < 0 && !consumer_gone(ret)) {
            move = false; /* EBUSY (a pinned page), ...: the rest is copied */
        } else if (v && spans_vmas(ret, len, k)) {
            step = 1; /* the kernel takes one VMA at a time: go unit by unit */
        } else if (v && unit_may_span_vmas(reg, ret, len, k) &&
                   (ret = map_unit_from(r, reg, v, u, 0, src, 0)) == 0) {
            sl_uffd_wake(v->uffd, (void *)(uintptr_t)(v->base + u * reg->unit), reg->unit);
            account(r, reg, u, 1, who);
            add(&r->c.zero_pages, src ? 0 : 1);
            k = 1; /* placed across the VMAs, page by page */
        } else if (ret == -EEXIST &&
                   (ret = map_rest_of_unit(r, reg, v, u + k, done - k * reg->unit,
                                           src ? src + k * reg->unit : NULL, 0)) == 0) {
            add(&r->c.eexist, 1);
            sl_uffd_wake(v->uffd, (void *)(uintptr_t)(v->base + (u + k) * reg->unit), reg->unit);
            k++;
        } else if (v && ops->in_place && drop_for(v, ret)) {
            sl_engine_drop_view(r, v, ret); /* staged: the rest goes in no view, published */
            v = NULL;
        } else if (ret < 0) { /* [u0, u + k) are placed, the rest given back */
            sl_pagemap_publish(reg->map, u0, u + k - u0);
            sl_units_done(r, u + k - u0);
            sl_pagemap_unclaim(reg->map, u + k, n - k);
            return ret;
        }
        u += k;
        n -= k;
        src = src ? src + k * reg->unit : NULL;
    }
    sl_pagemap_publish(reg->map, u0, n0);
    ret = show_everywhere(r, reg, v, u0, n0);
    sl_units_done(r, n0);
    return ret;
}

/*
 * Zero units [u, u+n), claimed by a loader: published without a placement.
 * Their memory stays a hole (anonymous memory not yet faulted, a file hole)
 * and reads as zeros once the views are unregistered; a fault on one before
 * is served by mapping zeros there (show: ZEROPAGE, or fallocate+CONTINUE),
 * as for a page the guest discarded.  No page is allocated, cleared or
 * mapped for the zero pages nobody touches (30 % of a typical guest).
 */
/*
 * A restore that tracks writes in shared memory: uffd-wp markers on the
 * holes of zero units [u, u+n) in our own view.  A written page that then
 * leaves the page tables (swapped out, MADV_DONTNEED) leaves an empty entry
 * while its file keeps the written bytes; with the markers, an empty entry
 * over a zero unit means exactly that, never a hole nobody touched, and a
 * reset (reset.c, empty_units) drops it (found by review: such a page kept
 * its write through every reset).  Best effort: a unit left unmarked only
 * costs a reset a needless drop of it.
 */
static void mark_zero_holes(const sl_restore *r, sl_region *reg, uint64_t u, uint64_t n)
{
    unsigned nv = r->cfg.track_writes && reg->mem.ops->in_place ? sl_view_count(reg) : 0;

    for (unsigned i = 0; i < nv; i++) {
        /* Acquire: pairs with the release store of the slot in sl_restore_add_view(). */
        sl_view *v = atomic_load_explicit(&reg->views[i], memory_order_acquire);
        /* Fenced as a placement (uffd.h): once our view is dead the range
         * may be another mapping, registered on another uffd, whose pages
         * the kernel would let us protect (seq_cst check, under the lock). */
        if (v && v->own && v->wp) {
            pthread_rwlock_rdlock(v->fence.lock);
            if (!atomic_load(&v->dead)) {
                (void)sl_uffd_writeprotect(v->uffd, v->base + u * reg->unit, n * reg->unit,
                                           true);
            }
            pthread_rwlock_unlock(v->fence.lock);
        }
    }
}

void sl_publish_zeros(sl_restore *r, sl_region *reg, uint64_t u, uint64_t n, int who)
{
    mark_zero_holes(r, reg, u, n);
    account(r, reg, u, n, who);
    add(&r->c.zero_pages, n);
    sl_pagemap_publish(reg->map, u, n);
    sl_units_done(r, n);
}

/*
 * Whether the page of @ps bytes (more than CHECK_BYTES) at @off of @fd is
 * what the snapshot holds: checksum @want where @stored, else zeros; read
 * into @check a CHECK_BYTES slice at a time and hashed as one stream,
 * which gives the one-shot hash of the whole page.
 */
static bool large_page_kept(int fd, uint64_t off, uint64_t ps, bool stored, uint64_t want,
                            uint8_t *check)
{
    XXH3_state_t st;

    XXH3_64bits_reset(&st);
    for (uint64_t d = 0; d < ps; d += CHECK_BYTES) {
        uint64_t n = MIN(CHECK_BYTES, ps - d);
        if (sl_pread_full(fd, check, n, off + d) != 0 || (!stored && !sl_all_zero(check, n))) {
            return false;
        }
        if (stored) {
            XXH3_64bits_update(&st, check, n);
        }
    }
    return !stored || XXH3_64bits_digest(&st) == want;
}

/* Whether snapshot pages [@p, +@n) of @reg, read at once into @check, are the snapshot's. */
static bool pages_kept(const sl_region *reg, uint64_t p, uint64_t n, uint8_t *check)
{
    const sl_block *b = reg->blk;
    const uint64_t ps = b->page_size;
    bool same = sl_pread_full(reg->mem.fd, check, n * ps, reg->mem.offset + p * ps) == 0;

    for (uint64_t k = 0; k < n && same; k++) {
        const uint8_t *pg = check + k * ps;
        same = sl_bit_test(b->bitmap, p + k) ? sl_hash(pg, ps) == b->csums[p + k]
                                             : sl_all_zero(pg, ps);
    }
    return same;
}

/*
 * config.keep_memory: whether the reused file already holds unit @u (proven)
 * as the snapshot has it: each stored page with its checksum, each zero
 * page zero.  Read with pread (neither faults nor plants a page; a hole
 * reads as zeros) into @check (CHECK_BYTES), a slice at a time: whole
 * pages where they fit, a page larger than it in slices.
 */
bool sl_unit_kept(sl_restore *r, const sl_region *reg, uint64_t u, uint8_t *check)
{
    const sl_block *b = reg->blk;
    const uint64_t ps = b->page_size, per = MAX(1, CHECK_BYTES / ps);
    uint64_t t0;
    bool same = true;

    if (sl_region_known_unit(reg, u)) {
        add(&r->c.pages_known, 1);
        return true;
    }
    if (r->cfg.no_checksum) {
        return false; /* nothing to prove it with: restored */
    }
    t0 = sl_now_ns();
    for (uint64_t p = u * reg->ratio; p < (u + 1) * reg->ratio && same; p += per) {
        uint64_t n = MIN(per, (u + 1) * reg->ratio - p);
        same = ps > CHECK_BYTES
                   ? large_page_kept(reg->mem.fd, reg->mem.offset + p * ps, ps,
                                     sl_bit_test(b->bitmap, p), b->csums[p], check)
                   : pages_kept(reg, p, n, check);
    }
    add(&r->c.checksum_ns, sl_now_ns() - t0);
    return same;
}

/*
 * Units [u, u+n), claimed, that the reused file already holds: published
 * without a placement and mapped into every view (CONTINUE of the page
 * cache; a hole, for a zero unit, gets zeros there as show does).
 */
int sl_commit_kept(sl_restore *r, sl_region *reg, uint64_t u, uint64_t n, int who)
{
    int ret;

    account(r, reg, u, n, who);
    add(&r->c.pages_kept, n);
    sl_pagemap_publish(reg->map, u, n);
    ret = show_everywhere(r, reg, NULL, u, n);
    sl_units_done(r, n);
    return ret;
}

/*
 * Units [u, u+n) of @reg are proven (segments.c): the bitmap bits that say
 * which of their pages are zero, and the checksums that will check the
 * others, match their segment digests.  Nothing may act on those bits
 * before.  A segment that does not match fails the restore, naming it.
 */
int sl_prove_units(sl_restore *r, const sl_region *reg, uint64_t u, uint64_t n)
{
    const sl_block *b = reg->blk;
    int ret = r->cfg.no_checksum ? 0 : sl_csums_get(r->snap, b, u * reg->ratio, n * reg->ratio);
    GError *expect = NULL, *why;
    g_autofree char *culprit = NULL;
    uint64_t stray, first, last;

    if (ret != -EBADMSG) {
        return ret;
    }
    culprit = sl_seg_culprit(r->snap, b, u * reg->ratio, &stray);
    first = u * reg->ratio / SL_CSUM_SEG * SL_CSUM_SEG;
    last = MIN(first + SL_CSUM_SEG, b->npages) - 1;
    if (stray != UINT64_MAX) { /* as the full open says it (found by a user's test) */
        why = g_error_new(SL_ERROR, SL_ERROR_FORMAT, "restore failed: %s: block '%s': page %"
                          G_GUINT64_FORMAT " is not stored (its bitmap bit is clear) but has a "
                          "checksum entry: the metadata is inconsistent, and none of pages %"
                          G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT " was placed", culprit, b->name,
                          stray, first, last);
    } else {
        why = g_error_new(SL_ERROR, SL_ERROR_FORMAT, "restore failed: %s: block '%s': the "
                          "metadata of pages %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT " (a "
                          "segment of its bitmap and checksum array) does not match its "
                          "digest: the snapshot is corrupt there, and none of those pages was "
                          "placed", culprit, b->name, first, last);
    }
    /* Release: pairs with the acquire load in sl_restore_error(). */
    if (!atomic_compare_exchange_strong_explicit(&r->meta_error, &expect, why,
                                                 memory_order_release, memory_order_relaxed)) {
        g_error_free(why); /* the first reason is kept */
    }
    return ret;
}

/* Whether bytes staged for @reg land in memory that is zero where they do not. */
static bool staged_zeroed(const sl_region *reg)
{
    return reg->mem.ops->stage_zeroed && !reg->mem.keep;
}

/* Keeps the first failed read (pages [p0, +np) of @reg, -errno @err) for
 * sl_restore_error(), which then names them (found by a user's test: a
 * failed read was reported with no page, file or reason). */
static void note_read_failure(sl_restore *r, const sl_region *reg, uint64_t p0, uint64_t np,
                              int err)
{
    bool expect = false;

    /* Relaxed: only picks the one writer; the release store below publishes. */
    if (!atomic_compare_exchange_strong_explicit(&r->read_failure_claimed, &expect, true,
                                                 memory_order_relaxed, memory_order_relaxed)) {
        return;
    }
    atomic_store_explicit(&r->read_failure_pages, np, memory_order_relaxed);
    atomic_store_explicit(&r->read_failure_errno, -err, memory_order_relaxed);
    /* Release: pairs with the acquire load in sl_restore_error(). */
    atomic_store_explicit(&r->read_failure, sl_bad_page_pack(reg->block, p0),
                          memory_order_release);
}

/*
 * Snapshot pages [p0, +np) of @reg into @dst (staged there) through @fd,
 * pages [@skip, +@nskip) left alone.  Reads through the fault descriptor
 * (FADV_RANDOM: each read of a cold file is one disk request, waited for)
 * are gathered, the stored runs of the range in one request; the loaders'
 * reads go run by run (gathering reads the file's holes, and a hole read
 * gives the page cache a zeroed page).
 */
static int read_pages_besides(sl_restore *r, const sl_region *reg, uint64_t p0, uint64_t np,
                              uint8_t *dst, int fd, uint64_t skip, uint64_t nskip)
{
    bool zeroed = staged_zeroed(reg);
    int ret;

    if (fd == r->fault_fd || nskip) {
        ret = sl_snapshot_gather_fd(r->snap, fd, reg->block, p0, np, dst, zeroed, skip, nskip);
    } else {
        ret = zeroed ? sl_snapshot_read_stored_fd(r->snap, fd, reg->block, p0, np, dst)
                     : sl_snapshot_read_pages_fd(r->snap, fd, reg->block, p0, np, dst, false);
    }
    if (ret < 0) {
        note_read_failure(r, reg, p0, np, ret);
    }
    return ret;
}

/* Snapshot pages [p0, +np) of @reg into @dst (staged there) through @fd. */
static int read_pages(sl_restore *r, const sl_region *reg, uint64_t p0, uint64_t np,
                      uint8_t *dst, int fd)
{
    return read_pages_besides(r, reg, p0, np, dst, fd, 0, 0);
}

/* Reads units [u, u+n) of @reg (proven) into @dst through @fd; 0 or -errno. */
int sl_read_units(sl_restore *r, const sl_region *reg, uint64_t u, uint64_t n, uint8_t *dst,
                  int fd)
{
    int ret = read_pages(r, reg, u * reg->ratio, n * reg->ratio, dst, fd);

    if (ret == 0) {
        add(&r->c.bytes_read, n * reg->unit);
    }
    return ret;
}

/*
 * Claimed units [u, u+n), staged at @dst: bad ones refused, the runs
 * between committed.  On a failure the units not reached are given back
 * (left claimed, a fault on one waited for ever: found by review).
 */
static int check_and_commit(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n,
                            uint8_t *dst, int who)
{
    uint64_t start = u;

    for (uint64_t k = u; k <= u + n; k++) {
        bool bad = k < u + n && !sl_unit_verifies(r, reg, k, dst + (k - u) * reg->unit);
        int ret = 0;
        if (k < u + n && !bad) {
            continue;
        }
        if (k > start) { /* on a failure it gave back the rest of its own run */
            ret = sl_commit_run(r, reg, v, start, k - start, dst + (start - u) * reg->unit, who,
                                false);
        }
        if (ret == 0 && bad) {
            ret = sl_refuse_unit(r, reg, k, dst + (k - u) * reg->unit);
            k += ret < 0; /* refused all the same: settled */
        }
        if (ret < 0) {
            if (k < u + n) {
                sl_pagemap_unclaim(reg->map, k, u + n - k);
            }
            return ret;
        }
        start = k + 1;
    }
    return 0;
}

int sl_fill_claimed(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n,
                    uint8_t *dst, int who, int fd)
{
    int ret = sl_read_units(r, reg, u, n, dst, fd);

    if (ret < 0) {
        sl_pagemap_unclaim(reg->map, u, n);
        return ret;
    }
    return check_and_commit(r, reg, v, u, n, dst, who);
}

int sl_fill_besides(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u0, uint64_t n,
                    uint64_t u, uint8_t *dst, int who, int fd)
{
    /* One read for both sides: two reads of a cold file are two disk
     * requests, one after the other.  @u's bytes are not read again: they
     * may be the guest's already (shared memory stages in place). */
    int ret = read_pages_besides(r, reg, u0 * reg->ratio, n * reg->ratio, dst, fd,
                                 u * reg->ratio, reg->ratio);
    uint64_t above = u0 + n - u - 1;

    if (ret < 0) {
        sl_pagemap_unclaim(reg->map, u0, u - u0);
        sl_pagemap_unclaim(reg->map, u + 1, above);
        return ret;
    }
    add(&r->c.bytes_read, (n - 1) * reg->unit);
    ret = check_and_commit(r, reg, v, u0, u - u0, dst, who);
    if (ret < 0) {
        sl_pagemap_unclaim(reg->map, u + 1, above);
        return ret;
    }
    return check_and_commit(r, reg, v, u + 1, above, dst + (u + 1 - u0) * reg->unit, who);
}

/* Half of a large unit, read and checked by one of two threads. */
typedef struct {
    sl_restore *r;
    const sl_region *reg;
    int fd;
    uint64_t p0, np;       /* snapshot pages [p0, p0+np) */
    uint8_t *dst;          /* where page p0 goes */
    int ret;               /* 0 or -errno */
    uint64_t bad;          /* first page failing its checksum, or UINT64_MAX */
} half_job;

static void read_check(void *opaque)
{
    half_job *h = opaque;

    h->ret = read_pages(h->r, h->reg, h->p0, h->np, h->dst, h->fd);
    h->bad = h->ret < 0 || h->r->cfg.no_checksum
                 ? UINT64_MAX : first_bad_in(h->r, h->reg, h->p0, h->np, h->dst);
}

/*
 * Claimed unit @u (holding data) read and checked in two halves at once,
 * the upper one by the fault thread's assistant: a vCPU waiting on a
 * 2 MiB page waits for about half of the reading and hashing.  Then
 * committed, or refused, as sl_fill_claimed() does.
 */
static int fill_split(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint8_t *dst, int fd,
                      sl_assist *assist)
{
    const uint64_t half = reg->ratio / 2, p0 = u * reg->ratio;
    half_job lo = { .r = r, .reg = reg, .fd = fd, .p0 = p0, .np = half, .dst = dst };
    half_job hi = { .r = r, .reg = reg, .fd = fd, .p0 = p0 + half, .np = reg->ratio - half,
                    .dst = dst + half * reg->blk->page_size };

    sl_assist_post(assist, read_check, &hi);
    read_check(&lo);
    sl_assist_wait(assist);
    if (lo.ret < 0 || hi.ret < 0) {
        sl_pagemap_unclaim(reg->map, u, 1);
        return lo.ret < 0 ? lo.ret : hi.ret;
    }
    add(&r->c.bytes_read, reg->unit);
    if (lo.bad != UINT64_MAX || hi.bad != UINT64_MAX) {
        return sl_refuse_unit(r, reg, u, dst);
    }
    return sl_commit_run(r, reg, v, u, 1, dst, BY_FAULT, false);
}

/*
 * Serve one unit the fault thread claimed for view @v (read through @fd;
 * a large one split with @assist when there is one).
 */
int sl_serve_unit(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint8_t *bounce,
                  uint8_t *check, int fd, sl_assist *assist)
{
    uint8_t *dst;

    int ret = sl_prove_units(r, reg, u, 1);

    if (ret < 0) {
        sl_pagemap_unclaim(reg->map, u, 1);
        return ret;
    }
    if (reg->mem.keep && sl_unit_kept(r, reg, u, check)) {
        return sl_commit_kept(r, reg, u, 1, BY_FAULT);
    }
    /* A reused file's zero unit may hold stale bytes: zeros go through the
     * data path there (fallocate would leave the stale page in place). */
    if (!reg->mem.keep && !sl_unit_has_data(reg, u)) {
        return sl_commit_run(r, reg, v, u, 1, NULL, BY_FAULT, false);
    }
    dst = reg->mem.ops->stage(&reg->mem, u * reg->unit, bounce);
    if (assist && reg->ratio >= SPLIT_MIN_PAGES) {
        return fill_split(r, reg, v, u, dst, fd, assist);
    }
    return sl_fill_claimed(r, reg, v, u, 1, dst, BY_FAULT, fd);
}

/* Starts the fault thread, then the loaders and the prefault thread. */
bool sl_engine_start(sl_restore *r, GError **errp)
{
    if (!sl_fault_start(r, errp)) {
        return false;
    }
    r->t_ready = sl_now_ns();
    if (!sl_loaders_start(r, errp)) {
        sl_engine_fail(r, -EAGAIN);
        return false;
    }
    return true;
}
