/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Writing snapshots from the command line: the path a child records for
 * its parent and the checks of a --parent-path a user gives (`delta`,
 * `save`; which pages a child stores is sl_writer_write_changed()'s), and
 * the write-beside-then-rename that keeps a failed write from destroying
 * an earlier file (flushed to disk before the rename), with the partial
 * files killed runs left removed.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"
#include "migration/format/format.h"

char *cli_parent_path(const char *parent, const char *child, const char *given)
{
    g_autofree char *p = g_canonicalize_filename(parent, NULL);
    g_autofree char *c = g_canonicalize_filename(child, NULL);
    g_autofree char *pdir = g_path_get_dirname(p), *cdir = g_path_get_dirname(c);

    if (given) {
        return g_strdup(given);
    }
    return strcmp(pdir, cdir) == 0 ? g_path_get_basename(p) : g_steal_pointer(&p);
}

/* Whether @given (a parent path to record, relative to @child's directory)
 * names @child itself. */
static bool names_child(const char *given, const char *child)
{
    g_autofree char *c = g_canonicalize_filename(child, NULL);
    g_autofree char *cdir = g_path_get_dirname(c);
    g_autofree char *p = g_canonicalize_filename(given, cdir);

    return cli_same_file(p, c);
}

/* Whether @a and @b are snapshots of one content identity (both open). */
static bool same_identity(const char *a, const char *b, GError **errp)
{
    sl_snapshot *x = cli_open_snapshot(a, NULL, 0, errp), *y = NULL;
    bool same = x && (y = cli_open_snapshot(b, NULL, 0, errp)) && x->has_identity &&
                y->has_identity && memcmp(x->identity, y->identity, SL_IDENTITY_LEN) == 0;

    sl_snapshot_close(x);
    sl_snapshot_close(y);
    return same;
}

/* Where the chain of symbolic links from @path ends (a path that may not
 * exist, or is no link), or NULL if @path is no link; 40 links at most. */
static char *last_link_target(const char *path)
{
    char *at = NULL;

    for (int i = 0; i < 40; i++) {
        g_autofree char *link = g_file_read_link(at ? at : path, NULL);
        g_autofree char *dir = g_path_get_dirname(at ? at : path);
        if (!link) {
            break;
        }
        g_free(at);
        at = g_canonicalize_filename(link, dir);
    }
    return at;
}

/*
 * --parent-path @given, taken from @child's directory, leads to PARENT, to
 * a copy of it (the same identity), or to nothing yet (the parent is to be
 * put there: noted): anything else is refused (found by a user's test:
 * another snapshot, or the child itself through a link, was recorded, and
 * every open of the child failed afterwards).
 */
static bool given_parent_path_ok(const char *parent, const char *child, const char *given,
                                 GError **errp)
{
    g_autofree char *c = g_canonicalize_filename(child, NULL);
    g_autofree char *cdir = g_path_get_dirname(c);
    g_autofree char *p = g_canonicalize_filename(given, cdir);
    g_autofree char *target = last_link_target(p);
    g_autoptr(GError) why = NULL;

    if (target && cli_same_file(target, c)) { /* CHILD may not exist yet: no stat finds it */
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--parent-path %s is a link to CHILD %s "
                    "itself: the child would be its own parent", given, child);
        return false;
    }
    if (access(p, F_OK) != 0) {
        fprintf(stderr, "snapload: note: --parent-path %s: no file is there yet; CHILD opens "
                "once PARENT is put there (or with --parent)\n", given);
        return true;
    }
    if (cli_same_file(p, parent) || same_identity(parent, p, &why)) {
        return true;
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--parent-path %s leads to %s, which is not "
                "PARENT %s%s%s: CHILD could never be opened", given, p, parent,
                why ? ": " : " (its content differs)", why ? why->message : "");
    return false;
}

int cli_check_parent_path(const char *parent, const char *child, const char *given)
{
    g_autoptr(GError) err = NULL;

    if (!*given) {
        return cli_usage("--parent-path is empty: name the parent's path to record");
    }
    if (names_child(given, child)) {
        return cli_usage("--parent-path %s names CHILD %s itself: the child would be its own "
                         "parent", given, child);
    }
    return given_parent_path_ok(parent, child, given, &err) ? 0
                                                             : cli_fail_error(g_steal_pointer(&err));
}

/*
 * Removes the partial files of @out (as sl_partial_path() names them for
 * another pid, beside @tmp, ours) whose process is gone: a run killed with
 * SIGKILL, which no handler sees, left them, up to a whole snapshot each,
 * and nothing removed them later (found by a user's test).
 */
static void sweep_partials(const char *tmp)
{
    g_autofree char *dir = g_path_get_dirname(tmp), *base = g_path_get_basename(tmp);
    g_autofree char *mine = g_strdup_printf(".%d.partial", (int)getpid());
    g_autoptr(GDir) d = NULL;
    const char *name;
    size_t stem;

    if (!g_str_has_suffix(base, mine) || !(d = g_dir_open(dir, 0, NULL))) {
        return;
    }
    stem = strlen(base) - strlen(mine) + 1; /* "NAME." */
    while ((name = g_dir_read_name(d))) {
        char *end = NULL;
        long pid;
        if (strncmp(name, base, stem) || !g_str_has_suffix(name, ".partial")) {
            continue;
        }
        pid = strtol(name + stem, &end, 10);
        if (end == name + stem || strcmp(end, ".partial") || pid <= 0 || pid == getpid() ||
            kill((pid_t)pid, 0) == 0 || errno != ESRCH) {
            continue; /* not one, or its process may still write it */
        }
        g_autofree char *path = g_build_filename(dir, name, NULL);
        if (unlink(path) == 0) {
            fprintf(stderr, "snapload: removed %s, left by a run that was killed\n", path);
        }
    }
}

char *cli_partial_path(const char *out)
{
    char *tmp = sl_partial_path(out);

    sweep_partials(tmp);
    cli_interrupt_remove_on_signal(tmp);
    return tmp;
}

bool cli_finish_partial(const char *tmp, const char *out, bool ok, GError **errp)
{
    struct stat st;

    if (ok && stat(out, &st) == 0 && !S_ISREG(st.st_mode)) {
        /* A device, a FIFO, a directory: never replaced by a file (a save to
         * /dev/full made it one, found by our own test). */
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s exists and is not a regular file: "
                    "nothing was put in its place", out);
        ok = false;
    }
    if (ok) {
        ok = sl_sync_path(tmp, out, errp); /* a crash never leaves @out without pages */
    }
    if (ok && rename(tmp, out) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", out, g_strerror(errno));
        ok = false;
    }
    if (ok) {
        sl_sync_dir_of(out); /* the rename itself: best effort, the data is safe */
    }
    if (!ok) {
        unlink(tmp);
    }
    if (!ok) {
        sl_error_names(errp, tmp, out); /* the user named @out, not @tmp */
    }
    cli_interrupt_keep(tmp); /* after: a signal before finds @tmp, or nothing */
    return ok;
}

