/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Checks of a consumer's REGISTER against the kernel's view of what it
 * handed over (its uffd, its mapping): see peercheck.c.
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
 * sl_peer_check_uffd: @uffd (ours, received) is a userfaultfd whose
 * UFFDIO_API handshake enabled every feature bit of @need.
 */
bool sl_peer_check_uffd(int uffd, uint64_t need, GError **errp);

/**
 * sl_peer_check_mapping: in process @pid, [@addr, @addr + @len) is mapped
 * MAP_SHARED from the file @st describes, at file offset @offset.  Returns
 * 1 if so, 0 if not, -1 if it cannot be told (the maps file is unreadable);
 * @errp says why for 0 and -1.
 */
int sl_peer_check_mapping(pid_t pid, uint64_t addr, uint64_t len, const struct stat *st,
                          uint64_t offset, GError **errp);

#endif /* SNAPLOAD_PEERCHECK_H */
