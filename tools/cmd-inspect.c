/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload inspect SNAP [--json] [--quick]`: validates a snapshot (all
 * metadata always; every stored page against its checksum unless --quick)
 * and prints its blocks and sections as a table or as JSON.
 */
#include <errno.h>
#include <stdio.h>
#include "cli.h"
#include "migration/format/format.h"

#define CHECK_CHUNK (8u << 20)

static const char *section_name(uint32_t type)
{
    switch (type) {
    case SL_SECTION_DEVICE_STATE: return "device-state";
    case SL_SECTION_HOT_PAGES: return "hot-pages";
    default: return "unknown";
    }
}

/* Finds the first page of [first, first+n) that fails its checksum. */
static uint64_t find_bad_page(sl_snapshot *s, unsigned b, uint64_t first, uint64_t n,
                              uint8_t *buf)
{
    for (uint64_t i = first; i < first + n; i++) {
        if (sl_snapshot_read_pages(s, b, i, 1, buf, true) < 0) {
            return i;
        }
    }
    return first;
}

/* Reads every page of every block, checking each stored page's checksum. */
static int check_pages(sl_snapshot *s)
{
    g_autofree uint8_t *buf = NULL;
    uint64_t total = 0, done = 0;
    sl_block_info bi;

    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        total += bi.length;
    }
    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        uint64_t per = MAX(1, CHECK_CHUNK / bi.page_size);
        buf = g_realloc(buf, per * bi.page_size);
        for (uint64_t i = 0; i < bi.pages; i += per) {
            uint64_t n = MIN(per, bi.pages - i);
            int ret = sl_snapshot_read_pages(s, b, i, n, buf, true);
            if (ret == -EBADMSG) {
                return cli_fail("block '%s': page %" G_GUINT64_FORMAT " does not match its "
                                "checksum (page data corrupted)", bi.name,
                                find_bad_page(s, b, i, n, buf));
            }
            if (ret < 0) {
                return cli_fail("block '%s': reading pages at %" G_GUINT64_FORMAT ": %s",
                                bi.name, i, ret == -EIO ? "file ends early" : g_strerror(-ret));
            }
            done += n * bi.page_size;
            cli_progress("check", done, total);
        }
    }
    return 0;
}

static char *block_json(const sl_block_info *bi)
{
    cli_json j;

    json_begin(&j);
    json_str(&j, "name", bi->name);
    json_u64(&j, "length", bi->length);
    json_u64(&j, "page_size", bi->page_size);
    json_int(&j, "numa_node", bi->numa_node);
    json_u64(&j, "pages", bi->pages);
    json_u64(&j, "present_pages", bi->present_pages);
    json_u64(&j, "zero_pages", bi->pages - bi->present_pages);
    json_u64(&j, "pages_offset", bi->pages_offset);
    return json_end(&j);
}

static void print_json(sl_snapshot *s, const char *path, bool checked)
{
    GString *blocks = g_string_new("["), *secs = g_string_new("[");
    sl_block_info bi;
    uint32_t type;
    uint64_t len;
    cli_json j;

    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        g_autofree char *o = block_json(&bi);
        g_string_append_printf(blocks, "%s%s", b ? ", " : "", o);
    }
    for (unsigned i = 0; sl_snapshot_section(s, i, &type, &len); i++) {
        g_string_append_printf(secs, "%s{\"type\": %u, \"name\": \"%s\", \"length\": %"
                               G_GUINT64_FORMAT "}", i ? ", " : "", type, section_name(type), len);
    }
    g_string_append_c(blocks, ']');
    g_string_append_c(secs, ']');
    json_begin(&j);
    json_str(&j, "file", path);
    json_u64(&j, "file_size", sl_snapshot_file_size(s));
    json_u64(&j, "version", SL_VERSION);
    json_bool(&j, "pages_checked", checked);
    json_raw(&j, "blocks", blocks->str);
    json_raw(&j, "sections", secs->str);
    g_autofree char *out = json_end(&j);
    printf("%s\n", out);
    g_string_free(blocks, true);
    g_string_free(secs, true);
}

static void print_table(sl_snapshot *s, const char *path, bool checked)
{
    sl_block_info bi;
    uint32_t type;
    uint64_t len;

    printf("snapshot %s: %" G_GUINT64_FORMAT " bytes, format version %u, pages %s\n\n", path,
           sl_snapshot_file_size(s), SL_VERSION, checked ? "checked" : "not checked (--quick)");
    printf("%-20s %12s %8s %5s %10s %10s %10s\n", "BLOCK", "LENGTH", "PAGE", "NODE",
           "PAGES", "PRESENT", "ZERO");
    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        g_autofree char *lenh = g_format_size_full(bi.length, G_FORMAT_SIZE_IEC_UNITS);
        g_autofree char *psh = g_format_size_full(bi.page_size, G_FORMAT_SIZE_IEC_UNITS);
        char node[16];
        g_snprintf(node, sizeof(node), bi.numa_node < 0 ? "-" : "%d", bi.numa_node);
        printf("%-20s %12s %8s %5s %10" G_GUINT64_FORMAT " %10" G_GUINT64_FORMAT " %10"
               G_GUINT64_FORMAT "\n", bi.name, lenh, psh, node, bi.pages, bi.present_pages,
               bi.pages - bi.present_pages);
    }
    printf("\n%-20s %12s\n", "SECTION", "LENGTH");
    for (unsigned i = 0; sl_snapshot_section(s, i, &type, &len); i++) {
        printf("%-14s (%3u) %12" G_GUINT64_FORMAT "\n", section_name(type), type, len);
    }
    if (sl_snapshot_n_sections(s) == 0) {
        printf("(none)\n");
    }
}

int cmd_inspect(int argc, char **argv)
{
    gboolean as_json = false, quick = false;
    GOptionEntry entries[] = {
        { "json", 0, 0, G_OPTION_ARG_NONE, &as_json, "print JSON", NULL },
        { "quick", 0, 0, G_OPTION_ARG_NONE, &quick, "check metadata only, not page data", NULL },
        { NULL },
    };
    GError *err = NULL;
    sl_snapshot *s;
    int ret;

    if (!cli_parse("SNAP - validate and describe a snapshot", entries, &argc, &argv)) {
        return 2;
    }
    if (argc != 2) {
        return cli_fail("inspect takes exactly one snapshot file");
    }
    s = sl_snapshot_open(argv[1], &err);
    if (!s) {
        return cli_fail_error(err);
    }
    ret = quick ? 0 : check_pages(s);
    if (ret == 0) {
        if (as_json) {
            print_json(s, argv[1], !quick);
        } else {
            print_table(s, argv[1], !quick);
        }
    }
    sl_snapshot_close(s);
    return ret;
}
