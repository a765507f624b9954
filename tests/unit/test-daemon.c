/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore daemon with real consumer processes: the wire protocol on
 * well-formed and hostile packets, a VMM-like consumer plus a vhost-user-like
 * one that joins mid-restore (each sees correct bytes on every page), hostile
 * peers dropped while a good consumer completes, the socket's mode, and the
 * daemon killed mid-restore: the consumer is ended by its supervisor and
 * never reads a page that should not be zero.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "testutil.h"
#include "backends/backend.h"
#include "migration/format.h"
#include "migration/protocol.h"
#include "migration/uffd.h"
#include "tools/wire.h"
#include "tools/daemon.h"

#define PSIZE 4096u

/* ------------------------------ protocol --------------------------------- */

static void test_messages_round_trip(void **state)
{
    sl_msg in = { .type = SL_MSG_REGISTER }, out;
    uint8_t buf[SL_PROTO_MAX];
    g_autoptr(GError) err = NULL;
    size_t n;

    g_strlcpy(in.u.reg.block, "pc.ram", sizeof(in.u.reg.block));
    in.u.reg.host_addr = 0x7f0000000000;
    in.u.reg.length = 1u << 30;
    in.u.reg.page_size = 2u << 20;
    n = sl_msg_encode(&in, buf);
    assert_true(sl_msg_decode(buf, n, &out, &err));
    assert_int_equal(out.type, SL_MSG_REGISTER);
    assert_string_equal(out.u.reg.block, "pc.ram");
    assert_int_equal(out.u.reg.host_addr, in.u.reg.host_addr);
    assert_int_equal(out.u.reg.page_size, 2u << 20);
}

static void test_hostile_packets_are_rejected_by_name(void **state)
{
    sl_msg m = { .type = SL_MSG_HELLO, .u.hello = { 1, 1, "x" } }, out;
    uint8_t good[SL_PROTO_MAX], buf[SL_PROTO_MAX];
    size_t n = sl_msg_encode(&m, good);
    struct { size_t off; uint8_t val; const char *word; } cases[] = {
        { 0, 0x00, "magic" }, { 4, 2, "version" }, { 6, 99, "unknown message type" },
        { 8, 7, "length" }, { 12, 1, "reserved" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        GError *err = NULL;
        memcpy(buf, good, n);
        buf[cases[i].off] = cases[i].val;
        assert_false(sl_msg_decode(buf, n, &out, &err));
        assert_non_null(strstr(err->message, cases[i].word));
        g_error_free(err);
    }
    for (size_t len = 0; len < n; len++) { /* every truncation */
        GError *err = NULL;
        assert_false(sl_msg_decode(good, len, &out, &err));
        g_error_free(err);
    }
    memcpy(buf, good, n);
    memset(buf + SL_PROTO_HDR + 8, 'A', 32); /* name without NUL */
    {
        GError *err = NULL;
        assert_false(sl_msg_decode(buf, n, &out, &err));
        assert_non_null(strstr(err->message, "NUL"));
        g_error_free(err);
    }
}

static void test_random_packets_never_crash_the_decoder(void **state)
{
    GRand *rng = g_rand_new_with_seed(5);
    uint8_t buf[SL_PROTO_MAX];
    unsigned accepted = 0;

    for (unsigned i = 0; i < 50000; i++) {
        size_t len = (size_t)g_rand_int_range(rng, 0, SL_PROTO_MAX);
        GError *err = NULL;
        sl_msg out;
        for (size_t k = 0; k < len; k++) {
            buf[k] = (uint8_t)g_rand_int(rng);
        }
        if (len >= SL_PROTO_HDR && i % 2) { /* half with a valid-looking header */
            sl_put_le32(buf, SL_PROTO_MAGIC);
            buf[4] = 1, buf[5] = 0, buf[6] = (uint8_t)(i % 6), buf[7] = 0;
            sl_put_le32(buf + 8, (uint32_t)(len - SL_PROTO_HDR));
            sl_put_le32(buf + 12, 0);
        }
        if (sl_msg_decode(buf, len, &out, &err)) {
            accepted++;
            assert_true(out.type >= SL_MSG_HELLO && out.type <= SL_MSG_DONE);
        } else {
            assert_non_null(err);
            g_error_free(err);
        }
    }
    g_rand_free(rng);
    assert_true(accepted > 0); /* the valid-header half reaches the payload checks */
}

/* ------------------------- daemon with consumers ------------------------- */

/* Shared with the consumer children (MAP_SHARED). */
typedef struct {
    _Atomic uint64_t touched, bad;
    uint64_t notify_at;   /* set before the children fork: when touched reaches it... */
    int efd;              /* ...the child that got there writes this eventfd */
} shared_counts;

/* A child touched one more page; the one reaching notify_at tells the parent. */
static void count_touch(shared_counts *c)
{
    uint64_t one = 1;

    if (atomic_fetch_add(&c->touched, 1) + 1 == c->notify_at) {
        (void)!write(c->efd, &one, sizeof(one));
    }
}

/* Parent: waits (bounded, no polling loop) until children touched notify_at pages. */
static void wait_touched(shared_counts *c)
{
    struct pollfd p = { .fd = c->efd, .events = POLLIN };
    uint64_t v;

    if (poll(&p, 1, 60000) != 1 || read(c->efd, &v, sizeof(v)) != sizeof(v)) {
        fail_msg("consumers touched %" G_GUINT64_FORMAT " pages, not %" G_GUINT64_FORMAT,
                 (uint64_t)atomic_load(&c->touched), c->notify_at);
    }
}

typedef struct {
    char *dir, *snap, *sock;
    uint64_t len, hugepage;
    pid_t daemon;
    int memfd;
    int hello_timeout_ms;   /* 0: the daemon's default */
    shared_counts *counts;
} fixture;

static bool need(uint64_t hugepage, uint64_t len)
{
    g_autofree char *why = NULL;
    g_autoptr(GError) err = NULL;
    bool have = sl_test_have_uffd(&why);

    SL_TEST_NEED("uffd", have, why);
    if (hugepage) {
        have = sl_hugetlb_check(hugepage, len / hugepage, &err);
        SL_TEST_NEED("hugepages", have, err->message);
    }
    return true;
}

/* Snapshot, memory file, daemon child; waits until the socket accepts. */
static void setup_daemon(fixture *f, uint64_t len, uint64_t hugepage, int threads)
{
    uint64_t lengths[1] = { len };
    int ready[2];
    char byte;
    sl_daemon_opts o = { .exit_when_done = true, .quiet = true, .ready_fd = -1, .stats_fd = -1,
                         .hello_timeout_ms = f->hello_timeout_ms };

    need(hugepage, len);
    f->len = len;
    f->hugepage = hugepage;
    f->dir = sl_test_tmpdir();
    f->snap = g_build_filename(f->dir, "snap", NULL);
    f->sock = g_build_filename(f->dir, "sock", NULL);
    sl_test_make_snapshot(f->snap, lengths, 1, PSIZE, 4, 0);
    f->memfd = hugepage ? sl_hugetlb_unlinked_fd(hugepage) : memfd_create("guest", MFD_CLOEXEC);
    assert_true(f->memfd >= 0);
    assert_int_equal(ftruncate(f->memfd, (off_t)len), 0);
    f->counts = mmap(NULL, sizeof(shared_counts), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    f->counts->efd = eventfd(0, EFD_CLOEXEC);
    assert_true(pipe2(ready, O_CLOEXEC) == 0 && f->counts->efd >= 0);
    o.ready_fd = ready[1];
    o.snapshot = f->snap;
    o.socket = f->sock;
    o.cfg = (sl_restore_config){ .size = sizeof(o.cfg), .loader_threads = 1,
                                 .no_loaders = threads == 0 };
    f->daemon = fork();
    if (f->daemon == 0) {
        close(ready[0]);
        _exit(sl_daemon_run(&o));
    }
    close(ready[1]);
    /* One byte once the socket listens; EOF if the daemon died first. */
    assert_int_equal(read(ready[0], &byte, 1), 1);
    close(ready[0]);
    assert_int_equal(access(f->sock, F_OK), 0);
}

static int fixture_teardown(void **state)
{
    fixture *f = *state;

    if (f->daemon > 0) {
        kill(f->daemon, SIGKILL);
        waitpid(f->daemon, NULL, 0);
    }
    if (f->memfd > 0) {
        close(f->memfd);
    }
    if (f->counts) {
        close(f->counts->efd);
        munmap(f->counts, sizeof(*f->counts));
    }
    if (f->dir) {
        sl_test_rmdir(f->dir);
    }
    g_free(f->snap);
    g_free(f->sock);
    g_free(f);
    return 0;
}

static int fixture_setup(void **state)
{
    *state = g_new0(fixture, 1);
    return 0;
}

/* Consumer body: map, register, then read every page (@step apart) and check. */
static int consume(fixture *f, const char *name, uint64_t step)
{
    g_autoptr(GError) err = NULL;
    g_autofree uint8_t *want = g_malloc(PSIZE);
    uint8_t *p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    int sock = sl_client_connect(f->sock, name, &err);
    int uffd = sock < 0 ? -1 : sl_client_register(sock, "b0", p, f->len, f->memfd, 0, &err);

    if (uffd < 0) {
        fprintf(stderr, "consumer %s: %s\n", name, err ? err->message : "?");
        return 30;
    }
    for (uint64_t i = 0; i < f->len / PSIZE; i += step) {
        sl_test_fill_page(want, PSIZE, i, 1, 4);
        if (memcmp(want, p + i * PSIZE, PSIZE) != 0) {
            atomic_fetch_add(&f->counts->bad, 1);
        }
        count_touch(f->counts);
    }
    return sl_client_wait_done(sock) ? 0 : 31;
}

static pid_t spawn_consumer(fixture *f, const char *name, uint64_t step)
{
    pid_t pid = fork();

    if (pid == 0) {
        signal(SIGBUS, SIG_DFL);
        _exit(consume(f, name, step));
    }
    return pid;
}

static void expect_exit(pid_t pid, int code)
{
    int status;

    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != code) {
        fail_msg("pid %d: %s %d, expected exit %d", (int)pid,
                 WIFEXITED(status) ? "exited" : "signal", WIFEXITED(status)
                 ? WEXITSTATUS(status) : WTERMSIG(status), code);
    }
}

static void run_vmm_and_backend(fixture *f, uint64_t hugepage)
{
    pid_t vmm, backend;

    setup_daemon(f, 64u << 20, hugepage, 1);
    f->counts->notify_at = 64; /* let the VMM start the restore first */
    vmm = spawn_consumer(f, "vmm", 1);
    wait_touched(f->counts);
    backend = spawn_consumer(f, "vhost-user", 3); /* joins while it runs */
    expect_exit(vmm, 0);
    expect_exit(backend, 0);
    expect_exit(f->daemon, 0); /* complete, every client gone: exit 0 */
    f->daemon = 0;
    assert_true(atomic_load(&f->counts->touched) > 0);
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

static void test_shmem_vmm_and_late_backend_see_correct_bytes(void **state)
{
    run_vmm_and_backend(*state, 0);
}

static void test_hugetlbfs_vmm_and_late_backend_see_correct_bytes(void **state)
{
    run_vmm_and_backend(*state, 2u << 20);
}

/* Connects raw and sends @n bytes of @pkt (+ fds); true if the daemon hung up. */
static bool hostile(const char *path, const void *pkt, size_t n, int fd1, int fd2)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int s = socket(AF_UNIX, SOCK_SEQPACKET, 0), fds[2] = { fd1, fd2 };
    char cbuf[CMSG_SPACE(sizeof(fds))] = { 0 }, rbuf[SL_PROTO_MAX];
    struct iovec iov = { .iov_base = (void *)pkt, .iov_len = n };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    ssize_t got;

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    if (fd1 >= 0) {
        struct cmsghdr *cm;
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof(cbuf);
        cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(fds));
        memcpy(CMSG_DATA(cm), fds, sizeof(fds));
    }
    sendmsg(s, &mh, MSG_NOSIGNAL);
    while ((got = recv(s, rbuf, sizeof(rbuf), 0)) > 0) {
        /* an error reply may come first; then the hang-up */
    }
    close(s);
    return got == 0;
}

static void test_hostile_peers_are_dropped_and_a_good_one_completes(void **state)
{
    fixture *f = *state;
    uint8_t pkt[SL_PROTO_MAX];
    sl_msg reg = { .type = SL_MSG_REGISTER };
    int devnull = open("/dev/null", O_RDWR);
    struct stat st;
    pid_t good;

    setup_daemon(f, 16u << 20, 0, 1);
    assert_int_equal(stat(f->sock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_true(hostile(f->sock, "garbage", 7, -1, -1));
    g_strlcpy(reg.u.reg.block, "b0", sizeof(reg.u.reg.block));
    reg.u.reg.length = f->len;
    reg.u.reg.page_size = PSIZE;
    /* REGISTER without HELLO, with fds that are not a uffd nor a memory file. */
    assert_true(hostile(f->sock, pkt, sl_msg_encode(&reg, pkt), devnull, devnull));
    good = spawn_consumer(f, "good", 1);
    expect_exit(good, 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
    close(devnull);
}

static void test_register_errors_name_the_problem(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    uint8_t *p;
    int sock;

    setup_daemon(f, 16u << 20, 0, 1);
    p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    sock = sl_client_connect(f->sock, "t", &err);
    assert_true(sock >= 0);
    assert_true(sl_client_register(sock, "nope", p, f->len, f->memfd, 0, &err) < 0);
    assert_non_null(strstr(err->message, "no block 'nope'"));
    close(sock);
    g_clear_error(&err);
    sock = sl_client_connect(f->sock, "t", &err);
    assert_true(sl_client_register(sock, "b0", p, f->len - 2 * PSIZE, f->memfd, 0, &err) < 0);
    assert_non_null(strstr(err->message, "length"));
    close(sock);
    munmap(p, f->len);
}

/* ------------------- REGISTERs the kernel's view contradicts ------------------- */

typedef enum {
    BAD_NOT_UFFD, BAD_FILE_KIND, BAD_PAGE_SIZE, BAD_OFFSET, BAD_ADDRESS, BAD_NO_HANDSHAKE,
    BAD_NOT_MAPPED, BAD_OTHER_FILE,
} bad_kind;

static const struct {
    bad_kind kind;
    const char *expect;     /* in the daemon's answer */
} bad_registers[] = {
    { BAD_NOT_UFFD, "not a userfaultfd" },
    { BAD_FILE_KIND, "not on tmpfs or hugetlbfs" },
    { BAD_PAGE_SIZE, "page size 8192" },
    { BAD_OFFSET, "offset 100" },
    { BAD_ADDRESS, "address 0x" },
    { BAD_NO_HANDSHAKE, "lack 0x" },
    { BAD_NOT_MAPPED, "not a shared mapping of the memory file" },
    { BAD_OTHER_FILE, "not the memory file and offset its first consumer registered" },
};

/* What one bad REGISTER carries, and what it needs released afterwards. */
typedef struct {
    sl_msg m;
    int fds[2];
    void *map;
    int close_fds[2];
} bad_packet;

/* A uffd registered on [p, p+len) (MISSING|MINOR for shmem, MISSING for
 * anonymous memory), or one never handshaken. */
static int uffd_on(void *p, uint64_t len, bool handshake, bool anon)
{
    g_autoptr(GError) err = NULL;
    uint64_t feat = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM;
    int uffd = handshake ? sl_uffd_open(feat, 0, NULL, &err)
                         : (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

    assert_true(uffd >= 0);
    if (handshake) {
        assert_true(sl_uffd_register(uffd, p, len, UFFDIO_REGISTER_MODE_MISSING |
                                     (anon ? 0 : UFFDIO_REGISTER_MODE_MINOR), 0, NULL, &err));
    }
    return uffd;
}

/* A REGISTER of block b0 that is right but for @kind. */
static void build_bad(fixture *f, bad_kind kind, bad_packet *b)
{
    bool anon = kind == BAD_NOT_MAPPED;
    int file = f->memfd;

    if (kind == BAD_OTHER_FILE) {
        file = memfd_create("other", MFD_CLOEXEC);
        assert_int_equal(ftruncate(file, (off_t)f->len), 0);
    }
    b->map = mmap(NULL, f->len, PROT_READ | PROT_WRITE, anon ? MAP_PRIVATE | MAP_ANONYMOUS
                  : MAP_SHARED, anon ? -1 : file, 0);
    assert_true(b->map != MAP_FAILED);
    b->m = (sl_msg){ .type = SL_MSG_REGISTER };
    b->m.u.reg = (sl_msg_register){ .host_addr = (uintptr_t)b->map, .length = f->len,
                                    .page_size = PSIZE };
    g_strlcpy(b->m.u.reg.block, "b0", sizeof(b->m.u.reg.block));
    b->fds[0] = kind == BAD_NOT_UFFD ? eventfd(0, EFD_CLOEXEC)
                                     : uffd_on(b->map, f->len, kind != BAD_NO_HANDSHAKE, anon);
    b->fds[1] = kind == BAD_FILE_KIND ? open("/proc/self/exe", O_RDONLY | O_CLOEXEC) : file;
    b->close_fds[0] = b->fds[0];
    b->close_fds[1] = file != f->memfd ? file : b->fds[1] != f->memfd ? b->fds[1] : -1;
    b->m.u.reg.page_size = kind == BAD_PAGE_SIZE ? 8192 : PSIZE;
    b->m.u.reg.file_offset = kind == BAD_OFFSET ? 100 : 0;
    b->m.u.reg.host_addr += kind == BAD_ADDRESS ? 100 : 0;
}

/* Sends @b on a fresh greeted connection; returns the daemon's answer, then
 * checks that it hung up. */
static char *send_bad(fixture *f, bad_packet *b)
{
    g_autoptr(GError) err = NULL;
    uint8_t buf[SL_PROTO_MAX];
    int fds[SL_WIRE_MAX_FDS];
    unsigned nfds;
    bool trunc;
    int sock = sl_client_connect(f->sock, "bad", &err);
    ssize_t n;
    sl_msg reply;

    assert_true(sock >= 0);
    assert_true(sl_wire_send(sock, &b->m, b->fds, 2));
    n = sl_wire_recv(sock, buf, fds, &nfds, &trunc);
    assert_true(n > 0 && sl_msg_decode(buf, (size_t)n, &reply, &err));
    assert_int_equal(reply.type, SL_MSG_REGISTERED);
    assert_int_not_equal(reply.u.status.status, 0);
    assert_int_equal(sl_wire_recv(sock, buf, fds, &nfds, &trunc), 0); /* dropped */
    close(sock);
    return g_strdup(reply.u.status.message);
}

static void release_bad(fixture *f, bad_packet *b)
{
    munmap(b->map, f->len);
    for (unsigned i = 0; i < 2; i++) {
        if (b->close_fds[i] >= 0) {
            close(b->close_fds[i]);
        }
    }
}

/*
 * Every REGISTER that names what the kernel contradicts (fd kinds, sizes,
 * alignment, the uffd's handshake, the mapping, the file) is answered with
 * the reason and dropped; a good consumer then completes.
 */
static void test_register_contradicted_by_the_kernel_is_refused(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    uint8_t *p, *p2;
    int sock;
    pid_t good;

    setup_daemon(f, 4u << 20, 0, 0); /* faults only: open until the good consumer's reads */
    /* The block's first consumer, so that a different file can be told. */
    p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    sock = sl_client_connect(f->sock, "first", &err);
    assert_true(sock >= 0 && sl_client_register(sock, "b0", p, f->len, f->memfd, 0, &err) >= 0);
    p2 = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    assert_true(sl_client_register(sock, "b0", p2, f->len, f->memfd, 0, &err) < 0);
    if (!strstr(err->message, "registered twice")) {
        fail_msg("second REGISTER on one connection: %s", err->message);
    }
    g_clear_error(&err);
    close(sock);
    munmap(p2, f->len);
    for (unsigned i = 0; i < G_N_ELEMENTS(bad_registers); i++) {
        bad_packet b;
        g_autofree char *answer = NULL;
        build_bad(f, bad_registers[i].kind, &b);
        answer = send_bad(f, &b);
        if (!strstr(answer, bad_registers[i].expect)) {
            fail_msg("case %u: answer \"%s\", expected \"%s\"", i, answer,
                     bad_registers[i].expect);
        }
        release_bad(f, &b);
    }
    good = spawn_consumer(f, "good", 1);
    expect_exit(good, 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
    munmap(p, f->len);
}

/*
 * A consumer whose uffd stops covering its mapping after it registered
 * (it unregistered the range) cannot be served: the daemon drops that
 * client alone, with the reason, and the restore goes on for the others.
 */
static void test_misbehaving_view_is_dropped_and_the_restore_goes_on(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    uint8_t *q;
    int sock, uffd;
    pid_t good;

    setup_daemon(f, 16u << 20, 0, 0); /* faults only: every page goes through show_everywhere */
    q = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    sock = sl_client_connect(f->sock, "liar", &err);
    uffd = sock < 0 ? -1 : sl_client_register(sock, "b0", q, f->len, f->memfd, 0, &err);
    assert_true(uffd >= 0);
    assert_int_equal(sl_uffd_unregister(uffd, q, f->len), 0);
    good = spawn_consumer(f, "good", 1);
    assert_false(sl_client_wait_done(sock)); /* dropped: the socket closes, no DONE */
    expect_exit(good, 0);
    close(sock);
    close(uffd);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
    munmap(q, f->len);
}

/* A consumer that touches @n pages and leaves without waiting for DONE. */
static pid_t spawn_passing(fixture *f, uint64_t n)
{
    pid_t pid = fork();

    if (pid == 0) {
        g_autoptr(GError) err = NULL;
        uint8_t *p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
        int sock = sl_client_connect(f->sock, "passing", &err);
        volatile uint8_t sum = 0;
        if (sock < 0 || sl_client_register(sock, "b0", p, f->len, f->memfd, 0, &err) < 0) {
            fprintf(stderr, "passing consumer: %s\n", err ? err->message : "?");
            _exit(30);
        }
        for (uint64_t i = 0; i < n; i++) {
            sum += p[(i * 7919 % (f->len / PSIZE)) * PSIZE];
        }
        _exit(0);
    }
    return pid;
}

/* Consumers come and go, more of them than a block has view slots: each
 * one that leaves frees its slot, and a last one completes the restore. */
static void test_consumers_that_leave_free_their_views(void **state)
{
    fixture *f = *state;
    pid_t last;

    setup_daemon(f, 16u << 20, 0, 0);
    for (unsigned i = 0; i < SL_MAX_VIEWS + 4; i++) {
        expect_exit(spawn_passing(f, 8), 0);
    }
    last = spawn_consumer(f, "last", 1);
    expect_exit(last, 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

/* One consumer is killed mid-restore; another, joining after, sees every page right. */
static void test_consumer_killed_mid_restore_leaves_the_others_unharmed(void **state)
{
    fixture *f = *state;
    pid_t victim, other;
    int status;

    setup_daemon(f, 64u << 20, 0, 1);
    f->counts->notify_at = 64;
    victim = spawn_consumer(f, "victim", 1);
    wait_touched(f->counts);
    kill(victim, SIGKILL);
    assert_int_equal(waitpid(victim, &status, 0), victim);
    other = spawn_consumer(f, "other", 1);
    expect_exit(other, 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

/* A consumer that registers after completion gets DONE at once (its supervisor
 * would otherwise end it when the daemon leaves). */
static void test_consumer_joining_after_completion_gets_done(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    int holder;

    setup_daemon(f, 8u << 20, 0, 1);
    holder = sl_client_connect(f->sock, "holder", &err); /* keeps the daemon up */
    assert_true(holder >= 0);
    expect_exit(spawn_consumer(f, "vmm", 1), 0);          /* completes the restore */
    expect_exit(spawn_consumer(f, "late", 1), 0);         /* REGISTERED, then DONE */
    close(holder);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

/* A connection that never says HELLO is dropped after the timeout. */
static void test_silent_connection_is_dropped_after_the_hello_timeout(void **state)
{
    fixture *f = *state;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct pollfd p = { .fd = s, .events = POLLIN };
    gint64 t0;
    char c;

    f->hello_timeout_ms = 200;
    setup_daemon(f, 4u << 20, 0, 1);
    g_strlcpy(a.sun_path, f->sock, sizeof(a.sun_path));
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    t0 = g_get_monotonic_time();
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_int_equal(recv(s, &c, 1, 0), 0);
    assert_true(g_get_monotonic_time() - t0 >= 150000);
    close(s);
}

/* A peer of another uid (not root) is refused even where the socket's
 * permissions would let it connect. */
static void test_peer_of_another_uid_is_refused(void **state)
{
    fixture *f = *state;
    pid_t pid;

    if (getuid() != 0) {
        print_message("# SKIP: needs root to connect as another uid\n");
        skip();
    }
    setup_daemon(f, 4u << 20, 0, 1);
    assert_int_equal(chmod(f->dir, 0755), 0);
    assert_int_equal(chmod(f->sock, 0666), 0);
    pid = fork();
    if (pid == 0) {
        g_autoptr(GError) err = NULL;
        int sock;
        if (setgid(65534) < 0 || setuid(65534) < 0) {
            _exit(40);
        }
        sock = sl_client_connect(f->sock, "stranger", &err);
        /* Closed at accept: the HELLO meets a closed or reset connection. */
        if (sock >= 0 || (!strstr(err->message, "connection closed") &&
                          !strstr(err->message, g_strerror(ECONNRESET)))) {
            fprintf(stderr, "stranger: %s\n", sock >= 0 ? "welcomed" : err->message);
            _exit(41);
        }
        _exit(0);
    }
    expect_exit(pid, 0);
}

/* The restore cannot start (the memory file is sealed against writes, so
 * the fill alias cannot be mapped): the consumer is told why, and the
 * daemon ends with an error instead of waiting with nobody serving. */
static void test_restore_that_cannot_start_ends_the_daemon(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    int sealed = memfd_create("sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    uint8_t *p;
    int sock;

    setup_daemon(f, 4u << 20, 0, 1);
    assert_int_equal(ftruncate(sealed, (off_t)f->len), 0);
    p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, sealed, 0);
    assert_true(p != MAP_FAILED);
    assert_int_equal(fcntl(sealed, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), 0);
    sock = sl_client_connect(f->sock, "sealed", &err);
    assert_true(sock >= 0);
    assert_true(sl_client_register(sock, "b0", p, f->len, sealed, 0, &err) < 0);
    if (!strstr(err->message, "fill alias")) {
        fail_msg("unexpected answer: %s", err->message);
    }
    expect_exit(f->daemon, 1);
    f->daemon = 0;
    close(sock);
    munmap(p, f->len);
    close(sealed);
}

static void die_now(void)
{
    static const char msg[] = "consumer: restore daemon died; guest memory incomplete, ending\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    kill(getpid(), SIGKILL);
}

static void test_daemon_death_ends_consumer_without_zero_pages(void **state)
{
    fixture *f = *state;
    pid_t pid;
    int status;

    setup_daemon(f, 64u << 20, 0, 0); /* faults only: the restore stays open */
    f->counts->notify_at = 200;
    pid = fork();
    if (pid == 0) {
        g_autoptr(GError) err = NULL;
        g_autofree uint8_t *want = g_malloc(PSIZE);
        uint8_t *p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
        int sock = sl_client_connect(f->sock, "vmm", &err);
        if (sock < 0 || sl_client_register(sock, "b0", p, f->len, f->memfd, 0, &err) < 0) {
            _exit(30);
        }
        sl_client_supervise(sock, die_now);
        for (uint64_t i = 0; i < f->len / PSIZE; i++) {
            sl_test_fill_page(want, PSIZE, i, 1, 4);
            atomic_fetch_add(&f->counts->bad, memcmp(want, p + i * PSIZE, PSIZE) != 0);
            count_touch(f->counts);
            g_usleep(100); /* a slow guest, so the daemon dies mid-restore */
        }
        _exit(0);
    }
    wait_touched(f->counts);
    kill(f->daemon, SIGKILL);
    waitpid(f->daemon, NULL, 0);
    f->daemon = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_true(atomic_load(&f->counts->touched) < f->len / PSIZE);
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages_round_trip),
        cmocka_unit_test(test_hostile_packets_are_rejected_by_name),
        cmocka_unit_test(test_random_packets_never_crash_the_decoder),
        cmocka_unit_test_setup_teardown(test_shmem_vmm_and_late_backend_see_correct_bytes,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_hugetlbfs_vmm_and_late_backend_see_correct_bytes,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_peers_are_dropped_and_a_good_one_completes,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_register_errors_name_the_problem,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_daemon_death_ends_consumer_without_zero_pages,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_register_contradicted_by_the_kernel_is_refused,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_misbehaving_view_is_dropped_and_the_restore_goes_on,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_consumers_that_leave_free_their_views,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_consumer_killed_mid_restore_leaves_the_others_unharmed, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_consumer_joining_after_completion_gets_done,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_silent_connection_is_dropped_after_the_hello_timeout,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_peer_of_another_uid_is_refused, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_restore_that_cannot_start_ends_the_daemon,
                                        fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
