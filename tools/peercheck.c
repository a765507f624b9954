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
 * (/proc/PID/smaps).  A consumer that lies here would otherwise only
 * be found out by its first failing ioctl, or not at all.  Reading /proc
 * takes a free fd: when there is none, the reason says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "peercheck.h"

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

/* One line of /proc/PID/maps. */
typedef struct {
    uint64_t start, end, offset, inode;
    unsigned major, minor;
    char perms[8];
} maps_line;

static bool parse_maps_line(const char *line, maps_line *m)
{
    return sscanf(line, "%" G_GINT64_MODIFIER "x-%" G_GINT64_MODIFIER "x %7s %"
                  G_GINT64_MODIFIER "x %x:%x %" G_GINT64_MODIFIER "u", &m->start, &m->end,
                  m->perms, &m->offset, &m->major, &m->minor, &m->inode) == 7;
}

/*
 * Whether mapping @m, where it overlaps [addr, addr+len), maps @st shared
 * at @offset; for @st NULL, whether it is private anonymous memory.
 */
static bool line_fits(const maps_line *m, uint64_t addr, uint64_t offset, const struct stat *st)
{
    if (!st) {
        return m->perms[3] == 'p' && m->inode == 0 && m->major == 0 && m->minor == 0;
    }
    return m->perms[3] == 's' && m->inode == (uint64_t)st->st_ino &&
           m->major == major(st->st_dev) && m->minor == minor(st->st_dev) &&
           m->offset + (MAX(m->start, addr) - m->start) == offset + (MAX(m->start, addr) - addr);
}

/* Whether the VmFlags line @flags holds the two-letter flag @f. */
static bool has_vm_flag(const char *flags, const char *f)
{
    for (const char *p = strstr(flags, f); p; p = strstr(p + 1, f)) {
        if (p[-1] == ' ' && (p[2] == ' ' || p[2] == '\0' || p[2] == '\n')) {
            return true;
        }
    }
    return false;
}

/* The VmFlags line of the mapping whose header is line @i of smaps @lines ("" if none). */
static const char *vm_flags(char **lines, unsigned i)
{
    maps_line m;

    for (i++; lines[i] && !parse_maps_line(lines[i], &m); i++) {
        if (g_str_has_prefix(lines[i], "VmFlags:")) {
            return lines[i] + strlen("VmFlags:");
        }
    }
    return "";
}

/*
 * Registered for what the memory needs: MISSING faults ("um") everywhere,
 * and MINOR faults ("ui") on a file, whose pages may exist (zeroed, ahead
 * of their data) before they are filled: a view without MINOR would read
 * them without a fault.
 */
static bool registered_fits(const char *flags, const struct stat *st)
{
    return has_vm_flag(flags, "um") && (!st || has_vm_flag(flags, "ui"));
}

int sl_peer_check_mapping(pid_t pid, uint64_t addr, uint64_t len, const struct stat *st,
                          uint64_t offset, GError **errp)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/smaps", (int)pid);
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    uint64_t covered = addr, end = addr + len;
    bool unregistered = false;
    int ret = read_proc(path, &text);

    if (ret < 0) {
        return unreadable(ret, path, errp);
    }
    lines = g_strsplit(text, "\n", -1);
    for (unsigned i = 0; lines[i] && covered < end; i++) {
        maps_line m;
        if (!parse_maps_line(lines[i], &m) || m.end <= covered || m.start >= end) {
            continue;
        }
        if (m.start > covered || !line_fits(&m, addr, offset, st)) {
            break;
        }
        if (!registered_fits(vm_flags(lines, i), st)) {
            unregistered = true;
            break;
        }
        covered = m.end;
    }
    if (unregistered) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "0x%" G_GINT64_MODIFIER "x in pid %d is not "
                    "registered with its userfaultfd for %s faults (from 0x%" G_GINT64_MODIFIER
                    "x on)", addr, (int)pid, st ? "MISSING and MINOR" : "MISSING", covered);
        return 0;
    }
    if (covered < end && !st) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "0x%" G_GINT64_MODIFIER "x is not private "
                    "anonymous memory in pid %d (from 0x%" G_GINT64_MODIFIER "x on)", addr,
                    (int)pid, covered);
        return 0;
    }
    if (covered < end) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "0x%" G_GINT64_MODIFIER "x is not a shared "
                    "mapping of the memory file at offset %" G_GUINT64_FORMAT " in pid %d (from "
                    "0x%" G_GINT64_MODIFIER "x on)", addr, offset, (int)pid, covered);
        return 0;
    }
    return 1;
}
