/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Exactly-once page map (see pagemap.h for the state machine).
 *
 * Memory ordering: a successful claim (acq_rel CAS) orders the claimer after
 * any earlier unclaim.  publish is a release exchange that pairs with the
 * acquire loads in sl_pagemap_state() and sl_pagemap_wait(): a thread that
 * sees PRESENT also sees the placement that preceded it.  The WAITERS bit is
 * set by waiters before sleeping and tells publish to issue a futex wake.
 * The WATCHED bit is set by a CAS that only succeeds on a CLAIMED word; the
 * settling exchange returns the old word, so of the two RMWs on the same
 * word one comes first: either the watcher's CAS (then the settler sees the
 * bit and notifies) or the settler's exchange (then the CAS fails and the
 * watcher sees the settled state).  No notification can be lost.
 */
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <glib.h>
#include "pagemap.h"

#define STATE_MASK 3u
#define WAITERS    4u
#define WATCHED    8u

struct sl_pagemap {
    uint64_t npages;
    /* Pages PRESENT; written by publishers (relaxed add), read for stats. */
    _Atomic uint64_t present;
    /* Per-page state + WAITERS bit; see the ordering notes above. */
    _Atomic uint32_t *state;
    /* Per-page count of successful placements (audit only, relaxed). */
    _Atomic uint8_t *placed;
    /* Called when a watched page is settled; set before sharing, then read-only. */
    void (*notify)(void *opaque);
    void *notify_opaque;
};

sl_pagemap *sl_pagemap_new(uint64_t npages)
{
    sl_pagemap *m = g_new0(sl_pagemap, 1);

    m->npages = npages;
    m->state = g_new0(_Atomic uint32_t, npages ? npages : 1);
    m->placed = g_new0(_Atomic uint8_t, npages ? npages : 1);
    return m;
}

void sl_pagemap_set_notify(sl_pagemap *m, void (*fn)(void *opaque), void *opaque)
{
    m->notify = fn;
    m->notify_opaque = opaque;
}

void sl_pagemap_free(sl_pagemap *m)
{
    if (m) {
        g_free((void *)m->state);
        g_free((void *)m->placed);
        g_free(m);
    }
}

uint64_t sl_pagemap_npages(const sl_pagemap *m)
{
    return m->npages;
}

int sl_pagemap_state(const sl_pagemap *m, uint64_t i)
{
    return (int)(atomic_load_explicit(&m->state[i], memory_order_acquire) & STATE_MASK);
}

bool sl_pagemap_claim(sl_pagemap *m, uint64_t i)
{
    uint32_t old = atomic_load_explicit(&m->state[i], memory_order_relaxed);

    while ((old & STATE_MASK) == SL_PAGE_ABSENT) {
        /* Keep a WAITERS bit set by someone waiting for this page. */
        if (atomic_compare_exchange_weak_explicit(&m->state[i], &old,
                                                  (old & WAITERS) | SL_PAGE_CLAIMED,
                                                  memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            return true;
        }
    }
    return false;
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

bool sl_pagemap_watch(sl_pagemap *m, uint64_t i)
{
    uint32_t old = atomic_load_explicit(&m->state[i], memory_order_relaxed);

    while ((old & STATE_MASK) == SL_PAGE_CLAIMED) {
        /* Relaxed is enough: the bit only asks for a notification; what the
         * watcher later reads is ordered by the settler's release exchange. */
        if ((old & WATCHED) ||
            atomic_compare_exchange_weak_explicit(&m->state[i], &old, old | WATCHED,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed)) {
            return true;
        }
    }
    return false;
}

static void set_state(sl_pagemap *m, uint64_t i, uint32_t to)
{
    /* Release: pairs with the acquire loads of readers and waiters. */
    uint32_t old = atomic_exchange_explicit(&m->state[i], to, memory_order_release);

    g_assert((old & STATE_MASK) == SL_PAGE_CLAIMED);
    if (old & WAITERS) {
        futex_wake_all(&m->state[i]);
    }
    if ((old & WATCHED) && m->notify) {
        m->notify(m->notify_opaque);
    }
}

uint64_t sl_pagemap_publish(sl_pagemap *m, uint64_t i, uint64_t n)
{
    for (uint64_t k = 0; k < n; k++) {
        set_state(m, i + k, SL_PAGE_PRESENT);
    }
    return atomic_fetch_add_explicit(&m->present, n, memory_order_relaxed) + n;
}

void sl_pagemap_poison(sl_pagemap *m, uint64_t i)
{
    set_state(m, i, SL_PAGE_POISONED);
}

void sl_pagemap_unclaim(sl_pagemap *m, uint64_t i, uint64_t n)
{
    for (uint64_t k = 0; k < n; k++) {
        set_state(m, i + k, SL_PAGE_ABSENT);
    }
}

int sl_pagemap_wait(sl_pagemap *m, uint64_t i, bool until_present)
{
    for (;;) {
        uint32_t s = atomic_load_explicit(&m->state[i], memory_order_acquire);
        uint32_t st = s & STATE_MASK;

        if (st >= SL_PAGE_PRESENT || (st == SL_PAGE_ABSENT && !until_present)) {
            return (int)st;
        }
        if (!(s & WAITERS) &&
            !atomic_compare_exchange_weak_explicit(&m->state[i], &s, s | WAITERS,
                                                   memory_order_acquire,
                                                   memory_order_relaxed)) {
            continue;
        }
        /* Sleeps only while the word still holds what we saw. */
        syscall(SYS_futex, (uint32_t *)&m->state[i], FUTEX_WAIT_PRIVATE, s | WAITERS,
                NULL, NULL, 0);
    }
}

uint64_t sl_pagemap_present(const sl_pagemap *m)
{
    return atomic_load_explicit(&((sl_pagemap *)m)->present, memory_order_relaxed);
}

void sl_pagemap_note_placed(sl_pagemap *m, uint64_t i, uint64_t n)
{
    for (uint64_t k = 0; k < n; k++) {
        uint8_t c = atomic_load_explicit(&m->placed[i + k], memory_order_relaxed);
        if (c < UINT8_MAX) {
            atomic_fetch_add_explicit(&m->placed[i + k], 1, memory_order_relaxed);
        }
    }
}

void sl_pagemap_audit(const sl_pagemap *m, uint64_t *twice, uint64_t *never)
{
    *twice = *never = 0;
    for (uint64_t i = 0; i < m->npages; i++) {
        uint8_t c = atomic_load_explicit(&((sl_pagemap *)m)->placed[i], memory_order_relaxed);
        *twice += c > 1;
        *never += c == 0;
    }
}
