/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Driving QEMU's migration over QMP for qemu-save and qemu-restore (see
 * qemu-migrate.h): capabilities set explicitly every time (they persist
 * between migrations of one QEMU, and a stream only loads with the
 * capabilities it was saved with), `migrate`/`migrate-incoming` to an
 * exec: command or a file: URI, waited for, with QEMU's own reason when it
 * fails.
 */
#include <string.h>
#include "cli.h"
#include "qemu-migrate.h"

#define MIGRATE_TIMEOUT_MS (30 * 60 * 1000)

/* The names of the migration capabilities this QEMU has, or NULL. */
static GHashTable *known_caps(sl_qmp *q, GError **errp)
{
    g_autoptr(JsonNode) r = sl_qmp_cmd(q, "query-migrate-capabilities", NULL, errp);
    JsonArray *a = r && JSON_NODE_HOLDS_ARRAY(r) ? json_node_get_array(r) : NULL;
    GHashTable *h = a ? g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL) : NULL;

    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonObject *o = json_array_get_object_element(a, i);
        const char *name = json_object_get_string_member_with_default(o, "capability", NULL);
        if (name) {
            g_hash_table_add(h, g_strdup(name));
        }
    }
    return h;
}

bool sl_qemu_has_capability(sl_qmp *q, const char *name, GError **errp)
{
    g_autoptr(GHashTable) h = known_caps(q, errp);

    return h && g_hash_table_contains(h, name);
}

bool sl_qemu_set_caps(sl_qmp *q, const sl_qemu_caps *c, GError **errp)
{
    static const char *const names[] = { "x-ignore-shared", "mapped-ram", "multifd", "events" };
    const bool on[] = { c->ignore_shared, c->mapped_ram, c->multifd, true };
    g_autoptr(GHashTable) known = known_caps(q, errp);
    g_autoptr(GString) args = g_string_new("{\"capabilities\": [");
    bool first = true;

    if (!known) {
        return false;
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(names); i++) {
        if (!g_hash_table_contains(known, names[i])) {
            if (on[i]) {
                g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED, "this QEMU has no '%s' "
                            "migration capability (QEMU 9.0 or later has mapped-ram)", names[i]);
                return false;
            }
            continue; /* off, and this QEMU does not know it: off it is */
        }
        g_string_append_printf(args, "%s{\"capability\": \"%s\", \"state\": %s}",
                               first ? "" : ", ", names[i], on[i] ? "true" : "false");
        first = false;
    }
    g_string_append(args, "]}");
    return sl_qmp_ok(q, "migrate-set-capabilities", args->str, errp);
}

/* QEMU's own words on a failed migration (query-migrate's error-desc). */
static void add_reason(sl_qmp *q, GError **errp)
{
    g_autoptr(JsonNode) r = errp && *errp ? sl_qmp_cmd(q, "query-migrate", NULL, NULL) : NULL;
    JsonObject *o = r && JSON_NODE_HOLDS_OBJECT(r) ? json_node_get_object(r) : NULL;
    const char *desc = o ? json_object_get_string_member_with_default(o, "error-desc", NULL)
                         : NULL;

    if (desc) {
        g_prefix_error(errp, "%s: ", desc);
    }
}

bool sl_qemu_migrate(sl_qmp *q, const char *cmd, const char *uri, GError **errp)
{
    g_autofree char *quoted = g_strescape(uri, NULL);
    g_autofree char *args = g_strdup_printf("{\"uri\": \"%s\"}", quoted);

    if (!sl_qmp_ok(q, cmd, args, errp)) {
        return false;
    }
    if (!sl_qmp_wait_migration(q, MIGRATE_TIMEOUT_MS, errp)) {
        add_reason(q, errp);
        return false;
    }
    return true;
}

char *sl_qemu_exec_uri(const char *shell)
{
    return g_strdup_printf("exec:%s", shell);
}

char *sl_qemu_file_uri(const char *path, uint64_t offset)
{
    return offset ? g_strdup_printf("file:%s,offset=%" G_GUINT64_FORMAT, path, offset)
                  : g_strdup_printf("file:%s", path);
}
