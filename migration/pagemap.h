/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Exactly-once page map.  One atomic byte of state per page of a block,
 * shared by the fault thread and the loaders:
 *
 *     ABSENT --claim--> CLAIMED --publish--> PRESENT
 *                          |--poison---> POISONED (data corrupt: never placed)
 *                          \--unclaim--> ABSENT   (placement failed)
 *
 * Only the thread whose claim succeeded may place the page, so no page is
 * placed twice.  A thread that needs a page another thread is placing waits
 * on the state word with a futex; a thread that must not wait (the fault
 * thread) instead *watches* a claimed page and is notified when its claimer
 * settles it.  Independently of the states, an audit
 * counter per page records how many placements really succeeded, so tests
 * can prove that every page was placed exactly once.
 */
#ifndef SNAPLOAD_PAGEMAP_H
#define SNAPLOAD_PAGEMAP_H

#include <stdbool.h>
#include <stdint.h>

enum { SL_PAGE_ABSENT = 0, SL_PAGE_CLAIMED = 1, SL_PAGE_PRESENT = 2, SL_PAGE_POISONED = 3 };

typedef struct sl_pagemap sl_pagemap;

/** sl_pagemap_new: a map of @npages pages, all ABSENT; NULL with @errp if
 * its memory cannot be had. */
sl_pagemap *sl_pagemap_new(uint64_t npages, GError **errp);

/**
 * sl_pagemap_set_notify: have @fn(@opaque) called by whichever thread
 * settles (publishes, poisons or unclaims) a page that was watched (see
 * sl_pagemap_watch).  Set before the map is shared; read-only after.
 */
void sl_pagemap_set_notify(sl_pagemap *m, void (*fn)(void *opaque), void *opaque);

/** sl_pagemap_free: release; NULL is ok. */
void sl_pagemap_free(sl_pagemap *m);

/** sl_pagemap_npages: number of pages in the map. */
uint64_t sl_pagemap_npages(const sl_pagemap *m);

/** sl_pagemap_bytes: memory the map takes (one byte per page, and a header). */
uint64_t sl_pagemap_bytes(const sl_pagemap *m);

/** sl_pagemap_state: current state of page @i (acquire load). */
int sl_pagemap_state(const sl_pagemap *m, uint64_t i);

/** sl_pagemap_claim: ABSENT -> CLAIMED; true if this caller won page @i. */
bool sl_pagemap_claim(sl_pagemap *m, uint64_t i);

/**
 * sl_pagemap_watch: if page @i is CLAIMED, mark it watched and return true:
 * the thread that settles it will call the notify function.  Returns false
 * if the page is not (or no longer) CLAIMED: the caller looks again.
 */
bool sl_pagemap_watch(sl_pagemap *m, uint64_t i);

/**
 * sl_pagemap_publish: CLAIMED -> PRESENT for pages [@i, @i + @n), which the
 * caller claimed and placed; wakes waiters.  Returns the number of pages
 * present in the map afterwards.
 */
uint64_t sl_pagemap_publish(sl_pagemap *m, uint64_t i, uint64_t n);

/** sl_pagemap_poison: CLAIMED -> POISONED for page @i (its data was corrupt); wakes waiters. */
void sl_pagemap_poison(sl_pagemap *m, uint64_t i);

/** sl_pagemap_unclaim: CLAIMED -> ABSENT for pages the caller failed to place. */
void sl_pagemap_unclaim(sl_pagemap *m, uint64_t i, uint64_t n);

/**
 * sl_pagemap_forget: PRESENT -> CLAIMED, by the caller until it unclaims
 * them (sl_pagemap_unclaim(): then ABSENT), for the pages of [@i, @i + @n)
 * that are PRESENT, their audit count back to zero (a reset: they will be
 * placed once more, exactly once).  PRESENT is final for every other
 * caller, so this may run beside them.  Returns how many were PRESENT.
 */
uint64_t sl_pagemap_forget(sl_pagemap *m, uint64_t i, uint64_t n);

/**
 * sl_pagemap_wait: block (futex, no polling) while page @i is CLAIMED or,
 * with @until_present, also while it is ABSENT.  Returns the state seen.
 */
int sl_pagemap_wait(sl_pagemap *m, uint64_t i, bool until_present);

/** sl_pagemap_present: pages PRESENT so far. */
uint64_t sl_pagemap_present(const sl_pagemap *m);

/** sl_pagemap_note_placed: audit: a placement of [@i, @i + @n) succeeded. */
void sl_pagemap_note_placed(sl_pagemap *m, uint64_t i, uint64_t n);

/** sl_pagemap_audit: pages placed more than once, and pages never placed. */
void sl_pagemap_audit(const sl_pagemap *m, uint64_t *twice, uint64_t *never);

#endif /* SNAPLOAD_PAGEMAP_H */
