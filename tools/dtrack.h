/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore daemon's record of what its consumers wrote (dtrack.c), for
 * `qemu-restore --reuse-ram`: each consumer registers its mapping of a RAM
 * file write-protected (REGISTER_WP), and before the mapping goes it asks
 * the daemon (WRITTEN) to read which pages it wrote from its
 * /proc/PID/pagemap.  When the daemon ends after a complete restore, and
 * every tracked mapping of a block reported and nothing untracked wrote
 * it, the block's list is saved (written.h) for the next restart, which
 * then checks only those pages.  Otherwise no list is left, and the next
 * restart checks the whole file.  Owned by the daemon's one thread.
 */
#ifndef SNAPLOAD_DTRACK_H
#define SNAPLOAD_DTRACK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>
#include "snapload/snapload.h"

typedef struct sl_dtrack sl_dtrack;

/** sl_dtrack_new: lists of @snap's blocks, kept in @dir; @ignore: a list found is removed unused. */
sl_dtrack *sl_dtrack_new(const sl_snapshot *snap, const char *dir, bool ignore);

/**
 * sl_dtrack_attached: block @idx was attached at @offset of RAM file @memfd: keeps
 * a duplicate (for its times at the end) and loads the list the previous
 * run left, as runs appended to @known_changed; false (with the reason in
 * @why, NULL when there was simply none) when there is no usable one.
 */
bool sl_dtrack_attached(sl_dtrack *t, unsigned idx, int memfd, uint64_t offset,
                        GArray *known_changed, char **why);

/** sl_dtrack_registered: a mapping of block @idx registered, tracked (@wp) or not. */
void sl_dtrack_registered(sl_dtrack *t, unsigned idx, bool wp);

/** sl_dtrack_untracked: a consumer changes block @idx's file where no list shows it. */
void sl_dtrack_untracked(sl_dtrack *t, unsigned idx);

/** sl_dtrack_lost: a tracked mapping of block @idx went without reporting. */
void sl_dtrack_lost(sl_dtrack *t, unsigned idx);

/*
 * A tracked mapping of a block: process @pid maps the block's bytes
 * [@off, @off + @len) at @addr (all of them, or a part: a vhost-user
 * back-end maps each memory region on its own).
 */
typedef struct {
    pid_t pid;
    uint64_t addr, off, len;
} sl_dtrack_map;

/**
 * sl_dtrack_scan: tracked mapping @m of block @idx reports: its written
 * pages are read from /proc/PID/pagemap; @untracked: the file also
 * changed where no list shows.  0 or -errno.
 */
int sl_dtrack_scan(sl_dtrack *t, unsigned idx, const sl_dtrack_map *m, bool untracked,
                   GError **errp);

/**
 * sl_dtrack_written_now: the snapshot pages of block @idx written so far
 * by its tracked mappings: those that reported, and the @n still mapped
 * (@maps), read from their pagemaps without protecting them again.  A new bitmap of *@npages bits (g_free), or NULL
 * with *@why (static text) and @errp when no complete list can be given:
 * an untracked writer, a mapping not accounted for, swap, a pagemap that
 * cannot be read.
 */
uint64_t *sl_dtrack_written_now(sl_dtrack *t, unsigned idx, const sl_dtrack_map *maps,
                                unsigned n, uint64_t *npages, const char **why, GError **errp);

/**
 * sl_dtrack_finish: saves the list of every block that can have one (the
 * restore completed: @complete), removes any other; a line per block
 * appended to @log.
 */
void sl_dtrack_finish(sl_dtrack *t, bool complete, GString *log);

/** sl_dtrack_free: NULL is fine. */
void sl_dtrack_free(sl_dtrack *t);

#endif /* SNAPLOAD_DTRACK_H */
