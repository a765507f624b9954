/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The preload client's write tracking for restarts (SNAPLOAD_TRACK=1,
 * qemu-restore --reuse-ram): the libc calls that change a file's data
 * without a page table seeing it (write, pwrite and kin, sendfile, splice,
 * copy_file_range, fallocate, truncate by descriptor or by path, an open
 * with O_TRUNC or a stdio stream opened for writing) are wrapped, and when
 * the file is a block's, the block is reported untracked (the daemon told,
 * pl_mark_untracked()) before the change is made, or the call fails with
 * EIO if the daemon cannot be told: the next restart then checks the whole
 * file instead of rewriting only the pages a list shows.  Each wrapper
 * then goes on to libc's own call (NEXT).  A write to a file on no block's
 * file system is told apart without a lock (may_change()).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include "preload.h"

/* fallocate modes that leave a file's data as it is: allocation alone. */
#define FALLOC_KEEPS_DATA(mode) (((mode) & ~FALLOC_FL_KEEP_SIZE) == 0)

/** fallocate: the libc call; a change of a tracked block's data (a punched
 * hole, a zeroed, collapsed or inserted range) is noted first. */
__attribute__((visibility("default")))
int fallocate(int fd, int mode, off_t off, off_t len)
{
    if (pl.active && pl.track && !FALLOC_KEEPS_DATA(mode) && !pl_note_untracked_fd(fd)) {
        return -1;
    }
    return NEXT(fallocate)(fd, mode, off, len);
}

/** fallocate64: the same. */
__attribute__((visibility("default")))
int fallocate64(int fd, int mode, off_t off, off_t len)
{
    return fallocate(fd, mode, off, len);
}

/*
 * Whether a change of the file @st describes, which no page table and so
 * no list of written pages shows, may go ahead: a block's file is
 * untracked first, and the change refused (EIO) if the daemon cannot be
 * told.  Found by review: a back-end's pwrite into guest RAM was kept as
 * the snapshot's by the next restart.
 */
static bool may_change(const struct stat *st)
{
    /* Without the lock, which a retirement holds across daemon round trips:
     * a write to a file on no block's file system (a disk image, a socket)
     * is none of ours. */
    if (!S_ISREG(st->st_mode)) {
        return true;
    }
    for (unsigned i = 0; i < pl.nblock_devs; i++) {
        if (pl.block_devs[i] == st->st_dev) {
            return pl_note_untracked_stat(st);
        }
    }
    return pl.block_devs_all ? true : pl_note_untracked_stat(st); /* a directory unknown */
}

/* may_change() of the file @fd is: writes through a descriptor (write,
 * pwrite and kin, sendfile, splice, copy_file_range, ftruncate). */
static bool may_write_fd(int fd)
{
    struct stat st;

    return !pl.active || !pl.track || fstat(fd, &st) < 0 || may_change(&st);
}

/* may_change() of the file @path names (from @dirfd), if it exists:
 * truncate by path, an open with O_TRUNC.  A path that does not resolve
 * is no block's file. */
static bool may_change_path(int dirfd, const char *path)
{
    struct stat st;

    return !pl.active || !pl.track || !path || fstatat(dirfd, path, &st, 0) < 0 ||
           may_change(&st);
}

/** write: the libc call, after may_write_fd() (a write after an lseek). */
__attribute__((visibility("default")))
ssize_t write(int fd, const void *buf, size_t n)
{
    return may_write_fd(fd) ? NEXT(write)(fd, buf, n) : -1;
}

/** writev: the same. */
__attribute__((visibility("default")))
ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    return may_write_fd(fd) ? NEXT(writev)(fd, iov, cnt) : -1;
}

/** sendfile: the libc call, after may_write_fd() of the file written. */
__attribute__((visibility("default")))
ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
    return may_write_fd(out) ? NEXT(sendfile)(out, in, off, n) : -1;
}

/** sendfile64: the same. */
__attribute__((visibility("default")))
ssize_t sendfile64(int out, int in, off_t *off, size_t n)
{
    return sendfile(out, in, off, n);
}

/** splice: the libc call, after may_write_fd() of the file written. */
__attribute__((visibility("default")))
ssize_t splice(int in, off_t *in_off, int out, off_t *out_off, size_t n, unsigned int flags)
{
    return may_write_fd(out) ? NEXT(splice)(in, in_off, out, out_off, n, flags) : -1;
}

/** truncate: the libc call, after may_change_path(). */
__attribute__((visibility("default")))
int truncate(const char *path, off_t len)
{
    return may_change_path(AT_FDCWD, path) ? NEXT(truncate)(path, len) : -1;
}

/** truncate64: the same. */
__attribute__((visibility("default")))
int truncate64(const char *path, off_t len)
{
    return truncate(path, len);
}

/* The mode an open call with @flags carries after them, in @mode. */
#define OPEN_MODE(flags, mode)                                                \
    do {                                                                      \
        if ((flags) & (O_CREAT | __O_TMPFILE)) {                              \
            va_list ap_;                                                      \
            va_start(ap_, flags);                                             \
            (mode) = va_arg(ap_, mode_t);                                     \
            va_end(ap_);                                                      \
        }                                                                     \
    } while (0)

/* Whether an open of @path (from @dirfd) with @flags may go ahead:
 * may_change_path() where it truncates. */
static bool may_open(int dirfd, const char *path, int flags)
{
    return !(flags & O_TRUNC) || may_change_path(dirfd, path);
}

/** openat: the libc call, after may_open(). */
__attribute__((visibility("default")))
int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return may_open(dirfd, path, flags) ? NEXT(openat)(dirfd, path, flags, mode) : -1;
}

/** open, open64, openat64, creat, creat64: as openat() (glibc's open is
 * openat of AT_FDCWD). */
__attribute__((visibility("default")))
int open(const char *path, int flags, ...)
{
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return openat(AT_FDCWD, path, flags, mode);
}

__attribute__((visibility("default")))
int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return openat(AT_FDCWD, path, flags, mode);
}

__attribute__((visibility("default")))
int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return openat(dirfd, path, flags, mode);
}

__attribute__((visibility("default")))
int creat(const char *path, mode_t mode)
{
    return openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

__attribute__((visibility("default")))
int creat64(const char *path, mode_t mode)
{
    return creat(path, mode);
}

/*
 * What -D_FORTIFY_SOURCE makes of an open whose flags the compiler cannot
 * see (QEMU imports __open64_2): as open() and openat(), without a mode.
 * Found by review: an O_TRUNC through them went unseen.
 */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

__attribute__((visibility("default")))
int __openat_2(int dirfd, const char *path, int flags)
{
    return may_open(dirfd, path, flags) ? NEXT(__openat_2)(dirfd, path, flags) : -1;
}

__attribute__((visibility("default")))
int __open_2(const char *path, int flags)
{
    return __openat_2(AT_FDCWD, path, flags);
}

__attribute__((visibility("default")))
int __open64_2(const char *path, int flags)
{
    return __openat_2(AT_FDCWD, path, flags);
}

__attribute__((visibility("default")))
int __openat64_2(int dirfd, const char *path, int flags)
{
    return __openat_2(dirfd, path, flags);
}

/* Whether stdio @mode lets the stream write ("w", "a" or "+"). */
static bool writable_mode(const char *mode)
{
    return mode && strpbrk(mode, "wa+") != NULL;
}

/*
 * stdio: a stream writes with libc's own calls, which no wrapper sees, so
 * a block's file opened (or a descriptor of it wrapped) for writing is
 * taken as changed at once.  Found by review: fopen(block, "r+") and a
 * fputc changed it unseen.
 */
__attribute__((visibility("default")))
FILE *fopen(const char *path, const char *mode)
{
    if (writable_mode(mode) && !may_change_path(AT_FDCWD, path)) {
        return NULL;
    }
    return NEXT(fopen)(path, mode);
}

__attribute__((visibility("default")))
FILE *fopen64(const char *path, const char *mode)
{
    return fopen(path, mode);
}

__attribute__((visibility("default")))
FILE *freopen(const char *path, const char *mode, FILE *stream)
{
    if (writable_mode(mode) && !(path ? may_change_path(AT_FDCWD, path)
                                      : may_write_fd(fileno(stream)))) {
        return NULL;
    }
    return NEXT(freopen)(path, mode, stream);
}

__attribute__((visibility("default")))
FILE *freopen64(const char *path, const char *mode, FILE *stream)
{
    return freopen(path, mode, stream);
}

__attribute__((visibility("default")))
FILE *fdopen(int fd, const char *mode)
{
    if (writable_mode(mode) && !may_write_fd(fd)) {
        return NULL;
    }
    return NEXT(fdopen)(fd, mode);
}

/** pwrite: the libc call, after may_write_fd(). */
__attribute__((visibility("default")))
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return may_write_fd(fd) ? NEXT(pwrite)(fd, buf, n, off) : -1;
}

/** pwrite64: the same. */
__attribute__((visibility("default")))
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite(fd, buf, n, off);
}

/** pwritev2: the libc call, after may_write_fd(). */
__attribute__((visibility("default")))
ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return may_write_fd(fd) ? NEXT(pwritev2)(fd, iov, cnt, off, flags) : -1;
}

/** pwritev, pwritev64, pwritev64v2: the same. */
__attribute__((visibility("default")))
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return may_write_fd(fd) ? NEXT(pwritev)(fd, iov, cnt, off) : -1;
}

__attribute__((visibility("default")))
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return pwritev(fd, iov, cnt, off);
}

__attribute__((visibility("default")))
ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return pwritev2(fd, iov, cnt, off, flags);
}

/** copy_file_range: the libc call, after may_write_fd() of the file written. */
__attribute__((visibility("default")))
ssize_t copy_file_range(int in, off_t *in_off, int out, off_t *out_off, size_t n,
                        unsigned flags)
{
    return may_write_fd(out) ? NEXT(copy_file_range)(in, in_off, out, out_off, n, flags) : -1;
}

/** ftruncate: the libc call, after may_write_fd(). */
__attribute__((visibility("default")))
int ftruncate(int fd, off_t len)
{
    return may_write_fd(fd) ? NEXT(ftruncate)(fd, len) : -1;
}

/** ftruncate64: the same. */
__attribute__((visibility("default")))
int ftruncate64(int fd, off_t len)
{
    return ftruncate(fd, len);
}
