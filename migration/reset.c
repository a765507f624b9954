/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Going back to the snapshot for the price of what the guest wrote
 * (sl_restore_reset), and telling what it wrote (sl_restore_written).
 *
 * A restore with track_writes places every unit of its own views
 * write-protected on a uffd with asynchronous WP: the first write to a
 * page lifts the protection without a message, and PAGEMAP_SCAN lists the
 * pages so written (track.c).  A reset, on the caller's thread with every
 * writer paused, after the restore completed:
 *
 *   1. joins the loaders (they have run out of work), and lists the
 *      written units of every region, protecting them again in that walk;
 *   2. sets the status back to in progress and marks those units ABSENT in
 *      the page map (before their memory goes: a fault that finds a unit
 *      gone finds it ABSENT too, and is served from the snapshot, never
 *      with zeros), raising @remaining by their number;
 *   3. drops their memory (ops->drop: MADV_DONTNEED, or a punched hole)
 *      so the next access faults, and queues them as the loaders' work;
 *   4. publishes the new generation (the fault thread then reports the
 *      next completion) and starts the loaders.
 *
 * Every later page of our views again comes from a placement (MISSING and
 * MINOR stay registered), write-protected, so the next reset sees exactly
 * the next writes.  The fault thread never stopped serving meanwhile.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "restore-int.h"
#include "busy.h"
#include "engine.h"
#include "track.h"
#include "reset-int.h"

/* Appends the written address runs @runs of @reg to @out as unit runs, merged. */
static void append_units(const sl_region *reg, const GArray *runs, GArray *out)
{
    uint64_t base = (uintptr_t)reg->mem.host;

    for (guint i = 0; i < runs->len; i++) {
        const sl_written_run *w = &g_array_index(runs, sl_written_run, i);
        uint64_t u0 = (w->start - base) / reg->unit;
        uint64_t u1 = (w->end - base + reg->unit - 1) / reg->unit;
        sl_run *last = out->len ? &g_array_index(out, sl_run, out->len - 1) : NULL;
        /* (after the last run only: @out may hold runs past these, found
         * by review: a run of 2^64 units hid a written one) */
        if (last && last->region == reg->index && last->unit <= u0 &&
            last->unit + last->n >= u0) {
            /* touching the last run, or in its last unit (a sub-unit granule) */
            last->n = MAX(last->n, u1 - last->unit);
        } else {
            sl_run run = { .region = reg->index, .unit = u0, .n = u1 - u0 };
            g_array_append_val(out, run);
        }
    }
}

/*
 * Units of @reg written since they were last protected, as sl_run (one
 * region), appended to @out; without async WP (SL_TRACK_ALL) every unit.
 * With @rearm they are protected again in the same walk.
 */
bool sl_reset_written_units(sl_restore *r, sl_region *reg, bool rearm, GArray *out,
                            GError **errp)
{
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(sl_written_run));
    uint64_t base = (uintptr_t)reg->mem.host;
    int64_t ret;

    if (r->tracking == SL_TRACK_ALL) {
        sl_run all = { .region = reg->index, .unit = 0, .n = reg->nunits };
        g_array_append_val(out, all);
        return true;
    }
    ret = sl_scan_written(r->pagemap_fd, r->uffd, base, base + reg->mem.length, rearm, runs);
    if (ret < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block '%s': PAGEMAP_SCAN of the written "
                    "pages: %s", reg->blk->name, g_strerror((int)-ret));
        return false;
    }
    append_units(reg, runs, out);
    return true;
}

static gint run_order(gconstpointer a, gconstpointer b)
{
    const sl_run *x = a, *y = b;

    if (x->region != y->region) {
        return x->region < y->region ? -1 : 1;
    }
    return x->unit < y->unit ? -1 : x->unit > y->unit;
}

/* Sorts @runs and merges those that overlap or touch: each unit once. */
void sl_reset_normalize_runs(GArray *runs)
{
    guint n = 0;

    g_array_sort(runs, run_order);
    for (guint i = 0; i < runs->len; i++) {
        sl_run *cur = &g_array_index(runs, sl_run, i);
        sl_run *last = n ? &g_array_index(runs, sl_run, n - 1) : NULL;
        if (last && last->region == cur->region && last->unit + last->n >= cur->unit) {
            last->n = MAX(last->n, cur->unit + cur->n - last->unit);
        } else {
            g_array_index(runs, sl_run, n++) = *cur;
        }
    }
    g_array_set_size(runs, n);
}

/*
 * Owes @runs to the next reset (r->raced): units whose bytes may differ
 * from the snapshot while their protection says unwritten (a writer raced
 * a reset, or a scan failed after re-protecting them).
 */
void sl_reset_owe(sl_restore *r, const GArray *runs)
{
    if (!runs->len) {
        return;
    }
    if (!r->raced) {
        r->raced = g_array_new(false, false, sizeof(sl_run));
    }
    g_array_append_vals(r->raced, runs->data, runs->len);
    sl_reset_normalize_runs(r->raced);
}

static bool empty_units(sl_restore *r, sl_region *reg, GArray *out, GError **errp);

/* Units a racing writer may have left (r->raced) of region @region, appended to @out. */
static void append_raced(const sl_restore *r, unsigned region, GArray *out)
{
    for (guint i = 0; r->raced && i < r->raced->len; i++) {
        const sl_run *run = &g_array_index(r->raced, sl_run, i);
        if (run->region == region) {
            g_array_append_val(out, *run);
        }
    }
}

static bool check_tracking(sl_restore *r, GError **errp)
{
    if (!r->cfg.track_writes || !r->started || r->stopped) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "%s",
                    !r->cfg.track_writes ? "written pages are known only to a restore "
                    "started with config.track_writes"
                    : "the restore is not running (not started, or stopped)");
        return false;
    }
    return true;
}

/* Whether @reg's one view is our own mapping, whose writes we track; else
 * @errp says what would go wrong (@what). */
static bool only_our_view(const sl_region *reg, const char *what, GError **errp)
{
    unsigned nv = sl_view_count(reg);

    if (!reg->mem.host || nv != 1) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "block '%s': another process maps it (or "
                    "did during this restore), and its writes are not tracked: %s",
                    reg->blk->name, what);
        return false;
    }
    return true;
}

bool sl_reset_written_of_block(sl_restore *r, const char *block_name, GArray *runs,
                                GError **errp)
{
    sl_region *reg = sl_region_of_block(r, block_name);
    g_autoptr(GArray) units = g_array_new(false, false, sizeof(sl_run));

    if (!check_tracking(r, errp)) {
        return false;
    }
    if (!reg || !reg->mem.host || !sl_view_live(sl_region_view(reg, 0))) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s' %s", block_name,
                    !reg ? "is not attached to this restore"
                    : !reg->mem.host ? "has no mapping of ours: its writes are not tracked"
                    : "was unmapped or moved during the restore: what is there now is not "
                      "what it wrote");
        return false;
    }
    /* (found by review: a child then lacked a back-end's writes) */
    if (!only_our_view(reg, "the list would miss them", errp)) {
        return false;
    }
    /* Data units whose page left our page tables count too: what they hold
     * now (zeros, or a write the scan lost with its entry) is not the
     * snapshot's (found by review: a child kept the parent's bytes). */
    if (!empty_units(r, reg, units, errp) || !sl_reset_written_units(r, reg, false, units, errp)) {
        return false; /* in this order, as the reset scans (sl_restore_reset()) */
    }
    append_raced(r, reg->index, units);
    sl_reset_normalize_runs(units);
    for (guint i = 0; i < units->len; i++) {
        const sl_run *u = &g_array_index(units, sl_run, i);
        sl_page_run p = { .first = u->unit * reg->ratio, .n = u->n * reg->ratio };
        g_array_append_val(runs, p);
    }
    return true;
}

/* The caller's list, under save_reset_lock: a reset frees and rebuilds
 * r->raced, which the list includes (found by review: read unlocked). */
bool sl_restore_written(sl_restore *r, const char *block_name, GArray *runs, GError **errp)
{
    g_autoptr(GMutexLocker) alone = NULL;

    SL_ARG(r, errp, false);
    SL_ARG(block_name, errp, false);
    SL_ARG(runs, errp, false);
    alone = g_mutex_locker_new(&r->save_reset_lock);
    return sl_reset_written_of_block(r, block_name, runs, errp);
}

/* A reset needs a completed restore whose every view is our own mapping. */
static bool check_reset(sl_restore *r, GError **errp)
{
    int st;

    if (!check_tracking(r, errp)) {
        return false;
    }
    st = sl_restore_poll(r);
    if (st == -EINPROGRESS) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "reset needs a completed restore "
                    "(it is still in progress)");
        return false;
    }
    if (st != 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "reset needs a completed restore: this "
                    "one failed (%s)", g_strerror(-st));
        return false;
    }
    for (guint i = 0; i < r->regions->len; i++) {
        if (!only_our_view(g_ptr_array_index(r->regions, i), "a reset could leave them",
                           errp)) {
            return false;
        }
    }
    return true;
}

/*
 * Queues @units (the dropped runs) as the loaders' work, each on its
 * node's group, in pieces of at most one loader chunk, aligned as chunks
 * are: a loader reads a piece into a buffer of one chunk (r->max_chunk).
 */
static void queue_redo(sl_restore *r, GArray *units)
{
    GArray *lists[SL_MAX_NODES];

    for (unsigned g = 0; g < r->ngroups; g++) {
        lists[g] = g_array_new(false, false, sizeof(sl_run));
    }
    for (guint i = 0; i < units->len; i++) {
        const sl_run *run = &g_array_index(units, sl_run, i);
        sl_region *reg = g_ptr_array_index(r->regions, run->region);
        for (uint64_t u = run->unit; u < run->unit + run->n;) {
            unsigned g = sl_unit_node(r, reg, u);
            uint64_t j = u + 1;
            while (j < run->unit + run->n && j % reg->chunk_units &&
                   sl_unit_node(r, reg, j) == g) {
                j++;
            }
            sl_run piece = { .region = run->region, .unit = u, .n = j - u };
            g_array_append_val(lists[g], piece);
            u = j;
        }
    }
    for (unsigned g = 0; g < r->ngroups; g++) {
        g_free(r->groups[g].redo);
        r->groups[g].nredo = lists[g]->len;
        r->groups[g].redo = (sl_run *)(void *)g_array_free(lists[g], false);
        /* relaxed: the loaders are joined here; starting them orders it */
        atomic_store_explicit(&r->groups[g].next_redo, 0, memory_order_relaxed);
    }
}

/*
 * Step 2: the units are counted missing, the restore is in progress again,
 * and they are CLAIMED by this thread until their memory is gone
 * (release_units()): a fault on one meanwhile waits instead of finding it
 * absent, placing it, and seeing its page dropped right after.  Every unit
 * is PRESENT before (a reset follows completion), so each one forgotten
 * is held, and only those.  False, with nothing forgotten, when the
 * restore failed since check_reset() (a fault after completion, say):
 * that failure stays the restore's status.
 */
static bool forget_units(sl_restore *r, GArray *units, GError **errp)
{
    uint64_t total = 0, drained;
    int done = 0;

    /*
     * done_efd is drained (so that a caller's poll of it, and
     * sl_restore_wait(), wait again) while the status is still 0: a
     * failure (sl_engine_fail()) after the drain keeps its signal, and
     * one before it or between it and the CAS below makes the CAS fail,
     * which signals again.  Drained once the status was in progress, it
     * took along the signal of a failure landing in between, and a caller
     * polling the fd never saw that failure (found by review).
     */
    g_mutex_lock(&r->views_lock); /* the completion's status and signal go together */
    (void)!read(r->done_efd, &drained, sizeof(drained));
    /* Relaxed: only 0 becomes in progress; a failure (sl_engine_fail()) is
     * kept.  A failure's kick follows its CAS, which follows this one:
     * after the drain (the eventfd's lock orders the two calls).  The
     * completion (fault.c finish()) sets 0 and signals under views_lock,
     * so its signal is drained here, never left to land on a restore in
     * progress again (found by review: every later sl_restore_wait()
     * returned -EINPROGRESS at once). */
    if (!atomic_compare_exchange_strong_explicit(&r->status, &done, -EINPROGRESS,
                                                 memory_order_relaxed, memory_order_relaxed)) {
        g_mutex_unlock(&r->views_lock);
        sl_engine_kick(r->done_efd); /* ended all the same: readable again */
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "the restore failed during the reset: %s",
                    g_strerror(-done));
        return false;
    }
    g_mutex_unlock(&r->views_lock);
    if (r->reset_reopened) {
        r->reset_reopened(r->reset_reopened_opaque);
    }
    for (guint i = 0; i < units->len; i++) {
        const sl_run *run = &g_array_index(units, sl_run, i);
        sl_region *reg = g_ptr_array_index(r->regions, run->region);
        total += sl_pagemap_forget(reg->map, run->unit, run->n);
    }
    /* Relaxed: published by the release increment of the generation. */
    atomic_fetch_add_explicit(&r->remaining, total, memory_order_relaxed);
    return true;
}

/*
 * Step 1b: the runs a dropping reset takes away are no longer what a
 * keep_known restart found in the file (sl_region_known_unit()): marked
 * changed, so that the refill reads and checks them, never maps a hole.
 */
static void mark_changed(sl_restore *r, GArray *units)
{
    for (guint i = 0; i < units->len; i++) {
        const sl_run *run = &g_array_index(units, sl_run, i);
        sl_region *reg = g_ptr_array_index(r->regions, run->region);
        if (reg->changed) {
            sl_bit_set_run(reg->changed, run->unit * reg->ratio, run->n * reg->ratio);
        }
    }
}

/* Step 3b: the units forget_units() held go ABSENT; faults waiting on them go on. */
static void release_units(sl_restore *r, GArray *units)
{
    for (guint i = 0; i < units->len; i++) {
        const sl_run *run = &g_array_index(units, sl_run, i);
        sl_region *reg = g_ptr_array_index(r->regions, run->region);
        sl_pagemap_unclaim(reg->map, run->unit, run->n);
    }
}

/* Step 3: their memory goes; shared files are busy again until complete. */
static bool drop_units(sl_restore *r, GArray *units, GError **errp)
{
    g_autoptr(GArray) ranges = g_array_new(false, false, sizeof(sl_range));
    guint i = 0;

    while (i < units->len) {
        sl_region *reg = g_ptr_array_index(r->regions, g_array_index(units, sl_run, i).region);
        int ret;
        g_array_set_size(ranges, 0);
        for (; i < units->len && g_array_index(units, sl_run, i).region == reg->index; i++) {
            const sl_run *run = &g_array_index(units, sl_run, i);
            sl_range b = { run->unit * reg->unit, run->n * reg->unit };
            g_array_append_val(ranges, b);
        }
        if (reg->mem.fd >= 0 && reg->busy < 0 &&
            (reg->busy = sl_busy_mark(reg->mem.fd, reg->mem.offset, reg->mem.length,
                                      errp)) < 0) {
            return false;
        }
        ret = reg->mem.ops->drop(&reg->mem, (const sl_range *)(void *)ranges->data,
                                 ranges->len);
        if (ret < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block '%s': dropping the %u written "
                        "runs: %s", reg->blk->name, ranges->len, g_strerror(-ret));
            return false;
        }
    }
    return true;
}

/* Units written: collected with a re-arm, or (in place) without: rewritten first. */
static bool collect_all(sl_restore *r, bool rearm, GArray *units, GError **errp)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (!sl_reset_written_units(r, reg, rearm, units, errp)) {
            if (rearm) {
                /* Those found are protected again already, and so may be
                 * part of this block, whose runs the failed scan lost:
                 * all of it is owed (found by review: writes lost). */
                sl_run all = { .region = reg->index, .unit = 0, .n = reg->nunits };
                g_array_append_val(units, all);
                sl_reset_owe(r, units);
            }
            return false;
        }
    }
    if (r->raced) { /* owed by a reset a writer raced with */
        g_array_append_vals(units, r->raced->data, r->raced->len);
        g_array_free(r->raced, true);
        r->raced = NULL;
    }
    sl_reset_normalize_runs(units);
    return true;
}

/*
 * Of @swapped (runs of @reg's memory whose entries are swap entries or
 * markers), the parts where @reg's shmem file has a hole, appended to
 * @holes: pages discarded through a write-protected entry (MADV_REMOVE,
 * a punched hole: a balloon on shared memory), which leave a uffd-wp
 * marker that PAGEMAP_SCAN cannot tell from a swapped page.  A swapped
 * shmem page is data to SEEK_DATA, a hole is not.
 */
static void shmem_holes(const sl_region *reg, const GArray *swapped, GArray *holes)
{
    const uint64_t base = (uintptr_t)reg->mem.host, foff = reg->mem.offset;

    for (guint i = 0; i < swapped->len; i++) {
        const sl_written_run *w = &g_array_index(swapped, sl_written_run, i);
        for (uint64_t at = w->start; at < w->end;) {
            off_t d = lseek(reg->mem.fd, (off_t)(foff + at - base), SEEK_DATA);
            uint64_t data;
            if (d < 0 && errno != ENXIO) {
                break; /* cannot tell: left as it is */
            }
            data = d < 0 ? w->end : MIN(w->end, base + (uint64_t)d - foff); /* ENXIO: no more */
            if (data > at) {
                sl_written_run hole = { at, data };
                g_array_append_val(holes, hole);
            }
            if (data >= w->end) {
                break;
            }
            d = lseek(reg->mem.fd, (off_t)(foff + data - base), SEEK_HOLE);
            /* on: never back (a hole punched between the two calls) */
            at = d < 0 ? w->end : MAX(data + 1, base + (uint64_t)d - foff);
        }
    }
}

/*
 * Of @swapped, the parts where @reg's hugetlbfs file has a hole, appended
 * to @holes.  A hugepage is never swapped: such an entry is a uffd-wp
 * marker left by a discard (a punched hole, or MADV_DONTNEED with the
 * page kept in the file) or a page being migrated.  SEEK_DATA sees no
 * holes on hugetlbfs; the page cache tells (sl_region_file_pages).  When
 * it cannot be read, every marker counts as a hole: refilled, never kept
 * as zeros.
 */
static void hugetlbfs_holes(const sl_region *reg, const GArray *swapped, GArray *holes)
{
    const uint64_t base = (uintptr_t)reg->mem.host;
    uint64_t fp = reg->mem.page_size;
    int err = 0;
    g_autofree unsigned char *in = sl_region_file_pages(reg, &fp, &err);

    for (guint i = 0; i < swapped->len; i++) {
        const sl_written_run *w = &g_array_index(swapped, sl_written_run, i);
        for (uint64_t at = w->start; at < w->end;) {
            uint64_t next = MIN(w->end, base + ((at - base) / fp + 1) * fp);
            sl_written_run *last = holes->len ?
                &g_array_index(holes, sl_written_run, holes->len - 1) : NULL;
            if (!in || !in[(at - base) / fp]) {
                if (last && last->end == at) {
                    last->end = next;
                } else {
                    sl_written_run hole = { at, next };
                    g_array_append_val(holes, hole);
                }
            }
            at = next;
        }
    }
}

static gint by_start(gconstpointer a, gconstpointer b)
{
    const sl_written_run *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

/*
 * @runs (of @reg's memory) cut down to the units holding data: a marker
 * over a zero unit's hole is its normal state (engine.c, mark_zero_holes),
 * and asking the file about each would cost a reset a system call per
 * zero run (found by review: 2 ms became 25 ms on 256 MiB).
 */
static void keep_data_parts(const sl_region *reg, GArray *runs)
{
    const uint64_t base = (uintptr_t)reg->mem.host;
    g_autoptr(GArray) kept = g_array_new(false, false, sizeof(sl_written_run));

    for (guint i = 0; i < runs->len; i++) {
        const sl_written_run *w = &g_array_index(runs, sl_written_run, i);
        uint64_t u = (w->start - base) / reg->unit;
        const uint64_t end = (w->end - base + reg->unit - 1) / reg->unit;
        while (u < end) {
            uint64_t v = u;
            while (v < end && sl_unit_has_data(reg, v)) {
                v++;
            }
            if (v > u) {
                sl_written_run part = { MAX(w->start, base + u * reg->unit),
                                        MIN(w->end, base + v * reg->unit) };
                g_array_append_val(kept, part);
            }
            u = v + 1;
        }
    }
    g_array_set_size(runs, 0);
    g_array_append_vals(runs, kept->data, kept->len);
}

/* @reg's pages out of our page tables: empty entries (@none), and
 * markers over holes of its file among the units holding data (@holes),
 * each sorted. */
static int64_t scan_left(sl_restore *r, const sl_region *reg, GArray *none, GArray *holes)
{
    const uint64_t base = (uintptr_t)reg->mem.host;
    const unsigned how = reg->mem.ops->holes;
    g_autoptr(GArray) swapped = g_array_new(false, false, sizeof(sl_written_run));
    int64_t ret = sl_scan_unmapped(r->pagemap_fd, base, base + reg->mem.length, false, none);

    if (ret < 0 || reg->mem.fd < 0 || how == SL_HOLES_NONE) {
        return ret;
    }
    ret = sl_scan_unmapped(r->pagemap_fd, base, base + reg->mem.length, true, swapped);
    if (ret > 0) {
        keep_data_parts(reg, swapped);
    }
    if (ret > 0 && swapped->len) {
        if (how == SL_HOLES_SEEK) {
            shmem_holes(reg, swapped, holes);
        } else {
            hugetlbfs_holes(reg, swapped, holes);
        }
        g_array_sort(holes, by_start); /* append_units() takes runs in order */
    }
    return ret;
}

/*
 * Of @runs (of @reg's memory, sorted), the placed units to bring back,
 * appended to @out as unit runs: those holding data, and with @zeros_too
 * the zero units as well.
 */
static void append_left(const sl_region *reg, const GArray *runs, bool zeros_too, GArray *out)
{
    g_autoptr(GArray) units = g_array_new(false, false, sizeof(sl_run));

    append_units(reg, runs, units);
    for (guint k = 0; k < units->len; k++) {
        const sl_run *run = &g_array_index(units, sl_run, k);
        for (uint64_t u = run->unit, end = run->unit + run->n; u < end; u++) {
            sl_run left = { .region = reg->index, .unit = u, .n = 0 };
            /* placed (a restore still filling has the others to come) */
            while (u < end && (zeros_too || sl_unit_has_data(reg, u)) &&
                   sl_pagemap_state(reg->map, u) == SL_PAGE_PRESENT) {
                left.n++;
                u++;
            }
            if (left.n) {
                g_array_append_val(out, left);
            }
        }
    }
}

/*
 * Units of @reg placed whose page has left our page tables since, appended
 * to @out: a reset brings them back whether or not a write was seen (found
 * by review: they stayed zeros, or kept a write).  Those holding data,
 * discarded (MADV_DONTNEED, a balloon: an empty entry, or a marker over a
 * hole of a shared file) or unmapped (which on shared memory also loses
 * the trace of a write).  And on shared memory the zero units with an
 * empty entry: their holes carry uffd-wp markers (engine.c,
 * mark_zero_holes), so an empty entry there is a page written and then
 * unmapped, its file keeping the write (found by review); a marker over a
 * hole of a zero unit is its normal state.
 */
static bool empty_units(sl_restore *r, sl_region *reg, GArray *out, GError **errp)
{
    g_autoptr(GArray) none = g_array_new(false, false, sizeof(sl_written_run));
    g_autoptr(GArray) holes = g_array_new(false, false, sizeof(sl_written_run));
    int64_t ret = reg->mem.host && r->tracking != SL_TRACK_ALL ? scan_left(r, reg, none, holes)
                                                               : 0;

    if (ret < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block '%s': PAGEMAP_SCAN of the empty "
                    "pages: %s", reg->blk->name, g_strerror((int)-ret));
        return false;
    }
    append_left(reg, none, reg->mem.ops->in_place, out);
    append_left(reg, holes, false, out); /* holes of data units only (keep_data_parts) */
    return true;
}

/* empty_units() of every region, normalized. */
static bool collect_empty(sl_restore *r, GArray *out, GError **errp)
{
    for (guint i = 0; i < r->regions->len; i++) {
        if (!empty_units(r, g_ptr_array_index(r->regions, i), out, errp)) {
            return false;
        }
    }
    sl_reset_normalize_runs(out);
    return true;
}

/*
 * @units less every unit of @minus (both normalized): one walk over the
 * two, in order (found by review: comparing every pair took 4.5 s for a
 * reset of 1 GiB of scattered 4 KiB units, the guest paused).
 */
void sl_reset_subtract_runs(GArray *units, const GArray *minus)
{
    g_autoptr(GArray) kept = g_array_new(false, false, sizeof(sl_run));
    guint k = 0;

    for (guint i = 0; i < units->len; i++) {
        sl_run run = g_array_index(units, sl_run, i);
        /* runs of @minus wholly before @run cannot touch a later run either */
        while (k < minus->len && sl_run_ends_before(&g_array_index(minus, sl_run, k), &run)) {
            k++;
        }
        for (guint j = k; j < minus->len && run.n; j++) {
            const sl_run *m = &g_array_index(minus, sl_run, j);
            if (sl_run_ends_before(&run, m)) {
                break; /* @m and every later run lie past @run */
            }
            if (m->unit > run.unit) { /* the part before @m stays */
                sl_run before = { .region = run.region, .unit = run.unit,
                                  .n = m->unit - run.unit };
                g_array_append_val(kept, before);
            }
            run.n = run.unit + run.n > m->unit + m->n ? run.unit + run.n - (m->unit + m->n) : 0;
            run.unit = m->unit + m->n;
        }
        if (run.n) {
            g_array_append_val(kept, run);
        }
    }
    g_array_set_size(units, 0);
    g_array_append_vals(units, kept->data, kept->len);
}

/* What the reset found (@units, before any was handled) and how long it took. */
static void note_stats(sl_restore *r, sl_reset_stats *out, GArray *units, uint64_t t0,
                       uint64_t t1)
{
    sl_reset_stats s = { .size = sizeof(s), .runs = units->len };
    uint32_t want;

    for (guint i = 0; out && i < units->len; i++) {
        const sl_run *run = &g_array_index(units, sl_run, i);
        s.units_written += run->n;
        s.bytes_written += run->n * ((sl_region *)g_ptr_array_index(r->regions,
                                                                    run->region))->unit;
    }
    if (!out) {
        return;
    }
    s.collect_ms = (double)(t1 - t0) / 1e6;
    s.restore_ms = (double)(sl_now_ns() - t1) / 1e6;
    want = out->size && out->size < sizeof(s) ? out->size : sizeof(s);
    memcpy(out, &s, want);
    out->size = want;
}

/* Dropping path: @units go absent, their memory goes, the loaders bring them back. */
static bool reset_by_dropping(sl_restore *r, GArray *units, GError **errp)
{
    bool dropped;

    mark_changed(r, units);
    if (!forget_units(r, units, errp)) {
        return false;
    }
    /* A fault that saw one of them PRESENT before it was forgotten maps
     * it (zeros, where the guest discarded the page) before the drop,
     * never after it (fault.c, serve_other). */
    g_mutex_lock(&r->show_lock);
    g_mutex_unlock(&r->show_lock);
    dropped = drop_units(r, units, errp);
    release_units(r, units);
    if (!dropped) {
        sl_engine_fail(r, -EIO); /* stopping seals what is missing: never stale bytes */
        return false;
    }
    queue_redo(r, units);
    /* Release: pairs with the acquire load in the fault loop (fault.c). */
    atomic_fetch_add_explicit(&r->generation, 1, memory_order_release);
    sl_engine_kick(r->ctl_efd);
    if (!sl_engine_refill(r, errp)) {
        sl_engine_fail(r, -EAGAIN);
        return false;
    }
    return true;
}

bool sl_restore_reset(sl_restore *r, sl_reset_stats *out, GError **errp)
{
    g_autoptr(GArray) units = g_array_new(false, false, sizeof(sl_run));
    g_autoptr(GArray) rest = g_array_new(false, false, sizeof(sl_run));
    g_autoptr(GArray) empty = g_array_new(false, false, sizeof(sl_run));
    uint64_t t0 = sl_now_ns(), t1;
    g_autoptr(GMutexLocker) alone = NULL;

    SL_ARG(r, errp, false);
    alone = g_mutex_locker_new(&r->save_reset_lock); /* no save reads what this drops */
    if (!check_reset(r, errp)) {
        return false;
    }
    sl_engine_join_loaders(r); /* none may claim a unit while they are forgotten */
    /* The pages out of the page tables first: one that a reader's fault
     * maps again after this scan (a discarded data page reads as written
     * zeros) is then listed by the written scan.  The other way round it
     * was in neither list, and stayed zeros (found by review). */
    if (!collect_empty(r, empty, errp)) {
        return false;
    }
    if (r->reset_between_scans) {
        r->reset_between_scans(r->reset_between_scans_opaque);
    }
    if (!collect_all(r, !r->cfg.reset_in_place, units, errp)) {
        return false;
    }
    /* Pages no longer mapped are dropped and refilled, never rewritten in place. */
    sl_reset_subtract_runs(units, empty);
    t1 = sl_now_ns();
    if (!r->cfg.reset_in_place) {
        g_array_append_vals(rest, units->data, units->len);
    } else if (units->len && !sl_reset_in_place(r, units, empty, rest, errp)) {
        sl_reset_owe(r, empty); /* not dropped here: the next reset brings them back */
        if (rest->len) { /* rewrites that failed their check are refused all the same */
            (void)reset_by_dropping(r, rest, NULL);
        }
        return false;
    }
    g_array_append_vals(rest, empty->data, empty->len);
    sl_reset_normalize_runs(rest);
    if (rest->len && !reset_by_dropping(r, rest, errp)) {
        return false;
    }
    g_array_append_vals(units, empty->data, empty->len);
    sl_reset_normalize_runs(units);
    /* Relaxed: a statistic. */
    atomic_fetch_add_explicit(&r->resets, units->len != 0, memory_order_relaxed);
    note_stats(r, out, units, t0, t1);
    return true;
}
