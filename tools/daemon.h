/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore daemon (`snapload serve`); its client side is client.h.
 *
 * Consumers (a VMM, vhost-user back-ends) connect to a unix socket, create a
 * userfaultfd in their own address space, register their mapping of guest
 * RAM and hand the uffd plus their memory file to the daemon (SCM_RIGHTS),
 * which serves their faults.  The restore starts once every block of the
 * snapshot has been registered by some consumer; later consumers join as
 * extra views.  Every client the daemon drops is told why (and the reason
 * logged).  docs/protocol.md describes the protocol and the policy when
 * the daemon dies.
 */
#ifndef SNAPLOAD_DAEMON_H
#define SNAPLOAD_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "snapload/snapload.h"
#include "client.h"

typedef struct {
    const char *snapshot;
    char *const *parents;  /* non-NULL: @snapshot is a child whose ancestors are here
                            * (NULL-terminated, parent first), not where they record
                            * (serve/qemu-restore --parent) */
    const char *socket;
    sl_restore_config cfg;
    bool exit_when_done;   /* exit once complete and every client has left */
    bool quiet;            /* no log lines (tests) */
    int ready_fd;          /* >= 0: written one byte once the socket listens, then closed */
    int stats_fd;          /* >= 0: gets a JSON line per accepted REGISTER ("registered":
                            * block, "addr", "pid"), then one of stats when it ends */
    int hello_timeout_ms;  /* a client silent this long after connecting is dropped (0: 10 s) */
    int register_timeout_ms; /* a client with no REGISTER done this long after its HELLO is
                              * dropped (0: 10 s); clients that registered stay */
    const char *const *serve; /* NULL-terminated names of the blocks to serve (NULL: all);
                               * the others are not this daemon's (QEMU loads them) */
    const char *record;    /* non-NULL: write the faulted pages in fault order there (a
                            * hot-page list, restore --record's format) when the daemon ends */
    const char *written_dir; /* non-NULL: track what the consumers write (REGISTER_WP,
                              * WRITTEN; implies cfg.track_writes), use the list a
                              * previous run left for a reused RAM file (cfg.keep_memory)
                              * and leave this run's there when it ends (dtrack.h) */
    bool ignore_lists;     /* with written_dir: check every page of a reused file (the
                            * list a previous run left is removed, not used) */
} sl_daemon_opts;

/** Most clients served at once (those sent DONE do not count); more wait in the listen backlog. */
#define SL_DAEMON_MAX_CLIENTS 64

/** sl_daemon_run: serve until SIGINT/SIGTERM (or done); returns an exit status. */
int sl_daemon_run(const sl_daemon_opts *o);

#endif /* SNAPLOAD_DAEMON_H */
