/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Consumer views of a restore's file-backed blocks: mappings of the same
 * memory file in this or another process (a vhost-user back-end), each
 * registered on its own userfaultfd that its owner hands over.  Views join
 * before or during the restore (a late one, after completion, is only
 * unregistered), leave by tag, and live in fixed slots of their region
 * that the fault thread and the loaders read without a lock (the ordering
 * rules are on sl_region.views in restore-int.h).  Publishers hold
 * views_lock.  A view of a shared file may map only a part of its block
 * (sl_restore_add_view_range(): a vhost-user back-end maps each memory
 * region on its own); the engine then serves and places only that part
 * there (sl_ranged_view).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "engine.h"
#include "restore-int.h"
#include "uffd.h"

sl_view *sl_view_alloc(int uffd, uint64_t addr, uint64_t off, uint64_t len)
{
    sl_ranged_view *rv = g_new0(sl_ranged_view, 1);

    rv->v.uffd = uffd;
    rv->v.fence.gone = &rv->v.dead;
    rv->v.base = addr - off; /* may wrap: only [off, off + len) is ever addressed */
    rv->off = off;
    rv->len = len;
    return &rv->v;
}

bool sl_view_publish(sl_restore *r, sl_region *reg, sl_view *v)
{
    /* relaxed: views_lock is held (or @r is ours alone): publishers are serialized */
    unsigned n = atomic_load_explicit(&reg->nviews, memory_order_relaxed);

    for (unsigned j = 0; j < n; j++) {
        sl_view *old = sl_region_view(reg, j);
        /* relaxed: @dead is set once and never cleared; views_lock orders the rest */
        if (!old->own && atomic_load_explicit(&old->dead, memory_order_relaxed)) {
            g_ptr_array_add(reg->dead_views, old);
            /* Release: @v is complete before a reader can load it. */
            atomic_store_explicit(&reg->views[j], v, memory_order_release);
            /* Release: pairs with the fault thread's acquire load (fault.c). */
            atomic_fetch_add_explicit(&r->views_gen, 1, memory_order_release);
            return true;
        }
    }
    if (n >= SL_MAX_VIEWS) {
        return false;
    }
    /* Relaxed: published by the release store of @nviews just below. */
    atomic_store_explicit(&reg->views[n], v, memory_order_relaxed);
    /* Release: the slot is written before readers can see the new count
     * (pairs with the acquire loads of @nviews: sl_view_count(), seal.c). */
    atomic_store_explicit(&reg->nviews, n + 1, memory_order_release);
    /* Release: pairs with the fault thread's acquire load (fault.c). */
    atomic_fetch_add_explicit(&r->views_gen, 1, memory_order_release);
    return true;
}

/* A live view whose uffd is the same open file as @uffd (kcmp), or NULL;
 * NULL too where kcmp is not allowed (a seccomp filter): then unchecked. */
static const sl_region *uffd_in_use(sl_restore *r, int uffd)
{
    pid_t self = getpid();

    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        /* relaxed, here and for @dead below: the caller holds views_lock */
        unsigned nv = atomic_load_explicit(&reg->nviews, memory_order_relaxed);
        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            if (!v->own && !atomic_load_explicit(&v->dead, memory_order_relaxed) &&
                syscall(SYS_kcmp, self, self, KCMP_FILE, v->uffd, uffd) == 0) {
                return reg;
            }
        }
    }
    return NULL;
}

static bool is_userfaultfd(int fd)
{
    g_autofree char *link = g_strdup_printf("/proc/self/fd/%d", fd);
    char target[64] = "";
    ssize_t n = readlink(link, target, sizeof(target) - 1);

    return n > 0 && strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

/* A live view of @reg, or NULL. */
static const sl_view *first_live_view(const sl_region *reg)
{
    /* Acquire: pairs with the release store of @nviews in sl_restore_add_view(). */
    unsigned nv = atomic_load_explicit(&((sl_region *)reg)->nviews, memory_order_acquire);

    for (unsigned j = 0; j < nv; j++) {
        const sl_view *v = sl_region_view(reg, j);
        /* relaxed: only a check of the caller's intent (anonymous memory has one
         * view); a view dying meanwhile changes nothing it protects */
        if (!atomic_load_explicit(&((sl_view *)v)->dead, memory_order_relaxed)) {
            return v;
        }
    }
    return NULL;
}

/* A late view after completion: every page is cached, so just unregister. */
static bool view_after_completion(int uffd, uint64_t addr, uint64_t len, GError **errp)
{
    int ret = sl_uffd_unregister(uffd, (void *)(uintptr_t)addr, len);

    if (ret < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "unregistering the late view: %s",
                    g_strerror(-ret));
        return false;
    }
    return true;
}

bool sl_restore_add_view(sl_restore *r, const char *name, int uffd, uint64_t base,
                         GError **errp)
{
    return sl_restore_add_view_tagged(r, name, uffd, base, 0, errp);
}

bool sl_restore_add_view_flags(sl_restore *r, const char *name, int uffd, uint64_t base,
                               uint64_t tag, unsigned flags, GError **errp)
{
    sl_region *reg = sl_region_of_block(r, name);

    /* The whole block (an unknown block is refused below, naming it). */
    return sl_restore_add_view_range(r, name, uffd, base, 0, reg ? reg->mem.length : 0, tag,
                                     flags, errp);
}

void sl_restore_remove_views(sl_restore *r, uint64_t tag)
{
    bool any = false;

    if (!r) {
        return;
    }
    g_mutex_lock(&r->views_lock);
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        /* relaxed: views_lock is held */
        unsigned nv = atomic_load_explicit(&reg->nviews, memory_order_relaxed);
        for (unsigned j = 0; j < nv; j++) {
            sl_view *v = sl_region_view(reg, j);
            if (v->own || v->tag != tag) {
                continue;
            }
            /* seq_cst: pairs with sl_view_enter() in engine.c. */
            atomic_store(&v->dead, true);
            any = true;
            /* Completed or stopped: the threads are done with views, whose
             * ranges are unregistered (or sealed; a kept one stays open).
             * Not started: no thread uses it, nothing was placed, and its
             * consumer (which keeps its own uffd) may reuse the range at
             * once (sl_restore_views_released()): sealing it at the start
             * could poison a new mapping there. */
            if ((r->views_closed || !r->started) && !v->kept && v->uffd >= 0) {
                close(v->uffd);
                v->uffd = -1;
            }
        }
    }
    g_mutex_unlock(&r->views_lock);
    if (any) { /* the fault thread closes their uffds and polls without them */
        /* Release: pairs with the fault thread's acquire load (fault.c). */
        atomic_fetch_add_explicit(&r->views_gen, 1, memory_order_release);
        sl_engine_kick(r->ctl_efd);
    }
}

/* Whether view @v is one of @tag's that still holds its uffd for the restore's use. */
static bool holds_uffd(const sl_view *v, uint64_t tag)
{
    return !v->own && v->tag == tag && v->uffd >= 0 && !v->kept;
}

/*
 * @v of @reg, reclaimed first if the fault thread has let the views go
 * and the last loader inside it left after that (found by review: the
 * fault thread skipped it while in use and was gone when it was free, so
 * its uffd stayed open until the free and its consumer waited 30 s to
 * unmap).  Caller holds views_lock.
 */
static const sl_view *released(sl_restore *r, sl_region *reg, sl_view *v)
{
    if (r->views_closed) {
        sl_view_reclaim(reg, v);
    }
    return v;
}

bool sl_restore_views_released(sl_restore *r, uint64_t tag)
{
    bool held = false;

    if (!r) {
        return true;
    }
    g_mutex_lock(&r->views_lock); /* the fault thread closes them under it */
    for (guint i = 0; !held && i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        /* relaxed: views_lock is held */
        unsigned nv = atomic_load_explicit(&reg->nviews, memory_order_relaxed);
        for (unsigned j = 0; !held && j < nv; j++) {
            held = holds_uffd(released(r, reg, sl_region_view(reg, j)), tag);
        }
        for (guint j = 0; !held && j < reg->dead_views->len; j++) {
            held = holds_uffd(released(r, reg, g_ptr_array_index(reg->dead_views, j)), tag);
        }
    }
    g_mutex_unlock(&r->views_lock);
    return !held;
}

bool sl_restore_add_view_tagged(sl_restore *r, const char *name, int uffd, uint64_t base,
                                uint64_t tag, GError **errp)
{
    return sl_restore_add_view_flags(r, name, uffd, base, tag, 0, errp);
}

/*
 * The alignment of a view's range: the placement unit (the larger of the
 * snapshot's page and the memory's), known before the restore starts too,
 * from the file system: a hugetlbfs page, else the system page.
 */
static uint64_t view_align(const sl_region *reg)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    struct statfs sfs;

    if (reg->mem.fd >= 0 && fstatfs(reg->mem.fd, &sfs) == 0 &&
        (uint64_t)sfs.f_type == HUGETLBFS_MAGIC) {
        page = (uint64_t)sfs.f_bsize;
    }
    return MAX(reg->blk->page_size, page);
}

/*
 * Why block bytes [@off, +@len) of @reg cannot be a view's range, or NULL:
 * inside the block, aligned to the placement unit (a view maps whole
 * units), and all of it for anonymous memory, which only its owner maps.
 */
static char *range_refused(const sl_region *reg, uint64_t off, uint64_t len)
{
    uint64_t align = view_align(reg), blen = reg->mem.length;

    if (!reg->mem.ops->in_place && (off != 0 || len != blen)) {
        return g_strdup_printf("bytes [%" G_GUINT64_FORMAT ", +%" G_GUINT64_FORMAT ") of its %"
                               G_GUINT64_FORMAT ": anonymous memory has one view, of the whole "
                               "block", off, len, blen);
    }
    if (len == 0 || off > blen || len > blen - off) {
        return g_strdup_printf("bytes [%" G_GUINT64_FORMAT ", +%" G_GUINT64_FORMAT ") are not "
                               "a part of the block, which has %" G_GUINT64_FORMAT " bytes",
                               off, len, blen);
    }
    if (off % align || len % align) {
        return g_strdup_printf("%s %" G_GUINT64_FORMAT " is not a multiple of the block's "
                               "placement unit, %" G_GUINT64_FORMAT " bytes (a view maps whole "
                               "pages)", off % align ? "offset" : "length",
                               off % align ? off : len, align);
    }
    return NULL;
}

/* Why a view of @reg on @uffd at @addr (bytes [@off, +@len)) cannot be; NULL if it can. */
static char *view_refused(const sl_restore *r, const sl_region *reg, int uffd, uint64_t addr,
                          uint64_t off, uint64_t len, unsigned flags)
{
    if (!reg) {
        return g_strdup("block not attached");
    }
    if (!reg->mem.ops->in_place && (reg->mem.host || first_live_view(reg))) {
        return g_strdup("anonymous memory is private to one process: it has one view, "
                        "already there");
    }
    if (!is_userfaultfd(uffd)) {
        return g_strdup("the fd is not a userfaultfd");
    }
    if (addr % MAX(reg->mem.page_size, 4096)) {
        return g_strdup("base address is not aligned to the memory's page size");
    }
    if (flags & ~SL_VIEW_WRITE_PROTECTED) {
        return g_strdup("unknown flags");
    }
    if ((flags & SL_VIEW_WRITE_PROTECTED) && !r->cfg.track_writes) {
        return g_strdup("write-protected views need a restore with config.track_writes (which "
                        "keeps them registered, and so protected, until the stop)");
    }
    return range_refused(reg, off, len);
}

/* A new view of @reg on a duplicate of @uffd, published; caller holds views_lock. */
static bool publish_new(sl_restore *r, sl_region *reg, int uffd, uint64_t addr, uint64_t off,
                        uint64_t len, uint64_t tag, unsigned flags, GError **errp)
{
    sl_view *v = sl_view_alloc(fcntl(uffd, F_DUPFD_CLOEXEC, 0), addr, off, len);

    v->tag = tag;
    v->wp = flags & SL_VIEW_WRITE_PROTECTED;
    if (v->uffd < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "view of block '%s': duplicating its uffd: %s",
                    reg->blk->name, g_strerror(errno));
    } else if (!sl_view_publish(r, reg, v)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s' has %u live views already",
                    reg->blk->name, SL_MAX_VIEWS);
        close(v->uffd);
    } else {
        return true;
    }
    g_free(v);
    return false;
}

bool sl_restore_add_view_range(sl_restore *r, const char *name, int uffd, uint64_t addr,
                               uint64_t offset, uint64_t length, uint64_t tag, unsigned flags,
                               GError **errp)
{
    sl_region *reg = sl_region_of_block(r, name);
    g_autofree char *why = NULL;
    const sl_region *other;
    bool ok = false;

    SL_ARG(r, errp, false);
    SL_ARG(name, errp, false);
    if ((why = view_refused(r, reg, uffd, addr, offset, length, flags))) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "view of block '%s': %s", name, why);
        return false;
    }
    /* Under the lock: either finish() or sl_restore_stop() sees this view
     * and unregisters it, or they have closed the views and we see that. */
    g_mutex_lock(&r->views_lock);
    if (r->views_closed && sl_restore_poll(r) == 0) {
        ok = view_after_completion(uffd, addr, length, errp);
        g_mutex_unlock(&r->views_lock);
        return ok;
    }
    if ((other = uffd_in_use(r, uffd))) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "view of block '%s': that uffd is "
                    "already a view of block '%s': hand over one uffd per mapping", name,
                    other->blk->name);
    } else if (r->views_closed ||
               /* Acquire: pairs with the release store in sl_engine_fail(). */
               atomic_load_explicit(&r->stopping, memory_order_acquire)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "view of block '%s': the restore has "
                    "stopped before completion (%s)", name, g_strerror(-sl_restore_poll(r)));
    } else {
        ok = publish_new(r, reg, uffd, addr, offset, length, tag, flags, errp);
    }
    g_mutex_unlock(&r->views_lock);
    if (ok) {
        sl_engine_kick(r->ctl_efd); /* the fault thread polls it now */
    }
    return ok;
}
