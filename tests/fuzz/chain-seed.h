/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The parent of fuzz-reader's incremental inputs.  fuzz-reader opens each
 * input as /proc/self/fd/N, so a child that records its parent as
 * FUZZ_PARENT_NAME finds it at /proc/self/fd/FUZZ_PARENT_FD, where the
 * harness keeps the one deterministic parent fuzz_write_parent() writes;
 * `fuzz-seeds chain` writes a child of that same parent as a seed, so the
 * identity it records matches and mutations reach the merged reads.
 */
#ifndef SNAPLOAD_FUZZ_CHAIN_SEED_H
#define SNAPLOAD_FUZZ_CHAIN_SEED_H

#include <stdbool.h>
#include <glib.h>

#define FUZZ_PARENT_FD   1000
#define FUZZ_PARENT_NAME "1000"

/** fuzz_write_parent: the parent snapshot (two small blocks) at @path. */
bool fuzz_write_parent(const char *path, GError **errp);

/** fuzz_write_child: a child of the parent at @parent, recording FUZZ_PARENT_NAME, at @path. */
bool fuzz_write_child(const char *parent, const char *path, GError **errp);

/** fuzz_install_parent: the parent in a memfd at FUZZ_PARENT_FD (fuzz-reader's start). */
bool fuzz_install_parent(GError **errp);

#endif /* SNAPLOAD_FUZZ_CHAIN_SEED_H */
