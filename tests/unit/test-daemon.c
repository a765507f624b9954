/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore daemon with real consumer processes: the wire protocol on
 * well-formed and hostile packets, a VMM-like consumer plus a vhost-user-like
 * one that joins mid-restore (each sees correct bytes on every page), hostile
 * peers dropped while a good consumer completes, the socket's mode, and the
 * daemon killed mid-restore: the consumer is ended by its supervisor and
 * never reads a page that should not be zero.  Also the daemon's limits:
 * silent peers timed out (before and after HELLO) so they cannot hold every
 * client slot, consumers sent DONE not holding one, a thousand consumers
 * coming and going without costing it an fd, uffds with features it does not serve refused by name, and a daemon
 * out of fds saying so instead of blaming the consumer's uffd.  And the
 * written-page lists of qemu-restore --reuse-ram: tracked consumers'
 * writes listed exactly, used once by the next run, refused when they do
 * not match.  And a child whose parent moved, served with the parent
 * given (serve and qemu-restore --parent).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>
#include <unistd.h>
#include "testutil.h"
#include "backends/backend.h"
#include "migration/busy.h"
#include "migration/format/format.h"
#include "migration/protocol.h"
#include "migration/uffd.h"
#include "tools/wire.h"
#include "tools/mover.h"
#include "tools/daemon.h"
#include "tools/written.h"

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

    in = (sl_msg){ .type = SL_MSG_WRITTEN_QUERY };
    g_strlcpy(in.u.query.block, "ram0", sizeof(in.u.query.block));
    memset(in.u.query.identity, 0xa5, sizeof(in.u.query.identity));
    assert_true(sl_msg_decode(buf, sl_msg_encode(&in, buf), &out, &err));
    assert_string_equal(out.u.query.block, "ram0");
    assert_memory_equal(out.u.query.identity, in.u.query.identity, SL_PROTO_IDENTITY);
    in = (sl_msg){ .type = SL_MSG_WRITTEN_PAGES, .u.wpages = { .status = -61, .pages = 1u << 20,
                                                                .written = 3, .message = "why" } };
    assert_true(sl_msg_decode(buf, sl_msg_encode(&in, buf), &out, &err));
    assert_int_equal(out.u.wpages.status, -61);
    assert_int_equal(out.u.wpages.pages, 1u << 20);
    assert_int_equal(out.u.wpages.written, 3);
    assert_string_equal(out.u.wpages.message, "why");
    in = (sl_msg){ .type = SL_MSG_REGISTER_MOVER,
                   .u.reg = { .block = "pc.ram", .host_addr = 0x7f0000200000, .length = 1u << 30,
                              .page_size = 4096, .staging_addr = 0x7f1000000000,
                              .staging_slots = 4 } };
    assert_true(sl_msg_decode(buf, sl_msg_encode(&in, buf), &out, &err));
    assert_int_equal(out.u.reg.staging_addr, 0x7f1000000000);
    assert_int_equal(out.u.reg.staging_slots, 4);
    assert_int_equal(out.u.reg.length, 1u << 30);
    in = (sl_msg){ .type = SL_MSG_MOVE, .u.move = { .slot = 3, .dst = 0x7f0000400000,
                                                    .len = 2u << 20, .deadline_ns = 77 } };
    assert_true(sl_msg_decode(buf, sl_msg_encode(&in, buf), &out, &err));
    assert_int_equal(out.u.move.deadline_ns, 77);
    assert_int_equal(out.u.move.slot, 3);
    assert_int_equal(out.u.move.dst, 0x7f0000400000);
    assert_int_equal(out.u.move.len, 2u << 20);
    in = (sl_msg){ .type = SL_MSG_MOVED, .u.moved = { .status = -16, .done = 1u << 20,
                                                      .dst = 0x7f0000400000 } };
    assert_true(sl_msg_decode(buf, sl_msg_encode(&in, buf), &out, &err));
    assert_int_equal(out.u.moved.status, -16);
    assert_int_equal(out.u.moved.done, 1u << 20);
    assert_int_equal(out.u.moved.dst, 0x7f0000400000);
}

/*
 * A MOVE, MOVED or REGISTER_MOVER whose fields no honest peer sends
 * (staging slots unaligned or too many, a chunk too large, a positive
 * status) is refused by the decoder, naming the field.
 */
static void test_mover_messages_with_impossible_fields_are_refused(void **state)
{
    const struct {
        sl_msg m;
        const char *word;
    } cases[] = {
        { { .type = SL_MSG_REGISTER_MOVER,
            .u.reg = { .block = "b0", .staging_addr = 4096, .staging_slots = 1 } }, "aligned" },
        { { .type = SL_MSG_REGISTER_MOVER,
            .u.reg = { .block = "b0", .staging_addr = 2u << 20, .staging_slots = 0 } },
          "staging slots" },
        { { .type = SL_MSG_REGISTER_MOVER,
            .u.reg = { .block = "b0", .staging_addr = 2u << 20,
                       .staging_slots = SL_MOVE_MAX_SLOTS + 1 } }, "staging slots" },
        { { .type = SL_MSG_MOVE, .u.move = { .len = 0 } }, "MOVE of 0 bytes" },
        { { .type = SL_MSG_MOVE, .u.move = { .len = SL_MOVE_CHUNK + 1 } }, "MOVE of" },
        { { .type = SL_MSG_MOVED, .u.moved = { .status = 5 } }, "status 5" },
    };
    uint8_t buf[SL_PROTO_MAX];
    sl_msg out;

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        GError *err = NULL;
        assert_false(sl_msg_decode(buf, sl_msg_encode(&cases[i].m, buf), &out, &err));
        if (!strstr(err->message, cases[i].word)) {
            fail_msg("case %zu: '%s' does not name '%s'", i, err->message, cases[i].word);
        }
        g_error_free(err);
    }
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

/*
 * A block name that no snapshot could have (a control character, invalid
 * UTF-8) is refused by the decoder in every message that carries one, so a
 * peer cannot write lines of its own into the daemon's log.
 */
static void test_unprintable_block_names_are_rejected_by_the_decoder(void **state)
{
    static const uint16_t types[] = { SL_MSG_REGISTER, SL_MSG_REGISTER_WP, SL_MSG_WRITTEN,
                                      SL_MSG_WRITTEN_QUERY, SL_MSG_UNTRACKED,
                                      SL_MSG_REGISTER_MOVER };
    static const char *const names[] = { "b0\nsnapload serve: restore complete", "b0\033[2J",
                                         "b0\xff" };
    uint8_t buf[SL_PROTO_MAX];
    sl_msg out;

    for (size_t t = 0; t < G_N_ELEMENTS(types); t++) {
        for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
            g_autoptr(GError) err = NULL;
            sl_msg m = { .type = types[t] }; /* every block name sits first in the union */
            g_strlcpy(m.u.reg.block, names[i], sizeof(m.u.reg.block));
            assert_false(sl_msg_decode(buf, sl_msg_encode(&m, buf), &out, &err));
            assert_non_null(strstr(err->message, "not printable"));
        }
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
    _Atomic unsigned registered; /* consumers whose REGISTER was answered */
    unsigned hold_until;  /* set before the fork: a consumer stays connected until
                           * this many have registered (0: does not wait) */
    uint64_t notify_at;   /* set before the children fork: when touched reaches it... */
    int efd;              /* ...the child that got there writes this eventfd */
    uint64_t thp_kb_at_done; /* an anonymous consumer's AnonHugePages when DONE came */
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
    char *mnt;              /* a tmpfs the test mounted: unmounted at teardown */
    int hello_timeout_ms;   /* 0: the daemon's default */
    int register_timeout_ms; /* 0: the daemon's default */
    bool forge_zero;        /* flip two cancelling bitmap bits: page 0 stored, page 1 zero */
    bool corrupt_page1;     /* flip a byte of page 1's stored bytes: its checksum fails */
    uint64_t first_page;    /* consumers start reading here */
    shared_counts *counts;
    char *written_dir;      /* non-NULL: the daemon tracks writes (keep_memory too) */
    int stats;              /* with written_dir, forge_zero or want_stats: the daemon's
                             * stats pipe, read end */
    bool want_stats;
    bool moved_parent;      /* serve a child whose parent moved, given the parent */
    char *parent;           /* with moved_parent: where the parent went */
    bool parts;             /* the "vhost-user" consumer maps the block in parts */
    unsigned nblocks;       /* blocks of f->len bytes in the snapshot (0: 1) */
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

/*
 * Two cancelling flips in the bitmap of the snapshot at @path (pages 0 and
 * 1 of block 0: zero page 0 marked stored, stored page 1 marked zero): the
 * counts agree, so a lazy open takes the file.
 */
static void forge_zero_page(const char *path)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *s = sl_snapshot_open(path, &err);
    uint64_t off = s ? s->blocks[0].bitmap_offset : 0;
    uint8_t byte;
    int fd = open(path, O_RDWR | O_CLOEXEC);

    assert_non_null(s);
    assert_true(!sl_snapshot_page_present(s, 0, 0) && sl_snapshot_page_present(s, 0, 1));
    sl_snapshot_close(s);
    assert_true(fd >= 0 && pread(fd, &byte, 1, (off_t)off) == 1);
    byte ^= 0x03;
    assert_true(pwrite(fd, &byte, 1, (off_t)off) == 1);
    close(fd);
}

/* Flips a byte of stored page 1 of block 0 in snapshot @path. */
static void corrupt_page_1(const char *path)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *s = sl_snapshot_open(path, &err);
    off_t off = s ? (off_t)(s->blocks[0].pages_offset + PSIZE + 9) : 0;
    uint8_t byte;
    int fd = open(path, O_RDWR | O_CLOEXEC);

    assert_non_null(s);
    assert_true(sl_snapshot_page_present(s, 0, 1));
    sl_snapshot_close(s);
    assert_true(fd >= 0 && pread(fd, &byte, 1, off) == 1);
    byte ^= 0x40;
    assert_true(pwrite(fd, &byte, 1, off) == 1);
    close(fd);
}

/*
 * A child of f->snap storing pages 1 to 8 of block 0 again (the same
 * bytes: consumers check the same content, read from two files); the
 * parent then moves to a directory of its own, so the child no longer
 * finds it.  f->snap becomes the child, f->parent the moved parent.
 */
static void make_child_of_moved_parent(fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *moved = g_build_filename(f->dir, "moved", NULL);
    char *child = g_build_filename(f->dir, "child", NULL);
    sl_snapshot *p = sl_snapshot_open(f->snap, &err);
    sl_writer *w = sl_writer_new(child, &err);
    uint8_t page[PSIZE];

    assert_true(p && w && sl_writer_set_parent(w, p, "snap", &err));
    sl_snapshot_close(p);
    assert_int_equal(sl_writer_add_block(w, "b0", f->len, PSIZE, -1, &err), 0);
    for (uint64_t i = 1; i <= 8; i++) {
        sl_test_fill_page(page, PSIZE, i, 1, 4);
        assert_true(sl_writer_write(w, 0, i * PSIZE, page, PSIZE, &err));
    }
    assert_true(sl_writer_finish(w, &err));
    sl_writer_free(w);
    assert_int_equal(mkdir(moved, 0700), 0);
    f->parent = g_build_filename(moved, "snap", NULL);
    assert_int_equal(rename(f->snap, f->parent), 0);
    g_free(f->snap);
    f->snap = child;
}

/* f->snap: one block of f->len bytes, forged or a child of a moved parent as @f says. */
static void make_snapshot(fixture *f)
{
    uint64_t lengths[2] = { f->len, f->len };

    assert_true(f->nblocks <= G_N_ELEMENTS(lengths));
    sl_test_make_snapshot(f->snap, lengths, MAX(f->nblocks, 1), PSIZE, 4, 0);
    if (f->forge_zero) {
        forge_zero_page(f->snap);
    }
    if (f->corrupt_page1) {
        corrupt_page_1(f->snap);
    }
    if (f->moved_parent) {
        make_child_of_moved_parent(f);
    }
}

/*
 * In a forked child: a crash ends it by its signal, for its parent to see.
 * cmocka's handler would catch it and carry on running tests in the child.
 */
static void crash_as_crash(void)
{
    static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };

    for (size_t i = 0; i < G_N_ELEMENTS(sigs); i++) {
        signal(sigs[i], SIG_DFL);
    }
}

/* Snapshot, memory file, daemon child; waits until the socket accepts. */
static void setup_daemon(fixture *f, uint64_t len, uint64_t hugepage, int threads)
{
    int ready[2];
    char byte;
    sl_daemon_opts o = { .exit_when_done = true, .quiet = true, .ready_fd = -1, .stats_fd = -1,
                         .hello_timeout_ms = f->hello_timeout_ms,
                         .register_timeout_ms = f->register_timeout_ms };

    need(hugepage, len);
    f->len = len;
    f->hugepage = hugepage;
    f->dir = sl_test_tmpdir();
    f->snap = g_build_filename(f->dir, "snap", NULL);
    f->sock = g_build_filename(f->dir, "sock", NULL);
    make_snapshot(f);
    if (f->memfd <= 0) { /* a restart keeps the memory file */
        f->memfd = hugepage ? sl_hugetlb_unlinked_fd(hugepage)
                            : memfd_create("guest", MFD_CLOEXEC);
        assert_true(f->memfd >= 0);
        assert_int_equal(ftruncate(f->memfd, (off_t)len), 0);
    }
    if (!f->counts) {
        f->counts = mmap(NULL, sizeof(shared_counts), PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        f->counts->efd = eventfd(0, EFD_CLOEXEC);
    }
    assert_true(pipe2(ready, O_CLOEXEC) == 0 && f->counts->efd >= 0);
    o.ready_fd = ready[1];
    o.snapshot = f->snap;
    o.parents = f->parent ? (char *[]){ f->parent, NULL } : NULL;
    o.socket = f->sock;
    o.cfg = (sl_restore_config){ .size = sizeof(o.cfg), .loader_threads = 1,
                                 .no_loaders = threads == 0, .keep_memory = !!f->written_dir };
    o.written_dir = f->written_dir;
    if (f->written_dir || f->forge_zero || f->want_stats) { /* their tests read the stats line */
        int st[2];
        assert_int_equal(pipe2(st, O_CLOEXEC), 0);
        f->stats = st[0];
        o.stats_fd = st[1];
    }
    f->daemon = fork();
    if (f->daemon == 0) {
        close(ready[0]);
        crash_as_crash();
        _exit(sl_daemon_run(&o));
    }
    close(ready[1]);
    if (o.stats_fd >= 0) {
        close(o.stats_fd);
    }
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
    if (f->mnt) {
        umount2(f->mnt, MNT_DETACH);
        rmdir(f->mnt);
        g_free(f->mnt);
    }
    if (f->counts) {
        close(f->counts->efd);
        munmap(f->counts, sizeof(*f->counts));
    }
    if (f->dir) {
        sl_test_rmdir(f->dir);
    }
    if (f->stats > 0) {
        close(f->stats);
    }
    g_free(f->written_dir);
    g_free(f->parent);
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
    atomic_fetch_add(&f->counts->registered, 1);
    for (uint64_t i = f->first_page; i < f->len / PSIZE; i += step) {
        sl_test_fill_page(want, PSIZE, i, 1, 4);
        if (memcmp(want, p + i * PSIZE, PSIZE) != 0) {
            atomic_fetch_add(&f->counts->bad, 1);
        }
        count_touch(f->counts);
    }
    /* A daemon that completed with every client gone exits: the first
     * consumer stays until the late one has joined (bounded: 30 s). */
    for (int t = 0; t < 30000 && atomic_load(&f->counts->registered) < f->counts->hold_until;
         t++) {
        g_usleep(1000);
    }
    return sl_client_wait_done(sock) ? 0 : 31;
}

/*
 * The parts a back-end maps block b0 in, as libvhost-user maps each memory
 * region QEMU sends it: the two halves (a pc guest's RAM below and above
 * 4 GiB) and a middle part overlapping both.  Bytes [off, off + len).
 */
static void part_of(const fixture *f, unsigned k, uint64_t *off, uint64_t *len)
{
    const uint64_t half = f->len / 2, quarter = f->len / 4;

    *off = k == 0 ? 0 : k == 1 ? half : quarter;
    *len = k == 0 ? half : k == 1 ? f->len - half : half;
}

#define NPARTS 3

/* Consumer body of a back-end mapping b0 in parts, each registered on a
 * connection of its own: reads every page (@step apart) of each part. */
static int consume_parts(fixture *f, const char *name, uint64_t step)
{
    g_autoptr(GError) err = NULL;
    g_autofree uint8_t *want = g_malloc(PSIZE);
    int sock[NPARTS];
    uint8_t *p[NPARTS];

    for (unsigned k = 0; k < NPARTS; k++) {
        uint64_t off, len;
        part_of(f, k, &off, &len);
        p[k] = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, (off_t)off);
        sock[k] = sl_client_connect(f->sock, name, &err);
        if (p[k] == MAP_FAILED || sock[k] < 0 ||
            sl_client_register(sock[k], "b0", p[k], len, f->memfd, off, &err) < 0) {
            fprintf(stderr, "consumer %s, part %u: %s\n", name, k, err ? err->message : "?");
            return 30;
        }
    }
    atomic_fetch_add(&f->counts->registered, 1);
    for (unsigned k = 0; k < NPARTS; k++) {
        uint64_t off, len;
        part_of(f, k, &off, &len);
        for (uint64_t i = 0; i < len / PSIZE; i += step) {
            sl_test_fill_page(want, PSIZE, off / PSIZE + i, 1, 4);
            if (memcmp(want, p[k] + i * PSIZE, PSIZE) != 0) {
                atomic_fetch_add(&f->counts->bad, 1);
            }
            count_touch(f->counts);
        }
    }
    for (unsigned k = 0; k < NPARTS; k++) {
        if (!sl_client_wait_done(sock[k])) {
            return 31;
        }
    }
    return 0;
}

static pid_t spawn_consumer(fixture *f, const char *name, uint64_t step)
{
    pid_t pid = fork();

    if (pid == 0) {
        signal(SIGBUS, SIG_DFL);
        _exit(f->parts && strcmp(name, "vmm") != 0 ? consume_parts(f, name, step)
                                                   : consume(f, name, step));
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
    f->counts->hold_until = 2; /* the VMM leaves only after the back-end joined */
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

/*
 * The reviewer's case: a back-end mapping guest RAM in parts (each memory
 * region QEMU sends it, as for a pc guest above 3 GiB) joins a VMM that
 * maps the whole block.  Before, the daemon refused the first part for
 * its length and the back-end died; now each part is a view of its part
 * of the block and every page read through each is right.
 */
static void test_shmem_backend_mapping_parts_of_the_block_sees_correct_bytes(void **state)
{
    ((fixture *)*state)->parts = true;
    run_vmm_and_backend(*state, 0);
}

static void test_hugetlbfs_backend_mapping_parts_of_the_block_sees_correct_bytes(void **state)
{
    ((fixture *)*state)->parts = true;
    run_vmm_and_backend(*state, 2u << 20);
}

/*
 * Parts alone, nobody mapping the whole block (the synthetic repro: a
 * process mapping half the file at offset len/2 under `serve`): the
 * first part attaches the block, whose file holds it alone (from offset
 * 0), and its faults alone (no loader) complete the restore.
 */
static void test_parts_of_a_block_alone_restore_it_by_faults(void **state)
{
    fixture *f = *state;
    pid_t backend;

    f->parts = true;
    setup_daemon(f, 16u << 20, 0, 0);
    backend = spawn_consumer(f, "vhost-user", 1);
    expect_exit(backend, 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

/* REGISTER of [@off, +@len) of @memfd on a fresh connection: the refusal's
 * reason, or NULL if it was taken (then *@sock stays open: the view lives). */
static char *register_part(fixture *f, int memfd, uint64_t off, uint64_t len, int *sock)
{
    g_autoptr(GError) err = NULL;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, (off_t)off);

    assert_true(p != MAP_FAILED);
    *sock = sl_client_connect(f->sock, "part", &err);
    assert_true(*sock >= 0);
    if (sl_client_register(*sock, "b0", p, len, memfd, off, &err) >= 0) {
        return NULL;
    }
    close(*sock);
    munmap(p, len);
    return g_strdup(err->message);
}

/*
 * Parts the daemon cannot place are refused naming why: where the block
 * starts in a file larger than it is not known before a mapping of the
 * whole block says so; then a part reaching past the block, or starting
 * before it, is not a part of it.
 */
static void test_a_part_outside_the_block_or_of_unknown_place_is_refused(void **state)
{
    fixture *f = *state;
    const uint64_t L = 4u << 20;
    int memfd = memfd_create("twice", MFD_CLOEXEC), whole, s;
    g_autofree char *unknown = NULL, *past = NULL, *before = NULL;

    setup_daemon(f, L, 0, 0);
    assert_true(memfd >= 0 && ftruncate(memfd, (off_t)(3 * L)) == 0);
    unknown = register_part(f, memfd, L, L / 2, &s);
    assert_non_null(unknown);
    if (!strstr(unknown, "a part of the block, whose place in the larger memory file is "
                         "unknown until all of it registers")) {
        fail_msg("a part before the whole: %s", unknown);
    }
    assert_null(register_part(f, memfd, L, L, &whole)); /* the block: file bytes [L, 2L) */
    past = register_part(f, memfd, 2 * L - PSIZE, 2 * PSIZE, &s);
    before = register_part(f, memfd, L - PSIZE, 2 * PSIZE, &s);
    assert_non_null(past);
    assert_non_null(before);
    if (!strstr(past, "file bytes [8384512, +8192) lie outside the block's [4194304, "
                      "+4194304)") || !strstr(before, "lie outside the block's")) {
        fail_msg("parts outside the block: \"%s\", \"%s\"", past, before);
    }
    close(whole);
    close(memfd);
}

/*
 * Registers @len bytes of block @block at file offset @off of @memfd, sent
 * as @sent (the same file opened otherwise; -1: @memfd itself), on a
 * connection of its own: NULL when accepted (*@sock, *@map its
 * connection and mapping, to release), else the refusal.
 */
static char *register_block(fixture *f, const char *block, int memfd, int sent, uint64_t off,
                            uint64_t len, int *sock, uint8_t **map)
{
    g_autoptr(GError) err = NULL;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, (off_t)off);

    assert_true(p != MAP_FAILED);
    *sock = sl_client_connect(f->sock, "block", &err);
    assert_true(*sock >= 0);
    if (sl_client_register(*sock, block, p, len, sent >= 0 ? sent : memfd, off, &err) >= 0) {
        *map = p;
        return NULL;
    }
    close(*sock);
    munmap(p, len);
    return g_strdup(err->message);
}

/* @memfd opened again as /proc/self/fd/N with @flags. */
static int reopen(int memfd, int flags)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", memfd);
    int fd = open(path, flags | O_CLOEXEC);

    assert_true(fd >= 0);
    return fd;
}

/*
 * The REGISTER that would attach a block with a memory file the restore
 * cannot write through (an O_RDONLY or O_PATH reopen of the memfd) is
 * refused by name before anything is attached, and the next consumer, with
 * the memfd itself, is served to completion.  Found by review: it was
 * accepted, and the restore failed at its start, once every block was
 * attached, blaming whoever attached last.
 */
static void test_a_memory_file_the_restore_cannot_write_is_refused_by_name(void **state)
{
    fixture *f = *state;
    const struct {
        int flags;
        const char *says;
    } cases[] = { { O_RDONLY, "memory fd is read-only" }, { O_PATH, "memory fd is O_PATH" } };

    setup_daemon(f, 4u << 20, 0, 1);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        int weak = reopen(f->memfd, cases[i].flags), sock;
        uint8_t *map;
        g_autofree char *why = register_block(f, "b0", f->memfd, weak, 0, f->len, &sock, &map);
        close(weak);
        if (!why || !strstr(why, cases[i].says) || !strstr(why, "send it O_RDWR")) {
            fail_msg("case %zu: %s", i, why ? why : "accepted");
        }
    }
    expect_exit(spawn_consumer(f, "vmm", 1), 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

/* Pages of block @block (its index in the snapshot) at @p that are wrong. */
static uint64_t wrong_block_pages(const fixture *f, unsigned block, const uint8_t *p)
{
    g_autofree uint8_t *want = g_malloc(PSIZE);
    uint64_t bad = 0;

    for (uint64_t i = 0; i < f->len / PSIZE; i++) {
        sl_test_fill_page(want, PSIZE, i, block + 1, 4);
        bad += memcmp(want, p + i * PSIZE, PSIZE) != 0;
    }
    return bad;
}

/*
 * Two blocks attached to one memory file must not overlap there (each
 * would place its pages over the other's): the REGISTER of the second at
 * an overlapping offset is refused by name, before anything is attached;
 * at its own place it is served, and each block reads right.  Found by
 * review: overlapping blocks were accepted, and one block's view read the
 * other's bytes.
 */
static void test_blocks_overlapping_in_one_memory_file_are_refused_by_name(void **state)
{
    fixture *f = *state;
    int memfd = memfd_create("both", MFD_CLOEXEC), s0, s1, s;
    g_autofree char *same = NULL, *half = NULL;
    uint8_t *p0, *p1, *unused;

    f->nblocks = 2;
    setup_daemon(f, 4u << 20, 0, 1);
    assert_true(memfd >= 0 && ftruncate(memfd, (off_t)(2 * f->len)) == 0);
    assert_null(register_block(f, "b0", memfd, -1, 0, f->len, &s0, &p0));
    same = register_block(f, "b1", memfd, -1, 0, f->len, &s, &unused);
    half = register_block(f, "b1", memfd, -1, f->len / 2, f->len, &s, &unused);
    if (!same || !strstr(same, "file bytes [0, +4194304) overlap block 'b0' in the same") ||
        !half || !strstr(half, "overlap block 'b0'")) {
        fail_msg("b1 over b0: \"%s\", \"%s\"", same ? same : "accepted",
                 half ? half : "accepted");
    }
    assert_null(register_block(f, "b1", memfd, -1, f->len, f->len, &s1, &p1));
    assert_true(sl_client_wait_done(s0) && sl_client_wait_done(s1));
    assert_int_equal(wrong_block_pages(f, 0, p0), 0);
    assert_int_equal(wrong_block_pages(f, 1, p1), 0);
    close(s0);
    close(s1);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    munmap(p0, f->len);
    munmap(p1, f->len);
    close(memfd);
}

/* A child whose parent moved, served with the parent given (serve and
 * qemu-restore --parent): a consumer reading every page gets the right
 * bytes, the child's own and the moved parent's, and the daemon completes. */
static void test_daemon_given_a_moved_parent_serves_its_child_correct_bytes(void **state)
{
    fixture *f = *state;

    f->moved_parent = true;
    setup_daemon(f, 16u << 20, 0, 1);
    expect_exit(spawn_consumer(f, "vmm", 1), 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->touched), f->len / PSIZE);
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

/* The daemon's result line (after its registration lines) says why the restore failed: @why. */
static void expect_stats_error(fixture *f, const char *why)
{
    g_autofree char *line = NULL;
    FILE *in = fdopen(f->stats, "r");
    size_t cap = 0;
    bool got;

    assert_non_null(in);
    f->stats = 0;
    while ((got = getline(&line, &cap, in) >= 0) && !strstr(line, "\"status\"")) {
    }
    if (!got || !strstr(line, "\"error\": \"") || !strstr(line, why)) {
        fail_msg("the daemon's stats line does not say '%s': %s", why, line ? line : "(none)");
    }
    fclose(in);
}

/*
 * Without UFFDIO_POISON (Debian 12's 6.1) the refused page cannot be
 * sealed in consumer @c's view: the daemon fails and exits, and the
 * consumer, which has no supervisor here, waits on the page for good,
 * having read nothing (a supervised one is ended by its client's
 * supervisor thread).  Ends it.
 */
static void consumer_of_refused_page_waits(fixture *f, pid_t c, const char *why)
{
    int status;

    assert_int_equal(waitpid(f->daemon, &status, 0), f->daemon);
    f->daemon = 0;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 0); /* the restore failed */
    expect_stats_error(f, why);
    g_usleep(500000); /* time to read zeros, were it woken to */
    assert_int_equal(waitpid(c, &status, WNOHANG), 0); /* still waiting on the page */
    assert_int_equal(atomic_load(&f->counts->bad), 0);
    assert_int_equal(atomic_load(&f->counts->touched), 0);
    kill(c, SIGKILL);
    assert_int_equal(waitpid(c, &status, 0), c);
}

/* Consumer @c, the first touch of which is @what, dies of SIGBUS having read no wrong byte. */
static void consumer_dies_of_sigbus(fixture *f, pid_t c, const char *what)
{
    int status;

    assert_int_equal(waitpid(c, &status, 0), c);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS) {
        fail_msg("the consumer of %s %s %d, expected SIGBUS", what,
                 WIFEXITED(status) ? "exited" : "died of signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

/*
 * The cancelling bit flips of issue 10 through `snapload serve`: a consumer
 * whose first touch is the stored page the bitmap calls zero never reads
 * zeros (or any wrong byte): the daemon proves the page's metadata segment
 * first, fails the restore, and the consumer gets SIGBUS on the sealed page.
 */
static void test_forged_zero_page_never_reaches_a_consumer(void **state)
{
    fixture *f = *state;
    pid_t c;
    int status;

    f->forge_zero = true;
    f->first_page = 1;
    setup_daemon(f, 4u << 20, 0, 0);
    c = spawn_consumer(f, "vmm", 1);
    if (!sl_uffd_has_features(UFFD_FEATURE_POISON)) {
        consumer_of_refused_page_waits(f, c, "does not match its digest");
        return;
    }
    consumer_dies_of_sigbus(f, c, "a forged zero page");
    assert_int_equal(atomic_load(&f->counts->touched), 0);
    assert_int_equal(waitpid(f->daemon, &status, 0), f->daemon);
    f->daemon = 0;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 0); /* the restore failed */
    expect_stats_error(f, "does not match its digest");
}

/*
 * A page refused on the fault path while no loaders run (the restore cannot
 * complete): the consumer touching it dies of SIGBUS, and the daemon,
 * ended by a signal, names the page in its result line and exits 1 (found
 * by a user's test: it said only "stopped before completion", and nothing
 * told why the consumer had died).
 */
static void test_a_page_refused_before_a_stop_is_named_in_the_daemons_report(void **state)
{
    fixture *f = *state;
    pid_t c;
    int status;

    f->corrupt_page1 = true;
    f->first_page = 1;
    f->want_stats = true;
    setup_daemon(f, 4u << 20, 0, 0);
    c = spawn_consumer(f, "vmm", 1);
    if (!sl_uffd_has_features(UFFD_FEATURE_POISON)) {
        consumer_of_refused_page_waits(f, c, "block 'b0' page 1 ");
        return;
    }
    consumer_dies_of_sigbus(f, c, "a corrupt page");
    assert_int_equal(kill(f->daemon, SIGTERM), 0);
    assert_int_equal(waitpid(f->daemon, &status, 0), f->daemon);
    f->daemon = 0;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    expect_stats_error(f, "block 'b0' page 1 (offset 4096 in the block) could not be read: "
                          "checksum mismatch");
}

/*
 * Connects raw and sends @n bytes of @pkt (+ fds); true if the daemon hung
 * up.  @answer (may be NULL): the reason of the REGISTERED it answered with,
 * or NULL if none came.
 */
static bool hostile(const char *path, const void *pkt, size_t n, int fd1, int fd2,
                    char **answer)
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
        sl_msg m; /* an error reply may come first; then the hang-up */
        if (answer && !*answer && sl_msg_decode((uint8_t *)rbuf, (size_t)got, &m, NULL) &&
            m.type == SL_MSG_REGISTERED) {
            *answer = g_strdup(m.u.status.message);
        }
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
    assert_true(hostile(f->sock, "garbage", 7, -1, -1, NULL));
    g_strlcpy(reg.u.reg.block, "b0", sizeof(reg.u.reg.block));
    reg.u.reg.length = f->len;
    reg.u.reg.page_size = PSIZE;
    /* REGISTER without HELLO, with fds that are not a uffd nor a memory file. */
    assert_true(hostile(f->sock, pkt, sl_msg_encode(&reg, pkt), devnull, devnull, NULL));
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
    uint8_t *p, *q;
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
    /* A part of a block is a view of it (parts_of_a_block_*); more than all is not. */
    q = mmap(NULL, f->len + 2 * PSIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    assert_true(q != MAP_FAILED);
    assert_true(sl_client_register(sock, "b0", q, f->len + 2 * PSIZE, f->memfd, 0, &err) < 0);
    assert_non_null(strstr(err->message, "length"));
    close(sock);
    munmap(q, f->len + 2 * PSIZE);
    munmap(p, f->len);
}

/* ------------------- REGISTERs the kernel's view contradicts ------------------- */

typedef enum {
    BAD_NOT_UFFD, BAD_FILE_KIND, BAD_PAGE_SIZE, BAD_OFFSET, BAD_ADDRESS, BAD_NO_HANDSHAKE,
    BAD_NOT_MAPPED, BAD_OTHER_FILE, BAD_MISSING_ONLY,
} bad_kind;

static const struct {
    bad_kind kind;
    const char *expect;     /* in the daemon's answer */
} bad_registers[] = {
    { BAD_NOT_UFFD, "not a userfaultfd (it is anon_inode:[eventfd])" },
    { BAD_FILE_KIND, "not on tmpfs or hugetlbfs" },
    { BAD_PAGE_SIZE, "page size 8192" },
    { BAD_OFFSET, "offset 100" },
    { BAD_ADDRESS, "address 0x" },
    { BAD_NO_HANDSHAKE, "lack 0x" },
    { BAD_NOT_MAPPED, "not a shared mapping of the memory file" },
    { BAD_OTHER_FILE, "not the memory file its first consumer registered" },
    /* Would read pages allocated ahead of their data without a fault. */
    { BAD_MISSING_ONLY, "not registered with its userfaultfd for MISSING and MINOR faults" },
};

/* What one bad REGISTER carries, and what it needs released afterwards. */
typedef struct {
    sl_msg m;
    int fds[2];
    void *map;
    int close_fds[2];
} bad_packet;

/* A uffd registered on [p, p+len) (MISSING|MINOR, or MISSING only for
 * @missing_only), or one never handshaken. */
static int uffd_on(void *p, uint64_t len, bool handshake, bool missing_only)
{
    g_autoptr(GError) err = NULL;
    uint64_t feat = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM;
    int uffd = handshake ? sl_uffd_open(feat, 0, NULL, &err)
                         : (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

    assert_true(uffd >= 0);
    if (handshake) {
        assert_true(sl_uffd_register(uffd, p, len, UFFDIO_REGISTER_MODE_MISSING |
                                     (missing_only ? 0 : UFFDIO_REGISTER_MODE_MINOR), 0, NULL,
                                     &err));
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
                                     : uffd_on(b->map, f->len, kind != BAD_NO_HANDSHAKE,
                                               anon || kind == BAD_MISSING_ONLY);
    /* a procfs file: on no tmpfs wherever the test runs (its binary may be,
     * in a VM booted from an initramfs) */
    b->fds[1] = kind == BAD_FILE_KIND ? open("/proc/self/stat", O_RDONLY | O_CLOEXEC) : file;
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
    int lost;
    int sock = sl_client_connect(f->sock, "bad", &err);
    ssize_t n;
    sl_msg reply;

    assert_true(sock >= 0);
    assert_true(sl_wire_send(sock, &b->m, b->fds, 2));
    n = sl_wire_recv(sock, buf, fds, &nfds, &lost);
    assert_true(n > 0 && sl_msg_decode(buf, (size_t)n, &reply, &err));
    assert_int_equal(reply.type, SL_MSG_REGISTERED);
    assert_int_not_equal(reply.u.status.status, 0);
    assert_int_equal(sl_wire_recv(sock, buf, fds, &nfds, &lost), 0); /* dropped */
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
    g_autoptr(GError) err = NULL;
    pid_t victim, other;
    int status, holder;

    setup_daemon(f, 64u << 20, 0, 1);
    /* Keeps the daemon up: once the loader completes with every consumer
     * gone it would exit before the other one connects. */
    holder = sl_client_connect(f->sock, "holder", &err);
    assert_true(holder >= 0);
    f->counts->notify_at = 64;
    victim = spawn_consumer(f, "victim", 1);
    wait_touched(f->counts);
    kill(victim, SIGKILL);
    assert_int_equal(waitpid(victim, &status, 0), victim);
    other = spawn_consumer(f, "other", 1);
    expect_exit(other, 0);
    close(holder);
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

/*
 * Consumers sent DONE do not hold the daemon's client slots: 70 of them
 * (more than SL_DAEMON_MAX_CLIENTS) register after completion and stay
 * connected, as tracked consumers do until the daemon goes, and each is
 * still welcomed and answered within a second.
 */
static void test_consumers_sent_done_do_not_use_up_the_client_slots(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    int held[SL_DAEMON_MAX_CLIENTS + 6], holder;
    uint8_t *p;

    setup_daemon(f, 8u << 20, 0, 1);
    holder = sl_client_connect(f->sock, "holder", &err); /* keeps the daemon up */
    assert_true(holder >= 0);
    expect_exit(spawn_consumer(f, "vmm", 1), 0);          /* completes the restore */
    p = mmap(NULL, f->len, PROT_READ, MAP_SHARED, f->memfd, 0);
    assert_true(p != MAP_FAILED);
    for (unsigned i = 0; i < G_N_ELEMENTS(held); i++) {
        int uffd;

        held[i] = sl_client_connect_timeout(f->sock, "late", 1000, NULL, &err);
        uffd = held[i] < 0 ? -1 : sl_client_register(held[i], "b0", p, f->len, f->memfd, 0, &err);
        if (uffd < 0 || !sl_client_wait_done(held[i])) {
            fail_msg("late consumer %u: %s", i, err ? err->message : "no DONE");
        }
        close(uffd); /* DONE: the daemon unregistered the range */
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(held); i++) {
        close(held[i]);
    }
    munmap(p, f->len);
    close(holder);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
}

/* Pages of @p (f->len bytes, as the snapshot has them) that are wrong. */
static uint64_t wrong_pages(const fixture *f, const uint8_t *p)
{
    g_autofree uint8_t *want = g_malloc(PSIZE);
    uint64_t bad = 0;

    for (uint64_t i = 0; i < f->len / PSIZE; i++) {
        sl_test_fill_page(want, PSIZE, i, 1, 4);
        bad += memcmp(want, p + i * PSIZE, PSIZE) != 0;
    }
    return bad;
}

/*
 * @len bytes of fresh private anonymous memory, 2 MiB aligned as a VMM maps
 * guest RAM (so a moved chunk is one hugepage); NULL if mmap fails.  Never
 * unmapped: the consumer children exit, and the one test that maps some in
 * the test process unmaps it whole (@raw_out).
 */
static uint8_t *guest_ram(uint64_t len, uint8_t **raw_out)
{
    uint8_t *raw = mmap(NULL, len + SL_MOVE_CHUNK, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (raw_out) {
        *raw_out = raw;
    }
    return raw == MAP_FAILED ? NULL
                             : (uint8_t *)(((uintptr_t)raw + SL_MOVE_CHUNK - 1) &
                                           ~(uintptr_t)(SL_MOVE_CHUNK - 1));
}

/*
 * Anonymous consumer (a VMM's guest RAM: 2 MiB aligned, hugepage-advised):
 * registers, checks every page, waits for DONE, then for its mapping to be
 * in transparent hugepages (every 2 MiB of it holds data), then checks
 * every page again.  Exit 32: still 4 KiB pages after 10 s (the daemon's
 * collapse takes well under a second here; khugepaged alone, at its
 * default pace of 16 MiB per 10 s, had 24 of the 32 MiB after 20 s).
 */
static int consume_anon(fixture *f)
{
    g_autoptr(GError) err = NULL;
    uint8_t *p = guest_ram(f->len, NULL);
    unsigned level = 0;
    int sock = sl_client_connect_level(f->sock, "vmm", &level, &err);
    int uffd;
    uint64_t kb = 0;

    if (!p) {
        return 29;
    }
    madvise(p, f->len, MADV_HUGEPAGE); /* as QEMU asks for its guest RAM */
    uffd = sock < 0 ? -1 : sl_client_register_anon(sock, level, "b0", p, f->len, &err);
    if (uffd < 0) {
        fprintf(stderr, "anonymous consumer: %s\n", err ? err->message : "?");
        return 30;
    }
    atomic_fetch_add(&f->counts->bad, wrong_pages(f, p));
    if (!sl_client_wait_done(sock)) {
        return 31;
    }
    for (int t = 0; t < 1000 && (kb = sl_test_anon_huge_kb(p)) < f->len / 1024; t++) {
        g_usleep(10000); /* the daemon's collapser works while we run */
    }
    if (kb < f->len / 1024) {
        fprintf(stderr, "anonymous consumer: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                " KiB in transparent hugepages\n", kb, f->len / 1024);
        return 32;
    }
    atomic_fetch_add(&f->counts->bad, wrong_pages(f, p));
    return 0;
}

/*
 * A VMM's anonymous guest RAM served through the daemon: every page right,
 * and once complete the daemon collapses it into transparent hugepages in
 * the VMM's process (as an eager load into MADV_HUGEPAGE memory leaves
 * it), within 10 s, with the same bytes.  The daemon then exits 0 when the VMM leaves.
 */
static void test_anonymous_consumer_ends_in_hugepages_with_the_same_bytes(void **state)
{
    fixture *f = *state;
    g_autofree char *why = NULL;
    pid_t vmm;

    SL_TEST_NEED("thp", sl_test_have_thp_collapse(&why), why);
    setup_daemon(f, 32u << 20, 0, 1);
    vmm = fork();
    if (vmm == 0) {
        _exit(consume_anon(f));
    }
    expect_exit(vmm, 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

/* ------------------------- written-page lists ----------------------------- */

/* Saves a list of pages {2, 3, 9} of block b0 of @snap at @offset of a file like @st, in @dir. */
static void save_list_at(const char *dir, const sl_snapshot *snap, const struct stat *st,
                         uint64_t offset)
{
    g_autoptr(GError) err = NULL;
    uint64_t pages[4] = { (1u << 2) | (1u << 3) | (1u << 9) };

    assert_true(sl_written_save(dir, snap, "b0", st, offset, pages, 256, &err));
}

static void save_list(const char *dir, const sl_snapshot *snap, const struct stat *st)
{
    save_list_at(dir, snap, st, 0);
}

/* Loads the list in @dir for @snap, @st and @offset; NULL if used, else why not (caller frees). */
static char *load_list_at(const char *dir, const sl_snapshot *snap, const struct stat *st,
                          uint64_t offset, GArray *runs)
{
    g_autoptr(GError) err = NULL;

    return sl_written_load(dir, snap, "b0", st, offset, runs, &err) ? NULL
                                                                     : g_strdup(err->message);
}

static char *load_list(const char *dir, const sl_snapshot *snap, const struct stat *st,
                       GArray *runs)
{
    return load_list_at(dir, snap, st, 0, runs);
}

/*
 * A written-page list comes back as saved, once (loading removes it), and
 * is refused by name when it is not for this snapshot or the file changed
 * since (mtime, or its allocated blocks alone), or was damaged.
 */
static void test_written_list_is_used_once_and_refused_when_it_does_not_match(void **state)
{
    g_autofree char *dir = sl_test_tmpdir();
    g_autofree char *a = g_build_filename(dir, "a", NULL), *b = g_build_filename(dir, "b", NULL);
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(sl_page_run));
    g_autoptr(GError) err = NULL;
    uint64_t len = 1u << 20, other = 2u << 20;
    struct stat st = { .st_dev = 1, .st_ino = 42, .st_size = 1 << 20 }, moved = st;
    sl_snapshot *sa, *sb;
    g_autofree char *why = NULL, *path = NULL;
    uint8_t byte;
    int fd;

    (void)state;
    sl_test_make_snapshot(a, &len, 1, PSIZE, 4, 0);
    sl_test_make_snapshot(b, &other, 1, PSIZE, 4, 0);
    sa = sl_snapshot_open(a, &err);
    sb = sl_snapshot_open(b, &err);
    assert_true(sa && sb);
    save_list(dir, sa, &st);
    assert_null(load_list(dir, sa, &st, runs));
    assert_int_equal(runs->len, 2); /* {2, 2 pages}, {9, 1 page} */
    assert_int_equal(g_array_index(runs, sl_page_run, 0).first, 2);
    assert_int_equal(g_array_index(runs, sl_page_run, 0).n, 2);
    assert_int_equal(g_array_index(runs, sl_page_run, 1).first, 9);
    why = load_list(dir, sa, &st, runs); /* used once */
    assert_non_null(strstr(why, "No such file"));
    g_free(why);
    save_list(dir, sa, &st);
    why = load_list(dir, sb, &st, runs);
    assert_non_null(strstr(why, "made for another snapshot"));
    g_free(why);
    save_list(dir, sa, &st);
    moved.st_mtim.tv_nsec = 1;
    why = load_list(dir, sa, &moved, runs);
    assert_non_null(strstr(why, "the RAM file changed since"));
    g_free(why);
    save_list(dir, sa, &st);
    moved = st;
    moved.st_blocks = st.st_blocks + 4096; /* a hole punched and no time moved (hugetlbfs) */
    why = load_list(dir, sa, &moved, runs);
    assert_non_null(strstr(why, "the RAM file changed since"));
    g_free(why);
    save_list(dir, sa, &st);
    path = sl_written_path(dir, &st, 0);
    fd = open(path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0 && pread(fd, &byte, 1, 170) == 1);
    byte ^= 1;
    assert_true(pwrite(fd, &byte, 1, 170) == 1);
    close(fd);
    why = load_list(dir, sa, &st, runs);
    assert_non_null(strstr(why, "truncated or corrupt"));
    sl_snapshot_close(sa);
    sl_snapshot_close(sb);
    sl_test_rmdir(g_steal_pointer(&dir));
}

/*
 * Two blocks of one RAM file have a list each, and a list is only ever
 * taken by the block at the offset it was made for (found by review: the
 * list was named by the file alone, so the second block's overwrote the
 * first's, and a block found at another offset of the unchanged file took
 * it, keeping unread pages that held another block's bytes).  A list moved
 * to another offset's name is refused by name.
 */
static void test_a_written_list_belongs_to_one_offset_of_its_file(void **state)
{
    g_autofree char *dir = sl_test_tmpdir();
    g_autofree char *a = g_build_filename(dir, "a", NULL);
    g_autofree char *why = NULL, *from = NULL, *to = NULL;
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(sl_page_run));
    g_autoptr(GError) err = NULL;
    uint64_t len = 1u << 20;
    struct stat st = { .st_dev = 1, .st_ino = 42, .st_size = 2 << 20 };
    sl_snapshot *sa;

    (void)state;
    sl_test_make_snapshot(a, &len, 1, PSIZE, 4, 0);
    sa = sl_snapshot_open(a, &err);
    assert_non_null(sa);
    save_list_at(dir, sa, &st, 0);
    save_list_at(dir, sa, &st, len);
    assert_null(load_list_at(dir, sa, &st, len, runs)); /* each kept its own */
    assert_null(load_list_at(dir, sa, &st, 0, runs));
    save_list_at(dir, sa, &st, 0);
    why = load_list_at(dir, sa, &st, len, runs); /* none made for that offset */
    assert_non_null(strstr(why, "No such file"));
    g_free(why);
    from = sl_written_path(dir, &st, 0);
    to = sl_written_path(dir, &st, len);
    assert_int_equal(rename(from, to), 0);
    why = load_list_at(dir, sa, &st, len, runs);
    assert_non_null(strstr(why, "made for the block at another offset"));
    sl_snapshot_close(sa);
    sl_test_rmdir(g_steal_pointer(&dir));
}

/*
 * Lists of RAM files that are gone are never loaded: saving keeps the
 * SL_WRITTEN_KEEP newest (the new one among them) and removes the oldest.
 */
static void test_saving_a_list_removes_the_oldest_beyond_the_bound(void **state)
{
    g_autofree char *dir = sl_test_tmpdir();
    g_autofree char *a = g_build_filename(dir, "a", NULL);
    g_autoptr(GError) err = NULL;
    uint64_t len = 1u << 20;
    struct stat st = { .st_dev = 1, .st_size = 1 << 20 };
    g_autoptr(GDir) d = NULL;
    sl_snapshot *sa;
    unsigned lists = 0;

    (void)state;
    sl_test_make_snapshot(a, &len, 1, PSIZE, 4, 0);
    sa = sl_snapshot_open(a, &err);
    assert_non_null(sa);
    for (unsigned i = 0; i < SL_WRITTEN_KEEP + 9; i++) { /* inode i: one file each, oldest first */
        g_autofree char *path = NULL;
        struct timespec when[2] = { { .tv_sec = 1000 + i }, { .tv_sec = 1000 + i } };
        st.st_ino = i;
        save_list(dir, sa, &st);
        path = sl_written_path(dir, &st, 0);
        assert_int_equal(utimensat(AT_FDCWD, path, when, 0), 0);
    }
    d = g_dir_open(dir, 0, NULL);
    for (const char *name; (name = g_dir_read_name(d));) {
        lists += g_str_has_prefix(name, "written-");
    }
    assert_int_equal(lists, SL_WRITTEN_KEEP);
    for (unsigned i = 0; i < SL_WRITTEN_KEEP + 9; i++) { /* the newest stayed */
        g_autofree char *path = NULL;
        st.st_ino = i;
        path = sl_written_path(dir, &st, 0);
        assert_int_equal(g_file_test(path, G_FILE_TEST_EXISTS), i >= 9);
    }
    sl_snapshot_close(sa);
    sl_test_rmdir(g_steal_pointer(&dir));
}

/* ------------------------- tracked consumers ------------------------------ */

#define WRITTEN_PAGES 3
static const uint64_t written_pages[WRITTEN_PAGES] = { 3, 17, 101 };


/* Tracked views (REGISTER_WP) need the kernel's asynchronous uffd
 * write-protection (Linux 6.7+; not Debian 12's 6.1): the client cannot
 * open such a uffd without it, and registers its views plainly. */
#define NEED_TRACKING()                                                         \
    SL_TEST_NEED("uffd-wp-async", sl_uffd_has_features(SL_UFFD_TRACK_FEATURES), \
                 "tracked views need asynchronous uffd write-protection (Linux 6.7+)")

/* Maps the fixture's memory file and registers it tracked: the uffd, or -1. */
static int register_tracked(fixture *f, uint8_t **p, int *sock, GError **errp)
{
    *p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    *sock = sl_client_connect(f->sock, "tracked", errp);
    return *sock < 0 ? -1
                     : sl_client_register_tracked(*sock, "b0", *p, f->len, f->memfd, 0, errp);
}

/*
 * A tracked consumer (REGISTER_WP): waits until every page is in place,
 * writes a byte into each of written_pages, then reports (WRITTEN) unless
 * @silent, and checks every page it did not write is the snapshot's.
 */
static int consume_tracked(fixture *f, bool silent)
{
    g_autoptr(GError) err = NULL;
    g_autofree uint8_t *want = g_malloc(PSIZE);
    uint8_t *p;
    int sock, uffd = register_tracked(f, &p, &sock, &err);

    if (uffd < 0 || !sl_client_wait_done(sock)) {
        fprintf(stderr, "tracked consumer: %s\n", err ? err->message : "no DONE");
        return 30;
    }
    for (uint64_t i = 0; i < f->len / PSIZE; i++) {
        sl_test_fill_page(want, PSIZE, i, 1, 4);
        if (memcmp(want, p + i * PSIZE, PSIZE) != 0) {
            fprintf(stderr, "tracked consumer: page %" G_GUINT64_FORMAT " differs\n", i);
            return 31;
        }
    }
    for (unsigned i = 0; i < WRITTEN_PAGES; i++) {
        p[written_pages[i] * PSIZE + 100] ^= 0xff;
    }
    if (!silent && !sl_client_report_written(f->sock, "b0", p, f->len, 0, &err)) {
        fprintf(stderr, "tracked consumer: %s\n", err->message);
        return 32;
    }
    return 0;
}

typedef struct {
    char text[2048];
} JsonLine;

/* The daemon's final stats line, once it has exited (f->stats is closed). */
static JsonLine read_stats(fixture *f)
{
    JsonLine line = { 0 };
    FILE *in = fdopen(f->stats, "r");

    assert_non_null(in);
    while (fgets(line.text, sizeof(line.text), in)) {
        if (strstr(line.text, "\"status\"")) {
            break;
        }
    }
    fclose(in);
    f->stats = 0;
    return line;
}

/*
 * One daemon run over @len bytes (a previous run's snapshot and socket
 * removed first: the memory file stays, as for a restart) with one
 * consumer child running @consumer(@f, @arg), which must exit 0, as must
 * the daemon; the daemon's final stats line.
 */
static JsonLine run_one_consumer(fixture *f, uint64_t len, int (*consumer)(fixture *, int),
                                 int arg)
{
    pid_t pid;

    if (f->dir) { /* a previous run's */
        sl_test_rmdir(g_steal_pointer(&f->dir));
        g_clear_pointer(&f->snap, g_free);
        g_clear_pointer(&f->sock, g_free);
    }
    f->want_stats = true;
    setup_daemon(f, len, 0, 1);
    pid = fork();
    if (pid == 0) {
        _exit(consumer(f, arg));
    }
    expect_exit(pid, 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    return read_stats(f);
}

static int consume_tracked_arg(fixture *f, int silent)
{
    return consume_tracked(f, silent != 0);
}

/*
 * One daemon run with one tracked consumer over the fixture's memory file
 * (kept from run to run: a restart; the snapshot is made again, the same);
 * the daemon's final stats line.
 */
static JsonLine run_tracked(fixture *f, bool silent)
{
    return run_one_consumer(f, 1u << 20, consume_tracked_arg, silent);
}

/* The integer member @key of JSON line @l, or -1. */
static long long json_member(const JsonLine *l, const char *key)
{
    g_autofree char *pat = g_strdup_printf("\"%s\": ", key);
    const char *at = strstr(l->text, pat);

    return at ? strtoll(at + strlen(pat), NULL, 10) : -1;
}

/* ------------------- moving chunks into anonymous memory ------------------- */

/* How a consumer's mover answers the daemon's MOVEs. */
typedef enum {
    MOVER_REAL,       /* the client library's own (sl_client_register_anon) */
    MOVER_HANGS_UP,   /* closes its channel once registered */
    MOVER_WRONG_DST,  /* claims every chunk moved, naming another address */
    MOVER_HALF,       /* moves the first half of each chunk, says EBUSY for the rest */
    MOVER_SAYS_GONE,  /* moves nothing and answers each MOVE with ESRCH, then EPROTO */
} mover_kind;

static const struct {
    mover_kind kind;
    const char *name;
    bool moves;       /* the daemon's stats must count pages moved */
} mover_cases[] = {
    { MOVER_REAL, "the client library's mover", true },
    { MOVER_HANGS_UP, "a mover that hangs up", false },
    { MOVER_WRONG_DST, "a mover answering for another address", false },
    { MOVER_HALF, "a mover that moves half of each chunk", true },
    { MOVER_SAYS_GONE, "a mover that says its process is gone, then EPROTO", false },
};

typedef struct {
    mover_kind kind;
    int chan, uffd;
    uint8_t *staging;
} fake_mover;

/* A hand-made mover thread behaving as @fm->kind says, until the channel closes. */
static void *fake_mover_main(void *opaque)
{
    fake_mover *fm = opaque;
    uint8_t buf[SL_PROTO_MAX];
    ssize_t n;

    while ((n = recv(fm->chan, buf, sizeof(buf), 0)) > 0) {
        sl_msg m, a = { .type = SL_MSG_MOVED };
        uint64_t eagain = 0, half;
        assert_true(sl_msg_decode(buf, (size_t)n, &m, NULL) && m.type == SL_MSG_MOVE);
        a.u.moved.dst = m.u.move.dst;
        half = m.u.move.len / 2;
        if (fm->kind == MOVER_WRONG_DST) {
            a.u.moved.dst += PSIZE;
            a.u.moved.done = m.u.move.len;
        } else if (fm->kind == MOVER_SAYS_GONE) {
            a.u.moved.status = m.u.move.dst / SL_MOVE_CHUNK % 2 ? -ESRCH : -EPROTO;
        } else {
            a.u.moved.status = sl_uffd_move(fm->uffd, NULL, (void *)(uintptr_t)m.u.move.dst,
                                            fm->staging + m.u.move.slot * SL_MOVE_CHUNK, half,
                                            &a.u.moved.done, &eagain);
            a.u.moved.status = a.u.moved.status ? a.u.moved.status : -EBUSY;
        }
        if (!sl_wire_send(fm->chan, &a, NULL, 0)) {
            break;
        }
    }
    return NULL;
}

/* REGISTER_MOVER of [p, +len) by hand, with a fake mover of @kind; the uffd, or -1. */
static int register_fake_mover(fixture *f, int sock, uint8_t *p, mover_kind kind)
{
    static fake_mover fm; /* the consumer child's one mover */
    g_autoptr(GError) err = NULL;
    sl_msg reg = { .type = SL_MSG_REGISTER_MOVER }, st = { .type = SL_MSG_DONE };
    int sv[2], uffd = sl_uffd_open(UFFD_FEATURE_MOVE, 0, NULL, &err);
    uint8_t *staging = guest_ram(2 * SL_MOVE_CHUNK, NULL);
    pthread_t t;

    if (uffd < 0 || !staging ||
        !sl_uffd_register(uffd, p, f->len, UFFDIO_REGISTER_MODE_MISSING, 0, NULL, &err) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        return -1;
    }
    fm = (fake_mover){ .kind = kind, .chan = sv[0], .uffd = uffd, .staging = staging };
    reg.u.reg = (sl_msg_register){ .host_addr = (uintptr_t)p, .length = f->len,
                                   .page_size = PSIZE, .staging_addr = (uintptr_t)fm.staging,
                                   .staging_slots = 2 };
    g_strlcpy(reg.u.reg.block, "b0", sizeof(reg.u.reg.block));
    if (!sl_wire_send(sock, &reg, (int[]){ uffd, sv[1] }, 2)) {
        return -1;
    }
    close(sv[1]);
    if (kind == MOVER_HANGS_UP) {
        close(sv[0]);
    } else if (pthread_create(&t, NULL, fake_mover_main, &fm) != 0) {
        return -1;
    }
    while (st.type == SL_MSG_DONE) {
        uint8_t buf[SL_PROTO_MAX];
        int fds[SL_WIRE_MAX_FDS], lost;
        unsigned nfds;
        ssize_t n = sl_wire_recv(sock, buf, fds, &nfds, &lost);
        if (n <= 0 || !sl_msg_decode(buf, (size_t)n, &st, NULL)) {
            return -1;
        }
    }
    return st.type == SL_MSG_REGISTERED && st.u.status.status == 0 ? uffd : -1;
}

/* An anonymous consumer that touches nothing before DONE, then checks every page. */
static int consume_moved(fixture *f, mover_kind kind)
{
    g_autoptr(GError) err = NULL;
    uint8_t *p = guest_ram(f->len, NULL);
    unsigned level = 0;
    int sock = sl_client_connect_level(f->sock, "vmm", &level, &err), uffd;

    if (!p || sock < 0) {
        return 29;
    }
    madvise(p, f->len, MADV_HUGEPAGE);
    uffd = kind == MOVER_REAL ? sl_client_register_anon(sock, level, "b0", p, f->len, &err)
                              : register_fake_mover(f, sock, p, kind);
    if (uffd < 0) {
        fprintf(stderr, "moved consumer: %s\n", err ? err->message : "REGISTER_MOVER failed");
        return 30;
    }
    if (!sl_client_wait_done(sock)) {
        return 31;
    }
    f->counts->thp_kb_at_done = sl_test_anon_huge_kb(p);
    atomic_fetch_add(&f->counts->bad, wrong_pages(f, p));
    return 0;
}

/* The client mover's answer to @req on @chan. */
static sl_msg ask_mover(int chan, const sl_msg *req)
{
    uint8_t buf[SL_PROTO_MAX];
    sl_msg a = { 0 };
    ssize_t n;

    assert_true(sl_wire_send(chan, req, NULL, 0));
    n = recv(chan, buf, sizeof(buf), 0);
    assert_true(n > 0 && sl_msg_decode(buf, (size_t)n, &a, NULL));
    assert_int_equal(a.type, SL_MSG_MOVED);
    return a;
}

/*
 * The client library's mover thread, asked directly: a MOVE in time moves
 * the slot's bytes into its mapping; one read after its deadline (the
 * daemon may have given up and copied the chunk), one outside the mapping
 * and one naming a slot that is not there move nothing.
 */
static void test_client_mover_moves_in_time_and_refuses_late_or_foreign_moves(void **state)
{
    const uint64_t len = 4 * SL_MOVE_CHUNK;
    g_autoptr(GError) err = NULL;
    uint8_t *raw;
    uint8_t *p = guest_ram(len, &raw);
    sl_msg_register reg = { .host_addr = (uintptr_t)p, .length = len };
    uint64_t now = sl_mover_now_ns();
    unsigned char vec[1];
    int uffd, chan;
    const struct {
        uint64_t slot, dst, deadline_ns;
        int status;
    } cases[] = {
        { 1, (uintptr_t)p + SL_MOVE_CHUNK, now - 1, -ETIMEDOUT },
        { 0, (uintptr_t)p + len, now + 60000000000ull, -EINVAL },
        { SL_MOVER_SLOTS, (uintptr_t)p, now + 60000000000ull, -EINVAL },
        { 1, (uintptr_t)p, now + 60000000000ull, 0 },
    };

    SL_TEST_NEED("uffd-move", sl_uffd_has_features(UFFD_FEATURE_MOVE),
                 "this kernel has no UFFDIO_MOVE (6.8+)");
    assert_non_null(p);
    uffd = sl_uffd_open(UFFD_FEATURE_MOVE, 0, NULL, &err);
    assert_true(uffd >= 0);
    assert_true(sl_uffd_register(uffd, p, len, UFFDIO_REGISTER_MODE_MISSING, 0, NULL, &err));
    chan = sl_mover_client_start(uffd, &reg, &err);
    assert_true(chan >= 0);
    assert_int_equal(reg.staging_slots, SL_MOVER_SLOTS);
    memset((uint8_t *)(uintptr_t)reg.staging_addr + SL_MOVE_CHUNK, 0x5a, SL_MOVE_CHUNK);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        sl_msg req = { .type = SL_MSG_MOVE,
                       .u.move = { .slot = cases[i].slot, .dst = cases[i].dst,
                                   .len = SL_MOVE_CHUNK, .deadline_ns = cases[i].deadline_ns } };
        sl_msg a = ask_mover(chan, &req);
        if (a.u.moved.status != cases[i].status) {
            fail_msg("case %zu: status %d, want %d", i, a.u.moved.status, cases[i].status);
        }
        assert_int_equal(a.u.moved.dst, cases[i].dst);
        assert_int_equal(a.u.moved.done, cases[i].status ? 0 : SL_MOVE_CHUNK);
    }
    /* Only the last moved: the late one left its target a hole. */
    assert_int_equal(mincore(p + SL_MOVE_CHUNK, 4096, vec), 0);
    assert_false(vec[0] & 1);
    for (uint64_t i = 0; i < SL_MOVE_CHUNK; i += 4096) {
        assert_int_equal(p[i], 0x5a);
    }
    close(chan); /* the thread ends, freeing its slots */
    close(uffd);
    munmap(raw, len + SL_MOVE_CHUNK);
}

static int consume_moved_arg(fixture *f, int kind)
{
    return consume_moved(f, (mover_kind)kind);
}

/* One daemon run whose one consumer registers with @kind of mover; its stats line. */
static JsonLine run_mover_case(fixture *f, mover_kind kind)
{
    return run_one_consumer(f, 16u << 20, consume_moved_arg, (int)kind);
}

/*
 * Anonymous guest RAM of another process, with a mover (REGISTER_MOVER):
 * the daemon hands it whole chunks, and whatever a mover does not move —
 * it hangs up, answers for another address, moves half, says its process
 * is gone — is copied, so that every page is right whatever the mover does
 * and the daemon exits 0 (a mover's statuses neither end the restore nor
 * use up the staging slots).  Pages moved are counted only where the mover
 * really moves.
 */
static void test_chunks_handed_to_a_consumer_mover_land_whatever_it_does(void **state)
{
    fixture *f = *state;

    SL_TEST_NEED("uffd-move", sl_uffd_has_features(UFFD_FEATURE_MOVE),
                 "this kernel has no UFFDIO_MOVE (6.8+)");
    for (size_t i = 0; i < G_N_ELEMENTS(mover_cases); i++) {
        JsonLine l = run_mover_case(f, mover_cases[i].kind);

        fprintf(stderr, "%s: %lld pages moved, %lld by the loader, %lld bad\n",
                mover_cases[i].name, json_member(&l, "pages_moved"),
                json_member(&l, "pages_by_loader"), (long long)atomic_load(&f->counts->bad));
        assert_int_equal(atomic_load(&f->counts->bad), 0);
        assert_int_equal(json_member(&l, "status"), 0);
        assert_int_equal(json_member(&l, "pages_placed_twice"), 0);
        assert_int_equal(json_member(&l, "pages_never_placed"), 0);
        assert_true(mover_cases[i].moves ? json_member(&l, "pages_moved") > 0
                                         : json_member(&l, "pages_moved") == 0);
    }
}

/*
 * With the client library's mover every chunk of a consumer's anonymous
 * RAM is a transparent hugepage when DONE arrives (QEMU's eager load into
 * MADV_HUGEPAGE memory leaves it so); copied in, none is (the daemon's
 * collapser starts only after DONE).
 */
static void test_chunks_moved_in_by_the_client_are_hugepages_at_done(void **state)
{
    fixture *f = *state;
    g_autofree char *why = NULL;

    SL_TEST_NEED("uffd-move", sl_uffd_has_features(UFFD_FEATURE_MOVE),
                 "this kernel has no UFFDIO_MOVE (6.8+)");
    SL_TEST_NEED("thp", sl_test_have_thp_collapse(&why), why);
    run_mover_case(f, MOVER_REAL);
    assert_int_equal(atomic_load(&f->counts->bad), 0);
    assert_int_equal(f->counts->thp_kb_at_done, f->len / 1024);
}

/* An anonymous consumer with the client library's mover that registers, then waits to be killed. */
static int register_and_wait(fixture *f)
{
    g_autoptr(GError) err = NULL;
    uint8_t *p = guest_ram(f->len, NULL);
    unsigned level = 0;
    int sock = sl_client_connect_level(f->sock, "vmm", &level, &err);

    if (!p || sock < 0 ||
        sl_client_register_anon(sock, level, "b0", p, f->len, &err) < 0) {
        return 30;
    }
    atomic_fetch_add(&f->counts->registered, 1);
    pause();
    return 0;
}

/*
 * The VMM dies while the daemon moves chunks into its anonymous RAM (some
 * loader between a staging write and its MOVED): the daemon neither
 * crashes nor hangs; it ends the restore, naming a failure, within 30 s.
 */
static void test_vmm_killed_while_chunks_are_moved_in_ends_the_daemon_cleanly(void **state)
{
    fixture *f = *state;
    gint64 until;
    JsonLine l;
    pid_t vmm;
    int status = 0;

    SL_TEST_NEED("uffd-move", sl_uffd_has_features(UFFD_FEATURE_MOVE),
                 "this kernel has no UFFDIO_MOVE (6.8+)");
    f->want_stats = true;
    setup_daemon(f, 512u << 20, 0, 1);
    vmm = fork();
    if (vmm == 0) {
        _exit(register_and_wait(f));
    }
    while (!atomic_load(&f->counts->registered)) {
        g_usleep(1000);
    }
    g_usleep(20000); /* the loader is moving chunks in by now */
    kill(vmm, SIGKILL);
    assert_int_equal(waitpid(vmm, &status, 0), vmm);
    until = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    while (waitpid(f->daemon, &status, WNOHANG) == 0) {
        if (g_get_monotonic_time() > until) {
            fail_msg("the daemon still runs 30 s after its VMM died");
        }
        g_usleep(10000);
    }
    f->daemon = 0;
    l = read_stats(f);
    fprintf(stderr, "daemon: %s %d; %s", WIFEXITED(status) ? "exit" : "signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), l.text);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    assert_int_equal(json_member(&l, "status"), -ESRCH); /* "restore failed: No such process" */
    assert_int_equal(json_member(&l, "pages_placed_twice"), 0);
}

static void ignore_death(void)
{
}

/*
 * Tracked consumer whose daemon dies after DONE: its mapping, still
 * registered (tracking outlives DONE), must not leave later faults waiting
 * for nobody.  Drops its own PTEs of a page and reads it again (bounded by
 * an alarm): exit 0 when it reads the snapshot's bytes.
 */
static int outlive_daemon(fixture *f, int killpipe)
{
    g_autoptr(GError) err = NULL;
    g_autofree uint8_t *want = g_malloc(PSIZE);
    uint8_t *p;
    int sock, uffd = register_tracked(f, &p, &sock, &err);
    char byte = 'k';

    if (uffd < 0) {
        return 30;
    }
    sl_client_supervise_tracked(sock, uffd, ignore_death, NULL, NULL);
    sl_test_fill_page(want, PSIZE, 5, 1, 4);
    if (memcmp(want, p + 5 * PSIZE, PSIZE) != 0) { /* served by the daemon */
        return 31;
    }
    while (atomic_load(&f->counts->registered) == 0) { /* until the parent saw completion */
        g_usleep(1000);
    }
    if (write(killpipe, &byte, 1) != 1) { /* the parent kills the daemon now */
        return 32;
    }
    while (atomic_load(&f->counts->registered) == 1) {
        g_usleep(1000);
    }
    alarm(20);
    madvise(p + 5 * PSIZE, PSIZE, MADV_DONTNEED); /* our PTE goes, the page cache stays */
    return memcmp(want, p + 5 * PSIZE, PSIZE) == 0 ? 0 : 33;
}

/* A tracked consumer goes on reading after its daemon died past completion. */
static void test_tracked_consumer_outlives_a_daemon_that_dies_after_completion(void **state)
{
    fixture *f = *state;
    int kp[2];
    char byte;
    pid_t pid;

    NEED_TRACKING();
    f->written_dir = g_build_filename(g_get_tmp_dir(), "snapload-written-XXXXXX", NULL);
    assert_non_null(g_mkdtemp(f->written_dir));
    setup_daemon(f, 1u << 20, 0, 1);
    assert_int_equal(pipe2(kp, O_CLOEXEC), 0);
    pid = fork();
    if (pid == 0) {
        _exit(outlive_daemon(f, kp[1]));
    }
    /* The stats line comes once every page is in place. */
    {
        FILE *in = fdopen(f->stats, "r");
        char line[2048];
        while (in && fgets(line, sizeof(line), in) && !strstr(line, "\"status\"")) {
        }
        f->stats = dup(fileno(in));
        fclose(in);
    }
    atomic_store(&f->counts->registered, 1);
    assert_int_equal(read(kp[0], &byte, 1), 1);
    kill(f->daemon, SIGKILL);
    waitpid(f->daemon, NULL, 0);
    f->daemon = 0;
    atomic_store(&f->counts->registered, 2);
    expect_exit(pid, 0);
    close(kp[0]);
    close(kp[1]);
    sl_test_rmdir(g_steal_pointer(&f->written_dir));
}

/*
 * A run whose tracked consumer reports what it wrote leaves a list of
 * exactly those pages: the next run over the same file checks only them
 * (every other page kept unread) and gives back the snapshot's bytes.  A
 * run whose consumer went without reporting leaves none: the run after it
 * checks every page.
 */
static void test_tracked_consumers_leave_a_list_the_next_run_checks_only(void **state)
{
    fixture *f = *state;
    JsonLine l;

    NEED_TRACKING();
    f->written_dir = g_build_filename(g_get_tmp_dir(), "snapload-written-XXXXXX", NULL);
    assert_non_null(g_mkdtemp(f->written_dir));
    l = run_tracked(f, false);             /* fresh file: everything checked */
    assert_int_equal(json_member(&l, "blocks_with_written_list"), 0);
    /* The stats line tells which faults found their unit held or present. */
    assert_in_range(json_member(&l, "faults_on_claimed") + json_member(&l, "faults_on_present"),
                    0, json_member(&l, "faults"));
    assert_true(json_member(&l, "faults_on_claimed") >= 0);
    assert_true(json_member(&l, "faults_on_present") >= 0);
    /* The list is used (its consumer finds the written pages restored, or
     * exits 31); this consumer leaves without reporting. */
    l = run_tracked(f, true);
    assert_int_equal(json_member(&l, "blocks_with_written_list"), 1);
    assert_int_equal(json_member(&l, "pages_known"), 256 - WRITTEN_PAGES);
    l = run_tracked(f, false);              /* so no list: every page checked */
    assert_int_equal(json_member(&l, "blocks_with_written_list"), 0);
    assert_int_equal(json_member(&l, "pages_known"), 0);
    sl_test_rmdir(g_steal_pointer(&f->written_dir));
}

/*
 * A restart list for a RAM file on a tmpfs mounted with @huge, from a
 * tracked run that reported its writes: how many blocks the next run took
 * a list for.  The tmpfs is mounted for the test (capability "mount").
 */
static long long lists_on_tmpfs(fixture *f, const char *huge)
{
    char *mnt = f->mnt = g_build_filename(g_get_tmp_dir(), "snapload-huge-XXXXXX", NULL);
    g_autofree char *opts = g_strdup_printf("size=8m,huge=%s", huge);
    g_autofree char *ram = NULL;
    char why[160];
    JsonLine second;
    long long lists;
    bool have;

    assert_non_null(g_mkdtemp(mnt));
    have = !sl_test_withheld("mount") && mount("snapload-test", mnt, "tmpfs", 0, opts) == 0;
    snprintf(why, sizeof(why), "mounting a tmpfs with huge=%s: %s", huge,
             sl_test_withheld("mount") ? "withheld (SNAPLOAD_WITHOUT)" : g_strerror(errno));
    if (!have) {
        rmdir(mnt);
        g_clear_pointer(&f->mnt, g_free);
    }
    SL_TEST_NEED("mount", have, why);
    ram = g_build_filename(mnt, "ram", NULL);
    f->memfd = open(ram, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    assert_true(f->memfd > 0);
    assert_int_equal(ftruncate(f->memfd, 1u << 20), 0);
    f->written_dir = g_build_filename(g_get_tmp_dir(), "snapload-written-XXXXXX", NULL);
    assert_non_null(g_mkdtemp(f->written_dir));
    run_tracked(f, false);
    second = run_tracked(f, false);
    lists = json_member(&second, "blocks_with_written_list");
    sl_test_rmdir(g_steal_pointer(&f->written_dir));
    close(f->memfd);
    f->memfd = 0;
    umount2(mnt, MNT_DETACH);
    rmdir(mnt);
    g_clear_pointer(&f->mnt, g_free);
    return lists;
}

/*
 * A RAM file of 1 MiB on a tmpfs mounted with huge=always in a mount
 * namespace of its own, which the daemon does not see (QEMU may run in
 * one): its fd, or -1 (*@why says why).
 */
static int ram_in_another_mount_namespace(char **why)
{
    int sv[2], fd = -1, st = 0;
    pid_t kid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || (kid = fork()) < 0) {
        *why = g_strdup(g_strerror(errno));
        return -1;
    }
    if (kid == 0) {
        g_autofree char *mnt = g_build_filename(g_get_tmp_dir(), "snapload-ns-XXXXXX", NULL);
        g_autofree char *ram = NULL;
        int rfd;
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            !g_mkdtemp(mnt) ||
            mount("snapload-test", mnt, "tmpfs", 0, "size=8m,huge=always") < 0) {
            _exit(10);
        }
        ram = g_build_filename(mnt, "ram", NULL);
        rfd = open(ram, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (rfd < 0 || ftruncate(rfd, 1u << 20) < 0 || !sl_test_send_fd(sv[1], rfd)) {
            _exit(11);
        }
        umount2(mnt, MNT_DETACH); /* the file lives on while its fd does */
        rmdir(mnt);
        _exit(0);
    }
    close(sv[1]);
    fd = sl_test_recv_fd(sv[0]);
    close(sv[0]);
    waitpid(kid, &st, 0);
    if (fd < 0) {
        *why = g_strdup_printf("a tmpfs in a mount namespace of its own: status %d", st);
    }
    return fd;
}

/*
 * A RAM file whose tmpfs may collapse its pages into huge pages (mounted
 * with huge= other than never, or where the daemon cannot see the mount)
 * gets no restart list: a collapse unmaps the small pages from every
 * mapping, and a written page's entry goes with them, so a list could
 * miss it (found by review: a page written, then collapsed, was kept by
 * the next restart).  On huge=never the list is kept and used.
 */
static void test_a_tmpfs_that_may_collapse_pages_leaves_no_restart_list(void **state)
{
    static const struct {
        const char *huge;
        long long lists;
    } cases[] = { { "never", 1 }, { "advise", 0 }, { "within_size", 0 }, { "always", 0 } };
    fixture *f = *state;

    NEED_TRACKING();
    g_autofree char *why = NULL;
    JsonLine second;

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        long long got = lists_on_tmpfs(f, cases[i].huge);
        if (got != cases[i].lists) {
            fail_msg("tmpfs huge=%s: %lld blocks with a list, want %lld", cases[i].huge, got,
                     cases[i].lists);
        }
    }
    /* Nor where the daemon cannot see the mount (found by the next review). */
    f->memfd = ram_in_another_mount_namespace(&why);
    SL_TEST_NEED("mount", f->memfd > 0, why);
    f->written_dir = g_build_filename(g_get_tmp_dir(), "snapload-written-XXXXXX", NULL);
    assert_non_null(g_mkdtemp(f->written_dir));
    run_tracked(f, false);
    second = run_tracked(f, false);
    assert_int_equal(json_member(&second, "blocks_with_written_list"), 0);
}

/*
 * A run that keeps its lists in one directory removes the list of its RAM
 * file that a run in another environment left in another (a non-root run
 * without $XDG_RUNTIME_DIR keeps them in the cache directory): that list
 * misses this run's writes, and a later run of that environment would
 * trust it.  Found by review.
 */
static void test_a_run_removes_the_list_of_its_file_left_in_another_directory(void **state)
{
    fixture *f = *state;
    g_autofree char *other = g_build_filename(g_get_user_cache_dir(), "snapload", NULL);
    g_autofree char *stale = NULL;
    struct stat st;
    bool left;

    NEED_TRACKING();
    f->written_dir = g_build_filename(g_get_tmp_dir(), "snapload-written-XXXXXX", NULL);
    assert_non_null(g_mkdtemp(f->written_dir));
    run_tracked(f, false);
    assert_int_equal(fstat(f->memfd, &st), 0);
    assert_int_equal(g_mkdir_with_parents(other, 0700), 0);
    stale = sl_written_path(other, &st, 0);
    assert_true(g_file_set_contents(stale, "a list of an earlier run", -1, NULL));
    run_tracked(f, false);
    left = g_file_test(stale, G_FILE_TEST_EXISTS);
    unlink(stale);
    rmdir(other); /* if we made it */
    sl_test_rmdir(g_steal_pointer(&f->written_dir));
    assert_false(left);
}

/* The written pages the daemon at @f lists for block b0 against snapshot
 * @id: their count (and each must be one of written_pages), or -1 with the
 * refusal in *@why. */
static long long query_written(const fixture *f, const uint8_t *id, char **why)
{
    g_autoptr(GError) err = NULL;
    g_autofree uint64_t *bits = NULL;
    int ret = sl_client_written_pages(f->sock, "b0", id, f->len / PSIZE, &bits, why, &err);
    long long n = 0;

    if (ret < 0) {
        fail_msg("WRITTEN_QUERY: %s", err->message);
    }
    for (uint64_t i = 0; ret > 0 && i < f->len / PSIZE; i++) {
        bool listed = sl_bit_test(bits, i), wrote = false;
        for (unsigned k = 0; k < WRITTEN_PAGES; k++) {
            wrote |= written_pages[k] == i;
        }
        if (listed != wrote) {
            fail_msg("page %" G_GUINT64_FORMAT ": %s", i, listed ? "listed, never written"
                                                                 : "written, not listed");
        }
        n += listed;
    }
    return ret > 0 ? n : -1;
}

/* @why (a refusal) says @text, else the test fails showing it. */
static void expect_why(const char *why, const char *text)
{
    if (!why || !strstr(why, text)) {
        fail_msg("refused for \"%s\", expected \"%s\"", why ? why : "(nothing)", text);
    }
}

/* A tracked consumer that writes written_pages, says so on @said, and
 * reports (WRITTEN) once the parent writes @go. */
static int write_then_report(fixture *f, int said, int go)
{
    g_autoptr(GError) err = NULL;
    uint8_t *p;
    int sock, uffd = register_tracked(f, &p, &sock, &err);
    char byte = 'w';

    if (uffd < 0 || !sl_client_wait_done(sock)) {
        return 30;
    }
    for (unsigned i = 0; i < WRITTEN_PAGES; i++) {
        p[written_pages[i] * PSIZE + 7] ^= 0x5a;
    }
    if (write(said, &byte, 1) != 1 || read(go, &byte, 1) != 1) {
        return 31;
    }
    return sl_client_report_written(f->sock, "b0", p, f->len, 0, &err) ? 0 : 32;
}

/* A tracked consumer in a child: it wrote, and waits for end_writer(). */
typedef struct {
    pid_t pid;
    int said, go; /* our ends of its pipes */
    int hold;     /* a connection that keeps the daemon when the consumer leaves */
} writer;

/* Forks @fn(f, said, go) and waits until it says it wrote. */
static writer start_writer(fixture *f, int (*fn)(fixture *, int, int))
{
    g_autoptr(GError) err = NULL;
    int said[2], go[2];
    writer w;
    char byte;

    assert_true(pipe2(said, O_CLOEXEC) == 0 && pipe2(go, O_CLOEXEC) == 0);
    w.pid = fork();
    if (w.pid == 0) {
        _exit(fn(f, said[1], go[0]));
    }
    close(said[1]); /* a child that ends early gives EOF, not a wait */
    close(go[0]);
    w.said = said[0];
    w.go = go[1];
    assert_int_equal(read(w.said, &byte, 1), 1);
    w.hold = sl_client_connect(f->sock, "holder", &err);
    assert_true(w.hold >= 0);
    return w;
}

/* Lets the writer report and leave; it exits 0 (@w's hold stays open). */
static void end_writer(writer *w)
{
    char byte = 1;

    assert_int_equal(write(w->go, &byte, 1), 1);
    expect_exit(w->pid, 0);
    close(w->said);
    close(w->go);
}

/* A daemon of one 1 MiB block that tracks writes, keeping its lists in a
 * directory of its own; the snapshot's identity in @id. */
static void start_tracking_daemon(fixture *f, uint8_t *id)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *s;

    f->written_dir = g_build_filename(g_get_tmp_dir(), "snapload-written-XXXXXX", NULL);
    assert_non_null(g_mkdtemp(f->written_dir));
    setup_daemon(f, 1u << 20, 0, 1);
    s = sl_snapshot_open(f->snap, &err);
    assert_true(s && sl_snapshot_identity(s, id, &err));
    sl_snapshot_close(s);
}

/*
 * WRITTEN_QUERY: the daemon lists exactly the pages its tracked consumer
 * wrote, read from the live mapping's pagemap, and again once that
 * mapping has reported and gone; it refuses, saying why, a query against
 * another snapshot, and any query once a consumer said it changes the
 * block untracked (UNTRACKED).
 */
static void test_written_query_lists_what_tracked_consumers_wrote(void **state)
{
    fixture *f = *state;
    uint8_t id[SL_IDENTITY_LEN], other[SL_IDENTITY_LEN] = { 0 };
    g_autoptr(GError) err = NULL;
    g_autofree char *why = NULL;
    writer w;

    NEED_TRACKING();
    start_tracking_daemon(f, id);
    w = start_writer(f, write_then_report);
    assert_int_equal(query_written(f, id, &why), WRITTEN_PAGES); /* live, from its pagemap */
    assert_int_equal(query_written(f, other, &why), -1);
    expect_why(why, "another snapshot");
    end_writer(&w);
    assert_int_equal(query_written(f, id, &why), WRITTEN_PAGES); /* reported, gone */
    /* An untracked change of a block this restore does not have is not
     * taken as noted: the consumer must not go on. */
    assert_false(sl_client_report_untracked(f->sock, "no-such-block", &err));
    assert_non_null(strstr(err->message, "did not take note"));
    g_clear_error(&err);
    assert_int_equal(query_written(f, id, &why), WRITTEN_PAGES); /* b0 unchanged */
    /* A consumer about to punch holes says so first: no list from then on. */
    assert_true(sl_client_report_untracked(f->sock, "b0", &err));
    g_clear_pointer(&why, g_free);
    assert_int_equal(query_written(f, id, &why), -1);
    expect_why(why, "discarded pages");
    close(w.hold);
    sl_test_rmdir(g_steal_pointer(&f->written_dir));
}

/* The tracked parts of write_parts_then_report(): block pages [0, 64) and [64, end). */
static void tracked_part(const fixture *f, unsigned k, uint64_t *off, uint64_t *len)
{
    *off = k == 0 ? 0 : 64 * PSIZE;
    *len = k == 0 ? 64 * PSIZE : f->len - 64 * PSIZE;
}

/*
 * A tracked back-end mapping b0 in two parts (each on its own connection,
 * as libvhost-user maps two memory regions) that writes written_pages
 * through the part holding each, says so on @said, and reports each part
 * (WRITTEN) once the parent writes @go.
 */
static int write_parts_then_report(fixture *f, int said, int go)
{
    g_autoptr(GError) err = NULL;
    uint8_t *p[2];
    int sock[2];
    char byte = 'w';

    for (unsigned k = 0; k < 2; k++) {
        uint64_t off, len;
        tracked_part(f, k, &off, &len);
        p[k] = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, (off_t)off);
        sock[k] = sl_client_connect(f->sock, "tracked-part", &err);
        if (p[k] == MAP_FAILED || sock[k] < 0 ||
            sl_client_register_tracked(sock[k], "b0", p[k], len, f->memfd, off, &err) < 0) {
            fprintf(stderr, "tracked part %u: %s\n", k, err ? err->message : "?");
            return 30;
        }
    }
    for (unsigned k = 0; k < 2; k++) {
        if (!sl_client_wait_done(sock[k])) {
            return 31;
        }
    }
    for (unsigned i = 0; i < WRITTEN_PAGES; i++) {
        unsigned k = written_pages[i] >= 64;
        p[k][(written_pages[i] - 64 * k) * PSIZE + 7] ^= 0x5a;
    }
    if (write(said, &byte, 1) != 1 || read(go, &byte, 1) != 1) {
        return 32;
    }
    for (unsigned k = 0; k < 2; k++) {
        uint64_t off, len;
        tracked_part(f, k, &off, &len);
        if (!sl_client_report_written(f->sock, "b0", p[k], len, 0, &err)) {
            fprintf(stderr, "tracked part %u: %s\n", k, err->message);
            return 33;
        }
    }
    return 0;
}

/*
 * Tracked parts of a block (a back-end of a guest whose RAM comes in two
 * memory regions, under qemu-restore --reuse-ram): the pages written
 * through each part are listed at their place in the block, read from the
 * live mappings and again once both parts reported.  Before, the daemon
 * refused a part, and scanned a tracked mapping as if it began the block.
 */
static void test_written_query_places_the_pages_of_tracked_parts_in_the_block(void **state)
{
    fixture *f = *state;
    uint8_t id[SL_IDENTITY_LEN];
    g_autoptr(GError) err = NULL;
    g_autofree char *why = NULL;
    writer w;

    NEED_TRACKING();
    start_tracking_daemon(f, id);
    w = start_writer(f, write_parts_then_report);
    assert_int_equal(query_written(f, id, &why), WRITTEN_PAGES); /* live, from its pagemap */
    end_writer(&w);
    assert_int_equal(query_written(f, id, &why), WRITTEN_PAGES); /* reported, gone */
    close(w.hold);
    /* Complete, every client gone: the daemon saves its list there and ends. */
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    sl_test_rmdir(g_steal_pointer(&f->written_dir));
}

/* A daemon that does not track writes refuses WRITTEN_QUERY and
 * REGISTER_WP, saying so. */
static void test_written_query_to_an_untracking_daemon_is_refused(void **state)
{
    fixture *f = *state;
    uint8_t id[SL_IDENTITY_LEN] = { 0 };
    g_autofree char *why = NULL;

    g_autoptr(GError) err = NULL;
    uint8_t *p;
    int sock;

    setup_daemon(f, 1u << 20, 0, 1);
    assert_int_equal(query_written(f, id, &why), -1);
    expect_why(why, "does not track writes");
    /* A tracked mapping is refused as unsupported, which a client may
     * answer by registering plainly (any other refusal is real); where the
     * kernel cannot track, the client itself refuses it so, first. */
    assert_int_equal(register_tracked(f, &p, &sock, &err), -1);
    assert_true(g_error_matches(err, SL_ERROR, SL_ERROR_UNSUPPORTED));
    if (sl_uffd_has_features(SL_UFFD_TRACK_FEATURES)) {
        expect_why(err->message, "does not track writes");
    }
    close(sock);
    munmap(p, f->len);
}

/*
 * Waits (bounded) until the daemon drops @sock: first its reason, a
 * REGISTERED with @status naming @reason, then the hang-up.  Returns when
 * the reason arrived (monotonic µs).
 */
static gint64 expect_dropped(int sock, int status, const char *reason)
{
    struct pollfd p = { .fd = sock, .events = POLLIN };
    uint8_t buf[SL_PROTO_MAX];
    int fds[SL_WIRE_MAX_FDS];
    unsigned nfds;
    int lost;
    ssize_t n;
    gint64 when;
    sl_msg m;

    if (poll(&p, 1, 10000) != 1) {
        fail_msg("the daemon did not drop the connection within 10 s");
    }
    when = g_get_monotonic_time();
    n = sl_wire_recv(sock, buf, fds, &nfds, &lost);
    assert_true(n > 0 && nfds == 0 && sl_msg_decode(buf, (size_t)n, &m, NULL));
    assert_int_equal(m.type, SL_MSG_REGISTERED);
    assert_int_equal(m.u.status.status, status);
    if (!strstr(m.u.status.message, reason)) {
        fail_msg("dropped for \"%s\", expected \"%s\"", m.u.status.message, reason);
    }
    assert_int_equal(sl_wire_recv(sock, buf, fds, &nfds, &lost), 0);
    return when;
}

/*
 * A loopback TCP connection, never accepted, its send queue full and
 * SO_LINGER set to an hour: its last close() would wait that long.
 * *@listener: the listening socket, to close at the end.
 */
static int lingering_socket(int *listener)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof(a);
    struct linger hour = { 1, 3600 };
    struct pollfd p;
    static char junk[65536];
    int small = 4096, c;

    *listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* a small receive queue, inherited by the connection nobody accepts */
    assert_int_equal(setsockopt(*listener, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    assert_int_equal(bind(*listener, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(*listener, 1), 0);
    assert_int_equal(getsockname(*listener, (struct sockaddr *)&a, &alen), 0);
    c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_int_equal(setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    assert_true(connect(c, (struct sockaddr *)&a, sizeof(a)) == 0 || errno == EINPROGRESS);
    p = (struct pollfd){ .fd = c, .events = POLLOUT };
    assert_int_equal(poll(&p, 1, 5000), 1);
    p.events = POLLOUT;
    do { /* until the peer's receive queue and our send queue stay full */
        while (write(c, junk, sizeof(junk)) > 0) {
        }
        assert_int_equal(errno, EAGAIN);
    } while (poll(&p, 1, 200) == 1);
    assert_int_equal(setsockopt(c, SOL_SOCKET, SO_LINGER, &hour, sizeof(hour)), 0);
    return c;
}

/*
 * A peer that sends the daemon a socket lingering an hour over unsent data
 * (with any message: the daemon closes every fd a packet brings) cannot
 * block its main loop: the next consumer's HELLO is answered at once
 * (found by review: close() waited out the linger, every client with it).
 */
static void test_a_lingering_socket_sent_by_a_peer_does_not_block_the_daemon(void **state)
{
    fixture *f = *state;
    sl_msg hello = { .type = SL_MSG_HELLO, .u.hello = { 1, 9, "linger" } };
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int listener, slow, s, t;
    struct pollfd p;

    setup_daemon(f, 4u << 20, 0, 1);
    slow = lingering_socket(&listener); /* after the fork: the daemon holds no copy */
    g_strlcpy(a.sun_path, f->sock, sizeof(a.sun_path));
    s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_true(sl_wire_send(s, &hello, &slow, 1));
    close(slow); /* the daemon's copy is the last one */
    p = (struct pollfd){ .fd = s, .events = POLLIN };
    assert_int_equal(poll(&p, 1, 5000), 1); /* its answer: the daemon got past the packet */
    t = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(t, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_true(sl_wire_send(t, &hello, NULL, 0));
    p = (struct pollfd){ .fd = t, .events = POLLIN };
    if (poll(&p, 1, 3000) != 1) {
        fail_msg("a second consumer's HELLO got no answer within 3 s");
    }
    close(t);
    close(s);
    close(listener);
}

/* A connection that never says HELLO is dropped after the timeout, and told why. */
/*
 * A consumer that retires its mapping before the restore has started (a
 * block is still unattached) is let go at once: the daemon closes its end
 * well within the client's wait, and no seal at the start can reach the
 * range, which the consumer may map again.
 */
static void test_a_view_retired_before_the_restore_starts_is_let_go_at_once(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    bool done = true;
    int sock, uffd, back = -1;
    sl_client_sup *sup;
    uint8_t *p;

    f->nblocks = 2; /* only b0 is registered: the restore waits for b1 */
    setup_daemon(f, 8u << 20, 0, 1);
    p = mmap(NULL, f->len, PROT_READ, MAP_SHARED, f->memfd, 0);
    assert_true(p != MAP_FAILED);
    sock = sl_client_connect(f->sock, "early", &err);
    uffd = sock < 0 ? -1 : sl_client_register(sock, "b0", p, f->len, f->memfd, 0, &err);
    if (uffd < 0) {
        fail_msg("registering b0: %s", err->message);
    }
    sup = sl_client_supervise_mapping(sock, uffd, false, ignore_death, NULL, NULL);
    assert_true(sl_client_retire(sup, 3000, &back, &done));
    assert_false(done);
    assert_int_equal(back, uffd); /* ours to close, after the unmap */
    munmap(p, f->len);
    close(back);
}

static void test_silent_connection_is_dropped_after_the_hello_timeout(void **state)
{
    fixture *f = *state;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    gint64 t0;

    f->hello_timeout_ms = 200;
    setup_daemon(f, 4u << 20, 0, 1);
    g_strlcpy(a.sun_path, f->sock, sizeof(a.sun_path));
    t0 = g_get_monotonic_time();
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_true(expect_dropped(s, -ETIMEDOUT, "no HELLO within 200 ms") - t0 >= 200000);
    close(s);
}

/*
 * As many peers as the daemon serves at once say HELLO and then nothing:
 * each is dropped, with its reason, once the (short) REGISTER timeout has
 * passed since its HELLO, and a consumer that was waiting behind them in
 * the listen backlog then joins and completes the restore.
 */
static void test_silent_peers_after_hello_are_dropped_and_a_waiting_consumer_joins(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    int silent[SL_DAEMON_MAX_CLIENTS];
    gint64 hello[SL_DAEMON_MAX_CLIENTS];
    pid_t late;

    f->register_timeout_ms = 1000; /* the late consumer registers within it, loaded host or not */
    setup_daemon(f, 4u << 20, 0, 0); /* faults only: the late consumer's reads complete it */
    for (unsigned i = 0; i < SL_DAEMON_MAX_CLIENTS; i++) {
        hello[i] = g_get_monotonic_time();
        silent[i] = sl_client_connect(f->sock, "silent", &err);
        assert_true(silent[i] >= 0);
    }
    late = spawn_consumer(f, "late", 1); /* waits in the backlog: every slot is taken */
    for (unsigned i = 0; i < SL_DAEMON_MAX_CLIENTS; i++) {
        gint64 at = expect_dropped(silent[i], -ETIMEDOUT, "no REGISTER within 1000 ms of HELLO");
        if (at - hello[i] < 1000000) {
            fail_msg("silent peer %u dropped %" G_GINT64_FORMAT " µs after its HELLO", i,
                     at - hello[i]);
        }
        close(silent[i]);
    }
    expect_exit(late, 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
}

/*
 * A client that has registered is a consumer waiting for DONE: it is not
 * timed out, even well past the REGISTER timeout (a peer that said HELLO
 * after it is dropped first), and it gets its DONE.
 */
static void test_registered_consumer_outlives_the_register_timeout(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    struct pollfd p;
    uint8_t *map;
    int holder, uffd, silent;

    f->register_timeout_ms = 1000; /* the vmm consumer below must register within it too */
    setup_daemon(f, 4u << 20, 0, 0);
    map = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    holder = sl_client_connect(f->sock, "holder", &err);
    assert_true(holder >= 0);
    uffd = sl_client_register(holder, "b0", map, f->len, f->memfd, 0, &err);
    assert_true(uffd >= 0);
    silent = sl_client_connect(f->sock, "silent", &err);
    assert_true(silent >= 0);
    /* Its deadline is later than the holder's would be: once it has gone,
     * the daemon has looked at the holder past its own. */
    expect_dropped(silent, -ETIMEDOUT, "no REGISTER within 1000 ms of HELLO");
    p = (struct pollfd){ .fd = holder, .events = POLLIN };
    assert_int_equal(poll(&p, 1, 0), 0); /* neither a reason nor a hang-up */
    expect_exit(spawn_consumer(f, "vmm", 1), 0);
    assert_true(sl_client_wait_done(holder));
    close(silent);
    close(holder);
    close(uffd);
    munmap(map, f->len);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
}

/* Open fds of process @pid. */
static unsigned fd_count(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int)pid);
    GDir *dir = g_dir_open(path, 0, NULL);
    unsigned n = 0;

    assert_non_null(dir);
    while (g_dir_read_name(dir)) {
        n++;
    }
    g_dir_close(dir);
    return n;
}

/*
 * The daemon's fd count once it has seen every client that left go (a
 * greeted probe: it handles every earlier hang-up before it accepts a new
 * connection), waiting up to 5 s more for the count to come down to
 * @want: the engine may release a departed view's uffd on its own
 * threads, which tell nobody, so that part alone has no event to wait on.
 * The probe's own socket is counted.
 */
static unsigned daemon_fds(fixture *f, unsigned want)
{
    g_autoptr(GError) err = NULL;
    int probe = sl_client_connect(f->sock, "probe", &err);
    gint64 end = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    unsigned n;

    assert_true(probe >= 0);
    while ((n = fd_count(f->daemon)) > want && g_get_monotonic_time() < end) {
        g_usleep(1000);
    }
    close(probe);
    return n;
}

/*
 * A thousand consumer processes, one after the other, register and exit
 * while the restore runs: the daemon ends with exactly the fds it had
 * before them (its own copies and the restore's duplicates of each one's
 * uffd are released when it leaves, not when the restore ends).
 */
static void test_a_thousand_consumers_leave_the_daemon_fd_count_unchanged(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    unsigned before, after;
    uint8_t *map;
    int holder, uffd;

    setup_daemon(f, 4u << 20, 0, 0); /* faults only: the restore runs until the end */
    map = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    holder = sl_client_connect(f->sock, "holder", &err); /* attaches the block, starts it */
    uffd = holder < 0 ? -1 : sl_client_register(holder, "b0", map, f->len, f->memfd, 0, &err);
    assert_true(uffd >= 0);
    before = daemon_fds(f, UINT_MAX);
    for (unsigned i = 0; i < 1000; i++) {
        expect_exit(spawn_passing(f, 0), 0);
    }
    after = daemon_fds(f, before);
    if (after != before) {
        fail_msg("the daemon had %u fds before 1000 consumers came and went, %u after", before,
                 after);
    }
    close(holder);
    close(uffd);
    munmap(map, f->len);
}

/*
 * An empty packet is a packet, not a hang-up (SOCK_SEQPACKET reads both as
 * 0 bytes): one carrying fds is refused as too short, and the fds it
 * carried are closed rather than kept by the daemon for good.
 */
static void test_empty_packet_with_fds_is_refused_and_its_fds_closed(void **state)
{
    fixture *f = *state;
    g_autofree char *answer = NULL;
    unsigned before, after;
    int p[2];

    setup_daemon(f, 4u << 20, 0, 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    before = daemon_fds(f, UINT_MAX);
    assert_true(hostile(f->sock, "", 0, p[0], p[1], &answer));
    after = daemon_fds(f, before);
    if (!answer || !strstr(answer, "packet of 0 bytes is shorter than the 16-byte header")) {
        fail_msg("empty packet with 2 fds answered \"%s\"", answer ? answer : "(nothing)");
    }
    if (after != before) {
        fail_msg("the daemon had %u fds before an empty packet with 2 fds, %u after", before,
                 after);
    }
    close(p[0]);
    close(p[1]);
}

/* uffd features the daemon does not serve, each with the name its refusal gives. */
static const struct {
    uint64_t feature;
    const char *name;
} unserved_features[] = {
    { UFFD_FEATURE_EVENT_FORK, "EVENT_FORK" },
    { UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP" },
    { UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE" },
    { UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP" },
    { UFFD_FEATURE_SIGBUS, "SIGBUS" },
    { UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP" },
};

/* A uffd handshaken for shmem MISSING|MINOR plus @extra, registered on [p, +len); -1 if the
 * kernel refuses @extra. */
static int uffd_with(void *p, uint64_t len, uint64_t extra)
{
    g_autoptr(GError) err = NULL;
    int uffd = sl_uffd_open(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM | extra, 0,
                            NULL, &err);

    if (uffd >= 0) {
        assert_true(sl_uffd_register(uffd, p, len, UFFDIO_REGISTER_MODE_MISSING |
                                     UFFDIO_REGISTER_MODE_MINOR, 0, NULL, &err));
    }
    return uffd;
}

/*
 * The daemon's answer to a REGISTER of block b0 at @p (f's memory file,
 * offset 0) carrying @uffd, on a fresh greeted connection: "ok" if it
 * accepted it, its reason if not.  @sock receives the connection (-1 if it
 * could not be made).  Asserts nothing, so that a caller holding a uffd
 * that would block its own forks or munmaps can let go of it first.
 */
static char *register_answer(fixture *f, void *p, int uffd, int *sock)
{
    sl_msg reg = { .type = SL_MSG_REGISTER }, reply;
    uint8_t buf[SL_PROTO_MAX];
    int fds[SL_WIRE_MAX_FDS], send_fds[2] = { uffd, f->memfd };
    unsigned nfds;
    int lost;
    ssize_t n;

    reg.u.reg = (sl_msg_register){ .host_addr = (uintptr_t)p, .length = f->len,
                                   .page_size = PSIZE };
    g_strlcpy(reg.u.reg.block, "b0", sizeof(reg.u.reg.block));
    *sock = sl_client_connect(f->sock, "features", NULL);
    if (*sock < 0 || !sl_wire_send(*sock, &reg, send_fds, 2)) {
        return g_strdup("(could not connect or send)");
    }
    n = sl_wire_recv(*sock, buf, fds, &nfds, &lost);
    if (n <= 0 || !sl_msg_decode(buf, (size_t)n, &reply, NULL) ||
        reply.type != SL_MSG_REGISTERED) {
        return g_strdup("(no REGISTERED answer)");
    }
    return g_strdup(reply.u.status.status == 0 ? "ok" : reply.u.status.message);
}

static void *touch_first_byte(void *p)
{
    return (void *)(uintptr_t)*(volatile uint8_t *)p;
}

/*
 * A consumer hands over a uffd registered on another mapping than the
 * range it names (that range registered too, on a uffd it keeps): the
 * kernel shows nothing wrong at REGISTER, but the first fault that uffd
 * reports lies outside the range, and the daemon drops that client alone,
 * saying so, while a good consumer completes with correct bytes.
 */
static void test_uffd_registered_elsewhere_than_its_range_drops_its_client_alone(void **state)
{
    fixture *f = *state;
    g_autofree char *answer = NULL;
    uint8_t buf[SL_PROTO_MAX];
    int fds[SL_WIRE_MAX_FDS], lost, sock, uffd_p, uffd_q;
    struct pollfd pfd;
    unsigned nfds;
    pthread_t toucher;
    uint8_t *p, *q;
    sl_msg reply;
    ssize_t n;

    setup_daemon(f, 4u << 20, 0, 0); /* faults only */
    p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    q = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    uffd_p = uffd_on(p, f->len, true, false);
    uffd_q = uffd_on(q, f->len, true, false);
    answer = register_answer(f, q, uffd_p, &sock); /* names q, hands over p's uffd */
    assert_string_equal(answer, "ok");
    assert_int_equal(pthread_create(&toucher, NULL, touch_first_byte, p), 0);
    pfd = (struct pollfd){ .fd = sock, .events = POLLIN };
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    n = sl_wire_recv(sock, buf, fds, &nfds, &lost);
    assert_true(n > 0 && sl_msg_decode(buf, (size_t)n, &reply, NULL));
    assert_int_equal(reply.type, SL_MSG_REGISTERED);
    if (!strstr(reply.u.status.message, "fault outside the range it registered")) {
        fail_msg("the lying consumer was told \"%s\"", reply.u.status.message);
    }
    assert_int_equal(sl_uffd_unregister(uffd_p, p, f->len), 0); /* wakes the toucher */
    pthread_join(toucher, NULL);
    expect_exit(spawn_consumer(f, "good", 1), 0);
    close(sock);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
    close(uffd_p);
    close(uffd_q);
    munmap(p, f->len);
    munmap(q, f->len);
}

/*
 * A uffd with an event (fork, remap, remove, unmap), SIGBUS delivery or
 * write-protect faults, none of which the daemon serves, is refused at
 * REGISTER with the feature's name; one with harmless extras (THREAD_ID,
 * EXACT_ADDRESS, POISON) is served like any other and gets its DONE.
 */
static void test_uffd_with_a_feature_the_daemon_does_not_serve_is_refused_by_name(void **state)
{
    fixture *f = *state;
    unsigned tried = 0;
    g_autofree char *ok = NULL;
    uint8_t *map;
    int sock, uffd;

    setup_daemon(f, 4u << 20, 0, 0);
    for (unsigned i = 0; i < G_N_ELEMENTS(unserved_features); i++) {
        void *p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
        g_autofree char *answer = NULL;
        uffd = uffd_with(p, f->len, unserved_features[i].feature);
        if (uffd < 0) { /* EVENT_FORK wants CAP_SYS_PTRACE */
            print_message("# %s: the kernel would not enable it here\n",
                          unserved_features[i].name);
            munmap(p, f->len);
            continue;
        }
        answer = register_answer(f, p, uffd, &sock);
        /* Ours gone before anything can fail: with EVENT_UNMAP a munmap, with
         * EVENT_FORK a fork, would wait for a reader of it. */
        close(uffd);
        munmap(p, f->len);
        if (sock >= 0) {
            close(sock);
        }
        if (!strstr(answer, unserved_features[i].name)) {
            fail_msg("a uffd with %s: answer \"%s\"", unserved_features[i].name, answer);
        }
        tried++;
    }
    assert_true(tried >= 4); /* the unprivileged ones at least */
    map = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    uffd = uffd_with(map, f->len, UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_EXACT_ADDRESS |
                     (sl_uffd_has_features(UFFD_FEATURE_POISON) ? UFFD_FEATURE_POISON : 0));
    assert_true(uffd >= 0);
    ok = register_answer(f, map, uffd, &sock);
    if (strcmp(ok, "ok") != 0) {
        fail_msg("harmless features refused: %s", ok);
    }
    expect_exit(spawn_consumer(f, "vmm", 1), 0);
    assert_true(sl_client_wait_done(sock)); /* served as a view to the end */
    close(sock);
    close(uffd);
    munmap(map, f->len);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
}

/* The @k-th (from 0) fd number that process @pid does not have open. */
static int nth_free_fd(pid_t pid, unsigned k)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int)pid);
    g_autoptr(GHashTable) open_fds = g_hash_table_new(g_direct_hash, g_direct_equal);
    GDir *dir = g_dir_open(path, 0, NULL);
    const char *name;
    int fd = 0;

    assert_non_null(dir);
    while ((name = g_dir_read_name(dir))) {
        g_hash_table_add(open_fds, GINT_TO_POINTER(atoi(name) + 1));
    }
    g_dir_close(dir);
    for (;; fd++) {
        if (!g_hash_table_contains(open_fds, GINT_TO_POINTER(fd + 1)) && k-- == 0) {
            return fd;
        }
    }
}

/*
 * The daemon runs short of fds (its RLIMIT_NOFILE lowered from outside so
 * that exactly @free fds are left when a REGISTER arrives): none, or one,
 * so its fds cannot all be received, or two, so /proc cannot be read to
 * check them.  Each refusal says the daemon is out of fds, never that the
 * consumer's uffd is wrong; with three free it is served, and once the
 * limit is back a consumer completes the restore.
 */
static void test_daemon_out_of_fds_says_so_instead_of_blaming_the_uffd(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    uint8_t *first;
    int sock0, uffd0;

    setup_daemon(f, 4u << 20, 0, 0);
    first = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    sock0 = sl_client_connect(f->sock, "first", &err); /* attaches the block */
    uffd0 = sock0 < 0 ? -1 : sl_client_register(sock0, "b0", first, f->len, f->memfd, 0, &err);
    assert_true(uffd0 >= 0);
    for (unsigned free_fds = 0; free_fds <= 3; free_fds++) {
        uint8_t *p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
        int sock = sl_client_connect(f->sock, "short", &err); /* the daemon is idle after this */
        struct rlimit old, low;
        int uffd;
        assert_true(sock >= 0);
        assert_int_equal(prlimit(f->daemon, RLIMIT_NOFILE, NULL, &old), 0);
        low = (struct rlimit){ .rlim_cur = (rlim_t)nth_free_fd(f->daemon, free_fds),
                               .rlim_max = old.rlim_max };
        assert_int_equal(prlimit(f->daemon, RLIMIT_NOFILE, &low, NULL), 0);
        uffd = sl_client_register(sock, "b0", p, f->len, f->memfd, 0, &err);
        assert_int_equal(prlimit(f->daemon, RLIMIT_NOFILE, &old, NULL), 0);
        if (free_fds < 3 && (uffd >= 0 || !strstr(err->message, "the daemon is out of file "
                                                  "descriptors (EMFILE): try again later") ||
                             strstr(err->message, "userfaultfd"))) {
            fail_msg("%u fds free: %s", free_fds, uffd >= 0 ? "served" : err->message);
        }
        if (free_fds == 3 && uffd < 0) {
            fail_msg("3 fds free: %s", err->message);
        }
        g_clear_error(&err);
        if (uffd >= 0) {
            close(uffd);
        }
        close(sock);
        munmap(p, f->len);
    }
    expect_exit(spawn_consumer(f, "vmm", 1), 0);
    close(sock0);
    close(uffd0);
    munmap(first, f->len);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
}

/* A peer of another uid (not root) is refused even where the socket's
 * permissions would let it connect. */
static void test_peer_of_another_uid_is_refused(void **state)
{
    fixture *f = *state;
    pid_t pid;

    SL_TEST_NEED("root", getuid() == 0, "connecting as another uid needs root");
    setup_daemon(f, 4u << 20, 0, 1);
    assert_int_equal(chmod(f->dir, 0755), 0);
    assert_int_equal(chmod(f->sock, 0666), 0);
    pid = fork();
    if (pid == 0) {
        g_autoptr(GError) err = NULL;
        const char *refused[] = { "neither the daemon's", "connection closed",
                                  g_strerror(ECONNRESET), g_strerror(EPIPE) };
        bool was_refused = false;
        int sock;
        if (setgid(65534) < 0 || setuid(65534) < 0) {
            _exit(40);
        }
        /* Told why and closed at accept; depending on who is first, our
         * HELLO may meet a closed (EPIPE) or reset connection instead. */
        sock = sl_client_connect(f->sock, "stranger", &err);
        for (unsigned i = 0; sock < 0 && i < G_N_ELEMENTS(refused); i++) {
            was_refused |= strstr(err->message, refused[i]) != NULL;
        }
        if (!was_refused) {
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

/*
 * SIGTERM while one of two blocks is attached (the restore never started):
 * the daemon ends as documented: its final stats line says the restore
 * stopped before completion, its socket is gone, and it exits 1.  Found by
 * review: it died of SIGSEGV reading the figures of the restore that had
 * not started, leaving its socket behind.
 */
static void test_a_signal_before_the_restore_starts_ends_the_daemon_with_its_report(void **state)
{
    fixture *f = *state;
    g_autoptr(GError) err = NULL;
    int sock, uffd, status;
    uint8_t *p;

    f->nblocks = 2;
    f->want_stats = true;
    setup_daemon(f, 4u << 20, 0, 1);
    p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    assert_true(p != MAP_FAILED);
    sock = sl_client_connect(f->sock, "one-block", &err);
    uffd = sock < 0 ? -1 : sl_client_register(sock, "b0", p, f->len, f->memfd, 0, &err);
    if (uffd < 0) {
        fail_msg("registering b0: %s", err->message);
    }
    assert_int_equal(kill(f->daemon, SIGTERM), 0);
    assert_int_equal(waitpid(f->daemon, &status, 0), f->daemon);
    f->daemon = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1) {
        fail_msg("the daemon %s %d, expected exit 1", WIFEXITED(status) ? "exited" : "died of "
                 "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
    expect_stats_error(f, "restore stopped before completion");
    assert_int_not_equal(access(f->sock, F_OK), 0);
    close(sock);
    close(uffd);
    munmap(p, f->len);
}

/* ------------------------ protocol levels (HELLO, WELCOME) ------------------------ */

/*
 * A raw connection that says HELLO offering levels [@lo, @hi]: the socket,
 * with the chosen level in *@level; or -1, dropped for the reason in *@why.
 */
static int hello_levels(const char *path, uint32_t lo, uint32_t hi, unsigned *level, char **why)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    sl_msg hello = { .type = SL_MSG_HELLO, .u.hello = { lo, hi, "levels" } }, w;
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), fds[SL_WIRE_MAX_FDS], lost;
    uint8_t buf[SL_PROTO_MAX];
    unsigned nfds;
    ssize_t n;

    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_true(sl_wire_send(s, &hello, NULL, 0));
    n = sl_wire_recv(s, buf, fds, &nfds, &lost);
    assert_true(n > 0 && sl_msg_decode(buf, (size_t)n, &w, NULL));
    if (w.type == SL_MSG_WELCOME) {
        *level = w.u.welcome.version;
        return s;
    }
    assert_int_equal(w.type, SL_MSG_REGISTERED);
    *why = g_strdup(w.u.status.message);
    close(s);
    return -1;
}

/*
 * The daemon chooses the highest level both sides speak, drops a client
 * with none in common, and takes REGISTER_MOVER on a connection that chose
 * level 1 to its checks (the first clients that sent it offered level 1
 * only): here it refuses the fds, not the level; the restore goes on for a
 * good consumer.
 */
static void test_hello_chooses_a_common_level_and_serves_movers_of_any_level(void **state)
{
    fixture *f = *state;
    sl_msg reg = { .type = SL_MSG_REGISTER_MOVER };
    int devnull = open("/dev/null", O_RDWR), s;
    g_autofree char *why = NULL;
    unsigned level = 0;

    setup_daemon(f, 16u << 20, 0, 1);
    s = hello_levels(f->sock, 1, 9, &level, &why);
    assert_true(s >= 0 && level == SL_PROTO_LEVEL);
    close(s);
    assert_int_equal(hello_levels(f->sock, SL_PROTO_LEVEL + 1, 9, &level, &why), -1);
    assert_non_null(strstr(why, "protocol versions 3 to 9, the daemon 1 to 2"));
    s = hello_levels(f->sock, 1, 1, &level, &why);
    assert_true(s >= 0 && level == 1);
    g_strlcpy(reg.u.reg.block, "b0", sizeof(reg.u.reg.block));
    reg.u.reg.length = f->len;
    reg.u.reg.page_size = PSIZE;
    reg.u.reg.staging_addr = SL_MOVE_CHUNK;
    reg.u.reg.staging_slots = 1;
    assert_true(sl_wire_send(s, &reg, (int[]){ devnull, devnull }, 2));
    expect_dropped(s, -EINVAL, "not a userfaultfd");
    close(s);
    expect_exit(spawn_consumer(f, "good", 1), 0);
    expect_exit(f->daemon, 0);
    f->daemon = 0;
    assert_int_equal(atomic_load(&f->counts->bad), 0);
    close(devnull);
}

/* ------------------------ answers a client does not read ------------------------ */

/* Sends a WRITTEN_QUERY of block b0 against snapshot @id on connection @s. */
static void send_query(int s, const uint8_t *id)
{
    sl_msg q = { .type = SL_MSG_WRITTEN_QUERY };

    g_strlcpy(q.u.query.block, "b0", sizeof(q.u.query.block));
    memcpy(q.u.query.identity, id, SL_IDENTITY_LEN);
    assert_true(sl_wire_send(s, &q, NULL, 0));
}

/*
 * A client whose answer to WRITTEN_QUERY cannot be sent (it shut its
 * reading side: EPIPE) is dropped alone: the next client's query is
 * answered.  Found by review: the daemon dropped it for a reason nobody had
 * set and died of SIGSEGV, ending every consumer of the restore.
 */
static void test_a_written_query_answer_that_cannot_be_sent_drops_only_that_client(void **state)
{
    fixture *f = *state;
    uint8_t id[SL_IDENTITY_LEN];
    g_autofree char *why = NULL;
    unsigned level;
    writer w;
    int s;

    NEED_TRACKING();
    start_tracking_daemon(f, id);
    w = start_writer(f, write_then_report);
    s = hello_levels(f->sock, 1, SL_PROTO_LEVEL, &level, &why);
    assert_true(s >= 0);
    assert_int_equal(shutdown(s, SHUT_RD), 0);
    send_query(s, id);
    assert_int_equal(query_written(f, id, &why), WRITTEN_PAGES);
    close(s);
    end_writer(&w);
    assert_int_equal(query_written(f, id, &why), WRITTEN_PAGES);
    close(w.hold);
    expect_exit(f->daemon, 0); /* complete, every client gone; its list saved there */
    f->daemon = 0;
    sl_test_rmdir(g_steal_pointer(&f->written_dir));
}

/*
 * One WRITTEN_QUERY per connection: a client that asks again on the same
 * connection (one that never reads its answers could otherwise pile up a
 * memfd per query in its socket) gets its first answer, then is dropped,
 * told why; the daemon goes on answering others.
 */
static void test_a_second_written_query_on_one_connection_is_refused_by_name(void **state)
{
    fixture *f = *state;
    uint8_t id[SL_IDENTITY_LEN], buf[SL_PROTO_MAX];
    g_autofree char *why = NULL;
    int fds[SL_WIRE_MAX_FDS], lost, s;
    unsigned level, nfds;
    ssize_t n;
    writer w;
    sl_msg m;

    NEED_TRACKING();
    start_tracking_daemon(f, id);
    w = start_writer(f, write_then_report);
    s = hello_levels(f->sock, 1, SL_PROTO_LEVEL, &level, &why);
    assert_true(s >= 0);
    send_query(s, id);
    send_query(s, id);
    n = sl_wire_recv(s, buf, fds, &nfds, &lost);
    assert_true(n > 0 && sl_msg_decode(buf, (size_t)n, &m, NULL));
    assert_int_equal(m.type, SL_MSG_WRITTEN_PAGES);
    assert_int_equal(m.u.wpages.status, 0);
    assert_int_equal(nfds, 1);
    close(fds[0]);
    expect_dropped(s, -EPROTO, "a second WRITTEN_QUERY on one connection");
    close(s);
    assert_int_equal(query_written(f, id, &why), WRITTEN_PAGES);
    end_writer(&w);
    close(w.hold);
    expect_exit(f->daemon, 0); /* complete, every client gone; its list saved there */
    f->daemon = 0;
    sl_test_rmdir(g_steal_pointer(&f->written_dir));
}

/*
 * Sends UNTRACKED on @s without reading the answers until the daemon hangs
 * up (true) or 20000 were sent (false).
 */
static bool flood_untracked(int s)
{
    sl_msg u = { .type = SL_MSG_UNTRACKED };
    struct pollfd p = { .fd = s, .events = POLLOUT };

    g_strlcpy(u.u.untracked.block, "b0", sizeof(u.u.untracked.block));
    for (unsigned i = 0; i < 20000;) {
        if (sl_wire_send_nowait(s, &u)) {
            i++;
        } else if (errno != EAGAIN || poll(&p, 1, 5000) != 1) {
            return errno == EPIPE || errno == ECONNRESET;
        }
    }
    return false;
}

/*
 * A client that never reads its answers (here: to UNTRACKED) fills its
 * socket; the daemon then drops it, rather than dropping its answers
 * silently and serving it on (found by review, with WRITTEN_QUERY, whose
 * answers each held a memfd), and goes on serving others.
 */
static void test_a_client_that_does_not_read_its_answers_is_dropped(void **state)
{
    fixture *f = *state;
    g_autofree char *why = NULL;
    uint8_t buf[SL_PROTO_MAX];
    unsigned level, oks = 0;
    int s, t;
    ssize_t n;
    sl_msg m;

    setup_daemon(f, 1u << 20, 0, 0);
    s = hello_levels(f->sock, 1, SL_PROTO_LEVEL, &level, &why);
    assert_true(s >= 0);
    if (!flood_untracked(s)) {
        fail_msg("the daemon kept a client that reads none of its answers");
    }
    /* The answers it sent, then the hang-up.  When the daemon closed with
     * our last messages unread, the kernel reports ECONNRESET once, ahead
     * of those answers (seen under ASan, which reads slower): read on. */
    for (bool reset = false;;) {
        n = recv(s, buf, sizeof(buf), 0);
        if (n < 0 && errno == ECONNRESET && !reset) {
            reset = true;
            continue;
        }
        if (n <= 0) {
            break;
        }
        oks += sl_msg_decode(buf, (size_t)n, &m, NULL) && m.type == SL_MSG_REGISTERED &&
               m.u.status.status == 0;
    }
    if (n != 0) {
        fail_msg("no hang-up after the daemon dropped the client: recv %zd (%s)", n,
                 g_strerror(errno));
    }
    assert_true(oks > 0);
    close(s);
    t = hello_levels(f->sock, 1, SL_PROTO_LEVEL, &level, &why);
    assert_true(t >= 0); /* the next client is answered */
    close(t);
}

typedef struct {
    int lsock;
    uint32_t level;          /* what WELCOME says */
    sl_msg hello, next;      /* what the client sent */
    unsigned next_fds;
} old_daemon;

/*
 * A daemon of another protocol level: answers HELLO with WELCOME
 * @d->level, notes the next message and its fds, acknowledges it.
 */
static gpointer old_daemon_main(gpointer opaque)
{
    old_daemon *d = opaque;
    int c = accept(d->lsock, NULL, NULL), fds[SL_WIRE_MAX_FDS], lost;
    uint8_t buf[SL_PROTO_MAX];
    unsigned nfds;
    ssize_t n;
    sl_msg w = { .type = SL_MSG_WELCOME, .u.welcome = { d->level, 1 } };
    sl_msg ok = { .type = SL_MSG_REGISTERED, .u.status = { 0, "ok" } };

    n = c < 0 ? -1 : sl_wire_recv(c, buf, fds, &nfds, &lost);
    if (n > 0 && sl_msg_decode(buf, (size_t)n, &d->hello, NULL) && sl_wire_send(c, &w, NULL, 0) &&
        (n = sl_wire_recv(c, buf, fds, &d->next_fds, &lost)) > 0 &&
        sl_msg_decode(buf, (size_t)n, &d->next, NULL)) {
        (void)sl_wire_send(c, &ok, NULL, 0);
        for (unsigned i = 0; i < d->next_fds; i++) {
            close(fds[i]);
        }
    }
    if (c >= 0) {
        close(c);
    }
    return NULL;
}

/* Connects to an old_daemon of @level; the client's uffd (or -1) and its error in *@err. */
static int register_with_level(uint32_t level, old_daemon *d, unsigned *chosen, GError **err)
{
    g_autofree char *dir = sl_test_tmpdir();
    g_autofree char *path = g_build_filename(dir, "d.sock", NULL);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    uint8_t *p = guest_ram(4u << 20, NULL);
    int sock, uffd = -1;
    GThread *th;

    *d = (old_daemon){ .lsock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0),
                       .level = level };
    g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
    assert_int_equal(bind(d->lsock, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(d->lsock, 1), 0);
    th = g_thread_new("old-daemon", old_daemon_main, d);
    sock = sl_client_connect_level(path, "vmm", chosen, err);
    if (sock >= 0) {
        uffd = sl_client_register_anon(sock, *chosen, "b0", p, 4u << 20, err);
        close(sock);
    } else {
        shutdown(d->lsock, SHUT_RDWR);
    }
    g_thread_join(th);
    close(d->lsock);
    munmap(p, 4u << 20);
    sl_test_rmdir(g_steal_pointer(&dir));
    return uffd;
}

/*
 * A client offers levels 1 to 2; with a daemon that predates REGISTER_MOVER
 * (level 1) it registers anonymous memory with a plain REGISTER, with a
 * level-2 daemon by REGISTER_MOVER where the kernel can move pages, and it
 * refuses a level it did not offer.
 */
static void test_client_registers_plainly_with_a_daemon_that_predates_movers(void **state)
{
    g_autoptr(GError) err = NULL;
    unsigned chosen = 0;
    old_daemon d;
    int uffd = register_with_level(1, &d, &chosen, &err);

    assert_true(uffd >= 0);
    close(uffd);
    assert_int_equal(d.hello.u.hello.version_min, 1);
    assert_int_equal(d.hello.u.hello.version_max, SL_PROTO_LEVEL);
    assert_int_equal(chosen, 1);
    assert_int_equal(d.next.type, SL_MSG_REGISTER);
    assert_int_equal(d.next_fds, 1);
    uffd = register_with_level(2, &d, &chosen, &err);
    assert_true(uffd >= 0);
    close(uffd);
    assert_int_equal(chosen, 2);
    if (sl_uffd_has_features(UFFD_FEATURE_MOVE)) {
        assert_int_equal(d.next.type, SL_MSG_REGISTER_MOVER);
        assert_int_equal(d.next_fds, 2);
    } else {
        assert_int_equal(d.next.type, SL_MSG_REGISTER);
    }
    assert_int_equal(register_with_level(3, &d, &chosen, &err), -1);
    assert_non_null(strstr(err->message, "chose protocol version 3; we offered 1 to 2"));
}

/*
 * A daemon that dies mid-save: it welcomes one client, acknowledges its
 * REGISTER (tracked or not), then hangs up without serving a fault.
 */
static gpointer daemon_that_dies(gpointer opaque)
{
    int c = accept(*(int *)opaque, NULL, NULL), fds[SL_WIRE_MAX_FDS], lost;
    uint8_t buf[SL_PROTO_MAX];
    unsigned nfds = SL_WIRE_MAX_FDS;
    sl_msg welcome = { .type = SL_MSG_WELCOME,
                       .u.welcome = { .version = SL_PROTO_VERSION, .nblocks = 1 } };
    sl_msg registered = { .type = SL_MSG_REGISTERED };

    if (c < 0 || sl_wire_recv(c, buf, fds, &nfds, &lost) <= 0 ||
        !sl_wire_send(c, &welcome, NULL, 0)) {
        return NULL;
    }
    nfds = SL_WIRE_MAX_FDS;
    if (sl_wire_recv(c, buf, fds, &nfds, &lost) > 0) {
        (void)sl_wire_send(c, &registered, NULL, 0);
        for (unsigned i = 0; i < nfds; i++) {
            close(fds[i]); /* the view's uffd: nobody here will serve it */
        }
    }
    close(c);
    return NULL;
}

/*
 * `save --daemon` reads a RAM file that a restore still fills through a
 * view registered with that restore's daemon.  If the daemon dies then,
 * a read of a page it had not placed would wait for ever (never zeros);
 * the save's watchdog ends it instead, with a message, and leaves no
 * snapshot, partial or whole, behind.
 */
static void test_save_through_a_daemon_that_dies_ends_with_no_snapshot(void **state)
{
    g_autofree char *dir = (need(0, 0), sl_test_tmpdir());
    g_autofree char *sock = g_build_filename(dir, "d.sock", NULL);
    g_autofree char *out = g_build_filename(dir, "out.snap", NULL);
    g_autofree char *ram = g_strdup_printf("/dev/shm/snapload-test-save-%d", (int)getpid());
    g_autofree char *raw = g_strdup_printf("%s:pc.ram", ram);
    g_autofree char *bin = sl_test_snapload_bin(), *err_text = NULL;
    g_autofree char *err_path = g_build_filename(dir, "stderr", NULL);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int lsock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    int ramfd = open(ram, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600), mark, status, pidfd;
    g_autoptr(GError) err = NULL;
    struct pollfd p;
    GThread *th;
    pid_t pid;

    assert_true(ramfd >= 0 && ftruncate(ramfd, 1u << 20) == 0); /* holes: nothing placed */
    mark = sl_busy_mark(ramfd, 0, 1u << 20, &err); /* a restore fills it */
    assert_true(mark >= 0);
    g_strlcpy(a.sun_path, sock, sizeof(a.sun_path));
    assert_int_equal(bind(lsock, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lsock, 4), 0);
    th = g_thread_new("daemon-that-dies", daemon_that_dies, &lsock);
    pid = fork();
    if (pid == 0) {
        int efd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(efd, STDERR_FILENO);
        execl(bin, bin, "save", "--raw", raw, "-o", out, "--daemon", sock, (char *)NULL);
        _exit(127);
    }
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    p = (struct pollfd){ .fd = pidfd, .events = POLLIN };
    if (poll(&p, 1, 20000) != 1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("the save still waits 20 s after its daemon died");
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    g_thread_join(th);
    assert_true(g_file_get_contents(err_path, &err_text, NULL, NULL));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1 || !strstr(err_text, "daemon went away")) {
        fail_msg("save: status %d, stderr: %s", status, err_text);
    }
    assert_false(g_file_test(out, G_FILE_TEST_EXISTS));
    assert_int_equal(sl_test_dir_entries(dir), 2); /* d.sock and stderr: no partial snapshot */
    sl_busy_clear(mark);
    close(pidfd);
    close(lsock);
    close(ramfd);
    unlink(ram);
    sl_test_rmdir(g_steal_pointer(&dir));
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
        sl_client_supervise(sock, die_now, NULL, NULL);
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

/*
 * A hangup (the terminal that started `snapload serve` closed) ends the
 * daemon as SIGINT and SIGTERM do: it exits, and its socket goes with it.
 * Found by review: SIGHUP killed it outright and left the --socket file.
 */
static void test_a_hangup_ends_the_daemon_cleanly(void **state)
{
    g_autofree char *dir = (need(0, 0), sl_test_tmpdir());
    g_autofree char *sock = g_build_filename(dir, "d.sock", NULL);
    g_autofree char *snap = g_build_filename(dir, "s.snap", NULL);
    g_autofree char *bin = sl_test_snapload_bin();
    const uint64_t len = 1u << 20;
    int status;
    pid_t pid;

    sl_test_make_snapshot(snap, &len, 1, PSIZE, 4, 16);
    pid = fork();
    if (pid == 0) {
        execl(bin, bin, "serve", snap, "--socket", sock, "--threads", "0", (char *)NULL);
        _exit(127);
    }
    for (unsigned t = 0; t < 10000 && access(sock, F_OK) < 0; t++) {
        g_usleep(1000);
    }
    assert_int_equal(access(sock, F_OK), 0);
    assert_int_equal(kill(pid, SIGHUP), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status)) {
        fail_msg("the daemon died of signal %d", WTERMSIG(status));
    }
    assert_int_not_equal(access(sock, F_OK), 0); /* its socket went with it */
    unlink(snap);
    sl_test_rmdir(g_steal_pointer(&dir));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages_round_trip),
        cmocka_unit_test(test_hostile_packets_are_rejected_by_name),
        cmocka_unit_test(test_mover_messages_with_impossible_fields_are_refused),
        cmocka_unit_test(test_client_registers_plainly_with_a_daemon_that_predates_movers),
        cmocka_unit_test_setup_teardown(
            test_hello_chooses_a_common_level_and_serves_movers_of_any_level,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test(test_random_packets_never_crash_the_decoder),
        cmocka_unit_test(test_unprintable_block_names_are_rejected_by_the_decoder),
        cmocka_unit_test_setup_teardown(test_forged_zero_page_never_reaches_a_consumer,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_page_refused_before_a_stop_is_named_in_the_daemons_report,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_shmem_vmm_and_late_backend_see_correct_bytes,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_shmem_backend_mapping_parts_of_the_block_sees_correct_bytes,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_hugetlbfs_backend_mapping_parts_of_the_block_sees_correct_bytes,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_parts_of_a_block_alone_restore_it_by_faults,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_part_outside_the_block_or_of_unknown_place_is_refused,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_memory_file_the_restore_cannot_write_is_refused_by_name, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_blocks_overlapping_in_one_memory_file_are_refused_by_name, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_hugetlbfs_vmm_and_late_backend_see_correct_bytes,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_daemon_given_a_moved_parent_serves_its_child_correct_bytes, fixture_setup,
            fixture_teardown),
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
        cmocka_unit_test_setup_teardown(
            test_uffd_registered_elsewhere_than_its_range_drops_its_client_alone, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_consumers_that_leave_free_their_views,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_consumer_killed_mid_restore_leaves_the_others_unharmed, fixture_setup,
            fixture_teardown),
        cmocka_unit_test(test_save_through_a_daemon_that_dies_ends_with_no_snapshot),
        cmocka_unit_test(test_written_list_is_used_once_and_refused_when_it_does_not_match),
        cmocka_unit_test(test_a_written_list_belongs_to_one_offset_of_its_file),
        cmocka_unit_test(test_saving_a_list_removes_the_oldest_beyond_the_bound),
        cmocka_unit_test_setup_teardown(
            test_tracked_consumer_outlives_a_daemon_that_dies_after_completion, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tracked_consumers_leave_a_list_the_next_run_checks_only,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_tmpfs_that_may_collapse_pages_leaves_no_restart_list, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_run_removes_the_list_of_its_file_left_in_another_directory, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_written_query_lists_what_tracked_consumers_wrote,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_written_query_places_the_pages_of_tracked_parts_in_the_block, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_written_query_to_an_untracking_daemon_is_refused,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_written_query_answer_that_cannot_be_sent_drops_only_that_client,
            fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_second_written_query_on_one_connection_is_refused_by_name, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_client_that_does_not_read_its_answers_is_dropped,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_anonymous_consumer_ends_in_hugepages_with_the_same_bytes, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_chunks_handed_to_a_consumer_mover_land_whatever_it_does, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_chunks_moved_in_by_the_client_are_hugepages_at_done, fixture_setup,
            fixture_teardown),
        cmocka_unit_test(test_client_mover_moves_in_time_and_refuses_late_or_foreign_moves),
        cmocka_unit_test_setup_teardown(
            test_vmm_killed_while_chunks_are_moved_in_ends_the_daemon_cleanly, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_consumer_joining_after_completion_gets_done,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_consumers_sent_done_do_not_use_up_the_client_slots,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_view_retired_before_the_restore_starts_is_let_go_at_once, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_silent_connection_is_dropped_after_the_hello_timeout,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_lingering_socket_sent_by_a_peer_does_not_block_the_daemon, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_silent_peers_after_hello_are_dropped_and_a_waiting_consumer_joins,
            fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_registered_consumer_outlives_the_register_timeout,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_thousand_consumers_leave_the_daemon_fd_count_unchanged, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_empty_packet_with_fds_is_refused_and_its_fds_closed,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_uffd_with_a_feature_the_daemon_does_not_serve_is_refused_by_name,
            fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_daemon_out_of_fds_says_so_instead_of_blaming_the_uffd, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_peer_of_another_uid_is_refused, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_restore_that_cannot_start_ends_the_daemon,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_signal_before_the_restore_starts_ends_the_daemon_with_its_report,
            fixture_setup, fixture_teardown),
        cmocka_unit_test(test_a_hangup_ends_the_daemon_cleanly),
    };
    if (g_getenv("SL_TEST_FILTER")) { /* e.g. "*written_query*": run only matching cases */
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
