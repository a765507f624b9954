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
 * (process_madvise on its pidfd).  Ranges the snapshot says are all zeros
 * are left alone: the eager load never touches them either, and collapsing
 * them would allocate 2 MiB of zeros each.  Best effort: a kernel or
 * mapping that cannot collapse leaves 4 KiB pages, which are just as
 * correct.
 *
 * The kernel copies a range into its new hugepage with that range unmapped
 * and the process's mmap lock held for writing: meanwhile any thread of
 * the process that faults, or maps or unmaps anything, waits.  Hence one
 * range per call: a process_madvise() of hundreds of ranges at once froze
 * a restored QEMU's guest for most of the collapse (a Linux guest, TCG,
 * 1 GiB, bench/linux.py, first answered 350-530 ms after migrate-incoming
 * where every page had been in place at 40-95 ms, in most runs on fresh
 * memory; one range per call, 60-140 ms: docs/bench.md, "The collapse
 * after completion, one range at a time").
 */
#include <errno.h>
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

/* Whether block offset [@off, +THP) of @b holds a page the snapshot stores
 * (pages larger than THP: the one page that holds the range). */
static bool range_has_data(const sl_block *b, uint64_t off)
{
    uint64_t first = off / b->page_size, end = (off + THP - 1) / b->page_size + 1;

    return sl_bit_any(b->bitmap, first, MIN(end, b->npages));
}

/*
 * MADV_COLLAPSE of [@a, +THP) in process @pidfd (-1: ours), tried twice if
 * the kernel says try again: 1 if it took; 0 if that range did not (busy,
 * no memory, not collapsible: the next may; also every range on kernels
 * 5.10-6.0, whose process_madvise() knows no MADV_COLLAPSE); -errno if
 * nothing more will (the process is gone, no permission).
 */
static int collapse_one(int pidfd, uint64_t a)
{
    struct iovec iov = { .iov_base = (void *)(uintptr_t)a, .iov_len = THP };

    for (int tries = 0; tries < 2; tries++) {
        long r = pidfd >= 0 ? syscall(SYS_process_madvise, pidfd, &iov, 1, MADV_COLLAPSE, 0)
                            : madvise(iov.iov_base, THP, MADV_COLLAPSE);
        if (r >= 0) {
            return 1;
        }
        if (errno != EAGAIN) {
            break;
        }
    }
    return errno == EAGAIN || errno == ENOMEM || errno == EINVAL || errno == EBUSY ? 0 : -errno;
}

uint64_t sl_thp_collapse(int pidfd, uint64_t base, const sl_snapshot *snap, unsigned block,
                         sl_thp_opts *o)
{
    const sl_block *b = &snap->blocks[block];
    uint64_t took = 0, first = (base + THP - 1) & ~(THP - 1);
    int ret = 0;

    for (uint64_t a = first; a + THP <= base + b->length && ret >= 0; a += THP) {
        /* Acquire: pairs with the release store of whoever asks the stop. */
        if (o && o->stop && atomic_load_explicit(o->stop, memory_order_acquire)) {
            break;
        }
        if (range_has_data(b, a - base)) {
            ret = collapse_one(pidfd, a);
            took += ret > 0 ? THP : 0;
        }
    }
    if (o) {
        o->err = ret < 0 ? -ret : 0;
    }
    return took;
}
