/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the command line says when a snapshot's pages cannot be read: the
 * first page of the failed range that does not read, the file of the chain
 * that stores it (a corrupt parent is named as the parent, not blamed on
 * the child given on the command line), and why.  Shared by inspect,
 * extract, delta, flatten and restore's --verify.
 */
#include <errno.h>
#include <string.h>
#include "cli.h"

/* The first page of [@first, +@n) of block @b that cannot be read whole and checked. */
static uint64_t first_unreadable(sl_snapshot *s, unsigned b, uint64_t first, uint64_t n,
                                 uint64_t psize, int *ret)
{
    g_autofree uint8_t *buf = g_malloc(psize);

    for (uint64_t i = first; i < first + n; i++) {
        int r = sl_snapshot_read_pages(s, b, i, 1, buf, sl_snapshot_has_checksums(s));
        if (r < 0) {
            *ret = r;
            return i;
        }
    }
    return first; /* it read this time: report the range's first page and the first error */
}

char *cli_read_failure(sl_snapshot *s, unsigned b, uint64_t first, uint64_t n, int ret)
{
    sl_block_info bi = { .name = "?", .page_size = 4096 };
    g_autofree char *of = NULL, *own = NULL;
    uint64_t p;
    const char *file, *why;

    sl_snapshot_block(s, b, &bi);
    p = first_unreadable(s, b, first, n, bi.page_size, &ret);
    file = sl_snapshot_page_file(s, b, p);
    file = file ? file : sl_snapshot_path(s);
    why = ret == -EBADMSG ? "checksum mismatch: the file is corrupt there"
        : ret == -EIO     ? "could not be read: the file ends early or a read failed"
        : ret == -EREMOTE ? "is not in the file: QEMU saved with x-ignore-shared and left the "
                            "block in the guest's shared memory file, which holds its pages"
                          : (own = g_strdup_printf("could not be read: %s", g_strerror(-ret)));
    of = strcmp(file, sl_snapshot_path(s)) ? g_strdup_printf(" (a parent of %s)",
                                                              sl_snapshot_path(s)) : NULL;
    return g_strdup_printf("%s%s: block '%s' page %" G_GUINT64_FORMAT " (offset %"
                           G_GUINT64_FORMAT " in the block) %s", file, of ? of : "", bi.name, p,
                           p * bi.page_size, why);
}
