/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Our own mapping of a block unmapped (munmap, a new mapping put over it,
 * a shrinking mremap) or moved (mremap) while the restore still used it.
 * The kernel does not tie a placement to the userfaultfd it comes from: it
 * only asks that the range be registered on some uffd.  A loader going on
 * would fill whatever is mapped there next (another restore's memory: seen
 * by a review), and memory moved away would lose its registration, its
 * missing pages reading as zeros.  So the restore's uffd asks for
 * UFFD_EVENT_UNMAP and UFFD_EVENT_REMAP (restore.c).  The thread that
 * unmaps waits in the kernel until the event is read, and from the start
 * of its unmap until it runs again after that read, every placing ioctl on
 * our uffd answers EAGAIN (sl_uffd_changing()).
 *
 * The fault thread handles the events of a batch before its faults, and
 * for each (sl_lost_memory()):
 *  - marks our view dead, then fails the restore (-EFAULT, an error naming
 *    the block and the range): the placing wrappers check that flag before
 *    every ioctl (uffd.h), so no thread places there any more;
 *  - wakes whoever waits on a fault in the range that left (our uffd's
 *    waiters only): they fault again on what is there now;
 *  - keeps, per block, the pieces still registered on our uffd: what is
 *    left where the mapping was and, after a move, the moved part where
 *    it went.  A later event clips them again.
 * The pieces are sealed (every page not PRESENT poisoned: SIGBUS, never
 * zeros) and let go by sl_lost_seal(), as a stop would, once the kernel
 * takes ioctls again: on the fault thread between its poll rounds, or by
 * sl_restore_stop(), which first reads the events left (sl_lost_drain()).
 *
 * No placement slips between the read of an event and the death of the
 * view: placements into our views hold the placement lock for reading
 * from their check of the flag to the end of their ioctl, and the fault
 * thread reads under it for writing whenever an unmap may be in progress
 * (a placement met EAGAIN, or sl_uffd_changing() says so: fault.c).  What
 * remains open: an unmap whose whole system call, up to its event, fits
 * between that check and the read, a system call apart.  A move's source
 * stays a piece, its pages all gone (emptied), until its unmap event
 * clips it: MREMAP_DONTUNMAP leaves it mapped and registered, never
 * filled, so every page of it not mapped is poisoned.  Not handled: the
 * part a growing move adds past the block (registered, never served).
 *
 * Runs on the fault thread, or on the stopping thread once the fault
 * thread was joined; the pieces (reg->lost) belong to whichever of them
 * runs.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include "engine.h"
#include "restore-int.h"
#include "uffd.h"

/* Why the restore failed; the first reason is kept. */
static void note_lost(sl_restore *r, const sl_region *reg, uint64_t lo, uint64_t hi, bool moved)
{
    GError *expect = NULL;
    GError *why = g_error_new(SL_ERROR, SL_ERROR_INVALID, "restore failed: block '%s': its "
                              "memory at 0x%" PRIx64 "-0x%" PRIx64 " was %s during the "
                              "restore, which needs it mapped where it is until "
                              "sl_restore_stop(); what is left of it is sealed (pages not "
                              "placed yet raise SIGBUS, never read as zeros)", reg->blk->name,
                              lo, hi, moved ? "moved (mremap)"
                                            : "unmapped (munmap, or a new mapping over it)");

    /* Release: pairs with the acquire load in sl_restore_error(). */
    if (!atomic_compare_exchange_strong_explicit(&r->meta_error, &expect, why,
                                                 memory_order_release, memory_order_relaxed)) {
        g_error_free(why);
    }
}

/*
 * The first event that touches @reg's mapping: our view dies before the
 * restore fails, so that whoever sees the failure (and maps new memory
 * there) sees no placement after it (found by the test: a loader let go
 * at the failure filled the new mapping); r->lost_memory, set first, makes
 * a placement stopped by the dead view fail the restore with -EFAULT too.
 * The whole mapping becomes one piece, which the caller then clips.
 */
static void lose_region(sl_restore *r, sl_region *reg, uint64_t lo, uint64_t hi, bool moved)
{
    sl_view *own = sl_region_view(reg, 0);
    sl_lost_piece all = { own->base, 0, reg->mem.length, false };

    note_lost(r, reg, lo, hi, moved);
    /* seq_cst, both: lost_memory pairs with its load in sl_engine_fail(),
     * dead with sl_view_enter() and the placing wrappers' check. */
    atomic_store(&r->lost_memory, true);
    atomic_store(&own->dead, true);
    sl_engine_fail(r, -EFAULT);
    /* A placement that met the EAGAIN of this unmap's unread event for
     * good (the fault thread had left on a stop) failed it first: the
     * unmap is the cause (release: pairs with sl_restore_poll()). */
    atomic_compare_exchange_strong_explicit(&r->status, &(int){ -EAGAIN }, -EFAULT,
                                            memory_order_release, memory_order_relaxed);
    reg->registered = false; /* what is left is in reg->lost, sealed from there */
    reg->lost = g_array_new(false, false, sizeof(sl_lost_piece));
    g_array_append_val(reg->lost, all);
}

/*
 * The part [s, e) (absolute addresses) left @reg's pieces; after a move
 * (@moved) it is registered @by bytes away and stays a piece there.
 */
static void clip_pieces(sl_region *reg, uint64_t s, uint64_t e, bool moved, uint64_t by)
{
    GArray *old = reg->lost;

    reg->lost = g_array_new(false, false, sizeof(sl_lost_piece));
    for (guint i = 0; i < old->len; i++) {
        sl_lost_piece p = g_array_index(old, sl_lost_piece, i);
        uint64_t x = MAX(s, p.base + p.lo), y = MIN(e, p.base + p.hi);
        if (x >= y) {
            g_array_append_val(reg->lost, p);
            continue;
        }
        sl_lost_piece left = { p.base, p.lo, x - p.base, p.emptied };
        sl_lost_piece right = { p.base, y - p.base, p.hi, p.emptied };
        sl_lost_piece went = { p.base + by, x - p.base, y - p.base, p.emptied };
        sl_lost_piece source = { p.base, x - p.base, y - p.base, true };
        if (left.lo < left.hi) {
            g_array_append_val(reg->lost, left);
        }
        if (right.lo < right.hi) {
            g_array_append_val(reg->lost, right);
        }
        if (moved) {
            /* The source's own unmap event follows and clips it away,
             * unless MREMAP_DONTUNMAP left it mapped, registered, empty. */
            g_array_append_val(reg->lost, went);
            g_array_append_val(reg->lost, source);
        }
    }
    g_array_free(old, true);
}

void sl_lost_memory(sl_restore *r, const struct uffd_msg *m)
{
    const bool moved = m->event == UFFD_EVENT_REMAP;
    const uint64_t lo = moved ? m->arg.remap.from : m->arg.remove.start;
    const uint64_t hi = moved ? lo + m->arg.remap.len : m->arg.remove.end;
    const uint64_t by = moved ? m->arg.remap.to - m->arg.remap.from : 0;

    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        uint64_t h = (uintptr_t)reg->mem.host, end = h + reg->mem.length;
        if (reg->registered && reg->mem.host && lo < end && hi > h) {
            lose_region(r, reg, MAX(lo, h), MIN(hi, end), moved);
            /* Waiters of our uffd only: safe whoever maps the range now. */
            sl_uffd_wake(r->uffd, (void *)(uintptr_t)MAX(lo, h), MIN(hi, end) - MAX(lo, h));
        }
        if (reg->lost) {
            clip_pieces(reg, lo, hi, moved, by);
        }
    }
}

void sl_lost_read(sl_restore *r)
{
    struct uffd_msg msgs[64];
    ssize_t n;

    while ((n = sl_uffd_read(r->uffd, msgs, sizeof(msgs))) > 0) {
        for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
            if (msgs[i].event == UFFD_EVENT_UNMAP || msgs[i].event == UFFD_EVENT_REMAP) {
                sl_lost_memory(r, &msgs[i]);
            } /* a fault: the seal or the unregister of its range wakes it */
        }
    }
}

/*
 * Also waits, 2 s at most, while an unmap of ours has begun and not yet
 * posted its event (it does once its pages are zapped, milliseconds for a
 * big guest): meanwhile every ioctl of the seal would meet EAGAIN, give up
 * and leave the range registered, the uffd open, and that munmap waiting
 * for ever (found by review).  Bounded: kernels before the fix of
 * mremap_userfaultfd_fail() (0496a59745b0) can leave the count raised.
 */
void sl_lost_drain(sl_restore *r)
{
    gint64 until = g_get_monotonic_time() + 2 * G_USEC_PER_SEC;

    while (r->unmap_events) {
        struct pollfd p = { .fd = r->uffd, .events = POLLIN };
        sl_lost_read(r);
        if (!sl_uffd_changing(r->uffd) || g_get_monotonic_time() > until) {
            return;
        }
        (void)poll(&p, 1, 1); /* the kernel tells nobody when the count drops */
    }
}

bool sl_lost_seal(sl_restore *r, bool now)
{
    bool ok = true, any = false, pending = false;

    for (guint i = 0; i < r->regions->len; i++) {
        const sl_region *reg = g_ptr_array_index(r->regions, i);
        any |= reg->lost && reg->lost->len;
    }
    if (!any) {
        return false;
    }
    if (!now && sl_uffd_changing(r->uffd)) {
        return true; /* an event unread, or its thread not back yet: each ioctl would wait */
    }
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        guint kept = 0;
        for (guint j = 0; reg->lost && j < reg->lost->len; j++) {
            sl_lost_piece p = g_array_index(reg->lost, sl_lost_piece, j);
            if (sl_seal_own_range(reg, sl_region_view(reg, 0), p.base, p.lo, p.hi, p.emptied,
                                  !now)) {
                continue;
            }
            if (!now && sl_uffd_changing(r->uffd)) {
                /* Another unmap began meanwhile (review: it waited out a
                 * spin, and its piece was dropped): after its event. */
                g_array_index(reg->lost, sl_lost_piece, kept++) = p;
                pending = true;
            } else {
                ok = false;
            }
        }
        if (reg->lost) {
            g_array_set_size(reg->lost, kept);
        }
    }
    r->keep_uffd |= !ok; /* a piece left registered: closing our uffd would expose zeros */
    return pending;
}
