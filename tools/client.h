/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Client side of the restore daemon protocol (docs/protocol.md): connect
 * and handshake, register a mapping of guest RAM on a fresh userfaultfd and
 * hand it to the daemon, and supervise the daemon so that its death ends
 * the consumer instead of letting it read holes as zeros.  Used by consumer
 * processes, the tests and the LD_PRELOAD client inside stock QEMU.
 */
#ifndef SNAPLOAD_CLIENT_H
#define SNAPLOAD_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>
#include "snapload/snapload.h"

/**
 * sl_client_connect: connect and handshake; the socket fd, or -1 with @errp
 * (the daemon's own reason when it refused us, docs/protocol.md).
 */
int sl_client_connect(const char *path, const char *name, GError **errp);

/**
 * sl_client_connect_level: sl_client_connect(), and the protocol level the
 * daemon chose (SL_PROTO_LEVEL_*, migration/protocol.h) in *@level: what
 * sl_client_register_anon() may ask of that daemon.
 */
int sl_client_connect_level(const char *path, const char *name, unsigned *level, GError **errp);

/**
 * sl_client_connect_timeout: sl_client_connect_level() (@level may be
 * NULL) where the connect, the handshake and every later send and
 * receive on the socket give up after @timeout_ms (0: never), with an
 * error that says the daemon did not answer: a daemon stopped, wedged or
 * with every client slot taken cannot hang the caller.  The supervisor
 * (sl_client_supervise_mapping()) lifts the timeout: DONE may take long.
 */
int sl_client_connect_timeout(const char *path, const char *name, int timeout_ms,
                              unsigned *level, GError **errp);

/**
 * sl_client_register: register [@addr, +@length) — our MAP_SHARED mapping of
 * @memfd at @offset, block @block — on a new uffd (MISSING|MINOR), hand it
 * to the daemon and wait for its answer.  Returns the uffd, which the caller
 * keeps open (so faults block, never read zeros, if the daemon dies), or -1
 * with @errp (the daemon's reason when it refused the mapping).
 */
int sl_client_register(int sock, const char *block, void *addr, uint64_t length, int memfd,
                       uint64_t offset, GError **errp);

/**
 * sl_client_register_tracked: sl_client_register(), and the mapping's
 * writes are tracked: the uffd also does asynchronous write-protection
 * (kernel 6.7+), the range is registered in WP mode as well, and the
 * daemon maps every page write-protected (REGISTER_WP), so that a write
 * is seen in this process's pagemap.  Before the mapping goes (munmap,
 * exit), sl_client_report_written() hands that list to the daemon.
 * A daemon that does not track writes refuses it with SL_ERROR_UNSUPPORTED
 * (register plainly instead); any other code is a real refusal.
 */
int sl_client_register_tracked(int sock, const char *block, void *addr, uint64_t length,
                               int memfd, uint64_t offset, GError **errp);

/**
 * sl_client_register_view: connect to the daemon at @dsock (as @name) and
 * register our view [@addr, +@length) of @block's file @memfd (at offset
 * 0), a view that only reads: tracked where the daemon tracks writes
 * (*@tracked: the caller reports it with sl_client_report_written() before
 * unmapping it, so that it does not count as an untracked mapping and end
 * the lists of written pages), else plainly.  Returns the uffd, with the
 * connection in *@sock (both kept open while the view is used), or -1 with
 * @errp.
 */
int sl_client_register_view(const char *dsock, const char *name, const char *block, void *addr,
                            uint64_t length, int memfd, int *sock, bool *tracked, GError **errp);

/**
 * sl_client_report_written: on a new connection to the daemon at @path,
 * ask it to read (from our pagemap) which pages of our tracked mapping
 * [@addr, +@length) of @block were written, and wait until it has;
 * @flags: SL_WRITTEN_* (SL_WRITTEN_UNTRACKED: the file also changed
 * where the list cannot show it).  False with @errp if the daemon is gone or refused.
 */
bool sl_client_report_written(const char *path, const char *block, void *addr, uint64_t length,
                              uint64_t flags, GError **errp);

/**
 * sl_client_report_untracked: on a new connection to the daemon at @path,
 * say that this process is about to change @block's file where no list of
 * written pages shows it (punch holes in it, hand it to a process that
 * does not track its writes), and wait until the daemon has noted it.
 * False with @errp if the daemon is gone or refused.
 */
bool sl_client_report_untracked(const char *path, const char *block, GError **errp);

/**
 * sl_client_written_pages: ask the daemon at @path (on a connection of
 * its own) which of the @npages snapshot pages of @block its tracked
 * mappings have written since the restore began, compared with the
 * snapshot of identity @identity.  1 with a bitmap in *@bits (g_free), 0
 * with the daemon's reason there is no such list in *@why (g_free), or -1
 * with @errp.
 */
int sl_client_written_pages(const char *path, const char *block,
                            const uint8_t identity[SL_IDENTITY_LEN], uint64_t npages,
                            uint64_t **bits, char **why, GError **errp);

/**
 * sl_client_register_anon: register [@addr, +@length) — our own fresh,
 * private anonymous mapping of block @block — in MISSING mode on a new
 * userfaultfd and hand that uffd (alone) to the daemon, which then places
 * every page of it with UFFDIO_COPY; or, where the kernel can move pages
 * and the connection's protocol @level (sl_client_connect_level()) has
 * REGISTER_MOVER, with a mover thread of ours that moves whole chunks in
 * (mover.h).  Returns the uffd (keep it open) or -1 with @errp naming the
 * daemon's reason.
 */
int sl_client_register_anon(int sock, unsigned level, const char *block, void *addr,
                            uint64_t length, GError **errp);

/**
 * sl_client_supervise: start a thread that waits for DONE, then calls
 * @on_done(@opaque) (if not NULL); if the daemon's socket closes first, it calls
 * @on_death (which should end the process).  The thread reads @sock from
 * then on (and closes it on a hang-up): call it after the last REGISTER on
 * that connection (use one connection per mapping that may come later).
 */
void sl_client_supervise(int sock, void (*on_death)(void), void (*on_done)(void *opaque),
                         void *opaque);

/**
 * sl_client_supervise_tracked: sl_client_supervise() for a tracked mapping
 * (sl_client_register_tracked(), whose registration outlives DONE), whose
 * @uffd the thread closes once the daemon hangs up after DONE, so that no
 * later fault waits for a daemon that is gone.
 */
void sl_client_supervise_tracked(int sock, int uffd, void (*on_death)(void),
                                 void (*on_done)(void *opaque), void *opaque);

/** A supervised mapping's handle (sl_client_supervise_mapping()). */
typedef struct sl_client_sup sl_client_sup;

/**
 * sl_client_supervise_mapping: sl_client_supervise() for the mapping
 * registered on @sock with @uffd, which it then owns: @uffd is closed
 * after DONE (@tracked: once the daemon has hung up after DONE, as
 * sl_client_supervise_tracked()), @sock when the connection is over (a
 * hang-up) or the mapping retired.  After an untracked DONE the
 * connection stays while the mapping lives: a daemon that exits once its
 * clients have left (qemu-restore's) stays for later registrants.  The
 * handle lets the caller retire the mapping before unmapping it
 * (sl_client_retire()); or, if the mapping is kept for good,
 * sl_client_sup_release() it.  Exactly one of the two, once.
 */
sl_client_sup *sl_client_supervise_mapping(int sock, int uffd, bool tracked,
                                           void (*on_death)(void),
                                           void (*on_done)(void *opaque), void *opaque);

/**
 * sl_client_retire: the mapping of @s is about to be unmapped (or mapped
 * over): hang up our half of its connection and wait (at most
 * @timeout_ms) until the daemon has removed its views and closed its end,
 * so that it places nothing into the mapping from then on and does not
 * take its going for a failed consumer; the supervisor then ends without
 * calling on_death.  Hands back in *@uffd the mapping's uffd (-1 if
 * already closed after DONE), which the caller closes only once the
 * mapping is gone: until then a fault in it waits, never reads a hole.
 * *@done says whether DONE had come (on_done was called).  Returns false
 * if the daemon did not answer in time: retired anyway, but the daemon
 * may still try the range and find it gone.  Releases @s.
 */
bool sl_client_retire(sl_client_sup *s, int timeout_ms, int *uffd, bool *done);

/** sl_client_sup_release: lets go of @s; the mapping stays supervised. */
void sl_client_sup_release(sl_client_sup *s);

/**
 * sl_client_env_of: the value of @name in the environment process @pid was
 * started with (/proc/PID/environ), or NULL (unset, or not readable).
 * Caller frees.  How a client tells another process's daemon and blocks.
 */
char *sl_client_env_of(pid_t pid, const char *name);

/**
 * sl_client_probe: connects to the unix socket at @path, non-blocking, and
 * hangs up: 0 if something listens there (the connect took, or its backlog
 * is full), else the errno (ECONNREFUSED: a stale socket file; ENOENT: none).
 */
int sl_client_probe(const char *path);

/** sl_client_wait_done: block until DONE arrives (true) or the socket closes. */
bool sl_client_wait_done(int sock);

#endif /* SNAPLOAD_CLIENT_H */
