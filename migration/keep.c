/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a reused memory file is known to hold (config.keep_memory with
 * sl_restore_keep_known()).  A VMM restarted from the same snapshot over
 * the RAM file its previous run left finds the snapshot there but for the
 * pages that run wrote.  When the caller can list those (the previous
 * run's write tracking), the loaders keep every other unit without reading
 * or hashing it, and check only the listed ones: a restart then costs the
 * written pages, not guest RAM.  Holes of a shmem file (pages discarded
 * since) are looked up here (mincore): where the snapshot has data they
 * count as changed whatever the list says (a hole reads as zeros, right
 * only for a zero page).  The bitmap is built by the caller's
 * thread before the restore starts, and only read afterwards.
 */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>
#include "restore-int.h"

/*
 * Every page of @reg's part of a shmem file that the page cache lacks (a
 * hole: a page discarded since) counts as changed where the snapshot has
 * data (a hole reads as zeros, right only for a zero page).  One mincore()
 * of a fresh read-only mapping of the range (it reports the page cache of
 * a shared file mapping, and neither faults nor populates): a restored
 * file has a hole for every zero page, too many for a SEEK_HOLE walk.
 * hugetlbfs reports mapped hugepages only, so its holes cannot be seen
 * this way (the preload flags a punch instead).  0 or -errno.
 */
static int mark_holes(sl_region *reg)
{
    const uint64_t ps = reg->blk->page_size, npages = reg->blk->length / ps;
    const uint64_t sys = (uint64_t)sysconf(_SC_PAGESIZE), per = MAX(1, ps / sys);
    g_autofree unsigned char *vec = NULL;
    void *p;
    int ret = 0;

    if (reg->mem.ops->kind != SL_BACKEND_SHMEM) {
        return 0;
    }
    p = mmap(NULL, reg->mem.length, PROT_READ, MAP_SHARED, reg->mem.fd, (off_t)reg->mem.offset);
    if (p == MAP_FAILED) {
        return -errno;
    }
    vec = g_malloc(reg->mem.length / sys);
    if (mincore(p, reg->mem.length, vec) < 0) {
        ret = -errno;
    }
    for (uint64_t pg = 0; ret == 0 && pg < npages; pg++) {
        bool hole = false;
        for (uint64_t k = 0; k < per; k++) {
            hole = hole || !(vec[pg * per + k] & 1);
        }
        if (hole && sl_bit_test(reg->blk->bitmap, pg)) {
            sl_bit_set(reg->changed, pg);
        }
    }
    munmap(p, reg->mem.length);
    return ret;
}

bool sl_restore_keep_known(sl_restore *r, const char *block_name, const sl_page_run *changed,
                           size_t n, GError **errp)
{
    sl_region *reg = sl_region_of_block(r, block_name);
    uint64_t npages = reg ? reg->blk->length / reg->blk->page_size : 0;
    const char *why = NULL;
    int ret;

    SL_ARG(r, errp, false);
    SL_ARG(block_name, errp, false);
    SL_ARG(changed || n == 0, errp, false);
    if (!reg) {
        why = "block not attached";
    } else if (!r->cfg.keep_memory || reg->mem.fd < 0) {
        why = "needs config.keep_memory, over a shared memory file";
    } else if (r->started) {
        why = "the restore has started";
    }
    for (size_t i = 0; !why && i < n; i++) {
        if (changed[i].first > npages || changed[i].n > npages - changed[i].first) {
            why = "a changed run lies outside the block";
        }
    }
    if (why) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "keep_known, block '%s': %s", block_name,
                    why);
        return false;
    }
    g_free(reg->changed);
    reg->changed = g_malloc0(sl_bitmap_bytes(npages));
    for (size_t i = 0; i < n; i++) {
        sl_bit_set_run(reg->changed, changed[i].first, changed[i].n);
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
    return reg->changed &&
           sl_bit_run(reg->changed, u * reg->ratio, (u + 1) * reg->ratio, false) == reg->ratio;
}
