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
 * unmaps waits in the kernel until the fault thread has read the event,
 * and until then every placing ioctl on our uffd answers EAGAIN.  Having
 * read it, the fault thread (it alone runs this):
 *  - marks our view dead: no thread issues another placing ioctl there
 *    (the wrappers check the flag before each one, uffd.h);
 *  - fails the restore, with an error naming the block and the range;
 *  - seals what is still ours, the rest of the mapping and, after a move,
 *    the moved part at its new address (every page not PRESENT is
 *    poisoned: SIGBUS, never zeros), and unregisters it, so the memory is
 *    as sl_restore_stop() leaves it.
 * What remains open: a thread that checked the flag just before the event
 * was read, and was preempted before its ioctl until the caller had mapped
 * new memory there and registered it on another uffd, fills one range of
 * it.  Events for memory already let go (a completed restore) change
 * nothing.
 */
#include <errno.h>
#include <inttypes.h>
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
 * Block offsets [a, b) of @reg left our mapping; moved by @by bytes if
 * @moved.  The rest, and the moved part where it went, are sealed and let
 * go.  If some part cannot be sealed it stays registered (its faults wait,
 * never zeros) and so does our uffd, to the end of the process.
 */
static void lose_region(sl_restore *r, sl_region *reg, uint64_t a, uint64_t b, bool moved,
                        uint64_t by)
{
    sl_view *own = sl_region_view(reg, 0);
    bool ok = true;

    /* seq_cst: pairs with sl_view_enter() and the placing wrappers' check. */
    atomic_store(&own->dead, true);
    note_lost(r, reg, own->base + a, own->base + b, moved);
    sl_engine_fail(r, -EFAULT);
    g_mutex_lock(&r->views_lock); /* as the stop's seal */
    ok &= sl_seal_own_range(reg, own, own->base, 0, a);
    ok &= sl_seal_own_range(reg, own, own->base, b, reg->mem.length);
    if (moved) {
        ok &= sl_seal_own_range(reg, own, own->base + by, a, b);
    }
    reg->registered = false; /* nothing is left for the stop to seal or unregister */
    r->keep_uffd |= !ok;
    g_mutex_unlock(&r->views_lock);
}

void sl_lost_memory(sl_restore *r, const struct uffd_msg *m)
{
    const bool moved = m->event == UFFD_EVENT_REMAP;
    const uint64_t lo = moved ? m->arg.remap.from : m->arg.remove.start;
    const uint64_t hi = moved ? lo + m->arg.remap.len : m->arg.remove.end;

    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        uint64_t h = (uintptr_t)reg->mem.host, end = h + reg->mem.length;
        if (!reg->mem.host || !reg->registered || hi <= h || lo >= end) {
            continue; /* not ours, already let go, or elsewhere */
        }
        lose_region(r, reg, MAX(lo, h) - h, MIN(hi, end) - h, moved,
                    moved ? m->arg.remap.to - m->arg.remap.from : 0);
    }
}
