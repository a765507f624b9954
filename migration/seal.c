/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a restore that did not complete leaves behind.  Once its threads are
 * gone nobody answers faults any more, and simply unregistering would let
 * the kernel fill every page still missing with zeros: a guest would run on
 * with wrong memory.  So before the ranges are let go, every unit that is
 * not PRESENT is made unreadable in every view: poisoned (UFFDIO_POISON,
 * Linux 6.6+: an access raises SIGBUS, and threads already blocked on the
 * unit are woken to take it), or, where the kernel cannot poison, protected
 * with PROT_NONE in our own mapping (an access raises SIGSEGV; KVM returns
 * EFAULT to the VMM).  A view in another process that cannot be poisoned
 * stays registered: its faults wait until its supervisor ends it
 * (docs/protocol.md).  Runs on the caller's thread in sl_restore_stop(),
 * after the fault thread and the loaders were joined, under views_lock.
 */
#include <errno.h>
#include <sys/mman.h>
#include "restore-int.h"
#include "uffd.h"

/* Makes [u, u+n) of @reg unreadable in view @v; true if it is sealed there. */
static bool seal_run(sl_region *reg, sl_view *v, uint64_t u, uint64_t n)
{
    uint8_t *addr = (uint8_t *)(uintptr_t)(v->base + u * reg->unit);
    uint64_t len = n * reg->unit;

    if (reg->ioctls & SL_IOCTL(_UFFDIO_POISON)) {
        int ret = sl_uffd_poison(v->uffd, addr, len);
        if (ret == 0 || ret == -ESRCH || ret == -ENOENT) {
            return true; /* poisoned, or its consumer is gone */
        }
        if (ret == -EEXIST && n == 1) {
            return true; /* mapped: only a placement maps a page in a registered range */
        }
        if (ret == -EEXIST && n > 1) { /* part of the run is mapped: unit by unit */
            bool all = true;
            for (uint64_t i = 0; i < n; i++) {
                all &= seal_run(reg, v, u + i, 1);
            }
            return all;
        }
    }
    return v->own && mprotect(addr, len, PROT_NONE) == 0;
}

/*
 * Seals every run of units of @reg that is not PRESENT in every live view;
 * returns false if some view in another process could not be sealed.
 */
static bool seal_region(sl_region *reg)
{
    unsigned nv = atomic_load_explicit(&reg->nviews, memory_order_acquire);
    bool all = true;

    for (uint64_t u = 0; reg->map && u < reg->nunits;) {
        uint64_t end = u;
        while (end < reg->nunits && sl_pagemap_state(reg->map, end) != SL_PAGE_PRESENT) {
            end++;
        }
        for (unsigned i = 0; i < nv && end > u; i++) {
            sl_view *v = sl_region_view(reg, i);
            bool live = !atomic_load_explicit(&v->dead, memory_order_relaxed);
            if (live && (!v->own || reg->registered)) {
                all &= seal_run(reg, v, u, end - u);
            }
        }
        u = end + 1;
    }
    return all;
}

void sl_restore_seal(sl_restore *r)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        unsigned nv = atomic_load_explicit(&reg->nviews, memory_order_acquire);
        bool remote_sealed = seal_region(reg);

        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            if (v->own ? reg->registered : remote_sealed) {
                sl_uffd_unregister(v->uffd, (void *)(uintptr_t)v->base, reg->mem.length);
            }
        }
        reg->registered = false;
    }
}
