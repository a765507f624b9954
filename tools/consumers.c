/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Consumer processes (see consumers.h).  Shared state between the parent
 * and the children lives in one MAP_SHARED anonymous page: the parent writes
 * go/stop (release), the children write their counters and read the flags
 * (acquire).
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "cli.h"
#include "consumers.h"
#include "migration/format/format.h"
#include "migration/uffd.h"

#define MAX_CONSUMERS 16
/* How long children have, all together, to leave once told to stop; one
 * still running then is blocked on a page nobody will place (below). */
#define CONSUMER_GRACE_MS 3000

/*
 * A page shared (MAP_SHARED anonymous) between the parent and its consumer
 * children: @go and @stop are written by the parent (release) and read by
 * the children (acquire); child i alone counts into slot i of the arrays
 * (relaxed: plain counters), which the parent reads after reaping it (the
 * exit orders them).
 */
typedef struct {
    _Atomic int go, stop;
    _Atomic uint64_t touched[MAX_CONSUMERS];
    _Atomic uint64_t mismatches[MAX_CONSUMERS];
    _Atomic uint64_t poisoned[MAX_CONSUMERS];
} shared_page;

struct consumers {
    unsigned n;                  /* children forked so far */
    pid_t pids[MAX_CONSUMERS];
    int socks[MAX_CONSUMERS];    /* parent's end: uffds come in, "go" goes out */
    shared_page *sh;
};

/* Sends @fd and @base over @sock. */
static int send_fd(int sock, int fd, uint64_t base)
{
    char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
    struct iovec iov = { .iov_base = &base, .iov_len = sizeof(base) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf) };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    return sendmsg(sock, &mh, 0) == sizeof(base) ? 0 : -1;
}

static int recv_fd(int sock, uint64_t *base)
{
    char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
    struct iovec iov = { .iov_base = base, .iov_len = sizeof(*base) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf) };
    struct cmsghdr *cm;
    int fd = -1;

    if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) != sizeof(*base)) {
        return -1;
    }
    cm = CMSG_FIRSTHDR(&mh);
    if (cm && cm->cmsg_type == SCM_RIGHTS && cm->cmsg_len == CMSG_LEN(sizeof(int))) {
        memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    }
    return fd;
}

/* Child: map, register and hand over one block; returns the mapping. */
static uint8_t *child_register(int sock, const sl_mem *m)
{
    uint8_t *p = mmap(NULL, m->length, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd,
                      (off_t)m->offset);
    int uffd = p == MAP_FAILED ? -1 : sl_uffd_open(m->ops->uffd_features, 0, NULL, NULL);

    if (uffd < 0 || !sl_uffd_register(uffd, p, m->length, m->ops->register_mode,
                                      m->ops->range_ioctls, NULL, NULL) ||
        send_fd(sock, uffd, (uintptr_t)p) < 0) {
        _exit(20);
    }
    close(uffd);
    return p;
}

/*
 * The recovery point of the calling thread while it is inside
 * poison_guard_read(), else NULL.  Thread-local because a signal handler
 * has no other way to find it; CLI code only (never in the library).
 */
static __thread sigjmp_buf *poison_jmp;

/* SIGBUS (a poisoned page) or SIGSEGV (a page sealed PROT_NONE where the
 * kernel cannot poison) inside a guarded read: back to its recovery point. */
static void on_refused(int sig, siginfo_t *si, void *uctx)
{
    sigjmp_buf *jb = poison_jmp;

    if (jb) {
        poison_jmp = NULL;
        siglongjmp(*jb, 1);
    }
    signal(sig, SIG_DFL); /* not a guarded read: die of it, as without a handler */
    raise(sig);
}

void poison_guard_install(void)
{
    /* NODEFER: the signal stays unblocked after the jump, for the next read. */
    struct sigaction sa = { .sa_sigaction = on_refused, .sa_flags = SA_SIGINFO | SA_NODEFER };

    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
}

bool poison_guard_read(void (*fn)(void *arg), void *arg)
{
    sigjmp_buf jb;

    /* No signal mask to restore (NODEFER), so no sigprocmask per read. */
    if (sigsetjmp(jb, 0)) {
        return false;
    }
    poison_jmp = &jb;
    fn(arg);
    poison_jmp = NULL;
    return true;
}

/* One page for a consumer to check: what to read and, after, what it saw. */
typedef struct {
    sl_snapshot *s;
    unsigned b;
    uint64_t i, ps;
    const uint8_t *p;
    bool ok;
} page_check;

static void check_page(void *opaque)
{
    page_check *c = opaque;

    c->ok = sl_snapshot_page_matches(c->s, c->b, c->i, c->p);
}

/* Child: reads and checks one random page; counts what it saw. */
static void child_touch(unsigned id, sl_snapshot *s, uint8_t **maps, uint64_t *seed,
                        shared_page *sh)
{
    unsigned nb = sl_snapshot_n_blocks(s);
    page_check c = { .s = s };
    sl_block_info bi;

    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    c.b = (unsigned)(*seed % nb);
    sl_snapshot_block(s, c.b, &bi);
    c.i = (*seed >> 8) % bi.pages;
    c.ps = bi.page_size;
    c.p = maps[c.b] + c.i * bi.page_size;
    /* Relaxed: counters in the shared page, read by the parent after this
     * child exited (its exit orders them). */
    if (!poison_guard_read(check_page, &c)) {
        atomic_fetch_add_explicit(&sh->poisoned[id], 1, memory_order_relaxed);
    } else if (!c.ok) {
        atomic_fetch_add_explicit(&sh->mismatches[id], 1, memory_order_relaxed);
    }
}

static void child_main(unsigned id, int sock, sl_snapshot *s, const sl_mem *mems,
                       shared_page *sh)
{
    unsigned nb = sl_snapshot_n_blocks(s);
    uint8_t *maps[SL_MAX_BLOCKS];
    uint64_t seed = 0x2545f4914f6cdd1dull * (id + 1), t = 0;

    poison_guard_install();
    for (unsigned b = 0; b < nb; b++) {
        maps[b] = child_register(sock, &mems[b]);
    }
    while (!atomic_load_explicit(&sh->go, memory_order_acquire)) {
        char c;
        if (read(sock, &c, 1) <= 0) { /* the parent says go by writing a byte */
            _exit(atomic_load_explicit(&sh->stop, memory_order_acquire) ? 0 : 21);
        }
    }
    while (!atomic_load_explicit(&sh->stop, memory_order_acquire)) {
        child_touch(id, s, maps, &seed, sh);
        /* Relaxed: a progress count the parent samples; nothing hangs on it. */
        atomic_store_explicit(&sh->touched[id], ++t, memory_order_relaxed);
    }
    _exit(0);
}

static bool fail(GError **errp, const char *what)
{
    g_set_error(errp, SL_ERROR, SL_ERROR_IO, "consumers: %s: %s", what, g_strerror(errno));
    return false;
}

/* Forks consumer @id and attaches its views; false on error. */
static bool spawn_one(consumers *c, unsigned id, sl_snapshot *s, const sl_mem *mems,
                      sl_restore *r, GError **errp)
{
    int sv[2];
    sl_block_info bi;
    pid_t parent;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        return fail(errp, "socketpair");
    }
    parent = getpid();
    c->pids[id] = fork();
    if (c->pids[id] == 0) {
        /* Ended with us, however we end: orphaned, a consumer touched on
         * for ever (or waited on a page nobody would place) and kept the
         * memory, a hugetlbfs pool's pages too (found by a user's test:
         * kill -9 of restore).  Forked before any thread exists, so the
         * forking thread is the one whose death counts. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent) {
            raise(SIGKILL);
        }
        close(sv[0]);
        child_main(id, sv[1], s, mems, c->sh);
    }
    close(sv[1]);
    c->socks[id] = sv[0];
    if (c->pids[id] < 0) {
        close(sv[0]);
        return fail(errp, "fork");
    }
    c->n = id + 1;
    for (unsigned b = 0; sl_snapshot_block(s, b, &bi); b++) {
        uint64_t base;
        int fd = recv_fd(sv[0], &base);
        bool ok = fd >= 0 && sl_restore_add_view(r, bi.name, fd, base, errp);
        if (fd >= 0) {
            close(fd);
        }
        if (!ok) {
            return fd >= 0 ? false : fail(errp, "receiving a consumer's uffd");
        }
    }
    return true;
}

consumers *consumers_spawn(unsigned n, sl_snapshot *s, const sl_mem *mems, sl_restore *r,
                           GError **errp)
{
    consumers *c = g_new0(consumers, 1);

    if (n > MAX_CONSUMERS) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "at most %d consumers", MAX_CONSUMERS);
        g_free(c);
        return NULL;
    }
    c->sh = mmap(NULL, sizeof(shared_page), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
    if (c->sh == MAP_FAILED) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "consumers' shared page: %s", g_strerror(errno));
        g_free(c);
        return NULL;
    }
    for (unsigned i = 0; i < n; i++) {
        if (!spawn_one(c, i, s, mems, r, errp)) {
            consumers_finish(c, NULL, NULL);
            return NULL;
        }
    }
    return c;
}

void consumers_go(consumers *c)
{
    /* Release: pairs with the children's acquire load of go. */
    atomic_store_explicit(&c->sh->go, 1, memory_order_release);
    for (unsigned i = 0; i < c->n; i++) {
        ssize_t n = write(c->socks[i], "g", 1);
        (void)n; /* a dead child is reported by consumers_finish() */
    }
}

/* Milliseconds left until @deadline_us (monotonic), rounded up; 0 past it. */
/*
 * Reaps child @i.  A child still running at @deadline_us waits on a page
 * the restore could not place and the kernel could not refuse (no
 * UFFDIO_POISON: its view stays registered, docs/protocol.md): as its
 * supervisor we end it (SIGKILL wakes a thread blocked in a fault) and
 * count it in *@ended.  Else false with @status if it failed on its own.
 */
static bool reap_one(consumers *c, unsigned i, int64_t deadline_us, uint64_t *ended,
                     int *status)
{
    bool late = !cli_exits_by(c->pids[i], deadline_us);

    if (late) {
        kill(c->pids[i], SIGKILL);
    }
    if (waitpid(c->pids[i], status, 0) < 0) {
        *status = -1;
        return false;
    }
    if (late && WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) {
        (*ended)++;
        return true;
    }
    return WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

bool consumers_finish(consumers *c, consumer_totals *out, GError **errp)
{
    int64_t deadline = g_get_monotonic_time() + CONSUMER_GRACE_MS * 1000;
    consumer_totals sum = { 0 };
    bool ok = true;

    /* Release: pairs with the children's acquire load of stop. */
    atomic_store_explicit(&c->sh->stop, 1, memory_order_release);
    for (unsigned i = 0; i < c->n; i++) {
        close(c->socks[i]); /* a child still waiting for go sees EOF and exits */
    }
    for (unsigned i = 0; i < c->n; i++) {
        int status = 0;
        if (!reap_one(c, i, deadline, &sum.ended, &status)) {
            if (ok) {
                g_set_error(errp, SL_ERROR, SL_ERROR_IO, "consumer %u (pid %d) %s %d", i,
                            (int)c->pids[i], WIFSIGNALED(status) ? "died of signal" :
                            "exited with status", WIFSIGNALED(status) ? WTERMSIG(status) :
                            WEXITSTATUS(status));
            }
            ok = false;
        }
        sum.touched += atomic_load_explicit(&c->sh->touched[i], memory_order_relaxed);
        sum.mismatches += atomic_load_explicit(&c->sh->mismatches[i], memory_order_relaxed);
        sum.poisoned += atomic_load_explicit(&c->sh->poisoned[i], memory_order_relaxed);
    }
    if (out) {
        *out = sum;
    }
    munmap(c->sh, sizeof(*c->sh));
    g_free(c);
    return ok;
}
