/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Memory for the restore's large metadata arrays (the present-page bitmap,
 * the checksum array, the page-state map): their size grows with guest RAM,
 * so from 256 KiB on (the bitmap of an 8 GiB guest) they get whole 2 MiB
 * pages: 2 MiB aligned, rounded up, with a transparent-hugepage hint.
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
 * in whole 2 MiB-aligned THP-advised huge pages from 256 KiB on; untouched
 * pages cost nothing until used.  Returns the array, NULL if mmap failed.
 */
void *sl_large_map(sl_large *m, size_t len);

/** sl_large_unmap: releases what sl_large_map() gave @m (nothing mapped is fine). */
void sl_large_unmap(sl_large *m);

/**
 * sl_alloc_large: @len bytes (not zeroed) that g_free() releases, in
 * whole THP-advised huge pages from 256 KiB on: for arrays that are
 * read in whole right away (a bitmap).  Aborts when out of memory, as
 * g_malloc() does.
 */
void *sl_alloc_large(size_t len);

#endif
