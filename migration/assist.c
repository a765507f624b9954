/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The fault thread's assistant: a worker thread that takes one job at a
 * time.  The fault thread posts the second half of a large unit (read it
 * from the snapshot, check its checksums), does the first half itself and
 * waits for the worker; the vCPU waits for about half the time.  Or it
 * posts the fault-around neighbours of a cold fault and goes on without
 * waiting (fault.c); sl_assist_idle() tells it when it may post again.
 *
 * Handshake, on one 32-bit futex word (@state):
 *   IDLE -> POSTED   the poster, after filling fn/arg (release store);
 *   POSTED -> DONE   the worker, after running the job (release store);
 *   DONE -> IDLE     the poster, in sl_assist_wait() or sl_assist_idle() (it
 *                    owns the word now);
 *   IDLE -> QUIT     sl_assist_free(), after waiting for a posted job.
 * Each side sleeps on the word with FUTEX_WAIT while it holds a value the
 * other side will change, and wakes the other after its own store; the
 * kernel rechecks the value before sleeping, so no wake-up is lost.  The
 * job fields are written only by the poster while the word is IDLE and
 * read only by the worker while it is POSTED.
 */
#include <errno.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <unistd.h>
#include "assist.h"

enum { IDLE, POSTED, DONE, QUIT };

struct sl_assist {
    _Atomic uint32_t state;  /* the futex word; transitions above */
    void (*fn)(void *);      /* the job: the poster's while IDLE */
    void *arg;
    GThread *thread;
};

#define ASSIST_NICE (-10) /* as the fault thread it helps; needs CAP_SYS_NICE */

static void futex_wait(_Atomic uint32_t *w, uint32_t val)
{
    syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static gpointer assist_thread(gpointer opaque)
{
    sl_assist *a = opaque;

    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), ASSIST_NICE);
    for (;;) {
        /* Acquire: pairs with the release store of POSTED (or QUIT). */
        uint32_t st = atomic_load_explicit(&a->state, memory_order_acquire);
        if (st == QUIT) {
            return NULL;
        }
        if (st != POSTED) {
            futex_wait(&a->state, st);
            continue;
        }
        a->fn(a->arg);
        /* Release: the job's effects before DONE; pairs with sl_assist_wait(). */
        atomic_store_explicit(&a->state, DONE, memory_order_release);
        futex_wake(&a->state);
    }
}

sl_assist *sl_assist_new(const char *name, GError **errp)
{
    sl_assist *a = g_new0(sl_assist, 1);

    atomic_init(&a->state, IDLE);
    a->thread = g_thread_try_new(name, assist_thread, a, errp);
    if (!a->thread) {
        g_free(a);
        return NULL;
    }
    return a;
}

void sl_assist_post(sl_assist *a, void (*fn)(void *), void *arg)
{
    a->fn = fn;
    a->arg = arg;
    /* Release: fn and arg before POSTED; pairs with the worker's acquire. */
    atomic_store_explicit(&a->state, POSTED, memory_order_release);
    futex_wake(&a->state);
}

void sl_assist_wait(sl_assist *a)
{
    uint32_t st;

    /* Acquire: pairs with the worker's release store of DONE. */
    while ((st = atomic_load_explicit(&a->state, memory_order_acquire)) != DONE) {
        futex_wait(&a->state, st);
    }
    atomic_store_explicit(&a->state, IDLE, memory_order_relaxed); /* ours until we post */
}

bool sl_assist_idle(sl_assist *a)
{
    /* Acquire: pairs with the worker's release store of DONE. */
    uint32_t st = atomic_load_explicit(&a->state, memory_order_acquire);

    if (st == DONE) {
        atomic_store_explicit(&a->state, IDLE, memory_order_relaxed); /* ours until we post */
    }
    return st != POSTED;
}

void sl_assist_free(sl_assist *a)
{
    if (!a) {
        return;
    }
    if (!sl_assist_idle(a)) {
        sl_assist_wait(a);
    }
    /* Release: pairs with the worker's acquire load; no job is pending now. */
    atomic_store_explicit(&a->state, QUIT, memory_order_release);
    futex_wake(&a->state);
    g_thread_join(a->thread);
    g_free(a);
}
