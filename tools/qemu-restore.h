/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-restore's state, shared by its files: cmd-qemu-restore.c (the
 * blocks, the daemon and QEMU, the load, the command), qr-lines.c (the
 * daemon's report lines: registrations, the result, why it failed) and
 * qr-report.c (what the command prints).  One thread owns all of it.
 */
#ifndef SNAPLOAD_QEMU_RESTORE_H
#define SNAPLOAD_QEMU_RESTORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>
#include "cli.h"
#include "qemu.h"

typedef struct {
    const char *snap;
    char *const *parents; /* --parent: SNAP's ancestors, not the ones it records */
    char **qemu_argv;
    char *eager;          /* time QEMU's own eager load of this file instead */
    char *socket;         /* where the daemon listens (default: a private dir) */
    bool json, verify, paused, quit_when_done;
    int threads;
    bool by_copy;          /* --place-by-copy: config.place_by_copy (no chunk moves) */
    int multifd;          /* eager load of a mapped-ram file: multifd channels */
    uint32_t around;      /* --fault-around: config.fault_around (0: the default) */
    char **vhost_user;    /* SOCKET=COMMAND: back-ends started registered, before QEMU */
    const char *record;   /* write the guest's faulted pages, in order, there (a hot list) */
    bool reuse_ram;       /* keep the RAM files a previous run left (config.keep_memory) */
    bool check_all;       /* --reuse-ram: check every page, not only the listed ones */
    bool track;           /* track what QEMU and back-ends write (--track-writes, --reuse-ram) */
} qr_opts;

typedef struct {
    const qr_opts *o;
    sl_snapshot *snap;
    GPtrArray *backends;   /* sl_qemu_backend *: lazy blocks (eager: the files to recreate) */
    GPtrArray *serve;      /* char *: names of the lazy blocks, NULL-terminated */
    bool *lazy;            /* per snapshot block */
    char *tmp, *dsock, *qsock, *devstate;
    char *blocks_file;     /* dsock + ".blocks": what `snapload attach` reads */
    GArray *vu_pids;       /* pid_t: the --vhost-user back-ends we started */
    char *load_uri;        /* how the device state was loaded (for the report) */
    GHashTable *registered; /* block name -> where the preload client registered it */
    pid_t daemon, qemu;
    int stats_fd, qmp_lfd, pidfd;
    int tmp_lock;          /* holds our flock on r->tmp (cli_run_dir_make()) */
    GIOChannel *stats_ch;
    sl_qmp *q;
    double t0, t_qmp, t_dev0, t_dev1, t_run, t_done;
    char *stats;           /* the daemon's final JSON line */
    uint64_t verify_mismatches;
    cli_interrupt *intr;   /* SIGINT/SIGTERM/SIGHUP: end QEMU, then fail and clean up */
    GArray *locks;         /* int: fds holding our flock on each RAM file (qemu.h) */
} qr;

/**
 * qr_check_registrations: waits until the preload client reported a
 * registration of every lazy block, each where QEMU says the block lives.
 */
bool qr_check_registrations(qr *r, GError **errp);

/** qr_wait_restore: waits for the daemon's final line; false with the restore's error. */
bool qr_wait_restore(qr *r, GError **errp);

/** qr_daemon_failure: the daemon's reason when the restore failed, or NULL. */
char *qr_daemon_failure(qr *r);

/**
 * qr_final_figures: after a failed run, once the daemon was told to stop
 * (SIGTERM): its last line, the figures it reached, into r->stats (left
 * NULL if it ends without one, or says nothing within 5 s).
 */
void qr_final_figures(qr *r);

/** qr_report: prints the result (text or --json), with @error if the run failed. */
void qr_report(const qr *r, const char *error);

#endif /* SNAPLOAD_QEMU_RESTORE_H */
