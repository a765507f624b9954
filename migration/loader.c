/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The background loaders and the prefault thread.  Loaders take 1 MiB
 * chunks in file order from their NUMA group's shared cursor (prefetch.c:
 * hinted work from fault windows and the hot list first).  For bounce
 * backends they read and verify first and claim right before the
 * placement ioctl, so a fault never waits on their I/O; whole 2 MiB chunks
 * of our own anonymous memory are moved into place (UFFDIO_MOVE), and cold
 * chunks can be read with O_DIRECT on io_uring (direct.c).  For in-place
 * backends the staging area is shared memory, so they claim first (at
 * most 64 KiB or one hugepage at a time), read straight into the page
 * cache, verify, publish, then map the run into every consumer view with
 * one ioctl per view (engine.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "engine.h"
#include "direct.h"
#include "large.h"
#include "uffd.h"

#define READAHEAD_CHUNKS 16        /* chunks (1 MiB) the kernel reads ahead of the loaders */
#define READAHEAD_BYTES (32u << 20) /* ... up to this much (chunks of 1 GiB hugepages) */
/* Loaders are background work: at nice 10 a loader weighs 110 against a
 * vCPU's 1024, so a vCPU sharing a CPU with one keeps about 90 % of it. */
#define LOADER_NICE 10

/* One loader thread's own state: made by the thread that starts it, then
 * owned by the loader alone until it is joined (@r and @g are shared, with
 * the rules of their own fields). */
typedef struct {
    sl_restore *r;
    sl_group *g;           /* the node this loader serves */
    int who;               /* group index, | HINTED while on hinted work */
    uint8_t *buf;          /* bounce backends: one chunk of page data, in 2 MiB-aligned
                            * hugepage-advised memory of its own (moved from: reg->move) */
    sl_large bufmap;       /* what holds @buf */
    uint8_t *check;        /* keep_memory: CHECK_BYTES to read the reused file into */
    bool *bad;             /* per unit of the chunk: failed verification */
    sl_direct *direct;     /* direct reads in flight (config.direct_reads), or NULL */
    sl_run queued[SL_DIRECT_DEPTH]; /* their runs, by tag */
    uint64_t queued_len[SL_DIRECT_DEPTH]; /* and the bytes each reads */
    uint64_t pushed;       /* reads queued so far (the next tag, modulo the depth) */
    bool map_zeros;        /* on hot-list work: zero units get their (zeroed) pages now */
    uint8_t *pre;          /* the chunk being loaded, already read directly (unit
                            * pre_u0 at its start), or NULL: read it now */
    uint64_t pre_u0;
} loader_ctx;

/*
 * Claimed zero units [u, u+n): published as holes (publish_zeros), or, on
 * hot-list work, given zeroed pages in every view now (ops->zero): the
 * guest touched them early in the recorded run, so it will most likely
 * touch them again before the restore ends, and each such touch of a hole
 * would be a fault.  Only the listed units: the others stay holes.
 */
static int commit_zeros(loader_ctx *lc, sl_region *reg, uint64_t u, uint64_t n)
{
    sl_view *v;
    int ret;

    if (!lc->map_zeros) {
        sl_publish_zeros(lc->r, reg, u, n, lc->who);
        return 0;
    }
    v = sl_first_view(lc->r, reg);
    ret = sl_commit_run(lc->r, reg, v, u, n, NULL, lc->who, false);
    sl_view_exit(lc->r, v);
    return ret;
}

/* Test hook: a loader has just claimed [u, u+n) of @reg (no-op in production). */
static void claimed_hook(sl_restore *r, const sl_region *reg, uint64_t u, uint64_t n)
{
    if (r->loader_claimed) {
        r->loader_claimed(r->loader_claimed_opaque, reg->index, u, n);
    }
}

/* Bounce backends: claim and place the units of [u, j) read into @base. */
static int claim_and_place(loader_ctx *lc, sl_region *reg, uint64_t u, uint64_t j,
                           const uint8_t *base)
{
    sl_restore *r = lc->r;

    for (uint64_t k = u; k < j;) {
        uint64_t m = k;
        int ret = 0;

        if (base && lc->bad[k - u]) {
            ret = sl_pagemap_claim(reg->map, k)
                      ? sl_refuse_unit(r, reg, k, base + (k - u) * reg->unit) : 0;
            k++;
        } else {
            while (m < j && !(base && lc->bad[m - u]) && sl_pagemap_claim(reg->map, m)) {
                m++;
            }
            if (m > k && !base) {
                claimed_hook(r, reg, k, m - k);
                ret = commit_zeros(lc, reg, k, m - k);
            } else if (m > k) {
                sl_view *v = sl_first_view(r, reg);
                claimed_hook(r, reg, k, m - k);
                ret = sl_commit_run(r, reg, v, k, m - k, base + (k - u) * reg->unit, lc->who,
                                    false);
                sl_view_exit(r, v);
            }
            k = m > k ? m : k + 1;
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Bounce backends: read and verify [u, j) first, claim right before placing. */
static int load_bounce(loader_ctx *lc, sl_region *reg, uint64_t u, uint64_t j, bool data)
{
    sl_restore *r = lc->r;
    const uint8_t *base = lc->buf;
    int ret;

    if (!data) {
        return claim_and_place(lc, reg, u, j, NULL);
    }
    if (lc->pre) { /* read directly already: a run with data lies in the span read */
        base = lc->pre + (u - lc->pre_u0) * reg->unit;
    } else if ((ret = sl_read_units(r, reg, u, j - u, lc->buf, r->snap->fd)) < 0) {
        return ret;
    }
    for (uint64_t k = u; k < j; k++) {
        lc->bad[k - u] = !sl_unit_verifies(r, reg, k, base + (k - u) * reg->unit);
    }
    return claim_and_place(lc, reg, u, j, base);
}

/*
 * keep_memory: claimed units [k, m) of a reused file: runs it already
 * holds are kept, the others filled from the snapshot.  A run that fails
 * settles or gives back its own units; those of the runs after it are
 * given back too (they were left CLAIMED with no owner: found by review).
 */
static int keep_or_fill(loader_ctx *lc, sl_region *reg, uint64_t k, uint64_t m)
{
    int ret = 0;

    bool kept = k < m && sl_unit_kept(lc->r, reg, k, lc->check), next = kept;

    while (k < m && ret == 0) {
        uint64_t j = k + 1;
        /* Each unit is read and hashed once: the one ending a run starts the next. */
        while (j < m && (next = sl_unit_kept(lc->r, reg, j, lc->check)) == kept) {
            j++;
        }
        if (kept) {
            ret = sl_commit_kept(lc->r, reg, k, j - k, lc->who);
        } else {
            sl_view *v = sl_first_view(lc->r, reg);
            ret = sl_fill_claimed(lc->r, reg, v, k, j - k,
                                  reg->mem.ops->stage(&reg->mem, k * reg->unit, lc->buf), lc->who,
                                  lc->r->snap->fd);
            sl_view_exit(lc->r, v);
        }
        k = j;
        kept = next;
    }
    if (ret < 0 && k < m) {
        sl_pagemap_unclaim(reg->map, k, m - k);
    }
    return ret;
}

/*
 * In-place backends: claim up to claim_units of [u, j), then fill them
 * (staged where the backend says: its alias, or our buffer).
 */
static int load_in_place(loader_ctx *lc, sl_region *reg, uint64_t u, uint64_t j, bool data)
{
    for (uint64_t k = u; k < j;) {
        uint64_t m = k;
        int ret = 0;

        while (m < j && m - k < reg->claim_units && sl_pagemap_claim(reg->map, m)) {
            m++;
        }
        if (m > k && reg->mem.keep) {
            claimed_hook(lc->r, reg, k, m - k);
            ret = keep_or_fill(lc, reg, k, m);
        } else if (m > k && !data) {
            claimed_hook(lc->r, reg, k, m - k);
            ret = commit_zeros(lc, reg, k, m - k);
        } else if (m > k) {
            sl_view *v = sl_first_view(lc->r, reg);
            claimed_hook(lc->r, reg, k, m - k);
            ret = sl_fill_claimed(lc->r, reg, v, k, m - k,
                                  reg->mem.ops->stage(&reg->mem, k * reg->unit, lc->buf), lc->who,
                                  lc->r->snap->fd);
            sl_view_exit(lc->r, v);
        }
        if (ret < 0) {
            return ret;
        }
        k = m > k ? m : k + 1;
    }
    return 0;
}

/* The end of the run of units like @u (data or zero) that starts at @u, before @end. */
static uint64_t run_end(const sl_region *reg, uint64_t u, uint64_t end)
{
    bool data = sl_unit_has_data(reg, u);
    uint64_t j = u + 1;

    while (j < end && sl_unit_has_data(reg, j) == data) {
        j++;
    }
    return j;
}

/*
 * Stages chunk [u0, u0+n) whole at @base for a move: data runs read (unless
 * read directly already: lc->pre), zero runs cleared (the moved hugepage
 * holds them too), every data unit checked.  0: staged, *@zeros units of
 * it zero; 1: not to be moved (a unit failing its checksum, which the
 * unit-by-unit path refuses); or -errno.
 */
static int stage_chunk(loader_ctx *lc, sl_region *reg, uint64_t u0, uint64_t n, uint8_t *base,
                       uint64_t *zeros)
{
    uint64_t end = u0 + n;

    *zeros = 0;
    for (uint64_t u = u0, j; u < end; u = j) {
        uint8_t *at = base + (u - u0) * reg->unit;
        int ret = 0;

        j = run_end(reg, u, end);
        if (!sl_unit_has_data(reg, u)) {
            memset(at, 0, (j - u) * reg->unit);
            *zeros += j - u;
            continue;
        }
        if (!lc->pre && (ret = sl_read_units(lc->r, reg, u, j - u, at, lc->r->snap->fd)) < 0) {
            return ret; /* with lc->pre it was read directly with the chunk already */
        }
        for (uint64_t k = u; k < j; k++) {
            if (!sl_unit_verifies(lc->r, reg, k, base + (k - u0) * reg->unit)) {
                return 1;
            }
        }
    }
    return 0;
}

/*
 * Claimed units [u0, m) staged at @base: copied in (data) or committed as
 * zeros, run by run.  A run that fails settles or gives back its own
 * units; those of the runs after it are given back too (they were left
 * CLAIMED with no owner: found by review).
 */
static int copy_staged(loader_ctx *lc, sl_region *reg, uint64_t u0, uint64_t m,
                       const uint8_t *base)
{
    for (uint64_t u = u0, j; u < m; u = j) {
        int ret = 0;

        j = run_end(reg, u, m);
        claimed_hook(lc->r, reg, u, j - u);
        if (!sl_unit_has_data(reg, u)) {
            ret = commit_zeros(lc, reg, u, j - u);
        } else {
            sl_view *v = sl_first_view(lc->r, reg);
            ret = sl_commit_run(lc->r, reg, v, u, j - u, base + (u - u0) * reg->unit, lc->who,
                                false);
            sl_view_exit(lc->r, v);
        }
        if (ret < 0) {
            if (j < m) {
                sl_pagemap_unclaim(reg->map, j, m - j);
            }
            return ret;
        }
    }
    return 0;
}

/*
 * reg->move: a whole 2 MiB chunk of our own anonymous mapping, every unit
 * absent, read into the loader's hugepage buffer, checked, claimed, and
 * moved into place with one UFFDIO_MOVE: no second copy, and the guest
 * gets a transparent hugepage at once (zero pages among data included, as
 * an eager load into MADV_HUGEPAGE memory would have them).  1: not taken
 * (a unit already placed, faulted or corrupt; no data): the caller loads
 * the rest unit by unit.
 */
static int load_moved(loader_ctx *lc, sl_region *reg, uint64_t u0, uint64_t n)
{
    uint64_t end = u0 + n, zeros, m = u0;
    uint8_t *base = lc->pre ? lc->pre + (u0 - lc->pre_u0) * reg->unit : lc->buf;
    bool data = false;
    sl_view *v;
    int ret;

    for (uint64_t u = u0; u < end; u++) {
        if (sl_pagemap_state(reg->map, u) != SL_PAGE_ABSENT) {
            return 1;
        }
        data = data || sl_unit_has_data(reg, u);
    }
    if (!data) {
        return 1; /* all zeros: published unit by unit, nothing staged or allocated */
    }
    if ((ret = stage_chunk(lc, reg, u0, n, base, &zeros)) != 0) {
        return ret;
    }
    if (lc->r->loader_staged) {
        lc->r->loader_staged(lc->r->loader_staged_opaque, reg->index, u0, n);
    }
    while (m < end && sl_pagemap_claim(reg->map, m)) {
        m++;
    }
    if (m < end) { /* a fault took a unit meanwhile: what we claimed is copied */
        ret = copy_staged(lc, reg, u0, m, base);
        return ret < 0 ? ret : 1;
    }
    claimed_hook(lc->r, reg, u0, n);
    v = sl_first_view(lc->r, reg);
    ret = sl_commit_run(lc->r, reg, v, u0, n, base, lc->who, true);
    sl_view_exit(lc->r, v);
    add(&lc->r->c.zero_pages, ret == 0 ? zeros : 0);
    return ret;
}

static int load_chunk(loader_ctx *lc, sl_region *reg, uint64_t u0, uint64_t n)
{
    uint64_t end = u0 + n;
    int ret = sl_prove_units(lc->r, reg, u0, n); /* before any bitmap bit decides */

    if (ret < 0) {
        return ret;
    }
    if (reg->move && n == reg->chunk_units && u0 % reg->chunk_units == 0 &&
        (ret = load_moved(lc, reg, u0, n)) <= 0) {
        return ret;
    }
    for (uint64_t u = u0; u < end;) {
        uint64_t j = u + 1;
        bool data;

        if (sl_pagemap_state(reg->map, u) != SL_PAGE_ABSENT) {
            u++;
            continue;
        }
        data = sl_unit_has_data(reg, u);
        /* A run never exceeds a chunk: the bounce buffer holds one. */
        while (j < end && j - u < reg->chunk_units &&
               sl_pagemap_state(reg->map, j) == SL_PAGE_ABSENT &&
               sl_unit_has_data(reg, j) == data) {
            j++;
        }
        ret = reg->mem.ops->in_place ? load_in_place(lc, reg, u, j, data)
                                     : load_bounce(lc, reg, u, j, data);
        if (ret < 0) {
            return ret;
        }
        u = j;
    }
    return 0;
}

static void note_loader_time(sl_restore *r, uint64_t mine)
{
    /* Relaxed, load and exchange: a statistic (restore-int.h, the counters);
     * the exchange only keeps the largest, read after the loaders joined. */
    uint64_t prev = atomic_load_explicit(&r->c.loader_ns_max, memory_order_relaxed);

    while (mine > prev && !atomic_compare_exchange_weak_explicit(
               &r->c.loader_ns_max, &prev, mine, memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* Pins the calling loader to its node's CPUs (best effort, audited). */
static const cpu_set_t *pin_to_node(loader_ctx *lc)
{
    const cpu_set_t *cpus = &lc->r->topo.nodes[lc->g->index].cpus;

    pthread_setaffinity_np(pthread_self(), sizeof(*cpus), cpus);
    sl_group_prefer_node(lc->r, lc->g->index); /* the hugepages it moves are allocated here */
    /* Best effort: background work yields the CPU to the fault thread. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), LOADER_NICE);
    return cpus;
}

/*
 * Direct reads: the reads of @run's runs of units with data into
 * @off/@len/@buf_off (at most SL_DIRECT_READS: past that, the last read
 * stretches over the holes up to the next run, which are read and not
 * used).  Their number; 0 when there is nothing to read.
 */
static unsigned direct_reads(const sl_region *reg, const sl_run *run, uint64_t *off,
                             uint64_t *len, uint64_t *buf_off)
{
    unsigned n = 0;

    for (uint64_t u = run->unit, end = run->unit + run->n; u < end;) {
        uint64_t j = u;
        if (!sl_unit_has_data(reg, u)) {
            u++;
            continue;
        }
        while (j < end && sl_unit_has_data(reg, j)) {
            j++;
        }
        if (n == SL_DIRECT_READS) { /* stretch the last read */
            len[n - 1] = reg->blk->pages_offset + j * reg->unit - off[n - 1];
        } else {
            off[n] = reg->blk->pages_offset + u * reg->unit;
            len[n] = (j - u) * reg->unit;
            buf_off[n++] = (u - run->unit) * reg->unit;
        }
        u = j;
    }
    return n;
}

/*
 * Direct reads: queues the reads of @run's units with data.  False when
 * it is to be loaded the ordinary way: no direct reads, a shared-memory
 * backend, nothing to read, unaligned, cached (SL_DIRECT_AUTO), or the
 * queue refused it.
 */
static bool queue_direct(loader_ctx *lc, const sl_run *run)
{
    sl_restore *r = lc->r;
    sl_region *reg = g_ptr_array_index(r->regions, run->region);
    uint64_t off[SL_DIRECT_READS], len[SL_DIRECT_READS], buf_off[SL_DIRECT_READS], total = 0;
    unsigned n;

    if (!lc->direct || reg->mem.ops->in_place || reg->blk->pages_offset % 4096 ||
        reg->unit % 4096 || run->n * reg->unit > r->direct_chunk || /* its buffer's size */
        sl_prove_units(r, reg, run->unit, run->n) < 0 ||
        !(n = direct_reads(reg, run, off, len, buf_off))) { /* the bits it reads are proven */
        return false;
    }
    if (r->cfg.direct_reads == SL_DIRECT_AUTO &&
        !sl_direct_uncached(r->direct_fd, off[0], off[n - 1] + len[n - 1] - off[0])) {
        return false;
    }
    if (!sl_direct_push(lc->direct, lc->pushed % SL_DIRECT_DEPTH, n, off, len, buf_off)) {
        return false;
    }
    for (unsigned i = 0; i < n; i++) {
        total += len[i];
    }
    lc->queued_len[lc->pushed % SL_DIRECT_DEPTH] = total;
    lc->queued[lc->pushed++ % SL_DIRECT_DEPTH] = *run;
    return true;
}

/* Work a consumer is about to touch: from a fault window or the hot list. */
static bool hinted(sl_work from)
{
    return from == SL_WORK_WINDOW || from == SL_WORK_HOT;
}

/* Loads @run (already read into @pre, or NULL: read it now), which came @from. */
static int load_run(loader_ctx *lc, const sl_run *run, uint8_t *pre, sl_work from)
{
    sl_restore *r = lc->r;
    int ret;

    lc->who = (int)lc->g->index | (hinted(from) ? HINTED : 0);
    lc->map_zeros = from == SL_WORK_HOT;
    lc->pre = pre;
    lc->pre_u0 = run->unit;
    ret = load_chunk(lc, g_ptr_array_index(r->regions, run->region), run->unit, run->n);
    lc->pre = NULL;
    return ret;
}

/*
 * The next run to load now, in *@run: the group's next one that is not
 * queued for a direct read, or else the oldest direct read, once done
 * (*@pre: its buffer; NULL if that read failed, so it is read again the
 * ordinary way).  False when there is no more work.
 */
static bool next_run(loader_ctx *lc, sl_run *run, uint8_t **pre, sl_work *from)
{
    uint64_t tag;
    uint8_t *buf;

    *pre = NULL;
    while (!(lc->direct && sl_direct_full(lc->direct)) &&
           sl_group_next(lc->r, lc->g, run, from)) {
        if (hinted(*from) || !queue_direct(lc, run)) {
            return true;
        }
    }
    if (!lc->direct || sl_direct_empty(lc->direct)) {
        return false;
    }
    *from = SL_WORK_CHUNK; /* only chunks and a reset's runs are queued */
    if (sl_direct_pop(lc->direct, &tag, &buf) == 0) {
        *pre = buf;
        add(&lc->r->c.bytes_read, lc->queued_len[tag]);
        add(&lc->r->c.bytes_direct, lc->queued_len[tag]);
    }
    *run = lc->queued[tag];
    return true;
}

static bool in_place_run(const sl_restore *r, const sl_run *run)
{
    return ((const sl_region *)g_ptr_array_index(r->regions, run->region))->mem.ops->in_place;
}

static gpointer loader_thread(gpointer opaque)
{
    loader_ctx *lc = opaque;
    sl_restore *r = lc->r;
    const cpu_set_t *cpus = pin_to_node(lc);
    uint64_t t0 = sl_now_ns();
    uint8_t *pre;
    sl_run run;
    sl_work from;

    /* acquire: pairs with the release store of @stopping in the stop path */
    while (!atomic_load_explicit(&r->stopping, memory_order_acquire) &&
           next_run(lc, &run, &pre, &from)) {
        int cpu = sched_getcpu(), ret;

        add(&r->c.cpu_violations, cpu >= 0 && !CPU_ISSET(cpu, cpus));
        if (!hinted(from) && (!lc->direct || in_place_run(r, &run))) {
            /* Not with direct reads: the page cache would then be filled
             * ahead, and those chunks read through it.  A run filled in
             * place (shmem, hugetlbfs) is never read directly. */
            sl_group_readahead(r, lc->g, READAHEAD_CHUNKS, READAHEAD_BYTES);
        }
        ret = load_run(lc, &run, pre, from);
        if (ret < 0) {
            sl_engine_fail(r, ret);
            break;
        }
    }
    sl_direct_free(lc->direct); /* after the reads still in flight */
    note_loader_time(r, sl_now_ns() - t0);
    sl_large_unmap(&lc->bufmap);
    g_free(lc->check);
    g_free(lc->bad);
    g_free(lc);
    return NULL;
}

/* Starts @g's threads into r->loaders from slot *@slot on. */
static bool spawn_group(sl_restore *r, sl_group *g, uint64_t max_units, unsigned *slot,
                        GError **errp)
{
    for (unsigned i = 0; i < g->nthreads; i++) {
        loader_ctx *lc = g_new0(loader_ctx, 1);
        lc->r = r;
        lc->g = g;
        lc->bad = g_new0(bool, max_units);
        lc->check = r->cfg.keep_memory ? g_malloc(CHECK_BYTES) : NULL;
        lc->direct = r->direct_fd >= 0 ? sl_direct_new(r->direct_fd, r->direct_chunk) : NULL;
        bool no_buf = r->max_chunk && !(lc->buf = sl_large_map(&lc->bufmap, r->max_chunk));

        if (no_buf) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "loader %u's buffer of %" G_GUINT64_FORMAT
                        " bytes: %s", *slot, r->max_chunk, g_strerror(errno));
        }
        if (no_buf ||
            !(r->loaders[*slot] = g_thread_try_new("sl-loader", loader_thread, lc, errp))) {
            sl_direct_free(lc->direct);
            sl_large_unmap(&lc->bufmap);
            g_free(lc->check);
            g_free(lc->bad);
            g_free(lc);
            return false;
        }
        (*slot)++;
    }
    return true;
}

/* The largest chunk of the regions whose loads can be direct reads
 * (queue_direct(): not filled in place); 0 if there is none. */
static uint64_t direct_chunk_max(const sl_restore *r)
{
    uint64_t most = 0;

    for (guint i = 0; i < r->regions->len; i++) {
        const sl_region *reg = g_ptr_array_index(r->regions, i);
        if (!reg->mem.ops->in_place) {
            most = MAX(most, reg->chunk_units * reg->unit);
        }
    }
    return most;
}

/*
 * The snapshot opened once more with O_DIRECT for the loaders' direct
 * reads (r->direct_fd), where they may be used: config.direct_reads not
 * OFF, a region filled by copy or move (anonymous memory), no parent
 * (whose pages are in other files), chunks of at most 2 MiB (each loader
 * keeps SL_DIRECT_DEPTH of them in flight: 8 GiB per loader for 1 GiB
 * snapshot pages).  A loader with direct reads does no readahead, so
 * without such a region (shmem, hugetlbfs) they would only cost the fill
 * its readahead.  Stays -1 where the file system refuses O_DIRECT.
 */
#define SL_DIRECT_MAX_CHUNK (2u << 20)

static void open_direct_fd(sl_restore *r)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", r->snap->fd);
    uint64_t chunk = direct_chunk_max(r);

    if (r->direct_fd >= 0 || r->cfg.direct_reads == SL_DIRECT_OFF || !chunk ||
        chunk > SL_DIRECT_MAX_CHUNK || sl_snapshot_parent(r->snap)) {
        return;
    }
    r->direct_fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    r->direct_chunk = chunk;
}

static bool spawn_loaders(sl_restore *r, GError **errp)
{
    uint64_t max_units = 1;
    unsigned slot = 0;

    open_direct_fd(r);
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        max_units = MAX(max_units, MAX(reg->chunk_units, reg->window));
    }
    r->loaders = g_new0(GThread *, r->nloaders);
    for (unsigned g = 0; g < r->ngroups; g++) {
        if (!spawn_group(r, &r->groups[g], max_units, &slot, errp)) {
            return false;
        }
    }
    return true;
}

void sl_engine_join_loaders(sl_restore *r)
{
    for (unsigned i = 0; r->loaders && i < r->nloaders; i++) {
        if (r->loaders[i]) {
            g_thread_join(r->loaders[i]);
        }
    }
    g_clear_pointer(&r->loaders, g_free);
}

bool sl_engine_refill(sl_restore *r, GError **errp)
{
    sl_engine_join_loaders(r);
    return !r->nloaders || spawn_loaders(r, errp);
}

#define PREFAULT_BYTES (32u << 20) /* per call: the thread checks for a stop between them */

/* The units of [u, u+n) of @reg hold data (as the bitmap says: only a hint here). */
static bool any_data(const sl_region *reg, uint64_t u, uint64_t n)
{
    for (uint64_t k = u; k < u + n; k++) {
        if (sl_unit_has_data(reg, k)) {
            return true;
        }
    }
    return false;
}

/*
 * Gives @reg's ranges of units that will hold data their pages (see
 * prefault_thread()), a stripe at a time under the policy of its node:
 * fallocate() allocates under the calling thread's, never our alias's
 * binding (found by review: every page came from the thread's own node).
 * False once the restore stops or completes.
 */
static bool prefault_region(sl_restore *r, sl_region *reg)
{
    uint64_t step = MAX(1, PREFAULT_BYTES / reg->unit), n;

    for (uint64_t u = 0; u < reg->nunits; u += n) {
        uint64_t stripe_end = (u / reg->stripe_units + 1) * reg->stripe_units;
        sl_thread_policy saved;

        n = MIN(MIN(step, stripe_end - u), reg->nunits - u);
        /* Acquire: pairs with the release store in sl_engine_fail()/stop. */
        if (atomic_load_explicit(&r->stopping, memory_order_acquire) ||
            atomic_load_explicit(&r->remaining, memory_order_relaxed) == 0) {
            return false;
        }
        if (any_data(reg, u, n)) {
            sl_alloc_policy_enter(r, reg, u, &saved);
            reg->mem.ops->prefault(&reg->mem, u * reg->unit, n * reg->unit);
            sl_alloc_policy_exit(&saved);
        }
    }
    return true;
}

/*
 * Gives every range of units that will hold data its pages, zeroed, in
 * file order, ahead of the loaders (ops->prefault: hugetlbfs), so neither
 * a fault nor a loader pays for allocating and clearing them.  Allocation
 * only: nothing is placed or mapped, so the bitmap is a hint here.
 */
static gpointer prefault_thread(gpointer opaque)
{
    sl_restore *r = opaque;

    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), LOADER_NICE);
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (reg->mem.ops->prefault && !prefault_region(r, reg)) {
            break;
        }
    }
    return NULL;
}

/*
 * Starts prefault_thread where a backend has prefault and some CPU of the
 * restore runs no loader.  When a loader runs on every CPU, the loaders
 * clear each page themselves as they read into it, while it is still in
 * the CPU's cache: on this project's 2-CPU host a prefault thread beside
 * two loaders made the hugetlbfs-2M fill 1.2x slower (a second pass over
 * memory, and a third thread on two CPUs), with no measurable gain for
 * the faults during the fill (docs/minor-mode.md).
 */
static bool start_prefault(sl_restore *r, GError **errp)
{
    unsigned ncpus = 0;
    bool any = false;

    for (unsigned g = 0; g < r->topo.nnodes; g++) {
        ncpus += r->topo.nodes[g].ncpus;
    }
    if (r->cfg.no_prefault || r->nloaders >= ncpus) {
        return true;
    }
    for (guint i = 0; i < r->regions->len; i++) {
        any |= ((sl_region *)g_ptr_array_index(r->regions, i))->mem.ops->prefault != NULL;
    }
    return !any ||
           (r->prefault_thread = g_thread_try_new("sl-prefault", prefault_thread, r, errp));
}

bool sl_loaders_start(sl_restore *r, GError **errp)
{
    return (!r->nloaders || spawn_loaders(r, errp)) && start_prefault(r, errp);
}
