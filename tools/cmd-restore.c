/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload restore SNAP --backend anon ...`: restores every block lazily
 * into fresh memory of the chosen backend while touch threads (standing in
 * for vCPUs) read pages, then optionally verifies every byte and times an
 * eager load of the same file in the same run.  Prints a summary or, with
 * --json, one JSON object.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "touch.h"
#include "consumers.h"
#include "backends/backend.h"

typedef struct {
    char *path;
    sl_backend_kind kind;
    uint64_t hugepage;
    gint threads, touch_threads, eager_threads, consumers;
    bool random, verify, compare_eager, json, no_checksum, cold;
} opts;

typedef struct {
    double ready_ms, complete_ms, eager_ms;
    uint64_t verify_mismatches, touch_mismatches, touched;
    uint64_t consumer_touched, consumer_mismatches;
    double touch_p50_us, touch_p99_us;
    sl_stats st;
} results;

/* Drops the snapshot's page cache so a load reads from disk ("cold"). */
static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

static bool map_blocks(sl_snapshot *s, const opts *o, sl_mem *mems, GError **errp)
{
    sl_block_info bi;

    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        if (!sl_mem_map(&mems[b], o->kind, bi.length, o->hugepage, errp)) {
            g_prefix_error(errp, "block '%s': ", bi.name);
            return false;
        }
    }
    return true;
}

static void release_blocks(sl_mem *mems, unsigned n)
{
    for (unsigned b = 0; b < n; b++) {
        sl_mem_release(&mems[b]);
    }
}

/* Compares every byte of every block with the snapshot; returns bad pages. */
static uint64_t verify_all(sl_snapshot *s, sl_mem *mems)
{
    uint64_t bad = 0, total = 0, done = 0;
    g_autofree uint8_t *buf = NULL;
    sl_block_info bi;

    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        total += bi.length;
    }
    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        uint64_t per = MAX(1, (8u << 20) / bi.page_size);
        buf = g_realloc(buf, per * bi.page_size);
        for (uint64_t i = 0; i < bi.pages; i += per) {
            uint64_t n = MIN(per, bi.pages - i);
            if (sl_snapshot_read_pages(s, b, i, n, buf, false) < 0) {
                bad += n;
                continue;
            }
            for (uint64_t k = 0; k < n; k++) {
                bad += memcmp(buf + k * bi.page_size,
                              mems[b].host + (i + k) * bi.page_size, bi.page_size) != 0;
            }
            done += n * bi.page_size;
            cli_progress("verify", done, total);
        }
    }
    return bad;
}

static void wait_done(sl_restore *r)
{
    sl_stats st = { .size = sizeof(st) };

    while (sl_restore_wait(r, 100) == -EINPROGRESS) {
        sl_restore_get_stats(r, &st);
        cli_progress("restore", st.pages_present, st.pages_total);
    }
    cli_progress(NULL, 0, 0);
}

static bool start_lazy(const opts *o, sl_snapshot *s, sl_mem *mems, sl_restore **rp,
                       GError **errp)
{
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = (unsigned)o->threads,
                              .no_loaders = o->threads == 0, .no_checksum = o->no_checksum };
    sl_block_info bi;

    *rp = sl_restore_new(s, &cfg, errp);
    if (!*rp) {
        return false;
    }
    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        if (!sl_mem_attach(*rp, bi.name, &mems[b], errp)) {
            return false;
        }
    }
    return true;
}

static void setup_touch(touch_ctx *t, sl_snapshot *s, sl_mem *mems, const opts *o)
{
    sl_block_info bi;

    *t = (touch_ctx){ .snap = s, .random = o->random };
    t->ntargets = sl_snapshot_n_blocks(s);
    t->targets = g_new0(touch_target, t->ntargets);
    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        t->targets[b] = (touch_target){ .host = mems[b].host, .pages = bi.pages,
                                        .page_size = bi.page_size, .block = b };
    }
}

/* A snapshot and fresh memory of the chosen backend for each of its blocks. */
typedef struct {
    sl_snapshot *snap;
    sl_mem *mems;
    unsigned n;
} loaded;

static void unload(loaded *l)
{
    release_blocks(l->mems, l->n);
    g_free(l->mems);
    sl_snapshot_close(l->snap);
}

static bool load(const opts *o, loaded *l, GError **errp)
{
    l->snap = sl_snapshot_open(o->path, errp);
    l->n = l->snap ? sl_snapshot_n_blocks(l->snap) : 0;
    l->mems = g_new0(sl_mem, l->n ? l->n : 1);
    return l->snap && map_blocks(l->snap, o, l->mems, errp);
}

/* Runs touch threads and consumers until the restore ends; fills @res. */
static bool follow(const opts *o, loaded *l, sl_restore *r, consumers *cons, double t0,
                   results *res, GError **errp)
{
    touch_ctx t;
    bool ok = true;

    setup_touch(&t, l->snap, l->mems, o);
    touch_start(&t, (unsigned)o->touch_threads);
    if (cons) {
        consumers_go(cons);
    }
    wait_done(r);
    res->complete_ms = cli_now_ms() - t0;
    touch_stop(&t);
    if (cons) {
        ok = consumers_finish(cons, &res->consumer_touched, &res->consumer_mismatches, errp);
    }
    res->touched = t.touched;
    res->touch_mismatches = t.mismatches;
    res->touch_p50_us = (double)sl_hist_percentile(&t.latency, 50) / 1e3;
    res->touch_p99_us = (double)sl_hist_percentile(&t.latency, 99) / 1e3;
    g_free(t.targets);
    return ok;
}

static int run_lazy(const opts *o, results *res)
{
    double t0 = cli_now_ms();
    GError *err = NULL;
    loaded l = { 0 };
    sl_restore *r = NULL;
    consumers *cons = NULL;
    int status = -EINVAL;
    bool ok;

    /* Consumers are forked before any thread exists and hand over their views. */
    ok = load(o, &l, &err) && start_lazy(o, l.snap, l.mems, &r, &err) &&
         (!o->consumers || (cons = consumers_spawn((unsigned)o->consumers, l.snap, l.mems,
                                                   r, &err))) &&
         sl_restore_start(r, &err);
    res->ready_ms = cli_now_ms() - t0;
    if (!ok && cons) {
        consumers_finish(cons, &res->consumer_touched, &res->consumer_mismatches, NULL);
    }
    ok = ok && follow(o, &l, r, cons, t0, res, &err);
    if (ok) {
        sl_restore_stop(r); /* joins the workers, so their figures are final */
        status = sl_restore_poll(r);
        res->st.size = sizeof(res->st);
        sl_restore_get_stats(r, &res->st);
        if (status == 0 && o->verify) {
            res->verify_mismatches = verify_all(l.snap, l.mems);
        }
    }
    sl_restore_free(r);
    unload(&l);
    if (!ok) {
        return cli_fail_error(err);
    }
    return status == 0 ? 0 : cli_fail("restore failed: %s", g_strerror(-status));
}

static int run_eager(const opts *o, results *res)
{
    double t0 = cli_now_ms();
    GError *err = NULL;
    loaded l = { 0 };
    int ret = 0;

    if (!load(o, &l, &err)) {
        unload(&l);
        return cli_fail_error(err);
    }
    for (unsigned b = 0; b < l.n && ret == 0; b++) {
        ret = sl_eager_load(l.snap, b, l.mems[b].host, (unsigned)o->eager_threads,
                            !o->no_checksum);
    }
    res->eager_ms = cli_now_ms() - t0;
    unload(&l);
    return ret == 0 ? 0 : cli_fail("eager load failed: %s", g_strerror(-ret));
}

static void print_results(const opts *o, const results *r)
{
    const sl_stats *s = &r->st;
    cli_json j;

    json_begin(&j);
    json_str(&j, "backend", sl_backend_get(o->kind)->name);
    json_int(&j, "loader_threads", o->threads);
    json_int(&j, "touch_threads", o->touch_threads);
    json_double(&j, "time_to_ready_ms", r->ready_ms);
    json_double(&j, "time_to_first_fault_ms", s->time_to_first_fault_ms);
    json_double(&j, "time_to_complete_ms", r->complete_ms);
    json_u64(&j, "pages", s->pages_total);
    json_u64(&j, "faults", s->faults);
    json_u64(&j, "faults_on_claimed", s->faults_on_claimed);
    json_u64(&j, "faults_on_present", s->faults_on_present);
    json_u64(&j, "pages_by_fault", s->pages_by_fault);
    json_u64(&j, "pages_by_loader", s->pages_by_loader);
    json_u64(&j, "zero_pages", s->zero_pages);
    json_u64(&j, "pages_placed_twice", s->pages_placed_twice);
    json_u64(&j, "pages_never_placed", s->pages_never_placed);
    json_u64(&j, "checksum_failures", s->checksum_failures);
    json_u64(&j, "eexist", s->eexist);
    json_u64(&j, "eagain", s->eagain);
    json_double(&j, "fault_p50_us", s->fault_p50_us);
    json_double(&j, "fault_p99_us", s->fault_p99_us);
    json_double(&j, "fault_max_us", s->fault_max_us);
    json_double(&j, "touch_p50_us", r->touch_p50_us);
    json_double(&j, "touch_p99_us", r->touch_p99_us);
    json_u64(&j, "pages_touched", r->touched);
    json_u64(&j, "touch_mismatches", r->touch_mismatches);
    json_int(&j, "consumers", o->consumers);
    json_u64(&j, "consumer_pages_touched", r->consumer_touched);
    json_u64(&j, "consumer_mismatches", r->consumer_mismatches);
    json_u64(&j, "hugepage_size", o->hugepage);
    json_double(&j, "checksum_ms", s->checksum_ms);
    json_double(&j, "loader_ms", s->loader_ms);
    if (o->verify) {
        json_u64(&j, "verify_mismatches", r->verify_mismatches);
    }
    if (o->compare_eager) {
        json_double(&j, "eager_ms", r->eager_ms);
        json_int(&j, "eager_threads", o->eager_threads);
        json_double(&j, "eager_over_ready", r->eager_ms / MAX(r->ready_ms, 1e-3));
    }
    g_autofree char *out = json_end(&j);
    if (o->json) {
        printf("%s\n", out);
        return;
    }
    printf("lazy restore (%s, %" G_GUINT64_FORMAT " pages, %d loader(s), %d touch thread(s))\n",
           sl_backend_get(o->kind)->name, s->pages_total, o->threads, o->touch_threads);
    printf("  time to ready     %10.2f ms   (open, map, attach, register)\n", r->ready_ms);
    printf("  time to complete  %10.1f ms   (first fault after %.2f ms)\n", r->complete_ms,
           s->time_to_first_fault_ms);
    printf("  faults %" G_GUINT64_FORMAT ": service p50 %.1f us, p99 %.1f us, max %.1f us; "
           "touch p50 %.1f us, p99 %.1f us\n", s->faults, s->fault_p50_us, s->fault_p99_us,
           s->fault_max_us, r->touch_p50_us, r->touch_p99_us);
    printf("  pages by fault %" G_GUINT64_FORMAT ", by loader %" G_GUINT64_FORMAT ", zero %"
           G_GUINT64_FORMAT "; placed twice %" G_GUINT64_FORMAT ", never %" G_GUINT64_FORMAT "\n",
           s->pages_by_fault, s->pages_by_loader, s->zero_pages, s->pages_placed_twice,
           s->pages_never_placed);
    printf("  checksums %.1f ms of %.1f ms loader time; %" G_GUINT64_FORMAT " pages touched, %"
           G_GUINT64_FORMAT " touch mismatches\n", s->checksum_ms, s->loader_ms, r->touched,
           r->touch_mismatches);
    if (o->consumers) {
        printf("  %d consumer process(es): %" G_GUINT64_FORMAT " pages touched, %"
               G_GUINT64_FORMAT " mismatches\n", o->consumers, r->consumer_touched,
               r->consumer_mismatches);
    }
    if (o->verify) {
        printf("  verify: %" G_GUINT64_FORMAT " mismatching pages\n", r->verify_mismatches);
    }
    if (o->compare_eager) {
        printf("eager load (%d thread(s)): %.1f ms, %.0fx the lazy time to ready\n",
               o->eager_threads, r->eager_ms, r->eager_ms / MAX(r->ready_ms, 1e-3));
    }
}

static bool parse_opts(int *argc, char ***argv, opts *o)
{
    g_autofree char *backend = NULL, *access = NULL, *hps = NULL;
    gboolean verify = false, eager = false, json = false, nocs = false, cold = false;
    GOptionEntry entries[] = {
        { "backend", 0, 0, G_OPTION_ARG_STRING, &backend, "memory backend: anon|shmem|hugetlbfs", "KIND" },
        { "hugepage-size", 0, 0, G_OPTION_ARG_STRING, &hps, "hugetlbfs page size: 2M|1G (default: host default)", "SIZE" },
        { "consumers", 0, 0, G_OPTION_ARG_INT, &o->consumers, "processes mapping the same file, touching pages (shared backends)", "N" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &o->threads, "background loaders (default 1; 0: faults only)", "N" },
        { "touch-threads", 0, 0, G_OPTION_ARG_INT, &o->touch_threads, "threads touching pages (default 2)", "K" },
        { "access", 0, 0, G_OPTION_ARG_STRING, &access, "touch pattern: random|seq", "MODE" },
        { "verify", 0, 0, G_OPTION_ARG_NONE, &verify, "check every byte after the restore", NULL },
        { "compare-eager", 0, 0, G_OPTION_ARG_NONE, &eager, "also time an eager load", NULL },
        { "eager-threads", 0, 0, G_OPTION_ARG_INT, &o->eager_threads, "threads of the eager load (default 1)", "N" },
        { "no-checksum", 0, 0, G_OPTION_ARG_NONE, &nocs, "trust the file: skip checksums", NULL },
        { "cold", 0, 0, G_OPTION_ARG_NONE, &cold, "drop the file's page cache before each load", NULL },
        { "json", 0, 0, G_OPTION_ARG_NONE, &json, "print one JSON object", NULL },
        { NULL },
    };

    o->threads = 1;
    o->touch_threads = 2;
    o->eager_threads = 1;
    if (!cli_parse("SNAP - lazy restore into fresh memory", entries, argc, argv)) {
        return false;
    }
    if (*argc != 2 || !backend) {
        cli_fail("restore needs SNAP and --backend KIND");
        return false;
    }
    if (!sl_backend_by_name(backend, &o->kind)) {
        cli_fail("--backend: unknown kind '%s' (known: anon, shmem, hugetlbfs)", backend);
        return false;
    }
    if (hps && (o->kind != SL_BACKEND_HUGETLBFS || !cli_parse_size(hps, &o->hugepage) ||
                (o->hugepage != (2u << 20) && o->hugepage != (1u << 30)))) {
        cli_fail("--hugepage-size: '%s' must be 2M or 1G, with --backend hugetlbfs", hps);
        return false;
    }
    if (o->consumers && o->kind == SL_BACKEND_ANON) {
        cli_fail("--consumers: anonymous memory cannot be mapped by other processes");
        return false;
    }
    if (o->consumers < 0 || o->consumers > 16) {
        cli_fail("--consumers: %d is not between 0 and 16", o->consumers);
        return false;
    }
    if (access && strcmp(access, "random") && strcmp(access, "seq")) {
        cli_fail("--access: '%s' is neither random nor seq", access);
        return false;
    }
    if (o->threads < 0 || o->threads > 256 || o->touch_threads < 0 || o->touch_threads > 256 ||
        o->eager_threads < 1 || o->eager_threads > 256) {
        cli_fail("thread counts must be between 0 (1 for --eager-threads) and 256");
        return false;
    }
    o->path = g_strdup((*argv)[1]);
    o->random = !access || !strcmp(access, "random");
    o->verify = verify;
    o->compare_eager = eager;
    o->json = json;
    o->no_checksum = nocs;
    o->cold = cold;
    return true;
}

int cmd_restore(int argc, char **argv)
{
    opts o = { 0 };
    results res = { 0 };
    int ret;

    if (!parse_opts(&argc, &argv, &o)) {
        return 2;
    }
    if (o.cold) {
        drop_cache(o.path);
    }
    ret = run_lazy(&o, &res);
    if (ret == 0 && o.compare_eager) {
        if (o.cold) {
            drop_cache(o.path);
        }
        ret = run_eager(&o, &res);
    }
    if (ret == 0) {
        print_results(&o, &res);
        if (res.verify_mismatches || res.touch_mismatches || res.consumer_mismatches ||
            res.st.pages_placed_twice || res.st.pages_never_placed) {
            ret = cli_fail("restore finished with %" G_GUINT64_FORMAT " verify and %"
                           G_GUINT64_FORMAT " touch mismatches, %" G_GUINT64_FORMAT
                           " pages placed twice, %" G_GUINT64_FORMAT " never placed",
                           res.verify_mismatches, res.touch_mismatches,
                           res.st.pages_placed_twice, res.st.pages_never_placed);
        }
    }
    g_free(o.path);
    return ret;
}
