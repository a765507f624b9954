/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * QMP client (see qmp.h).  QEMU sends one JSON object per line: a greeting,
 * then answers ({"return": ...} or {"error": ...}) in command order, with
 * asynchronous events ({"event": ...}) interleaved.  Lines are read with
 * poll() and a deadline; events are queued until someone waits for them.
 * Every command carries an "id" that QEMU copies into its answer, and an
 * answer with another command's id is dropped: one that comes after its
 * command gave up waiting (a timeout, a signal) would otherwise be taken
 * for the next command's, and every later answer shifted by one.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include "snapload/snapload.h"
#include "qmp.h"

struct sl_qmp {
    int fd;
    GString *in;       /* bytes read, not yet split into lines */
    GQueue events;     /* JsonObject * of events not yet consumed */
    uint64_t last_id;  /* the id of the last command sent */
    int cancel_fd;     /* readable: the next wait gives up (once); -1: none */
};

static gint64 deadline_after(int timeout_ms)
{
    return g_get_monotonic_time() + (gint64)timeout_ms * 1000;
}

static int ms_left(gint64 deadline)
{
    gint64 left = (deadline - g_get_monotonic_time()) / 1000;
    return left < 0 ? 0 : (int)MIN(left, G_MAXINT);
}

/* QEMU's longest lines (query-qmp-schema, qom-list of a big machine) are a
 * few hundred KiB: a peer sending more without a newline is not QEMU. */
#define MAX_LINE (16u << 20)

/* @line as one JSON object (caller unrefs), or NULL with @errp saying what
 * the peer sent instead: QEMU sends nothing else (found by a user's test:
 * a blank line raised a GLib critical, other lines were skipped, and the
 * wait ended "no greeting" 30 s later). */
static JsonObject *parse_object(const char *line, GError **errp)
{
    g_autoptr(JsonParser) p = json_parser_new();
    g_autoptr(GError) why = NULL;
    JsonNode *root;

    if (json_parser_load_from_data(p, line, -1, &why) &&
        (root = json_parser_get_root(p)) && JSON_NODE_HOLDS_OBJECT(root)) {
        return json_object_ref(json_node_get_object(root));
    }
    g_autofree char *head = g_strndup(line, 60);
    g_autofree char *shown = g_strescape(g_strchomp(head), NULL);
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the QMP peer sent a line that is not a "
                "JSON object (is it a QEMU monitor?): \"%s\"%s%s", shown,
                why ? ": " : "", why ? why->message : "");
    return NULL;
}

/* Reads one line into a parsed JSON object (caller unrefs), or NULL. */
static JsonObject *read_object(sl_qmp *q, gint64 deadline, GError **errp)
{
    for (;;) {
        char *nl = memchr(q->in->str, '\n', q->in->len);
        if (nl) {
            gsize n = (gsize)(nl - q->in->str) + 1;
            g_autofree char *line = g_strndup(q->in->str, n);
            g_string_erase(q->in, 0, (gssize)n);
            return parse_object(line, errp);
        }
        if (q->in->len > MAX_LINE) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the QMP peer sent more than %u MiB "
                        "without a line end (is it a QEMU monitor?)", MAX_LINE >> 20);
            return NULL;
        }
        struct pollfd pf[2] = { { .fd = q->fd, .events = POLLIN },
                                { .fd = q->cancel_fd, .events = POLLIN } };
        char buf[65536];
        ssize_t r;
        int pr = poll(pf, 2, ms_left(deadline));
        if (pr < 0 && errno == EINTR) {
            continue;
        }
        if (pr > 0 && pf[1].revents) {
            q->cancel_fd = -1; /* once: what the caller sends next is answered */
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "interrupted while waiting for QEMU");
            return NULL;
        }
        if (pr == 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QEMU did not answer on QMP in time");
            return NULL;
        }
        r = read(q->fd, buf, sizeof(buf));
        if (r <= 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QEMU closed its QMP connection%s%s",
                        r < 0 ? ": " : " (did it exit?)", r < 0 ? g_strerror(errno) : "");
            return NULL;
        }
        g_string_append_len(q->in, buf, r);
    }
}

static bool send_line(sl_qmp *q, const char *text, GError **errp)
{
    size_t len = strlen(text), off = 0;

    while (off < len) {
        ssize_t w = send(q->fd, text + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QMP send: %s", g_strerror(errno));
            return false;
        }
        off += (size_t)w;
    }
    return true;
}

/* Greeting, then qmp_capabilities; the waits end early once @cancel_fd
 * (-1: none) is readable.  @path: the socket connected to, for the error
 * of a monitor that sends no greeting, or NULL. */
static sl_qmp *negotiate(int fd, int timeout_ms, int cancel_fd, const char *path,
                         GError **errp)
{
    sl_qmp *q = g_new0(sl_qmp, 1);
    gint64 deadline = deadline_after(timeout_ms);
    JsonObject *greet;

    q->fd = fd;
    q->cancel_fd = cancel_fd;
    q->in = g_string_new(NULL);
    g_queue_init(&q->events);
    greet = read_object(q, deadline, errp);
    if (!greet && path && q->cancel_fd == cancel_fd && ms_left(deadline) == 0 && errp) {
        /* A socket QEMU serves accepts a second client and greets it only
         * once the first has gone. */
        g_clear_error(errp);
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QMP socket %s: no greeting from QEMU "
                    "within %d s: another client may hold this monitor (QEMU serves one "
                    "client per QMP socket at a time; give QEMU another -qmp socket)", path,
                    timeout_ms / 1000);
    }
    if (!greet || !json_object_has_member(greet, "QMP")) {
        if (greet && errp && !*errp) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the peer is not a QMP server");
        }
        if (greet) {
            json_object_unref(greet);
        }
        sl_qmp_close(q);
        return NULL;
    }
    json_object_unref(greet);
    if (!sl_qmp_ok(q, "qmp_capabilities", NULL, errp)) {
        sl_qmp_close(q);
        return NULL;
    }
    return q;
}

sl_qmp *sl_qmp_connect(const char *path, int timeout_ms, int cancel_fd, GError **errp)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QMP socket %s: %s", path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    return negotiate(fd, timeout_ms, cancel_fd, path, errp);
}

sl_qmp *sl_qmp_accept(int lfd, int pidfd, int timeout_ms, GError **errp)
{
    struct pollfd p[2] = { { .fd = lfd, .events = POLLIN }, { .fd = pidfd, .events = POLLIN } };
    int n = poll(p, 2, timeout_ms), fd;

    if (n > 0 && p[1].revents) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QEMU exited before it connected to QMP");
        return NULL;
    }
    if (n <= 0 || (fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QEMU did not connect to QMP within %d ms",
                    timeout_ms);
        return NULL;
    }
    return negotiate(fd, timeout_ms, -1, NULL, errp);
}

/* The first line of @text, with @fd attached (SCM_RIGHTS); the rest plainly. */
static bool send_line_fd(sl_qmp *q, const char *text, int fd, GError **errp)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl = { 0 };
    struct iovec iov = { (void *)text, 1 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                        .msg_controllen = sizeof(ctl.buf) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    ssize_t w;

    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    do { /* the fd goes with the command's first byte */
        w = sendmsg(q->fd, &m, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    if (w < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QMP send: %s", g_strerror(errno));
        return false;
    }
    return send_line(q, text + 1, errp);
}

/* Whether @o answers an earlier command than the last one sent (its id
 * is another; an answer without one is to a line QEMU could not parse). */
static bool stale_answer(const sl_qmp *q, JsonObject *o)
{
    JsonNode *id = json_object_get_member(o, "id");

    return id && (!JSON_NODE_HOLDS_VALUE(id) || json_node_get_value_type(id) != G_TYPE_INT64 ||
                  (uint64_t)json_node_get_int(id) != q->last_id);
}

/* @cmd's answer: its "return" value, or NULL with QEMU's error. */
static JsonNode *answer(sl_qmp *q, const char *cmd, GError **errp)
{
    gint64 deadline = deadline_after(60000);

    for (;;) {
        JsonObject *o = read_object(q, deadline, errp);
        if (!o) {
            return NULL;
        }
        if (json_object_has_member(o, "event")) {
            g_queue_push_tail(&q->events, o);
            continue;
        }
        if (stale_answer(q, o)) {
            json_object_unref(o);
            continue;
        }
        if (json_object_has_member(o, "return")) {
            JsonNode *r = json_node_copy(json_object_get_member(o, "return"));
            json_object_unref(o);
            return r;
        }
        if (json_object_has_member(o, "error")) {
            JsonObject *e = json_object_get_object_member(o, "error");
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "QEMU refused %s: %s", cmd,
                        e && json_object_has_member(e, "desc")
                            ? json_object_get_string_member(e, "desc") : "(no description)");
            json_object_unref(o);
            return NULL;
        }
        json_object_unref(o);
    }
}

/* The line that runs @cmd with arguments @args_json (NULL: none), under a new id. */
static char *command_line(sl_qmp *q, const char *cmd, const char *args_json)
{
    return g_strdup_printf("{\"execute\": \"%s\", \"id\": %" G_GUINT64_FORMAT "%s%s}\n",
                           cmd, ++q->last_id, args_json ? ", \"arguments\": " : "",
                           args_json ? args_json : "");
}

JsonNode *sl_qmp_cmd(sl_qmp *q, const char *cmd, const char *args_json, GError **errp)
{
    g_autofree char *text = command_line(q, cmd, args_json);

    return send_line(q, text, errp) ? answer(q, cmd, errp) : NULL;
}

char *sl_qmp_quote(const char *s)
{
    g_autoptr(JsonNode) n = json_node_new(JSON_NODE_VALUE);

    json_node_set_string(n, s);
    return json_to_string(n, FALSE);
}

bool sl_qmp_getfd(sl_qmp *q, const char *name, int fd, GError **errp)
{
    g_autofree char *quoted = sl_qmp_quote(name);
    g_autofree char *args = g_strdup_printf("{\"fdname\": %s}", quoted);
    g_autofree char *text = command_line(q, "getfd", args);
    g_autoptr(JsonNode) r = send_line_fd(q, text, fd, errp) ? answer(q, "getfd", errp) : NULL;

    return r != NULL;
}

bool sl_qmp_ok(sl_qmp *q, const char *cmd, const char *args_json, GError **errp)
{
    JsonNode *r = sl_qmp_cmd(q, cmd, args_json, errp);

    if (r) {
        json_node_unref(r);
    }
    return r != NULL;
}

/* The status of a MIGRATION event, or NULL for other events. */
static const char *migration_status(JsonObject *ev)
{
    JsonObject *data;

    if (g_strcmp0(json_object_get_string_member(ev, "event"), "MIGRATION") ||
        !json_object_has_member(ev, "data")) {
        return NULL;
    }
    data = json_object_get_object_member(ev, "data");
    return data && json_object_has_member(data, "status")
               ? json_object_get_string_member(data, "status") : NULL;
}

bool sl_qmp_wait_migration(sl_qmp *q, int timeout_ms, GError **errp)
{
    gint64 deadline = deadline_after(timeout_ms);

    for (;;) {
        JsonObject *ev = g_queue_pop_head(&q->events);
        const char *st;
        bool done, ok;

        if (!ev && !(ev = read_object(q, deadline, errp))) {
            if (g_get_monotonic_time() >= deadline) { /* say what was waited for, and how long */
                g_prefix_error(errp, "the migration did not end within %d s: ", timeout_ms / 1000);
            }
            return false;
        }
        st = json_object_has_member(ev, "event") ? migration_status(ev) : NULL;
        done = st && (!strcmp(st, "completed") || !strcmp(st, "failed") ||
                      !strcmp(st, "cancelled"));
        ok = done && !strcmp(st, "completed");
        if (done && !ok) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "migration %s", st);
        }
        json_object_unref(ev);
        if (done) {
            return ok;
        }
    }
}

char *sl_qmp_hmp(sl_qmp *q, const char *cmdline, GError **errp)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonGenerator) g = json_generator_new();
    g_autoptr(JsonNode) args = NULL;
    g_autofree char *text = NULL;
    JsonNode *r;
    char *out;

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "command-line");
    json_builder_add_string_value(b, cmdline);
    json_builder_end_object(b);
    args = json_builder_get_root(b);
    json_generator_set_root(g, args);
    text = json_generator_to_data(g, NULL);
    r = sl_qmp_cmd(q, "human-monitor-command", text, errp);
    if (!r) {
        return NULL;
    }
    out = g_strdup(JSON_NODE_HOLDS_VALUE(r) ? json_node_get_string(r) : "");
    json_node_unref(r);
    return out;
}

JsonNode *sl_qmp_query(sl_qmp *q, const char *cmd, JsonNodeType type, GError **errp)
{
    JsonNode *r = sl_qmp_cmd(q, cmd, NULL, errp);

    if (r && JSON_NODE_TYPE(r) != type) {
        json_node_unref(r);
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QEMU's answer to %s is not of the shape QMP "
                    "documents", cmd);
        return NULL;
    }
    return r;
}

char *sl_qmp_status(sl_qmp *q, GError **errp)
{
    g_autoptr(JsonNode) r = sl_qmp_query(q, "query-status", JSON_NODE_OBJECT, errp);
    const char *st = r ? json_object_get_string_member_with_default(json_node_get_object(r),
                                                                    "status", NULL) : NULL;

    if (r && !st) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "QEMU's answer to query-status has no status");
    }
    return g_strdup(st);
}

void sl_qmp_set_cancel(sl_qmp *q, int fd)
{
    q->cancel_fd = fd;
}

pid_t sl_qmp_peer_pid(const sl_qmp *q)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);

    return getsockopt(q->fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 ? cr.pid : -1;
}

void sl_qmp_close(sl_qmp *q)
{
    JsonObject *ev;

    if (!q) {
        return;
    }
    while ((ev = g_queue_pop_head(&q->events))) {
        json_object_unref(ev);
    }
    close(q->fd);
    g_string_free(q->in, true);
    g_free(q);
}
