/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore daemon's record of what its consumers wrote (see dtrack.h).
 * Pages are recorded per snapshot page of the block; a consumer's written
 * pages come from PAGEMAP_SCAN of its pagemap (written and present, track.c),
 * at the granule of its mapping (4 KiB, or a hugepage).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <linux/magic.h>
#include <unistd.h>
#include "dtrack.h"
#include "written.h"
#include "migration/format/format.h"
#include "migration/track.h"

typedef struct {
    uint64_t *pages;       /* written snapshot pages of this run */
    uint64_t npages, page_size, length;
    int memfd;             /* a duplicate of the RAM file, or -1 */
    uint64_t offset;       /* where the block starts in it */
    unsigned tracked, reported; /* tracked mappings registered, and reported */
    const char *untracked; /* why no list can be made (NULL: none so far) */
} dt_block;

struct sl_dtrack {
    const sl_snapshot *snap;
    char *dir;
    bool ignore;           /* lists found are removed, not used */
    unsigned n;
    dt_block *b;
};

sl_dtrack *sl_dtrack_new(const sl_snapshot *snap, const char *dir, bool ignore)
{
    sl_dtrack *t = g_new0(sl_dtrack, 1);

    t->snap = snap;
    t->dir = g_strdup(dir);
    t->ignore = ignore;
    t->n = sl_snapshot_n_blocks(snap);
    t->b = g_new0(dt_block, t->n);
    for (unsigned i = 0; i < t->n; i++) {
        sl_block_info bi;
        t->b[i].memfd = -1;
        if (sl_snapshot_block(snap, i, &bi)) {
            t->b[i].page_size = bi.page_size;
            t->b[i].length = bi.length;
            t->b[i].npages = bi.length / bi.page_size;
            t->b[i].pages = g_malloc0(sl_bitmap_bytes(t->b[i].npages));
        }
    }
    return t;
}

bool sl_dtrack_attached(sl_dtrack *t, unsigned idx, int memfd, uint64_t offset,
                        GArray *known_changed,
                        char **why)
{
    g_autoptr(GError) err = NULL;
    sl_block_info bi;
    struct stat st;

    *why = NULL;
    if (idx >= t->n || !sl_snapshot_block(t->snap, idx, &bi)) {
        return false;
    }
    t->b[idx].memfd = fcntl(memfd, F_DUPFD_CLOEXEC, 0);
    t->b[idx].offset = offset;
    if (fstat(memfd, &st) < 0) {
        *why = g_strdup_printf("fstat: %s", g_strerror(errno));
        return false;
    }
    /* Found by review: a non-root run without $XDG_RUNTIME_DIR kept its
     * lists in ~/.cache, and the list an earlier run had left in the
     * runtime directory, missing this run's writes, was trusted later. */
    sl_written_forget_elsewhere(t->dir, &st, offset);
    if (t->ignore) {
        g_autofree char *path = sl_written_path(t->dir, &st, offset);
        *why = unlink(path) == 0 ? g_strdup("asked to check every page") : NULL;
        return false;
    }
    if (!sl_written_load(t->dir, t->snap, bi.name, &st, offset, known_changed, &err)) {
        if (!g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
            *why = g_strdup(err->message);
        }
        return false;
    }
    return true;
}

void sl_dtrack_registered(sl_dtrack *t, unsigned idx, bool wp)
{
    if (idx >= t->n) {
        return;
    }
    if (wp) {
        t->b[idx].tracked++;
    } else {
        t->b[idx].untracked = "a consumer mapped it without tracking its writes";
    }
}

void sl_dtrack_untracked(sl_dtrack *t, unsigned idx)
{
    if (idx < t->n) {
        t->b[idx].untracked = "a consumer discarded pages of it or handed it to an untracked "
                              "process";
    }
}

void sl_dtrack_lost(sl_dtrack *t, unsigned idx)
{
    if (idx < t->n) {
        t->b[idx].untracked = "a tracked consumer went without reporting its writes";
    }
}

/* Marks the snapshot pages of @b's bytes [@from, @to) in @bits. */
static void mark(uint64_t *bits, const dt_block *b, uint64_t from, uint64_t to)
{
    uint64_t first = from / b->page_size;
    uint64_t end = MIN(b->npages, (to + b->page_size - 1) / b->page_size);

    sl_bit_set_run(bits, first, end > first ? end - first : 0);
}

/* Marks in @bits the pages of @b that tracked mapping @m wrote (its
 * process's pagemap, not protected again); 0, or -errno with @why set.
 * A mapping of a part of the block is scanned over that part alone, and
 * its pages land at their place in the block. */
static int scan_into(uint64_t *bits, const dt_block *b, const sl_dtrack_map *m,
                     const char **why, GError **errp)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/pagemap", (int)m->pid);
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(sl_written_run));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int64_t got;

    if (fd < 0) {
        int err = errno;
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", path, g_strerror(err));
        *why = "a consumer's pagemap could not be read";
        return -err;
    }
    got = m->off > b->length || m->len > b->length - m->off
              ? -EINVAL : sl_scan_written(fd, -1, m->addr, m->addr + m->len, false, runs);
    close(fd);
    if (got < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "PAGEMAP_SCAN of process %d: %s",
                    (int)m->pid, g_strerror((int)-got));
        *why = "a consumer's pagemap could not be scanned";
        return (int)got;
    }
    for (guint i = 0; i < runs->len; i++) {
        const sl_written_run *w = &g_array_index(runs, sl_written_run, i);
        mark(bits, b, m->off + (w->start - m->addr), m->off + (w->end - m->addr));
    }
    return 0;
}

int sl_dtrack_scan(sl_dtrack *t, unsigned idx, const sl_dtrack_map *m, bool untracked,
                   GError **errp)
{
    dt_block *b = &t->b[idx];
    int ret = scan_into(b->pages, b, m, &b->untracked, errp);

    if (ret < 0) {
        return ret;
    }
    if (untracked) {
        b->untracked = "a consumer discarded pages of it or handed it to an untracked process";
    }
    b->reported++;
    return 0;
}

/* Whether the host swaps: a written shmem page swapped out leaves no trace in the pagemap. */
static bool swap_active(void)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    unsigned n = 0;

    if (!g_file_get_contents("/proc/swaps", &text, NULL, NULL)) {
        return true; /* cannot tell: assume the worst */
    }
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        n += **l != 0;
    }
    return n > 1; /* a header, then one line per swap area */
}

/* The value in brackets of THP knob @path ("always [never] ..."), or NULL. */
static char *thp_setting(const char *path)
{
    g_autofree char *text = NULL;
    const char *open_b, *close_b;

    if (!g_file_get_contents(path, &text, NULL, NULL) || !(open_b = strchr(text, '[')) ||
        !(close_b = strchr(open_b, ']'))) {
        return NULL;
    }
    return g_strndup(open_b + 1, (gsize)(close_b - open_b - 1));
}

/* The huge= value in mount options @opts ("never" without one). */
static char *huge_option(const char *opts)
{
    g_auto(GStrv) items = g_strsplit(opts, ",", -1);

    for (char **i = items; *i; i++) {
        if (g_str_has_prefix(*i, "huge=")) {
            return g_strdup(*i + strlen("huge="));
        }
    }
    return g_strdup("never");
}

/* The huge= option of the mount of device @dev in this mount namespace
 * (its super options, after " - " in mountinfo), or NULL if none has it. */
static char *mount_huge(dev_t dev)
{
    g_autofree char *text = NULL;
    g_autofree char *want = g_strdup_printf("%u:%u", major(dev), minor(dev));
    g_auto(GStrv) lines = NULL;

    if (!g_file_get_contents("/proc/self/mountinfo", &text, NULL, NULL)) {
        return NULL;
    }
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        g_auto(GStrv) head = g_strsplit(*l, " ", 4);
        const char *sep = strstr(*l, " - ");
        g_auto(GStrv) tail = sep ? g_strsplit(sep + 3, " ", 3) : NULL;

        if (g_strv_length(head) >= 3 && !strcmp(head[2], want) && tail &&
            g_strv_length(tail) == 3) {
            return huge_option(tail[2]);
        }
    }
    return NULL;
}

/* Whether device @dev is the kernel's own tmpfs, where memfds live. */
static bool kernel_shm_dev(dev_t dev)
{
    struct stat st;
    int fd = memfd_create("snapload-probe", MFD_CLOEXEC);
    bool same = fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == dev;

    if (fd >= 0) {
        close(fd);
    }
    return same;
}

/*
 * Why the shmem file @fd may have its pages collapsed into a huge page
 * behind our back, or NULL.  A collapse (khugepaged, or MADV_COLLAPSE in a
 * process we do not run in) unmaps the small pages from every mapping, and
 * a written page's entry goes with them: no scan lists it (found by
 * review: a page written, then collapsed, was kept by the next restart).
 * The top-level shmem_enabled forces or denies for every tmpfs; else a
 * mounted tmpfs follows its huge= option, and the kernel's own mount
 * (memfds) shmem_enabled.  A tmpfs mounted where this process cannot see
 * it (another mount namespace) is taken as one that may.
 */
static const char *collapse_risk(int fd)
{
    g_autofree char *top = thp_setting("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    g_autofree char *huge = NULL;
    struct statfs sfs;
    struct stat st;

    if (fstatfs(fd, &sfs) < 0 || fstat(fd, &st) < 0) {
        return "its file system cannot be told";
    }
    if (sfs.f_type != TMPFS_MAGIC || (top && !strcmp(top, "deny"))) {
        return NULL; /* hugetlbfs pages are whole already */
    }
    if (top && !strcmp(top, "force")) {
        return "shmem_enabled is 'force': the kernel may collapse its pages into huge "
               "pages, which drops the trace of a write";
    }
    if ((huge = mount_huge(st.st_dev)) != NULL) {
        return strcmp(huge, "never") == 0 ? NULL
               : "its tmpfs is mounted with huge= other than never: the kernel may collapse "
                 "its pages into huge pages, which drops the trace of a write";
    }
    if (!kernel_shm_dev(st.st_dev)) {
        return "its tmpfs is not mounted where the daemon can see its huge= option";
    }
    return top && strcmp(top, "never") == 0 ? NULL
           : "shmem_enabled is not 'never': the kernel may collapse its pages into huge pages, "
             "which drops the trace of a write";
}

/* Why block @b gets no list, or NULL. */
static const char *no_list(const dt_block *b, bool complete, bool swaps)
{
    const char *risk;

    if (!complete) {
        return "the restore did not complete";
    }
    if ((risk = collapse_risk(b->memfd)) != NULL) {
        return risk;
    }
    if (b->untracked) {
        return b->untracked;
    }
    if (!b->tracked) {
        return "no consumer tracked its writes";
    }
    if (b->reported < b->tracked) {
        return "a tracked consumer did not report its writes";
    }
    return swaps ? "the host swaps (a swapped-out page leaves no trace)" : NULL;
}

uint64_t *sl_dtrack_written_now(sl_dtrack *t, unsigned idx, const sl_dtrack_map *maps,
                                unsigned n, uint64_t *npages, const char **why, GError **errp)
{
    dt_block *b = idx < t->n ? &t->b[idx] : NULL;
    g_autofree uint64_t *bits = NULL;

    *why = !b || !b->pages ? "no such block" : b->untracked;
    if (!*why && !b->tracked) {
        *why = "no consumer tracks its writes";
    } else if (!*why && b->tracked - b->reported != n) {
        *why = "a tracked mapping of it is not accounted for";
    } else if (!*why && swap_active()) {
        *why = "the host swaps (a swapped-out page leaves no trace)";
    } else if (!*why && b->memfd >= 0) { /* khugepaged leaves write-protected anon alone */
        *why = collapse_risk(b->memfd);
    }
    if (*why) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "%s", *why);
        return NULL;
    }
    bits = g_memdup2(b->pages, sl_bitmap_bytes(b->npages));
    for (unsigned i = 0; i < n; i++) {
        if (scan_into(bits, b, &maps[i], why, errp) < 0) {
            return NULL;
        }
    }
    *npages = b->npages;
    return g_steal_pointer(&bits);
}

void sl_dtrack_finish(sl_dtrack *t, bool complete, GString *log)
{
    bool swaps = swap_active();

    for (unsigned i = 0; i < t->n; i++) {
        dt_block *b = &t->b[i];
        g_autoptr(GError) err = NULL;
        sl_block_info bi;
        struct stat st;
        const char *why;
        if (b->memfd < 0 || !sl_snapshot_block(t->snap, i, &bi) || fstat(b->memfd, &st) < 0) {
            continue;
        }
        why = no_list(b, complete, swaps);
        if (!why && !sl_written_save(t->dir, t->snap, bi.name, &st, b->offset, b->pages,
                                     b->npages, &err)) {
            why = err->message;
        }
        if (why) {
            g_autofree char *path = sl_written_path(t->dir, &st, b->offset);
            unlink(path);
            g_string_append_printf(log, "block '%s': no written-page list for the next "
                                   "restart: %s\n", bi.name, why);
        } else {
            g_string_append_printf(log, "block '%s': %" G_GUINT64_FORMAT " written pages "
                                   "listed for the next restart\n", bi.name,
                                   sl_bitmap_count(b->pages, b->npages));
        }
    }
}

void sl_dtrack_free(sl_dtrack *t)
{
    if (!t) {
        return;
    }
    for (unsigned i = 0; i < t->n; i++) {
        if (t->b[i].memfd >= 0) {
            close(t->b[i].memfd);
        }
        g_free(t->b[i].pages);
    }
    g_free(t->b);
    g_free(t->dir);
    g_free(t);
}
