/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Eager load: the baseline lazy restore is measured against.  Threads split
 * the block into equal slices and pread every stored page straight into the
 * destination (no bounce buffer), as a conventional loader would; zero pages
 * are skipped because fresh memory already reads as zero.  A child
 * snapshot's pages are read through sl_snapshot_read_pages(), which takes
 * each run from the file of the layer that stores it.
 */
#include <errno.h>
#include "migration/format/format.h"

/* One eager thread's work: filled in by the caller before the thread
 * starts, read-only to it but @ret, which it writes and the caller reads
 * after joining it. */
typedef struct {
    sl_snapshot *snap;
    unsigned block;
    const sl_block *b;
    uint8_t *dst;
    uint64_t first, end;   /* page range of this thread */
    bool verify;
    int ret;
} slice;

/* Loads stored runs of [first, end), at most 1 MiB per pread. */
static gpointer load_slice(gpointer opaque)
{
    slice *s = opaque;
    const sl_block *b = s->b;
    uint64_t max_run = MAX(1, (1u << 20) / b->page_size);

    if (s->verify) { /* the bitmap that says which pages to skip is proven first */
        s->ret = sl_csums_get(s->snap, b, s->first, s->end - s->first);
    }
    for (uint64_t i = s->first; i < s->end && s->ret == 0;) {
        uint64_t n = 0;

        if (!sl_bit_test(b->bitmap, i)) {
            i++;
            continue;
        }
        while (i + n < s->end && n < max_run && sl_bit_test(b->bitmap, i + n)) {
            n++;
        }
        s->ret = s->snap->parent
                     ? sl_snapshot_read_pages(s->snap, s->block, i, n, s->dst + i * b->page_size,
                                              s->verify)
                     : sl_pread_full(s->snap->fd, s->dst + i * b->page_size, n * b->page_size,
                                     b->pages_offset + i * b->page_size);
        for (uint64_t k = 0; s->ret == 0 && s->verify && !s->snap->parent && k < n; k++) {
            if (sl_hash(s->dst + (i + k) * b->page_size, b->page_size) != b->csums[i + k]) {
                s->ret = -EBADMSG;
            }
        }
        i += n;
    }
    return NULL;
}

int sl_eager_load(sl_snapshot *snap, unsigned block, void *dst, unsigned threads, bool verify)
{
    const sl_block *b;
    g_autofree slice *sl = NULL;
    g_autofree GThread **th = NULL;
    int ret = 0;

    SL_ARG_ERRNO(snap);
    SL_ARG_ERRNO(dst);
    if (block >= snap->nblocks) {
        return -ERANGE;
    }
    b = &snap->blocks[block];
    /* Nothing to verify against without checksums (found by review: a
     * QEMU file without its index crashed the check). */
    verify = verify && sl_snapshot_has_checksums(snap);
    threads = CLAMP(threads, 1, 256);
    sl = g_new0(slice, threads);
    th = g_new0(GThread *, threads);
    for (unsigned t = 0; t < threads; t++) {
        sl[t] = (slice){ .snap = snap, .block = block, .b = b, .dst = dst, .verify = verify,
                         .first = b->npages * t / threads,
                         .end = b->npages * (t + 1) / threads };
        th[t] = t ? g_thread_new("sl-eager", load_slice, &sl[t]) : NULL;
    }
    load_slice(&sl[0]);
    for (unsigned t = 0; t < threads; t++) {
        if (th[t]) {
            g_thread_join(th[t]);
        }
        ret = ret ? ret : sl[t].ret;
    }
    /* Unverified bytes are the snapshot's only if its file stayed the one
     * opened (format.h): a load racing a rewrite of it says so. */
    return ret ? ret : verify ? 0 : sl_snapshot_unchanged(snap);
}
