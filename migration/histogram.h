/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Latency histogram with log-linear buckets (8 per power of two, so a
 * reported percentile is within 12.5 % of the true value).  One thread
 * records; any thread may read a snapshot of it.  Counts are relaxed
 * atomics: readers get a consistent-enough view for statistics, nothing
 * synchronises through them.
 */
#ifndef SNAPLOAD_HISTOGRAM_H
#define SNAPLOAD_HISTOGRAM_H

#include <stdatomic.h>
#include <stdint.h>

#define SL_HIST_BUCKETS 512

typedef struct {
    _Atomic uint64_t count[SL_HIST_BUCKETS];
    _Atomic uint64_t max;
} sl_histogram;

/** sl_hist_record: add one sample of @ns nanoseconds. */
void sl_hist_record(sl_histogram *h, uint64_t ns);

/** sl_hist_percentile: upper bound (ns) of the @p-th percentile (0..100); 0 if empty. */
uint64_t sl_hist_percentile(const sl_histogram *h, double p);

/** sl_hist_max: largest sample recorded (ns). */
uint64_t sl_hist_max(const sl_histogram *h);

#endif /* SNAPLOAD_HISTOGRAM_H */
