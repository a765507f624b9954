/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Shared file memory: shmem (tmpfs files, memfds) and hugetlbfs with 2 MiB
 * or 1 GiB pages, restored in userfaultfd MINOR mode.
 *
 * Consumers map the file MAP_SHARED and register MISSING|MINOR.  Page data
 * goes into the file's page cache first, then UFFDIO_CONTINUE maps that
 * page into a consumer view.  CONTINUE answers both a MISSING fault (hole)
 * and a MINOR fault (cached, not mapped).  Zero units are materialised with
 * fallocate(), because CONTINUE cannot map a hole.  Every process that maps
 * the file sees the same page; each page is filled once.
 *
 * How the bytes get into the page cache differs.  shmem: read into a bounce
 * buffer (already faulted in, reused), checked there, then UFFDIO_COPY into
 * the first view, which allocates the pages in the kernel and maps them in
 * one call (pwrite() into the file when no view maps it yet): a user page
 * fault costs 12-20 us per 4 KiB here, either a fraction of that.  (Pages
 * populated ahead in an alias by a prefault thread made faults cheaper but
 * the fill 1.5x slower: they are cleared, which COPY never does.)
 * hugetlbfs has no write(): a prefault thread allocates the pages that will
 * hold data ahead of everyone (fallocate), and the bytes are read from the
 * snapshot straight into an unregistered alias mapping of the file (one
 * fault per hugepage, no bounce copy).
 */
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include "backend.h"
#include "../migration/uffd.h"
#include "migration/format/format.h"

static bool fail_io(GError **errp, const char *what, int err)
{
    g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", what, g_strerror(err));
    return false;
}

/* Shared part of map: size the file and map it shared as our consumer view. */
static bool map_file(sl_mem *m, int fd, uint64_t length, GError **errp)
{
    void *p;

    if (ftruncate(fd, (off_t)length) < 0) {
        close(fd);
        return fail_io(errp, "ftruncate of the memory file", errno);
    }
    p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return fail_io(errp, "mmap of the memory file", errno);
    }
    *m = (sl_mem){ .ops = m->ops, .host = p, .fd = fd, .length = length,
                   .owned = true, .own_fd = true };
    return true;
}

static bool shmem_map(sl_mem *m, uint64_t length, uint64_t hugepage, GError **errp)
{
    int fd = memfd_create("snapload-shmem", MFD_CLOEXEC);

    if (fd < 0) {
        return fail_io(errp, "memfd_create", errno);
    }
    if (!map_file(m, fd, length, errp)) {
        return false;
    }
    m->page_size = 4096;
    return true;
}

static bool hugetlbfs_map(sl_mem *m, uint64_t length, uint64_t hugepage, GError **errp)
{
    int fd;

    hugepage = sl_hugetlb_resolve(hugepage);
    if (hugepage == 0 || length % hugepage) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block length %" G_GUINT64_FORMAT
                    " is not a multiple of the hugepage size %" G_GUINT64_FORMAT,
                    length, hugepage);
        return false;
    }
    /* Blocks mapped before this one hold reservations: the check counts them. */
    if (!sl_hugetlb_check(hugepage, length / hugepage, errp)) {
        return false;
    }
    fd = sl_hugetlb_unlinked_fd(hugepage);
    if (fd < 0) {
        return fail_io(errp, "creating a file on hugetlbfs", errno);
    }
    if (!map_file(m, fd, length, errp)) {
        return false;
    }
    m->page_size = hugepage;
    return true;
}

/* Checks the file's filesystem, fixes the page size, maps the alias and
 * punches out old contents so every page faults once (unless the file is
 * reused: m->keep). */
static bool prepare_file(sl_mem *m, unsigned long magic, const char *fsname, GError **errp)
{
    struct statfs sfs;
    struct stat st = { 0 };
    void *alias;

    if (m->fd < 0 || fstatfs(m->fd, &sfs) < 0 || (unsigned long)sfs.f_type != magic) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID,
                    "the memory file is not on %s (backend '%s')", fsname, m->ops->name);
        return false;
    }
    m->page_size = magic == HUGETLBFS_MAGIC ? (uint64_t)sfs.f_bsize : 4096;
    if (m->length % m->page_size || m->offset % m->page_size ||
        (uintptr_t)m->host % m->page_size) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block length %" G_GUINT64_FORMAT
                    ", file offset %" G_GUINT64_FORMAT " and address must be multiples of "
                    "the %s page size %" G_GUINT64_FORMAT, m->length, m->offset, fsname,
                    m->page_size);
        return false;
    }
    if (fstat(m->fd, &st) < 0 || m->offset > (uint64_t)st.st_size ||
        m->length > (uint64_t)st.st_size - m->offset) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the memory file holds %" G_GINT64_FORMAT
                    " bytes, too few for the block's %" G_GUINT64_FORMAT " bytes at offset %"
                    G_GUINT64_FORMAT, (gint64)st.st_size, m->length, m->offset);
        return false;
    }
    alias = mmap(NULL, m->length, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, (off_t)m->offset);
    if (alias == MAP_FAILED) {
        return fail_io(errp, "mmap of the fill alias", errno);
    }
    m->alias = alias;
    /* A reused file: our own mapping forgets its pages (the file keeps them),
     * so each is mapped again only once checked. */
    if (m->keep && m->host && madvise(m->host, m->length, MADV_DONTNEED) < 0) {
        return fail_io(errp, "dropping our mapping of the reused memory file", errno);
    }
    if (!m->keep && fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              (off_t)m->offset, (off_t)m->length) < 0) {
        return fail_io(errp, "emptying the memory file (punch hole)", errno);
    }
    return true;
}

static bool shmem_prepare(sl_mem *m, GError **errp)
{
    return prepare_file(m, TMPFS_MAGIC, "tmpfs (/dev/shm or a memfd)", errp);
}

/*
 * tmpfs: what its size limit still allows, less what other files use.  A
 * memfd lives on the kernel's internal tmpfs, which has no limit
 * (f_blocks 0).
 */
static bool tmpfs_room(const sl_mem *m, uint64_t *free_bytes, uint64_t *dev)
{
    struct statfs sfs;
    struct stat st;

    if (fstatfs(m->fd, &sfs) < 0 || fstat(m->fd, &st) < 0 || sfs.f_blocks == 0) {
        return false;
    }
    *free_bytes = (uint64_t)sfs.f_bavail * (uint64_t)sfs.f_bsize;
    *dev = (uint64_t)st.st_dev;
    return true;
}

static bool hugetlbfs_prepare(sl_mem *m, GError **errp)
{
    return prepare_file(m, HUGETLBFS_MAGIC, "hugetlbfs", errp);
}

static uint8_t *alias_stage(const sl_mem *m, uint64_t off, uint8_t *bounce)
{
    return m->alias + off;
}

static uint8_t *bounce_stage(const sl_mem *m, uint64_t off, uint8_t *bounce)
{
    return bounce;
}

/* Maps the page cache's pages of [off, +len) into @v, write-protected if @wp. */
static int continue_wp(const sl_view *v, uint64_t off, uint64_t len, bool wp, uint64_t *done,
                       uint64_t *eagain)
{
    if (!v) { /* nobody maps the file yet: the page cache is all there is */
        *done = len;
        return 0;
    }
    return sl_uffd_continue(v->uffd, &v->fence, v->base + off, len, wp, done, eagain);
}

static int file_continue(const sl_mem *m, const sl_view *v, uint64_t off, uint64_t len,
                         uint64_t *done, uint64_t *eagain)
{
    (void)m;
    return continue_wp(v, off, len, v && v->wp, done, eagain);
}

static int alias_place(const sl_mem *m, const sl_view *v, uint64_t off, const uint8_t *src,
                       uint64_t len, uint64_t *done, uint64_t *eagain)
{
    /* The bytes are already in the page cache: staged through the alias. */
    return file_continue(m, v, off, len, done, eagain);
}

/* shmem: the staged bytes into the page cache (kernel-allocated pages), then map. */
static int pwrite_place(const sl_mem *m, const sl_view *v, uint64_t off, const uint8_t *src,
                        uint64_t len, uint64_t *done, uint64_t *eagain)
{
    int ret = sl_pwrite_full(m->fd, src, len, m->offset + off);

    if (ret < 0) {
        *done = 0;
        return ret;
    }
    return file_continue(m, v, off, len, done, eagain);
}

/*
 * shmem: the staged bytes go into the page cache and into @v in one
 * UFFDIO_COPY (it allocates each page in the kernel, fills it, adds it to
 * the file and maps it: no pwrite, no second ioctl on the fault path);
 * the other views CONTINUE it afterwards.  COPY needs a hole: where the
 * file already holds a page (left from before the restore), or where the
 * view's range cannot take COPY, the rest goes through pwrite_place,
 * which writes that page (no consumer maps it: it was never shown) and
 * maps it.
 */
static int shmem_place(const sl_mem *m, const sl_view *v, uint64_t off, const uint8_t *src,
                       uint64_t len, uint64_t *done, uint64_t *eagain)
{
    uint64_t copied = 0, rest_done = 0;
    int ret;

    if (!v) {
        return pwrite_place(m, v, off, src, len, done, eagain);
    }
    ret = sl_uffd_copy(v->uffd, &v->fence, (void *)(uintptr_t)(v->base + off), src, len, v->wp,
                       &copied, eagain);
    if (ret == 0 || (ret != -EEXIST && ret != -EINVAL)) {
        *done = copied;
        return ret;
    }
    ret = pwrite_place(m, v, off + copied, src + copied, len - copied, &rest_done, eagain);
    *done = copied + rest_done;
    return ret;
}

/* Test hook (sl_mem.allocating): the calling thread allocates [off, +len) now. */
static void allocating(const sl_mem *m, uint64_t off, uint64_t len)
{
    if (m->allocating) {
        m->allocating(m->allocating_opaque, off, len);
    }
}

/* Zeroed pages in the page cache for the holes of [off, +len), mapped into
 * @v (write-protected if @wp).  CONTINUE cannot map a hole.  fallocate
 * leaves pages already there alone (tmpfs and hugetlbfs both have it), so
 * it never writes into a page a consumer maps. */
static int zero_wp(const sl_mem *m, const sl_view *v, uint64_t off, uint64_t len, bool wp,
                   uint64_t *done, uint64_t *eagain)
{
    allocating(m, off, len);
    if (fallocate(m->fd, 0, (off_t)(m->offset + off), (off_t)len) < 0) {
        *done = 0;
        return -errno;
    }
    return continue_wp(v, off, len, wp, done, eagain);
}

static int file_zero(const sl_mem *m, const sl_view *v, uint64_t off, uint64_t len,
                     uint64_t *done, uint64_t *eagain)
{
    return zero_wp(m, v, off, len, v && v->wp, done, eagain);
}

/*
 * Map present units into @v.  A hole there means the guest discarded the
 * range (MADV_REMOVE): like the kernel would, give it zeros, protected
 * only where they are what the snapshot holds (@data false).  (A page that
 * left a tracking restore's page tables after a write is mapped back
 * written by the fault thread: fault.c, show_settled.)
 */
static int file_show(const sl_mem *m, const sl_view *v, uint64_t off, uint64_t len, unsigned how,
                     uint64_t *done, uint64_t *eagain)
{
    const bool wp = v && v->wp && !(how & SL_SHOW_WRITTEN);
    int ret = continue_wp(v, off, len, wp, done, eagain);

    if (ret == -EFAULT) {
        uint64_t rest = len - *done, more = 0;
        ret = zero_wp(m, v, off + *done, rest, wp && !(how & SL_SHOW_DATA), &more, eagain);
        *done += more;
    }
    return ret;
}

/*
 * hugetlbfs: allocating a 2 MiB page clears it (some 240 us here), more
 * than copying and checking its bytes; done ahead, on a core of its own,
 * it is off the fault path.  fallocate leaves existing pages alone.  It
 * allocates under the calling thread's memory policy: hugetlbfs keeps no
 * shared policy, so an mbind of the alias never reaches it (the engine
 * sets the thread's policy first: alloc_by_thread).
 */
static void hugetlbfs_prefault(const sl_mem *m, uint64_t off, uint64_t len)
{
    allocating(m, off, len);
    (void)!fallocate(m->fd, 0, (off_t)(m->offset + off), (off_t)len); /* best effort */
}

static void file_discard(const sl_mem *m, uint64_t off, uint64_t len)
{
    if (fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)(m->offset + off), (off_t)len) < 0) {
        memset(m->alias + off, 0, len); /* never leave corrupt bytes behind */
    }
}

/*
 * The file's pages of @runs go, out of every mapping: holes again
 * (MADV_REMOVE through the alias punches them, batched; else fallocate).
 */
static int file_drop(const sl_mem *m, const sl_range *runs, size_t n)
{
    if (m->alias) {
        return sl_madvise_ranges(m->alias, runs, n, MADV_REMOVE);
    }
    for (size_t i = 0; i < n; i++) {
        if (fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      (off_t)(m->offset + runs[i].off), (off_t)runs[i].len) < 0) {
            return -errno;
        }
    }
    return 0;
}

/* hugetlbfs (no write()): through the alias, whose pages the fill mapped. */
static int alias_rewrite(const sl_mem *m, uint64_t off, const uint8_t *src, uint64_t len)
{
    return sl_copy_safe(m->alias + off, src, len);
}

static void file_release(sl_mem *m)
{
    if (m->host) {
        munmap(m->host, m->length);
    }
    if (m->alias) {
        munmap(m->alias, m->length);
    }
    if (m->own_fd) {
        close(m->fd);
    }
}

#define FILE_OPS                                                              \
    .in_place = true,                                                         \
    .register_mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR, \
    .range_ioctls = SL_IOCTL(_UFFDIO_CONTINUE) | SL_IOCTL(_UFFDIO_WAKE),      \
    .zero = file_zero, .show = file_show, .discard = file_discard,             \
    .drop = file_drop, .release = file_release

const sl_backend_ops sl_backend_shmem = {
    .name = "shmem",
    .kind = SL_BACKEND_SHMEM,
    .holes = SL_HOLES_SEEK,
    .uffd_features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM,
    .map = shmem_map,
    .prepare = shmem_prepare,
    .bounce = true,
    .stage = bounce_stage,
    .place = shmem_place,
    .rewrite = sl_mem_host_rewrite,
    .room = tmpfs_room,
    FILE_OPS,
};

const sl_backend_ops sl_backend_hugetlbfs = {
    .name = "hugetlbfs",
    .kind = SL_BACKEND_HUGETLBFS,
    .holes = SL_HOLES_RESIDENT,
    .uffd_features = UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_MINOR_HUGETLBFS,
    .map = hugetlbfs_map,
    .prepare = hugetlbfs_prepare,
    .prefault = hugetlbfs_prefault,
    .alloc_by_thread = true,
    /* prepare and drop punch the range: a unit nobody placed is a hole, or
     * a page cleared when the prefault thread, a fault's fallocate or the
     * read's own fault allocated it (a read that failed wrote only stored
     * pages, which the next one rewrites) */
    .stage_zeroed = true,
    .stage = alias_stage,
    .place = alias_place,
    .rewrite = alias_rewrite,
    FILE_OPS,
};
