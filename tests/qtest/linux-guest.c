/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Helpers of the integration tests with the Linux guest (see linux-guest.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "tests/unit/testutil.h"
#include "linux-guest.h"

double lg_now_ms(void)
{
    return (double)g_get_monotonic_time() / 1000.0;
}

bool lg_kvm_runs_linux(char **why)
{
    const char *force = g_getenv("SL_LINUX_ACCEL");
    g_autoptr(GString) mods = g_string_new(NULL);
    GDir *d;
    const char *n;

    if (force) {
        *why = g_strdup_printf("SL_LINUX_ACCEL=%s", force);
        return !strcmp(force, "kvm");
    }
    if (!access("/sys/module/kvm_intel", F_OK) || !access("/sys/module/kvm_amd", F_OK)) {
        return true;
    }
    d = g_dir_open("/sys/module", 0, NULL);
    while (d && (n = g_dir_read_name(d))) {
        if (g_str_has_prefix(n, "kvm_")) {
            g_string_append_printf(mods, "%s%s", mods->len ? ", " : "", n);
        }
    }
    if (d) {
        g_dir_close(d);
    }
    *why = g_strdup_printf("/dev/kvm is served by %s, not by hardware virtualization "
                           "(kvm_intel or kvm_amd): it emulates an unmodified kernel "
                           "instruction by instruction and does not boot this guest in "
                           "minutes", mods->len ? mods->str : "no known module");
    return false;
}

void lg_setup(fixture *f, linux_guest *g, qemu_args_fn args, const void *opaque)
{
    g_autofree char *why = NULL;

    f->args_hook = args;
    f->opaque = opaque;
    if (f->kvm && !lg_kvm_runs_linux(&why)) {
        f->kvm = false;
        if (!g->accel_said) {
            print_message("# the Linux guest runs under TCG: %s\n", why);
        }
        g->accel_said = true;
    }
}

/* The newest Debian cloud kernel in /boot, or $SL_LINUX_KERNEL. */
static char *find_kernel(void)
{
    const char *env = g_getenv("SL_LINUX_KERNEL");
    char *best = NULL, *path;
    GDir *d;
    const char *n;

    if (env) {
        return g_strdup(env);
    }
    d = g_dir_open("/boot", 0, NULL);
    while (d && (n = g_dir_read_name(d))) {
        if (g_str_has_prefix(n, "vmlinuz-") && g_str_has_suffix(n, "-cloud-amd64") &&
            (!best || strverscmp(n, best) > 0)) {
            g_free(best);
            best = g_strdup(n);
        }
    }
    if (d) {
        g_dir_close(d);
    }
    if (!best) {
        return NULL;
    }
    path = g_build_filename("/boot", best, NULL);
    g_free(best);
    return path;
}

void lg_prepare(linux_guest *g)
{
    const char *src = g_getenv("SL_LINUX_DIR");
    g_autofree char *script = NULL, *out = NULL, *errs = NULL, *initrd = NULL;
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GError) err = NULL;
    int st = -1;

    if (g->initrd) {
        return;
    }
    g->kernel = find_kernel();
    if (!g->kernel || access(g->kernel, R_OK)) {
        fail_msg("no Debian cloud kernel to boot (/boot/vmlinuz-*-cloud-amd64): apt-get install "
                 "linux-image-cloud-amd64 (scripts/install-deps.sh does), or set "
                 "SL_LINUX_KERNEL");
    }
    if (!src) {
        fail_msg("SL_LINUX_DIR does not name tests/qtest/linux");
    }
    script = g_build_filename(src, "mkinitramfs.py", NULL);
    initrd = g_build_filename(g->dir, "initrd.img", NULL);
    g_ptr_array_add(argv, g_strdup("python3"));
    g_ptr_array_add(argv, g_strdup(script));
    add2(argv, "-o", g_strdup(initrd));
    for (const char *const *m = g->modules; m && *m; m++) {
        if (m == g->modules) {
            add2(argv, "--kernel", g_strdup(g->kernel));
        }
        add2(argv, "--module", g_strdup(*m));
    }
    g_ptr_array_add(argv, NULL);
    if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                      &errs, &st, &err) || !g_spawn_check_wait_status(st, NULL)) {
        fail_msg("building the initramfs failed (is busybox-static installed?): %s%s",
                 err ? err->message : "", errs ? errs : "");
    }
    g->initrd = g_steal_pointer(&initrd);
    print_message("# guest: %s, initramfs %s\n", g->kernel, g->initrd);
}

char *lg_req_path(const char *serial)
{
    g_autofree char *base = g_str_has_suffix(serial, ".serial")
                                ? g_strndup(serial, strlen(serial) - strlen(".serial"))
                                : g_strdup(serial);
    return g_strdup_printf("%s.req", base);
}

unsigned lg_ram_mb(const fixture *f)
{
    return f->ram_mb ? f->ram_mb : LG_RAM_MB;
}

void lg_args(GPtrArray *a, const fixture *f, const linux_guest *g, const char *serial,
             const char *qmp)
{
    g_autofree char *req = lg_req_path(serial);

    g_ptr_array_add(a, g_strdup("qemu-system-x86_64"));
    add2(a, "-accel", g_strdup(f->kvm ? "kvm" : "tcg"));
    add2(a, "-machine", g_strdup(f->k->anon ? "pc" : "pc,memory-backend=ram0"));
    add2(a, "-m", g_strdup_printf("%u", lg_ram_mb(f)));
    add2(a, "-smp", g_strdup("2"));
    add2(a, "-display", g_strdup("none"));
    g_ptr_array_add(a, g_strdup("-nodefaults"));
    g_ptr_array_add(a, g_strdup("-no-user-config"));
    g_ptr_array_add(a, g_strdup("-no-reboot")); /* a panic (panic=-1) ends QEMU */
    add2(a, "-global", g_strdup("apic-common.vapic=false"));
    if (!f->k->anon) {
        add2(a, "-object", g_strdup_printf("memory-backend-file,id=ram0,size=%uM,mem-path=%s,"
                                           "share=on", lg_ram_mb(f), f->memfile));
    }
    add2(a, "-kernel", g_strdup(g->kernel));
    add2(a, "-initrd", g_strdup(g->initrd));
    add2(a, "-append", g_strdup(g->append));
    add2(a, "-serial", g_strdup_printf("file:%s", serial));
    add2(a, "-chardev", g_strdup_printf("socket,id=req,path=%s,server=on,wait=off", req));
    add2(a, "-serial", g_strdup("chardev:req"));
    add2(a, "-chardev", g_strdup_printf("socket,id=testqmp,path=%s", qmp));
    add2(a, "-mon", g_strdup("chardev=testqmp,mode=control"));
    for (const char *const *e = g->extra; e && *e; e++) {
        g_ptr_array_add(a, g_strdup(*e));
    }
}

char *lg_tail(const char *log, unsigned n)
{
    const char *p = log + strlen(log);

    while (p > log && n) {
        p--;
        n -= *p == '\n' && p[1];
    }
    return g_strdup(p);
}

lg_hb lg_heartbeats(const char *log)
{
    g_auto(GStrv) lines = g_strsplit(log, "\n", -1);
    lg_hb h = { 0 };

    for (unsigned i = 0; lines[i] && lines[i + 1]; i++) {
        uint64_t n, pass, pages, ws, files, errors, ready, disk = 0;
        int got = sscanf(lines[i], "HB n=%" SCNu64 " %*s pass=%" SCNu64 " pages=%" SCNu64
                         " ws=%" SCNu64 " files=%" SCNu64 " errors=%" SCNu64 " ready=%" SCNu64
                         " disk=%" SCNu64, &n, &pass, &pages, &ws, &files, &errors, &ready,
                         &disk);
        if (got >= 7 && ready) {
            if (!h.count++) {
                h.first_pages = pages;
                h.first_files = files;
                h.first_disk = disk;
            }
            h.pass = pass;
            h.pages = pages;
            h.ws = ws;
            h.files = files;
            h.errors = errors;
            h.disk = disk;
        }
    }
    return h;
}

void lg_check_console(const char *log, const char *what, bool restored)
{
    g_auto(GStrv) lines = g_strsplit(log, "\n", -1);

    for (unsigned i = 0; lines[i]; i++) {
        const char *l = lines[i];
        if (strstr(l, "ommand line:")) {
            continue; /* the kernel echoes its command line, panic=-1 included */
        }
        if (strstr(l, "ERR page=") || strstr(l, "ERR file=") || strstr(l, "ERR disk=") ||
            strstr(l, "Oops") || strstr(l, "BUG") || strstr(l, "panic") ||
            strstr(l, "Call Trace") || strstr(l, "slwork:") ||
            (restored && (strstr(l, "SLWORK START") || strstr(l, "Linux version")))) {
            g_autofree char *t = lg_tail(log, 40);
            fail_msg("%s: the guest's console says\n  %s\n--- its last lines:\n%s", what, l, t);
        }
    }
}

bool lg_exited(int pidfd)
{
    struct pollfd p = { .fd = pidfd, .events = POLLIN };

    return poll(&p, 1, 0) == 1;
}

lg_hb lg_wait_heartbeats(const char *serial, int pidfd, unsigned count, uint64_t min_pages,
                         const char *what, bool restored)
{
    g_autofree char *last = NULL, *t = NULL;

    for (double t0 = lg_now_ms(); lg_now_ms() - t0 < LG_WAIT_MS;) {
        g_autofree char *log = slurp(serial);
        lg_hb h = lg_heartbeats(log);
        lg_check_console(log, what, restored);
        if (h.count >= count && h.pages > min_pages) {
            return h;
        }
        if (lg_exited(pidfd)) {
            t = lg_tail(log, 40);
            fail_msg("%s: QEMU exited; the guest's console ends with:\n%s", what, t);
        }
        g_usleep(50000);
    }
    last = slurp(serial);
    t = lg_tail(last, 40);
    fail_msg("%s: no %u heartbeats past %" PRIu64 " pages in %d s; the console ends with:\n%s",
             what, count, min_pages, LG_WAIT_MS / 1000, t);
    return (lg_hb){ 0 };
}

int lg_req_connect(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    for (int i = 0; i < 500; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        if (!connect(fd, (struct sockaddr *)&a, sizeof(a))) {
            return fd;
        }
        close(fd);
        g_usleep(20000);
    }
    fail_msg("cannot connect to the guest's request port %s: %s", path, g_strerror(errno));
    return -1;
}

char *lg_req_call(int fd, GString *in, const char *line, const char *prefix, int ms,
                  double *rtt_ms)
{
    g_autofree char *msg = g_strdup_printf("%s\n", line);
    double t0 = lg_now_ms();

    assert_int_equal(write(fd, msg, strlen(msg)), (ssize_t)strlen(msg));
    for (;;) {
        char buf[4096], *nl;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int left = ms - (int)(lg_now_ms() - t0);
        ssize_t n;

        while ((nl = memchr(in->str, '\n', in->len))) {
            g_autofree char *got = g_strndup(in->str, (gsize)(nl - in->str));
            g_string_erase(in, 0, nl - in->str + 1);
            g_strchomp(got);
            if (g_str_has_prefix(got, prefix)) {
                if (rtt_ms) {
                    *rtt_ms = lg_now_ms() - t0;
                }
                return g_steal_pointer(&got);
            }
            /* The workload's refusal answers this request: said at once,
             * not after the whole wait with the line gone. */
            if (g_str_has_prefix(got, "UNKNOWN ") && !g_str_has_prefix(prefix, "UNKNOWN")) {
                fail_msg("the guest answered '%s' with '%s'", line, got);
            }
        }
        if (left <= 0 || poll(&p, 1, left) <= 0) {
            fail_msg("the guest did not answer '%s' within %d ms (got '%s')", line, ms, in->str);
        }
        n = read(fd, buf, sizeof(buf));
        if (n <= 0) {
            fail_msg("the guest's request port closed while waiting for '%s'", prefix);
        }
        g_string_append_len(in, buf, n);
    }
}

double lg_ping(int fd, GString *in, const char *token)
{
    g_autofree char *line = g_strdup_printf("PING %s", token);
    g_autofree char *want = g_strdup_printf("PONG %s ", token);
    g_autofree char *got = NULL;
    double rtt;

    got = lg_req_call(fd, in, line, want, LG_REQ_WAIT_MS, &rtt);
    if (!strstr(got, " errors=0 ")) {
        fail_msg("the workload counts errors: %s", got);
    }
    return rtt;
}

void lg_save(const char *sock, const char *fmt, const char *out)
{
    const char *argv[] = { g_getenv("SNAPLOAD_BIN"), "qemu-save", "--qmp", sock, "--format", fmt,
                           "-o", out, NULL };
    g_autofree char *errs = NULL;
    int st = -1;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, NULL, &errs, &st, NULL) ||
        !g_spawn_check_wait_status(st, NULL)) {
        fail_msg("snapload qemu-save --format %s failed: %s", fmt, errs ? errs : "");
    }
}

void lg_cont_after_save(sl_qmp *q)
{
    for (int i = 0; i < 10000; i++) {
        g_autofree char *st = sl_qmp_status(q, NULL);
        if (st && strcmp(st, "finish-migrate")) {
            assert_true(sl_qmp_ok(q, "cont", NULL, NULL));
            return;
        }
        g_usleep(1000);
    }
    fail_msg("QEMU stayed in finish-migrate after the save");
}

void lg_wait_running(sl_qmp *q, int qpfd, const char *what)
{
    for (double t0 = lg_now_ms(); lg_now_ms() - t0 < LG_WAIT_MS; g_usleep(2000)) {
        g_autofree char *st = sl_qmp_status(q, NULL);
        if (st && !strcmp(st, "running")) {
            return;
        }
        if (!st || lg_exited(qpfd)) {
            fail_msg("%s: QEMU went away before the guest ran", what);
        }
    }
    fail_msg("%s: the restored guest was not running after %d s", what, LG_WAIT_MS / 1000);
}

void lg_flip_and_see_it_reported(int rfd, GString *in, const char *serial, uint64_t ws,
                                 const char *tag)
{
    uint64_t arg[] = { ws / 5, ws / 2, ws * 4 / 5 };
    bool page = false, file = false;

    for (unsigned i = 0; i < G_N_ELEMENTS(arg) + 2; i++) {
        g_autofree char *cmd = i < G_N_ELEMENTS(arg) ? g_strdup_printf("FLIP %" PRIu64, arg[i])
                                                     : g_strdup_printf("FLIPFILE %u", i);
        g_free(lg_req_call(rfd, in, cmd, "FLIPPED ", LG_REQ_WAIT_MS, NULL));
    }
    for (double t0 = lg_now_ms(); !(page && file) && lg_now_ms() - t0 < LG_REQ_WAIT_MS;
         g_usleep(50000)) {
        g_autofree char *l = slurp(serial);
        file = strstr(l, "ERR file=") != NULL;
        for (unsigned i = 0; i < G_N_ELEMENTS(arg) && !page; i++) {
            g_autofree char *want = g_strdup_printf("ERR page=%" PRIu64 " ", arg[i]);
            page = strstr(l, want) != NULL;
        }
    }
    if (!page || !file) {
        fail_msg("%s: the workload did not report the bits flipped in its %s: its checks are "
                 "not running", tag, page ? "files" : "pages");
    }
}
