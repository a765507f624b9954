/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Handing guest RAM to a second process during a restore (what QEMU does
 * for a vhost-user back-end): the preload client in the VMM refuses to send
 * a block's file to a peer that would map it unregistered, naming the peer,
 * and lets a peer started with `snapload attach` have it, whose mapping is
 * then served with the right bytes.
 *
 * Three processes: `snapload serve --threads 0` (nothing fills the block
 * but faults, so the restore runs for the whole test), a "VMM" (this
 * program in vmm mode, with the preload client) that maps the block's
 * file and sends its fd over a unix socket the back-end listens on (as
 * QEMU connects to a vhost-user back-end, whose pid it then sees), and a
 * "back-end" (this program in backend mode, plain or under `snapload
 * attach`) that maps what it received and checks every page; `attach` to
 * a socket no daemon serves starts nothing.  With the
 * daemon tracking writes (`serve --track-writes`) and the VMM tracking
 * its own, the VMM's discard of a page of its mapping (MADV_REMOVE),
 * which no pagemap shows, is told to the daemon at once: the VMM's own
 * query of what was written is refused right after; and a hole it punches
 * where the daemon cannot take note (a block it does not have) is not
 * punched: the call fails with EIO.
 *
 * A consumer that lets its mapping go and maps it again during the fill
 * (libvhost-user at each SET_MEM_TABLE) lives on, reads every page right
 * and keeps no fd for a mapping that is gone; one whose daemon never answers ends,
 * saying so, instead of hanging in mmap.
 *
 * A consumer that forks during the fill gives the child no copy of its
 * guest RAM (a copy no uffd serves would read holes as zeros); after DONE
 * the child's copy is whole again.  The preload client's fork guard
 * (tools/preload-guard.c) is also driven directly, in this process: what
 * it gives back at DONE and what it keeps for the process.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include "testutil.h"
#include "migration/uffd.h"
#include "migration/vmas.h"
#include "tools/client.h"
#include "tools/preload-guard.h"

int __open_2(const char *path, int flags); /* glibc's, for fortified callers */

#define LEN (4u << 20)
#define PSIZE 4096u
#define ZERO_EVERY 5u

typedef struct {
    char *dir, *snap, *sock, *ram;
    char *log; /* the daemon's stderr, for settle() to watch */
    GPid daemon;
} fixture;

/* ------------------------------ back-end -------------------------------- */

/* Listens on @path, takes one connection; -1 on failure. */
static int accept_one(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), s;

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0) {
        return -1;
    }
    s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    close(l);
    return s;
}

/* Receives one fd on a connection to @path, maps it and checks every page;
 * tells the VMM how many differ. */
static int backend_main(const char *path)
{
    int sock = accept_one(path);
    char byte, cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf) };
    g_autofree uint8_t *want = g_malloc(PSIZE);
    unsigned bad = 0;
    const uint8_t *p;
    int fd;

    if (sock < 0 || recvmsg(sock, &mh, 0) != 1 || !CMSG_FIRSTHDR(&mh)) {
        return 3; /* the VMM sent nothing: it refused */
    }
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(fd));
    p = mmap(NULL, LEN, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        return 4;
    }
    for (uint64_t i = 0; i < LEN / PSIZE; i++) {
        sl_test_fill_page(want, PSIZE, i, 1, ZERO_EVERY);
        bad += memcmp(p + i * PSIZE, want, PSIZE) != 0;
    }
    dprintf(sock, "%u\n", bad);
    return 0;
}

/* --------------------------------- VMM ---------------------------------- */

/* Connects to @path once the back-end listens there; -1 on failure. */
static int connect_to(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    for (int ms = 0; s >= 0 && ms < 10000; ms += 10) {
        if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0) {
            return s;
        }
        g_usleep(10000); /* the back-end is starting */
    }
    return -1;
}

/* Prints what the daemon says the tracked mappings of b0 wrote so far,
 * against snapshot @snap: "query: N pages" or "query: refused: WHY". */
static void query_written(const char *snap)
{
    g_autoptr(GError) err = NULL;
    g_autofree uint64_t *bits = NULL;
    g_autofree char *why = NULL;
    uint8_t id[SL_IDENTITY_LEN];
    sl_snapshot *s = sl_snapshot_open(snap, &err);
    int ret = s && sl_snapshot_identity(s, id, &err)
                  ? sl_client_written_pages(g_getenv("HANDOFF_QUERY_SOCK"), "b0", id, LEN / PSIZE,
                                            &bits, &why, &err)
                  : -1;

    sl_snapshot_close(s);
    if (ret > 0) {
        uint64_t n = 0;
        for (uint64_t i = 0; i < LEN / PSIZE; i++) {
            n += (bits[i / 64] >> (i % 64)) & 1;
        }
        printf("query: %" G_GUINT64_FORMAT " pages\n", n);
    } else {
        printf("query: refused: %s\n", ret == 0 ? why : err->message);
    }
}

/* Opens block file @ram and maps it whole, shared (the preload client
 * registers the mapping): the mapping, or MAP_FAILED; its fd in *@fd. */
static volatile uint8_t *map_ram(const char *ram, int *fd)
{
    *fd = open(ram, O_RDWR);
    return *fd < 0 ? MAP_FAILED : mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
}

/* The line the daemon logs in restore_finished() right before it sends
 * DONE to every registered client, in that same step of its loop. */
#define LOGGED_COMPLETE "snapload serve: restore complete: "

/* Whether daemon log @log has a line starting LOGGED_COMPLETE. */
static bool logged_complete(const char *log)
{
    g_autofree char *text = NULL;

    return g_file_get_contents(log, &text, NULL, NULL) &&
           (g_str_has_prefix(text, LOGGED_COMPLETE) || strstr(text, "\n" LOGGED_COMPLETE));
}

/*
 * Every page of [@p, +LEN) touched (the daemon has no loaders: that
 * completes the restore), then waits, 10 s at most, until the daemon's
 * log (HANDOFF_DAEMON_LOG) says the restore is complete.  The daemon logs
 * that and sends DONE to every registered client before it reads any
 * client again, so our hang-up (a partial unmap or a move retires the
 * mapping) finds DONE waiting in the mapping's socket; before DONE the
 * preload client ends the process, by design.  Nothing in this process
 * shows DONE came: a tracked mapping keeps its uffd, its connection and
 * its fork guard past it.  False, saying why on stderr, if the line never
 * came.
 */
static bool settle(volatile uint8_t *p)
{
    const char *log = g_getenv("HANDOFF_DAEMON_LOG");
    gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    int in = inotify_init1(IN_CLOEXEC);
    bool done = false;

    for (uint64_t off = 0; off < LEN; off += PSIZE) {
        (void)p[off];
    }
    if (!log || in < 0 || inotify_add_watch(in, log, IN_MODIFY) < 0) {
        fprintf(stderr, "settle: cannot watch the daemon's log %s: %s\n", log ? log : "(unset)",
                g_strerror(errno));
        if (in >= 0) {
            close(in);
        }
        return false;
    }
    /* Looked at after the watch is set: a line written before is seen here,
     * one written after wakes the poll. */
    while (!(done = logged_complete(log))) {
        struct pollfd w = { .fd = in, .events = POLLIN };
        gint64 left = until - g_get_monotonic_time();
        char events[4096];

        if (left <= 0 || (poll(&w, 1, (int)(left / 1000) + 1) < 0 && errno != EINTR)) {
            break;
        }
        if (w.revents & POLLIN) {
            (void)!read(in, events, sizeof(events)); /* what changed: the file says */
        }
    }
    close(in);
    if (!done) {
        fprintf(stderr, "settle: every page touched, yet the daemon did not log the restore "
                "complete within 10 s (%s)\n", log);
    }
    return done;
}

/* A write of one byte at page 3 of file @fd in the way @how names ("write"
 * after an lseek, "writev", "sendfile", "splice"), or by path @path
 * ("truncate" to its size; "open-trunc", "open2-trunc": an open or a
 * fortified open with O_TRUNC, then the size given back behind the preload
 * client's back; "stdio": fopen "r+" and a fputc): 0 if made, 1 if @how
 * is none of these. */
static int write_another_way(const char *how, int fd, const char *path)
{
    struct iovec iov = { .iov_base = "x", .iov_len = 1 };
    off_t at = 3 * PSIZE, from = 0;
    int src[2] = { -1, -1 }, t;

    if (!g_strcmp0(how, "write") || !g_strcmp0(how, "writev")) {
        if (lseek(fd, at, SEEK_SET) != at) {
            return -1;
        }
        return (how[5] ? writev(fd, &iov, 1) : write(fd, "x", 1)) == 1 ? 0 : -1;
    }
    if (!g_strcmp0(how, "sendfile")) {
        src[0] = memfd_create("x", 0);
        return src[0] >= 0 && write(src[0], "x", 1) == 1 && lseek(fd, at, SEEK_SET) == at &&
               sendfile(fd, src[0], &from, 1) == 1 ? 0 : -1;
    }
    if (!g_strcmp0(how, "splice")) {
        return pipe(src) == 0 && write(src[1], "x", 1) == 1 &&
               splice(src[0], NULL, fd, &at, 1, 0) == 1 ? 0 : -1;
    }
    if (!g_strcmp0(how, "truncate")) {
        return truncate(path, LEN);
    }
    if (!g_strcmp0(how, "open-trunc")) {
        t = open(path, O_RDWR | O_TRUNC);
        return t >= 0 && syscall(SYS_ftruncate, t, (long)LEN) == 0 ? 0 : -1;
    }
    if (!g_strcmp0(how, "open2-trunc")) { /* what _FORTIFY_SOURCE makes of open(path, flags) */
        t = __open_2(path, O_RDWR | O_TRUNC);
        return t >= 0 && syscall(SYS_ftruncate, t, (long)LEN) == 0 ? 0 : -1;
    }
    if (!g_strcmp0(how, "stdio")) { /* libc's own open and write inside */
        FILE *fp = fopen(path, "r+");
        return fp && fseek(fp, at, SEEK_SET) == 0 && fputc('x', fp) == 'x' &&
               fclose(fp) == 0 ? 0 : -1;
    }
    return 1;
}

/* The change HANDOFF_DISCARD names, through mapping @p of file @fd
 * (@path): 0 if made. */
static int change(const char *how, int fd, const char *path, volatile uint8_t *p)
{
    int other = write_another_way(how, fd, path);

    if (other <= 0) {
        return other;
    }
    if (!g_strcmp0(how, "pwrite")) {
        return pwrite(fd, "x", 1, 3 * PSIZE) == 1 ? 0 : -1;
    }
    if (!g_strcmp0(how, "collapse")) {
        (void)madvise((void *)p, 2u << 20, 25 /* MADV_COLLAPSE: may not take here */);
        return 0;
    }
    if (!g_strcmp0(how, "unmap-part")) {
        return settle(p) ? munmap((void *)p, PSIZE) : -1;
    }
    if (!g_strcmp0(how, "mremap")) {
        return !settle(p) ||
               mremap((void *)p, LEN, LEN + PSIZE, MREMAP_MAYMOVE) == MAP_FAILED ? -1 : 0;
    }
    if (!g_strcmp0(how, "mremap-onto")) { /* another page moved over page 0 of it */
        void *q = mmap(NULL, PSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return q == MAP_FAILED || !settle(p) ||
               mremap(q, PSIZE, PSIZE, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)p) == MAP_FAILED
                   ? -1 : 0;
    }
    if (!g_strcmp0(how, "refused-munmap")) { /* EINVAL: a length past the address space */
        return settle(p) && munmap((void *)p, (size_t)1 << 48) == -1 && errno == EINVAL ? 0 : -1;
    }
    if (!g_strcmp0(how, "refused-mmap-onto")) { /* EBADF */
        return settle(p) &&
               mmap((void *)p, PSIZE, PROT_READ, MAP_FIXED | MAP_SHARED, 9999, 0) == MAP_FAILED &&
               errno == EBADF ? 0 : -1;
    }
    if (!g_strcmp0(how, "refused-mremap-onto")) { /* EINVAL: length 0 of a private mapping */
        void *q = mmap(NULL, PSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return q != MAP_FAILED && settle(p) &&
               mremap(q, 0, PSIZE, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)p) == MAP_FAILED &&
               errno == EINVAL ? 0 : -1;
    }
    if (!g_strcmp0(how, "mmap-onto")) { /* a fresh mapping MAP_FIXED over page 0 of it */
        return !settle(p) || mmap((void *)p, PSIZE, PROT_READ | PROT_WRITE,
                                  MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED
                   ? -1 : 0;
    }
    return madvise((void *)p, 2 * PSIZE, g_strcmp0(how, "dontneed") ? MADV_REMOVE
                                                                  : MADV_DONTNEED);
}

/* Maps @ram tracked (the preload client registers it), reads a page, asks
 * what was written, makes the change HANDOFF_DISCARD names (a discard by
 * MADV_REMOVE by default, "dontneed", "collapse", a "pwrite" into the file,
 * an "unmap-part" of the mapping, an "mremap" of it) and asks again. */
static int discard_main(const char *ram)
{
    int fd;
    volatile uint8_t *p = map_ram(ram, &fd);

    if (p == MAP_FAILED) {
        return 10;
    }
    (void)p[PSIZE]; /* served */
    query_written(g_getenv("HANDOFF_QUERY_SNAP"));
    if (change(g_getenv("HANDOFF_DISCARD"), fd, ram, p) < 0) {
        return 11;
    }
    query_written(g_getenv("HANDOFF_QUERY_SNAP"));
    return 0;
}

/*
 * A tracked VMM punches a hole in block file @other, which its preload
 * client knows as block "zz" that the daemon's snapshot does not have: the
 * daemon cannot note it, so the punch must fail with EIO and leave the
 * data; then a punch in @ram (block b0, which the daemon notes) goes
 * through.  Exit 0 when both did as they must.
 */
static int punch_main(const char *ram, const char *other)
{
    int fd = open(other, O_RDWR), rfd = open(ram, O_RDWR);
    uint8_t page[PSIZE], back[PSIZE];

    memset(page, 0x5a, sizeof(page)); /* written there by the test before */
    if (fd < 0 || rfd < 0) {
        return 10;
    }
    errno = 0;
    if (pwrite(fd, page, PSIZE, PSIZE) != -1 || errno != EIO) {
        printf("pwrite into the unknown block: not refused (errno %d)\n", errno);
        return 14;
    }
    errno = 0;
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PSIZE) != -1 ||
        errno != EIO) {
        printf("punch of the unknown block: not refused (errno %d)\n", errno);
        return 11;
    }
    if (pread(fd, back, PSIZE, 0) != PSIZE || memcmp(back, page, PSIZE) != 0) {
        return 12; /* the hole was punched anyway */
    }
    if (fallocate(rfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PSIZE) != 0) {
        printf("punch of b0: %s\n", g_strerror(errno));
        return 13;
    }
    printf("punch: unknown block refused with EIO, data kept; b0 punched\n");
    return 0;
}

/* Maps @ram (the preload client registers it), starts @argv plus a socket
 * path as the back-end, connects to it and sends it the file. */
static int vmm_main(const char *ram, char **argv)
{
    g_autofree char *path = g_strdup_printf("%s.vu", ram);
    int fd, st = 0, sock;
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    char line[32] = "";
    pid_t pid;

    if (map_ram(ram, &fd) == MAP_FAILED) {
        return 10;
    }
    for (char **a = argv; *a; a++) {
        g_ptr_array_add(args, *a);
    }
    g_ptr_array_add(args, path);
    g_ptr_array_add(args, NULL);
    unlink(path);
    pid = fork();
    if (pid == 0) {
        execv(argv[0], (char **)args->pdata);
        _exit(127);
    }
    if ((sock = connect_to(path)) < 0) {
        return 14;
    }
    unlink(path);
    {
        char byte = 'F', cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                             .msg_controllen = sizeof(cbuf) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(fd));
        if (sendmsg(sock, &mh, 0) != 1) { /* the preload client checks here */
            return 11;
        }
    }
    if (read(sock, line, sizeof(line) - 1) <= 0 || waitpid(pid, &st, 0) != pid) {
        return 12;
    }
    printf("backend: %s", line);
    return atoi(line) == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 13;
}

/*
 * Sends, to @to on datagram socket @sock, a message whose SCM_RIGHTS
 * header claims a page of fds while the control buffer, at the end of a
 * page followed by an inaccessible one, holds one (not guest RAM): the
 * kernel refuses it, and the preload client must not read past the
 * buffer first.  Prints what sendmsg said.
 */
static int send_overlong(int sock, const struct sockaddr_un *to)
{
    long page = sysconf(_SC_PAGESIZE);
    uint8_t *two = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    size_t clen = CMSG_SPACE(sizeof(int));
    char byte = 'F';
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_name = (void *)to,
                         .msg_namelen = sizeof(*to), .msg_controllen = clen };
    struct cmsghdr *c;
    int out = 1;

    if (two == MAP_FAILED || mprotect(two + page, page, PROT_NONE) < 0) {
        return 15;
    }
    mh.msg_control = two + page - clen;
    memset(mh.msg_control, 0, clen);
    c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(page);
    memcpy(CMSG_DATA(c), &out, sizeof(out));
    if (sendmsg(sock, &mh, 0) < 0) {
        printf("sendmsg: %s\n", g_strerror(errno));
    } else {
        printf("sent\n");
    }
    return 0;
}

/*
 * Sends @fd over one end of a stream socket pair whose other end this
 * process keeps (@child false) or gave to a child that exec'd cat (as its
 * stdin), sent only once the exec happened.  Prints "sent" if the call
 * took it.
 */
static int send_over_pair(int fd, bool child)
{
    int sv[2], exec_seen[2];
    char byte;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
        pipe2(exec_seen, O_CLOEXEC) < 0) {
        return 11;
    }
    if (child) {
        pid_t kid = fork();

        if (kid == 0) {
            dup2(sv[1], 0);
            execlp("cat", "cat", (char *)NULL);
            _exit(127);
        }
        close(sv[1]);
        close(exec_seen[1]);
        if (kid < 0 || read(exec_seen[0], &byte, 1) != 0) { /* EOF: the exec closed it */
            return 12;
        }
    }
    if (sl_test_send_fd_to(sv[0], fd, NULL, false)) {
        printf("sent\n");
    }
    return 0;
}

/* From now on socket(AF_NETLINK) fails with EAFNOSUPPORT in this process,
 * as a seccomp profile or systemd's RestrictAddressFamilies= makes it. */
static int no_netlink(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_NETLINK, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAFNOSUPPORT),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = G_N_ELEMENTS(f), .filter = f };

    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ? -1
                                                     : prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
                                                             &prog);
}

/* Holds its stdin, unread, until the other end hangs up. */
static int hold_stdin_main(void)
{
    struct pollfd p = { .fd = 0, .events = POLLRDHUP };

    return poll(&p, 1, 30000) == 1 ? 0 : 1;
}

/*
 * Sends @fd over one end of a socket pair whose other end is in flight:
 * sent, as a plain fd, over another pair to a child (hold_stdin_main())
 * that does not read it, and closed here.  Prints "sent" if the call took
 * it.
 */
static int send_with_the_other_end_in_flight(int fd)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    int sv[2], cv[2], exec_seen[2];
    char byte;
    pid_t kid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cv) < 0 ||
        pipe2(exec_seen, O_CLOEXEC) < 0 || (kid = fork()) < 0) {
        return 11;
    }
    if (kid == 0) {
        dup2(cv[1], 0);
        execl(self, self, "hold-stdin", (char *)NULL);
        _exit(127);
    }
    close(cv[1]);
    close(exec_seen[1]);
    if (read(exec_seen[0], &byte, 1) != 0) { /* EOF: the exec closed its copy (and sv's) */
        return 13;
    }
    if (!sl_test_send_fd_to(cv[0], sv[1], NULL, false)) { /* not guest RAM: goes */
        return 12;
    }
    close(sv[1]);
    if (sl_test_send_fd_to(sv[0], fd, NULL, false)) {
        printf("sent\n");
    }
    return 0;
}

/* Maps block b0 (@ram) and sends its file @count times on inherited
 * socket @n: prints "sent N" with how many went. */
static int send_fd_main(const char *ram, int n, int count)
{
    int fd, i = 0;

    if (map_ram(ram, &fd) == MAP_FAILED) {
        return 10;
    }
    while (i < count && sl_test_send_fd_to(n, fd, NULL, false)) {
        i++;
    }
    printf("sent %d\n", i);
    return 0;
}

/* The fds passed on @n (each closed at once), counted in *@opaque until
 * the socket ends. */
static void *count_fds(void *opaque)
{
    int *nfds = opaque, n = nfds[0], fd;

    while ((fd = sl_test_recv_fd(n)) >= 0) {
        close(fd);
        atomic_fetch_add((_Atomic int *)&nfds[1], 1);
    }
    atomic_store((_Atomic int *)&nfds[2], 1);
    return NULL;
}

/* Receives fds on inherited socket @n until EOF while forking children
 * that exit at once (a back-end's system() or fork-per-job), each holding
 * the socket for a moment: prints "# received N" (a TAP comment: its
 * stdout is the test's own). */
static int recv_forking_main(int n)
{
    int state[3] = { n, 0, 0 }; /* socket, fds received, done */
    pthread_t t;

    if (pthread_create(&t, NULL, count_fds, state) != 0) {
        return 10;
    }
    while (!atomic_load((_Atomic int *)&state[2])) {
        pid_t kid = fork();
        if (kid == 0) {
            _exit(0);
        }
        if (kid > 0) {
            waitpid(kid, NULL, 0);
        }
    }
    pthread_join(t, NULL);
    printf("# received %d\n", state[1]);
    return 0;
}

/*
 * Maps block b0 (@ram: the preload client registers it) and sends its file
 * over a unix socket of @kind: "dgram", an unconnected datagram socket, to
 * the one bound at @path; "dgram-pair", one end of a datagram pair, to the
 * other; "stream", connected to @path; "dgram-mmsg", as "dgram" but with
 * sendmmsg.  Prints "sent" if the call took it.  "overlong" sends, as
 * "dgram", a malformed message instead (send_overlong()); "pair-to-self"
 * and "pair-to-child" over a socket pair (send_over_pair()); and
 * "pair-in-flight" with the pair's other end in flight
 * (send_with_the_other_end_in_flight()).
 */
static int send_over_main(const char *ram, const char *kind, const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd, sv[2] = { -1, -1 };
    bool dgram = strcmp(kind, "stream") != 0;
    bool to_path = !strcmp(kind, "dgram") || !strcmp(kind, "dgram-mmsg");

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    if (map_ram(ram, &fd) == MAP_FAILED) {
        return 10;
    }
    if (!strcmp(kind, "dgram-pair") ? socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0
        : (sv[0] = socket(AF_UNIX, dgram ? SOCK_DGRAM : SOCK_STREAM, 0)) < 0 ||
          (!dgram && connect(sv[0], (struct sockaddr *)&a, sizeof(a)) < 0)) {
        return 11;
    }
    if (!strcmp(kind, "overlong")) {
        return send_overlong(sv[0], &a);
    }
    if (!strcmp(kind, "pair-in-flight")) {
        return send_with_the_other_end_in_flight(fd);
    }
    if (!strcmp(kind, "pair-to-child-no-netlink")) {
        return no_netlink() < 0 ? 14 : send_over_pair(fd, true);
    }
    if (g_str_has_prefix(kind, "pair-to-")) {
        return send_over_pair(fd, !strcmp(kind, "pair-to-child"));
    }
    if (sl_test_send_fd_to(sv[0], fd, to_path ? &a : NULL, !strcmp(kind, "dgram-mmsg"))) {
        printf("sent\n");
    }
    return 0;
}

/* A thread that writes into pipe @opaque until the write blocks. */
static void *fill_pipe(void *opaque)
{
    static const char junk[4096];

    for (;;) {
        (void)!write(*(int *)opaque, junk, sizeof(junk));
    }
    return NULL;
}

/* A thread that opens FIFO @opaque for writing: it blocks, no reader. */
static void *open_fifo(void *opaque)
{
    (void)!open(opaque, O_WRONLY);
    return NULL;
}

/* Starts @fn(@arg), lets it block, cancels it: whether it ended within 5 s. */
static bool cancels(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    struct timespec by;

    if (pthread_create(&t, NULL, fn, arg) != 0) {
        return false;
    }
    g_usleep(100 * 1000);
    pthread_cancel(t);
    clock_gettime(CLOCK_REALTIME, &by);
    by.tv_sec += 5;
    return pthread_timedjoin_np(t, NULL, &by) == 0;
}

/* A thread that opens FIFO @opaque and writes a byte into it. */
static void *write_a_byte(void *opaque)
{
    int fd;

    g_usleep(200 * 1000); /* the main thread is inside dlopen() meanwhile */
    fd = open(opaque, O_WRONLY);
    if (fd >= 0) {
        (void)!write(fd, "x", 1);
        close(fd);
    }
    return NULL;
}

/* dlopen()s @lib (dlctor.c), whose constructor waits for another thread's
 * first open() and write() of @fifo: prints "loaded" once it returned. */
static int dlopen_wait_main(const char *lib, const char *fifo)
{
    pthread_t t;
    void *h;

    if (mkfifo(fifo, 0600) < 0 || setenv("SL_DLCTOR_FIFO", fifo, 1) < 0 ||
        pthread_create(&t, NULL, write_a_byte, (void *)fifo) != 0) {
        return 10;
    }
    h = dlopen(lib, RTLD_NOW);
    pthread_join(t, NULL);
    unlink(fifo);
    printf("%s\n", h ? "loaded" : dlerror());
    return 0;
}

/* Prints whether a write blocked on a full pipe and an open blocked on a
 * FIFO (at @fifo) end when their threads are cancelled. */
static int cancel_main(const char *fifo)
{
    int p[2];

    if (pipe(p) < 0 || mkfifo(fifo, 0600) < 0) {
        return 10;
    }
    printf("write: %s\n", cancels(fill_pipe, &p[1]) ? "cancelled" : "not cancelled");
    printf("open: %s\n", cancels(open_fifo, (void *)fifo) ? "cancelled" : "not cancelled");
    unlink(fifo);
    return 0;
}

/* -------------------------------- forker -------------------------------- */

/* What a child forked now sees at @p: the number of its @npages pages that
 * differ from block b0, or -errno when the child has no such memory. */
static long child_sees(const uint8_t *p, uint64_t npages)
{
    g_autofree uint8_t *got = g_malloc(PSIZE), *want = g_malloc(PSIZE);
    int hold = -1, ret;
    pid_t pid = sl_test_fork_waiting(&hold);
    long bad = 0;

    for (uint64_t i = 0; pid > 0 && i < npages; i++) {
        if ((ret = sl_test_read_child(pid, p + i * PSIZE, got, PSIZE)) < 0) {
            bad = ret;
            break;
        }
        sl_test_fill_page(want, PSIZE, i, 1, ZERO_EVERY);
        bad += memcmp(got, want, PSIZE) != 0;
    }
    if (hold >= 0) {
        close(hold);
    }
    return pid > 0 && waitpid(pid, NULL, 0) == pid ? bad : -ECHILD;
}

static bool note_dontcopy(const sl_vma *vma, void *opaque)
{
    *(bool *)opaque |= vma->dontcopy;
    return true;
}

/* Whether any part of [@p, +@len) is MADV_DONTFORK (smaps' "dc"). */
static bool any_dontcopy(const void *p, size_t len)
{
    bool dc = false;

    return sl_vmas_each(0, (uintptr_t)p, (uintptr_t)p + len, true, note_dontcopy, &dc, NULL) && dc;
}

/* Block b0 mapped as QEMU maps guest RAM: "file", the shared file @ram;
 * "anon", private anonymous memory over a reservation. */
static uint8_t *map_guest_ram(const char *kind, const char *ram)
{
    int fd = strcmp(kind, "file") ? -1 : open(ram, O_RDWR);
    void *p;

    if (fd >= 0) {
        p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    p = mmap(NULL, LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    p = p == MAP_FAILED ? p : mmap(p, LEN, PROT_READ | PROT_WRITE,
                                   MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/*
 * The consumer (preloaded) maps b0 as @kind, reads its first page, forks
 * while the restore still runs (a page at the end is not placed: the
 * daemon has no loaders) and prints what the child saw; then reads every
 * page, which completes the restore, waits for the guard to be given back
 * and forks again.
 */
static int forker_main(const char *kind, const char *ram)
{
    volatile uint8_t *p = map_guest_ram(kind, ram);
    g_autofree uint8_t *want = g_malloc(PSIZE);
    long bad = 0;

    if (!p) {
        return 10;
    }
    sl_test_fill_page(want, PSIZE, 0, 1, ZERO_EVERY);
    if (memcmp((const void *)p, want, PSIZE)) {
        return 11;
    }
    printf("mid-restore child: %ld\n", child_sees((const uint8_t *)p, LEN / PSIZE));
    for (uint64_t i = 0; i < LEN / PSIZE; i++) {
        sl_test_fill_page(want, PSIZE, i, 1, ZERO_EVERY);
        bad += memcmp((const void *)(p + i * PSIZE), want, PSIZE) != 0;
    }
    /* DONE reaches the client's supervisor thread on its own: nothing here
     * to wait on but the marking it takes away. */
    for (int ms = 0; ms < 10000 && any_dontcopy((const void *)p, LEN); ms += 10) {
        g_usleep(10000);
    }
    printf("parent: %ld wrong, after DONE child: %ld\n", bad,
           child_sees((const uint8_t *)p, LEN / PSIZE));
    return 0;
}

/*
 * A back-end of a guest whose RAM comes in two memory regions (a pc guest
 * above about 3 GiB): the preloaded process maps the RAM file as two
 * mappings, the first half at offset 0 and the second at offset LEN/2,
 * each handed to the daemon on its own, and reads every page of both
 * (the daemon has no loaders: its faults complete the restore).  Prints
 * how many pages were wrong.
 */
static int parts_main(const char *ram)
{
    int fd = open(ram, O_RDWR);
    g_autofree uint8_t *want = g_malloc(PSIZE);
    const uint8_t *half[2];
    long bad = 0;

    if (fd < 0) {
        return 10;
    }
    for (unsigned k = 0; k < 2; k++) {
        half[k] = mmap(NULL, LEN / 2, PROT_READ | PROT_WRITE, MAP_SHARED, fd, k * (LEN / 2));
        if (half[k] == MAP_FAILED) {
            return 11;
        }
    }
    for (unsigned k = 2; k-- > 0;) {
        for (uint64_t i = 0; i < LEN / 2 / PSIZE; i++) {
            sl_test_fill_page(want, PSIZE, k * (LEN / 2 / PSIZE) + i, 1, ZERO_EVERY);
            bad += memcmp(half[k] + i * PSIZE, want, PSIZE) != 0;
        }
    }
    printf("parts: %ld wrong\n", bad);
    return 0;
}

/* ------------------------------- remapper ------------------------------- */

/* This process's open fds. */
static unsigned open_fds(void)
{
    g_autoptr(GDir) d = g_dir_open("/proc/self/fd", 0, NULL);
    unsigned n = 0;

    while (d && g_dir_read_name(d)) {
        n++;
    }
    return n;
}

/* Pages among [@first, +@n) of mapping @p (block b0) that are wrong. */
static unsigned wrong_in(const volatile uint8_t *p, uint64_t first, uint64_t n)
{
    g_autofree uint8_t *want = g_malloc(PSIZE);
    unsigned bad = 0;

    for (uint64_t i = first; i < first + n; i++) {
        sl_test_fill_page(want, PSIZE, i, 1, ZERO_EVERY);
        bad += memcmp((const void *)(p + i * PSIZE), want, PSIZE) != 0;
    }
    return bad;
}

/* Waits (10 s at most) until this process has at most @want fds open. */
static unsigned fds_settle(unsigned want)
{
    unsigned n = open_fds();

    for (int ms = 0; ms < 10000 && n > want; ms += 10) {
        g_usleep(10000); /* the supervisors close them on DONE: nothing to wait on */
        n = open_fds();
    }
    return n;
}

#define REMAPS 100    /* more than a block's 16 views, and chances to race the daemon */
#define LATE_MAPS 70  /* more than the daemon's 64 client slots */

/*
 * As libvhost-user at each SET_MEM_TABLE: maps block b0 (@ram), reads a
 * few pages, and lets the mapping go, REMAPS times during the fill (the
 * daemon has no loaders: nothing but faults fills), every other time by
 * mapping over it with MAP_FIXED.  Then maps it for good and reads every
 * page, which completes the restore, and maps and unmaps it LATE_MAPS
 * times more.  Prints the wrong pages and the fds left over; the alarm
 * ends a process whose mmap hangs.
 */
static int remapper_main(const char *ram)
{
    int fd = open(ram, O_RDWR);
    unsigned base = open_fds(), bad = 0;
    volatile uint8_t *p = NULL;

    setvbuf(stdout, NULL, _IONBF, 0); /* what it printed survives a signal */
    alarm(60);
    for (unsigned r = 0; fd >= 0 && r <= REMAPS; r++) {
        void *at = r % 2 && p ? (void *)p : NULL;
        if (p && !at) {
            munmap((void *)p, LEN);
        }
        p = mmap(at, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | (at ? MAP_FIXED : 0), fd, 0);
        if (p == MAP_FAILED) {
            return 10;
        }
        /* Time for a daemon still acting on the old view (sealing its
         * missing pages) to hit the new mapping at the same address. */
        g_usleep(5000);
        bad += r < REMAPS ? wrong_in(p, r * 7, 3) : wrong_in(p, 0, LEN / PSIZE);
    }
    /* The mapping kept keeps its connection: the daemon stays for later ones. */
    printf("during the fill: %u wrong, %u fds left\n", bad, fds_settle(base + 1) - base);
    for (unsigned i = 0; i < LATE_MAPS; i++) {
        volatile uint8_t *q = mmap(NULL, LEN, PROT_READ, MAP_SHARED, fd, 0);
        if (q == MAP_FAILED) {
            return 11;
        }
        bad += wrong_in(q, i, 1);
        munmap((void *)q, LEN);
    }
    printf("after it: %u wrong, %u fds left\n", bad, fds_settle(base + 1) - base);
    return 0;
}

/* map_ram() in a program of its own: stdout unbuffered (what it printed
 * survives a signal), an alarm of @secs, the first page read.  The
 * mapping, or MAP_FAILED; that page's wrong bytes in *@bad. */
static volatile uint8_t *map_ram_first_page(const char *ram, unsigned secs, unsigned *bad)
{
    int fd;
    volatile uint8_t *p = map_ram(ram, &fd);

    setvbuf(stdout, NULL, _IONBF, 0);
    alarm(secs);
    *bad = p == MAP_FAILED ? 0 : wrong_in(p, 0, 1);
    return p;
}

/* Maps b0 (@ram), reads a page, forks a child that unmaps that range (it
 * has no copy of it: the fork guard) and exits, then reads every page. */
static int fork_unmapper_main(const char *ram)
{
    unsigned bad;
    volatile uint8_t *p = map_ram_first_page(ram, 60, &bad);
    int st = 0;
    pid_t pid;

    if (p == MAP_FAILED) {
        return 10;
    }
    pid = fork();
    if (pid == 0) {
        alarm(10); /* a child left waiting must neither stay nor hold our stdout */
        close(STDOUT_FILENO);
        close(STDERR_FILENO);
        munmap((void *)p, LEN);
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) {
        return 11;
    }
    bad += wrong_in(p, 0, LEN / PSIZE);
    printf("after the child's munmap: %u wrong\n", bad);
    return 0;
}

/*
 * Forks before it maps anything (as QEMU -daemonize does) and maps block
 * b0 as anonymous guest RAM in the child, which reads every page; prints
 * how many were wrong, or how the child ended.  The alarm ends a child
 * whose mmap hangs.
 */
static int fork_first_main(const char *ram)
{
    int st = 0;
    pid_t pid = fork();

    if (pid == 0) {
        volatile uint8_t *p;
        alarm(10);
        p = map_guest_ram("anon", ram);
        _exit(p ? (int)MIN(wrong_in(p, 0, LEN / PSIZE), 100) : 101);
    }
    if (pid < 0 || waitpid(pid, &st, 0) != pid) {
        return 10;
    }
    if (WIFSIGNALED(st)) {
        printf("child: killed by signal %d\n", WTERMSIG(st));
    } else {
        printf("child: %d wrong\n", WEXITSTATUS(st));
    }
    return 0;
}

/*
 * Maps b0 as anonymous guest RAM that comes populated: @how "populate"
 * (MAP_POPULATE on QEMU's fixed mapping) or "mlock" (mlockall(MCL_FUTURE)
 * first, as -overcommit mem-lock=on does); then reads every page.
 */
static int populated_main(const char *how, const char *ram)
{
    const bool lock = !strcmp(how, "mlock");
    uint8_t *p;

    (void)ram;
    setvbuf(stdout, NULL, _IONBF, 0);
    alarm(20);
    if (lock && mlockall(MCL_CURRENT | MCL_FUTURE) < 0) {
        printf("mlockall: %s\n", g_strerror(errno));
        return 9;
    }
    p = mmap(NULL, LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    p = p == MAP_FAILED ? p : mmap(p, LEN, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE |
                                   MAP_ANONYMOUS | (lock ? 0 : MAP_POPULATE), -1, 0);
    if (p == MAP_FAILED) {
        printf("mmap: %s\n", g_strerror(errno));
        return 10;
    }
    printf("%s: %u wrong\n", how, wrong_in(p, 0, LEN / PSIZE));
    return 0;
}

/* Maps b0 (@ram), reads a page, then makes an munmap the kernel refuses
 * (EINVAL: a length past the address space) and reads every page. */
static int bad_unmapper_main(const char *ram)
{
    unsigned bad;
    volatile uint8_t *p = map_ram_first_page(ram, 20, &bad);
    int r;

    if (p == MAP_FAILED) {
        return 10;
    }
    /* Past any address space, 5-level paging's too (a TCG guest with
     * -cpu max has it: there 1 << 48 unmapped the stack). */
    r = munmap((void *)p, (size_t)1 << 57);
    printf("munmap: %d (%s)\n", r, g_strerror(errno));
    printf("after the refused munmap: %u wrong\n", bad + wrong_in(p, 0, LEN / PSIZE));
    return 0;
}

/* Maps block b0 (@ram) and reads every page: prints how many were wrong. */
static int read_all_main(const char *ram)
{
    unsigned bad;
    volatile uint8_t *p = map_ram_first_page(ram, 60, &bad);

    if (p == MAP_FAILED) {
        return 10;
    }
    printf("%u wrong\n", bad + wrong_in(p, 1, LEN / PSIZE - 1));
    return 0;
}

/* Maps block b0 (@ram) once: the preload client registers it or ends us. */
static int map_once_main(const char *ram)
{
    int fd = open(ram, O_RDWR);

    alarm(20);
    return fd >= 0 && mmap(NULL, LEN, PROT_READ, MAP_SHARED, fd, 0) != MAP_FAILED ? 0 : 10;
}

/* ------------------------------- fixture -------------------------------- */

static int setup_daemon(void **state, bool track)
{
    fixture *f = g_new0(fixture, 1);
    const uint64_t len = LEN;
    g_autofree char *bin = sl_test_snapload_bin();
    g_autoptr(GError) err = NULL;
    int fd, log;

    f->dir = sl_test_tmpdir();
    f->snap = g_build_filename(f->dir, "snap", NULL);
    f->sock = g_build_filename(f->dir, "daemon.sock", NULL);
    f->log = g_build_filename(f->dir, "daemon.log", NULL);
    f->ram = g_strdup_printf("/dev/shm/snapload-handoff-%d", (int)getpid());
    sl_test_make_snapshot(f->snap, &len, 1, PSIZE, ZERO_EVERY, 0);
    fd = open(f->ram, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0 && ftruncate(fd, LEN) == 0);
    close(fd);
    const char *argv[] = { bin, "serve", f->snap, "--socket", f->sock, "--threads", "0",
                           track ? "--track-writes" : NULL, NULL };
    /* Its stderr goes to a file a VMM can watch (settle()); teardown() copies it to ours. */
    log = open(f->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    assert_true(log >= 0);
    assert_true(g_spawn_async_with_fds(NULL, (char **)argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                       NULL, NULL, &f->daemon, -1, -1, log, &err));
    close(log);
    for (int ms = 0; ms < 10000 && !g_file_test(f->sock, G_FILE_TEST_EXISTS); ms += 10) {
        g_usleep(10000); /* another process starting: nothing to wait on */
    }
    assert_true(g_file_test(f->sock, G_FILE_TEST_EXISTS));
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_daemon(state, false);
}

static int setup_tracking(void **state)
{
    return setup_daemon(state, true);
}

/* setup_tracking() for a case that runs on kernels that cannot track too. */
static int setup_tracking_any(void **state)
{
    return setup_daemon(state, true);
}

static int teardown(void **state)
{
    fixture *f = *state;
    g_autofree char *blocks = g_strconcat(f->sock, ".blocks", NULL);
    g_autofree char *log = NULL;

    kill(f->daemon, SIGTERM);
    waitpid(f->daemon, NULL, 0);
    if (g_file_get_contents(f->log, &log, NULL, NULL)) {
        fputs(log, stderr); /* into the test's log, as when it wrote there itself */
    }
    for (const char *const *end = (const char *const[]){ ".dg", ".ns", NULL }; *end; end++) {
        g_autofree char *peer = g_strconcat(f->ram, *end, NULL); /* the peers' sockets */
        unlink(peer);
    }
    unlink(f->ram);
    unlink(blocks);
    unlink(f->snap);
    unlink(f->sock);
    unlink(f->log);
    sl_test_rmdir(f->dir);
    g_free(f->snap);
    g_free(f->sock);
    g_free(f->log);
    g_free(f->ram);
    g_free(f);
    return 0;
}

/* Runs the VMM (this program, preloaded; tracking its writes and able to
 * query the daemon when @track) with back-end command @backend, or (NULL)
 * discard_main(); its wait status, stdout and stderr. */
static int run_vmm_tracking(fixture *f, const char *const *backend, bool track, char **out,
                            char **err)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *blocks = g_strdup_printf("b0=%s", f->ram);
    g_auto(GStrv) env = g_get_environ();
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    int st = -1;

    env = g_environ_setenv(env, "LD_PRELOAD", g_getenv("SNAPLOAD_PRELOAD"), true);
    env = g_environ_setenv(env, "SNAPLOAD_SOCKET", f->sock, true);
    env = g_environ_setenv(env, "SNAPLOAD_BLOCKS", blocks, true);
    env = g_environ_setenv(env, "SNAPLOAD_EXE", self, true);
    if (track) {
        env = g_environ_setenv(env, "SNAPLOAD_TRACK", "1", true);
        env = g_environ_setenv(env, "HANDOFF_QUERY_SNAP", f->snap, true);
        env = g_environ_setenv(env, "HANDOFF_QUERY_SOCK", f->sock, true); /* the preload
                                                  * client takes SNAPLOAD_SOCKET out */
        env = g_environ_setenv(env, "HANDOFF_DAEMON_LOG", f->log, true);
    }
    g_ptr_array_add(argv, self);
    g_ptr_array_add(argv, backend ? "vmm" : "discard");
    g_ptr_array_add(argv, f->ram);
    for (const char *const *a = backend; a && *a; a++) {
        g_ptr_array_add(argv, (char *)*a);
    }
    g_ptr_array_add(argv, NULL);
    assert_true(g_spawn_sync(NULL, (char **)argv->pdata, env, 0, NULL, NULL, out, err, &st, NULL));
    return st;
}

static int run_vmm(fixture *f, const char *const *backend, char **out, char **err)
{
    return run_vmm_tracking(f, backend, false, out, err);
}

/* The environment of this program preloaded to register block @name as
 * @what (a file, or anon:BYTES) with the daemon at @sock (@timeout_ms:
 * SNAPLOAD_TIMEOUT_MS, 0: unset). */
static char **preloaded_env(const char *name, const char *what, const char *sock,
                            int timeout_ms)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *blocks = g_strdup_printf("%s=%s", name, what);
    g_autofree char *ms = g_strdup_printf("%d", timeout_ms);
    char **env = g_get_environ();

    env = g_environ_setenv(env, "LD_PRELOAD", g_getenv("SNAPLOAD_PRELOAD"), true);
    env = g_environ_setenv(env, "SNAPLOAD_SOCKET", sock, true);
    env = g_environ_setenv(env, "SNAPLOAD_BLOCKS", blocks, true);
    env = g_environ_setenv(env, "SNAPLOAD_EXE", self, true);
    if (timeout_ms) {
        env = g_environ_setenv(env, "SNAPLOAD_TIMEOUT_MS", ms, true);
    }
    return env;
}

/* Runs this program in @mode with argument @ram, preloaded to register
 * block @name as @what with the daemon at @sock; its wait status, stdout
 * and stderr. */
static int run_preloaded_as(const char *mode, const char *name, const char *what,
                            const char *ram, const char *sock, char **out, char **err)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_auto(GStrv) env = preloaded_env(name, what, sock, 0);
    const char *argv[] = { self, mode, ram, NULL };
    int st = -1;

    assert_true(g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, out, err, &st, NULL));
    return st;
}

/* Runs this program in @mode over b0 (@ram), preloaded to register with
 * the daemon at @sock (@timeout_ms: SNAPLOAD_TIMEOUT_MS, 0: unset); its
 * wait status, stdout and stderr. */
static int run_preloaded(const char *mode, const char *ram, const char *sock, int timeout_ms,
                         char **out, char **err)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_auto(GStrv) env = preloaded_env("b0", ram, sock, timeout_ms);
    const char *argv[] = { self, mode, ram, NULL };
    int st = -1;

    assert_true(g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, out, err, &st, NULL));
    return st;
}

/* Runs forker_main() preloaded, with b0 given as @kind; its stdout. */
static char *run_forker(fixture *f, const char *kind)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *blocks = strcmp(kind, "file") ? g_strdup_printf("b0=anon:%u", LEN)
                                                   : g_strdup_printf("b0=%s", f->ram);
    g_auto(GStrv) env = g_get_environ();
    const char *argv[] = { self, "forker", kind, f->ram, NULL };
    g_autofree char *err = NULL;
    char *out = NULL;
    int st = -1;

    env = g_environ_setenv(env, "LD_PRELOAD", g_getenv("SNAPLOAD_PRELOAD"), true);
    env = g_environ_setenv(env, "SNAPLOAD_SOCKET", f->sock, true);
    env = g_environ_setenv(env, "SNAPLOAD_BLOCKS", blocks, true);
    env = g_environ_setenv(env, "SNAPLOAD_EXE", self, true);
    assert_true(g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, &out, &err, &st, NULL));
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("consumer (%s): status %d, stdout: %s, stderr: %s", kind, st, out, err);
    }
    return out;
}

static void need_preload(void)
{
    g_autofree char *why = NULL;
    bool have = sl_test_have_uffd(&why);

    SL_TEST_NEED("uffd", have, why);
    assert_non_null(g_getenv("SNAPLOAD_PRELOAD"));
}

/* ------------------------------- the tests ------------------------------ */

/*
 * The reviewer's synthetic case of qemu-storage-daemon with a 4 GiB pc
 * guest: a preloaded process mapping the RAM file in two parts under
 * `snapload serve --threads 0`.  Before, the daemon refused the first part
 * (its length was not the block's) and the preload client killed the
 * process; now both parts are served and every byte is right.
 */
static void test_a_preloaded_process_mapping_ram_in_two_parts_reads_every_byte(void **state)
{
    fixture *f = *state;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *blocks = g_strdup_printf("b0=%s", f->ram);
    g_autofree char *out = NULL, *err = NULL;
    g_auto(GStrv) env = g_get_environ();
    const char *argv[] = { self, "parts", f->ram, NULL };
    int st = -1;

    need_preload();
    env = g_environ_setenv(env, "LD_PRELOAD", g_getenv("SNAPLOAD_PRELOAD"), true);
    env = g_environ_setenv(env, "SNAPLOAD_SOCKET", f->sock, true);
    env = g_environ_setenv(env, "SNAPLOAD_BLOCKS", blocks, true);
    env = g_environ_setenv(env, "SNAPLOAD_EXE", self, true);
    assert_true(g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, &out, &err, &st, NULL));
    if (!g_spawn_check_wait_status(st, NULL) || !strstr(out, "parts: 0 wrong\n")) {
        fail_msg("a process mapping guest RAM in two parts: status %d, stdout: %s, stderr: %s",
                 st, out, err);
    }
}

static void test_guest_ram_is_refused_to_an_unregistered_peer(void **state)
{
    fixture *f = *state;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *out = NULL, *err = NULL;
    const char *backend[] = { self, "backend", NULL };
    int st;

    need_preload();
    st = run_vmm(f, backend, &out, &err);
    if (g_spawn_check_wait_status(st, NULL) ||
        !strstr(err, "refusing to hand guest RAM block 'b0'") ||
        !strstr(err, "not registered with the restore") || !strstr(err, "snapload attach")) {
        fail_msg("VMM handing guest RAM to a plain peer: status %d, stdout: %s, stderr: %s", st,
                 out, err);
    }
}

/*
 * Guest RAM handed to a back-end run by `snapload attach`, itself or
 * through a wrapper script that execs it: every byte right.  Found by a
 * user's test: the wrapper's shell took the preload client out of the
 * environment, and the back-end it exec'd ran unregistered.
 */
static void test_guest_ram_reaches_an_attached_peer_with_every_byte(void **state)
{
    fixture *f = *state;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *bin = sl_test_snapload_bin();
    g_autofree char *blocks = g_strconcat(f->sock, ".blocks", NULL);
    g_autofree char *spec = g_strdup_printf("b0=%s\n", f->ram);
    const char *direct[] = { bin, "attach", f->sock, "--", self, "backend", NULL };
    const char *wrapped[] = { bin, "attach", f->sock, "--", "/bin/sh", "-c",
                              "exec \"$0\" backend \"$1\"", self, NULL };
    /* the wrapped one first: the other reads every page, which completes the restore */
    const char *const *runs[] = { wrapped, direct };

    need_preload();
    /* What qemu-restore writes beside its socket for `snapload attach`. */
    assert_true(g_file_set_contents(blocks, spec, -1, NULL));
    for (unsigned i = 0; i < G_N_ELEMENTS(runs); i++) {
        g_autofree char *out = NULL, *err = NULL;
        int st = run_vmm(f, runs[i], &out, &err);
        if (!g_spawn_check_wait_status(st, NULL) || !strstr(out, "backend: 0\n")) {
            fail_msg("VMM handing guest RAM to an attached peer (%s): status %d, stdout: %s, "
                     "stderr: %s", i ? "itself" : "through a wrapper", st, out, err);
        }
    }
}

/*
 * `snapload attach` with a socket no daemon serves (a mistyped path) would
 * run the back-end unregistered: it fails naming the socket, and the
 * command never starts.  `attach --help` prints its usage and succeeds.
 */
static void test_attach_to_a_socket_no_daemon_serves_fails_and_starts_nothing(void **state)
{
    g_autofree char *dir = sl_test_tmpdir(), *sock = g_build_filename(dir, "nosuch.sock", NULL);
    g_autofree char *ran = g_build_filename(dir, "ran", NULL);
    g_autofree char *out = NULL, *err = NULL, *hout = NULL, *herr = NULL;
    const char *attach[] = { "attach", sock, "--", "/bin/touch", ran, NULL };
    const char *help[] = { "attach", "--help", NULL };
    int st = sl_test_run_cli(attach, &out, &err);

    (void)state;
    if (g_spawn_check_wait_status(st, NULL) || !strstr(err, sock) || access(ran, F_OK) == 0) {
        fail_msg("attach to %s: status %d, the command %s, stderr: %s", sock, st,
                 access(ran, F_OK) == 0 ? "ran" : "did not run", err);
    }
    st = sl_test_run_cli(help, &hout, &herr);
    if (!g_spawn_check_wait_status(st, NULL) || !strstr(hout, "SOCKET -- COMMAND")) {
        fail_msg("attach --help: status %d, stdout: %s, stderr: %s", st, hout, herr);
    }
    sl_test_rmdir(g_steal_pointer(&dir));
}

/*
 * A VMM that tracks its writes discards a page of its mapping
 * (MADV_REMOVE, as QEMU does for a balloon; or MADV_DONTNEED, which drops
 * the page table entry of a write the file keeps): its pagemap will not
 * show that, so the preload client tells the daemon first, and the query
 * of what was written, answered before (0 pages), is refused right after,
 * while the mapping is still there and nothing was reported yet (found
 * by review for MADV_DONTNEED: not noted, a child kept the parent's bytes).
 */
static void discard_ends_the_written_list(fixture *f, const char *advice)
{
    g_autofree char *out = NULL, *err = NULL;
    int st;

    need_preload();
    g_setenv("HANDOFF_DISCARD", advice, true);
    st = run_vmm_tracking(f, NULL, true, &out, &err);
    g_unsetenv("HANDOFF_DISCARD");
    if (!g_spawn_check_wait_status(st, NULL) || !strstr(out, "query: 0 pages\n") ||
        !strstr(out, "query: refused: a consumer discarded pages of it")) {
        fail_msg("tracked VMM discarding a page (%s): status %d, stdout: %s, stderr: %s",
                 advice, st, out, err);
    }
}

static void test_discard_by_a_tracked_vmm_ends_the_written_list_at_once(void **state)
{
    discard_ends_the_written_list(*state, "remove");
}

static void test_dontneed_by_a_tracked_vmm_ends_the_written_list_at_once(void **state)
{
    discard_ends_the_written_list(*state, "dontneed");
}

/*
 * Changes a page table cannot show, by a tracked VMM, end the list of
 * written pages at once too (found by review: each left a list that the
 * next --reuse-ram restart trusted, keeping a page the VMM had written): a
 * pwrite into the file, MADV_COLLAPSE (the small pages leave every
 * mapping), an unmap of part of the mapping (the rest was reported with it
 * and then untracked) and a move of the mapping (mremap drops the
 * registration and its trace).
 */
static void test_a_pwrite_by_a_tracked_vmm_ends_the_written_list(void **state)
{
    discard_ends_the_written_list(*state, "pwrite");
}

/*
 * Writes into the file through a descriptor or by path that the preload
 * client had not seen end the list as a pwrite does: a write or writev
 * after an lseek, sendfile and splice into it, truncate by path, an open
 * (plain or fortified) with O_TRUNC, a stdio stream opened for writing,
 * and a pwrite to the block's file named by a symlink from another file
 * system.  Found by review: each left a list that the next restart
 * trusted.
 */
static void test_writes_by_descriptor_or_path_by_a_tracked_vmm_end_the_written_list(void **state)
{
    static const char *const ways[] = { "write", "writev", "sendfile", "splice", "truncate",
                                        "open-trunc", "open2-trunc", "stdio", "symlink" };

    for (size_t i = 0; i < G_N_ELEMENTS(ways); i++) {
        fixture *f;
        char *real;
        g_autofree char *link = NULL;

        if (i) { /* a restore of its own for each: the last one's list has ended */
            assert_int_equal(teardown(state), 0);
            assert_int_equal(setup_tracking(state), 0);
        }
        f = *state;
        if (strcmp(ways[i], "symlink")) {
            discard_ends_the_written_list(f, ways[i]);
            continue;
        }
        /* A pwrite to the block, named by a symlink on another file system. */
        real = f->ram;
        link = g_build_filename(f->dir, "ram-link", NULL);
        assert_int_equal(symlink(real, link), 0);
        f->ram = link;
        discard_ends_the_written_list(f, "pwrite");
        f->ram = real;
        unlink(link);
    }
}

static void test_a_collapse_by_a_tracked_vmm_ends_the_written_list(void **state)
{
    discard_ends_the_written_list(*state, "collapse");
}

static void test_a_partial_unmap_by_a_tracked_vmm_ends_the_written_list(void **state)
{
    discard_ends_the_written_list(*state, "unmap-part");
}

static void test_a_move_by_a_tracked_vmm_ends_the_written_list(void **state)
{
    discard_ends_the_written_list(*state, "mremap");
}

/* Found by the review of that fix: a move onto part of a tracked mapping. */
static void test_a_move_onto_a_tracked_mapping_ends_the_written_list(void **state)
{
    discard_ends_the_written_list(*state, "mremap-onto");
}

/*
 * An munmap, a MAP_FIXED mapping or an mremap over a complete tracked
 * mapping that the kernel refuses fails with its errno, the process going
 * on, and the block is untracked (its writes were reported, the mapping
 * stays).  Found by review of the fix that ends the process when the
 * mapping is still being restored: a tracked mapping's uffd outlives its
 * DONE, and the process was ended here too.
 */
static void test_a_refused_unmap_of_a_complete_tracked_mapping_fails_and_ends_the_list(void **state)
{
    discard_ends_the_written_list(*state, "refused-munmap");
}

/* The same for a refused MAP_FIXED mapping over it. */
static void test_a_refused_mapping_over_a_complete_tracked_mapping_fails_and_ends_the_list(
    void **state)
{
    discard_ends_the_written_list(*state, "refused-mmap-onto");
}

/* The same for a refused mremap onto it. */
static void test_a_refused_move_onto_a_complete_tracked_mapping_fails_and_ends_the_list(
    void **state)
{
    discard_ends_the_written_list(*state, "refused-mremap-onto");
}

/* Found by review: a fresh mapping MAP_FIXED over part of a tracked one
 * neither reported its writes nor untracked the block. */
static void test_a_mapping_over_a_tracked_mapping_ends_the_written_list(void **state)
{
    discard_ends_the_written_list(*state, "mmap-onto");
}

/*
 * A tracked VMM about to punch a hole the daemon cannot take note of (a
 * block it does not have) must not punch it: otherwise a later list of
 * written pages would miss the change.  The punch fails with EIO, the
 * data stays, and the preload client says why on stderr.
 */
static void test_untracked_change_the_daemon_cannot_note_is_not_made(void **state)
{
    fixture *f = *state;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *other = g_strconcat(f->ram, "-zz", NULL);
    g_autofree char *blocks = g_strdup_printf("b0=%s;zz=%s", f->ram, other);
    g_autofree char *out = NULL, *err = NULL;
    g_auto(GStrv) env = g_get_environ();
    const char *argv[] = { self, "punch", f->ram, other, NULL };
    int st = -1, fd;

    need_preload();
    fd = open(other, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0 && ftruncate(fd, LEN) == 0);
    {
        uint8_t page[PSIZE];
        memset(page, 0x5a, sizeof(page));
        assert_int_equal(pwrite(fd, page, PSIZE, 0), PSIZE);
    }
    close(fd);
    env = g_environ_setenv(env, "LD_PRELOAD", g_getenv("SNAPLOAD_PRELOAD"), true);
    env = g_environ_setenv(env, "SNAPLOAD_SOCKET", f->sock, true);
    env = g_environ_setenv(env, "SNAPLOAD_BLOCKS", blocks, true);
    env = g_environ_setenv(env, "SNAPLOAD_EXE", self, true);
    env = g_environ_setenv(env, "SNAPLOAD_TRACK", "1", true);
    assert_true(g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, &out, &err, &st, NULL));
    unlink(other);
    if (!g_spawn_check_wait_status(st, NULL) ||
        !strstr(err, "refusing to change block 'zz' where no list of written pages shows it")) {
        fail_msg("punch the daemon cannot note: status %d, stdout: %s, stderr: %s", st, out,
                 err);
    }
}

/* A peer set up for another file under the block's name would map the
 * real one unregistered: refused as well. */
static void test_guest_ram_is_refused_to_a_peer_set_up_for_another_file(void **state)
{
    fixture *f = *state;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *bin = sl_test_snapload_bin();
    g_autofree char *blocks = g_strconcat(f->sock, ".blocks", NULL);
    g_autofree char *spec = g_strdup_printf("b0=%s-not-guest-ram\n", f->ram);
    g_autofree char *out = NULL, *err = NULL;
    const char *backend[] = { bin, "attach", f->sock, "--", self, "backend", NULL };
    int st;

    need_preload();
    assert_true(g_file_set_contents(blocks, spec, -1, NULL));
    st = run_vmm(f, backend, &out, &err);
    if (g_spawn_check_wait_status(st, NULL) ||
        !strstr(err, "refusing to hand guest RAM block 'b0'")) {
        fail_msg("VMM handing guest RAM to a peer set up for another file: status %d, "
                 "stdout: %s, stderr: %s", st, out, err);
    }
}

/* Whether a packet carrying an fd waits on @sock (the fd is closed). */
static bool fd_arrived(int sock)
{
    char byte, cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf) };
    struct cmsghdr *c;
    int fd;

    if (recvmsg(sock, &mh, MSG_DONTWAIT) != 1 || !(c = CMSG_FIRSTHDR(&mh)) ||
        c->cmsg_type != SCM_RIGHTS) {
        return false;
    }
    memcpy(&fd, CMSG_DATA(c), sizeof(fd));
    close(fd);
    return true;
}

/* The VMM (send_over_main(), preloaded; run by @wrapper first if not NULL)
 * sends b0's file over a socket of @kind to @path: it must be ended,
 * saying the receiver cannot be told, before it sent anything. */
static void expect_refused_over(fixture *f, const char *const *wrapper, const char *kind,
                                const char *path)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *out = NULL, *err = NULL;
    g_auto(GStrv) env = preloaded_env("b0", f->ram, f->sock, 0);
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    int st = -1;

    for (const char *const *w = wrapper; w && *w; w++) {
        g_ptr_array_add(argv, (char *)*w);
    }
    g_ptr_array_add(argv, self);
    g_ptr_array_add(argv, "send-over");
    g_ptr_array_add(argv, f->ram);
    g_ptr_array_add(argv, (char *)kind);
    g_ptr_array_add(argv, (char *)path);
    g_ptr_array_add(argv, NULL);
    assert_true(g_spawn_sync(NULL, (char **)argv->pdata, env, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             &out, &err, &st, NULL));
    if (g_spawn_check_wait_status(st, NULL) || strstr(out, "sent") ||
        !strstr(err, "refusing to hand guest RAM block 'b0'") ||
        !strstr(err, "receiving process cannot be told")) {
        fail_msg("guest RAM over a %s socket: status %d, stdout: %s, stderr: %s", kind, st, out,
                 err);
    }
}

/* A datagram socket of ours bound at @path. */
static int bound_dgram(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    assert_true(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof(a)) == 0);
    return s;
}

/*
 * Guest RAM sent where the preload client cannot tell which process gets
 * it is refused while the restore fills it, as to an unregistered peer: a
 * datagram sent to an address (SO_PEERCRED of the sender: pid 0), with
 * sendmsg or sendmmsg, and one sent to the other end of a datagram pair
 * (SO_PEERCRED: the sender's own pid, though any process may hold that
 * end).  Found by review: each went through (sendmmsg straight to the
 * kernel), and the receiver read holes as zeros.
 */
static void test_guest_ram_sent_over_a_datagram_socket_is_refused(void **state)
{
    static const char *const to_address[] = { "dgram", "dgram-mmsg" };
    fixture *f = *state;
    g_autofree char *path = g_strconcat(f->ram, ".dg", NULL);
    int s;

    need_preload();
    unlink(path);
    s = bound_dgram(path);
    for (size_t i = 0; i < G_N_ELEMENTS(to_address); i++) {
        expect_refused_over(f, NULL, to_address[i], path);
        assert_false(fd_arrived(s));
    }
    expect_refused_over(f, NULL, "dgram-pair", path);
    close(s);
    unlink(path);
}

/*
 * Guest RAM sent over a socket pair whose other end went to a child that
 * exec'd a plain program is refused, naming the child: SO_PEERCRED names
 * the pair's maker, this process, whoever holds the other end now (found
 * by review: it went through as a send to itself, and the child read holes
 * as zeros).  So is one whose other end is in flight to another process,
 * held by none (found by the next review).  Sent over a pair whose ends
 * this process keeps, it goes.
 */
static void test_guest_ram_sent_over_a_socket_pair_reaches_only_who_holds_the_other_end(
    void **state)
{
    fixture *f = *state;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *out = NULL, *err = NULL, *out2 = NULL, *err2 = NULL;
    g_auto(GStrv) env = preloaded_env("b0", f->ram, f->sock, 0);
    const char *to_child[] = { self, "send-over", f->ram, "pair-to-child", "-", NULL };
    const char *to_self[] = { self, "send-over", f->ram, "pair-to-self", "-", NULL };
    const char *no_netlink_argv[] = { self, "send-over", f->ram, "pair-to-child-no-netlink", "-",
                                      NULL };
    g_autofree char *out3 = NULL, *err3 = NULL;
    int st = -1, st2 = -1, st3 = -1;

    need_preload();
    expect_refused_over(f, NULL, "pair-in-flight", "-");
    /* Where the peer cannot be looked up, a pair of its own is no longer
     * taken for a send to itself (found by review). */
    assert_true(g_spawn_sync(NULL, (char **)no_netlink_argv, env, 0, NULL, NULL, &out3, &err3,
                             &st3, NULL));
    if (g_spawn_check_wait_status(st3, NULL) || strstr(out3, "sent") ||
        !strstr(err3, "receiving process cannot be told")) {
        fail_msg("guest RAM over a pair to a child, no netlink: status %d, stdout: %s, "
                 "stderr: %s", st3, out3, err3);
    }
    assert_true(g_spawn_sync(NULL, (char **)to_child, env, 0, NULL, NULL, &out, &err, &st, NULL));
    if (g_spawn_check_wait_status(st, NULL) || strstr(out, "sent") ||
        !strstr(err, "refusing to hand guest RAM block 'b0'") || !strstr(err, "(cat)")) {
        fail_msg("guest RAM over a pair to a child: status %d, stdout: %s, stderr: %s", st, out,
                 err);
    }
    assert_true(g_spawn_sync(NULL, (char **)to_self, env, 0, NULL, NULL, &out2, &err2, &st2,
                             NULL));
    if (!g_spawn_check_wait_status(st2, NULL) || !strstr(out2, "sent\n")) {
        fail_msg("guest RAM over a pair to itself: status %d, stdout: %s, stderr: %s", st2, out2,
                 err2);
    }
}

/* Whether @pid's maps show the preload client, within 10 s. */
static bool preloaded_soon(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/maps", (int)pid);

    for (int i = 0; i < 1000; i++) {
        g_autofree char *maps = NULL;
        if (g_file_get_contents(path, &maps, NULL, NULL) &&
            strstr(maps, "libsnapload-preload")) {
            return true;
        }
        g_usleep(10000);
    }
    return false;
}

/*
 * A launcher (this test, as libvirt does) makes a socket pair and gives
 * one end to the VMM and the other to a back-end under `snapload attach`:
 * guest RAM sent over it, 100 times, reaches the back-end, which forks
 * children that exit at once meanwhile.  SO_PEERCRED names the launcher,
 * which registers nothing; the back-end holds the other end, and so, for
 * a moment, does each child.  Found by reviews: the VMM was ended for
 * handing it to the launcher, and then for a child seen exiting.
 */
static void test_guest_ram_sent_over_a_pair_a_launcher_made_reaches_an_attached_peer(
    void **state)
{
    fixture *f = *state;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *bin = sl_test_snapload_bin();
    g_autofree char *blocks = g_strconcat(f->sock, ".blocks", NULL);
    g_autofree char *spec = g_strdup_printf("b0=%s\n", f->ram);
    g_autofree char *out = NULL, *err = NULL, *n0 = NULL, *n1 = NULL;
    g_auto(GStrv) env = preloaded_env("b0", f->ram, f->sock, 0);
    int sv[2], st = -1, bst = -1;
    pid_t be;

    need_preload();
    assert_true(g_file_set_contents(blocks, spec, -1, NULL));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    n0 = g_strdup_printf("%d", sv[0]);
    n1 = g_strdup_printf("%d", sv[1]);
    be = fork();
    if (be == 0) {
        close(sv[0]);
        execl(bin, bin, "attach", f->sock, "--", self, "recv-forking", n1, (char *)NULL);
        _exit(127);
    }
    close(sv[1]); /* the launcher keeps no end */
    assert_true(preloaded_soon(be));
    {
        const char *argv[] = { self, "send-fd", f->ram, n0, "100", NULL };
        assert_true(g_spawn_sync(NULL, (char **)argv, env, G_SPAWN_LEAVE_DESCRIPTORS_OPEN |
                                 G_SPAWN_CHILD_INHERITS_STDIN, NULL, NULL, &out, &err, &st, NULL));
    }
    close(sv[0]);
    assert_int_equal(waitpid(be, &bst, 0), be);
    if (!g_spawn_check_wait_status(st, NULL) || !strstr(out, "sent 100\n") ||
        !WIFEXITED(bst) || WEXITSTATUS(bst) != 0) {
        fail_msg("guest RAM over a pair a launcher made: status %d, stdout: %s, stderr: %s; "
                 "back-end status %d", st, out, err, bst);
    }
}

/*
 * The calls the preload client wraps stay what libc makes them: a write
 * or an open blocked in the kernel ends when its thread is cancelled, in
 * a process the client is active in.  Found by review: the wrappers made
 * the raw system call, which is no cancellation point, and the cancelled
 * threads never ended.
 */
static void test_blocked_calls_stay_cancellation_points_under_the_client(void **state)
{
    fixture *f = *state;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *fifo = g_build_filename(f->dir, "fifo", NULL);
    g_autofree char *out = NULL, *err = NULL;
    g_auto(GStrv) env = preloaded_env("b0", f->ram, f->sock, 0);
    const char *argv[] = { self, "cancel", fifo, NULL };
    int st = -1;

    need_preload();
    assert_true(g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, &out, &err, &st, NULL));
    if (!g_spawn_check_wait_status(st, NULL) || !strstr(out, "write: cancelled\n") ||
        !strstr(out, "open: cancelled\n")) {
        fail_msg("cancelling blocked calls: status %d, stdout: %s, stderr: %s", st, out, err);
    }
}

/*
 * A library whose constructor waits for another thread's first open()
 * and write() loads, in a process the preload client is loaded in: the
 * client looks libc's definitions up in its own constructor, not at a
 * first call, where dlsym waited for the dynamic linker's lock that the
 * dlopen held (found by review: a deadlock even where the client is
 * inactive).  Killed after 20 s if it hangs.
 */
static void test_a_first_call_inside_another_threads_dlopen_does_not_deadlock(void **state)
{
    fixture *f = *state;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *fifo = g_build_filename(f->dir, "dl-fifo", NULL);
    g_autofree char *out = NULL, *err = NULL;
    g_auto(GStrv) env = g_environ_setenv(g_get_environ(), "LD_PRELOAD",
                                         g_getenv("SNAPLOAD_PRELOAD"), true);
    const char *argv[] = { "timeout", "20", self, "dlopen-wait", g_getenv("SL_DLCTOR"), fifo,
                           NULL };
    int st = -1;

    need_preload();
    assert_non_null(g_getenv("SL_DLCTOR"));
    assert_true(g_spawn_sync(NULL, (char **)argv, env, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                             &err, &st, NULL));
    if (!g_spawn_check_wait_status(st, NULL) || strcmp(out, "loaded\n") != 0) {
        fail_msg("dlopen with a waiting constructor: status %d, stdout: %s, stderr: %s", st, out,
                 err);
    }
}

/*
 * A send whose control message claims more fds than its buffer holds is
 * left to the kernel, which refuses it (EINVAL): the preload client does
 * not read past the buffer for fds to check (that crashed the VMM when
 * the buffer ended before an unmapped page).
 */
static void test_a_malformed_control_message_is_refused_by_the_kernel_not_overread(void **state)
{
    fixture *f = *state;
    g_autofree char *path = g_strconcat(f->ram, ".dg", NULL);
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *out = NULL, *err = NULL;
    g_auto(GStrv) env = preloaded_env("b0", f->ram, f->sock, 0);
    const char *argv[] = { self, "send-over", f->ram, "overlong", path, NULL };
    int st = -1, s;

    need_preload();
    unlink(path);
    s = bound_dgram(path);
    assert_true(g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, &out, &err, &st, NULL));
    if (!g_spawn_check_wait_status(st, NULL) || !strstr(out, "sendmsg: Invalid argument\n")) {
        fail_msg("a malformed control message: status %d, stdout: %s, stderr: %s", st, out,
                 err);
    }
    assert_false(fd_arrived(s));
    close(s);
    unlink(path);
}

/* Whether unshare(1) can make a pid namespace here; *@why if not. */
static bool can_unshare_pid(char **why)
{
    const char *argv[] = { "unshare", "--pid", "--fork", "true", NULL };
    g_autofree char *err = NULL;
    int st = -1;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                      NULL, NULL, NULL, &err, &st, NULL) ||
        !g_spawn_check_wait_status(st, NULL)) {
        *why = g_strdup_printf("unshare --pid --fork true failed: %s", err ? err : "not found");
        return false;
    }
    return true;
}

/*
 * Guest RAM sent over a connected stream to a peer in a pid namespace the
 * VMM does not see (the VMM runs in a pid namespace of its own; the peer,
 * outside it, has no pid there: SO_PEERCRED gives 0) is refused while the
 * restore fills it, and nothing reaches the peer.  Found by review: pid 0
 * was let through; the daemon refuses such a peer, so it was never served.
 */
static void test_guest_ram_sent_to_a_peer_in_an_unseen_pid_namespace_is_refused(void **state)
{
    fixture *f = *state;
    g_autofree char *path = g_strconcat(f->ram, ".ns", NULL);
    g_autofree char *why = NULL;
    const char *unshare[] = { "unshare", "--pid", "--fork", "--kill-child", "--", NULL };
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int l, c;

    need_preload();
    {
        bool have = can_unshare_pid(&why);
        SL_TEST_NEED("pid-namespace", have, why);
    }
    unlink(path);
    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0 && bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l, 1) == 0);
    expect_refused_over(f, unshare, "stream", path);
    c = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    assert_true(c >= 0); /* it connected, then was ended before sending */
    assert_false(fd_arrived(c));
    close(c);
    close(l);
    unlink(path);
}

/*
 * A consumer that forks while the restore still fills its guest RAM gives
 * the child no copy of it (process_vm_readv: EFAULT): without the preload
 * client's guard the child's copy is registered nowhere and reads the
 * holes as zeros.  After DONE a child's copy has every byte.
 */
static void test_a_child_the_consumer_forks_mid_restore_gets_no_unserved_copy(void **state)
{
    fixture *f = *state;
    static const char *const kinds[] = { "file", "anon" };
    g_autofree char *want = g_strdup_printf("mid-restore child: %d\n"
                                            "parent: 0 wrong, after DONE child: 0\n", -EFAULT);

    need_preload();
    for (unsigned i = 0; i < G_N_ELEMENTS(kinds); i++) {
        g_autofree char *out = NULL;

        if (i > 0) { /* a fresh restore: the daemon serves one; anon has one owner */
            teardown(state);
            setup(state);
            f = *state;
        }
        out = run_forker(f, kinds[i]);
        if (strcmp(out, want)) {
            fail_msg("guest RAM as %s, a child forked by the consumer saw:\n%s", kinds[i], out);
        }
    }
}

/*
 * A back-end that lets its mapping of guest RAM go and maps it again during
 * the fill (libvhost-user at each SET_MEM_TABLE), 100 times, lives on and
 * reads every page right: each old mapping is retired, its view freed
 * (a block has 16), and each new one, mostly at the same address, served
 * afresh; never sealed (SIGBUS) by the daemon letting go of the old view
 * at that address.  And a mapping's uffd is closed at its DONE, its
 * connection when it goes: 70 mappings after the fill (more than the
 * daemon's 64 client slots) neither hang nor leave an fd behind; only the
 * mapping still there keeps one, its connection.
 */
static void test_a_consumer_that_remaps_guest_ram_mid_restore_lives_and_leaks_no_fd(void **state)
{
    fixture *f = *state;
    g_autofree char *out = NULL, *err = NULL;
    int st;

    need_preload();
    st = run_preloaded("remapper", f->ram, f->sock, 0, &out, &err);
    if (!g_spawn_check_wait_status(st, NULL) ||
        strcmp(out, "during the fill: 0 wrong, 1 fds left\nafter it: 0 wrong, 1 fds left\n")) {
        fail_msg("remapping consumer: status %d, stdout: %s, stderr: %s", st, out, err);
    }
}

/*
 * A child the consumer forks during the fill unmaps the range where the
 * parent's registered mapping lies (the child has no copy of it): that is
 * not the parent's mapping going, which lives on and reads every byte, and
 * the child ends at once (found by review: the child retired the parent's
 * registration over their shared socket, the parent was killed, and the
 * child waited for good).
 */
static void test_a_forked_childs_munmap_leaves_the_parents_mapping_registered(void **state)
{
    fixture *f = *state;
    g_autofree char *out = NULL, *err = NULL;
    int st;

    need_preload();
    st = run_preloaded("fork-unmapper", f->ram, f->sock, 3000, &out, &err);
    if (!g_spawn_check_wait_status(st, NULL) ||
        strcmp(out, "after the child's munmap: 0 wrong\n")) {
        fail_msg("forking consumer: status %d, stdout: %s, stderr: %s", st, out, err);
    }
}

/*
 * A child forked before anything was mapped maps anonymous guest RAM under
 * the preload client: it is handed over and served, every page right.
 * Found by review: the fork handler made the preload's lock anew as a
 * plain mutex, and the child's hand-over, holding it, deadlocked in the
 * mmap of its mover's staging slots (which the preload wraps too).
 */
static void test_a_child_forked_before_mapping_anonymous_guest_ram_is_served(void **state)
{
    fixture *f = *state;
    g_autofree char *out = NULL, *err = NULL;
    g_autofree char *blocks = g_strdup_printf("anon:%u", LEN);
    int st;

    need_preload();
    st = run_preloaded_as("fork-first", "b0", blocks, f->ram, f->sock, &out, &err);
    if (!g_spawn_check_wait_status(st, NULL) || strcmp(out, "child: 0 wrong\n")) {
        fail_msg("a child mapping anonymous guest RAM: status %d, stdout: %s, stderr: %s", st,
                 out, err);
    }
}

/* Runs populated_main(@how) preloaded, b0 anonymous; its wait status, stdout and stderr. */
static int run_populated(fixture *f, const char *how, char **out, char **err)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *blocks = g_strdup_printf("anon:%u", LEN);
    g_auto(GStrv) env = preloaded_env("b0", blocks, f->sock, 0);
    const char *argv[] = { self, "populated", how, f->ram, NULL };
    int st = -1;

    assert_true(g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, out, err, &st, NULL));
    return st;
}

/*
 * Anonymous guest RAM mapped with MAP_POPULATE holds zero pages before it
 * is registered, where MISSING faults never fire: the preload client
 * empties it first, and every page comes from the snapshot.  Found by
 * review: 819 wrong pages, exit 0.
 */
static void populated_is_served(fixture *f, const char *how)
{
    g_autofree char *out = NULL, *err = NULL;
    g_autofree char *want = g_strdup_printf("%s: 0 wrong\n", how);
    int st;

    need_preload();
    st = run_populated(f, how, &out, &err);
    if (!g_spawn_check_wait_status(st, NULL) || strcmp(out, want)) {
        fail_msg("%s: status %d, stdout: %s, stderr: %s", how, st, out, err);
    }
}

static void test_anonymous_guest_ram_mapped_populated_is_served_from_the_snapshot(void **state)
{
    populated_is_served(*state, "populate");
}

/*
 * An munmap of guest RAM that the kernel refuses after the daemon let go
 * of the mapping (still restoring) ends the process, saying why: the
 * mapping stays, registered and served by nobody.  Found by review: the
 * next read died of SIGBUS.
 */
static void test_a_refused_unmap_of_guest_ram_being_restored_ends_the_process(void **state)
{
    fixture *f = *state;
    g_autofree char *out = NULL, *err = NULL;
    int st;

    need_preload();
    st = run_preloaded("bad-unmapper", f->ram, f->sock, 3000, &out, &err);
    if (g_spawn_check_wait_status(st, NULL) || strstr(out, "wrong") ||
        !strstr(err, "unmapping guest RAM failed")) {
        fail_msg("a refused munmap: status %#x, stdout: %s, stderr: %s", st, out, err);
    }
}

/*
 * A VMM asked to track its writes (SNAPLOAD_TRACK=1, as qemu-restore
 * --reuse-ram and --track-writes start QEMU) reads every byte of guest RAM
 * on any kernel: tracked where the kernel can, registered plainly where it
 * cannot (found on Debian 12's 6.1: the tracked registration failed and
 * the preload client ended the process).
 */
static void test_a_vmm_asked_to_track_reads_every_byte_on_any_kernel(void **state)
{
    fixture *f = *state;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *out = NULL, *err = NULL;
    g_auto(GStrv) env = preloaded_env("b0", f->ram, f->sock, 0);
    const char *argv[] = { self, "read-all", f->ram, NULL };
    int st = -1;

    need_preload();
    env = g_environ_setenv(env, "SNAPLOAD_TRACK", "1", true);
    assert_true(g_spawn_sync(NULL, (char **)argv, env, 0, NULL, NULL, &out, &err, &st, NULL));
    if (!g_spawn_check_wait_status(st, NULL) || strcmp(out, "0 wrong\n") != 0) {
        fail_msg("a VMM asked to track: status %d, stdout: %s, stderr: %s", st, out, err);
    }
}

/*
 * Locked anonymous guest RAM (mlockall(MCL_FUTURE) before the mapping, as
 * QEMU's mem-lock=on does for RAM it adds later) is emptied with
 * MADV_DONTNEED_LOCKED and served likewise.  (Kernels before 5.18 lack
 * it: there the process ends, saying why; not testable here.)
 */
static void test_locked_anonymous_guest_ram_is_served_from_the_snapshot(void **state)
{
    populated_is_served(*state, "mlock");
}

/*
 * A daemon that never answers (here: a socket nobody accepts on, as when
 * every client slot is taken) ends the registering process after
 * SNAPLOAD_TIMEOUT_MS, saying why, instead of hanging its mmap for good.
 */
static void test_a_registration_the_daemon_never_answers_ends_the_process_saying_so(void **state)
{
    char *dir = sl_test_tmpdir(); /* sl_test_rmdir() frees it */
    g_autofree char *sock = g_build_filename(dir, "mute.sock", NULL);
    g_autofree char *ram = g_build_filename(dir, "ram", NULL);
    g_autofree char *out = NULL, *err = NULL;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), fd, st;

    (void)state;
    need_preload();
    g_strlcpy(a.sun_path, sock, sizeof(a.sun_path));
    assert_true(l >= 0 && bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l, 4) == 0);
    fd = open(ram, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0 && ftruncate(fd, LEN) == 0);
    close(fd);
    st = run_preloaded("map-once", ram, sock, 300, &out, &err);
    close(l);
    sl_test_rmdir(dir);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL || !strstr(err, "no answer in time")) {
        fail_msg("status %d, stderr: %s", st, err);
    }
}

/* Three fresh anonymous mappings of one page each, in @m[0..2]. */
static void map_three(uint8_t *m[3])
{
    for (unsigned i = 0; i < 3; i++) {
        m[i] = mmap(NULL, PSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(m[i] != MAP_FAILED);
    }
}

static void unmap_three(uint8_t *m[3])
{
    for (unsigned i = 0; i < 3; i++) {
        munmap(m[i], PSIZE);
    }
}

/* At DONE the guard gives the fork back, but not where the process asked
 * for MADV_DONTFORK itself (as QEMU does) nor on a tracked mapping. */
static void test_fork_guard_gives_back_only_what_the_process_did_not_keep(void **state)
{
    pg_guards gs = { 0 };
    uint8_t *m[3];
    uint32_t t[3];
    int err;

    (void)state;
    map_three(m);
    for (unsigned i = 0; i < 3; i++) {
        t[i] = pg_guard_add(&gs, m[i], PSIZE, i == 2, &err);
        assert_true(t[i] != 0 && err == 0 && any_dontcopy(m[i], PSIZE));
    }
    assert_int_equal(pg_guard_madvise(&gs, m[1], PSIZE, MADV_DONTFORK), 0);
    for (unsigned i = 0; i < 3; i++) {
        pg_guard_done(&gs, t[i]);
    }
    assert_false(any_dontcopy(m[0], PSIZE)); /* given back */
    assert_true(any_dontcopy(m[1], PSIZE));  /* the process's own */
    assert_true(any_dontcopy(m[2], PSIZE));  /* tracked: until unmapped */
    unmap_three(m);
}

/* The process's MADV_DOFORK over a guarded mapping and beyond: applied at
 * once beyond it, deferred to DONE on it. */
static void test_fork_guard_defers_the_processs_dofork_to_done(void **state)
{
    pg_guards gs = { 0 };
    uint8_t *p = mmap(NULL, 3 * PSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    uint32_t t;
    int err;

    (void)state;
    assert_true(p != MAP_FAILED && madvise(p, 3 * PSIZE, MADV_DONTFORK) == 0);
    t = pg_guard_add(&gs, p + PSIZE, PSIZE, false, &err);
    assert_true(t != 0 && err == 0);
    assert_int_equal(pg_guard_madvise(&gs, p, 3 * PSIZE, MADV_DOFORK), 0);
    assert_false(any_dontcopy(p, PSIZE));
    assert_false(any_dontcopy(p + 2 * PSIZE, PSIZE));
    assert_true(any_dontcopy(p + PSIZE, PSIZE)); /* still being filled */
    pg_guard_done(&gs, t);
    assert_false(any_dontcopy(p, 3 * PSIZE));
    munmap(p, 3 * PSIZE);
}

/* A guarded mapping unmapped (or mapped over) is forgotten: its late DONE
 * leaves whatever is mapped there now alone. */
static void test_fork_guard_leaves_alone_what_replaced_its_mapping(void **state)
{
    pg_guards gs = { 0 };
    uint8_t *m[3];
    uint32_t t;
    int err;

    (void)state;
    map_three(m);
    t = pg_guard_add(&gs, m[0], PSIZE, false, &err);
    pg_guard_forget(&gs, m[0], PSIZE);
    assert_true(mmap(m[0], PSIZE, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) ==
                m[0]);
    assert_int_equal(madvise(m[0], PSIZE, MADV_DONTFORK), 0); /* the new owner's own */
    pg_guard_done(&gs, t);
    assert_true(any_dontcopy(m[0], PSIZE));
    unmap_three(m);
}

int main(int argc, char **argv)
{
    struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_vmm_asked_to_track_reads_every_byte_on_any_kernel,
                                        setup_tracking_any, teardown),
        cmocka_unit_test_setup_teardown(test_guest_ram_is_refused_to_an_unregistered_peer,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_guest_ram_reaches_an_attached_peer_with_every_byte,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_guest_ram_is_refused_to_a_peer_set_up_for_another_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guest_ram_sent_over_a_datagram_socket_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_guest_ram_sent_over_a_socket_pair_reaches_only_who_holds_the_other_end, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_guest_ram_sent_over_a_pair_a_launcher_made_reaches_an_attached_peer, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_blocked_calls_stay_cancellation_points_under_the_client, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_first_call_inside_another_threads_dlopen_does_not_deadlock, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_malformed_control_message_is_refused_by_the_kernel_not_overread, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_guest_ram_sent_to_a_peer_in_an_unseen_pid_namespace_is_refused, setup, teardown),
        cmocka_unit_test(test_attach_to_a_socket_no_daemon_serves_fails_and_starts_nothing),
        cmocka_unit_test_setup_teardown(
            test_a_preloaded_process_mapping_ram_in_two_parts_reads_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_discard_by_a_tracked_vmm_ends_the_written_list_at_once, setup_tracking,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_dontneed_by_a_tracked_vmm_ends_the_written_list_at_once, setup_tracking,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_writes_by_descriptor_or_path_by_a_tracked_vmm_end_the_written_list,
            setup_tracking, teardown),
        cmocka_unit_test_setup_teardown(test_a_pwrite_by_a_tracked_vmm_ends_the_written_list,
                                        setup_tracking, teardown),
        cmocka_unit_test_setup_teardown(test_a_collapse_by_a_tracked_vmm_ends_the_written_list,
                                        setup_tracking, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_partial_unmap_by_a_tracked_vmm_ends_the_written_list, setup_tracking,
            teardown),
        cmocka_unit_test_setup_teardown(test_a_move_by_a_tracked_vmm_ends_the_written_list,
                                        setup_tracking, teardown),
        cmocka_unit_test_setup_teardown(test_a_move_onto_a_tracked_mapping_ends_the_written_list,
                                        setup_tracking, teardown),
        cmocka_unit_test_setup_teardown(test_a_mapping_over_a_tracked_mapping_ends_the_written_list,
                                        setup_tracking, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_refused_unmap_of_a_complete_tracked_mapping_fails_and_ends_the_list,
            setup_tracking, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_refused_mapping_over_a_complete_tracked_mapping_fails_and_ends_the_list,
            setup_tracking, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_refused_move_onto_a_complete_tracked_mapping_fails_and_ends_the_list,
            setup_tracking, teardown),
        cmocka_unit_test_setup_teardown(
            test_untracked_change_the_daemon_cannot_note_is_not_made, setup_tracking, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_child_the_consumer_forks_mid_restore_gets_no_unserved_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_consumer_that_remaps_guest_ram_mid_restore_lives_and_leaks_no_fd, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_forked_childs_munmap_leaves_the_parents_mapping_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_child_forked_before_mapping_anonymous_guest_ram_is_served, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_anonymous_guest_ram_mapped_populated_is_served_from_the_snapshot, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_locked_anonymous_guest_ram_is_served_from_the_snapshot,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_refused_unmap_of_guest_ram_being_restored_ends_the_process, setup, teardown),
        cmocka_unit_test(
            test_a_registration_the_daemon_never_answers_ends_the_process_saying_so),
        cmocka_unit_test(test_fork_guard_gives_back_only_what_the_process_did_not_keep),
        cmocka_unit_test(test_fork_guard_defers_the_processs_dofork_to_done),
        cmocka_unit_test(test_fork_guard_leaves_alone_what_replaced_its_mapping),
    };

    if (argc >= 3 && !strcmp(argv[1], "vmm")) {
        return vmm_main(argv[2], argv + 3);
    }
    if (argc == 3 && !strcmp(argv[1], "discard")) {
        return discard_main(argv[2]);
    }
    if (argc == 4 && !strcmp(argv[1], "punch")) {
        return punch_main(argv[2], argv[3]);
    }
    if (argc == 4 && !strcmp(argv[1], "forker")) {
        return forker_main(argv[2], argv[3]);
    }
    if (argc == 3 && !strcmp(argv[1], "parts")) {
        return parts_main(argv[2]);
    }
    if (argc == 3 && !strcmp(argv[1], "remapper")) {
        return remapper_main(argv[2]);
    }
    if (argc == 3 && !strcmp(argv[1], "fork-unmapper")) {
        return fork_unmapper_main(argv[2]);
    }
    if (argc == 5 && !strcmp(argv[1], "send-over")) {
        return send_over_main(argv[2], argv[3], argv[4]);
    }
    if (argc == 4 && !strcmp(argv[1], "dlopen-wait")) {
        return dlopen_wait_main(argv[2], argv[3]);
    }
    if (argc == 2 && !strcmp(argv[1], "hold-stdin")) {
        return hold_stdin_main();
    }
    if (argc == 5 && !strcmp(argv[1], "send-fd")) {
        return send_fd_main(argv[2], atoi(argv[3]), atoi(argv[4]));
    }
    if (argc == 3 && !strcmp(argv[1], "recv-forking")) {
        return recv_forking_main(atoi(argv[2]));
    }
    if (argc == 3 && !strcmp(argv[1], "cancel")) {
        return cancel_main(argv[2]);
    }
    if (argc == 3 && !strcmp(argv[1], "fork-first")) {
        return fork_first_main(argv[2]);
    }
    if (argc == 3 && !strcmp(argv[1], "bad-unmapper")) {
        return bad_unmapper_main(argv[2]);
    }
    if (argc == 4 && !strcmp(argv[1], "populated")) {
        return populated_main(argv[2], argv[3]);
    }
    if (argc == 3 && !strcmp(argv[1], "read-all")) {
        return read_all_main(argv[2]);
    }
    if (argc == 3 && !strcmp(argv[1], "map-once")) {
        return map_once_main(argv[2]);
    }
    if (argc == 3 && !strcmp(argv[1], "backend")) {
        return backend_main(argv[2]);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(tests); i++) {
        if (tests[i].setup_func == setup_tracking &&
            !sl_uffd_has_features(SL_UFFD_TRACK_FEATURES)) { /* Debian 12's 6.1 */
            sl_test_skip_as_absent(&tests[i], "uffd-wp-async", "a tracked VMM needs asynchronous "
                                   "uffd write-protection (Linux 6.7+); without it its views "
                                   "are registered plainly and no list is kept");
        }
    }
    if (g_getenv("SL_TEST_FILTER")) { /* e.g. "*fork*": run only matching cases */
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    return cmocka_run_group_tests_name("handoff", tests, NULL, NULL);
}
