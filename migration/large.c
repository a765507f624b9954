/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Memory for large metadata arrays, 2 MiB aligned with a THP hint
 * (large.h explains why).
 */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <glib.h>
#include "large.h"

#define HUGE (2u << 20)

/*
 * The bytes of an array of @len bytes that get transparent hugepages:
 * whole huge pages, the last one rounded up only when that wastes at most
 * an eighth of the array; the rest is plain pages.  A 256 KiB checksum
 * array (a 128 MiB guest) rounded up to 2 MiB cost 2 MiB of resident
 * memory per snapshot of a chain, 136 MB for 63 links of that guest
 * (found by a user's test).
 */
size_t sl_large_huge_bytes(size_t len)
{
    size_t up = (len + HUGE - 1) & ~(size_t)(HUGE - 1);

    return up - len <= len / 8 ? up : len & ~(size_t)(HUGE - 1);
}

/* @len rounded up to what sl_large_huge_bytes() advises, or to whole small pages. */
static size_t map_len(size_t len)
{
    size_t page = 4096;

    return MAX(sl_large_huge_bytes(len), (len + page - 1) & ~(page - 1));
}

void *sl_large_map(sl_large *m, size_t len)
{
    size_t huge = sl_large_huge_bytes(len ? len : 1), whole = map_len(len ? len : 1);
    size_t slack = huge ? HUGE : 0; /* to align */
    uint8_t *p, *a;

    p = mmap(NULL, whole + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        *m = (sl_large){ 0 };
        return NULL;
    }
    m->map = p;
    m->map_len = whole + slack;
    a = slack ? (uint8_t *)(((uintptr_t)p + HUGE - 1) & ~(uintptr_t)(HUGE - 1)) : p;
    if (huge) {
        (void)madvise(a, huge, MADV_HUGEPAGE); /* a hint only */
    }
    return a;
}

void sl_large_unmap(sl_large *m)
{
    if (m->map) {
        munmap(m->map, m->map_len);
    }
    *m = (sl_large){ 0 };
}

void *sl_alloc_large(size_t len)
{
    size_t huge = sl_large_huge_bytes(len);
    void *p = NULL;

    if (!huge) {
        return g_malloc(len ? len : 1);
    }
    if (posix_memalign(&p, HUGE, map_len(len)) != 0) {
        return g_malloc(len);
    }
    (void)madvise(p, huge, MADV_HUGEPAGE); /* a hint only */
    return p;
}
