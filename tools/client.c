/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Client side of the restore daemon protocol (see client.h).  Prints
 * nothing: errors go back through GError (with the daemon's reason when it
 * refused us: a REGISTERED with an error, in answer to a REGISTER or in
 * place of any other message), and the supervisor calls the consumer's own
 * handler when the daemon dies.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include "client.h"
#include "mover.h"
#include "migration/format/format.h"
#include "migration/uffd.h"
#include "wire.h"

/* A REGISTERED with an error where @type was expected: the daemon dropped us, and why. */
static bool refused(const sl_msg *m, uint16_t type, GError **errp)
{
    if (type == SL_MSG_REGISTERED || m->type != SL_MSG_REGISTERED || m->u.status.status >= 0) {
        return false;
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "restore daemon refused us: %s",
                m->u.status.message);
    return true;
}

/*
 * sl_wire_send() and sl_wire_recv(), again when a signal interrupts them:
 * on a socket with a timeout (SO_SNDTIMEO, SO_RCVTIMEO) the kernel never
 * restarts them, whatever SA_RESTART says, and QEMU takes signals all the
 * time (a registration failed with EINTR in the vhost-user-blk qtest).
 */
static bool send_msg(int sock, const sl_msg *m, const int *fds, unsigned nfds)
{
    bool ok;

    do {
        errno = 0;
        ok = sl_wire_send(sock, m, fds, nfds);
    } while (!ok && errno == EINTR);
    return ok;
}

/*
 * sl_wire_recv(), again after EINTR, and once more after ECONNRESET: when
 * the daemon closes a connection with our messages unread, the kernel
 * reports the reset once, ahead of the messages the daemon sent before
 * (its reason for dropping us among them).
 */
static ssize_t recv_packet(int sock, uint8_t *buf, int *fds, unsigned *nfds, int *lost)
{
    ssize_t n;
    bool reset = false;

    for (;;) {
        n = sl_wire_recv(sock, buf, fds, nfds, lost);
        if (n >= 0 || (errno != EINTR && (errno != ECONNRESET || reset))) {
            return n;
        }
        reset |= errno == ECONNRESET;
    }
}

/* Receives and decodes one message (fds, which the daemon never sends, are closed). */
static bool recv_msg(int sock, sl_msg *m, GError **errp)
{
    uint8_t buf[SL_PROTO_MAX];
    int fds[SL_WIRE_MAX_FDS];
    unsigned nfds;
    int lost;
    ssize_t n = recv_packet(sock, buf, fds, &nfds, &lost);

    for (unsigned i = 0; i < nfds; i++) {
        close(fds[i]);
    }
    if (n <= 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "restore daemon: %s",
                    n == 0 ? "connection closed"
                    : errno == EAGAIN ? "no answer in time (the daemon is stopped or wedged, "
                                        "or all its client slots are taken)"
                    : g_strerror(errno));
        return false;
    }
    return sl_msg_decode(buf, (size_t)n, m, errp);
}

static bool expect(int sock, uint16_t type, sl_msg *m, GError **errp)
{
    if (!recv_msg(sock, m, errp) || refused(m, type, errp)) {
        return false;
    }
    if (m->type != type) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "restore daemon sent type %u, expected %u",
                    m->type, type);
        return false;
    }
    return true;
}

/*
 * Our HELLO could not be sent (@err): if the daemon refused us at once
 * (EPIPE, or ECONNRESET when it closed before reading our HELLO), its
 * reason waits in our socket; else the send error is the reason.
 */
static void hello_failed(int fd, const char *path, int err, GError **errp)
{
    sl_msg m;

    if ((err == EPIPE || err == ECONNRESET) && recv_msg(fd, &m, NULL) &&
        refused(&m, SL_MSG_WELCOME, errp)) {
        return;
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_IO, "restore daemon at %s: %s", path, g_strerror(err));
}

/* WELCOME's protocol level into *@level (if not NULL): one of those our HELLO offered. */
static bool welcome_level(const sl_msg *w, unsigned *level, GError **errp)
{
    if (w->u.welcome.version < SL_PROTO_LEVEL_MIN || w->u.welcome.version > SL_PROTO_LEVEL) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "restore daemon chose protocol version "
                    "%u; we offered %u to %u", w->u.welcome.version, SL_PROTO_LEVEL_MIN,
                    SL_PROTO_LEVEL);
        return false;
    }
    if (level) {
        *level = w->u.welcome.version;
    }
    return true;
}

/* Sets (@ms > 0) or clears (0) the send and receive timeouts of @fd. */
static int set_timeouts(int fd, int ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
        return -errno;
    }
    return 0;
}

/* connect(), again when a signal interrupts its wait for room in a full
 * backlog (see send_msg()); 0 or -1 with errno. */
static int connect_retrying(int fd, const struct sockaddr_un *a)
{
    int ret;

    do {
        ret = connect(fd, (const struct sockaddr *)a, sizeof(*a));
    } while (ret < 0 && errno == EINTR);
    return ret < 0 && errno == EISCONN ? 0 : ret;
}

/*
 * Connect and handshake, the chosen protocol level in *@level (if not
 * NULL); with @timeout_ms > 0 every send and receive on the socket (and the
 * connect itself) gives up after that long, so a daemon that does not
 * answer (its client slots full, stopped) cannot hang the caller.
 */
static int connect_timed(const char *path, const char *name, int timeout_ms, unsigned *level,
                         GError **errp)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    sl_msg hello = { .type = SL_MSG_HELLO, .u.hello = { SL_PROTO_LEVEL_MIN, SL_PROTO_LEVEL } };
    sl_msg w;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

    if (fd >= 0 && timeout_ms > 0 && set_timeouts(fd, timeout_ms) < 0) {
        close(fd);
        fd = -1;
    }
    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    g_strlcpy(hello.u.hello.name, name, sizeof(hello.u.hello.name));
    if (fd < 0 || connect_retrying(fd, &a) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "restore daemon at %s: %s", path,
                    errno == EAGAIN ? "its listen backlog stayed full" : g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    if (!send_msg(fd, &hello, NULL, 0)) {
        hello_failed(fd, path, errno, errp);
        close(fd);
        return -1;
    }
    if (!expect(fd, SL_MSG_WELCOME, &w, errp) || !welcome_level(&w, level, errp)) {
        close(fd);
        return -1;
    }
    return fd;
}

int sl_client_probe(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), e;

    if (fd < 0) {
        return errno;
    }
    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    e = connect(fd, (const struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : errno;
    close(fd);
    return e == EAGAIN ? 0 : e;
}

int sl_client_connect(const char *path, const char *name, GError **errp)
{
    return connect_timed(path, name, 0, NULL, errp);
}

int sl_client_connect_level(const char *path, const char *name, unsigned *level, GError **errp)
{
    return connect_timed(path, name, 0, level, errp);
}

int sl_client_connect_timeout(const char *path, const char *name, int timeout_ms,
                              unsigned *level, GError **errp)
{
    return connect_timed(path, name, timeout_ms, level, errp);
}

/* How long a short request (WRITTEN, UNTRACKED, WRITTEN_QUERY) may wait. */
#define SHORT_REQUEST_TIMEOUT_MS 30000

/*
 * A fresh uffd with @features (and poison where the kernel has it, so a
 * failed restore can seal our pages), [@addr, +@length) registered on it
 * with @mode and checked for @ioctls; -1 with @errp set.
 */
static int open_registered(uint64_t features, void *addr, uint64_t length, uint64_t mode,
                           uint64_t ioctls, GError **errp)
{
    int uffd = sl_uffd_open(features, UFFD_FEATURE_POISON, NULL, errp);

    if (uffd >= 0 && !sl_uffd_register(uffd, addr, length, mode, ioctls, NULL, errp)) {
        close(uffd);
        return -1;
    }
    return uffd;
}

/*
 * A send to the daemon failed with errno @e: the daemon may have dropped
 * us, saying why first (a timeout, a refusal); that reason, else the
 * send's error, in @errp.
 */
static void send_failed(int sock, int e, const char *what, GError **errp)
{
    struct pollfd p = { .fd = sock, .events = POLLIN };
    sl_msg st = { 0 };

    if (poll(&p, 1, 0) == 1 && (p.revents & POLLIN) && recv_msg(sock, &st, NULL) &&
        st.type == SL_MSG_REGISTERED && st.u.status.status < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "restore daemon dropped us before %s: %s",
                    what, st.u.status.message);
        return;
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_IO, "sending %s to the restore daemon: %s", what,
                g_strerror(e));
}

/* Sends the REGISTER @m with @nfds fds (@fds[0] the uffd) and waits for its answer. */
static int send_register_msg(int sock, const sl_msg *m, int *fds, unsigned nfds, GError **errp)
{
    sl_msg st = { .type = SL_MSG_DONE };
    bool ok = send_msg(sock, m, fds, nfds);

    if (!ok) {
        int e = errno; /* before g_strdup_printf() */
        g_autofree char *what = g_strdup_printf("registering block '%s'", m->u.reg.block);
        send_failed(sock, e, what, errp);
    }
    /* A DONE for the blocks registered before this one may come first. */
    while (ok && st.type == SL_MSG_DONE) {
        ok = recv_msg(sock, &st, errp) && !refused(&st, SL_MSG_REGISTERED, errp);
    }
    if (ok && st.type != SL_MSG_REGISTERED) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "restore daemon sent type %u, expected %u",
                    st.type, SL_MSG_REGISTERED);
        ok = false;
    }
    if (!ok || st.u.status.status != 0) {
        if (errp && !*errp) {
            /* -EOPNOTSUPP: not this kind of registration (a tracked one where
             * the daemon does not track); anything else is a real refusal. */
            g_set_error(errp, SL_ERROR, st.u.status.status == -EOPNOTSUPP
                        ? SL_ERROR_UNSUPPORTED : SL_ERROR_INVALID,
                        "restore daemon refused block '%s': %s", m->u.reg.block,
                        st.u.status.message);
        }
        close(fds[0]);
        return -1;
    }
    return fds[0];
}

/* Sends REGISTER(_WP) with @nfds fds (@fds[0] the uffd) and waits for its answer. */
static int send_register(int sock, const sl_msg_register *reg, bool track, int *fds,
                         unsigned nfds, GError **errp)
{
    sl_msg m = { .type = track ? SL_MSG_REGISTER_WP : SL_MSG_REGISTER, .u.reg = *reg };

    return send_register_msg(sock, &m, fds, nfds, errp);
}

/*
 * REGISTER_MOVER: @uffd (opened with UFFD_FEATURE_MOVE) and a mover
 * channel, so that the daemon hands us whole chunks to move in (mover.h).
 * False, having sent nothing, when the mover cannot start.
 */
static bool send_register_mover(int sock, sl_msg_register *reg, int uffd, int *ret,
                                GError **errp)
{
    int chan = sl_mover_client_start(uffd, reg, NULL);
    sl_msg m = { .type = SL_MSG_REGISTER_MOVER };
    int fds[2] = { uffd, chan };

    if (chan < 0) {
        return false;
    }
    m.u.reg = *reg;
    *ret = send_register_msg(sock, &m, fds, 2, errp);
    close(chan); /* the daemon has its own now; the mover thread ends when it closes it */
    return true;
}

int sl_client_register_anon(int sock, unsigned level, const char *block, void *addr,
                            uint64_t length, GError **errp)
{
    sl_msg_register reg = { .host_addr = (uintptr_t)addr, .length = length,
                            .page_size = (uint64_t)sysconf(_SC_PAGESIZE) };
    bool move = level >= SL_PROTO_LEVEL_MOVER && sl_uffd_has_features(UFFD_FEATURE_MOVE);
    int ret, fds[1] = { open_registered(move ? UFFD_FEATURE_MOVE : 0, addr, length,
                                        UFFDIO_REGISTER_MODE_MISSING,
                                        SL_IOCTL(_UFFDIO_COPY) | SL_IOCTL(_UFFDIO_ZEROPAGE) |
                                        SL_IOCTL(_UFFDIO_WAKE), errp) };

    g_strlcpy(reg.block, block, sizeof(reg.block));
    if (fds[0] < 0) {
        return -1;
    }
    if (move && send_register_mover(sock, &reg, fds[0], &ret, errp)) {
        return ret;
    }
    return send_register(sock, &reg, false, fds, 1, errp);
}

/* sl_client_register(), write-protected too when @track (REGISTER_WP). */
static int register_file(int sock, const char *block, void *addr, uint64_t length, int memfd,
                         uint64_t offset, bool track, GError **errp)
{
    sl_msg_register reg = { .host_addr = (uintptr_t)addr, .length = length,
                            .file_offset = offset };
    sl_backend_kind kind;
    int fds[2] = { -1, memfd };

    if (!sl_wire_file_kind(memfd, &kind, &reg.page_size, errp)) {
        return -1;
    }
    fds[0] = open_registered((kind == SL_BACKEND_SHMEM
                                  ? UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM
                                  : UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_MINOR_HUGETLBFS) |
                                 (track ? SL_UFFD_TRACK_FEATURES : 0),
                             addr, length,
                             UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR |
                                 (track ? UFFDIO_REGISTER_MODE_WP : 0),
                             SL_IOCTL(_UFFDIO_CONTINUE) | SL_IOCTL(_UFFDIO_WAKE), errp);
    g_strlcpy(reg.block, block, sizeof(reg.block));
    return fds[0] < 0 ? -1 : send_register(sock, &reg, track, fds, 2, errp);
}

int sl_client_register(int sock, const char *block, void *addr, uint64_t length, int memfd,
                       uint64_t offset, GError **errp)
{
    return register_file(sock, block, addr, length, memfd, offset, false, errp);
}

int sl_client_register_tracked(int sock, const char *block, void *addr, uint64_t length,
                               int memfd, uint64_t offset, GError **errp)
{
    return register_file(sock, block, addr, length, memfd, offset, true, errp);
}

int sl_client_register_view(const char *dsock, const char *name, const char *block, void *addr,
                            uint64_t length, int memfd, int *sock, bool *tracked, GError **errp)
{
    g_autoptr(GError) err = NULL;
    int uffd;

    *tracked = false;
    /* Where this kernel cannot track writes (no async WP: Debian 12's 6.1)
     * no tracked view is tried: it would cost a connection for nothing. */
    if (sl_uffd_has_features(SL_UFFD_TRACK_FEATURES)) {
        if ((*sock = sl_client_connect(dsock, name, errp)) < 0) {
            return -1;
        }
        uffd = sl_client_register_tracked(*sock, block, addr, length, memfd, 0, &err);
        *tracked = uffd >= 0;
        if (*tracked) {
            return uffd;
        }
        close(*sock); /* refused: the daemon dropped that connection */
        *sock = -1;
        if (!g_error_matches(err, SL_ERROR, SL_ERROR_UNSUPPORTED)) {
            g_propagate_error(errp, g_steal_pointer(&err)); /* a real refusal */
            return -1;
        }
    }
    /* Nobody tracks writes here: a plain view it is. */
    if ((*sock = sl_client_connect(dsock, name, errp)) < 0) {
        return -1;
    }
    return sl_client_register(*sock, block, addr, length, memfd, 0, errp);
}

bool sl_client_report_written(const char *path, const char *block, void *addr, uint64_t length,
                              uint64_t flags, GError **errp)
{
    sl_msg m = { .type = SL_MSG_WRITTEN,
                 .u.written = { .host_addr = (uintptr_t)addr, .length = length, .flags = flags } };
    sl_msg st;
    int sock = connect_timed(path, "written", SHORT_REQUEST_TIMEOUT_MS, NULL, errp);
    bool ok = sock >= 0;

    g_strlcpy(m.u.written.block, block, sizeof(m.u.written.block));
    if (ok && !send_msg(sock, &m, NULL, 0)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "sending WRITTEN: %s", g_strerror(errno));
        ok = false;
    }
    ok = ok && recv_msg(sock, &st, errp) && !refused(&st, SL_MSG_REGISTERED, errp);
    if (ok && (st.type != SL_MSG_REGISTERED || st.u.status.status != 0)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the restore daemon did not take the "
                    "written pages of block '%s': %s", block,
                    st.type == SL_MSG_REGISTERED ? st.u.status.message : "unexpected answer");
        ok = false;
    }
    if (sock >= 0) {
        close(sock);
    }
    return ok;
}

/* Receives WRITTEN_PAGES into @m, and its one fd into *@fd (-1 if none; others closed). */
static bool recv_written_pages(int sock, sl_msg *m, int *fd, GError **errp)
{
    uint8_t buf[SL_PROTO_MAX];
    int fds[SL_WIRE_MAX_FDS];
    unsigned nfds;
    int lost;
    ssize_t n = recv_packet(sock, buf, fds, &nfds, &lost);

    *fd = nfds == 1 ? fds[0] : -1;
    for (unsigned i = *fd >= 0 ? 1 : 0; i < nfds; i++) {
        close(fds[i]);
    }
    if (n <= 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "restore daemon: %s",
                    n == 0 ? "connection closed" : g_strerror(errno));
        return false;
    }
    if (!sl_msg_decode(buf, (size_t)n, m, errp) || refused(m, SL_MSG_WRITTEN_PAGES, errp)) {
        return false;
    }
    if (m->type != SL_MSG_WRITTEN_PAGES || (m->u.wpages.status == 0) != (*fd >= 0)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "restore daemon answered a WRITTEN_QUERY "
                    "with type %u, status %d and %u fds", m->type, m->u.wpages.status, nfds);
        return false;
    }
    return true;
}

/* The bitmap of @npages bits in memfd @fd (checked against its count @written), or NULL. */
static uint64_t *read_bitmap(int fd, uint64_t npages, uint64_t written, GError **errp)
{
    g_autofree uint64_t *bits = g_malloc0(sl_bitmap_bytes(npages));
    int ret = sl_pread_full(fd, bits, sl_bitmap_bytes(npages), 0);

    if (ret < 0 || sl_bitmap_count(bits, npages) != written) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the written-page bitmap from the restore "
                    "daemon %s", ret < 0 ? g_strerror(-ret) : "does not hold what it said");
        return NULL;
    }
    return g_steal_pointer(&bits);
}

int sl_client_written_pages(const char *path, const char *block,
                            const uint8_t identity[SL_IDENTITY_LEN], uint64_t npages,
                            uint64_t **bits, char **why, GError **errp)
{
    sl_msg m = { .type = SL_MSG_WRITTEN_QUERY }, st;
    int sock = connect_timed(path, "written-query", SHORT_REQUEST_TIMEOUT_MS, NULL, errp);
    int fd = -1, ret = -1;

    g_strlcpy(m.u.query.block, block, sizeof(m.u.query.block));
    memcpy(m.u.query.identity, identity, SL_IDENTITY_LEN);
    if (sock >= 0 && !send_msg(sock, &m, NULL, 0)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "sending WRITTEN_QUERY: %s", g_strerror(errno));
    } else if (sock >= 0 && recv_written_pages(sock, &st, &fd, errp)) {
        if (st.u.wpages.status < 0) {
            *why = g_strdup(st.u.wpages.message);
            ret = 0;
        } else if (st.u.wpages.pages != npages) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the restore daemon's block '%s' has %"
                        G_GUINT64_FORMAT " pages, not %" G_GUINT64_FORMAT, block,
                        st.u.wpages.pages, npages);
        } else {
            *bits = read_bitmap(fd, npages, st.u.wpages.written, errp);
            ret = *bits ? 1 : -1;
        }
    }
    for (unsigned i = 0; i < 2; i++) {
        int c = i ? fd : sock;
        if (c >= 0) {
            close(c);
        }
    }
    return ret;
}

bool sl_client_report_untracked(const char *path, const char *block, GError **errp)
{
    sl_msg m = { .type = SL_MSG_UNTRACKED }, st;
    int sock = connect_timed(path, "untracked", SHORT_REQUEST_TIMEOUT_MS, NULL, errp);
    bool ok = sock >= 0;

    g_strlcpy(m.u.untracked.block, block, sizeof(m.u.untracked.block));
    if (ok && !send_msg(sock, &m, NULL, 0)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "sending UNTRACKED: %s", g_strerror(errno));
        ok = false;
    }
    ok = ok && recv_msg(sock, &st, errp) && !refused(&st, SL_MSG_REGISTERED, errp);
    if (ok && (st.type != SL_MSG_REGISTERED || st.u.status.status != 0)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the restore daemon did not take note "
                    "of block '%s' changing untracked", block);
        ok = false;
    }
    if (sock >= 0) {
        close(sock);
    }
    return ok;
}

char *sl_client_env_of(pid_t pid, const char *name)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/environ", (int)pid), *env = NULL;
    size_t nlen = strlen(name);
    gsize len = 0;

    if (pid <= 0 || !g_file_get_contents(path, &env, &len, NULL)) {
        return NULL;
    }
    for (gsize i = 0; i < len; i += strlen(env + i) + 1) { /* NUL-separated, NUL-ended */
        if (!strncmp(env + i, name, nlen) && env[i + nlen] == '=') {
            return g_strdup(env + i + nlen + 1);
        }
    }
    return NULL;
}

bool sl_client_wait_done(int sock)
{
    sl_msg m;

    return expect(sock, SL_MSG_DONE, &m, NULL);
}

/*
 * One supervised connection, shared by the sl-supervise thread and the
 * caller's handle (sl_client_supervise_mapping()); freed when both let go.
 * Every field after the callbacks is under @lock.
 */
struct sl_client_sup {
    void (*on_death)(void);
    void (*on_done)(void *opaque);
    void *opaque;          /* handed to on_done */
    bool tracked;          /* the range stays registered after DONE (REGISTER_WP) */
    GMutex lock;
    GCond ended_cond;      /* signalled when @ended is set */
    int sock;              /* -1 once closed (sup_end(), sl_client_retire()) */
    int uffd;              /* -1 once closed, or handed back by sl_client_retire() */
    bool done;             /* DONE came: on_done is called (or was) */
    bool retiring;         /* sl_client_retire(): the hang-up is ours, no death */
    bool ended;            /* the thread is past its last use of @sock */
    unsigned refs;
};

/* After DONE: blocks until the daemon hangs up (it sends nothing more). */
static void wait_hangup(int sock)
{
    uint8_t buf[SL_PROTO_MAX];
    ssize_t n;

    do {
        n = recv(sock, buf, sizeof(buf), 0);
    } while (n > 0 || (n < 0 && errno == EINTR));
}

static void sup_unref(sl_client_sup *s)
{
    bool last;

    g_mutex_lock(&s->lock);
    last = --s->refs == 0;
    g_mutex_unlock(&s->lock);
    if (last) {
        g_mutex_clear(&s->lock);
        g_cond_clear(&s->ended_cond);
        g_free(s);
    }
}

/*
 * The thread's end.  After DONE the uffd is closed: every page is in place
 * and the daemon unregistered the range (a tracked one: it has hung up, so
 * closing unregisters it and later faults are served from the page
 * cache).  The socket is closed once the connection is over (a hang-up,
 * ours or the daemon's); after an untracked DONE it stays open while the
 * mapping lives, since a daemon that exits once its clients have left
 * (qemu-restore's) must stay for processes that map guest RAM later.  A
 * retired mapping's uffd stays open for sl_client_retire()'s caller, who
 * closes it only after the unmap: a hole is never left unregistered.
 */
static void sup_end(sl_client_sup *s, bool done)
{
    g_mutex_lock(&s->lock);
    if (!done || s->tracked || s->retiring) {
        close(s->sock);
        s->sock = -1;
    }
    if (done && !s->retiring && s->uffd >= 0) {
        close(s->uffd);
        s->uffd = -1;
    }
    s->ended = true;
    g_cond_broadcast(&s->ended_cond);
    g_mutex_unlock(&s->lock);
    sup_unref(s);
}

static gpointer supervise(gpointer opaque)
{
    sl_client_sup *s = opaque;
    bool done = sl_client_wait_done(s->sock), retiring;

    g_mutex_lock(&s->lock);
    s->done = done;
    retiring = s->retiring;
    g_mutex_unlock(&s->lock);
    if (!done && !retiring) {
        s->on_death(); /* the daemon went away before every page was in place */
    } else if (done && s->on_done) {
        s->on_done(s->opaque);
    }
    if (done && s->tracked) {
        wait_hangup(s->sock); /* the daemon's going (or our retire) ends the registration */
    }
    sup_end(s, done);
    return NULL;
}

sl_client_sup *sl_client_supervise_mapping(int sock, int uffd, bool tracked,
                                           void (*on_death)(void),
                                           void (*on_done)(void *opaque), void *opaque)
{
    sl_client_sup *s = g_new0(sl_client_sup, 1);

    set_timeouts(sock, 0); /* a registration may have been timed: DONE may take long */
    s->sock = sock;
    s->uffd = uffd;
    s->tracked = tracked;
    s->on_death = on_death;
    s->on_done = on_done;
    s->opaque = opaque;
    s->refs = 2;
    g_mutex_init(&s->lock);
    g_cond_init(&s->ended_cond);
    g_thread_unref(g_thread_new("sl-supervise", supervise, s));
    return s;
}

/* Waits (lock held) until the thread ended, or (@deadline_us > 0) that time. */
static bool wait_ended(sl_client_sup *s, gint64 deadline_us)
{
    while (!s->ended) {
        if (deadline_us > 0 && !g_cond_wait_until(&s->ended_cond, &s->lock, deadline_us)) {
            return s->ended;
        }
        if (deadline_us <= 0) {
            g_cond_wait(&s->ended_cond, &s->lock);
        }
    }
    return true;
}

bool sl_client_retire(sl_client_sup *s, int timeout_ms, int *uffd, bool *done)
{
    bool answered = true;

    g_mutex_lock(&s->lock);
    if (!s->ended) {
        s->retiring = true;
        /* Our half closed: the daemon reads our hang-up, removes our views
         * (no loader places into them from then on) and closes its end,
         * which ends the thread's wait. */
        shutdown(s->sock, SHUT_WR);
        answered = wait_ended(s, g_get_monotonic_time() + timeout_ms * (gint64)1000);
        if (!answered) {
            shutdown(s->sock, SHUT_RDWR); /* the daemon does not answer: stop waiting */
            wait_ended(s, 0);
        }
    }
    if (s->sock >= 0) { /* ended after an untracked DONE: nothing acts on the range */
        close(s->sock);
        s->sock = -1;
    }
    *done = s->done;
    *uffd = s->uffd;
    s->uffd = -1;
    g_mutex_unlock(&s->lock);
    sup_unref(s);
    return answered;
}

void sl_client_sup_release(sl_client_sup *s)
{
    sup_unref(s);
}

void sl_client_supervise(int sock, void (*on_death)(void), void (*on_done)(void *opaque),
                         void *opaque)
{
    sl_client_supervise_tracked(sock, -1, on_death, on_done, opaque);
}

void sl_client_supervise_tracked(int sock, int uffd, void (*on_death)(void),
                                 void (*on_done)(void *opaque), void *opaque)
{
    sl_client_sup_release(sl_client_supervise_mapping(sock, uffd, uffd >= 0, on_death, on_done,
                                                      opaque));
}
