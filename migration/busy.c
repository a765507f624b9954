/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * "A restore is still running on this memory": a mark any process can see.
 *
 * While a lazy restore fills a memory file (shmem, hugetlbfs), pages not
 * yet placed are holes: a plain read of the file gives zeros there, and a
 * new mapping that touches one even plants a fresh page the fill will later
 * overwrite.  A save taken then would store zeros for real data.  So the
 * restore marks the file busy for as long as pages are missing, and every
 * save path looks for the mark first and refuses.
 *
 * The mark is an open-file-description lock (F_OFD_SETLK) on a byte range
 * far beyond any real file size: [SL_BUSY_BASE + offset, + length) for a
 * block at @offset of the file.  It is taken on a description of our own
 * (opened through /proc/self/fd), not on one shared with the consumer that
 * handed us the file, so it goes away when the restore ends it, or when the
 * restoring process dies, whatever other processes keep open.  Locks are
 * generic VFS state: tmpfs and hugetlbfs have them, nothing reads the file
 * there, and QEMU takes no lock on memory-backend files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "migration/format/format.h"
#include "busy.h"
#include "vmas.h"

#define SL_BUSY_BASE (1ll << 62)

static struct flock busy_range(short type, uint64_t offset, uint64_t length)
{
    return (struct flock){ .l_type = type, .l_whence = SEEK_SET,
                           .l_start = SL_BUSY_BASE + (off_t)offset, .l_len = (off_t)length };
}

int sl_busy_mark(int fd, uint64_t offset, uint64_t length, GError **errp)
{
    g_autofree char *self = g_strdup_printf("/proc/self/fd/%d", fd);
    struct flock fl = busy_range(F_WRLCK, offset, length);
    int own = open(self, O_RDWR | O_CLOEXEC);

    if (own < 0) { /* no /proc: our dup shares the consumer's description */
        own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    }
    if (own < 0 || fcntl(own, F_OFD_SETLK, &fl) < 0) {
        int err = errno;
        g_set_error(errp, SL_ERROR, err == EAGAIN ? SL_ERROR_STATE : SL_ERROR_IO,
                    "marking the memory file busy: %s", err == EAGAIN
                    ? "another restore is already running on this memory" : g_strerror(err));
        if (own >= 0) {
            close(own);
        }
        return -1;
    }
    return own;
}

void sl_busy_clear(int mark)
{
    if (mark >= 0) {
        close(mark); /* the last reference to its description: the lock goes */
    }
}

bool sl_busy_check(int fd, uint64_t offset, uint64_t length, const char *what, GError **errp)
{
    struct flock fl = busy_range(F_RDLCK, offset, length);

    if (length == 0 || fcntl(fd, F_OFD_GETLK, &fl) < 0 || fl.l_type == F_UNLCK) {
        return true; /* no lock support is no restore of ours either */
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "%s: a lazy restore is still running on this "
                "memory (pages not yet in place read as zeros): save it once the restore "
                "has completed", what);
    return false;
}

/* The file mapped at [start, end) of this process (/proc/self/map_files). */
static int open_mapped_file(uint64_t start, uint64_t end)
{
    g_autofree char *p = g_strdup_printf("/proc/self/map_files/%" G_GINT64_MODIFIER "x-%"
                                         G_GINT64_MODIFIER "x", start, end);
    return open(p, O_RDONLY | O_CLOEXEC);
}

/* What sl_busy_check_memory() walks with. */
typedef struct {
    uint64_t a, b;         /* the caller's memory */
    sl_busy_range *plain;
    GError **errp;
    bool busy;
} busy_walk;

/*
 * One mapping that overlaps [a, b): a busy memory file stops the walk.  A
 * mapping that is no shared file mapping and holds the whole range goes to
 * *plain.
 */
static bool check_vma(const sl_vma *v, void *opaque)
{
    busy_walk *w = opaque;
    uint64_t a = MAX(w->a, v->start), b = MIN(w->b, v->end);
    int fd;

    if (!v->shared || v->path[0] != '/') {
        if (v->start <= w->a && w->b <= v->end) {
            *w->plain = (sl_busy_range){ v->start, v->end };
        }
        return true; /* not a shared file mapping */
    }
    fd = open_mapped_file(v->start, v->end);
    if (fd < 0) {
        fd = open(v->path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        return true; /* nothing to look at (the file is gone): nobody restores it */
    }
    w->busy = !sl_busy_check(fd, v->offset + (a - v->start), b - a, v->path, w->errp);
    close(fd);
    return !w->busy;
}

bool sl_busy_check_memory(const void *addr, size_t len, sl_busy_range *plain, GError **errp)
{
    busy_walk w = { .a = (uintptr_t)addr, .b = (uintptr_t)addr + len, .plain = plain,
                    .errp = errp };

    if (plain->start <= w.a && w.b <= plain->end) {
        return true; /* inside private memory seen before */
    }
    *plain = (sl_busy_range){ 0, 0 };
    /* A list that cannot be read shows nothing busy (as without /proc). */
    return sl_vmas_each(0, w.a, w.b, false, check_vma, &w, NULL) ? !w.busy : true;
}
