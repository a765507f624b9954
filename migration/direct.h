/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Direct reads for the loaders of a cold snapshot: a loader keeps several
 * chunks' reads in flight (io_uring, O_DIRECT: the disk fills the loader's
 * buffers by DMA, with no page cache to allocate and no copy out of it)
 * while it verifies and places the chunk before them.  One sl_direct per
 * loader thread, used by that thread only; the O_DIRECT descriptor is the
 * restore's.  Whether a chunk is read this way is the engine's choice
 * (sl_direct_uncached()); any read that fails or comes back short is
 * read again the ordinary way, which reports a real error.
 */
#ifndef SNAPLOAD_DIRECT_H
#define SNAPLOAD_DIRECT_H

#include <stdbool.h>
#include <stdint.h>

/** Chunks one loader keeps in flight. */
#define SL_DIRECT_DEPTH 8

typedef struct sl_direct sl_direct;

/**
 * sl_direct_new: a queue of SL_DIRECT_DEPTH buffers of @buf_bytes (a
 * multiple of 4096) reading from @fd (opened O_DIRECT, not owned), or NULL
 * where io_uring is not there (not built with liburing, or refused by the
 * kernel): the loader then reads the ordinary way.
 */
sl_direct *sl_direct_new(int fd, uint64_t buf_bytes);

/** sl_direct_free: waits for the reads still in flight, then frees @d (NULL: nothing). */
void sl_direct_free(sl_direct *d);

/** sl_direct_full: no free buffer: pop before pushing. */
bool sl_direct_full(const sl_direct *d);

/** sl_direct_empty: nothing in flight or waiting to be popped. */
bool sl_direct_empty(const sl_direct *d);

/** Most reads one pushed buffer may take (runs of stored pages of one chunk). */
#define SL_DIRECT_READS 16

/**
 * sl_direct_push: queues @n (at most SL_DIRECT_READS) reads into the next
 * buffer, read i of @len[i] bytes at file offset @off[i] to @buf_off[i] of
 * the buffer (all multiples of 4096), remembering @tag.  They are
 * submitted at once.  False (nothing queued) if they could not be.
 */
bool sl_direct_push(sl_direct *d, uint64_t tag, unsigned n, const uint64_t *off,
                    const uint64_t *len, const uint64_t *buf_off);

/**
 * sl_direct_pop: waits for the oldest queued buffer's reads; its @tag and
 * buffer (valid until the next push).  0, or -errno when one of them
 * failed or was short (-EIO): the buffer then holds nothing to use.
 */
int sl_direct_pop(sl_direct *d, uint64_t *tag, uint8_t **buf);

/**
 * sl_direct_uncached: whether at most half of [@off, @off + @len) of @fd
 * is in the page cache (cachestat(2), Linux 6.5).  False when that cannot
 * be told: a cached or unknown range is read the ordinary way.
 */
bool sl_direct_uncached(int fd, uint64_t off, uint64_t len);

#endif
