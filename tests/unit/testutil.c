/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Shared unit-test helpers (see testutil.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include "testutil.h"
#include "backends/backend.h"
#include "migration/restore-int.h"
#include "migration/uffd.h"

bool sl_test_required(const char *cap)
{
    const char *req = g_getenv("SNAPLOAD_REQUIRE");
    g_auto(GStrv) caps = req ? g_strsplit(req, ",", -1) : NULL;

    for (unsigned i = 0; caps && caps[i]; i++) {
        if (!strcmp(caps[i], cap) || !strcmp(caps[i], "all")) {
            return true;
        }
    }
    return false;
}

#define MAX_ABSENT 256

/* Why a case cannot run here; kept for the suite's life (reachable, not leaked). */
typedef struct {
    const char *cap;
    char why[200];
} absent_case;

static void skip_absent(void **state)
{
    const absent_case *a = *state;

    SL_TEST_NEED(a->cap, false, a->why);
}

void sl_test_skip_as_absent(struct CMUnitTest *t, const char *cap, const char *why)
{
    static absent_case absent[MAX_ABSENT];
    static unsigned nabsent;

    assert_true(nabsent < MAX_ABSENT);
    absent[nabsent].cap = cap;
    g_strlcpy(absent[nabsent].why, why, sizeof(absent[nabsent].why));
    *t = (struct CMUnitTest){ .name = t->name, .test_func = skip_absent,
                              .initial_state = &absent[nabsent++] };
}

void sl_test_skip_if_absent(struct CMUnitTest *t, const char *cap, uint64_t hugepage)
{
    g_autoptr(GError) err = NULL;

    if (hugepage && !sl_hugetlb_check(hugepage, 1, &err)) {
        sl_test_skip_as_absent(t, cap, err->message);
    }
}

bool sl_test_withheld(const char *cap)
{
    const char *w = g_getenv("SNAPLOAD_WITHOUT");
    g_auto(GStrv) caps = w ? g_strsplit(w, ",", -1) : NULL;

    for (unsigned i = 0; caps && caps[i]; i++) {
        if (!strcmp(caps[i], cap)) {
            return true;
        }
    }
    return false;
}

bool sl_test_have_uffd(char **why)
{
    GError *err = NULL;
    int fd = sl_uffd_open(0, 0, NULL, &err);
    long psz = sysconf(_SC_PAGESIZE);
    void *p;
    bool ok;

    if (fd < 0) {
        *why = g_strdup(err->message);
        g_error_free(err);
        return false;
    }
    p = mmap(NULL, (size_t)psz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ok = sl_uffd_register(fd, p, (uint64_t)psz, UFFDIO_REGISTER_MODE_MISSING,
                          SL_IOCTL(_UFFDIO_COPY), NULL, &err);
    if (!ok) {
        *why = g_strdup(err->message);
        g_error_free(err);
    }
    munmap(p, (size_t)psz);
    close(fd);
    return ok;
}

char *sl_test_tmpdir(void)
{
    g_autoptr(GError) err = NULL;
    char *d = g_dir_make_tmp("snapload-test-XXXXXX", &err);

    assert_non_null(d);
    return d;
}

int64_t sl_test_pages_not_on_disk(const char *path)
{
    struct {
        uint64_t off, len;
    } rg = { 0, 0 }; /* 0: to the end of the file */
    struct {
        uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
    } cs = { 0 };
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    long rc = fd < 0 ? -1 : syscall(451 /* cachestat, Linux 6.5 */, fd, &rg, &cs, 0);
    int err = errno;

    if (fd >= 0) {
        close(fd);
    }
    errno = err;
    return rc == 0 ? (int64_t)(cs.nr_dirty + cs.nr_writeback) : -1;
}

bool sl_test_have_cachestat(void)
{
    return sl_test_pages_not_on_disk("/proc/self/exe") >= 0 || errno != ENOSYS;
}

unsigned sl_test_dir_entries(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    unsigned n = 0;

    while (d && g_dir_read_name(d)) {
        n++;
    }
    if (d) {
        g_dir_close(d);
    }
    return n;
}

void sl_test_rmdir(char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        char *p = g_build_filename(dir, name, NULL);
        struct stat st;

        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            sl_test_rmdir(p); /* a directory a test or a program under test made */
            continue;
        }
        g_unlink(p);
        g_free(p);
    }
    if (d) {
        g_dir_close(d);
    }
    g_rmdir(dir);
    g_free(dir);
}

void sl_test_fill_page(uint8_t *p, size_t size, uint64_t idx, uint64_t seed, unsigned zero_every)
{
    uint64_t s = (idx + 1) * 0x9e3779b97f4a7c15ull ^ seed * 0xbf58476d1ce4e5b9ull;

    if (zero_every && idx % zero_every == 0) {
        memset(p, 0, size);
        return;
    }
    for (size_t i = 0; i + 8 <= size; i += 8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        memcpy(p + i, &s, 8);
    }
    memcpy(p, &idx, sizeof(idx)); /* never all-zero, and unique per page */
    p[8] = (uint8_t)(seed | 1);
}

void sl_test_make_snapshot(const char *path, const uint64_t *lengths, unsigned nblocks,
                           uint64_t psize, unsigned zero_every, size_t devstate_len)
{
    g_autoptr(GError) err = NULL;
    sl_writer *w = sl_writer_new(path, &err);
    g_autofree uint8_t *page = g_malloc(psize);

    assert_non_null(w);
    for (unsigned b = 0; b < nblocks; b++) {
        g_autofree char *name = g_strdup_printf("b%u", b);
        assert_int_equal(sl_writer_add_block(w, name, lengths[b], psize, -1, &err), (int)b);
    }
    for (unsigned b = 0; b < nblocks; b++) {
        for (uint64_t i = 0; i < lengths[b] / psize; i++) {
            sl_test_fill_page(page, psize, i, b + 1, zero_every);
            assert_true(sl_writer_write(w, b, i * psize, page, psize, &err));
        }
    }
    if (devstate_len) {
        g_autofree uint8_t *ds = g_malloc(devstate_len);
        for (size_t i = 0; i < devstate_len; i++) {
            ds[i] = (uint8_t)(i * 7 + 3);
        }
        assert_true(sl_writer_add_section(w, SL_SECTION_DEVICE_STATE, ds, devstate_len, &err));
    }
    assert_true(sl_writer_finish(w, &err));
    sl_writer_free(w);
}

const uint32_t *sl_test_restore_order(const sl_restore *r, unsigned i)
{
    if (i >= r->regions->len) {
        return NULL;
    }
    return ((const sl_region *)g_ptr_array_index(r->regions, i))->order;
}

void sl_test_set_loader_hook(sl_restore *r,
                             void (*fn)(void *opaque, unsigned region, uint64_t u, uint64_t n),
                             void *opaque)
{
    r->loader_claimed = fn;
    r->loader_claimed_opaque = opaque;
}

void sl_test_set_around_hook(sl_restore *r,
                             void (*fn)(void *opaque, unsigned region, uint64_t u, uint64_t n),
                             void *opaque)
{
    r->around_posted = fn;
    r->around_posted_opaque = opaque;
}

void sl_test_set_dead_view_hook(sl_restore *r, void (*fn)(void *opaque), void *opaque)
{
    r->dead_view_leaving = fn;
    r->dead_view_leaving_opaque = opaque;
}

void sl_test_set_staged_hook(sl_restore *r,
                             void (*fn)(void *opaque, unsigned region, uint64_t u, uint64_t n),
                             void *opaque)
{
    r->loader_staged = fn;
    r->loader_staged_opaque = opaque;
}

void sl_test_withhold_uffd_features(sl_restore *r, uint64_t features)
{
    r->uffd_features_withheld = features;
}

/* The CLI: $SNAPLOAD_BIN, else build/snapload for build/tests/unit/test-*. */
char *sl_test_snapload_bin(void)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *unit = self ? g_path_get_dirname(self) : NULL;
    g_autofree char *tests = unit ? g_path_get_dirname(unit) : NULL;
    g_autofree char *build = tests ? g_path_get_dirname(tests) : NULL;

    if (g_getenv("SNAPLOAD_BIN")) {
        return g_strdup(g_getenv("SNAPLOAD_BIN"));
    }
    assert_non_null(build);
    return g_build_filename(build, "snapload", NULL);
}

/* In the child, before exec: SIGALRM after the seconds @opaque holds (0: none). */
static void alarm_in(gpointer opaque)
{
    alarm(GPOINTER_TO_UINT(opaque));
}

int sl_test_run_cli(const char *const *args, char **out, char **err)
{
    return sl_test_run_cli_within(args, 0, out, err);
}

int sl_test_run_cli_within(const char *const *args, unsigned seconds, char **out, char **err)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GError) gerr = NULL;
    int status = -1;

    g_ptr_array_add(argv, sl_test_snapload_bin());
    for (unsigned i = 0; args[i]; i++) {
        g_ptr_array_add(argv, g_strdup(args[i]));
    }
    g_ptr_array_add(argv, NULL);
    if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_DEFAULT, alarm_in,
                      GUINT_TO_POINTER(seconds), out, err, &status, &gerr)) {
        fail_msg("running %s: %s", (char *)argv->pdata[0], gerr->message);
    }
    return status;
}

int sl_test_run_matrix(const char *group, const void *cases, size_t ncases, size_t case_size,
                       const sl_test_feature *features, size_t nfeatures,
                       CMFixtureFunction setup, CMFixtureFunction teardown)
{
    return sl_test_run_matrix_and(group, cases, ncases, case_size, features, nfeatures, setup,
                                  teardown, NULL, 0);
}

int sl_test_run_matrix_and(const char *group, const void *cases, size_t ncases,
                           size_t case_size, const sl_test_feature *features, size_t nfeatures,
                           CMFixtureFunction setup, CMFixtureFunction teardown,
                           const struct CMUnitTest *plain, size_t nplain)
{
    struct CMUnitTest *tests = g_new0(struct CMUnitTest, ncases * nfeatures + nplain);
    size_t n = 0;
    int failed;

    for (size_t c = 0; c < ncases; c++) {
        const void *tc = (const uint8_t *)cases + c * case_size;
        const sl_test_case *head = tc; /* the members every case begins with */
        for (size_t i = 0; i < nfeatures; i++) {
            if (features[i].applies && !features[i].applies(head)) {
                continue;
            }
            tests[n] = (struct CMUnitTest){
                .name = g_strdup_printf("%s/%s", head->name, features[i].name),
                .test_func = features[i].fn, .setup_func = setup, .teardown_func = teardown,
                .initial_state = (void *)tc,
            };
            sl_test_skip_if_absent(&tests[n++], head->cap, head->hugepage);
        }
    }
    for (size_t i = 0; i < nplain; i++, n++) {
        tests[n] = plain[i];
        tests[n].name = g_strdup(plain[i].name);
    }
    if (g_getenv("SL_TEST_FILTER")) {
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    failed = _cmocka_run_group_tests(group, tests, n, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        g_free((char *)tests[i].name);
    }
    g_free(tests);
    return failed;
}

uint64_t sl_test_anon_huge_kb(const void *addr)
{
    g_autofree char *smaps = NULL;
    g_auto(GStrv) lines = NULL;
    uint64_t kb = 0;
    bool in = false;

    if (!g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL)) {
        return 0;
    }
    lines = g_strsplit(smaps, "\n", -1);
    for (char **l = lines; *l; l++) {
        unsigned long lo, hi;
        if (sscanf(*l, "%lx-%lx ", &lo, &hi) == 2) { /* a mapping's first line */
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
        } else if (in && sscanf(*l, "AnonHugePages: %" SCNu64, &kb) == 1) {
            break;
        }
    }
    return kb;
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

/* A child's 2 MiB of 4 KiB pages, collapsible: its address on @out, then waits on @in. */
static _Noreturn void collapsible_child(int out, int in)
{
    const uint64_t thp = 2u << 20;
    uint8_t *p = mmap(NULL, 2 * thp, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *a = (uint8_t *)(((uintptr_t)p + thp - 1) & ~(uintptr_t)(thp - 1));
    uint64_t addr = p == MAP_FAILED ? 0 : (uintptr_t)a;
    char byte;

    if (addr) {
        madvise(a, thp, MADV_NOHUGEPAGE); /* 4 KiB pages first, then collapsed */
        memset(a, 1, thp);
        madvise(a, thp, MADV_HUGEPAGE);
    }
    (void)!write(out, &addr, sizeof(addr));
    (void)!read(in, &byte, 1);
    _exit(0);
}

bool sl_test_have_thp_collapse(char **why)
{
    int to_parent[2], to_child[2], pidfd = -1, err = 0;
    uint64_t addr = 0;
    pid_t pid;

    if (sl_test_withheld("thp")) {
        *why = g_strdup("withheld by SNAPLOAD_WITHOUT");
        return false;
    }
    if (pipe2(to_parent, O_CLOEXEC) || pipe2(to_child, O_CLOEXEC) || (pid = fork()) < 0) {
        *why = g_strdup_printf("the probe could not start: %s", g_strerror(errno));
        return false;
    }
    if (pid == 0) {
        close(to_parent[0]);
        close(to_child[1]); /* so that the parent's close ends its wait */
        collapsible_child(to_parent[1], to_child[0]);
    }
    if (read(to_parent[0], &addr, sizeof(addr)) == sizeof(addr) && addr &&
        (pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) >= 0) {
        struct iovec iov = { .iov_base = (void *)(uintptr_t)addr, .iov_len = 2u << 20 };
        err = syscall(SYS_process_madvise, pidfd, &iov, 1, MADV_COLLAPSE, 0) < 0 ? errno : 0;
        close(pidfd);
    } else {
        err = addr ? errno : ENOMEM;
    }
    for (int i = 0; i < 2; i++) {
        close(to_parent[i]);
        close(to_child[i]); /* the child's read ends: it exits */
    }
    waitpid(pid, NULL, 0);
    if (err) {
        *why = g_strdup_printf("MADV_COLLAPSE of another process's memory (what the daemon "
                               "does to a VMM's): %s (kernel 6.1+, CAP_SYS_NICE)",
                               g_strerror(err));
    }
    return err == 0;
}

pid_t sl_test_fork_waiting(int *hold)
{
    int p[2];
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) < 0) {
        return -1;
    }
    pid = fork();
    if (pid == 0) {
        char c;
        close(p[1]);
        _exit(read(p[0], &c, 1) < 0);
    }
    close(p[0]);
    if (pid < 0) {
        close(p[1]);
        return -1;
    }
    *hold = p[1];
    return pid;
}

int sl_test_read_child(pid_t pid, const void *addr, void *buf, uint64_t len)
{
    struct iovec local = { buf, len }, remote = { (void *)addr, len };
    ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);

    if (got < 0) {
        return -errno;
    }
    return (uint64_t)got == len ? 0 : -EIO;
}

unsigned sl_test_threads_named(const char *name)
{
    g_autoptr(GDir) dir = g_dir_open("/proc/self/task", 0, NULL);
    const char *tid;
    unsigned n = 0;

    while (dir && (tid = g_dir_read_name(dir))) {
        g_autofree char *path = g_strdup_printf("/proc/self/task/%s/comm", tid);
        g_autofree char *comm = NULL;

        if (g_file_get_contents(path, &comm, NULL, NULL)) {
            n += strcmp(g_strchomp(comm), name) == 0;
        }
    }
    return n;
}

bool sl_test_send_fd_to(int sock, int fd, const struct sockaddr_un *to, bool mmsg)
{
    char byte = 'F', cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct mmsghdr v[2] = { 0 };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf), .msg_name = (void *)to,
                         .msg_namelen = to ? sizeof(*to) : 0 };
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(fd));
    if (!mmsg) {
        return sendmsg(sock, &mh, 0) == 1;
    }
    v[0].msg_hdr = mh;
    v[1].msg_hdr = (struct msghdr){ .msg_iov = &iov, .msg_iovlen = 1, .msg_name = (void *)to,
                                    .msg_namelen = to ? sizeof(*to) : 0 };
    return sendmmsg(sock, v, 2, 0) >= 1;
}

bool sl_test_send_fd(int sock, int fd)
{
    return sl_test_send_fd_to(sock, fd, NULL, false);
}

int sl_test_recv_fd(int sock)
{
    char byte, cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf) };
    int fd = -1;

    if (recvmsg(sock, &mh, 0) == 1 && CMSG_FIRSTHDR(&mh)) {
        memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(fd));
    }
    return fd;
}
