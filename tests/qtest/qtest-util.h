/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the integration tests with stock QEMU share (qtest-util.c): the
 * fixture (a test directory, the guest's RAM kind and memory file, the
 * processes started, ended in teardown), the walker guest's QEMU command
 * line and serial log, spawning and reaping, QMP and qtest helpers, and
 * the phases every case goes through: boot and save, restore, compare.
 */
#ifndef SNAPLOAD_QTEST_UTIL_H
#define SNAPLOAD_QTEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <sys/types.h>
#include <cmocka.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "tools/qmp.h"

#define RAM_MB 128
#define WAIT_MS 180000
#define LEGACY_LO 0xa0000u   /* QEMU itself rewrites parts of [LEGACY_LO, LEGACY_HI) */
#define LEGACY_HI 0x100000u

typedef struct {
    const char *name;
    const char *cap;      /* capability needed, or NULL */
    long hugepage;        /* 0: shmem or anonymous */
    bool anon;            /* plain -m: QEMU's private anonymous RAM ("pc.ram") */
} mem_kind;


typedef struct fixture fixture;

/*
 * Builds a guest's QEMU command line in place of the walker's (see
 * qemu_args()): serial is the console's log file, qmp the test's
 * listening QMP socket.
 */
typedef void (*qemu_args_fn)(GPtrArray *a, const fixture *f, const char *serial,
                             const char *qmp);

struct fixture {
    const mem_kind *k;
    char *dir;            /* test directory (snapshot, logs, sockets) */
    char *memfile;        /* guest RAM file, on /dev/shm or hugetlbfs; NULL for anon */
    char *snap;
    char *parent;         /* snap's parent where snap does not record it (it moved): given
                           * to qemu-restore (--parent) and the comparisons; NULL: none */
    const char *save_format; /* qemu-save --format: NULL (our container) or "qemu" */
    int save_multifd;     /* with "qemu": QEMU writes with this many multifd threads */
    char *img;            /* a private copy of the walker image */
    unsigned ram_mb;      /* the Linux guest's RAM in MiB (linux-guest.c); 0: LG_RAM_MB */
    bool kvm;
    unsigned saved_pass;  /* last pass the walker finished before the save */
    char *regs;           /* `info registers` of the saved guest */
    GArray *kids;         /* pidfd of every process spawned: teardown ends them */
    qemu_args_fn args_hook; /* another guest's command line (NULL: the walker's) */
    const void *opaque;   /* what a test program keeps per case (NULL if nothing) */
};

typedef struct {
    GPid pid;
    char *out, *err;      /* files holding its stdout and stderr, or NULL */
} child;

/* @name inside the test directory (caller frees). */
char *path_in(const fixture *f, const char *name);

/* A listening unix stream socket at @path (QEMU connects to it). */
int listen_at(const char *path);

/* add2 */
void add2(GPtrArray *a, const char *opt, char *val);

/*
 * qtest_pick_qemu: call first in main().  The tests run the
 * qemu-system-x86_64 (and qemu-storage-daemon) found in PATH; where
 * $SNAPLOAD_QEMU_DIR is set (meson's suites for Debian 12's QEMU 7.2), that
 * directory goes first in PATH, for every process the tests start.
 */
void qtest_pick_qemu(void);

/* qtest_qemu_major: the major version of the QEMU the tests run, 0 if none answers. */
unsigned qtest_qemu_major(void);

/*
 * qtest_skip_without_qemu: where $SNAPLOAD_QEMU_VERSION (say "7.2") names
 * the QEMU these tests are for and the one in PATH is not that version,
 * every one of the @n @tests becomes a skip for want of the capability
 * "qemu-VERSION" (a failure where it is required), naming what was found.
 */
void qtest_skip_without_qemu(struct CMUnitTest *tests, unsigned n);

/* The guest's QEMU command line (no terminating NULL yet): the walker's,
 * or the one f->args_hook builds. */
void qemu_args(GPtrArray *a, const fixture *f, const char *serial, const char *qmp);

/* Starts @argv; with @logs ("name"), its stdout and stderr go to files
 * name.out and name.err in the test directory (files, not pipes: nothing
 * must block a child that writes more than a pipe holds). */
child spawn(const fixture *f, GPtrArray *argv, const char *logs);

/*
 * Ends and reaps every process the test spawned that still runs (a failed
 * assertion leaves by longjmp): no QEMU outlives its test.  qemu-restore's
 * QEMU and daemon die with it (PR_SET_PDEATHSIG).
 */
void end_kids(fixture *f);

/* Waits (bounded, on a pidfd: no polling loop) for @c to exit; its wait status. */
int reap(child *c, int ms);

/* Frees the log file names of @c. */
void child_free(child *c);

/* The whole of file @path, "" if it cannot be read (caller frees). */
char *slurp(const char *path);

/* Number of the last "PASS <k>" line in @log, 0 if none. */
unsigned last_pass(const char *log);

/* Waits until the walker's serial log shows pass @k finished, then @lines
 * more lines; fails on any error line. */
void wait_walker(const char *serial, unsigned k, unsigned lines);

/* Accepts QEMU's QMP connection on @lfd (bounded; fails the test if none). */
sl_qmp *accept_qmp(int lfd, const child *c);

/* A human monitor command's output (fails the test on error). */
char *hmp(sl_qmp *q, const char *cmd);

/* Fixture setup: @state is the mem_kind; a directory, the walker image, the memory file name. */
int setup(void **state);

/* Ends every process started, removes the memory file and the directory (kept with SL_TEST_KEEP=1, to look at after a failure). */
int teardown(void **state);

/* Skips (or fails, where required) unless uffd, KVM if required, and the kind's hugepages are there. */
void need(fixture *f);

/* Boots the walker, lets it finish two passes and saves it mid-pass
 * (qemu-save --format f->save_format). */
void boot_and_save(fixture *f);

/*
 * Quits QEMU over @q (closed), waits for qemu-restore @r (60 s) and reads
 * its stdout and stderr into *@out and *@errs (caller frees); returns its
 * wait status.
 */
int quit_and_reap(sl_qmp *q, child *r, char **out, char **errs);

/* `snapload qemu-restore` of the saved guest, with more options in @opts;
 * its stdout and stderr in files named after @qmp (restore.out, .err). */
child start_restore(const fixture *f, const char *const *opts, const char *serial,
                           const char *qmp, const char *qtest);

/*
 * Waits until the incoming device-state load has finished.  The load may
 * end before this monitor connection exists, so an event could be missed:
 * the test asks for the run state instead (bounded; tests only).
 */
void wait_paused(sl_qmp *q);

/* One qtest command and its "OK ..." answer (caller frees). */
char *qtest_cmd(int fd, GString *in, const char *cmd);

/* Reads guest RAM through QEMU's qtest protocol and compares it with the
 * snapshot; returns the number of differing pages. */
uint64_t qtest_compare(const fixture *f, int fd);

/* The vhost-user stand-in: maps the RAM file through the preload client. */
void run_peer_pages(const fixture *f, const char *dsock, const char *pages);

/* run_peer_pages(); @track: registered tracked (SNAPLOAD_TRACK=1), as a
 * back-end of a restore that tracks writes, so its reads end no list. */
void run_peer_pages_tracked(const fixture *f, const char *dsock, const char *pages, bool track);

/* The second process reads 3000 pages at random. */
void run_peer(const fixture *f, const char *dsock);

/* @text as a JSON object (fails the test if it is not one). */
JsonObject *parse_json(const char *text);

/*
 * The "restore" object of qemu-restore's JSON @res, after checking that
 * the restore was clean: status ok, no page placed twice (both counts),
 * none never placed, no checksum failure.
 */
JsonObject *restore_was_clean(JsonObject *res);

/*
 * Pages of the mapping of @path in process @pid that are in its page
 * tables (/proc/PID/pagemap); *@total gets the mapping's pages.  @path
 * NULL: QEMU's anonymous guest RAM, its largest private read-write mapping
 * of no file (TCG's code buffer is executable too).  With no
 * loaders, a guest page is placed only when something faults on it, which
 * maps it in the faulting view: a page not present in QEMU was never placed.
 */
uint64_t pages_mapped(pid_t pid, const char *path, uint64_t *total);

/* Waits (bounded) until QEMU has more than @n pages of guest RAM mapped. */
void wait_guest_touches(pid_t qemu, const char *memfile, uint64_t n);

/* Ends @pid (QEMU) if it still runs, and says so: no guest may outlive its test. */
bool end_if_alive(pid_t pid, int pidfd, int ms);

/** Kills (SIGKILL) the restore daemon listening on @dsock (qemu-restore --socket). */
void kill_daemon_at(const char *dsock);

/* Waits (bounded) until file @path contains @text. */
void wait_for_text(const char *path, const char *text);

/* Waits (bounded) until lazy restore @r has printed its report (text or
 * --json), which it does once every page is in place: a test that quits
 * QEMU and wants qemu-restore to exit 0 waits for it first, or a loaded
 * host's slower fill makes that quit a failure ("QEMU exited before every
 * page was in place", seen in a loop of the qtests under load). */
void wait_restored(const child *r);

/* Runs `snapload qemu-save` on the restored QEMU (a child of @parent if not
 * NULL, whose own parent moved to @ancestor if not NULL); its wait status,
 * stderr in *@errs. */
int qemu_save_restored(fixture *f, const char *out, const char *parent, const char *ancestor,
                       char **errs);

#endif /* SNAPLOAD_QTEST_UTIL_H */
