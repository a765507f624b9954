/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Private working directories of one run (qemu-save's beside the snapshot,
 * holding anonymous guest RAM as large as the guest; qemu-restore's in the
 * temporary directory, holding its sockets and QEMU's device stream) that a
 * killed run does not leave behind for good.  Each run holds a flock on a
 * lock file in its directory for as long as it, or a child it forked,
 * lives; a later run with the same prefix removes the directories whose
 * lock file nobody holds.  A lock, not a
 * pid: a process in another pid namespace sharing /tmp is seen, and a
 * recycled pid does not keep a dead run's files.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"

/* The file inside each run's directory that its run holds a flock on: only
 * a directory with it is ever swept (a user's own directory of a matching
 * name never is), and only once nobody holds it. */
#define RUN_LOCK ".snapload-run-lock"

/* Removes every entry of the directory open at @fd that is not itself a directory. */
static void empty_dir(int fd)
{
    int dfd = dup(fd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    struct dirent *e;

    if (!d) {
        if (dfd >= 0) {
            close(dfd);
        }
        return;
    }
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            unlinkat(fd, e->d_name, 0); /* a directory inside stays, and so does ours */
        }
    }
    closedir(d);
}

/* Whether entry @name of @pfd is a run's directory of ours that no run holds;
 * if so, *@fd is it, open. */
static bool abandoned(int pfd, const char *name, int *fd)
{
    struct stat st;
    int lock;

    if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
        st.st_uid != geteuid() ||
        (*fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        return false;
    }
    lock = openat(*fd, RUN_LOCK, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0) {
        if (lock >= 0) {
            close(lock); /* a run holds it */
        }
        close(*fd); /* no lock file: not a run's, or one between mkdtemp and lock */
        return false;
    }
    close(lock); /* our lock went with it; the directory is emptied next */
    return true;
}

/* Removes the directories @prefix + six characters in @parent that no run holds. */
static void sweep_run_dirs(const char *parent, const char *prefix)
{
    int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int dfd = pfd >= 0 ? dup(pfd) : -1;
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    size_t len = strlen(prefix);
    struct dirent *e;

    if (!d && dfd >= 0) {
        close(dfd);
    }

    while (d && (e = readdir(d))) {
        int fd = -1;
        if (strncmp(e->d_name, prefix, len) || strlen(e->d_name) != len + 6 ||
            !abandoned(pfd, e->d_name, &fd)) {
            continue;
        }
        empty_dir(fd);
        if (unlinkat(pfd, e->d_name, AT_REMOVEDIR) == 0) {
            fprintf(stderr, "snapload: removed %s/%s, left by a run that was killed\n", parent,
                    e->d_name);
        }
        close(fd);
    }
    if (d) {
        closedir(d);
    }
    if (pfd >= 0) {
        close(pfd);
    }
}

char *cli_run_dir_make(const char *parent, const char *prefix, int *lockfd, GError **errp)
{
    const char *where = parent ? parent : g_get_tmp_dir();
    g_autofree char *tmpl = g_strdup_printf("%s/%sXXXXXX", where, prefix);
    g_autofree char *lock = NULL, *held = NULL;

    *lockfd = -1;
    sweep_run_dirs(where, prefix);
    if (!g_mkdtemp_full(tmpl, 0700)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "a working directory in %s: %s", where,
                    g_strerror(errno));
        return NULL;
    }
    /* Locked under another name, then renamed: a sweep that finds the lock
     * file finds it held (found by review: between its creation and its
     * flock, a sweep could take the lock and remove the new directory). */
    lock = g_build_filename(tmpl, RUN_LOCK ".new", NULL);
    held = g_build_filename(tmpl, RUN_LOCK, NULL);
    *lockfd = open(lock, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (*lockfd < 0 || flock(*lockfd, LOCK_EX) < 0 || rename(lock, held) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", lock, g_strerror(errno));
        unlink(lock);
        cli_run_dir_release(tmpl, *lockfd);
        *lockfd = -1;
        return NULL;
    }
    return g_steal_pointer(&tmpl);
}

/* Whether the directory @dir holds nothing but its lock file. */
static bool only_lock_left(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        if (strcmp(name, RUN_LOCK)) {
            return false;
        }
    }
    return d != NULL;
}

void cli_run_dir_release(char *dir, int lockfd)
{
    if (dir && only_lock_left(dir)) {
        g_autofree char *lock = g_build_filename(dir, RUN_LOCK, NULL);
        unlink(lock);
        rmdir(dir);
    } /* else a file was left, and the lock file with it: a later run's sweep removes them */
    if (lockfd >= 0) {
        close(lockfd);
    }
}
