/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Lifecycle of a lazy restore: create, attach memory per block, start
 * (userfaultfd handshake and registration, then the engine's threads),
 * poll/wait, stop and statistics.  The fault path itself is in engine.c.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include "restore-int.h"
#include "uffd.h"

uint64_t sl_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

sl_restore *sl_restore_new(sl_snapshot *snap, const sl_restore_config *cfg, GError **errp)
{
    sl_restore *r = g_new0(sl_restore, 1);

    if (cfg) {
        memcpy(&r->cfg, cfg, MIN(cfg->size ? cfg->size : sizeof(*cfg), sizeof(r->cfg)));
    }
    r->cfg.size = sizeof(r->cfg);
    r->snap = snap;
    r->regions = g_ptr_array_new();
    r->uffd = -1;
    r->ctl_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    atomic_init(&r->status, -EINPROGRESS);
    if (r->ctl_efd < 0 || r->done_efd < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "eventfd: %s", g_strerror(errno));
        sl_restore_free(r);
        return NULL;
    }
    r->nloaders = r->cfg.no_loaders ? 0 : (r->cfg.loader_threads ? r->cfg.loader_threads : 1);
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
    } else if (!ops) {
        why = "unknown backend kind";
    } else if (length != r->snap->blocks[idx].length) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': attached length %"
                    G_GUINT64_FORMAT " differs from the snapshot's %" G_GUINT64_FORMAT,
                    name, length, r->snap->blocks[idx].length);
        return false;
    } else if ((uintptr_t)addr % (uint64_t)sysconf(_SC_PAGESIZE)) {
        why = "address is not page aligned";
    }
    for (guint i = 0; !why && i < r->regions->len; i++) {
        sl_region *o = g_ptr_array_index(r->regions, i);
        if ((int)o->block == idx) {
            why = "block attached twice";
        }
    }
    if (why) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': %s", name, why);
        return false;
    }
    return true;
}

bool sl_restore_attach(sl_restore *r, const char *name, void *addr, uint64_t length,
                       sl_backend_kind kind, GError **errp)
{
    int idx = sl_snapshot_find_block(r->snap, name);
    const sl_backend_ops *ops = sl_backend_get(kind);
    sl_region *reg;

    if (!check_attach(r, idx, name, addr, length, ops, errp)) {
        return false;
    }
    reg = g_new0(sl_region, 1);
    reg->r = r;
    reg->block = (unsigned)idx;
    reg->blk = &r->snap->blocks[idx];
    reg->mem = (sl_mem){ .ops = ops, .host = addr, .length = length };
    g_ptr_array_add(r->regions, reg);
    return true;
}

/* Fix units and chunk numbering once backends have told their page size. */
static void layout_regions(sl_restore *r)
{
    uint64_t chunk = 0, remaining = 0;

    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        reg->unit = MAX(reg->blk->page_size, reg->mem.page_size);
        reg->ratio = reg->unit / reg->blk->page_size;
        reg->nunits = reg->mem.length / reg->unit;
        reg->map = sl_pagemap_new(reg->nunits);
        reg->chunk_units = MAX(1, SL_CHUNK_BYTES / reg->unit);
        reg->first_chunk = chunk;
        reg->nchunks = (reg->nunits + reg->chunk_units - 1) / reg->chunk_units;
        chunk += reg->nchunks;
        remaining += reg->nunits;
        r->max_unit = MAX(r->max_unit, reg->unit);
    }
    r->total_chunks = chunk;
    atomic_store_explicit(&r->remaining, remaining, memory_order_relaxed);
}

static bool register_regions(sl_restore *r, GError **errp)
{
    uint64_t features = 0, got = 0;

    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        features |= reg->mem.ops->uffd_features;
        if (!reg->mem.ops->prepare(&reg->mem, errp)) {
            return false;
        }
    }
    r->uffd = sl_uffd_open(features, UFFD_FEATURE_POISON, &got, errp);
    if (r->uffd < 0) {
        return false;
    }
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        const sl_backend_ops *ops = reg->mem.ops;
        if (!sl_uffd_register(r->uffd, reg->mem.host, reg->mem.length, ops->register_mode,
                              ops->range_ioctls, &reg->ioctls, errp)) {
            g_prefix_error(errp, "block '%s': ", reg->blk->name);
            return false;
        }
        if (!(got & UFFD_FEATURE_POISON)) {
            reg->ioctls &= ~SL_IOCTL(_UFFDIO_POISON);
        }
        reg->registered = true;
    }
    return true;
}

bool sl_restore_start(sl_restore *r, GError **errp)
{
    if (r->started || r->regions->len == 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, r->started ? "restore already started"
                    : "no memory attached: call sl_restore_attach() first");
        return false;
    }
    r->started = true;
    r->t_start = sl_now_ns();
    if (!register_regions(r, errp)) {
        sl_engine_fail(r, -EINVAL);
        return false;
    }
    layout_regions(r);
    return sl_engine_start(r, errp);
}

int sl_restore_poll(sl_restore *r)
{
    /* Acquire: pairs with the release CAS in finish()/sl_engine_fail(). */
    return atomic_load_explicit(&r->status, memory_order_acquire);
}

int sl_restore_wait(sl_restore *r, int timeout_ms)
{
    struct pollfd p = { .fd = r->done_efd, .events = POLLIN };

    if (sl_restore_poll(r) == -EINPROGRESS) {
        while (poll(&p, 1, timeout_ms) < 0 && errno == EINTR) {
        }
    }
    return sl_restore_poll(r);
}

int sl_restore_eventfd(const sl_restore *r)
{
    return r->done_efd;
}

void sl_restore_stop(sl_restore *r)
{
    if (!r->started || r->stopped) {
        return;
    }
    r->stopped = true;
    /* Release: pairs with the acquire loads in the worker loops. */
    atomic_store_explicit(&r->stopping, true, memory_order_release);
    if (r->ctl_efd >= 0) {
        uint64_t one = 1;
        ssize_t n = write(r->ctl_efd, &one, sizeof(one));
        (void)n;
    }
    for (unsigned i = 0; r->loaders && i < r->nloaders; i++) {
        if (r->loaders[i]) {
            g_thread_join(r->loaders[i]);
        }
    }
    if (r->fault_thread) {
        g_thread_join(r->fault_thread);
    }
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (reg->registered) {
            sl_uffd_unregister(r->uffd, reg->mem.host, reg->mem.length);
            reg->registered = false;
        }
    }
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

void sl_restore_get_stats(const sl_restore *r, sl_stats *out)
{
    sl_stats s = { .size = sizeof(s) };
    uint32_t want = out->size ? MIN(out->size, sizeof(s)) : sizeof(s);

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
    s.checksum_ms = (double)LOAD(checksum_ns) / 1e6;
    s.loader_ms = (double)LOAD(loader_ns_max) / 1e6;
    s.time_to_ready_ms = ms_since(r->t_start, r->t_ready);
    s.time_to_first_fault_ms = ms_since(r->t_start, atomic_load(&r->t_first_fault));
    s.time_to_complete_ms = ms_since(r->t_start, atomic_load(&r->t_complete));
    s.fault_p50_us = (double)sl_hist_percentile(&r->fault_hist, 50) / 1e3;
    s.fault_p99_us = (double)sl_hist_percentile(&r->fault_hist, 99) / 1e3;
    s.fault_max_us = (double)sl_hist_max(&r->fault_hist) / 1e3;
    s.error = atomic_load_explicit(&((sl_restore *)r)->status, memory_order_acquire);
    s.error = s.error == -EINPROGRESS ? 0 : s.error;
    memcpy(out, &s, want);
    out->size = want;
}

void sl_restore_free(sl_restore *r)
{
    if (!r) {
        return;
    }
    sl_restore_stop(r);
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        sl_pagemap_free(reg->map);
        g_free(reg);
    }
    g_ptr_array_free(r->regions, true);
    g_free(r->loaders);
    if (r->uffd >= 0) {
        close(r->uffd);
    }
    if (r->ctl_efd >= 0) {
        close(r->ctl_efd);
    }
    if (r->done_efd >= 0) {
        close(r->done_efd);
    }
    g_free(r);
}
