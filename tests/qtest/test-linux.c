/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Integration tests with a real Linux guest (docs/linux-guest.md): Debian's
 * cloud kernel and an initramfs of busybox-static and our workload
 * (tests/qtest/linux/slwork.c), built when the test starts, in stock QEMU
 * 10 with 512 MiB of RAM and 2 vCPUs.  The workload fills a quarter of
 * guest RAM with pages it can check byte for byte, walks them for ever
 * (check, rewrite), keeps checksummed files in tmpfs, reports heartbeats
 * and any wrong byte on the console (ttyS0) and answers requests on a
 * second serial port (ttyS1, a unix socket on the host).
 *
 * Table-driven over the guest's RAM (anonymous `-m`, shmem, hugetlbfs-2M)
 * and the snapshot's format (QEMU's own `migrate file:` with mapped-ram;
 * snapload's checksummed container, anonymous RAM's pages split off QEMU's
 * stream there; with QEMU 7.2 only the container).  Each kind of RAM is
 * booted once; the running guest is saved in each format (`snapload
 * qemu-save`).  Then, per format:
 *  - linux_guest_runs_clean_after_lazy_restore: `snapload qemu-restore`
 *    runs it lazily; the guest answers a PING on its second serial port
 *    while pages are still being placed, finishes a full checking pass over
 *    its working set, keeps sending heartbeats whose counters go on from
 *    the saved ones, its console shows no ERR, Oops, BUG, panic or Call
 *    Trace, and the restore reports every page placed exactly once;
 *  - snapshot_of_the_restored_guest_restores_clean: once that restore has
 *    completed, the restored guest is saved again (the second generation)
 *    and restored the same way, with the same checks; last, a bit flipped
 *    in one of its pages must be reported by the workload, which shows its
 *    checks were live all along;
 *  - snapshot_saved_during_the_restore_restores_clean (our container):
 *    qemu-save while the restore still places pages, then a restore of
 *    that save runs clean;
 *  - daemon_death_ends_qemu_before_any_wrong_page (share=on RAM, QEMU's
 *    file): the restore daemon killed mid-restore ends QEMU, and the guest
 *    printed no wrong page before.
 *
 * KVM is used where /dev/kvm works (SNAPLOAD_WITHOUT=kvm forces TCG) and is
 * hardware-assisted: a /dev/kvm served by a software-only module (kvm_pvm)
 * emulates an unmodified kernel instruction by instruction, far too slowly
 * to boot it, so the test says so and uses TCG (SL_LINUX_ACCEL=kvm|tcg
 * overrides).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "backends/backend.h"
#include "migration/uffd.h"
#include "tests/unit/testutil.h"
#include "linux-guest.h"

#define APPEND "console=ttyS0 panic=-1 slwork.ws_pct=25 slwork.hb_ms=500"

typedef struct {
    const char *name;     /* in test names */
    const char *format;   /* qemu-save --format */
} save_fmt;

static const mem_kind kinds[] = {
    { "anon", NULL, 0, true },
    { "shmem", NULL, 0, false },
    { "hugetlbfs-2M", "hugepages", 2l << 20, false },
};

static const save_fmt fmts[] = {
    { "qemu-file", "qemu" },         /* QEMU's own migrate file: + mapped-ram */
    { "snapload", "snapload" },      /* our container: share=on RAM only */
};

typedef struct {
    unsigned k, s;                   /* kinds[k], fmts[s] */
} lcase;

/* The major version of the QEMU the tests run (set in main()). */
static unsigned qemu_major;

/*
 * Whether RAM of kinds[@k] can be saved in fmts[@s]: QEMU writes its own
 * mapped-ram file from 9.0 on (Debian 12's 7.2 has neither `file:` nor
 * mapped-ram); our container takes every kind.
 */
static bool saved_as(unsigned k, unsigned s)
{
    (void)k;
    return strcmp(fmts[s].format, "qemu") || qemu_major >= 9;
}

typedef struct {
    char *path;                      /* the snapshot, NULL until written */
    uint64_t pages;                  /* the workload's page counter before the save */
} snap;

static linux_guest guest = { .append = APPEND };

/* What the cases of this program share: one boot per kind of RAM. */
static struct {
    bool booted[G_N_ELEMENTS(kinds)];
    snap gen[G_N_ELEMENTS(kinds)][G_N_ELEMENTS(fmts)][2];
} lg;

/* The guest's QEMU command line (a qemu_args_fn). */
static void linux_args(GPtrArray *a, const fixture *f, const char *serial, const char *qmp)
{
    lg_args(a, f, &guest, serial, qmp);
}

/* -------------------------------- phases --------------------------------- */

/*
 * Boots the guest on RAM kind @ki once, waits until the workload has filled
 * its working set and answers, and saves it in every format that kind
 * allows (the guest runs on a moment between two saves).
 */
static void boot_and_save_linux(fixture *f, unsigned ki)
{
    g_autofree char *serial = path_in(f, "boot.serial"), *qmp = path_in(f, "boot.qmp");
    g_autofree char *saveq = path_in(f, "boot-save.qmp"), *req = lg_req_path(serial);
    g_autofree char *log = NULL;
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GString) in = g_string_new(NULL);
    int lq = listen_at(qmp), pidfd, rfd;
    double t0 = lg_now_ms(), rtt;
    bool first = true;
    child qemu;
    sl_qmp *q;
    lg_hb h;

    linux_args(argv, f, serial, qmp);
    add2(argv, "-qmp", g_strdup_printf("unix:%s,server=on,wait=off", saveq));
    qemu = spawn(f, argv, "boot");
    pidfd = (int)syscall(SYS_pidfd_open, qemu.pid, 0);
    assert_true(pidfd >= 0);
    q = accept_qmp(lq, &qemu);
    h = lg_wait_heartbeats(serial, pidfd, 2, 0, "boot", false);
    rfd = lg_req_connect(req);
    rtt = lg_ping(rfd, in, "boot");
    print_message("# %s: booted, working set of %" PRIu64 " pages filled and checked, after "
                  "%.1f s (%s); PING answered in %.1f ms\n", f->k->name, h.ws,
                  (lg_now_ms() - t0) / 1000, f->kvm ? "KVM" : "TCG", rtt);
    for (unsigned s = 0; s < G_N_ELEMENTS(fmts); s++) {
        snap *g = &lg.gen[ki][s][0];
        if (!saved_as(ki, s)) {
            continue;
        }
        if (!first) {
            lg_cont_after_save(q);
            h = lg_wait_heartbeats(serial, pidfd, h.count + 2, h.pages, "boot", false);
        }
        first = false;
        g_free(g->path);
        g->path = g_strdup_printf("%s/%s-%s-gen1", guest.dir, f->k->name, fmts[s].name);
        log = slurp(serial);
        g->pages = lg_heartbeats(log).pages;
        g_clear_pointer(&log, g_free);
        lg_save(saveq, fmts[s].format, g->path);
    }
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    reap(&qemu, 60000);
    log = slurp(serial);
    lg_check_console(log, "boot", false);
    close(rfd);
    close(pidfd);
    close(lq);
    child_free(&qemu);
    lg.booted[ki] = true;
}

/*
 * Restores snapshot @s lazily and checks the guest (see the comment at the
 * top).  With @resave, saves the restored guest in @fmt once every page is
 * in place (the next generation); with @flip, ends by flipping a bit in
 * guest pages and waiting for the workload to report it.
 */
static void restore_linux(fixture *f, const snap *s, const char *tag, const char *fmt,
                          snap *resave, bool flip)
{
    g_autofree char *serial = NULL, *qmp = NULL, *req = NULL, *out = NULL, *errs = NULL;
    g_autofree char *pong_tok = NULL, *pass = NULL, *log = NULL, *saveq = NULL;
    g_autoptr(GString) in = g_string_new(NULL);
    g_autoptr(JsonObject) res = NULL;
    double rtt, pass_rtt, pass_ms = -1;
    JsonObject *rs;
    int lq, rfd, qpfd, st;
    lg_hb h;
    pid_t qemu;
    sl_qmp *q;
    child r;

    assert_non_null(s->path);
    g_free(f->snap);
    f->snap = g_strdup(s->path);
    serial = g_strdup_printf("%s/%s.serial", f->dir, tag);
    qmp = g_strdup_printf("%s/%s.qmp", f->dir, tag);
    req = lg_req_path(serial);
    saveq = path_in(f, "restore-save.qmp"); /* start_restore's second monitor */
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ "--json", "--threads", "1", NULL }, serial, qmp, NULL);
    q = accept_qmp(lq, &r);
    qemu = sl_qmp_peer_pid(q);
    qpfd = (int)syscall(SYS_pidfd_open, qemu, 0);
    assert_true(qemu > 0 && qpfd >= 0);

    /* While the restore runs: an answer, then a whole checking pass.  Not
     * before the guest runs: the device-state load would overwrite the
     * serial port's receive FIFO, and a request in it with it. */
    lg_wait_running(q, qpfd, tag);
    rfd = lg_req_connect(req);
    pong_tok = g_strdup_printf("%s-%d", tag, (int)getpid());
    rtt = lg_ping(rfd, in, pong_tok);
    pass = lg_req_call(rfd, in, "PASS", "PASS ", LG_REQ_WAIT_MS, &pass_rtt);
    sscanf(pass, "PASS ms=%lf", &pass_ms);
    h = lg_wait_heartbeats(serial, qpfd, 3, s->pages, tag, true);
    wait_for_text(r.out, "\"mode\""); /* its report: every page is in place */
    h = lg_wait_heartbeats(serial, qpfd, h.count + 2, h.pages, tag, true);
    if (h.first_pages < s->pages) {
        fail_msg("%s: the restored workload's counter went back: %" PRIu64 " pages, saved "
                 "at %" PRIu64 " or later", tag, h.first_pages, s->pages);
    }
    if (h.files <= h.first_files) {
        fail_msg("%s: the workload checked no file after the restore (%" PRIu64 " checks)", tag,
                 h.files);
    }
    lg_ping(rfd, in, "after");
    log = slurp(serial);
    lg_check_console(log, tag, true);
    g_clear_pointer(&log, g_free);
    if (resave) {
        g_free(resave->path);
        resave->path = g_strdup_printf("%s/%s-%s-gen2", guest.dir, f->k->name,
                                       fmts[((const lcase *)f->opaque)->s].name);
        resave->pages = h.pages;
        lg_save(saveq, fmt, resave->path);
    } else if (flip) {
        lg_flip_and_see_it_reported(rfd, in, serial, h.ws, tag);
    }
    st = quit_and_reap(q, &r, &out, &errs);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("%s: qemu-restore failed: %s", tag, errs);
    }
    res = parse_json(out);
    rs = restore_was_clean(res);
    if (f->k->anon && sl_uffd_has_features(UFFD_FEATURE_MOVE)) {
        /* QEMU's mover thread took whole chunks (REGISTER_MOVER): hugepages from the start */
        assert_true(json_object_get_int_member(rs, "pages_moved") > 0);
    }
    print_message("# %s/%s: running %.0f ms after QEMU's start, first PONG in %.1f ms, first "
                  "full pass over %" PRIu64 " pages %.0f ms (answered in %.0f ms), every page "
                  "in place %.0f ms after the start (%" PRId64 " faults, %" PRId64 " pages by "
                  "fault, %" PRId64 " by loaders); %u heartbeats, %" PRIu64 " file checks\n",
                  f->k->name, tag, json_object_get_double_member(res, "time_to_running_ms"), rtt,
                  h.ws, pass_ms, pass_rtt,
                  json_object_get_double_member(res, "time_to_complete_ms"),
                  json_object_get_int_member(rs, "faults"),
                  json_object_get_int_member(rs, "pages_by_fault"),
                  json_object_get_int_member(rs, "pages_by_loader"), h.count, h.files);
    close(rfd);
    close(qpfd);
    close(lq);
    child_free(&r);
}

/* -------------------------------- fixture -------------------------------- */

static int lsetup(void **state)
{
    const lcase *c = *state;

    *state = (void *)&kinds[c->k];
    setup(state);
    lg_setup(*state, &guest, linux_args, c);
    return 0;
}

/* Skips (or fails, where required) without uffd or 2M pages for the guest. */
static void need_linux(fixture *f)
{
    g_autofree char *why = NULL;
    bool have = sl_test_have_uffd(&why);

    SL_TEST_NEED("uffd", have, why ? why : "");
    if (f->k->cap) {
        g_autoptr(GError) err = NULL;
        bool ok = f->memfile &&
                  sl_hugetlb_check((uint64_t)f->k->hugepage,
                                   ((uint64_t)LG_RAM_MB << 20) / (uint64_t)f->k->hugepage, &err);
        SL_TEST_NEED(f->k->cap, ok, err ? err->message : "no hugetlbfs mount for 2 MiB pages");
    }
    lg_prepare(&guest);
}

/* The first generation of this case's snapshot (booting its kind once). */
static snap *gen1_of(fixture *f, const lcase *c)
{
    if (!lg.booted[c->k] || !lg.gen[c->k][c->s][0].path) {
        boot_and_save_linux(f, c->k);
    }
    return &lg.gen[c->k][c->s][0];
}

/* ---------------------------------- tests -------------------------------- */

static void test_linux_guest_runs_clean_after_lazy_restore(void **state)
{
    fixture *f = *state;
    const lcase *c = f->opaque;
    snap *g1;

    need_linux(f);
    g1 = gen1_of(f, c);
    restore_linux(f, g1, "gen1", fmts[c->s].format, &lg.gen[c->k][c->s][1], false);
}

static void test_snapshot_of_the_restored_guest_restores_clean(void **state)
{
    fixture *f = *state;
    const lcase *c = f->opaque;
    snap *g1, *g2 = &lg.gen[c->k][c->s][1];

    need_linux(f);
    g1 = gen1_of(f, c);
    if (!g2->path) { /* the first test did not get that far (or was left out) */
        restore_linux(f, g1, "gen1", fmts[c->s].format, g2, false);
    }
    restore_linux(f, g2, "gen2", NULL, NULL, true);
    for (unsigned i = 0; i < 2; i++) { /* done with this pair: give the space back */
        snap *g = &lg.gen[c->k][c->s][i];
        unlink(g->path);
        g_clear_pointer(&g->path, g_free);
    }
}

/*
 * Saves the guest of snapshot @s in our container while its lazy restore
 * still runs (right after its first answer), into @out; fails if the
 * restore had completed before the save began.
 */
static void save_mid_restore(fixture *f, const snap *s, snap *out)
{
    g_autofree char *serial = path_in(f, "mid.serial"), *qmp = path_in(f, "mid.qmp");
    g_autofree char *saveq = path_in(f, "restore-save.qmp"), *req = lg_req_path(serial);
    g_autofree char *log = NULL;
    g_autoptr(GString) in = g_string_new(NULL);
    uint64_t mapped, total;
    int lq, rfd, qpfd;
    sl_qmp *q;
    child r;

    g_free(f->snap);
    f->snap = g_strdup(s->path);
    lq = listen_at(qmp);
    /* No loaders: only the guest's faults place pages, so most are missing
     * when the save begins (checked), and the save itself must get them. */
    r = start_restore(f, (const char *[]){ "--json", "--threads", "0", NULL }, serial, qmp, NULL);
    q = accept_qmp(lq, &r);
    qpfd = (int)syscall(SYS_pidfd_open, sl_qmp_peer_pid(q), 0);
    assert_true(qpfd >= 0);
    lg_wait_running(q, qpfd, "mid");
    rfd = lg_req_connect(req);
    lg_ping(rfd, in, "mid");
    mapped = pages_mapped(sl_qmp_peer_pid(q), f->memfile, &total);
    if (mapped >= total / 2) {
        fail_msg("%" PRIu64 " of %" PRIu64 " pages were in place before the save began: this "
                 "run cannot show a save during a restore", mapped, total);
    }
    print_message("# %s: saving with %" PRIu64 " of %" PRIu64 " pages in place\n", f->k->name,
                  mapped, total);
    out->path = g_strdup_printf("%s/%s-mid-restore", guest.dir, f->k->name);
    log = slurp(serial);
    out->pages = lg_heartbeats(log).pages;
    lg_save(saveq, "snapload", out->path); /* qemu-save reads missing pages via the daemon */
    lg_cont_after_save(q);
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    reap(&r, 60000);
    close(rfd);
    close(qpfd);
    close(lq);
    child_free(&r);
}

/*
 * The guest saved (qemu-save, our container) while its restore still
 * placed pages, then restored from that save: it runs clean (every check
 * of the workload and its files), as the user found it did not
 * when the save read the RAM file's holes as zeros.
 */
static void test_snapshot_saved_during_the_restore_restores_clean(void **state)
{
    fixture *f = *state;
    const lcase *c = f->opaque;
    snap mid = { 0 };

    need_linux(f);
    save_mid_restore(f, gen1_of(f, c), &mid);
    restore_linux(f, &mid, "from-mid", NULL, NULL, false);
    unlink(mid.path);
    g_free(mid.path);
}

/*
 * The restore daemon killed while the guest runs on half-restored RAM
 * (no loaders: pages come only on faults, so many are still missing, which
 * the test checks before the kill): QEMU is ended, qemu-restore says why
 * and fails, and the guest never printed a wrong page before it went.
 */
static void test_daemon_death_ends_qemu_before_any_wrong_page(void **state)
{
    fixture *f = *state;
    const lcase *c = f->opaque;
    g_autofree char *serial = path_in(f, "death.serial"), *qmp = path_in(f, "death.qmp");
    g_autofree char *dsock = path_in(f, "daemon.sock"), *req = lg_req_path(serial);
    g_autofree char *errs = NULL, *log = NULL;
    g_autoptr(GString) in = g_string_new(NULL);
    uint64_t mapped, total;
    int lq, rfd, qpfd, st;
    pid_t qemu;
    sl_qmp *q;
    child r;

    need_linux(f);
    g_free(f->snap);
    f->snap = g_strdup(gen1_of(f, c)->path);
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ "--threads", "0", "--socket", dsock, NULL }, serial,
                      qmp, NULL);
    q = accept_qmp(lq, &r);
    qemu = sl_qmp_peer_pid(q);
    qpfd = (int)syscall(SYS_pidfd_open, qemu, 0);
    assert_true(qemu > 0 && qpfd >= 0);
    lg_wait_running(q, qpfd, "death");
    rfd = lg_req_connect(req);
    lg_ping(rfd, in, "death"); /* the guest answers on pages served by faults */
    mapped = pages_mapped(qemu, f->memfile, &total);
    if (mapped >= total) {
        end_if_alive(qemu, qpfd, 0);
        fail_msg("every page of guest RAM was mapped before the daemon could be killed: this "
                 "run cannot show a death mid-restore");
    }
    kill_daemon_at(dsock);
    st = reap(&r, 60000);
    errs = slurp(r.err);
    sl_qmp_close(q);
    if (end_if_alive(qemu, qpfd, 10000)) {
        fail_msg("QEMU was still running after its daemon died and qemu-restore exited");
    }
    assert_false(g_spawn_check_wait_status(st, NULL));
    if (!strstr(errs, "the restore daemon went away")) {
        fail_msg("QEMU did not say the daemon went away; qemu-restore said:\n%s", errs);
    }
    log = slurp(serial);
    lg_check_console(log, "death", true);
    print_message("# %s: daemon killed with %" PRIu64 " of %" PRIu64 " pages mapped in QEMU; "
                  "QEMU ended, no wrong page reported\n", f->k->name, mapped, total);
    close(rfd);
    close(qpfd);
    close(lq);
    child_free(&r);
}

int main(void)
{
    static lcase cases[G_N_ELEMENTS(kinds) * G_N_ELEMENTS(fmts)];
    struct CMUnitTest tests[4 * G_N_ELEMENTS(cases)];
    unsigned n = 0, nc = 0;
    int failed;

    qtest_pick_qemu();
    qemu_major = qtest_qemu_major();
    for (unsigned k = 0; k < G_N_ELEMENTS(kinds); k++) {
        for (unsigned s = 0; s < G_N_ELEMENTS(fmts); s++) {
            lcase *c = &cases[nc++];
            if (!saved_as(k, s)) {
                nc--;
                continue;
            }
            *c = (lcase){ k, s };
            tests[n] = (struct CMUnitTest)cmocka_unit_test_prestate_setup_teardown(
                test_linux_guest_runs_clean_after_lazy_restore, lsetup, teardown, c);
            tests[n++].name = g_strdup_printf("%s/%s/linux_guest_runs_clean_after_lazy_restore",
                                              kinds[k].name, fmts[s].name);
            if (!strcmp(fmts[s].format, "snapload")) { /* qemu-save's own container */
                tests[n] = (struct CMUnitTest)cmocka_unit_test_prestate_setup_teardown(
                    test_snapshot_saved_during_the_restore_restores_clean, lsetup, teardown, c);
                tests[n++].name = g_strdup_printf(
                    "%s/%s/snapshot_saved_during_the_restore_restores_clean", kinds[k].name,
                    fmts[s].name);
            }
            if (!kinds[k].anon && !strcmp(fmts[s].format, "qemu")) { /* a RAM file to watch */
                tests[n] = (struct CMUnitTest)cmocka_unit_test_prestate_setup_teardown(
                    test_daemon_death_ends_qemu_before_any_wrong_page, lsetup, teardown, c);
                tests[n++].name = g_strdup_printf(
                    "%s/%s/daemon_death_ends_qemu_before_any_wrong_page", kinds[k].name,
                    fmts[s].name);
            }
            tests[n] = (struct CMUnitTest)cmocka_unit_test_prestate_setup_teardown(
                test_snapshot_of_the_restored_guest_restores_clean, lsetup, teardown, c);
            tests[n++].name = g_strdup_printf(
                "%s/%s/snapshot_of_the_restored_guest_restores_clean", kinds[k].name,
                fmts[s].name);
        }
    }
    qtest_skip_without_qemu(tests, n);
    if (g_getenv("SL_TEST_FILTER")) {
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    guest.dir = sl_test_tmpdir();
    failed = _cmocka_run_group_tests("linux", tests, n, NULL, NULL);
    for (unsigned k = 0; k < G_N_ELEMENTS(kinds); k++) {
        for (unsigned s = 0; s < G_N_ELEMENTS(fmts); s++) {
            for (unsigned g = 0; g < 2; g++) {
                g_free(lg.gen[k][s][g].path);
            }
        }
    }
    if (!g_getenv("SL_TEST_KEEP")) {
        sl_test_rmdir(guest.dir);
    }
    g_free(guest.kernel);
    g_free(guest.initrd);
    for (unsigned i = 0; i < n; i++) {
        g_free((char *)tests[i].name);
    }
    return failed;
}
