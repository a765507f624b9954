/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * NUMA-local prefetch: which node owns each part of guest RAM, binding that
 * memory to the node, one group of loader threads per node, and the order in
 * which a group takes its work:
 *
 *   1. faults are served by the fault thread, never queued behind this;
 *   2. the locality window after a recent fault on one of the node's units;
 *   3. the node's entries of the snapshot's hot-page list, in recorded order;
 *   4. the node's chunks in file order (runs coalesced into large reads).
 *
 * A block belongs to one node (sl_restore_bind(), else the snapshot's node
 * hint, else the node of the policy its memory carries, else the first
 * node), or with config.interleave is striped over all nodes: one rotation
 * across every interleaved block, stripes of min(64 MiB, their total /
 * nodes) in whole loader chunks.  Memory asked for (bound, hinted,
 * interleaved) is bound to its node strictly; memory nobody asked for
 * prefers its node, or keeps the policy it carries.  The fault thread
 * also records the order of faulted pages here when asked
 * (record-and-prefetch).
 */
#include <errno.h>
#include <fcntl.h>
#include <numaif.h>
#include <string.h>
#include "restore-int.h"

unsigned sl_unit_node(const sl_restore *r, const sl_region *reg, uint64_t u)
{
    return reg->bind >= 0 ? (unsigned)reg->bind
                          : (unsigned)((reg->first_stripe + u / reg->stripe_units) % r->ngroups);
}

/* Units of @reg's fault-around block (config.fault_around): a power of two, 1 for none. */
static uint64_t around_units(const sl_restore *r, const sl_region *reg)
{
    uint64_t bytes = r->cfg.fault_around ? r->cfg.fault_around : SL_FAULT_AROUND_DEFAULT;
    uint64_t n = MIN(bytes, SL_FAULT_AROUND_MAX) / reg->unit;

    return reg->unit <= 4096 && n > 1 ? 1ull << (63 - __builtin_clzll(n)) : 1;
}

/* Where the restore binds @reg's memory: our mapping, or the fill alias of a file. */
static uint8_t *bind_base(const sl_region *reg)
{
    return reg->mem.alias ? reg->mem.alias : reg->mem.host;
}

/*
 * Whether @reg's memory carries a policy already (read where we would bind
 * it: a memory file's shared policy, which a VMM's mbind on its own mapping
 * of the file sets; hugetlbfs keeps none); *@node: its first node, or -1
 * when it names none (local allocation).
 */
static bool memory_policy(const sl_region *reg, int *node)
{
    unsigned long mask[SL_NODEMASK_WORDS] = { 0 };
    uint8_t *base = bind_base(reg);
    int mode = MPOL_DEFAULT;

    *node = -1;
    if (!base || get_mempolicy(&mode, mask, SL_NODEMASK_WORDS * 64, base, MPOL_F_ADDR) < 0 ||
        mode == MPOL_DEFAULT) {
        return false;
    }
    for (int n = 0; n < SL_NODEMASK_WORDS * 64 && *node < 0; n++) {
        *node = mask[n / 64] & 1ul << (n % 64) ? n : -1;
    }
    return true;
}

/*
 * The node of a block with no binding nor hint: its memory's own policy,
 * left as it is, decides (the node of its first node; an mbind of ours on
 * a memory file replaced a VMM's policy for good), else the first node,
 * preferred, not bound (memory may then spill, as an eager load's would,
 * instead of failing for want of room on one node).
 */
static int unhinted_node(sl_restore *r, sl_region *reg)
{
    int node;

    if (memory_policy(reg, &node)) {
        reg->policy = MPOL_DEFAULT;
        return node >= 0 ? (int)sl_topology_memory_index(&r->topo, node) : 0;
    }
    reg->policy = MPOL_PREFERRED;
    return 0;
}

/* Resolves the region's node policy once the topology is known. */
static void region_policy(sl_restore *r, sl_region *reg)
{
    int hint = reg->blk->numa_node;

    reg->policy = MPOL_BIND;
    if (reg->bind == -2) { /* not bound by the caller */
        if (r->cfg.interleave) {
            reg->bind = -1;
        } else if (hint >= 0) {
            reg->bind = (int)sl_topology_hint_index(&r->topo, hint);
        } else {
            reg->bind = unhinted_node(r, reg);
        }
    }
    reg->stripe_units = MAX(1, reg->nunits); /* bound: one stripe; interleave: plan_stripes() */
    reg->window = reg->unit <= (2u << 20) ? MAX(2, SL_WINDOW_BYTES / reg->unit) : 0;
    reg->around = around_units(r, reg);
    reg->order = r->cfg.trace_order ? g_new0(uint32_t, reg->nunits) : NULL;
    reg->recorded = r->cfg.record ? g_new0(uint64_t, reg->nunits / 64 + 1) : NULL;
}

/* @mask: group @g's memory node alone; false when it has none we can name. */
static bool group_mask(const sl_restore *r, unsigned g, unsigned long mask[SL_NODEMASK_WORDS])
{
    int mem = r->topo.nodes[g].mem_node;

    memset(mask, 0, SL_NODEMASK_WORDS * sizeof(mask[0]));
    if (mem < 0 || mem >= SL_NODEMASK_WORDS * 64) {
        return false;
    }
    mask[mem / 64] = 1ul << (mem % 64);
    return true;
}

/* mbind [first, first+n) units of @reg to the memory node of group @g (reg->policy). */
static bool bind_range(sl_restore *r, sl_region *reg, uint64_t first, uint64_t n, unsigned g,
                       GError **errp)
{
    unsigned long mask[SL_NODEMASK_WORDS];
    int mem = r->topo.nodes[g].mem_node;
    uint8_t *base = bind_base(reg);

    if (!base || !group_mask(r, g, mask) || reg->policy == MPOL_DEFAULT) {
        return true; /* nothing of ours to bind (the file's owner placed it), or its own policy */
    }
    if (mbind(base + first * reg->unit, n * reg->unit, reg->policy, mask,
              SL_NODEMASK_WORDS * 64 + 1, 0) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': binding to node %d "
                    "(memory node %d): %s", reg->blk->name, r->topo.nodes[g].id, mem,
                    g_strerror(errno));
        return false;
    }
    return true;
}

void sl_group_prefer_node(sl_restore *r, unsigned g)
{
    unsigned long mask[SL_NODEMASK_WORDS];

    if (group_mask(r, g, mask)) {
        (void)set_mempolicy(MPOL_PREFERRED, mask, SL_NODEMASK_WORDS * 64 + 1);
    }
}

void sl_alloc_policy_enter(sl_restore *r, const sl_region *reg, uint64_t u,
                           sl_thread_policy *saved)
{
    unsigned long mask[SL_NODEMASK_WORDS];

    saved->set = false;
    if (!reg->mem.ops->alloc_by_thread || reg->policy == MPOL_DEFAULT ||
        !group_mask(r, sl_unit_node(r, reg, u), mask) ||
        get_mempolicy(&saved->mode, saved->mask, SL_NODEMASK_WORDS * 64, NULL, 0) < 0) {
        return;
    }
    saved->set = set_mempolicy(reg->policy, mask, SL_NODEMASK_WORDS * 64 + 1) == 0;
}

void sl_alloc_policy_exit(const sl_thread_policy *saved)
{
    if (saved->set) {
        (void)set_mempolicy(saved->mode, saved->mask, SL_NODEMASK_WORDS * 64 + 1);
    }
}

/*
 * Stripes of the interleaved regions: min(SL_STRIPE_BYTES, their total /
 * nodes), rounded down to whole loader chunks (at least one) so that every
 * chunk has one owner; the node rotation runs on from block to block.
 */
static void plan_stripes(sl_restore *r)
{
    uint64_t total = 0, stripe, next = 0;

    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        total += reg->bind < 0 ? reg->nunits * reg->unit : 0;
    }
    stripe = MIN(SL_STRIPE_BYTES, total / r->ngroups);
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        uint64_t chunk = reg->chunk_units * reg->unit;
        if (reg->bind >= 0 || reg->nunits == 0) {
            continue;
        }
        reg->stripe_units = MAX(1, stripe / chunk) * reg->chunk_units;
        reg->first_stripe = next;
        next += (reg->nunits + reg->stripe_units - 1) / reg->stripe_units;
    }
}

/* Binds each node's part of @reg to that node's memory before any placement. */
static bool bind_region(sl_restore *r, sl_region *reg, GError **errp)
{
    if (reg->bind >= 0) {
        return bind_range(r, reg, 0, reg->nunits, (unsigned)reg->bind, errp);
    }
    for (uint64_t u = 0; u < reg->nunits; u += reg->stripe_units) {
        if (!bind_range(r, reg, u, MIN(reg->stripe_units, reg->nunits - u),
                        sl_unit_node(r, reg, u), errp)) {
            return false;
        }
    }
    return true;
}

/* Appends global chunks [@first, +@n) to @grp's spans (growing its last span if they follow it). */
static void add_span(sl_group *grp, GArray *spans, uint64_t first, uint64_t n)
{
    sl_span *last = spans->len ? &g_array_index(spans, sl_span, spans->len - 1) : NULL;

    if (last && last->first + last->n == first) {
        last->n += n;
    } else {
        sl_span s = { .first = first, .n = n, .before = grp->nchunks };
        g_array_append_val(spans, s);
    }
    grp->nchunks += n;
}

/* Deals every stripe's chunks to the group of the node that owns it, in file order. */
static void build_groups(sl_restore *r)
{
    GArray *spans[SL_MAX_NODES];

    r->nloaders = 0;
    for (unsigned g = 0; g < r->ngroups; g++) {
        sl_group *grp = &r->groups[g];
        unsigned ncpus = r->topo.nodes[g].ncpus;
        grp->index = g;
        /* By default every CPU of the node: loaders run at a low priority
         * (LOADER_NICE), so they take the CPU time vCPUs leave idle. */
        grp->nthreads = r->cfg.no_loaders ? 0 : r->cfg.loader_threads ? r->cfg.loader_threads
                                                                       : MAX(1, ncpus);
        spans[g] = g_array_new(false, false, sizeof(sl_span));
        r->nloaders += grp->nthreads;
    }
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        /* A stripe is whole chunks (plan_stripes), so chunk c starts unit c * chunk_units. */
        for (uint64_t u = 0; u < reg->nunits; u += reg->stripe_units) {
            uint64_t c = u / reg->chunk_units, end = MIN(u + reg->stripe_units, reg->nunits);
            unsigned g = sl_unit_node(r, reg, u);
            add_span(&r->groups[g], spans[g], reg->first_chunk + c,
                     (end + reg->chunk_units - 1) / reg->chunk_units - c);
        }
    }
    for (unsigned g = 0; g < r->ngroups; g++) {
        r->groups[g].nspans = spans[g]->len;
        r->groups[g].spans = (sl_span *)(void *)g_array_free(spans[g], false);
    }
}

/* The global chunk number of @g's @i-th chunk (i < g->nchunks): a binary search of its spans. */
static uint64_t group_chunk(const sl_group *g, uint64_t i)
{
    unsigned lo = 0, hi = g->nspans;

    while (hi - lo > 1) {
        unsigned mid = lo + (hi - lo) / 2;
        if (g->spans[mid].before <= i) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return g->spans[lo].first + (i - g->spans[lo].before);
}

static sl_region *region_of_block(sl_restore *r, unsigned block)
{
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        if (reg->block == block) {
            return reg;
        }
    }
    return NULL;
}

/*
 * A region whose loaders move whole chunks (reg->move): a hot unit of a
 * chunk holding data brings the whole chunk, [@c0, +@n), one run per chunk
 * (a chunk moved whole is one hugepage, while the units listed alone would
 * be copied as 4 KiB pages).  Appended unless the last run is that chunk
 * already.
 */
static void add_hot_chunk(sl_restore *r, sl_region *reg, uint64_t c0, uint64_t n, GArray *l)
{
    sl_run *last = l->len ? &g_array_index(l, sl_run, l->len - 1) : NULL;
    sl_run run = { .region = reg->index, .unit = c0, .n = n };

    if (!last || last->region != run.region || last->unit != run.unit) {
        g_array_append_val(l, run);
    }
    r->hot_units++;
}

/*
 * Appends unit @u of @reg to its group's hot runs, coalescing neighbours
 * within a loader chunk, never across one (as queue_redo() cuts a reset's
 * runs): a loader looks for a stop only between runs, and a sequential
 * list made one run of everything, which a stop or a failure waited for
 * and one loader loaded alone; and a chunk the loaders move whole stays
 * a run of its own (the next chunk's first unit stretched it, and it was
 * then copied unit by unit).  Both found by review.
 */
static void add_hot(sl_restore *r, sl_region *reg, uint64_t u, GArray **lists)
{
    unsigned g = sl_unit_node(r, reg, u);
    GArray *l = lists[g];
    sl_run *last = l->len ? &g_array_index(l, sl_run, l->len - 1) : NULL;
    uint64_t c0 = u - u % reg->chunk_units, cn = MIN(reg->chunk_units, reg->nunits - c0);

    /* The bits are not proven yet: only a hint of what to load first; the
     * loader proves them before they decide anything (load_chunk). */
    if (reg->move && sl_bit_any(reg->blk->bitmap, c0 * reg->ratio, (c0 + cn) * reg->ratio)) {
        add_hot_chunk(r, reg, c0, cn, l);
        return;
    }
    if (last && last->region == reg->index && u >= last->unit && u < last->unit + last->n) {
        return; /* already in the last run */
    }
    if (last && last->region == reg->index && u == last->unit + last->n &&
        u % reg->chunk_units != 0) {
        last->n++;
    } else {
        sl_run run = { .region = reg->index, .unit = u, .n = 1 };
        g_array_append_val(l, run);
    }
    r->hot_units++;
}

static bool has_section(const sl_snapshot *s, uint32_t type)
{
    uint32_t t;
    uint64_t len;

    for (unsigned i = 0; sl_snapshot_section(s, i, &t, &len); i++) {
        if (t == type) {
            return true;
        }
    }
    return false;
}

/* Reads the snapshot's hot-page list into per-group runs. */
static bool load_hot_list(sl_restore *r, GError **errp)
{
    g_autoptr(GBytes) bytes = NULL;
    GArray *lists[SL_MAX_NODES];
    const uint8_t *p;
    gsize len;

    if (r->cfg.no_hot_list || !has_section(r->snap, SL_SECTION_HOT_PAGES)) {
        return true;
    }
    bytes = sl_snapshot_read_section(r->snap, SL_SECTION_HOT_PAGES, errp);
    if (!bytes) {
        return false;
    }
    p = g_bytes_get_data(bytes, &len);
    if (!sl_hot_list_check(r->snap, p, len, errp)) {
        g_prefix_error(errp, "%s: ", sl_sections_path(r->snap));
        return false;
    }
    for (unsigned g = 0; g < r->ngroups; g++) {
        lists[g] = g_array_new(false, false, sizeof(sl_run));
    }
    for (gsize i = 0; i < len / 16; i++) {
        uint64_t page = sl_le64(p + i * 16 + 8);
        sl_region *reg = region_of_block(r, sl_le32(p + i * 16));
        if (reg) {
            add_hot(r, reg, page / reg->ratio, lists);
        }
    }
    for (unsigned g = 0; g < r->ngroups; g++) {
        r->groups[g].nhot = lists[g]->len;
        r->groups[g].hot = (sl_run *)(void *)g_array_free(lists[g], false);
    }
    return true;
}

bool sl_prefetch_setup(sl_restore *r, GError **errp)
{
    r->ngroups = r->topo.nnodes;
    r->groups = g_new0(sl_group, r->ngroups);
    for (guint i = 0; i < r->regions->len; i++) {
        region_policy(r, g_ptr_array_index(r->regions, i));
    }
    plan_stripes(r);
    for (guint i = 0; i < r->regions->len; i++) {
        if (!bind_region(r, g_ptr_array_index(r->regions, i), errp)) {
            return false;
        }
    }
    build_groups(r);
    if (r->cfg.record) {
        r->recorded = g_array_new(false, false, 16);
    }
    return load_hot_list(r, errp);
}

void sl_prefetch_free(sl_restore *r)
{
    for (unsigned g = 0; r->groups && g < r->ngroups; g++) {
        g_free(r->groups[g].spans);
        g_free(r->groups[g].hot);
        g_free(r->groups[g].redo);
    }
    g_free(r->groups);
    if (r->recorded) {
        g_array_free(r->recorded, true);
    }
    for (guint i = 0; i < r->regions->len; i++) {
        sl_region *reg = g_ptr_array_index(r->regions, i);
        g_free(reg->order);
        g_free(reg->recorded);
    }
}

/* Takes the next fault hint that falls on group @g's node. */
static bool next_hint(sl_restore *r, sl_group *g, sl_run *out)
{
    /* Acquire: pairs with the release store in sl_prefetch_note_fault(). */
    uint64_t seq = atomic_load_explicit(&r->hint_seq, memory_order_acquire);
    uint64_t h = atomic_load_explicit(&g->next_hint, memory_order_relaxed);

    while (h < seq) {
        uint64_t take = seq - h > SL_HINTS ? seq - SL_HINTS : h;
        uint64_t v, u;
        sl_region *reg;

        /* relaxed: only hands out slot numbers among the group's loaders;
         * the slot's contents are ordered by the acquire of @hint_seq above */
        if (!atomic_compare_exchange_weak_explicit(&g->next_hint, &h, take + 1,
                                                   memory_order_relaxed,
                                                   memory_order_relaxed)) {
            continue;
        }
        h = take + 1;
        /* relaxed: written before the release store of @hint_seq that the
         * acquire load above saw (a hint overwritten since is only a hint:
         * the unit it names is claimed like any other) */
        v = atomic_load_explicit(&r->hints[take % SL_HINTS], memory_order_relaxed);
        reg = g_ptr_array_index(r->regions, (guint)(v >> 48));
        u = v & ((1ull << 48) - 1);
        if (u < reg->nunits && sl_unit_node(r, reg, u) == g->index) {
            uint64_t stripe_end = reg->bind >= 0 ? reg->nunits
                                  : (u / reg->stripe_units + 1) * reg->stripe_units;
            *out = (sl_run){ .region = reg->index, .unit = u,
                             .n = MIN(reg->window, MIN(stripe_end, reg->nunits) - u) };
            return true;
        }
    }
    return false;
}

bool sl_group_next(sl_restore *r, sl_group *g, sl_run *out, sl_work *from)
{
    uint64_t i;

    *from = SL_WORK_WINDOW;
    if (next_hint(r, g, out)) {
        return true;
    }
    /* Relaxed: the cursors only hand out distinct indices. */
    i = atomic_fetch_add_explicit(&g->next_hot, 1, memory_order_relaxed);
    *from = SL_WORK_HOT;
    if (i < g->nhot) {
        *out = g->hot[i];
        return true;
    }
    i = atomic_fetch_add_explicit(&g->next_redo, 1, memory_order_relaxed);
    *from = SL_WORK_REDO;
    if (i < g->nredo) {
        *out = g->redo[i];
        return true;
    }
    *from = SL_WORK_CHUNK;
    i = atomic_fetch_add_explicit(&g->next_chunk, 1, memory_order_relaxed);
    if (i < g->nchunks) {
        uint64_t c = group_chunk(g, i);
        for (guint k = 0; k < r->regions->len; k++) {
            sl_region *reg = g_ptr_array_index(r->regions, k);
            if (c >= reg->first_chunk && c < reg->first_chunk + reg->nchunks) {
                uint64_t u0 = (c - reg->first_chunk) * reg->chunk_units;
                *out = (sl_run){ .region = k, .unit = u0,
                                 .n = MIN(reg->chunk_units, reg->nunits - u0) };
                return true;
            }
        }
    }
    return false;
}

/* The region holding restore-wide chunk @c, or NULL. */
static const sl_region *chunk_region(sl_restore *r, uint64_t c)
{
    for (guint k = 0; k < r->regions->len; k++) {
        const sl_region *reg = g_ptr_array_index(r->regions, k);
        if (c >= reg->first_chunk && c < reg->first_chunk + reg->nchunks) {
            return reg;
        }
    }
    return NULL;
}

void sl_group_readahead(sl_restore *r, sl_group *g, unsigned ahead, uint64_t max_bytes)
{
    /* Relaxed: only a hint of where the cursor is. */
    uint64_t i = atomic_load_explicit(&g->next_chunk, memory_order_relaxed), c, u0, n;
    const sl_region *reg = i < g->nchunks ? chunk_region(r, group_chunk(g, i)) : NULL;
    uint64_t chunk_bytes = reg ? reg->chunk_units * reg->unit : 0;

    if (chunk_bytes) {
        /* Large chunks (a 1 GiB hugepage each) are advised fewer ahead:
         * never more than @max_bytes, and at least the next one. */
        ahead = (unsigned)MAX(1, MIN(ahead, max_bytes / chunk_bytes));
    }
    if ((i += ahead) >= g->nchunks) {
        return;
    }
    c = group_chunk(g, i);
    reg = chunk_region(r, c);
    if (reg) {
        u0 = (c - reg->first_chunk) * reg->chunk_units;
        n = MIN(reg->chunk_units, reg->nunits - u0);
        sl_snapshot_readahead(r->snap, reg->block, u0 * reg->ratio, n * reg->ratio);
    }
}

/* Record: unit @u joins the list of faulted units, once. */
static void record_unit(sl_restore *r, sl_region *reg, uint64_t u)
{
    uint8_t e[16] = { 0 };

    if (!reg->recorded || sl_bit_test(reg->recorded, u)) {
        return;
    }
    sl_bit_set(reg->recorded, u);
    sl_put_le32(e, reg->block);
    sl_put_le64(e + 8, u * reg->ratio);
    g_array_append_vals(r->recorded, e, 1);
}

void sl_prefetch_note_fault(sl_restore *r, sl_region *reg, uint64_t u, uint64_t u0, uint64_t n)
{
    /* A window only when faults walk forward (readahead): after a random
     * fault it would be wasted work in front of the hot list.  It starts
     * past what the fault served, and the next fault is near when it
     * comes soon after that (whatever the fault-around block). */
    bool near = u > reg->last_fault && u - reg->last_fault <= reg->window;

    reg->last_fault = MAX(u, u0 + n - 1);
    if (near && u0 + n < reg->nunits) {
        /* Only the fault thread writes hints: a relaxed read of seq is exact. */
        uint64_t s = atomic_load_explicit(&r->hint_seq, memory_order_relaxed);
        atomic_store_explicit(&r->hints[s % SL_HINTS], (uint64_t)reg->index << 48 | (u0 + n),
                              memory_order_relaxed);
        atomic_store_explicit(&r->hint_seq, s + 1, memory_order_release);
    }
    record_unit(r, reg, u);
    for (uint64_t i = u0; i < u0 + n; i++) {
        record_unit(r, reg, i);
    }
}
