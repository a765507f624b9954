/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Packet I/O of the restore daemon protocol (docs/protocol.md), shared by
 * the daemon, its client and the LD_PRELOAD client inside a VMM: one
 * SOCK_SEQPACKET packet per message, fds passed with SCM_RIGHTS, and the
 * check of what kind of memory file a consumer hands over.
 */
#ifndef SNAPLOAD_WIRE_H
#define SNAPLOAD_WIRE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>
#include "snapload/snapload.h"
#include "migration/protocol.h"

#define SL_WIRE_MAX_FDS 4

/** sl_wire_send: encode @m and send it with @nfds fds in one packet. */
bool sl_wire_send(int fd, const sl_msg *m, const int *fds, unsigned nfds);

/**
 * sl_wire_close_peer_fd: closes an fd a peer sent.  Closing the last
 * reference to a socket with SO_LINGER set and unsent data waits out the
 * linger time (found by review: an hour's linger blocked the daemon's main
 * loop, and every consumer with it), so a socket's lingering is switched
 * off first and it closes in the background.  (A file on a FUSE mount
 * whose server never answers could still block its close.)
 */
void sl_wire_close_peer_fd(int fd);

/**
 * sl_wire_send_nowait: sl_wire_send() of @m without fds that never blocks,
 * whatever the socket's own flags: for a socket a peer handed over, whose
 * O_NONBLOCK that peer can clear from its own copy.  false if it would block.
 */
bool sl_wire_send_nowait(int fd, const sl_msg *m);

/**
 * sl_wire_recv: receive one packet into @buf (SL_PROTO_MAX bytes) and up to
 * SL_WIRE_MAX_FDS fds (more are closed).  Returns <0 on error (errno set),
 * 0 when the peer has gone, else the packet length.  @lost tells whether
 * all of it arrived: 0 if so, -EMSGSIZE if the packet was longer than
 * SL_PROTO_MAX, -ETOOMANYREFS if it carried more than SL_WIRE_MAX_FDS fds,
 * -EMFILE or -ENFILE if we had no free fd for some of its fds (the kernel
 * drops those), -EPERM if fds were withheld for another reason.
 */
ssize_t sl_wire_recv(int fd, uint8_t *buf, int *fds, unsigned *nfds, int *lost);

/**
 * sl_wire_file_kind: the backend kind and page size of memory file @fd,
 * from its filesystem (tmpfs: shmem, 4 KiB; hugetlbfs: its page size).
 */
bool sl_wire_file_kind(int fd, sl_backend_kind *kind, uint64_t *psize, GError **errp);

#endif /* SNAPLOAD_WIRE_H */
