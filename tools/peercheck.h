/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Checks of a consumer's REGISTER against the kernel's view of what it
 * handed over (its uffd, its mapping): see peercheck.c.  Also the words
 * for a daemon that is out of fds, shared by every path that can meet it.
 */
#ifndef SNAPLOAD_PEERCHECK_H
#define SNAPLOAD_PEERCHECK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <glib.h>
#include "snapload/snapload.h"

/**
 * sl_peer_fd_shortage: the reason to give a peer when @err (a positive
 * errno) is EMFILE or ENFILE, naming which; NULL for any other errno.
 */
const char *sl_peer_fd_shortage(int err);

/**
 * sl_peer_check_uffd: @uffd (ours, received) is a userfaultfd whose
 * UFFDIO_API handshake enabled every feature bit of @need and no feature
 * the daemon does not serve: events (fork, remap, remove, unmap), SIGBUS
 * delivery, write protection (unless @need asks for it: asynchronous WP,
 * whose faults the kernel resolves, of a tracked mapping), or bits it
 * does not know.  Harmless extras
 * (THREAD_ID, EXACT_ADDRESS, POISON, MOVE, the other memory types'
 * MISSING and MINOR) pass.  Returns 0, or -errno with @errp naming the
 * reason: -EINVAL for what the peer got wrong, -EMFILE or -ENFILE when we
 * are out of fds and could not look.
 */
int sl_peer_check_uffd(int uffd, uint64_t need, GError **errp);

/**
 * sl_peer_check_mapping: in process @pid, [@addr, @addr + @len) is mapped
 * MAP_SHARED from the file @st describes, at file offset @offset (@st NULL:
 * it is private anonymous memory, and @offset is not looked at), and is
 * registered with a userfaultfd for MISSING faults, and for a file also
 * MINOR faults (its VmFlags in /proc/PID/smaps).  Returns
 * 1 if so, 0 if not, -errno if its maps file cannot be read (-EMFILE or
 * -ENFILE: we are out of fds); @errp says why for 0 and -errno.
 * Reads /proc/PID/smaps, which costs a walk of the range's page tables.
 */
int sl_peer_check_mapping(pid_t pid, uint64_t addr, uint64_t len, const struct stat *st,
                          uint64_t offset, GError **errp);

#endif /* SNAPLOAD_PEERCHECK_H */
