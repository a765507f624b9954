/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload inspect SNAP [--json] [--quick] [--parent PATH]`: validates a
 * snapshot, ours or QEMU's mapped-ram file (all metadata always; every
 * stored page against its checksum unless --quick, or only read where
 * there are no checksums) and prints what it holds as a table or as JSON.
 * An incremental snapshot is validated with its whole chain of parents,
 * and each layer is listed: its path, content identity, the pages it
 * stores itself and the bytes it takes on disk.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include "cli.h"
#include "migration/format/format.h"

#define CHECK_CHUNK (8u << 20)

static const char *section_name(uint32_t type)
{
    switch (type) {
    case SL_SECTION_DEVICE_STATE: return "device-state";
    case SL_SECTION_HOT_PAGES: return "hot-pages";
    case SL_SECTION_SOURCE: return "source";
    case SL_SECTION_PARENT: return "parent";
    default: return "unknown";
    }
}

/* Reads every page of every block, checking each stored page's checksum if any. */
static int check_pages(sl_snapshot *s)
{
    bool verify = sl_snapshot_has_checksums(s);
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
            int ret = sl_snapshot_read_pages(s, b, i, n, buf, verify);
            if (ret < 0) {
                g_autofree char *why = cli_read_failure(s, b, i, n, ret);
                return cli_fail("%s", why);
            }
            done += n * bi.page_size;
            cli_progress("check", done, total);
        }
    }
    return 0;
}

/*
 * Pages of block @b that read as zeros: those no layer stores and, in a
 * chain, those whose newest layer stores zeros (a page that became zero
 * in a child is stored as such; found by a user's test: inspect counted
 * them present, where the flattened chain counts them zero).
 */
static uint64_t zero_pages(const sl_snapshot *s, unsigned b, const sl_block_info *bi)
{
    uint64_t zero = bi->pages - bi->present_pages, z;

    if (!sl_snapshot_parent(s) || !sl_snapshot_has_checksums(s)) {
        return zero;
    }
    z = sl_zero_hash(bi->page_size);
    for (uint64_t p = 0; p < bi->pages; p++) {
        zero += sl_snapshot_page_present(s, b, p) && sl_snapshot_page_checksum(s, b, p) == z;
    }
    return zero;
}

static char *block_json(const sl_snapshot *s, unsigned b, const sl_block_info *bi)
{
    uint64_t zero = zero_pages(s, b, bi);
    cli_json j;

    json_begin(&j);
    json_str(&j, "name", bi->name);
    json_u64(&j, "length", bi->length);
    json_u64(&j, "page_size", bi->page_size);
    json_int(&j, "numa_node", bi->numa_node);
    json_u64(&j, "pages", bi->pages);
    json_u64(&j, "present_pages", bi->pages - zero);
    json_u64(&j, "zero_pages", zero);
    json_u64(&j, "pages_offset", bi->pages_offset);
    json_bool(&j, "in_file", sl_snapshot_block_in_file(s, b));
    return json_end(&j);
}

/* What `inspect` says of one layer of a chain (the snapshot alone, if it has no parent). */
typedef struct {
    const char *path;
    char identity[2 * SL_IDENTITY_LEN + 1]; /* "" when it has none */
    uint64_t stored;                        /* pages the file stores itself */
    uint64_t allocated;                     /* bytes it takes on disk */
    uint64_t file_size;
} layer_info;

static layer_info describe_layer(const sl_snapshot *s)
{
    layer_info l = { .path = sl_snapshot_path(s), .file_size = sl_snapshot_file_size(s) };
    uint8_t id[SL_IDENTITY_LEN];
    struct stat st;

    if (sl_snapshot_identity(s, id, NULL)) {
        sl_identity_hex(id, l.identity);
    }
    for (unsigned b = 0; b < sl_snapshot_n_blocks(s); b++) {
        l.stored += sl_snapshot_stored_pages(s, b);
    }
    if (fstat(s->fd, &st) == 0) {
        l.allocated = (uint64_t)st.st_blocks * 512;
    }
    return l;
}

/* The chain as a JSON array, newest first. */
static char *chain_json(const sl_snapshot *s)
{
    GString *out = g_string_new("[");

    for (const sl_snapshot *p = s; p; p = sl_snapshot_parent(p)) {
        layer_info l = describe_layer(p);
        cli_json j;
        json_begin(&j);
        json_str(&j, "path", l.path);
        if (l.identity[0]) {
            json_str(&j, "identity", l.identity);
        } else {
            json_raw(&j, "identity", "null");
        }
        json_u64(&j, "stored_pages", l.stored);
        json_u64(&j, "allocated_bytes", l.allocated);
        json_u64(&j, "file_size", l.file_size);
        g_autofree char *o = json_end(&j);
        g_string_append_printf(out, "%s%s", p == s ? "" : ", ", o);
    }
    g_string_append_c(out, ']');
    return g_string_free(out, false);
}

/* Text: the chain of a child, newest first. */
static void chain_table(const sl_snapshot *s)
{
    unsigned depth = 0;

    printf("chain (newest first; each page comes from the newest layer storing it):\n");
    printf("%-5s %-32s %12s %12s  %s\n", "LAYER", "IDENTITY", "STORED", "ALLOCATED", "PATH");
    for (const sl_snapshot *p = s; p; p = sl_snapshot_parent(p)) {
        layer_info l = describe_layer(p);
        g_autofree char *alloc = g_format_size_full(l.allocated, G_FORMAT_SIZE_IEC_UNITS);
        printf("%-5u %-32s %12" G_GUINT64_FORMAT " %12s  %s\n", depth++,
               l.identity[0] ? l.identity : "-", l.stored, alloc, l.path);
    }
    printf("\n");
}

/* QEMU's stream: machine, recorded capabilities, device state, as JSON members. */
static void qemu_json(const sl_snapshot *s, cli_json *j)
{
    const sl_qemu_stream *q = s->qemu;
    GString *caps = g_string_new("[");

    for (guint i = 0; i < q->caps->len; i++) {
        g_string_append(caps, i ? ", " : "");
        json_quote(caps, g_ptr_array_index(q->caps, i));
    }
    g_string_append_c(caps, ']');
    json_str(j, "machine", q->machine);
    json_raw(j, "capabilities", caps->str);
    json_u64(j, "device_state_offset", q->tail_offset);
    json_u64(j, "device_state_length", q->tail_length - q->vmdesc_length);
    json_u64(j, "vmdesc_length", q->vmdesc_length);
    g_string_free(caps, true);
}

/* Text: what only QEMU's stream has, and that it has no checksums. */
static void qemu_table(const sl_snapshot *s, const char *path)
{
    const sl_qemu_stream *q = s->qemu;

    printf("QEMU migration stream (mapped-ram), machine %s, capabilities:", q->machine);
    for (guint i = 0; i < q->caps->len; i++) {
        printf("%s %s", i ? "," : "", (const char *)g_ptr_array_index(q->caps, i));
    }
    printf("\ndevice state: %" G_GUINT64_FORMAT " bytes at offset %" G_GUINT64_FORMAT
           " (+ %" G_GUINT64_FORMAT " bytes of JSON description)\n",
           q->tail_length - q->vmdesc_length, q->tail_offset, q->vmdesc_length);
    if (!sl_snapshot_has_checksums(s)) {
        printf("checksums: none (QEMU's file has none: `snapload index %s` writes a sidecar "
               "index with them, and a hot-page list)\n", path);
    }
}

static void print_json(sl_snapshot *s, const char *path, bool checked)
{
    GString *blocks = g_string_new("["), *secs = g_string_new("[");
    sl_block_info bi;
    uint32_t type;
    uint64_t len;
    cli_json j;

    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        g_autofree char *o = block_json(s, b, &bi);
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
    json_str(&j, "format", s->format == SL_FORMAT_QEMU ? "qemu" : "snapload");
    if (s->format == SL_FORMAT_SNAPLOAD) {
        json_u64(&j, "version", SL_VERSION);
    } else {
        qemu_json(s, &j);
    }
    json_bool(&j, "checksums", sl_snapshot_has_checksums(s));
    json_bool(&j, "pages_checked", checked && sl_snapshot_has_checksums(s));
    json_bool(&j, "pages_read", checked);
    json_raw(&j, "blocks", blocks->str);
    json_raw(&j, "sections", secs->str);
    g_autofree char *chain = chain_json(s);
    json_raw(&j, "chain", chain);
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

    const char *pages = !checked ? "not checked (--quick)"
                        : sl_snapshot_has_checksums(s) ? "checked" : "read (no checksums to check)";

    if (s->format == SL_FORMAT_QEMU) {
        printf("snapshot %s: %" G_GUINT64_FORMAT " bytes, pages %s\n", path,
               sl_snapshot_file_size(s), pages);
        qemu_table(s, path);
        printf("\n");
    } else {
        printf("snapshot %s: %" G_GUINT64_FORMAT " bytes, format version %u, pages %s\n\n",
               path, sl_snapshot_file_size(s), SL_VERSION, pages);
    }
    if (sl_snapshot_parent(s)) {
        chain_table(s);
    }
    printf("%-20s %12s %8s %5s %10s %10s %10s\n", "BLOCK", "LENGTH", "PAGE", "NODE",
           "PAGES", "PRESENT", "ZERO");
    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        g_autofree char *lenh = g_format_size_full(bi.length, G_FORMAT_SIZE_IEC_UNITS);
        g_autofree char *psh = g_format_size_full(bi.page_size, G_FORMAT_SIZE_IEC_UNITS);
        uint64_t zero = zero_pages(s, b, &bi);
        char node[16];
        g_snprintf(node, sizeof(node), bi.numa_node < 0 ? "-" : "%d", bi.numa_node);
        printf("%-20s %12s %8s %5s %10" G_GUINT64_FORMAT " %10" G_GUINT64_FORMAT " %10"
               G_GUINT64_FORMAT "%s\n", bi.name, lenh, psh, node, bi.pages, bi.pages - zero,
               zero,
               sl_snapshot_block_in_file(s, b) ? ""
               : "  (not in the file: x-ignore-shared kept it in its memory)");
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
    g_auto(GStrv) parents = NULL;
    GOptionEntry entries[] = {
        { "json", 0, 0, G_OPTION_ARG_NONE, &as_json, "print JSON", NULL },
        { "quick", 0, 0, G_OPTION_ARG_NONE, &quick, "check metadata only, not page data", NULL },
        CLI_PARENT_OPTION(parents),
        { NULL },
    };
    GError *err = NULL;
    sl_snapshot *s;
    int ret;

    if (!cli_parse("SNAP - validate and describe a snapshot", entries, &argc, &argv)) {
        return 2;
    }
    if (argc != 2) {
        return cli_usage("inspect takes exactly one snapshot file");
    }
    if (!(s = cli_open_snapshot(argv[1], parents, 0, &err))) {
        return cli_fail_error(err);
    }
    if (!sl_snapshot_check_sections(s, &err)) { /* small: checked even with --quick */
        sl_snapshot_close(s);
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
