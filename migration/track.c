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
 * the next collect, never lost).  Debian 12's kernel headers predate these
 * interfaces, so their numbers are defined here when missing.
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

/* PAGEMAP_SCAN of [@start, @end) as @how asks, its runs appended to @runs; bytes or -errno. */
static int64_t scan(int pagemap, uint64_t start, uint64_t end, const struct pm_scan_arg *how,
                    GArray *runs)
{
    struct page_region vec[SCAN_VEC];
    uint64_t at = start;
    int64_t bytes = 0;

    while (at < end) {
        struct pm_scan_arg a = *how;
        long n;
        a.size = sizeof(a);
        a.start = at;
        a.end = end;
        a.vec = (uint64_t)(uintptr_t)vec;
        a.vec_len = SCAN_VEC;
        n = ioctl(pagemap, PAGEMAP_SCAN, &a);
        if (n < 0) {
            return -errno;
        }
        for (long i = 0; i < n; i++) {
            sl_written_run w = { vec[i].start, vec[i].end };
            g_array_append_val(runs, w);
            bytes += (int64_t)(w.end - w.start);
        }
        if (a.walk_end <= at) {
            return -EIO; /* no progress: never loop for ever */
        }
        at = a.walk_end;
    }
    return bytes;
}

int64_t sl_scan_written(int pagemap, uint64_t start, uint64_t end, bool rearm, GArray *runs)
{
    const struct pm_scan_arg how = {
        .flags = rearm ? PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC : 0,
        /* Written and populated (present or swapped).  Asking for
         * PAGE_IS_WRITTEN alone takes the kernel's fast path, which
         * counts an empty entry (pte_none: a page never placed, or
         * dropped by a reset) as written. */
        .category_mask = PAGE_IS_WRITTEN,
        .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        .return_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT,
    };

    return scan(pagemap, start, end, &how, runs);
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

    return scan(pagemap, start, end, &how, runs);
}

int64_t sl_tracker_collect(sl_tracker *t, bool rearm, GArray *runs)
{
    return sl_scan_written(t->pagemap, t->start, t->end, rearm, runs);
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
