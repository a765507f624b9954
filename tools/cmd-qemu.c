/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload qemu-save` and `snapload qemu-restore`: stock QEMU (7.2 and
 * later) as the consumer of a lazy restore, without patching it.
 *
 * qemu-save stops a running guest over QMP, saves its device state with
 * `x-ignore-shared` (the memory-backend-file RAM stays out of the stream)
 * and writes the RAM files plus that device state into one snapshot.
 *
 * qemu-restore recreates the RAM files empty, starts the restore daemon
 * (a child process), starts QEMU with the LD_PRELOAD client (which hands
 * the guest-RAM mapping to the daemon as QEMU maps it), loads the device
 * state with `-incoming defer` + `migrate-incoming`, and `cont`s at once:
 * the guest runs while its RAM streams in.  With --eager STREAM it instead
 * times stock QEMU's own eager load of a full migration stream, the same
 * way, for comparison.  docs/qemu.md describes both.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <json-glib/json-glib.h>
#include "cli.h"
#include "client.h"
#include "daemon.h"
#include "migration/busy.h"
#include "migration/format/format.h"
#include "qemu.h"

#define QMP_TIMEOUT_MS 30000
#define MIGRATE_TIMEOUT_MS (30 * 60 * 1000)
#define QEMU_DEATH_GRACE_MS 5000 /* for QEMU to end itself when the daemon dies */

static const char caps_ignore_shared[] =
    "{\"capabilities\": [{\"capability\": \"x-ignore-shared\", \"state\": true},"
    " {\"capability\": \"events\", \"state\": true}]}";
static const char caps_full[] =
    "{\"capabilities\": [{\"capability\": \"x-ignore-shared\", \"state\": false},"
    " {\"capability\": \"events\", \"state\": true}]}";

/* migrate (or migrate-incoming) to/from an exec: command, and wait for it. */
static bool migrate_exec(sl_qmp *q, const char *cmd, const char *shell, GError **errp)
{
    g_autofree char *uri = g_strdup_printf("exec:%s", shell);
    g_autofree char *quoted = g_strescape(uri, NULL);
    g_autofree char *args = g_strdup_printf("{\"uri\": \"%s\"}", quoted);

    return sl_qmp_ok(q, cmd, args, errp) && sl_qmp_wait_migration(q, MIGRATE_TIMEOUT_MS, errp);
}

/* ------------------------------- qemu-save ------------------------------- */

/* After a completed outgoing migration QEMU stays in finish-migrate for a
 * moment and refuses `cont`; it signals no event when that ends. */
static bool wait_postmigrate(sl_qmp *q, GError **errp)
{
    for (int i = 0; i < 10000; i++) {
        g_autofree char *st = sl_qmp_status(q, errp);
        if (!st) {
            return false;
        }
        if (strcmp(st, "finish-migrate")) {
            return true;
        }
        g_usleep(1000);
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QEMU stayed in finish-migrate for 10 s");
    return false;
}

/* Stops the guest and writes its device state to @dev (after a full stream
 * to @full when asked), then the snapshot @out. */
static int save_stopped(sl_qmp *q, GPtrArray *raws, const char *dev, const char *out,
                        const char *full, GError **errp)
{
    g_autofree char *cat = g_strdup_printf("cat > '%s'", dev);
    double t0, dev_ms;
    int ret;

    if (!sl_qmp_ok(q, "stop", NULL, errp)) {
        return -1;
    }
    if (full) {
        /* QEMU refuses a second migration from the post-migrate state
         * unless the guest ran in between; the device state (saved last,
         * with the RAM files read right after it) is what must match. */
        g_autofree char *fcat = g_strdup_printf("cat > '%s'", full);
        if (!sl_qmp_ok(q, "migrate-set-capabilities", caps_full, errp) ||
            !sl_qmp_ok(q, "migrate-set-parameters", "{\"max-bandwidth\": 1099511627776}", errp) ||
            !migrate_exec(q, "migrate", fcat, errp) || !wait_postmigrate(q, errp) ||
            !sl_qmp_ok(q, "cont", NULL, errp) ||
            !sl_qmp_ok(q, "stop", NULL, errp)) {
            return -1;
        }
    }
    if (!sl_qmp_ok(q, "migrate-set-capabilities", caps_ignore_shared, errp)) {
        return -1;
    }
    t0 = cli_now_ms();
    if (!migrate_exec(q, "migrate", cat, errp)) {
        return -1;
    }
    dev_ms = cli_now_ms() - t0;
    ret = cli_save((char **)raws->pdata, 4096, out, dev, NULL);
    if (ret == 0) {
        fprintf(stderr, "snapload: saved %u RAM block(s) and the device state (%.1f ms) to %s\n",
                raws->len - 1, dev_ms, out);
    }
    return ret;
}

/* False if a lazy restore still fills @b's memory file (busy.c). */
static bool memory_idle(const sl_qemu_backend *b, GError **errp)
{
    int fd = open(b->mem_path, O_RDONLY | O_CLOEXEC);
    bool ok = fd < 0 || sl_busy_check(fd, 0, b->size, b->mem_path, errp);

    if (fd >= 0) {
        close(fd);
    }
    return ok; /* a file we cannot open fails later, with its reason */
}

static int save_guest(sl_qmp *q, const char *out, const char *full, GError **errp)
{
    g_autoptr(GPtrArray) bs = sl_qemu_qmp_backends(q, errp);
    g_autofree char *tmp = NULL, *dev = NULL;
    g_autoptr(GPtrArray) raws = g_ptr_array_new_with_free_func(g_free);
    int ret;

    if (!bs) {
        return -1;
    }
    if (bs->len == 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "this QEMU has no memory-backend-file: "
                    "start it with -object memory-backend-file,share=on,... for its RAM");
        return -1;
    }
    for (guint i = 0; i < bs->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(bs, i);
        if (!b->share) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s' is not share=on: "
                        "its RAM is not in %s", b->id, b->mem_path);
            return -1;
        }
        if (!memory_idle(b, errp)) {
            return -1; /* before the guest is stopped: it runs on untouched */
        }
        g_ptr_array_add(raws, g_strdup_printf("%s:%s", b->mem_path, b->id));
    }
    g_ptr_array_add(raws, NULL);
    if (!(tmp = g_dir_make_tmp("snapload-save-XXXXXX", errp))) {
        return -1;
    }
    dev = g_build_filename(tmp, "device-state", NULL);
    ret = save_stopped(q, raws, dev, out, full, errp);
    unlink(dev); /* on every path: the temporary directory never stays behind */
    rmdir(tmp);
    return ret;
}

int cmd_qemu_save(int argc, char **argv)
{
    g_autofree char *sock = NULL, *out = NULL, *full = NULL;
    gboolean quit = false;
    GOptionEntry entries[] = {
        { "qmp", 0, 0, G_OPTION_ARG_FILENAME, &sock, "QEMU's QMP server socket", "SOCKET" },
        { "output", 'o', 0, G_OPTION_ARG_FILENAME, &out, "snapshot to write", "SNAP" },
        { "full-stream", 0, 0, G_OPTION_ARG_FILENAME, &full, "also save a full migration stream "
          "(RAM included) for stock QEMU's eager -incoming, to compare with", "FILE" },
        { "quit", 0, 0, G_OPTION_ARG_NONE, &quit, "quit QEMU after saving", NULL },
        { NULL },
    };
    g_autoptr(GError) err = NULL;
    sl_qmp *q;
    int ret;

    if (!cli_parse("- save a running QEMU guest into a snapshot", entries, &argc, &argv)) {
        return 2;
    }
    if (!sock || !out || argc != 1) {
        return cli_fail("qemu-save needs --qmp SOCKET and -o SNAP");
    }
    q = sl_qmp_connect(sock, QMP_TIMEOUT_MS, &err);
    ret = q ? save_guest(q, out, full, &err) : -1;
    if (ret == 0 && quit) {
        sl_qmp_ok(q, "quit", NULL, NULL);
    }
    sl_qmp_close(q);
    return ret < 0 ? cli_fail_error(g_steal_pointer(&err)) : ret;
}

/* ----------------------------- qemu-restore ------------------------------ */

typedef struct {
    const char *snap;
    char **qemu_argv;
    char *eager;          /* full stream for a stock eager load instead */
    char *socket;         /* where the daemon listens (default: a private dir) */
    bool json, verify, paused, quit_when_done;
    int threads;
} qr_opts;

typedef struct {
    const qr_opts *o;
    sl_snapshot *snap;
    GPtrArray *backends;   /* sl_qemu_backend *, one per snapshot block */
    char *tmp, *dsock, *qsock, *devstate;
    pid_t daemon, qemu;
    int stats_fd, qmp_lfd, pidfd;
    sl_qmp *q;
    double t0, t_qmp, t_dev0, t_dev1, t_run, t_done;
    char *stats;           /* the daemon's JSON line */
    uint64_t verify_mismatches;
} qr;

static guint k_of(GPtrArray *a, gpointer p)
{
    guint k = 0;

    g_ptr_array_find(a, p, &k);
    return k;
}

/* Pairs every snapshot block with the QEMU backend of the same id. */
static bool match_backends(qr *r, GError **errp)
{
    g_autoptr(GPtrArray) all = sl_qemu_args_backends(r->o->qemu_argv, errp);
    unsigned n = sl_snapshot_n_blocks(r->snap);

    if (!all) {
        return false;
    }
    r->backends = g_ptr_array_new_with_free_func((GDestroyNotify)sl_qemu_backend_free);
    for (unsigned i = 0; i < n; i++) {
        sl_block_info bi;
        sl_qemu_backend *found = NULL;
        sl_snapshot_block(r->snap, i, &bi);
        for (guint k = 0; k < all->len && !found; k++) {
            sl_qemu_backend *b = g_ptr_array_index(all, k);
            found = strcmp(b->id, bi.name) ? NULL : b;
        }
        if (!found || found->size != bi.length) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "snapshot block '%s' (%" G_GUINT64_FORMAT
                        " bytes) has no -object memory-backend-file,id=%s of that size in the "
                        "QEMU arguments", bi.name, bi.length, bi.name);
            return false;
        }
        g_ptr_array_add(r->backends, g_ptr_array_steal_index(all, k_of(all, found)));
    }
    return true;
}

static bool write_device_state(qr *r, GError **errp)
{
    g_autoptr(GBytes) dev = sl_snapshot_read_section(r->snap, SL_SECTION_DEVICE_STATE, errp);
    gsize len;
    const char *data;

    if (!dev) {
        g_prefix_error(errp, "device-state section: ");
        return false;
    }
    data = g_bytes_get_data(dev, &len);
    r->devstate = g_build_filename(r->tmp, "device-state", NULL);
    return g_file_set_contents(r->devstate, data, (gssize)len, errp);
}

/*
 * In a child of ours (the daemon, QEMU): SIGKILL when we die, so that no
 * guest ever runs on without its supervisor, even if we are killed
 * ourselves.  @opaque is our pid: if we died before the prctl, go now.
 */
static void die_with_parent(gpointer opaque)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != (pid_t)GPOINTER_TO_INT(opaque)) {
        raise(SIGKILL);
    }
}

/* Forks the daemon; returns once its socket listens. */
static bool start_daemon(qr *r, GError **errp)
{
    int ready[2], stats[2];
    char c;

    if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(stats, O_CLOEXEC) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "pipe: %s", g_strerror(errno));
        return false;
    }
    pid_t self = getpid();

    r->daemon = fork();
    if (r->daemon == 0) {
        die_with_parent(GINT_TO_POINTER(self));
        sl_daemon_opts d = { .snapshot = r->o->snap, .socket = r->dsock, .exit_when_done = true,
                             .quiet = !g_getenv("SNAPLOAD_DEBUG"), .ready_fd = ready[1],
                             .stats_fd = stats[1] };
        d.cfg = (sl_restore_config){ .size = sizeof(d.cfg),
                                     .loader_threads = r->o->threads > 0 ? (unsigned)r->o->threads : 0,
                                     .no_loaders = r->o->threads == 0 };
        close(ready[0]);
        close(stats[0]);
        _exit(sl_daemon_run(&d));
    }
    close(ready[1]);
    close(stats[1]);
    r->stats_fd = stats[0];
    if (r->daemon < 0 || read(ready[0], &c, 1) != 1) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "the restore daemon did not start");
        close(ready[0]);
        return false;
    }
    close(ready[0]);
    return true;
}

static int listen_unix(const char *path, GError **errp)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QMP socket %s: %s", path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

/* The blocks for the preload client: NAME=PATH;NAME=PATH. */
static char *blocks_env(const qr *r)
{
    GString *s = g_string_new(NULL);

    for (guint i = 0; i < r->backends->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(r->backends, i);
        g_string_append_printf(s, "%s%s=%s", i ? ";" : "", b->id, b->mem_path);
    }
    return g_string_free(s, false);
}

/* The preload library: $SNAPLOAD_PRELOAD, beside our binary, or installed. */
static char *find_preload(GError **errp)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *dir = self ? g_path_get_dirname(self) : NULL;
    const char *env = g_getenv("SNAPLOAD_PRELOAD");
    char *cand[] = {
        env ? g_strdup(env) : NULL,
        dir ? g_build_filename(dir, "libsnapload-preload.so", NULL) : NULL,
        dir ? g_build_filename(dir, "..", "lib", "x86_64-linux-gnu", "snapload",
                               "libsnapload-preload.so", NULL) : NULL,
    };
    char *found = NULL;

    for (unsigned i = 0; i < G_N_ELEMENTS(cand); i++) {
        if (!found && cand[i] && g_file_test(cand[i], G_FILE_TEST_IS_REGULAR)) {
            found = realpath(cand[i], NULL);
        }
        g_free(cand[i]);
    }
    if (!found) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "libsnapload-preload.so not found "
                    "(set SNAPLOAD_PRELOAD to its path)");
    }
    return found;
}

static bool spawn_qemu(qr *r, GError **errp)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_auto(GStrv) env = g_get_environ();
    g_autofree char *exe = g_find_program_in_path(r->o->qemu_argv[0]);

    if (!exe) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "QEMU binary '%s' not found",
                    r->o->qemu_argv[0]);
        return false;
    }
    for (char **a = r->o->qemu_argv; *a; a++) {
        g_ptr_array_add(argv, g_strdup(*a));
    }
    g_ptr_array_add(argv, g_strdup("-chardev"));
    g_ptr_array_add(argv, g_strdup_printf("socket,id=snapload-qmp,path=%s", r->qsock));
    g_ptr_array_add(argv, g_strdup("-mon"));
    g_ptr_array_add(argv, g_strdup("chardev=snapload-qmp,mode=control"));
    g_ptr_array_add(argv, g_strdup("-incoming"));
    g_ptr_array_add(argv, g_strdup("defer"));
    g_ptr_array_add(argv, NULL);
    if (!r->o->eager) {
        g_autofree char *pre = find_preload(errp);
        g_autofree char *blocks = blocks_env(r);
        if (!pre) {
            return false;
        }
        env = g_environ_setenv(env, "LD_PRELOAD", pre, true);
        env = g_environ_setenv(env, "SNAPLOAD_SOCKET", r->dsock, true);
        env = g_environ_setenv(env, "SNAPLOAD_BLOCKS", blocks, true);
        env = g_environ_setenv(env, "SNAPLOAD_EXE", exe, true);
    }
    r->t0 = cli_now_ms();
    if (!g_spawn_async(NULL, (char **)argv->pdata, env,
                       G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH, die_with_parent,
                       GINT_TO_POINTER(getpid()), &r->qemu, errp)) {
        return false;
    }
    r->pidfd = (int)syscall(SYS_pidfd_open, r->qemu, 0);
    return true;
}

/* One line on a page that differs: where, how many bytes, the first ones. */
static void report_mismatch(const char *block, uint64_t addr, const uint8_t *want,
                            const uint8_t *got)
{
    unsigned first = 0, n = 0;

    for (unsigned i = 4096; i-- > 0;) {
        if (want[i] != got[i]) {
            first = i;
            n++;
        }
    }
    fprintf(stderr, "snapload: verify: block '%s' page at 0x%" G_GINT64_MODIFIER "x differs "
            "from the snapshot in %u bytes, the first at +0x%x (snapshot %02x, memory %02x)\n",
            block, addr, n, first, want[first], got[first]);
}

/* Every page of every block, through a view registered like a vhost-user
 * back-end's, against the snapshot. */
static bool verify_blocks(qr *r, GError **errp)
{
    int sock = sl_client_connect(r->dsock, "verify", errp);

    for (guint i = 0; sock >= 0 && i < r->backends->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(r->backends, i);
        g_autofree uint8_t *want = g_malloc(1u << 20);
        int fd = open(b->mem_path, O_RDWR | O_CLOEXEC);
        uint8_t *map = fd < 0 ? MAP_FAILED
                              : mmap(NULL, b->size, PROT_READ, MAP_SHARED, fd, 0);
        int uffd = map == MAP_FAILED ? -1
                   : sl_client_register(sock, b->id, map, b->size, fd, 0, errp);
        for (uint64_t off = 0; uffd >= 0 && off < b->size; off += 1u << 20) {
            uint64_t len = MIN(1u << 20, b->size - off);
            if (sl_snapshot_read_pages(r->snap, i, off / 4096, len / 4096, want,
                                       sl_snapshot_has_checksums(r->snap)) < 0) {
                g_set_error(errp, SL_ERROR, SL_ERROR_IO, "verify: cannot read the snapshot");
                uffd = -2;
                break;
            }
            for (uint64_t p = 0; p < len; p += 4096) {
                if (memcmp(want + p, map + off + p, 4096) && r->verify_mismatches++ < 8) {
                    report_mismatch(b->id, off + p, want + p, map + off + p);
                }
            }
        }
        if (map != MAP_FAILED) {
            munmap(map, b->size);
        }
        if (fd >= 0) {
            close(fd);
        }
        if (uffd < 0) {
            close(sock);
            return false;
        }
        close(uffd);
    }
    if (sock >= 0) {
        close(sock);
    }
    return sock >= 0;
}

/* Device state in, then cont: the guest runs. */
static bool load_and_run(qr *r, GError **errp)
{
    g_autofree char *cat = NULL;

    r->q = sl_qmp_accept(r->qmp_lfd, r->pidfd, QMP_TIMEOUT_MS, errp);
    if (!r->q) {
        return false;
    }
    r->t_qmp = cli_now_ms();
    cat = g_strdup_printf("cat '%s'", r->o->eager ? r->o->eager : r->devstate);
    if (!sl_qmp_ok(r->q, "migrate-set-capabilities", r->o->eager ? caps_full : caps_ignore_shared,
                   errp)) {
        return false;
    }
    r->t_dev0 = cli_now_ms();
    if (!migrate_exec(r->q, "migrate-incoming", cat, errp)) {
        g_prefix_error(errp, "loading the device state: ");
        return false;
    }
    r->t_dev1 = cli_now_ms();
    if (r->o->verify && !r->o->eager && !verify_blocks(r, errp)) {
        return false;
    }
    if (!r->o->paused && !sl_qmp_ok(r->q, "cont", NULL, errp)) {
        return false;
    }
    r->t_run = cli_now_ms();
    return true;
}

/* Waits up to @ms for QEMU to exit and reaps it; says how it ended (or that
 * it is still running; cleanup() then kills it). */
static char *reap_qemu(qr *r, int ms)
{
    struct pollfd p = { .fd = r->pidfd, .events = POLLIN };
    int st = 0;

    while (ms && poll(&p, 1, ms) < 0 && errno == EINTR) {
    }
    if ((ms && !p.revents) || waitpid(r->qemu, &st, 0) != r->qemu) {
        return g_strdup("still running; killed");
    }
    r->qemu = 0;
    return WIFEXITED(st) ? g_strdup_printf("exited with status %d", WEXITSTATUS(st))
                         : g_strdup_printf("was killed by signal %d", WTERMSIG(st));
}

/* Blocks until the daemon reports the end of the restore. */
static bool wait_restore(qr *r, GError **errp)
{
    g_autoptr(GIOChannel) ch = g_io_channel_unix_new(r->stats_fd);
    struct pollfd p[2] = { { .fd = r->stats_fd, .events = POLLIN },
                           { .fd = r->pidfd, .events = POLLIN } };
    gsize len;

    while (poll(p, 2, -1) < 0 && errno == EINTR) {
    }
    if (!p[0].revents && p[1].revents) {
        g_autofree char *how = reap_qemu(r, 0);
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QEMU %s before every page was in place", how);
        return false;
    }
    if (g_io_channel_read_line(ch, &r->stats, &len, NULL, NULL) != G_IO_STATUS_NORMAL) {
        /* The client inside QEMU ends it when the daemon goes away: give it
         * the time to say so before cleanup() kills what is left. */
        g_autofree char *how = reap_qemu(r, QEMU_DEATH_GRACE_MS);
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "the restore daemon ended without a result "
                    "(QEMU %s)", how);
        return false;
    }
    g_strchomp(r->stats);
    if (!strstr(r->stats, "\"status\": 0,")) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "the restore failed: %s", r->stats);
        return false;
    }
    r->t_done = cli_now_ms();
    return true;
}

/* Integer member @key of the daemon's JSON stats line @stats, or -1. */
static gint64 stats_member(const char *stats, const char *key)
{
    g_autoptr(JsonNode) n = stats ? json_from_string(stats, NULL) : NULL;
    JsonObject *o = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;

    return o && json_object_has_member(o, key) ? json_object_get_int_member(o, key) : -1;
}

/* @b - @a in ms, or NAN when either moment was not reached. */
static double span(double a, double b)
{
    return a > 0 && b > 0 ? b - a : NAN;
}

/*
 * What the run measured, in text or --json.  After a failure, @error says
 * why, and every figure not reached is null (JSON) or left out (text): the
 * phases that did happen, and the daemon's figures if it reported any.
 */
static void report(const qr *r, const char *error)
{
    cli_json j;
    g_autofree char *text = NULL;

    if (!r->o->json) {
        if (r->t_run > 0) {
            printf("QEMU started to guest running: %.1f ms (device state %.1f ms)\n",
                   r->t_run - r->t0, r->t_dev1 - r->t_dev0);
        }
        if (!r->o->eager && r->t_done > 0) {
            printf("every page in place: %.1f ms after QEMU started\n", r->t_done - r->t0);
        }
        if (!r->o->eager && r->stats) {
            printf("restore: %s\n", r->stats);
        }
        if (r->o->verify && !error) {
            printf("verify: %" G_GUINT64_FORMAT " mismatching pages\n", r->verify_mismatches);
        }
        if (error) {
            printf("failed: %s\n", error);
        }
        fflush(stdout);
        return;
    }
    json_begin(&j);
    json_str(&j, "mode", r->o->eager ? "eager" : "lazy");
    json_str(&j, "status", error ? "failed" : "ok");
    if (error) {
        json_str(&j, "error", error);
    }
    json_double(&j, "time_to_running_ms", r->o->paused ? -1 : span(r->t0, r->t_run));
    json_double(&j, "qemu_start_ms", span(r->t0, r->t_qmp));
    json_double(&j, "device_state_ms", span(r->t_dev0, r->t_dev1));
    json_double(&j, "running_after_device_state_ms", span(r->t_dev1, r->t_run));
    if (!r->o->eager) {
        json_double(&j, "time_to_complete_ms", span(r->t0, r->t_done));
        json_int(&j, "faults", stats_member(r->stats, "faults"));
        json_int(&j, "pages_placed_twice", stats_member(r->stats, "pages_placed_twice"));
        json_raw(&j, "restore", r->stats ? r->stats : "null");
    }
    if (r->o->verify && !error) {
        json_str(&j, "verify", r->verify_mismatches ? "mismatch" : "ok");
        json_u64(&j, "verify_mismatches", r->verify_mismatches);
    }
    text = json_end(&j);
    printf("%s\n", text);
    fflush(stdout);
}

static bool prepare(qr *r, GError **errp)
{
    if (!(r->snap = sl_snapshot_open(r->o->snap, errp)) || !match_backends(r, errp) ||
        !(r->tmp = g_dir_make_tmp("snapload-qemu-XXXXXX", errp))) {
        return false;
    }
    r->dsock = r->o->socket ? g_strdup(r->o->socket) : g_build_filename(r->tmp, "daemon.sock", NULL);
    r->qsock = g_build_filename(r->tmp, "qmp.sock", NULL);
    if (!sl_qemu_fresh_files(r->backends, errp)) {
        return false;
    }
    if (!r->o->eager && (!write_device_state(r, errp) || !start_daemon(r, errp))) {
        return false;
    }
    r->qmp_lfd = listen_unix(r->qsock, errp);
    return r->qmp_lfd >= 0 && spawn_qemu(r, errp);
}

/* Waits for QEMU to exit (after quitting it when asked); its exit status. */
static int finish_qemu(qr *r)
{
    int st = 0;

    if (r->qemu <= 0) {
        return 0;
    }
    if (r->q && r->o->quit_when_done) {
        sl_qmp_ok(r->q, "quit", NULL, NULL);
    }
    sl_qmp_close(g_steal_pointer(&r->q));
    if (waitpid(r->qemu, &st, 0) < 0) {
        return 1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void cleanup(qr *r)
{
    if (r->qemu > 0) {
        kill(r->qemu, SIGKILL);
        waitpid(r->qemu, NULL, 0);
    }
    if (r->daemon > 0) {
        kill(r->daemon, SIGTERM);
        waitpid(r->daemon, NULL, 0);
    }
    sl_qmp_close(r->q);
    if (r->devstate) {
        unlink(r->devstate);
    }
    if (r->qsock) {
        unlink(r->qsock);
    }
    if (r->tmp) {
        rmdir(r->tmp);
    }
    g_free(r->devstate);
    g_free(r->dsock);
    g_free(r->qsock);
    g_free(r->tmp);
    g_free(r->stats);
    if (r->backends) {
        g_ptr_array_unref(r->backends);
    }
    sl_snapshot_close(r->snap);
    for (unsigned i = 0; i < 3; i++) {
        int fd = (int[]){ r->stats_fd, r->qmp_lfd, r->pidfd }[i];
        if (fd >= 0) {
            close(fd);
        }
    }
}

static int run(const qr_opts *o)
{
    qr r = { .o = o, .stats_fd = -1, .qmp_lfd = -1, .pidfd = -1 };
    g_autoptr(GError) err = NULL;
    bool ok = prepare(&r, &err) && load_and_run(&r, &err) && (o->eager || wait_restore(&r, &err));
    int ret;

    if (!ok) {
        if (r.t0 > 0) { /* QEMU was started: say what happened up to the failure */
            report(&r, err->message);
        }
        ret = cli_fail_error(g_steal_pointer(&err));
        cleanup(&r);
        return ret;
    }
    report(&r, NULL);
    ret = finish_qemu(&r);
    r.qemu = 0;
    if (r.daemon > 0) {
        int st = 0;
        waitpid(r.daemon, &st, 0);
        r.daemon = 0;
    }
    cleanup(&r);
    return ret;
}

int cmd_qemu_restore(int argc, char **argv)
{
    g_autofree char *eager = NULL, *sock = NULL;
    gboolean json = false, verify = false, paused = false, quit = false;
    gint threads = -1;
    GOptionEntry entries[] = {
        { "json", 0, 0, G_OPTION_ARG_NONE, &json, "print one JSON object", NULL },
        { "verify", 0, 0, G_OPTION_ARG_NONE, &verify, "before the guest runs, compare every "
          "page of guest RAM with the snapshot (time to running then includes it)", NULL },
        { "paused", 0, 0, G_OPTION_ARG_NONE, &paused, "leave the guest paused after the device "
          "state load (cont it yourself, e.g. over your own -qmp)", NULL },
        { "quit-when-done", 0, 0, G_OPTION_ARG_NONE, &quit, "quit QEMU once every page is in place", NULL },
        { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "loaders per NUMA node (0: faults only)", "N" },
        { "socket", 0, 0, G_OPTION_ARG_FILENAME, &sock, "the daemon's socket, for more consumers "
          "such as vhost-user back-ends (default: private)", "PATH" },
        { "eager", 0, 0, G_OPTION_ARG_FILENAME, &eager, "instead: time stock QEMU's eager load "
          "of a full migration stream (qemu-save --full-stream)", "STREAM" },
        { NULL },
    };
    qr_opts o = { 0 };
    int dash = -1;

    for (int i = 1; i < argc && dash < 0; i++) {
        dash = strcmp(argv[i], "--") ? -1 : i;
    }
    if (dash < 0 || dash + 1 >= argc) {
        return cli_fail("qemu-restore needs SNAP -- QEMU ARGS... (the guest's QEMU command line "
                        "without -incoming)");
    }
    o.qemu_argv = argv + dash + 1;
    argc = dash;
    if (!cli_parse("SNAP -- QEMU ARGS... - run a QEMU guest while its RAM streams in", entries,
                   &argc, &argv)) {
        return 2;
    }
    if (argc != 2) {
        return cli_fail("qemu-restore needs exactly one SNAP before --");
    }
    o = (qr_opts){ .snap = argv[1], .qemu_argv = o.qemu_argv, .eager = eager, .json = json,
                   .verify = verify, .paused = paused, .quit_when_done = quit, .threads = threads,
                   .socket = sock };
    return run(&o);
}
