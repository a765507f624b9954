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
 *    never reported reading a wrong (zero) page.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <hugetlbfs.h>
#include "backends/backend.h"
#include "tests/unit/testutil.h"
#include "tools/qmp.h"

#define RAM_MB 128
#define WAIT_MS 180000
#define LEGACY_LO 0xa0000u   /* QEMU itself rewrites parts of [LEGACY_LO, LEGACY_HI) */
#define LEGACY_HI 0x100000u

typedef struct {
    const char *name;
    const char *cap;      /* capability needed, or NULL */
    long hugepage;        /* 0: shmem */
} mem_kind;

static const mem_kind kinds[] = {
    { "shmem", NULL, 0 },
    { "hugetlbfs-2M", "hugepages", 2l << 20 },
};

typedef struct {
    const mem_kind *k;
    char *dir;            /* test directory (snapshot, logs, sockets) */
    char *memfile;        /* guest RAM file, on /dev/shm or hugetlbfs */
    char *snap;
    char *img;            /* a private copy of the walker image */
    bool kvm;
    unsigned saved_pass;  /* last pass the walker finished before the save */
    char *regs;           /* `info registers` of the saved guest */
    GArray *kids;         /* pidfd of every process spawned: teardown ends them */
} fixture;

typedef struct {
    GPid pid;
    char *out, *err;      /* files holding its stdout and stderr, or NULL */
} child;

/* ------------------------------- helpers --------------------------------- */

static char *path_in(const fixture *f, const char *name)
{
    return g_build_filename(f->dir, name, NULL);
}

static int listen_at(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 2), 0);
    return fd;
}

static void add2(GPtrArray *a, const char *opt, char *val)
{
    g_ptr_array_add(a, g_strdup(opt));
    g_ptr_array_add(a, val);
}

/* The guest's QEMU command line (no terminating NULL yet). */
static void qemu_args(GPtrArray *a, const fixture *f, const char *serial, const char *qmp)
{
    g_ptr_array_add(a, g_strdup("qemu-system-x86_64"));
    add2(a, "-accel", g_strdup(f->kvm ? "kvm" : "tcg"));
    add2(a, "-machine", g_strdup("pc,memory-backend=ram0"));
    add2(a, "-m", g_strdup_printf("%d", RAM_MB));
    add2(a, "-display", g_strdup("none"));
    g_ptr_array_add(a, g_strdup("-nodefaults"));
    g_ptr_array_add(a, g_strdup("-no-user-config"));
    /* Without it KVM's vAPIC option ROM is patched during every load. */
    add2(a, "-global", g_strdup("apic-common.vapic=false"));
    add2(a, "-object", g_strdup_printf("memory-backend-file,id=ram0,size=%dM,mem-path=%s,"
                                       "share=on", RAM_MB, f->memfile));
    add2(a, "-drive", g_strdup_printf("format=raw,file=%s,if=ide,file.locking=off", f->img));
    add2(a, "-serial", g_strdup_printf("file:%s", serial));
    add2(a, "-chardev", g_strdup_printf("socket,id=testqmp,path=%s", qmp));
    add2(a, "-mon", g_strdup("chardev=testqmp,mode=control"));
}

/* Starts @argv; with @logs ("name"), its stdout and stderr go to files
 * name.out and name.err in the test directory (files, not pipes: nothing
 * must block a child that writes more than a pipe holds). */
static child spawn(const fixture *f, GPtrArray *argv, const char *logs)
{
    g_autoptr(GError) err = NULL;
    child c = { 0 };
    int out = -1, errfd = -1;

    if (logs) {
        g_autofree char *o = g_strdup_printf("%s.out", logs), *e = g_strdup_printf("%s.err", logs);
        c.out = path_in(f, o);
        c.err = path_in(f, e);
        out = open(c.out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        errfd = open(c.err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(out >= 0 && errfd >= 0);
    }
    g_ptr_array_add(argv, NULL);
    if (!g_spawn_async_with_fds(NULL, (char **)argv->pdata, NULL,
                                G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH, NULL, NULL,
                                &c.pid, -1, out, errfd, &err)) {
        fail_msg("spawning %s: %s", (char *)argv->pdata[0], err->message);
    }
    if (logs) {
        close(out);
        close(errfd);
    }
    int pidfd = (int)syscall(SYS_pidfd_open, c.pid, 0);
    assert_true(pidfd >= 0);
    g_array_append_val(f->kids, pidfd);
    return c;
}

/*
 * Ends and reaps every process the test spawned that still runs (a failed
 * assertion leaves by longjmp): no QEMU outlives its test.  qemu-restore's
 * QEMU and daemon die with it (PR_SET_PDEATHSIG).
 */
static void end_kids(fixture *f)
{
    for (guint i = 0; i < f->kids->len; i++) {
        int pidfd = g_array_index(f->kids, int, i);
        siginfo_t si;
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0); /* ESRCH if gone */
        waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED); /* ECHILD if reaped already */
        close(pidfd);
    }
    g_array_set_size(f->kids, 0);
}

/* Waits (bounded, on a pidfd: no polling loop) for @c to exit; its wait status. */
static int reap(child *c, int ms)
{
    int st = 0, pfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    struct pollfd p = { .fd = pfd, .events = POLLIN };

    if (pfd >= 0) {
        while (poll(&p, 1, ms) < 0 && errno == EINTR) {
        }
        close(pfd);
    }
    if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
        c->pid = 0;
        return st;
    }
    kill(c->pid, SIGKILL);
    waitpid(c->pid, &st, 0);
    c->pid = 0;
    fail_msg("a child did not exit within %d ms", ms);
    return st;
}

static void child_free(child *c)
{
    g_free(c->out);
    g_free(c->err);
}

static char *slurp(const char *path)
{
    char *text = NULL;

    return g_file_get_contents(path, &text, NULL, NULL) ? text : g_strdup("");
}

/* Number of the last "PASS <k>" line in @log, 0 if none. */
static unsigned last_pass(const char *log)
{
    unsigned k = 0;

    for (const char *p = strstr(log, "PASS "); p; p = strstr(p + 1, "PASS ")) {
        if (p == log || p[-1] == '\n') {
            k = (unsigned)g_ascii_strtoull(p + 5, NULL, 0);
        }
    }
    return k;
}

/* Waits until the walker's serial log shows pass @k finished, then @lines
 * more lines; fails on any error line. */
static void wait_walker(const char *serial, unsigned k, unsigned lines)
{
    for (int t = 0; t < WAIT_MS; t += 20) {
        g_autofree char *log = slurp(serial);
        char *p;
        unsigned n = 0;
        if (strstr(log, "ERR")) {
            fail_msg("the walker found an error:\n%s", log);
        }
        if (last_pass(log) >= k) {
            g_autofree char *pat = g_strdup_printf("PASS %u ", k);
            p = strstr(log, pat);
            for (p = p ? strchr(p, '\n') : NULL; p && p[1]; p = strchr(p + 1, '\n')) {
                n++;
            }
            if (n >= lines) {
                return;
            }
        }
        g_usleep(20000);
    }
    g_autofree char *log = slurp(serial);
    fail_msg("the walker did not reach pass %u (+%u lines) in time:\n%s", k, lines, log);
}

static sl_qmp *accept_qmp(int lfd, const child *c)
{
    g_autoptr(GError) err = NULL;
    int pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    sl_qmp *q = sl_qmp_accept(lfd, pidfd, 30000, &err);

    close(pidfd);
    if (!q) {
        fail_msg("QMP: %s", err->message);
    }
    return q;
}

static char *hmp(sl_qmp *q, const char *cmd)
{
    g_autoptr(GError) err = NULL;
    char *out = sl_qmp_hmp(q, cmd, &err);

    if (!out) {
        fail_msg("%s: %s", cmd, err->message);
    }
    return out;
}

/* ------------------------------- fixture --------------------------------- */

static int setup(void **state)
{
    const mem_kind *k = *state;
    fixture *f = g_new0(fixture, 1);
    const char *img = g_getenv("WALKER_IMG");
    g_autofree char *data = NULL;
    gsize len;

    f->k = k;
    f->kids = g_array_new(false, false, sizeof(int));
    f->dir = sl_test_tmpdir();
    f->kvm = access("/dev/kvm", R_OK | W_OK) == 0 && !sl_test_withheld("kvm");
    f->snap = path_in(f, "guest.sl");
    f->img = path_in(f, "walker.img");
    if (!img || !g_file_get_contents(img, &data, &len, NULL) ||
        !g_file_set_contents(f->img, data, (gssize)len, NULL)) {
        fail_msg("WALKER_IMG does not name the walker image (%s)", img ? img : "unset");
    }
    if (k->hugepage) {
        const char *mnt = hugetlbfs_find_path_for_size(k->hugepage);
        f->memfile = mnt ? g_strdup_printf("%s/snapload-qtest-%d", mnt, (int)getpid()) : NULL;
    } else {
        f->memfile = g_strdup_printf("/dev/shm/snapload-qtest-%d", (int)getpid());
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    end_kids(f);
    g_array_free(f->kids, true);
    if (f->memfile) {
        unlink(f->memfile);
    }
    g_free(f->memfile);
    g_free(f->snap);
    g_free(f->img);
    g_free(f->regs);
    sl_test_rmdir(f->dir);
    *state = (void *)f->k;
    g_free(f);
    return 0;
}

static void need(fixture *f)
{
    g_autofree char *why = NULL;
    bool have = sl_test_have_uffd(&why);

    SL_TEST_NEED("uffd", have, why ? why : "");
    if (sl_test_required("kvm") && !f->kvm) {
        fail_msg("capability 'kvm' is required here but /dev/kvm is not usable");
    }
    if (f->k->cap) {
        g_autoptr(GError) err = NULL;
        bool ok = f->memfile && sl_hugetlb_check((uint64_t)f->k->hugepage,
                                                 ((uint64_t)RAM_MB << 20) / (uint64_t)f->k->hugepage,
                                                 &err);
        SL_TEST_NEED(f->k->cap, ok, err ? err->message : "no hugetlbfs mount for 2 MiB pages");
    }
}

/* --------------------------------- phases -------------------------------- */

/* Boots the walker, lets it finish two passes and saves it mid-pass. */
static void boot_and_save(fixture *f)
{
    g_autofree char *serial = path_in(f, "boot.serial"), *qmp = path_in(f, "boot.qmp");
    g_autofree char *saveqmp = path_in(f, "save.qmp"), *log = NULL;
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    const char *save[] = { g_getenv("SNAPLOAD_BIN"), "qemu-save", "--qmp", saveqmp, "-o", f->snap,
                           NULL };
    g_autoptr(GError) err = NULL;
    int lfd = listen_at(qmp), st = -1;
    child qemu;
    sl_qmp *q;

    qemu_args(argv, f, serial, qmp);
    add2(argv, "-qmp", g_strdup_printf("unix:%s,server=on,wait=off", saveqmp));
    qemu = spawn(f, argv, NULL);
    q = accept_qmp(lfd, &qemu);
    wait_walker(serial, 2, 1);
    if (!g_spawn_sync(NULL, (char **)save, NULL, 0, NULL, NULL, NULL, NULL, &st, &err) ||
        !g_spawn_check_wait_status(st, NULL)) {
        fail_msg("snapload qemu-save failed (%s)", err ? err->message : "see its stderr");
    }
    f->regs = hmp(q, "info registers");
    log = slurp(serial);
    f->saved_pass = last_pass(log);
    assert_null(strstr(log, "ERR"));
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    reap(&qemu, 30000);
    close(lfd);
}

/* `snapload qemu-restore` of the saved guest, with more options in @opts. */
static child start_restore(const fixture *f, const char *const *opts, const char *serial,
                           const char *qmp, const char *qtest)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);

    g_ptr_array_add(argv, g_strdup(g_getenv("SNAPLOAD_BIN")));
    g_ptr_array_add(argv, g_strdup("qemu-restore"));
    g_ptr_array_add(argv, g_strdup(f->snap));
    for (const char *const *o = opts; *o; o++) {
        g_ptr_array_add(argv, g_strdup(*o));
    }
    g_ptr_array_add(argv, g_strdup("--"));
    qemu_args(argv, f, serial, qmp);
    add2(argv, "-qmp", g_strdup_printf("unix:%s/restore-save.qmp,server=on,wait=off", f->dir));
    if (qtest) {
        add2(argv, "-qtest", g_strdup_printf("unix:%s", qtest));
        add2(argv, "-qtest-log", g_strdup("/dev/null")); /* the default is stderr */
    }
    return spawn(f, argv, "restore");
}

/*
 * Waits until the incoming device-state load has finished.  The load may
 * end before this monitor connection exists, so an event could be missed:
 * the test asks for the run state instead (bounded; tests only).
 */
static void wait_paused(sl_qmp *q)
{
    for (int t = 0; t < 30000; t += 5) {
        g_autoptr(GError) err = NULL;
        g_autofree char *st = sl_qmp_status(q, &err);
        if (!st) {
            fail_msg("query-status: %s", err->message);
        }
        if (!strcmp(st, "paused")) {
            return;
        }
        g_usleep(5000);
    }
    fail_msg("the VM did not finish loading its device state");
}

/* One qtest command and its "OK ..." answer (caller frees). */
static char *qtest_cmd(int fd, GString *in, const char *cmd)
{
    char buf[65536];

    assert_int_equal(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
    for (;;) {
        char *nl = memchr(in->str, '\n', in->len);
        if (nl) {
            char *line = g_strndup(in->str, (gsize)(nl - in->str));
            g_string_erase(in, 0, nl - in->str + 1);
            if (g_str_has_prefix(line, "IRQ")) {
                g_free(line);
                continue;
            }
            if (!g_str_has_prefix(line, "OK")) {
                fail_msg("qtest answered '%s' to %s", line, cmd);
            }
            return line;
        }
        ssize_t n = read(fd, buf, sizeof(buf));
        assert_true(n > 0);
        g_string_append_len(in, buf, n);
    }
}

/* Reads guest RAM through QEMU's qtest protocol and compares it with the
 * snapshot; returns the number of differing pages. */
static uint64_t qtest_compare(const fixture *f, int fd)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *snap = sl_snapshot_open(f->snap, &err);
    g_autoptr(GString) in = g_string_new(NULL);
    g_autofree uint8_t *want = g_malloc(65536);
    uint64_t differ = 0, size = (uint64_t)RAM_MB << 20;

    assert_non_null(snap);
    for (uint64_t a = 0; a < size; a += 65536) {
        g_autofree char *cmd = g_strdup_printf("b64read 0x%" G_GINT64_MODIFIER "x 0x10000\n", a);
        g_autofree char *line = NULL;
        g_autofree guchar *got = NULL;
        gsize len;
        if (a >= LEGACY_LO && a < LEGACY_HI) {
            continue;
        }
        line = qtest_cmd(fd, in, cmd);
        got = g_base64_decode(line + 3, &len);
        assert_int_equal(len, 65536);
        assert_int_equal(sl_snapshot_read_pages(snap, 0, a / 4096, 16, want, true), 0);
        for (unsigned p = 0; p < 65536; p += 4096) {
            differ += memcmp(want + p, got + p, 4096) != 0;
        }
    }
    sl_snapshot_close(snap);
    return differ;
}

/* The vhost-user stand-in: maps the RAM file through the preload client. */
static void run_peer_pages(const fixture *f, const char *dsock, const char *pages)
{
    g_autofree char *pre = g_getenv("SNAPLOAD_PRELOAD_LIB") ? g_strdup(g_getenv("SNAPLOAD_PRELOAD_LIB")) : NULL;
    g_autofree char *blocks = g_strdup_printf("ram0=%s", f->memfile);
    const char *peer = g_getenv("SNAPLOAD_PEER");
    const char *argv[] = { peer, f->memfile, f->snap, "ram0", pages, "7", NULL };
    g_auto(GStrv) env = g_get_environ();
    g_autofree char *out = NULL, *errs = NULL;
    g_autoptr(GError) err = NULL;
    int st = -1;

    env = g_environ_setenv(env, "LD_PRELOAD", pre, true);
    env = g_environ_setenv(env, "SNAPLOAD_SOCKET", dsock, true);
    env = g_environ_setenv(env, "SNAPLOAD_BLOCKS", blocks, true);
    env = g_environ_setenv(env, "SNAPLOAD_EXE", peer, true);
    if (!g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, &out, &errs, &st, &err)) {
        fail_msg("peer: %s", err->message);
    }
    print_message("# %s", out);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("the second process saw wrong bytes: %s%s", out, errs);
    }
}

/* The second process reads 3000 pages at random. */
static void run_peer(const fixture *f, const char *dsock)
{
    run_peer_pages(f, dsock, "3000");
}

static JsonObject *parse_json(const char *text)
{
    g_autoptr(JsonParser) p = json_parser_new();

    if (!json_parser_load_from_data(p, text, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        fail_msg("qemu-restore printed no JSON object: '%s'", text);
    }
    return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

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
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    st = reap(&r, 60000);
    out = slurp(r.out);
    errs = slurp(r.err);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("qemu-restore failed: %s", errs);
    }
    res = parse_json(out);
    rs = json_object_get_object_member(res, "restore");
    assert_non_null(rs);
    assert_int_equal(json_object_get_int_member(rs, "pages_placed_twice"), 0);
    assert_int_equal(json_object_get_int_member(rs, "pages_never_placed"), 0);
    assert_int_equal(json_object_get_int_member(rs, "checksum_failures"), 0);
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
 * Pages of the mapping of @path in process @pid that are in its page
 * tables (/proc/PID/pagemap); *@total gets the mapping's pages.  With no
 * loaders, a guest page is placed only when something faults on it, which
 * maps it in the faulting view: a page not present in QEMU was never placed.
 */
static uint64_t pages_mapped(pid_t pid, const char *path, uint64_t *total)
{
    g_autofree char *maps = g_strdup_printf("/proc/%d/maps", (int)pid), *text = NULL;
    g_autofree char *pm = g_strdup_printf("/proc/%d/pagemap", (int)pid);
    g_auto(GStrv) lines = NULL;
    uint64_t start = 0, end = 0, present = 0;
    g_autofree uint64_t *e = NULL;
    int fd;

    assert_true(g_file_get_contents(maps, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (unsigned i = 0; lines[i] && !end; i++) {
        const char *p = strchr(lines[i], '/');
        if (p && !strcmp(p, path)) {
            assert_int_equal(sscanf(lines[i], "%" SCNx64 "-%" SCNx64, &start, &end), 2);
        }
    }
    if (!end) {
        fail_msg("QEMU (pid %d) does not map %s", (int)pid, path);
    }
    *total = (end - start) / 4096;
    e = g_new(uint64_t, *total);
    fd = open(pm, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, e, *total * 8, (off_t)(start / 4096 * 8)), (ssize_t)(*total * 8));
    close(fd);
    for (uint64_t i = 0; i < *total; i++) {
        present += e[i] >> 63;
    }
    return present;
}

/* Waits (bounded) until QEMU has more than @n pages of guest RAM mapped. */
static void wait_guest_touches(pid_t qemu, const char *memfile, uint64_t n)
{
    uint64_t total;

    for (int t = 0; t < WAIT_MS; t++) {
        if (pages_mapped(qemu, memfile, &total) > n) {
            return;
        }
        g_usleep(1000); /* the test polls; stopping soon after the first touch matters */
    }
    fail_msg("the guest did not touch its RAM after cont");
}

/* Ends @pid (QEMU) if it still runs, and says so: no guest may outlive its test. */
static bool end_if_alive(pid_t pid, int pidfd, int ms)
{
    struct pollfd p = { .fd = pidfd, .events = POLLIN };

    while (poll(&p, 1, ms) < 0 && errno == EINTR) {
    }
    if (p.revents & POLLIN) {
        return false;
    }
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
    return true;
}

/*
 * The daemon dies while the guest runs on a half-restored RAM: QEMU is
 * ended, and the walker never saw a page that should not be zero.  The
 * guest runs briefly and is stopped, and the test checks that pages are
 * still missing (none was placed but on a fault, and QEMU has not mapped
 * them all) before it kills the daemon, so the kill always lands mid-restore.
 */
static void test_daemon_death_ends_qemu_before_any_wrong_page(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL, *dsock = NULL, *errs = NULL, *log = NULL;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    struct ucred cr;
    socklen_t len = sizeof(cr);
    uint64_t before, mapped, total;
    int lq, s, st, qpfd;
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
    g_strlcpy(a.sun_path, dsock, sizeof(a.sun_path));
    s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len), 0);
    assert_int_equal(kill(cr.pid, SIGKILL), 0); /* with pages still missing */
    close(s);
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
    r = start_restore(f, (const char *[]){ "--threads", "0", NULL }, serial, qmp, NULL);
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

/* Waits (bounded) until file @path contains @text. */
static void wait_for_text(const char *path, const char *text)
{
    for (int t = 0; t < WAIT_MS; t += 20) {
        g_autofree char *s = slurp(path);
        if (strstr(s, text)) {
            return;
        }
        g_usleep(20000);
    }
    fail_msg("%s never said \"%s\"", path, text);
}

/* Runs `snapload qemu-save` on the restored QEMU; its wait status, stderr in *@errs. */
static int qemu_save_restored(fixture *f, const char *out, char **errs)
{
    g_autofree char *sock = g_strdup_printf("%s/restore-save.qmp", f->dir);
    const char *argv[] = { g_getenv("SNAPLOAD_BIN"), "qemu-save", "--qmp", sock, "-o", out, NULL };
    int st = -1;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, NULL, errs, &st, NULL)) {
        fail_msg("cannot run snapload qemu-save");
    }
    return st;
}

/*
 * A save while the lazy restore still runs (pages missing: the guest is
 * paused and no loader runs) is refused with its reason, before the guest
 * is touched, and writes no snapshot; once the restore has completed, the
 * same save succeeds.
 */
static void test_qemu_save_refuses_a_guest_still_being_restored(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL, *out = NULL, *errs = NULL, *errs2 = NULL;
    g_autofree char *status = NULL, *dsock = NULL;
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
    st = qemu_save_restored(f, out, &errs);
    if (g_spawn_check_wait_status(st, NULL) || !strstr(errs, "a lazy restore is still running")) {
        fail_msg("qemu-save during the restore: status %d, stderr:\n%s", st, errs);
    }
    assert_false(g_file_test(out, G_FILE_TEST_EXISTS));
    status = sl_qmp_status(q, NULL);
    assert_string_equal(status, "paused"); /* the save left the guest alone */
    run_peer_pages(f, dsock, "all"); /* a second process touches every page... */
    wait_for_text(r.out, "every page in place"); /* ...and the restore reports completion */
    assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
    wait_walker(serial, f->saved_pass + 1, 0);
    st = qemu_save_restored(f, out, &errs2);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("qemu-save after the restore completed failed:\n%s", errs2);
    }
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    reap(&r, 60000);
    close(lq);
    child_free(&r);
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
} refusal;

static const refusal refusals[] = {
    { "pool_cannot_hold_every_backend_together", true, 2, true, 0, "on",
      "free 2M hugepages but" },
    { "size_not_a_multiple_of_the_hugepage", true, 1, false, 3, "on",
      "is not a multiple of the hugepage size" },
    { "backend_without_share_on", false, 1, false, 4, "off", "needs share=on" },
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
    struct CMUnitTest tests[3 * G_N_ELEMENTS(kinds) + 2];
    unsigned n = 0;

    for (unsigned k = 0; k < G_N_ELEMENTS(kinds); k++) {
        tests[n] = (struct CMUnitTest)CASE(test_lazy_restore_matches_snapshot_and_guest_runs_on, k);
        tests[n++].name = g_strdup_printf("%s/lazy_restore_matches_snapshot_and_guest_runs_on",
                                          kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(test_qemu_save_refuses_a_guest_still_being_restored, k);
        tests[n++].name = g_strdup_printf("%s/qemu_save_refuses_a_guest_still_being_restored",
                                          kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(test_daemon_death_ends_qemu_before_any_wrong_page, k);
        tests[n++].name = g_strdup_printf("%s/daemon_death_ends_qemu_before_any_wrong_page",
                                          kinds[k].name);
    }
    tests[n] = (struct CMUnitTest)CASE(test_killed_qemu_restore_takes_qemu_with_it, 0);
    tests[n++].name = g_strdup_printf("%s/killed_qemu_restore_takes_qemu_with_it", kinds[0].name);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(
        test_qemu_restore_refuses_bad_backends_before_starting);
    if (g_getenv("SL_TEST_FILTER")) { /* e.g. "*daemon_death*" while debugging */
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    return _cmocka_run_group_tests("qemu", tests, n, NULL, NULL);
}
