/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Touch threads (see touch.h).  Random mode draws pages uniformly over all
 * targets until stopped; sequential mode walks one slice per thread.
 */
#include <string.h>
#include <time.h>
#include "touch.h"
#include "consumers.h"
#include "migration/format/format.h"
#include "migration/restore-int.h"

typedef struct {
    touch_ctx *t;
    unsigned id;
} touch_arg;

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* One page to read under the poison guard, and what the read found. */
typedef struct {
    touch_ctx *t;
    const touch_target *tg;
    uint64_t page;
    uint64_t *wait_ns;    /* where to store this access's wait, or NULL */
    bool ok;
} page_read;

/* Times the first access to the page, then checks all its bytes. */
static void read_page(void *opaque)
{
    page_read *pr = opaque;
    const touch_target *tg = pr->tg;
    const uint8_t *p = tg->host + pr->page * tg->page_size;
    uint64_t t0 = sl_now_ns();

    uint64_t waited;

    (void)*(volatile const uint8_t *)p;
    waited = sl_now_ns() - t0;
    sl_hist_record(&pr->t->latency, waited);
    if (pr->wait_ns) {
        *pr->wait_ns = waited;
    }
    pr->ok = sl_snapshot_page_matches(pr->t->snap, tg->block, pr->page, p);
}

/*
 * Reads global page @g: counts it, and a mismatch or a refused (poisoned)
 * page; stores the wait of its first access in @wait_ns unless NULL.
 */
static void touch_page(touch_ctx *t, uint64_t g, uint64_t *wait_ns)
{
    unsigned b = 0;
    page_read pr = { .t = t, .wait_ns = wait_ns };

    while (g >= t->targets[b].pages) {
        g -= t->targets[b].pages;
        b++;
    }
    pr.tg = &t->targets[b];
    pr.page = g;
    /* Relaxed: counters, read after the touch threads were joined (or sampled
     * for progress). */
    if (!poison_guard_read(read_page, &pr)) {
        atomic_fetch_add_explicit(&t->poisoned, 1, memory_order_relaxed);
    } else if (!pr.ok) {
        atomic_fetch_add_explicit(&t->mismatches, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&t->touched, 1, memory_order_relaxed);
}

static gpointer touch_thread(gpointer opaque)
{
    touch_arg *a = opaque;
    touch_ctx *t = a->t;
    uint64_t seed = 0x9e3779b97f4a7c15ull * (a->id + 1);
    uint64_t first = t->total_pages * a->id / t->nthreads;
    uint64_t end = t->total_pages * (a->id + 1) / t->nthreads;
    uint64_t quota = t->limit ? t->limit / t->nthreads + (a->id < t->limit % t->nthreads) : 0;
    uint64_t now, prev;

    /* Acquire: pairs with the release store in touch_stop(). */
    for (uint64_t i = first, n = 0; !atomic_load_explicit(&t->stop, memory_order_acquire);
         i++, n++) {
        if (t->limit && n >= quota) {
            break;
        }
        /* Thread 0's very first access: how long the first touch waited. */
        uint64_t *wait = a->id == 0 && n == 0 ? &t->first_wait_ns : NULL;

        if (t->random) {
            touch_page(t, xorshift(&seed) % t->total_pages, wait);
        } else if (i < end) {
            touch_page(t, i, wait);
        } else {
            break;
        }
    }
    now = sl_now_ns();
    /* relaxed: a maximum of times, read after the threads are joined */
    prev = atomic_load_explicit(&t->done_ns, memory_order_relaxed);
    while (now > prev && !atomic_compare_exchange_weak_explicit(
               &t->done_ns, &prev, now, memory_order_relaxed, memory_order_relaxed)) {
    }
    g_free(a);
    return NULL;
}

void touch_start(touch_ctx *t, unsigned n)
{
    t->nthreads = n;
    t->threads = g_new0(GThread *, n ? n : 1);
    poison_guard_install();
    for (unsigned i = 0; i < t->ntargets; i++) {
        t->total_pages += t->targets[i].pages;
    }
    for (unsigned i = 0; i < n; i++) {
        touch_arg *a = g_new0(touch_arg, 1);
        a->t = t;
        a->id = i;
        t->threads[i] = g_thread_new("sl-touch", touch_thread, a);
    }
}

void touch_wait(touch_ctx *t)
{
    for (unsigned i = 0; i < t->nthreads; i++) {
        g_thread_join(t->threads[i]);
    }
    g_free(t->threads);
    t->threads = NULL;
    t->nthreads = 0;
}

void touch_stop(touch_ctx *t)
{
    /* Release: pairs with the touch threads' acquire load of stop. */
    atomic_store_explicit(&t->stop, true, memory_order_release);
    for (unsigned i = 0; i < t->nthreads; i++) {
        g_thread_join(t->threads[i]);
    }
    g_free(t->threads);
    t->threads = NULL;
    t->nthreads = 0;
}
