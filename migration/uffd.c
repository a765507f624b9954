/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * userfaultfd wrappers (see uffd.h).  The fd is opened without
 * UFFD_USER_MODE_ONLY because faults raised by KVM on behalf of a vCPU are
 * kernel-mode faults.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include "snapload/snapload.h"
#include "uffd.h"

/* Bound on consecutive retries without progress; the kernel only answers
 * EAGAIN while the address space is changing under us. */
#define MAX_NO_PROGRESS 10000

static int open_raw(void)
{
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    int fd = -1;

    if (dev >= 0) {
        fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        close(dev);
    }
    if (fd < 0) {
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    }
    return fd;
}

/* Features the kernel offers: a handshake with features 0 reports them all. */
static uint64_t probe_features(void)
{
    struct uffdio_api api = { .api = UFFD_API };
    int fd = open_raw();
    uint64_t f = 0;

    if (fd >= 0 && ioctl(fd, UFFDIO_API, &api) == 0) {
        f = api.features;
    }
    if (fd >= 0) {
        close(fd);
    }
    return f;
}

bool sl_uffd_has_features(uint64_t features)
{
    return (probe_features() & features) == features;
}

int sl_uffd_open(uint64_t features, uint64_t optional, uint64_t *got, GError **errp)
{
    struct uffdio_api api = { .api = UFFD_API };
    int fd;
    /* UFFDIO_API may be issued once per fd, so optional features are
     * learnt on a throw-away fd first. */
    uint64_t want = features | (optional ? (probe_features() & optional) : 0);

    api.features = want;
    fd = open_raw();

    if (fd < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED,
                    "userfaultfd: %s (needs /dev/userfaultfd access, or CAP_SYS_PTRACE, "
                    "or vm.unprivileged_userfaultfd=1)", g_strerror(errno));
        return -1;
    }
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED,
                    "UFFDIO_API with features 0x%" G_GINT64_MODIFIER "x: %s",
                    (uint64_t)api.features, g_strerror(errno));
        close(fd);
        return -1;
    }
    if ((api.features & features) != features ||
        !(api.ioctls & SL_IOCTL(_UFFDIO_REGISTER)) ||
        !(api.ioctls & SL_IOCTL(_UFFDIO_UNREGISTER))) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED,
                    "userfaultfd lacks features 0x%" G_GINT64_MODIFIER "x or register ioctls",
                    (uint64_t)(features & ~api.features));
        close(fd);
        return -1;
    }
    if (got) {
        *got = want & api.features;
    }
    return fd;
}

bool sl_uffd_register(int uffd, void *addr, uint64_t len, uint64_t mode, uint64_t need,
                      uint64_t *got, GError **errp)
{
    struct uffdio_register reg = {
        .range = { .start = (uintptr_t)addr, .len = len }, .mode = mode,
    };

    if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
        g_set_error(errp, SL_ERROR, errno == EINVAL ? SL_ERROR_UNSUPPORTED : SL_ERROR_IO,
                    "UFFDIO_REGISTER %p+0x%" G_GINT64_MODIFIER "x mode 0x%" G_GINT64_MODIFIER
                    "x: %s", addr, len, mode, g_strerror(errno));
        return false;
    }
    if ((reg.ioctls & need) != need) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED,
                    "registered range lacks ioctls 0x%" G_GINT64_MODIFIER "x",
                    (uint64_t)(need & ~reg.ioctls));
        sl_uffd_unregister(uffd, addr, len);
        return false;
    }
    if (got) {
        *got = reg.ioctls;
    }
    return true;
}

/*
 * UFFDIO_UNREGISTER wakes the threads faulting in the range before it
 * clears the range's VMAs, but a thread faulting under the per-VMA lock
 * (kernel 6.6+) may queue itself after that wake and before the clear
 * write-locks its VMA; nobody would wake it again (its page is a hole we
 * never place: a zero page), and it would sleep until the uffd is closed.
 * Once the unregister has returned, every such thread has queued (the
 * clear waited for its VMA lock, which it drops only after queuing), so
 * one UFFDIO_WAKE of the range, which needs no registration, reaches all
 * of them; they retry the fault on an unregistered range.
 */
int sl_uffd_unregister(int uffd, void *addr, uint64_t len)
{
    struct uffdio_range r = { .start = (uintptr_t)addr, .len = len };

    if (ioctl(uffd, UFFDIO_UNREGISTER, &r) < 0) {
        return -errno;
    }
    return sl_uffd_wake(uffd, addr, len);
}

int sl_uffd_wake(int uffd, void *addr, uint64_t len)
{
    struct uffdio_range r = { .start = (uintptr_t)addr, .len = len };
    return ioctl(uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

/*
 * Shared retry loop: @op issues one ioctl for [dst+done, dst+len) and returns
 * its result and the bytes it did (negative progress is an errno).
 */
typedef int (*range_op)(int uffd, uint64_t dst, uint64_t src, uint64_t len, bool wp,
                        int64_t *did);

static int run_range(range_op op, int uffd, const sl_uffd_fence *fence, uint64_t dst, uint64_t src,
                     uint64_t len, bool wp, uint64_t *done, uint64_t *eagain)
{
    unsigned stalls = 0;

    *done = 0;
    while (*done < len) {
        int64_t did = 0;
        int ret;

        if (fence && fence->lock) {
            pthread_rwlock_rdlock(fence->lock);
        }
        /* seq_cst: pairs with the store of the fault thread that read the
         * memory's unmap event (lost.c); checked before every ioctl, the
         * first too, under the lock: the mapping there now may be someone
         * else's, registered on another uffd. */
        if (fence && fence->gone && atomic_load(fence->gone)) {
            ret = -ESRCH;
        } else {
            ret = op(uffd, dst + *done, src ? src + *done : 0, len - *done, wp, &did);
        }
        if (fence && fence->lock) {
            pthread_rwlock_unlock(fence->lock);
        }
        if (ret == -EAGAIN && did <= 0 && fence && fence->held_back) {
            /* seq_cst: pairs with the exchange in the fault thread's read */
            atomic_store(fence->held_back, true);
        }

        if (did > 0) {
            *done += (uint64_t)did;
            stalls = 0;
        }
        if (ret == 0) {
            continue;
        }
        if (ret != -EAGAIN || ++stalls > MAX_NO_PROGRESS || (did <= 0 && fence && fence->bail)) {
            return ret;
        }
        if (eagain) {
            (*eagain)++;
        }
        if (did <= 0) {
            /* What holds the range (a folio lock, a split, a move) belongs
             * to another thread, maybe on this CPU: let it run rather
             * than spin 10000 times against it. */
            sched_yield();
        }
    }
    return 0;
}

static int copy_op(int uffd, uint64_t dst, uint64_t src, uint64_t len, bool wp, int64_t *did)
{
    struct uffdio_copy c = { .dst = dst, .src = src, .len = len,
                             .mode = wp ? UFFDIO_COPY_MODE_WP : 0 };
    int ret = ioctl(uffd, UFFDIO_COPY, &c) < 0 ? -errno : 0;

    *did = ret == 0 ? (int64_t)len : c.copy;
    return ret;
}

static int zero_op(int uffd, uint64_t dst, uint64_t src, uint64_t len, bool wp, int64_t *did)
{
    struct uffdio_zeropage z = { .range = { .start = dst, .len = len } };
    int ret = ioctl(uffd, UFFDIO_ZEROPAGE, &z) < 0 ? -errno : 0;

    (void)src;
    (void)wp; /* ZEROPAGE has no WP mode: a tracker sees the zero page as written */
    *did = ret == 0 ? (int64_t)len : z.zeropage;
    return ret;
}

static int continue_op(int uffd, uint64_t dst, uint64_t src, uint64_t len, bool wp,
                       int64_t *did)
{
    struct uffdio_continue c = { .range = { .start = dst, .len = len },
                                 .mode = wp ? UFFDIO_CONTINUE_MODE_WP : 0 };
    int ret = ioctl(uffd, UFFDIO_CONTINUE, &c) < 0 ? -errno : 0;

    (void)src;
    *did = ret == 0 ? (int64_t)len : c.mapped;
    return ret;
}

int sl_uffd_copy(int uffd, const sl_uffd_fence *fence, void *dst, const void *src, uint64_t len,
                 bool wp, uint64_t *done, uint64_t *eagain)
{
    return run_range(copy_op, uffd, fence, (uintptr_t)dst, (uintptr_t)src, len, wp, done, eagain);
}

static int move_op(int uffd, uint64_t dst, uint64_t src, uint64_t len, bool wp, int64_t *did)
{
    struct uffdio_move m = { .dst = dst, .src = src, .len = len };
    int ret = ioctl(uffd, UFFDIO_MOVE, &m) < 0 ? -errno : 0;

    (void)wp; /* MOVE has no WP mode: never used where writes are tracked */
    *did = ret == 0 ? (int64_t)len : m.move;
    return ret;
}

int sl_uffd_move(int uffd, const sl_uffd_fence *fence, void *dst, void *src, uint64_t len,
                 uint64_t *done, uint64_t *eagain)
{
    return run_range(move_op, uffd, fence, (uintptr_t)dst, (uintptr_t)src, len, false, done,
                     eagain);
}

int sl_uffd_zero(int uffd, const sl_uffd_fence *fence, void *dst, uint64_t len, uint64_t *done,
                 uint64_t *eagain)
{
    return run_range(zero_op, uffd, fence, (uintptr_t)dst, 0, len, false, done, eagain);
}

static int poison_op(int uffd, uint64_t dst, uint64_t src, uint64_t len, bool wp, int64_t *did)
{
    struct uffdio_poison p = { .range = { .start = dst, .len = len } };
    int ret = ioctl(uffd, UFFDIO_POISON, &p) < 0 ? -errno : 0;

    (void)src;
    (void)wp;
    *did = ret == 0 ? (int64_t)len : p.updated;
    return ret;
}

int sl_uffd_poison(int uffd, const sl_uffd_fence *fence, void *dst, uint64_t len)
{
    uint64_t done;

    /* Like every range ioctl, it may stop part way (EAGAIN): go on. */
    return run_range(poison_op, uffd, fence, (uintptr_t)dst, 0, len, false, &done, NULL);
}

bool sl_uffd_changing(int uffd)
{
    /* A zero length is refused (EINVAL) only after the kernel looked at
     * its count of address-space changes in progress (EAGAIN). */
    struct uffdio_zeropage z = { .range = { .start = 0, .len = 0 } };

    return ioctl(uffd, UFFDIO_ZEROPAGE, &z) < 0 && errno == EAGAIN;
}

int sl_uffd_continue(int uffd, const sl_uffd_fence *fence, uint64_t addr, uint64_t len, bool wp,
                     uint64_t *done, uint64_t *eagain)
{
    return run_range(continue_op, uffd, fence, addr, 0, len, wp, done, eagain);
}

int sl_uffd_writeprotect(int uffd, uint64_t addr, uint64_t len, bool wp)
{
    struct uffdio_writeprotect w = {
        .range = { .start = addr, .len = len }, .mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };

    return ioctl(uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

ssize_t sl_uffd_read(int uffd, void *buf, size_t len)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    ssize_t n = preadv2(uffd, &iov, 1, -1, RWF_NOWAIT);
    int fl;

    if (n >= 0 || errno != EOPNOTSUPP) {
        return n;
    }
    /* A kernel whose uffd takes no RWF_NOWAIT: the file's own flag decides. */
    fl = fcntl(uffd, F_GETFL);
    if (fl < 0 || !(fl & O_NONBLOCK)) {
        errno = fl < 0 ? errno : EBADFD;
        return -1;
    }
    return read(uffd, buf, len);
}
