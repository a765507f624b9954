/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore engine: one fault thread and N background loaders.
 *
 * The fault thread polls {uffd, ctl eventfd} (no sleeps), reads fault
 * messages in batches and serves each with its own buffer: claim the unit,
 * read it from the snapshot, check its checksum, place it.  It never waits
 * for a loader: a loader claims a unit only after it has read and checked
 * the data, right before its placement ioctl, whose wake-up also releases a
 * fault that arrived on that unit meanwhile.
 *
 * Loaders take 1 MiB chunks in file order from a shared cursor, read runs
 * of stored pages with one pread, verify, then claim and place runs with one
 * ioctl each.  The thread that makes the last unit PRESENT signals the fault
 * thread, which unregisters every range and reports completion.
 *
 * A unit whose data does not match its checksum is never placed: it is
 * poisoned (UFFDIO_POISON: an access gets SIGBUS) where the kernel allows,
 * and the restore ends with -EBADMSG; without poison support the restore
 * fails at once and the faulting thread stays blocked, never reading zeros.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "restore-int.h"
#include "uffd.h"

#define MSG_BATCH 64
#define LOADER_NICE 5
#define FAULT_NICE (-10) /* needs CAP_SYS_NICE; ignored without it */

enum who { BY_FAULT, BY_LOADER };

static void add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void kick(int efd)
{
    uint64_t one = 1;
    ssize_t n = write(efd, &one, sizeof(one));
    (void)n; /* an eventfd write only fails on overflow: still readable */
}

void sl_engine_fail(sl_restore *r, int err)
{
    int expect = -EINPROGRESS;

    /* Release: pairs with the acquire load in sl_restore_poll(). */
    if (atomic_compare_exchange_strong_explicit(&r->status, &expect, err,
                                                memory_order_release,
                                                memory_order_relaxed)) {
        kick(r->done_efd);
    }
    atomic_store_explicit(&r->stopping, true, memory_order_release);
    kick(r->ctl_efd);
}

/* Marks @n units present; the caller that brings remaining to 0 signals. */
static void units_done(sl_restore *r, sl_region *reg, uint64_t u, uint64_t n)
{
    sl_pagemap_publish(reg->map, u, n);
    /* acq_rel: the last decrement sees every earlier publish. */
    if (n && atomic_fetch_sub_explicit(&r->remaining, n, memory_order_acq_rel) == n) {
        atomic_store_explicit(&r->t_complete, sl_now_ns(), memory_order_relaxed);
        kick(r->ctl_efd);
    }
}

static bool unit_has_data(const sl_region *reg, uint64_t u)
{
    for (uint64_t p = u * reg->ratio; p < (u + 1) * reg->ratio; p++) {
        if (sl_bit_test(reg->blk->bitmap, p)) {
            return true;
        }
    }
    return false;
}

static bool unit_verifies(sl_restore *r, const sl_region *reg, uint64_t u, const uint8_t *buf)
{
    const uint64_t ps = reg->blk->page_size;
    uint64_t t0 = sl_now_ns();
    bool ok = true;

    for (uint64_t k = 0; k < reg->ratio && ok; k++) {
        uint64_t p = u * reg->ratio + k;
        ok = !sl_bit_test(reg->blk->bitmap, p) ||
             sl_hash(buf + k * ps, ps) == reg->blk->csums[p];
    }
    add(&r->c.checksum_ns, sl_now_ns() - t0);
    return ok;
}

/*
 * Refuse unit @u (claimed by the caller) whose data is corrupt: poison it so
 * an access raises SIGBUS, never zeros.  Returns 0 if the restore can go on.
 */
static int refuse_unit(sl_restore *r, sl_region *reg, uint64_t u)
{
    int expect = 0;

    add(&r->c.checksum_failures, 1);
    atomic_compare_exchange_strong_explicit(&r->page_error, &expect, -EBADMSG,
                                            memory_order_relaxed, memory_order_relaxed);
    if (!(reg->ioctls & SL_IOCTL(_UFFDIO_POISON)) ||
        sl_uffd_poison(r->uffd, reg->mem.host + u * reg->unit, reg->unit) < 0) {
        return -EBADMSG; /* the page stays claimed: its faults block */
    }
    units_done(r, reg, u, 1);
    return 0;
}

/*
 * Place claimed units [@u, @u + @n) from @src (NULL: zeros) and publish
 * them.  EEXIST (already placed) wakes the range and counts it as present.
 */
static int place_run(sl_restore *r, sl_region *reg, uint64_t u, uint64_t n,
                     const uint8_t *src, enum who who)
{
    const sl_backend_ops *ops = reg->mem.ops;

    while (n) {
        uint64_t done = 0, eagain = 0, k;
        int ret = src ? ops->place(&reg->mem, r->uffd, u * reg->unit, src, n * reg->unit,
                                   &done, &eagain)
                      : ops->zero(&reg->mem, r->uffd, u * reg->unit, n * reg->unit,
                                  &done, &eagain);

        k = done / reg->unit;
        add(&r->c.eagain, eagain);
        sl_pagemap_note_placed(reg->map, u, k);
        add(who == BY_FAULT ? &r->c.pages_by_fault : &r->c.pages_by_loader, k);
        if (!src) {
            add(&r->c.zero_pages, k);
        }
        if (ret == -EEXIST) {
            add(&r->c.eexist, 1);
            sl_uffd_wake(r->uffd, reg->mem.host + (u + k) * reg->unit, reg->unit);
            k++;
        } else if (ret < 0) {
            sl_pagemap_unclaim(reg->map, u + k, n - k);
            units_done(r, reg, u, k);
            return ret;
        }
        units_done(r, reg, u, k);
        u += k;
        n -= k;
        src = src ? src + k * reg->unit : NULL;
    }
    return 0;
}

/* Read, verify and place one claimed unit (fault path). */
static int serve_unit(sl_restore *r, sl_region *reg, uint64_t u, uint8_t *buf)
{
    int ret;

    if (!unit_has_data(reg, u)) {
        return place_run(r, reg, u, 1, NULL, BY_FAULT);
    }
    ret = sl_snapshot_read_pages(r->snap, reg->block, u * reg->ratio, reg->ratio, buf, false);
    if (ret < 0) {
        return ret;
    }
    add(&r->c.bytes_read, reg->unit);
    if (!r->cfg.no_checksum && !unit_verifies(r, reg, u, buf)) {
        return refuse_unit(r, reg, u);
    }
    return place_run(r, reg, u, 1, buf, BY_FAULT);
}

static sl_region *find_region(sl_restore *r, uint64_t addr)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (addr >= (uintptr_t)reg->mem.host && addr - (uintptr_t)reg->mem.host < reg->mem.length) {
            return reg;
        }
    }
    return NULL;
}

/* A fault on a PRESENT unit: woken late, or the page was discarded since. */
static void refault(sl_restore *r, sl_region *reg, uint64_t u)
{
    uint64_t done, eagain = 0;
    int ret = reg->mem.ops->zero(&reg->mem, r->uffd, u * reg->unit, reg->unit, &done, &eagain);

    if (ret == -EEXIST) {
        sl_uffd_wake(r->uffd, reg->mem.host + u * reg->unit, reg->unit);
    }
}

static void handle_fault(sl_restore *r, uint64_t addr, uint8_t *buf)
{
    uint64_t t0 = sl_now_ns(), zero = 0;
    sl_region *reg = find_region(r, addr);
    uint64_t u;
    int ret = 0;

    add(&r->c.faults, 1);
    atomic_compare_exchange_strong_explicit(&r->t_first_fault, &zero, t0,
                                            memory_order_relaxed, memory_order_relaxed);
    if (!reg) {
        return; /* not ours: cannot happen for ranges we registered */
    }
    u = (addr - (uintptr_t)reg->mem.host) / reg->unit;
    if (sl_pagemap_claim(reg->map, u)) {
        ret = serve_unit(r, reg, u, buf);
    } else if (sl_pagemap_state(reg->map, u) == SL_PAGE_CLAIMED) {
        add(&r->c.faults_on_claimed, 1); /* the loader's placement wakes it */
    } else {
        add(&r->c.faults_on_present, 1);
        refault(r, reg, u);
    }
    if (ret < 0) {
        sl_engine_fail(r, ret);
    }
    sl_hist_record(&r->fault_hist, sl_now_ns() - t0);
}

static void finish(sl_restore *r)
{
    int expect = -EINPROGRESS;
    int final = atomic_load_explicit(&r->page_error, memory_order_relaxed);

    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (reg->registered && sl_uffd_unregister(r->uffd, reg->mem.host, reg->mem.length) == 0) {
            reg->registered = false;
        }
    }
    if (atomic_compare_exchange_strong_explicit(&r->status, &expect, final,
                                                memory_order_release, memory_order_relaxed)) {
        kick(r->done_efd);
    }
}

/* Reads a batch of messages; false when the thread must stop. */
static bool read_faults(sl_restore *r, uint8_t *buf)
{
    struct uffd_msg msgs[MSG_BATCH];
    ssize_t n = read(r->uffd, msgs, sizeof(msgs));

    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            return true;
        }
        sl_engine_fail(r, -errno);
        return false;
    }
    for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
        if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
            handle_fault(r, msgs[i].arg.pagefault.address, buf);
        }
    }
    return true;
}

static gpointer fault_thread(gpointer opaque)
{
    sl_restore *r = opaque;
    uint8_t *buf = NULL;
    struct pollfd pfd[2] = { { .fd = r->uffd, .events = POLLIN },
                             { .fd = r->ctl_efd, .events = POLLIN } };

    if (posix_memalign((void **)&buf, 4096, r->max_unit)) {
        sl_engine_fail(r, -ENOMEM);
        return NULL;
    }
    /* Best effort: a blocked vCPU waits on this thread, so it goes first. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), FAULT_NICE);
    for (;;) {
        uint64_t v;
        /* Acquire: pairs with the release store in sl_engine_fail()/stop. */
        if (atomic_load_explicit(&r->stopping, memory_order_acquire)) {
            break;
        }
        /* Acquire: pairs with the acq_rel decrement in units_done(). */
        if (atomic_load_explicit(&r->remaining, memory_order_acquire) == 0) {
            finish(r);
            break;
        }
        if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
            sl_engine_fail(r, -errno);
            break;
        }
        if (pfd[1].revents & POLLIN) {
            ssize_t n = read(r->ctl_efd, &v, sizeof(v));
            (void)n;
        }
        if ((pfd[0].revents & POLLIN) && !read_faults(r, buf)) {
            break;
        }
        if (pfd[0].revents & (POLLERR | POLLHUP)) {
            sl_engine_fail(r, -ESRCH); /* the target address space went away */
            break;
        }
    }
    free(buf);
    return NULL;
}

/* ---------------------------- loaders --------------------------------- */

typedef struct {
    sl_restore *r;
    uint8_t *buf;          /* one chunk of page data */
    bool *bad;             /* per unit of the chunk: failed verification */
} loader_ctx;

/* Claim and place the units of [u, j) read into @base (NULL: zero run). */
static int claim_and_place(loader_ctx *lc, sl_region *reg, uint64_t u, uint64_t j,
                           const uint8_t *base)
{
    sl_restore *r = lc->r;

    for (uint64_t k = u; k < j;) {
        uint64_t m = k;
        int ret = 0;

        if (base && lc->bad[k - u]) {
            ret = sl_pagemap_claim(reg->map, k) ? refuse_unit(r, reg, k) : 0;
            k++;
        } else {
            while (m < j && !(base && lc->bad[m - u]) && sl_pagemap_claim(reg->map, m)) {
                m++;
            }
            if (m > k) {
                ret = place_run(r, reg, k, m - k, base ? base + (k - u) * reg->unit : NULL,
                                BY_LOADER);
            }
            k = m > k ? m : k + 1;
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* One run [u, j) of ABSENT units that all have data, or all are zero. */
static int load_run(loader_ctx *lc, sl_region *reg, uint64_t u, uint64_t j, bool data)
{
    sl_restore *r = lc->r;
    int ret;

    if (!data) {
        return claim_and_place(lc, reg, u, j, NULL);
    }
    ret = sl_snapshot_read_pages(r->snap, reg->block, u * reg->ratio, (j - u) * reg->ratio,
                                 lc->buf, false);
    if (ret < 0) {
        return ret;
    }
    add(&r->c.bytes_read, (j - u) * reg->unit);
    for (uint64_t k = u; k < j; k++) {
        lc->bad[k - u] = !r->cfg.no_checksum &&
                         !unit_verifies(r, reg, k, lc->buf + (k - u) * reg->unit);
    }
    return claim_and_place(lc, reg, u, j, lc->buf);
}

static int load_chunk(loader_ctx *lc, sl_region *reg, uint64_t u0, uint64_t n)
{
    uint64_t end = u0 + n;

    for (uint64_t u = u0; u < end;) {
        uint64_t j = u + 1;
        bool data;
        int ret;

        if (sl_pagemap_state(reg->map, u) != SL_PAGE_ABSENT) {
            u++;
            continue;
        }
        data = unit_has_data(reg, u);
        while (j < end && sl_pagemap_state(reg->map, j) == SL_PAGE_ABSENT &&
               unit_has_data(reg, j) == data) {
            j++;
        }
        ret = load_run(lc, reg, u, j, data);
        if (ret < 0) {
            return ret;
        }
        u = j;
    }
    return 0;
}

static sl_region *region_of_chunk(sl_restore *r, uint64_t c)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (c >= reg->first_chunk && c < reg->first_chunk + reg->nchunks) {
            return reg;
        }
    }
    return NULL;
}

static gpointer loader_thread(gpointer opaque)
{
    loader_ctx *lc = opaque;
    sl_restore *r = lc->r;
    uint64_t t0 = sl_now_ns(), mine, prev;

    /* Best effort: background work yields the CPU to the fault thread. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), LOADER_NICE);
    while (!atomic_load_explicit(&r->stopping, memory_order_acquire)) {
        /* Relaxed: the cursor only hands out distinct chunk indices. */
        uint64_t c = atomic_fetch_add_explicit(&r->next_chunk, 1, memory_order_relaxed);
        sl_region *reg = c < r->total_chunks ? region_of_chunk(r, c) : NULL;
        uint64_t u0;
        int ret;

        if (!reg) {
            break;
        }
        u0 = (c - reg->first_chunk) * reg->chunk_units;
        ret = load_chunk(lc, reg, u0, MIN(reg->chunk_units, reg->nunits - u0));
        if (ret < 0) {
            sl_engine_fail(r, ret);
            break;
        }
    }
    mine = sl_now_ns() - t0;
    prev = atomic_load_explicit(&r->c.loader_ns_max, memory_order_relaxed);
    while (mine > prev && !atomic_compare_exchange_weak_explicit(
               &r->c.loader_ns_max, &prev, mine, memory_order_relaxed, memory_order_relaxed)) {
    }
    free(lc->buf);
    g_free(lc->bad);
    g_free(lc);
    return NULL;
}

static bool spawn_loaders(sl_restore *r, GError **errp)
{
    uint64_t max_chunk_units = 1;

    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        max_chunk_units = MAX(max_chunk_units, reg->chunk_units);
    }
    r->loaders = g_new0(GThread *, r->nloaders);
    for (unsigned i = 0; i < r->nloaders; i++) {
        loader_ctx *lc = g_new0(loader_ctx, 1);
        lc->r = r;
        lc->bad = g_new0(bool, max_chunk_units);
        if (posix_memalign((void **)&lc->buf, 4096, MAX(SL_CHUNK_BYTES, r->max_unit)) ||
            !(r->loaders[i] = g_thread_try_new("sl-loader", loader_thread, lc, errp))) {
            free(lc->buf);
            g_free(lc->bad);
            g_free(lc);
            return false;
        }
    }
    return true;
}

bool sl_engine_start(sl_restore *r, GError **errp)
{
    r->fault_thread = g_thread_try_new("sl-fault", fault_thread, r, errp);
    if (!r->fault_thread) {
        return false;
    }
    r->t_ready = sl_now_ns();
    if (r->nloaders && !spawn_loaders(r, errp)) {
        sl_engine_fail(r, -EAGAIN);
        return false;
    }
    return true;
}
