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
    g_autoptr(JsonNode) r = sl_qmp_query(q, "query-migrate-capabilities", JSON_NODE_ARRAY, errp);
    JsonArray *a = r ? json_node_get_array(r) : NULL;
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

/*
 * The capabilities sl_qemu_set_caps() sets, in its order (NULL-ended).
 * The last two are always off: a user's pause-before-switchover would
 * hold our save in pre-switchover until its time ran out, and
 * postcopy-ram is refused with mapped-ram and by the stream splitter.
 */
static const char *const cap_names[] = { "x-ignore-shared", "mapped-ram", "multifd", "events",
                                         "pause-before-switchover", "postcopy-ram", NULL };
/* The parameters qemu-save and qemu-restore may set. */
static const char *const param_names[] = { "max-bandwidth", "multifd-channels" };

/* One capability's entry of migrate-set-capabilities' list into @args. */
static void add_cap(GString *args, const char *name, bool on)
{
    g_string_append_printf(args, "%s{\"capability\": \"%s\", \"state\": %s}",
                           g_str_has_suffix(args->str, "[") ? "" : ", ", name,
                           on ? "true" : "false");
}

bool sl_qemu_set_caps(sl_qmp *q, const sl_qemu_caps *c, GError **errp)
{
    const bool on[G_N_ELEMENTS(cap_names) - 1] = { c->ignore_shared, c->mapped_ram, c->multifd,
                                                   true, false, false };
    g_autoptr(GHashTable) known = known_caps(q, errp);
    g_autoptr(GString) args = g_string_new("{\"capabilities\": [");

    if (!known) {
        return false;
    }
    for (unsigned i = 0; cap_names[i]; i++) {
        if (!g_hash_table_contains(known, cap_names[i])) {
            if (on[i]) {
                g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED, "this QEMU has no '%s' "
                            "migration capability (QEMU 9.0 or later has mapped-ram)",
                            cap_names[i]);
                return false;
            }
            continue; /* off, and this QEMU does not know it: off it is */
        }
        add_cap(args, cap_names[i], on[i]);
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

/* Whether QEMU's migration is still under way (not ended, not none). */
static bool migration_running(sl_qmp *q)
{
    g_autoptr(JsonNode) r = sl_qmp_query(q, "query-migrate", JSON_NODE_OBJECT, NULL);
    const char *st = r ? json_object_get_string_member_with_default(json_node_get_object(r),
                                                                    "status", "none")
                       : "none";

    return strcmp(st, "none") && strcmp(st, "completed") && strcmp(st, "failed") &&
           strcmp(st, "cancelled");
}

#define CANCEL_WAIT_MS 60000

/*
 * An outgoing migration we gave up waiting for is cancelled, and waited
 * for until it ended: QEMU refuses to change migration settings while one
 * is in progress, and one blocked on its channel stays "cancelling" until
 * the channel moves (found putting settings back after a signal).
 */
static void cancel_migration(sl_qmp *q)
{
    if (migration_running(q) && sl_qmp_ok(q, "migrate_cancel", NULL, NULL)) {
        g_autoptr(GError) ended = NULL; /* "migration cancelled": what was asked */
        (void)sl_qmp_wait_migration(q, CANCEL_WAIT_MS, &ended);
    }
}

bool sl_qemu_migrate(sl_qmp *q, const char *cmd, const char *uri, GError **errp)
{
    g_autofree char *quoted = sl_qmp_quote(uri);
    g_autofree char *args = g_strdup_printf("{\"uri\": %s}", quoted);

    if (!sl_qmp_ok(q, cmd, args, errp)) {
        return false;
    }
    if (!sl_qmp_wait_migration(q, MIGRATE_TIMEOUT_MS, errp)) {
        add_reason(q, errp);
        if (!strcmp(cmd, "migrate")) {
            /* Still running (we gave up waiting), it would end as a live
             * migration, stopping the guest, into a file we remove (found
             * by review). */
            cancel_migration(q);
        }
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

/* migrate-set-capabilities arguments giving snapload's capabilities the
 * states QEMU reports now (those it has), or NULL. */
static char *caps_now(sl_qmp *q, GError **errp)
{
    g_autoptr(JsonNode) r = sl_qmp_query(q, "query-migrate-capabilities", JSON_NODE_ARRAY, errp);
    JsonArray *a = r ? json_node_get_array(r) : NULL;
    g_autoptr(GString) args = g_string_new("{\"capabilities\": [");

    if (!a) {
        return NULL;
    }
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *o = json_array_get_object_element(a, i);
        const char *name = o ? json_object_get_string_member_with_default(o, "capability", "")
                             : "";
        if (!g_strv_contains(cap_names, name) || !json_object_has_member(o, "state")) {
            continue;
        }
        add_cap(args, name, json_object_get_boolean_member(o, "state"));
    }
    g_string_append(args, "]}");
    return g_string_free(g_steal_pointer(&args), false);
}

/* migrate-set-parameters arguments giving the parameters snapload sets the
 * values QEMU reports now (those it has), or NULL. */
static char *params_now(sl_qmp *q, GError **errp)
{
    g_autoptr(JsonNode) r = sl_qmp_query(q, "query-migrate-parameters", JSON_NODE_OBJECT, errp);
    JsonObject *o = r ? json_node_get_object(r) : NULL;
    g_autoptr(GString) args = g_string_new("{");

    if (!o) {
        return NULL;
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(param_names); i++) {
        JsonNode *v = json_object_get_member(o, param_names[i]);
        if (v && JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == G_TYPE_INT64) {
            g_string_append_printf(args, "%s\"%s\": %" G_GINT64_FORMAT, args->len > 1 ? ", " : "",
                                   param_names[i], json_node_get_int(v));
        }
    }
    g_string_append(args, "}");
    return g_string_free(g_steal_pointer(&args), false);
}

bool sl_qemu_settings_read(sl_qmp *q, sl_qemu_settings *s, GError **errp)
{
    *s = (sl_qemu_settings){ 0 };
    if (!(s->caps = caps_now(q, errp)) || !(s->params = params_now(q, errp))) {
        g_prefix_error(errp, "QEMU's migration settings: ");
        sl_qemu_settings_clear(s);
        return false;
    }
    return true;
}

bool sl_qemu_settings_put_back(sl_qmp *q, const sl_qemu_settings *s, GError **errp)
{
    if (!sl_qmp_ok(q, "migrate-set-capabilities", s->caps, errp) ||
        !sl_qmp_ok(q, "migrate-set-parameters", s->params, errp)) {
        g_prefix_error(errp, "putting back QEMU's migration settings: ");
        return false;
    }
    return true;
}

void sl_qemu_settings_clear(sl_qemu_settings *s)
{
    g_clear_pointer(&s->caps, g_free);
    g_clear_pointer(&s->params, g_free);
}
