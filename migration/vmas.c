/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reading a process's mappings from /proc/PID/maps (or smaps, which adds
 * each mapping's VmFlags).  The restore uses it at setup only: to check
 * that memory a caller attaches as a file's mapping really maps that file
 * at that offset (a wrong pairing would fill the wrong part of the file, or
 * leave a touching thread waiting for ever), to find which parts of its
 * memory a fork would copy (fork.c) and which memory files the caller's
 * memory maps (busy.c); the tools ask which file QEMU maps, and the daemon
 * whether a consumer's range is the mapping it claims, registered with its
 * uffd (tools/peercheck.c).  Never on the fault path.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "vmas.h"
#include "snapload/snapload.h"

/*
 * Parses a mapping's first line into @v, its path into @path; false, both
 * untouched, if @line is not one (sscanf fills what it matched:
 * "AnonHugePages:" starts with a hex digit).
 */
static bool parse_head(const char *line, sl_vma *v, GString *path)
{
    sl_vma n = { 0 };
    unsigned maj, min;
    char perms[8];
    int end = 0;

    if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %" SCNx64 " %x:%x %" SCNu64 "%n", &n.start,
               &n.end, perms, &n.offset, &maj, &min, &n.ino, &end) != 7 || strlen(perms) != 4) {
        return false;
    }
    n.dev = makedev(maj, min);
    n.shared = perms[3] == 's';
    line += end + strspn(line + end, " ");
    g_string_assign(path, line);
    while (path->len && path->str[path->len - 1] == '\n') {
        g_string_truncate(path, path->len - 1);
    }
    n.path = path->str;
    *v = n;
    return true;
}

/* Whether a "VmFlags:" line lists the two-letter flag @f ("dc": VM_DONTCOPY). */
static bool lists_flag(const char *line, const char *f)
{
    for (const char *p = line; (p = strstr(p, f)); p += 2) {
        if (p > line && p[-1] == ' ' && (p[2] == ' ' || p[2] == '\n' || p[2] == '\0')) {
            return true;
        }
    }
    return false;
}

/* One line of the list; a mapping is whole at its head (maps) or VmFlags (smaps). */
static bool take_line(const char *line, sl_vma *v, GString *path, bool flags, bool *whole)
{
    if (parse_head(line, v, path)) {
        *whole = !flags;
        return true;
    }
    if (flags && g_str_has_prefix(line, "VmFlags:")) {
        v->dontcopy = lists_flag(line, "dc");
        v->uffd_missing = lists_flag(line, "um"); /* VM_UFFD_MISSING */
        v->uffd_minor = lists_flag(line, "ui");   /* VM_UFFD_MINOR */
        *whole = true;
    }
    return true;
}

bool sl_vmas_each(pid_t pid, uint64_t lo, uint64_t hi, bool flags,
                  bool (*fn)(const sl_vma *vma, void *opaque), void *opaque, GError **errp)
{
    g_autofree char *path = pid ? g_strdup_printf("/proc/%d/%s", (int)pid, flags ? "smaps"
                                                                                   : "maps")
                                : g_strdup(flags ? "/proc/self/smaps" : "/proc/self/maps");
    g_autoptr(GString) vpath = g_string_new(NULL);
    FILE *f = fopen(path, "re");
    sl_vma v = { .path = "" };
    char *line = NULL;
    size_t cap = 0;
    bool go = true;

    if (!f) {
        int err = errno;
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", path, g_strerror(err));
        errno = err; /* the caller may name an fd shortage */
        return false;
    }
    while (go && getline(&line, &cap, f) > 0) {
        bool whole = false;
        take_line(line, &v, vpath, flags, &whole);
        if (whole && v.start >= hi) {
            break; /* listed in address order: nothing further overlaps */
        }
        if (whole && lo < v.end) {
            go = fn(&v, opaque);
        }
    }
    go = !ferror(f);
    free(line);
    fclose(f);
    if (!go) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: read error", path);
        errno = EIO;
    }
    return go;
}

/* What sl_vmas_check_file() walks with. */
typedef struct {
    uint64_t lo, next;   /* checked up to @next */
    uint64_t offset;     /* file offset expected at @lo */
    struct stat st;
    const char *why;
} file_walk;

static bool check_vma(const sl_vma *v, void *opaque)
{
    file_walk *w = opaque;

    if (v->start > w->next) {
        w->why = "is not mapped";
    } else if (v->dev != w->st.st_dev || v->ino != (uint64_t)w->st.st_ino) {
        w->why = "maps another file";
    } else if (v->offset + (w->next - v->start) != w->offset + (w->next - w->lo)) {
        w->why = "maps the file at another offset";
    } else if (!v->shared) {
        w->why = "maps the file privately (MAP_PRIVATE: its writes would never reach the file)";
    } else {
        w->next = v->end;
        return true;
    }
    return false;
}

bool sl_vmas_check_file(void *addr, uint64_t len, int fd, uint64_t offset, GError **errp)
{
    file_walk w = { .lo = (uint64_t)(uintptr_t)addr, .offset = offset };

    w.next = w.lo;
    if (access("/proc/self/maps", R_OK) != 0) {
        return true; /* no /proc here: nothing to check against */
    }
    if (fstat(fd, &w.st) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory fd %d: %s", fd, g_strerror(errno));
        return false;
    }
    if (!sl_vmas_each(0, w.lo, w.lo + len, false, check_vma, &w, errp)) {
        return false;
    }
    if (!w.why && w.next < w.lo + len) {
        w.why = "is not mapped";
    }
    if (w.why) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "address 0x%" PRIx64 " %s, not fd %d at "
                    "offset 0x%" PRIx64, w.next, w.why, fd, offset + (w.next - w.lo));
        return false;
    }
    return true;
}
