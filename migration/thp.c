/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Transparent hugepages for anonymous guest RAM after a lazy restore.
 *
 * QEMU asks for THPs on anonymous guest RAM (MADV_HUGEPAGE), so its eager
 * load fills 2 MiB pages, one fault each.  UFFDIO_COPY places 4 KiB pages:
 * after a lazy restore the guest would run on 4 KiB pages (more TLB
 * misses) until khugepaged got to them, if ever.  Once every page is in
 * place, each 2 MiB range that holds data is collapsed into a THP with
 * MADV_COLLAPSE, in our own mapping (madvise) or in the consumer's
 * (process_madvise on its pidfd), as many ranges per call as an iovec
 * holds.  Ranges the snapshot says are all zeros are left alone: the eager
 * load never touches them either, and collapsing them would allocate 2 MiB
 * of zeros each.  The kernel copies a range under its page-table lock, so
 * the guest may run meanwhile.  Best effort: a kernel or mapping that
 * cannot collapse leaves 4 KiB pages, which are just as correct.
 */
#include <errno.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include "migration/format/format.h"
#include "thp.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define THP (2ull << 20)
#define BATCH 512 /* ranges per process_madvise call (IOV_MAX is 1024) */

/* Whether block offset [@off, +THP) of @b holds a page the snapshot stores. */
static bool range_has_data(const sl_block *b, uint64_t off)
{
    uint64_t first = off / b->page_size, n = THP / b->page_size;

    for (uint64_t p = first; p < first + n && p < b->npages; p++) {
        if (sl_bit_test(b->bitmap, p)) {
            return true;
        }
    }
    return false;
}

/* MADV_COLLAPSE of @n ranges in process @pidfd (-1: ours); how many bytes took. */
static uint64_t collapse(int pidfd, struct iovec *iov, unsigned n)
{
    uint64_t took = 0;

    while (pidfd >= 0 && n) {
        /* It stops at the first range that fails: skip that one, go on. */
        long r = syscall(SYS_process_madvise, pidfd, iov, n, MADV_COLLAPSE, 0);
        unsigned ok = r > 0 ? (unsigned)((uint64_t)r / THP) : 0;
        if (r < 0 && errno != EAGAIN && errno != ENOMEM && errno != EINVAL) {
            return took; /* the process or the call itself: nothing more to do */
        }
        took += (uint64_t)ok * THP;
        iov += MIN(n, ok + 1);
        n -= MIN(n, ok + 1);
    }
    for (unsigned i = 0; i < n; i++) {
        took += madvise(iov[i].iov_base, iov[i].iov_len, MADV_COLLAPSE) == 0 ? THP : 0;
    }
    return took;
}

uint64_t sl_thp_collapse(int pidfd, uint64_t base, const sl_snapshot *snap, unsigned block)
{
    const sl_block *b = &snap->blocks[block];
    struct iovec iov[BATCH];
    uint64_t took = 0, first = (base + THP - 1) & ~(THP - 1);
    unsigned n = 0;

    for (uint64_t a = first; a + THP <= base + b->length; a += THP) {
        if (!range_has_data(b, a - base)) {
            continue;
        }
        iov[n++] = (struct iovec){ .iov_base = (void *)(uintptr_t)a, .iov_len = THP };
        if (n == BATCH) {
            took += collapse(pidfd, iov, n);
            n = 0;
        }
    }
    return took + (n ? collapse(pidfd, iov, n) : 0);
}
