/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Packet I/O of the restore daemon protocol (see wire.h): sendmsg/recvmsg
 * with SCM_RIGHTS, and the memory file kind check.
 */
#include <errno.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <unistd.h>
#include "wire.h"

bool sl_wire_send(int fd, const sl_msg *m, const int *fds, unsigned nfds)
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
    return sendmsg(fd, &mh, MSG_NOSIGNAL) == (ssize_t)iov.iov_len;
}

ssize_t sl_wire_recv(int fd, uint8_t *buf, int *fds, unsigned *nfds, bool *truncated)
{
    char cbuf[CMSG_SPACE(sizeof(int) * SL_WIRE_MAX_FDS)];
    struct iovec iov = { .iov_base = buf, .iov_len = SL_PROTO_MAX };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf) };
    ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);

    *nfds = 0;
    *truncated = n > 0 && (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); n >= 0 && cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            unsigned k = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (unsigned i = 0; i < k; i++) {
                int f;
                memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                if (*nfds < SL_WIRE_MAX_FDS) {
                    fds[(*nfds)++] = f;
                } else {
                    close(f);
                }
            }
        }
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

