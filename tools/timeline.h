/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Timelines of a restore for benchmarks: how many pages are in place at
 * which moment (for the lazy restore from the engine's counters, for an
 * eager load from mincore() on the destination), and the process's own
 * memory from /proc/self/status, to show that shared backends cost no
 * second copy of guest RAM.  Owned by the CLI thread that samples.
 */
#ifndef SNAPLOAD_TIMELINE_H
#define SNAPLOAD_TIMELINE_H

#include <glib.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    double t_ms;          /* from the command's origin */
    uint64_t present;     /* bytes in place */
} sl_sample;

typedef struct {
    GArray *samples;      /* of sl_sample */
    uint64_t total;       /* bytes in all */
    uint64_t peak_rss_anon_kb;
} sl_timeline;

/** sl_timeline_init: an empty timeline of @total bytes. */
void sl_timeline_init(sl_timeline *tl, uint64_t total);

/** sl_timeline_add: one sample; also updates the peak of RssAnon. */
void sl_timeline_add(sl_timeline *tl, double t_ms, uint64_t present);

/** sl_timeline_write: appends "LABEL,t_ms,present_bytes,total_bytes" lines to @f. */
void sl_timeline_write(const sl_timeline *tl, const char *label, FILE *f);

/** sl_timeline_clear: frees the samples. */
void sl_timeline_clear(sl_timeline *tl);

/**
 * sl_mapping_kb: the sum of a "Field:  N kB" value (e.g. "AnonHugePages") of
 * /proc/self/smaps over the mappings that overlap [@addr, +@len).
 */
uint64_t sl_mapping_kb(const void *addr, uint64_t len, const char *field);

/** sl_proc_status_kb: a "Field:  N kB" value of /proc/self/status (0 if absent). */
uint64_t sl_proc_status_kb(const char *field);

/** sl_resident_bytes: bytes of [@addr, +@len) resident in memory (mincore). */
uint64_t sl_resident_bytes(const void *addr, uint64_t len);

#endif /* SNAPLOAD_TIMELINE_H */
