/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The preload client's check of guest RAM handed to a peer: it wraps
 * sendmsg and sendmmsg, and while a restore still fills the blocks (or
 * writes are tracked), a block's file sent over a unix socket (how QEMU
 * gives a vhost-user back-end guest RAM) goes only to a process that
 * registers it with the same daemon too (its /proc maps and environment
 * say so, as `snapload attach` starts it), else the process ends naming
 * the peer (or saying it cannot be told: a datagram socket, a peer in a
 * pid namespace this one does not see), before any byte could be read as
 * a hole or written and then lost.  SO_PEERCRED names whoever made the
 * connection or the pair; where it names this process or one that
 * registers nothing, the holders of the other end are found through
 * sock_diag and /proc/PID/fd.  A peer that registers but does not track
 * its writes makes the block untracked.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include "preload.h"

/* Whether process @pid's file @what (under /proc/PID) contains @needle. */
static bool proc_has(pid_t pid, const char *what, const char *needle, gsize nlen)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/%s", (int)pid, what);
    g_autofree char *text = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &text, &len, NULL)) {
        return false;
    }
    for (gsize i = 0; i + nlen <= len; i++) {
        if (memcmp(text + i, needle, nlen) == 0) {
            return true;
        }
    }
    return false;
}

/* Whether @pid started with SNAPLOAD_BLOCKS holding exactly the item NAME=PATH of @b. */
static bool peer_names_block(pid_t pid, const pl_block *b)
{
    g_autofree char *blocks = sl_client_env_of(pid, "SNAPLOAD_BLOCKS");
    g_autofree char *item = g_strdup_printf("%s=%s", b->name, b->path);
    g_auto(GStrv) items = blocks ? g_strsplit(blocks, ";", -1) : NULL;

    return items && g_strv_contains((const char *const *)items, item);
}

/*
 * Whether process @pid will register its mappings of block @b with our
 * daemon: it has this library loaded and started with our socket and a
 * SNAPLOAD_BLOCKS naming @b with the same file (environ holds the strings
 * it was started with, NUL-separated).
 */
static bool peer_registers(pid_t pid, const pl_block *b)
{
    g_autofree char *sock = g_strdup_printf("SNAPLOAD_SOCKET=%s", pl.socket);

    return proc_has(pid, "maps", "libsnapload-preload", strlen("libsnapload-preload")) &&
           proc_has(pid, "environ", sock, strlen(sock) + 1) && peer_names_block(pid, b);
}

/* Whether @pid tracks its writes too (started with SNAPLOAD_TRACK=1). */
static bool peer_tracks(pid_t pid)
{
    return proc_has(pid, "environ", "SNAPLOAD_TRACK=1", sizeof("SNAPLOAD_TRACK=1"));
}

/* Who receives what a socket sends (receiver_of()). */
typedef enum {
    RECEIVER_NONE,    /* nobody: the kernel refuses the send (not a connected unix socket) */
    RECEIVER_KNOWN,   /* the process of that pid */
    RECEIVER_UNKNOWN, /* some process this one cannot name */
} receiver;

/*
 * Who gets the fds sent on @sock, in *@pid when known.  Only a connected
 * unix stream or seqpacket socket has one peer that SO_PEERCRED names; a
 * datagram goes wherever each send (msg_name) or the connect says, or to
 * whoever holds the other end of a pair, and SO_PEERCRED gives pid 0 for a
 * peer in a pid namespace this process does not see.
 */
static receiver receiver_of(int sock, pid_t *pid)
{
    int domain = 0, type = 0;
    socklen_t len = sizeof(int), clen = sizeof(struct ucred);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    struct ucred cred = { 0 };

    if (getsockopt(sock, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX) {
        return RECEIVER_NONE; /* not a socket, or one that carries no fds */
    }
    len = sizeof(int);
    if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        (type != SOCK_STREAM && type != SOCK_SEQPACKET)) {
        return RECEIVER_UNKNOWN;
    }
    if (getpeername(sock, (struct sockaddr *)&peer, &plen) < 0) {
        return RECEIVER_NONE; /* not connected: the send fails */
    }
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 || cred.pid <= 0) {
        return RECEIVER_UNKNOWN;
    }
    *pid = cred.pid;
    return RECEIVER_KNOWN;
}

/* Ends the process: block @b would go to @pid (0: a process that cannot be named). */
static void refuse_handoff(const pl_block *b, pid_t pid) G_GNUC_NORETURN;

static void refuse_handoff(const pl_block *b, pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/comm", (int)pid);
    g_autofree char *comm = NULL;

    if (pid == 0) {
        pl_die("refusing to hand guest RAM block '%s' (%s) over a socket whose receiving process "
            "cannot be told (a datagram socket, a peer in a pid namespace this process does "
            "not see, or the other end in flight between processes) while the restore still "
            "fills it: it could not be checked to be "
            "registered with the restore, and would read zeros where pages are not in place "
            "yet; hand it over a connected unix stream socket to a process started with "
            "`snapload attach %s -- COMMAND...`", b->name, b->path, pl.socket);
    }
    if (!g_file_get_contents(path, &comm, NULL, NULL)) {
        comm = g_strdup("?");
    }
    g_strchomp(comm);
    pl_die("refusing to hand guest RAM block '%s' (%s) to process %d (%s) while the restore "
        "still fills it: that process is not registered with the restore, so it would read "
        "zeros where pages are not in place yet and its writes there would be overwritten; "
        "start it with `snapload attach %s -- COMMAND...` (or qemu-restore --vhost-user)",
        b->name, b->path, (int)pid, comm, pl.socket);
}

/* Whether @pid may have block @b without more ado: it registers it, and
 * tracks its writes if this process does. */
static bool receiver_ok(pid_t pid, const pl_block *b)
{
    return pid > 0 && peer_registers(pid, b) && (!pl.track || peer_tracks(pid));
}

/*
 * Dies if block @b would reach process @pid (0: one that cannot be named)
 * and that process would not register it; false (errno EIO) if the
 * hand-off must not happen because the daemon did not take note that no
 * list will show the receiver's writes.
 */
static bool check_receiver(pl_block *b, pid_t pid)
{
    if (receiver_ok(pid, b)) {
        return true;
    }
    if (atomic_load_explicit(&pl.pending, memory_order_relaxed) == 0 || /* relaxed: pl.pending */
        (pid > 0 && peer_registers(pid, b))) {
        /* Filled, or served: the receiver reads correct bytes, but no list
         * will show what it writes (nothing to say when not tracking). */
        bool ok = true;

        if (pl.track) {
            pthread_mutex_lock(&pl.lock);
            ok = pl_mark_untracked(b);
            pthread_mutex_unlock(&pl.lock);
        }
        return ok;
    }
    refuse_handoff(b, pid);
}

/* The inode of the unix socket at the other end of @sock (sock_diag), or
 * 0 if it cannot be told. */
static uint64_t peer_inode(int sock)
{
    struct {
        struct nlmsghdr h;
        struct unix_diag_req r;
    } q = { .h = { .nlmsg_len = sizeof(q), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                   .nlmsg_flags = NLM_F_REQUEST },
            .r = { .sdiag_family = AF_UNIX, .udiag_states = ~0u, .udiag_show = UDIAG_SHOW_PEER,
                   .udiag_cookie = { ~0u, ~0u } } };
    union {
        struct nlmsghdr h;
        char b[1024];
    } a;
    struct stat st;
    uint64_t peer = 0;
    ssize_t n = 0;
    int nl;

    if (fstat(sock, &st) < 0 ||
        (nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG)) < 0) {
        return 0;
    }
    q.r.udiag_ino = (uint32_t)st.st_ino;
    if (send(nl, &q, sizeof(q), 0) == (ssize_t)sizeof(q)) {
        n = recv(nl, &a, sizeof(a), MSG_DONTWAIT); /* answered within the send */
    }
    if (n > 0 && NLMSG_OK(&a.h, (size_t)n) && a.h.nlmsg_type == SOCK_DIAG_BY_FAMILY &&
        a.h.nlmsg_len >= NLMSG_LENGTH(sizeof(struct unix_diag_msg))) {
        int len = (int)(a.h.nlmsg_len - NLMSG_LENGTH(sizeof(struct unix_diag_msg)));
        struct rtattr *at = (struct rtattr *)((struct unix_diag_msg *)NLMSG_DATA(&a.h) + 1);

        for (; RTA_OK(at, len); at = RTA_NEXT(at, len)) {
            if (at->rta_type == UNIX_DIAG_PEER && RTA_PAYLOAD(at) >= sizeof(uint32_t)) {
                uint32_t v;
                memcpy(&v, RTA_DATA(at), sizeof(v));
                peer = v;
            }
        }
    }
    close(nl);
    return peer;
}

/* Whether process @pid runs as (real or effective uid) this process's
 * effective user, as /proc/PID/status says (readable for any process). */
static bool same_user(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)pid);
    g_autofree char *text = NULL;
    const char *uid;
    unsigned real, eff;

    if (!g_file_get_contents(path, &text, NULL, NULL) || !(uid = strstr(text, "\nUid:")) ||
        sscanf(uid + strlen("\nUid:"), "%u %u", &real, &eff) != 2) {
        return true; /* cannot tell: as if it were */
    }
    return real == geteuid() || eff == geteuid();
}

/* 1 if process @pid holds a descriptor whose link reads @want, 0 if not
 * (or it is gone, or it is another user's that this one may not look
 * into, or the link cannot be read: taken as not holding it), -1 if the
 * descriptors of a process of this user cannot be listed. */
static int holds(pid_t pid, const char *want)
{
    g_autofree char *dir = g_strdup_printf("/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;

    if (!d) {
        return errno == ENOENT ? 0 : errno == EACCES && !same_user(pid) ? 0 : -1;
    }
    while (found == 0 && (e = readdir(d))) {
        g_autofree char *link = g_strdup_printf("%s/%s", dir, e->d_name);
        char target[64];
        ssize_t n = readlink(link, target, sizeof(target) - 1);

        if (n > 0) { /* one it may not read (init's, under some sandboxes) is taken as not it */
            target[n] = '\0';
            found = strcmp(target, want) == 0;
        }
    }
    closedir(d);
    return found;
}

/* Whether process @pid is exiting or gone: a live process has a memory
 * map, and the kernel drops an exiting one's before its descriptors. */
static bool exiting(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/maps", (int)pid);
    g_autofree char *maps = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &maps, &len, NULL)) {
        g_autofree char *dir = g_strdup_printf("/proc/%d", (int)pid);
        return access(dir, F_OK) != 0; /* unreadable (another user's): not gone */
    }
    return len == 0;
}

/* The processes that hold the socket whose link reads @want, this one
 * included, into @pids; false if some process of this user cannot be
 * looked into. */
static bool holders_of(const char *want, GArray *pids)
{
    DIR *proc = opendir("/proc");
    struct dirent *e;
    bool all = proc != NULL;

    while (all && (e = readdir(proc))) {
        char *end;
        pid_t pid = (pid_t)strtol(e->d_name, &end, 10);
        int h;

        if (pid <= 0 || *end) {
            continue;
        }
        h = holds(pid, want);
        all = h >= 0;
        if (h > 0) {
            g_array_append_val(pids, pid);
        }
    }
    if (proc) {
        closedir(proc);
    }
    return all;
}

/*
 * check_receiver() of whoever holds the other end of @sock now, where
 * SO_PEERCRED named this process (@pid, a pair of its own) or one that
 * does not register the block: it names who made a pair or connected, not
 * who holds the other end now.  A holder that lets the end go or exits
 * while it is looked at (a back-end's forked child) is not held against
 * the send; no holder at all is an end in flight between processes.
 * Where the holders cannot be told, check_receiver() of @pid itself (0
 * for this process).
 */
static bool check_holders(pl_block *b, int sock, pid_t pid)
{
    g_autoptr(GArray) pids = g_array_new(false, false, sizeof(pid_t));
    uint64_t peer = peer_inode(sock);
    g_autofree char *want = g_strdup_printf("socket:[%" G_GUINT64_FORMAT "]", peer);

    if (!peer || !holders_of(want, pids)) {
        return check_receiver(b, pid == getpid() ? 0 : pid);
    }
    if (pids->len == 0) {
        return check_receiver(b, 0);
    }
    for (guint i = 0; i < pids->len; i++) {
        pid_t h = g_array_index(pids, pid_t, i);
        if (h == getpid() || receiver_ok(h, b) || holds(h, want) == 0 || exiting(h)) {
            continue;
        }
        if (!check_receiver(b, h)) {
            return false;
        }
    }
    return true;
}

/*
 * Dies if @fd is a block's file and the receiver of @sock would not
 * register it (or cannot be told to); false (errno EIO) as
 * check_receiver().
 */
static bool check_handoff(int sock, int fd)
{
    pid_t pid = 0;
    receiver who;
    pl_block *b;

    pthread_mutex_lock(&pl.lock);
    b = pl_match_block(fd);
    pthread_mutex_unlock(&pl.lock);
    who = b ? receiver_of(sock, &pid) : RECEIVER_NONE;
    if (who == RECEIVER_NONE) {
        return true; /* no block, or a send the kernel refuses */
    }
    if (who == RECEIVER_UNKNOWN) {
        return check_receiver(b, 0);
    }
    if (pid != getpid() && receiver_ok(pid, b)) {
        return true; /* the usual case, a registered back-end: no scan */
    }
    /* A pair of its own (found by review: one whose other end went to a
     * child that exec'd a plain program, or was in flight to one, passed as
     * a send to itself), or one whose maker registers nothing (a launcher
     * such as libvirt made it, and a registered back-end holds the other
     * end: found by review, the VMM was ended).  Whoever holds it now. */
    return check_holders(b, sock, pid);
}

/*
 * Whether control message @c of @msg lies whole in msg_control; its fds,
 * if it carries any, in *@fds and *@n.  One that does not (cmsg_len below
 * the header's or past msg_controllen) makes the kernel refuse the whole
 * send with EINVAL, so nothing is handed over, and the bytes it claims
 * past the buffer are not ours to read.
 */
static bool carried_fds(const struct msghdr *msg, const struct cmsghdr *c, const int **fds,
                        size_t *n)
{
    size_t room = msg->msg_controllen - (size_t)((const uint8_t *)c -
                                                 (const uint8_t *)msg->msg_control);

    *n = 0;
    if (c->cmsg_len < CMSG_LEN(0) || c->cmsg_len > room) {
        return false;
    }
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        *fds = (const int *)CMSG_DATA(c);
        *n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    }
    return true;
}

/* check_handoff() of every fd @msg carries on @sock; false at the first refused. */
static bool check_msg(int sock, const struct msghdr *msg)
{
    if (!msg || !msg->msg_control) {
        return true;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        const int *fds = NULL;
        size_t nfds;

        if (!carried_fds(msg, c, &fds, &nfds)) {
            break; /* malformed: the kernel refuses the send */
        }
        for (size_t i = 0; i < nfds; i++) {
            int fd;

            memcpy(&fd, fds + i, sizeof(fd));
            if (!check_handoff(sock, fd)) {
                return false;
            }
        }
    }
    return true;
}

/* Whether a send of fds must be checked: a restore runs or writes are tracked. */
static bool checks_sends(void)
{
    return pl.active && !pl_talking &&
           /* relaxed: see pl.pending */
           (pl.track || atomic_load_explicit(&pl.pending, memory_order_relaxed) > 0);
}

/** sendmsg: the libc call, after checking the guest RAM it hands to a peer. */
__attribute__((visibility("default")))
ssize_t sendmsg(int sock, const struct msghdr *msg, int flags)
{
    if (checks_sends() && !check_msg(sock, msg)) {
        return -1;
    }
    return NEXT(sendmsg)(sock, msg, flags);
}

/**
 * sendmmsg: the libc call, after checking the guest RAM each of its
 * messages hands to a peer; none is sent if one is refused.
 */
__attribute__((visibility("default")))
int sendmmsg(int sock, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    if (checks_sends() && vec) {
        for (unsigned int i = 0; i < vlen && i < UIO_MAXIOV; i++) {
            if (!check_msg(sock, &vec[i].msg_hdr)) {
                return -1;
            }
        }
    }
    return NEXT(sendmmsg)(sock, vec, vlen, flags);
}
