/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Thin, testable wrappers around the userfaultfd API: open (via
 * /dev/userfaultfd, falling back to the syscall), the API handshake with a
 * single check of the feature and ioctl masks, register/unregister, and the
 * range ioctls with their EAGAIN (partial progress) retry loops.  Range
 * ioctls return 0 or -errno and report how many bytes were done.
 */
#ifndef SNAPLOAD_UFFD_H
#define SNAPLOAD_UFFD_H

#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>
#include <linux/userfaultfd.h>
#include <glib.h>

#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
#define UFFD_FEATURE_POISON (1 << 14)
struct uffdio_poison {
    struct uffdio_range range;
    __u64 mode;
    __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif
#ifndef _UFFDIO_MOVE /* kernel 6.8; Debian 12's headers are older */
#define _UFFDIO_MOVE (0x05)
#define UFFD_FEATURE_MOVE (1 << 16)
struct uffdio_move {
    __u64 dst;
    __u64 src;
    __u64 len;
    __u64 mode;
    __s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
/* What written-page tracking needs (track.c, and a restore with track_writes). */
#define SL_UFFD_TRACK_FEATURES \
    (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM)

#define SL_IOCTL(x) (1ull << (x))

/**
 * sl_uffd_open: a non-blocking, close-on-exec userfaultfd that also sees
 * kernel-mode faults (KVM), handshaken for @features (all required) plus
 * those of @optional the kernel offers.  @got receives the features enabled.
 * Returns the fd or -1.
 */
int sl_uffd_open(uint64_t features, uint64_t optional, uint64_t *got, GError **errp);

/** sl_uffd_has_features: whether the kernel's userfaultfd offers all of @features. */
bool sl_uffd_has_features(uint64_t features);

/**
 * sl_uffd_register: register [@addr, @addr + @len) with @mode and check that
 * the range supports every ioctl in @need (SL_IOCTL(_UFFDIO_*) bits).
 * @got receives the range's ioctl mask.
 */
bool sl_uffd_register(int uffd, void *addr, uint64_t len, uint64_t mode, uint64_t need,
                      uint64_t *got, GError **errp);

/** sl_uffd_unregister: unregister, then wake whoever still waits in the range; 0 or -errno. */
int sl_uffd_unregister(int uffd, void *addr, uint64_t len);

/*
 * What a placing ioctl below checks first (NULL, or NULL members: nothing).
 * Once *@gone is set it issues no further ioctl and returns -ESRCH: it is
 * the view's dead flag, set when the memory was unmapped or moved (lost.c),
 * after which the address may hold someone else's mapping, registered on
 * another uffd, which the kernel would let us fill.  @lock (our own uffd's
 * views) is held for reading from that check to the end of each ioctl:
 * the fault thread takes it for writing while it reads an unmap event and
 * marks the view dead, so that no placement slips between the two.  An
 * EAGAIN without progress (the kernel holds placements back while an
 * unmap is in progress) sets *@held_back, which tells the fault thread to
 * take the lock for its next read.
 */
typedef struct {
    const _Atomic bool *gone;
    pthread_rwlock_t *lock;
    _Atomic bool *held_back;
    bool bail;            /* give up at the first EAGAIN without progress (-EAGAIN) */
} sl_uffd_fence;

/**
 * sl_uffd_copy: UFFDIO_COPY with retries on partial EAGAIN; *done = bytes
 * copied.  @wp maps the pages write-protected (the range must be registered
 * in WP mode): with asynchronous WP, a later write marks them written.
 */
int sl_uffd_copy(int uffd, const sl_uffd_fence *fence, void *dst, const void *src, uint64_t len,
                 bool wp, uint64_t *done, uint64_t *eagain);

/**
 * sl_uffd_move: UFFDIO_MOVE of our own anonymous pages at @src into @dst
 * (same process, uffd opened with UFFD_FEATURE_MOVE), with retries on
 * partial EAGAIN; *done = bytes moved.  No copy: the pages themselves
 * change place, a whole transparent hugepage at once where @src holds one
 * and @dst and @len are 2 MiB aligned; @src is left a hole.  -EBUSY: a
 * source page is pinned or shared (the caller copies it instead).
 */
int sl_uffd_move(int uffd, const sl_uffd_fence *fence, void *dst, void *src, uint64_t len,
                 uint64_t *done, uint64_t *eagain);

/** sl_uffd_zero: UFFDIO_ZEROPAGE with retries on partial EAGAIN. */
int sl_uffd_zero(int uffd, const sl_uffd_fence *fence, void *dst, uint64_t len, uint64_t *done,
                 uint64_t *eagain);

/**
 * sl_uffd_continue: UFFDIO_CONTINUE (map cached pages) with retries on
 * partial EAGAIN; @wp maps them write-protected, as for sl_uffd_copy().
 */
int sl_uffd_continue(int uffd, const sl_uffd_fence *fence, uint64_t addr, uint64_t len, bool wp,
                     uint64_t *done, uint64_t *eagain);

/** sl_uffd_writeprotect: UFFDIO_WRITEPROTECT of the range, protecting (@wp) or not; 0 or -errno. */
int sl_uffd_writeprotect(int uffd, uint64_t addr, uint64_t len, bool wp);

/**
 * sl_uffd_read: reads uffd messages into @buf without ever blocking, even
 * on a consumer's uffd whose O_NONBLOCK the consumer cleared from its own
 * copy of the file (it shares that flag with ours; a blocked read would
 * stall the fault thread for every view: found by review): preadv2 with
 * RWF_NOWAIT; where the kernel does not take that, a uffd found blocking
 * fails with EBADFD.  read()'s result and errno.
 */
ssize_t sl_uffd_read(int uffd, void *buf, size_t len);

/** sl_uffd_poison: UFFDIO_POISON: later accesses get SIGBUS; @fence as above. */
int sl_uffd_poison(int uffd, const sl_uffd_fence *fence, void *dst, uint64_t len);

/**
 * sl_uffd_changing: whether the kernel holds every placing ioctl on @uffd
 * back (EAGAIN) because an unmap or move of memory registered on it is in
 * progress: from its start until the thread doing it runs again after its
 * event was read (Linux 6.18; a kernel that checks the length first always
 * answers false).
 */
bool sl_uffd_changing(int uffd);

/** sl_uffd_wake: wake threads blocked on faults in the range. */
int sl_uffd_wake(int uffd, void *addr, uint64_t len);

#endif /* SNAPLOAD_UFFD_H */
