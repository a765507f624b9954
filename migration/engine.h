/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The engine's placement core (engine.c), shared by the fault thread
 * (fault.c) and the loaders (loader.c): entering and leaving consumer
 * views, reading and checking units, and committing them (place, publish,
 * map into every view, count done) or refusing them.  Internal to the
 * engine; the restore's own entry points are in restore-int.h.
 */
#ifndef SNAPLOAD_ENGINE_H
#define SNAPLOAD_ENGINE_H

#include <stdatomic.h>
#include "restore-int.h"
#include "assist.h"

/* Who places a unit: the fault thread, or loader group g (| HINTED when the
 * work came from a fault window or the hot list). */
#define BY_FAULT (-1)
#define HINTED 0x100

#define CHECK_BYTES (1u << 20) /* a reused file is read and hashed this much at a time */
/* Units of at least this many snapshot pages (256 KiB) are split between two threads. */
#define SPLIT_MIN_PAGES 64

/* Counters only: relaxed, and no write at all for 0 (the fault path adds many). */
static inline void add(_Atomic uint64_t *c, uint64_t n)
{
    if (n) {
        atomic_fetch_add_explicit(c, n, memory_order_relaxed);
    }
}

/** sl_view_count: views of @reg published so far (live or dead). */
unsigned sl_view_count(const sl_region *reg);

/** sl_view_live: @v has not been dropped. */
bool sl_view_live(const sl_view *v);

/**
 * sl_view_enter: before an ioctl on @v's uffd from a thread other than
 * the fault thread; false if @v is dead (leave it alone).  Pairs with
 * sl_view_exit().
 */
bool sl_view_enter(sl_restore *r, sl_view *v);

/** sl_view_exit: a thread other than the fault thread is done with @v. */
void sl_view_exit(sl_restore *r, sl_view *v);

/** sl_units_done: @n units left the work list; the last one signals completion. */
void sl_units_done(sl_restore *r, uint64_t n);

/** sl_unit_has_data: some page of unit @u of @reg is stored (the bitmap; proven first). */
bool sl_unit_has_data(const sl_region *reg, uint64_t u);

/** sl_unit_verifies: unit @u, staged at @buf, passes its checksums (or none are checked). */
bool sl_unit_verifies(sl_restore *r, const sl_region *reg, uint64_t u, const uint8_t *buf);

/** sl_show_run: maps present units [@u, +@n) into view @v. */
int sl_show_run(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n);

/** sl_show_written: sl_show_run(), mapping what it finds as written (unprotected). */
int sl_show_written(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n);

/** sl_first_view: the first live view of @reg, entered, or NULL. */
sl_view *sl_first_view(sl_restore *r, sl_region *reg);

/** sl_refuse_unit: claimed unit @u is corrupt: discarded and poisoned, never served. */
int sl_refuse_unit(sl_restore *r, sl_region *reg, uint64_t u, const uint8_t *staged);

/**
 * sl_commit_run: claimed units [@u, +@n), staged at @src (NULL: zeros),
 * placed in @v (moved there when @move), published, mapped into the other
 * views, then counted done.  @who: BY_FAULT or a loader group.
 */
int sl_commit_run(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n,
                  const uint8_t *src, int who, bool move);

/** sl_publish_zeros: claimed zero units [@u, +@n) published without a placement. */
void sl_publish_zeros(sl_restore *r, sl_region *reg, uint64_t u, uint64_t n, int who);

/** sl_unit_kept: keep_memory: the reused file already holds unit @u as the snapshot has it. */
bool sl_unit_kept(sl_restore *r, const sl_region *reg, uint64_t u, uint8_t *check);

/** sl_commit_kept: claimed units [@u, +@n) the reused file holds: published and shown. */
int sl_commit_kept(sl_restore *r, sl_region *reg, uint64_t u, uint64_t n, int who);

/**
 * sl_poison_unit (seal.c): poison unit @u of @reg in view @v (UFFDIO_POISON, which
 * wakes its faults), page by page where a VMA boundary splits the unit.
 */
void sl_poison_unit(const sl_region *reg, const sl_view *v, uint64_t u);

/**
 * sl_view_reclaim (fault.c): dead view @v of @reg that nobody uses any
 * more (users 0): every page still missing sealed in it, its uffd closed
 * (or kept open where the seal could not be made).  Caller holds
 * views_lock; the fault thread between its rounds, or anyone once it has
 * let the views go (views_closed).
 */
void sl_view_reclaim(sl_region *reg, sl_view *v);

/** sl_prove_units: the metadata of units [@u, +@n) matches its segment digests. */
int sl_prove_units(sl_restore *r, const sl_region *reg, uint64_t u, uint64_t n);

/** sl_read_units: reads units [@u, +@n) (proven) into @dst through @fd. */
int sl_read_units(sl_restore *r, const sl_region *reg, uint64_t u, uint64_t n, uint8_t *dst,
                  int fd);

/**
 * sl_fill_besides: claimed units [@u0, +@n) but @u (served already), staged
 * at @dst (where @u0 goes), read in one request with @u's bytes left alone,
 * bad ones refused, the rest committed.
 */
int sl_fill_besides(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u0, uint64_t n,
                    uint64_t u, uint8_t *dst, int who, int fd);

/** sl_fill_claimed: reads claimed units [@u, +@n) into @dst, refuses bad ones, commits the rest. */
int sl_fill_claimed(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint64_t n,
                    uint8_t *dst, int who, int fd);

/** sl_serve_unit: serves unit @u the fault thread claimed for view @v. */
int sl_serve_unit(sl_restore *r, sl_region *reg, sl_view *v, uint64_t u, uint8_t *bounce,
                  uint8_t *check, int fd, sl_assist *assist);

/**
 * sl_lost_memory (lost.c): the fault thread read @m, an UFFD_EVENT_UNMAP
 * or UFFD_EVENT_REMAP on our own uffd: a block whose mapping of ours it
 * touches fails the restore, and what is left of that mapping is sealed
 * and let go.  No-op for memory already let go.
 */
struct uffd_msg;
void sl_lost_memory(sl_restore *r, const struct uffd_msg *m);

/** sl_fault_start (fault.c): starts the fault thread. */
bool sl_fault_start(sl_restore *r, GError **errp);

/** sl_loaders_start (loader.c): starts the loaders (if any) and the prefault thread. */
bool sl_loaders_start(sl_restore *r, GError **errp);

#endif /* SNAPLOAD_ENGINE_H */
