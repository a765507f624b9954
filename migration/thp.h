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

/**
 * sl_thp_collapse: collapses into THPs every 2 MiB-aligned range of block
 * @block of @snap, mapped at @base in process @pidfd (-1: this process),
 * that holds a page the snapshot stores, one range at a time, until @stop
 * (NULL: never) reads true.  Best effort; returns the bytes collapsed.
 */
uint64_t sl_thp_collapse(int pidfd, uint64_t base, const sl_snapshot *snap, unsigned block,
                         const atomic_bool *stop);

#endif /* SNAPLOAD_THP_H */
