/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * SIGINT, SIGTERM and SIGHUP for a command that supervises children (the
 * guest's QEMU, the restore daemon, vhost-user back-ends): instead of
 * dying where it stands and leaving its sockets, temporary directory and
 * children behind, the command blocks the three signals and a watcher
 * thread waits for them on a signalfd (beside an eventfd that ends it).
 * The first signal is remembered and ends the target process (QEMU), by
 * its pidfd so that a reaped and reused pid can never be hit; the command
 * then sees its child gone, fails the way it fails on any QEMU exit, and
 * cleans up.  Children get the signals unblocked again before they exec
 * (cli_interrupt_child()).
 *
 * Commands that write an output beside it first (OUT.PID.partial, renamed
 * when whole) register that path instead: a handler of the three signals
 * removes it and lets the signal end the process as before.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "cli.h"

/* Owned by the command's thread except where a field says otherwise. */
struct cli_interrupt {
    pthread_t thread;
    int sfd, efd;          /* signalfd of the three signals; eventfd: stop */
    int note;              /* eventfd written once by the watcher at the first signal */
    sigset_t set, old;     /* the three signals; the mask before start */
    pthread_mutex_t lock;  /* guards the two fields below, written by both threads */
    int signo;             /* the first signal that came, 0 if none */
    int target;            /* pidfd to send SIGTERM to on a signal, -1 if none */
};

static void cli_interrupt_sigset(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

static void end_target_locked(cli_interrupt *in)
{
    if (in->target >= 0) {
        syscall(SYS_pidfd_send_signal, in->target, SIGTERM, NULL, 0);
    }
}

static void *watch(void *opaque)
{
    cli_interrupt *in = opaque;
    struct pollfd p[2] = { { .fd = in->sfd, .events = POLLIN }, { .fd = in->efd, .events = POLLIN } };
    struct signalfd_siginfo si;

    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return NULL;
        }
        if (p[1].revents) {
            return NULL;
        }
        if (read(in->sfd, &si, sizeof(si)) != sizeof(si)) {
            continue;
        }
        pthread_mutex_lock(&in->lock);
        if (!in->signo) {
            uint64_t one = 1;
            in->signo = (int)si.ssi_signo;
            end_target_locked(in);
            (void)!write(in->note, &one, sizeof(one)); /* never read: readable for good */
        }
        pthread_mutex_unlock(&in->lock);
    }
}

cli_interrupt *cli_interrupt_start(void)
{
    cli_interrupt *in = g_new0(cli_interrupt, 1);

    in->target = -1;
    pthread_mutex_init(&in->lock, NULL);
    cli_interrupt_sigset(&in->set);
    pthread_sigmask(SIG_BLOCK, &in->set, &in->old);
    in->sfd = signalfd(-1, &in->set, SFD_CLOEXEC);
    in->efd = eventfd(0, EFD_CLOEXEC);
    in->note = eventfd(0, EFD_CLOEXEC);
    if (in->sfd < 0 || in->efd < 0 || in->note < 0 ||
        pthread_create(&in->thread, NULL, watch, in) != 0) {
        /* Without a watcher the signals must still be able to end us. */
        pthread_sigmask(SIG_SETMASK, &in->old, NULL);
        for (int i = 0; i < 3; i++) {
            int fd = (int[]){ in->sfd, in->efd, in->note }[i];
            if (fd >= 0) {
                close(fd);
            }
        }
        pthread_mutex_destroy(&in->lock);
        g_free(in);
        return NULL;
    }
    return in;
}

void cli_interrupt_target(cli_interrupt *in, int pidfd)
{
    if (!in) {
        return;
    }
    pthread_mutex_lock(&in->lock);
    in->target = pidfd;
    if (in->signo) { /* it came before the target existed: end it now */
        end_target_locked(in);
    }
    pthread_mutex_unlock(&in->lock);
}

int cli_interrupt_signal(cli_interrupt *in)
{
    int signo;

    if (!in) {
        return 0;
    }
    pthread_mutex_lock(&in->lock);
    signo = in->signo;
    pthread_mutex_unlock(&in->lock);
    return signo;
}

int cli_interrupt_fd(const cli_interrupt *in)
{
    return in ? in->note : -1;
}

void cli_interrupt_child(void)
{
    sigset_t set;

    cli_interrupt_sigset(&set);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/*
 * The partial outputs to remove on a signal: an append-only table, each
 * entry written once by the command's threads and never freed (so the
 * handler can never read freed memory, and the copies stay reachable, not
 * leaked).  An entry's @path is published by the release store of its
 * @live flag, which the handler's acquire load pairs with (the table's
 * length, read relaxed, only bounds the scan); cli_interrupt_keep()
 * clears @live.  The CLI's only global: a
 * signal handler has no other way to find them.
 */
#define PARTIAL_SLOTS 64
static struct {
    const char *path;
    int live;
} partials[PARTIAL_SLOTS];
static unsigned npartials; /* entries taken (atomic fetch-add; may pass PARTIAL_SLOTS) */

static void remove_partials(int sig)
{
    /* Relaxed: only bounds the scan; each slot's @live (release/acquire)
     * publishes its path. */
    unsigned n = MIN(__atomic_load_n(&npartials, __ATOMIC_RELAXED), PARTIAL_SLOTS);

    for (unsigned i = 0; i < n; i++) {
        if (__atomic_load_n(&partials[i].live, __ATOMIC_ACQUIRE)) { /* pairs: register */
            unlink(partials[i].path);
        }
    }
    signal(sig, SIG_DFL);
    raise(sig); /* pending until the handler returns, then it ends us as it would have */
}

/* Installs remove_partials() for the three signals where they still kill (not
 * where the caller's parent had them ignored, as nohup does). */
static void catch_for_partials(void)
{
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
    struct sigaction sa = { .sa_handler = remove_partials }, old;

    for (unsigned i = 0; i < G_N_ELEMENTS(sigs); i++) {
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
            sigaction(sigs[i], &sa, NULL);
        }
    }
}

void cli_interrupt_remove_on_signal(const char *path)
{
    unsigned i = __atomic_fetch_add(&npartials, 1, __ATOMIC_RELAXED); /* a slot of our own */

    if (i >= PARTIAL_SLOTS) {
        return; /* the table is full: this one is not removed on a signal */
    }
    catch_for_partials();
    partials[i].path = g_strdup(path);
    /* release: the handler's acquire load of @live sees the whole string */
    __atomic_store_n(&partials[i].live, 1, __ATOMIC_RELEASE);
}

void cli_interrupt_keep(const char *path)
{
    /* Relaxed: only bounds the scan (as in remove_partials()). */
    unsigned n = MIN(__atomic_load_n(&npartials, __ATOMIC_RELAXED), PARTIAL_SLOTS);

    for (unsigned i = 0; i < n; i++) {
        /* acquire: pairs with the release store that published @path */
        if (__atomic_load_n(&partials[i].live, __ATOMIC_ACQUIRE) &&
            strcmp(partials[i].path, path) == 0) {
            /* relaxed: a handler running now may still unlink the path,
             * which is then renamed or gone (ENOENT) */
            __atomic_store_n(&partials[i].live, 0, __ATOMIC_RELAXED);
        }
    }
}

void cli_interrupt_stop(cli_interrupt *in)
{
    uint64_t one = 1;

    if (!in) {
        return;
    }
    (void)!write(in->efd, &one, sizeof(one));
    pthread_join(in->thread, NULL);
    close(in->sfd);
    close(in->efd);
    close(in->note);
    pthread_sigmask(SIG_SETMASK, &in->old, NULL);
    pthread_mutex_destroy(&in->lock);
    g_free(in);
}
