/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the two files of a reset share (reset.c: collecting the written
 * units, dropping them, sl_restore_reset(); reset-inplace.c: rewriting
 * them in place).  Caller's thread only, inside sl_restore_reset().
 */
#ifndef SNAPLOAD_RESET_INT_H
#define SNAPLOAD_RESET_INT_H

#include <glib.h>
#include "restore-int.h"

/** sl_run_ends_before: whether run @b ends before run @a begins (in region order). */
static inline bool sl_run_ends_before(const sl_run *b, const sl_run *a)
{
    return b->region < a->region || (b->region == a->region && b->unit + b->n <= a->unit);
}

/**
 * sl_reset_written_units: units of @reg written since they were last
 * protected, as sl_run (one region), appended to @out; without async WP
 * every unit.  With @rearm they are protected again in the same walk.
 */
bool sl_reset_written_units(sl_restore *r, sl_region *reg, bool rearm, GArray *out,
                            GError **errp);

/** sl_reset_normalize_runs: sorts @runs and merges those that overlap or touch. */
void sl_reset_normalize_runs(GArray *runs);

/**
 * sl_reset_owe: owes @runs to the next reset (r->raced): units whose bytes
 * may differ from the snapshot while their protection says unwritten.
 */
void sl_reset_owe(sl_restore *r, const GArray *runs);

/**
 * sl_reset_in_place: rewrites @units (normalized) with the snapshot's bytes
 * and protects them again; runs that could not be rewritten are left in
 * @failed for the dropping way.  @empty: units out of the page tables,
 * dropped by the caller (a reader's fault may have mapped them meanwhile).
 * False, with @errp set and every unit that may differ owed to the next
 * reset, if a writer ran meanwhile or the protection failed.
 */
bool sl_reset_in_place(sl_restore *r, GArray *units, const GArray *empty, GArray *failed,
                       GError **errp);

/** sl_reset_subtract_runs: removes from @units every unit of @minus (both normalized). */
void sl_reset_subtract_runs(GArray *units, const GArray *minus);

/**
 * sl_reset_written_of_block: sl_restore_written() for a caller that holds
 * save_reset_lock already (a save).
 */
bool sl_reset_written_of_block(sl_restore *r, const char *block_name, GArray *runs,
                               GError **errp);

#endif
