/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a restore that did not complete leaves behind.  Once its threads are
 * gone nobody answers faults any more, and simply unregistering would let
 * the kernel fill every page still missing with zeros: a guest would run on
 * with wrong memory.  So before a view is let go, every unit that is not
 * PRESENT is made unreadable in it: poisoned (UFFDIO_POISON, Linux 6.6+:
 * an access raises SIGBUS, and threads already blocked on the unit are
 * woken to take it), or, where the kernel cannot poison, protected with
 * PROT_NONE in our own mapping (an access raises SIGSEGV; KVM returns
 * EFAULT to the VMM).  Only a view sealed completely is unregistered; any
 * other stays registered, so its faults wait (a consumer's supervisor ends
 * it, docs/protocol.md), and the restore then keeps its uffd open to the
 * end of the process (closing the last reference would unregister too).
 * Runs on the caller's thread in sl_restore_stop(), after the fault thread
 * and the loaders were joined, under views_lock; and for one dead view,
 * which no other thread uses any more, on the fault thread before it closes
 * that view's uffd (sl_engine_reclaim_views()).
 *
 * Poison markers live in the view's page tables, not in the memory file:
 * a process that maps the file afterwards, or a view whose page tables are
 * zapped (MADV_DONTNEED) after the seal, sees the holes as zeros.  A
 * stopped restore's memory must not be used again (see snapload.h).
 */
#include <errno.h>
#include <sys/mman.h>
#include "engine.h"
#include "restore-int.h"
#include "uffd.h"

/*
 * What a poison in view @v checks (uffd.h): for our own view, its dead flag
 * and the placement lock (the range may be someone else's mapping once it
 * was unmapped: lost.c); for a consumer's, nothing: a dead consumer's view
 * is sealed precisely because it died, on its own uffd.
 */
static const sl_uffd_fence *poison_fence(const sl_view *v)
{
    return v->own ? &v->fence : NULL;
}

/*
 * The pages of one unit at @addr in @v, where a page is mapped already or a
 * VMA ends: a unit of several backend pages (snapshot pages larger than
 * the backend's) whose placement stopped part-way, or that an madvise or
 * mprotect of part of the mapping split.  Each page not mapped is
 * poisoned: the unit is not PRESENT, so those never got their bytes
 * (taking the unit as mapped left them to read as zeros: found by review).
 */
static bool seal_pages(const sl_region *reg, const sl_view *v, uint8_t *addr)
{
    for (uint64_t at = 0; at < reg->unit; at += reg->mem.page_size) {
        int ret = sl_uffd_poison(v->uffd, poison_fence(v), addr + at, reg->mem.page_size);
        if (ret && ret != -EEXIST && ret != -ESRCH && (ret != -ENOENT || v->own)) {
            return false; /* (a page of a consumer's that is no longer registered: left) */
        }
    }
    return true;
}

void sl_poison_unit(const sl_region *reg, const sl_view *v, uint64_t u)
{
    uint8_t *a = (uint8_t *)(uintptr_t)(v->base + u * reg->unit);
    int ret = sl_uffd_poison(v->uffd, poison_fence(v), a, reg->unit);

    if ((ret == -ENOENT || ret == -EEXIST) && reg->mem.page_size &&
        reg->unit > reg->mem.page_size) {
        /* A VMA ends inside the unit, or a page of it is mapped (a
         * placement stopped part-way by a failure): the others one by one
         * (found by review: nothing was poisoned, the faults waited). */
        (void)seal_pages(reg, v, a);
    }
}

/* Makes [u, u+n) of @reg unreadable in view @v; true if it is sealed there. */
static bool seal_run(sl_region *reg, sl_view *v, uint64_t u, uint64_t n)
{
    uint8_t *addr = (uint8_t *)(uintptr_t)(v->base + u * reg->unit);
    uint64_t len = n * reg->unit;

    if (reg->ioctls & SL_IOCTL(_UFFDIO_POISON)) {
        int ret = sl_uffd_poison(v->uffd, poison_fence(v), addr, len);
        if (ret == 0 || ret == -ESRCH) {
            return true; /* poisoned, or its process is gone */
        }
        if (n > 1 && (ret == -EEXIST || ret == -ENOENT)) {
            /* Part of the run is mapped, or the run spans two VMAs (the
             * kernel takes one at a time): unit by unit. */
            bool all = true;
            for (uint64_t i = 0; i < n; i++) {
                all &= seal_run(reg, v, u + i, 1);
            }
            return all;
        }
        if ((ret == -EEXIST || ret == -ENOENT) && reg->unit > reg->mem.page_size &&
            reg->mem.page_size) {
            /* a unit of several pages: some mapped, or a VMA ending inside it
             * (found by review: taken for a consumer gone, it read as zeros) */
            return seal_pages(reg, v, addr);
        }
        if (ret == -EEXIST) {
            return true; /* mapped: only a placement maps a page in a registered range */
        }
        if (ret == -ENOENT && !v->own) {
            return true; /* that range is no longer registered there: the consumer left it */
        }
    }
    /* An unmap in progress holds the ioctl back: retried later (lost.c). */
    return v->own && !v->fence.bail && mprotect(addr, len, PROT_NONE) == 0;
}

/*
 * In a write-protected view (a tracked restore), a page dropped by a reset
 * leaves a uffd-wp marker, which UFFDIO_POISON takes for a mapped page
 * (EEXIST), and which unregistering then clears: the hole read as zeros
 * (found by review: a stop during a reset's refill).  Lifting the
 * protection of [u, u+n) (not PRESENT: nothing there is tracked any more)
 * removes the markers first.
 */
static void clear_markers(sl_region *reg, sl_view *v, uint64_t u, uint64_t n)
{
    if (v->wp) {
        (void)sl_uffd_writeprotect(v->uffd, v->base + u * reg->unit, n * reg->unit, false);
    }
}

/*
 * Without poison: whether the process of consumer view @v has exited, so
 * that no thread can fault there any more and its uffd may be closed
 * instead of kept (found on Debian 12's 6.1: every departed consumer's uffd
 * stayed open in the daemon, which ran out of descriptors after a thousand
 * of them).  Probed by lifting write-protection of the view's first unit:
 * on a range not registered for it that changes nothing (ENOENT) while the
 * process lives, and the kernel answers ESRCH once its address space is
 * gone.  Only ESRCH counts: a live consumer whose mapping an madvise split
 * or an munmap cut answers ENOENT too (found by review: its missing pages
 * then read as zeros).
 */
static bool consumer_gone(sl_region *reg, sl_view *v)
{
    uint64_t u0, u1;

    if (v->own || v->wp || (reg->ioctls & SL_IOCTL(_UFFDIO_POISON))) {
        return false;
    }
    sl_view_units(reg, v, &u0, &u1);
    return u0 < u1 && sl_uffd_writeprotect(v->uffd, v->base + u0 * reg->unit, reg->unit,
                                           false) == -ESRCH;
}

/*
 * Seals every run of units of @reg that is not PRESENT in view @v, within
 * the part of the block it maps: beyond it, the addresses v->base gives
 * may be another mapping of that process, registered on another uffd.
 */
static bool seal_view(sl_region *reg, sl_view *v)
{
    uint64_t u0, u1;
    bool all = true;

    if (consumer_gone(reg, v)) {
        return true; /* nothing to seal: nobody faults there */
    }
    sl_view_units(reg, v, &u0, &u1);
    for (uint64_t u = u0; u < u1;) {
        uint64_t end = u;
        /* no map: the restore failed before any page was placed */
        while (end < u1 &&
               (!reg->map || sl_pagemap_state(reg->map, end) != SL_PAGE_PRESENT)) {
            end++;
        }
        if (end > u) {
            clear_markers(reg, v, u, end - u);
            all &= seal_run(reg, v, u, end - u);
        }
        u = end + 1;
    }
    /* Our own mapping, not sealable run by run (say, too many VMAs for
     * PROT_NONE pieces): all of it becomes unreadable instead. */
    if (!all && v->own && !v->fence.bail) {
        all = mprotect((void *)(uintptr_t)sl_view_addr(v), sl_view_len(v), PROT_NONE) == 0;
    }
    return all;
}

/*
 * Poisons every page of bytes [lo, hi) of @v that is not mapped (its
 * protection lifted first: a uffd-wp marker would pass for a mapped page),
 * at once where none is, else page by page; PROT_NONE where it cannot.
 */
static bool poison_pages(sl_region *reg, sl_view *v, uint64_t lo, uint64_t hi)
{
    const uint64_t pg = reg->mem.page_size ? reg->mem.page_size : reg->unit;
    const bool poison = reg->ioctls & SL_IOCTL(_UFFDIO_POISON);
    bool ok = true;

    if (v->wp) {
        (void)sl_uffd_writeprotect(v->uffd, v->base + lo, hi - lo, false);
    }
    if (poison && sl_uffd_poison(v->uffd, poison_fence(v), (void *)(uintptr_t)(v->base + lo),
                                 hi - lo) == 0) {
        return true;
    }
    for (uint64_t at = lo; at < hi; at += pg) {
        const sl_uffd_fence *fence = poison_fence(v);
        int ret = poison ? sl_uffd_poison(v->uffd, fence, (void *)(uintptr_t)(v->base + at), pg)
                         : -ENOSYS;
        if (ret == -EAGAIN && v->fence.bail) {
            return false; /* an unmap in progress: retried later (lost.c) */
        }
        ok &= ret == 0 || ret == -EEXIST ||
              mprotect((void *)(uintptr_t)(v->base + at), pg, PROT_NONE) == 0;
    }
    return ok;
}

/*
 * Bytes [lo, hi) of @reg inside one unit that is not whole in the range:
 * its pages there that are not mapped are poisoned, unless the unit is
 * PRESENT.  The pages of the unit outside [lo, hi) are not ours any more.
 */
static bool seal_part_of_unit(sl_region *reg, sl_view *v, uint64_t lo, uint64_t hi)
{
    if (lo >= hi || (reg->map && sl_pagemap_state(reg->map, lo / reg->unit) == SL_PAGE_PRESENT)) {
        return true;
    }
    return poison_pages(reg, v, lo, hi);
}

bool sl_seal_own_range(sl_region *reg, const sl_view *own, uint64_t base, uint64_t lo,
                       uint64_t hi, bool emptied, bool bail)
{
    sl_ranged_view piece = { .v = { .uffd = own->uffd, .base = base, .own = true,
                                    .wp = own->wp, .fence = { .bail = bail } } };
    uint64_t a = MIN(hi, (lo + reg->unit - 1) / reg->unit * reg->unit);
    uint64_t b = MAX(a, hi / reg->unit * reg->unit);
    bool ok = emptied ? lo >= hi || poison_pages(reg, &piece.v, lo, hi)
                      : seal_part_of_unit(reg, &piece.v, lo, a) &&
                            seal_part_of_unit(reg, &piece.v, b, hi);

    if (a < b && !emptied) {
        piece.off = a;
        piece.len = b - a;
        ok &= seal_view(reg, &piece.v);
    }
    if (ok && lo < hi) {
        sl_uffd_unregister(own->uffd, (void *)(uintptr_t)(base + lo), hi - lo);
    }
    return ok;
}

bool sl_seal_let_go(sl_region *reg, sl_view *v)
{
    if ((v->own && !reg->registered) || v->uffd < 0) {
        return true; /* our mapping was never registered, or the view is closed */
    }
    if (!seal_view(reg, v)) {
        return false; /* stays registered: its faults wait, never zeros */
    }
    sl_uffd_unregister(v->uffd, (void *)(uintptr_t)sl_view_addr(v), sl_view_len(v));
    return true;
}

void sl_restore_seal(sl_restore *r)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        /* Acquire: pairs with the release store of @nviews in sl_restore_add_view(). */
        unsigned nv = atomic_load_explicit(&reg->nviews, memory_order_acquire);

        /* Dead views too: a consumer that only closed its connection, or
         * that we dropped, may still map the memory (poison: ESRCH if not). */
        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            if (!sl_seal_let_go(reg, v)) {
                /* Closing its uffd would unregister it: zeros. */
                v->kept = !v->own;
                r->keep_uffd |= v->own;
            }
        }
        for (guint j = 0; j < reg->dead_views->len; j++) {
            sl_view *v = g_ptr_array_index(reg->dead_views, j);
            v->kept = !sl_seal_let_go(reg, v);
        }
        reg->registered = false;
    }
}
