/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fresh memory for the blocks of a snapshot and its check against the
 * snapshot (memload.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "memload.h"

/* hugetlbfs: enough pages for all blocks together, before any is mapped. */
static bool check_hugepages(sl_snapshot *s, sl_backend_kind kind, uint64_t hugepage,
                            GError **errp)
{
    unsigned n = sl_snapshot_n_blocks(s);
    g_autofree uint64_t *lengths = g_new0(uint64_t, n ? n : 1);
    g_autofree const char **names = g_new0(const char *, n ? n : 1);
    sl_block_info bi;

    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        lengths[b] = bi.length;
        names[b] = bi.name;
    }
    return kind != SL_BACKEND_HUGETLBFS ||
           sl_hugetlb_check_blocks(lengths, names, n, hugepage, errp);
}

bool cli_map_blocks(sl_snapshot *s, sl_backend_kind kind, uint64_t hugepage, sl_mem *mems,
                    GError **errp)
{
    sl_block_info bi;

    if (!check_hugepages(s, kind, hugepage, errp)) {
        return false;
    }
    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        if (!sl_mem_map(&mems[b], kind, bi.length, hugepage, errp)) {
            g_prefix_error(errp, "block '%s': ", bi.name);
            return false;
        }
    }
    return true;
}

void cli_release_blocks(sl_mem *mems, unsigned n)
{
    for (unsigned b = 0; b < n; b++) {
        sl_mem_release(&mems[b]);
    }
}

/*
 * Anonymous memory: marks in @zero the pages of [@p, +@n pages of @ps)
 * with no page and no swap entry behind any of their 4 KiB (one read of
 * /proc/self/pagemap; bit 63 present, bit 62 swapped).
 */
static void mark_anon_unbacked(int pagemap_fd, const uint8_t *p, uint64_t n, uint64_t ps,
                               bool *zero)
{
    uint64_t per = ps / 4096, len = n * per * 8;
    g_autofree uint64_t *e = g_malloc(len);

    if (pread(pagemap_fd, e, len, (off_t)((uintptr_t)p / 4096 * 8)) != (ssize_t)len) {
        return;
    }
    for (uint64_t k = 0; k < n; k++) {
        zero[k] = true;
        for (uint64_t j = 0; j < per; j++) {
            zero[k] &= !(e[k * per + j] & (3ull << 62));
        }
    }
}

/* A memory file: marks in @zero the pages of [@off, +@n pages of @ps) that lie in holes. */
static void mark_file_holes(int fd, uint64_t off, uint64_t n, uint64_t ps, bool *zero)
{
    uint64_t end = off + n * ps, at = off;

    while (at < end) {
        off_t d = lseek(fd, (off_t)at, SEEK_DATA);
        uint64_t data;
        if (d < 0 && errno != ENXIO) {
            return; /* no answer: the rest is read */
        }
        data = d < 0 ? end : MIN((uint64_t)d, end); /* ENXIO: no data after @at */
        for (uint64_t k = (at - off + ps - 1) / ps; k < (data - off) / ps; k++) {
            zero[k] = true;
        }
        d = data < end ? lseek(fd, (off_t)data, SEEK_HOLE) : -1;
        if (d < 0 || (uint64_t)d <= data) {
            return;
        }
        at = (uint64_t)d;
    }
}

/*
 * Pages [@i, +@n) of block memory @m (@ps bytes each) known to read as
 * zeros without being touched, as @zero: no page behind them at all.
 * Reading such a page would only allocate one (always for a memory file;
 * also for anonymous memory on a host without a shared zero page), so the
 * check compares it with zeros instead: a 64 GiB sparse guest is then
 * verified in the memory of its present pages.  Unsure pages stay false
 * and are read.
 */
static void mark_known_zero(const sl_mem *m, int pagemap_fd, uint64_t i, uint64_t n,
                            uint64_t ps, bool *zero)
{
    memset(zero, 0, n * sizeof(*zero));
    if (m->fd >= 0) {
        mark_file_holes(m->fd, m->offset + i * ps, n, ps, zero);
    } else if (pagemap_fd >= 0 && ps % 4096 == 0) {
        mark_anon_unbacked(pagemap_fd, m->host + i * ps, n, ps, zero);
    }
}

/* Pages [@i, +@n) of @m against @buf (the snapshot's bytes): how many differ. */
static uint64_t compare_pages(const sl_mem *m, int pagemap_fd, uint64_t i, uint64_t n,
                              uint64_t ps, const uint8_t *buf, const uint8_t *zeros, bool *zero)
{
    uint64_t bad = 0;

    mark_known_zero(m, pagemap_fd, i, n, ps, zero);
    for (uint64_t k = 0; k < n; k++) {
        bad += memcmp(buf + k * ps, zero[k] ? zeros : m->host + (i + k) * ps, ps) != 0;
    }
    return bad;
}

int64_t cli_verify_blocks(sl_snapshot *s, const sl_mem *mems, GError **errp)
{
    uint64_t bad = 0, total = 0, done = 0;
    g_autofree uint8_t *buf = NULL, *zeros = NULL;
    g_autofree bool *zero = NULL;
    int pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC); /* -1: read every page */
    sl_block_info bi;

    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        total += bi.length;
    }
    for (unsigned b = 0; bad != UINT64_MAX && sl_snapshot_block(s, b, &bi); b++) {
        uint64_t per = MAX(1, (8u << 20) / bi.page_size);
        buf = g_realloc(buf, per * bi.page_size);
        zeros = g_realloc(zeros, bi.page_size);
        memset(zeros, 0, bi.page_size);
        zero = g_realloc(zero, per * sizeof(*zero));
        for (uint64_t i = 0; i < bi.pages; i += per) {
            uint64_t n = MIN(per, bi.pages - i);
            int ret = sl_snapshot_read_pages(s, b, i, n, buf, sl_snapshot_has_checksums(s));
            if (ret < 0) {
                g_autofree char *why = cli_read_failure(s, b, i, n, ret);
                g_set_error(errp, SL_ERROR, SL_ERROR_IO, "verify: the snapshot could not be "
                            "read again: %s (it changed after the restore, or the restore "
                            "did not check checksums)", why);
                bad = UINT64_MAX;
                break;
            }
            bad += compare_pages(&mems[b], pagemap_fd, i, n, bi.page_size, buf, zeros, zero);
            done += n * bi.page_size;
            cli_progress("verify", done, total);
        }
    }
    if (pagemap_fd >= 0) {
        close(pagemap_fd);
    }
    cli_progress(NULL, 0, 0);
    return bad == UINT64_MAX ? -1 : (int64_t)bad;
}
