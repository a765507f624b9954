/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Consumer processes for `restore --consumers N`: each child maps the same
 * memory files MAP_SHARED, registers its own mappings with userfaultfd
 * (MISSING|MINOR) as a vhost-user back-end would, hands the uffd to the
 * restore over a unix socket (SCM_RIGHTS), then reads random pages and
 * checks each against the snapshot's checksums.  A read of a page the
 * restore refused (poisoned: SIGBUS) is counted and survived, also by the
 * CLI's touch threads, through the poison guard below.
 */
#ifndef SNAPLOAD_CONSUMERS_H
#define SNAPLOAD_CONSUMERS_H

#include "snapload/snapload.h"
#include "backends/backend.h"

typedef struct consumers consumers;

/**
 * consumers_spawn: fork @n consumers of the file-backed blocks in @mems and
 * attach their views to @r (before or after sl_restore_start()).
 */
consumers *consumers_spawn(unsigned n, sl_snapshot *s, const sl_mem *mems, sl_restore *r,
                           GError **errp);

/** consumers_go: let the consumers start touching pages. */
void consumers_go(consumers *c);

/* What all consumers saw. */
typedef struct {
    uint64_t touched;      /* pages read (and checked) */
    uint64_t mismatches;   /* pages with wrong bytes */
    uint64_t poisoned;     /* reads refused with SIGBUS (a corrupt page) */
    uint64_t ended;        /* still running 3 s after told to stop: blocked on a
                            * page nobody will place, ended with SIGKILL */
} consumer_totals;

/**
 * consumers_finish: stop them, reap them; fills @out (may be NULL) with what
 * all of them saw.  A consumer still running 3 s after the stop waits on a
 * page the restore could not place, where the kernel cannot refuse it
 * (no UFFDIO_POISON): it is ended with SIGKILL and counted in @out->ended,
 * which is for the caller to judge (expected after a failed restore).
 * False if one failed or died on its own.
 */
bool consumers_finish(consumers *c, consumer_totals *out, GError **errp);

/**
 * poison_guard_install: make SIGBUS and SIGSEGV raised inside
 * poison_guard_read() recoverable (process-wide handlers; either signal
 * anywhere else still kills the process).  Call once, before the threads
 * that read.
 */
void poison_guard_install(void);

/**
 * poison_guard_read: run @fn(@arg), which reads memory that may hold a
 * refused page (poisoned: SIGBUS; or sealed PROT_NONE where the kernel
 * cannot poison: SIGSEGV).  Returns false if the read raised either (it
 * was abandoned), else true.
 * Per thread; not reentrant.
 */
bool poison_guard_read(void (*fn)(void *arg), void *arg);

#endif /* SNAPLOAD_CONSUMERS_H */
