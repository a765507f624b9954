/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a reused memory file is known to hold (config.keep_memory with
 * sl_restore_keep_known()).  A VMM restarted from the same snapshot over
 * the RAM file its previous run left finds the snapshot there but for the
 * pages that run wrote.  When the caller can list those (the previous
 * run's write tracking), the loaders keep every other unit without reading
 * or hashing it, and check only the listed ones: a restart then costs the
 * written pages, not guest RAM.  Holes of a shmem file (pages discarded
 * since) are looked up here: where the snapshot has data they count as
 * changed whatever the list says (a hole reads as zeros, right only for a
 * zero page).  The bitmap is built by the caller's
 * thread before the restore starts, and only read afterwards.
 */
#include <errno.h>
#include <unistd.h>
#include "restore-int.h"

/* Marks the snapshot pages in the hole [@from, @to) (byte offsets in the
 * block) that hold data: a hole reads as zeros, as a zero page should. */
static void mark_hole(sl_region *reg, uint64_t from, uint64_t to)
{
    const uint64_t ps = reg->blk->page_size, npages = reg->blk->length / ps;

    for (uint64_t p = from / ps; p < MIN(npages, (to + ps - 1) / ps); p++) {
        if (sl_bit_test(reg->blk->bitmap, p)) {
            sl_bit_set(reg->changed, p);
        }
    }
}

/* Every hole of @reg's part of its file counts as changed: 0 or -errno. */
static int mark_holes(sl_region *reg)
{
    const off_t start = (off_t)reg->mem.offset, end = start + (off_t)reg->mem.length;

    for (off_t at = start; at < end;) {
        off_t hole = lseek(reg->mem.fd, at, SEEK_HOLE), data;
        if (hole < 0) {
            return errno == ENXIO ? 0 : -errno;
        }
        if (hole >= end) {
            return 0;
        }
        data = lseek(reg->mem.fd, hole, SEEK_DATA);
        if (data < 0 && errno != ENXIO) {
            return -errno;
        }
        data = data < 0 || data > end ? end : data;
        mark_hole(reg, (uint64_t)(hole - start), (uint64_t)(data - start));
        at = data;
    }
    return 0;
}

bool sl_restore_keep_known(sl_restore *r, const char *block_name, const sl_page_run *changed,
                           size_t n, GError **errp)
{
    sl_region *reg = sl_region_of_block(r, block_name);
    const char *why = NULL;
    uint64_t npages;
    int ret;

    if (!reg) {
        why = "block not attached";
    } else if (!r->cfg.keep_memory || reg->mem.fd < 0) {
        why = "needs config.keep_memory, over a shared memory file";
    } else if (r->started) {
        why = "the restore has started";
    }
    for (size_t i = 0; !why && i < n; i++) {
        if (changed[i].first > reg->blk->length / reg->blk->page_size ||
            changed[i].n > reg->blk->length / reg->blk->page_size - changed[i].first) {
            why = "a changed run lies outside the block";
        }
    }
    if (why) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "keep_known, block '%s': %s", block_name,
                    why);
        return false;
    }
    npages = reg->blk->length / reg->blk->page_size;
    g_free(reg->changed);
    reg->changed = g_malloc0(sl_bitmap_bytes(npages));
    for (size_t i = 0; i < n; i++) {
        for (uint64_t p = changed[i].first; p < changed[i].first + changed[i].n; p++) {
            sl_bit_set(reg->changed, p);
        }
    }
    ret = mark_holes(reg);
    if (ret < 0) {
        g_clear_pointer(&reg->changed, g_free);
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "keep_known, block '%s': looking for holes "
                    "in its file: %s", block_name, g_strerror(-ret));
        return false;
    }
    return true;
}

bool sl_region_known_unit(const sl_region *reg, uint64_t u)
{
    if (!reg->changed) {
        return false;
    }
    for (uint64_t p = u * reg->ratio; p < (u + 1) * reg->ratio; p++) {
        if (sl_bit_test(reg->changed, p)) {
            return false;
        }
    }
    return true;
}
