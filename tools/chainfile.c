/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The one check every command that writes a file runs against the
 * snapshot it read: the file to write is none that the snapshot needs (its
 * own, a parent's further up its chain, a QEMU file's sidecar index).  A
 * child, an image or a hot list written there would destroy the snapshot,
 * or the chain of every child that depends on it.  Kept apart from the
 * commands so that the daemon, linked into its unit tests without them,
 * runs the same check.
 */
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include "cli.h"
#include "migration/format/format.h"

/* Whether @path names the file open at @fd. */
static bool names_fd(const char *path, int fd)
{
    struct stat a, b;

    return fd >= 0 && stat(path, &a) == 0 && fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* @p with its directory resolved (the file itself may not exist yet);
 * NULL if the directory cannot be. */
static char *resolved(const char *p)
{
    g_autofree char *dir = g_path_get_dirname(p), *base = g_path_get_basename(p);
    char *rdir = realpath(dir, NULL);
    char *out = rdir ? g_build_filename(rdir, base, NULL) : NULL;

    free(rdir);
    return out;
}

bool cli_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    bool ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    g_autofree char *ra = NULL, *rb = NULL;

    if (!strcmp(a, b) || (ea && eb)) {
        return !strcmp(a, b) || (sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino);
    }
    /* One may not exist yet (a RAM file qemu-restore makes afresh): the same
     * path spelled another way (found by review: DIR/./f against DIR/f) */
    ra = resolved(a);
    rb = resolved(b);
    return ra && rb && !strcmp(ra, rb);
}

bool cli_refuse_chain_file(const char *path, const sl_snapshot *s, const char *what,
                           GError **errp)
{
    for (const sl_snapshot *p = s; p; p = sl_snapshot_parent(p)) {
        g_autofree char *which = NULL;
        if (!names_fd(path, p->fd) && !names_fd(path, p->index_fd)) {
            continue;
        }
        which = g_strdup_printf("%s%s", names_fd(path, p->fd) ? "" : "the sidecar index of ",
                                p->path);
        if (p == s) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s is %s, the snapshot read: %s "
                        "must be another file", path, which, what);
        } else {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s is %s, a parent in the chain of "
                        "%s: %s must be another file, or that chain is lost", path, which,
                        s->path, what);
        }
        return true;
    }
    return false;
}

bool cli_refuse_output(const char *path, const sl_snapshot *s, const char *what,
                       GError **errp)
{
    struct stat st;

    g_autofree char *dir = g_path_get_dirname(path);

    if (cli_refuse_chain_file(path, s, what, errp)) {
        return true;
    }
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        /* before the work, not after it (found by a user's test: a whole
         * restore ran, then failed naming a temporary file) */
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s: %s cannot be written there: %s is "
                    "not a directory that exists", path, what, dir);
        return true;
    }
    if (stat(path, &st) < 0 || S_ISREG(st.st_mode)) {
        return false;
    }
    /* found by a user's test: /dev/null was replaced by the hot list */
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s exists and is not a regular file: %s "
                "would replace it", path, what);
    return true;
}
