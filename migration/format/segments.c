/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A block's metadata proven segment by segment.  Every segment of 8192
 * pages has a digest, XXH3(its bitmap words ‖ its checksum entries); the
 * digest table is small (8 bytes per 32 MiB of 4 KiB pages) and is itself
 * checked against the block table at open.  A full open proves every
 * segment at once.  A snapshot opened with SL_OPEN_LAZY_CHECKSUMS reads the
 * checksum array on first use instead, one segment at a time, and proves
 * that segment (its checksum entries and the bitmap words read at open)
 * before anyone may act on it: opening then costs the same for 1 GiB as for
 * 64 GiB of guest RAM, a fault reads 64 KiB of metadata at most, and no
 * bitmap bit can make a page be placed as zero before it is proven.
 *
 * Each segment has one state word: ABSENT -> LOADING -> LOADED, or BAD.
 * The thread whose CAS moved it to LOADING preads the segment into the (so
 * far untouched) array, proves it and publishes LOADED (or BAD: a segment
 * that does not match its digest stays refused) with a release store;
 * readers load the state with acquire, so a LOADED segment's entries are
 * complete for them.  Others wait on the word with a futex (no polling); a
 * failed read puts the segment back to ABSENT, so the next user tries again
 * and sees the error itself.
 *
 * A child's segment (chain.c) is proven with its own bitmap words, then
 * its parent's segment is proven and merged in, before LOADED.
 */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "migration/format/format.h"

enum { SEG_ABSENT = 0, SEG_LOADING = 1, SEG_LOADED = 2, SEG_BAD = 3 };

uint64_t sl_seg_digest(const uint64_t *bitmap_le, const uint64_t *csums_le, uint64_t npages,
                       uint64_t seg)
{
    uint64_t first = seg * SL_CSUM_SEG, n = MIN(SL_CSUM_SEG, npages - first);

    /* SL_CSUM_SEG is a multiple of 64: a segment owns whole bitmap words. */
    return sl_hash2(bitmap_le + first / 64, sl_bitmap_bytes(n), csums_le + first, n * 8);
}

uint64_t sl_seg_stray_entry(const uint64_t *bitmap, const uint64_t *csums, uint64_t npages,
                            uint64_t seg)
{
    uint64_t first = seg * SL_CSUM_SEG, end = MIN(first + SL_CSUM_SEG, npages);

    for (uint64_t p = first; p < end; p++) {
        if (csums[p] && !(GUINT64_FROM_LE(bitmap[p / 64]) >> (p % 64) & 1)) {
            return p;
        }
    }
    return UINT64_MAX;
}

static void seg_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/*
 * Reads segment @seg of @b into place and proves it; 0, -EBADMSG or the
 * read's -errno.  Lazy opens exist on little-endian hosts only, so the
 * bitmap and the entries are in memory as they are stored.
 */
static int seg_read(const sl_snapshot *s, const sl_block *b, uint64_t seg)
{
    uint64_t first = seg * SL_CSUM_SEG, n = MIN(SL_CSUM_SEG, b->npages - first);
    int ret = sl_pread_full(s->csum_fd, b->csums + first, n * 8, b->csum_offset + first * 8);

    if (ret == 0 &&
        (sl_seg_digest(sl_own_bitmap(b), b->csums, b->npages, seg) != b->digests[seg] ||
         sl_seg_stray_entry(sl_own_bitmap(b), b->csums, b->npages, seg) != UINT64_MAX)) {
        ret = -EBADMSG;
    }
    if (ret == 0 && s->parent) { /* a child: the parent's entries where it stores nothing */
        ret = sl_chain_seg_merge(s, b, first, n);
    }
    return ret;
}

/* Makes segment @seg of @b LOADED (reading it, or waiting for who does). */
static int seg_get(const sl_snapshot *s, const sl_block *b, uint64_t seg)
{
    _Atomic uint32_t *w = &b->seg_state[seg];

    for (;;) {
        /* Acquire: pairs with the release store that published LOADED. */
        uint32_t st = atomic_load_explicit(w, memory_order_acquire);
        if (st == SEG_LOADED) {
            return 0;
        }
        if (st == SEG_BAD) {
            return -EBADMSG;
        }
        /* Acquire: pairs with the release store of a reader before us that
         * gave the segment back (ABSENT); the exchange alone picks the reader. */
        if (st == SEG_ABSENT &&
            atomic_compare_exchange_strong_explicit(w, &st, SEG_LOADING, memory_order_acquire,
                                                    memory_order_acquire)) {
            int ret = seg_read(s, b, seg);
            uint32_t next = ret == 0 ? SEG_LOADED : ret == -EBADMSG ? SEG_BAD : SEG_ABSENT;
            /* Release: the entries are written before LOADED is seen. */
            atomic_store_explicit(w, next, memory_order_release);
            seg_wake(w);
            return ret;
        }
        if (st == SEG_LOADING) {
            syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, SEG_LOADING, NULL, NULL, 0);
        }
    }
}

int sl_csums_get(const sl_snapshot *s, const sl_block *b, uint64_t first, uint64_t n)
{
    if (!b->seg_state || n == 0) {
        return 0; /* proven whole at open */
    }
    for (uint64_t seg = first / SL_CSUM_SEG; seg <= (first + n - 1) / SL_CSUM_SEG; seg++) {
        int ret = seg_get(s, b, seg);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * Memory for a block's checksum array (8 bytes per page: 8 MiB for 4 GiB),
 * in hugepages where it spans them (large.h): reading it in takes a few
 * hugepage faults instead of one fault and one page clear per 4 KiB.
 */
bool sl_csums_alloc(sl_block *b)
{
    b->csums = sl_large_map(&b->csum_mem, (size_t)b->npages * 8);
    return b->csums != NULL;
}

void sl_csums_free(sl_block *b)
{
    sl_large_unmap(&b->csum_mem);
    b->csums = NULL;
}

/* The page of @b's segment @seg (refused: read, SEG_BAD seen) that has a
 * checksum entry but no bitmap bit, if the segment matches its digest
 * (then that, not a changed segment, is why it was refused); else
 * UINT64_MAX. */
static uint64_t refused_for_stray(const sl_block *b, uint64_t seg)
{
    if (sl_seg_digest(sl_own_bitmap(b), b->csums, b->npages, seg) != b->digests[seg]) {
        return UINT64_MAX;
    }
    return sl_seg_stray_entry(sl_own_bitmap(b), b->csums, b->npages, seg);
}

char *sl_seg_culprit(const sl_snapshot *s, const sl_block *b, uint64_t page, uint64_t *stray)
{
    const unsigned i = (unsigned)(b - s->blocks);
    const uint64_t seg = page / SL_CSUM_SEG;
    const sl_snapshot *who = NULL;

    for (const sl_snapshot *l = s; l; l = l->parent) {
        const sl_block *lb = &l->blocks[i];
        /* Acquire: pairs with the release store of SEG_BAD in seg_get(),
         * after the segment's entries were read into place. */
        if (lb->seg_state &&
            atomic_load_explicit(&lb->seg_state[seg], memory_order_acquire) == SEG_BAD) {
            who = l;
        }
    }
    *stray = who ? refused_for_stray(&who->blocks[i], seg) : UINT64_MAX;
    who = who ? who : s;
    return who->index_path ? g_strdup_printf("%s or its index %s", who->path, who->index_path)
                           : g_strdup(who->path);
}
