/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Demo consumer standing in for vCPUs: K threads read pages of the restored
 * memory (random or sequential) while the restore runs, timing each first
 * access and checking every page they see against the snapshot's checksum
 * (or against zeros for a zero page).  A page the restore refused (corrupt
 * in the snapshot) is poisoned: its read raises SIGBUS, which the thread
 * survives (poison guard, consumers.h), counts, and goes on.
 */
#ifndef SNAPLOAD_TOUCH_H
#define SNAPLOAD_TOUCH_H

#include <stdatomic.h>
#include "snapload/snapload.h"
#include "migration/histogram.h"

typedef struct {
    uint8_t *host;
    uint64_t pages;        /* snapshot pages */
    uint64_t page_size;    /* snapshot page size */
    unsigned block;
} touch_target;

/* Shared by the touch threads (writers) and the main thread (reader). */
typedef struct {
    sl_snapshot *snap;
    touch_target *targets;
    unsigned ntargets;
    uint64_t total_pages;
    bool random;
    uint64_t limit;               /* workload: pages to touch in all, then stop (0: until stopped) */
    unsigned nthreads;
    GThread **threads;
    _Atomic bool stop;            /* set by main (release), read by threads (acquire) */
    _Atomic uint64_t touched;     /* relaxed statistics */
    _Atomic uint64_t mismatches;
    _Atomic uint64_t poisoned;    /* reads refused with SIGBUS (relaxed statistics) */
    sl_histogram latency;         /* first-access latency, ns */
    _Atomic uint64_t done_ns;     /* when the last thread finished its workload (max) */
    uint64_t first_wait_ns;       /* thread 0's first access; read after the join */
} touch_ctx;

/** touch_start: start @n threads touching the targets. */
void touch_start(touch_ctx *t, unsigned n);

/** touch_wait: join the threads once they have done their workload (limit). */
void touch_wait(touch_ctx *t);

/** touch_stop: ask the threads to stop and join them. */
void touch_stop(touch_ctx *t);

#endif /* SNAPLOAD_TOUCH_H */
