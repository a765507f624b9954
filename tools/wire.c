/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Packet I/O of the restore daemon protocol (see wire.h): sendmsg/recvmsg
 * with SCM_RIGHTS (telling a packet that was too large from fds the kernel
 * could not hand us for want of free fds), and the memory file kind check.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include "wire.h"

static bool send_with(int fd, const sl_msg *m, const int *fds, unsigned nfds, int flags)
{
    uint8_t buf[SL_PROTO_MAX];
    char cbuf[CMSG_SPACE(sizeof(int) * SL_WIRE_MAX_FDS)] = { 0 };
    struct iovec iov = { .iov_base = buf, .iov_len = sl_msg_encode(m, buf) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (nfds) {
        struct cmsghdr *cm;
        mh.msg_control = cbuf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    return sendmsg(fd, &mh, MSG_NOSIGNAL | flags) == (ssize_t)iov.iov_len;
}

bool sl_wire_send(int fd, const sl_msg *m, const int *fds, unsigned nfds)
{
    return send_with(fd, m, fds, nfds, 0);
}

bool sl_wire_send_nowait(int fd, const sl_msg *m)
{
    return send_with(fd, m, NULL, 0, MSG_DONTWAIT);
}

void sl_wire_close_peer_fd(int fd)
{
    static const struct linger off = { 0, 0 };
    struct stat st;

    if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &off, sizeof(off));
    }
    close(fd);
}

/* Moves the SCM_RIGHTS fds of @mh into @fds (closing any beyond SL_WIRE_MAX_FDS). */
static void take_fds(struct msghdr *mh, int *fds, unsigned *nfds)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
            int f;
            memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (*nfds < SL_WIRE_MAX_FDS) {
                fds[(*nfds)++] = f;
            } else {
                sl_wire_close_peer_fd(f);
            }
        }
    }
}

/*
 * Why fds of a packet whose control data was cut short (MSG_CTRUNC) did not
 * arrive.  With room left for more, the kernel failed to install one: it
 * does that when we have no free fd, so a probe for one tells which limit.
 */
static int why_fds_lost(int sock, unsigned nfds)
{
    int probe, err;

    if (nfds >= SL_WIRE_MAX_FDS) {
        return -ETOOMANYREFS; /* our buffer was full: the peer sent more */
    }
    probe = fcntl(sock, F_DUPFD_CLOEXEC, 0);
    err = errno;
    if (probe >= 0) {
        close(probe);
        return -EPERM; /* not for want of fds: withheld (a security module?) */
    }
    return err == ENFILE ? -ENFILE : -EMFILE;
}

ssize_t sl_wire_recv(int fd, uint8_t *buf, int *fds, unsigned *nfds, int *lost)
{
    char cbuf[CMSG_SPACE(sizeof(int) * SL_WIRE_MAX_FDS)];
    struct iovec iov = { .iov_base = buf, .iov_len = SL_PROTO_MAX };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf) };
    ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);

    *nfds = 0;
    *lost = 0;
    if (n < 0) {
        return n;
    }
    take_fds(&mh, fds, nfds);
    if (mh.msg_flags & MSG_TRUNC) {
        *lost = -EMSGSIZE;
    } else if (mh.msg_flags & MSG_CTRUNC) {
        *lost = why_fds_lost(fd, *nfds); /* before anyone closes what did arrive */
    }
    return n;
}

bool sl_wire_file_kind(int fd, sl_backend_kind *kind, uint64_t *psize, GError **errp)
{
    struct statfs sfs;

    if (fstatfs(fd, &sfs) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory fd: %s", g_strerror(errno));
        return false;
    }
    if ((unsigned long)sfs.f_type == TMPFS_MAGIC) {
        *kind = SL_BACKEND_SHMEM;
        *psize = 4096;
    } else if ((unsigned long)sfs.f_type == HUGETLBFS_MAGIC) {
        *kind = SL_BACKEND_HUGETLBFS;
        *psize = (uint64_t)sfs.f_bsize;
    } else {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory fd is not on tmpfs or hugetlbfs");
        return false;
    }
    return true;
}

