/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload reset-loop SNAP --backend KIND [--parent PATH]`: a fuzzer's
 * loop, shown.  The snapshot is restored lazily with write tracking into
 * fresh memory; once it is complete, each round writes a share of the
 * guest's pages (the "input", random bytes at random places), resets to
 * the snapshot with sl_restore_reset() (dropping the written units, or
 * with --in-place rewriting them) and checks every byte of memory against
 * the snapshot.  Each round prints what was written, how long the reset
 * took and when every page was present again; the exit status is 1 if
 * any page was ever wrong.
 */
#include <stdio.h>
#include <stdlib.h>
#include "cli.h"
#include "memload.h"
#include "migration/restore-int.h"

typedef struct {
    const char *path;
    char *const *parents;  /* --parent: SNAP's ancestors, not the ones it records */
    sl_backend_kind kind;
    uint64_t hugepage;
    int rounds;
    double share;          /* percent of each block's units written per round */
    gboolean in_place, json; /* GOption writes a gboolean */
    guint32 seed;
} loop_opts;

/* A snapshot, its memory and a restore with write tracking, complete. */
typedef struct {
    sl_snapshot *snap;
    sl_mem *mems;
    unsigned n;
    sl_restore *r;
} loop_state;

/* Waits until the restore ends: true if it completed, else why not in @errp
 * (a wait that ends while it still runs has no restore error to give). */
static bool wait_restore(sl_restore *r, GError **errp)
{
    int ret = sl_restore_wait(r, -1);
    GError *why = ret ? sl_restore_error(r) : NULL;

    if (ret && !why) {
        why = g_error_new(SL_ERROR, SL_ERROR_STATE, "waiting for the restore: %s",
                          g_strerror(-ret));
    }
    if (why) {
        g_propagate_error(errp, why);
    }
    return ret == 0;
}

static bool begin(const loop_opts *o, loop_state *s, GError **errp)
{
    sl_restore_config cfg = { .size = sizeof(cfg), .track_writes = true,
                              .reset_in_place = o->in_place };
    sl_block_info bi;

    s->snap = cli_open_snapshot(o->path, o->parents, 0, errp);
    s->n = s->snap ? sl_snapshot_n_blocks(s->snap) : 0;
    s->mems = g_new0(sl_mem, s->n ? s->n : 1);
    if (!s->snap || !cli_map_blocks(s->snap, o->kind, o->hugepage, s->mems, errp) ||
        !(s->r = sl_restore_new(s->snap, &cfg, errp))) {
        return false;
    }
    for (unsigned b = 0; sl_snapshot_block(s->snap, b, &bi); b++) {
        if (!sl_mem_attach(s->r, bi.name, &s->mems[b], errp)) {
            return false;
        }
    }
    if (!sl_restore_start(s->r, errp)) {
        return false;
    }
    return wait_restore(s->r, errp);
}

static void end(loop_state *s)
{
    sl_restore_free(s->r);
    cli_release_blocks(s->mems, s->n);
    g_free(s->mems);
    sl_snapshot_close(s->snap);
}

/* The round's "input": one random byte in each of @share % of the units
 * (at least one when @share > 0), chosen without repeats (the first k of a partial Fisher-Yates shuffle). */
static void write_input(const loop_opts *o, loop_state *s, GRand *rng)
{
    for (unsigned b = 0; b < s->n; b++) {
        sl_mem *m = &s->mems[b];
        uint64_t units = m->length / m->page_size;
        /* at least one unit when asked for some: a round that writes
         * nothing would check nothing */
        uint64_t k = MIN(units, (uint64_t)((double)units * o->share / 100.0 + 0.5));
        k = o->share > 0 ? MAX(k, 1) : k;
        g_autofree uint64_t *order = g_new(uint64_t, units);

        for (uint64_t i = 0; i < units; i++) {
            order[i] = i;
        }
        for (uint64_t i = 0; i < k; i++) {
            uint64_t j = i + (uint64_t)g_rand_double_range(rng, 0, (double)(units - i));
            uint64_t u = order[MIN(j, units - 1)];
            uint64_t off = (uint64_t)g_rand_double_range(rng, 0, (double)m->page_size);
            order[MIN(j, units - 1)] = order[i];
            order[i] = u;
            m->host[u * m->page_size + MIN(off, m->page_size - 1)] = (uint8_t)g_rand_int(rng);
        }
    }
}

typedef struct {
    sl_reset_stats rs;
    double reset_ms, present_ms;
    uint64_t wrong;
} round_result;

static bool one_round(const loop_opts *o, loop_state *s, GRand *rng, round_result *rr,
                      GError **errp)
{
    double t0;
    bool ret;

    write_input(o, s, rng);
    rr->rs.size = sizeof(rr->rs);
    t0 = cli_now_ms();
    if (!sl_restore_reset(s->r, &rr->rs, errp)) {
        return false;
    }
    rr->reset_ms = cli_now_ms() - t0;
    ret = wait_restore(s->r, errp);
    rr->present_ms = cli_now_ms() - t0;
    if (!ret) {
        return false;
    }
    int64_t wrong = cli_verify_blocks(s->snap, s->mems, errp);
    if (wrong < 0) {
        return false;
    }
    rr->wrong = (uint64_t)wrong;
    return true;
}

static void print_round(const loop_opts *o, int i, const round_result *rr)
{
    if (o->json) {
        printf("{\"round\": %d, \"units_written\": %" G_GUINT64_FORMAT ", \"runs\": %"
               G_GUINT64_FORMAT ", \"reset_ms\": %.3f, \"collect_ms\": %.3f, "
               "\"every_page_present_ms\": %.3f, \"wrong_pages\": %" G_GUINT64_FORMAT "}\n",
               i, rr->rs.units_written, rr->rs.runs, rr->reset_ms, rr->rs.collect_ms,
               rr->present_ms, rr->wrong);
        return;
    }
    printf("round %d: %" G_GUINT64_FORMAT " units written (%" G_GUINT64_FORMAT " runs); reset "
           "%.2f ms (finding them %.2f ms), every page back after %.2f ms; %s\n", i,
           rr->rs.units_written, rr->rs.runs, rr->reset_ms, rr->rs.collect_ms, rr->present_ms,
           rr->wrong ? "WRONG PAGES" : "memory equals the snapshot");
    if (rr->wrong) {
        printf("round %d: %" G_GUINT64_FORMAT " pages differ from the snapshot\n", i, rr->wrong);
    }
}

static int run_loop(const loop_opts *o)
{
    g_autoptr(GRand) rng = g_rand_new_with_seed(o->seed);
    g_autoptr(GError) err = NULL;
    loop_state s = { 0 };
    double t0 = cli_now_ms();
    uint64_t wrong = 0;

    if (!begin(o, &s, &err)) {
        end(&s);
        return cli_fail_error(g_steal_pointer(&err));
    }
    if (!o->json) {
        sl_stats st = { .size = sizeof(st) };
        sl_restore_get_stats(s.r, &st);
        printf("restored %s lazily with write tracking (%s) in %.1f ms (%s); %d rounds, %.2f %% "
               "of the units written per round, reset %s\n", o->path,
               st.write_tracking == SL_TRACK_ASYNC_WP ? "async WP, exact"
               : "no async WP here: every unit counts as written", cli_now_ms() - t0,
               sl_backend_get(o->kind)->name, o->rounds, o->share,
               o->in_place ? "in place" : "by dropping the written units");
    }
    for (int i = 1; i <= o->rounds; i++) {
        round_result rr = { 0 };
        if (!one_round(o, &s, rng, &rr, &err)) {
            end(&s);
            return cli_fail("round %d: %s", i, err->message);
        }
        print_round(o, i, &rr);
        wrong += rr.wrong;
        fflush(stdout);
    }
    end(&s);
    return wrong ? 1 : 0;
}

int cmd_reset_loop(int argc, char **argv)
{
    loop_opts o = { .rounds = 10, .share = 1.0, .seed = 14 };
    g_autofree char *backend = NULL, *hps = NULL;
    g_auto(GStrv) parents = NULL;
    gint seed = 14;
    GOptionEntry entries[] = {
        { "backend", 0, 0, G_OPTION_ARG_STRING, &backend, "memory backend: anon|shmem|hugetlbfs", "KIND" },
        { "hugepage-size", 0, 0, G_OPTION_ARG_STRING, &hps, "hugetlbfs page size (2M or 1G; default: the host's)", "SIZE" },
        { "rounds", 0, 0, G_OPTION_ARG_INT, &o.rounds, "rounds of write, reset, check (default 10)", "N" },
        { "write", 0, 0, G_OPTION_ARG_DOUBLE, &o.share, "percent of the units written per round, at least one unit if above 0 (default 1)", "PCT" },
        { "in-place", 0, 0, G_OPTION_ARG_NONE, &o.in_place, "rewrite the written units in place (config.reset_in_place)", NULL },
        { "seed", 0, 0, G_OPTION_ARG_INT, &seed, "seed of the random writes", "N" },
        { "json", 0, 0, G_OPTION_ARG_NONE, &o.json, "one JSON object per round", NULL },
        CLI_PARENT_OPTION(parents),
        { NULL },
    };

    if (!cli_parse("SNAP - write, reset to the snapshot, check; round after round", entries,
                   &argc, &argv)) {
        return 2;
    }
    if (argc != 2 || !backend || !sl_backend_by_name(backend, &o.kind)) {
        cli_fail("reset-loop needs SNAP and --backend anon|shmem|hugetlbfs");
        return 2;
    }
    if (hps && (!cli_parse_size(hps, &o.hugepage) || o.kind != SL_BACKEND_HUGETLBFS ||
                (o.hugepage != (2u << 20) && o.hugepage != (1u << 30)))) {
        cli_fail("--hugepage-size: '%s' must be 2M or 1G, with --backend hugetlbfs", hps);
        return 2;
    }
    if (o.rounds < 1 || !(o.share >= 0 && o.share <= 100)) { /* NaN fails both */
        cli_fail("--rounds must be at least 1 and --write a percentage");
        return 2;
    }
    o.path = argv[1];
    o.parents = parents;
    o.seed = (guint32)seed;
    return run_loop(&o);
}
