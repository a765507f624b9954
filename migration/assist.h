/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A second pair of hands for the fault thread (see assist.c): one worker
 * thread that runs one job at a time while its caller does the other half
 * of the same work, so that a vCPU waiting on a large unit (a 2 MiB or
 * 1 GiB hugetlbfs page) waits for half the reading and checking; or that
 * reads a cold fault's neighbours after the faulted page was served.
 */
#ifndef SNAPLOAD_ASSIST_H
#define SNAPLOAD_ASSIST_H

#include <stdbool.h>
#include <glib.h>

typedef struct sl_assist sl_assist;

/**
 * sl_assist_new: start the worker thread (named @name); NULL with @errp
 * set if it cannot be started.
 */
sl_assist *sl_assist_new(const char *name, GError **errp);

/**
 * sl_assist_post: have the worker run @fn(@arg).  Only one job at a time:
 * the caller must sl_assist_wait() before posting again.
 */
void sl_assist_post(sl_assist *a, void (*fn)(void *), void *arg);

/** sl_assist_wait: return once the posted job has run (its effects visible). */
void sl_assist_wait(sl_assist *a);

/**
 * sl_assist_idle: whether the worker is free for a job (the last one, if
 * any, has run and its effects are visible): the poster's check that does
 * not wait.
 */
bool sl_assist_idle(sl_assist *a);

/** sl_assist_free: wait for a posted job, stop and join the worker; NULL is fine. */
void sl_assist_free(sl_assist *a);

#endif /* SNAPLOAD_ASSIST_H */
