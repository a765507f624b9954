/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Memory backends behind one ops table.  The engine (fault thread and
 * loaders) only calls through sl_backend_ops, so it never switches on the
 * kind of memory.
 *
 * Two kinds of objects:
 * - sl_mem: the memory of one block as the restore sees it.  For anonymous
 *   memory that is the consumer's mapping itself; for shared memory it is
 *   the file (fd + offset) plus an unregistered alias mapping through which
 *   the restore writes page data into the page cache.
 * - sl_view: one consumer mapping of that memory, registered with a
 *   userfaultfd, possibly in another process.  Anonymous memory has exactly
 *   one view; a shared file may have several (the VMM, vhost-user back-ends).
 *
 * A backend either copies from a bounce buffer into the view (anon:
 * UFFDIO_COPY) or fills the file's page cache and maps it into views
 * (in_place: UFFDIO_CONTINUE).  An in-place backend writes memory shared
 * with consumers, so the engine claims a unit before writing into it.
 * shmem copies a bounce buffer into the first view with UFFDIO_COPY (no
 * user page fault per 4 KiB page); hugetlbfs, which has no write(), fills
 * pages a prefault thread allocated ahead through an unregistered alias
 * mapping (one fault per hugepage).
 */
#ifndef SNAPLOAD_BACKEND_H
#define SNAPLOAD_BACKEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "snapload/snapload.h"
#include "migration/uffd.h"

typedef struct sl_backend_ops sl_backend_ops;

/** A byte range of a block: [off, off + len). */
typedef struct {
    uint64_t off, len;
} sl_range;

/*
 * The memory of one block.  Written by the thread that maps or attaches it,
 * read-only once the restore has started.
 */
typedef struct {
    const sl_backend_ops *ops;
    uint8_t *host;       /* our consumer mapping (NULL if we have none) */
    uint8_t *alias;      /* in_place: unregistered mapping used to fill pages */
    int fd;              /* shared backends: the memory file; -1 for anon */
    uint64_t offset;     /* where the block starts in the file */
    uint64_t length;
    uint64_t page_size;  /* the backend's placement granule */
    bool owned;          /* created by sl_mem_map: release unmaps/closes it */
    bool own_fd;         /* fd was opened/duped by us */
    bool keep;           /* config.keep_memory: prepare leaves the file's pages alone */
    sl_mover_fn mover;   /* anon of another process: moves chunks there (sl_restore_set_mover) */
    void *mover_opaque;
    /* Test hook, NULL in production: called on the thread about to allocate
     * the file's pages of [off, +len) with fallocate() (zeros; the hugetlbfs
     * prefault), right before it does. */
    void (*allocating)(void *opaque, uint64_t off, uint64_t len);
    void *allocating_opaque;
} sl_mem;

/*
 * One consumer mapping of an sl_mem, registered on @uffd.  Fields are set
 * before the view is published to the engine and read-only afterwards,
 * except @dead (set once, by whichever thread sees the consumer vanish or
 * misbehave, or by sl_restore_remove_views(); for our own mapping, by the
 * fault thread that read its unmap event), @users, and @uffd/@kept of a
 * dead view, which the fault thread alone changes, under views_lock, once
 * @users is 0: it seals the view and closes its uffd (-1), or marks it kept
 * if it could not be sealed.  A view struct is never freed before the
 * restore: a thread may still hold it after it died.
 */
typedef struct {
    int uffd;            /* the userfaultfd this mapping is registered on; -1: closed */
    uint64_t base;       /* address of the block's first byte in that process */
    uint64_t tag;        /* the caller's name for it (sl_restore_add_view_tagged) */
    bool own;            /* registered by us on the restore's own uffd */
    bool wp;             /* registered in WP mode too: place write-protected (own view
                          * of a restore with track_writes) */
    bool kept;           /* dead but not sealable: its uffd stays open to the end */
    _Atomic bool dead;   /* dropped: skip (seq_cst where @users is involved) */
    _Atomic unsigned users; /* threads using @uffd besides the fault thread (fault.c) */
    sl_uffd_fence fence; /* what each placing ioctl on @uffd checks (uffd.h): @dead,
                          * and for our own view the restore's placement lock */
} sl_view;

/* ops->show's @how. */
#define SL_SHOW_DATA 1u    /* the units hold snapshot data */
#define SL_SHOW_WRITTEN 2u /* map what is found as written (unprotected) */

/* ops->holes: how the engine finds the holes of a backend's memory file. */
#define SL_HOLES_NONE 0     /* no file (anonymous memory) */
#define SL_HOLES_SEEK 1     /* lseek(SEEK_DATA / SEEK_HOLE) */
#define SL_HOLES_RESIDENT 2 /* the page cache, by mincore() (hugetlbfs reports no hole
                             * to SEEK_HOLE) */

struct sl_backend_ops {
    const char *name;
    sl_backend_kind kind;
    bool in_place;           /* placing writes shared memory: claim before writing */
    bool bounce;             /* stage() uses the caller's bounce buffer (one unit, or a
                              * loader's claim of units): every thread placing has one */
    bool stage_zeroed;       /* what stage() returns for a unit not placed is zero (a
                              * hole, or a page the kernel has just cleared), unless
                              * sl_mem.keep: a read need not clear its zero pages */
    bool alloc_by_thread;    /* fallocate() (zero, show's hole, prefault) allocates under
                              * the calling thread's memory policy, not a mapping's
                              * (hugetlbfs keeps no shared policy): the engine runs those
                              * under the policy of the units' node */
    bool thp;                /* memory the kernel may back with transparent hugepages
                              * (anonymous): collapsed once complete, as after an
                              * eager load */
    uint8_t holes;           /* SL_HOLES_*: how a hole of the memory file is found */
    uint64_t uffd_features;  /* UFFD_FEATURE_* required at UFFDIO_API */
    uint64_t register_mode;  /* UFFDIO_REGISTER_MODE_* */
    uint64_t range_ioctls;   /* SL_IOCTL() bits the registered range must offer */

    /** Create fresh memory of @length bytes (file + mapping), owned by @m. */
    bool (*map)(sl_mem *m, uint64_t length, uint64_t hugepage, GError **errp);
    /** Check and complete attached memory (page size, alias); drop old contents. */
    bool (*prepare)(sl_mem *m, GError **errp);
    /** Where the bytes of [@off, +unit) must be read to (bounce or the alias). */
    uint8_t *(*stage)(const sl_mem *m, uint64_t off, uint8_t *bounce);
    /**
     * Make staged bytes @src the content of [@off, +@len) and map them in @v
     * (NULL for in-place memory nobody maps yet: the content only).
     */
    int (*place)(const sl_mem *m, const sl_view *v, uint64_t off, const uint8_t *src,
                 uint64_t len, uint64_t *done, uint64_t *eagain);
    /**
     * Like place, but the staged pages at @src (anonymous memory of this
     * process) are moved into @v, not copied: no copy, and a 2 MiB-aligned
     * range staged in a transparent hugepage stays one.  @src is left a
     * hole.  NULL where the backend cannot (only anonymous memory can);
     * the engine uses it only for its own mapping on a uffd that has
     * UFFD_FEATURE_MOVE, or for another process's memory through
     * sl_mem.mover (@src then keeps its bytes).  -EBUSY: the caller places
     * the rest with place.
     */
    int (*adopt)(const sl_mem *m, const sl_view *v, uint64_t off, uint8_t *src, uint64_t len,
                 uint64_t *done, uint64_t *eagain);
    /** Make [@off, +@len) zero and map it in @v. */
    int (*zero)(const sl_mem *m, const sl_view *v, uint64_t off, uint64_t len,
                uint64_t *done, uint64_t *eagain);
    /**
     * Map already present units into @v.  -EEXIST: already mapped (the
     * engine wakes the range).  A page the guest discarded (anon: no page;
     * a file: a hole) comes back as zeros.  @how, SL_SHOW_* bits:
     * SL_SHOW_DATA, the units hold snapshot data, so such zeros differ from
     * the snapshot and are mapped without write protection, where a
     * tracker counts them as written (found by review: mapped protected,
     * they read as unwritten, and every later reset kept the zeros);
     * SL_SHOW_WRITTEN, what is found is mapped without write protection
     * too (a written page that left the page tables, fault.c).
     */
    int (*show)(const sl_mem *m, const sl_view *v, uint64_t off, uint64_t len, unsigned how,
                uint64_t *done, uint64_t *eagain);
    /**
     * Make the pages of [@off, +@len) exist, zeroed, so that filling them
     * later costs no allocation and no clearing (may be NULL).  Never
     * touches a page that exists already, and maps nothing anywhere.
     */
    void (*prefault)(const sl_mem *m, uint64_t off, uint64_t len);
    /** Throw away the content of a corrupt unit (in_place only; may be NULL). */
    void (*discard)(const sl_mem *m, uint64_t off, uint64_t len);
    /**
     * Throw away the content of the @n ranges @runs (offset, length) so
     * that the next access to each faults again (a reset: anon drops our
     * own mapping's pages, batched; shared files punch holes, out of every
     * mapping).  0 or -errno.
     */
    int (*drop)(const sl_mem *m, const sl_range *runs, size_t n);
    /**
     * Overwrite [@off, +@len), present and mapped, with @src (an in-place
     * reset): the cheapest way that neither faults a registered view nor
     * lifts its write protection (anon and shmem: our own mapping, whose
     * written pages are present and writable, so a plain copy takes no
     * fault; hugetlbfs: the alias), by sl_copy_safe(): @src may be the
     * snapshot file mapped, truncated meanwhile.  0 or -errno.
     */
    int (*rewrite)(const sl_mem *m, uint64_t off, const uint8_t *src, uint64_t len);
    /**
     * The bytes the memory file's filesystem can still allocate and its
     * device (@dev), when it has a limit (a tmpfs size); false when it
     * has none or it cannot be told (may be NULL).  Setup only.
     */
    bool (*room)(const sl_mem *m, uint64_t *free_bytes, uint64_t *dev);
    /** Undo map (only for owned memory). */
    void (*release)(sl_mem *m);
};

/**
 * sl_copy_safe: copies @len bytes from @src to @dst, both in this process,
 * as the kernel copies (process_vm_readv()): a source it cannot read (a
 * file mapping whose file was truncated under it) gives -EIO, where a
 * memcpy would die of SIGBUS.  Where a seccomp policy forbids that call,
 * a plain memcpy.  0 or -errno.
 */
int sl_copy_safe(void *dst, const void *src, uint64_t len);

/**
 * sl_mem_host_rewrite: ops->rewrite through our own mapping of @m (a safe
 * copy into [@off, +@len) of m->host: @src may be a mapped snapshot file);
 * -EOPNOTSUPP when @m is another process's view.
 */
int sl_mem_host_rewrite(const sl_mem *m, uint64_t off, const uint8_t *src, uint64_t len);

/**
 * sl_madvise_ranges: madvise(@advice) each of the @n ranges @runs of the
 * mapping at @base, batched with process_madvise() on our own pidfd where
 * the kernel takes that advice there (a third of the time of one call per
 * scattered page here), else one madvise() per range.  0 or -errno.
 */
int sl_madvise_ranges(uint8_t *base, const sl_range *runs, size_t n, int advice);

/** sl_backend_get: the ops of @kind, or NULL if the kind is unknown. */
const sl_backend_ops *sl_backend_get(sl_backend_kind kind);

/** sl_backend_by_name: the kind called @name ("anon", "shmem", "hugetlbfs"). */
bool sl_backend_by_name(const char *name, sl_backend_kind *kind);

/**
 * sl_mem_map: fresh memory of @kind in @m (owned), with our own mapping.
 * @hugepage selects the page size of hugetlbfs (0: the default size).
 */
bool sl_mem_map(sl_mem *m, sl_backend_kind kind, uint64_t length, uint64_t hugepage,
                GError **errp);


/** sl_mem_release: release memory from sl_mem_map; no-op for unowned memory. */
void sl_mem_release(sl_mem *m);

/**
 * sl_hugetlb_check: fail unless a hugetlbfs mount for @hugepage exists and
 * at least @pages pages of that size are available: free and not reserved
 * by existing mappings (free_hugepages - resv_hugepages).  The error says
 * how many pages of which size are needed, how many are available, and the
 * commands that reserve them (scripts/hugetlb-setup.sh, or the sysfs write).
 */
bool sl_hugetlb_check(uint64_t hugepage, uint64_t pages, GError **errp);

/**
 * sl_hugetlb_check_blocks: the check for all @n blocks of @lengths at once,
 * before any is mapped: every length a multiple of the page size, and the
 * sum of their pages available.  @hugepage 0 means the host's default size.
 * @names (NULL: blocks are named by index) name the blocks in errors.
 */
bool sl_hugetlb_check_blocks(const uint64_t *lengths, const char *const *names, unsigned n,
                             uint64_t hugepage, GError **errp);

/**
 * sl_hugetlb_available: pages of the @hugepage pool that a new mapping may
 * take: free ones not already reserved by an existing mapping (0 if the
 * pool is unreadable).
 */
uint64_t sl_hugetlb_available(uint64_t hugepage);

/** sl_hugetlb_default_size: the host's default hugepage size (0 if none). */
uint64_t sl_hugetlb_default_size(void);

/** sl_hugetlb_resolve: @hugepage, or the host's default size when it is 0. */
uint64_t sl_hugetlb_resolve(uint64_t hugepage);

/** sl_hugetlb_unlinked_fd: an unlinked close-on-exec file on a mount for @hugepage, or -1. */
int sl_hugetlb_unlinked_fd(uint64_t hugepage);

#endif /* SNAPLOAD_BACKEND_H */
