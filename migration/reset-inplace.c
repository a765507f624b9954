/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The in-place way of a reset (config.reset_in_place): the snapshot's
 * bytes of every written run copied over memory that is already there,
 * checked where they landed, then protected again, instead of dropping
 * the pages for the loaders to bring back.  Copying from the snapshot
 * file mapped read-only (populated run by run) costs one system call per
 * run: the kernel copies (sl_copy_safe()), so a file truncated under the
 * mapping is an error, not SIGBUS (found by review: the memcpy crashed
 * the caller); a run that cannot be read or fails its check goes the
 * dropping way.  A writer that was not paused shows in the second look
 * (find_changed(), any_outside()), and what it may have changed is owed
 * to the next reset.  Runs on the caller's thread, inside
 * sl_restore_reset() (reset.c), which owns every state used here.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "backends/backend.h"
#include "restore-int.h"
#include "reset-int.h"

/*
 * The snapshot file mapped read-only (its page cache, no copy) at the
 * first in-place reset: a unit is then rewritten with one copy instead of
 * a read call (about half the time for scattered 4 KiB units here).  Only
 * the pages a reset reads are populated (populate_sources()).  Not for a
 * chain or blocks whose pages are elsewhere.
 */
static const uint8_t *snapshot_map(sl_restore *r)
{
    void *p;

    if (r->snap_map_tried) {
        return r->snap_map;
    }
    r->snap_map_tried = true;
    for (unsigned b = 0; b < r->snap->nblocks; b++) {
        if (r->snap->blocks[b].external) {
            return NULL;
        }
    }
    if (sl_snapshot_parent(r->snap) || !r->snap->file_size) {
        return NULL;
    }
    p = mmap(NULL, r->snap->file_size, PROT_READ, MAP_SHARED, r->snap->fd, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
    r->snap_map = p;
    r->snap_map_len = r->snap->file_size;
    return r->snap_map;
}

/* The file still has the size it was mapped with (a shorter one would raise SIGBUS). */
static bool map_still_valid(const sl_restore *r)
{
    struct stat st;

    return fstat(r->snap->fd, &st) == 0 && (uint64_t)st.st_size >= r->snap_map_len;
}

#define ZERO_BYTES (1u << 20) /* zero pages are rewritten from this many zeros at a time */

/*
 * The stored pages of [p0, p0+n) of @reg in the mapped snapshot,
 * populated (best effort) before they are checked and copied: one call
 * per run of them rather than a fault per page.  Only these: populating
 * the whole file at the first in-place reset cost in proportion to the
 * snapshot, not to what was written (44 ms for 1 GiB here, while the
 * guest waits).
 */
static void populate_sources(const sl_restore *r, const sl_region *reg, uint64_t p0, uint64_t n)
{
    const sl_block *b = reg->blk;
    const uint64_t ps = b->page_size, sys = (uint64_t)sysconf(_SC_PAGESIZE);

    for (uint64_t p = p0; p < p0 + n;) {
        uint64_t k = p, off, end;
        while (k < p0 + n && sl_bit_test(b->bitmap, k)) {
            k++;
        }
        if (k == p) {
            p++;
            continue;
        }
        off = b->pages_offset + p * ps;
        end = b->pages_offset + k * ps;
        off -= off % sys;
        (void)madvise((void *)(uintptr_t)(r->snap_map + off), end - off, MADV_POPULATE_READ);
        p = k;
    }
}

/*
 * The pages [p0, p0+n) of @reg, in memory now (rewritten), hold their
 * checksums (or no check is asked); zero pages are not looked at (written
 * from our own zeros).  Checked where they landed, not in the mapped
 * snapshot before the copy: a file changed in between would otherwise
 * give the guest bytes nobody checked (found by review).  A page that
 * differs while the snapshot's still holds its checksum was changed by a
 * writer after the copy: not refused here, find_changed() reports it.
 */
static int rewritten_pages_verify(sl_restore *r, const sl_region *reg, uint64_t p0, uint64_t n)
{
    const sl_block *b = reg->blk;
    const uint64_t ps = b->page_size;
    /* our own view, mapped where the guest wrote (the alias would fault per page) */
    const uint8_t *mem = reg->mem.host ? reg->mem.host : reg->mem.alias;
    g_autofree uint8_t *page = NULL;

    for (uint64_t p = p0; p < p0 + n && !r->cfg.no_checksum; p++) {
        if (!sl_bit_test(b->bitmap, p) || sl_hash(mem + p * ps, ps) == b->csums[p]) {
            continue;
        }
        page = page ? page : g_malloc(ps); /* the snapshot's page, read safely */
        if (sl_copy_safe(page, r->snap_map + b->pages_offset + p * ps, ps) < 0 ||
            sl_hash(page, ps) != b->csums[p]) {
            return -EBADMSG;
        }
    }
    return 0;
}

/* Zeros over [off, off+len) of @reg's memory, @zeros (ZERO_BYTES of them)
 * at a time: a snapshot page may be larger than that (found by review: a
 * 2 MiB zero page was copied from a 1 MiB buffer, heap bytes included). */
static int rewrite_zeros(const sl_region *reg, uint64_t off, uint64_t len, const uint8_t *zeros)
{
    int ret = 0;

    for (uint64_t at = 0; at < len && ret == 0; at += ZERO_BYTES) {
        ret = reg->mem.ops->rewrite(&reg->mem, off + at, zeros, MIN(ZERO_BYTES, len - at));
    }
    return ret;
}

/*
 * Snapshot pages [p0, p0+n) of @reg over its memory (ops->rewrite), from
 * the mapping, then checked there: runs of stored pages straight from it,
 * zero pages from @zeros (ZERO_BYTES of zeros).  0 or -errno (-EBADMSG:
 * the caller refuses the run by the dropping path).
 */
static int rewrite_mapped(sl_restore *r, const sl_region *reg, uint64_t p0, uint64_t n,
                          const uint8_t *zeros)
{
    const sl_block *b = reg->blk;
    const uint64_t ps = b->page_size;
    int ret;

    populate_sources(r, reg, p0, n);
    ret = r->cfg.no_checksum ? 0 : sl_csums_get(r->snap, b, p0, n); /* proven first */

    for (uint64_t p = p0; p < p0 + n && ret == 0;) {
        bool present = sl_bit_test(b->bitmap, p);
        uint64_t k = 1;
        while (p + k < p0 + n && sl_bit_test(b->bitmap, p + k) == present) {
            k++;
        }
        ret = present ? reg->mem.ops->rewrite(&reg->mem, p * ps,
                                              r->snap_map + b->pages_offset + p * ps, k * ps)
                      : rewrite_zeros(reg, p * ps, k * ps, zeros);
        p += k;
    }
    return ret ? ret : rewritten_pages_verify(r, reg, p0, n);
}

/*
 * config.reset_in_place: the snapshot's bytes of each written run, checked,
 * over memory that is already there (ops->rewrite: our own mapping's
 * written, writable pages, or a shared file's page cache); without the
 * mapping, read into the alias or our mapping.  A run that cannot be read
 * or fails its check (without checksums: the file changed since it was
 * opened) is left in @failed, for the dropping path (which refuses it
 * properly).
 */
static void rewrite_units(sl_restore *r, GArray *units, GArray *failed)
{
    const uint8_t *map = snapshot_map(r);
    bool mapped = map && map_still_valid(r);
    g_autofree uint8_t *zeros = mapped ? g_malloc0(ZERO_BYTES) : NULL;

    if (r->reset_rewriting) {
        r->reset_rewriting(r->reset_rewriting_opaque);
    }
    for (guint i = 0; i < units->len; i++) {
        const sl_run *run = &g_array_index(units, sl_run, i);
        sl_region *reg = g_ptr_array_index(r->regions, run->region);
        uint8_t *base = reg->mem.alias ? reg->mem.alias : reg->mem.host;
        uint64_t p0 = run->unit * reg->ratio, np = run->n * reg->ratio;
        int ret = mapped ? rewrite_mapped(r, reg, p0, np, zeros)
                         : sl_snapshot_read_pages(r->snap, reg->block, p0, np,
                                                  base + run->unit * reg->unit,
                                                  !r->cfg.no_checksum);
        if (ret == 0 && r->cfg.no_checksum) {
            /* unproven bytes: the dropping path's refill refuses the run
             * if the file changed (sl_commit_run()) */
            ret = sl_snapshot_unchanged(r->snap);
        }
        /* Relaxed: a statistic. */
        atomic_fetch_add_explicit(&r->c.bytes_read, ret == 0 ? run->n * reg->unit : 0,
                                  memory_order_relaxed);
        if (ret < 0) {
            g_array_append_val(failed, *run);
        }
    }
}

/* Whether a unit of @after lies outside every run of @before (both normalized). */
static bool any_outside(const GArray *before, const GArray *after)
{
    guint j = 0;

    for (guint i = 0; i < after->len; i++) {
        const sl_run *a = &g_array_index(after, sl_run, i), *b;
        while (j < before->len && sl_run_ends_before(&g_array_index(before, sl_run, j), a)) {
            j++;
        }
        b = j < before->len ? &g_array_index(before, sl_run, j) : NULL;
        if (!b || b->region != a->region || b->unit > a->unit ||
            b->unit + b->n < a->unit + a->n) {
            return true;
        }
    }
    return false;
}

/* Whether snapshot page @p of @reg is what @mem holds (@map: the snapshot
 * mapped, its page copied safely into @page, a buffer of one page, and
 * compared; a page it cannot read differs; NULL: sl_snapshot_page_matches()). */
static bool page_is_snapshot(sl_restore *r, const sl_region *reg, uint64_t p, const uint8_t *mem,
                             const uint8_t *map, uint8_t *page)
{
    const sl_block *b = reg->blk;

    if (!map) {
        return sl_snapshot_page_matches(r->snap, reg->block, p, mem);
    }
    if (!sl_bit_test(b->bitmap, p)) {
        return sl_all_zero(mem, b->page_size);
    }
    return sl_copy_safe(page, map + b->pages_offset + p * b->page_size, b->page_size) == 0 &&
           memcmp(mem, page, b->page_size) == 0;
}

/* Units of @run that do not hold the snapshot's bytes, appended to @changed
 * (@page: a buffer of one snapshot page). */
static void run_changed(sl_restore *r, const sl_run *run, const uint8_t *map, uint8_t *page,
                        GArray *changed)
{
    sl_region *reg = g_ptr_array_index(r->regions, run->region);
    /* our own view, where the rewrite left each page mapped (the alias of
     * shared memory would take a fault per page here) */
    const uint8_t *base = reg->mem.host ? reg->mem.host : reg->mem.alias;
    const uint64_t ps = reg->blk->page_size;

    if (!base) {
        return; /* nothing of ours maps it: nothing of ours wrote it */
    }

    for (uint64_t u = run->unit; u < run->unit + run->n; u++) {
        for (uint64_t k = 0; k < reg->ratio; k++) {
            uint64_t p = u * reg->ratio + k;
            if (!page_is_snapshot(r, reg, p, base + p * ps, map, page)) {
                sl_run c = { .region = run->region, .unit = u, .n = 1 };
                g_array_append_val(changed, c);
                break;
            }
        }
    }
}

/*
 * Units of @units that do not hold the snapshot's bytes now, appended to
 * @changed.  Read after they were protected again, this shows a writer's
 * bytes that landed between a unit's rewrite and its protection (which the
 * protection hid from the tracking); writes after it are tracked as usual.
 * The runs of @failed (whole runs of @units, in its order) go the dropping
 * way and are not looked at.
 */
static void find_changed(sl_restore *r, const GArray *units, const GArray *failed,
                         GArray *changed)
{
    const uint8_t *map = r->snap_map && map_still_valid(r) ? r->snap_map : NULL;
    g_autofree uint8_t *page = g_malloc(sl_snapshot_max_page_size(r->snap));
    guint j = 0;

    for (guint i = 0; i < units->len; i++) {
        const sl_run *run = &g_array_index(units, sl_run, i);
        const sl_run *f = j < failed->len ? &g_array_index(failed, sl_run, j) : NULL;
        if (f && f->region == run->region && f->unit == run->unit && f->n == run->n) {
            j++;
            continue;
        }
        run_changed(r, run, map, page, changed);
    }
}

/*
 * In place: rewrite, then protect again every page of our views written
 * since the collect (only ours: the caller paused every other writer).  A
 * writer that ran during the reset shows either as a unit written in
 * between that the rewrite did not cover, or as a rewritten unit that no
 * longer holds the snapshot's bytes once protected again (find_changed:
 * the protection hid that write).  Then every unit written or rewritten
 * may differ from the snapshot while the protection says unwritten: all
 * are owed to the next reset (r->raced, listed as written meanwhile) and
 * this one fails, saying so.
 */
bool sl_reset_in_place(sl_restore *r, GArray *units, const GArray *empty, GArray *failed,
                       GError **errp)
{
    g_autoptr(GArray) after = g_array_new(false, false, sizeof(sl_run));
    g_autoptr(GArray) changed = g_array_new(false, false, sizeof(sl_run));

    rewrite_units(r, units, failed);
    if (r->reset_rewritten) {
        r->reset_rewritten(r->reset_rewritten_opaque);
    }
    for (guint i = 0; i < r->regions->len && r->tracking == SL_TRACK_ASYNC_WP; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (!sl_reset_written_units(r, reg, true, after, errp)) {
            /* Runs of this block the failed scan protected again are lost
             * with it: all of it is owed, as collect_all() does (found by
             * review: only the runs listed were). */
            sl_run all = { .region = reg->index, .unit = 0, .n = reg->nunits };
            g_array_append_val(after, all);
            g_prefix_error(errp, "protecting the rewritten pages again: ");
            sl_reset_owe(r, units); /* some may be protected again already */
            sl_reset_owe(r, after);
            return false;
        }
    }
    sl_reset_normalize_runs(after);
    /* A reader's fault maps an emptied data unit (zeros, unprotected): no
     * writer's doing, and the caller drops it (found by review: such a
     * read failed the reset, blaming a writer). */
    sl_reset_subtract_runs(after, empty);
    if (r->tracking == SL_TRACK_ASYNC_WP) { /* else nothing was protected: nothing hidden */
        find_changed(r, units, failed, changed);
    }
    if (!changed->len && !any_outside(units, after)) {
        return true;
    }
    sl_reset_owe(r, units);
    sl_reset_owe(r, after);
    g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "memory was written while the reset ran (a "
                "writer was not paused): %u run(s) may differ from the snapshot; the next "
                "reset, with every writer paused, brings them back", r->raced->len);
    return false;
}
