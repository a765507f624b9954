/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload extract SNAP --block NAME -o FILE [--parent PATH]`: the inverse
 * of `save --raw`.
 * Writes one block of a snapshot as a raw RAM image, every stored page
 * checked against its checksum, zero pages left as holes.  Used to compare
 * what a guest sees (e.g. over QEMU's qtest protocol) with the snapshot,
 * and to get a RAM image back out.  The image is written beside FILE and
 * renamed over it only when complete: a page that cannot be read (or a
 * full disk) leaves no image that looks whole with zeros in it, and an
 * earlier FILE stays as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include "cli.h"

#define EXTRACT_CHUNK (4u << 20)

/* Writes the stored pages of block @b to @fd at their offsets. */
static int write_block(sl_snapshot *s, unsigned b, const sl_block_info *bi, int fd,
                       const char *out)
{
    /* At least one page at a time (found by review: pages of more than
     * EXTRACT_CHUNK made none per read, and the loop never ended). */
    uint64_t per = MAX(1, EXTRACT_CHUNK / bi->page_size);
    g_autofree uint8_t *buf = g_malloc(per * bi->page_size);

    for (uint64_t p = 0; p < bi->pages; p += per) {
        uint64_t n = MIN(per, bi->pages - p);
        int ret = sl_snapshot_read_pages(s, b, p, n, buf, sl_snapshot_has_checksums(s));
        if (ret < 0) {
            g_autofree char *why = cli_read_failure(s, b, p, n, ret);
            return cli_fail("%s", why);
        }
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t *pg = buf + i * bi->page_size;
            off_t off = (off_t)((p + i) * bi->page_size);
            if (sl_snapshot_page_present(s, b, p + i) &&
                pwrite(fd, pg, bi->page_size, off) != (ssize_t)bi->page_size) {
                return cli_fail("%s: %s", out, g_strerror(errno ? errno : EIO));
            }
        }
        cli_progress("extract", p + n, bi->pages);
    }
    cli_progress(NULL, 0, 0);
    return 0;
}

int cmd_extract(int argc, char **argv)
{
    g_autofree char *block = NULL, *out = NULL;
    g_auto(GStrv) parents = NULL;
    GOptionEntry entries[] = {
        { "block", 0, 0, G_OPTION_ARG_STRING, &block, "the block to extract (default: the first)", "NAME" },
        { "output", 'o', 0, G_OPTION_ARG_FILENAME, &out, "raw image to write", "FILE" },
        CLI_PARENT_OPTION(parents),
        { NULL },
    };
    g_autoptr(GError) err = NULL;
    g_autofree char *tmp = NULL;
    sl_snapshot *s;
    sl_block_info bi;
    int b, fd, ret;

    if (!cli_parse("SNAP - write one block of a snapshot as a raw RAM image", entries, &argc,
                   &argv)) {
        return 2;
    }
    if (argc != 2 || !out) {
        return cli_usage("extract needs SNAP and -o FILE");
    }
    if (!(s = cli_open_snapshot(argv[1], parents, 0, &err))) {
        return cli_fail_error(g_steal_pointer(&err));
    }
    b = block ? sl_snapshot_find_block(s, block) : 0;
    if (b < 0 || !sl_snapshot_block(s, (unsigned)b, &bi)) {
        sl_snapshot_close(s);
        return cli_fail("%s has no block '%s'", argv[1], block ? block : "(none)");
    }
    if (cli_refuse_chain_file(out, s, "the image", &err)) {
        sl_snapshot_close(s);
        return cli_fail_error(g_steal_pointer(&err));
    }
    tmp = cli_partial_path(out);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)bi.length) < 0) {
        ret = cli_fail("%s: %s", fd < 0 ? tmp : out, g_strerror(errno));
    } else {
        ret = write_block(s, (unsigned)b, &bi, fd, out);
    }
    if (fd >= 0 && close(fd) < 0 && ret == 0) {
        ret = cli_fail("%s: %s", out, g_strerror(errno));
    }
    if (fd >= 0 && !cli_finish_partial(tmp, out, ret == 0, &err)) {
        ret = ret ? ret : cli_fail_error(g_steal_pointer(&err));
    }
    sl_snapshot_close(s);
    return ret;
}
