/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload delta PARENT NEW -o CHILD [--parent-path PATH] [--ancestor PATH...]
 * [--new-parent PATH...]`: an
 * incremental snapshot made from two full ones.  CHILD stores the pages of
 * NEW whose content differs from PARENT's (by checksum: PARENT's stored
 * checksums against NEW's pages hashed as they are read, checked against
 * NEW's own checksums where it has them), a page that became zero
 * included, and names PARENT by its content identity; the other pages
 * come from PARENT when CHILD is opened.  NEW's device state and hot-page
 * list are carried over.  PARENT needs checksums (snapload's format, or a
 * QEMU file with its index); NEW may be any snapshot.  PARENT may itself
 * be a child whose ancestors moved: `--ancestor PATH`, repeated, names
 * PARENT's parent, then its parent, and so on; `--new-parent PATH`,
 * repeated, does the same for NEW.
 *
 * `snapload flatten SNAP -o FULL [--parent PATH...]`: the other way, a child
 * and its whole chain of parents into one full snapshot (every page
 * checked as it is read), for a chain that reached its length limit or
 * whose parents are to go.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"
#include "migration/format/format.h"

#define DELTA_CHUNK (8u << 20)

/* What one delta is made of. */
typedef struct {
    sl_snapshot *parent, *next;
    sl_writer *w;
    uint64_t pages, stored;
} delta;

/* Block @b: NEW read in chunks (checked where it has checksums), changes written. */
static bool delta_block(delta *d, unsigned b, GError **errp)
{
    sl_block_info bi;
    uint64_t per;
    g_autofree uint8_t *buf = NULL;

    sl_snapshot_block(d->next, b, &bi);
    per = MAX(1, DELTA_CHUNK / bi.page_size);
    buf = g_malloc(per * bi.page_size);
    for (uint64_t p = 0; p < bi.pages; p += per) {
        uint64_t n = MIN(per, bi.pages - p);
        int ret = sl_snapshot_read_pages(d->next, b, p, n, buf,
                                         sl_snapshot_has_checksums(d->next));
        if (ret < 0) {
            g_autofree char *why = cli_read_failure(d->next, b, p, n, ret);
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s", why);
            return false;
        }
        if (!sl_writer_write_changed(d->w, d->parent, b, p * bi.page_size, buf,
                                     n * bi.page_size, &d->stored, errp)) {
            return false;
        }
        d->pages += n;
        cli_progress("delta", p + n, bi.pages);
    }
    cli_progress(NULL, 0, 0);
    return true;
}

/* NEW's device state and hot-page list, where it has them (a QEMU file's device
 * state is QEMU's stream, which our container cannot hold: said, not copied). */
static bool copy_sections(delta *d, GError **errp)
{
    static const uint32_t types[] = { SL_SECTION_DEVICE_STATE, SL_SECTION_HOT_PAGES };
    uint32_t type;
    uint64_t len;

    if (sl_snapshot_get_format(d->next) == SL_FORMAT_QEMU) {
        fprintf(stderr, "snapload: note: %s is QEMU's own file: its device state (QEMU's "
                "stream around guest RAM) is not carried over, so the snapshot written holds "
                "guest RAM only (snapload restore, not qemu-restore); to keep the device state "
                "save the guest with qemu-save --format snapload\n", sl_snapshot_path(d->next));
    }
    for (size_t t = 0; t < G_N_ELEMENTS(types); t++) {
        bool has = false;
        for (unsigned i = 0; sl_snapshot_section(d->next, i, &type, &len); i++) {
            has |= type == types[t];
        }
        g_autoptr(GBytes) data = has ? sl_snapshot_read_section(d->next, types[t], errp) : NULL;
        if (has && (!data || !sl_writer_add_section(d->w, types[t], g_bytes_get_data(data, NULL),
                                                    g_bytes_get_size(data), errp))) {
            return false;
        }
    }
    return true;
}

/* Declares NEW's blocks (the writer checks them against PARENT's) and fills them. */
static bool make_delta(delta *d, GError **errp)
{
    sl_block_info bi;

    for (unsigned b = 0; sl_snapshot_block(d->next, b, &bi); b++) {
        if (sl_writer_add_block(d->w, bi.name, bi.length, bi.page_size, bi.numa_node,
                                errp) < 0) {
            return false;
        }
    }
    for (unsigned b = 0; b < sl_snapshot_n_blocks(d->next); b++) {
        if (!delta_block(d, b, errp)) {
            return false;
        }
    }
    return copy_sections(d, errp) && sl_writer_finish(d->w, errp);
}

/* The moved ancestors of delta's two inputs (NULL: the paths they record). */
typedef struct {
    char **of_parent, **of_new;
} delta_ancestors;

/* Opens both inputs (their ancestors where @anc says), refuses to
 * overwrite either, writes @out recording @rec. */
static bool run_delta(delta *d, char **argv, const delta_ancestors *anc, const char *out,
                      const char *rec, GError **errp)
{
    g_autofree char *tmp = cli_partial_path(out);
    bool ok;

    if (!(d->parent = cli_open_snapshot(argv[1], anc->of_parent, 0, errp)) ||
        !(d->next = cli_open_snapshot(argv[2], anc->of_new, 0, errp))) {
        return false;
    }
    if (sl_snapshot_n_blocks(d->next) != sl_snapshot_n_blocks(d->parent)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s has %u blocks, PARENT %s has %u: a "
                    "child has every block of its parent (are both saves of the same guest?)",
                    argv[2], sl_snapshot_n_blocks(d->next), argv[1],
                    sl_snapshot_n_blocks(d->parent));
        return false;
    }
    if (cli_refuse_chain_file(out, d->parent, "the child", errp) ||
        cli_refuse_chain_file(out, d->next, "the child", errp)) {
        return false;
    }
    ok = (d->w = sl_writer_new(tmp, errp)) &&
         sl_writer_set_parent(d->w, d->parent, rec, errp) && make_delta(d, errp);

    return cli_finish_partial(tmp, out, ok, errp);
}

int cmd_flatten(int argc, char **argv)
{
    g_autofree char *out = NULL, *tmp = NULL;
    g_auto(GStrv) parents = NULL;
    GOptionEntry entries[] = {
        { "output", 'o', 0, G_OPTION_ARG_FILENAME, &out, "the full snapshot to write", "FULL" },
        CLI_PARENT_OPTION(parents),
        { NULL },
    };
    g_autoptr(GError) err = NULL;
    delta d = { .parent = NULL };
    bool ok;

    if (!cli_parse("SNAP - write SNAP with its whole chain of parents as one full snapshot",
                   entries, &argc, &argv)) {
        return 2;
    }
    if (argc != 2 || !out) {
        return cli_usage("flatten needs SNAP and -o FULL");
    }
    ok = (d.next = cli_open_snapshot(argv[1], parents, 0, &err)) != NULL;
    if (ok && cli_refuse_chain_file(out, d.next, "the full snapshot", &err)) {
        ok = false;
    }
    tmp = cli_partial_path(out);
    /* no parent: every page is written */
    ok = ok && (d.w = sl_writer_new(tmp, &err)) != NULL && make_delta(&d, &err);
    ok = cli_finish_partial(tmp, out, ok, &err);
    sl_writer_free(d.w);
    sl_snapshot_close(d.next);
    if (!ok) {
        return cli_fail_error(g_steal_pointer(&err));
    }
    fprintf(stderr, "snapload: wrote %s: %" G_GUINT64_FORMAT " pages, no parent\n", out,
            d.pages);
    return 0;
}

int cmd_delta(int argc, char **argv)
{
    g_autofree char *out = NULL, *given = NULL, *rec = NULL;
    g_auto(GStrv) ancestors = NULL, new_parents = NULL;
    GOptionEntry entries[] = {
        { "output", 'o', 0, G_OPTION_ARG_FILENAME, &out, "the child snapshot to write",
          "CHILD" },
        { "parent-path", 0, 0, G_OPTION_ARG_FILENAME, &given, "the parent's path to record "
          "(default: its name when CHILD is in its directory, else its absolute path; a "
          "relative path is taken from CHILD's directory)", "PATH" },
        CLI_ANCESTOR_OPTION(ancestors),
        { "new-parent", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &new_parents, "NEW's parent, when "
          "NEW is an incremental snapshot, instead of the path it records; repeated: the next "
          "is that parent's parent, and so on ('' keeps a recorded path)", "PATH" },
        { NULL },
    };
    g_autoptr(GError) err = NULL;
    delta d = { .parent = NULL };
    bool ok;
    int ret;

    if (!cli_parse("PARENT NEW - write an incremental snapshot: NEW's pages that differ "
                   "from PARENT's", entries, &argc, &argv)) {
        return 2;
    }
    if (argc != 3 || !out) {
        return cli_usage("delta needs PARENT, NEW and -o CHILD");
    }
    if (given && (ret = cli_check_parent_path(argv[1], out, given)) != 0) {
        return ret;
    }
    rec = cli_parent_path(argv[1], out, given);
    ok = run_delta(&d, argv, &(delta_ancestors){ ancestors, new_parents }, out, rec, &err);
    sl_writer_free(d.w);
    sl_snapshot_close(d.next);
    sl_snapshot_close(d.parent);
    if (!ok) {
        return cli_fail_error(g_steal_pointer(&err));
    }
    fprintf(stderr, "snapload: wrote %s: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
            " pages (%.2f %%) differ from its parent %s\n", out, d.stored, d.pages,
            d.pages ? 100.0 * (double)d.stored / (double)d.pages : 0.0, rec);
    return 0;
}
