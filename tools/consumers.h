/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Consumer processes for `restore --consumers N`: each child maps the same
 * memory files MAP_SHARED, registers its own mappings with userfaultfd
 * (MISSING|MINOR) as a vhost-user back-end would, hands the uffd to the
 * restore over a unix socket (SCM_RIGHTS), then reads random pages and
 * checks each against the snapshot's checksums.
 */
#ifndef SNAPLOAD_CONSUMERS_H
#define SNAPLOAD_CONSUMERS_H

#include "snapload/snapload.h"
#include "backends/backend.h"

typedef struct consumers consumers;

/**
 * consumers_spawn: fork @n consumers of the file-backed blocks in @mems and
 * attach their views to @r (before or after sl_restore_start()).
 */
consumers *consumers_spawn(unsigned n, sl_snapshot *s, const sl_mem *mems, sl_restore *r,
                           GError **errp);

/** consumers_go: let the consumers start touching pages. */
void consumers_go(consumers *c);

/**
 * consumers_finish: stop them, reap them; returns pages touched and
 * mismatches seen by all of them, false if one failed or died.
 */
bool consumers_finish(consumers *c, uint64_t *touched, uint64_t *mismatches, GError **errp);

#endif /* SNAPLOAD_CONSUMERS_H */
