/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Log-linear latency histogram (see histogram.h).  Values below 16 ns get a
 * bucket each; above, each power of two is split into 8 linear buckets.
 * Every atomic here is relaxed and pairs with nothing: recorders on any
 * thread only count, and a reader takes what it finds (a statistic; the
 * final figures are read after the recording threads were joined).
 */
#include "histogram.h"

static unsigned bucket_of(uint64_t v)
{
    unsigned e;

    if (v < 16) {
        return (unsigned)v;
    }
    e = 63u - (unsigned)__builtin_clzll(v);
    return 16 + (e - 4) * 8 + (unsigned)((v >> (e - 3)) & 7);
}

/* Largest value that falls into bucket @b. */
static uint64_t bucket_top(unsigned b)
{
    unsigned e, sub;

    if (b < 16) {
        return b;
    }
    e = (b - 16) / 8 + 4;
    sub = (b - 16) % 8;
    return ((8ull + sub + 1) << (e - 3)) - 1;
}

void sl_hist_record(sl_histogram *h, uint64_t ns)
{
    uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);

    atomic_fetch_add_explicit(&h->count[bucket_of(ns)], 1, memory_order_relaxed);
    while (ns > m && !atomic_compare_exchange_weak_explicit(&h->max, &m, ns,
                                                            memory_order_relaxed,
                                                            memory_order_relaxed)) {
    }
}

uint64_t sl_hist_percentile(const sl_histogram *h, double p)
{
    uint64_t total = 0, seen = 0, want;

    for (unsigned b = 0; b < SL_HIST_BUCKETS; b++) {
        total += atomic_load_explicit(&h->count[b], memory_order_relaxed);
    }
    if (total == 0) {
        return 0;
    }
    want = (uint64_t)((double)total * p / 100.0 + 0.999999);
    want = want ? want : 1;
    for (unsigned b = 0; b < SL_HIST_BUCKETS; b++) {
        seen += atomic_load_explicit(&h->count[b], memory_order_relaxed);
        if (seen >= want) {
            uint64_t top = bucket_top(b), max = sl_hist_max(h);
            return top < max ? top : max;
        }
    }
    return sl_hist_max(h);
}

uint64_t sl_hist_max(const sl_histogram *h)
{
    return atomic_load_explicit(&((sl_histogram *)h)->max, memory_order_relaxed);
}
