/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Waiting, bounded, for what a supervising command's children do: a child
 * exiting (on its pidfd) and a file appearing in a directory (inotify),
 * each beside the command's interrupt descriptor, so that no wait
 * sleep-polls where the kernel offers an event.  Only where it offers none
 * (no pidfd before Linux 5.3, no inotify instance left) do these look
 * again every 10 ms.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "cli.h"

#define FALLBACK_MS 10 /* how often a wait without an event looks again */

int cli_ms_left(int64_t deadline_us)
{
    return (int)CLAMP((deadline_us - g_get_monotonic_time() + 999) / 1000, 0, INT32_MAX);
}

/* Whether child @pid has exited (left unreaped), or is no child of ours. */
static bool exited(pid_t pid)
{
    siginfo_t si = { 0 };

    /* WNOWAIT: the caller reaps it.  An error: no such child to wait for. */
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid;
}

bool cli_exits_by(pid_t pid, int64_t deadline_us)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int ret = -1;

    while (fd >= 0 && (ret = poll(&p, 1, cli_ms_left(deadline_us))) < 0 && errno == EINTR) {
    }
    if (fd >= 0) {
        close(fd);
    }
    if (ret >= 0) {
        return ret != 0;
    }
    while (!exited(pid)) {
        if (cli_ms_left(deadline_us) == 0) {
            return false;
        }
        g_usleep(FALLBACK_MS * 1000); /* no pidfd to wait on */
    }
    return true;
}

/* Whether @path is a socket now. */
static bool is_socket(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Empties inotify descriptor @ino (non-blocking): its events only wake us. */
static void drain(int ino)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

    while (ino >= 0 && read(ino, buf, sizeof(buf)) > 0) {
    }
}

cli_wait_result cli_wait_socket(const char *path, pid_t pid, int intr_fd, int64_t deadline_us)
{
    g_autofree char *dir = g_path_get_dirname(path);
    int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    cli_wait_result res = CLI_WAIT_TIMEOUT;

    if (ino >= 0 && inotify_add_watch(ino, dir, IN_CREATE | IN_MOVED_TO | IN_ATTRIB) < 0) {
        close(ino); /* then it looks every 10 ms */
        ino = -1;
    }
    for (;;) {
        struct pollfd p[3] = { { .fd = ino, .events = POLLIN }, { .fd = pfd, .events = POLLIN },
                               { .fd = intr_fd, .events = POLLIN } };
        bool events = ino >= 0 && pfd >= 0;
        int left = cli_ms_left(deadline_us);
        if (is_socket(path)) { /* after the watch: a socket made meanwhile is seen */
            res = CLI_WAIT_DONE;
            break;
        }
        if ((pfd >= 0 ? 0 : exited(pid)) || left == 0) {
            res = left == 0 ? CLI_WAIT_TIMEOUT : CLI_WAIT_EXITED;
            break;
        }
        if (poll(p, 3, events ? left : MIN(left, FALLBACK_MS)) > 0) {
            if (p[2].revents) {
                res = CLI_WAIT_INTERRUPTED;
                break;
            }
            if (p[1].revents && !is_socket(path)) {
                res = CLI_WAIT_EXITED;
                break;
            }
        }
        drain(ino);
    }
    if (ino >= 0) {
        close(ino);
    }
    if (pfd >= 0) {
        close(pfd);
    }
    return res;
}
