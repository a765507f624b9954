/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload qemu-save`: a running stock QEMU guest into a snapshot, over
 * QMP, in one of two formats.
 *
 * The default (snapload's container): stop the guest, save its device
 * state with x-ignore-shared (the memory-backend-file RAM stays out of the
 * stream), then read the RAM files and write them with that device state
 * into one snapshot with checksums.  RAM must be in share=on files, or be
 * anonymous (plain -m, memory-backend-ram): then the stream holds it, and
 * it is split off, as QEMU writes it into a pipe (migrate fd:), into
 * files beside the output (qemu-split.c).  While
 * a lazy restore (qemu-restore) still fills them, their holes would read
 * as zeros: the files are then read through views registered with the
 * restore's daemon (found in QEMU's SNAPLOAD_SOCKET), whose missing pages
 * it serves from the snapshot it restores; without one the save refuses.
 * With --parent PARENT, an incremental snapshot: only the pages whose
 * checksum differs from PARENT's are stored (the file grows with the pages
 * the guest changed), PARENT checked against QEMU's backends before the
 * guest is stopped (--ancestor PATH, repeated: PARENT's own parent, then
 * its parent..., where they moved).  All RAM is read and hashed, unless the restore's
 * daemon tracks writes and restores PARENT: then only the pages it lists
 * as written (WRITTEN_QUERY) are.
 *
 * --format qemu: QEMU's own mapped-ram file, written by QEMU itself
 * (`migrate file:` with mapped-ram, multifd threads when asked): one file
 * that plain QEMU loads with `migrate-incoming file:` and snapload restores
 * lazily.  Any kind of guest RAM; QEMU reads it through its own mappings,
 * so a restore still filling them serves what it reads.
 *
 * Before the guest is stopped, the outputs' directories are checked and
 * so is its run state (a guest a previous save left in postmigrate cannot
 * be saved until it ran: said, with what to do).  A save that fails after
 * the stop puts that run state back (a running guest is `cont`ed); one
 * that succeeds leaves the guest stopped, or running with --resume.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"
#include "client.h"
#include "qemu.h"
#include "qemu-migrate.h"
#include "qemu-settings.h"
#include "qemu-verify.h"
#include "migration/format/format.h"
#include "migration/vmas.h"

#define QMP_TIMEOUT_MS 30000

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

/* Migration without a bandwidth cap (QEMU's default is 128 MiB/s). */
static bool unthrottle(sl_qmp *q, GError **errp)
{
    return sl_qmp_ok(q, "migrate-set-parameters", "{\"max-bandwidth\": 1099511627776}", errp);
}

/* Block @name's written pages from the daemon at @dsock, restoring @parent
 * (of identity @id), or NULL with *@why. */
static uint64_t *written_of(const char *dsock, sl_snapshot *parent, const uint8_t *id,
                            const char *name, uint64_t *count, char **why)
{
    g_autoptr(GError) err = NULL;
    int b = sl_snapshot_find_block(parent, name);
    uint64_t *bits = NULL;
    sl_block_info bi;

    if (b < 0 || !sl_snapshot_block(parent, (unsigned)b, &bi) || bi.page_size != 4096) {
        *why = g_strdup_printf("block '%s' of the parent does not have 4 KiB pages", name);
        return NULL;
    }
    if (sl_client_written_pages(dsock, name, id, bi.length / 4096, &bits, why, &err) < 0) {
        *why = g_strdup(err->message);
    }
    *count += bits ? sl_bitmap_count(bits, bi.length / 4096) : 0;
    return bits;
}

/*
 * With the restore's daemon @o->dsock restoring @o->parent: for each RAM
 * file (@raws, FILE:NAME), the pages its tracked mappings wrote since the
 * restore began, the only ones that can differ from the parent, or NULL
 * where the daemon cannot tell (the reason printed: that file is read
 * whole).  NULL when no file has a list.  Records the identity the lists
 * are against in @o, for the child's parent to be checked with.
 */
static GPtrArray *written_lists(cli_save_opts *o, GPtrArray *raws)
{
    g_autoptr(GPtrArray) lists = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GError) err = NULL;
    sl_snapshot *p = cli_open_snapshot(o->parent, o->ancestors, 0, &err);
    bool any = false;

    if (!p || !sl_snapshot_identity(p, o->parent_id, &err)) {
        fprintf(stderr, "snapload: reading all guest RAM: %s\n", err->message);
        sl_snapshot_close(p);
        return NULL;
    }
    o->has_parent_id = true;
    for (guint i = 0; i + 1 < raws->len; i++) {
        const char *name = strrchr(g_ptr_array_index(raws, i), ':') + 1;
        g_autofree char *why = NULL;
        uint64_t count = 0, *bits = written_of(o->dsock, p, o->parent_id, name, &count, &why);
        if (bits) {
            fprintf(stderr, "snapload: block '%s': reading only the %" G_GUINT64_FORMAT
                    " pages the restore's tracked mappings wrote\n", name, count);
        } else {
            fprintf(stderr, "snapload: block '%s': reading all of it: the restore's daemon "
                    "cannot list the pages written: %s\n", name, why);
        }
        g_ptr_array_add(lists, bits);
        any |= bits != NULL;
    }
    sl_snapshot_close(p);
    return any ? g_steal_pointer(&lists) : NULL;
}

/* False if a lazy restore still fills @b's memory file (busy.c) and no
 * daemon (@dsock) serves QEMU, through which the save could read it. */
static bool memory_idle(const sl_qemu_backend *b, const char *dsock, GError **errp)
{
    int fd = open(b->mem_path, O_RDONLY | O_CLOEXEC);
    bool served, ok = fd < 0 || cli_idle_or_served(fd, b->size, b->mem_path, dsock, &served,
                                                   errp);

    if (fd >= 0) {
        close(fd);
    }
    return ok; /* a file we cannot open fails later, with its reason */
}

/* Whether snapshot @o->parent (its ancestors where @o->ancestors says)
 * can be the parent of a save of QEMU's backends @bs: it has checksums (a
 * content identity) and exactly those blocks (names, sizes, and the 4 KiB
 * pages qemu-save writes), and it is not @o->out. */
static bool parent_fits(const cli_save_opts *o, GPtrArray *bs, GError **errp)
{
    const char *path = o->parent, *out = o->out;
    sl_snapshot *p = cli_open_snapshot(path, o->ancestors, 0, errp);
    uint8_t id[SL_IDENTITY_LEN];
    bool ok = p && sl_snapshot_identity(p, id, errp);
    g_autofree int *order = g_new0(int, bs->len + 1);
    sl_block_info bi;

    if (ok && cli_refuse_chain_file(out, p, "the child", errp)) { /* before the guest stops */
        ok = false;
    }
    if (!ok) {
        sl_snapshot_close(p);
        return false; /* not openable, or without checksums: no parent (the error says) */
    }
    ok = sl_snapshot_n_blocks(p) == bs->len;
    for (guint i = 0; ok && i < bs->len; i++) {
        const sl_qemu_backend *b = g_ptr_array_index(bs, i);
        int k = sl_snapshot_find_block(p, b->id);
        ok = k >= 0 && sl_snapshot_block(p, (unsigned)k, &bi) && bi.length == b->size &&
             bi.page_size == 4096;
        order[i] = k;
    }
    /* A child has its parent's blocks in the parent's order, while QEMU
     * lists its objects in no set order (found by review: another object
     * added to QEMU changed it, and the child was refused after the stop). */
    for (guint i = 0; ok && i < bs->len; i++) {
        while (order[i] != (int)i) {
            int k = order[i];
            gpointer t = bs->pdata[k];
            bs->pdata[k] = bs->pdata[i];
            bs->pdata[i] = t;
            order[i] = order[k];
            order[k] = k;
        }
    }
    if (!ok && sl_snapshot_get_format(p) == SL_FORMAT_QEMU) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "parent %s is QEMU's own file: it also "
                    "holds QEMU's ROM blocks, which a child of memory backends cannot follow "
                    "block for block; give a snapshot qemu-save wrote in our container",
                    path);
    } else if (!ok) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "parent %s does not have this QEMU's "
                    "memory backends (the same ids and sizes, 4 KiB pages): it is not a "
                    "snapshot of this guest saved by qemu-save", path);
    } else if (sl_snapshot_chain_length(p) >= SL_MAX_CHAIN) {
        /* Said now, before the guest is stopped, not by the writer after. */
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "parent %s: its chain already holds %u "
                    "snapshots, the most one chain may: `snapload flatten %s -o FULL` and "
                    "save a child of FULL", path, sl_snapshot_chain_length(p), path);
        ok = false;
    }
    sl_snapshot_close(p);
    return ok;
}

/* What mapped_by_qemu() looks for in QEMU's mappings. */
typedef struct {
    struct stat st;
    bool have;             /* @st holds the file's identity (it exists) */
    bool found;
} file_search;

/* sl_vmas_each() callback: stops at a mapping of the file searched for. */
static bool find_file(const sl_vma *v, void *opaque)
{
    file_search *fs = opaque;

    fs->found = fs->have && v->dev == fs->st.st_dev && v->ino == (uint64_t)fs->st.st_ino;
    return !fs->found;
}

/*
 * @b's file is the one QEMU maps (its /proc/PID/maps names the file's
 * device and inode): a RAM file removed or replaced since QEMU opened it is
 * not the guest's memory, and saving it would store another memory under
 * this guest's device state.  Unchecked when QEMU's pid is unknown.
 */
static bool mapped_by_qemu(sl_qmp *q, const sl_qemu_backend *b, GError **errp)
{
    pid_t pid = sl_qmp_peer_pid(q);
    file_search fs = { .found = false };

    fs.have = stat(b->mem_path, &fs.st) == 0;
    if (fs.have && S_ISDIR(fs.st.st_mode)) { /* said as qemu-restore says it (a user's test) */
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': mem-path %s is a "
                    "directory: QEMU made an unlinked file in it, which no save can read by "
                    "name; name a file (or use --format qemu)", b->id, b->mem_path);
        return false;
    }
    if (pid <= 0 || !sl_vmas_each(pid, 0, UINT64_MAX, false, find_file, &fs, NULL) || fs.found) {
        return true; /* QEMU maps it, or its mappings cannot be read (unchecked) */
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': %s is not the file QEMU "
                "(pid %d) maps as guest RAM: it was removed or replaced since QEMU opened it, "
                "so it does not hold this guest's memory", b->id, b->mem_path, (int)pid);
    return false;
}

/*
 * Whether @b's file is its guest RAM and nothing else, as the save reads
 * it: from offset 0, its whole length.  Found by review: with offset= (or
 * a file larger than size=) the snapshot held the file's first bytes, not
 * guest RAM.  Checked before the guest is stopped.
 */
static bool file_is_ram(const sl_qemu_backend *b, GError **errp)
{
    struct stat st;

    if (b->offset) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': offset=%"
                    G_GUINT64_FORMAT " is not supported: this save reads %s from its start "
                    "(--format qemu saves it)", b->id, b->offset, b->mem_path);
        return false;
    }
    if (stat(b->mem_path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size != b->size) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': %s holds %"
                    G_GUINT64_FORMAT " bytes, but its size= is %" G_GUINT64_FORMAT ": this "
                    "save reads the whole file as guest RAM (--format qemu saves it)", b->id,
                    b->mem_path, (uint64_t)st.st_size, b->size);
        return false;
    }
    return true;
}

/*
 * Guest RAM in no file (plain -m, memory-backend-ram): its pages come from
 * the migration stream, split off into files of @tmp (migrate_split()).
 */
typedef struct {
    GPtrArray *names;       /* of the blocks (NULL-terminated once complete) */
    GArray *fds;            /* their files in @tmp, created sparse */
    GArray *sizes;          /* uint64_t: their sizes, as QEMU's backends say */
} stream_ram;

static void stream_ram_clear(stream_ram *sr)
{
    for (guint i = 0; sr->fds && i < sr->fds->len; i++) {
        close(g_array_index(sr->fds, int, i));
    }
    g_clear_pointer(&sr->fds, g_array_unref);
    g_clear_pointer(&sr->sizes, g_array_unref);
    g_clear_pointer(&sr->names, g_ptr_array_unref);
}

/* A file in @tmp for anonymous block @b's pages: its `save --raw` input, or NULL. */
static char *stream_ram_add(stream_ram *sr, const char *tmp, const sl_qemu_backend *b,
                            GError **errp)
{
    g_autofree char *path = g_strdup_printf("%s/ram%u", tmp, sr->names->len);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0 || ftruncate(fd, (off_t)b->size) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
        return NULL;
    }
    cli_interrupt_remove_on_signal(path); /* as large as the guest's RAM */
    g_ptr_array_add(sr->names, g_strdup(b->id));
    g_array_append_val(sr->fds, fd);
    g_array_append_val(sr->sizes, b->size);
    return g_strdup_printf("%s:%s", path, b->id);
}

/*
 * No backend of @bs belongs to a device (ivshmem's, virtio-mem's): it
 * cannot come back from our container (sl_qemu_device_block()).  Found by a
 * user test: the save succeeded and every restore of it was refused.
 * Unchecked where QEMU does not list its RAM blocks.
 */
static bool no_device_memory(sl_qmp *q, GPtrArray *bs, GError **errp)
{
    g_autoptr(GHashTable) names = sl_qemu_ramblock_names(q);

    for (guint i = 0; names && i < bs->len; i++) {
        const sl_qemu_backend *b = g_ptr_array_index(bs, i);
        if (!sl_qemu_refuse_device_block(names, b->id, "save QEMU's own file with --format "
                                         "qemu", errp)) {
            return false;
        }
    }
    return true;
}

/* The RAM files of QEMU's backends as `save --raw` inputs (FILE:NAME),
 * checked against @o->parent if given (served by @o->dsock if busy);
 * anonymous RAM's go to @sr, in @tmp. */
static GPtrArray *raw_inputs(sl_qmp *q, const cli_save_opts *o, const char *tmp,
                             stream_ram *sr, GError **errp)
{
    g_autoptr(GPtrArray) bs = sl_qemu_qmp_backends(q, errp);
    g_autoptr(GPtrArray) raws = g_ptr_array_new_with_free_func(g_free);

    if (!bs) {
        return NULL;
    }
    if (bs->len == 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "this QEMU has no memory backend: "
                    "start it with -m or -object memory-backend-file,share=on,... for its "
                    "RAM, or save QEMU's own file with --format qemu");
        return NULL;
    }
    if (o->parent && !parent_fits(o, bs, errp)) {
        return NULL;
    }
    if (!no_device_memory(q, bs, errp)) {
        return NULL;
    }
    for (guint i = 0; i < bs->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(bs, i);
        char *raw;
        if (!sl_name_printable(b->id) || strlen(b->id) >= SL_NAME_MAX) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': its id, the "
                        "snapshot block's name, must be 1 to %u bytes of UTF-8 text without "
                        "control characters", b->id, SL_NAME_MAX - 1);
            return NULL;
        }
        if (b->anon) {
            if (!(raw = stream_ram_add(sr, tmp, b, errp))) {
                return NULL;
            }
            g_ptr_array_add(raws, raw);
            continue;
        }
        if (!b->mem_path) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s' is shared "
                        "anonymous memory (memory-backend-ram,share=on): it is in no file, and "
                        "x-ignore-shared keeps it out of QEMU's stream", b->id);
            return NULL;
        }
        if (!b->share) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s' is not share=on: "
                        "its RAM is not in %s (--format qemu saves it anyway)", b->id,
                        b->mem_path);
            return NULL;
        }
        if (!file_is_ram(b, errp) || !mapped_by_qemu(q, b, errp) ||
            !memory_idle(b, o->dsock, errp)) {
            return NULL; /* before the guest is stopped: it runs on untouched */
        }
        g_ptr_array_add(raws, g_strdup_printf("%s:%s", b->mem_path, b->id));
    }
    g_ptr_array_add(raws, NULL);
    return g_steal_pointer(&raws);
}

/* The reader's thread: QEMU's stream from a pipe, split or copied. */
typedef struct {
    int in;                 /* the pipe's read end (the thread closes it) */
    const char *dev;
    stream_ram *sr;
    bool split;             /* @sr has anonymous RAM to split off */
    GError *err;            /* the thread's, read after the join */
} split_job;

/* Reads what is left of @fd and drops it, so that QEMU's migration ends. */
static void drain(int fd)
{
    char buf[65536];
    ssize_t r;

    do {
        r = read(fd, buf, sizeof(buf));
    } while (r > 0 || (r < 0 && errno == EINTR));
}

/* The stream from @in copied as it is into @out (@dev). */
static bool copy_stream(int in, int out, const char *dev, GError **errp)
{
    char buf[65536];
    uint64_t at = 0;
    ssize_t r;
    int ret;

    while ((r = read(in, buf, sizeof(buf))) != 0) {
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QEMU's stream: %s", g_strerror(errno));
            return false;
        }
        if ((ret = sl_pwrite_full(out, buf, (size_t)r, at)) < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", dev, g_strerror(-ret));
            return false;
        }
        at += (uint64_t)r;
    }
    return true;
}

/* The reader's thread: the pipe into @j->dev, split into @j->sr's files
 * when it holds anonymous RAM, else copied as it is. */
static gpointer take_stream(gpointer opaque)
{
    split_job *j = opaque;
    int out = open(j->dev, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    bool ok = out >= 0;

    if (!ok) {
        g_set_error(&j->err, SL_ERROR, SL_ERROR_IO, "%s: %s", j->dev, g_strerror(errno));
    } else if (j->split) {
        ok = sl_qemu_split_stream(j->in, out, (const char *const *)j->sr->names->pdata,
                                  (const int *)(void *)j->sr->fds->data,
                                  (const uint64_t *)(void *)j->sr->sizes->data,
                                  true /* save_stopped() set x-ignore-shared */, &j->err);
    } else {
        ok = copy_stream(j->in, out, j->dev, &j->err);
    }
    if (out >= 0 && close(out) < 0 && ok) {
        g_set_error(&j->err, SL_ERROR, SL_ERROR_IO, "%s: %s", j->dev, g_strerror(errno));
    }
    drain(j->in); /* after a refusal or a failure, QEMU's migration still ends */
    close(j->in);
    return NULL;
}

#define SPLIT_FD "snapload-split"

/*
 * The device state, into @dev from a pipe (`migrate fd:`, its write end
 * handed to QEMU with `getfd`, read by a thread joined once QEMU closed
 * it: the whole stream is in @dev when this returns).  With anonymous RAM
 * @sr in the stream, QEMU's stream is split as QEMU writes it into @sr's
 * files and @dev (sl_qemu_split_stream()): nothing as large as the
 * guest's RAM is written twice, and no disk holds the whole stream.
 * Without, the stream is copied as it is.  (Through `exec:cat > FILE`,
 * QEMU reports the migration completed before it waited for cat, and a
 * slow disk left the device state empty when it was read: found by
 * review.)
 */
static bool migrate_split(sl_qmp *q, const char *dev, stream_ram *sr, GError **errp)
{
    split_job job = { .in = -1, .dev = dev, .sr = sr, .split = sr->names->len > 0 };
    g_autoptr(GError) ignored = NULL;
    GThread *t;
    int p[2];
    bool ok;

    g_ptr_array_add(sr->names, NULL);
    if (pipe2(p, O_CLOEXEC) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "a pipe for QEMU's stream: %s",
                    g_strerror(errno));
        return false;
    }
    fcntl(p[0], F_SETPIPE_SZ, 1 << 20); /* fewer wake-ups; a smaller pipe works too */
    ok = sl_qmp_getfd(q, SPLIT_FD, p[1], errp);
    close(p[1]); /* QEMU's copy is the only writer: its end is the stream's end */
    if (!ok) {
        close(p[0]);
        return false;
    }
    job.in = p[0];
    t = g_thread_new("split", take_stream, &job);
    ok = unthrottle(q, errp) && sl_qemu_migrate(q, "migrate", "fd:" SPLIT_FD, errp);
    if (!ok) {
        /* A migration still running (our wait ended first: a timeout, a
         * QMP error) keeps the pipe open: cancelled, QEMU closes it.  One
         * refused before it took the fd leaves QEMU holding it: closed. */
        sl_qmp_ok(q, "migrate_cancel", NULL, &ignored);
        g_clear_error(&ignored);
        sl_qmp_ok(q, "closefd", "{\"fdname\": \"" SPLIT_FD "\"}", &ignored);
    }
    g_thread_join(t);
    if (!ok) { /* QEMU's reason; the splitter saw the stream end early */
        g_clear_error(&job.err);
        return false;
    }
    if (job.err) {
        g_propagate_error(errp, job.err);
        return false;
    }
    return true;
}

/* QEMU's migration into `cat > @path`. */
static bool migrate_to_cat(sl_qmp *q, const char *path, GError **errp)
{
    g_autofree char *qpath = g_shell_quote(path);
    g_autofree char *fcat = g_strdup_printf("cat > %s", qpath);
    g_autofree char *uri = sl_qemu_exec_uri(fcat);

    return unthrottle(q, errp) && sl_qemu_migrate(q, "migrate", uri, errp);
}

/*
 * A full stream (RAM included) to @full, for the eager comparison.  A new
 * file (@in_place false: the partial file beside the name) is copied from
 * QEMU's pipe as migrate_split() copies the device state: whole when this
 * returns whatever QEMU does with an exec: child, and its write errors are
 * ours, naming the file.  A pipe or a device (@in_place) is written by
 * `exec:cat`, which blocks on it as a reader wants, without holding
 * qemu-save; its reader sees the end when cat ends.
 */
static bool save_full_stream(sl_qmp *q, const char *full, bool in_place, GError **errp)
{
    stream_ram none = { g_ptr_array_new(), NULL, NULL };
    sl_qemu_caps caps = { 0 };
    bool ok = sl_qemu_set_caps(q, &caps, errp) &&
              (in_place ? migrate_to_cat(q, full, errp) : migrate_split(q, full, &none, errp)) &&
              wait_postmigrate(q, errp) && sl_qmp_ok(q, "cont", NULL, errp) &&
              sl_qmp_ok(q, "stop", NULL, errp);

    stream_ram_clear(&none);
    return ok;
}

/* Stops the guest and writes its device state to @dev (after a full stream
 * to @full when asked, a new file unless @full_in_place; with anonymous RAM
 * @sr split off it), then the snapshot @out. */
static int save_stopped(sl_qmp *q, GPtrArray *raws, const char *dev, const char *full,
                        bool full_in_place, stream_ram *sr, cli_save_opts *o, GError **errp)
{
    sl_qemu_caps caps = { .ignore_shared = true };
    double t0, dev_ms;
    int ret;

    if (!sl_qmp_ok(q, "stop", NULL, errp) || (full && !save_full_stream(q, full, full_in_place, errp)) ||
        !sl_qemu_set_caps(q, &caps, errp)) {
        return -1;
    }
    t0 = cli_now_ms();
    if (!migrate_split(q, dev, sr, errp)) {
        return -1;
    }
    dev_ms = cli_now_ms() - t0;
    o->devstate = dev;
    /* The guest is stopped: what its mappings wrote is final. */
    g_autoptr(GPtrArray) lists = o->parent && o->dsock ? written_lists(o, raws) : NULL;
    o->written = lists ? (uint64_t *const *)lists->pdata : NULL;
    ret = cli_save((char **)raws->pdata, o);
    if (ret == 0) {
        fprintf(stderr, "snapload: saved %u RAM block(s) and the device state (%.1f ms) to %s\n",
                raws->len - 1, dev_ms, o->out);
    }
    return ret;
}

/* Saves into @o->out (a child of @o->parent if set), @full too if set. */
static int save_container(sl_qmp *q, const char *full, cli_save_opts o, GError **errp)
{
    /* The daemon serving QEMU, if a restore runs: its preload client's socket. */
    g_autofree char *dsock = sl_client_env_of(sl_qmp_peer_pid(q), "SNAPLOAD_SOCKET");
    g_autoptr(GPtrArray) raws = NULL;
    g_autofree char *dir = g_path_get_dirname(o.out), *dev = NULL;
    /* Beside the snapshot: anonymous RAM passes through it, as large as the
     * guest's; one a killed save left is removed here (rundir.c). */
    int lock = -1;
    g_autofree char *tmp = cli_run_dir_make(dir, ".snapload-save-", &lock, errp);
    stream_ram sr;
    int ret = -1;

    if (!tmp) {
        return -1;
    }
    sr = (stream_ram){ g_ptr_array_new_with_free_func(g_free),
                       g_array_new(false, false, sizeof(int)),
                       g_array_new(false, false, sizeof(uint64_t)) };
    o.dsock = dsock;
    dev = g_build_filename(tmp, "device-state", NULL);
    cli_interrupt_remove_on_signal(dev);
    raws = raw_inputs(q, &o, tmp, &sr, errp);
    if (raws) {
        /* The full stream too is written beside its name and renamed once
         * the whole save succeeded: a failed or interrupted one leaves no
         * cut stream there, nor truncates an earlier one (found by review). */
        struct stat st;
        bool in_place = full && stat(full, &st) == 0 && !S_ISREG(st.st_mode); /* a pipe... */
        g_autofree char *full_tmp = full && !in_place ? cli_partial_path(full) : NULL;
        ret = save_stopped(q, raws, dev, full_tmp ? full_tmp : full, in_place, &sr, &o, errp);
        if (full_tmp && !cli_finish_partial(full_tmp, full, ret == 0, errp) && ret == 0) {
            ret = -1; /* a failure before was said already, or is in @errp */
        }
    }
    /* On every return the temporary directory goes; on a signal its files
     * (cli_interrupt_remove_on_signal()), the empty directory stays. */
    for (guint i = 0; i < sr.fds->len; i++) {
        g_autofree char *ram = g_strdup_printf("%s/ram%u", tmp, i);
        unlink(ram);
    }
    stream_ram_clear(&sr);
    unlink(dev);
    cli_run_dir_release(tmp, lock);
    return ret;
}

/*
 * QEMU's own mapped-ram file: `migrate file:@out` with mapped-ram (and
 * @multifd channels if > 0), the guest stopped first.  QEMU writes it
 * beside @out, renamed over it once the migration completed: a failed save
 * (a full disk) leaves no file, which would otherwise read as a guest whose
 * pages are all zero.  QEMU's errors name @out, not that partial file.
 */
static int save_qemu_file(sl_qmp *q, const char *out, int multifd, GError **errp)
{
    g_autofree char *tmp = cli_partial_path(out);
    g_autofree char *uri = sl_qemu_file_uri(tmp, 0);
    g_autofree char *chans = g_strdup_printf("{\"multifd-channels\": %d}", MAX(multifd, 1));
    sl_qemu_caps caps = { .mapped_ram = true, .multifd = multifd > 0 };
    double t0 = cli_now_ms();
    bool ok;

    ok = sl_qmp_ok(q, "stop", NULL, errp) && sl_qemu_set_caps(q, &caps, errp) &&
         (multifd == 0 || sl_qmp_ok(q, "migrate-set-parameters", chans, errp)) &&
         unthrottle(q, errp) && sl_qemu_migrate(q, "migrate", uri, errp);
    if (!cli_finish_partial(tmp, out, ok, errp)) {
        return -1;
    }
    fprintf(stderr, "snapload: QEMU saved its mapped-ram file %s (%.1f ms)\n", out,
            cli_now_ms() - t0);
    return 0;
}

/*
 * Whether @path (the file --@opt names) can be written: its directory
 * exists and takes new files (a file created beside it, then removed).
 * Checked before the guest is stopped, naming @path as the user gave it.
 */
static bool can_write(const char *opt, const char *path, GError **errp)
{
    g_autofree char *probe = cli_partial_path(path);
    g_autofree char *dir = g_path_get_dirname(path);
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600), e = errno;

    if (fd >= 0) {
        close(fd);
        unlink(probe);
    }
    cli_interrupt_keep(probe);
    if (fd < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s %s cannot be written: %s: %s "
                    "(nothing was saved; the guest was not stopped)", opt, path, dir,
                    g_strerror(e));
    }
    return fd >= 0;
}

/* -o @path is a regular file or none yet: a FIFO, a device or a directory
 * is never replaced by the finished snapshot (cli_finish_partial() would
 * refuse it after the whole save: found by review), so it is refused here,
 * before the guest is stopped. */
static bool regular_or_new(const char *path, GError **errp)
{
    struct stat st;

    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "-o %s exists and is not a regular file "
                    "(nothing was saved; the guest was not stopped)", path);
        return false;
    }
    return true;
}

/*
 * The guest's run state before the save (@before), checked: QEMU refuses
 * to migrate a guest that a previous migration left stopped (postmigrate)
 * until it ran again, so that is said, with what to do, before anything.
 */
static char *state_before(sl_qmp *q, GError **errp)
{
    g_autofree char *st = sl_qmp_status(q, errp);

    if (st && !strcmp(st, "postmigrate")) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the guest is still paused from a "
                    "previous save (QEMU's run state postmigrate), and QEMU refuses to save it "
                    "again until it has run: resume it with `cont` over QMP first (or give "
                    "qemu-save --resume, which does that after saving)");
        return NULL;
    }
    return g_steal_pointer(&st);
}

/* Runs the guest again after a save (QEMU leaves it in postmigrate). */
static bool resume(sl_qmp *q, GError **errp)
{
    return wait_postmigrate(q, errp) && sl_qmp_ok(q, "cont", NULL, errp);
}

/*
 * After a failed save: the guest back in the run state @before it had (a
 * running one `cont`ed; a paused one left paused, but no longer in
 * postmigrate, which would refuse the next save), saying so.
 */
static void put_back(sl_qmp *q, const char *before)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *now = wait_postmigrate(q, &err) ? sl_qmp_status(q, &err) : NULL;
    bool run = before && !strcmp(before, "running");

    if (!now || !before || !strcmp(now, before)) {
        if (!now) {
            fprintf(stderr, "snapload: the guest's run state after the failed save is "
                    "unknown: %s\n", err ? err->message : "QEMU's answer had none");
        }
        return;
    }
    if ((run || !strcmp(now, "postmigrate")) && sl_qmp_ok(q, "cont", NULL, &err) &&
        (run || sl_qmp_ok(q, "stop", NULL, &err))) {
        fprintf(stderr, "snapload: the guest %s again, as before the save\n",
                run ? "runs (cont)" : "is paused");
    } else if (err) {
        fprintf(stderr, "snapload: the guest stays %s (it was %s before the save): %s; "
                "`cont` over QMP runs it\n", now, before, err->message);
    }
}

/* qemu-save's options. */
typedef struct {
    char *sock, *out, *full, *format, *parent;
    char **ancestors;
    gboolean quit, resume;
    gint multifd;
} qs_args;

/* What is wrong with @a's options (@argc left after parsing), or NULL. */
static char *bad_usage(const qs_args *a, int argc, char **argv)
{
    bool qemu_fmt = a->format && !strcmp(a->format, "qemu");

    if (a->format && !qemu_fmt && strcmp(a->format, "snapload")) {
        return g_strdup_printf("--format: '%s' is not a format: snapload (the default) or "
                               "qemu", a->format);
    }
    if (!a->sock || !a->out) {
        return g_strdup_printf("qemu-save needs %s", !a->sock ? "--qmp SOCKET (QEMU's QMP "
                               "server)" : "-o SNAP (the snapshot to write)");
    }
    if (argc != 1) {
        return g_strdup_printf("qemu-save takes no argument besides its options: '%s'",
                               argv[1]);
    }
    if (qemu_fmt && (a->full || a->parent)) {
        return g_strdup_printf("%s goes with our container: not with --format qemu (QEMU "
                               "writes its own file)", a->full ? "--full-stream" : "--parent");
    }
    if (a->multifd < 0 || (a->multifd && !qemu_fmt)) {
        return a->multifd < 0 ? g_strdup_printf("--multifd: %d is not a number of threads",
                                                a->multifd)
                              : g_strdup("--multifd goes with --format qemu (QEMU's own "
                                         "writer)");
    }
    if (a->ancestors && !a->parent) {
        return g_strdup("--ancestor names PARENT's own parent: it goes with --parent");
    }
    return a->quit && a->resume ? g_strdup("--quit and --resume: choose one") : NULL;
}

/* QEMU's migration settings back as @s holds them, or a warning saying
 * which are not; the record of them (@record) goes once they are back. */
static void settings_back(sl_qmp *q, sl_qemu_settings *s, const char *record)
{
    g_autoptr(GError) err = NULL;

    if (!sl_qemu_settings_put_back(q, s, &err)) {
        fprintf(stderr, "snapload: warning: %s: QEMU keeps the migration capabilities and "
                "parameters this save set (query-migrate-capabilities shows them)\n",
                err->message);
    } else if (record) {
        (void)unlink(record);
    }
    sl_qemu_settings_clear(s);
}

/*
 * QEMU's migration settings before this save: those a killed save of the
 * same QEMU recorded (@record) and could not put back, else QEMU's own,
 * recorded for the next save in case this one is killed.
 */
static bool settings_before(sl_qmp *q, const char *record, sl_qemu_settings *s, GError **errp)
{
    g_autoptr(GError) err = NULL;

    if (sl_qemu_settings_load_record(record, s)) {
        fprintf(stderr, "snapload: note: a qemu-save of this QEMU ended before it could put "
                "back QEMU's migration settings (record %s): the settings recorded from before "
                "it are put back at the end of this save\n", record);
        return true;
    }
    if (!sl_qemu_settings_read(q, s, errp)) {
        return false;
    }
    if (record && !sl_qemu_settings_write_record(record, s, &err)) {
        fprintf(stderr, "snapload: warning: no record of QEMU's migration settings (%s): if "
                "this save is killed, QEMU keeps what it set\n", err->message);
    }
    return true;
}

/* --full-stream @a->full names no file of the chain of --parent (written in
 * place, it would destroy it: found by review). */
static bool full_stream_fits(const qs_args *a, GError **errp)
{
    sl_snapshot *p;
    bool ok;

    if (!a->full || !a->parent) {
        return true;
    }
    p = cli_open_snapshot(a->parent, a->ancestors, 0, errp);
    ok = p && !cli_refuse_chain_file(a->full, p, "the full stream", errp);
    sl_snapshot_close(p);
    return ok;
}

/*
 * -o and --full-stream name no memory backend's file (checked before the
 * guest is stopped).  Found by a user test: --format qemu -o the guest's
 * own RAM file renamed the migration file over it, and QEMU went on on
 * the deleted file; the container's own check came only after the stop.
 * Found by review before: a full stream renamed over the RAM file put the
 * stream where the guest's RAM was.
 */
static bool outputs_are_not_ram(sl_qmp *q, const qs_args *a, GError **errp)
{
    /* Backends this cannot list (the container's own check names them)
     * stop nothing here: QEMU's own file saves them as they are. */
    g_autoptr(GPtrArray) bs = sl_qemu_qmp_backends(q, NULL);

    for (guint i = 0; bs && i < bs->len; i++) {
        const sl_qemu_backend *b = g_ptr_array_index(bs, i);
        const char *hit = !b->mem_path ? NULL
                          : cli_same_file(a->out, b->mem_path) ? "-o"
                          : a->full && cli_same_file(a->full, b->mem_path) ? "--full-stream"
                          : NULL;
        if (hit) {
            bool out = !strcmp(hit, "-o");
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s %s is the RAM file of memory "
                        "backend '%s': the %s must be another file", hit, out ? a->out : a->full,
                        b->id, out ? "snapshot" : "full stream");
            return false;
        }
    }
    return true;
}

/*
 * Saves as @a asks over @q: the outputs checked and the guest's run state
 * and migration settings read before it is stopped; after a failure that
 * state is put back, after success the guest runs again with --resume.
 * The settings are put back either way (not before --quit).  An exit status.
 */
static int save_guest(sl_qmp *q, const qs_args *a, cli_interrupt *intr, GError **errp)
{
    g_autofree char *before = NULL;
    g_autofree char *record = sl_qemu_settings_record_path(sl_qmp_peer_pid(q));
    bool qemu_fmt = a->format && !strcmp(a->format, "qemu");
    sl_qemu_settings settings;
    int ret;

    if (!can_write("-o", a->out, errp) || !regular_or_new(a->out, errp) ||
        (a->full && !can_write("--full-stream", a->full, errp)) ||
        !full_stream_fits(a, errp) || !outputs_are_not_ram(q, a, errp) ||
        !(before = state_before(q, errp)) || !settings_before(q, record, &settings, errp)) {
        return cli_fail_error(g_steal_pointer(errp));
    }
    ret = qemu_fmt ? save_qemu_file(q, a->out, a->multifd, errp)
                   : save_container(q, a->full, (cli_save_opts){ .psize = 4096, .out = a->out,
                                    .parent = a->parent, .ancestors = a->ancestors,
                                    .intr = intr }, errp);
    /* From here on QEMU is answered to the end, signal or not: the save
     * is complete, or what it changed is being put back. */
    sl_qmp_set_cancel(q, -1);
    if (ret < 0 && cli_interrupt_signal(intr)) {
        g_clear_error(errp);
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "interrupted by %s: nothing was saved",
                    strsignal(cli_interrupt_signal(intr)));
        ret = -1;
    }
    if (ret != 0 || !a->quit) {
        settings_back(q, &settings, record);
    } else { /* QEMU quits: nothing to put back; the record goes once it has */
        sl_qemu_settings_clear(&settings);
    }
    if (ret != 0) {
        ret = ret < 0 ? cli_fail_error(g_steal_pointer(errp)) : ret; /* said first */
        put_back(q, before);
        return ret;
    }
    if (a->resume && !resume(q, errp)) {
        g_prefix_error(errp, "saved %s, but the guest could not be resumed: ", a->out);
        return cli_fail_error(g_steal_pointer(errp));
    }
    if (a->quit && sl_qmp_ok(q, "quit", NULL, NULL) && record) {
        (void)unlink(record); /* after the quit (found by review: before it, a kill in
                               * between left QEMU running with no record) */
    }
    return 0;
}

/*
 * *@path made absolute: QEMU writes the files qemu-save names (file:,
 * exec:cat > ...) from its own working directory, not ours (found by
 * review: a relative -o failed with a message naming no path, and QEMU
 * left the whole guest in a partial file in its own directory).
 */
static void absolute(char **path)
{
    if (*path && !g_path_is_absolute(*path)) {
        /* our directory put before it, nothing collapsed: the kernel goes
         * through a symlink before a "..", and "l/../x" collapsed to our
         * "x" (found by review) */
        g_autofree char *cwd = g_get_current_dir();
        char *abs = g_build_filename(cwd, *path, NULL);
        g_free(*path);
        *path = abs;
    }
}

int cmd_qemu_save(int argc, char **argv)
{
    qs_args a = { 0 };
    GOptionEntry entries[] = {
        { "qmp", 0, 0, G_OPTION_ARG_FILENAME, &a.sock, "QEMU's QMP server socket", "SOCKET" },
        { "output", 'o', 0, G_OPTION_ARG_FILENAME, &a.out, "snapshot to write", "SNAP" },
        { "format", 0, 0, G_OPTION_ARG_STRING, &a.format, "snapload (default: our container "
          "with checksums) or qemu (QEMU's own mapped-ram file, any guest RAM)", "FMT" },
        { "multifd", 0, 0, G_OPTION_ARG_INT, &a.multifd, "--format qemu: QEMU writes with N "
          "multifd threads", "N" },
        { "full-stream", 0, 0, G_OPTION_ARG_FILENAME, &a.full, "also save a full migration "
          "stream (RAM included) for stock QEMU's eager -incoming, to compare with", "FILE" },
        { "parent", 0, 0, G_OPTION_ARG_FILENAME, &a.parent, "an incremental snapshot: only the "
          "pages that differ from PARENT's (a snapshot of this guest)", "PARENT" },
        CLI_ANCESTOR_OPTION(a.ancestors),
        { "resume", 0, 0, G_OPTION_ARG_NONE, &a.resume, "run the guest again after saving "
          "(`cont`; without it the guest stays stopped, and QEMU saves it again only once it "
          "ran)", NULL },
        { "quit", 0, 0, G_OPTION_ARG_NONE, &a.quit, "quit QEMU after saving", NULL },
        { NULL },
    };
    g_autoptr(GError) err = NULL;
    g_autofree char *why = NULL;
    sl_qmp *q;
    int ret;

    if (!cli_parse("- save a running QEMU guest into a snapshot", entries, &argc, &argv)) {
        ret = 2;
    } else if ((why = bad_usage(&a, argc, argv))) {
        ret = cli_usage("%s", why);
    } else if ((absolute(&a.out), absolute(&a.full), a.full && cli_same_file(a.full, a.out))) {
        /* Found by review: both were written as OUT.PID.partial, the full
         * stream's then missing at its rename: exit 1 after a good save.
         * A bad combination: exit 2 (found by a user's test: it was 1). */
        ret = cli_usage("--full-stream %s is -o: the full stream must be another file (nothing "
                        "was saved; the guest was not stopped)", a.full);
    } else {
        /* SIGINT, SIGTERM, SIGHUP: the save stops where it waits or writes,
         * and QEMU's run state and migration settings are put back. */
        cli_interrupt *intr = cli_interrupt_start();
        q = sl_qmp_connect(a.sock, QMP_TIMEOUT_MS, cli_interrupt_fd(intr), &err);
        if (!q && cli_interrupt_signal(intr)) {
            g_clear_error(&err);
            g_set_error(&err, SL_ERROR, SL_ERROR_IO, "interrupted by %s: nothing was saved",
                        strsignal(cli_interrupt_signal(intr)));
        }
        ret = q ? save_guest(q, &a, intr, &err) : cli_fail_error(g_steal_pointer(&err));
        sl_qmp_close(q);
        cli_interrupt_stop(intr);
    }
    g_free(a.sock);
    g_free(a.out);
    g_free(a.full);
    g_free(a.format);
    g_free(a.parent);
    g_strfreev(a.ancestors);
    return ret;
}
