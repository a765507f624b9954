/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The QMP client (tools/qmp.c) against a scripted QMP server on a unix
 * socket (a thread of the test), where stock QEMU cannot be made to answer
 * late on purpose:
 *  - an answer that comes after its command gave up waiting (interrupted,
 *    as qemu-save is by a signal) is not taken for the next command's
 *    (found by review: every later answer was shifted by one);
 *  - an interruption ends one wait only, so the caller can then put QEMU
 *    back with further commands;
 *  - events that arrive before an answer are kept for the waits on them;
 *  - a monitor that never greets (held by another client) is named so,
 *    and the wait for its greeting can be cancelled;
 *  - a peer that sends anything but JSON objects is refused at once.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "testutil.h"
#include "tools/qmp.h"

typedef struct {
    char *dir, *path;
    int lfd;
    GThread *server;
    sl_qmp *q; /* the client, closed by the teardown if a test failed */
} fixture;

/* One line from @fd (a command), without its newline; NULL at the end. */
static char *read_line(int fd)
{
    GString *s = g_string_new(NULL);
    char c;

    while (read(fd, &c, 1) == 1) {
        if (c == '\n') {
            return g_string_free(s, false);
        }
        g_string_append_c(s, c);
    }
    g_string_free(s, true);
    return NULL;
}

/* The "id" of command line @line, or -1. */
static gint64 id_of(const char *line)
{
    g_autoptr(JsonParser) p = json_parser_new();
    JsonObject *o;

    if (!json_parser_load_from_data(p, line, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        return -1;
    }
    o = json_node_get_object(json_parser_get_root(p));
    return json_object_has_member(o, "id") ? json_object_get_int_member(o, "id") : -1;
}

static void say(int fd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void say(int fd, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *text = NULL;

    va_start(ap, fmt);
    text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
}

/* Answers command line @line with return value @value (a JSON text), echoing its id. */
static void answer(int fd, const char *line, const char *value)
{
    gint64 id = id_of(line);

    if (id >= 0) {
        say(fd, "{\"return\": %s, \"id\": %" G_GINT64_FORMAT "}\n", value, id);
    } else {
        say(fd, "{\"return\": %s}\n", value);
    }
}

/*
 * The server's script: greeting, qmp_capabilities answered; the first
 * command ("slow") answered only once the second ("next") came, right
 * before the second's answer and after an event; then every command
 * answered with its own name.
 */
static gpointer serve(gpointer opaque)
{
    fixture *f = opaque;
    int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    g_autofree char *caps = NULL, *slow = NULL, *next = NULL;
    char *line;

    if (fd < 0) {
        return NULL;
    }
    say(fd, "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
    if ((caps = read_line(fd))) {
        answer(fd, caps, "{}");
    }
    if ((slow = read_line(fd)) && (next = read_line(fd))) {
        answer(fd, slow, "\"slow\"");
        say(fd, "{\"event\": \"MIGRATION\", \"data\": {\"status\": \"completed\"}}\n");
        answer(fd, next, "\"next\"");
    }
    while ((line = read_line(fd))) {
        g_autoptr(JsonParser) p = json_parser_new();
        g_autofree char *name = NULL;
        if (json_parser_load_from_data(p, line, -1, NULL)) {
            JsonObject *o = json_node_get_object(json_parser_get_root(p));
            name = g_strdup_printf("\"%s\"", json_object_get_string_member(o, "execute"));
        }
        answer(fd, line, name ? name : "null");
        g_free(line);
    }
    close(fd);
    return NULL;
}

static int setup(void **state)
{
    fixture *f = g_new0(fixture, 1);
    struct sockaddr_un a = { .sun_family = AF_UNIX };

    f->dir = sl_test_tmpdir();
    f->path = g_build_filename(f->dir, "qmp.sock", NULL);
    g_strlcpy(a.sun_path, f->path, sizeof(a.sun_path));
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->lfd, 1), 0);
    f->server = g_thread_new("qmp-server", serve, f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    sl_qmp_close(f->q); /* the server's reads end */
    g_thread_join(f->server);
    close(f->lfd);
    unlink(f->path);
    g_free(f->path);
    sl_test_rmdir(f->dir);
    g_free(f);
    return 0;
}

/* sl_qmp_cmd() of @cmd, whose answer must be the JSON string @want. */
static void expect_answer(sl_qmp *q, const char *cmd, const char *want)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) r = sl_qmp_cmd(q, cmd, NULL, &err);

    if (!r) {
        fail_msg("%s: %s", cmd, err->message);
    }
    if (!JSON_NODE_HOLDS_VALUE(r) || g_strcmp0(json_node_get_string(r), want)) {
        fail_msg("%s was answered '%s', not '%s'", cmd,
                 JSON_NODE_HOLDS_VALUE(r) ? json_node_get_string(r) : "(not a string)", want);
    }
}

/* ---------------------------------- tests -------------------------------- */

static void test_an_answer_after_an_interrupted_wait_is_not_taken_for_the_next(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) r = NULL;
    uint64_t one = 1;
    int efd = eventfd(0, EFD_CLOEXEC);
    sl_qmp *q = f->q = sl_qmp_connect(f->path, 10000, -1, &err);

    if (!q) {
        fail_msg("connecting: %s", err->message);
    }
    assert_int_equal(write(efd, &one, sizeof(one)), sizeof(one));
    sl_qmp_set_cancel(q, efd); /* readable already: the next wait gives up */
    r = sl_qmp_cmd(q, "slow", NULL, &err);
    assert_null(r);
    assert_non_null(strstr(err->message, "interrupted"));
    /* The fd is still readable: the interruption ended one wait only. */
    expect_answer(q, "next", "next");
    g_clear_error(&err);
    if (!sl_qmp_wait_migration(q, 10000, &err)) {
        fail_msg("the event sent before the answer was lost: %s", err->message);
    }
    expect_answer(q, "after", "after");
    close(efd);
}

/* A listening socket at a new path in @dir that never accepts: a
 * connection to it waits in the backlog, as a second client of QEMU's
 * monitor does; its path in *@path. */
static int never_greets(const char *dir, char **path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    *path = g_build_filename(dir, "busy.sock", NULL);
    g_strlcpy(a.sun_path, *path, sizeof(a.sun_path));
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 4), 0);
    return fd;
}

/*
 * A monitor that sends no greeting (QEMU greets a second client only once
 * the first has gone) is named as possibly held by another client, not
 * "did not answer"; and a signal's note ends the wait for the greeting at
 * once (qemu-save took its cancel fd only after the connection: ^C
 * waited out the 30 s).
 */
static void test_a_busy_monitor_is_named_and_its_wait_can_be_cancelled(void **state)
{
    g_autofree char *dir = sl_test_tmpdir(), *path = NULL;
    g_autoptr(GError) err = NULL;
    int lfd = never_greets(dir, &path), efd = eventfd(0, EFD_CLOEXEC);
    gint64 t0;

    (void)state;
    assert_null(sl_qmp_connect(path, 300, -1, &err));
    if (!strstr(err->message, path) || !strstr(err->message, "another client")) {
        fail_msg("a monitor without a greeting: %s", err->message);
    }
    g_clear_error(&err);
    assert_int_equal(eventfd_write(efd, 1), 0);
    t0 = g_get_monotonic_time();
    assert_null(sl_qmp_connect(path, 20000, efd, &err));
    if (!strstr(err->message, "interrupted") || g_get_monotonic_time() - t0 > 5 * G_USEC_PER_SEC) {
        fail_msg("a cancelled connection ended after %" G_GINT64_FORMAT " ms: %s",
                 (g_get_monotonic_time() - t0) / 1000, err->message);
    }
    close(efd);
    close(lfd);
    unlink(path);
    sl_test_rmdir(g_steal_pointer(&dir));
}

/* A peer at @lfd that accepts one client and sends it @payload (@len
 * bytes), then keeps the connection open until the client closes it. */
typedef struct {
    int lfd;
    const char *payload;
    size_t len;
} bad_peer;

static gpointer serve_bad_peer(gpointer opaque)
{
    bad_peer *b = opaque;
    int fd = accept(b->lfd, NULL, NULL);
    char c;

    for (size_t off = 0; fd >= 0 && off < b->len;) {
        ssize_t w = send(fd, b->payload + off, b->len - off, MSG_NOSIGNAL);
        if (w <= 0) {
            break;
        }
        off += (size_t)w;
    }
    while (fd >= 0 && read(fd, &c, 1) > 0) {
    }
    if (fd >= 0) {
        close(fd);
    }
    return NULL;
}

/*
 * A peer that is not QEMU's monitor (a blank line, text, a JSON array, a
 * flood without a line end) is refused at once, saying what it sent.
 * Found by a user's test: a blank line raised a GLib critical, other
 * lines were skipped, and the wait ended 30 s later with "no greeting:
 * another client may hold this monitor".
 */
static void test_a_peer_sending_anything_but_json_objects_is_refused_at_once(void **state)
{
    g_autofree char *dir = sl_test_tmpdir(), *path = NULL;
    g_autofree char *flood = g_malloc((17u << 20) + 1);
    const struct { const char *payload; size_t len; const char *says; } cases[] = {
        { "\n", 1, "not a JSON object" },
        { "hello\n", 6, "\"hello\"" },
        { "[1, 2]\n", 7, "not a JSON object" },
        { flood, 17u << 20, "without a line end" },
    };
    GLogLevelFlags was = g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);

    (void)state;
    memset(flood, 'x', 17u << 20);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) err = NULL;
        int lfd = never_greets(dir, &path);
        bad_peer b = { lfd, cases[i].payload, cases[i].len };
        GThread *t = g_thread_new("bad-peer", serve_bad_peer, &b);
        gint64 t0 = g_get_monotonic_time();
        assert_null(sl_qmp_connect(path, 20000, -1, &err));
        if (!strstr(err->message, cases[i].says) ||
            g_get_monotonic_time() - t0 > 5 * G_USEC_PER_SEC) {
            fail_msg("case %zu: after %" G_GINT64_FORMAT " ms: %s", i,
                     (g_get_monotonic_time() - t0) / 1000, err->message);
        }
        g_thread_join(t);
        close(lfd);
        unlink(path);
        g_clear_pointer(&path, g_free);
    }
    g_log_set_always_fatal(was);
    sl_test_rmdir(g_steal_pointer(&dir));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_an_answer_after_an_interrupted_wait_is_not_taken_for_the_next, setup, teardown),
        cmocka_unit_test(test_a_busy_monitor_is_named_and_its_wait_can_be_cancelled),
        cmocka_unit_test(test_a_peer_sending_anything_but_json_objects_is_refused_at_once),
    };

    return cmocka_run_group_tests_name("qmp", tests, NULL, NULL);
}
