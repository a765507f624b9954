/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Helpers of the integration tests with stock QEMU (see qtest-util.h).
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
#include "qtest-util.h"

/* ------------------------------- helpers --------------------------------- */

char *path_in(const fixture *f, const char *name)
{
    return g_build_filename(f->dir, name, NULL);
}

int listen_at(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 2), 0);
    return fd;
}

void add2(GPtrArray *a, const char *opt, char *val)
{
    g_ptr_array_add(a, g_strdup(opt));
    g_ptr_array_add(a, val);
}

void qtest_pick_qemu(void)
{
    const char *dir = g_getenv("SNAPLOAD_QEMU_DIR"), *path = g_getenv("PATH");

    if (dir && *dir) {
        g_autofree char *p = g_strdup_printf("%s:%s", dir, path ? path : "/usr/bin:/bin");
        g_setenv("PATH", p, true);
    }
}

/* What `qemu-system-x86_64 --version` says (caller frees), or NULL. */
static char *qemu_version_line(void)
{
    g_autofree char *out = NULL;
    char *nl;
    int st;

    if (!g_spawn_command_line_sync("qemu-system-x86_64 --version", &out, NULL, &st, NULL) ||
        !g_spawn_check_wait_status(st, NULL) || !out) {
        return NULL;
    }
    if ((nl = strchr(out, '\n'))) {
        *nl = '\0';
    }
    return g_steal_pointer(&out);
}

unsigned qtest_qemu_major(void)
{
    g_autofree char *v = qemu_version_line();
    const char *at = v ? strstr(v, "version ") : NULL;

    return at ? (unsigned)g_ascii_strtoull(at + 8, NULL, 10) : 0;
}

void qtest_skip_without_qemu(struct CMUnitTest *tests, unsigned n)
{
    const char *want = g_getenv("SNAPLOAD_QEMU_VERSION");
    g_autofree char *v = want ? qemu_version_line() : NULL;
    g_autofree char *needle = want ? g_strdup_printf("version %s.", want) : NULL;
    g_autofree char *why = NULL;
    static char cap[32];

    if (!want || (v && strstr(v, needle))) {
        return;
    }
    g_snprintf(cap, sizeof(cap), "qemu-%s", want);
    why = g_strdup_printf("QEMU %s, looked for in %s first (scripts/install-deps.sh unpacks "
                          "Debian 12's 7.2 there); the qemu-system-x86_64 found says: %s", want,
                          g_getenv("SNAPLOAD_QEMU_DIR") ? g_getenv("SNAPLOAD_QEMU_DIR") : "PATH",
                          v ? v : "nothing (none found)");
    for (unsigned i = 0; i < n; i++) {
        sl_test_skip_as_absent(&tests[i], cap, why);
    }
}

/* The guest's QEMU command line (no terminating NULL yet): the walker's,
 * or the one f->args_hook builds. */
void qemu_args(GPtrArray *a, const fixture *f, const char *serial, const char *qmp)
{
    if (f->args_hook) {
        f->args_hook(a, f, serial, qmp);
        return;
    }
    g_ptr_array_add(a, g_strdup("qemu-system-x86_64"));
    add2(a, "-accel", g_strdup(f->kvm ? "kvm" : "tcg"));
    add2(a, "-machine", g_strdup(f->k->anon ? "pc" : "pc,memory-backend=ram0"));
    add2(a, "-m", g_strdup_printf("%d", RAM_MB));
    add2(a, "-display", g_strdup("none"));
    g_ptr_array_add(a, g_strdup("-nodefaults"));
    g_ptr_array_add(a, g_strdup("-no-user-config"));
    /* Without it KVM's vAPIC option ROM is patched during every load. */
    add2(a, "-global", g_strdup("apic-common.vapic=false"));
    if (!f->k->anon) {
        add2(a, "-object", g_strdup_printf("memory-backend-file,id=ram0,size=%dM,mem-path=%s,"
                                           "share=on", RAM_MB, f->memfile));
    }
    add2(a, "-drive", g_strdup_printf("format=raw,file=%s,if=ide,file.locking=off", f->img));
    add2(a, "-serial", g_strdup_printf("file:%s", serial));
    add2(a, "-chardev", g_strdup_printf("socket,id=testqmp,path=%s", qmp));
    add2(a, "-mon", g_strdup("chardev=testqmp,mode=control"));
}

/* Starts @argv; with @logs ("name"), its stdout and stderr go to files
 * name.out and name.err in the test directory (files, not pipes: nothing
 * must block a child that writes more than a pipe holds). */
child spawn(const fixture *f, GPtrArray *argv, const char *logs)
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
void end_kids(fixture *f)
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
int reap(child *c, int ms)
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

void child_free(child *c)
{
    g_free(c->out);
    g_free(c->err);
}

char *slurp(const char *path)
{
    char *text = NULL;

    return g_file_get_contents(path, &text, NULL, NULL) ? text : g_strdup("");
}

/* Number of the last "PASS <k>" line in @log, 0 if none. */
unsigned last_pass(const char *log)
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
void wait_walker(const char *serial, unsigned k, unsigned lines)
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

sl_qmp *accept_qmp(int lfd, const child *c)
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

char *hmp(sl_qmp *q, const char *cmd)
{
    g_autoptr(GError) err = NULL;
    char *out = sl_qmp_hmp(q, cmd, &err);

    if (!out) {
        fail_msg("%s: %s", cmd, err->message);
    }
    return out;
}

/* ------------------------------- fixture --------------------------------- */

int setup(void **state)
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
    } else if (!k->anon) {
        f->memfile = g_strdup_printf("/dev/shm/snapload-qtest-%d", (int)getpid());
    }
    *state = f;
    return 0;
}

int teardown(void **state)
{
    fixture *f = *state;

    end_kids(f);
    g_array_free(f->kids, true);
    if (f->memfile) {
        unlink(f->memfile);
    }
    g_free(f->memfile);
    g_free(f->snap);
    g_free(f->parent);
    g_free(f->img);
    g_free(f->regs);
    if (!g_getenv("SL_TEST_KEEP")) {
        sl_test_rmdir(f->dir);
    }
    *state = (void *)f->k;
    g_free(f);
    return 0;
}

void need(fixture *f)
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

/* Boots the walker, lets it finish two passes and saves it mid-pass
 * (qemu-save --format f->save_format). */
void boot_and_save(fixture *f)
{
    g_autofree char *serial = path_in(f, "boot.serial"), *qmp = path_in(f, "boot.qmp");
    g_autofree char *saveqmp = path_in(f, "save.qmp"), *log = NULL;
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *multifd = g_strdup_printf("%d", f->save_multifd);
    const char *save[] = { g_getenv("SNAPLOAD_BIN"), "qemu-save", "--qmp", saveqmp, "-o", f->snap,
                           "--format", f->save_format ? f->save_format : "snapload",
                           f->save_multifd ? "--multifd" : NULL, multifd, NULL };
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
int quit_and_reap(sl_qmp *q, child *r, char **out, char **errs)
{
    int st;

    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    st = reap(r, 60000);
    *out = slurp(r->out);
    *errs = slurp(r->err);
    return st;
}

child start_restore(const fixture *f, const char *const *opts, const char *serial,
                           const char *qmp, const char *qtest)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);

    g_ptr_array_add(argv, g_strdup(g_getenv("SNAPLOAD_BIN")));
    g_ptr_array_add(argv, g_strdup("qemu-restore"));
    g_ptr_array_add(argv, g_strdup(f->snap));
    if (f->parent) {
        add2(argv, "--parent", g_strdup(f->parent));
    }
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
    /* Its stdout and stderr are named after its QMP socket (restore.out
     * for restore.qmp): a second restore of the same test must not
     * truncate the first one's (found when a test first read the first
     * one's report: the second's open had truncated it). */
    g_autofree char *logs = g_path_get_basename(qmp);
    char *dot = strrchr(logs, '.');
    if (dot) {
        *dot = 0;
    }
    return spawn(f, argv, logs);
}

/*
 * Waits until the incoming device-state load has finished.  The load may
 * end before this monitor connection exists, so an event could be missed:
 * the test asks for the run state instead (bounded; tests only).
 */
void wait_paused(sl_qmp *q)
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
char *qtest_cmd(int fd, GString *in, const char *cmd)
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
uint64_t qtest_compare(const fixture *f, int fd)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *snap = f->parent ? sl_snapshot_open_chain(f->snap, f->parent, 0, &err)
                                  : sl_snapshot_open(f->snap, &err);
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
void run_peer_pages(const fixture *f, const char *dsock, const char *pages)
{
    run_peer_pages_tracked(f, dsock, pages, false);
}

void run_peer_pages_tracked(const fixture *f, const char *dsock, const char *pages, bool track)
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
    if (track) { /* registered tracked, reporting its writes when it goes */
        env = g_environ_setenv(env, "SNAPLOAD_TRACK", "1", true);
    }
    if (!g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, &out, &errs, &st, &err)) {
        fail_msg("peer: %s", err->message);
    }
    print_message("# %s", out);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("the second process saw wrong bytes: %s%s", out, errs);
    }
}

/* The second process reads 3000 pages at random. */
void run_peer(const fixture *f, const char *dsock)
{
    run_peer_pages(f, dsock, "3000");
}

JsonObject *parse_json(const char *text)
{
    g_autoptr(JsonParser) p = json_parser_new();

    if (!json_parser_load_from_data(p, text, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        fail_msg("qemu-restore printed no JSON object: '%s'", text);
    }
    return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

JsonObject *restore_was_clean(JsonObject *res)
{
    JsonObject *rs = json_object_get_object_member(res, "restore");

    assert_non_null(rs);
    assert_string_equal(json_object_get_string_member(res, "status"), "ok");
    assert_int_equal(json_object_get_int_member(res, "pages_placed_twice"), 0);
    assert_int_equal(json_object_get_int_member(rs, "pages_placed_twice"), 0);
    assert_int_equal(json_object_get_int_member(rs, "pages_never_placed"), 0);
    assert_int_equal(json_object_get_int_member(rs, "checksum_failures"), 0);
    return rs;
}

/*
 * Pages of the mapping of @path in process @pid that are in its page
 * tables (/proc/PID/pagemap); *@total gets the mapping's pages.  @path
 * NULL: QEMU's anonymous guest RAM, its largest private read-write mapping
 * of no file (TCG's code buffer is executable too).  With no
 * loaders, a guest page is placed only when something faults on it, which
 * maps it in the faulting view: a page not present in QEMU was never placed.
 */
uint64_t pages_mapped(pid_t pid, const char *path, uint64_t *total)
{
    g_autofree char *maps = g_strdup_printf("/proc/%d/maps", (int)pid), *text = NULL;
    g_autofree char *pm = g_strdup_printf("/proc/%d/pagemap", (int)pid);
    g_auto(GStrv) lines = NULL;
    uint64_t start = 0, end = 0, present = 0;
    g_autofree uint64_t *e = NULL;
    int fd;

    assert_true(g_file_get_contents(maps, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (unsigned i = 0; lines[i] && (!end || !path); i++) {
        const char *p = strchr(lines[i], '/');
        uint64_t s, e;
        char perms[8];
        if (sscanf(lines[i], "%" SCNx64 "-%" SCNx64 " %7s", &s, &e, perms) != 3) {
            continue;
        }
        if (path ? p && !strcmp(p, path)
                 : !p && !strchr(lines[i], '[') && !strcmp(perms, "rw-p") && e - s > end - start) {
            start = s;
            end = e;
        }
    }
    if (!end) {
        fail_msg("QEMU (pid %d) does not map %s", (int)pid, path ? path : "anonymous memory");
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
void wait_guest_touches(pid_t qemu, const char *memfile, uint64_t n)
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

/* Kills (SIGKILL) the restore daemon listening on @dsock, found by its credentials. */
void kill_daemon_at(const char *dsock)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    struct ucred cr;
    socklen_t len = sizeof(cr);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

    g_strlcpy(a.sun_path, dsock, sizeof(a.sun_path));
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len), 0);
    assert_int_equal(kill(cr.pid, SIGKILL), 0);
    close(s);
}

/* Ends @pid (QEMU) if it still runs, and says so: no guest may outlive its test. */
bool end_if_alive(pid_t pid, int pidfd, int ms)
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

/* Waits (bounded) until file @path contains @text. */
void wait_for_text(const char *path, const char *text)
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

void wait_restored(const child *r)
{
    for (int t = 0; t < WAIT_MS; t += 20) {
        g_autofree char *s = slurp(r->out);
        siginfo_t si = { 0 };
        if (strstr(s, "every page in place") || strstr(s, "\"mode\"")) {
            return;
        }
        /* A failure (text mode: "failed: ...") or an exit ends the wait at
         * once, the child left for reap() (WNOWAIT). */
        if (strstr(s, "failed: ") ||
            (waitid(P_PID, (id_t)r->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid)) {
            g_autofree char *errs = slurp(r->err);
            fail_msg("qemu-restore ended or failed before every page was in place:\n%s%s", s,
                     errs);
        }
        g_usleep(20000);
    }
    fail_msg("qemu-restore never reported every page in place (%s)", r->out);
}

/* Runs `snapload qemu-save` on the restored QEMU (a child of @parent if not
 * NULL); its wait status, stderr in *@errs. */
int qemu_save_restored(fixture *f, const char *out, const char *parent, const char *ancestor,
                       char **errs)
{
    g_autofree char *sock = g_strdup_printf("%s/restore-save.qmp", f->dir);
    const char *argv[] = { g_getenv("SNAPLOAD_BIN"), "qemu-save", "--qmp", sock, "-o", out,
                           parent ? "--parent" : NULL, parent, ancestor ? "--ancestor" : NULL,
                           ancestor, NULL };
    int st = -1;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, NULL, errs, &st, NULL)) {
        fail_msg("cannot run snapload qemu-save");
    }
    return st;
}
