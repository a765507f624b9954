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

/* The THP hint on the whole huge pages of [@p, +@len); a hint only. */
static void advise_huge(void *p, size_t len)
{
    if (len >= HUGE) {
        (void)madvise(p, len & ~(size_t)(HUGE - 1), MADV_HUGEPAGE);
    }
}

void *sl_large_map(sl_large *m, size_t len)
{
    size_t slack = len >= HUGE ? HUGE : 0;
    uint8_t *p = mmap(NULL, len + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    uint8_t *a;

    if (p == MAP_FAILED) {
        *m = (sl_large){ 0 };
        return NULL;
    }
    m->map = p;
    m->map_len = len + slack;
    a = slack ? (uint8_t *)(((uintptr_t)p + HUGE - 1) & ~(uintptr_t)(HUGE - 1)) : p;
    advise_huge(a, len);
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
    void *p = NULL;

    if (len < HUGE || posix_memalign(&p, HUGE, len) != 0) {
        return g_malloc(len ? len : 1);
    }
    advise_huge(p, len);
    return p;
}
