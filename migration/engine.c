/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore engine: one fault thread and N background loaders, generic
 * over backends through sl_backend_ops.
 *
 * The fault thread polls {control eventfd, our uffd, each remote consumer's
 * uffd} (no sleeps), reads fault messages in batches and serves each: claim
 * the unit, read it from the snapshot into the backend's staging area (a
 * bounce buffer for anon, the page cache through the alias for shared
 * files), check its checksum and place it in the faulting view.  The fault
 * thread never waits for background work: a fault on a unit a loader is
 * filling is deferred; the loader's placement wakes the faulting thread, and
 * settling the (watched) unit kicks the fault thread, which then maps it
 * into any view the loader did not (see serve_other()).
 *
 * Loaders take 1 MiB chunks in file order from a shared cursor.  For bounce
 * backends they read and verify first and claim right before the placement
 * ioctl, so a fault never waits on their I/O.  For in-place backends the
 * staging area is shared memory, so they claim first (at most 64 KiB or one
 * hugepage at a time), read straight into the page cache, verify, publish,
 * then map the run into every consumer view with one ioctl per view.
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
 * stopped.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "restore-int.h"
#include "assist.h"
#include "busy.h"
#include "direct.h"
#include "large.h"
#include "thp.h"
#include "uffd.h"

#define MSG_BATCH 64
#define READAHEAD_CHUNKS 16 /* chunks (1 MiB) the kernel reads ahead of the loaders */
/* Loaders are background work: at nice 10 a loader weighs 110 against a
 * vCPU's 1024, so a vCPU sharing a CPU with one keeps about 90 % of it. */
#define LOADER_NICE 10
#define FAULT_NICE (-10) /* needs CAP_SYS_NICE; ignored without it */

/* Who places a unit: the fault thread, or loader group g (| HINTED when the
 * work came from a fault window or the hot list). */
#define BY_FAULT (-1)
#define HINTED 0x100

/* Counters only: relaxed, and no write at all for 0 (the fault path adds many). */
static void add(_Atomic uint64_t *c, uint64_t n)
{
    if (n) {
        atomic_fetch_add_explicit(c, n, memory_order_relaxed);
    }
}

void sl_engine_kick(int efd)
{
    uint64_t one = 1;
    ssize_t n = write(efd, &one, sizeof(one));
    (void)n; /* an eventfd write only fails on overflow: still readable */
}

void sl_engine_fail(sl_restore *r, int err)
{
    int expect = -EINPROGRESS;

    /* Release: pairs with the acquire load in sl_restore_poll(). */
    if (atomic_compare_exchange_strong_explicit(&r->status, &expect, err,
                                                memory_order_release,
                                                memory_order_relaxed)) {
        sl_engine_kick(r->done_efd);
    }
    atomic_store_explicit(&r->stopping, true, memory_order_release);
    sl_engine_kick(r->ctl_efd);
}

static unsigned view_count(const sl_region *reg)
{
    /* Acquire: pairs with the release store in sl_restore_add_view(). */
    return atomic_load_explicit(&((sl_region *)reg)->nviews, memory_order_acquire);
}

static bool view_live(const sl_view *v)
{
    return !atomic_load_explicit(&((sl_view *)v)->dead, memory_order_relaxed);
}

/*
 * A thread other than the fault thread is done with view @v.  The last user
 * of a dead view kicks the fault thread, which may now close its uffd.
 */
static void view_exit(sl_restore *r, sl_view *v)
{
    if (!v || v->own) {
        return;
    }
    /* seq_cst: pairs with the dead/users reads in sl_engine_reclaim_views(). */
    if (atomic_fetch_sub(&v->users, 1) == 1 && atomic_load(&v->dead)) {
        atomic_fetch_add_explicit(&r->views_gen, 1, memory_order_release);
        sl_engine_kick(r->ctl_efd);
    }
}

/*
 * Enters view @v before an ioctl on its uffd from a thread other than the
 * fault thread (which alone closes uffds of dead views, between its poll
 * rounds).  False if @v is dead: leave it alone.
 */
static bool view_enter(sl_restore *r, sl_view *v)
{
    if (v->own) {
        return true;
    }
    /* seq_cst, Dekker-style: we raise users then read dead; the reclaimer
     * marked dead before it reads users.  One of us sees the other. */
    atomic_fetch_add(&v->users, 1);
    if (atomic_load(&v->dead)) {
        view_exit(r, v);
        return false;
    }
    return true;
}

void sl_engine_drop_view(sl_restore *r, sl_view *v, int err)
{
    bool was = false;

    /* One exchange decides who reports it (seq_cst: pairs with view_enter()). */
    if (v->own || !atomic_compare_exchange_strong(&v->dead, &was, true)) {
        return;
    }
    atomic_fetch_add_explicit(&r->views_gen, 1, memory_order_release); /* new poll set */
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
static void units_done(sl_restore *r, uint64_t n)
{
    /* acq_rel: the last decrement sees every earlier publish. */
    if (n && atomic_fetch_sub_explicit(&r->remaining, n, memory_order_acq_rel) == n) {
        atomic_store_explicit(&r->t_complete, sl_now_ns(), memory_order_relaxed);
        sl_engine_kick(r->ctl_efd);
    }
}

static bool unit_has_data(const sl_region *reg, uint64_t u)
{
    for (uint64_t p = u * reg->ratio; p < (u + 1) * reg->ratio; p++) {
        if (sl_bit_test(reg->blk->bitmap, p)) {
            return true;
        }
    }
    return false;
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

static bool unit_verifies(sl_restore *r, const sl_region *reg, uint64_t u, const uint8_t *buf)
{
    return r->cfg.no_checksum || first_bad_page(r, reg, u, buf) == UINT64_MAX;
}

/* Keeps the first refused page (block and page) for sl_restore_error(). */
static void note_bad_page(sl_restore *r, const sl_region *reg, uint64_t u, const uint8_t *staged)
{
    uint64_t expect = 0, page;

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
 * Map present units [u, u+n) into view @v, skipping units already mapped
 * there (EEXIST: wake them).  A vanished consumer marks the view dead.
 */
static int show_run(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n)
{
    uint64_t step = n;

    while (n) {
        uint64_t done = 0, eagain = 0, k, len = MIN(n, step);
        int ret = reg->mem.ops->show(&reg->mem, v, u * reg->unit, len * reg->unit, &done,
                                     &eagain);

        add(&r->c.eagain, eagain);
        k = done / reg->unit;
        if (spans_vmas(ret, len, k)) {
            step = 1; /* the kernel takes one VMA at a time: go unit by unit */
        } else if (ret == -EEXIST) {
            add(&r->c.eexist, 1);
            sl_uffd_wake(v->uffd, (void *)(uintptr_t)(v->base + (u + k) * reg->unit), reg->unit);
            k++;
        } else if (drop_for(v, ret)) {
            sl_engine_drop_view(r, v, ret); /* that view alone: the others go on */
            return 0;
        } else if (ret < 0) {
            return ret;
        }
        u += k;
        n -= k;
    }
    return 0;
}

/* Map [u, u+n) into every live view except @skip (in-place backends). */
static int show_everywhere(sl_restore *r, sl_region *reg, const sl_view *skip, uint64_t u,
                           uint64_t n)
{
    unsigned nv = view_count(reg);

    for (unsigned i = 0; i < nv && reg->mem.ops->in_place; i++) {
        sl_view *v = sl_region_view(reg, i);
        int ret = 0;
        if (v != skip && view_enter(r, v)) {
            ret = show_run(r, reg, v, u, n);
            view_exit(r, v);
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * First live view of @reg, entered (view_exit() when done), or NULL (a
 * shared file nobody maps yet).
 */
static sl_view *first_view(sl_restore *r, sl_region *reg)
{
    unsigned nv = view_count(reg);

    for (unsigned i = 0; i < nv; i++) {
        sl_view *v = sl_region_view(reg, i);
        if (view_enter(r, v)) {
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
static int refuse_unit(sl_restore *r, sl_region *reg, uint64_t u, const uint8_t *staged)
{
    bool poison = reg->ioctls & SL_IOCTL(_UFFDIO_POISON);
    unsigned nv = view_count(reg);
    int expect = 0;

    add(&r->c.checksum_failures, 1);
    note_bad_page(r, reg, u, staged);
    atomic_compare_exchange_strong_explicit(&r->page_error, &expect, -EBADMSG,
                                            memory_order_relaxed, memory_order_relaxed);
    if (reg->mem.ops->discard) {
        reg->mem.ops->discard(&reg->mem, u * reg->unit, reg->unit);
    }
    for (unsigned i = 0; i < nv && poison; i++) {
        sl_view *v = sl_region_view(reg, i);
        if (view_enter(r, v)) {
            sl_uffd_poison(v->uffd, (void *)(uintptr_t)(v->base + u * reg->unit), reg->unit);
            view_exit(r, v);
        }
    }
    sl_pagemap_poison(reg->map, u);
    units_done(r, 1);
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
 */
static int commit_run(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n,
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
    while (n) {
        uint64_t done = 0, eagain = 0, k, len = MIN(n, step);
        if (!src) {
            ret = ops->zero(&reg->mem, v, u * reg->unit, len * reg->unit, &done, &eagain);
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
        } else if (ret == -EEXIST) {
            add(&r->c.eexist, 1);
            sl_uffd_wake(v->uffd, (void *)(uintptr_t)(v->base + (u + k) * reg->unit), reg->unit);
            k++;
        } else if (v && ops->in_place && drop_for(v, ret)) {
            sl_engine_drop_view(r, v, ret); /* staged: the rest goes in no view, published */
            v = NULL;
        } else if (ret < 0) { /* [u0, u + k) are placed, the rest given back */
            sl_pagemap_publish(reg->map, u0, u + k - u0);
            units_done(r, u + k - u0);
            sl_pagemap_unclaim(reg->map, u + k, n - k);
            return ret;
        }
        u += k;
        n -= k;
        src = src ? src + k * reg->unit : NULL;
    }
    sl_pagemap_publish(reg->map, u0, n0);
    ret = show_everywhere(r, reg, v, u0, n0);
    units_done(r, n0);
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
static void publish_zeros(sl_restore *r, sl_region *reg, uint64_t u, uint64_t n, int who)
{
    account(r, reg, u, n, who);
    add(&r->c.zero_pages, n);
    sl_pagemap_publish(reg->map, u, n);
    units_done(r, n);
}

#define CHECK_BYTES (1u << 20) /* a reused file is read and hashed this much at a time */

static bool all_zero(const uint8_t *p, uint64_t len)
{
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/*
 * config.keep_memory: whether the reused file already holds unit @u (proven)
 * as the snapshot has it: each stored page with its checksum, each zero
 * page zero.  Read with pread (neither faults nor plants a page; a hole
 * reads as zeros) into @check (CHECK_BYTES), a slice at a time.
 */
static bool unit_kept(sl_restore *r, const sl_region *reg, uint64_t u, uint8_t *check)
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
        same = sl_pread_full(reg->mem.fd, check, n * ps, reg->mem.offset + p * ps) == 0;
        for (uint64_t k = 0; k < n && same; k++) {
            const uint8_t *pg = check + k * ps;
            same = sl_bit_test(b->bitmap, p + k) ? sl_hash(pg, ps) == b->csums[p + k]
                                                 : all_zero(pg, ps);
        }
    }
    add(&r->c.checksum_ns, sl_now_ns() - t0);
    return same;
}

/*
 * Units [u, u+n), claimed, that the reused file already holds: published
 * without a placement and mapped into every view (CONTINUE of the page
 * cache; a hole, for a zero unit, gets zeros there as show does).
 */
static int commit_kept(sl_restore *r, sl_region *reg, uint64_t u, uint64_t n, int who)
{
    int ret;

    account(r, reg, u, n, who);
    add(&r->c.pages_kept, n);
    sl_pagemap_publish(reg->map, u, n);
    ret = show_everywhere(r, reg, NULL, u, n);
    units_done(r, n);
    return ret;
}

/*
 * Units [u, u+n) of @reg are proven (csums.c): the bitmap bits that say
 * which of their pages are zero, and the checksums that will check the
 * others, match their segment digests.  Nothing may act on those bits
 * before.  A segment that does not match fails the restore, naming it.
 */
static int prove_units(sl_restore *r, const sl_region *reg, uint64_t u, uint64_t n)
{
    const sl_block *b = reg->blk;
    int ret = r->cfg.no_checksum ? 0 : sl_csums_get(r->snap, b, u * reg->ratio, n * reg->ratio);
    GError *expect = NULL, *why;

    if (ret != -EBADMSG) {
        return ret;
    }
    why = g_error_new(SL_ERROR, SL_ERROR_FORMAT, "restore failed: %s: block '%s': the "
                      "metadata of pages %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT " (a segment "
                      "of its bitmap and checksum array) does not match its digest: the "
                      "snapshot is corrupt there, and none of those pages was placed",
                      r->snap->path, b->name, u * reg->ratio / SL_CSUM_SEG * SL_CSUM_SEG,
                      MIN((u * reg->ratio / SL_CSUM_SEG + 1) * SL_CSUM_SEG, b->npages) - 1);
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

/* Snapshot pages [p0, +np) of @reg into @dst (staged there) through @fd. */
static int read_pages(sl_restore *r, const sl_region *reg, uint64_t p0, uint64_t np,
                      uint8_t *dst, int fd)
{
    return staged_zeroed(reg) ? sl_snapshot_read_stored_fd(r->snap, fd, reg->block, p0, np, dst)
                              : sl_snapshot_read_pages_fd(r->snap, fd, reg->block, p0, np, dst,
                                                          false);
}

/* Reads units [u, u+n) of @reg (proven) into @dst through @fd; 0 or -errno. */
static int read_units(sl_restore *r, const sl_region *reg, uint64_t u, uint64_t n, uint8_t *dst,
                      int fd)
{
    int ret = read_pages(r, reg, u * reg->ratio, n * reg->ratio, dst, fd);

    if (ret == 0) {
        add(&r->c.bytes_read, n * reg->unit);
    }
    return ret;
}

/*
 * Read claimed units [u, u+n) into @dst and commit them; units failing
 * their checksum are refused, the good runs between them committed.
 */
static int fill_claimed(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n,
                        uint8_t *dst, int who, int fd)
{
    int ret = read_units(r, reg, u, n, dst, fd);
    uint64_t start = u;

    if (ret < 0) {
        sl_pagemap_unclaim(reg->map, u, n);
        return ret;
    }
    for (uint64_t k = u; k <= u + n && ret == 0; k++) {
        bool bad = k < u + n && !unit_verifies(r, reg, k, dst + (k - u) * reg->unit);
        if (k < u + n && !bad) {
            continue;
        }
        if (k > start) {
            ret = commit_run(r, reg, v, start, k - start, dst + (start - u) * reg->unit, who,
                             false);
        }
        if (bad && ret == 0) {
            ret = refuse_unit(r, reg, k, dst + (k - u) * reg->unit);
        }
        start = k + 1;
    }
    return ret;
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

/* Units of at least this many snapshot pages (256 KiB) are split between two threads. */
#define SPLIT_MIN_PAGES 64

/*
 * Claimed unit @u (holding data) read and checked in two halves at once,
 * the upper one by the fault thread's assistant: a vCPU waiting on a
 * 2 MiB page waits for about half of the reading and hashing.  Then
 * committed, or refused, as fill_claimed() does.
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
        return refuse_unit(r, reg, u, dst);
    }
    return commit_run(r, reg, v, u, 1, dst, BY_FAULT, false);
}

/*
 * Serve one unit the fault thread claimed for view @v (read through @fd;
 * a large one split with @assist when there is one).
 */
static int serve_unit(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint8_t *bounce,
                      uint8_t *check, int fd, sl_assist *assist)
{
    uint8_t *dst;

    int ret = prove_units(r, reg, u, 1);

    if (ret < 0) {
        sl_pagemap_unclaim(reg->map, u, 1);
        return ret;
    }
    if (reg->mem.keep && unit_kept(r, reg, u, check)) {
        return commit_kept(r, reg, u, 1, BY_FAULT);
    }
    /* A reused file's zero unit may hold stale bytes: zeros go through the
     * data path there (fallocate would leave the stale page in place). */
    if (!reg->mem.keep && !unit_has_data(reg, u)) {
        return commit_run(r, reg, v, u, 1, NULL, BY_FAULT, false);
    }
    dst = reg->mem.ops->stage(&reg->mem, u * reg->unit, bounce);
    if (assist && reg->ratio >= SPLIT_MIN_PAGES) {
        return fill_split(r, reg, v, u, dst, fd, assist);
    }
    return fill_claimed(r, reg, v, u, 1, dst, BY_FAULT, fd);
}

/* Drops every view on @fd (its consumer went away or misbehaved: @err). */
static void drop_uffd(sl_restore *r, int fd, int err)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        unsigned nv = view_count(reg);
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
 * handed over), so its fd and the address find it.
 */
static bool find_view(sl_restore *r, int uffd, uint64_t addr, sl_region **regp, sl_view **vp)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        unsigned nv = view_count(reg);
        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            if (view_live(v) && v->uffd == uffd && addr >= v->base &&
                addr - v->base < reg->mem.length) {
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

/* What the fault thread owns. */
typedef struct {
    sl_restore *r;
    uint8_t *bounce;       /* bounce backends: one unit */
    uint8_t *check;        /* keep_memory: CHECK_BYTES to read the reused file into */
    GArray *deferred;      /* deferred_fault */
    int fd;                /* r->fault_fd */
    sl_assist *assist;     /* reads half of each large unit; NULL: none needed */
} fault_ctx;

/* Maps settled unit @u (PRESENT or POISONED) into view @v. */
static int show_settled(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, int st)
{
    if (st == SL_PAGE_POISONED) {
        if (reg->ioctls & SL_IOCTL(_UFFDIO_POISON)) {
            sl_uffd_poison(v->uffd, (void *)(uintptr_t)(v->base + u * reg->unit), reg->unit);
        }
        return 0;
    }
    return show_run(r, reg, v, u, 1);
}

/*
 * Claims the units next to claimed unit @u that hold data and that nobody
 * has claimed, within its aligned fault-around block [@a, @e), as far as
 * they run unbroken from @u either way: the run [*u0, *u0 + return).
 */
static uint64_t claim_around(sl_region *reg, uint64_t u, uint64_t a, uint64_t e, uint64_t *u0)
{
    uint64_t lo = u, hi = u + 1;

    while (lo > a && unit_has_data(reg, lo - 1) && sl_pagemap_claim(reg->map, lo - 1)) {
        lo--;
    }
    while (hi < e && unit_has_data(reg, hi) && sl_pagemap_claim(reg->map, hi)) {
        hi++;
    }
    /* Acquire: pairs with reset.c's release (r->dropping): during a reset
     * the neighbours go back, and the faulted unit is served alone. */
    if (atomic_load_explicit(&reg->r->dropping, memory_order_acquire)) {
        sl_pagemap_unclaim(reg->map, lo, u - lo);
        sl_pagemap_unclaim(reg->map, u + 1, hi - u - 1);
        lo = u;
        hi = u + 1;
    }
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

/*
 * Serve the fault on unit @u, which the fault thread claimed: with its
 * neighbours (config.fault_around) when it holds data, in one read and one
 * placement; the units served are [*u0, *u0 + *n).  The block's metadata
 * is proven before its bits choose the neighbours.
 */
static int serve_fault(fault_ctx *fc, sl_region *reg, sl_view *v, uint64_t u, uint64_t *u0,
                       uint64_t *n)
{
    sl_restore *r = fc->r;
    uint64_t a = u - u % reg->around, e = MIN(a + reg->around, reg->nunits);
    bool around = reg->around > 1 && !reg->mem.keep;
    int ret = around ? prove_units(r, reg, a, e - a) : 0;

    *u0 = u;
    *n = 1;
    if (ret < 0) {
        sl_pagemap_unclaim(reg->map, u, 1);
        return ret;
    }
    if (!around || !unit_has_data(reg, u)) { /* alone (a zero unit stays one unit) */
        return serve_unit(r, reg, v, u, fc->bounce, fc->check, fc->fd, fc->assist);
    }
    *n = claim_around(reg, u, a, e, u0);
    ret = fill_claimed(r, reg, v, *u0, *n, reg->mem.ops->stage(&reg->mem, *u0 * reg->unit,
                                                               fc->bounce), BY_FAULT, fc->fd);
    add(&r->c.pages_around, ret == 0 ? placed_besides(reg, *u0, *n, u) : 0);
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
 * or claims and serves it.  Returns 0 when served, or -errno.
 */
static int serve_other(fault_ctx *fc, sl_region *reg, sl_view *v, uint64_t u, uint64_t t0)
{
    for (;;) {
        int st = sl_pagemap_state(reg->map, u);

        if (st == SL_PAGE_CLAIMED && sl_pagemap_watch(reg->map, u)) {
            deferred_fault d = { .reg = reg, .v = v, .u = u, .t0 = t0 };
            g_array_append_val(fc->deferred, d);
            return 1;
        }
        if (st == SL_PAGE_ABSENT && sl_pagemap_claim(reg->map, u)) {
            /* its filler gave up */
            return serve_unit(fc->r, reg, v, u, fc->bounce, fc->check, fc->fd, fc->assist);
        }
        if (st >= SL_PAGE_PRESENT) {
            return show_settled(fc->r, reg, v, u, st);
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

static void handle_fault(fault_ctx *fc, int uffd, uint64_t addr)
{
    sl_restore *r = fc->r;
    uint64_t t0 = sl_now_ns(), zero = 0, u, u0, n = 1;
    sl_region *reg;
    sl_view *v;
    int ret;

    add(&r->c.faults, 1);
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
    if (sl_pagemap_claim(reg->map, u)) {
        ret = serve_fault(fc, reg, v, u, &u0, &n);
    } else {
        int st = sl_pagemap_state(reg->map, u);
        add(st == SL_PAGE_CLAIMED ? &r->c.faults_on_claimed : &r->c.faults_on_present, 1);
        ret = serve_other(fc, reg, v, u, t0);
    }
    sl_prefetch_note_fault(r, reg, u, ret == 0 ? u0 : u, ret == 0 ? n : 1);
    fault_done(r, ret, t0);
}

/* Retries deferred faults (a watched unit was settled): serves or re-defers. */
static void settle_deferred(fault_ctx *fc)
{
    GArray *old = fc->deferred;

    if (old->len == 0) {
        return;
    }
    fc->deferred = g_array_new(false, false, sizeof(deferred_fault));
    for (guint i = 0; i < old->len; i++) {
        deferred_fault *d = &g_array_index(old, deferred_fault, i);
        int ret = view_live(d->v) ? serve_other(fc, d->reg, d->v, d->u, d->t0) : 0;
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
        unsigned nv = view_count(reg);
        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            if ((v->own && !reg->registered) || v->uffd < 0) {
                continue;
            }
            sl_uffd_unregister(v->uffd, (void *)(uintptr_t)v->base, reg->mem.length);
        }
        reg->registered = false;
    }
}

/* Dead view @v of @reg that nobody uses: seal it and close its uffd. */
static void reclaim_view(sl_region *reg, sl_view *v)
{
    /* seq_cst: pairs with view_enter() (dead was set before, seq_cst). */
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
static void reclaim_views(sl_restore *r)
{
    g_mutex_lock(&r->views_lock);
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        unsigned nv = view_count(reg);
        for (unsigned j = 0; j < nv; j++) {
            reclaim_view(reg, sl_region_view(reg, j));
        }
        for (guint j = 0; j < reg->dead_views->len; j++) {
            reclaim_view(reg, g_ptr_array_index(reg->dead_views, j));
        }
    }
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
    int final = atomic_load_explicit(&r->page_error, memory_order_relaxed);
    bool track = r->cfg.track_writes;

    g_mutex_lock(&r->views_lock); /* no view joins between unregistering and the status */
    if (final == 0 && !track) {
        let_views_go(r);
    }
    if (final == 0) {
        clear_busy(r); /* every page is in place: saves may read the files */
    }
    r->finished_gen = gen;
    if (atomic_compare_exchange_strong_explicit(&r->status, &expect, final,
                                                memory_order_release, memory_order_relaxed)) {
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

/* Reads a batch of messages from @fd; false when the fd is finished. */
static bool read_faults(fault_ctx *fc, int fd)
{
    sl_restore *r = fc->r;
    struct uffd_msg msgs[MSG_BATCH];
    ssize_t n = read(fd, msgs, sizeof(msgs));

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
        unsigned nv = view_count(reg);
        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            bool seen = v->own || !view_live(v);
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

/* One poll round over @pfds; false when the thread must stop. */
static bool poll_round(fault_ctx *fc, GArray *pfds, bool *rebuild)
{
    sl_restore *r = fc->r;
    struct pollfd *p = (struct pollfd *)pfds->data;
    uint64_t v;

    if (poll(p, pfds->len, -1) < 0 && errno != EINTR) {
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

/* The fault thread's loop; returns when the restore stops or completes. */
static void fault_loop(fault_ctx *fc)
{
    sl_restore *r = fc->r;
    GArray *pfds = g_array_new(false, false, sizeof(struct pollfd));
    unsigned gen = ~0u;
    uint64_t want;

    for (;;) {
        bool rebuild = false;
        /* Acquire: pairs with the release store in sl_engine_fail()/stop. */
        if (atomic_load_explicit(&r->stopping, memory_order_acquire)) {
            break;
        }
        settle_deferred(fc);
        /* Acquire: pairs with the release increment in sl_restore_reset(),
         * which raised @remaining before; then @remaining (acquire: pairs
         * with the acq_rel decrement in units_done()). */
        want = atomic_load_explicit(&r->generation, memory_order_acquire);
        if (r->finished_gen != want &&
            atomic_load_explicit(&r->remaining, memory_order_acquire) == 0 && finish(r, want)) {
            break;
        }
        /* Acquire: pairs with the release increment in sl_restore_add_view(). */
        if (atomic_load_explicit(&r->views_gen, memory_order_acquire) != gen) {
            gen = atomic_load_explicit(&r->views_gen, memory_order_acquire);
            reclaim_views(r);
            build_pollset(r, pfds);
        }
        if (!poll_round(fc, pfds, &rebuild)) {
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
        if (reg->mem.ops->kind == SL_BACKEND_ANON && reg->mem.host) {
            add(&r->c.thp_bytes, sl_thp_collapse(-1, (uintptr_t)reg->mem.host, r->snap,
                                                 reg->block));
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
    fault_loop(&fc);
    sl_assist_free(fc.assist);
    if (fc.r->finished_gen && sl_restore_poll(fc.r) == 0) {
        if (fc.r->cfg.track_writes) {
            release_tracked(fc.r); /* WP bits go too: THP collapse works again */
        }
        collapse_own(fc.r);
    }
    free(fc.bounce);
    g_free(fc.check);
    g_array_free(fc.deferred, true);
    return NULL;
}

/* ---------------------------- loaders --------------------------------- */

typedef struct {
    sl_restore *r;
    sl_group *g;           /* the node this loader serves */
    int who;               /* group index, | HINTED while on hinted work */
    uint8_t *buf;          /* bounce backends: one chunk of page data, in 2 MiB-aligned
                            * hugepage-advised memory of its own (moved from: reg->move) */
    sl_large bufmap;       /* what holds @buf */
    uint8_t *check;        /* keep_memory: CHECK_BYTES to read the reused file into */
    bool *bad;             /* per unit of the chunk: failed verification */
    sl_direct *direct;     /* direct reads in flight (config.direct_reads), or NULL */
    sl_run queued[SL_DIRECT_DEPTH]; /* their runs, by tag */
    uint64_t queued_len[SL_DIRECT_DEPTH]; /* and the bytes each reads */
    uint64_t pushed;       /* reads queued so far (the next tag, modulo the depth) */
    bool map_zeros;        /* on hot-list work: zero units get their (zeroed) pages now */
    uint8_t *pre;          /* the chunk being loaded, already read directly (unit
                            * pre_u0 at its start), or NULL: read it now */
    uint64_t pre_u0;
} loader_ctx;

/*
 * Claimed zero units [u, u+n): published as holes (publish_zeros), or, on
 * hot-list work, given zeroed pages in every view now (ops->zero): the
 * guest touched them early in the recorded run, so it will most likely
 * touch them again before the restore ends, and each such touch of a hole
 * would be a fault.  Only the listed units: the others stay holes.
 */
static int commit_zeros(loader_ctx *lc, sl_region *reg, uint64_t u, uint64_t n)
{
    sl_view *v;
    int ret;

    if (!lc->map_zeros) {
        publish_zeros(lc->r, reg, u, n, lc->who);
        return 0;
    }
    v = first_view(lc->r, reg);
    ret = commit_run(lc->r, reg, v, u, n, NULL, lc->who, false);
    view_exit(lc->r, v);
    return ret;
}

/* Test hook: a loader has just claimed [u, u+n) of @reg (no-op in production). */
static void claimed_hook(sl_restore *r, const sl_region *reg, uint64_t u, uint64_t n)
{
    if (r->loader_claimed) {
        r->loader_claimed(r->loader_claimed_opaque, reg->index, u, n);
    }
}

/* Bounce backends: claim and place the units of [u, j) read into @base. */
static int claim_and_place(loader_ctx *lc, sl_region *reg, uint64_t u, uint64_t j,
                           const uint8_t *base)
{
    sl_restore *r = lc->r;

    for (uint64_t k = u; k < j;) {
        uint64_t m = k;
        int ret = 0;

        if (base && lc->bad[k - u]) {
            ret = sl_pagemap_claim(reg->map, k)
                      ? refuse_unit(r, reg, k, base + (k - u) * reg->unit) : 0;
            k++;
        } else {
            while (m < j && !(base && lc->bad[m - u]) && sl_pagemap_claim(reg->map, m)) {
                m++;
            }
            if (m > k && !base) {
                claimed_hook(r, reg, k, m - k);
                ret = commit_zeros(lc, reg, k, m - k);
            } else if (m > k) {
                sl_view *v = first_view(r, reg);
                claimed_hook(r, reg, k, m - k);
                ret = commit_run(r, reg, v, k, m - k, base + (k - u) * reg->unit, lc->who, false);
                view_exit(r, v);
            }
            k = m > k ? m : k + 1;
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Bounce backends: read and verify [u, j) first, claim right before placing. */
static int load_bounce(loader_ctx *lc, sl_region *reg, uint64_t u, uint64_t j, bool data)
{
    sl_restore *r = lc->r;
    const uint8_t *base = lc->buf;
    int ret;

    if (!data) {
        return claim_and_place(lc, reg, u, j, NULL);
    }
    if (lc->pre) { /* read directly already: a run with data lies in the span read */
        base = lc->pre + (u - lc->pre_u0) * reg->unit;
    } else if ((ret = read_units(r, reg, u, j - u, lc->buf, r->snap->fd)) < 0) {
        return ret;
    }
    for (uint64_t k = u; k < j; k++) {
        lc->bad[k - u] = !unit_verifies(r, reg, k, base + (k - u) * reg->unit);
    }
    return claim_and_place(lc, reg, u, j, base);
}

/*
 * keep_memory: claimed units [k, m) of a reused file: runs it already
 * holds are kept, the others filled from the snapshot.
 */
static int keep_or_fill(loader_ctx *lc, sl_region *reg, uint64_t k, uint64_t m)
{
    int ret = 0;

    bool kept = k < m && unit_kept(lc->r, reg, k, lc->check), next = kept;

    while (k < m && ret == 0) {
        uint64_t j = k + 1;
        /* Each unit is read and hashed once: the one ending a run starts the next. */
        while (j < m && (next = unit_kept(lc->r, reg, j, lc->check)) == kept) {
            j++;
        }
        if (kept) {
            ret = commit_kept(lc->r, reg, k, j - k, lc->who);
        } else {
            sl_view *v = first_view(lc->r, reg);
            ret = fill_claimed(lc->r, reg, v, k, j - k,
                               reg->mem.ops->stage(&reg->mem, k * reg->unit, lc->buf), lc->who,
                               lc->r->snap->fd);
            view_exit(lc->r, v);
        }
        k = j;
        kept = next;
    }
    return ret;
}

/*
 * In-place backends: claim up to claim_units of [u, j), then fill them
 * (staged where the backend says: its alias, or our buffer).
 */
static int load_in_place(loader_ctx *lc, sl_region *reg, uint64_t u, uint64_t j, bool data)
{
    for (uint64_t k = u; k < j;) {
        uint64_t m = k;
        int ret = 0;

        while (m < j && m - k < reg->claim_units && sl_pagemap_claim(reg->map, m)) {
            m++;
        }
        if (m > k && reg->mem.keep) {
            claimed_hook(lc->r, reg, k, m - k);
            ret = keep_or_fill(lc, reg, k, m);
        } else if (m > k && !data) {
            claimed_hook(lc->r, reg, k, m - k);
            ret = commit_zeros(lc, reg, k, m - k);
        } else if (m > k) {
            sl_view *v = first_view(lc->r, reg);
            claimed_hook(lc->r, reg, k, m - k);
            ret = fill_claimed(lc->r, reg, v, k, m - k,
                               reg->mem.ops->stage(&reg->mem, k * reg->unit, lc->buf), lc->who,
                               lc->r->snap->fd);
            view_exit(lc->r, v);
        }
        if (ret < 0) {
            return ret;
        }
        k = m > k ? m : k + 1;
    }
    return 0;
}

/* The end of the run of units like @u (data or zero) that starts at @u, before @end. */
static uint64_t run_end(const sl_region *reg, uint64_t u, uint64_t end)
{
    bool data = unit_has_data(reg, u);
    uint64_t j = u + 1;

    while (j < end && unit_has_data(reg, j) == data) {
        j++;
    }
    return j;
}

/*
 * Stages chunk [u0, u0+n) whole at @base for a move: data runs read (unless
 * read directly already: lc->pre), zero runs cleared (the moved hugepage
 * holds them too), every data unit checked.  0: staged, *@zeros units of
 * it zero; 1: not to be moved (a unit failing its checksum, which the
 * unit-by-unit path refuses); or -errno.
 */
static int stage_chunk(loader_ctx *lc, sl_region *reg, uint64_t u0, uint64_t n, uint8_t *base,
                       uint64_t *zeros)
{
    uint64_t end = u0 + n;

    *zeros = 0;
    for (uint64_t u = u0, j; u < end; u = j) {
        uint8_t *at = base + (u - u0) * reg->unit;
        int ret = 0;

        j = run_end(reg, u, end);
        if (!unit_has_data(reg, u)) {
            memset(at, 0, (j - u) * reg->unit);
            *zeros += j - u;
            continue;
        }
        if (!lc->pre && (ret = read_units(lc->r, reg, u, j - u, at, lc->r->snap->fd)) < 0) {
            return ret; /* with lc->pre it was read directly with the chunk already */
        }
        for (uint64_t k = u; k < j; k++) {
            if (!unit_verifies(lc->r, reg, k, base + (k - u0) * reg->unit)) {
                return 1;
            }
        }
    }
    return 0;
}

/* Claimed units [u0, m) staged at @base: copied in (data) or committed as zeros. */
static int copy_staged(loader_ctx *lc, sl_region *reg, uint64_t u0, uint64_t m,
                       const uint8_t *base)
{
    for (uint64_t u = u0, j; u < m; u = j) {
        int ret = 0;

        j = run_end(reg, u, m);
        claimed_hook(lc->r, reg, u, j - u);
        if (!unit_has_data(reg, u)) {
            ret = commit_zeros(lc, reg, u, j - u);
        } else {
            sl_view *v = first_view(lc->r, reg);
            ret = commit_run(lc->r, reg, v, u, j - u, base + (u - u0) * reg->unit, lc->who,
                             false);
            view_exit(lc->r, v);
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * reg->move: a whole 2 MiB chunk of our own anonymous mapping, every unit
 * absent, read into the loader's hugepage buffer, checked, claimed, and
 * moved into place with one UFFDIO_MOVE: no second copy, and the guest
 * gets a transparent hugepage at once (zero pages among data included, as
 * an eager load into MADV_HUGEPAGE memory would have them).  1: not taken
 * (a unit already placed, faulted or corrupt; no data): the caller loads
 * the rest unit by unit.
 */
static int load_moved(loader_ctx *lc, sl_region *reg, uint64_t u0, uint64_t n)
{
    uint64_t end = u0 + n, zeros, m = u0;
    uint8_t *base = lc->pre ? lc->pre + (u0 - lc->pre_u0) * reg->unit : lc->buf;
    bool data = false;
    sl_view *v;
    int ret;

    for (uint64_t u = u0; u < end; u++) {
        if (sl_pagemap_state(reg->map, u) != SL_PAGE_ABSENT) {
            return 1;
        }
        data = data || unit_has_data(reg, u);
    }
    if (!data) {
        return 1; /* all zeros: published unit by unit, nothing staged or allocated */
    }
    if ((ret = stage_chunk(lc, reg, u0, n, base, &zeros)) != 0) {
        return ret;
    }
    if (lc->r->loader_staged) {
        lc->r->loader_staged(lc->r->loader_staged_opaque, reg->index, u0, n);
    }
    while (m < end && sl_pagemap_claim(reg->map, m)) {
        m++;
    }
    if (m < end) { /* a fault took a unit meanwhile: what we claimed is copied */
        ret = copy_staged(lc, reg, u0, m, base);
        return ret < 0 ? ret : 1;
    }
    claimed_hook(lc->r, reg, u0, n);
    v = first_view(lc->r, reg);
    ret = commit_run(lc->r, reg, v, u0, n, base, lc->who, true);
    view_exit(lc->r, v);
    add(&lc->r->c.zero_pages, ret == 0 ? zeros : 0);
    return ret;
}

static int load_chunk(loader_ctx *lc, sl_region *reg, uint64_t u0, uint64_t n)
{
    uint64_t end = u0 + n;
    int ret = prove_units(lc->r, reg, u0, n); /* before any bitmap bit decides */

    if (ret < 0) {
        return ret;
    }
    if (reg->move && n == reg->chunk_units && u0 % reg->chunk_units == 0 &&
        (ret = load_moved(lc, reg, u0, n)) <= 0) {
        return ret;
    }
    for (uint64_t u = u0; u < end;) {
        uint64_t j = u + 1;
        bool data;

        if (sl_pagemap_state(reg->map, u) != SL_PAGE_ABSENT) {
            u++;
            continue;
        }
        data = unit_has_data(reg, u);
        /* A run never exceeds a chunk: the bounce buffer holds one. */
        while (j < end && j - u < reg->chunk_units &&
               sl_pagemap_state(reg->map, j) == SL_PAGE_ABSENT &&
               unit_has_data(reg, j) == data) {
            j++;
        }
        ret = reg->mem.ops->in_place ? load_in_place(lc, reg, u, j, data)
                                     : load_bounce(lc, reg, u, j, data);
        if (ret < 0) {
            return ret;
        }
        u = j;
    }
    return 0;
}

static void note_loader_time(sl_restore *r, uint64_t mine)
{
    uint64_t prev = atomic_load_explicit(&r->c.loader_ns_max, memory_order_relaxed);

    while (mine > prev && !atomic_compare_exchange_weak_explicit(
               &r->c.loader_ns_max, &prev, mine, memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* Pins the calling loader to its node's CPUs (best effort, audited). */
static const cpu_set_t *pin_to_node(loader_ctx *lc)
{
    const cpu_set_t *cpus = &lc->r->topo.nodes[lc->g->index].cpus;

    pthread_setaffinity_np(pthread_self(), sizeof(*cpus), cpus);
    sl_group_prefer_node(lc->r, lc->g->index); /* the hugepages it moves are allocated here */
    /* Best effort: background work yields the CPU to the fault thread. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), LOADER_NICE);
    return cpus;
}

/*
 * Direct reads: the reads of @run's runs of units with data into
 * @off/@len/@buf_off (at most SL_DIRECT_READS: past that, the last read
 * stretches over the holes up to the next run, which are read and not
 * used).  Their number; 0 when there is nothing to read.
 */
static unsigned direct_reads(const sl_region *reg, const sl_run *run, uint64_t *off,
                             uint64_t *len, uint64_t *buf_off)
{
    unsigned n = 0;

    for (uint64_t u = run->unit, end = run->unit + run->n; u < end;) {
        uint64_t j = u;
        if (!unit_has_data(reg, u)) {
            u++;
            continue;
        }
        while (j < end && unit_has_data(reg, j)) {
            j++;
        }
        if (n == SL_DIRECT_READS) { /* stretch the last read */
            len[n - 1] = reg->blk->pages_offset + j * reg->unit - off[n - 1];
        } else {
            off[n] = reg->blk->pages_offset + u * reg->unit;
            len[n] = (j - u) * reg->unit;
            buf_off[n++] = (u - run->unit) * reg->unit;
        }
        u = j;
    }
    return n;
}

/*
 * Direct reads: queues the reads of @run's units with data.  False when
 * it is to be loaded the ordinary way: no direct reads, a shared-memory
 * backend, nothing to read, unaligned, cached (SL_DIRECT_AUTO), or the
 * queue refused it.
 */
static bool queue_direct(loader_ctx *lc, const sl_run *run)
{
    sl_restore *r = lc->r;
    sl_region *reg = g_ptr_array_index(r->regions, run->region);
    uint64_t off[SL_DIRECT_READS], len[SL_DIRECT_READS], buf_off[SL_DIRECT_READS], total = 0;
    unsigned n;

    if (!lc->direct || reg->mem.ops->in_place || reg->blk->pages_offset % 4096 ||
        reg->unit % 4096 || prove_units(r, reg, run->unit, run->n) < 0 ||
        !(n = direct_reads(reg, run, off, len, buf_off))) { /* the bits it reads are proven */
        return false;
    }
    if (r->cfg.direct_reads == SL_DIRECT_AUTO &&
        !sl_direct_uncached(r->direct_fd, off[0], off[n - 1] + len[n - 1] - off[0])) {
        return false;
    }
    if (!sl_direct_push(lc->direct, lc->pushed % SL_DIRECT_DEPTH, n, off, len, buf_off)) {
        return false;
    }
    for (unsigned i = 0; i < n; i++) {
        total += len[i];
    }
    lc->queued_len[lc->pushed % SL_DIRECT_DEPTH] = total;
    lc->queued[lc->pushed++ % SL_DIRECT_DEPTH] = *run;
    return true;
}

/* Work a consumer is about to touch: from a fault window or the hot list. */
static bool hinted(sl_work from)
{
    return from == SL_WORK_WINDOW || from == SL_WORK_HOT;
}

/* Loads @run (already read into @pre, or NULL: read it now), which came @from. */
static int load_run(loader_ctx *lc, const sl_run *run, uint8_t *pre, sl_work from)
{
    sl_restore *r = lc->r;
    int ret;

    lc->who = (int)lc->g->index | (hinted(from) ? HINTED : 0);
    lc->map_zeros = from == SL_WORK_HOT;
    lc->pre = pre;
    lc->pre_u0 = run->unit;
    ret = load_chunk(lc, g_ptr_array_index(r->regions, run->region), run->unit, run->n);
    lc->pre = NULL;
    return ret;
}

/*
 * The next run to load now, in *@run: the group's next one that is not
 * queued for a direct read, or else the oldest direct read, once done
 * (*@pre: its buffer; NULL if that read failed, so it is read again the
 * ordinary way).  False when there is no more work.
 */
static bool next_run(loader_ctx *lc, sl_run *run, uint8_t **pre, sl_work *from)
{
    uint64_t tag;
    uint8_t *buf;

    *pre = NULL;
    while (!(lc->direct && sl_direct_full(lc->direct)) &&
           sl_group_next(lc->r, lc->g, run, from)) {
        if (hinted(*from) || !queue_direct(lc, run)) {
            return true;
        }
    }
    if (!lc->direct || sl_direct_empty(lc->direct)) {
        return false;
    }
    *from = SL_WORK_CHUNK; /* only chunks and a reset's runs are queued */
    if (sl_direct_pop(lc->direct, &tag, &buf) == 0) {
        *pre = buf;
        add(&lc->r->c.bytes_read, lc->queued_len[tag]);
        add(&lc->r->c.bytes_direct, lc->queued_len[tag]);
    }
    *run = lc->queued[tag];
    return true;
}

static gpointer loader_thread(gpointer opaque)
{
    loader_ctx *lc = opaque;
    sl_restore *r = lc->r;
    const cpu_set_t *cpus = pin_to_node(lc);
    uint64_t t0 = sl_now_ns();
    uint8_t *pre;
    sl_run run;
    sl_work from;

    while (!atomic_load_explicit(&r->stopping, memory_order_acquire) &&
           next_run(lc, &run, &pre, &from)) {
        int cpu = sched_getcpu(), ret;

        add(&r->c.cpu_violations, cpu >= 0 && !CPU_ISSET(cpu, cpus));
        if (!hinted(from) && !lc->direct) {
            /* Not with direct reads: the page cache would then be filled
             * ahead, and those chunks read through it. */
            sl_group_readahead(r, lc->g, READAHEAD_CHUNKS);
        }
        ret = load_run(lc, &run, pre, from);
        if (ret < 0) {
            sl_engine_fail(r, ret);
            break;
        }
    }
    sl_direct_free(lc->direct); /* after the reads still in flight */
    note_loader_time(r, sl_now_ns() - t0);
    sl_large_unmap(&lc->bufmap);
    g_free(lc->check);
    g_free(lc->bad);
    g_free(lc);
    return NULL;
}

/* Starts @g's threads into r->loaders from slot *@slot on. */
static bool spawn_group(sl_restore *r, sl_group *g, uint64_t max_units, unsigned *slot,
                        GError **errp)
{
    for (unsigned i = 0; i < g->nthreads; i++) {
        loader_ctx *lc = g_new0(loader_ctx, 1);
        lc->r = r;
        lc->g = g;
        lc->bad = g_new0(bool, max_units);
        lc->check = r->cfg.keep_memory ? g_malloc(CHECK_BYTES) : NULL;
        lc->direct = r->direct_fd >= 0 ? sl_direct_new(r->direct_fd, r->max_chunk) : NULL;
        if ((r->max_chunk && !(lc->buf = sl_large_map(&lc->bufmap, r->max_chunk))) ||
            !(r->loaders[*slot] = g_thread_try_new("sl-loader", loader_thread, lc, errp))) {
            sl_direct_free(lc->direct);
            sl_large_unmap(&lc->bufmap);
            g_free(lc->check);
            g_free(lc->bad);
            g_free(lc);
            return false;
        }
        (*slot)++;
    }
    return true;
}

/*
 * The snapshot opened once more with O_DIRECT for the loaders' direct
 * reads (r->direct_fd), where they may be used: config.direct_reads not
 * OFF, a bounce backend (anonymous memory) to fill, no parent (whose pages
 * are in other files).  Stays -1 where the file system refuses O_DIRECT.
 */
static void open_direct_fd(sl_restore *r)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", r->snap->fd);

    if (r->direct_fd >= 0 || r->cfg.direct_reads == SL_DIRECT_OFF || !r->max_bounce ||
        sl_snapshot_parent(r->snap)) {
        return;
    }
    r->direct_fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
}

static bool spawn_loaders(sl_restore *r, GError **errp)
{
    uint64_t max_units = 1;
    unsigned slot = 0;

    open_direct_fd(r);
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        max_units = MAX(max_units, MAX(reg->chunk_units, reg->window));
    }
    r->loaders = g_new0(GThread *, r->nloaders);
    for (unsigned g = 0; g < r->ngroups; g++) {
        if (!spawn_group(r, &r->groups[g], max_units, &slot, errp)) {
            return false;
        }
    }
    return true;
}

void sl_engine_join_loaders(sl_restore *r)
{
    for (unsigned i = 0; r->loaders && i < r->nloaders; i++) {
        if (r->loaders[i]) {
            g_thread_join(r->loaders[i]);
        }
    }
    g_clear_pointer(&r->loaders, g_free);
}

bool sl_engine_refill(sl_restore *r, GError **errp)
{
    sl_engine_join_loaders(r);
    return !r->nloaders || spawn_loaders(r, errp);
}

#define PREFAULT_BYTES (32u << 20) /* per call: the thread checks for a stop between them */

/* The units of [u, u+n) of @reg hold data (as the bitmap says: only a hint here). */
static bool any_data(const sl_region *reg, uint64_t u, uint64_t n)
{
    for (uint64_t k = u; k < u + n; k++) {
        if (unit_has_data(reg, k)) {
            return true;
        }
    }
    return false;
}

/*
 * Gives every range of units that will hold data its pages, zeroed, in
 * file order, ahead of the loaders (ops->prefault: hugetlbfs), so neither
 * a fault nor a loader pays for allocating and clearing them.  Allocation
 * only: nothing is placed or mapped, so the bitmap is a hint here.
 */
static gpointer prefault_thread(gpointer opaque)
{
    sl_restore *r = opaque;

    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), LOADER_NICE);
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        uint64_t step = MAX(1, PREFAULT_BYTES / reg->unit);
        for (uint64_t u = 0; reg->mem.ops->prefault && u < reg->nunits; u += step) {
            uint64_t n = MIN(step, reg->nunits - u);
            /* Acquire: pairs with the release store in sl_engine_fail()/stop. */
            if (atomic_load_explicit(&r->stopping, memory_order_acquire) ||
                atomic_load_explicit(&r->remaining, memory_order_relaxed) == 0) {
                return NULL;
            }
            if (any_data(reg, u, n)) {
                reg->mem.ops->prefault(&reg->mem, u * reg->unit, n * reg->unit);
            }
        }
    }
    return NULL;
}

/*
 * Starts prefault_thread where a backend has prefault and some CPU of the
 * restore runs no loader.  When a loader runs on every CPU, the loaders
 * clear each page themselves as they read into it, while it is still in
 * the CPU's cache: on this project's 2-CPU host a prefault thread beside
 * two loaders made the hugetlbfs-2M fill 1.2x slower (a second pass over
 * memory, and a third thread on two CPUs), with no measurable gain for
 * the faults during the fill (docs/minor-mode.md).
 */
static bool start_prefault(sl_restore *r, GError **errp)
{
    unsigned ncpus = 0;
    bool any = false;

    for (unsigned g = 0; g < r->topo.nnodes; g++) {
        ncpus += r->topo.nodes[g].ncpus;
    }
    if (r->cfg.no_prefault || r->nloaders >= ncpus) {
        return true;
    }
    for (guint i = 0; i < r->regions->len; i++) {
        any |= ((sl_region *)g_ptr_array_index(r->regions, i))->mem.ops->prefault != NULL;
    }
    return !any ||
           (r->prefault_thread = g_thread_try_new("sl-prefault", prefault_thread, r, errp));
}

bool sl_engine_start(sl_restore *r, GError **errp)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        sl_pagemap_set_notify(reg->map, kick_fault_thread, r);
    }
    r->fault_fd = open_fault_fd(r);
    r->fault_thread = g_thread_try_new("sl-fault", fault_thread, r, errp);
    if (!r->fault_thread) {
        return false;
    }
    r->t_ready = sl_now_ns();
    if ((r->nloaders && !spawn_loaders(r, errp)) || !start_prefault(r, errp)) {
        sl_engine_fail(r, -EAGAIN);
        return false;
    }
    return true;
}
