/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The list of pages a QEMU run wrote into its RAM file (written.c), left
 * by the restore daemon when that run ends, so that the next
 * `qemu-restore --reuse-ram` over the same file rewrites only those pages
 * instead of reading and hashing all of guest RAM (sl_restore_keep_known).
 *
 * One small file per RAM file, named by the RAM file's device and inode,
 * in a runtime directory (/run/snapload as root).  It holds the snapshot's
 * content identity (for one without checksums, its file's identity and
 * times), the block name, the RAM file's identity and times
 * (device, inode, size, mtime, ctime, allocated blocks) when the list was
 * made, and the runs of written snapshot pages, under a checksum.  It is
 * used once: loading removes it, whatever it holds.  Anything that does not
 * match (another snapshot, another block, a file changed since: its size,
 * mtime, ctime or allocated blocks moved) makes it refused with the reason,
 * and the restart checks every page instead.
 */
#ifndef SNAPLOAD_WRITTEN_H
#define SNAPLOAD_WRITTEN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <glib.h>
#include "snapload/snapload.h"

/** The most lists a directory keeps: saving one removes the oldest beyond it. */
#define SL_WRITTEN_KEEP 256

/** sl_written_dir: where the lists live (a new string: /run/snapload as root). */
char *sl_written_dir(void);

/** sl_written_path: the list of the block at @offset of the RAM file @st, in @dir (a new string). */
char *sl_written_path(const char *dir, const struct stat *st, uint64_t offset);

/**
 * sl_written_forget_elsewhere: removes the list of the block at @offset of
 * the RAM file @st from every directory a run of another environment may
 * have kept it in (root's, $XDG_RUNTIME_DIR's, /run/user/UID's, the cache
 * directory's), but @dir.  A run that keeps its lists in @dir takes the
 * file, so a list left elsewhere by an earlier run misses what this one
 * writes and must not be found by a later run of that other environment.
 */
void sl_written_forget_elsewhere(const char *dir, const struct stat *st, uint64_t offset);

/**
 * sl_written_save: write (atomically, by rename) the list of block @block
 * of @snap at @offset of the RAM file whose identity and times are @st: the set bits
 * of @pages (one per snapshot page of the block, @npages of them).  Lists
 * of other files beyond the newest SL_WRITTEN_KEEP - 1 are removed first.
 */
bool sl_written_save(const char *dir, const sl_snapshot *snap, const char *block,
                     const struct stat *st, uint64_t offset, const uint64_t *pages,
                     uint64_t npages, GError **errp);

/**
 * sl_written_load: the list for block @block of @snap at @offset of the
 * RAM file @st, as runs appended to @runs (sl_page_run).  The file is
 * removed in every case.  False with @errp saying why it cannot be used:
 * absent (G_FILE_ERROR_NOENT), corrupt, made for another snapshot, block,
 * file or offset, or the file changed since.
 */
bool sl_written_load(const char *dir, const sl_snapshot *snap, const char *block,
                     const struct stat *st, uint64_t offset, GArray *runs, GError **errp);

#endif /* SNAPLOAD_WRITTEN_H */
