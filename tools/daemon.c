/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Restore daemon (see daemon.h, docs/protocol.md).
 *
 * The daemon is one poll loop over {listening socket, signalfd, the
 * restore's completion eventfd, the pipe on which the engine reports views
 * it dropped, each client}.  Every packet is validated (protocol.c) and
 * every REGISTER checked against the snapshot and the kernel objects it
 * carries (peercheck.c); a malformed or hostile peer gets a reason in the
 * log and is dropped with its views, the others go on.  A view the engine
 * gives up on (its uffd misbehaved) ends its client the same way, so that
 * client's supervisor ends the consumer instead of letting it wait
 * forever.  Clients are capped, and one that does not say HELLO, or does
 * not complete a REGISTER after it, is dropped after a timeout (10 s each
 * by default), so silent peers cannot hold every slot.  A dropped client is
 * told why (a REGISTERED with the errno and the reason, then the hang-up)
 * unless it left.  The daemon keeps no fd of a client but its socket: the
 * fds a REGISTER carries are closed once it is handled (the restore keeps
 * its own duplicates, released by sl_restore_remove_views() when the client
 * goes).  With opts.written_dir it also tracks what its consumers write
 * (REGISTER_WP, WRITTEN; dtrack.c, and the messages in dwritten.c) and
 * leaves, when it ends, the list a restart over the same RAM file uses.
 * Its state is in daemon-int.h.  Only the daemon and the CLI print.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "cli.h"
#include "client.h"
#include "daemon.h"
#include "daemon-int.h"
#include "mover.h"
#include "dtrack.h"
#include "peercheck.h"
#include "backends/backend.h"
#include "migration/format/format.h"
#include "migration/protocol.h"
#include "migration/thp.h"
#include "migration/uffd.h"
#include "wire.h"

#ifndef SO_PEERPIDFD
#define SL_SO_PEERPIDFD 77 /* kernel 6.5; Debian 12's headers are older */
#else
#define SL_SO_PEERPIDFD SO_PEERPIDFD
#endif

#define HELLO_TIMEOUT_MS 10000
#define REGISTER_TIMEOUT_MS 10000

void dlog(const server *d, const char *fmt, ...)
{
    g_autofree char *text = NULL;
    va_list ap;

    if (d->o->quiet) {
        return;
    }
    va_start(ap, fmt);
    text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "snapload serve: %s\n", text); /* one call: the collapser logs too */
}

/* ------------------------------- daemon ---------------------------------- */

static void client_free(client *c)
{
    if (c->pidfd >= 0) {
        close(c->pidfd);
    }
    g_free(c->registered);
    g_free(c->wp_addr);
    g_free(c->wp_off);
    g_free(c->wp_len);
    g_free(c->reported);
    g_free(c);
}

void reply_status(client *c, int status, const char *msg)
{
    sl_msg m = { .type = SL_MSG_REGISTERED, .u.status.status = status };

    g_strlcpy(m.u.status.message, msg, sizeof(m.u.status.message));
    sl_wire_send(c->fd, &m, NULL, 0);
}

int send_answer(client *c, const sl_msg *m, const int *fds, unsigned nfds, const char *request,
                GError **errp)
{
    int err;

    if (sl_wire_send(c->fd, m, fds, nfds)) {
        return 0;
    }
    err = errno ? errno : EIO;
    if (err == EAGAIN || err == EWOULDBLOCK) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "sending the answer to %s: its socket is full "
                    "(EAGAIN): it does not read its answers", request);
    } else {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "sending the answer to %s: %s (%s)", request,
                    g_strerror(err), strerrorname_np(err) ? strerrorname_np(err) : "?");
    }
    return -err;
}

int answer_status(client *c, int status, const char *msg, const char *request, GError **errp)
{
    sl_msg m = { .type = SL_MSG_REGISTERED, .u.status.status = status };

    g_strlcpy(m.u.status.message, msg, sizeof(m.u.status.message));
    return send_answer(c, &m, NULL, 0, request, errp);
}

/*
 * Ends client @c for @why, which is logged and, when @status is an errno
 * (< 0), first sent to the peer as REGISTERED: the answer to a REGISTER it
 * is waiting for, or else the reason it is dropped.  @status 0: it left.
 */
static void drop(server *d, client *c, int status, const char *why)
{
    g_autoptr(GError) refused = d->r && !d->refusal_said ? sl_restore_refused(d->r) : NULL;

    dlog(d, "dropping client %s (pid %d): %s", c->name[0] ? c->name : "?", (int)c->pid, why);
    if (refused) {
        /* A consumer that touched a refused page died of SIGBUS: say why,
         * once, now; the restore goes on serving the other pages and fails
         * only at its end (found by a user's test: with no loaders it never
         * ended, and nothing said why the consumer had died). */
        dlog(d, "%s; a consumer touching it gets SIGBUS", refused->message);
        d->refusal_said = true;
    }
    if (status < 0) {
        reply_status(c, status, why);
    }
    if (d->r) {
        sl_restore_remove_views(d->r, c->id); /* no longer served; their slots free */
    }
    for (unsigned i = 0; d->dt && i < sl_snapshot_n_blocks(d->snap); i++) {
        if (c->wp_addr[i] && !c->reported[i]) {
            sl_dtrack_lost(d->dt, i);
        }
    }
    g_ptr_array_remove(d->clients, c);
    if (sl_restore_views_released(d->r, c->id)) {
        close(c->fd);
        client_free(c);
    } else {
        g_ptr_array_add(d->leaving, c); /* closed by release_leaving() */
    }
    d->accept_paused = false;
}

/*
 * Closes the connections of dropped clients whose views have let go of
 * their uffds.  Until then the peer must not reuse those addresses (a
 * uffd acts on any registered mapping of its process there: sealing the
 * old view would poison a new mapping), and the preload client, retiring
 * a mapping it unmaps, waits for this close (docs/protocol.md).  True if
 * some still wait.
 */
static bool release_leaving(server *d)
{
    for (guint i = d->leaving->len; i-- > 0;) {
        client *c = g_ptr_array_index(d->leaving, i);
        if (sl_restore_views_released(d->r, c->id)) {
            close(c->fd);
            g_ptr_array_remove_index_fast(d->leaving, i);
            client_free(c);
        }
    }
    return d->leaving->len > 0;
}

/* Engine thread: view @tag was dropped; the poll loop ends its client. */
static void view_dropped(void *opaque, uint64_t tag, int err)
{
    server *d = opaque;
    uint64_t msg[2] = { tag, (uint64_t)(int64_t)err };

    (void)!write(d->drop_pipe[1], msg, sizeof(msg)); /* non-blocking; atomic (< PIPE_BUF) */
}

/* Why the engine dropped a view with @err (see sl_restore_config.view_dropped). */
static char *view_drop_reason(int err)
{
    switch (err) {
    case -ESRCH:
        return g_strdup_printf("its process is gone or its uffd broke (%s)", g_strerror(-err));
    case -ENOENT:
        return g_strdup("its range is no longer registered on its uffd, or no longer mapped");
    case -EFAULT:
        return g_strdup("its uffd reported a fault outside the range it registered");
    default:
        return g_strdup_printf("its mapping could not be served: %s", g_strerror(-err));
    }
}

/* Poll loop: clients whose views the engine dropped. */
static void drain_dropped(server *d)
{
    uint64_t msg[2];

    while (read(d->drop_pipe[0], msg, sizeof(msg)) == sizeof(msg)) {
        int err = (int)(int64_t)msg[1];
        for (guint i = 0; i < d->clients->len; i++) {
            client *c = g_ptr_array_index(d->clients, i);
            if (c->id == msg[0]) {
                g_autofree char *why = view_drop_reason(err);
                drop(d, c, err < 0 ? err : -EIO, why);
                break;
            }
        }
    }
}

/*
 * HELLO: WELCOME with the highest protocol level both sides speak; 0, or
 * -errno with the reason to drop.
 */
static int on_hello(server *d, client *c, const sl_msg_hello *h, unsigned nfds, GError **errp)
{
    sl_msg w = { .type = SL_MSG_WELCOME,
                 .u.welcome = { MIN(h->version_max, SL_PROTO_LEVEL), d->nblocks } };
    int ret;

    if (c->greeted) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "a second HELLO");
        return -EPROTO;
    }
    if (nfds) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "HELLO carrying %u fds", nfds);
        return -EPROTO;
    }
    if (h->version_min > SL_PROTO_LEVEL || h->version_max < SL_PROTO_LEVEL_MIN ||
        h->version_min > h->version_max) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the client speaks protocol versions %u to "
                    "%u, the daemon %u to %u", h->version_min, h->version_max,
                    SL_PROTO_LEVEL_MIN, SL_PROTO_LEVEL);
        return -EPROTONOSUPPORT;
    }
    for (unsigned i = 0; i + 1 < sizeof(c->name) && h->name[i]; i++) {
        char ch = h->name[i]; /* printable only: names go into log lines */
        c->name[i] = g_ascii_isprint(ch) ? ch : '?';
    }
    if ((ret = send_answer(c, &w, NULL, 0, "HELLO", errp)) < 0) {
        return ret;
    }
    c->greeted = true;
    c->greeted_us = g_get_monotonic_time();
    return 0;
}

/* Handles one decoded message: 0, or -errno with the reason to drop the client. */
static int dispatch(server *d, client *c, const sl_msg *m, const int *fds, unsigned nfds,
                    GError **errp)
{
    switch (m->type) {
    case SL_MSG_HELLO:
        return on_hello(d, c, &m->u.hello, nfds, errp);
    case SL_MSG_REGISTER:
    case SL_MSG_REGISTER_WP:
    case SL_MSG_REGISTER_MOVER:
        return on_register(d, c, m->type, &m->u.reg, fds, nfds, errp);
    case SL_MSG_WRITTEN:
        return on_written(d, c, &m->u.written, nfds, errp);
    case SL_MSG_WRITTEN_QUERY:
        return on_written_query(d, c, &m->u.query, nfds, errp);
    case SL_MSG_UNTRACKED:
        return on_untracked(d, c, &m->u.untracked, nfds, errp);
    default:
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "message type %u is the daemon's to send, "
                    "not a client's", m->type);
        return -EPROTO;
    }
}

/* @lost from sl_wire_recv(): 0 if the packet arrived whole, else -errno naming what did not. */
static int check_arrival(int lost, GError **errp)
{
    const char *shortage = sl_peer_fd_shortage(-lost);

    if (lost == -EMSGSIZE) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "packet longer than %u bytes", SL_PROTO_MAX);
    } else if (lost == -ETOOMANYREFS) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "packet carrying more than %u fds",
                    SL_WIRE_MAX_FDS);
    } else if (shortage) { /* never "not a userfaultfd": we simply had no fd to take it */
        g_set_error_literal(errp, SL_ERROR, SL_ERROR_IO, shortage);
    } else if (lost) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "the packet's fds did not reach the daemon: %s",
                    g_strerror(-lost));
    }
    return lost;
}

/* The connection failed (@n < 0, @err) or the peer left (@n == 0). */
static void connection_ended(server *d, client *c, ssize_t n, int err)
{
    const char *shortage = n < 0 ? sl_peer_fd_shortage(err) : NULL;

    if (shortage) {
        drop(d, c, -err, shortage);
    } else {
        drop(d, c, 0, n == 0 ? "left" : g_strerror(err));
    }
}

/*
 * Whether a read of 0 bytes from @c was its hang-up: SOCK_SEQPACKET reads
 * an empty packet as 0 bytes too, and one that carried fds, or came from a
 * peer still connected, is a packet to refuse (and its fds to close).
 */
static bool hung_up(const client *c, unsigned nfds, int lost)
{
    struct pollfd p = { .fd = c->fd, .events = POLLRDHUP };

    return nfds == 0 && lost == 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP));
}

static void handle_client(server *d, client *c)
{
    uint8_t buf[SL_PROTO_MAX];
    int fds[SL_WIRE_MAX_FDS];
    unsigned nfds;
    int lost, ret;
    ssize_t n = sl_wire_recv(c->fd, buf, fds, &nfds, &lost);
    int err = errno;
    g_autoptr(GError) why = NULL;
    sl_msg m;

    if (n < 0 && (err == EAGAIN || err == EINTR)) {
        return;
    }
    if (n < 0 || (n == 0 && hung_up(c, nfds, lost))) {
        connection_ended(d, c, n, err);
        return;
    }
    ret = check_arrival(lost, &why);
    if (ret == 0 && !sl_msg_decode(buf, (size_t)n, &m, &why)) {
        ret = -EPROTO;
    }
    if (ret == 0) {
        ret = dispatch(d, c, &m, fds, nfds, &why);
    }
    for (unsigned i = 0; i < nfds; i++) {
        sl_wire_close_peer_fd(fds[i]); /* the restore keeps its own duplicates: nothing stays */
    }
    if (ret < 0) { /* every refusal names its reason; the errno stands in for a forgotten one */
        drop(d, c, ret, why ? why->message : g_strerror(-ret));
    }
}

/*
 * A pidfd of the process that connected on @fd: SO_PEERPIDFD (kernel 6.5),
 * the process the socket was made by, whatever happened to @pid since;
 * else pidfd_open(@pid) at once.  -1 if neither works.
 */
static int peer_pidfd(int fd, pid_t pid)
{
    int pidfd = -1;
    socklen_t len = sizeof(pidfd);

    if (getsockopt(fd, SOL_SOCKET, SL_SO_PEERPIDFD, &pidfd, &len) == 0 && pidfd >= 0) {
        return pidfd;
    }
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Pauses accepting while out of fds; the connection waits in the backlog meanwhile. */
static void accept_failed(server *d, int err)
{
    if (err == EMFILE || err == ENFILE) { /* else the listener stays readable: spin */
        dlog(d, "out of file descriptors (%s): not accepting until a client leaves",
             err == EMFILE ? "EMFILE" : "ENFILE");
        d->accept_paused = true;
    }
}

static void accept_client(server *d)
{
    int fd = accept4(d->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    struct ucred cr = { 0 };
    socklen_t len = sizeof(cr);
    client *c;

    if (fd < 0) {
        accept_failed(d, errno);
        return;
    }
    c = g_new0(client, 1);
    c->fd = fd;
    c->pidfd = -1;
    c->id = ++d->next_id;
    c->accepted_us = g_get_monotonic_time();
    c->registered = g_new0(uint8_t, sl_snapshot_n_blocks(d->snap));
    c->wp_addr = g_new0(uint64_t, sl_snapshot_n_blocks(d->snap));
    c->wp_off = g_new0(uint64_t, sl_snapshot_n_blocks(d->snap));
    c->wp_len = g_new0(uint64_t, sl_snapshot_n_blocks(d->snap));
    c->reported = g_new0(uint8_t, sl_snapshot_n_blocks(d->snap));
    g_ptr_array_add(d->clients, c);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
        g_autofree char *why = g_strdup_printf("its credentials cannot be read (SO_PEERCRED): "
                                               "%s", g_strerror(errno));
        drop(d, c, -EACCES, why);
        return;
    }
    if (cr.pid <= 0) { /* 0 is "this process" to the checks of its mappings */
        drop(d, c, -EACCES, "its pid is not visible in the daemon's pid namespace (a consumer "
             "in another container): its mappings cannot be checked");
        return;
    }
    c->pid = cr.pid;
    c->pidfd = peer_pidfd(fd, cr.pid);
    if (cr.uid != getuid() && cr.uid != 0) {
        g_autofree char *why = g_strdup_printf("uid %u is neither the daemon's (%u) nor root",
                                               (unsigned)cr.uid, (unsigned)getuid());
        drop(d, c, -EACCES, why);
    }
}

/*
 * One JSON line of the restore's figures for whoever started the daemon,
 * with the restore's own reason when it failed (@error, or NULL).
 */
static void write_stats(const server *d, const sl_stats *st, const char *error)
{
    g_autofree char *text = NULL;
    cli_json j;

    if (d->o->stats_fd < 0) {
        return;
    }
    json_begin(&j);
    json_int(&j, "status", d->status);
    if (error) {
        json_str(&j, "error", error);
    }
    json_u64(&j, "pages", st->pages_total);
    json_u64(&j, "faults", st->faults);
    json_u64(&j, "faults_on_claimed", st->faults_on_claimed);
    json_u64(&j, "faults_on_present", st->faults_on_present);
    json_u64(&j, "pages_by_fault", st->pages_by_fault);
    json_u64(&j, "pages_around", st->pages_around);
    json_u64(&j, "faults_split", st->faults_split);
    json_u64(&j, "pages_by_loader", st->pages_by_loader);
    json_u64(&j, "pages_moved", st->pages_moved);
    json_u64(&j, "zero_pages", st->zero_pages);
    json_u64(&j, "pages_kept", st->pages_kept);
    json_u64(&j, "pages_known", st->pages_known);
    json_u64(&j, "blocks_with_written_list", d->nknown);
    json_u64(&j, "pages_placed_twice", st->pages_placed_twice);
    json_u64(&j, "pages_never_placed", st->pages_never_placed);
    json_u64(&j, "checksum_failures", st->checksum_failures);
    json_double(&j, "time_to_first_fault_ms", st->time_to_first_fault_ms);
    json_double(&j, "restore_ms", st->time_to_complete_ms);
    json_double(&j, "fault_p50_us", st->fault_p50_us);
    json_double(&j, "fault_p99_us", st->fault_p99_us);
    json_double(&j, "fault_max_us", st->fault_max_us);
    text = json_end(&j);
    if (dprintf(d->o->stats_fd, "%s\n", text) < 0) {
        dlog(d, "cannot write stats: %s", g_strerror(errno));
    }
}

/*
 * The collapser thread: every page in place, the consumers' anonymous guest
 * RAM into transparent hugepages (thp.c), as their eager load would have
 * it, while the guest runs.  A thread of its own, so that the poll loop
 * goes on answering (a late back-end, qemu-save's questions, a stop)
 * during a collapse that can take a second per GiB of fresh memory here;
 * at the lowest priority, so that it takes the CPU time the guest leaves
 * (docs/bench.md, "The collapse after completion": at 4 GiB the guest's
 * first pass took 3.4 s with it against 4.1 s with a collapser at normal
 * priority pausing after each range).
 */
#define COLLAPSE_NICE 19
static gpointer collapse_anon(gpointer opaque)
{
    server *d = opaque;
    sl_thp_opts how = { .stop = &d->collapse_stop };

    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), COLLAPSE_NICE);

    for (unsigned i = 0; i < sl_snapshot_n_blocks(d->snap); i++) {
        /* Acquire: pairs with the release store in daemon_fini(). */
        if (atomic_load_explicit(&d->collapse_stop, memory_order_acquire)) {
            dlog(d, "collapse into transparent hugepages stopped: the daemon is leaving");
            break;
        }
        if (d->anon_pidfd[i] >= 0) {
            uint64_t took = sl_thp_collapse(d->anon_pidfd[i], d->anon_addr[i], d->snap, i,
                                            &how);
            dlog(d, "block %u: %" G_GUINT64_FORMAT " MiB of anonymous RAM in transparent "
                 "hugepages%s%s", i, took >> 20, how.err ? "; stopped: " : "",
                 how.err ? g_strerror(how.err) : "");
        }
    }
    return NULL;
}

/* Starts the collapser, if some anonymous block's owner is pinned by a pidfd. */
static void start_collapse(server *d)
{
    g_autoptr(GError) err = NULL;
    bool any = false;

    for (unsigned i = 0; i < sl_snapshot_n_blocks(d->snap); i++) {
        any = any || d->anon_pidfd[i] >= 0;
    }
    if (any && !(d->collapser = g_thread_try_new("sl-collapse", collapse_anon, d, &err))) {
        dlog(d, "anonymous RAM stays in 4 KiB pages: no collapser thread: %s", err->message);
    }
}

/* The restore is over (or the daemon leaves): the consumers' mover threads
 * may end, and no loader waits on one any more. */
static void finish_movers(server *d)
{
    for (unsigned i = 0; i < sl_snapshot_n_blocks(d->snap); i++) {
        uint64_t moved, refused;
        int err;
        if (d->movers[i]) {
            err = sl_mover_server_finish(d->movers[i], &moved, &refused);
            dlog(d, "block %u: %" G_GUINT64_FORMAT " chunks moved in by the consumer, %"
                 G_GUINT64_FORMAT " not moved whole (the rest copied)%s%s", i, moved, refused,
                 err ? ", first because: " : "", err ? g_strerror(-err) : "");
        }
    }
}

static void restore_finished(server *d)
{
    sl_msg done = { .type = SL_MSG_DONE };
    sl_stats st = { .size = sizeof(st) };
    g_autoptr(GError) why = NULL;

    d->status = sl_restore_poll(d->r);
    d->done = true;
    why = d->status ? sl_restore_error(d->r) : NULL;
    sl_restore_get_stats(d->r, &st);
    dlog(d, "restore %s%s: %" G_GUINT64_FORMAT " pages, %" G_GUINT64_FORMAT " faults, %.1f ms",
         d->status ? "FAILED: " : "",
         why ? why->message : d->status ? g_strerror(-d->status) : "complete", st.pages_total,
         st.faults, st.time_to_complete_ms);
    for (guint i = 0; d->status == 0 && i < d->clients->len; i++) {
        client *c = g_ptr_array_index(d->clients, i);
        if (c->nregistered) { /* one that has not registered yet hears it after REGISTERED */
            sl_wire_send(c->fd, &done, NULL, 0);
        }
    }
    /* After the DONEs: whoever reads the result line (qemu-restore, a test)
     * knows every registered consumer was told, even if the daemon dies
     * next (found in a test run: a consumer whose daemon was killed right
     * after the line never heard DONE and took it for a death). */
    write_stats(d, &st, why ? why->message : NULL);
    finish_movers(d);
    if (d->status == 0 && !d->collapser) {
        start_collapse(d);
    }
}

/*
 * A socket left at @a's path: removes it if nobody listens on it
 * (ECONNREFUSED to a non-blocking probe); false if a daemon serves it or
 * it cannot be told.
 */
static bool remove_stale_socket(const char *path, GError **errp)
{
    int e = sl_client_probe(path);

    if (e != ECONNREFUSED) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "socket %s: %s", path,
                    e == 0 ? "a daemon is serving it" : g_strerror(e));
        return false;
    }
    unlink(path);
    return true;
}

static int listen_on(const char *path, GError **errp)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(a.sun_path)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "socket path too long: %s", path);
        return -1;
    }
    strcpy(a.sun_path, path);
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && !remove_stale_socket(path, errp)) {
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    /* 0600 right after bind (no process-wide umask games: this may run in a
     * library caller's process); a peer of another uid that slips in before
     * the chmod is refused by the credential check anyway. */
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(path, 0600) < 0 ||
        listen(fd, 16) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "socket %s: %s", path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

/* When client @c is due to be dropped for silence (monotonic µs); 0: never (a consumer). */
static gint64 silence_deadline(const server *d, const client *c)
{
    if (!c->greeted) {
        return c->accepted_us + d->hello_timeout_ms * 1000ll;
    }
    return c->nregistered ? 0 : c->greeted_us + d->register_timeout_ms * 1000ll;
}

/* True if @fd has a message waiting to be read. */
static bool has_input(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/*
 * Drops clients that did not say HELLO, or did not complete a REGISTER
 * after it, in time; ms until the next is due (-1: none).  A client whose
 * message is waiting gets it read first, within one more timeout: it may
 * have come in time while we were busy or descheduled (found by a review:
 * a consumer's REGISTER was dropped so on a loaded host).
 */
static int expire_silent(server *d)
{
    gint64 now = g_get_monotonic_time(), next = -1;

    for (guint i = d->clients->len; i-- > 0;) {
        client *c = g_ptr_array_index(d->clients, i);
        gint64 due = silence_deadline(d, c);
        gint64 grace = (c->greeted ? d->register_timeout_ms : d->hello_timeout_ms) * 1000ll;
        if (due == 0 || (due <= now && now < due + grace && has_input(c->fd))) {
            continue;
        }
        if (due <= now) {
            g_autofree char *why = c->greeted
                ? g_strdup_printf("no REGISTER within %d ms of HELLO", d->register_timeout_ms)
                : g_strdup_printf("no HELLO within %d ms of connecting", d->hello_timeout_ms);
            drop(d, c, -ETIMEDOUT, why);
        } else if (next < 0 || due - now < next) {
            next = due - now;
        }
    }
    return next < 0 ? -1 : (int)(next / 1000 + 1);
}

/*
 * Clients that count toward SL_DAEMON_MAX_CLIENTS: all but those sent
 * DONE, which wait only for us to go (a tracked view stays registered
 * until then) and must not keep later consumers in the backlog.
 */
static guint busy_clients(const server *d)
{
    guint n = 0;

    for (guint i = 0; i < d->clients->len; i++) {
        const client *c = g_ptr_array_index(d->clients, i);
        n += !(d->done && d->status == 0 && c->nregistered);
    }
    return n;
}

/* How often the connections of dropped clients are checked for release. */
#define LEAVING_POLL_MS 2

/* One poll round; false to leave the loop. */
static bool serve_round(server *d)
{
    int timeout = expire_silent(d);

    if (d->accept_paused) { /* fds may come back without a client leaving */
        timeout = timeout < 0 ? 1000 : MIN(timeout, 1000);
    }
    if (release_leaving(d)) { /* the fault thread lets go of their views soon */
        timeout = timeout < 0 ? LEAVING_POLL_MS : MIN(timeout, LEAVING_POLL_MS);
    }
    guint n = d->clients->len;
    g_autofree struct pollfd *p = g_new0(struct pollfd, n + 4);
    g_autofree client **cs = g_new0(client *, n + 1);
    /* At the cap or out of fds, new connections wait in the listen backlog. */
    bool listening = !d->accept_paused && busy_clients(d) < SL_DAEMON_MAX_CLIENTS;

    p[0] = (struct pollfd){ .fd = listening ? d->lfd : -1, .events = POLLIN };
    p[1] = (struct pollfd){ .fd = d->sigfd, .events = POLLIN };
    p[2] = (struct pollfd){ .fd = d->started && !d->done ? sl_restore_eventfd(d->r) : -1,
                            .events = POLLIN };
    p[3] = (struct pollfd){ .fd = d->drop_pipe[0], .events = POLLIN };
    for (guint i = 0; i < n; i++) {
        cs[i] = g_ptr_array_index(d->clients, i);
        p[4 + i] = (struct pollfd){ .fd = cs[i]->fd, .events = POLLIN };
    }
    int ready = poll(p, n + 4, timeout);

    if (ready < 0) {
        return errno == EINTR;
    }
    if (ready == 0) {
        d->accept_paused = false; /* try again */
    }
    if (p[1].revents) {
        dlog(d, "signal: stopping");
        return false;
    }
    if (p[2].revents) {
        restore_finished(d);
        if (d->status) {
            return false; /* clients' supervisors end them: never zeros */
        }
    }
    for (guint i = 0; i < n; i++) {
        if (p[4 + i].revents && g_ptr_array_find(d->clients, cs[i], NULL)) {
            handle_client(d, cs[i]);
        }
    }
    if (d->done && d->status) {
        return false; /* the restore could not start */
    }
    if (p[3].revents) {
        drain_dropped(d); /* after the clients: a dropped one is not handled again */
    }
    if (p[0].revents) {
        accept_client(d);
    }
    return !(d->o->exit_when_done && d->done && d->clients->len == 0);
}

/* Which blocks this daemon serves: o->serve, or every block in the file. */
static bool choose_served(server *d, GError **errp)
{
    unsigned n = sl_snapshot_n_blocks(d->snap);

    d->served = g_new0(bool, n);
    d->anon = g_new0(bool, n);
    d->anon_addr = g_new0(uint64_t, n);
    d->anon_pidfd = g_new(int, n);
    d->movers = g_new0(sl_mover_server *, n);
    d->files = g_new0(struct stat, n);
    d->offsets = g_new0(uint64_t, n);
    for (unsigned i = 0; i < n; i++) {
        d->served[i] = !d->o->serve && sl_snapshot_block_in_file(d->snap, i);
        d->anon_pidfd[i] = -1;
    }
    for (const char *const *b = d->o->serve; b && *b; b++) {
        int i = sl_snapshot_find_block(d->snap, *b);
        if (i < 0 || !sl_snapshot_block_in_file(d->snap, (unsigned)i)) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "cannot serve block '%s': %s", *b,
                        i < 0 ? "no such block in the snapshot" : "its pages are not in the file");
            return false;
        }
        d->served[i] = true;
    }
    for (unsigned i = 0; i < n; i++) {
        d->nblocks += d->served[i];
    }
    if (d->nblocks == 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "no block to serve");
        return false;
    }
    return true;
}

static bool daemon_init(server *d, const sl_daemon_opts *o, GError **errp)
{
    sigset_t set;

    sl_restore_config cfg = o->cfg;

    d->o = o;
    d->hello_timeout_ms = o->hello_timeout_ms > 0 ? o->hello_timeout_ms : HELLO_TIMEOUT_MS;
    d->register_timeout_ms = o->register_timeout_ms > 0 ? o->register_timeout_ms
                                                        : REGISTER_TIMEOUT_MS;
    d->lfd = d->sigfd = d->drop_pipe[0] = d->drop_pipe[1] = -1;
    d->clients = g_ptr_array_new();
    d->leaving = g_ptr_array_new();
    if (pipe2(d->drop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "pipe: %s", g_strerror(errno));
        return false;
    }
    cfg.size = sizeof(cfg);
    cfg.record = cfg.record || o->record;
    cfg.view_dropped = view_dropped;
    cfg.view_dropped_opaque = d;
    cfg.track_writes = cfg.track_writes || o->written_dir; /* keeps tracked views registered */
    d->snap = cli_open_snapshot(o->snapshot, o->parents, SL_OPEN_LAZY_CHECKSUMS, errp);
    if (!d->snap ||
        (o->record && cli_refuse_chain_file(o->record, d->snap, "the hot list", errp)) ||
        !(d->r = sl_restore_new(d->snap, &cfg, errp))) {
        return false;
    }
    if (!choose_served(d, errp)) {
        return false;
    }
    if (o->written_dir) {
        d->dt = sl_dtrack_new(d->snap, o->written_dir, o->ignore_lists);
    }
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP); /* a closed terminal: end as cleanly as on the others */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    d->sigfd = signalfd(-1, &set, SFD_CLOEXEC);
    d->lfd = listen_on(o->socket, errp);
    if (d->lfd >= 0 && o->ready_fd >= 0) {
        (void)!write(o->ready_fd, "R", 1);
        close(o->ready_fd);
    }
    return d->lfd >= 0;
}

/* opts.record: the pages the consumers faulted on, in order, once the engine stopped. */
static void write_record(server *d)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GBytes) b = NULL;
    const void *data;
    gsize len;

    if (!d->o->record || !d->r) {
        return;
    }
    sl_restore_stop(d->r);
    b = sl_restore_recorded(d->r);
    data = b ? g_bytes_get_data(b, &len) : NULL;
    if (!g_file_set_contents(d->o->record, data ? data : "", data ? (gssize)len : 0, &err)) {
        fprintf(stderr, "snapload: --record: %s\n", err->message);
    } else {
        dlog(d, "recorded %" G_GSIZE_FORMAT " faulted pages in %s", data ? len / 16 : 0,
             d->o->record);
    }
}

/* opts.written_dir: the lists of what this run wrote, for the next restart. */
static void write_lists(server *d)
{
    g_autoptr(GString) log = g_string_new(NULL);
    g_auto(GStrv) lines = NULL;

    if (!d->dt) {
        return;
    }
    sl_dtrack_finish(d->dt, d->done && d->status == 0, log);
    lines = g_strsplit(log->str, "\n", -1);
    for (char **l = lines; *l; l++) {
        if (**l) {
            dlog(d, "%s", *l);
        }
    }
}

static void daemon_fini(server *d)
{
    /* Release: pairs with the acquire load in sl_thp_collapse(). */
    atomic_store_explicit(&d->collapse_stop, true, memory_order_release);
    if (d->collapser) {
        g_thread_join(d->collapser);
    }
    for (unsigned i = 0; d->anon_pidfd && i < sl_snapshot_n_blocks(d->snap); i++) {
        if (d->anon_pidfd[i] >= 0) {
            close(d->anon_pidfd[i]);
        }
    }
    g_free(d->anon_pidfd);
    write_record(d);
    write_lists(d);
    while (d->clients->len) {
        client *c = g_ptr_array_index(d->clients, 0);
        close(c->fd);
        g_ptr_array_remove_index(d->clients, 0);
        client_free(c);
    }
    g_ptr_array_free(d->clients, true);
    if (d->movers && !d->done) { /* done: restore_finished() has finished them */
        finish_movers(d);
    }
    sl_restore_free(d->r); /* joins the engine: nothing writes drop_pipe after this */
    /* Only now, stopped and sealed, are the retiring clients' views let go:
     * closed before, a client took that for released and could map anew
     * where the seal then acts (found by review). */
    while (d->leaving->len) {
        client *c = g_ptr_array_steal_index_fast(d->leaving, 0);
        close(c->fd);
        client_free(c);
    }
    g_ptr_array_free(d->leaving, true);
    for (unsigned i = 0; d->movers && i < sl_snapshot_n_blocks(d->snap); i++) {
        sl_mover_server_free(d->movers[i]); /* no loader calls them now */
    }
    g_free(d->movers);
    for (unsigned i = 0; i < 2; i++) {
        if (d->drop_pipe[i] >= 0) {
            close(d->drop_pipe[i]);
        }
    }
    sl_dtrack_free(d->dt);
    sl_snapshot_close(d->snap);
    if (d->lfd >= 0) {
        close(d->lfd);
        unlink(d->o->socket);
    }
    if (d->sigfd >= 0) {
        close(d->sigfd);
    }
    g_free(d->files);
    g_free(d->offsets);
    g_free(d->served);
    g_free(d->anon);
    g_free(d->anon_addr);
}

/*
 * Leaving before the restore's end (a signal: qemu-restore ending a failed
 * run): the figures reached so far, so that its report carries them.
 */
static void report_stopped(server *d)
{
    sl_stats st = { .size = sizeof(st) };
    g_autoptr(GError) refused = NULL;

    if (d->done || !d->r) {
        return;
    }
    refused = sl_restore_refused(d->r);
    sl_restore_get_stats(d->r, &st);
    st.time_to_complete_ms = NAN; /* not reached: null */
    d->status = refused ? -EBADMSG : -ECANCELED;
    if (refused) {
        g_prefix_error(&refused, "restore stopped before completion, and had failed: ");
    }
    write_stats(d, &st, refused ? refused->message : "restore stopped before completion");
}

int sl_daemon_run(const sl_daemon_opts *o)
{
    server d = { 0 };
    g_autoptr(GError) err = NULL;
    int ret = 0;

    if (!daemon_init(&d, o, &err)) {
        fprintf(stderr, "snapload: %s\n", err->message);
        ret = 1;
    } else {
        dlog(&d, "serving %s on %s (%u blocks)", o->snapshot, o->socket, d.nblocks);
        while (serve_round(&d)) {
        }
        report_stopped(&d);
        ret = d.done && d.status == 0 ? 0 : 1;
    }
    daemon_fini(&d);
    return ret;
}
