/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapload-resetcost: what going back to a snapshot costs (issue 14), in
 * one run, with the snapshot in the page cache (a loop restores the same
 * file again and again), for each size asked:
 *  - eager: sl_eager_load() of the whole block into fresh memory of the
 *    backend (anonymous memory with MADV_HUGEPAGE, as QEMU maps guest RAM);
 *  - lazy: a restore from scratch into fresh memory, until complete
 *    (loaders only, nobody touching);
 *  - reset: a restore with track_writes, complete; then per repetition
 *    the same number of units written (the --written share of the largest
 *    size, so every size writes as many), sl_restore_reset() and the wait
 *    until every page is present again.  Each round's memory is checked
 *    against the snapshot (sampled pages and every written one).  The
 *    first reset of each way is also printed apart: the first in place
 *    maps the snapshot file;
 *  - child: the same writes saved as an incremental snapshot of the
 *    restored one (sl_restore_write_child()): its allocated bytes against
 *    the full snapshot's, and a lazy restore of it checked byte for byte;
 *  - restart (shmem, hugetlbfs): the same writes, then a restore over the
 *    memory left (keep_memory, as qemu-restore --reuse-ram) with the list
 *    of written pages (sl_restore_keep_known) and without it (every unit
 *    read and hashed), each through a fresh mapping of the file (as a
 *    restarted VMM maps it), until complete, each checked.
 *
 *   snapload-resetcost [--backend anon|shmem|hugetlbfs] [--sizes 1G,4G]
 *                      [--written 1] [--pattern random|runs] [--reps 5]
 *                      [--dir /var/tmp]
 *
 * --written is a percentage of the largest size's units; --pattern runs
 * writes runs of 16 units (64 KiB of 4 KiB pages) instead of single units
 * scattered at random.  Prints a table and the ratios lazy/reset and
 * eager/reset (medians).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "benchutil.h"
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "backends/backend.h"
#include "migration/restore-int.h"

#define RUN_UNITS 16
#define MAX_REPS 16

typedef struct {
    sl_backend_kind kind;
    const char *backend, *dir, *pattern;
    uint64_t sizes[4], written;
    unsigned nsizes;
    double share;
    int reps;
    bool reset_only;      /* --reset-only 1: skip the eager and lazy loads (profiling) */
} opts;

static void die(const char *what, const GError *err)
{
    fprintf(stderr, "snapload-resetcost: %s: %s\n", what, err ? err->message : "failed");
    exit(1);
}

/* Page @i of the test snapshot: a quarter zero, the rest distinct. */
static void fill(uint8_t *p, uint64_t i)
{
    uint64_t s = (i + 1) * 0x9e3779b97f4a7c15ull;

    memset(p, 0, 4096);
    if (i % 4 == 3) {
        return;
    }
    for (unsigned k = 0; k < 4096; k += 64) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        memcpy(p + k, &s, 8);
    }
    memcpy(p, &i, 8);
}

/* A snapshot of @size bytes (one block "ram") at @path, read once into the page cache. */
static void make_snapshot(const char *path, uint64_t size)
{
    g_autoptr(GError) err = NULL;
    sl_writer *w = sl_writer_new(path, &err);
    uint8_t page[4096];
    char buf[1 << 16];
    FILE *f;

    if (!w || sl_writer_add_block(w, "ram", size, 4096, -1, &err) < 0) {
        die("writer", err);
    }
    for (uint64_t i = 0; i < size / 4096; i++) {
        fill(page, i);
        if (!sl_writer_write(w, 0, i * 4096, page, 4096, &err)) {
            die("write", err);
        }
    }
    if (!sl_writer_finish(w, &err)) {
        die("finish", err);
    }
    sl_writer_free(w);
    f = fopen(path, "rb");
    while (f && fread(buf, 1, sizeof(buf), f) == sizeof(buf)) {
    }
    if (f) {
        fclose(f);
    }
}

static double eager_ms(const opts *o, sl_snapshot *snap, uint64_t size)
{
    g_autoptr(GError) err = NULL;
    sl_mem m = { 0 };
    double t0, t;

    if (!sl_mem_map(&m, o->kind, size, 0, &err)) {
        die("eager: map", err);
    }
    t0 = now_ms();
    if (sl_eager_load(snap, 0, m.host, g_get_num_processors(), false) < 0) {
        die("eager load", NULL);
    }
    t = now_ms() - t0;
    sl_mem_release(&m);
    return t;
}

/* A restore of @snap into fresh memory @m, started (and, with @wait, complete). */
static sl_restore *restore(const opts *o, sl_snapshot *snap, sl_mem *m, uint64_t size,
                           bool track, bool in_place)
{
    g_autoptr(GError) err = NULL;
    sl_restore_config cfg = { .size = sizeof(cfg), .track_writes = track,
                              .reset_in_place = in_place };
    sl_restore *r;

    if (!sl_mem_map(m, o->kind, size, 0, &err)) {
        die("map", err);
    }
    r = sl_restore_new(snap, &cfg, &err);
    if (!r || !sl_mem_attach(r, "ram", m, &err) || !sl_restore_start(r, &err)) {
        die("restore", err);
    }
    if (sl_restore_wait(r, -1) != 0) {
        die("restore did not complete", NULL);
    }
    return r;
}

static double lazy_ms(const opts *o, sl_snapshot *snap, uint64_t size)
{
    sl_mem m = { 0 };
    double t0 = now_ms(), t;
    sl_restore *r = restore(o, snap, &m, size, false, false);

    t = now_ms() - t0;
    sl_restore_free(r);
    sl_mem_release(&m);
    return t;
}

/* Writes o->written units of @m (pattern), marking them in @hit; returns the count. */
static uint64_t write_units(const opts *o, sl_mem *m, GRand *rng, uint8_t *hit)
{
    uint64_t unit = m->page_size, n = m->length / unit, done = 0;
    unsigned run = strcmp(o->pattern, "runs") == 0 ? RUN_UNITS : 1;

    memset(hit, 0, n);
    while (done < MIN(o->written, n)) {
        uint64_t u = (uint64_t)g_rand_double_range(rng, 0, (double)(n - run + 1));
        for (unsigned k = 0; k < run && done < o->written; k++) {
            done += !hit[u + k];
            hit[u + k] = 1;
            m->host[(u + k) * unit + 8] ^= 0x5a;
        }
    }
    return done;
}

/* Every written unit and every 61st other page equal the snapshot's. */
static void check(const sl_mem *m, const uint8_t *hit)
{
    uint64_t unit = m->page_size;
    uint8_t want[4096];

    for (uint64_t p = 0; p < m->length / 4096; p++) {
        if (!hit[p * 4096 / unit] && p % 61) {
            continue;
        }
        fill(want, p);
        if (memcmp(want, m->host + p * 4096, 4096)) {
            fprintf(stderr, "snapload-resetcost: page %" G_GUINT64_FORMAT " is wrong after "
                    "a reset\n", p);
            exit(1);
        }
    }
}

/* Medians of one way of resetting, and its first reset (which maps the snapshot in place). */
typedef struct {
    double total, collect, restore;
    double first, first_restore;
} reset_fig;

/* An incremental snapshot after the same writes: its size and costs. */
typedef struct {
    uint64_t child_bytes, full_bytes;  /* allocated on disk */
    double save_ms, restore_ms;
} child_fig;

/* A VMM restarted over the memory file its previous run left (shared memory only). */
typedef struct {
    double listed_ms, hashed_ms;   /* until complete: with the written list, without */
    uint64_t known;                /* units the list let the first keep unread */
} restart_fig;

typedef struct {
    double eager, lazy;
    reset_fig drop, in_place;
    child_fig child;
    restart_fig restart;
} figures;

static void reset_rounds(const opts *o, sl_snapshot *snap, uint64_t size, bool in_place,
                         reset_fig *fg)
{
    double t[MAX_REPS], c[MAX_REPS], d[MAX_REPS];
    g_autoptr(GRand) rng = g_rand_new_with_seed(14);
    sl_mem m = { 0 };
    sl_restore *r = restore(o, snap, &m, size, true, in_place);
    g_autofree uint8_t *hit = g_malloc(size / m.page_size);

    for (int i = 0; i < o->reps; i++) {
        g_autoptr(GError) err = NULL;
        sl_reset_stats rs = { .size = sizeof(rs) };
        uint64_t n = write_units(o, &m, rng, hit);
        double t0 = now_ms();
        if (!sl_restore_reset(r, &rs, &err) || sl_restore_wait(r, -1) != 0) {
            die("reset", err);
        }
        t[i] = now_ms() - t0;
        c[i] = rs.collect_ms;
        d[i] = rs.restore_ms;
        if (rs.units_written != n) {
            fprintf(stderr, "snapload-resetcost: wrote %" G_GUINT64_FORMAT " units, the "
                    "reset dropped %" G_GUINT64_FORMAT "\n", n, rs.units_written);
            exit(1);
        }
        check(&m, hit);
    }
    fg->first = t[0];
    fg->first_restore = d[0];
    fg->total = median(t, o->reps);
    fg->collect = median(c, o->reps);
    fg->restore = median(d, o->reps);
    sl_restore_free(r);
    sl_mem_release(&m);
}

static uint64_t allocated(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

/* The written pages as a child of @path; then restored lazily, checked against the memory. */
static void child_round(const opts *o, sl_snapshot *snap, const char *path, uint64_t size,
                        child_fig *cf)
{
    g_autofree char *cpath = g_strdup_printf("%s.child", path);
    g_autoptr(GRand) rng = g_rand_new_with_seed(15);
    g_autoptr(GError) err = NULL;
    sl_mem m = { 0 }, m2 = { 0 };
    sl_restore *r = restore(o, snap, &m, size, true, false), *r2;
    g_autofree uint8_t *hit = g_malloc(size / m.page_size);
    sl_writer *w = sl_writer_new(cpath, &err);
    sl_snapshot *cs;
    double t0;

    write_units(o, &m, rng, hit);
    t0 = now_ms();
    if (!w || !sl_restore_write_child(r, w, path, &err) || !sl_writer_finish(w, &err)) {
        die("incremental save", err);
    }
    cf->save_ms = now_ms() - t0;
    sl_writer_free(w);
    cf->child_bytes = allocated(cpath);
    cf->full_bytes = allocated(path);
    cs = sl_snapshot_open(cpath, &err);
    if (!cs) {
        die("open the child", err);
    }
    t0 = now_ms();
    r2 = restore(o, cs, &m2, size, false, false);
    cf->restore_ms = now_ms() - t0;
    if (memcmp(m.host, m2.host, size)) {
        fprintf(stderr, "snapload-resetcost: the child did not restore what memory held\n");
        exit(1);
    }
    sl_restore_free(r2);
    sl_mem_release(&m2);
    sl_snapshot_close(cs);
    unlink(cpath);
    sl_restore_free(r);
    sl_mem_release(&m);
}

/* A restarted VMM maps the file afresh: no page of it mapped yet. */
static void map_afresh(sl_mem *m)
{
    munmap(m->host, m->length);
    m->host = mmap(NULL, m->length, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd,
                   (off_t)m->offset);
    if (m->host == MAP_FAILED) {
        die("mapping the file again", NULL);
    }
}

/*
 * A keep_memory restore over @m's file through a fresh mapping, with the
 * written @runs (or none: all hashed); ms to complete.
 */
static double restart_ms(sl_snapshot *snap, sl_mem *m, GArray *runs, uint64_t *known)
{
    g_autoptr(GError) err = NULL;
    sl_restore_config cfg = { .size = sizeof(cfg), .keep_memory = true };
    sl_stats st = { .size = sizeof(st) };
    double t0, t;
    sl_restore *r;

    map_afresh(m);
    t0 = now_ms();
    r = sl_restore_new(snap, &cfg, &err);

    if (!r || !sl_mem_attach(r, "ram", m, &err) ||
        (runs && !sl_restore_keep_known(r, "ram", (const sl_page_run *)(void *)runs->data,
                                         runs->len, &err)) ||
        !sl_restore_start(r, &err)) {
        die("restart", err);
    }
    if (sl_restore_wait(r, -1) != 0) {
        die("restart did not complete", NULL);
    }
    t = now_ms() - t0;
    sl_restore_get_stats(r, &st);
    *known = st.pages_known;
    sl_restore_free(r);
    return t;
}

/*
 * qemu-restore --reuse-ram in the library: a tracked restore, the same
 * writes, then restores over the memory it left: with the list of written
 * pages (sl_restore_keep_known), then, after the same writes again,
 * without (every unit read and hashed).  Each checked against the snapshot.
 */
static void restart_round(const opts *o, sl_snapshot *snap, uint64_t size, restart_fig *rf)
{
    g_autoptr(GRand) rng = g_rand_new_with_seed(16);
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(sl_page_run));
    g_autoptr(GError) err = NULL;
    sl_mem m = { 0 };
    sl_restore *r = restore(o, snap, &m, size, true, false);
    g_autofree uint8_t *hit = g_malloc(size / m.page_size);
    uint64_t unused;

    write_units(o, &m, rng, hit);
    if (!sl_restore_written(r, "ram", runs, &err)) {
        die("written", err);
    }
    sl_restore_free(r);
    rf->listed_ms = restart_ms(snap, &m, runs, &rf->known);
    check(&m, hit);
    write_units(o, &m, rng, hit);
    rf->hashed_ms = restart_ms(snap, &m, NULL, &unused);
    check(&m, hit);
    sl_mem_release(&m);
}

static void measure(const opts *o, uint64_t size, figures *fg)
{
    g_autofree char *path = g_strdup_printf("%s/snapload-resetcost-%d.snap", o->dir, getpid());
    g_autoptr(GError) err = NULL;
    sl_snapshot *snap;

    make_snapshot(path, size);
    snap = sl_snapshot_open(path, &err);
    if (!snap) {
        die("open", err);
    }
    fg->eager = o->reset_only ? 0 : eager_ms(o, snap, size);
    fg->lazy = o->reset_only ? 0 : lazy_ms(o, snap, size);
    reset_rounds(o, snap, size, false, &fg->drop);
    reset_rounds(o, snap, size, true, &fg->in_place);
    child_round(o, snap, path, size, &fg->child);
    if (o->kind != SL_BACKEND_ANON) {
        restart_round(o, snap, size, &fg->restart);
    }
    sl_snapshot_close(snap);
    unlink(path);
}

static bool parse(int argc, char **argv, opts *o)
{
    const char *sizes = "1G,4G";

    *o = (opts){ .backend = "anon", .dir = "/var/tmp", .pattern = "random", .share = 1,
                 .reps = 5 };
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--backend")) o->backend = v;
        else if (!strcmp(k, "--sizes")) sizes = v;
        else if (!strcmp(k, "--written")) o->share = g_ascii_strtod(v, NULL);
        else if (!strcmp(k, "--pattern")) o->pattern = v;
        else if (!strcmp(k, "--reps")) o->reps = CLAMP(atoi(v), 1, MAX_REPS);
        else if (!strcmp(k, "--dir")) o->dir = v;
        else if (!strcmp(k, "--reset-only")) o->reset_only = atoi(v) != 0;
        else {
            fprintf(stderr, "snapload-resetcost: unknown option '%s'\n", k);
            return false;
        }
    }
    g_auto(GStrv) parts = g_strsplit(sizes, ",", 4);
    for (unsigned i = 0; parts[i]; i++) {
        if (!bench_size(parts[i], &o->sizes[o->nsizes++])) {
            fprintf(stderr, "snapload-resetcost: --sizes: '%s' is not a size (64M, 4G)\n",
                    parts[i]);
            return false;
        }
    }
    return o->nsizes && sl_backend_by_name(o->backend, &o->kind) &&
           (!strcmp(o->pattern, "random") || !strcmp(o->pattern, "runs"));
}

int main(int argc, char **argv)
{
    opts o;
    uint64_t largest = 0, unit;

    static const char usage[] = "usage: snapload-resetcost [--backend anon|shmem|hugetlbfs] "
        "[--sizes 1G,4G] [--written 1] [--pattern random|runs] [--reps 5] [--dir DIR] "
        "[--reset-only 0|1]";
    bool help;

    if (!bench_args_ok(argc, argv, usage, &help)) {
        return help ? 0 : 2;
    }
    if (!parse(argc, argv, &o)) {
        fprintf(stderr, "%s\n", usage);
        return 2;
    }
    unit = o.kind == SL_BACKEND_HUGETLBFS ? sl_hugetlb_default_size() : 4096;
    for (unsigned i = 0; i < o.nsizes; i++) {
        largest = MAX(largest, o.sizes[i]);
    }
    o.written = MAX(1, (uint64_t)((double)(largest / unit) * o.share / 100.0));
    printf("%s, %" G_GUINT64_FORMAT " units of %" G_GUINT64_FORMAT " KiB written per reset "
           "(%.2f %% of the largest size, pattern %s), %d resets (medians)\n", o.backend,
           o.written, unit >> 10, o.share, o.pattern, o.reps);
    printf("reset: drop the written units for the loaders (default) | rewrite them in place "
           "(reset_in_place); ms until every page is present again (collect + drop or rewrite "
           "+ refill)\n");
    printf("%6s %9s %9s %16s %16s %18s %18s\n", "size", "eager ms", "lazy ms", "reset drop ms",
           "in place ms", "lazy/reset", "eager/reset");
    for (unsigned i = 0; i < o.nsizes; i++) {
        figures fg = { 0 };
        measure(&o, o.sizes[i], &fg);
        printf("%5" G_GUINT64_FORMAT "M %9.1f %9.1f %7.2f (%.1f+%.1f) %7.2f (%.1f+%.1f) "
               "%7.1fx | %6.1fx %7.1fx | %6.1fx\n", o.sizes[i] >> 20, fg.eager, fg.lazy,
               fg.drop.total, fg.drop.collect, fg.drop.restore, fg.in_place.total,
               fg.in_place.collect, fg.in_place.restore, fg.lazy / fg.drop.total,
               fg.lazy / fg.in_place.total, fg.eager / fg.drop.total,
               fg.eager / fg.in_place.total);
        printf("       first reset in place (the one that maps the snapshot): %.2f ms "
               "(rewrite %.1f), dropping: %.2f ms\n", fg.in_place.first,
               fg.in_place.first_restore, fg.drop.first);
        printf("       incremental snapshot after the same writes: %.1f MiB allocated, %.2f %% of "
               "the full snapshot's %.1f MiB; saved in %.1f ms, restored lazily (complete, "
               "every byte checked) in %.1f ms\n", fg.child.child_bytes / 1048576.0,
               100.0 * (double)fg.child.child_bytes / (double)fg.child.full_bytes,
               fg.child.full_bytes / 1048576.0, fg.child.save_ms, fg.child.restore_ms);
        if (o.kind != SL_BACKEND_ANON) {
            printf("       restart over the memory left, after the same writes: with the "
                   "written list %.1f ms (%" G_GUINT64_FORMAT " units kept unread), every unit "
                   "hashed %.1f ms; lazy/restart %.1fx | %.1fx, eager/restart %.1fx | %.1fx\n",
                   fg.restart.listed_ms, fg.restart.known, fg.restart.hashed_ms,
                   fg.lazy / fg.restart.listed_ms, fg.lazy / fg.restart.hashed_ms,
                   fg.eager / fg.restart.listed_ms, fg.eager / fg.restart.hashed_ms);
        }
        fflush(stdout);
    }
    return 0;
}
