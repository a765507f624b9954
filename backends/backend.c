/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The table of backends, looked up by kind or by name.  Adding a backend
 * means adding its ops here; nothing else in the engine changes.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include "backend.h"

extern const sl_backend_ops sl_backend_anon;
extern const sl_backend_ops sl_backend_shmem;
extern const sl_backend_ops sl_backend_hugetlbfs;

static const struct {
    sl_backend_kind kind;
    const sl_backend_ops *ops;
} backends[] = {
    { SL_BACKEND_ANON, &sl_backend_anon },
    { SL_BACKEND_SHMEM, &sl_backend_shmem },
    { SL_BACKEND_HUGETLBFS, &sl_backend_hugetlbfs },
};

const sl_backend_ops *sl_backend_get(sl_backend_kind kind)
{
    for (size_t i = 0; i < G_N_ELEMENTS(backends); i++) {
        if (backends[i].kind == kind) {
            return backends[i].ops;
        }
    }
    return NULL;
}

bool sl_backend_by_name(const char *name, sl_backend_kind *kind)
{
    for (size_t i = 0; i < G_N_ELEMENTS(backends); i++) {
        if (strcmp(backends[i].ops->name, name) == 0) {
            *kind = backends[i].kind;
            return true;
        }
    }
    return false;
}

bool sl_mem_map(sl_mem *m, sl_backend_kind kind, uint64_t length, uint64_t hugepage,
                GError **errp)
{
    const sl_backend_ops *ops = sl_backend_get(kind);

    if (!ops) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "unknown backend kind %d", kind);
        return false;
    }
    *m = (sl_mem){ .ops = ops, .fd = -1 };
    return ops->map(m, length, hugepage, errp);
}

void sl_mem_release(sl_mem *m)
{
    if (m->owned && m->ops) {
        m->ops->release(m);
        m->owned = false;
    }
}

int sl_copy_safe(void *dst, const void *src, uint64_t len)
{
    /* The kernel copies, and an address it cannot fault in (a file mapping
     * past a truncation) is an error, not SIGBUS: the caller's own memory
     * is the "remote" process.  Page-sized pieces: process_vm_readv() may
     * stop short at any page. */
    for (uint64_t done = 0; done < len;) {
        struct iovec to = { (uint8_t *)dst + done, len - done };
        struct iovec from = { (uint8_t *)(uintptr_t)src + done, len - done };
        ssize_t n = process_vm_readv(getpid(), &to, 1, &from, 1, 0);
        if (n < 0 && (errno == EPERM || errno == ENOSYS)) {
            /* A seccomp policy that forbids the call: copied as before
             * it, safe unless the source shrinks meanwhile. */
            memcpy((uint8_t *)dst + done, (const uint8_t *)src + done, len - done);
            return 0;
        }
        if (n <= 0) {
            return n < 0 && errno != EFAULT ? -errno : -EIO;
        }
        done += (uint64_t)n;
    }
    return 0;
}

int sl_mem_host_rewrite(const sl_mem *m, uint64_t off, const uint8_t *src, uint64_t len)
{
    if (!m->host) {
        return -EOPNOTSUPP; /* another process's view: nothing of ours to write through */
    }
    return sl_copy_safe(m->host + off, src, len);
}

#define ADVISE_BATCH 1024 /* UIO_MAXIOV: ranges per process_madvise() */

/* One madvise() per range. */
static int advise_each(uint8_t *base, const sl_range *runs, size_t n, int advice)
{
    for (size_t i = 0; i < n; i++) {
        if (madvise(base + runs[i].off, runs[i].len, advice) < 0) {
            return -errno;
        }
    }
    return 0;
}

int sl_madvise_ranges(uint8_t *base, const sl_range *runs, size_t n, int advice)
{
    struct iovec iov[ADVISE_BATCH];
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    size_t i = 0;

    while (pidfd >= 0 && i < n) {
        size_t k = 0, want = 0;
        ssize_t got;
        for (; k < ADVISE_BATCH && i + k < n; k++) {
            iov[k] = (struct iovec){ base + runs[i + k].off, runs[i + k].len };
            want += runs[i + k].len;
        }
        got = syscall(SYS_process_madvise, pidfd, iov, k, advice, 0);
        if (got < 0 || (size_t)got != want) {
            break; /* not taken (or short): the rest one by one */
        }
        i += k;
    }
    if (pidfd >= 0) {
        close(pidfd);
    }
    return i == n ? 0 : advise_each(base, runs + i, n - i, advice); /* twice is harmless */
}
