/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Integration tests with stock QEMU and real vCPUs (KVM here, TCG where
 * KVM is absent), table-driven over {shmem, hugetlbfs-2M}.  The guest is
 * tests/qtest/guest/walker.S: it walks all RAM above 1 MiB, checking each
 * page against the pattern of the previous pass and writing the next, and
 * reports passes and errors on the serial port.
 *
 * Each case boots the walker, lets it finish two passes, saves it mid-walk
 * with `snapload qemu-save`, and restores it with `snapload qemu-restore`:
 *  - paused after the device-state load, its registers equal the saved
 *    ones, guest RAM read through QEMU's qtest protocol equals the
 *    snapshot, and a second process mapping the RAM file the way a
 *    vhost-user back-end does reads correct bytes; then it runs on and the
 *    walker finds no error in two more passes;
 *  - with the daemon killed mid-restore, QEMU is ended and the walker
 *    never reported reading a wrong (zero) page;
 *  - qemu-restore killed, or sent SIGTERM/SIGINT, ends its QEMU (and with a
 *    signal, leaves no socket or temporary file); a second qemu-restore of
 *    a running one's RAM file is refused without touching it;
 *  - a page corrupted in the snapshot fails the restore by name; qemu-save
 *    refuses a RAM file that QEMU no longer maps;
 *  - a child saved with `qemu-save --parent` stores what changed and
 *    restores clean, also once its parent moved (qemu-restore fails naming
 *    it, and restores with --parent).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <hugetlbfs.h>
#include "backends/backend.h"
#include "migration/format/format.h"
#include "tests/unit/testutil.h"
#include "tools/client.h"
#include "tools/qmp.h"
#include "qtest-util.h"

static const mem_kind kinds[] = {
    { "shmem", NULL, 0, false },
    { "hugetlbfs-2M", "hugepages", 2l << 20, false },
};

/* ---------------------------------- tests -------------------------------- */

/* Paused after a lazy device-state load: registers, qtest view of RAM and a
 * vhost-user style second process all match the snapshot; then the guest
 * runs two more passes and its own checks find nothing wrong. */
static void test_lazy_restore_matches_snapshot_and_guest_runs_on(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL, *qt = NULL, *dsock = NULL, *regs = NULL;
    g_autofree char *out = NULL, *errs = NULL;
    g_autoptr(JsonObject) res = NULL;
    JsonObject *rs;
    int lq, lt, tfd, st;
    sl_qmp *q;
    child r;

    need(f);
    boot_and_save(f);
    serial = path_in(f, "restore.serial");
    qmp = path_in(f, "restore.qmp");
    qt = path_in(f, "restore.qtest");
    dsock = path_in(f, "daemon.sock");
    lq = listen_at(qmp);
    lt = listen_at(qt);
    r = start_restore(f, (const char *[]){ "--paused", "--json", "--threads", "1", "--socket",
                                           dsock, NULL }, serial, qmp, qt);
    q = accept_qmp(lq, &r);
    tfd = accept4(lt, NULL, NULL, SOCK_CLOEXEC);
    assert_true(tfd >= 0);
    wait_paused(q);
    regs = hmp(q, "info registers");
    assert_string_equal(regs, f->regs);
    run_peer(f, dsock);
    assert_int_equal(qtest_compare(f, tfd), 0);
    assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
    wait_walker(serial, f->saved_pass + 2, 0);
    wait_restored(&r);
    st = quit_and_reap(q, &r, &out, &errs);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("qemu-restore failed: %s", errs);
    }
    res = parse_json(out);
    rs = restore_was_clean(res);
    /* The figures the CLI promises at the top level. */
    assert_int_equal(json_object_get_int_member(res, "faults"),
                     json_object_get_int_member(rs, "faults"));
    assert_int_equal(json_object_get_int_member(res, "pages_placed_twice"), 0);
    assert_true(json_object_get_double_member(res, "time_to_complete_ms") > 0);
    assert_true(json_object_get_double_member(res, "device_state_ms") > 0);
    close(tfd);
    close(lq);
    close(lt);
    child_free(&r);
}




/*
 * The daemon dies while the guest runs on a half-restored RAM: QEMU is
 * ended, and the walker never saw a page that should not be zero.  The
 * guest runs briefly and is stopped, and the test checks that pages are
 * still missing (none was placed but on a fault, and QEMU has not mapped
 * them all); then the guest runs on and the daemon is killed under it, so
 * the kill lands mid-restore with the walker reading (found by an audit:
 * the guest stayed stopped through the kill, so no read could follow it).
 */
static void test_daemon_death_ends_qemu_before_any_wrong_page(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL, *dsock = NULL, *errs = NULL, *log = NULL;
    uint64_t before, mapped, total;
    int lq, st, qpfd;
    pid_t qemu;
    sl_qmp *q;
    child r;

    need(f);
    boot_and_save(f);
    serial = path_in(f, "restore.serial");
    qmp = path_in(f, "restore.qmp");
    dsock = path_in(f, "daemon.sock");
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ "--paused", "--threads", "0", "--socket", dsock,
                                           NULL }, serial, qmp, NULL);
    q = accept_qmp(lq, &r);
    qemu = sl_qmp_peer_pid(q);
    qpfd = (int)syscall(SYS_pidfd_open, qemu, 0);
    assert_true(qemu > 0 && qpfd >= 0);
    wait_paused(q);
    before = pages_mapped(qemu, f->memfile, &total);
    assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
    wait_guest_touches(qemu, f->memfile, before); /* running on lazily served pages */
    assert_true(sl_qmp_ok(q, "stop", NULL, NULL));
    mapped = pages_mapped(qemu, f->memfile, &total);
    if (mapped >= total) {
        end_if_alive(qemu, qpfd, 0);
        fail_msg("the guest had every page of its RAM mapped before the daemon could be "
                 "killed: this run cannot show a death mid-restore");
    }
    assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
    kill_daemon_at(dsock); /* with pages still missing, the walker running */
    st = reap(&r, 60000);
    errs = slurp(r.err);
    sl_qmp_close(q);
    log = slurp(serial);
    if (end_if_alive(qemu, qpfd, 10000)) {
        fail_msg("QEMU was still running after its daemon died and qemu-restore exited");
    }
    close(qpfd);
    assert_false(g_spawn_check_wait_status(st, NULL));
    if (!strstr(errs, "the restore daemon went away")) {
        fail_msg("QEMU did not say the daemon went away; qemu-restore said:\n%s", errs);
    }
    assert_null(strstr(log, "ERR"));
    close(lq);
    child_free(&r);
}

/*
 * In a child bounded by an alarm: as soon as the daemon listens at @dsock,
 * @n views of the guest's RAM file registered with it one after the other,
 * each let go at once, or with @hold the last kept until the child is
 * killed (a back-end that maps guest RAM early).  Exits 0 when all were
 * registered, 1 on a refusal, or dies of SIGALRM when the daemon stopped
 * answering.
 */
static pid_t registrar(const fixture *f, const char *dsock, unsigned n, bool hold)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        struct stat st;
        void *map;
        int fd;

        alarm(60);
        for (unsigned t = 0; t < 20000 && access(dsock, F_OK) < 0; t++) {
            g_usleep(500);
        }
        fd = open(f->memfile, O_RDWR | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0 ||
            (map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0)) == MAP_FAILED) {
            _exit(2);
        }
        for (unsigned i = 0, tries = 0; i < n; i++) {
            GError *err = NULL;
            bool tracked = false;
            int sock = -1, uffd = sl_client_register_view(dsock, "registrar", "ram0", map,
                                                          (uint64_t)st.st_size, fd, &sock,
                                                          &tracked, &err);
            if (uffd < 0 && i == 0 && ++tries < 5000) { /* bound, not yet listening */
                g_clear_error(&err);
                g_usleep(1000);
                i--;
                continue;
            }
            if (uffd < 0) {
                fprintf(stderr, "registration %u: %s\n", i, err->message);
                _exit(1);
            }
            if (!hold || i + 1 < n) {
                close(uffd);
                close(sock);
            }
        }
        while (hold) {
            pause();
        }
        _exit(0);
    }
    return pid;
}

/* Quits the guest of restore @r (QMP @q, listening socket @lq) once the
 * restore has completed: qemu-restore exits 0. */
static void quit_clean(sl_qmp *q, child *r, int lq)
{
    g_autofree char *out = NULL, *errs = NULL;
    int st;

    wait_restored(r);
    st = quit_and_reap(q, r, &out, &errs);

    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("qemu-restore failed: %s", errs);
    }
    close(lq);
    child_free(r);
}

/*
 * Consumers keep registering long after the restore completed (a back-end
 * that reconnects, saves): 1500 registrations, each a line the daemon
 * writes to qemu-restore, never block the daemon, and qemu-restore ends
 * when QEMU does.  Found by review: nobody read those lines after the
 * restore's result, so at about 1070 the daemon blocked on its full pipe,
 * every later consumer hung, and qemu-restore waited forever for it.
 */
static void test_registrations_after_completion_never_block_the_daemon(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL, *dsock = NULL;
    int lq, st;
    pid_t many;
    sl_qmp *q;
    child r;

    need(f);
    boot_and_save(f);
    serial = path_in(f, "restore.serial");
    qmp = path_in(f, "restore.qmp");
    dsock = path_in(f, "daemon.sock");
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ "--threads", "1", "--socket", dsock, NULL }, serial,
                      qmp, NULL);
    q = accept_qmp(lq, &r);
    wait_walker(serial, f->saved_pass + 2, 0);
    /* completed: its report lines are no longer read for the fill (found
     * by an audit: the premise was left to timing) */
    wait_for_text(r.out, "every page in place");
    many = registrar(f, dsock, 1500, false);
    assert_int_equal(waitpid(many, &st, 0), many);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        sl_qmp_close(q);
        fail_msg("the daemon stopped taking registrations (status %#x)", st);
    }
    quit_clean(q, &r, lq);
}

/*
 * A back-end that registers its view of guest RAM before QEMU has is not
 * taken for QEMU: the restore loads the device state and the guest
 * runs on.  Found by review: the back-end's address was checked
 * against QEMU's, and the restore refused.
 */
static void test_a_backend_registered_before_qemu_is_not_taken_for_qemu(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL, *dsock = NULL;
    int lq, st;
    pid_t early;
    sl_qmp *q;
    child r;

    need(f);
    boot_and_save(f);
    serial = path_in(f, "restore.serial");
    qmp = path_in(f, "restore.qmp");
    dsock = path_in(f, "daemon.sock");
    lq = listen_at(qmp);
    early = registrar(f, dsock, 1, true);
    r = start_restore(f, (const char *[]){ "--paused", "--threads", "1", "--socket", dsock,
                                           NULL }, serial, qmp, NULL);
    q = accept_qmp(lq, &r);
    wait_paused(q);
    assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
    wait_walker(serial, f->saved_pass + 1, 0);
    kill(early, SIGKILL);
    assert_int_equal(waitpid(early, &st, 0), early);
    assert_true(WIFSIGNALED(st)); /* it had registered and was waiting */
    quit_clean(q, &r, lq);
}

/*
 * qemu-restore killed outright: the QEMU it started and its daemon go
 * with it (no guest left running without its supervisor).
 */
static void test_killed_qemu_restore_takes_qemu_with_it(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL;
    int lq, qpfd;
    pid_t qemu;
    sl_qmp *q;
    child r;

    need(f);
    boot_and_save(f);
    serial = path_in(f, "restore.serial");
    qmp = path_in(f, "restore.qmp");
    lq = listen_at(qmp);
    g_setenv("TMPDIR", f->dir, true); /* a killed qemu-restore leaves its directory there */
    r = start_restore(f, (const char *[]){ "--threads", "0", NULL }, serial, qmp, NULL);
    g_unsetenv("TMPDIR");
    q = accept_qmp(lq, &r);
    qemu = sl_qmp_peer_pid(q);
    qpfd = (int)syscall(SYS_pidfd_open, qemu, 0);
    assert_true(qemu > 0 && qpfd >= 0);
    assert_int_equal(kill(r.pid, SIGKILL), 0);
    reap(&r, 60000);
    sl_qmp_close(q);
    if (end_if_alive(qemu, qpfd, 10000)) {
        fail_msg("QEMU ran on after qemu-restore was killed");
    }
    close(qpfd);
    close(lq);
    child_free(&r);
}



/*
 * qemu-restore sent SIGTERM or SIGINT (to itself alone, not its process
 * group) while the guest runs mid-restore: it ends QEMU and the daemon,
 * exits with 128 + the signal saying it was interrupted, and leaves no
 * socket, blocks file or temporary directory behind.
 */
static void test_signalled_qemu_restore_ends_qemu_and_leaves_no_files(void **state)
{
    fixture *f = *state;
    const int sigs[] = { SIGTERM, SIGINT };

    need(f);
    boot_and_save(f);
    for (unsigned i = 0; i < G_N_ELEMENTS(sigs); i++) {
        g_autofree char *tag = g_strdup_printf("sig%d", sigs[i]);
        g_autofree char *serial = path_in(f, tag), *qmp = g_strconcat(serial, ".qmp", NULL);
        g_autofree char *dsock = g_strconcat(serial, ".sock", NULL);
        g_autofree char *tmp = g_strconcat(serial, ".tmp", NULL);
        g_autofree char *blocks = g_strconcat(dsock, ".blocks", NULL), *errs = NULL;
        int lq = listen_at(qmp), qpfd, st;
        pid_t qemu;
        sl_qmp *q;
        child r;

        assert_int_equal(g_mkdir_with_parents(tmp, 0700), 0);
        g_setenv("TMPDIR", tmp, true); /* where qemu-restore makes its private directory */
        r = start_restore(f, (const char *[]){ "--threads", "0", "--socket", dsock, NULL },
                          serial, qmp, NULL);
        g_unsetenv("TMPDIR");
        q = accept_qmp(lq, &r);
        qemu = sl_qmp_peer_pid(q);
        qpfd = (int)syscall(SYS_pidfd_open, qemu, 0);
        assert_true(qemu > 0 && qpfd >= 0);
        assert_true(access(blocks, F_OK) == 0); /* the daemon runs: there is something to leave */
        assert_int_equal(kill(r.pid, sigs[i]), 0);
        st = reap(&r, 60000);
        errs = slurp(r.err);
        sl_qmp_close(q);
        if (end_if_alive(qemu, qpfd, 10000)) {
            fail_msg("QEMU ran on after qemu-restore got signal %d", sigs[i]);
        }
        close(qpfd);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 128 + sigs[i] || !strstr(errs, "interrupted by")) {
            fail_msg("signal %d: wanted exit status %d and 'interrupted by', got wait status "
                     "%#x and:\n%s", sigs[i], 128 + sigs[i], st, errs);
        }
        assert_int_equal(access(dsock, F_OK), -1);
        assert_int_equal(access(blocks, F_OK), -1);
        assert_int_equal(sl_test_dir_entries(tmp), 0);
        close(lq);
        child_free(&r);
    }
}

/*
 * A second qemu-restore naming the RAM file of a restore that runs is
 * refused by name before it touches the file: the running guest's file is
 * still the same file (not replaced by an empty one), and it runs on clean.
 */
static void test_second_restore_refuses_the_ram_file_of_a_running_one(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL, *out = NULL, *errs = NULL;
    g_autofree char *serial2 = NULL, *qmp2 = NULL, *log = NULL;
    struct stat before, after;
    int lq, st;
    sl_qmp *q;
    child r, r2;

    need(f);
    boot_and_save(f);
    serial = path_in(f, "restore.serial");
    qmp = path_in(f, "restore.qmp");
    serial2 = path_in(f, "second.serial");
    qmp2 = path_in(f, "second.qmp");
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ "--paused", "--threads", "1", NULL }, serial, qmp,
                      NULL);
    q = accept_qmp(lq, &r);
    wait_paused(q);
    assert_int_equal(stat(f->memfile, &before), 0);
    r2 = start_restore(f, (const char *[]){ "--threads", "0", NULL }, serial2, qmp2, NULL);
    st = reap(&r2, 60000);
    errs = slurp(r2.err);
    if (g_spawn_check_wait_status(st, NULL) || !strstr(errs, "another restore that is still running")) {
        fail_msg("the second restore was not refused by name (status %#x):\n%s", st, errs);
    }
    assert_int_equal(stat(f->memfile, &after), 0);
    assert_true(before.st_ino == after.st_ino && before.st_dev == after.st_dev);
    assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
    wait_walker(serial, f->saved_pass + 2, 0);
    g_clear_pointer(&errs, g_free);
    wait_restored(&r);
    st = quit_and_reap(q, &r, &out, &errs);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("the first restore failed: %s", errs);
    }
    log = slurp(serial);
    assert_null(strstr(log, "ERR"));
    close(lq);
    child_free(&r);
    child_free(&r2);
}

/*
 * A stored page of the snapshot is corrupted after the save: the restore
 * fails, QEMU is ended, and qemu-restore's error names the checksum
 * mismatch, whether the loader met the page while QEMU was loading its
 * device state (QEMU then ends before QMP can say why) or later.
 */
static void test_corrupt_page_fails_the_restore_naming_the_checksum(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL, *errs = NULL, *log = NULL;
    g_autoptr(GError) err = NULL;
    sl_snapshot *s;
    uint64_t p = 0x100000 / 4096, off;
    uint8_t byte;
    int fd, lq, st;
    child r;

    need(f);
    boot_and_save(f);
    s = sl_snapshot_open(f->snap, &err);
    assert_non_null(s);
    while (p < s->blocks[0].npages && !sl_snapshot_page_present(s, 0, p)) {
        p++;
    }
    assert_true(p < s->blocks[0].npages);
    off = s->blocks[0].pages_offset + p * s->blocks[0].page_size + 100;
    sl_snapshot_close(s);
    fd = open(f->snap, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0 && pread(fd, &byte, 1, (off_t)off) == 1);
    byte ^= 0x10;
    assert_true(pwrite(fd, &byte, 1, (off_t)off) == 1);
    close(fd);
    serial = path_in(f, "restore.serial");
    qmp = path_in(f, "restore.qmp");
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ "--threads", "1", NULL }, serial, qmp, NULL);
    st = reap(&r, 60000);
    errs = slurp(r.err);
    if (g_spawn_check_wait_status(st, NULL) || !strstr(errs, "checksum mismatch")) {
        fail_msg("wanted a failure naming the checksum mismatch (status %#x):\n%s", st, errs);
    }
    log = slurp(serial);
    assert_null(strstr(log, "ERR"));
    close(lq);
    child_free(&r);
}

/*
 * The guest's RAM file is removed and a file of the same size put in its
 * place while QEMU runs (QEMU still maps the old one): qemu-save refuses by
 * name to save that file as the guest's memory, and writes no snapshot.
 */
static void test_qemu_save_refuses_a_ram_file_qemu_no_longer_maps(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = path_in(f, "boot.serial"), *qmp = path_in(f, "boot.qmp");
    g_autofree char *saveqmp = path_in(f, "save.qmp"), *out = path_in(f, "other.sl");
    g_autofree char *errs = NULL;
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    const char *save[] = { g_getenv("SNAPLOAD_BIN"), "qemu-save", "--qmp", saveqmp, "-o", out,
                           NULL };
    g_autoptr(GError) err = NULL;
    int lfd = listen_at(qmp), st = -1, fd;
    child qemu;
    sl_qmp *q;

    need(f);
    qemu_args(argv, f, serial, qmp);
    add2(argv, "-qmp", g_strdup_printf("unix:%s,server=on,wait=off", saveqmp));
    qemu = spawn(f, argv, NULL);
    q = accept_qmp(lfd, &qemu);
    wait_walker(serial, 1, 1);
    assert_int_equal(unlink(f->memfile), 0);
    fd = open(f->memfile, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0 && ftruncate(fd, (off_t)RAM_MB << 20) == 0);
    close(fd);
    if (!g_spawn_sync(NULL, (char **)save, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
                      &errs, &st, &err)) {
        fail_msg("running qemu-save: %s", err->message);
    }
    if (g_spawn_check_wait_status(st, NULL) || !strstr(errs, "is not the file QEMU")) {
        fail_msg("wanted qemu-save refused naming the replaced file (status %#x):\n%s", st, errs);
    }
    assert_int_equal(access(out, F_OK), -1);
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    reap(&qemu, 30000);
    close(lfd);
}

/* Pages of block ram0 that differ between snapshots @a and @b, outside the
 * legacy range QEMU rewrites itself while it loads the device state. */
static uint64_t ram0_pages_differing(const char *a, const char *b)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *sa = sl_snapshot_open(a, &err), *sb = sa ? sl_snapshot_open(b, &err) : NULL;
    g_autofree uint8_t *pa = g_malloc(4096), *pb = g_malloc(4096);
    int ba, bb;
    sl_block_info ia;
    uint64_t differ = 0;

    if (!sb) {
        fail_msg("opening the snapshots: %s", err->message);
    }
    ba = sl_snapshot_find_block(sa, "ram0");
    bb = sl_snapshot_find_block(sb, "ram0");
    assert_true(ba >= 0 && bb >= 0 && sl_snapshot_block(sa, (unsigned)ba, &ia));
    for (uint64_t i = 0; i < ia.length / 4096; i++) {
        if (i * 4096 >= 0xa0000 && i * 4096 < 0x100000) {
            continue;
        }
        assert_int_equal(sl_snapshot_read_pages(sa, (unsigned)ba, i, 1, pa, true), 0);
        assert_int_equal(sl_snapshot_read_pages(sb, (unsigned)bb, i, 1, pb, true), 0);
        differ += memcmp(pa, pb, 4096) != 0;
    }
    sl_snapshot_close(sa);
    sl_snapshot_close(sb);
    return differ;
}

/*
 * A save while the lazy restore still runs (the guest paused after its
 * device state, no loader: almost every page missing) reads the RAM file
 * through a view registered with the restore's daemon, found in QEMU's
 * environment: each missing page is served from the snapshot, so the save
 * holds every page of the snapshot it was restored from (the guest never
 * ran), none as the zeros a plain read of the file's holes gives.  Once the
 * restore has completed and the guest ran, a save works as always.
 */
static void test_qemu_save_during_a_restore_stores_every_page(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL, *out = NULL, *errs = NULL, *errs2 = NULL;
    g_autofree char *status = NULL, *dsock = NULL;
    uint64_t before, total;
    int lq, st;
    sl_qmp *q;
    child r;

    need(f);
    boot_and_save(f);
    serial = path_in(f, "restore.serial");
    qmp = path_in(f, "restore.qmp");
    out = path_in(f, "again.sl");
    lq = listen_at(qmp);
    dsock = path_in(f, "daemon.sock");
    r = start_restore(f, (const char *[]){ "--paused", "--threads", "0", "--socket", dsock,
                                           NULL }, serial, qmp, NULL);
    q = accept_qmp(lq, &r);
    wait_paused(q);
    before = pages_mapped(sl_qmp_peer_pid(q), f->memfile, &total);
    st = qemu_save_restored(f, out, NULL, NULL, &errs);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("qemu-save during the restore (%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                 " pages mapped in QEMU): status %d, stderr:\n%s", before, total, st, errs);
    }
    assert_true(before < total / 2); /* the save did come while pages were missing */
    assert_int_equal(ram0_pages_differing(f->snap, out), 0);
    status = sl_qmp_status(q, NULL);
    assert_string_equal(status, "postmigrate"); /* still stopped, after its device state */
    run_peer_pages(f, dsock, "all"); /* a second process touches every page... */
    wait_for_text(r.out, "every page in place"); /* ...and the restore reports completion */
    assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
    wait_walker(serial, f->saved_pass + 1, 0);
    unlink(out);
    st = qemu_save_restored(f, out, NULL, NULL, &errs2);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("qemu-save after the restore completed failed:\n%s", errs2);
    }
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    reap(&r, 60000);
    close(lq);
    child_free(&r);
}

/* Pages of memory file @file that differ from block ram0 of snapshot @snap. */
static uint64_t file_pages_differing(const char *file, const char *snap)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *s = sl_snapshot_open(snap, &err);
    g_autofree uint8_t *pf = g_malloc(4096), *ps = g_malloc(4096);
    int fd = open(file, O_RDONLY | O_CLOEXEC), b;
    sl_block_info bi;
    uint64_t differ = 0;

    if (!s || fd < 0) {
        fail_msg("opening %s and %s: %s", snap, file, s ? g_strerror(errno) : err->message);
    }
    b = sl_snapshot_find_block(s, "ram0");
    assert_true(b >= 0 && sl_snapshot_block(s, (unsigned)b, &bi));
    for (uint64_t i = 0; i < bi.length / 4096; i++) {
        assert_int_equal(pread(fd, pf, 4096, (off_t)(i * 4096)), 4096);
        assert_int_equal(sl_snapshot_read_pages(s, (unsigned)b, i, 1, ps, true), 0);
        differ += memcmp(pf, ps, 4096) != 0;
    }
    close(fd);
    sl_snapshot_close(s);
    return differ;
}

/* Pages that snapshot @snap's own file stores (not its parents'). */
static uint64_t stored_pages(const char *snap)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *s = sl_snapshot_open(snap, &err);
    uint64_t n = 0;

    if (!s) {
        fail_msg("opening %s: %s", snap, err->message);
    }
    for (unsigned b = 0; b < sl_snapshot_n_blocks(s); b++) {
        n += sl_snapshot_stored_pages(s, b);
    }
    sl_snapshot_close(s);
    return n;
}

/* `qemu-save --parent` of the restored guest into @name (its path
 * returned), which must (@listed) or must not have read only the pages
 * the restore's daemon lists as written. */
static char *save_child(fixture *f, const char *name, bool listed)
{
    g_autofree char *errs = NULL;
    char *kid = path_in(f, name);
    int st = qemu_save_restored(f, kid, f->snap, NULL, &errs);

    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("qemu-save --parent: status %d, stderr:\n%s", st, errs);
    }
    if (listed != (strstr(errs, "reading only the") != NULL)) {
        fail_msg("qemu-save %s the daemon's list of written pages:\n%s",
                 listed ? "did not use" : "used", errs);
    }
    return kid;
}

/* Once the restore has placed every page: child @kid stores exactly the
 * pages of the RAM file that differ from the parent, and with its parent
 * holds the file byte for byte.  Returns the pages it stores. */
static uint64_t check_child(fixture *f, const child *r, const char *kid)
{
    uint64_t stored, differ;

    wait_for_text(r->out, "every page in place");
    stored = stored_pages(kid);
    differ = file_pages_differing(f->memfile, f->snap);
    print_message("# %s: %" G_GUINT64_FORMAT " of %u pages stored, %" G_GUINT64_FORMAT
                  " differ from the parent\n", kid, stored, RAM_MB * 256, differ);
    assert_int_equal(stored, differ);
    assert_int_equal(file_pages_differing(f->memfile, kid), 0);
    return stored;
}

/* A full `qemu-save` while the tracked restore still runs reads every page
 * through a view it registers with the daemon, tracked (and reported), so
 * that the next child's save still gets the list of written pages. */
static void full_save_keeps_the_list_going(fixture *f)
{
    g_autofree char *full = path_in(f, "full.sl"), *errs = NULL;
    int st = qemu_save_restored(f, full, NULL, NULL, &errs);

    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("a full qemu-save during the tracked restore: status %d:\n%s", st, errs);
    }
    unlink(full);
}

/*
 * Restores the walker lazily with no loaders and saves two children of
 * the restored snapshot with `qemu-save --parent`: one before the guest
 * runs (it stores only what QEMU's device-state load rewrote: at most 1 %
 * of the pages), one after the walker ran a moment, rewriting the pages it
 * walked.  Untracked, the first save reads all RAM through a view
 * registered with the daemon (served pages) and completes the restore;
 * @tracked (`--track-writes`), both come while pages are still missing and
 * each reads only the pages the daemon lists as written (placed, so read
 * plainly); then a second process, registered tracked as a back-end of
 * such a restore is, maps every page, comparing each with the child
 * while the restore places the rest; after it, with the guest
 * running again, a full save must not end the lists: a third child saved
 * after it must use the list and be exact too.  Each child is checked
 * against the complete file (check_child()).  Returns the second child,
 * and the walker's last pass before it in *@pass.
 */
static char *save_child_of_restored(fixture *f, bool tracked, unsigned *pass)
{
    g_autofree char *serial = path_in(f, "restore.serial"), *qmp = path_in(f, "restore.qmp");
    g_autofree char *log = NULL, *unrun = NULL, *dsock = path_in(f, "daemon.sock");
    g_autofree char *again = NULL;
    int lq = listen_at(qmp);
    char *kid;
    sl_qmp *q;
    child r;

    r = start_restore(f, (const char *[]){ "--paused", "--threads", "0", "--socket", dsock,
                                           tracked ? "--track-writes" : NULL, NULL },
                      serial, qmp, NULL);
    q = accept_qmp(lq, &r);
    wait_paused(q);
    unrun = save_child(f, "unrun.sl", tracked);
    if (!tracked) {
        assert_true(check_child(f, &r, unrun) * 100 <= (uint64_t)RAM_MB * 256);
    } else {
        assert_int_equal(stored_pages(unrun), 0); /* it never ran: nothing listed */
    }
    assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
    g_usleep(300000); /* part of a pass, or more: the walker rewrites what it walks */
    kid = save_child(f, "child.sl", tracked);
    log = slurp(serial);
    *pass = last_pass(log);
    if (tracked) { /* a second process maps every page, each compared with the child */
        char *parent = f->snap;
        f->snap = kid;
        run_peer_pages_tracked(f, dsock, "all", true);
        f->snap = parent;
    }
    check_child(f, &r, kid);
    if (tracked) { /* a full save, then a third child that still uses the list */
        assert_true(sl_qmp_ok(q, "cont", NULL, NULL)); /* QEMU saves a running guest only */
        full_save_keeps_the_list_going(f);
        assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
        again = save_child(f, "again.sl", true);
        check_child(f, &r, again);
        unlink(again);
    }
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    reap(&r, 60000);
    close(lq);
    unlink(qmp);
    child_free(&r);
    return kid;
}

/*
 * Restores f->snap with qemu-restore @opts, paused: guest RAM read through
 * qtest equals the snapshot; then the walker runs until pass @pass with no
 * error, and QEMU quits.  qemu-restore's stdout (its JSON with --json);
 * fails with @what in the message if it did not exit cleanly.  The run's
 * files are named after @tag and removed.
 */
static char *restore_compare_run(fixture *f, const char *const *opts, const char *tag,
                                 unsigned pass, const char *what)
{
    g_autofree char *serial = NULL, *qmp = NULL, *qt = NULL, *errs = NULL, *name = NULL;
    char *out = NULL;
    int lq, lt, tfd, st;
    sl_qmp *q;
    child r;

    name = g_strdup_printf("%s.serial", tag);
    serial = path_in(f, name);
    qmp = path_in(f, "run.qmp");
    qt = path_in(f, "run.qtest");
    lq = listen_at(qmp);
    lt = listen_at(qt);
    r = start_restore(f, opts, serial, qmp, qt);
    q = accept_qmp(lq, &r);
    tfd = accept4(lt, NULL, NULL, SOCK_CLOEXEC);
    assert_true(tfd >= 0);
    wait_paused(q);
    assert_int_equal(qtest_compare(f, tfd), 0);
    assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
    wait_walker(serial, pass, 0); /* its own checks, on pages it also writes */
    wait_restored(&r);
    st = quit_and_reap(q, &r, &out, &errs);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("%s: qemu-restore failed: %s", what, errs);
    }
    close(tfd);
    close(lq);
    close(lt);
    unlink(qmp);
    unlink(qt);
    unlink(serial);
    child_free(&r);
    return out;
}

/*
 * Parent @parent of child f->snap moves to a directory of its own: a
 * qemu-restore of the child fails (before QEMU starts) naming the path the
 * child records, and f->parent is set, so that the next restore is given
 * the parent (--parent, which its daemon gets too).
 */
static void move_parent(fixture *f, const char *parent)
{
    g_autofree char *dir = path_in(f, "moved"), *errs = NULL;
    g_autofree char *serial = path_in(f, "refused.serial"), *qmp = path_in(f, "refused.qmp");
    char *moved = g_build_filename(dir, "guest.sl", NULL);
    child r;
    int st;

    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(rename(parent, moved), 0);
    r = start_restore(f, (const char *[]){ "--paused", NULL }, serial, qmp, NULL);
    st = reap(&r, 60000);
    errs = slurp(r.err);
    if (g_spawn_check_wait_status(st, NULL) || !strstr(errs, parent) ||
        !strstr(errs, "No such file or directory")) {
        fail_msg("qemu-restore of a child whose parent moved: status %d, wanted an error "
                 "naming %s:\n%s", st, parent, errs);
    }
    child_free(&r);
    f->parent = moved;
}

/* save_child_of_restored(), then the child is restored: guest RAM equals
 * it before the guest runs, and the walker checks two more passes.  With
 * @moved, its parent moved first (move_parent()): restored with --parent. */
static void check_child_restores_clean(fixture *f, bool tracked, bool moved)
{
    g_autofree char *kid = NULL, *out = NULL;
    char *parent; /* the fixture's: it frees f->snap */
    unsigned pass;

    need(f);
    boot_and_save(f);
    kid = save_child_of_restored(f, tracked, &pass);
    parent = f->snap;
    f->snap = kid; /* restore the child: its pages, the rest from its parent */
    if (moved) {
        move_parent(f, parent);
    }
    out = restore_compare_run(f, (const char *[]){ "--paused", NULL }, "child", pass + 2,
                              "restoring the child");
    f->snap = parent;
    g_clear_pointer(&f->parent, g_free);
}

/* Also: the parent moved before the child's restore, which is given it (--parent). */
static void test_qemu_save_of_a_child_stores_what_changed_and_restores_clean_with_a_moved_parent(
    void **state)
{
    check_child_restores_clean(*state, false, true);
}

static void test_qemu_save_of_a_child_reads_only_tracked_writes_and_is_exact(void **state)
{
    check_child_restores_clean(*state, true, false);
}

/* Whether the RAM file @memfile holds, byte for byte, what block ram0 of
 * @snap (with ancestors @ancestors, --parent options) extracts to. */
static bool file_equals_extract(fixture *f, const char *memfile, const char *snap,
                                const char *const *ancestors)
{
    g_autofree char *raw = path_in(f, "extract.raw"), *out = NULL, *err = NULL;
    g_autofree char *a = NULL, *b = NULL;
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    gsize na = 0, nb = 0;
    bool same;

    g_ptr_array_add(argv, "extract");
    g_ptr_array_add(argv, (char *)snap);
    for (const char *const *p = ancestors; *p; p++) {
        g_ptr_array_add(argv, "--parent");
        g_ptr_array_add(argv, (char *)*p);
    }
    g_ptr_array_add(argv, "-o");
    g_ptr_array_add(argv, raw);
    g_ptr_array_add(argv, NULL);
    if (sl_test_run_cli((const char *const *)argv->pdata, &out, &err) != 0) {
        fail_msg("snapload extract %s: %s", snap, err);
    }
    assert_true(g_file_get_contents(raw, &a, &na, NULL) &&
                g_file_get_contents(memfile, &b, &nb, NULL));
    same = na == nb && memcmp(a, b, na) == 0;
    unlink(raw);
    return same;
}

/*
 * The parent of a child moves; the child is restored (--parent) and the
 * guest saved again as a grandchild: `qemu-save --parent CHILD` fails
 * naming the path CHILD records for its parent, and with `--ancestor
 * MOVED` writes a grandchild whose chain holds the paused guest's RAM
 * file byte for byte.
 */
static void test_qemu_save_of_a_grandchild_takes_the_moved_ancestor(void **state)
{
    fixture *f = *state;
    g_autofree char *kid = NULL, *grand = NULL, *errs = NULL, *errs2 = NULL, *out = NULL;
    g_autofree char *serial = NULL, *qmp = NULL, *errs3 = NULL;
    char *full; /* the fixture's: it frees f->snap */
    unsigned pass;
    int lq, st;
    sl_qmp *q;
    child r;

    need(f);
    boot_and_save(f);
    kid = save_child_of_restored(f, false, &pass);
    full = f->snap;
    f->snap = kid;
    move_parent(f, full); /* f->parent: where it went */
    serial = path_in(f, "grand.serial");
    qmp = path_in(f, "grand.qmp");
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ NULL }, serial, qmp, NULL);
    q = accept_qmp(lq, &r);
    wait_walker(serial, pass + 1, 0);
    grand = path_in(f, "grand.sl");
    st = qemu_save_restored(f, grand, kid, NULL, &errs);
    if (g_spawn_check_wait_status(st, NULL) || !strstr(errs, full)) {
        fail_msg("qemu-save of a grandchild without --ancestor: status %d, wanted an error "
                 "naming %s:\n%s", st, full, errs);
    }
    st = qemu_save_restored(f, grand, kid, f->parent, &errs2);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("qemu-save --parent CHILD --ancestor MOVED: status %d:\n%s", st, errs2);
    }
    wait_for_text(r.out, "every page in place"); /* no hole left in the RAM file */
    assert_true(file_equals_extract(f, f->memfile, grand,
                                    (const char *[]){ "", f->parent, NULL }));
    st = quit_and_reap(q, &r, &out, &errs3);
    assert_true(g_spawn_check_wait_status(st, NULL));
    close(lq);
    child_free(&r);
    unlink(grand);
    f->snap = full;
    g_clear_pointer(&f->parent, g_free);
}

#define RESTARTS 20

/* One restart over the reused RAM file: memory equals the snapshot before
 * cont, the walker runs a clean pass; returns qemu-restore's JSON. */
static JsonObject *restart_once(fixture *f, unsigned i, const char *extra)
{
    g_autofree char *tag = g_strdup_printf("restart-%u", i), *what = NULL, *out = NULL;

    what = g_strdup_printf("restart %u (--reuse-ram)", i);
    out = restore_compare_run(f, (const char *[]){ "--paused", "--json", "--reuse-ram", extra,
                                                   NULL }, tag, f->saved_pass + 1, what);
    return parse_json(out);
}

#define TAMPERED 10 /* the restart before which another process writes the RAM file */

/*
 * Another process changes one page of the RAM file between runs, through
 * a mapping of its own.  On shmem that moves the file's mtime, so the list
 * no longer matches; on hugetlbfs it leaves no trace, and the restart is
 * told to check every page (--check-all).  Returns that option, or NULL.
 */
static const char *tamper_with_ram_file(fixture *f)
{
    int fd = open(f->memfile, O_RDWR | O_CLOEXEC);
    uint8_t *p;

    assert_true(fd >= 0);
    p = mmap(NULL, 4u << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 8 << 20);
    assert_true(p != MAP_FAILED);
    memset(p + 4096, 0xa5, 4096);
    munmap(p, 4u << 20);
    close(fd);
    return strncmp(f->memfile, "/dev/shm/", 9) == 0 ? NULL : "--check-all";
}

#define PUNCHED 15 /* the restart before which another process punches a hole in it */

/*
 * Another process punches a 2 MiB hole into the RAM file between runs.
 * On hugetlbfs that moves neither mtime nor ctime: only the file's
 * allocated blocks tell, and the list must be refused for them (or the
 * restart would keep the hole, and the guest would read zeros there).
 */
static void punch_ram_file(fixture *f)
{
    int fd = open(f->memfile, O_RDWR | O_CLOEXEC);

    assert_true(fd >= 0);
    assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 16 << 20, 2 << 20),
                     0);
    close(fd);
}

#define VERIFIED 5 /* the restart that also runs --verify: its view must end no list */

/* What happens to the RAM file before restart @i: the extra option it needs, or NULL. */
static const char *between_runs(fixture *f, unsigned i)
{
    if (i == VERIFIED) {
        return "--verify";
    }
    if (i == TAMPERED) {
        return tamper_with_ram_file(f);
    }
    if (i == PUNCHED) {
        punch_ram_file(f);
    }
    return NULL;
}

/*
 * A fuzzing loop's restarts: QEMU restored RESTARTS times in a row from
 * the same snapshot over the RAM file the previous run left (the walker
 * wrote it each time): every restart's memory equals the snapshot before
 * the guest runs and the walker's pass is clean.  From the second on, the
 * previous run's list of written pages is used: only those are checked,
 * every other page is kept unread (pages_known), so a page the tracking
 * missed would show in the comparison.  Before restart TAMPERED another
 * process writes the file, and before PUNCHED punches a hole in it: its
 * list no longer matches the file, is not used, and that restart checks
 * every page.  Restart VERIFIED also runs --verify, whose own view of the
 * file must not keep the next restart from its list.  Each restart's cost
 * is printed.
 */
static void test_restarts_over_the_reused_ram_file_run_clean(void **state)
{
    fixture *f = *state;

    need(f);
    boot_and_save(f);
    for (unsigned i = 0; i < RESTARTS; i++) {
        g_autoptr(JsonObject) res = NULL;
        JsonObject *rs;
        uint64_t kept, known, pages, placed;
        bool listed;

        res = restart_once(f, i, between_runs(f, i));
        rs = json_object_get_object_member(res, "restore");
        kept = (uint64_t)json_object_get_int_member(rs, "pages_kept");
        known = (uint64_t)json_object_get_int_member(rs, "pages_known");
        pages = (uint64_t)json_object_get_int_member(rs, "pages");
        placed = (uint64_t)(json_object_get_int_member(rs, "pages_by_fault") +
                            json_object_get_int_member(rs, "pages_by_loader"));
        listed = json_object_get_int_member(rs, "blocks_with_written_list") == 1;
        assert_int_equal(json_object_get_int_member(rs, "pages_placed_twice"), 0);
        assert_int_equal(json_object_get_int_member(rs, "checksum_failures"), 0);
        print_message("# restart %u: QEMU started to monitor %.1f ms, device state %.1f ms, "
                      "every page in place %.1f ms; %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                      " pages kept (%" G_GUINT64_FORMAT " unread, from the written list%s), %"
                      G_GUINT64_FORMAT " rewritten\n", i,
                      json_object_get_double_member(res, "qemu_start_ms"),
                      json_object_get_double_member(res, "device_state_ms"),
                      json_object_get_double_member(res, "time_to_complete_ms"), kept, pages,
                      known, listed ? "" : ": none usable", placed - kept);
        assert_true(kept >= known && placed == pages);
        if (i == 0 || i == TAMPERED || i == PUNCHED) {
            assert_false(listed); /* none yet; the file changed since, or --check-all */
            assert_int_equal(known, 0);
        } else if (!listed) {
            fail_msg("restart %u did not use the list the previous run left", i);
        }
    }
}

/* ------------------------- refused before QEMU starts -------------------- */

typedef struct {
    const char *name;
    bool hugetlbfs;       /* backends on the 2 MiB hugetlbfs mount, else /dev/shm */
    unsigned nblocks;
    bool pool_split;      /* each block half the pool plus one page: fits alone, not both */
    uint64_t mb;          /* else: each block this many MiB */
    const char *share;    /* share= option */
    const char *want;     /* what the error must say */
    bool no_devstate;     /* saved without a device-state section */
} refusal;

static const refusal refusals[] = {
    { "pool_cannot_hold_every_backend_together", true, 2, true, 0, "on",
      "free 2M hugepages but", false },
    { "size_not_a_multiple_of_the_hugepage", true, 1, false, 3, "on",
      "is not a multiple of the hugepage size", false },
    { "backend_without_share_on", false, 1, false, 4, "off", "needs share=on", false },
    { "snapshot_without_device_state", false, 1, false, 4, "on", "has no device-state section",
      true },
};

/* qemu-restore refuses each case in @refusals with the documented error,
 * before QEMU or the daemon starts, and leaves no memory file behind. */
static void test_qemu_restore_refuses_bad_backends_before_starting(void **state)
{
    (void)state;
    for (unsigned c = 0; c < G_N_ELEMENTS(refusals); c++) {
        const refusal *x = &refusals[c];
        g_autofree char *dir = sl_test_tmpdir(), *snap = g_build_filename(dir, "s.sl", NULL);
        g_autoptr(GPtrArray) save = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) rest = g_ptr_array_new_with_free_func(g_free);
        const char *mnt = x->hugetlbfs ? hugetlbfs_find_path_for_size(2l << 20) : "/dev/shm";
        uint64_t mb = x->pool_split ? (sl_hugetlb_available(2u << 20) / 2 + 1) * 2 : x->mb;
        g_autofree char *out = NULL, *err = NULL;

        if (x->hugetlbfs) {
            g_autofree char *why = g_strdup("no hugetlbfs mount for 2 MiB pages");
            SL_TEST_NEED("hugepages", mnt != NULL, why);
        }
        g_ptr_array_add(save, g_strdup("save"));
        g_ptr_array_add(rest, g_strdup("qemu-restore"));
        g_ptr_array_add(rest, g_strdup(snap));
        g_ptr_array_add(rest, g_strdup("--"));
        g_ptr_array_add(rest, g_strdup("qemu-system-x86_64"));
        for (unsigned b = 0; b < x->nblocks; b++) {
            g_autofree char *raw = g_strdup_printf("%s/raw%u", dir, b);
            int fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            assert_true(fd >= 0 && ftruncate(fd, (off_t)(mb << 20)) == 0);
            close(fd);
            add2(save, "--raw", g_strdup_printf("%s:ram%u", raw, b));
            add2(rest, "-object", g_strdup_printf("memory-backend-file,id=ram%u,size=%" G_GUINT64_FORMAT
                                                  "M,mem-path=%s/snapload-refuse-%d-%u,share=%s",
                                                  b, mb, mnt, (int)getpid(), b, x->share));
        }
        if (!x->no_devstate) {
            g_autofree char *dev = g_build_filename(dir, "devstate", NULL);
            assert_true(g_file_set_contents(dev, "device state", -1, NULL));
            add2(save, "--device-state", g_strdup(dev));
        }
        add2(save, "-o", g_strdup(snap));
        g_ptr_array_add(save, NULL);
        g_ptr_array_add(rest, NULL);
        assert_int_equal(sl_test_run_cli((const char *const *)save->pdata, &out, &err), 0);
        g_free(out);
        g_free(err);
        int st = sl_test_run_cli((const char *const *)rest->pdata, &out, &err);
        print_message("# %s: %s", x->name, err);
        if (g_spawn_check_wait_status(st, NULL) || !strstr(err, x->want)) {
            fail_msg("%s: wanted an error saying '%s', got status %d: %s", x->name, x->want, st,
                     err);
        }
        for (unsigned b = 0; b < x->nblocks; b++) {
            g_autofree char *mf = g_strdup_printf("%s/snapload-refuse-%d-%u", mnt, (int)getpid(), b);
            if (access(mf, F_OK) == 0) {
                unlink(mf);
                fail_msg("%s: a refused restore left the memory file %s behind", x->name, mf);
            }
        }
        sl_test_rmdir(g_steal_pointer(&dir));
    }
}

#define CASE(fn, k) cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)&kinds[k])

int main(void)
{
    struct CMUnitTest tests[7 * G_N_ELEMENTS(kinds) + 8];
    unsigned n = 0;

    qtest_pick_qemu();
    for (unsigned k = 0; k < G_N_ELEMENTS(kinds); k++) {
        tests[n] = (struct CMUnitTest)CASE(test_lazy_restore_matches_snapshot_and_guest_runs_on, k);
        tests[n++].name = g_strdup_printf("%s/lazy_restore_matches_snapshot_and_guest_runs_on",
                                          kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(test_qemu_save_during_a_restore_stores_every_page, k);
        tests[n++].name = g_strdup_printf("%s/qemu_save_during_a_restore_stores_every_page",
                                          kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(
            test_qemu_save_of_a_child_stores_what_changed_and_restores_clean_with_a_moved_parent,
            k);
        tests[n++].name = g_strdup_printf(
            "%s/qemu_save_of_a_child_stores_what_changed_and_restores_clean_with_a_moved_parent",
            kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(
            test_qemu_save_of_a_child_reads_only_tracked_writes_and_is_exact, k);
        tests[n++].name = g_strdup_printf(
            "%s/qemu_save_of_a_child_reads_only_tracked_writes_and_is_exact", kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(test_restarts_over_the_reused_ram_file_run_clean, k);
        tests[n++].name = g_strdup_printf("%s/restarts_over_the_reused_ram_file_run_clean",
                                          kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(test_second_restore_refuses_the_ram_file_of_a_running_one, k);
        tests[n++].name = g_strdup_printf("%s/second_restore_refuses_the_ram_file_of_a_running_one",
                                          kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(test_daemon_death_ends_qemu_before_any_wrong_page, k);
        tests[n++].name = g_strdup_printf("%s/daemon_death_ends_qemu_before_any_wrong_page",
                                          kinds[k].name);
    }
    tests[n] = (struct CMUnitTest)CASE(test_killed_qemu_restore_takes_qemu_with_it, 0);
    tests[n++].name = g_strdup_printf("%s/killed_qemu_restore_takes_qemu_with_it", kinds[0].name);
    tests[n] = (struct CMUnitTest)CASE(test_qemu_save_refuses_a_ram_file_qemu_no_longer_maps, 0);
    tests[n++].name = g_strdup_printf("%s/qemu_save_refuses_a_ram_file_qemu_no_longer_maps",
                                      kinds[0].name);
    tests[n] = (struct CMUnitTest)CASE(test_qemu_save_of_a_grandchild_takes_the_moved_ancestor, 0);
    tests[n++].name = g_strdup_printf("%s/qemu_save_of_a_grandchild_takes_the_moved_ancestor",
                                      kinds[0].name);
    tests[n] = (struct CMUnitTest)CASE(test_corrupt_page_fails_the_restore_naming_the_checksum, 0);
    tests[n++].name = g_strdup_printf("%s/corrupt_page_fails_the_restore_naming_the_checksum",
                                      kinds[0].name);
    tests[n] = (struct CMUnitTest)CASE(test_registrations_after_completion_never_block_the_daemon,
                                       0);
    tests[n++].name = g_strdup_printf("%s/registrations_after_completion_never_block_the_daemon",
                                      kinds[0].name);
    tests[n] = (struct CMUnitTest)CASE(test_a_backend_registered_before_qemu_is_not_taken_for_qemu,
                                       0);
    tests[n++].name = g_strdup_printf("%s/a_backend_registered_before_qemu_is_not_taken_for_qemu",
                                      kinds[0].name);
    tests[n] = (struct CMUnitTest)CASE(test_signalled_qemu_restore_ends_qemu_and_leaves_no_files, 0);
    tests[n++].name = g_strdup_printf("%s/signalled_qemu_restore_ends_qemu_and_leaves_no_files",
                                      kinds[0].name);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(
        test_qemu_restore_refuses_bad_backends_before_starting);
    qtest_skip_without_qemu(tests, n);
    if (g_getenv("SL_TEST_FILTER")) { /* e.g. "*daemon_death*" while debugging */
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    return _cmocka_run_group_tests("qemu", tests, n, NULL, NULL);
}
