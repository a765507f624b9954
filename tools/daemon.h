/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore daemon (`snapload serve`) and its client side.
 *
 * Consumers (a VMM, vhost-user back-ends) connect to a unix socket, create a
 * userfaultfd in their own address space, register their mapping of guest
 * RAM and hand the uffd plus their memory file to the daemon (SCM_RIGHTS),
 * which serves their faults.  The restore starts once every block of the
 * snapshot has been registered by some consumer; later consumers join as
 * extra views.  docs/protocol.md describes the protocol and the policy when
 * the daemon dies.
 */
#ifndef SNAPLOAD_DAEMON_H
#define SNAPLOAD_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "snapload/snapload.h"

typedef struct {
    const char *snapshot;
    const char *socket;
    sl_restore_config cfg;
    bool exit_when_done;   /* exit once complete and every client has left */
    bool quiet;            /* no log lines (tests) */
} sl_daemon_opts;

/** sl_daemon_run: serve until SIGINT/SIGTERM (or done); returns an exit status. */
int sl_daemon_run(const sl_daemon_opts *o);

/** sl_client_connect: connect and handshake; the socket fd, or -1 with @errp. */
int sl_client_connect(const char *path, const char *name, GError **errp);

/**
 * sl_client_register: register [@addr, +@length) — our MAP_SHARED mapping of
 * @memfd at @offset, block @block — on a new uffd (MISSING|MINOR), hand it
 * to the daemon and wait for its answer.  Returns the uffd, which the caller
 * keeps open (so faults block, never read zeros, if the daemon dies), or -1.
 */
int sl_client_register(int sock, const char *block, void *addr, uint64_t length, int memfd,
                       uint64_t offset, GError **errp);

/**
 * sl_client_supervise: start a thread that waits for DONE; if the daemon's
 * socket closes first, it calls @on_death (which should end the process).
 */
void sl_client_supervise(int sock, void (*on_death)(void));

/** sl_client_wait_done: block until DONE arrives (true) or the socket closes. */
bool sl_client_wait_done(int sock);

#endif /* SNAPLOAD_DAEMON_H */
