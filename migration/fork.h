/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Keeping a fork from copying memory a restore is still filling (fork.c).
 */
#ifndef SNAPLOAD_FORK_H
#define SNAPLOAD_FORK_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

/** One range sl_fork_guard() marked. */
typedef struct {
    uint64_t start, end;
} sl_fork_range;

/**
 * sl_fork_guard: marks MADV_DONTFORK the parts of [@addr, @addr + @len)
 * that a fork would copy today, and returns them (an array of
 * sl_fork_range) so that sl_fork_release() gives exactly them back; parts
 * the caller had marked itself stay its own.  NULL with @errp set when the
 * mappings cannot be read or marked (nothing stays marked then).
 */
GArray *sl_fork_guard(void *addr, uint64_t len, GError **errp);

/** sl_fork_release: MADV_DOFORK on the ranges @ranges holds, then frees it; NULL is ok. */
void sl_fork_release(GArray *ranges);

#endif /* SNAPLOAD_FORK_H */
