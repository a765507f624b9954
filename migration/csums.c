/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A block's per-page checksum array read on first use, one segment at a
 * time, for snapshots opened with SL_OPEN_LAZY_CHECKSUMS: opening then
 * costs the same for 1 GiB as for 64 GiB of guest RAM (the array is 8 bytes
 * per 4 KiB page), and a fault reads 64 KiB of it at most.
 *
 * Each segment has one state word: ABSENT -> LOADING -> LOADED.  The thread
 * whose CAS moved it to LOADING preads the segment into the (so far
 * untouched) array, converts it to host order and publishes LOADED with a
 * release store; readers load the state with acquire, so a LOADED segment's
 * entries are complete for them.  Others wait on the word with a futex (no
 * polling); a failed read puts the segment back to ABSENT, so the next user
 * tries again and sees the error itself.
 *
 * What the up-front check would have done (the block's meta_csum over its
 * bitmap and whole array) is sl_csums_check_meta(), which a restore runs in
 * a thread of its own: until it has run, a corrupt entry can only make its
 * page fail its check (it is refused), never make a wrong page pass.
 */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "format.h"

enum { SEG_ABSENT = 0, SEG_LOADING = 1, SEG_LOADED = 2 };

static void seg_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Reads segment @seg of @b into place; 0 or -errno. */
static int seg_read(const sl_snapshot *s, const sl_block *b, uint64_t seg)
{
    uint64_t first = seg * SL_CSUM_SEG, n = MIN(SL_CSUM_SEG, b->npages - first);
    int ret = sl_pread_full(s->fd, b->csums + first, n * 8, b->csum_offset + first * 8);

    for (uint64_t i = 0; ret == 0 && i < n; i++) {
        b->csums[first + i] = GUINT64_FROM_LE(b->csums[first + i]);
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
        if (st == SEG_ABSENT &&
            atomic_compare_exchange_strong_explicit(w, &st, SEG_LOADING, memory_order_acquire,
                                                    memory_order_acquire)) {
            int ret = seg_read(s, b, seg);
            /* Release: the entries are written before LOADED is seen. */
            atomic_store_explicit(w, ret == 0 ? SEG_LOADED : SEG_ABSENT, memory_order_release);
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
        return 0; /* read whole at open */
    }
    for (uint64_t seg = first / SL_CSUM_SEG; seg <= (first + n - 1) / SL_CSUM_SEG; seg++) {
        int ret = seg_get(s, b, seg);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

bool sl_csums_check_meta(sl_snapshot *s, GError **errp)
{
    for (unsigned i = 0; i < s->nblocks; i++) {
        const sl_block *b = &s->blocks[i];
        int ret = b->seg_state ? sl_csums_get(s, b, 0, b->npages) : 0;

        if (ret < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block %u ('%s'): reading its checksum "
                        "array: %s", i, b->name, g_strerror(-ret));
            return false;
        }
        /* Lazy arrays exist on little-endian hosts only: host order is the file's. */
        if (b->seg_state && sl_hash2(b->bitmap, sl_bitmap_bytes(b->npages), b->csums,
                                     b->npages * 8) != b->meta_csum) {
            g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "block %u ('%s'): meta_csum does "
                        "not match its bitmap and checksum array (metadata corrupted)", i,
                        b->name);
            return false;
        }
    }
    return true;
}
