/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A save of memory that a lazy restore may still be filling
 * (sl_restore_write_blocks()).
 *
 * While a restore runs, a page it has not placed yet is a hole in the
 * memory: read plainly it gives zeros, which is how a save taken then
 * stored real data as zero pages.  Such a page still holds what the parent
 * snapshot (the one being restored) says, by construction: nothing can
 * have written it, because a write to a missing page faults, and the
 * fault places the parent's bytes before the write goes on.  So each unit
 * is taken from where its true bytes are:
 *  - placed (PRESENT): from the memory, which may hold the guest's writes;
 *  - not placed (ABSENT): from the parent snapshot, checked against its
 *    checksum;
 *  - being placed (CLAIMED): waited for, then as above.  Its placement
 *    ioctl maps it and wakes the guest *before* the placer publishes it,
 *    so a CLAIMED unit may already hold a write (taking the parent's bytes
 *    for it lost writes, seen as 2 wrong pages in a stress run on
 *    hugetlbfs); every claimer settles its unit without waiting for the
 *    guest, so the wait ends;
 *  - refused (POISONED: its stored bytes failed their checksum): the save
 *    fails, naming the page, rather than store anything for it.
 * An ABSENT unit can only become placed meanwhile, and then holds the
 * parent's bytes as well (nobody can write it before its placement), so
 * the answer does not depend on the race.
 * Writers of the memory must be still during the save (a VMM pauses its
 * vCPUs first), as for any save.  A reset of the same restore waits for
 * the save, and the save for it (`save_reset_lock`): a reset drops units
 * the save may have found placed.
 *
 * An incremental (child) save (sl_restore_write_child()) stores only the
 * units written since the restore began or since the last reset, as the
 * restore's write tracking lists them (reset.c), from the memory, and
 * names the restored snapshot as its parent: every other page is the
 * parent's, as the tracking proves.  Of a written unit it stores only the
 * pages that differ from the parent's (by checksum; by bytes where the
 * parent has none and units hold several pages).  Of the listed units only placed ones
 * are stored: one still absent or refused was never written (a write to
 * it faults first), so it is the parent's too.
 *
 * The memory of a shared backend is read with pread() on its file, which
 * neither faults nor plants a page; anonymous memory through its mapping,
 * where a placed zero unit that nobody touched is still a hole served (as
 * zeros) by the running fault thread, or plain zeros after completion.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "migration/format/format.h"
#include "migration/pagemap.h"
#include "reset-int.h"
#include "restore-int.h"

#define SAVE_RUN_BYTES (1u << 20) /* most bytes moved per read */

/* Where unit @u's bytes come from: 1 the memory, 0 the parent, -1 nowhere. */
static int unit_source(const sl_region *reg, uint64_t u)
{
    int st = sl_pagemap_state(reg->map, u);

    if (st == SL_PAGE_CLAIMED) {
        st = sl_pagemap_wait(reg->map, u, false); /* placed and maybe written already */
    }
    return st == SL_PAGE_PRESENT ? 1 : st == SL_PAGE_POISONED ? -1 : 0;
}

/* Reads @len bytes of @reg's memory at @off into @dst; 0 or -errno. */
static int read_memory(const sl_region *reg, uint64_t off, uint8_t *dst, uint64_t len)
{
    if (reg->mem.fd >= 0) {
        for (uint64_t done = 0; done < len;) {
            ssize_t n = pread(reg->mem.fd, dst + done, len - done,
                              (off_t)(reg->mem.offset + off + done));
            if (n <= 0) {
                return n < 0 ? -errno : -EIO;
            }
            done += (uint64_t)n;
        }
        return 0;
    }
    if (!reg->mem.host) {
        return -ENXIO; /* only another process maps it */
    }
    memcpy(dst, reg->mem.host + off, len);
    return 0;
}

/* Pages [@first, +@n) of @reg, all from source @src, into @buf; 0 or -errno. */
static int read_pages(sl_restore *r, const sl_region *reg, uint64_t first, uint64_t n, int src,
                      uint8_t *buf)
{
    if (src) {
        return read_memory(reg, first * reg->blk->page_size, buf, n * reg->blk->page_size);
    }
    return sl_snapshot_read_pages(r->snap, reg->block, first, n, buf,
                                  sl_snapshot_has_checksums(r->snap));
}

/* Units [@u, +@n) of @reg, all from source @src, into block @b of @w,
 * through @buf (@per pages at a time: a unit of a 1 GiB hugepage is read
 * in pieces). */
static bool save_units(sl_restore *r, const sl_region *reg, sl_writer *w, unsigned b,
                       uint64_t u, uint64_t n, int src, uint8_t *buf, uint64_t per,
                       GError **errp)
{
    const uint64_t ps = reg->blk->page_size;
    const uint64_t end = MIN((u + n) * reg->ratio, reg->blk->npages);

    if (r->save_reading) {
        r->save_reading(r->save_reading_opaque);
    }
    for (uint64_t p = u * reg->ratio; p < end; p += per) {
        uint64_t k = MIN(per, end - p);
        int ret = read_pages(r, reg, p, k, src, buf);
        if (ret < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block '%s' at 0x%" G_GINT64_MODIFIER
                        "x: reading its %s: %s", reg->blk->name, p * ps,
                        src ? "memory" : "parent snapshot", g_strerror(-ret));
            return false;
        }
        if (!sl_writer_write(w, b, p * ps, buf, k * ps, errp)) {
            return false;
        }
    }
    return true;
}

/* Writes attached region @reg into block @b of @w, through @buf of @bytes
 * (at least one page of the block). */
static bool save_region(sl_restore *r, const sl_region *reg, sl_writer *w, unsigned b,
                        uint8_t *buf, uint64_t bytes, GError **errp)
{
    const uint64_t max_units = MAX(1, bytes / reg->unit);

    for (uint64_t u = 0; u < reg->nunits;) {
        int src = unit_source(reg, u);
        uint64_t n = 1;

        if (src < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "block '%s': page %" G_GUINT64_FORMAT
                        " was refused by the restore (it failed its checksum): nothing to "
                        "save for it", reg->blk->name, u * reg->ratio);
            return false;
        }
        while (u + n < reg->nunits && n < max_units && unit_source(reg, u + n) == src) {
            n++;
        }
        if (!save_units(r, reg, w, b, u, n, src, buf, bytes / reg->blk->page_size, errp)) {
            return false;
        }
        u += n;
    }
    return true;
}

/* A block nobody attached: the parent's pages, as they are. */
static bool copy_block(sl_restore *r, unsigned b, sl_writer *w, uint8_t *buf, GError **errp)
{
    const sl_block *blk = &r->snap->blocks[b];
    uint64_t per = MAX(1, SAVE_RUN_BYTES / blk->page_size);

    for (uint64_t p = 0; p < blk->npages; p += per) {
        uint64_t n = MIN(per, blk->npages - p);
        int ret = sl_snapshot_read_pages(r->snap, b, p, n, buf,
                                         sl_snapshot_has_checksums(r->snap));
        if (ret < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block '%s': reading its pages from the "
                        "parent snapshot: %s", blk->name, g_strerror(-ret));
            return false;
        }
        if (!sl_writer_write(w, b, p * blk->page_size, buf, n * blk->page_size, errp)) {
            return false;
        }
    }
    return true;
}

/* The region of snapshot block @b, or NULL if it was not attached. */
static const sl_region *region_of(const sl_restore *r, unsigned b)
{
    for (guint i = 0; i < r->regions->len; i++) {
        const sl_region *reg = g_ptr_array_index(r->regions, i);
        if (reg->block == b) {
            return reg;
        }
    }
    return NULL;
}

/* A stopped restore may have left our anonymous memory registered with
 * nobody to serve it: reading a placed zero unit there would wait for ever. */
static bool may_save(const sl_restore *r, GError **errp)
{
    int st = sl_restore_poll((sl_restore *)r);

    if (!r->started || (st != 0 && st != -EINPROGRESS) || (r->stopped && st != 0)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "a save needs a restore that was started "
                    "and is running or complete (status: %s)",
                    !r->started ? "not started" : st ? g_strerror(-st) : "stopped");
        return false;
    }
    return true;
}

/*
 * Bytes of a save's buffer: a run of SAVE_RUN_BYTES, and at least one page
 * of every block, attached or not (found by review: a block of 2 MiB pages
 * nobody attached was read into a buffer of 1 MiB).  A unit larger than
 * that (a 1 GiB hugepage) is read in pieces: the buffer was once a whole
 * unit, 1 GiB of heap per save (found by review).
 */
static uint64_t buffer_bytes(const sl_restore *r)
{
    return MAX(MAX(SAVE_RUN_BYTES, r->max_bounce), sl_snapshot_max_page_size(r->snap));
}

static bool add_blocks(const sl_restore *r, sl_writer *w, GError **errp)
{
    for (unsigned b = 0; b < r->snap->nblocks; b++) {
        const sl_block *blk = &r->snap->blocks[b];
        if (sl_writer_add_block(w, blk->name, blk->length, blk->page_size, blk->numa_node,
                                errp) != (int)b) {
            return false;
        }
    }
    return true;
}

bool sl_restore_write_blocks(sl_restore *r, sl_writer *w, GError **errp)
{
    g_autoptr(GMutexLocker) alone = NULL;
    g_autofree uint8_t *buf = NULL;
    uint64_t bytes;
    bool ok = true;

    SL_ARG(r, errp, false);
    SL_ARG(w, errp, false);
    alone = g_mutex_locker_new(&r->save_reset_lock); /* no reset drops what this reads */
    if (!may_save(r, errp) || !add_blocks(r, w, errp)) {
        return false;
    }
    bytes = buffer_bytes(r);
    buf = g_malloc(bytes);
    for (unsigned b = 0; ok && b < r->snap->nblocks; b++) {
        const sl_region *reg = region_of(r, b);
        ok = reg ? save_region(r, reg, w, b, buf, bytes, errp) : copy_block(r, b, w, buf, errp);
    }
    return ok;
}

/*
 * Pages [@p, @end) of a listed run whose units hold the memory's bytes
 * (placed), from @p on, at most @max_pages of them: the end of that
 * stretch, @p itself if @p's unit is not placed.  A unit still absent is
 * the parent's (nothing wrote it: a write faults it in first), and so is
 * a refused one (no write can reach it); both are listed when the kernel
 * lacks async WP (every unit) or, for a refused one, by its poison marker
 * (found by review: the save stored zeros for them, or died of SIGBUS).
 */
static uint64_t placed_stretch(const sl_region *reg, uint64_t p, uint64_t end,
                               uint64_t max_pages)
{
    uint64_t q = p;

    while (q < end && q - p < max_pages && unit_source(reg, q / reg->ratio) > 0) {
        q = MIN(MIN(end, (q / reg->ratio + 1) * reg->ratio), p + max_pages);
    }
    return q;
}

/* Pages [@p, @q) of @reg's memory into block @b of @w; with @changed, only
 * those that differ from the restored snapshot's: a written unit of several
 * pages (a hugepage) leaves its unchanged pages to the parent (found by a
 * user's test: a child of 5 written 4 KiB pages on hugetlbfs stored 2560). */
static bool save_pages(sl_restore *r, const sl_region *reg, sl_writer *w, unsigned b,
                       uint8_t *buf, uint64_t p, uint64_t q, bool changed, GError **errp)
{
    const uint64_t ps = reg->blk->page_size;
    int ret = read_memory(reg, p * ps, buf, (q - p) * ps);

    if (ret < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block '%s' at 0x%" G_GINT64_MODIFIER
                    "x: reading its memory: %s", reg->blk->name, p * ps, g_strerror(-ret));
        return false;
    }
    return sl_writer_write_changed(w, changed ? r->snap : NULL, b, p * ps, buf, (q - p) * ps,
                                   &(uint64_t){ 0 }, errp);
}

/* Units of @reg written since the restore or the last reset, into block @b of @w. */
static bool save_written(sl_restore *r, const sl_region *reg, sl_writer *w, unsigned b,
                         uint8_t *buf, uint64_t max_pages, GError **errp)
{
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(sl_page_run));
    /* Compared with the parent where units hold several pages (their other
     * pages are mostly unchanged), or where checksums make it cheap. */
    bool changed = reg->ratio > 1 || sl_snapshot_has_checksums(r->snap);

    if (!sl_reset_written_of_block(r, reg->blk->name, runs, errp)) {
        return false;
    }
    for (guint i = 0; i < runs->len; i++) {
        const sl_page_run *run = &g_array_index(runs, sl_page_run, i);
        const uint64_t end = run->first + run->n;
        for (uint64_t p = run->first; p < end;) {
            uint64_t q = placed_stretch(reg, p, end, max_pages);
            if (q == p) { /* the parent's: the child stores nothing for it */
                p = MIN(end, (p / reg->ratio + 1) * reg->ratio);
                continue;
            }
            if (!save_pages(r, reg, w, b, buf, p, q, changed, errp)) {
                return false;
            }
            p = q;
        }
    }
    return true;
}

bool sl_restore_write_child(sl_restore *r, sl_writer *w, const char *parent_path, GError **errp)
{
    g_autoptr(GMutexLocker) alone = NULL;
    g_autofree uint8_t *buf = NULL;
    uint64_t bytes;

    SL_ARG(r, errp, false);
    SL_ARG(w, errp, false);
    SL_ARG(parent_path, errp, false);
    alone = g_mutex_locker_new(&r->save_reset_lock);
    if (!r->cfg.track_writes) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "an incremental save needs a restore "
                    "started with config.track_writes");
        return false;
    }
    if (!may_save(r, errp) || !sl_writer_set_parent(w, r->snap, parent_path, errp) ||
        !add_blocks(r, w, errp)) {
        return false;
    }
    bytes = buffer_bytes(r);
    buf = g_malloc(bytes);
    for (unsigned b = 0; b < r->snap->nblocks; b++) {
        const sl_region *reg = region_of(r, b);
        uint64_t max_pages = bytes / r->snap->blocks[b].page_size;
        if (reg && !save_written(r, reg, w, b, buf, max_pages, errp)) {
            return false;
        }
    }
    return true;
}
