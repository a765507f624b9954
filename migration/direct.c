/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Direct reads for the loaders of a cold snapshot (see direct.h): a FIFO
 * of SL_DIRECT_DEPTH aligned buffers, each with up to SL_DIRECT_READS
 * O_DIRECT reads in flight on the loader's own io_uring.  Completions come
 * in any order (user_data: slot and read); a pop waits for the oldest
 * slot, so the engine places chunks in the order it took them.  Built without liburing, there
 * is no queue and every chunk is read the ordinary way.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include "direct.h"
#include "large.h"
#include "migration/format/format.h"
#ifdef HAVE_LIBURING
#include <liburing.h>
#endif

bool sl_direct_uncached(int fd, uint64_t off, uint64_t len)
{
    int64_t cached = sl_cached_pages(fd, off, len);

    /* Cannot tell (-1): read it the ordinary way. */
    return cached >= 0 && (uint64_t)cached * (uint64_t)getpagesize() * 2 <= len;
}

#ifdef HAVE_LIBURING

/* One buffer: its reads, once pushed, are in flight until none is @pending. */
typedef struct {
    uint8_t *buf;                  /* in @map: 2 MiB aligned and hugepage-advised, so a
                                    * chunk read into it can be moved out whole */
    sl_large map;
    uint64_t tag;
    uint64_t len[SL_DIRECT_READS]; /* what each read asked for */
    unsigned pending;
    int res;                       /* 0, or the first failure (-EIO: short) */
} slot;

/* Owned by one loader thread: nothing here is shared. */
struct sl_direct {
    struct io_uring ring;
    int fd;
    unsigned head, count; /* oldest slot; slots pushed and not popped */
    bool broken;          /* a completion could not be waited for: a popped slot may
                           * still be read into, so none is pushed again */
    slot s[SL_DIRECT_DEPTH];
};

sl_direct *sl_direct_new(int fd, uint64_t buf_bytes)
{
    sl_direct *d = calloc(1, sizeof(*d));

    if (!d || io_uring_queue_init(SL_DIRECT_DEPTH * SL_DIRECT_READS, &d->ring, 0) < 0) {
        free(d);
        return NULL;
    }
    d->fd = fd;
    for (unsigned i = 0; i < SL_DIRECT_DEPTH; i++) {
        if (!(d->s[i].buf = sl_large_map(&d->s[i].map, buf_bytes))) {
            d->count = 0;
            sl_direct_free(d);
            return NULL;
        }
    }
    return d;
}

#define NOT_A_SLOT UINT64_MAX /* user_data of a read taken back (a no-op) */

/* Takes one completion (waiting for it): its slot is done. */
static int reap_one(sl_direct *d)
{
    struct io_uring_cqe *cqe;
    uint64_t i;
    int ret;

    while ((ret = io_uring_wait_cqe(&d->ring, &cqe)) == -EINTR) {
    }
    if (ret < 0) {
        d->broken = true; /* the slot's reads may still land: never reuse it */
        return ret;
    }
    i = io_uring_cqe_get_data64(cqe);
    if (i != NOT_A_SLOT) {
        slot *s = &d->s[(i / SL_DIRECT_READS) % SL_DIRECT_DEPTH];
        int res = cqe->res < 0 ? cqe->res
                               : (uint64_t)cqe->res == s->len[i % SL_DIRECT_READS] ? 0 : -EIO;
        s->res = s->res ? s->res : res;
        s->pending--;
    }
    io_uring_cqe_seen(&d->ring, cqe);
    return 0;
}

void sl_direct_free(sl_direct *d)
{
    if (!d) {
        return;
    }
    /* The kernel writes into the buffers until each read completes. */
    for (unsigned i = 0; i < d->count; i++) {
        slot *s = &d->s[(d->head + i) % SL_DIRECT_DEPTH];
        while (s->pending && reap_one(d) == 0) {
        }
    }
    io_uring_queue_exit(&d->ring);
    for (unsigned i = 0; i < SL_DIRECT_DEPTH; i++) {
        sl_large_unmap(&d->s[i].map);
    }
    free(d);
}

bool sl_direct_full(const sl_direct *d)
{
    return d->count == SL_DIRECT_DEPTH;
}

bool sl_direct_empty(const sl_direct *d)
{
    return d->count == 0;
}

bool sl_direct_push(sl_direct *d, uint64_t tag, unsigned n, const uint64_t *off,
                    const uint64_t *len, const uint64_t *buf_off)
{
    unsigned i = (d->head + d->count) % SL_DIRECT_DEPTH, k;
    struct io_uring_sqe *sqe[SL_DIRECT_READS];
    slot *s = &d->s[i];
    unsigned before; /* no-ops of an earlier failed push, still queued ahead of ours */
    int sent;

    if (d->broken || d->count == SL_DIRECT_DEPTH || n == 0 || n > SL_DIRECT_READS) {
        return false; /* the caller reads it the ordinary way */
    }
    before = io_uring_sq_ready(&d->ring);
    for (k = 0; k < n && (sqe[k] = io_uring_get_sqe(&d->ring)); k++) {
        io_uring_prep_read(sqe[k], d->fd, s->buf + buf_off[k], (unsigned)len[k], off[k]);
        io_uring_sqe_set_data64(sqe[k], (uint64_t)i * SL_DIRECT_READS + k);
        s->len[k] = len[k];
    }
    if (k < n) { /* not taken: made no-ops that go with a later submit */
        for (unsigned m = 0; m < k; m++) {
            io_uring_prep_nop(sqe[m]);
            io_uring_sqe_set_data64(sqe[m], NOT_A_SLOT);
        }
        return false;
    }
    sent = io_uring_submit(&d->ring) - (int)before;
    sent = sent < 0 ? 0 : MIN(sent, (int)n);
    /* The kernel takes them in order; those it did not take stay in the
     * queue for a later submit: made no-ops (no SQPOLL: it reads them only
     * then), so that no read lands in a buffer we do not count as busy. */
    for (unsigned m = (unsigned)sent; m < n; m++) {
        io_uring_prep_nop(sqe[m]);
        io_uring_sqe_set_data64(sqe[m], NOT_A_SLOT);
    }
    if (sent == 0) {
        return false;
    }
    s->tag = tag;
    s->pending = (unsigned)sent;
    s->res = (unsigned)sent < n ? -EAGAIN : 0; /* partly sent: read again the ordinary way */
    d->count++;
    return true;
}

int sl_direct_pop(sl_direct *d, uint64_t *tag, uint8_t **buf)
{
    slot *s = &d->s[d->head];
    int ret = 0;

    while (s->pending && (ret = reap_one(d)) == 0) {
    }
    d->head = (d->head + 1) % SL_DIRECT_DEPTH;
    d->count--;
    *tag = s->tag;
    *buf = s->buf;
    return ret < 0 ? ret : s->res;
}

#else /* no liburing: no queue; the engine reads every chunk the ordinary way */

sl_direct *sl_direct_new(int fd, uint64_t buf_bytes)
{
    (void)fd;
    (void)buf_bytes;
    return NULL;
}

void sl_direct_free(sl_direct *d)
{
    (void)d;
}

bool sl_direct_full(const sl_direct *d)
{
    (void)d;
    return true;
}

bool sl_direct_empty(const sl_direct *d)
{
    (void)d;
    return true;
}

bool sl_direct_push(sl_direct *d, uint64_t tag, unsigned n, const uint64_t *off,
                    const uint64_t *len, const uint64_t *buf_off)
{
    (void)d, (void)tag, (void)n, (void)off, (void)len, (void)buf_off;
    return false;
}

int sl_direct_pop(sl_direct *d, uint64_t *tag, uint8_t **buf)
{
    (void)d, (void)tag, (void)buf;
    return -ENOSYS;
}

#endif
