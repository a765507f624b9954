/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Written-page tracking with asynchronous userfaultfd write-protection and
 * PAGEMAP_SCAN (see track.h for what it is for).
 *
 * Start: a userfaultfd with WP_ASYNC (writes lift the protection by
 * themselves, no message is ever queued), WP_UNPOPULATED (a page not yet
 * populated counts as protected, so its first write is seen too) and, for
 * shmem and hugetlbfs, WP_HUGETLBFS_SHMEM; the range registered in WP mode
 * and protected whole with UFFDIO_WRITEPROTECT.  Collect: PAGEMAP_SCAN of
 * /proc/self/pagemap over the range for PAGE_IS_WRITTEN, with
 * PM_SCAN_WP_MATCHING to protect the pages it reports again in the same
 * walk (a write racing the walk is either reported now or left written for
 * the next collect, never lost).  A hugetlbfs page larger than 2 MiB,
 * which that walk cannot protect before the kernel's fix, is protected
 * right after it with UFFDIO_WRITEPROTECT (protect_first_run()).  Debian
 * 12's kernel headers predate these interfaces, so their numbers are
 * defined here when missing.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "snapload/snapload.h"
#include "track.h"
#include "uffd.h"

#ifndef PAGEMAP_SCAN
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
struct page_region {
    __u64 start;
    __u64 end;
    __u64 categories;
};
struct pm_scan_arg {
    __u64 size;
    __u64 flags;
    __u64 start;
    __u64 end;
    __u64 walk_end;
    __u64 vec;
    __u64 vec_len;
    __u64 max_pages;
    __u64 category_inverted;
    __u64 category_mask;
    __u64 category_anyof_mask;
    __u64 return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

#define SCAN_VEC 256 /* runs returned per PAGEMAP_SCAN call */

struct sl_tracker {
    int uffd;
    int pagemap;         /* /proc/self/pagemap */
    uint64_t start, end;
    bool rearm_after;    /* protect again after the walk, not in it */
};

static bool protect_all(const sl_tracker *t, GError **errp)
{
    int ret = sl_uffd_writeprotect(t->uffd, t->start, t->end - t->start, true);

    if (ret < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "UFFDIO_WRITEPROTECT of the tracked range: %s",
                    g_strerror(-ret));
        return false;
    }
    return true;
}

sl_tracker *sl_tracker_new(void *addr, uint64_t len, GError **errp)
{
    uint64_t want = SL_UFFD_TRACK_FEATURES;
    sl_tracker *t = g_new0(sl_tracker, 1);

    t->start = (uint64_t)(uintptr_t)addr;
    t->end = t->start + len;
    t->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    t->uffd = sl_uffd_open(want, 0, NULL, errp);
    if (t->pagemap < 0 && t->uffd >= 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED, "/proc/self/pagemap: %s",
                    g_strerror(errno));
    }
    if (t->uffd < 0 || t->pagemap < 0 ||
        !sl_uffd_register(t->uffd, addr, len, UFFDIO_REGISTER_MODE_WP,
                          SL_IOCTL(_UFFDIO_WRITEPROTECT), NULL, errp) ||
        !protect_all(t, errp)) {
        g_prefix_error(errp, "write tracking (needs userfaultfd WP_ASYNC, kernel 6.7+): ");
        sl_tracker_free(t);
        return NULL;
    }
    return t;
}

/* Appends @n runs of @vec to @runs; their bytes. */
static int64_t append_runs(const struct page_region *vec, long n, GArray *runs)
{
    int64_t bytes = 0;

    for (long i = 0; i < n; i++) {
        sl_written_run w = { vec[i].start, vec[i].end };
        g_array_append_val(runs, w);
        bytes += (int64_t)(w.end - w.start);
    }
    return bytes;
}

/* One PAGEMAP_SCAN of [@at, @end) as @how asks, into @vec (@len runs at
 * most); the runs, or -errno; where the walk ended in *@walk_end. */
static long scan_once(int pagemap, uint64_t at, uint64_t end, const struct pm_scan_arg *how,
                      struct page_region *vec, uint64_t len, uint64_t *walk_end)
{
    struct pm_scan_arg a = *how;
    long n;

    a.size = sizeof(a);
    a.start = at;
    a.end = end;
    a.vec = (uint64_t)(uintptr_t)vec;
    a.vec_len = len;
    n = ioctl(pagemap, PAGEMAP_SCAN, &a);
    *walk_end = a.walk_end;
    return n < 0 ? -errno : n;
}

/* The collect's PAGEMAP_SCAN arguments, protecting again with @rearm. */
static struct pm_scan_arg written_scan(bool rearm)
{
    return (struct pm_scan_arg){
        .flags = rearm ? PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC : 0,
        /* Written and populated (present or swapped).  Asking for
         * PAGE_IS_WRITTEN alone takes the kernel's fast path, which
         * counts an empty entry (pte_none: a page never placed, or
         * dropped by a reset) as written. */
        .category_mask = PAGE_IS_WRITTEN,
        .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        .return_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT,
    };
}

/*
 * The first run of written pages in [@at, @end), found by a walk that does
 * not protect, then protected with UFFDIO_WRITEPROTECT on @uffd (whose
 * registration covers it), and appended to @runs; its start in *@first,
 * its end in *@next.  Its bytes, 0 if there is none, or -errno.  For a
 * hugetlbfs page larger than the kernel's PMD, which PM_SCAN_WP_MATCHING
 * leaves out of its results without protecting it (Linux 6.7 up to the
 * fix of pagemap_scan_hugetlb_entry() that compares with huge_page_size(),
 * not HPAGE_SIZE; found by review, no host here having 1 GiB pages).  A
 * write between the walk and the protection is lost to the next collect:
 * callers that re-arm have paused their writers (a reset).
 */
static int64_t protect_first_run(int pagemap, int uffd, uint64_t at, uint64_t end, GArray *runs,
                                 uint64_t *first, uint64_t *next)
{
    const struct pm_scan_arg report = written_scan(false);
    struct page_region one;
    uint64_t walk_end;
    long n = scan_once(pagemap, at, end, &report, &one, 1, &walk_end);
    int ret;

    if (n <= 0) {
        *next = end;
        return n;
    }
    ret = uffd < 0 ? -EBADF : sl_uffd_writeprotect(uffd, one.start, one.end - one.start, true);
    if (ret < 0) {
        return ret;
    }
    *first = one.start;
    *next = one.end;
    return append_runs(&one, 1, runs);
}

/* PAGEMAP_SCAN of [@start, @end) as @how asks, its runs appended to @runs;
 * bytes or -errno.  @uffd: see protect_first_run(). */
static int64_t scan(int pagemap, int uffd, uint64_t start, uint64_t end,
                    const struct pm_scan_arg *how, GArray *runs)
{
    struct page_region vec[SCAN_VEC];
    uint64_t at = start, walk_end;
    int64_t bytes = 0, more;

    while (at < end) {
        long n = scan_once(pagemap, at, end, how, vec, SCAN_VEC, &walk_end);
        if (n < 0) {
            return n;
        }
        bytes += append_runs(vec, n, runs);
        if (walk_end <= at && n == 0 && (how->flags & PM_SCAN_WP_MATCHING)) {
            /* A written page the walk could not protect starts at @at. */
            uint64_t first = 0;
            more = protect_first_run(pagemap, uffd, at, end, runs, &first, &walk_end);
            if (more <= 0 || first != at) {
                return more < 0 ? more : -EIO; /* no progress: never loop for ever */
            }
            bytes += more;
        } else if (walk_end <= at) {
            return -EIO; /* no progress: never loop for ever */
        }
        at = walk_end;
    }
    return bytes;
}

int64_t sl_scan_written(int pagemap, int uffd, uint64_t start, uint64_t end, bool rearm,
                        GArray *runs)
{
    const struct pm_scan_arg how = written_scan(rearm);

    return scan(pagemap, uffd, start, end, &how, runs);
}

int64_t sl_scan_written_rearm_after(int pagemap, int uffd, uint64_t start, uint64_t end,
                                    GArray *runs)
{
    int64_t bytes = 0, more;
    uint64_t first;

    for (uint64_t at = start; at < end; bytes += more) {
        more = protect_first_run(pagemap, uffd, at, end, runs, &first, &at);
        if (more < 0) {
            return more;
        }
    }
    return bytes;
}

int64_t sl_scan_unmapped(int pagemap, uint64_t start, uint64_t end, bool swapped, GArray *runs)
{
    const struct pm_scan_arg how = {
        /* Not present; swapped (a swap entry or a marker, uffd-wp's
         * included) or not, as @swapped says. */
        .category_inverted = PAGE_IS_PRESENT | (swapped ? 0 : PAGE_IS_SWAPPED),
        .category_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        .return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
    };

    return scan(pagemap, -1, start, end, &how, runs);
}

int64_t sl_tracker_collect(sl_tracker *t, bool rearm, GArray *runs)
{
    if (rearm && t->rearm_after) {
        return sl_scan_written_rearm_after(t->pagemap, t->uffd, t->start, t->end, runs);
    }
    return sl_scan_written(t->pagemap, t->uffd, t->start, t->end, rearm, runs);
}

void sl_tracker_set_rearm_after(sl_tracker *t, bool after)
{
    t->rearm_after = after;
}

void sl_tracker_free(sl_tracker *t)
{
    if (!t) {
        return;
    }
    if (t->uffd >= 0) {
        sl_uffd_unregister(t->uffd, (void *)(uintptr_t)t->start, t->end - t->start);
        close(t->uffd);
    }
    if (t->pagemap >= 0) {
        close(t->pagemap);
    }
    g_free(t);
}
