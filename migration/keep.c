/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a reused memory file is known to hold (config.keep_memory with
 * sl_restore_keep_known()).  A VMM restarted from the same snapshot over
 * the RAM file its previous run left finds the snapshot there but for the
 * pages that run wrote.  When the caller can list those (the previous
 * run's write tracking), the loaders keep every other unit without reading
 * or hashing it, and check only the listed ones: a restart then costs the
 * written pages, not guest RAM.  Holes of the file, shmem or hugetlbfs
 * (pages discarded since), are looked up here (mincore): where the
 * snapshot has data they count as changed whatever the list says (a hole
 * reads as zeros, right only for a zero page).  The bitmap is built by
 * the caller's thread before the restore starts, and only read afterwards.
 */
#include <errno.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>
#include "restore-int.h"

/* The page size of @reg's file: its hugepages' on hugetlbfs, else the
 * system's (reg->mem.page_size is set only at the start). */
static uint64_t file_page(const sl_region *reg)
{
    const uint64_t sys = (uint64_t)sysconf(_SC_PAGESIZE);
    struct statfs sfs;

    if (reg->mem.ops->holes == SL_HOLES_RESIDENT && fstatfs(reg->mem.fd, &sfs) == 0 &&
        sfs.f_bsize > 0) {
        return MAX((uint64_t)sfs.f_bsize, sys);
    }
    return sys;
}

/*
 * A fresh read-only mapping of @reg's part of its file, for mincore(), or
 * MAP_FAILED.  shmem: anywhere (an empty page-table entry of a file
 * mapping is looked up in the page cache).  hugetlbfs: mincore() looks a
 * hugepage up in the page cache only where no table of huge entries covers
 * its address yet (an empty entry of an existing table reads as absent;
 * our own view's table may well cover a mapping placed next to it), so the
 * mapping goes into fresh address space aligned to what one such table
 * spans (as many hugepages as a page holds entries: 1 GiB of 2 MiB pages,
 * 512 GiB of 1 GiB pages), reserved PROT_NONE (no table) around it.  A
 * table found there all the same, or no room for the reservation, only
 * makes hugepages read as holes, which are then read and checked: a hole
 * is never taken for a page.  *@res and *@res_len: what to unmap.
 */
static void *fresh_view(const sl_region *reg, void **res, size_t *res_len)
{
    const size_t len = reg->mem.length;
    const uint64_t sys = (uint64_t)sysconf(_SC_PAGESIZE), hp = file_page(reg);
    uint64_t span = hp > sys ? hp * (sys / sizeof(uint64_t)) : 0;
    uint8_t *base, *at;
    void *p;

    *res = NULL;
    *res_len = 0;
    if (span && len <= SIZE_MAX - 2 * span) {
        *res_len = ((len + span - 1) / span + 1) * span;
        *res = mmap(NULL, *res_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                    -1, 0);
        if (*res == MAP_FAILED) {
            *res = NULL;
            *res_len = 0;
        }
    }
    if (!*res) {
        return mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_NORESERVE, reg->mem.fd,
                    (off_t)reg->mem.offset);
    }
    base = *res;
    at = base + (span - (uintptr_t)base % span) % span;
    /* No reservation: mincore() needs none, and a tight hugetlbfs pool
     * would refuse the mapping (found by review). */
    p = mmap(at, len, PROT_READ, MAP_SHARED | MAP_FIXED | MAP_NORESERVE, reg->mem.fd,
             (off_t)reg->mem.offset);
    if (p == MAP_FAILED) {
        munmap(*res, *res_len);
        *res = NULL;
        *res_len = 0;
    }
    return p;
}

unsigned char *sl_region_file_pages(const sl_region *reg, uint64_t *fp_out, int *err)
{
    const uint64_t sys = (uint64_t)sysconf(_SC_PAGESIZE), fp = file_page(reg);
    const uint64_t nfp = reg->mem.length / fp;
    g_autofree unsigned char *vec = NULL;
    unsigned char *in = NULL;
    void *p, *res;
    size_t res_len;

    *fp_out = fp;
    p = fresh_view(reg, &res, &res_len);
    if (p == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    vec = g_malloc(reg->mem.length / sys);
    if (mincore(p, reg->mem.length, vec) < 0) {
        *err = -errno;
    } else {
        /* One entry per page of the file, its first: before 6.7 the kernel
         * answered a hugepage's later entries from the hugepages after it. */
        in = g_malloc(nfp);
        for (uint64_t m = 0; m < nfp; m++) {
            in[m] = vec[m * (fp / sys)] & 1;
        }
    }
    munmap(res ? res : p, res ? res_len : reg->mem.length);
    return in;
}

/*
 * Every page of @reg's part of a shared memory file that the page cache
 * lacks (a hole: a page discarded since, or a unit a reset had dropped
 * when the previous run ended) counts as changed where the snapshot has
 * data (a hole reads as zeros, right only for a zero page): a restored
 * file has a hole for every zero page, too many for a SEEK_HOLE walk
 * (which hugetlbfs does not implement anyway: it reports no hole).
 * 0 or -errno.
 */
static int mark_holes(sl_region *reg)
{
    const uint64_t ps = reg->blk->page_size, npages = reg->blk->length / ps;
    g_autofree unsigned char *in = NULL;
    uint64_t fp;
    int ret = 0;

    if (reg->mem.ops->holes == SL_HOLES_NONE) {
        return 0;
    }
    in = sl_region_file_pages(reg, &fp, &ret);
    for (uint64_t pg = 0; in && pg < npages; pg++) {
        bool hole = false;
        for (uint64_t m = pg * ps / fp; m <= ((pg + 1) * ps - 1) / fp; m++) {
            hole = hole || !in[m];
        }
        if (hole && sl_bit_test(reg->blk->bitmap, pg)) {
            sl_bit_set(reg->changed, pg);
        }
    }
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
