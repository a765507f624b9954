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
/* From this size on an array gets whole huge pages (a 256 KiB bitmap is a
 * guest of 8 GiB: 2 MiB of metadata memory is nothing beside it). */
#define HUGE_FROM (256u << 10)

/* @len rounded up to whole huge pages when it is worth them, else as is. */
static size_t huge_len(size_t len)
{
    return len >= HUGE_FROM ? (len + HUGE - 1) & ~(size_t)(HUGE - 1) : len;
}

void *sl_large_map(sl_large *m, size_t len)
{
    size_t whole = huge_len(len ? len : 1), slack = len >= HUGE_FROM ? HUGE : 0; /* to align */
    uint8_t *p, *a;

    p = mmap(NULL, whole + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        *m = (sl_large){ 0 };
        return NULL;
    }
    m->map = p;
    m->map_len = whole + slack;
    a = slack ? (uint8_t *)(((uintptr_t)p + HUGE - 1) & ~(uintptr_t)(HUGE - 1)) : p;
    if (slack) {
        (void)madvise(a, whole, MADV_HUGEPAGE); /* a hint only */
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
    size_t whole = huge_len(len);
    void *p = NULL;

    if (len < HUGE_FROM) {
        return g_malloc(len ? len : 1);
    }
    if (posix_memalign(&p, HUGE, whole) != 0) {
        return g_malloc(len);
    }
    (void)madvise(p, whole, MADV_HUGEPAGE); /* a hint only */
    return p;
}
