/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The mark a lazy restore leaves on a memory file while pages are missing,
 * and the checks every save path makes before it reads memory (busy.c).
 */
#ifndef SNAPLOAD_BUSY_H
#define SNAPLOAD_BUSY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

/**
 * sl_busy_mark: marks [@offset, +@length) of memory file @fd as being
 * restored.  Returns the mark (an fd: sl_busy_clear() ends it), or -1 with
 * @errp set (SL_ERROR_STATE if another restore marked it already).
 */
int sl_busy_mark(int fd, uint64_t offset, uint64_t length, GError **errp);

/** sl_busy_clear: ends a mark from sl_busy_mark() (-1 is fine). */
void sl_busy_clear(int mark);

/**
 * sl_busy_check: false (SL_ERROR_STATE, naming @what) if a restore has
 * marked any of [@offset, +@length) of file @fd.
 */
bool sl_busy_check(int fd, uint64_t offset, uint64_t length, const char *what, GError **errp);

/** A range of addresses [start, end). */
typedef struct {
    uint64_t start, end;
} sl_busy_range;

/**
 * sl_busy_check_memory: false (SL_ERROR_STATE) if any of [@addr, +@len)
 * lies in a shared mapping of a file part that a restore has marked.
 * @plain caches the caller's last answer: a mapping that is no shared file
 * mapping and held the whole range (zero it first).  A range inside it is
 * not looked at again: reading /proc/self/maps for each page of a
 * page-by-page save would cost more than the save.
 */
bool sl_busy_check_memory(const void *addr, size_t len, sl_busy_range *plain, GError **errp);

#endif /* SNAPLOAD_BUSY_H */
