/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-restore reading its daemon's report lines (one JSON object each on
 * the stats pipe): where the preload client registered each block (checked
 * against QEMU's `info ramblock`), and the final result of the restore,
 * whose reason is put first when QEMU died of the restore's failure, or,
 * after a failed run, the figures it reached when it was stopped.  Also
 * reaps QEMU when it ended while we waited.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/wait.h>
#include <json-glib/json-glib.h>
#include "qemu-restore.h"
#include "qemu-verify.h"

#define REGISTER_WAIT_MS 10000     /* for the preload client's registrations to be reported */
#define QEMU_DEATH_GRACE_MS 5000   /* for QEMU to end itself when the daemon dies */

/* Waits up to @ms for QEMU to exit and reaps it; says how it ended (or that
 * it is still running; cleanup() then kills it). */
static char *reap_qemu(qr *r, int ms)
{
    struct pollfd p = { .fd = r->pidfd, .events = POLLIN };
    int st = 0;

    while (ms && poll(&p, 1, ms) < 0 && errno == EINTR) {
    }
    if ((ms && !p.revents) || waitpid(r->qemu, &st, 0) != r->qemu) {
        return g_strdup("still running; killed");
    }
    r->qemu = 0;
    return WIFEXITED(st) ? g_strdup_printf("exited with status %d", WEXITSTATUS(st))
                         : g_strdup_printf("was killed by signal %d", WTERMSIG(st));
}

/* Reads one line from the daemon (waiting up to @ms, -1: forever); NULL at EOF/timeout. */
static char *daemon_line(qr *r, int ms, bool *qemu_died)
{
    struct pollfd p[2] = { { .fd = r->stats_fd, .events = POLLIN },
                           { .fd = r->pidfd, .events = POLLIN } };
    char *line = NULL;
    gsize len;

    *qemu_died = false;
    /* A line the channel already read ahead needs no poll: the fd is drained. */
    while (!(g_io_channel_get_buffer_condition(r->stats_ch) & G_IO_IN) &&
           poll(p, 2, ms) < 0 && errno == EINTR) {
    }
    if (!(g_io_channel_get_buffer_condition(r->stats_ch) & G_IO_IN) && !p[0].revents) {
        *qemu_died = p[1].revents != 0;
        return NULL;
    }
    if (g_io_channel_read_line(r->stats_ch, &line, &len, NULL, NULL) != G_IO_STATUS_NORMAL) {
        return NULL;
    }
    return g_strchomp(line);
}

/*
 * A "registered" line: notes where, if QEMU registered (a back-end that
 * maps guest RAM before QEMU did must not be taken for QEMU: found by
 * review, its address failed the check against QEMU's); false for any
 * other line.
 */
static bool note_registration(qr *r, const char *line)
{
    g_autoptr(JsonNode) n = json_from_string(line, NULL);
    JsonObject *o = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;

    if (!o || !json_object_has_member(o, "registered")) {
        return false;
    }
    if (json_object_get_int_member_with_default(o, "pid", 0) != (gint64)r->qemu) {
        return true; /* another consumer's */
    }
    g_hash_table_insert(r->registered, g_strdup(json_object_get_string_member(o, "registered")),
                        GSIZE_TO_POINTER((gsize)json_object_get_int_member(o, "addr")));
    return true;
}

/* The "error" of the daemon's result line @stats, or NULL (caller frees). */
static char *result_error(const char *stats)
{
    g_autoptr(JsonNode) n = json_from_string(stats, NULL);
    JsonObject *o = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;

    return o && json_object_has_member(o, "error")
               ? g_strdup(json_object_get_string_member(o, "error")) : NULL;
}

/*
 * Waits until the daemon reported a registration of every lazy block (the
 * preload client registers as QEMU maps its RAM, before QEMU's monitor
 * answers), then checks each against `info ramblock`: a block registered
 * elsewhere than QEMU keeps it would have its pages placed into memory
 * that is not that block.
 */
bool qr_check_registrations(qr *r, GError **errp)
{
    g_autoptr(GHashTable) hva = NULL;
    gint64 deadline = g_get_monotonic_time() + REGISTER_WAIT_MS * 1000ll;

    while (g_hash_table_size(r->registered) < r->backends->len) {
        int left = (int)MAX(0, (deadline - g_get_monotonic_time()) / 1000);
        bool died;
        g_autofree char *line = daemon_line(r, left, &died);
        if (!line) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "QEMU mapped %u of the %u lazy RAM "
                        "blocks where the preload client looks for them (%s)",
                        g_hash_table_size(r->registered), r->backends->len,
                        died ? "QEMU exited" : "no registration came");
            return false;
        }
        if (!note_registration(r, line) && !r->stats) {
            /* The result, when a consumer registered before QEMU and the
             * restore ended for it first: kept for qr_wait_restore(), or,
             * a failure, the reason now. */
            r->stats = g_steal_pointer(&line);
            if (!strstr(r->stats, "\"status\": 0,")) {
                g_autofree char *why = result_error(r->stats);
                g_set_error(errp, SL_ERROR, SL_ERROR_IO, "the restore failed before QEMU "
                            "registered its RAM: %s", why ? why : r->stats);
                return false;
            }
        }
    }
    if (!(hva = sl_qemu_ramblock_hvas(r->q, errp))) {
        return false;
    }
    for (guint i = 0; i < r->backends->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(r->backends, i);
        gpointer at = g_hash_table_lookup(r->registered, b->id);
        gpointer want = g_hash_table_lookup(hva, b->id);
        if (!sl_qemu_refuse_device_block(hva, b->id, "save QEMU's own file (qemu-save "
                                         "--format qemu) and restore that", errp)) {
            return false;
        }
        if (!want || at != want) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s' was registered at %p, "
                        "but QEMU keeps it at %p: refusing to place its pages there", b->id,
                        at, want);
            return false;
        }
    }
    return true;
}

/* QEMU ended (waited for up to @ms) before the restore did: @errp says how. */
static bool qemu_ended_first(qr *r, int ms, GError **errp)
{
    g_autofree char *how = reap_qemu(r, ms);

    g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QEMU %s before every page was in place", how);
    return false;
}

/* Blocks until the daemon reports the end of the restore (once). */
bool qr_wait_restore(qr *r, GError **errp)
{

    if (r->t_done > 0) {
        return true;
    }
    while (!r->stats) {
        bool died;
        char *line = daemon_line(r, -1, &died);
        if (!line && died) {
            return qemu_ended_first(r, 0, errp);
        }
        if (!line) {
            /* The client inside QEMU ends it when the daemon goes away: give it
             * the time to say so before cleanup() kills what is left. */
            g_autofree char *how = reap_qemu(r, QEMU_DEATH_GRACE_MS);
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "the restore daemon ended without a "
                        "result (QEMU %s)", how);
            return false;
        }
        if (note_registration(r, line)) {
            g_free(line); /* a consumer that joined later (a back-end) */
            continue;
        }
        r->stats = line;
    }
    if (!strstr(r->stats, "\"status\": 0,")) {
        g_autofree char *why = result_error(r->stats);
        if (why && g_str_has_prefix(why, "restore stopped: the process")) {
            /* QEMU ended first (and no refused page did it, which the
             * restore would name): what ended QEMU is the reason, not the
             * restore's stop that followed (found by review) */
            return qemu_ended_first(r, QEMU_DEATH_GRACE_MS, errp);
        }
        /* The restore's own reason (the daemon's figures stay in --json). */
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s%s",
                    why && g_str_has_prefix(why, "restore failed") ? "" : "the restore failed: ",
                    why ? why : r->stats);
        return false;
    }
    r->t_done = cli_now_ms();
    return true;
}

#define RESULT_WAIT_MS 2000      /* for the daemon's result after QEMU ended early */
#define FINAL_LINE_WAIT_MS 5000  /* for a stopped daemon's last line */

/*
 * The daemon's next line that is not a registration, waiting up to @ms for
 * each line (only the stats pipe: QEMU may be gone already); NULL at EOF or
 * timeout.
 */
static char *result_line(qr *r, int ms)
{
    struct pollfd p = { .fd = r->stats_fd, .events = POLLIN };

    for (;;) {
        char *line = NULL;
        gsize len;

        if (!(g_io_channel_get_buffer_condition(r->stats_ch) & G_IO_IN) &&
            poll(&p, 1, ms) <= 0) {
            return NULL;
        }
        if (g_io_channel_read_line(r->stats_ch, &line, &len, NULL, NULL) != G_IO_STATUS_NORMAL) {
            return NULL;
        }
        if (!note_registration(r, g_strchomp(line))) {
            return line;
        }
        g_free(line);
    }
}

/*
 * After a failure before the restore's end (the device-state load, say):
 * the daemon's result, if it failed the restore.  A page that cannot be
 * served ends QEMU, so QMP only says that QEMU went away; the daemon says
 * why.  NULL if it reports no error within RESULT_WAIT_MS.  The line is
 * kept in r->stats: the figures reached, for the report.
 */
char *qr_daemon_failure(qr *r)
{
    char *why;

    if (r->o->eager || !r->stats_ch || r->stats ||
        !(r->stats = result_line(r, RESULT_WAIT_MS))) {
        return NULL;
    }
    why = result_error(r->stats);
    if (why && g_str_has_prefix(why, "restore stopped")) { /* an effect, not a cause */
        g_clear_pointer(&why, g_free);
    }
    return why;
}

void qr_final_figures(qr *r)
{
    if (!r->stats && r->stats_ch) {
        r->stats = result_line(r, FINAL_LINE_WAIT_MS);
    }
}
