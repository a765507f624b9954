/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What every format reader checks of the byte ranges a file claims to
 * hold: each lies inside the file (offset + length computed without
 * overflow), and no two overlap.  Readers claim each range as they find it,
 * naming it, and check the overlaps once at the end; an error names the
 * range, its offset and length, and the one it collides with.  Also the one
 * "read exactly this" helper readers share.
 */
#include <errno.h>
#include <sys/stat.h>
#include "migration/format/format.h"

typedef struct {
    uint64_t start, len;
    char what[160];
} region;

struct sl_regions {
    uint64_t file_size;
    GArray *list;  /* region */
};

sl_regions *sl_regions_new(uint64_t file_size)
{
    sl_regions *rs = g_new0(sl_regions, 1);

    rs->file_size = file_size;
    rs->list = g_array_new(false, false, sizeof(region));
    return rs;
}

void sl_regions_free(sl_regions *rs)
{
    if (rs) {
        g_array_free(rs->list, true);
        g_free(rs);
    }
}

bool sl_regions_claim(sl_regions *rs, uint64_t start, uint64_t len, GError **errp,
                      const char *fmt, ...)
{
    region r = { .start = start, .len = len };
    uint64_t end;
    va_list ap;

    va_start(ap, fmt);
    g_vsnprintf(r.what, sizeof(r.what), fmt, ap);
    va_end(ap);
    if (__builtin_add_overflow(start, len, &end) || end > rs->file_size) {
        return SL_BAD(errp, "%s: offset %" G_GUINT64_FORMAT " + length %" G_GUINT64_FORMAT
                      " lies beyond the end of the file (%" G_GUINT64_FORMAT " bytes)",
                      r.what, start, len, rs->file_size);
    }
    if (len) {
        g_array_append_val(rs->list, r);
    }
    return true;
}

static gint region_cmp(gconstpointer a, gconstpointer b)
{
    const region *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

bool sl_regions_check(sl_regions *rs, GError **errp)
{
    g_array_sort(rs->list, region_cmp);
    for (guint i = 1; i < rs->list->len; i++) {
        region *p = &g_array_index(rs->list, region, i - 1);
        region *q = &g_array_index(rs->list, region, i);
        if (p->start + p->len > q->start) {
            return SL_BAD(errp, "%s (offset %" G_GUINT64_FORMAT ") overlaps %s (offset %"
                          G_GUINT64_FORMAT ", length %" G_GUINT64_FORMAT ")",
                          q->what, q->start, p->what, p->start, p->len);
        }
    }
    return true;
}

bool sl_read_at(int fd, void *buf, size_t len, uint64_t off, const char *what, GError **errp)
{
    int ret = sl_pread_full(fd, buf, len, off);
    struct stat st;
    bool short_file;

    if (ret < 0) {
        /* -EIO is also how sl_pread_full() says the file ended: a disk's
         * error must not read as a truncated (malformed) snapshot. */
        short_file = ret == -EIO && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                     (uint64_t)st.st_size < off + len;
        g_set_error(errp, SL_ERROR, short_file ? SL_ERROR_FORMAT : SL_ERROR_IO,
                    "reading %s at offset %" G_GUINT64_FORMAT ": %s", what, off,
                    short_file ? "file ends early" : g_strerror(-ret));
        return false;
    }
    return true;
}
