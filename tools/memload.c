/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fresh memory for the blocks of a snapshot and its check against the
 * snapshot (memload.h).
 */
#include <string.h>
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

uint64_t cli_verify_blocks(sl_snapshot *s, const sl_mem *mems)
{
    uint64_t bad = 0, total = 0, done = 0;
    g_autofree uint8_t *buf = NULL;
    sl_block_info bi;

    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        total += bi.length;
    }
    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        uint64_t per = MAX(1, (8u << 20) / bi.page_size);
        buf = g_realloc(buf, per * bi.page_size);
        for (uint64_t i = 0; i < bi.pages; i += per) {
            uint64_t n = MIN(per, bi.pages - i);
            if (sl_snapshot_read_pages(s, b, i, n, buf, false) < 0) {
                bad += n;
                continue;
            }
            for (uint64_t k = 0; k < n; k++) {
                bad += memcmp(buf + k * bi.page_size,
                              mems[b].host + (i + k) * bi.page_size, bi.page_size) != 0;
            }
            done += n * bi.page_size;
            cli_progress("verify", done, total);
        }
    }
    return bad;
}
