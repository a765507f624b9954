/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Memory for the restore's large metadata arrays (the present-page bitmap,
 * the checksum array, the page-state map): their size grows with guest RAM,
 * so their whole 2 MiB parts get huge pages: 2 MiB aligned, with a
 * transparent-hugepage hint, the last one rounded up where that wastes at
 * most an eighth of the array (smaller parts stay plain pages: a chain
 * holds an array per snapshot, and 2 MiB for each small one added up).
 * Filling 2 MiB of metadata then costs one fault and one TLB entry instead
 * of 512 of each, which is what keeps the time to ready of a large guest
 * close to that of a small one.  The hint is only a hint: without THP the
 * memory is plain 4 KiB pages, just as correct.
 */
#ifndef SNAPLOAD_LARGE_H
#define SNAPLOAD_LARGE_H

#include <stddef.h>

/** A zeroed mapping of its own: sl_large_map() fills it, sl_large_unmap() ends it. */
typedef struct {
    void *map;      /* what mmap() returned (NULL: nothing mapped) */
    size_t map_len; /* its length, alignment slack included */
} sl_large;

/**
 * sl_large_map: @len bytes of zeroed memory in a mapping of their own,
 * its whole 2 MiB parts 2 MiB-aligned and THP-advised (above); untouched
 * pages cost nothing until used.  Returns the array, NULL if mmap failed.
 */
void *sl_large_map(sl_large *m, size_t len);

/**
 * sl_large_huge_bytes: of an array of @len bytes, how many the allocators
 * here advise as transparent hugepages: its whole 2 MiB parts, rounded up
 * to the next one when that wastes at most an eighth of @len; 0 below.
 */
size_t sl_large_huge_bytes(size_t len);

/** sl_large_unmap: releases what sl_large_map() gave @m (nothing mapped is fine). */
void sl_large_unmap(sl_large *m);

/**
 * sl_alloc_large: @len bytes (not zeroed) that g_free() releases, its
 * whole 2 MiB parts THP-advised (above): for arrays that are
 * read in whole right away (a bitmap).  Aborts when out of memory, as
 * g_malloc() does.
 */
void *sl_alloc_large(size_t len);

#endif
