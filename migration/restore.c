/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Lifecycle of a lazy restore: create, attach memory per block, start
 * (userfaultfd handshake and registration, then the engine's threads),
 * poll/wait, stop and statistics.  Consumer views are in views.c; the
 * engine itself is in engine.c (placement), fault.c (the fault thread) and
 * loader.c (the loaders).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/stat.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include "restore-int.h"
#include "busy.h"
#include "uffd.h"
#include "fork.h"
#include "vmas.h"

uint64_t sl_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Whether @cfg sets nothing this library does not know: a newer caller's
 * larger struct with a field set past ours is refused, as unknown open
 * flags are, never silently ignored (found by review). */
static bool known_config(const sl_restore_config *cfg, GError **errp)
{
    const uint8_t *extra = (const uint8_t *)cfg + sizeof(*cfg);

    if (cfg->size > 4096) { /* read nothing past a struct no caller has */
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "sl_restore_config: size %u is no "
                    "struct's size: set it to sizeof(sl_restore_config)", (unsigned)cfg->size);
        return false;
    }
    for (size_t i = 0; cfg->size > sizeof(*cfg) && i < cfg->size - sizeof(*cfg); i++) {
        if (extra[i]) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "sl_restore_config: byte %zu of %zu "
                        "is set, but this library knows only %zu: a newer option it cannot "
                        "honour", sizeof(*cfg) + i, (size_t)cfg->size, sizeof(*cfg));
            return false;
        }
    }
    return true;
}

/*
 * The lock between placements into our own mapping and the fault thread's
 * read of an unmap event (uffd.h, lost.c): writer first, so that placers
 * retrying an EAGAIN in a loop cannot keep the fault thread out.
 */
static void init_place_lock(pthread_rwlock_t *lock)
{
    pthread_rwlockattr_t attr;

    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
}

sl_restore *sl_restore_new(sl_snapshot *snap, const sl_restore_config *cfg, GError **errp)
{
    sl_restore *r;
    const char *topology;

    SL_ARG(snap, errp, NULL);
    if (cfg && !known_config(cfg, errp)) {
        return NULL;
    }
    r = g_new0(sl_restore, 1);
    if (cfg) { /* an older caller's smaller struct leaves the newer fields zero */
        memcpy(&r->cfg, cfg, MIN(cfg->size ? cfg->size : sizeof(*cfg), sizeof(r->cfg)));
    }
    topology = r->cfg.numa_topology;
    r->cfg.size = sizeof(r->cfg);
    /* Nothing to check pages or prove bits against (QEMU's file without a
     * sidecar index): they are placed as the file says, as QEMU would. */
    r->cfg.no_checksum |= !sl_snapshot_has_checksums(snap);
    r->snap = sl_snapshot_ref(snap);
    r->regions = g_ptr_array_new();
    r->uffd = -1;
    r->fault_fd = -1;
    r->direct_fd = -1;
    r->pagemap_fd = -1;
    atomic_init(&r->generation, 1);
    g_mutex_init(&r->views_lock);
    g_mutex_init(&r->show_lock);
    g_mutex_init(&r->save_reset_lock);
    g_mutex_init(&r->stop_lock);
    init_place_lock(&r->place_lock);
    r->ctl_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    atomic_init(&r->status, -EINPROGRESS);
    if (r->ctl_efd < 0 || r->done_efd < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "eventfd: %s", g_strerror(errno));
        sl_restore_free(r);
        return NULL;
    }
    if (r->cfg.loader_threads > SL_MAX_LOADER_THREADS) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "loader_threads %u: at most %u per node",
                    r->cfg.loader_threads, SL_MAX_LOADER_THREADS);
        sl_restore_free(r);
        return NULL;
    }
    if (r->cfg.direct_reads > SL_DIRECT_ALWAYS) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "direct_reads %u: not SL_DIRECT_AUTO, "
                    "SL_DIRECT_OFF or SL_DIRECT_ALWAYS", r->cfg.direct_reads);
        sl_restore_free(r);
        return NULL;
    }
    r->cfg.numa_topology = NULL; /* the caller's string is not kept */
    if (!(topology ? sl_topology_parse(topology, &r->topo, errp)
                   : sl_topology_discover(&r->topo, errp))) {
        sl_restore_free(r);
        return NULL;
    }
    return r;
}

static bool check_attach(sl_restore *r, int idx, const char *name, void *addr,
                         uint64_t length, const sl_backend_ops *ops, GError **errp)
{
    const char *why = NULL;

    if (r->started) {
        why = "the restore has already started";
    } else if (idx < 0) {
        why = "the snapshot has no block of that name";
    } else if (!r->snap->blocks[idx].in_file) {
        why = "its pages are not in the snapshot (x-ignore-shared left them in its memory "
              "file): nothing to restore it from";
    } else if (!ops) {
        why = "unknown backend kind";
    } else if (length != r->snap->blocks[idx].length) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': attached length %"
                    G_GUINT64_FORMAT " differs from the snapshot's %" G_GUINT64_FORMAT,
                    name, length, r->snap->blocks[idx].length);
        return false;
    } else if (addr && (uintptr_t)addr % (uint64_t)sysconf(_SC_PAGESIZE)) {
        why = "address is not page aligned";
    }
    for (guint i = 0; !why && i < r->regions->len; i++) {
        sl_region *o = g_ptr_array_index(r->regions, i);
        uintptr_t a = (uintptr_t)addr, b = (uintptr_t)o->mem.host;
        if ((int)o->block == idx) {
            why = "block attached twice";
        } else if (addr && b && a < b + o->mem.length && b < a + length) {
            why = "its memory overlaps another attached block's";
        }
    }
    if (why) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': %s", name, why);
        return false;
    }
    return true;
}

static sl_region *add_region(sl_restore *r, int idx, const sl_mem *mem)
{
    sl_region *reg = g_new0(sl_region, 1);

    reg->r = r;
    reg->busy = -1;
    reg->dead_views = g_ptr_array_new();
    reg->index = r->regions->len;
    reg->bind = -2; /* no binding yet: resolved at start */
    reg->block = (unsigned)idx;
    reg->blk = &r->snap->blocks[idx];
    reg->mem = *mem;
    if (mem->host) {
        /* our uffd, set at start; our mapping holds the whole block */
        sl_view *v = sl_view_alloc(-1, (uintptr_t)mem->host, 0, mem->length);
        v->own = true;
        v->fence.lock = &r->place_lock; /* our uffd's unmap events (lost.c) */
        v->fence.held_back = &r->held_back;
        sl_view_publish(r, reg, v);
    }
    g_ptr_array_add(r->regions, reg);
    return reg;
}

bool sl_restore_attach(sl_restore *r, const char *name, void *addr, uint64_t length,
                       sl_backend_kind kind, GError **errp)
{
    const sl_backend_ops *ops = sl_backend_get(kind);
    sl_mem mem = { .ops = ops, .host = addr, .length = length, .fd = -1 };
    int idx;

    SL_ARG(r, errp, false);
    SL_ARG(name, errp, false);
    idx = sl_snapshot_find_block(r->snap, name);
    if (!check_attach(r, idx, name, addr, length, ops, errp)) {
        return false;
    }
    if (ops->in_place) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': backend '%s' keeps memory "
                    "in a file: use sl_restore_attach_file()", name, ops->name);
        return false;
    }
    add_region(r, idx, &mem); /* no address: its one view comes from its owner */
    return true;
}

/* @length and @offset of block @name are whole pages of the file system of
 * @fd (a hugetlbfs page: found by review, a 64 KiB block was refused only
 * at the start, by an madvise's EINVAL). */
static bool whole_file_pages(const char *name, int fd, uint64_t length, uint64_t offset,
                             GError **errp)
{
    struct statfs sfs;

    if (fstatfs(fd, &sfs) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': memory fd %d: %s", name, fd,
                    g_strerror(errno));
        return false;
    }
    if (sfs.f_bsize > 0 && (length % (uint64_t)sfs.f_bsize || offset % (uint64_t)sfs.f_bsize)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': length %" G_GUINT64_FORMAT
                    " and offset %" G_GUINT64_FORMAT " must be multiples of the memory's page "
                    "size, %ld bytes", name, length, offset, (long)sfs.f_bsize);
        return false;
    }
    return true;
}

bool sl_restore_attach_file(sl_restore *r, const char *name, void *addr, uint64_t length,
                            sl_backend_kind kind, int fd, uint64_t offset, GError **errp)
{
    const sl_backend_ops *ops = sl_backend_get(kind);
    sl_mem mem = { .ops = ops, .host = addr, .length = length, .offset = offset,
                   .own_fd = true };
    int idx;

    SL_ARG(r, errp, false);
    SL_ARG(name, errp, false);
    idx = sl_snapshot_find_block(r->snap, name);
    if (!check_attach(r, idx, name, addr, length, ops, errp)) {
        return false;
    }
    if (!ops->in_place) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': backend '%s' is not "
                    "file-backed: use sl_restore_attach()", name, ops->name);
        return false;
    }
    if (!whole_file_pages(name, fd, length, offset, errp)) {
        return false;
    }
    if (addr && !sl_vmas_check_file(addr, length, fd, offset, errp)) {
        g_prefix_error(errp, "block '%s': ", name);
        return false;
    }
    mem.fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (mem.fd < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': memory fd %d: %s",
                    name, fd, g_strerror(errno));
        return false;
    }
    add_region(r, idx, &mem);
    return true;
}

bool sl_mem_attach(sl_restore *r, const char *name, const sl_mem *m, GError **errp)
{
    if (m->ops->in_place) {
        return sl_restore_attach_file(r, name, m->host, m->length, m->ops->kind, m->fd,
                                      m->offset, errp);
    }
    return sl_restore_attach(r, name, m->host, m->length, m->ops->kind, errp);
}

sl_region *sl_region_of_block(sl_restore *r, const char *name)
{
    for (guint i = 0; r && name && i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (strcmp(reg->blk->name, name) == 0) {
            return reg;
        }
    }
    return NULL;
}

bool sl_restore_bind(sl_restore *r, const char *name, int node, GError **errp)
{
    sl_region *reg = sl_region_of_block(r, name);
    int idx;

    SL_ARG(r, errp, false);
    SL_ARG(name, errp, false);
    idx = sl_topology_index(&r->topo, node);
    if (!reg || idx < 0 || r->started) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "bind '%s' to node %d: %s", name, node,
                    !reg ? "block not attached" : idx < 0 ? "no such node in the topology"
                                                          : "the restore has started");
        return false;
    }
    reg->bind = idx;
    return true;
}

bool sl_restore_set_mover(sl_restore *r, const char *name, sl_mover_fn fn, void *opaque,
                          GError **errp)
{
    sl_region *reg = sl_region_of_block(r, name);

    SL_ARG(r, errp, false);
    SL_ARG(name, errp, false);
    SL_ARG(fn, errp, false);
    if (!reg || r->started || reg->mem.ops->kind != SL_BACKEND_ANON || reg->mem.host) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "a mover for '%s': %s", name,
                    !reg ? "block not attached" : r->started ? "the restore has started"
                    : reg->mem.host ? "its memory is ours: the loaders move into it themselves"
                                    : "only anonymous memory is moved into");
        return false;
    }
    reg->mem.mover = fn;
    reg->mem.mover_opaque = opaque;
    return true;
}

GBytes *sl_restore_recorded(const sl_restore *r)
{
    if (!r || !r->recorded) {
        return g_bytes_new(NULL, 0);
    }
    return g_bytes_new(r->recorded->data, (gsize)r->recorded->len * 16);
}

/* Whether the kernel's userfaultfd offers this restore all of @features:
 * those a test withholds (uffd_features_withheld) count as absent. */
static bool offers(const sl_restore *r, uint64_t features)
{
    return !(features & r->uffd_features_withheld) && sl_uffd_has_features(features);
}

/*
 * Whether the loaders may move whole chunks into @reg (ops->adopt) rather
 * than copy: not refused (config.place_by_copy), no write tracking (MOVE
 * has no WP mode), units of one page, and either our own mapping, 2 MiB aligned so a chunk is
 * one hugepage, on a kernel with UFFDIO_MOVE (register_regions() confirms
 * it for the uffd it opens), or another process's memory with a mover
 * (sl_restore_set_mover: its owner moves what we hand it).
 */
static bool may_move(const sl_restore *r, const sl_region *reg)
{
    bool own = reg->mem.host && (uintptr_t)reg->mem.host % SL_MOVE_BYTES == 0 &&
               offers(r, UFFD_FEATURE_MOVE);

    /* One page per unit: a move that stops inside a unit (done is in pages)
     * must leave units whole, placed or not, for the copy that follows. */
    return reg->mem.ops->adopt && (own || (!reg->mem.host && reg->mem.mover)) &&
           !r->cfg.place_by_copy && !r->cfg.track_writes &&
           reg->unit == (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Fix units and chunk numbering once backends have told their page size;
 * false with @errp if a page map cannot be had (its region keeps none). */
static bool layout_regions(sl_restore *r, GError **errp)
{
    bool ok = true;

    uint64_t chunk = 0, remaining = 0;

    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        reg->unit = MAX(reg->blk->page_size, reg->mem.page_size);
        reg->ratio = reg->unit / reg->blk->page_size;
        reg->nunits = reg->mem.length / reg->unit;
        reg->map = ok ? sl_pagemap_new(reg->nunits, errp) : NULL;
        ok = ok && reg->map;
        reg->move = may_move(r, reg);
        reg->chunk_units = MAX(1, (reg->move ? SL_MOVE_BYTES : SL_CHUNK_BYTES) / reg->unit);
        reg->claim_units = MAX(1, SL_CLAIM_BYTES / reg->unit);
        reg->first_chunk = chunk;
        reg->nchunks = (reg->nunits + reg->chunk_units - 1) / reg->chunk_units;
        chunk += reg->nchunks;
        remaining += reg->nunits;
        if (reg->mem.ops->bounce) {
            r->max_bounce = MAX(r->max_bounce, reg->unit);
            r->max_chunk = MAX(r->max_chunk, reg->chunk_units * reg->unit);
        }
    }
    r->total_chunks = chunk;
    /* relaxed: set before any thread that counts it down is started */
    atomic_store_explicit(&r->remaining, remaining, memory_order_relaxed);
    return ok;
}

/* Bytes region @reg's stored pages take in its memory (zero pages stay holes). */
static uint64_t stored_bytes(const sl_region *reg)
{
    return reg->blk->present_pages * reg->blk->page_size;
}

/*
 * Refuses, before anything is registered, a restore whose stored pages
 * cannot fit in the size-limited tmpfs that holds them (less what other
 * files there use): the fill would stop part way with ENOSPC (an eager
 * load would take SIGBUS).  Blocks on one tmpfs are counted together.
 * Zero pages the guest touches later need room too; only the run tells
 * (it then fails with ENOSPC, see sl_restore_error()).  A reused memory
 * file (keep_memory) holds its pages already.
 */
static bool check_room(sl_restore *r, GError **errp)
{
    /* One entry per size-limited tmpfs: its device, room, need, first block. */
    typedef struct { uint64_t dev, free_bytes, need; const sl_region *first; } tmpfs_need;
    g_autofree tmpfs_need *fs = g_new0(tmpfs_need, r->regions->len);
    unsigned nfs = 0;

    for (guint i = 0; i < r->regions->len; i++) {
        const sl_region *reg = g_ptr_array_index(r->regions, i);
        uint64_t free_bytes, dev;
        unsigned k = 0;
        if (reg->mem.keep || !reg->mem.ops->room ||
            !reg->mem.ops->room(&reg->mem, &free_bytes, &dev)) {
            continue;
        }
        while (k < nfs && fs[k].dev != dev) {
            k++;
        }
        if (k == nfs) {
            fs[nfs++] = (tmpfs_need){ .dev = dev, .free_bytes = free_bytes, .first = reg };
        }
        fs[k].need += stored_bytes(reg);
    }
    for (unsigned k = 0; k < nfs; k++) {
        if (fs[k].need > fs[k].free_bytes) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': the snapshot stores %"
                        G_GUINT64_FORMAT " bytes of pages for the tmpfs that holds its memory, "
                        "which has only %" G_GUINT64_FORMAT " bytes free: enlarge it "
                        "(mount -o remount,size=...) or free room there", fs[k].first->blk->name,
                        fs[k].need, fs[k].free_bytes);
            return false;
        }
    }
    return true;
}

/*
 * Marks every memory file busy (busy.c: saves refuse it until every page is
 * in place), empties every region's memory and learns its page size.
 */
static bool prepare_regions(sl_restore *r, GError **errp)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (reg->mem.fd >= 0 &&
            (reg->busy = sl_busy_mark(reg->mem.fd, reg->mem.offset, reg->mem.length, errp)) < 0) {
            g_prefix_error(errp, "block '%s': ", reg->blk->name);
            return false;
        }
        if (r->cfg.keep_memory && !reg->mem.ops->in_place) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': keep_memory needs a "
                        "shared memory file (shmem, hugetlbfs), not %s memory", reg->blk->name,
                        reg->mem.ops->name);
            return false;
        }
        /* Without checksums only a caller's list (keep_known) can prove a unit. */
        reg->mem.keep = r->cfg.keep_memory && (!r->cfg.no_checksum || reg->changed);
        if (!reg->mem.ops->prepare(&reg->mem, errp)) {
            g_prefix_error(errp, "block '%s': ", reg->blk->name);
            return false;
        }
    }
    return check_room(r, errp); /* after prepare: the old contents are punched out */
}

/*
 * track_writes: our uffd also does asynchronous WP, and PAGEMAP_SCAN reads
 * /proc/self/pagemap.  Our own views register WP as well and place
 * write-protected; every page of them comes from a placement (MISSING and
 * MINOR are registered, the memory was emptied), so nothing else needs
 * protecting.  Without async WP (a kernel before 6.7, or
 * track_without_wp) the restore falls back to counting every unit as
 * written (SL_TRACK_ALL): correct, in O(guest RAM).
 */
static bool open_tracking(sl_restore *r, uint64_t *features, GError **errp)
{
    if (!r->cfg.track_writes) {
        return true;
    }
    r->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (r->pagemap_fd < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED, "track_writes: /proc/self/pagemap: %s",
                    g_strerror(errno));
        return false;
    }
    r->tracking = SL_TRACK_ALL;
    if (!r->cfg.track_without_wp && offers(r, SL_UFFD_TRACK_FEATURES)) {
        *features |= SL_UFFD_TRACK_FEATURES;
        r->tracking = SL_TRACK_ASYNC_WP;
    }
    return true;
}

/*
 * The events that tell us our own mapping was unmapped or moved (lost.c),
 * where the kernel can poison too: the memory left behind is then sealed.
 * Without poison a seal may have to keep the range registered for good,
 * and a later munmap of it would wait for ever for a reader of its event.
 */
static uint64_t unmap_events(const sl_restore *r)
{
    for (guint i = 0; i < r->regions->len; i++) {
        if (((sl_region *)g_ptr_array_index(r->regions, i))->mem.host) {
            return offers(r, UFFD_FEATURE_POISON)
                       ? UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP : 0;
        }
    }
    return 0; /* no mapping of ours */
}

static bool register_regions(sl_restore *r, GError **errp)
{
    uint64_t features = 0, got = 0, events = unmap_events(r);

    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        features |= reg->mem.host ? reg->mem.ops->uffd_features : 0;
    }
    if (!open_tracking(r, &features, errp)) {
        return false;
    }
    /* A withheld feature is not asked for: @got then lacks it, as on a
     * kernel without it, for every check below. */
    r->uffd = sl_uffd_open(features, (UFFD_FEATURE_POISON | UFFD_FEATURE_MOVE | events) &
                                         ~r->uffd_features_withheld, &got, errp);
    if (r->uffd < 0) {
        return false;
    }
    r->unmap_events = events && (got & events) == events;
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        const sl_backend_ops *ops = reg->mem.ops;
        reg->ioctls = (got & UFFD_FEATURE_POISON) ? SL_IOCTL(_UFFDIO_POISON) : 0;
        if (!reg->mem.host) {
            continue; /* only other processes map it: they registered */
        }
        sl_region_view(reg, 0)->uffd = r->uffd; /* before any other thread exists */
        sl_region_view(reg, 0)->wp = r->tracking == SL_TRACK_ASYNC_WP;
        if (!sl_uffd_register(r->uffd, reg->mem.host, reg->mem.length,
                              ops->register_mode | (sl_region_view(reg, 0)->wp
                                                        ? UFFDIO_REGISTER_MODE_WP : 0),
                              ops->range_ioctls, &reg->ioctls, errp)) {
            g_prefix_error(errp, "block '%s': ", reg->blk->name);
            return false;
        }
        if (!(got & UFFD_FEATURE_POISON)) {
            reg->ioctls &= ~SL_IOCTL(_UFFDIO_POISON);
        }
        /* Before any loader starts: they read reg->move only after. */
        reg->move = reg->move && (got & UFFD_FEATURE_MOVE) &&
                    (reg->ioctls & SL_IOCTL(_UFFDIO_MOVE));
        reg->registered = true;
    }
    return true;
}

/* Our own mappings out of forked children until complete (fork.c), before
 * prepare empties them: a child forked from then on has no copy of them. */
static bool guard_regions(sl_restore *r, GError **errp)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (reg->mem.host && !(reg->fork_guard = sl_fork_guard(reg->mem.host,
                                                                 reg->mem.length, errp))) {
            g_prefix_error(errp, "block '%s': ", reg->blk->name);
            return false;
        }
    }
    return true;
}

bool sl_restore_start(sl_restore *r, GError **errp)
{
    bool ok;

    SL_ARG(r, errp, false);
    if (r->started || r->regions->len == 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, r->started ? "restore already started"
                    : "no memory attached: call sl_restore_attach() first");
        return false;
    }
    r->started = true;
    r->t_start = sl_now_ns();
    ok = guard_regions(r, errp) && prepare_regions(r, errp);
    /* also when prepare failed: stopping seals by these maps */
    ok = layout_regions(r, ok ? errp : NULL) && ok;
    ok = ok && register_regions(r, errp) && sl_prefetch_setup(r, errp);
    if (!ok || !sl_engine_start(r, errp)) {
        sl_engine_fail(r, ok ? -EAGAIN : -EINVAL);
        /* Nothing stays registered with no thread to answer: a touch of
         * the memory would wait, and its munmap for ever (lost.c). */
        sl_restore_stop(r);
        return false;
    }
    return true;
}

int sl_restore_poll(sl_restore *r)
{
    SL_ARG_ERRNO(r);
    /* Acquire: pairs with the release CAS in finish()/sl_engine_fail(). */
    return atomic_load_explicit(&r->status, memory_order_acquire);
}

/* The error of a restore that refused a page: @bad as note_bad_page() packs it. */
static GError *bad_page_error(const sl_restore *r, uint64_t bad)
{
    const sl_block *blk = &r->snap->blocks[sl_bad_page_block(bad)];
    uint64_t page = sl_bad_page_index(bad);
    uint64_t more = atomic_load_explicit(&r->c.checksum_failures, memory_order_relaxed) - 1;
    g_autofree char *also =
        more ? g_strdup_printf(" (and %" G_GUINT64_FORMAT " more units)", more) : NULL;
    const char *file = sl_snapshot_page_file(r->snap, sl_bad_page_block(bad), page);

    return g_error_new(SL_ERROR, SL_ERROR_CHECKSUM, "%s: block '%s' page %" G_GUINT64_FORMAT
                       " (offset %" G_GUINT64_FORMAT " in the block) could not be read: "
                       "checksum mismatch, the page was refused%s",
                       file ? file : r->snap->path, blk->name, page, page * blk->page_size,
                       also ? also : "");
}

/* For a snapshot with parents, " (its chain: CHILD, PARENT, ...)", else "":
 * a read may have failed in any of them (found by a user's test: a parent
 * truncated under the restore was reported as the child). */
static char *chain_files(const sl_snapshot *s)
{
    GString *g = g_string_new("");

    for (const sl_snapshot *p = s; s->parent && p; p = p->parent) {
        g_string_append_printf(g, "%s%s", p == s ? " (its chain: " : ", ", p->path);
    }
    if (s->parent) {
        g_string_append_c(g, ')');
    }
    return g_string_free(g, false);
}

/* The first layer of @s's chain whose file is now shorter than when it was
 * opened (its open descriptor: the file read, even if its path now names
 * another), with its size now in *@now; NULL if none is. */
static const sl_snapshot *shrunk_layer(const sl_snapshot *s, uint64_t *now)
{
    struct stat st;

    for (const sl_snapshot *l = s; l; l = l->parent) {
        if (fstat(l->fd, &st) == 0 && (uint64_t)st.st_size < sl_snapshot_file_size(l)) {
            *now = (uint64_t)st.st_size;
            return l;
        }
    }
    return NULL;
}

/* The error of a restore whose read of the snapshot failed: @failed as
 * note_read_failure() packs it (block, first page), its pages and errno,
 * and why, as far as the files tell (@chain: chain_files()).  A file of
 * the chain that shrank is named as the cause (found by review: the
 * layer of the first stored page was named, an intact child). */
static GError *read_failure_error(sl_restore *r, uint64_t failed, const char *chain)
{
    uint64_t page = sl_bad_page_index(failed), now = 0;
    uint64_t n = atomic_load_explicit(&r->read_failure_pages, memory_order_relaxed);
    int err = atomic_load_explicit(&r->read_failure_errno, memory_order_relaxed);
    const sl_block *blk = &r->snap->blocks[sl_bad_page_block(failed)];
    const sl_snapshot *l = shrunk_layer(r->snap, &now);
    g_autofree char *why = NULL;

    if (l) {
        why = g_strdup_printf("%s shrank from %" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT
                              " bytes during the restore", l->path, sl_snapshot_file_size(l),
                              now);
    } else {
        why = g_strdup_printf("%s%s", g_strerror(err), r->snap->parent ? " (from this file "
                              "or one of its parents)" : "");
    }
    return g_error_new(SL_ERROR, SL_ERROR_IO, "restore failed: %s: block '%s' pages %"
                       G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT " (offset %" G_GUINT64_FORMAT
                       " in the block) could not be read: %s; the pages not placed are "
                       "sealed, never served as zeros%s", r->snap->path, blk->name, page,
                       page + n - 1, page * blk->page_size, why, chain);
}

GError *sl_restore_error(sl_restore *r)
{
    int st = sl_restore_poll(r);
    uint64_t bad;
    GError *meta;

    if (!r) {
        return g_error_new(SL_ERROR, SL_ERROR_INVALID, "sl_restore_error: r is NULL");
    }
    /* Acquire: pairs with the release CAS in note_bad_page() (engine.c). */
    bad = atomic_load_explicit(&r->bad_page, memory_order_acquire);
    /* Acquire: pairs with the release CAS in sl_prove_units() (engine.c). */
    meta = atomic_load_explicit(&r->meta_error, memory_order_acquire);
    if (st == 0 || st == -EINPROGRESS) {
        return NULL;
    }
    if (meta) {
        return g_error_copy(meta);
    }
    if (bad && (st == -EBADMSG || st == -ESRCH)) {
        /* The cause also when a consumer's leaving set the status: one
         * touching the refused page dies of SIGBUS, and its leaving may
         * come before the loader's -EBADMSG (found by a user's test:
         * qemu-restore said "No such process").  Not over another
         * failure (a stop, memory full), which poisoning left to come. */
        return bad_page_error(r, bad);
    }
    if (st == -ESRCH) { /* an effect: whoever asks knows of the process more than we do */
        return g_error_new(SL_ERROR, SL_ERROR_STATE, "restore stopped: the process whose "
                           "memory was being restored ended (or closed its userfaultfd) "
                           "before every page was in place");
    }
    if (st == -EIO) {
        g_autofree char *chain = chain_files(r->snap);
        /* Acquire: pairs with the release store in note_read_failure() (engine.c). */
        uint64_t failed = atomic_load_explicit(&r->read_failure, memory_order_acquire);
        if (failed) {
            return read_failure_error(r, failed, chain);
        }
        return g_error_new(SL_ERROR, SL_ERROR_IO, "restore failed: the snapshot %s could not "
                           "be read (a read failed or a file ended early: was one changed "
                           "during the restore?)%s", r->snap->path, chain);
    }
    if (st == -ESTALE) {
        return g_error_new(SL_ERROR, SL_ERROR_STATE, "restore failed: the snapshot %s was "
                           "changed during the restore (its size or modification time moved), "
                           "and it is restored without checksums (it has none, or they were "
                           "turned off) to tell its pages: what was read once the change was "
                           "seen was not placed, and the pages not placed are sealed, never "
                           "served as zeros", r->snap->path);
    }
    if (st == -ENOSPC || st == -ENOMEM) {
        return g_error_new(SL_ERROR, SL_ERROR_IO, "restore failed: out of memory or of room "
                           "for guest RAM (%s): the tmpfs holding it may be full, the "
                           "hugetlbfs pool empty or a memory limit reached; the pages not "
                           "placed are sealed, never served as zeros", g_strerror(-st));
    }
    if (st == -ECANCELED) {
        return g_error_new(SL_ERROR, SL_ERROR_STATE, "restore stopped before completion");
    }
    return g_error_new(SL_ERROR, SL_ERROR_IO, "restore failed: %s", g_strerror(-st));
}

GError *sl_restore_refused(sl_restore *r)
{
    uint64_t bad;

    if (!r) {
        return g_error_new(SL_ERROR, SL_ERROR_INVALID, "sl_restore_refused: r is NULL");
    }
    /* Acquire: pairs with the release CAS in note_bad_page() (engine.c). */
    bad = atomic_load_explicit(&r->bad_page, memory_order_acquire);
    return bad ? bad_page_error(r, bad) : NULL;
}

int sl_restore_wait(sl_restore *r, int timeout_ms)
{
    struct pollfd p = { .fd = r ? r->done_efd : -1, .events = POLLIN };
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    int left = timeout_ms;

    SL_ARG_ERRNO(r);
    if (!r->started && sl_restore_poll(r) == -EINPROGRESS) {
        return -EINVAL; /* nothing would ever end the wait */
    }
    /* A signal restarts the wait for the time left, not for @timeout_ms
     * again (found by review: signals every 100 ms kept a 1 s wait going). */
    while (sl_restore_poll(r) == -EINPROGRESS && poll(&p, 1, left) < 0 && errno == EINTR) {
        if (timeout_ms >= 0) {
            left = (int)MAX(0, (deadline - g_get_monotonic_time()) / 1000);
        }
    }
    return sl_restore_poll(r);
}

int sl_restore_eventfd(const sl_restore *r)
{
    return r ? r->done_efd : -EINVAL;
}

/*
 * Closes our uffd once the stop sealed what needed it, unless a seal left
 * a range registered (keep_uffd).  Closing releases any thread still
 * waiting in the kernel for an unmap event of ours to be read, one whose
 * event came after the last read too (found by review: a munmap racing
 * the completion waited until the free, for ever if that thread was to
 * call it).  Caller holds views_lock; every other thread was joined.
 */
static void close_own_uffd(sl_restore *r)
{
    if (r->uffd < 0 || r->keep_uffd) {
        return;
    }
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (reg->mem.host) {
            sl_region_view(reg, 0)->uffd = -1; /* our view's fd is the restore's */
        }
    }
    close(r->uffd);
    r->uffd = -1;
}

void sl_restore_stop(sl_restore *r)
{
    g_autoptr(GMutexLocker) alone = r ? g_mutex_locker_new(&r->stop_lock) : NULL;
    /* After any reset or save running on another thread: a reset between
     * forgetting its units and dropping them undid the seal, and its
     * refill's loaders outlived the join (found by review: the dropped
     * pages read as zeros after the stop). */
    g_autoptr(GMutexLocker) no_reset = r ? g_mutex_locker_new(&r->save_reset_lock) : NULL;

    if (!r || !r->started || r->stopped) {
        return;
    }
    r->stopped = true;
    /* Release, @halting first: pairs with the acquire loads in the worker
     * loops (the fault thread's sees @halting once it saw @stopping). */
    atomic_store_explicit(&r->halting, true, memory_order_release);
    atomic_store_explicit(&r->stopping, true, memory_order_release);
    sl_engine_kick(r->ctl_efd);
    for (unsigned i = 0; r->loaders && i < r->nloaders; i++) {
        if (r->loaders[i]) {
            g_thread_join(r->loaders[i]);
        }
    }
    if (r->fault_thread) {
        g_thread_join(r->fault_thread);
    }
    if (r->prefault_thread) {
        g_thread_join(r->prefault_thread);
    }
    g_mutex_lock(&r->views_lock);
    if (sl_restore_poll(r) != 0) {
        int expect = -EINPROGRESS;
        /* A page refused before the stop is what the restore ended with, not
         * the stop (found by a user's test: with no loaders the restore never
         * completed, and a stop called it cancelled, naming no page).
         * Relaxed: every thread that refuses was joined above. */
        int final = atomic_load_explicit(&r->page_error, memory_order_relaxed);
        /* Unmaps the fault thread did not read (it left on @halting): their
         * threads wait in the kernel, and each of our ioctls would meet
         * EAGAIN until they are read (found by review). */
        sl_lost_drain(r);
        sl_lost_seal(r, true);
        sl_restore_seal(r); /* never zeros for pages that are missing */
        /* Release: pairs with the acquire load in sl_restore_poll(); after
         * the seal, so whoever sees the status sees sealed memory. */
        if (atomic_compare_exchange_strong_explicit(&r->status, &expect,
                                                    final ? final : -ECANCELED,
                                                    memory_order_release,
                                                    memory_order_relaxed)) {
            sl_engine_kick(r->done_efd);
        }
    }
    r->views_closed = true;
    close_own_uffd(r);
    g_mutex_unlock(&r->views_lock);
}

/*
 * A view's uffd is closed, unless the seal had to keep it registered (no
 * UFFDIO_POISON: kernels before 6.6): closing the last reference would
 * unregister the range and its holes would read as zeros, so it is left
 * open on purpose, as r->uffd is with keep_uffd (found by review: the
 * free closed it, and a consumer waiting on a missing page read zeros).
 */
static void free_view(sl_view *v)
{
    if (!v->own && v->uffd >= 0 && !v->kept) {
        close(v->uffd);
    }
    g_free(v);
}

static void free_region(sl_region *reg)
{
    /* relaxed: the restore is being freed, every other thread joined */
    unsigned nv = atomic_load_explicit(&reg->nviews, memory_order_relaxed);

    for (unsigned j = 0; j < nv; j++) {
        free_view(sl_region_view(reg, j));
    }
    for (guint j = 0; j < reg->dead_views->len; j++) {
        free_view(g_ptr_array_index(reg->dead_views, j));
    }
    g_ptr_array_free(reg->dead_views, true);
    if (reg->lost) {
        g_array_free(reg->lost, true);
    }
    if (reg->fork_guard) { /* not completed: its memory stays out of children */
        g_array_free(reg->fork_guard, true);
    }
    sl_busy_clear(reg->busy);
    if (reg->mem.alias) {
        munmap(reg->mem.alias, reg->mem.length);
    }
    if (reg->mem.own_fd && reg->mem.fd >= 0) {
        close(reg->mem.fd);
    }
    sl_pagemap_free(reg->map);
    g_free(reg->changed);
    g_free(reg);
}

static double ms_since(uint64_t t0, uint64_t t)
{
    return t && t >= t0 ? (double)(t - t0) / 1e6 : -1.0;
}

static void audit(const sl_restore *r, sl_stats *s)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        uint64_t twice, never;
        if (!reg->map) {
            continue;
        }
        sl_pagemap_audit(reg->map, &twice, &never);
        s->pages_total += reg->nunits;
        s->pages_present += sl_pagemap_present(reg->map);
        s->pages_placed_twice += twice;
        s->pages_never_placed += never;
    }
}

#define LOAD(x) atomic_load_explicit(&r->c.x, memory_order_relaxed)

static void node_stats(const sl_restore *r, sl_stats *s)
{
    s->nodes = r->ngroups ? r->ngroups : r->topo.nnodes;
    for (unsigned g = 0; g < s->nodes && g < 64; g++) {
        s->node_id[g] = r->topo.nodes[g].id;
        s->threads_by_node[g] = r->groups ? r->groups[g].nthreads : 0;
        s->pages_by_node[g] = LOAD(pages_by_node[g]);
    }
    s->pages_wrong_node = LOAD(wrong_node);
    s->loader_cpu_violations = LOAD(cpu_violations);
    s->pages_by_hint = LOAD(pages_by_hint);
    s->hot_pages = r->hot_units;
}

/* What the restore keeps per page: its page maps (none before the start,
 * or after a start that failed: then 0), and the snapshot's metadata. */
static void bookkeeping(const sl_restore *r, sl_stats *s)
{
    for (guint i = 0; i < r->regions->len; i++) {
        const sl_region *reg = g_ptr_array_index(r->regions, i);
        const sl_block *b = reg->blk;
        s->map_bytes += reg->map ? sl_pagemap_bytes(reg->map) : 0;
        s->metadata_bytes += sl_bitmap_bytes(b->npages) + b->nsegs * 8 +
                             (b->csums ? b->npages * 8 : 0);
    }
}

void sl_restore_get_stats(const sl_restore *r, sl_stats *out)
{
    sl_stats s = { .size = sizeof(s) };
    uint32_t want;

    if (!r || !out) {
        return;
    }
    want = out->size ? MIN(out->size, sizeof(s)) : sizeof(s);
    audit(r, &s);
    s.faults = LOAD(faults);
    s.faults_on_claimed = LOAD(faults_on_claimed);
    s.faults_on_present = LOAD(faults_on_present);
    s.pages_by_fault = LOAD(pages_by_fault);
    s.pages_by_loader = LOAD(pages_by_loader);
    s.zero_pages = LOAD(zero_pages);
    s.bytes_read = LOAD(bytes_read);
    s.checksum_failures = LOAD(checksum_failures);
    s.eexist = LOAD(eexist);
    s.eagain = LOAD(eagain);
    s.thp_bytes = LOAD(thp_bytes);
    s.write_tracking = r->tracking;
    s.pages_kept = LOAD(pages_kept);
    s.pages_known = LOAD(pages_known);
    s.bytes_read_direct = LOAD(bytes_direct);
    s.pages_moved = LOAD(pages_moved);
    s.pages_around = LOAD(pages_around);
    s.faults_split = LOAD(faults_split);
    s.resets = atomic_load_explicit(&((sl_restore *)r)->resets, memory_order_relaxed);
    s.checksum_ms = (double)LOAD(checksum_ns) / 1e6;
    s.loader_ms = (double)LOAD(loader_ns_max) / 1e6;
    s.time_to_ready_ms = ms_since(r->t_start, r->t_ready);
    /* Timestamps, written relaxed once (fault.c, sl_units_done()): a
     * figure, ordered with nothing else; 0 while not reached. */
    s.time_to_first_fault_ms = ms_since(r->t_start, atomic_load_explicit(&r->t_first_fault,
                                                                         memory_order_relaxed));
    s.time_to_complete_ms = ms_since(r->t_start, atomic_load_explicit(&r->t_complete,
                                                                      memory_order_relaxed));
    s.fault_p50_us = (double)sl_hist_percentile(&r->fault_hist, 50) / 1e3;
    s.fault_p99_us = (double)sl_hist_percentile(&r->fault_hist, 99) / 1e3;
    s.fault_max_us = (double)sl_hist_max(&r->fault_hist) / 1e3;
    s.error = atomic_load_explicit(&((sl_restore *)r)->status, memory_order_acquire);
    s.error = s.error == -EINPROGRESS ? 0 : s.error;
    node_stats(r, &s);
    bookkeeping(r, &s);
    memcpy(out, &s, want);
    out->size = want;
}

void sl_restore_free(sl_restore *r)
{
    if (!r) {
        return;
    }
    sl_restore_stop(r);
    sl_prefetch_free(r);
    for (guint i = 0; i < r->regions->len; i++) {
        free_region(g_ptr_array_index(r->regions, i));
    }
    g_ptr_array_free(r->regions, true);
    g_mutex_clear(&r->views_lock);
    g_mutex_clear(&r->show_lock);
    g_mutex_clear(&r->save_reset_lock);
    g_mutex_clear(&r->stop_lock);
    pthread_rwlock_destroy(&r->place_lock);
    g_free(r->loaders);
    if (r->uffd >= 0 && !r->keep_uffd) {
        close(r->uffd);
    }
    if (r->fault_fd >= 0) { /* the restore's own descriptor, not r->snap's */
        close(r->fault_fd);
    }
    if (r->direct_fd >= 0) {
        close(r->direct_fd);
    }
    if (r->pagemap_fd >= 0) {
        close(r->pagemap_fd);
    }
    if (r->snap_map) {
        munmap((void *)r->snap_map, r->snap_map_len);
    }
    if (r->raced) {
        g_array_free(r->raced, true);
    }
    if (r->ctl_efd >= 0) {
        close(r->ctl_efd);
    }
    if (r->done_efd >= 0) {
        close(r->done_efd);
    }
    if (atomic_load_explicit(&r->meta_error, memory_order_relaxed)) {
        g_error_free(atomic_load_explicit(&r->meta_error, memory_order_relaxed));
    }
    sl_snapshot_close(r->snap); /* the restore's reference (sl_restore_new) */
    g_free(r);
}
