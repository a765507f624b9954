/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Transparent hugepages for anonymous guest RAM once a lazy restore has
 * placed every page (thp.c).
 */
#ifndef SNAPLOAD_THP_H
#define SNAPLOAD_THP_H

#include <stdatomic.h>
#include <stdint.h>
#include "snapload/snapload.h"

/** How sl_thp_collapse() goes on; each field may be left zero. */
typedef struct {
    const atomic_bool *stop; /* NULL, or: stop before the next range once it reads true */
    int err;                 /* out: the errno that ended it before the last range, or 0 */
} sl_thp_opts;

/**
 * sl_thp_collapse: collapses into THPs every 2 MiB-aligned range of block
 * @block of @snap, mapped at @base in process @pidfd (-1: this process),
 * that holds a page the snapshot stores, one range per call, as @o (NULL:
 * defaults) says.  Best effort; returns the bytes collapsed.
 */
uint64_t sl_thp_collapse(int pidfd, uint64_t base, const sl_snapshot *snap, unsigned block,
                         sl_thp_opts *o);

#endif /* SNAPLOAD_THP_H */
