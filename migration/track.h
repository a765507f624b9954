/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Which pages of a memory range were written since a moment (track.c):
 * userfaultfd asynchronous write-protection (UFFD_FEATURE_WP_ASYNC, kernel
 * 6.7+) marks every page write-protected at the start; the kernel lifts
 * the protection of a page on its first write, without any message or
 * fault handler, and the PAGEMAP_SCAN ioctl lists the pages so written and
 * can protect them again in the same call.  The first building block of
 * snapshots in a loop (issue 14): incremental snapshots and resets need
 * the written pages, not all of guest RAM.
 *
 * A tracker owns its own userfaultfd, registered in WP mode only, so the
 * range must not be registered with another one (for a restore: after it
 * has completed, which unregisters every range).  One thread uses a
 * tracker at a time.
 */
#ifndef SNAPLOAD_TRACK_H
#define SNAPLOAD_TRACK_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

typedef struct sl_tracker sl_tracker;

/** A run of written pages: [start, end) addresses. */
typedef struct {
    uint64_t start, end;
} sl_written_run;

/**
 * sl_tracker_new: start tracking writes to [@addr, +@len) (page aligned;
 * anonymous, shmem or hugetlbfs memory of this process).  Every page counts
 * as not written from now on.  NULL with @errp (SL_ERROR_UNSUPPORTED
 * naming what the kernel lacks) on failure.
 */
sl_tracker *sl_tracker_new(void *addr, uint64_t len, GError **errp);

/**
 * sl_tracker_collect: the runs of pages written since the tracker started
 * or since the last collect with @rearm (which protects them again, so the
 * next collect lists only later writes), appended to @runs (sl_written_run).
 * Granularity: the memory's page (4 KiB, or the hugetlbfs page).  Returns
 * the number of bytes written, or -errno.
 */
int64_t sl_tracker_collect(sl_tracker *t, bool rearm, GArray *runs);

/**
 * sl_tracker_set_rearm_after: with @after, a collect that re-arms protects
 * each run after its walk (sl_scan_written_rearm_after()) instead of in
 * it; for tests of that path on any memory.
 */
void sl_tracker_set_rearm_after(sl_tracker *t, bool after);

/**
 * sl_scan_written: the collect of a range registered in asynchronous WP
 * mode on any userfaultfd of this process (a tracker's, or a restore's
 * with track_writes): runs of pages written in [@start, @end) since they
 * were last protected, appended to @runs; @rearm protects them again in
 * the same walk (a page the walk cannot protect, through @uffd, the
 * userfaultfd the range is registered on, -1 if none, right after it).
 * @pagemap is an open /proc/self/pagemap.  Returns the bytes written, or
 * -errno.
 */
int64_t sl_scan_written(int pagemap, int uffd, uint64_t start, uint64_t end, bool rearm,
                        GArray *runs);

/**
 * sl_scan_written_rearm_after: sl_scan_written() with @rearm, each run
 * protected again with UFFDIO_WRITEPROTECT on @uffd after the walk found
 * it, as sl_scan_written() does for a page its walk cannot protect (a
 * hugetlbfs page larger than 2 MiB on kernels before the fix).  A write
 * between the two is not seen by the next collect: pause writers first.
 */
int64_t sl_scan_written_rearm_after(int pagemap, int uffd, uint64_t start, uint64_t end,
                                    GArray *runs);

/**
 * sl_scan_unmapped: runs of pages of [@start, @end) whose entry in this
 * process's page tables is not present, appended to @runs
 * (sl_written_run).  Without @swapped, empty entries: after a completed
 * restore every page holding data is mapped, so an empty one was
 * discarded (MADV_DONTNEED, a balloon) or unmapped without a trace of its
 * writes.  With @swapped, swap entries: swapped out, or a uffd-wp marker,
 * which a discard of a write-protected page of shared memory
 * (MADV_REMOVE, a punched hole) leaves as well.  Bytes, or -errno.
 */
int64_t sl_scan_unmapped(int pagemap, uint64_t start, uint64_t end, bool swapped, GArray *runs);

/** sl_tracker_free: stop tracking (the range is unregistered); NULL is ok. */
void sl_tracker_free(sl_tracker *t);

#endif /* SNAPLOAD_TRACK_H */
