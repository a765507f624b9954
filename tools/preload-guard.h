/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The preload client's fork guard (preload-guard.c): a mapping handed to
 * the daemon is kept out of forked children (MADV_DONTFORK) while the
 * restore fills it, and given back at DONE unless the process asked for
 * the marking itself.  The caller serialises every call (preload.c's lock).
 */
#ifndef SNAPLOAD_PRELOAD_GUARD_H
#define SNAPLOAD_PRELOAD_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PG_MAX 64

/* One guarded mapping. */
typedef struct {
    uint8_t *addr;
    size_t len;
    uint32_t id;         /* the token pg_guard_add() returned; 0: slot free */
    bool owner_dontfork; /* the process itself asked MADV_DONTFORK here: kept at DONE */
    bool keep;           /* tracked mapping: stays marked until it is unmapped */
} pg_guard;

/* Every guarded mapping of the process (zero-initialised). */
typedef struct {
    pg_guard g[PG_MAX];
    uint32_t next_id;
} pg_guards;

/**
 * pg_guard_add: marks [@addr, +@len) MADV_DONTFORK and remembers it; @keep
 * (a tracked mapping) keeps it marked past DONE.  Returns the token for
 * pg_guard_done(), or 0 when no slot is free (the range then stays marked
 * for the life of the mapping) or the marking failed (-errno in *@err).
 */
uint32_t pg_guard_add(pg_guards *gs, void *addr, size_t len, bool keep, int *err);

/**
 * pg_guard_done: the restore placed every page of guarded mapping @token:
 * MADV_DOFORK on it, unless it is kept or the process marked it itself.
 * An unknown token (0, or a mapping gone since) does nothing.
 */
void pg_guard_done(pg_guards *gs, uint32_t token);

/**
 * pg_guard_forget: [@addr, +@len) is being unmapped or mapped over: every
 * guard overlapping it is forgotten (a part that stays mapped stays marked).
 */
void pg_guard_forget(pg_guards *gs, const void *addr, size_t len);

/**
 * pg_guard_madvise: the process's own MADV_DONTFORK or MADV_DOFORK of
 * [@addr, +@len), whose wish is kept for DONE.  A DOFORK is not applied to
 * guarded ranges until then (the rest gets it at once).  The system call's
 * result: 0, or -1 with errno.
 */
int pg_guard_madvise(pg_guards *gs, void *addr, size_t len, int advice);

#endif /* SNAPLOAD_PRELOAD_GUARD_H */
