/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Gathered reads: the stored runs of a range of pages that lie close
 * together in the file read with one preadv(2) instead of one pread(2)
 * each.  The fault path reads through a descriptor advised FADV_RANDOM,
 * where every read of pages not in the page cache is its own disk request
 * and waits for it: a fault-around block whose stored pages are cut by
 * zero pages (or the faulted unit already served) cost a disk round trip
 * per run, one after the other.  One preadv asks the kernel for the whole
 * span at once.  The file's bytes between two runs (holes where QEMU left
 * zero pages out) land in a scratch page and are dropped, so a page the
 * bitmap calls zero never takes bytes from the file.
 */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include "migration/format/format.h"

#define GATHER_IOVS 64
#define SCRATCH     4096u

/* One preadv being put together: its iovecs cover file bytes [off, off+len). */
typedef struct {
    struct iovec iov[GATHER_IOVS];
    int cnt;
    uint64_t off, len;
    uint8_t *scratch;  /* where bytes nobody wants go, SCRATCH at a time */
    int fd;
} gather;

int sl_preadv_full(int fd, struct iovec *iov, int cnt, uint64_t off)
{
    while (cnt > 0) {
        ssize_t n = preadv(fd, iov, cnt, (off_t)off);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -errno : -EIO; /* the file ended early */
        }
        off += (uint64_t)n;
        for (; cnt > 0 && (size_t)n >= iov->iov_len; iov++, cnt--) {
            n -= (ssize_t)iov->iov_len;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

static int flush(gather *g)
{
    int ret = g->cnt ? sl_preadv_full(g->fd, g->iov, g->cnt, g->off) : 0;

    g->cnt = 0;
    g->len = 0;
    return ret;
}

/* Adds file bytes [@off, +@len) going to @dst (NULL: dropped) to the read. */
static int add(gather *g, uint64_t off, uint8_t *dst, uint64_t len)
{
    int ret = 0;

    if (g->cnt && g->off + g->len != off) {
        ret = flush(g);
    }
    while (len && ret == 0) {
        uint64_t chunk = dst ? len : MIN(len, SCRATCH);

        if (g->cnt == GATHER_IOVS && (ret = flush(g)) < 0) {
            break;
        }
        if (g->cnt == 0) {
            g->off = off;
        }
        g->iov[g->cnt++] = (struct iovec){ .iov_base = dst ? dst : g->scratch, .iov_len = chunk };
        g->len += chunk;
        off += chunk;
        len -= chunk;
        dst = dst ? dst + chunk : NULL;
    }
    return ret;
}

/* The kind of page @i: skipped, stored in the file, or not (a zero page). */
enum { SKIPPED, STORED, ABSENT };

/* Kind of page @i and the length of its run up to @end. */
static int run_at(const uint64_t *own, uint64_t i, uint64_t end, uint64_t skip, uint64_t nskip,
                  uint64_t *run)
{
    bool stored;

    if (i >= skip && i < skip + nskip) {
        *run = MIN(skip + nskip, end) - i;
        return SKIPPED;
    }
    stored = sl_bit_test(own, i);
    *run = sl_bit_run(own, i, i < skip ? MIN(skip, end) : end, stored);
    return stored ? STORED : ABSENT;
}

int sl_gather_read(int fd, const sl_block *b, const uint64_t *own, uint64_t first, uint64_t n,
                   uint8_t *buf, bool zeroed, uint64_t gap, uint64_t skip, uint64_t nskip)
{
    uint8_t scratch[SCRATCH] __attribute__((aligned(4096)));
    gather g = { .scratch = scratch, .fd = fd };
    uint64_t end = first + n, ps = b->page_size, hole = 0; /* unwanted bytes since the last run */
    int ret = 0;

    for (uint64_t i = first, run; i < end && ret == 0; i += run) {
        int kind = run_at(own, i, end, skip, nskip, &run);
        uint64_t off = b->pages_offset + i * ps;

        if (kind != STORED) {
            if (kind == ABSENT && !zeroed) {
                memset(buf + (i - first) * ps, 0, run * ps);
            }
            hole += run * ps;
            continue;
        }
        if (g.cnt && hole > gap) {
            ret = flush(&g);
        } else if (g.cnt && hole) {
            ret = add(&g, off - hole, NULL, hole);
        }
        hole = 0;
        ret = ret < 0 ? ret : add(&g, off, buf + (i - first) * ps, run * ps);
    }
    return ret < 0 ? ret : flush(&g);
}
