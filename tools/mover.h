/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Moving whole 2 MiB chunks into a consumer's anonymous guest RAM
 * (REGISTER_MOVER, docs/protocol.md), both ends.  UFFDIO_MOVE works only
 * inside the process that owns the userfaultfd, so the daemon cannot move
 * pages into stock QEMU itself: the consumer (the preload client) runs a
 * mover thread and offers a few 2 MiB staging slots of its own anonymous
 * memory.  For each chunk a loader has read and checked, the daemon writes
 * it into a free slot (process_vm_writev: one copy, into a transparent
 * hugepage the write faults in) and asks on the mover channel for it to be
 * moved to its place (MOVE); the mover thread moves it (one PMD where both
 * ends are 2 MiB aligned) and answers how much it moved (MOVED).  The guest
 * then runs on hugepages from the start, as after QEMU's eager load,
 * instead of on 4 KiB pages placed by UFFDIO_COPY until they are collapsed.
 * Whatever is not moved, the engine copies (sl_commit_run()).
 */
#ifndef SNAPLOAD_MOVER_H
#define SNAPLOAD_MOVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>
#include "migration/protocol.h"

/** Staging slots a client offers: one per loader of the default restore, and spares. */
#define SL_MOVER_SLOTS 4u

/**
 * sl_mover_client_start: for our anonymous mapping @reg names (host_addr,
 * length), registered on @uffd, an uffd opened with UFFD_FEATURE_MOVE: map
 * the staging slots, make the mover channel and start the detached thread
 * that serves MOVE on it until the daemon closes it.  Returns the daemon's
 * end of the channel (the caller sends it with REGISTER_MOVER, then closes
 * it) with @reg's staging fields filled, or -1 with @errp (nothing started).
 */
int sl_mover_client_start(int uffd, sl_msg_register *reg, GError **errp);

typedef struct sl_mover_server sl_mover_server;

/**
 * sl_mover_server_new: the daemon's end of a REGISTER_MOVER from process
 * @pid, pinned by @pidfd (taken when it connected; duplicated): @chan
 * (taken on success: closed by sl_mover_server_free; made non-blocking)
 * and the client's @slots staging slots at @staging.  NULL with @errp if
 * @chan is not a SOCK_SEQPACKET socket or there is no pidfd.
 */
sl_mover_server *sl_mover_server_new(int chan, pid_t pid, int pidfd, uint64_t staging,
                                     unsigned slots, GError **errp);

/** sl_mover_now_ns: CLOCK_MONOTONIC in ns, the clock of MOVE's deadline. */
uint64_t sl_mover_now_ns(void);

/**
 * sl_mover_server_move: an sl_mover_fn (sl_restore_set_mover()) whose
 * opaque is an sl_mover_server.  After a failed exchange (a malformed or
 * missing answer, the channel closed) it moves nothing more: -EPIPE, and
 * the engine copies.
 */
int sl_mover_server_move(void *opaque, uint64_t dst, const void *src, uint64_t len,
                         uint64_t *done);

/**
 * sl_mover_server_finish: the restore is over (or the daemon ends): shut
 * the channel down, so that the client's mover thread ends and frees its
 * slots, and no loader waits on it any more.  Chunks moved
 * (*@moved) and chunks not moved whole (*@refused) so far; returns the
 * first refusal's -errno (0: none).  -EPERM: the slots may not be
 * written (process_vm_writev refused by the ptrace rules: Yama's
 * ptrace_scope, another uid); -EFAULT: the client named memory it does
 * not have; -EINVAL: the kernel refused the move (an
 * mlocked guest RAM); -EPROTO, -ETIMEDOUT, -EPIPE: the mover misbehaved,
 * was gone or was too slow.
 */
int sl_mover_server_finish(sl_mover_server *m, uint64_t *moved, uint64_t *refused);

/** sl_mover_server_free: after the restore's threads are joined. */
void sl_mover_server_free(sl_mover_server *m);

#endif /* SNAPLOAD_MOVER_H */
