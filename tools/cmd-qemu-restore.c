/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload qemu-restore SNAP -- QEMU ARGS...`: stock QEMU (7.2 and later)
 * as the consumer of a lazy restore, without patching it.  SNAP is our
 * container (qemu-save) or QEMU's own mapped-ram file (`migrate file:`).
 *
 * Each block of SNAP that QEMU's arguments name as guest RAM is lazy: a
 * memory-backend-file (share=on, on /dev/shm or hugetlbfs: recreated empty,
 * restored in MINOR mode), or anonymous RAM (plain -m, memory-backend-ram:
 * MISSING mode, pages placed with UFFDIO_COPY into QEMU).  The restore
 * daemon (a child) serves those blocks; QEMU starts with the LD_PRELOAD
 * client, which hands each such mapping to the daemon as QEMU makes it;
 * qemu-restore checks that every one was registered where QEMU says its
 * RAM block lives (`info ramblock`), loads the device state with
 * `-incoming defer` + `migrate-incoming`, and `cont`s at once: the guest
 * runs while its RAM streams in.  Other blocks of a QEMU file (ROMs and
 * the like) are small and QEMU loads them with the device state.
 *
 * The device state comes without a shell where QEMU can read files (9.0
 * and later): our container's section straight from SNAP (`file:SNAP,
 * offset=N`, its checksum checked first), or, for QEMU's file, a sparse
 * copy of it in which the lazy blocks' bitmaps are empty, so that QEMU's
 * mapped-ram load finds none of their pages and touches none of their
 * memory.  QEMU 7.2 gets our section through `exec:cat`.  SNAP is never
 * written to.  With --eager FILE it instead times QEMU's own eager load of
 * FILE (a mapped-ram file, with --multifd N threads, or a full stream), the
 * same way, for comparison.  docs/qemu.md describes both.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <json-glib/json-glib.h>
#include "cli.h"
#include "client.h"
#include "daemon.h"
#include "written.h"
#include "migration/format/format.h"
#include "qemu.h"
#include "qemu-migrate.h"
#include "qemu-verify.h"
#include "qemu-restore.h"
#include "migration/uffd.h"

#define QMP_TIMEOUT_MS 30000

/* ------------------------------ the blocks ------------------------------ */

static guint k_of(GPtrArray *a, gpointer p)
{
    guint k = 0;

    g_ptr_array_find(a, p, &k);
    return k;
}

/* The guest-RAM backend of QEMU's arguments called @name, or NULL. */
static sl_qemu_backend *backend_named(GPtrArray *all, const char *name)
{
    for (guint k = 0; k < all->len; k++) {
        sl_qemu_backend *b = g_ptr_array_index(all, k);
        if (!strcmp(b->id, name)) {
            return b;
        }
    }
    return NULL;
}

#define EAGER_NOTE_BYTES (16u << 20) /* ROMs, BIOS, ACPI tables stay below */

/*
 * Says that QEMU loads block @bi itself, before the guest runs, when it is
 * large enough to be guest RAM (found by testing: a memfd backend or a
 * virtio-mem device's RAM went eager without a word).
 */
static void eager_note(char **argv, const sl_block_info *bi, const sl_qemu_backend *found)
{
    g_autofree char *kind = found ? NULL : sl_qemu_args_object_type(argv, bi->name);

    if (bi->length < EAGER_NOTE_BYTES) {
        return;
    }
    fprintf(stderr, "snapload: note: block '%s' (%" G_GUINT64_FORMAT " MiB) is loaded by QEMU "
            "itself before the guest runs: %s%s%s\n", bi->name, bi->length >> 20,
            found ? "it is shared anonymous memory (memory-backend-ram,share=on), which no "
                    "lazy restore serves"
            : kind ? "it is a " : "QEMU's arguments hold no memory-backend-file or "
                                  "memory-backend-ram of that id (a device's memory, such as "
                                  "virtio-mem's, is named after the device)",
            kind ? kind : "", kind ? ", which no lazy restore serves" : "");
}

/*
 * --reuse-ram and --track-writes on a kernel that cannot track writes (no
 * asynchronous uffd write-protection, Linux 6.7+: Debian 12's 6.1): the
 * views are registered plainly, so the run keeps no list of written pages.
 */
static void untracked_note(const qr *r)
{
    if (r->o->track && !r->o->eager && !sl_uffd_has_features(SL_UFFD_TRACK_FEATURES)) {
        fprintf(stderr, "snapload: note: this kernel cannot track writes (asynchronous "
                "userfaultfd write-protection, Linux 6.7+): this run leaves no list of "
                "written pages, so the next --reuse-ram checks every page and a child "
                "save reads all of guest RAM\n");
    }
}

/*
 * Which blocks are lazy: those QEMU's arguments name as guest RAM.  In our
 * container every block must be; in QEMU's file the others load eagerly.
 */
static bool match_backends(qr *r, GError **errp)
{
    g_autoptr(GPtrArray) all = sl_qemu_args_backends(r->o->qemu_argv, errp);
    unsigned n = sl_snapshot_n_blocks(r->snap);
    bool qemu_file = sl_snapshot_get_format(r->snap) == SL_FORMAT_QEMU;

    if (!all) {
        return false;
    }
    if (sl_qemu_args_mem_path(r->o->qemu_argv)) {
        /* Found by testing: taken for anonymous pc.ram, the restore waited
         * 12 s for a registration that never came. */
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "-mem-path %s: legacy file RAM, a private "
                    "mapping no lazy restore can serve (--eager loads it); use -machine "
                    "memory-backend=ID with -object memory-backend-file,id=ID,mem-path=FILE,"
                    "share=on,size=...", sl_qemu_args_mem_path(r->o->qemu_argv));
        return false;
    }
    r->lazy = g_new0(bool, n);
    r->backends = g_ptr_array_new_with_free_func((GDestroyNotify)sl_qemu_backend_free);
    r->serve = g_ptr_array_new_with_free_func(g_free);
    for (unsigned i = 0; i < n; i++) {
        sl_block_info bi;
        sl_qemu_backend *found;
        sl_snapshot_block(r->snap, i, &bi);
        found = backend_named(all, bi.name);
        if (found && found->size != bi.length) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "snapshot block '%s' has %"
                        G_GUINT64_FORMAT " bytes, QEMU's '%s' %" G_GUINT64_FORMAT, bi.name,
                        bi.length, found->id, found->size);
            return false;
        }
        if (!found && !qemu_file) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "snapshot block '%s' (%" G_GUINT64_FORMAT
                        " bytes) has no memory-backend-file or -ram of id '%s' and that size in "
                        "the QEMU arguments", bi.name, bi.length, bi.name);
            return false;
        }
        if (found && !found->mem_path && found->share && !qemu_file) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s' is shared "
                        "anonymous memory (memory-backend-ram,share=on): the restore serves "
                        "private anonymous memory or share=on files; drop share=on, or put it "
                        "in a memory-backend-file on /dev/shm", found->id);
            return false;
        }
        if (!found || !sl_snapshot_block_in_file(r->snap, i) || (!found->mem_path && found->share)) {
            /* QEMU loads it (x-ignore-shared kept it in its file; or it is shared
             * anonymous memory, which the preload client does not register) */
            if (!found || sl_snapshot_block_in_file(r->snap, i)) {
                eager_note(r->o->qemu_argv, &bi, found); /* not one kept in its memory file */
            }
            continue;
        }
        r->lazy[i] = true;
        g_ptr_array_add(r->serve, g_strdup(bi.name));
        g_ptr_array_add(r->backends, g_ptr_array_steal_index(all, k_of(all, found)));
    }
    g_ptr_array_add(r->serve, NULL);
    return true;
}

/* The memory files to recreate: the lazy ones, or every file backend (eager). */
static bool fresh_files(qr *r, GError **errp)
{
    g_autoptr(GPtrArray) files = g_ptr_array_new();
    g_autoptr(GPtrArray) all = NULL;
    GPtrArray *from = r->backends;

    if (r->o->eager) {
        if (!(all = sl_qemu_args_backends(r->o->qemu_argv, errp))) {
            return false;
        }
        from = all;
    }
    for (guint i = 0; i < from->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(from, i);
        /* recreated or rewritten: never a file of the snapshot (found by review) */
        if (b->mem_path && cli_refuse_chain_file(b->mem_path, r->snap, "a guest RAM file",
                                                 errp)) {
            return false;
        }
        /* found by a user test: the list was written over the RAM file at the end */
        if (b->mem_path && r->o->record && cli_same_file(r->o->record, b->mem_path)) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--record %s is the RAM file of "
                        "memory backend '%s': the hot list must be another file",
                        r->o->record, b->id);
            return false;
        }
        if (b->mem_path) {
            g_ptr_array_add(files, b);
        }
    }
    if (r->o->reuse_ram) {
        for (guint i = 0; i < r->backends->len; i++) {
            sl_qemu_backend *b = g_ptr_array_index(r->backends, i);
            if (!b->mem_path) {
                g_ptr_array_add(files, b); /* refused there, by name */
            }
        }
        return sl_qemu_reuse_files(files, r->locks, errp);
    }
    return sl_qemu_fresh_files(files, r->locks, errp);
}

/*
 * The blocks for the preload client: NAME=PATH or NAME=anon:BYTES,
 * ';'-separated; with @files_only (for back-ends, which cannot share
 * QEMU's anonymous RAM) the files alone.
 */
static gint by_order(gconstpointer a, gconstpointer b)
{
    const sl_qemu_backend *x = *(sl_qemu_backend *const *)a, *y = *(sl_qemu_backend *const *)b;

    return x->order < y->order ? -1 : x->order > y->order;
}

/*
 * SNAPLOAD_BLOCKS for the preload client, in the order QEMU allocates its
 * backends: it takes each anonymous mapping for the first unregistered
 * block of that size, so two of one size must come as QEMU maps them
 * (found by testing: a hotplugged DIMM the size of -m, in snapshot order,
 * had pc.ram's pages placed into its memory, and the restore refused).
 */
static char *blocks_env(const qr *r, bool files_only)
{
    GString *s = g_string_new(NULL);
    g_autoptr(GPtrArray) sorted = g_ptr_array_sized_new(r->backends->len); /* borrowed */

    for (guint i = 0; i < r->backends->len; i++) {
        g_ptr_array_add(sorted, g_ptr_array_index(r->backends, i));
    }
    g_ptr_array_sort(sorted, by_order);
    for (guint i = 0; i < sorted->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(sorted, i);
        if (files_only && !b->mem_path) {
            continue;
        }
        g_string_append_printf(s, "%s%s=", s->len ? ";" : "", b->id);
        if (b->mem_path) {
            g_string_append(s, b->mem_path);
        } else {
            g_string_append_printf(s, "anon:%" G_GUINT64_FORMAT, b->size);
        }
    }
    return g_string_free(s, false);
}

/* --------------------------- daemon and QEMU ---------------------------- */

/* False with @errp set once one of the signals cli_interrupt watches came. */
static bool not_interrupted(const qr *r, GError **errp)
{
    int sig = cli_interrupt_signal(r->intr);

    if (sig) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "interrupted by %s", strsignal(sig));
    }
    return !sig;
}

/*
 * In a child of ours (the daemon, QEMU): SIGKILL when we die, so that no
 * guest ever runs on without its supervisor, even if we are killed
 * ourselves.  @opaque is our pid: if we died before the prctl, go now.
 */
static void die_with_parent(gpointer opaque)
{
    cli_interrupt_child();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != (pid_t)GPOINTER_TO_INT(opaque)) {
        raise(SIGKILL);
    }
}

/* Forks the daemon (serving the lazy blocks); returns once its socket listens. */
static bool start_daemon(qr *r, GError **errp)
{
    int ready[2], stats[2];
    pid_t self = getpid();
    g_autofree char *written_dir = r->o->track ? sl_written_dir() : NULL;
    char c;

    if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(stats, O_CLOEXEC) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "pipe: %s", g_strerror(errno));
        return false;
    }
    r->daemon = fork();
    if (r->daemon == 0) {
        die_with_parent(GINT_TO_POINTER(self));
        sl_daemon_opts d = { .snapshot = r->o->snap, .parents = r->o->parents,
                             .socket = r->dsock, .exit_when_done = true,
                             .quiet = !g_getenv("SNAPLOAD_DEBUG"), .ready_fd = ready[1],
                             .stats_fd = stats[1],
                             .serve = (const char *const *)r->serve->pdata,
                             .record = r->o->record,
                             .written_dir = written_dir,
                             .ignore_lists = r->o->check_all || !r->o->reuse_ram };
        d.cfg = (sl_restore_config){ .size = sizeof(d.cfg),
                                     .loader_threads = r->o->threads > 0 ? (unsigned)r->o->threads : 0,
                                     .no_loaders = r->o->threads == 0,
                                     .keep_memory = r->o->reuse_ram,
                                     .place_by_copy = r->o->by_copy,
                                     .fault_around = r->o->around };
        close(ready[0]);
        close(stats[0]);
        _exit(sl_daemon_run(&d));
    }
    close(ready[1]);
    close(stats[1]);
    r->stats_fd = stats[0];
    r->stats_ch = g_io_channel_unix_new(r->stats_fd);
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
    int fd;

    if (strlen(path) >= sizeof(a.sun_path)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "QMP socket %s: longer than the %zu bytes "
                    "a unix socket path may have (set TMPDIR to a shorter directory)", path,
                    sizeof(a.sun_path) - 1);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
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

/* The preload library: $SNAPLOAD_PRELOAD, beside our binary, or installed. */
char *cli_find_preload(GError **errp)
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
            found = g_steal_pointer(&cand[i]);
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
        g_autofree char *pre = cli_find_preload(errp);
        g_autofree char *blocks = blocks_env(r, false);
        if (!pre) {
            return false;
        }
        env = g_environ_setenv(env, "LD_PRELOAD", pre, true);
        env = g_environ_setenv(env, "SNAPLOAD_SOCKET", r->dsock, true);
        env = g_environ_setenv(env, "SNAPLOAD_BLOCKS", blocks, true);
        env = g_environ_setenv(env, "SNAPLOAD_EXE", exe, true);
        if (r->o->track) { /* what it writes: for the next restart, and a child's save */
            env = g_environ_setenv(env, "SNAPLOAD_TRACK", "1", true);
        }
    }
    r->t0 = cli_now_ms();
    if (!g_spawn_async(NULL, (char **)argv->pdata, env,
                       G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH, die_with_parent,
                       GINT_TO_POINTER(getpid()), &r->qemu, errp)) {
        return false;
    }
    r->pidfd = (int)syscall(SYS_pidfd_open, r->qemu, 0);
    cli_interrupt_target(r->intr, r->pidfd);
    return true;
}

/*
 * The environment of a process that registers its mappings of guest RAM
 * files with the daemon at @dsock (@blocks: NAME=PATH;...): this library
 * preloaded, and no SNAPLOAD_EXE (it acts in whatever runs).  NULL with
 * @errp set if the library is not found.
 */
char **cli_consumer_env(char **env, const char *dsock, const char *blocks, bool track,
                        GError **errp)
{
    g_autofree char *pre = cli_find_preload(errp);

    if (!pre) {
        g_strfreev(env);
        return NULL;
    }
    env = g_environ_setenv(env, "LD_PRELOAD", pre, true);
    env = g_environ_setenv(env, "SNAPLOAD_SOCKET", dsock, true);
    env = g_environ_setenv(env, "SNAPLOAD_BLOCKS", blocks, true);
    env = track ? g_environ_setenv(env, "SNAPLOAD_TRACK", "1", true)
                : g_environ_unsetenv(env, "SNAPLOAD_TRACK");
    return g_environ_unsetenv(env, "SNAPLOAD_EXE");
}

/* Writes the file blocks beside the daemon's socket, for `snapload attach`. */
static bool write_blocks_file(qr *r, GError **errp)
{
    g_autofree char *blocks = blocks_env(r, true);

    if (!*blocks) {
        return true; /* anonymous RAM only: nothing a back-end could map */
    }
    r->blocks_file = g_strconcat(r->dsock, ".blocks", NULL);
    if (r->o->track) { /* `snapload attach` tracks the back-end's writes too */
        char *with = g_strconcat(blocks, "\ntrack", NULL);
        g_free(blocks);
        blocks = with;
    }
    return g_file_set_contents_full(r->blocks_file, blocks, -1, G_FILE_SET_CONTENTS_NONE,
                                    0600, errp);
}

#define VU_READY_MS 10000 /* a back-end's socket must appear within this */

/* Waits until back-end @pid (the last of r->vu_pids) has created its
 * socket @path (or died: reaped, it leaves r->vu_pids, so that its pid,
 * free for reuse, is never signalled at the end: found by review). */
static bool wait_vu_socket(qr *r, pid_t pid, const char *path, GError **errp)
{
    int64_t deadline = g_get_monotonic_time() + VU_READY_MS * (int64_t)1000;

    switch (cli_wait_socket(path, pid, cli_interrupt_fd(r->intr), deadline)) {
    case CLI_WAIT_DONE:
        return true;
    case CLI_WAIT_EXITED:
        waitpid(pid, NULL, 0);
        g_array_remove_index(r->vu_pids, r->vu_pids->len - 1);
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "--vhost-user: the back-end for %s "
                    "exited before creating its socket", path);
        return false;
    case CLI_WAIT_INTERRUPTED:
        return not_interrupted(r, errp);
    default:
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "--vhost-user: no socket %s after %d s",
                    path, VU_READY_MS / 1000);
        return false;
    }
}

/*
 * Starts each --vhost-user SOCKET=COMMAND back-end registered with the
 * daemon (as `snapload attach` would; plainly for --eager) and waits for
 * its socket, so that QEMU finds it; a stale socket file is removed first.
 */
static bool start_vhost_users(qr *r, GError **errp)
{
    g_autofree char *blocks = r->o->eager ? g_strdup("-") : blocks_env(r, true);

    r->vu_pids = g_array_new(false, false, sizeof(pid_t));
    for (char **vu = r->o->vhost_user; vu && *vu; vu++) {
        const char *eq = strchr(*vu, '=');
        g_autofree char *path = eq ? g_strndup(*vu, (gsize)(eq - *vu)) : NULL;
        g_auto(GStrv) argv = NULL;
        g_auto(GStrv) env = NULL;
        struct stat st;
        GPid pid;

        if (!path || !*path || !*blocks || !g_shell_parse_argv(eq + 1, NULL, &argv, errp)) {
            if (errp && !*errp) {
                g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--vhost-user wants SOCKET=COMMAND "
                            "and guest RAM in files (memory-backend-file), got '%s'", *vu);
            }
            return false;
        }
        if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            unlink(path);
        }
        env = r->o->eager ? g_get_environ()
                          : cli_consumer_env(g_get_environ(), r->dsock, blocks,
                                             r->o->track, errp);
        if (!env ||
            !g_spawn_async(NULL, argv, env, G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD,
                           die_with_parent, GINT_TO_POINTER(getpid()), &pid, errp)) {
            return false;
        }
        g_array_append_val(r->vu_pids, pid);
        if (!wait_vu_socket(r, pid, path, errp)) {
            return false;
        }
    }
    return true;
}

/* Ends the back-ends we started (SIGTERM, then SIGKILL after 5 s). */
static void stop_vhost_users(qr *r)
{
    for (guint i = 0; r->vu_pids && i < r->vu_pids->len; i++) {
        pid_t pid = g_array_index(r->vu_pids, pid_t, i);
        kill(pid, SIGTERM);
        if (!cli_exits_by(pid, g_get_monotonic_time() + 5 * G_USEC_PER_SEC)) {
            kill(pid, SIGKILL);
        }
        waitpid(pid, NULL, 0);
    }
    if (r->vu_pids) {
        g_array_set_size(r->vu_pids, 0);
    }
}

/* ------------------------------ the load -------------------------------- */

/* QEMU's file, lazily: the sparse device stream without the lazy blocks' pages. */
static bool load_qemu_file(qr *r, GError **errp)
{
    sl_qemu_caps caps = { .mapped_ram = true, .ignore_shared = r->snap->qemu->ignore_shared };

    r->devstate = g_build_filename(r->tmp, "device-stream", NULL);
    r->load_uri = sl_qemu_file_uri(r->devstate, 0);
    return sl_qemu_write_device_stream(r->snap, r->devstate, r->lazy, errp) &&
           sl_qemu_set_caps(r->q, &caps, errp) &&
           (r->t_dev0 = cli_now_ms(), sl_qemu_migrate(r->q, "migrate-incoming", r->load_uri, errp));
}

/* Our container's device-state section: read from SNAP where QEMU reads files. */
static bool load_container(qr *r, GError **errp)
{
    g_autoptr(GBytes) dev = sl_snapshot_read_section(r->snap, SL_SECTION_DEVICE_STATE, errp);
    sl_qemu_caps caps = { .ignore_shared = true };
    g_autoptr(GError) probe = NULL;
    const sl_section *sec = NULL;

    for (unsigned i = 0; i < r->snap->nsections && !sec; i++) {
        sec = r->snap->sections[i].type == SL_SECTION_DEVICE_STATE ? &r->snap->sections[i] : NULL;
    }
    if (!dev || !sec) { /* the read checked its checksum: QEMU reads what was checked */
        g_prefix_error(errp, "device-state section: ");
        return false;
    }
    if (sl_qemu_has_capability(r->q, "mapped-ram", &probe)) { /* QEMU >= 9.0: file: URIs */
        r->load_uri = sl_qemu_file_uri(r->o->snap, sec->offset);
    } else {
        g_autofree char *cat = NULL;
        r->devstate = g_build_filename(r->tmp, "device-state", NULL);
        if (!g_file_set_contents(r->devstate, g_bytes_get_data(dev, NULL),
                                 (gssize)g_bytes_get_size(dev), errp)) {
            return false;
        }
        g_autofree char *quoted = g_shell_quote(r->devstate);
        cat = g_strdup_printf("cat %s", quoted);
        r->load_uri = sl_qemu_exec_uri(cat);
    }
    r->t_dev0 = cli_now_ms();
    return sl_qemu_set_caps(r->q, &caps, errp) &&
           sl_qemu_migrate(r->q, "migrate-incoming", r->load_uri, errp);
}

/* QEMU's own eager load of --eager FILE: a mapped-ram file, or a full stream. */
static bool load_eager(qr *r, GError **errp)
{
    sl_snapshot *f = sl_snapshot_open(r->o->eager, NULL);
    g_autofree char *chans = g_strdup_printf("{\"multifd-channels\": %d}", MAX(r->o->multifd, 1));
    sl_qemu_caps caps = { 0 };

    /* A `cat` that fails leaves QEMU in migration setup for good, spinning
     * (found by review): a file that cannot be read is refused here. */
    if (!f && access(r->o->eager, R_OK) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "--eager %s: %s", r->o->eager,
                    g_strerror(errno));
        return false;
    }
    if (f && sl_snapshot_get_format(f) == SL_FORMAT_QEMU) {
        caps = (sl_qemu_caps){ .mapped_ram = true, .ignore_shared = f->qemu->ignore_shared,
                               .multifd = r->o->multifd > 0 };
        r->load_uri = sl_qemu_file_uri(r->o->eager, 0);
    } else {
        g_autofree char *quoted = g_shell_quote(r->o->eager);
        g_autofree char *cat = g_strdup_printf("cat %s", quoted);
        r->load_uri = sl_qemu_exec_uri(cat);
    }
    sl_snapshot_close(f);
    if (!sl_qemu_set_caps(r->q, &caps, errp) ||
        (caps.multifd && !sl_qmp_ok(r->q, "migrate-set-parameters", chans, errp))) {
        return false;
    }
    r->t_dev0 = cli_now_ms();
    return sl_qemu_migrate(r->q, "migrate-incoming", r->load_uri, errp);
}

/*
 * --verify: every page of the lazy blocks against the snapshot.  QEMU's
 * anonymous memory can only be read from outside once its pages are in
 * place (a read of a missing page through /proc/PID/mem fails, it does not
 * fault), so with an anonymous block the restore is first let complete.
 */
static bool verify(qr *r, GError **errp)
{
    bool anon = false;

    for (guint i = 0; i < r->backends->len; i++) {
        anon |= ((sl_qemu_backend *)g_ptr_array_index(r->backends, i))->mem_path == NULL;
    }
    if (anon && r->o->threads == 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--verify of anonymous guest RAM needs "
                    "loaders (not --threads 0): it reads QEMU's memory once it is all there");
        return false;
    }
    return (!anon || qr_wait_restore(r, errp)) &&
           sl_qemu_verify(r->q, r->snap, r->backends, r->dsock, &r->verify_mismatches, errp);
}

/* Device state in (checked registrations first), then cont: the guest runs. */
static bool load_and_run(qr *r, GError **errp)
{
    g_autoptr(GError) err = NULL;
    sl_qemu_settings settings;
    bool ok;

    r->q = sl_qmp_accept(r->qmp_lfd, r->pidfd, QMP_TIMEOUT_MS, errp);
    if (!r->q || !sl_qemu_settings_read(r->q, &settings, errp)) {
        return false;
    }
    r->t_qmp = cli_now_ms();
    if (r->o->eager) {
        ok = load_eager(r, errp);
    } else {
        ok = qr_check_registrations(r, errp) &&
             (sl_snapshot_get_format(r->snap) == SL_FORMAT_QEMU ? load_qemu_file(r, errp)
                                                                 : load_container(r, errp));
    }
    if (!ok) {
        g_prefix_error(errp, "loading the device state: ");
        sl_qemu_settings_clear(&settings);
        return false;
    }
    r->t_dev1 = cli_now_ms();
    if ((r->o->verify && !r->o->eager && !verify(r, errp)) ||
        (!r->o->paused && !sl_qmp_ok(r->q, "cont", NULL, errp))) {
        sl_qemu_settings_clear(&settings);
        return false;
    }
    r->t_run = cli_now_ms();
    /* The guest runs first; then QEMU's next migration (the user's own,
     * say) starts from QEMU's settings, not this load's. */
    if (!sl_qemu_settings_put_back(r->q, &settings, &err)) {
        fprintf(stderr, "snapload: warning: %s\n", err->message);
    }
    sl_qemu_settings_clear(&settings);
    return true;
}


/* ---------------------------- the command ------------------------------- */

/* Our container must hold a device state for QEMU: checked before any RAM
 * file is touched (QEMU's own file always has one after its RAM). */
static bool has_device_state(const qr *r, GError **errp)
{
    if (r->o->eager || r->snap->format == SL_FORMAT_QEMU) {
        return true;
    }
    for (unsigned i = 0; i < r->snap->nsections; i++) {
        if (r->snap->sections[i].type == SL_SECTION_DEVICE_STATE) {
            return true;
        }
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s has no device-state section (saved from "
                "raw images without --device-state?): QEMU cannot resume from it", r->o->snap);
    return false;
}

/*
 * The machine type the snapshot's stream names in its configuration
 * section ("QEVM", version, 0x07, be32 length, the name), or NULL: QEMU's
 * file says it once parsed; our container's device state is read for it
 * (its first bytes: the load checks the whole section later).
 */
static char *saved_machine(const qr *r)
{
    uint8_t head[4 + 4 + 1 + 4 + 256];

    if (r->snap->qemu) {
        return g_strdup(r->snap->qemu->machine);
    }
    for (unsigned i = 0; i < r->snap->nsections; i++) {
        const sl_section *sec = &r->snap->sections[i];
        uint32_t len;
        if (sec->type != SL_SECTION_DEVICE_STATE || sec->length < 13 ||
            !sl_read_at(sec->fd, head, MIN(sec->length, sizeof(head)), sec->offset, "", NULL) ||
            memcmp(head, "QEVM", 4) || head[8] != 0x07) {
            continue;
        }
        len = sl_be32(head + 9);
        return len <= 256 && 13 + len <= MIN(sec->length, sizeof(head))
                   ? g_strndup((const char *)head + 13, len) : NULL;
    }
    return NULL;
}

/*
 * QEMU's -machine makes the snapshot's machine type, checked before any
 * RAM file is made again: QEMU would refuse the device state only once
 * started, the RAM files already recreated empty (found by a user's test:
 * a q35 snapshot restored with -machine pc).
 */
static bool machine_fits(const qr *r, GError **errp)
{
    g_autofree char *saved = saved_machine(r);

    return sl_qemu_args_machine_fits(r->o->qemu_argv, saved, errp);
}

/*
 * --socket PATH must not be served already (a daemon answers a connection
 * there: another restore runs on it): refused before any RAM file is made,
 * so that a refused restore touches nothing.  A stale socket file is fine
 * (the daemon replaces it).
 */
static bool socket_free(const char *path, GError **errp)
{
    if (sl_client_probe(path) == 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--socket %s: a restore daemon already "
                    "serves it (another restore uses it): give this one another path",
                    path);
        return false;
    }
    return true;
}

static bool prepare(qr *r, GError **errp)
{
    untracked_note(r);
    r->registered = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    r->locks = g_array_new(false, false, sizeof(int));
    if ((r->o->socket && !socket_free(r->o->socket, errp)) ||
        !(r->snap = cli_open_snapshot(r->o->snap, r->o->parents, 0, errp)) ||
        (r->o->record && cli_refuse_output(r->o->record, r->snap, "the hot list", errp)) ||
        !has_device_state(r, errp) || !machine_fits(r, errp) ||
        (!r->o->eager && !match_backends(r, errp)) ||
        !(r->tmp = cli_run_dir_make(NULL, "snapload-qemu-", &r->tmp_lock, errp))) {
        return false;
    }
    if (!r->backends) {
        r->backends = g_ptr_array_new_with_free_func((GDestroyNotify)sl_qemu_backend_free);
    }
    r->dsock = r->o->socket ? g_strdup(r->o->socket) : g_build_filename(r->tmp, "daemon.sock", NULL);
    r->qsock = g_build_filename(r->tmp, "qmp.sock", NULL);
    if (!fresh_files(r, errp)) {
        return false;
    }
    if (!r->o->eager && r->backends->len == 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "no block of %s is guest RAM that QEMU's "
                    "arguments name (memory-backend-file/-ram ids, or pc.ram of plain -m): "
                    "nothing to restore lazily; QEMU's own load of the file takes every kind "
                    "(qemu-restore %s --eager %s -- ...)", r->o->snap, r->o->snap, r->o->snap);
        return false;
    }
    if ((!r->o->eager && (!start_daemon(r, errp) || !write_blocks_file(r, errp))) ||
        !start_vhost_users(r, errp)) {
        return false;
    }
    r->qmp_lfd = listen_unix(r->qsock, errp);
    return r->qmp_lfd >= 0 && not_interrupted(r, errp) && spawn_qemu(r, errp);
}

/* Waits for QEMU to exit (after quitting it when asked); its exit status. */
/* Reads and drops what the daemon has written; false once it closed its end. */
static bool drain_daemon_lines(qr *r)
{
    char buf[4096];
    ssize_t n = read(r->stats_fd, buf, sizeof(buf));

    return n > 0 || (n < 0 && errno == EINTR);
}

/*
 * Waits for child @pid (@pfd: its pidfd) to end and reaps it into *@st.
 * Meanwhile the daemon's lines are read and dropped: after the restore's
 * result nobody needs them, but a daemon whose pipe is full blocks in its
 * write, and with it every consumer that registers (a back-end, a save),
 * and then never exits (found by review: about a thousand registrations
 * after completion hung qemu-restore for good).  On a signal to us,
 * @pid gets SIGTERM once (QEMU gets it already, from cli_interrupt).
 */
static bool wait_draining(qr *r, pid_t pid, int pfd, int *st)
{
    struct pollfd p[3] = { { .fd = pfd, .events = POLLIN },
                           { .fd = r->stats_fd, .events = POLLIN },
                           { .fd = cli_interrupt_fd(r->intr), .events = POLLIN } };
    bool termed = false;

    if (r->stats_ch) {
        g_clear_pointer(&r->stats_ch, g_io_channel_unref); /* no line is read as a line now */
    }
    while (pfd >= 0 && !p[0].revents) {
        if (poll(p, 3, -1) < 0 && errno != EINTR) {
            break;
        }
        if (p[1].revents && !drain_daemon_lines(r)) {
            p[1].fd = -1;
        }
        if (p[2].revents && !termed) {
            kill(pid, SIGTERM);
            termed = true;
            p[2].fd = -1;
        }
    }
    return waitpid(pid, st, 0) == pid;
}

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
    if (!wait_draining(r, r->qemu, r->pidfd, &st)) {
        return 1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* After QEMU: the daemon ends once its registered back-ends are gone. */
static void finish_daemon(qr *r)
{
    int pfd = (int)syscall(SYS_pidfd_open, r->daemon, 0), st = 0;

    wait_draining(r, r->daemon, pfd, &st);
    if (pfd >= 0) {
        close(pfd);
    }
    r->daemon = 0;
}

static void cleanup(qr *r)
{
    if (r->qemu > 0) {
        kill(r->qemu, SIGKILL);
        waitpid(r->qemu, NULL, 0);
    }
    stop_vhost_users(r);
    if (r->daemon > 0) {
        kill(r->daemon, SIGTERM);
        waitpid(r->daemon, NULL, 0);
    }
    if (r->blocks_file) {
        unlink(r->blocks_file);
    }
    /* Our private socket, left if the daemon was killed (a --socket path
     * elsewhere may be another daemon's: its own exit removes ours). */
    if (r->dsock && r->tmp && g_str_has_prefix(r->dsock, r->tmp)) {
        unlink(r->dsock);
    }
    sl_qmp_close(r->q);
    for (unsigned i = 0; i < 2; i++) {
        const char *f = (const char *[]){ r->devstate, r->qsock }[i];
        if (f) {
            unlink(f);
        }
    }
    cli_run_dir_release(r->tmp, r->tmp_lock);
    if (r->stats_ch) {
        g_io_channel_unref(r->stats_ch);
    }
    g_free(r->devstate);
    g_free(r->blocks_file);
    if (r->vu_pids) {
        g_array_unref(r->vu_pids);
    }
    g_free(r->dsock);
    g_free(r->qsock);
    g_free(r->tmp);
    g_free(r->stats);
    g_free(r->load_uri);
    g_free(r->lazy);
    if (r->backends) {
        g_ptr_array_unref(r->backends);
    }
    if (r->serve) {
        g_ptr_array_unref(r->serve);
    }
    if (r->registered) {
        g_hash_table_unref(r->registered);
    }
    sl_snapshot_close(r->snap);
    cli_interrupt_stop(r->intr); /* before its target, the pidfd, is closed */
    if (r->locks) {
        sl_qemu_unlock_files(r->locks); /* QEMU is gone: the files are free */
        g_array_unref(r->locks);
    }
    for (unsigned i = 0; i < 3; i++) {
        int fd = (int[]){ r->stats_fd, r->qmp_lfd, r->pidfd }[i];
        if (fd >= 0) {
            close(fd);
        }
    }
}

/*
 * After a failure: QEMU and the back-ends ended, then the daemon, whose
 * last line carries the figures it reached, for the report.
 */
static void end_for_report(qr *r)
{
    if (r->qemu > 0) {
        kill(r->qemu, SIGKILL);
        waitpid(r->qemu, NULL, 0);
        r->qemu = 0;
    }
    stop_vhost_users(r);
    if (r->daemon > 0) {
        kill(r->daemon, SIGTERM);
        qr_final_figures(r);
        waitpid(r->daemon, NULL, 0);
        r->daemon = 0;
    }
}

static int run(const qr_opts *o)
{
    qr r = { .o = o, .stats_fd = -1, .qmp_lfd = -1, .pidfd = -1, .tmp_lock = -1,
             .intr = cli_interrupt_start() };
    g_autoptr(GError) err = NULL;
    bool ok = prepare(&r, &err) && load_and_run(&r, &err) && (o->eager || qr_wait_restore(&r, &err));
    int ret, sig = cli_interrupt_signal(r.intr);

    if (!ok) {
        g_autofree char *why = sig ? NULL : qr_daemon_failure(&r);
        if (!err) { /* every failure should say why; never a NULL message */
            g_set_error(&err, SL_ERROR, SL_ERROR_IO, "failed, and the step that failed gave "
                        "no reason");
        }
        if (sig) { /* whatever failed, it failed because we ended QEMU */
            g_clear_error(&err);
            g_set_error(&err, SL_ERROR, SL_ERROR_IO, "interrupted by %s: QEMU, the restore "
                        "and the back-ends we started were ended", strsignal(sig));
        } else if (why) { /* the cause first, then what it did to QEMU */
            g_prefix_error(&err, "%s%s; then: ",
                           g_str_has_prefix(why, "restore failed") ? "" : "the restore failed: ",
                           why);
        }
        if (r.t0 > 0) { /* QEMU was started: say what happened up to the failure */
            end_for_report(&r);
            qr_report(&r, err->message);
        } else if (o->json) { /* a caller parsing stdout gets its object all the same */
            qr_report(&r, err->message);
        }
        ret = cli_fail_error(g_steal_pointer(&err));
        cleanup(&r);
        return sig ? 128 + sig : ret;
    }
    qr_report(&r, NULL);
    ret = finish_qemu(&r);
    r.qemu = 0;
    stop_vhost_users(&r);
    if (r.daemon > 0) {
        finish_daemon(&r);
    }
    cleanup(&r);
    return ret; /* QEMU's status: the restore completed (docs/qemu.md) */
}

/* qemu-restore's options as given, before they are checked. */
typedef struct {
    char *eager, *sock, *record, *around;
    char **vhost_user, **parents;
    gboolean json, verify, paused, quit, reuse, check_all, track, by_copy;
    gint threads, multifd;
} qr_raw;

static void raw_clear(qr_raw *w)
{
    g_free(w->eager);
    g_free(w->sock);
    g_free(w->record);
    g_free(w->around);
    g_strfreev(w->parents);
    g_strfreev(w->vhost_user);
}

/* Parses the options before "--" (@argc of them) into @w; false on a bad one. */
static bool parse_raw(int *argc, char ***argv, qr_raw *w)
{
    GOptionEntry entries[] = {
        { "json", 0, 0, G_OPTION_ARG_NONE, &w->json, "print one JSON object", NULL },
        { "verify", 0, 0, G_OPTION_ARG_NONE, &w->verify, "before the guest runs, compare every "
          "page of guest RAM with the snapshot (time to running then includes it)", NULL },
        { "paused", 0, 0, G_OPTION_ARG_NONE, &w->paused, "leave the guest paused after the device "
          "state load (cont it yourself, e.g. over your own -qmp)", NULL },
        { "quit-when-done", 0, 0, G_OPTION_ARG_NONE, &w->quit, "quit QEMU once every page is in place", NULL },
        { "threads", 0, 0, G_OPTION_ARG_INT, &w->threads, "loaders per NUMA node (0: faults only)", "N" },
        { "place-by-copy", 0, 0, G_OPTION_ARG_NONE, &w->by_copy, "anonymous guest RAM: the daemon "
          "copies every page in (UFFDIO_COPY) instead of handing QEMU whole 2 MiB chunks to move "
          "in (for comparison)", NULL },
        CLI_FAULT_AROUND_OPTION(w->around),
        { "socket", 0, 0, G_OPTION_ARG_FILENAME, &w->sock, "the daemon's socket, for more consumers "
          "such as vhost-user back-ends (default: private)", "PATH" },
        { "eager", 0, 0, G_OPTION_ARG_FILENAME, &w->eager, "instead: time stock QEMU's own eager "
          "load of FILE (QEMU's mapped-ram file, or a full stream from qemu-save "
          "--full-stream)", "FILE" },
        { "multifd", 0, 0, G_OPTION_ARG_INT, &w->multifd, "with --eager of a mapped-ram file: "
          "QEMU loads with N multifd threads", "N" },
        { "record", 0, 0, G_OPTION_ARG_FILENAME, &w->record, "when the restore ends, write the "
          "pages the guest faulted on, in fault order, to FILE: a hot-page list for `snapload "
          "index QEMU-FILE --hot FILE` (with loaders running, only the pages they had not "
          "placed yet; --threads 0 records them all)", "FILE" },
        { "reuse-ram", 0, 0, G_OPTION_ARG_NONE, &w->reuse, "restart over the RAM files a "
          "previous run left: pages they still hold as the snapshot has them are kept, only "
          "the others are restored.  The pages each run writes are tracked and listed for "
          "the next: only those are checked (against the snapshot's checksums), the rest is "
          "kept unread; without a usable list every page is checked", NULL },
        { "check-all", 0, 0, G_OPTION_ARG_NONE, &w->check_all, "with --reuse-ram: check every "
          "page, ignoring the previous run's list (for a RAM file that something untracked "
          "may have written since: on hugetlbfs such writes leave no trace)", NULL },
        { "track-writes", 0, 0, G_OPTION_ARG_NONE, &w->track, "track the pages QEMU and "
          "registered back-ends write (asynchronous uffd write-protection), so that `qemu-save "
          "--parent SNAP` reads only those (--reuse-ram does this too)", NULL },
        { "vhost-user", 0, 0, G_OPTION_ARG_STRING_ARRAY, &w->vhost_user, "start COMMAND, a "
          "vhost-user back-end listening on SOCKET, registered with the restore, before QEMU "
          "(ended after QEMU); repeatable", "SOCKET=COMMAND" },
        CLI_PARENT_OPTION(w->parents),
        { NULL },
    };

    w->threads = CLI_THREADS_UNSET;
    return cli_parse("SNAP -- QEMU ARGS... - run a QEMU guest while its RAM streams in",
                     entries, argc, argv);
}

/* Options that do not go together, as a message; NULL if they do. */
static char *conflict(const qr_raw *w, int argc, char **argv)
{
    if (w->check_all && !w->reuse) {
        return g_strdup("--check-all goes with --reuse-ram");
    }
    if ((w->reuse || w->track) && w->eager) {
        return g_strdup("--reuse-ram and --track-writes go with a lazy restore: not with "
                        "--eager");
    }
    if (w->record && w->eager) {
        return g_strdup("--record records a lazy restore's faults: not with --eager");
    }
    if (w->around && w->eager) {
        return g_strdup("--fault-around goes with a lazy restore: not with --eager");
    }
    if (w->verify && w->eager) {
        return g_strdup("--verify checks the pages a lazy restore placed: not with --eager "
                        "(QEMU's own load checks nothing against the snapshot)");
    }
    if (argc != 2) {
        return argc < 2 ? g_strdup("qemu-restore needs the SNAP to restore before --")
                        : g_strdup_printf("qemu-restore restores one SNAP: '%s' and '%s' "
                                          "before --", argv[1], argv[2]);
    }
    if (w->multifd < 0) {
        return g_strdup_printf("--multifd: %d is not a number of threads", w->multifd);
    }
    for (char **vu = w->vhost_user; vu && *vu; vu++) {
        const char *eq = strchr(*vu, '=');
        g_auto(GStrv) cmd = NULL;

        /* Checked here too, not only where the back-end starts: by then
         * the guest RAM files were made afresh (found by a docs review). */
        if (!eq || eq == *vu || !g_shell_parse_argv(eq + 1, NULL, &cmd, NULL)) {
            return g_strdup_printf("--vhost-user wants SOCKET=COMMAND, got '%s'", *vu);
        }
    }
    return w->multifd && !w->eager ? g_strdup("--multifd goes with --eager (QEMU's own load "
                                              "of a mapped-ram file)") : NULL;
}

/*
 * QEMU options that take the guest away from qemu-restore, as a message
 * (NULL if none): -daemonize forks a QEMU that outlives us unsupervised
 * (found by review: left running, or killed mid-restore, with a wrong
 * status either way); -chroot, -runas and -run-with chroot=/user= change
 * what QEMU can open and who may signal it.
 */
static char *unsupervisable(char **qemu_argv)
{
    for (unsigned i = 1; qemu_argv[i]; i++) {
        const char *a = qemu_argv[i], *o = a + (g_str_has_prefix(a, "--") ? 2 : 1);
        const char *next = qemu_argv[i + 1] ? qemu_argv[i + 1] : "";
        bool bad = a[0] == '-' &&
                   (!strcmp(o, "daemonize") || !strcmp(o, "chroot") || !strcmp(o, "runas") ||
                    (!strcmp(o, "run-with") && (strstr(next, "chroot=") || strstr(next, "user="))));
        if (bad) {
            return g_strdup_printf("QEMU's %s: qemu-restore supervises the QEMU it starts (it "
                                   "serves its RAM, ends it on failure): run QEMU in the "
                                   "foreground, as the user and in the root it starts with", a);
        }
    }
    return NULL;
}

/* Checks @w and runs the restore of SNAP (@argv[1]) with QEMU's @qemu_argv. */
static int run_raw(const qr_raw *w, int argc, char **argv, char **qemu_argv)
{
    g_autofree char *why = conflict(w, argc, argv);

    if (!why) {
        why = unsupervisable(qemu_argv);
    }
    uint32_t around = 0;
    qr_opts o;

    if (why) {
        return cli_usage("%s", why);
    }
    if ((w->around && !cli_parse_around(w->around, &around)) || !cli_check_threads(w->threads)) {
        return 2;
    }
    o = (qr_opts){ .snap = argv[1], .parents = w->parents, .qemu_argv = qemu_argv,
                   .eager = w->eager, .json = w->json, .verify = w->verify,
                   .paused = w->paused, .quit_when_done = w->quit, .threads = w->threads,
                   .socket = w->sock, .multifd = w->multifd, .vhost_user = w->vhost_user,
                   .record = w->record, .reuse_ram = w->reuse, .check_all = w->check_all,
                   .track = w->reuse || w->track, .around = around, .by_copy = w->by_copy };
    return run(&o);
}

/*
 * A command line without QEMU's arguments (no "--" at @dash, or nothing
 * after it): --help prints the options (and exits 0), else the usage error.
 */
static int incomplete(int argc, char **argv, int dash)
{
    bool help = false;
    qr_raw w = { 0 };

    for (int i = 1; i < (dash < 0 ? argc : dash); i++) {
        help |= !strcmp(argv[i], "-h") || g_str_has_prefix(argv[i], "--help");
    }
    if (help) {
        argc = dash < 0 ? argc : dash;
        (void)parse_raw(&argc, &argv, &w); /* GLib prints the help and exits */
        raw_clear(&w);
        return 2;
    }
    return cli_usage("qemu-restore needs %s (the guest's QEMU command line, without "
                     "-incoming)", dash < 0 ? "SNAP -- QEMU ARGS...: no -- came"
                                            : "QEMU's arguments after --");
}

int cmd_qemu_restore(int argc, char **argv)
{
    qr_raw w = { 0 };
    char **qemu_argv;
    int dash = -1, ret;

    for (int i = 1; i < argc && dash < 0; i++) {
        dash = strcmp(argv[i], "--") ? -1 : i;
    }
    if (dash < 0 || dash + 1 >= argc) {
        return incomplete(argc, argv, dash);
    }
    qemu_argv = argv + dash + 1;
    argc = dash;
    ret = parse_raw(&argc, &argv, &w) ? run_raw(&w, argc, argv, qemu_argv) : 2;
    raw_clear(&w);
    return ret;
}
