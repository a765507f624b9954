/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload index QEMU-FILE [-o INDEX] [--hot LIST]`: checksums (and a
 * hot-page list) for a QEMU mapped-ram file, in a sidecar index beside it
 * (QEMU-FILE.slidx by default), without rewriting or touching QEMU's file.
 * Every later open of QEMU-FILE attaches it, refused if the file changed.
 */
#include <stdio.h>
#include <unistd.h>
#include "cli.h"
#include "migration/format/format.h"

/* The hot list read from @path is one @s can take; else @errp names @path. */
static bool hot_list_fits(const sl_snapshot *s, const char *path, GBytes *list, GError **errp)
{
    if (!sl_hot_list_check(s, g_bytes_get_data(list, NULL), g_bytes_get_size(list), errp)) {
        g_prefix_error(errp, "--hot %s: ", path);
        return false;
    }
    return true;
}

int cmd_index(int argc, char **argv)
{
    g_autofree char *out = NULL, *hot = NULL, *def = NULL, *data = NULL, *partial = NULL;
    GOptionEntry entries[] = {
        { "output", 'o', 0, G_OPTION_ARG_FILENAME, &out, "index to write (default: "
          "QEMU-FILE.slidx, where every open finds it)", "INDEX" },
        { "hot", 0, 0, G_OPTION_ARG_FILENAME, &hot, "a hot-page list (restore --record) to "
          "prefetch first", "LIST" },
        { NULL },
    };
    g_autoptr(GError) err = NULL;
    g_autoptr(GBytes) list = NULL;
    sl_snapshot *s;
    gsize len = 0;
    bool ok;

    if (!cli_parse("QEMU-FILE - write a sidecar index (checksums, hot pages) of a QEMU file",
                   entries, &argc, &argv)) {
        return 2;
    }
    if (argc != 2) {
        return cli_usage("index takes exactly one QEMU mapped-ram file");
    }
    if (hot && !g_file_get_contents(hot, &data, &len, &err)) {
        return cli_fail("--hot: %s", err->message);
    }
    list = hot ? g_bytes_new_take(g_steal_pointer(&data), len) : NULL;
    def = g_strdup_printf("%s.slidx", argv[1]);
    /* Without the index there may be: it is what is replaced, and a stale
     * one must not refuse the file.  An earlier index stays until the new
     * one is whole (sl_index_write() renames it into place). */
    s = sl_snapshot_open_unindexed(argv[1], &err);
    /* sl_index_write() writes it there first: gone if a signal ends us. */
    partial = cli_partial_path(out ? out : def); /* killed runs' partials removed first */
    ok = s && (!list || hot_list_fits(s, hot, list, &err)) &&
         sl_index_write(s, out ? out : def, list, &err);
    cli_interrupt_keep(partial);
    sl_snapshot_close(s);
    if (!ok) {
        return cli_fail_error(g_steal_pointer(&err));
    }
    fprintf(stderr, "snapload: wrote the index %s\n", out ? out : def);
    return 0;
}
