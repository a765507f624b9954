/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host hugepage discovery through libhugetlbfs (mounts, page sizes, unlinked
 * files) plus the free-page check done before a restore starts, so that a
 * missing reservation is a clear error up front, never a SIGBUS mid-restore.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <hugetlbfs.h>
#include "backend.h"

static char *size_name(uint64_t bytes)
{
    return bytes >= (1ull << 30) && bytes % (1ull << 30) == 0
               ? g_strdup_printf("%" G_GUINT64_FORMAT "G", bytes >> 30)
               : g_strdup_printf("%" G_GUINT64_FORMAT "M", bytes >> 20);
}

uint64_t sl_hugetlb_default_size(void)
{
    long s = gethugepagesize();
    return s > 0 ? (uint64_t)s : 0;
}

static bool size_supported(uint64_t hugepage)
{
    long sizes[16];
    int n = gethugepagesizes(sizes, 16);

    for (int i = 0; i < n; i++) {
        if ((uint64_t)sizes[i] == hugepage) {
            return true;
        }
    }
    return false;
}

static uint64_t free_pages(uint64_t hugepage)
{
    g_autofree char *path = g_strdup_printf(
        "/sys/kernel/mm/hugepages/hugepages-%" G_GUINT64_FORMAT "kB/free_hugepages",
        hugepage >> 10);
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return 0;
    }
    return g_ascii_strtoull(text, NULL, 10);
}

bool sl_hugetlb_check(uint64_t hugepage, uint64_t pages, GError **errp)
{
    g_autofree char *name = size_name(hugepage);
    uint64_t nfree;

    if (!size_supported(hugepage)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED,
                    "this host offers no %s hugepages", name);
        return false;
    }
    if (!hugetlbfs_find_path_for_size((long)hugepage)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED,
                    "no hugetlbfs mount for %s pages: run 'scripts/hugetlb-setup.sh %"
                    G_GUINT64_FORMAT " %s' (it mounts one and reserves the pages)",
                    name, pages, name);
        return false;
    }
    nfree = free_pages(hugepage);
    if (nfree < pages) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED,
                    "needs %" G_GUINT64_FORMAT " free %s hugepages but %" G_GUINT64_FORMAT
                    " are free: reserve them with 'scripts/hugetlb-setup.sh %" G_GUINT64_FORMAT
                    " %s'", pages, name, nfree, pages, name);
        return false;
    }
    return true;
}

int sl_hugetlb_unlinked_fd(uint64_t hugepage)
{
    int fd = hugetlbfs_unlinked_fd_for_size((long)hugepage);

    if (fd >= 0) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    return fd;
}
