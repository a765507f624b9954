/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a consumer of the restore daemon hands over, checked against what
 * the kernel knows of it (see peercheck.h): that its uffd finished the API
 * handshake with the features its memory needs (/proc/self/fdinfo), and
 * that the range it names really is a shared mapping of the memory file it
 * sent, at the offset it names (/proc/PID/maps).  A consumer that lies here
 * would otherwise only be found out by its first failing ioctl.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>
#include "peercheck.h"

bool sl_peer_check_uffd(int uffd, uint64_t need, GError **errp)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fdinfo/%d", uffd);
    g_autofree char *text = NULL;
    const char *api;
    uint64_t features;

    if (!g_file_get_contents(path, &text, NULL, NULL) || !(api = strstr(text, "\nAPI:"))) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "first fd: not a userfaultfd");
        return false;
    }
    /* "API:\t<api>:<features>:<ioctls>", all hex. */
    api = strchr(api + 1, ':');
    api = api ? strchr(api + 1, ':') : NULL;
    features = api ? g_ascii_strtoull(api + 1, NULL, 16) : 0;
    if ((features & need) != need) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "userfaultfd: features 0x%" G_GINT64_MODIFIER
                    "x lack 0x%" G_GINT64_MODIFIER "x (was UFFDIO_API done for MISSING|MINOR "
                    "on this memory?)", features, need & ~features);
        return false;
    }
    return true;
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

/* Whether mapping @m, where it overlaps [addr, addr+len), maps @st shared at @offset. */
static bool line_fits(const maps_line *m, uint64_t addr, uint64_t offset, const struct stat *st)
{
    return m->perms[3] == 's' && m->inode == (uint64_t)st->st_ino &&
           m->major == major(st->st_dev) && m->minor == minor(st->st_dev) &&
           m->offset + (MAX(m->start, addr) - m->start) == offset + (MAX(m->start, addr) - addr);
}

int sl_peer_check_mapping(pid_t pid, uint64_t addr, uint64_t len, const struct stat *st,
                          uint64_t offset, GError **errp)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/maps", (int)pid);
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    uint64_t covered = addr, end = addr + len;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "cannot read %s to check the mapping", path);
        return -1;
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
        covered = m.end;
    }
    if (covered < end) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "0x%" G_GINT64_MODIFIER "x is not a shared "
                    "mapping of the memory file at offset %" G_GUINT64_FORMAT " in pid %d (from "
                    "0x%" G_GINT64_MODIFIER "x on)", addr, offset, (int)pid, covered);
        return 0;
    }
    return 1;
}
