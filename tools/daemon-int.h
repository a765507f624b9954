/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore daemon's state, shared by its files: daemon.c (the poll loop
 * and connections), dregister.c (REGISTER) and dwritten.c (the
 * written-page messages).
 * Everything here is owned by the daemon's main thread, but for
 * server.drop_pipe's write end and what the collapser thread reads (see
 * server).
 */
#ifndef SNAPLOAD_DAEMON_INT_H
#define SNAPLOAD_DAEMON_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <glib.h>
#include "daemon.h"
#include "dtrack.h"
#include "migration/protocol.h"

/* One connection; owned by the daemon's thread. */
typedef struct {
    int fd;
    pid_t pid;
    int pidfd;               /* that process, pinned when it connected (-1: none) */
    uint64_t id;             /* the tag of its views in the restore */
    gint64 accepted_us;      /* monotonic: for the HELLO timeout */
    gint64 greeted_us;       /* monotonic: for the REGISTER timeout */
    bool greeted;
    unsigned nregistered;    /* REGISTERs accepted: a consumer, never timed out */
    uint8_t *registered;     /* per block: registered on this connection */
    uint64_t *wp_addr;       /* per block: where a tracked mapping was registered (0: none) */
    uint64_t *wp_off, *wp_len; /* per block: the block's bytes that mapping maps (a part) */
    uint8_t *reported;       /* per block: that mapping reported its writes (WRITTEN) */
    bool queried;            /* sent its WRITTEN_QUERY: one per connection */
    char name[32];           /* printable characters only */
} client;

/* The daemon's state; owned by its main thread, but for @drop_pipe's write
 * end, which engine threads write through view_dropped(), and what the
 * collapser thread reads once the restore is complete: @o, @snap,
 * @anon_addr and @anon_pidfd (no longer changed then; the pidfds closed
 * after it is joined) and @collapse_stop. */
typedef struct {
    const sl_daemon_opts *o;
    sl_snapshot *snap;
    sl_restore *r;
    int lfd, sigfd;
    int drop_pipe[2];        /* view_dropped() -> the poll loop: tags of dropped views */
    GPtrArray *clients;      /* client * */
    GPtrArray *leaving;      /* client *: dropped, their sockets open until their views
                              * let go of their uffds (daemon.c, release_leaving()) */
    uint64_t next_id;
    bool accept_paused;      /* out of fds: listen again once a client leaves, or after 1 s */
    unsigned nblocks, nattached; /* blocks served (the daemon's), and attached so far */
    bool *served;            /* per snapshot block: this daemon serves it */
    bool *anon;              /* per block: attached as another process's anonymous memory */
    uint64_t *anon_addr;     /* per anonymous block: where its owner maps it */
    struct sl_mover_server **movers; /* per anonymous block: its owner's mover (NULL: none);
                              * used by the engine's loaders from start to completion */
    struct stat *files;      /* per block: identity of its memory file */
    uint64_t *offsets;
    bool started, done;
    bool refusal_said;       /* the first refused page was logged (drop()) */
    int status;
    int hello_timeout_ms, register_timeout_ms;
    sl_dtrack *dt;           /* o->written_dir: what the consumers wrote, for the next run */
    GThread *collapser;      /* once complete: the consumers' anonymous RAM into THPs */
    int *anon_pidfd;         /* per anonymous block: its owner, pinned when it connected (a
                              * duplicate of client.pidfd), for the collapser (-1: none) */
    atomic_bool collapse_stop; /* daemon_fini -> collapser: stop after the current range */
    unsigned nknown;         /* blocks whose reused file came with a usable written list */
} server;

/** dlog: logs "snapload serve: MSG" on stderr unless the daemon is quiet. */
void dlog(const server *d, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/** reply_status: sends REGISTERED with @status and @msg (never blocks: the socket is non-blocking). */
void reply_status(client *c, int status, const char *msg);

/**
 * send_answer: sends @m (and @nfds fds) to @c as its answer to @request (a
 * message name); 0, or -errno with @errp saying why it could not be sent
 * (a client that does not read its answers fills its socket: EAGAIN).
 */
int send_answer(client *c, const sl_msg *m, const int *fds, unsigned nfds, const char *request,
                GError **errp);

/** answer_status: REGISTERED with @status and @msg as the answer to @request, as send_answer(). */
int answer_status(client *c, int status, const char *msg, const char *request, GError **errp);

/**
 * on_register: REGISTER, REGISTER_WP or REGISTER_MOVER (@type), a consumer's
 * mapping checked and attached or added (dregister.c).
 */
int on_register(server *d, client *c, uint16_t type, const sl_msg_register *m,
                const int *fds, unsigned nfds, GError **errp);

/** on_written: WRITTEN, the pages a tracked mapping of the same process wrote (dwritten.c). */
int on_written(server *d, client *c, const sl_msg_written *m, unsigned nfds, GError **errp);

/** on_written_query: WRITTEN_QUERY, the pages of a block written so far (dwritten.c). */
int on_written_query(server *d, client *c, const sl_msg_written_query *m, unsigned nfds,
                     GError **errp);

/** on_untracked: UNTRACKED, a block's file changes where no list shows it (dwritten.c). */
int on_untracked(server *d, client *c, const sl_msg_untracked *m, unsigned nfds,
                 GError **errp);

#endif /* SNAPLOAD_DAEMON_INT_H */
