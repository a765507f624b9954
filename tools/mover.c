/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Both ends of moving whole chunks into a consumer's anonymous memory
 * (mover.h explains why the consumer moves them itself).  The client end
 * runs in the consumer (stock QEMU, through the preload client); the
 * server end is called by the daemon's loader threads through the engine.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "mover.h"
#include "wire.h"
#include "snapload/snapload.h"
#include "migration/uffd.h"

/* How long a loader waits for a MOVED before it gives moving up, and the
 * deadline a MOVE carries, well before: a mover that reads it later does
 * not move, so that no move is carried out after the loader gave up (and
 * copied the chunk, which the guest may have discarded since). */
#define ANSWER_MS 10000
#define DEADLINE_NS (4000 * (uint64_t)1000000)

uint64_t sl_mover_now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- the client end, in the consumer ---- */

/* The mover thread's state: made by sl_mover_client_start, then the
 * thread's alone (it frees it). */
typedef struct {
    int chan;           /* our end of the mover channel */
    int uffd;           /* our duplicate of the mapping's uffd */
    uint8_t *map;       /* what holds the slots (with alignment slack) */
    size_t map_len;
    uint64_t staging;   /* slot 0, 2 MiB aligned */
    uint64_t lo, hi;    /* the registered mapping: MOVE targets only this */
} client_mover;

/* The answer to one MOVE packet of @n bytes in @buf. */
static sl_msg answer(const client_mover *cm, const uint8_t *buf, ssize_t n)
{
    sl_msg m, a = { .type = SL_MSG_MOVED };
    uint64_t eagain = 0;
    long page = sysconf(_SC_PAGESIZE);

    if (!sl_msg_decode(buf, (size_t)n, &m, NULL) || m.type != SL_MSG_MOVE) {
        a.u.moved.status = -EPROTO;
        return a;
    }
    a.u.moved.dst = m.u.move.dst; /* names the MOVE it answers */
    if (sl_mover_now_ns() > m.u.move.deadline_ns) {
        a.u.moved.status = -ETIMEDOUT; /* the daemon may have given up on it: not moved */
    } else if (m.u.move.slot >= SL_MOVER_SLOTS || m.u.move.dst % page ||
               m.u.move.len % page || m.u.move.dst < cm->lo || m.u.move.dst > cm->hi ||
               m.u.move.len > cm->hi - m.u.move.dst) {
        a.u.moved.status = -EINVAL; /* not a chunk of ours */
    } else {
        a.u.moved.status = sl_uffd_move(cm->uffd, NULL, (void *)(uintptr_t)m.u.move.dst,
                                        (void *)(uintptr_t)(cm->staging +
                                                            m.u.move.slot * SL_MOVE_CHUNK),
                                        m.u.move.len, &a.u.moved.done, &eagain);
    }
    return a;
}

/* Serves MOVE until the daemon closes the channel (or breaks it). */
static void *client_mover_main(void *opaque)
{
    client_mover *cm = opaque;
    uint8_t buf[SL_PROTO_MAX];

    for (;;) {
        ssize_t n = recv(cm->chan, buf, sizeof(buf), 0);
        sl_msg a;
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        a = answer(cm, buf, n);
        if (!sl_wire_send(cm->chan, &a, NULL, 0)) {
            break;
        }
    }
    close(cm->chan);
    close(cm->uffd);
    munmap(cm->map, cm->map_len);
    g_free(cm);
    return NULL;
}

int sl_mover_client_start(int uffd, sl_msg_register *reg, GError **errp)
{
    client_mover *cm = g_new0(client_mover, 1);
    int sv[2] = { -1, -1 };
    GThread *t;

    cm->map_len = (SL_MOVER_SLOTS + 1) * (size_t)SL_MOVE_CHUNK;
    cm->map = mmap(NULL, cm->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (cm->map == MAP_FAILED ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 ||
        (cm->uffd = fcntl(uffd, F_DUPFD_CLOEXEC, 0)) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "mover: %s", g_strerror(errno));
        goto fail;
    }
    cm->staging = ((uintptr_t)cm->map + SL_MOVE_CHUNK - 1) & ~(uint64_t)(SL_MOVE_CHUNK - 1);
    /* Hints: a slot written whole becomes one hugepage, and no fork copies it. */
    (void)madvise((void *)(uintptr_t)cm->staging, SL_MOVER_SLOTS * (size_t)SL_MOVE_CHUNK,
                  MADV_HUGEPAGE);
    (void)madvise(cm->map, cm->map_len, MADV_DONTFORK);
    cm->lo = reg->host_addr;
    cm->hi = reg->host_addr + reg->length;
    cm->chan = sv[0];
    if (!(t = g_thread_try_new("sl-mover", client_mover_main, cm, errp))) {
        g_prefix_error(errp, "mover: ");
        close(cm->uffd);
        goto fail;
    }
    g_thread_unref(t);
    reg->staging_addr = cm->staging;
    reg->staging_slots = SL_MOVER_SLOTS;
    return sv[1];

fail:
    for (unsigned i = 0; i < 2; i++) {
        if (sv[i] >= 0) {
            close(sv[i]);
        }
    }
    if (cm->map != MAP_FAILED) {
        munmap(cm->map, cm->map_len);
    }
    g_free(cm);
    return -1;
}

/* ---- the server end, in the daemon ---- */

/*
 * Shared by the loader threads: @lock guards @free_slots (and @cond
 * signals it); @chan_lock makes a MOVE and its MOVED one exchange; the
 * rest is set at creation and read-only until sl_mover_server_free, but
 * for the atomics.
 */
struct sl_mover_server {
    int chan;
    pid_t pid;
    int pidfd;               /* pins @pid: no write after it is gone and reused */
    uint64_t staging;
    unsigned nslots;
    GMutex lock;
    GCond cond;
    uint64_t free_slots;     /* bit i: slot i free */
    GMutex chan_lock;
    atomic_bool broken;      /* set once, read by every loader: relaxed, a hint that
                              * only saves futile exchanges (the channel stays safe) */
    atomic_uint_fast64_t moved, refused; /* counters for the log, relaxed */
    atomic_int first_err;    /* the first refusal's -errno, for the log (relaxed) */
};

sl_mover_server *sl_mover_server_new(int chan, pid_t pid, int pidfd, uint64_t staging,
                                     unsigned slots, GError **errp)
{
    sl_mover_server *m;
    int type = 0;
    socklen_t len = sizeof(type);

    if (getsockopt(chan, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_SEQPACKET) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the mover channel is not a "
                    "SOCK_SEQPACKET socket");
        return NULL;
    }
    /* Never blocked by a client that fills its own end: a full queue is a failure.
     * The client may clear this flag from its copy: exchange() sends with
     * MSG_DONTWAIT all the same (found by review) and polls for the answer. */
    if (fcntl(chan, F_SETFL, fcntl(chan, F_GETFL) | O_NONBLOCK) < 0 || pidfd < 0 ||
        (pidfd = fcntl(pidfd, F_DUPFD_CLOEXEC, 0)) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "mover of process %d: %s", (int)pid,
                    pidfd < 0 ? "no pidfd pins it" : g_strerror(errno));
        return NULL;
    }
    m = g_new0(sl_mover_server, 1);
    m->chan = chan;
    m->pid = pid;
    m->pidfd = pidfd;
    m->staging = staging;
    m->nslots = MIN(slots, 64u);
    m->free_slots = m->nslots == 64 ? UINT64_MAX : (UINT64_C(1) << m->nslots) - 1;
    g_mutex_init(&m->lock);
    g_cond_init(&m->cond);
    g_mutex_init(&m->chan_lock);
    return m;
}

/*
 * Moving stops for good: no more exchanges, and loaders waiting for a slot
 * (which a failed exchange may never give back) stop waiting.
 */
static void set_broken(sl_mover_server *m)
{
    g_mutex_lock(&m->lock);
    /* relaxed: see @broken (the lock orders it for take_slot's waiters) */
    atomic_store_explicit(&m->broken, true, memory_order_relaxed);
    g_cond_broadcast(&m->cond);
    g_mutex_unlock(&m->lock);
}

/* A free slot, or UINT_MAX once moving has stopped. */
static unsigned take_slot(sl_mover_server *m)
{
    unsigned s = UINT_MAX;

    g_mutex_lock(&m->lock);
    /* Relaxed, here and below: set_broken() sets @broken under m->lock too,
     * which orders it (and wakes this wait). */
    while (!m->free_slots && !atomic_load_explicit(&m->broken, memory_order_relaxed)) {
        g_cond_wait(&m->cond, &m->lock);
    }
    if (m->free_slots && !atomic_load_explicit(&m->broken, memory_order_relaxed)) {
        s = (unsigned)__builtin_ctzll(m->free_slots);
        m->free_slots &= ~(UINT64_C(1) << s);
    }
    g_mutex_unlock(&m->lock);
    return s;
}

static void give_slot(sl_mover_server *m, unsigned s)
{
    g_mutex_lock(&m->lock);
    m->free_slots |= UINT64_C(1) << s;
    g_cond_signal(&m->cond);
    g_mutex_unlock(&m->lock);
}

/*
 * @len bytes of @src into slot @s of the client: 0, -ESRCH (gone), -EPERM
 * (the kernel's ptrace rules forbid it: Yama, another uid) or -EFAULT.
 */
static int write_slot(sl_mover_server *m, unsigned s, const void *src, uint64_t len)
{
    struct iovec l = { .iov_base = (void *)src, .iov_len = len };
    struct iovec r = { .iov_base = (void *)(uintptr_t)(m->staging + s * (uint64_t)SL_MOVE_CHUNK),
                       .iov_len = len };
    ssize_t n;

    /* Signal 0 through the pidfd: the process that connected still exists,
     * so @pid is still its pid and not another's (the write names a pid). */
    if (syscall(SYS_pidfd_send_signal, m->pidfd, 0, NULL, 0) < 0) {
        return errno == ESRCH ? -ESRCH : -EPERM;
    }
    n = process_vm_writev(m->pid, &l, 1, &r, 1, 0);
    if (n < 0 && (errno == ESRCH || errno == EPERM)) {
        return -errno;
    }
    return n == (ssize_t)len ? 0 : -EFAULT;
}

/* One MOVE and its MOVED, under chan_lock: 0 with @a, or -errno (the channel is broken). */
static int exchange(sl_mover_server *m, const sl_msg *req, sl_msg *a)
{
    uint8_t buf[SL_PROTO_MAX];
    struct pollfd p = { .fd = m->chan, .events = POLLIN };
    ssize_t n;

    /* relaxed: see @broken; an answer late for a broken exchange may still come */
    if (atomic_load_explicit(&m->broken, memory_order_relaxed) ||
        !sl_wire_send_nowait(m->chan, req)) {
        return -EPIPE;
    }
    do {
        n = poll(&p, 1, ANSWER_MS);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return -ETIMEDOUT;
    }
    n = recv(m->chan, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0 || !sl_msg_decode(buf, (size_t)n, a, NULL) || a->type != SL_MSG_MOVED ||
        a->u.moved.dst != req->u.move.dst || a->u.moved.done > req->u.move.len ||
        a->u.moved.done % (uint64_t)sysconf(_SC_PAGESIZE) ||
        (a->u.moved.status == 0 && a->u.moved.done != req->u.move.len)) {
        return -EPROTO;
    }
    return 0;
}

/*
 * Asks the client to move slot @s to @dst: its status (its own -ESRCH
 * taken as a refusal), with *@done; or the channel's failure, which breaks
 * it (*@lost: the slot may still be moved from late, never reuse it).
 */
static int ask_move(sl_mover_server *m, unsigned s, uint64_t dst, uint64_t len, uint64_t *done,
                    bool *lost)
{
    sl_msg req = { .type = SL_MSG_MOVE }, a;
    int ret;

    req.u.move = (sl_msg_move){ .slot = s, .dst = dst, .len = len,
                                .deadline_ns = sl_mover_now_ns() + DEADLINE_NS };
    g_mutex_lock(&m->chan_lock);
    ret = exchange(m, &req, &a);
    g_mutex_unlock(&m->chan_lock);
    /* Only the channel's failure, not a status the client sends, keeps a
     * slot: a client cannot starve the loaders. */
    *lost = ret == -ETIMEDOUT || ret == -EPROTO;
    if (ret < 0) {
        set_broken(m);
        return ret;
    }
    *done = a.u.moved.done;
    /* The client's word that its process is gone decides nothing: the copy
     * that follows finds out (sl_commit_run). */
    ret = a.u.moved.status;
    return ret == -ESRCH || ret == -ENOENT ? -EBUSY : ret;
}

int sl_mover_server_move(void *opaque, uint64_t dst, const void *src, uint64_t len,
                         uint64_t *done)
{
    sl_mover_server *m = opaque;
    bool lost = false;
    unsigned s;
    int ret;

    *done = 0;
    if (len > SL_MOVE_CHUNK || (s = take_slot(m)) == UINT_MAX) {
        return -EPIPE;
    }
    ret = write_slot(m, s, src, len);
    if (ret == -EFAULT || ret == -EPERM) { /* the slots are not where the client said,
                                            * or may not be written */
        set_broken(m);
    } else if (ret == 0) {
        ret = ask_move(m, s, dst, len, done, &lost);
    }
    if (ret == -EINVAL) { /* the mappings do not allow it (mlocked RAM, ...): none will */
        set_broken(m);
    }
    if (ret < 0) {
        int none = 0;
        /* Relaxed: keeps the first error only; read by sl_mover_server_finish()
         * after the channel is shut down and every mover returned. */
        atomic_compare_exchange_strong_explicit(&m->first_err, &none, ret, memory_order_relaxed,
                                                memory_order_relaxed);
    }
    if (!lost) {
        give_slot(m, s);
    }
    /* Relaxed: counters, read by sl_mover_server_finish() (as @first_err). */
    atomic_fetch_add_explicit(ret == 0 ? &m->moved : &m->refused, 1, memory_order_relaxed);
    return ret;
}

int sl_mover_server_finish(sl_mover_server *m, uint64_t *moved, uint64_t *refused)
{
    set_broken(m);
    shutdown(m->chan, SHUT_RDWR);
    /* Relaxed: the counters and @first_err pair with nothing; the caller
     * calls this once the movers are done. */
    *moved = atomic_load_explicit(&m->moved, memory_order_relaxed);
    *refused = atomic_load_explicit(&m->refused, memory_order_relaxed);
    return atomic_load_explicit(&m->first_err, memory_order_relaxed);
}

void sl_mover_server_free(sl_mover_server *m)
{
    if (!m) {
        return;
    }
    close(m->chan);
    close(m->pidfd);
    g_mutex_clear(&m->lock);
    g_cond_clear(&m->cond);
    g_mutex_clear(&m->chan_lock);
    g_free(m);
}
