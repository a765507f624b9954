/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What qemu-restore prints when it ends: the moments from QEMU's start to
 * the guest running and every page in place, the daemon's counters, and
 * any error, as text or (--json) one JSON object.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <json-glib/json-glib.h>
#include "qemu-restore.h"

/* Adds integer member @key of the daemon's JSON stats line @stats to @j,
 * or null when the daemon reported none. */
static void stats_member(cli_json *j, const char *stats, const char *key)
{
    g_autoptr(JsonNode) n = stats ? json_from_string(stats, NULL) : NULL;
    JsonObject *o = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;

    if (o && json_object_has_member(o, key)) {
        json_int(j, key, json_object_get_int_member(o, key));
    } else {
        json_raw(j, key, "null");
    }
}

/* @b - @a in ms, or NAN when either moment was not reached. */
static double span(double a, double b)
{
    return a > 0 && b > 0 ? b - a : NAN;
}

/* The lazy blocks as a JSON array of names. */
static char *lazy_json(const qr *r)
{
    GString *s = g_string_new("[");

    for (guint i = 0; r->backends && i < r->backends->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(r->backends, i);
        g_string_append(s, i ? ", " : "");
        json_quote(s, b->id);
    }
    g_string_append_c(s, ']');
    return g_string_free(s, false);
}

static void report_text(const qr *r, const char *error)
{
    if (r->t_run > 0 && r->o->paused) { /* left paused: it never ran (found by a user's test) */
        printf("QEMU started to device state loaded, guest left paused: %.1f ms (QEMU start "
               "%.1f ms, device state %.1f ms)\n", r->t_dev1 - r->t0, r->t_qmp - r->t0,
               r->t_dev1 - r->t_dev0);
    } else if (r->t_run > 0) {
        printf("QEMU started to guest running: %.1f ms (QEMU start %.1f ms, device state %.1f "
               "ms, cont %.1f ms)\n", r->t_run - r->t0, r->t_qmp - r->t0,
               r->t_dev1 - r->t_dev0, r->t_run - r->t_dev1);
    }
    if (!r->o->eager && r->t_done > 0) {
        printf("every page in place: %.1f ms after QEMU started\n", r->t_done - r->t0);
    }
    if (!r->o->eager && r->stats) {
        printf("restore: %s\n", r->stats);
    }
    if (r->o->verify && !error) {
        printf("verify: %" G_GUINT64_FORMAT " mismatching pages\n", r->verify_mismatches);
    }
    if (error) {
        printf("failed: %s\n", error);
    }
}

/*
 * What the run measured, in text or --json.  After a failure, @error says
 * why, and every figure not reached is null (JSON) or left out (text): the
 * phases that did happen, and the daemon's figures if it reported any (a
 * daemon stopped early reports what it had reached: qr_final_figures()).
 */
void qr_report(const qr *r, const char *error)
{
    g_autofree char *text = NULL, *lazy = NULL;
    cli_json j;

    if (!r->o->json) {
        report_text(r, error);
        fflush(stdout);
        return;
    }
    json_begin(&j);
    json_str(&j, "mode", r->o->eager ? "eager" : "lazy");
    json_str(&j, "status", error ? "failed" : "ok");
    if (error) {
        json_str(&j, "error", error);
    }
    if (r->snap) {
        json_str(&j, "snapshot_format",
                 sl_snapshot_get_format(r->snap) == SL_FORMAT_QEMU ? "qemu" : "snapload");
    } else {
        json_raw(&j, "snapshot_format", "null"); /* it could not be opened */
    }
    json_str(&j, "device_state_uri", r->load_uri ? r->load_uri : "");
    json_double(&j, "time_to_running_ms", r->o->paused ? -1 : span(r->t0, r->t_run));
    json_double(&j, "qemu_start_ms", span(r->t0, r->t_qmp));
    json_double(&j, "device_state_ms", span(r->t_dev0, r->t_dev1));
    json_double(&j, "cont_ms", r->o->paused ? -1 : span(r->t_dev1, r->t_run));
    json_double(&j, "incoming_to_running_ms", r->o->paused ? -1 : span(r->t_dev0, r->t_run));
    json_double(&j, "incoming_ms", span(r->t0, r->t_dev0)); /* migrate-incoming, from the start */
    /* The start (QEMU spawned) on CLOCK_MONOTONIC, so that a caller can put
     * its own timestamps (a guest's first answer) on the same time line. */
    json_double(&j, "start_monotonic_ms", r->t0 > 0 ? r->t0 : NAN);
    if (!r->o->eager) {
        lazy = lazy_json(r);
        json_raw(&j, "lazy_blocks", lazy);
        json_double(&j, "time_to_complete_ms", span(r->t0, r->t_done));
        stats_member(&j, r->stats, "faults");
        stats_member(&j, r->stats, "pages_placed_twice");
        json_raw(&j, "restore", r->stats ? r->stats : "null");
    }
    if (r->o->verify && !error) {
        json_str(&j, "verify", r->verify_mismatches ? "mismatch" : "ok");
        json_u64(&j, "verify_mismatches", r->verify_mismatches);
    }
    text = json_end(&j);
    printf("%s\n", text);
    fflush(stdout);
}

