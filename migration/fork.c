/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A fork while a restore fills memory must never hand the child holes that
 * read as zeros.  Without UFFD_FEATURE_EVENT_FORK the kernel drops the
 * userfaultfd registration in the child's copy of a registered mapping:
 * anonymous holes then read as zero pages, and a shared file's holes get
 * fresh zeroed pages in the page cache, which the fill later overwrites
 * under the child.  The restore therefore marks its own registered mapping
 * MADV_DONTFORK (VM_DONTCOPY) from registration until every page is placed:
 * a child forked meanwhile has no mapping there, so a touch faults with
 * SIGSEGV (or EFAULT for a system call) instead of reading wrong bytes.
 * Once the memory is complete, the ranges marked here get MADV_DOFORK back;
 * ranges the caller had already marked (QEMU marks guest RAM DONTFORK) are
 * left as the caller set them.  Which is which comes from /proc/self/smaps
 * (vmas.c); where /proc cannot be read, the memory stays out of children
 * for good (never a wrong page, at the price of later forks).  A restore
 * that fails or is stopped early gives nothing back either; a later
 * restore over the same memory then takes that marking for the caller's.
 * With track_writes the marking lasts until the stop: a reset makes pages
 * missing again.
 * Runs on the thread that registers the memory (sl_restore_start()) and on
 * the one that unregisters it at completion; never on the fault path.
 */
#include <errno.h>
#include <inttypes.h>
#include <sys/mman.h>
#include <unistd.h>
#include "fork.h"
#include "vmas.h"
#include "snapload/snapload.h"

/* What copied_ranges() collects: the parts of [lo, hi) a fork copies. */
typedef struct {
    uint64_t lo, hi;
    GArray *out;
} copied_walk;

/* Adds the part of @v inside [lo, hi) to the list, merged with the last. */
static bool add_copied(const sl_vma *v, void *opaque)
{
    copied_walk *w = opaque;
    sl_fork_range r = { MAX(v->start, w->lo), MIN(v->end, w->hi) };
    GArray *out = w->out;

    if (v->dontcopy || r.start >= r.end) {
        return true;
    }
    if (out->len && g_array_index(out, sl_fork_range, out->len - 1).end == r.start) {
        g_array_index(out, sl_fork_range, out->len - 1).end = r.end;
    } else {
        g_array_append_val(out, r);
    }
    return true;
}

/* The parts of [@lo, @hi) in mappings that a fork copies. */
static GArray *copied_ranges(uint64_t lo, uint64_t hi, GError **errp)
{
    copied_walk w = { lo, hi, g_array_new(false, false, sizeof(sl_fork_range)) };

    if (!sl_vmas_each(0, lo, hi, true, add_copied, &w, errp)) {
        g_array_free(w.out, true);
        return NULL;
    }
    return w.out;
}

/* Without /proc: all of it out of children for good (nothing given back). */
static GArray *guard_blind(void *addr, uint64_t len, GError **errp)
{
    if (madvise(addr, len, MADV_DONTFORK) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "MADV_DONTFORK %p+0x%" PRIx64 ": %s", addr,
                    len, g_strerror(errno));
        return NULL;
    }
    return g_array_new(false, false, sizeof(sl_fork_range));
}

GArray *sl_fork_guard(void *addr, uint64_t len, GError **errp)
{
    uint64_t lo = (uint64_t)(uintptr_t)addr;
    GArray *ranges;

    if (access("/proc/self/smaps", R_OK) != 0) {
        return guard_blind(addr, len, errp);
    }
    ranges = copied_ranges(lo, lo + len, errp);

    for (guint i = 0; ranges && i < ranges->len; i++) {
        sl_fork_range *r = &g_array_index(ranges, sl_fork_range, i);
        if (madvise((void *)(uintptr_t)r->start, r->end - r->start, MADV_DONTFORK) < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "MADV_DONTFORK 0x%" PRIx64 "+0x%" PRIx64
                        ": %s", r->start, r->end - r->start, g_strerror(errno));
            g_array_set_size(ranges, i); /* give back only what was marked */
            sl_fork_release(ranges);
            return NULL;
        }
    }
    return ranges;
}

void sl_fork_release(GArray *ranges)
{
    for (guint i = 0; ranges && i < ranges->len; i++) {
        sl_fork_range *r = &g_array_index(ranges, sl_fork_range, i);
        /* Best effort: the caller may have unmapped it since (its memory). */
        madvise((void *)(uintptr_t)r->start, r->end - r->start, MADV_DOFORK);
    }
    if (ranges) {
        g_array_free(ranges, true);
    }
}
