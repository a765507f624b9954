/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Exactly-once page map (see pagemap.h for the state machine), one byte per
 * unit: a 1 TiB guest of 4 KiB pages needs 256 MiB of it, not 1.3 GB.
 *
 *   bits 0-1  state (ABSENT, CLAIMED, PRESENT, POISONED)
 *   bit  2    WAITERS: someone sleeps on the futex word holding this byte
 *   bit  3    WATCHED: the settler must call the notify function
 *   bits 4-5  audit: successful placements, saturating at 2 ("twice")
 *
 * Every change of a byte is one atomic RMW on that byte.  Memory ordering:
 * a successful claim (acq_rel CAS) orders the claimer after any earlier
 * unclaim.  Settling (publish, poison, unclaim) is a release CAS that pairs
 * with the acquire loads in sl_pagemap_state() and sl_pagemap_wait(): a
 * thread that sees PRESENT also sees the placement that preceded it.  The
 * WATCHED bit is set by a CAS that only succeeds on a CLAIMED byte; the
 * settling CAS returns the old byte, so of the two RMWs on the same byte one
 * comes first: either the watcher's (then the settler sees the bit and
 * notifies) or the settler's (then the watcher's CAS fails and it sees the
 * settled state).  No notification can be lost.
 *
 * Futexes wait on 32-bit words, so a waiter sets WAITERS in its byte and
 * sleeps on the aligned word holding it, expecting the word it saw; the
 * settler of a byte with WAITERS wakes every sleeper of that word.  A
 * change to any of the word's four bytes makes the sleep return at once or
 * wakes it; a waiter then looks again (a neighbour's change is a spurious
 * wake-up, never a lost one).  Waiting is for tests and slow paths: the
 * fault thread watches instead.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <glib.h>
#include "snapload/snapload.h"
#include "large.h"
#include "pagemap.h"

#define STATE_MASK  3u
#define WAITERS     4u
#define WATCHED     8u
#define PLACED_ONE  0x10u
#define PLACED_MASK 0x30u

struct sl_pagemap {
    uint64_t npages;
    /* Pages PRESENT; written by publishers (relaxed add), read for stats. */
    _Atomic uint64_t present;
    /* One byte per page, in 32-bit words for the futex; see above. */
    _Atomic uint8_t *state;
    sl_large mem;               /* where state lives (large.h) */
    /* Called when a watched page is settled; set before sharing, then read-only. */
    void (*notify)(void *opaque);
    void *notify_opaque;
};

sl_pagemap *sl_pagemap_new(uint64_t npages, GError **errp)
{
    sl_pagemap *m = g_new0(sl_pagemap, 1);

    m->npages = npages;
    /* Whole 32-bit words: a futex may look at the word holding the last byte. */
    m->state = sl_large_map(&m->mem, (npages / 4 + 1) * sizeof(uint32_t));
    if (!m->state) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "page map of %" G_GUINT64_FORMAT " pages: %s",
                    npages, g_strerror(errno));
        g_free(m);
        return NULL;
    }
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
        sl_large_unmap(&m->mem);
        g_free(m);
    }
}

uint64_t sl_pagemap_npages(const sl_pagemap *m)
{
    return m->npages;
}

uint64_t sl_pagemap_bytes(const sl_pagemap *m)
{
    return sizeof(*m) + (m->npages / 4 + 1) * 4;
}

int sl_pagemap_state(const sl_pagemap *m, uint64_t i)
{
    return (int)(atomic_load_explicit(&m->state[i], memory_order_acquire) & STATE_MASK);
}

bool sl_pagemap_claim(sl_pagemap *m, uint64_t i)
{
    uint8_t old = atomic_load_explicit(&m->state[i], memory_order_relaxed);

    while ((old & STATE_MASK) == SL_PAGE_ABSENT) {
        /* Keep the WAITERS and audit bits; WATCHED only ever lives on CLAIMED. */
        uint8_t to = (uint8_t)((old & (WAITERS | PLACED_MASK)) | SL_PAGE_CLAIMED);
        if (atomic_compare_exchange_weak_explicit(&m->state[i], &old, to, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            return true;
        }
    }
    return false;
}

/* The aligned futex word holding byte @i. */
static uint32_t *word_of(sl_pagemap *m, uint64_t i)
{
    return (uint32_t *)((uintptr_t)&m->state[i] & ~(uintptr_t)3);
}

static void futex_wake_all(uint32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

bool sl_pagemap_watch(sl_pagemap *m, uint64_t i)
{
    uint8_t old = atomic_load_explicit(&m->state[i], memory_order_relaxed);

    while ((old & STATE_MASK) == SL_PAGE_CLAIMED) {
        /* Relaxed is enough: the bit only asks for a notification; what the
         * watcher later reads is ordered by the settler's release CAS. */
        if ((old & WATCHED) ||
            atomic_compare_exchange_weak_explicit(&m->state[i], &old, (uint8_t)(old | WATCHED),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            return true;
        }
    }
    return false;
}

/* CLAIMED -> @to, keeping the audit bits; wakes waiters, notifies a watcher. */
static void set_state(sl_pagemap *m, uint64_t i, uint8_t to)
{
    uint8_t old = atomic_load_explicit(&m->state[i], memory_order_relaxed);

    /* Release: pairs with the acquire loads of readers and waiters. */
    while (!atomic_compare_exchange_weak_explicit(&m->state[i], &old,
                                                  (uint8_t)((old & PLACED_MASK) | to),
                                                  memory_order_release, memory_order_relaxed)) {
    }
    g_assert((old & STATE_MASK) == SL_PAGE_CLAIMED);
    if (old & WAITERS) {
        futex_wake_all(word_of(m, i));
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

uint64_t sl_pagemap_forget(sl_pagemap *m, uint64_t i, uint64_t n)
{
    uint64_t forgot = 0;

    for (uint64_t k = i; k < i + n; k++) {
        uint8_t old = atomic_load_explicit(&m->state[k], memory_order_relaxed);
        /* Relaxed: PRESENT is final for every other thread, so nobody
         * else changes this byte; the reset publishes its new generation
         * with a release store afterwards. */
        while ((old & STATE_MASK) == SL_PAGE_PRESENT &&
               !atomic_compare_exchange_weak_explicit(&m->state[k], &old,
                                                      (uint8_t)((old & WAITERS) | SL_PAGE_CLAIMED),
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
        }
        forgot += (old & STATE_MASK) == SL_PAGE_PRESENT;
    }
    atomic_fetch_sub_explicit(&m->present, forgot, memory_order_relaxed);
    return forgot;
}

int sl_pagemap_wait(sl_pagemap *m, uint64_t i, bool until_present)
{
    uint32_t *word = word_of(m, i);

    for (;;) {
        uint8_t s = atomic_load_explicit(&m->state[i], memory_order_acquire);
        uint32_t st = s & STATE_MASK, seen;

        if (st >= SL_PAGE_PRESENT || (st == SL_PAGE_ABSENT && !until_present)) {
            return (int)st;
        }
        if (!(s & WAITERS) &&
            !atomic_compare_exchange_weak_explicit(&m->state[i], &s, (uint8_t)(s | WAITERS),
                                                   memory_order_acquire,
                                                   memory_order_relaxed)) {
            continue;
        }
        /* Acquire: the word as it holds our WAITERS bit; the futex sleeps
         * only while all four bytes still are what we saw. */
        seen = atomic_load_explicit((_Atomic uint32_t *)word, memory_order_acquire);
        if ((((const uint8_t *)&seen)[(uintptr_t)&m->state[i] & 3] & STATE_MASK) == st) {
            syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
        }
    }
}

uint64_t sl_pagemap_present(const sl_pagemap *m)
{
    return atomic_load_explicit(&((sl_pagemap *)m)->present, memory_order_relaxed);
}

void sl_pagemap_note_placed(sl_pagemap *m, uint64_t i, uint64_t n)
{
    for (uint64_t k = 0; k < n; k++) {
        uint8_t old = atomic_load_explicit(&m->state[i + k], memory_order_relaxed);
        /* Saturate at two: "placed twice" is all the audit needs to tell. */
        while ((old & PLACED_MASK) < 2 * PLACED_ONE &&
               !atomic_compare_exchange_weak_explicit(&m->state[i + k], &old,
                                                      (uint8_t)(old + PLACED_ONE),
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
        }
    }
}

void sl_pagemap_audit(const sl_pagemap *m, uint64_t *twice, uint64_t *never)
{
    *twice = *never = 0;
    for (uint64_t i = 0; i < m->npages; i++) {
        uint8_t c = atomic_load_explicit(&((sl_pagemap *)m)->state[i], memory_order_relaxed) &
                    PLACED_MASK;
        *twice += c > PLACED_ONE;
        *never += c == 0;
    }
}
