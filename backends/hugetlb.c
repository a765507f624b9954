/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host hugepage discovery through libhugetlbfs (mounts, page sizes, unlinked
 * files) plus the free-page check done before a restore starts, so that a
 * missing reservation is a clear error up front, never a SIGBUS mid-restore.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <hugetlbfs.h>
#include "backend.h"

static char *size_name(uint64_t bytes)
{
    return bytes >= (1ull << 30) && bytes % (1ull << 30) == 0
               ? g_strdup_printf("%" G_GUINT64_FORMAT "G", bytes >> 30)
           : bytes >= (1ull << 20) && bytes % (1ull << 20) == 0
               ? g_strdup_printf("%" G_GUINT64_FORMAT "M", bytes >> 20)
               : g_strdup_printf("%" G_GUINT64_FORMAT "K", bytes >> 10);
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

/* A counter of the hugepage pool of @hugepage ("free_hugepages", ...); 0 if unreadable. */
static uint64_t pool_count(uint64_t hugepage, const char *what)
{
    g_autofree char *path = g_strdup_printf("/sys/kernel/mm/hugepages/hugepages-%"
                                            G_GUINT64_FORMAT "kB/%s", hugepage >> 10, what);
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return 0;
    }
    return g_ascii_strtoull(text, NULL, 10);
}

uint64_t sl_hugetlb_available(uint64_t hugepage)
{
    uint64_t nfree = pool_count(hugepage, "free_hugepages");
    uint64_t resv = pool_count(hugepage, "resv_hugepages");

    return nfree > resv ? nfree - resv : 0;
}

/* "needs N free 2M hugepages but M are free: reserve them with ..." */
static bool too_few(uint64_t hugepage, const char *name, uint64_t pages, uint64_t nfree,
                    uint64_t resv, GError **errp)
{
    uint64_t avail = nfree > resv ? nfree - resv : 0;
    uint64_t total = pool_count(hugepage, "nr_hugepages") + (pages - avail);
    g_autofree char *held = resv ? g_strdup_printf(" (%" G_GUINT64_FORMAT " free, %"
                                                   G_GUINT64_FORMAT " of them reserved by "
                                                   "existing mappings)", nfree, resv)
                                 : NULL;

    /* hugetlb-setup.sh N makes N pages available: free and not reserved. */
    g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED,
                "needs %" G_GUINT64_FORMAT " free %s hugepages but %" G_GUINT64_FORMAT
                " are free%s: reserve them with 'scripts/hugetlb-setup.sh %" G_GUINT64_FORMAT
                " %s' or 'echo %" G_GUINT64_FORMAT " > /sys/kernel/mm/hugepages/hugepages-%"
                G_GUINT64_FORMAT "kB/nr_hugepages'", pages, name, avail, held ? held : "",
                pages, name, total, hugepage >> 10);
    return false;
}

bool sl_hugetlb_check(uint64_t hugepage, uint64_t pages, GError **errp)
{
    g_autofree char *name = size_name(hugepage);

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
    /* Free pages that existing mappings have reserved are not ours to take. */
    if (sl_hugetlb_available(hugepage) < pages) {
        return too_few(hugepage, name, pages, pool_count(hugepage, "free_hugepages"),
                       pool_count(hugepage, "resv_hugepages"), errp);
    }
    return true;
}

uint64_t sl_hugetlb_resolve(uint64_t hugepage)
{
    return hugepage ? hugepage : sl_hugetlb_default_size();
}

bool sl_hugetlb_check_blocks(const uint64_t *lengths, const char *const *names, unsigned n,
                             uint64_t hugepage, GError **errp)
{
    uint64_t pages = 0;

    hugepage = sl_hugetlb_resolve(hugepage);
    for (unsigned i = 0; i < n; i++) {
        if (hugepage == 0 || lengths[i] % hugepage) {
            g_autofree char *name = names ? g_strdup_printf("'%s'", names[i])
                                          : g_strdup_printf("%u", i);
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block %s: length %"
                        G_GUINT64_FORMAT " is not a multiple of the hugepage size %"
                        G_GUINT64_FORMAT, name, lengths[i], hugepage);
            return false;
        }
        pages += lengths[i] / hugepage;
    }
    return sl_hugetlb_check(hugepage, pages, errp);
}

int sl_hugetlb_unlinked_fd(uint64_t hugepage)
{
    const char *mnt = hugetlbfs_find_path_for_size((long)hugepage);
    g_autofree char *tmpl = NULL;
    int fd;

    if (!mnt) {
        return -1;
    }
    /* Close-on-exec from the start: libhugetlbfs's own unlinked file is
     * made without it, and a fork+exec on another thread of a VMM or the
     * daemon before our fcntl() handed the child a file of hugepages
     * (found by review). */
    fd = open(mnt, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
        return fd;
    }
    tmpl = g_build_filename(mnt, "snapload-XXXXXX", NULL); /* a kernel without O_TMPFILE there */
    fd = g_mkstemp_full(tmpl, O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
        unlink(tmpl);
    }
    return fd;
}
