/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the integration tests with the Linux guest share (linux-guest.c,
 * docs/linux-guest.md): building the guest (Debian's cloud kernel and an
 * initramfs made by tests/qtest/linux/mkinitramfs.py), its QEMU command
 * line, reading its console (the workload's heartbeats, wrong bytes,
 * kernel oopses), talking to the workload over its request port (the
 * guest's second serial port), and the steps around a save: qemu-save,
 * `cont` after it, waiting for a restored guest to run.
 */
#ifndef SNAPLOAD_LINUX_GUEST_H
#define SNAPLOAD_LINUX_GUEST_H

#include "qtest-util.h"

#define LG_RAM_MB 512
#define LG_WAIT_MS 300000 /* a boot or a pass under TCG on a busy host */
#define LG_REQ_WAIT_MS 120000

/* The guest of a test program: built once, booted by every case. */
typedef struct {
    char *dir;            /* where the initramfs is written */
    char *kernel, *initrd;
    const char *const *modules; /* kernel modules the initramfs loads (NULL: none) */
    const char *append;   /* the kernel command line */
    const char *const *extra; /* more QEMU arguments (NULL-terminated, or NULL) */
    bool accel_said;      /* the reason for TCG was printed */
} linux_guest;

/* The workload's heartbeats in a console log: how many, the first and last. */
typedef struct {
    unsigned count;       /* HB lines with ready=1 */
    uint64_t first_pages, first_files, first_disk;
    uint64_t pass, pages, ws, files, errors;
    uint64_t disk;        /* disk passes done (the last one's generation; 0: none) */
} lg_hb;

/* Milliseconds of the monotonic clock. */
double lg_now_ms(void);

/*
 * Whether /dev/kvm can boot this guest: it must be hardware-assisted
 * (kvm_intel or kvm_amd); a software-only KVM (kvm_pvm) emulates an
 * unmodified kernel far too slowly.  SL_LINUX_ACCEL=kvm|tcg decides
 * instead.  @why gets the reason when not.
 */
bool lg_kvm_runs_linux(char **why);

/* Fixture setup for the Linux guest: setup(), then the guest's command
 * line (@args), the case @opaque, and TCG where KVM cannot run Linux. */
void lg_setup(fixture *f, linux_guest *g, qemu_args_fn args, const void *opaque);

/*
 * The kernel (the newest /boot/vmlinuz-*-cloud-amd64, or $SL_LINUX_KERNEL)
 * and the initramfs (built once by $SL_LINUX_DIR/mkinitramfs.py with
 * g->modules); fails the test naming the package that is missing.
 */
void lg_prepare(linux_guest *g);

/* The request socket of the QEMU whose console log is @serial (X.serial -> X.req). */
char *lg_req_path(const char *serial);

/* The guest's RAM in MiB: the fixture's (f->ram_mb), else LG_RAM_MB. */
unsigned lg_ram_mb(const fixture *f);

/*
 * The guest's QEMU command line: 2 vCPUs, lg_ram_mb() of RAM (f->memfile as
 * a share=on memory-backend-file unless f->k->anon), the kernel and
 * initramfs, console in file @serial, the request port on a unix socket
 * beside it, the test's monitor on @qmp, then g->extra.
 */
void lg_args(GPtrArray *a, const fixture *f, const linux_guest *g, const char *serial,
             const char *qmp);

/* The last @n lines of @log (caller frees). */
char *lg_tail(const char *log, unsigned n);

/* The workload's heartbeats in console log @log (complete lines only). */
lg_hb lg_heartbeats(const char *log);

/*
 * Fails the test if console log @log shows a wrong byte found by the
 * workload (ERR page=, file=, disk=), a kernel Oops, BUG, panic or Call
 * Trace, or (with @restored) a guest that started over.
 */
void lg_check_console(const char *log, const char *what, bool restored);

/* Whether the process of @pidfd has exited. */
bool lg_exited(int pidfd);

/*
 * Waits (bounded) until console log @serial shows at least @count
 * heartbeats of a ready workload, the last past @min_pages pages; fails
 * at once on anything lg_check_console() refuses or if QEMU (@pidfd)
 * exits.
 */
lg_hb lg_wait_heartbeats(const char *serial, int pidfd, unsigned count, uint64_t min_pages,
                         const char *what, bool restored);

/* Connects to QEMU's socket for the guest's request port. */
int lg_req_connect(const char *path);

/*
 * Sends request @line and returns (caller frees) the first answer line
 * starting with @prefix, waiting at most @ms; *@rtt_ms (if not NULL) gets
 * the round trip.  @in keeps what was read past that line.
 */
char *lg_req_call(int fd, GString *in, const char *line, const char *prefix, int ms,
                  double *rtt_ms);

/* PING with @token; the answer must echo it and count no error.  The round trip. */
double lg_ping(int fd, GString *in, const char *token);

/* `snapload qemu-save --format @fmt -o @out` through QMP socket @sock. */
void lg_save(const char *sock, const char *fmt, const char *out);

/* `cont` after an outgoing migration (QEMU refuses it while in finish-migrate). */
void lg_cont_after_save(sl_qmp *q);

/* Waits (bounded) until the guest runs (qemu-restore has sent `cont`). */
void lg_wait_running(sl_qmp *q, int qpfd, const char *what);

/*
 * Flips a bit in three working-set pages and two files of the running
 * workload (a race with its own rewrite may undo one) and waits until it
 * reports a wrong byte in a page and in a file: its checks are live.
 */
void lg_flip_and_see_it_reported(int rfd, GString *in, const char *serial, uint64_t ws,
                                 const char *tag);

#endif /* SNAPLOAD_LINUX_GUEST_H */
