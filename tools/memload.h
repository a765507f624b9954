/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fresh memory for every block of a snapshot, and a byte-for-byte check
 * of that memory against the snapshot: shared by the CLI commands that
 * restore into memory of their own (restore, reset-loop).
 */
#ifndef SNAPLOAD_MEMLOAD_H
#define SNAPLOAD_MEMLOAD_H

#include "backends/backend.h"

/**
 * cli_map_blocks: fresh memory of @kind (@hugepage: hugetlbfs page size,
 * 0 the default) for each block of @s into @mems; for hugetlbfs, enough
 * free hugepages for all blocks together are checked first.
 */
bool cli_map_blocks(sl_snapshot *s, sl_backend_kind kind, uint64_t hugepage, sl_mem *mems,
                    GError **errp);

/** cli_release_blocks: releases the @n memories of cli_map_blocks(). */
void cli_release_blocks(sl_mem *mems, unsigned n);

/**
 * cli_verify_blocks: pages of @mems that differ from the snapshot (progress
 * on a terminal), or -1 (@errp) when the snapshot cannot be read again, or
 * no longer matches its checksums: then nothing can be said of the memory,
 * and no page of it is counted as wrong.
 */
int64_t cli_verify_blocks(sl_snapshot *s, const sl_mem *mems, GError **errp);

#endif /* SNAPLOAD_MEMLOAD_H */
