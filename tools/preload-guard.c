/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The preload client's fork guard.  A consumer (QEMU, a vhost-user
 * back-end under `snapload attach`) registers its mapping of guest RAM on
 * a userfaultfd without UFFD_FEATURE_EVENT_FORK (the daemon refuses that
 * feature), so a child it forks during the fill gets a copy of the mapping
 * that no uffd serves: it would read holes as zeros (anonymous RAM) or put
 * fresh zeroed pages into the shared file (shmem, hugetlbfs).  The client
 * marks each mapping MADV_DONTFORK before registering it, so such a child
 * has no mapping there at all, and gives the fork back with MADV_DOFORK at
 * DONE, unless the process asked for MADV_DONTFORK itself (QEMU does for
 * guest RAM, except under qtest) or the mapping is tracked (a child's
 * writes would escape the list of written pages).  The process's own
 * DONTFORK/DOFORK calls on a guarded range are remembered, not lost.
 * System calls are made directly: madvise() itself is interposed.
 */
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "preload-guard.h"

static int raw_madvise(void *addr, size_t len, int advice)
{
    return (int)syscall(SYS_madvise, addr, len, advice);
}

static bool overlaps(const pg_guard *g, const uint8_t *a, size_t len)
{
    return g->id && a < g->addr + g->len && g->addr < a + len;
}

uint32_t pg_guard_add(pg_guards *gs, void *addr, size_t len, bool keep, int *err)
{
    *err = raw_madvise(addr, len, MADV_DONTFORK) < 0 ? -errno : 0;
    if (*err) {
        return 0;
    }
    for (unsigned i = 0; i < PG_MAX; i++) {
        pg_guard *g = &gs->g[i];
        if (!g->id) {
            if (++gs->next_id == 0) {
                gs->next_id = 1; /* 0 means "no guard" */
            }
            *g = (pg_guard){ .addr = addr, .len = len, .id = gs->next_id, .keep = keep };
            return g->id;
        }
    }
    return 0; /* no room to remember it: it stays out of children for good */
}

void pg_guard_done(pg_guards *gs, uint32_t token)
{
    for (unsigned i = 0; token && i < PG_MAX; i++) {
        pg_guard *g = &gs->g[i];
        if (g->id == token) {
            if (!g->keep && !g->owner_dontfork) {
                raw_madvise(g->addr, g->len, MADV_DOFORK);
            }
            if (!g->keep) {
                g->id = 0;
            }
            return;
        }
    }
}

void pg_guard_forget(pg_guards *gs, const void *addr, size_t len)
{
    for (unsigned i = 0; i < PG_MAX; i++) {
        if (overlaps(&gs->g[i], addr, len)) {
            gs->g[i].id = 0;
        }
    }
}

/* MADV_DOFORK on the parts of [@a, +@len) that no guard covers. */
static int dofork_outside(pg_guards *gs, uint8_t *a, size_t len)
{
    if (!len) {
        return 0;
    }
    for (unsigned i = 0; i < PG_MAX; i++) {
        const pg_guard *g = &gs->g[i];
        if (overlaps(g, a, len)) {
            uint8_t *end = a + len, *gend = g->addr + g->len;
            int ret = g->addr > a ? dofork_outside(gs, a, (size_t)(g->addr - a)) : 0;

            return end > gend && dofork_outside(gs, gend, (size_t)(end - gend)) < 0 ? -1 : ret;
        }
    }
    return raw_madvise(a, len, MADV_DOFORK);
}

int pg_guard_madvise(pg_guards *gs, void *addr, size_t len, int advice)
{
    bool dontfork = advice == MADV_DONTFORK;

    for (unsigned i = 0; i < PG_MAX; i++) {
        if (overlaps(&gs->g[i], addr, len)) {
            gs->g[i].owner_dontfork = dontfork;
        }
    }
    return dontfork ? raw_madvise(addr, len, advice) : dofork_outside(gs, addr, len);
}
