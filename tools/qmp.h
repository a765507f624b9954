/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A small synchronous QMP client for driving stock QEMU: `qemu-save`,
 * `qemu-restore` and the integration tests use it to stop a guest, run
 * migrations, wait for events and read registers.  One connection, one
 * thread; events that arrive while a command waits for its answer are kept
 * for sl_qmp_wait_event().  Every wait has a timeout, and a QEMU that goes
 * away is an error, never a hang.
 */
#ifndef SNAPLOAD_QMP_H
#define SNAPLOAD_QMP_H

#include <stdbool.h>
#include <sys/types.h>
#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct sl_qmp sl_qmp;

/**
 * sl_qmp_connect: connect to QEMU's QMP server socket @path and negotiate,
 * within @timeout_ms.  @cancel_fd (-1: none) is then set as by
 * sl_qmp_set_cancel(), the negotiation's waits included.  A monitor that
 * sends no greeting in time (another client holds it) is named so.
 */
sl_qmp *sl_qmp_connect(const char *path, int timeout_ms, int cancel_fd, GError **errp);

/**
 * sl_qmp_accept: accept QEMU's connection on the listening socket @lfd
 * (QEMU started with `-chardev socket,path=...` as a client) and negotiate.
 * Gives up after @timeout_ms, or early when @pidfd (if >= 0) says the QEMU
 * process has exited.
 */
sl_qmp *sl_qmp_accept(int lfd, int pidfd, int timeout_ms, GError **errp);

/**
 * sl_qmp_cmd: run @cmd with arguments @args_json (a JSON object text, or
 * NULL) and return its "return" value (caller unrefs), or NULL with @errp
 * set to QEMU's error description.
 */
JsonNode *sl_qmp_cmd(sl_qmp *q, const char *cmd, const char *args_json, GError **errp);

/**
 * sl_qmp_quote: @s as a JSON string literal, quotes included (g_strescape()
 * writes bytes of 0x80 and above as octal escapes, which JSON has not:
 * QEMU refused every path with a non-ASCII name).  Caller frees.
 */
char *sl_qmp_quote(const char *s);

/**
 * sl_qmp_query: sl_qmp_cmd() without arguments whose answer must be of
 * @type (an object, an array); else NULL with an error saying so, never
 * NULL without one (found by review: callers dereferenced an error never
 * set).
 */
JsonNode *sl_qmp_query(sl_qmp *q, const char *cmd, JsonNodeType type, GError **errp);

/**
 * sl_qmp_getfd: hands QEMU a copy of @fd (SCM_RIGHTS, with `getfd`), which
 * it then knows as @name (`fd:@name` migrations take it over).  @q must be
 * a unix socket.
 */
bool sl_qmp_getfd(sl_qmp *q, const char *name, int fd, GError **errp);

/** sl_qmp_ok: sl_qmp_cmd for commands whose answer does not matter. */
bool sl_qmp_ok(sl_qmp *q, const char *cmd, const char *args_json, GError **errp);

/**
 * sl_qmp_wait_migration: wait (up to @timeout_ms) for the migration to end,
 * from MIGRATION events (the `events` capability must be on); true when it
 * completed, false with the status QEMU gave otherwise.
 */
bool sl_qmp_wait_migration(sl_qmp *q, int timeout_ms, GError **errp);

/** sl_qmp_hmp: run a human monitor command and return its output. */
char *sl_qmp_hmp(sl_qmp *q, const char *cmdline, GError **errp);

/** sl_qmp_status: the VM's run state ("running", "paused", ...), or NULL. */
char *sl_qmp_status(sl_qmp *q, GError **errp);

/**
 * sl_qmp_set_cancel: while @fd (-1: none) is readable, the next wait for
 * QEMU gives up with an error saying it was interrupted; that disarms it,
 * so that the caller can then talk to QEMU (cancel, put things back).
 * A late answer to the command given up on is dropped by its id.
 */
void sl_qmp_set_cancel(sl_qmp *q, int fd);
/** sl_qmp_peer_pid: the pid of the process at the other end (QEMU), or -1. */
pid_t sl_qmp_peer_pid(const sl_qmp *q);

/** sl_qmp_close: close the connection and free @q (NULL is fine). */
void sl_qmp_close(sl_qmp *q);

#endif /* SNAPLOAD_QMP_H */
