/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a consumer of the restore daemon hands over, checked against what
 * the kernel knows of it (see peercheck.h): that its uffd finished the API
 * handshake with the features its memory needs and none whose messages or
 * faults the daemon does not serve (/proc/self/fdinfo; a fork event, say,
 * would hand the daemon a new uffd at every fork of the consumer and leave
 * the child waiting), and that the range it names really is a shared
 * mapping of the memory file it sent, at the offset it names
 * and registered with its uffd for the faults that memory needs
 * (/proc/PID/smaps, read by vmas.c).  A consumer that lies here would otherwise only
 * be found out by its first failing ioctl, or not at all.  Reading /proc
 * takes a free fd: when there is none, the reason says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "peercheck.h"
#include "migration/vmas.h"

/* UFFD_FEATURE_* bits by number (the build host's headers may predate some). */
static const struct {
    unsigned bit;
    const char *name;
    const char *refused; /* why the daemon refuses it; NULL: harmless, or needed */
} uffd_feature_bits[] = {
    { 0, "PAGEFAULT_FLAG_WP", "write-protect faults, which the daemon does not serve" },
    { 1, "EVENT_FORK", "fork events: each fork would leak a uffd into the daemon" },
    { 2, "EVENT_REMAP", "mremap events, which the daemon does not serve" },
    { 3, "EVENT_REMOVE", "madvise remove events, which the daemon does not serve" },
    { 4, "MISSING_HUGETLBFS", NULL },
    { 5, "MISSING_SHMEM", NULL },
    { 6, "EVENT_UNMAP", "munmap events, which the daemon does not serve" },
    { 7, "SIGBUS", "faults raise SIGBUS instead of reaching the daemon" },
    { 8, "THREAD_ID", NULL },
    { 9, "MINOR_HUGETLBFS", NULL },
    { 10, "MINOR_SHMEM", NULL },
    { 11, "EXACT_ADDRESS", NULL },  /* the engine divides the offset: any address in a page does */
    { 12, "WP_HUGETLBFS_SHMEM", "write-protect faults, which the daemon does not serve" },
    { 13, "WP_UNPOPULATED", "write-protect faults, which the daemon does not serve" },
    { 14, "POISON", NULL },
    { 15, "WP_ASYNC", "write protection, which the daemon does not serve" },
    { 16, "MOVE", NULL },           /* an ioctl for the consumer's own use */
    { 31, "INITIALIZED", NULL },    /* the kernel's mark of a finished handshake */
};

const char *sl_peer_fd_shortage(int err)
{
    switch (err) {
    case EMFILE:
        return "the daemon is out of file descriptors (EMFILE): try again later";
    case ENFILE:
        return "the system is out of file descriptors (ENFILE): try again later";
    default:
        return NULL;
    }
}

/* Reads all of /proc file @path into @text; 0 or -errno. */
static int read_proc(const char *path, char **text)
{
    g_autoptr(GString) s = g_string_new(NULL);
    char chunk[4096];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        return -errno;
    }
    while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
        g_string_append_len(s, chunk, n);
    }
    if (n < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    close(fd);
    *text = g_string_free(g_steal_pointer(&s), false);
    return 0;
}

/* @err (-errno) reading @path: the fd shortage by name, else the error. */
static int unreadable(int err, const char *path, GError **errp)
{
    const char *shortage = sl_peer_fd_shortage(-err);

    if (shortage) {
        g_set_error_literal(errp, SL_ERROR, SL_ERROR_IO, shortage);
    } else {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "cannot read %s: %s", path, g_strerror(-err));
    }
    return err;
}

/* The fd is a userfaultfd (its /proc/self/fd link), else -EINVAL naming what it is. */
static int check_is_uffd(int fd, GError **errp)
{
    g_autofree char *link = g_strdup_printf("/proc/self/fd/%d", fd);
    char target[64] = "";
    ssize_t n = readlink(link, target, sizeof(target) - 1); /* needs no free fd */

    if (n > 0 && strcmp(target, "anon_inode:[userfaultfd]") == 0) {
        return 0;
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "first fd is not a userfaultfd (it is %s)",
                n > 0 ? target : g_strerror(errno));
    return -EINVAL;
}

/* The features the handshake of @uffd enabled, from its fdinfo. */
static int read_uffd_features(int uffd, uint64_t *features, GError **errp)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fdinfo/%d", uffd);
    g_autofree char *text = NULL;
    const char *api;
    int ret = read_proc(path, &text);

    if (ret < 0) {
        return unreadable(ret, path, errp);
    }
    /* "API:\t<api>:<features>:<ioctls>", all hex. */
    api = strstr(text, "\nAPI:");
    api = api ? strchr(api + 1, ':') : NULL;
    api = api ? strchr(api + 1, ':') : NULL;
    if (!api) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "userfaultfd: no API line in %s", path);
        return -EINVAL;
    }
    *features = g_ascii_strtoull(api + 1, NULL, 16);
    return 0;
}

/* -EINVAL naming the first feature of @features the daemon refuses, else 0. */
static int check_no_refused_feature(uint64_t features, GError **errp)
{
    uint64_t known = 0;

    for (size_t i = 0; i < G_N_ELEMENTS(uffd_feature_bits); i++) {
        uint64_t bit = 1ull << uffd_feature_bits[i].bit;
        known |= bit;
        if ((features & bit) && uffd_feature_bits[i].refused) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "userfaultfd has UFFD_FEATURE_%s: %s",
                        uffd_feature_bits[i].name, uffd_feature_bits[i].refused);
            return -EINVAL;
        }
    }
    if (features & ~known) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "userfaultfd has feature bits 0x%"
                    G_GINT64_MODIFIER "x, unknown to the daemon", features & ~known);
        return -EINVAL;
    }
    return 0;
}

int sl_peer_check_uffd(int uffd, uint64_t need, GError **errp)
{
    uint64_t features = 0;
    int ret = check_is_uffd(uffd, errp);

    if (ret == 0) {
        ret = read_uffd_features(uffd, &features, errp);
    }
    if (ret < 0) {
        return ret;
    }
    if ((features & need) != need) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "userfaultfd: features 0x%" G_GINT64_MODIFIER
                    "x lack 0x%" G_GINT64_MODIFIER "x (was UFFDIO_API done for MISSING|MINOR "
                    "on this memory?)", features, need & ~features);
        return -EINVAL;
    }
    return check_no_refused_feature(features & ~need, errp); /* what is needed is served */
}

/* What sl_peer_check_mapping() walks with. */
typedef struct {
    uint64_t addr, offset, end;  /* the range named, and the file offset of @addr */
    const struct stat *st;       /* the memory file (NULL: private anonymous memory) */
    uint64_t covered;            /* checked up to here */
    bool unregistered;           /* the walk stopped at a mapping the uffd misses */
} map_walk;

/*
 * Whether mapping @v, where it overlaps the range, maps w->st shared at the
 * offset named; for w->st NULL, whether it is private anonymous memory.
 */
static bool vma_fits(const sl_vma *v, const map_walk *w)
{
    uint64_t from = MAX(v->start, w->addr);

    if (!w->st) {
        return !v->shared && v->ino == 0 && v->dev == 0;
    }
    return v->shared && v->ino == (uint64_t)w->st->st_ino && v->dev == w->st->st_dev &&
           v->offset + (from - v->start) == w->offset + (from - w->addr);
}

/*
 * sl_vmas_each() callback.  Registered for what the memory needs: MISSING
 * faults everywhere, and MINOR faults on a file, whose pages may exist
 * (zeroed, ahead of their data) before they are filled: a view without
 * MINOR would read them without a fault.
 */
static bool check_vma(const sl_vma *v, void *opaque)
{
    map_walk *w = opaque;

    if (v->end <= w->covered) {
        return true;
    }
    if (v->start > w->covered || !vma_fits(v, w)) {
        return false;
    }
    if (!v->uffd_missing || (w->st && !v->uffd_minor)) {
        w->unregistered = true;
        return false;
    }
    w->covered = v->end;
    return w->covered < w->end;
}

int sl_peer_check_mapping(pid_t pid, uint64_t addr, uint64_t len, const struct stat *st,
                          uint64_t offset, GError **errp)
{
    map_walk w = { .addr = addr, .offset = offset, .end = addr + len, .st = st, .covered = addr };

    if (!sl_vmas_each(pid, addr, addr + len, true, check_vma, &w, NULL)) {
        int err = -errno; /* set by sl_vmas_each() */
        g_autofree char *path = g_strdup_printf("/proc/%d/smaps", (int)pid);
        return unreadable(err, path, errp);
    }
    if (w.unregistered) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "0x%" G_GINT64_MODIFIER "x in pid %d is not "
                    "registered with its userfaultfd for %s faults (from 0x%" G_GINT64_MODIFIER
                    "x on)", addr, (int)pid, st ? "MISSING and MINOR" : "MISSING", w.covered);
        return 0;
    }
    if (w.covered < w.end && !st) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "0x%" G_GINT64_MODIFIER "x is not private "
                    "anonymous memory in pid %d (from 0x%" G_GINT64_MODIFIER "x on)", addr,
                    (int)pid, w.covered);
        return 0;
    }
    if (w.covered < w.end) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "0x%" G_GINT64_MODIFIER "x is not a shared "
                    "mapping of the memory file at offset %" G_GUINT64_FORMAT " in pid %d (from "
                    "0x%" G_GINT64_MODIFIER "x on)", addr, offset, (int)pid, w.covered);
        return 0;
    }
    return 1;
}
