/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload restore SNAP --backend anon [--parent PATH] ...`: restores every
 * block lazily into fresh memory of the chosen backend while touch threads
 * (standing in for vCPUs) read pages, then optionally verifies every byte
 * and times an eager load of the same file in the same run.  Prints a
 * summary or, with --json, one JSON object.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include "cli.h"
#include "touch.h"
#include "consumers.h"
#include "timeline.h"
#include "backends/backend.h"
#include "memload.h"
#include "migration/restore-int.h"

typedef struct {
    char *path;
    char **parents;                /* --parent: SNAP's ancestors, not the ones it records */
    sl_backend_kind kind;
    uint64_t hugepage;
    gint threads, touch_threads, eager_threads, consumers;
    gint64 workload;
    char *topology, *record, *timeline;
    char **binds;
    bool interleave, no_hot, no_prefault;
    bool random, verify, compare_eager, json, no_checksum, cold;
    bool eager_no_checksum;        /* --eager-no-checksum: a plain pread load */
    bool track;                    /* --track-writes: config.track_writes */
    unsigned direct;               /* --direct-reads: config.direct_reads */
    bool place_by_copy;            /* --place-by-copy: config.place_by_copy */
    uint32_t around;               /* --fault-around: config.fault_around */
} opts;

/* Times are in ms from the command's origin: just before the snapshot is opened. */
typedef struct {
    double ready_ms, complete_ms, eager_ms, workload_ms, first_fault_ms;
    double final_ms;               /* sl_restore_stop() returned: hugepages collapsed */
    uint64_t verify_mismatches, touch_mismatches, touched, touch_poisoned;
    bool verified;
    consumer_totals cons;
    double touch_p50_us, touch_p99_us;
    double touch_first_wait_ms;    /* the first touch's wait (-1: nothing touched) */
    uint64_t hugepage;             /* the page size hugetlbfs used, 0 otherwise */
    uint64_t guest_bytes;          /* sum of the block lengths */
    uint64_t peak_rss_anon_kb;     /* lazy restore: sampled peak of our private memory */
    uint64_t vm_hwm_kb;            /* lazy restore: peak resident set (VmHWM) */
    uint64_t anon_huge_kb;         /* lazy restore: guest RAM in THPs (AnonHugePages) */
    uint64_t eager_anon_huge_kb;   /* the same after the eager load */
    sl_timeline lazy_tl, eager_tl; /* --timeline: bytes in place over time */
    sl_stats st;
    char *error;                   /* why a started restore failed, NULL if it did not */
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

/* Waits for the end of the restore, sampling its progress into @tl (every
 * 10 ms with --timeline, else every 100 ms for the progress bar). */
static void wait_done(const opts *o, sl_restore *r, sl_timeline *tl, double t0)
{
    sl_stats st = { .size = sizeof(st) };
    int ret;

    do {
        ret = sl_restore_wait(r, o->timeline ? 10 : 100);
        sl_restore_get_stats(r, &st);
        sl_timeline_add(tl, cli_now_ms() - t0, st.pages_total ? (uint64_t)((double)tl->total *
                        (double)st.pages_present / (double)st.pages_total) : 0);
        cli_progress("restore", st.pages_present, st.pages_total);
    } while (ret == -EINPROGRESS);
    cli_progress(NULL, 0, 0);
}

static bool start_lazy(const opts *o, sl_snapshot *s, sl_mem *mems, sl_restore **rp,
                       GError **errp)
{
    sl_restore_config cfg = { .size = sizeof(cfg),
                              .loader_threads = o->threads > 0 ? (unsigned)o->threads : 0,
                              .no_loaders = o->threads == 0, .no_checksum = o->no_checksum,
                              .numa_topology = o->topology, .interleave = o->interleave,
                              .no_hot_list = o->no_hot, .record = o->record != NULL,
                              .no_prefault = o->no_prefault, .track_writes = o->track,
                              .direct_reads = o->direct,
                              .place_by_copy = o->place_by_copy,
                              .fault_around = o->around };
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
    for (unsigned i = 0; o->binds && o->binds[i]; i++) {
        g_autofree char *name = NULL;
        int node;

        (void)cli_parse_name_node(o->binds[i], &name, &node); /* checked with the options */
        if (!sl_restore_bind(*rp, name, node, errp)) {
            return false;
        }
    }
    return true;
}

static void setup_touch(touch_ctx *t, sl_snapshot *s, sl_mem *mems, const opts *o)
{
    sl_block_info bi;

    *t = (touch_ctx){ .snap = s, .random = o->random, .limit = (uint64_t)o->workload };
    t->ntargets = sl_snapshot_n_blocks(s);
    t->targets = g_new0(touch_target, t->ntargets);
    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        t->targets[b] = (touch_target){ .host = mems[b].host, .pages = bi.pages,
                                        .page_size = bi.page_size, .block = b };
    }
}

static bool write_recorded(const char *path, sl_restore *r, GError **errp)
{
    g_autoptr(GBytes) b = sl_restore_recorded(r);
    gsize len;
    const void *d = g_bytes_get_data(b, &len);

    return g_file_set_contents(path, d ? d : "", (gssize)len, errp);
}

/* A snapshot and fresh memory of the chosen backend for each of its blocks. */
typedef struct {
    sl_snapshot *snap;
    sl_mem *mems;
    unsigned n;
} loaded;

static void unload(loaded *l)
{
    cli_release_blocks(l->mems, l->n);
    g_free(l->mems);
    sl_snapshot_close(l->snap);
}

static bool load(const opts *o, loaded *l, GError **errp)
{
    l->snap = cli_open_snapshot(o->path, o->parents, SL_OPEN_LAZY_CHECKSUMS, errp);
    l->n = l->snap ? sl_snapshot_n_blocks(l->snap) : 0;
    l->mems = g_new0(sl_mem, l->n ? l->n : 1);
    return l->snap &&
           !(o->record && cli_refuse_output(o->record, l->snap, "the hot list", errp)) &&
           !(o->timeline && cli_refuse_chain_file(o->timeline, l->snap, "the timeline", errp)) &&
           cli_map_blocks(l->snap, o->kind, o->hugepage, l->mems, errp);
}

static uint64_t guest_bytes(const loaded *l)
{
    uint64_t bytes = 0;

    for (unsigned b = 0; b < l->n; b++) {
        bytes += l->mems[b].length;
    }
    return bytes;
}

/* A recording run: faults only, ending when the workload ends. */
static bool recording_only(const opts *o)
{
    return o->threads == 0 && o->workload > 0 && o->record;
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
    if (recording_only(o)) {
        touch_wait(&t); /* the run ends with the workload: every touch faulted */
    } else {
        wait_done(o, r, &res->lazy_tl, t0);
    }
    res->complete_ms = cli_now_ms() - t0;
    if (sl_restore_poll(r) != 0) {
        /* Failed or cut short: nobody serves faults any more.  Stopping
         * seals the missing pages, which wakes touch threads blocked on
         * them (they see the refusal), so they can be joined. */
        sl_restore_stop(r);
    }
    touch_stop(&t);
    res->workload_ms = t.done_ns ? (double)t.done_ns / 1e6 - t0 : -1;
    if (cons) {
        ok = consumers_finish(cons, &res->cons, errp);
        if (ok && res->cons.ended && sl_restore_poll(r) == 0) {
            /* Blocked after a complete restore: nothing should block then. */
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%" G_GUINT64_FORMAT " consumer(s) "
                        "still running 3 s after being told to stop: ended", res->cons.ended);
            ok = false;
        }
    }
    res->touched = t.touched;
    res->touch_mismatches = t.mismatches;
    res->touch_poisoned = t.poisoned;
    res->touch_p50_us = (double)sl_hist_percentile(&t.latency, 50) / 1e3;
    res->touch_p99_us = (double)sl_hist_percentile(&t.latency, 99) / 1e3;
    res->touch_first_wait_ms = t.touched ? (double)t.first_wait_ns / 1e6 : -1;
    g_free(t.targets);
    return ok;
}

/* Guest RAM of @l backed by transparent hugepages (AnonHugePages), in KiB. */
static uint64_t huge_kb(const loaded *l)
{
    uint64_t kb = 0;

    for (unsigned b = 0; b < l->n; b++) {
        kb += sl_mapping_kb(l->mems[b].host, l->mems[b].length, "AnonHugePages");
    }
    return kb;
}

/* After the restore has stopped, completed or not: its statistics. */
static void gather(const opts *o, loaded *l, sl_restore *r, double t_start, results *res)
{
    res->st.size = sizeof(res->st);
    sl_restore_get_stats(r, &res->st);
    /* The library counts from sl_restore_start(); shift to the command's origin. */
    res->first_fault_ms = res->st.time_to_first_fault_ms < 0
                              ? NAN : t_start + res->st.time_to_first_fault_ms;
    res->hugepage = o->kind == SL_BACKEND_HUGETLBFS && l->n ? l->mems[0].page_size : 0;
    res->peak_rss_anon_kb = res->lazy_tl.peak_rss_anon_kb;
    res->guest_bytes = res->lazy_tl.total;
    res->vm_hwm_kb = sl_proc_status_kb("VmHWM");
    res->anon_huge_kb = huge_kb(l);
}

/* After the restore has completed: the hot list, the verification. */
static bool conclude(const opts *o, loaded *l, sl_restore *r, results *res, GError **errp)
{
    if (o->record && !write_recorded(o->record, r, errp)) {
        return false;
    }
    if (sl_restore_poll(r) == 0 && o->verify && !recording_only(o)) {
        int64_t bad = cli_verify_blocks(l->snap, l->mems, errp);
        if (bad < 0) {
            return false; /* the snapshot, not the memory, failed the check */
        }
        res->verify_mismatches = (uint64_t)bad;
        res->verified = true;
    }
    return true;
}

/* The restore's own error (a refused page names its block and page), or NULL. */
static GError *restore_error(const opts *o, sl_restore *r)
{
    GError *err = sl_restore_error(r);

    if (err && recording_only(o) && sl_restore_poll(r) == -ECANCELED) {
        g_clear_error(&err); /* a recording run ends with its workload, by design */
    }
    if (err && err->code == SL_ERROR_CHECKSUM) {
        g_prefix_error(&err, "restore failed: ");
    }
    return err;
}

/* --json of a restore that failed before it started (the snapshot could
 * not be opened, the memory not mapped): status, error and backend only,
 * so that a caller parsing stdout still gets its object (found by a
 * user's test: it got nothing). */
static void print_early_failure(const opts *o, const GError *err)
{
    g_autofree char *out = NULL;
    cli_json j;

    json_begin(&j);
    json_str(&j, "status", "failed");
    json_str(&j, "error", err ? err->message : "unknown error");
    json_str(&j, "backend", sl_backend_get(o->kind)->name);
    out = json_end(&j);
    printf("%s\n", out);
}

static int run_lazy(const opts *o, results *res)
{
    double t0 = cli_now_ms(), t_start = 0;
    GError *err = NULL;
    loaded l = { 0 };
    sl_restore *r = NULL;
    consumers *cons = NULL;
    bool ok, started;

    /* Consumers are forked before any thread exists and hand over their views. */
    ok = load(o, &l, &err) && start_lazy(o, l.snap, l.mems, &r, &err) &&
         (sl_timeline_init(&res->lazy_tl, guest_bytes(&l)), true) &&
         (!o->consumers || (cons = consumers_spawn((unsigned)o->consumers, l.snap, l.mems,
                                                   r, &err)));
    t_start = cli_now_ms() - t0; /* where the library's times start */
    ok = ok && sl_restore_start(r, &err);
    started = ok;
    res->ready_ms = cli_now_ms() - t0;
    if (!ok && cons) {
        consumers_finish(cons, NULL, NULL);
    }
    ok = ok && follow(o, &l, r, cons, t0, res, &err);
    if (started) {
        sl_restore_stop(r); /* joins the workers, so their figures are final */
        res->final_ms = cli_now_ms() - t0;
        gather(o, &l, r, t_start, res);
    }
    if (ok) {
        err = restore_error(o, r);
        ok = !err && conclude(o, &l, r, res, &err);
    }
    if (!ok && started) { /* the figures of a failed restore: what it did before */
        res->complete_ms = NAN;
        res->error = g_strdup(err ? err->message : "unknown error");
    }
    sl_restore_free(r);
    unload(&l);
    if (!ok && !started && o->json) {
        print_early_failure(o, err);
    }
    return ok ? 0 : cli_fail_error(err);
}

/* The eager load of every block, in a thread of its own when a timeline is
 * sampled beside it.  @o, @l and @done_efd are set before the thread
 * starts and read by both; @ret and @end_ms are the loader's, read by the
 * caller after joining it. */
typedef struct {
    const opts *o;
    loaded *l;
    int ret;
    double end_ms;        /* when the load ended (cli_now_ms()) */
    int done_efd;         /* written by the loader at its end (-1: none) */
} eager_job;

static gpointer eager_thread(gpointer p)
{
    eager_job *j = p;

    for (unsigned b = 0; b < j->l->n && j->ret == 0; b++) {
        j->ret = sl_eager_load(j->l->snap, b, j->l->mems[b].host,
                               (unsigned)j->o->eager_threads,
                               !j->o->no_checksum && !j->o->eager_no_checksum);
    }
    j->end_ms = cli_now_ms(); /* its own end: not the sampler's next look */
    if (j->done_efd >= 0) {
        (void)!eventfd_write(j->done_efd, 1);
    }
    return NULL;
}

/* Units (backend pages) of an eager load in place: those mincore shows
 * resident, plus the all-zero ones, which fresh memory already holds.
 * @zero has one flag per unit of every block, in order. */
static uint64_t eager_present(const loaded *l, const uint8_t *zero)
{
    uint64_t sys = (uint64_t)sysconf(_SC_PAGESIZE), bytes = 0;

    for (unsigned b = 0; b < l->n; b++) {
        const sl_mem *m = &l->mems[b];
        uint64_t units = m->length / m->page_size, step = m->page_size / sys;
        g_autofree unsigned char *vec = g_malloc(m->length / sys);
        if (mincore(m->host, m->length, vec) < 0) {
            return 0;
        }
        for (uint64_t u = 0; u < units; u++, zero++) {
            bytes += (*zero || (vec[u * step] & 1)) ? m->page_size : 0;
        }
    }
    return bytes;
}

/* One flag per backend page of every block: 1 if the snapshot has no
 * stored page in it. */
static uint8_t *zero_units(const loaded *l)
{
    GByteArray *z = g_byte_array_new();
    sl_block_info bi;

    for (unsigned b = 0; sl_snapshot_block(l->snap, b, &bi); b++) {
        uint64_t per = l->mems[b].page_size / bi.page_size;
        for (uint64_t p = 0; p < bi.pages; p += per) {
            uint8_t zero = 1;
            for (uint64_t q = p; q < p + per && q < bi.pages && zero; q++) {
                zero = !sl_snapshot_page_present(l->snap, b, q);
            }
            g_byte_array_append(z, &zero, 1);
        }
    }
    return g_byte_array_free(z, false);
}

/* Samples the eager load's timeline every 50 ms (mincore is not free)
 * until job @j ends, on its eventfd. */
static void sample_eager(eager_job *j, results *res, const uint8_t *zeros, double t0)
{
    struct pollfd p = { .fd = j->done_efd, .events = POLLIN };

    for (;;) {
        int n;
        sl_timeline_add(&res->eager_tl, cli_now_ms() - t0, eager_present(j->l, zeros));
        n = poll(&p, 1, 50);
        if (n > 0 || (n < 0 && errno != EINTR)) {
            return;
        }
    }
}

static int run_eager(const opts *o, results *res)
{
    double t0 = cli_now_ms();
    GError *err = NULL;
    loaded l = { 0 };
    eager_job j = { .o = o, .l = &l, .done_efd = -1 };
    g_autofree uint8_t *zeros = NULL;

    if (!load(o, &l, &err)) {
        unload(&l);
        return cli_fail_error(err);
    }
    if (o->timeline) {
        zeros = zero_units(&l);
        sl_timeline_init(&res->eager_tl, guest_bytes(&l));
        j.done_efd = eventfd(0, EFD_CLOEXEC); /* none: the load alone, its end sampled */
    }
    if (j.done_efd < 0) {
        eager_thread(&j);
    } else {
        GThread *t;
        t = g_thread_new("eager", eager_thread, &j);
        sample_eager(&j, res, zeros, t0);
        g_thread_join(t);
        close(j.done_efd);
    }
    /* The load's own end (found by review: with a timeline it was the
     * sampler's next look, up to 50 ms later, against the eager load). */
    res->eager_ms = j.end_ms - t0;
    for (GArray *a = res->eager_tl.samples; a && a->len &&
         g_array_index(a, sl_sample, a->len - 1).t_ms > res->eager_ms;) {
        g_array_set_size(a, a->len - 1); /* a look after the end, before its signal */
    }
    res->eager_anon_huge_kb = huge_kb(&l);
    if (o->timeline) {
        sl_timeline_add(&res->eager_tl, res->eager_ms, eager_present(&l, zeros));
    }
    unload(&l);
    if (j.ret == -ESTALE) {
        return cli_fail("eager load failed: the snapshot was written or truncated during the "
                        "load, and nothing else tells its pages (no checksums checked)");
    }
    return j.ret == 0 ? 0 : cli_fail("eager load failed: %s", g_strerror(-j.ret));
}

/* {"node": value, ...} of pages or threads per node; a static buffer per kind. */
static const char *nodes_json(const sl_stats *s, bool threads)
{
    static char buf[2][2048]; /* CLI-only: printed right away */
    GString *g = g_string_new("{");

    for (unsigned i = 0; i < s->nodes && i < 64; i++) {
        g_string_append_printf(g, "%s\"%d\": %" G_GUINT64_FORMAT, i ? ", " : "", s->node_id[i],
                               threads ? (uint64_t)s->threads_by_node[i] : s->pages_by_node[i]);
    }
    g_string_append_c(g, '}');
    g_strlcpy(buf[threads], g->str, sizeof(buf[0]));
    g_string_free(g, true);
    return buf[threads];
}

/* The JSON object of restore --json (fields: docs/design.md). */
/* The engine's counters of the restore (results_json). */
static void json_engine(cli_json *j, const opts *o, const sl_stats *s)
{
    json_u64(j, "pages", s->pages_total);
    json_u64(j, "faults", s->faults);
    json_u64(j, "faults_on_claimed", s->faults_on_claimed);
    json_u64(j, "faults_on_present", s->faults_on_present);
    json_u64(j, "pages_by_fault", s->pages_by_fault);
    json_u64(j, "pages_around", s->pages_around);
    json_u64(j, "faults_split", s->faults_split);
    json_u64(j, "pages_by_loader", s->pages_by_loader);
    json_u64(j, "zero_pages", s->zero_pages);
    json_u64(j, "pages_placed_twice", s->pages_placed_twice);
    if (recording_only(o)) {
        json_raw(j, "pages_never_placed", "null"); /* stopped early by design: no audit */
    } else {
        json_u64(j, "pages_never_placed", s->pages_never_placed);
    }
    json_u64(j, "checksum_failures", s->checksum_failures);
    json_u64(j, "bytes_read", s->bytes_read);
    json_u64(j, "bytes_read_direct", s->bytes_read_direct);
    json_u64(j, "pages_moved", s->pages_moved);
    json_u64(j, "eexist", s->eexist);
    json_u64(j, "eagain", s->eagain);
    json_double(j, "fault_p50_us", s->fault_p50_us);
    json_double(j, "fault_p99_us", s->fault_p99_us);
    json_double(j, "fault_max_us", s->fault_max_us);
}

/* What the touch threads and consumers saw (results_json). */
static void json_touch(cli_json *j, const opts *o, const results *r)
{
    json_double(j, "touch_p50_us", r->touch_p50_us);
    json_double(j, "touch_first_wait_ms", r->touch_first_wait_ms);
    json_double(j, "touch_p99_us", r->touch_p99_us);
    json_u64(j, "pages_touched", r->touched);
    json_u64(j, "touch_mismatches", r->touch_mismatches);
    json_u64(j, "touch_poisoned", r->touch_poisoned);
    json_int(j, "consumers", o->consumers);
    json_u64(j, "consumer_pages_touched", r->cons.touched);
    json_u64(j, "consumer_mismatches", r->cons.mismatches);
    json_u64(j, "consumer_poisoned", r->cons.poisoned);
    json_u64(j, "consumers_ended", r->cons.ended);
}

/* Where the memory went: nodes, RSS, hugepages, the restore's own (results_json). */
static void json_memory(cli_json *j, const opts *o, const results *r)
{
    const sl_stats *s = &r->st;

    json_u64(j, "hugepage_size", r->hugepage);
    json_raw(j, "pages_by_node", nodes_json(s, false));
    json_raw(j, "threads_by_node", nodes_json(s, true));
    json_u64(j, "pages_wrong_node", s->pages_wrong_node);
    json_u64(j, "loader_cpu_violations", s->loader_cpu_violations);
    json_u64(j, "hot_pages", s->hot_pages);
    json_u64(j, "pages_by_hint", s->pages_by_hint);
    if (o->workload) {
        json_double(j, "workload_ms", r->workload_ms);
    }
    json_u64(j, "guest_bytes", r->guest_bytes);
    json_u64(j, "peak_rss_anon_kb", r->peak_rss_anon_kb);
    json_u64(j, "vm_hwm_kb", r->vm_hwm_kb);
    json_u64(j, "thp_bytes", s->thp_bytes);
    json_u64(j, "anon_huge_kb", r->anon_huge_kb);
    json_u64(j, "map_bytes", s->map_bytes);
    json_u64(j, "metadata_bytes", s->metadata_bytes);
    if (o->compare_eager) {
        json_u64(j, "eager_anon_huge_kb", r->eager_anon_huge_kb);
    }
    json_double(j, "checksum_ms", s->checksum_ms);
    json_double(j, "loader_ms", s->loader_ms);
}

static char *results_json(const opts *o, const results *r)
{
    const sl_stats *s = &r->st;
    cli_json j;

    json_begin(&j);
    json_str(&j, "status", r->error ? "failed" : "ok");
    if (r->error) {
        json_str(&j, "error", r->error);
    }
    json_str(&j, "backend", sl_backend_get(o->kind)->name);
    json_bool(&j, "track_writes", o->track);
    json_u64(&j, "loader_threads", s->threads_by_node[0]);
    json_int(&j, "touch_threads", o->touch_threads);
    json_double(&j, "time_to_ready_ms", r->ready_ms);
    json_double(&j, "time_to_first_fault_ms", r->first_fault_ms);
    json_double(&j, "time_to_complete_ms", r->complete_ms);
    json_double(&j, "time_to_final_ms", r->final_ms); /* stopped: THPs collapsed */
    json_engine(&j, o, s);
    json_touch(&j, o, r);
    json_memory(&j, o, r);
    if (r->verified) {
        json_u64(&j, "verify_mismatches", r->verify_mismatches);
    } else {
        json_raw(&j, "verify_mismatches", "null"); /* not verified (no --verify) */
    }
    if (o->compare_eager) {
        json_double(&j, "eager_ms", r->eager_ms);
        json_int(&j, "eager_threads", o->eager_threads);
        json_bool(&j, "eager_checksum", !o->no_checksum && !o->eager_no_checksum);
        json_double(&j, "eager_over_ready", r->eager_ms / MAX(r->ready_ms, 1e-3));
    }
    return json_end(&j);
}

static void print_human(const opts *o, const results *r)
{
    const sl_stats *s = &r->st;

    printf("lazy restore (%s, %" G_GUINT64_FORMAT " pages, %u node(s) x %u loader(s), %d touch "
           "thread(s))\n", sl_backend_get(o->kind)->name, s->pages_total, s->nodes,
           s->threads_by_node[0], o->touch_threads);
    printf("  time to ready     %10.2f ms   (open, map, attach, register)\n", r->ready_ms);
    if (isnan(r->complete_ms)) {
        printf("  time to complete  %13s   (never completed)\n", "-");
    } else {
        printf("  time to complete  %10.1f ms\n", r->complete_ms);
    }
    if (!isnan(r->first_fault_ms)) {
        printf("  first fault after %10.2f ms\n", r->first_fault_ms);
    }
    /* "split": cold faults served before their neighbours (faults_split) */
    printf("  faults %" G_GUINT64_FORMAT " (%" G_GUINT64_FORMAT " cold ones split): service "
           "p50 %.1f us, p99 %.1f us, max %.1f us; touch p50 %.1f us, p99 %.1f us\n", s->faults,
           s->faults_split, s->fault_p50_us, s->fault_p99_us, s->fault_max_us, r->touch_p50_us,
           r->touch_p99_us);
    printf("  pages by fault %" G_GUINT64_FORMAT " (around %" G_GUINT64_FORMAT "), by loader %"
           G_GUINT64_FORMAT " (moved %" G_GUINT64_FORMAT "), zero %" G_GUINT64_FORMAT
           "; placed twice %" G_GUINT64_FORMAT ", never %" G_GUINT64_FORMAT "\n",
           s->pages_by_fault, s->pages_around, s->pages_by_loader, s->pages_moved, s->zero_pages,
           s->pages_placed_twice, s->pages_never_placed);
    /* the fault thread hashes too: "of loader time" only where loaders ran */
    if (s->loader_ms > 0) {
        printf("  checksums %.1f ms (loader time %.1f ms);", s->checksum_ms, s->loader_ms);
    } else {
        printf("  checksums %.1f ms (no loader);", s->checksum_ms);
    }
    printf(" %" G_GUINT64_FORMAT " pages touched, %" G_GUINT64_FORMAT " touch mismatches, %"
           G_GUINT64_FORMAT " refused (SIGBUS)\n", r->touched, r->touch_mismatches,
           r->touch_poisoned);
    if (s->nodes > 1 || o->workload) {
        printf("  nodes: pages %s, threads %s, wrong node %" G_GUINT64_FORMAT
               ", off-node CPU %" G_GUINT64_FORMAT "; hot %" G_GUINT64_FORMAT ", by hint %"
               G_GUINT64_FORMAT "\n", nodes_json(s, false), nodes_json(s, true),
               s->pages_wrong_node, s->loader_cpu_violations, s->hot_pages, s->pages_by_hint);
    }
    if (o->workload) {
        printf("  workload of %" G_GINT64_FORMAT " pages done after %.1f ms\n", o->workload,
               r->workload_ms);
    }
    if (o->consumers) {
        printf("  %d consumer process(es): %" G_GUINT64_FORMAT " pages touched, %"
               G_GUINT64_FORMAT " mismatches, %" G_GUINT64_FORMAT " refused (SIGBUS)\n",
               o->consumers, r->cons.touched, r->cons.mismatches, r->cons.poisoned);
        if (r->cons.ended) { /* only after a failed restore on kernels without poison */
            printf("  %" G_GUINT64_FORMAT " consumer(s) ended: waiting on a page that could "
                   "not be placed, which this kernel cannot refuse (no UFFDIO_POISON)\n",
                   r->cons.ended);
        }
    }
    if (r->verified) {
        printf("  verify: %" G_GUINT64_FORMAT " mismatching pages\n", r->verify_mismatches);
    }
    if (r->error) {
        printf("  failed: %s\n", r->error);
    }
    if (o->compare_eager && !r->error) {
        printf("eager load (%d thread(s)): %.1f ms, %.0fx the lazy time to ready\n",
               o->eager_threads, r->eager_ms, r->eager_ms / MAX(r->ready_ms, 1e-3));
    }
}

static void print_results(const opts *o, const results *r)
{
    if (o->json) {
        g_autofree char *out = results_json(o, r);
        printf("%s\n", out);
    } else {
        print_human(o, r);
    }
}

/*
 * With --threads 0 only touches place pages: refuse runs that would wait
 * forever for a page nobody touches.
 */
static bool something_places_every_page(const opts *o)
{
    if (o->threads != 0) {
        return true;
    }
    if (o->touch_threads == 0 && o->consumers == 0) {
        cli_fail("--threads 0 --touch-threads 0: no loader and no touch thread would place "
                 "the pages, the restore could never finish (give --threads N or "
                 "--touch-threads K)");
        return false;
    }
    if (o->workload > 0 && !o->record && o->consumers == 0) {
        cli_fail("--threads 0 --workload %" G_GINT64_FORMAT ": the pages the workload does "
                 "not touch would never be placed (add --record HOTLIST to end with the "
                 "workload, or give --threads N)", o->workload);
        return false;
    }
    return true;
}

/* --direct-reads MODE into config.direct_reads. */
static bool parse_direct(const char *mode, unsigned *out)
{
    static const char *const names[] = { [SL_DIRECT_OFF] = "off", [SL_DIRECT_AUTO] = "auto",
                                         [SL_DIRECT_ALWAYS] = "always" };

    for (unsigned i = 0; i < G_N_ELEMENTS(names); i++) {
        if (!strcmp(mode, names[i])) {
            *out = i;
            return true;
        }
    }
    cli_fail("--direct-reads: '%s' is not off, auto or always", mode);
    return false;
}

/* The command line's words before they are checked and taken into opts. */
typedef struct {
    char *backend, *access, *hps, *direct, *around;
    gboolean verify, eager, json, nocs, cold, interleave, nohot, eager_nocs, noprefault;
    gboolean track, by_copy;
} raw_opts;

static void raw_clear(raw_opts *w)
{
    g_free(w->backend);
    g_free(w->access);
    g_free(w->hps);
    g_free(w->direct);
    g_free(w->around);
}

/* --backend, --hugepage-size and --consumers, into @o. */
static bool check_memory(opts *o, const raw_opts *w)
{
    if (!sl_backend_by_name(w->backend, &o->kind)) {
        cli_fail("--backend: unknown kind '%s' (known: anon, shmem, hugetlbfs)", w->backend);
        return false;
    }
    if (w->hps && (o->kind != SL_BACKEND_HUGETLBFS || !cli_parse_size(w->hps, &o->hugepage) ||
                   (o->hugepage != (2u << 20) && o->hugepage != (1u << 30)))) {
        cli_fail("--hugepage-size: '%s' must be 2M or 1G, with --backend hugetlbfs", w->hps);
        return false;
    }
    if (o->consumers < 0 || o->consumers > 16) {
        cli_fail("--consumers: %d is not between 0 and 16", o->consumers);
        return false;
    }
    if (o->consumers && o->kind == SL_BACKEND_ANON) {
        cli_fail("--consumers: anonymous memory cannot be mapped by other processes");
        return false;
    }
    for (unsigned i = 0; o->binds && o->binds[i]; i++) {
        int node;
        if (!cli_parse_name_node(o->binds[i], NULL, &node)) {
            cli_fail("--bind '%s': expected BLOCK=NODE with NODE from 0 to 1023", o->binds[i]);
            return false;
        }
    }
    if (o->kind == SL_BACKEND_HUGETLBFS) {
        o->hugepage = sl_hugetlb_resolve(o->hugepage); /* the size really used */
    }
    return true;
}

/* How the restore reads and who touches pages: --fault-around ... --eager-threads. */
static bool check_work(opts *o, const raw_opts *w)
{
    if ((w->around && !cli_parse_around(w->around, &o->around)) ||
        (w->direct && !parse_direct(w->direct, &o->direct))) {
        return false;
    }
    if (w->access && strcmp(w->access, "random") && strcmp(w->access, "seq")) {
        cli_fail("--access: '%s' is neither random nor seq", w->access);
        return false;
    }
    if (!cli_check_threads(o->threads)) {
        return false;
    }
    if (o->workload < 0) {
        cli_fail("--workload: %" G_GINT64_FORMAT " pages is negative", o->workload);
        return false;
    }
    if (o->touch_threads < 0 || o->touch_threads > 256 || o->eager_threads < 1 ||
        o->eager_threads > 256) {
        cli_fail("--touch-threads must be between 0 and 256, --eager-threads between 1 and 256");
        return false;
    }
    return something_places_every_page(o);
}

/* The flags of @w into @o. */
static void take_flags(opts *o, const raw_opts *w)
{
    o->place_by_copy = w->by_copy;
    o->random = !w->access || !strcmp(w->access, "random");
    o->verify = w->verify;
    o->compare_eager = w->eager;
    o->json = w->json;
    o->no_checksum = w->nocs;
    o->eager_no_checksum = w->eager_nocs;
    o->cold = w->cold;
    o->interleave = w->interleave;
    o->no_hot = w->nohot;
    o->no_prefault = w->noprefault;
    o->track = w->track;
}

/* Parses and checks the command line into @o (@w holds its raw words). */
static bool parse_into(int *argc, char ***argv, opts *o, raw_opts *w)
{
    GOptionEntry entries[] = {
        { "backend", 0, 0, G_OPTION_ARG_STRING, &w->backend, "memory backend: anon|shmem|hugetlbfs", "KIND" },
        { "hugepage-size", 0, 0, G_OPTION_ARG_STRING, &w->hps, "hugetlbfs page size: 2M|1G (default: host default)", "SIZE" },
        { "numa-topology", 0, 0, G_OPTION_ARG_STRING, &o->topology, "fake NUMA nodes, e.g. 2 or 0:0@0;1:1@0 (docs/numa.md)", "SPEC" },
        { "bind", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->binds, "place BLOCK on NUMA node NODE", "BLOCK=NODE" },
        { "interleave", 0, 0, G_OPTION_ARG_NONE, &w->interleave, "stripe unbound blocks over all nodes", NULL },
        { "record", 0, 0, G_OPTION_ARG_FILENAME, &o->record, "write the faulted pages, in order, as a hot-page list (with --threads 0 --workload N: stop after the workload)", "HOTLIST" },
        { "no-hot-list", 0, 0, G_OPTION_ARG_NONE, &w->nohot, "ignore the snapshot's hot-page list", NULL },
        CLI_FAULT_AROUND_OPTION(w->around),
        { "no-prefault", 0, 0, G_OPTION_ARG_NONE, &w->noprefault, "no prefault thread: faults and loaders allocate shared memory themselves", NULL },
        { "workload", 0, 0, G_OPTION_ARG_INT64, &o->workload, "touch threads touch N pages in all, then stop", "N" },
        { "consumers", 0, 0, G_OPTION_ARG_INT, &o->consumers, "processes mapping the same file, touching pages (shared backends)", "N" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &o->threads, "loaders per NUMA node (default: one per CPU of the node, at a low priority; 0: faults only)", "N" },
        { "touch-threads", 0, 0, G_OPTION_ARG_INT, &o->touch_threads, "threads touching pages (default 2)", "K" },
        { "access", 0, 0, G_OPTION_ARG_STRING, &w->access, "touch pattern: random|seq", "MODE" },
        { "verify", 0, 0, G_OPTION_ARG_NONE, &w->verify, "check every byte after the restore", NULL },
        { "compare-eager", 0, 0, G_OPTION_ARG_NONE, &w->eager, "also time an eager load", NULL },
        { "eager-threads", 0, 0, G_OPTION_ARG_INT, &o->eager_threads, "threads of the eager load (default 1)", "N" },
        { "eager-no-checksum", 0, 0, G_OPTION_ARG_NONE, &w->eager_nocs, "the eager load skips checksums (a plain pread load)", NULL },
        { "no-checksum", 0, 0, G_OPTION_ARG_NONE, &w->nocs, "trust the file: skip checksums", NULL },
        { "track-writes", 0, 0, G_OPTION_ARG_NONE, &w->track, "track the pages written (as for "
          "resets and incremental snapshots), to measure what that costs", NULL },
        { "cold", 0, 0, G_OPTION_ARG_NONE, &w->cold, "drop the file's page cache before each load", NULL },
        { "direct-reads", 0, 0, G_OPTION_ARG_STRING, &w->direct, "how loaders read for anonymous "
          "memory: auto (O_DIRECT on io_uring where the file is not cached; default), off "
          "(pread), always", "MODE" },
        { "place-by-copy", 0, 0, G_OPTION_ARG_NONE, &w->by_copy, "anonymous memory: loaders copy "
          "each page (UFFDIO_COPY) instead of moving whole 2 MiB chunks (UFFDIO_MOVE)", NULL },
        { "json", 0, 0, G_OPTION_ARG_NONE, &w->json, "print one JSON object", NULL },
        { "timeline", 0, 0, G_OPTION_ARG_FILENAME, &o->timeline, "write bytes in place over time "
          "(CSV: lazy and, with --compare-eager, eager)", "FILE" },
        CLI_PARENT_OPTION(o->parents),
        { NULL },
    };

    o->threads = CLI_THREADS_UNSET;
    o->touch_threads = 2;
    o->eager_threads = 1;
    if (!cli_parse("SNAP - lazy restore into fresh memory", entries, argc, argv)) {
        return false;
    }
    if (*argc != 2 || !w->backend) {
        cli_fail("restore needs SNAP and --backend KIND");
        return false;
    }
    if (!check_memory(o, w) || !check_work(o, w)) {
        return false;
    }
    if (o->record && o->threads != 0) {
        fprintf(stderr, "snapload: note: with loaders running, --record lists only the pages "
                "that faulted, not those the loaders placed first; record with --threads 0 "
                "--workload N for a whole working set\n");
    }
    o->path = g_strdup((*argv)[1]);
    take_flags(o, w);
    return true;
}

static bool parse_opts(int *argc, char ***argv, opts *o)
{
    raw_opts w = { 0 };
    bool ok = parse_into(argc, argv, o, &w);

    raw_clear(&w);
    return ok;
}

/* The CSV, written beside the file and renamed over it when whole (a full disk leaves none). */
static int write_timeline(const opts *o, const results *res)
{
    g_autofree char *tmp = cli_partial_path(o->timeline);
    g_autoptr(GError) err = NULL;
    FILE *f = fopen(tmp, "wx");
    bool ok;

    if (!f) {
        return cli_fail("--timeline %s: cannot be written: %s", o->timeline, g_strerror(errno));
    }
    fprintf(f, "# mode,t_ms,bytes_in_place,guest_bytes; lazy ready at %.3f ms\n", res->ready_ms);
    sl_timeline_write(&res->lazy_tl, "lazy", f);
    if (res->eager_tl.samples) {
        sl_timeline_write(&res->eager_tl, "eager", f);
    }
    ok = !ferror(f);
    ok = fclose(f) == 0 && ok;
    if (!cli_finish_partial(tmp, o->timeline, ok, &err)) {
        return err ? cli_fail_error(g_steal_pointer(&err))
                   : cli_fail("--timeline %s: %s", o->timeline, g_strerror(errno ? errno : EIO));
    }
    return 0;
}

/* Exit status of a restore that ran to its end: 0 unless something was wrong. */
static int check_results(const opts *o, const results *res)
{
    /* A recording run stops early by design: its unplaced pages are no fault. */
    uint64_t never = recording_only(o) ? 0 : res->st.pages_never_placed;
    uint64_t touch_bad = res->touch_mismatches + res->touch_poisoned;
    uint64_t cons_bad = res->cons.mismatches + res->cons.poisoned;

    if (res->verify_mismatches || touch_bad || cons_bad || res->st.pages_placed_twice || never) {
        return cli_fail("restore finished with %" G_GUINT64_FORMAT " verify, %" G_GUINT64_FORMAT
                        " touch and %" G_GUINT64_FORMAT " consumer mismatches, %"
                        G_GUINT64_FORMAT " pages placed twice, %" G_GUINT64_FORMAT
                        " never placed", res->verify_mismatches, touch_bad, cons_bad,
                        res->st.pages_placed_twice, never);
    }
    return 0;
}

/* What the options of @o own. */
static void opts_clear(opts *o)
{
    g_free(o->path);
    g_strfreev(o->parents);
    g_free(o->topology);
    g_free(o->record);
    g_free(o->timeline);
    g_strfreev(o->binds);
}

int cmd_restore(int argc, char **argv)
{
    opts o = { 0 };
    results res = { 0 };
    int ret;

    if (!parse_opts(&argc, &argv, &o)) {
        opts_clear(&o); /* a refused value is freed too (found by ASan: --bind) */
        return 2;
    }
    if (o.cold) {
        drop_cache(o.path);
    }
    ret = run_lazy(&o, &res);
    if (ret != 0 && res.error) {
        print_results(&o, &res); /* what the failed restore did, with its reason */
    }
    if (ret == 0 && o.compare_eager) {
        if (o.cold) {
            drop_cache(o.path);
        }
        ret = run_eager(&o, &res);
    }
    if (ret == 0 && o.timeline) {
        ret = write_timeline(&o, &res);
    }
    if (ret == 0) {
        print_results(&o, &res);
        ret = check_results(&o, &res);
    }
    sl_timeline_clear(&res.lazy_tl);
    sl_timeline_clear(&res.eager_tl);
    g_free(res.error);
    opts_clear(&o);
    return ret;
}
