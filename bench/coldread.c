/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapload-coldread: how fast can a restore read its snapshot from a cold
 * page cache, and what does one page cost while the loaders stream?
 * Issue 12 asks that the background fill reach 85 % of the disk's
 * sequential bandwidth and that a fault on a page not yet read cost about
 * one disk read.  This tool measures, on one dense file of random bytes in
 * the snapshot's filesystem and with that file's cached pages dropped
 * before every method: sequential reads of the whole file with buffered
 * pread (no hint, the engine's POSIX_FADV_WILLNEED 16 chunks ahead,
 * POSIX_FADV_SEQUENTIAL), O_DIRECT pread (one and two threads) and
 * io_uring (O_DIRECT at queue depth 4/8/16, buffered at 8, when built with
 * liburing); then the latency of random 4 KiB reads (O_DIRECT: one
 * device read each) idle, beside a streamer reading like the engine's
 * loaders, with the reader at I/O class RT and the streamer at BE 7, and
 * as buffered reads of pages not yet cached on a FADV_RANDOM descriptor
 * (the engine's fault path reads buffered), idle and busy.  It is a
 * measuring tool only and shares no code with the engine.
 *
 * Usage: snapload-coldread --file PATH [--size 2G] [--chunk 2M] [--reps 3]
 *                          [--json]
 * MB/s are 10^6 bytes per second.  Errors print one line and exit 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <linux/ioprio.h>
#ifdef HAVE_LIBURING
#include <liburing.h>
#endif

#define KIB ((uint64_t)1024)
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define PAGE ((uint64_t)4096)
#define DIRECT_BLOCK MIB      /* O_DIRECT and io_uring read size */
#define WILLNEED_AHEAD 16     /* chunks, as migration/engine.c's loaders */
#define RAND_READS 2000
#define RAND_SEED 0x5eedc01dull
#define MAX_DRAWS 100000      /* buffered: draws to find a page not cached */
#define MAX_REPS 50
#define FILL_BLOCK (4 * MIB)

enum hint { HINT_NONE, HINT_WILLNEED, HINT_SEQUENTIAL };
enum kind { K_BUFFERED, K_DIRECT, K_URING };

enum phase { PH_IDLE, PH_IDLE_BUFFERED, PH_BUSY, PH_BUSY_RT, PH_BUSY_BUFFERED, NPHASES };

/* The random-read phases: (a)-(d) and, to tell the buffered path's own
 * cost from the queue behind the streamer, (a') buffered idle. */
static const struct {
    const char *key, *label;
    bool buffered, busy, rt;
} phases[NPHASES] = {
    [PH_IDLE] = { "idle", "a  idle, O_DIRECT", false, false, false },
    [PH_IDLE_BUFFERED] = { "idle_buffered_random", "a' idle, buffered + FADV_RANDOM", true, false, false },
    [PH_BUSY] = { "busy", "b  busy (streamer: method 2), O_DIRECT", false, true, false },
    [PH_BUSY_RT] = { "busy_rt", "c  busy, reader RT 0, streamer BE 7", false, true, true },
    [PH_BUSY_BUFFERED] = { "busy_buffered_random", "d  busy, buffered + FADV_RANDOM", true, true, false },
};

typedef struct {
    const char *path;
    uint64_t size, chunk;
    unsigned reps;
    bool json;
} opts;

typedef struct method {
    const char *name;          /* JSON key */
    const char *label;         /* table row */
    enum kind kind;
    int arg;                   /* hint, threads or queue depth */
    bool direct;               /* io_uring: O_DIRECT */
    const char *skip;          /* why it was not measured */
    double mb_s[MAX_REPS];
    unsigned n;
    double resident_max;       /* share of pages cached before a run */
} method;

typedef struct {
    bool valid;
    const char *note;
    double p50, p99;
    uint64_t cached_draws;     /* buffered: pages skipped, already cached */
    double stream_mb_s;
} lat_result;

typedef struct {
    opts o;
    int fd;                    /* O_RDONLY: drops, mincore */
    const unsigned char *map;  /* the measured range, never touched */
    bool root, drop_failed;
    char dev[64], scheduler[128], sched_line[256];
    long read_ahead_kb, max_sectors_kb;
    char ioprio_rt[128], ioprio_be7[128];
    lat_result lat[NPHASES];
} ctx;

/* ---- small helpers ---- */

static void die(const char *fmt, ...)
{
    va_list ap;

    fputs("snapload-coldread: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static bool quiet_stdout;  /* --json: progress goes to stderr */

static void say(const char *fmt, ...)
{
    va_list ap;
    FILE *f = quiet_stdout ? stderr : stdout;

    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fflush(f);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void *aligned_buf(size_t len)
{
    void *p = NULL;

    if (posix_memalign(&p, PAGE, len)) {
        die("out of memory (%zu bytes)", len);
    }
    memset(p, 0, len);
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile of @n sorted values. */
static double pct(const double *v, unsigned n, unsigned p)
{
    unsigned i = (unsigned)(((uint64_t)n * p + 99) / 100);

    return n ? v[i ? i - 1 : 0] : 0;
}

static double median(const double *v, unsigned n)
{
    double s[MAX_REPS];

    memcpy(s, v, n * sizeof(*v));
    qsort(s, n, sizeof(*s), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static double best(const double *v, unsigned n)
{
    double b = 0;

    for (unsigned i = 0; i < n; i++) {
        b = v[i] > b ? v[i] : b;
    }
    return b;
}

/* ---- options ---- */

static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mul = 1;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-') {
        return false;
    }
    switch (*end) {
    case 'k': case 'K': mul = KIB; end++; break;
    case 'm': case 'M': mul = MIB; end++; break;
    case 'g': case 'G': mul = GIB; end++; break;
    case 't': case 'T': mul = 1024 * GIB; end++; break;
    default: break;
    }
    if (mul > 1 && (!strcmp(end, "iB") || !strcmp(end, "B"))) {
        end += strlen(end);
    }
    if (*end || v == 0 || v > UINT64_MAX / mul) {
        return false;
    }
    *out = v * mul;
    return true;
}

static const char *need_arg(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        die("%s needs a value", argv[*i]);
    }
    return argv[++*i];
}

static void usage_exit(int code)
{
    fprintf(code ? stderr : stdout,
            "usage: snapload-coldread --file PATH [--size 2G] [--chunk 2M] [--reps 3] [--json]\n");
    exit(code);
}

static void check_opts(const opts *o)
{
    if (!o->path) {
        die("--file PATH is required");
    }
    if (o->size % PAGE) {
        die("--size must be a multiple of 4 KiB");
    }
    if (o->chunk % PAGE || o->chunk > GIB) {
        die("--chunk must be a multiple of 4 KiB, at most 1 GiB");
    }
    if (o->chunk > o->size) {
        die("--chunk is larger than --size");
    }
}

static opts parse_opts(int argc, char **argv)
{
    opts o = { .size = 2 * GIB, .chunk = 2 * MIB, .reps = 3 };
    uint64_t v;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--file")) {
            o.path = need_arg(argc, argv, &i);
        } else if (!strcmp(a, "--size") || !strcmp(a, "--chunk")) {
            if (!parse_size(need_arg(argc, argv, &i), &v)) {
                die("%s: bad size '%s' (e.g. 2G, 8M, 4096)", a, argv[i]);
            }
            *(a[2] == 's' ? &o.size : &o.chunk) = v;
        } else if (!strcmp(a, "--reps")) {
            if (!parse_size(need_arg(argc, argv, &i), &v) || v > MAX_REPS || strpbrk(argv[i], "kKmMgGtT")) {
                die("--reps: bad count '%s' (1 to %d)", argv[i], MAX_REPS);
            }
            o.reps = (unsigned)v;
        } else if (!strcmp(a, "--json")) {
            o.json = true;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_exit(0);
        } else {
            die("unknown argument '%s' (--help for usage)", a);
        }
    }
    check_opts(&o);
    return o;
}

/* ---- the dense test file ---- */

static void write_all(int fd, const void *buf, size_t len, uint64_t off, const char *path)
{
    const char *p = buf;

    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            die("%s: write at %" PRIu64 ": %s", path, off, n ? strerror(errno) : "wrote nothing");
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
}

static void check_space(const opts *o, int fd)
{
    struct statvfs vs;
    struct stat st;

    if (fstatvfs(fd, &vs) || fstat(fd, &st)) {
        die("%s: %s", o->path, strerror(errno));
    }
    uint64_t have = (uint64_t)vs.f_bavail * vs.f_frsize + (uint64_t)st.st_blocks * 512;
    if (have < o->size) {
        die("%s: not enough free space for %" PRIu64 " MiB (%" PRIu64 " MiB available)",
            o->path, o->size / MIB, have / MIB);
    }
}

/* Writes @o->size random bytes from offset 0, then fsyncs: no holes. */
static void create_dense(const opts *o)
{
    int fd = open(o->path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    uint64_t *buf = aligned_buf(FILL_BLOCK);
    double t0 = now_s();

    if (fd < 0) {
        die("%s: %s", o->path, strerror(errno));
    }
    check_space(o, fd);
    /* Reserve the extents in one go (keeping the size: an interrupted run
     * leaves a short file, rewritten next time), for a contiguous file. */
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)o->size) && errno == ENOSPC) {
        die("%s: no space for %" PRIu64 " MiB", o->path, o->size / MIB);
    }
    for (uint64_t off = 0; off < o->size; off += FILL_BLOCK) {
        size_t len = (size_t)(o->size - off < FILL_BLOCK ? o->size - off : FILL_BLOCK);
        for (size_t i = 0; i < len / 8; i++) {
            buf[i] = splitmix(&seed);
        }
        write_all(fd, buf, len, off, o->path);
    }
    if (fsync(fd) || close(fd)) {
        die("%s: fsync: %s", o->path, strerror(errno));
    }
    free(buf);
    double dt = now_s() - t0;
    say("wrote %s: %" PRIu64 " MiB of random bytes, dense, fsynced, in %.1f s (%.0f MB/s)",
        o->path, o->size / MIB, dt, (double)o->size / 1e6 / dt);
}

/* Refuses a file with a hole (or an unwritten extent) in the range. */
static void check_dense(const opts *o)
{
    int fd = open(o->path, O_RDONLY | O_CLOEXEC);
    off_t hole;

    if (fd < 0) {
        die("%s: %s", o->path, strerror(errno));
    }
    hole = lseek(fd, 0, SEEK_HOLE);
    close(fd);
    if (hole >= 0 && (uint64_t)hole < o->size) {
        die("%s has a hole at %" PRIu64 " MiB, inside --size: not dense; remove it or pick another path",
            o->path, (uint64_t)hole / MIB);
    }
}

static void ensure_file(const opts *o)
{
    struct stat st;

    if (stat(o->path, &st) == 0) {
        if (!S_ISREG(st.st_mode)) {
            die("%s: not a regular file", o->path);
        }
        if ((uint64_t)st.st_size >= o->size) {
            check_dense(o);
            say("using %s as it is: %" PRIu64 " MiB, dense in its first %" PRIu64 " MiB (measured)",
                o->path, (uint64_t)st.st_size / MIB, o->size / MIB);
            return;
        }
        say("%s holds %" PRIu64 " bytes, less than --size: rewriting it", o->path,
            (uint64_t)st.st_size);
    } else if (errno != ENOENT) {
        die("%s: %s", o->path, strerror(errno));
    }
    create_dense(o);
}

/* ---- the block device under the file ---- */

static bool read_line(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "re");
    bool ok = f && fgets(out, (int)len, f);

    if (f) {
        fclose(f);
    }
    if (ok) {
        out[strcspn(out, "\n")] = 0;
        for (size_t n = strlen(out); n && out[n - 1] == ' '; n--) {
            out[n - 1] = 0;
        }
    }
    return ok;
}

static long read_long(const char *dir, const char *name)
{
    char path[PATH_MAX], line[64];

    snprintf(path, sizeof(path), "%s/queue/%s", dir, name);
    return read_line(path, line, sizeof(line)) ? atol(line) : -1;
}

/* The disk (not the partition) holding the file: /sys/dev/block/M:m. */
static bool disk_dir(const ctx *c, char *dir)
{
    struct stat st;
    char link[64], part[PATH_MAX + 16];

    if (fstat(c->fd, &st)) {
        return false;
    }
    snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
    if (!realpath(link, dir)) {
        return false;
    }
    snprintf(part, sizeof(part), "%s/partition", dir);
    if (access(part, F_OK) == 0) {
        *strrchr(dir, '/') = 0;
    }
    return true;
}

static void device_info(ctx *c)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    const char *l, *r;

    strcpy(c->dev, "unknown");
    strcpy(c->scheduler, "unknown");
    c->read_ahead_kb = c->max_sectors_kb = -1;
    if (!disk_dir(c, dir)) {
        return;
    }
    snprintf(c->dev, sizeof(c->dev), "%s", strrchr(dir, '/') + 1);
    snprintf(path, sizeof(path), "%s/queue/scheduler", dir);
    if (read_line(path, c->sched_line, sizeof(c->sched_line))) {
        l = strchr(c->sched_line, '[');
        r = l ? strchr(l, ']') : NULL;
        snprintf(c->scheduler, sizeof(c->scheduler), "%.*s", l && r ? (int)(r - l - 1) : 100,
                 l && r ? l + 1 : c->sched_line);
    }
    c->read_ahead_kb = read_long(dir, "read_ahead_kb");
    c->max_sectors_kb = read_long(dir, "max_sectors_kb");
}

/* ---- a cold page cache ---- */

static void advise(int fd, uint64_t off, uint64_t len, int advice);

static double resident_share(const ctx *c)
{
    size_t pages = (size_t)(c->o.size / PAGE), n = 0;
    unsigned char *vec = malloc(pages);

    if (!vec) {
        die("out of memory");
    }
    if (mincore((void *)c->map, (size_t)c->o.size, vec)) {
        die("mincore: %s", strerror(errno));
    }
    for (size_t i = 0; i < pages; i++) {
        n += vec[i] & 1;
    }
    free(vec);
    return (double)n / (double)pages;
}

static void drop_global(ctx *c)
{
    int fd;

    if (!c->root || c->drop_failed) {
        return;
    }
    fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "1", 1) != 1) {
        say("note: cannot write /proc/sys/vm/drop_caches (%s): fadvise only", strerror(errno));
        c->drop_failed = true;
    }
    if (fd >= 0) {
        close(fd);
    }
}

/* fsync + FADV_DONTNEED (+ drop_caches as root); returns the share of the
 * file's pages still cached, reported when it is not about zero. */
static double drop_cache(ctx *c, const char *what)
{
    double share;

    if (fsync(c->fd) && errno != EINVAL) {
        die("fsync %s: %s", c->o.path, strerror(errno));
    }
    errno = posix_fadvise(c->fd, 0, 0, POSIX_FADV_DONTNEED);
    if (errno) {
        die("posix_fadvise(DONTNEED) %s: %s", c->o.path, strerror(errno));
    }
    drop_global(c);
    /* Pages under read (a streamer's readahead just stopped) are locked
     * and stay: retry while that I/O completes. */
    for (int i = 0; (share = resident_share(c)) > 0.001 && i < 20; i++) {
        usleep(20000);
        advise(c->fd, 0, 0, POSIX_FADV_DONTNEED);
        drop_global(c);
    }
    if (share > 0.001) {
        say("note: %.2f %% of the file's pages still cached before %s", share * 100, what);
    }
    return share;
}

/* ---- sequential readers ---- */

static void read_full(int fd, void *buf, size_t len, uint64_t off, const char *path)
{
    char *p = buf;

    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            die("%s: read at %" PRIu64 ": %s", path, off, n ? strerror(errno) : "unexpected end of file");
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
}

static int open_file(const ctx *c, bool direct)
{
    int fd = open(c->o.path, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));

    if (fd < 0) {
        die("%s: open%s: %s", c->o.path, direct ? " with O_DIRECT" : "", strerror(errno));
    }
    return fd;
}

static void advise(int fd, uint64_t off, uint64_t len, int advice)
{
    /* A hint: a failure changes nothing we read. */
    (void)posix_fadvise(fd, (off_t)off, (off_t)len, advice);
}

/* One buffered pass in @chunk blocks, from @start; the engine's hint is
 * one chunk WILLNEED_AHEAD chunks ahead before each read.  Stops early
 * when *@stop is set; adds every byte read to *@bytes. */
static void buffered_pass(const ctx *c, int fd, enum hint h, void *buf, atomic_bool *stop,
                          _Atomic uint64_t *bytes)
{
    uint64_t size = c->o.size, chunk = c->o.chunk;

    for (uint64_t off = 0; off < size; off += chunk) {
        uint64_t len = size - off < chunk ? size - off : chunk;
        uint64_t ahead = off + WILLNEED_AHEAD * chunk;
        if (stop && atomic_load(stop)) {
            return;
        }
        if (h == HINT_WILLNEED && ahead < size) {
            advise(fd, ahead, size - ahead < chunk ? size - ahead : chunk, POSIX_FADV_WILLNEED);
        }
        read_full(fd, buf, (size_t)len, off, c->o.path);
        if (bytes) {
            atomic_fetch_add(bytes, len);
        }
    }
}

static void run_buffered(const ctx *c, const method *m)
{
    int fd = open_file(c, false);
    void *buf = aligned_buf((size_t)c->o.chunk);

    if (m->arg == HINT_SEQUENTIAL) {
        advise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    buffered_pass(c, fd, (enum hint)m->arg, buf, NULL, NULL);
    free(buf);
    close(fd);
}

typedef struct {
    const ctx *c;
    int fd;
    unsigned first, step;
} direct_job;

static void *direct_worker(void *arg)
{
    const direct_job *j = arg;
    uint64_t size = j->c->o.size, nblocks = (size + DIRECT_BLOCK - 1) / DIRECT_BLOCK;
    void *buf = aligned_buf(DIRECT_BLOCK);

    for (uint64_t b = j->first; b < nblocks; b += j->step) {
        uint64_t off = b * DIRECT_BLOCK;
        uint64_t len = size - off < DIRECT_BLOCK ? size - off : DIRECT_BLOCK;
        read_full(j->fd, buf, (size_t)len, off, j->c->o.path);
    }
    free(buf);
    return NULL;
}

/* O_DIRECT pread of 1 MiB blocks; thread t reads blocks t, t+N, ... */
static void run_direct(const ctx *c, const method *m)
{
    unsigned nt = (unsigned)m->arg;
    pthread_t tid[8];
    direct_job job[8];
    int fd = open_file(c, true);

    for (unsigned t = 0; t < nt; t++) {
        job[t] = (direct_job){ .c = c, .fd = fd, .first = t, .step = nt };
        if (pthread_create(&tid[t], NULL, direct_worker, &job[t])) {
            die("pthread_create failed");
        }
    }
    for (unsigned t = 0; t < nt; t++) {
        pthread_join(tid[t], NULL);
    }
    close(fd);
}

#ifdef HAVE_LIBURING
typedef struct {
    char *buf;
    uint64_t off;
    unsigned len, done;
} uring_slot;

static void uring_queue(struct io_uring *ring, int fd, uring_slot *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

    if (!sqe) {
        die("io_uring: no free submission entry");
    }
    io_uring_prep_read(sqe, fd, s->buf + s->done, s->len - s->done, s->off + s->done);
    io_uring_sqe_set_data(sqe, s);
}

/* Accounts one completion; returns true when its block is complete. */
static bool uring_reap(const ctx *c, struct io_uring *ring, int fd, uring_slot **done)
{
    struct io_uring_cqe *cqe;
    int ret = io_uring_wait_cqe(ring, &cqe);
    uring_slot *s;

    if (ret < 0) {
        die("io_uring_wait_cqe: %s", strerror(-ret));
    }
    s = io_uring_cqe_get_data(cqe);
    ret = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    if (ret == -EAGAIN || ret == -EINTR || (ret > 0 && s->done + (unsigned)ret < s->len)) {
        s->done += ret > 0 ? (unsigned)ret : 0;   /* short or retry: the rest again */
        uring_queue(ring, fd, s);
        return false;
    }
    if (ret <= 0) {
        die("%s: io_uring read at %" PRIu64 ": %s", c->o.path, s->off,
            ret ? strerror(-ret) : "unexpected end of file");
    }
    *done = s;
    return true;
}

static void uring_submit(struct io_uring *ring)
{
    int ret = io_uring_submit(ring);

    if (ret < 0) {
        die("io_uring_submit: %s", strerror(-ret));
    }
}

/* Reads the file in 1 MiB blocks with @qd reads in flight: each slot is
 * used once at the start, then again as soon as its block is complete. */
static void run_uring(const ctx *c, const method *m)
{
    unsigned qd = (unsigned)m->arg, fresh = 0, inflight = 0;
    uint64_t off = 0, size = c->o.size;
    uring_slot slots[64], *s;
    struct io_uring ring;
    int fd = open_file(c, m->direct), ret = io_uring_queue_init(qd, &ring, 0);

    if (ret < 0) {
        die("io_uring_queue_init: %s", strerror(-ret));
    }
    for (unsigned i = 0; i < qd; i++) {
        slots[i].buf = aligned_buf(DIRECT_BLOCK);
    }
    while (fresh < qd || inflight) {
        if (fresh < qd) {
            s = &slots[fresh++];
        } else if (uring_reap(c, &ring, fd, &s)) {
            inflight--;
        } else {
            uring_submit(&ring);   /* the rest of a short read */
            continue;
        }
        if (off < size) {
            uint64_t len = size - off < DIRECT_BLOCK ? size - off : DIRECT_BLOCK;
            *s = (uring_slot){ .buf = s->buf, .off = off, .len = (unsigned)len };
            off += len;
            uring_queue(&ring, fd, s);
            inflight++;
            uring_submit(&ring);
        }
    }
    io_uring_queue_exit(&ring);
    for (unsigned i = 0; i < qd; i++) {
        free(slots[i].buf);
    }
    close(fd);
}

/* Whether this kernel lets us make a ring at all (io_uring_disabled). */
static const char *uring_missing(void)
{
    static char why[96];
    struct io_uring ring;
    int ret = io_uring_queue_init(4, &ring, 0);

    if (ret < 0) {
        snprintf(why, sizeof(why), "io_uring unavailable: %s", strerror(-ret));
        return why;
    }
    io_uring_queue_exit(&ring);
    return NULL;
}
#else
static void run_uring(const ctx *c, const method *m)
{
}

static const char *uring_missing(void)
{
    return "not built: no liburing";
}
#endif

/* ---- the methods ---- */

static method methods[] = {
    { "buffered", "1 buffered pread, no hint", K_BUFFERED, HINT_NONE, false, NULL, {0}, 0, 0 },
    { "buffered_willneed16", "2 buffered + WILLNEED 16 ahead (engine)", K_BUFFERED, HINT_WILLNEED, false, NULL, {0}, 0, 0 },
    { "buffered_sequential", "3 buffered + FADV_SEQUENTIAL", K_BUFFERED, HINT_SEQUENTIAL, false, NULL, {0}, 0, 0 },
    { "direct_qd1", "4 O_DIRECT 1M, 1 thread", K_DIRECT, 1, true, NULL, {0}, 0, 0 },
    { "direct_2threads", "5 O_DIRECT 1M, 2 threads", K_DIRECT, 2, true, NULL, {0}, 0, 0 },
    { "uring_direct_qd4", "6 io_uring O_DIRECT 1M, QD 4", K_URING, 4, true, NULL, {0}, 0, 0 },
    { "uring_direct_qd8", "6 io_uring O_DIRECT 1M, QD 8", K_URING, 8, true, NULL, {0}, 0, 0 },
    { "uring_direct_qd16", "6 io_uring O_DIRECT 1M, QD 16", K_URING, 16, true, NULL, {0}, 0, 0 },
    { "uring_buffered_qd8", "7 io_uring buffered 1M, QD 8", K_URING, 8, false, NULL, {0}, 0, 0 },
};
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))
#define ENGINE_METHOD 1

static void run_method(ctx *c, method *m)
{
    double share = drop_cache(c, m->name), t0, dt;

    m->resident_max = share > m->resident_max ? share : m->resident_max;
    t0 = now_s();
    switch (m->kind) {
    case K_BUFFERED: run_buffered(c, m); break;
    case K_DIRECT: run_direct(c, m); break;
    case K_URING: run_uring(c, m); break;
    }
    dt = now_s() - t0;
    m->mb_s[m->n++] = (double)c->o.size / 1e6 / dt;
}

/* Repetitions interleaved, so a noisy spell hits every method alike. */
static void run_sequential(ctx *c)
{
    const char *no_uring = uring_missing();

    for (size_t i = 0; i < NMETHODS; i++) {
        methods[i].skip = methods[i].kind == K_URING ? no_uring : NULL;
    }
    for (unsigned r = 0; r < c->o.reps; r++) {
        for (size_t i = 0; i < NMETHODS; i++) {
            if (!methods[i].skip) {
                run_method(c, &methods[i]);
            }
        }
        say("sequential: repetition %u of %u done", r + 1, c->o.reps);
    }
}

/* ---- random 4 KiB reads ---- */

static int set_ioprio(int cls, int level, char *why, size_t len)
{
    int want = IOPRIO_PRIO_VALUE(cls, level);
    pid_t tid = gettid();

    if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, want)) {
        snprintf(why, len, "%s", errno == EPERM ? "EPERM" : strerror(errno));
        return -1;
    }
    if (syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) != want) {
        snprintf(why, len, "set, but ioprio_get reads back another value");
        return -1;
    }
    snprintf(why, len, "ok");
    return 0;
}

typedef struct {
    ctx *c;
    int fd;
    bool be7;
    atomic_bool stop;
    _Atomic uint64_t bytes;
} streamer;

/* The loaders' stand-in: method 2 over and over, cache dropped at each
 * wrap so every pass reads the disk. */
static void *streamer_main(void *arg)
{
    streamer *s = arg;
    void *buf = aligned_buf((size_t)s->c->o.chunk);

    if (s->be7) {
        set_ioprio(IOPRIO_CLASS_BE, 7, s->c->ioprio_be7, sizeof(s->c->ioprio_be7));
    }
    while (!atomic_load(&s->stop)) {
        buffered_pass(s->c, s->fd, HINT_WILLNEED, buf, &s->stop, &s->bytes);
        advise(s->fd, 0, 0, POSIX_FADV_DONTNEED);
    }
    free(buf);
    return NULL;
}

typedef struct {
    ctx *c;
    int fd;
    bool buffered, rt;
    double lat_us[RAND_READS];
    uint64_t cached_draws;
    int rt_failed;
} reader;

static bool page_cached(const ctx *c, uint64_t off)
{
    unsigned char v = 0;

    return mincore((void *)(c->map + off), PAGE, &v) == 0 && (v & 1);
}

/* A random page; for buffered reads one not in the page cache (a fault on
 * a page not yet read), redrawing past the cached ones. */
static uint64_t pick_page(reader *r, uint64_t *seed)
{
    uint64_t pages = r->c->o.size / PAGE, off = 0;

    for (unsigned d = 0; d < MAX_DRAWS; d++) {
        off = (splitmix(seed) % pages) * PAGE;
        if (!r->buffered || !page_cached(r->c, off)) {
            break;
        }
        r->cached_draws++;
    }
    return off;
}

/* RAND_READS timed reads of 4 KiB, the same pages in every O_DIRECT phase. */
static void *reader_main(void *arg)
{
    reader *r = arg;
    uint64_t seed = RAND_SEED;
    void *buf = aligned_buf(PAGE);

    if (r->rt) {
        r->rt_failed = set_ioprio(IOPRIO_CLASS_RT, 0, r->c->ioprio_rt, sizeof(r->c->ioprio_rt));
    }
    for (unsigned i = 0; i < RAND_READS && !r->rt_failed; i++) {
        uint64_t off = pick_page(r, &seed);
        double t0 = now_s();
        read_full(r->fd, buf, PAGE, off, r->c->o.path);
        r->lat_us[i] = (now_s() - t0) * 1e6;
    }
    free(buf);
    return NULL;
}

static void summarize(reader *r, lat_result *out)
{
    qsort(r->lat_us, RAND_READS, sizeof(double), cmp_double);
    out->p50 = pct(r->lat_us, RAND_READS, 50);
    out->p99 = pct(r->lat_us, RAND_READS, 99);
    out->cached_draws = r->cached_draws;
    out->valid = true;
}

/* Starts the streamer and waits until it has ramped up (or 3 s). */
static void start_streamer(streamer *s, pthread_t *tid)
{
    uint64_t want = s->c->o.size / 8 < 64 * MIB ? s->c->o.size / 8 : 64 * MIB;
    double t0 = now_s();

    s->fd = open_file(s->c, false);
    if (pthread_create(tid, NULL, streamer_main, s)) {
        die("pthread_create failed");
    }
    while (atomic_load(&s->bytes) < want && now_s() - t0 < 3) {
        usleep(1000);
    }
}

static void run_reader(reader *r)
{
    pthread_t tid;

    if (pthread_create(&tid, NULL, reader_main, r)) {
        die("pthread_create failed");
    }
    pthread_join(tid, NULL);
}

static void lat_phase(ctx *c, enum phase ph)
{
    static reader r;
    streamer s = { .c = c, .be7 = phases[ph].rt };
    pthread_t stid;
    uint64_t b0 = 0;
    double t0;
    lat_result *out = &c->lat[ph];

    r = (reader){ .c = c, .buffered = phases[ph].buffered, .rt = phases[ph].rt };
    r.fd = open_file(c, !r.buffered);
    if (r.buffered) {
        advise(r.fd, 0, 0, POSIX_FADV_RANDOM);
    }
    drop_cache(c, phases[ph].key);
    if (phases[ph].busy) {
        start_streamer(&s, &stid);
        b0 = atomic_load(&s.bytes);
    }
    t0 = now_s();
    run_reader(&r);
    if (phases[ph].busy) {
        out->stream_mb_s = (double)(atomic_load(&s.bytes) - b0) / 1e6 / (now_s() - t0);
        atomic_store(&s.stop, true);
        pthread_join(stid, NULL);
        close(s.fd);
    }
    close(r.fd);
    if (r.rt_failed) {
        out->note = c->ioprio_rt;
        return;
    }
    summarize(&r, out);
}

static void run_latency(ctx *c)
{
    snprintf(c->ioprio_rt, sizeof(c->ioprio_rt), "not tried");
    snprintf(c->ioprio_be7, sizeof(c->ioprio_be7), "not tried");
    for (int ph = 0; ph < NPHASES; ph++) {
        lat_phase(c, (enum phase)ph);
        say("random 4 KiB: %s done", phases[ph].key);
    }
}

/* ---- output ---- */

static size_t best_method(void)
{
    size_t b = ENGINE_METHOD;

    for (size_t i = 0; i < NMETHODS; i++) {
        if (!methods[i].skip && best(methods[i].mb_s, methods[i].n) > best(methods[b].mb_s, methods[b].n)) {
            b = i;
        }
    }
    return b;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            printf("\\%c", *s);
        } else if ((unsigned char)*s < 0x20) {
            printf("\\u%04x", *s);
        } else {
            putchar(*s);
        }
    }
    putchar('"');
}

static void json_num(const char *key, bool valid, double v, bool comma)
{
    printf("\"%s\": ", key);
    if (valid) {
        printf("%.1f", v);
    } else {
        printf("null");
    }
    if (comma) {
        fputs(", ", stdout);
    }
}

static void json_methods(void)
{
    printf("\"methods\": {");
    for (size_t i = 0; i < NMETHODS; i++) {
        const method *m = &methods[i];
        printf("%s\n    ", i ? "," : "");
        json_str(m->name);
        printf(": {");
        if (m->skip) {
            printf("\"skipped\": ");
            json_str(m->skip);
        } else {
            json_num("mb_s_best", true, best(m->mb_s, m->n), true);
            json_num("mb_s_median", true, median(m->mb_s, m->n), true);
            printf("\"resident_before_max_pct\": %.2f", m->resident_max * 100);
        }
        printf("}");
    }
    printf("},\n  ");
}

static void json_rand(const ctx *c)
{
    char k[80];

    printf("\"rand4k\": {\"reads\": %d, ", RAND_READS);
    for (int ph = 0; ph < NPHASES; ph++) {
        const lat_result *l = &c->lat[ph];
        snprintf(k, sizeof(k), "%s_p50_us", phases[ph].key);
        json_num(k, l->valid, l->p50, true);
        snprintf(k, sizeof(k), "%s_p99_us", phases[ph].key);
        json_num(k, l->valid, l->p99, true);
        if (phases[ph].busy) {
            snprintf(k, sizeof(k), "%s_stream_mb_s", phases[ph].key);
            json_num(k, l->valid, l->stream_mb_s, true);
        }
    }
    printf("\"busy_buffered_random_cached_draws\": %" PRIu64 ", ",
           c->lat[PH_BUSY_BUFFERED].cached_draws);
    printf("\"ioprio_rt\": ");
    json_str(c->ioprio_rt);
    printf(", \"ioprio_streamer_be7\": ");
    json_str(c->ioprio_be7);
    printf("},\n  ");
}

static void today(char *out, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;

    strftime(out, len, "%Y-%m-%d", localtime_r(&t, &tm));
}

static void print_json(const ctx *c)
{
    size_t b = best_method();
    double disk = best(methods[b].mb_s, methods[b].n);
    double eng = best(methods[ENGINE_METHOD].mb_s, methods[ENGINE_METHOD].n);
    struct utsname u;
    char date[32];

    uname(&u);
    today(date, sizeof(date));
    printf("{\"file\": ");
    json_str(c->o.path);
    printf(", \"size\": %" PRIu64 ", \"chunk\": %" PRIu64 ", \"reps\": %u, \"date\": \"%s\", ",
           c->o.size, c->o.chunk, c->o.reps, date);
    printf("\"kernel\": ");
    json_str(u.release);
    printf(", \"drop_caches\": %s,\n  ", c->root && !c->drop_failed ? "true" : "false");
    json_methods();
    printf("\"disk_seq_mb_s\": %.1f, \"best_method\": ", disk);
    json_str(methods[b].name);
    printf(", \"engine_method\": \"%s\", \"engine_share_of_disk\": %.3f,\n  ",
           methods[ENGINE_METHOD].name, disk > 0 ? eng / disk : 0);
    json_rand(c);
    printf("\"device\": ");
    json_str(c->dev);
    printf(", \"scheduler\": ");
    json_str(c->scheduler);
    printf(", \"read_ahead_kb\": %ld, \"max_sectors_kb\": %ld}\n", c->read_ahead_kb, c->max_sectors_kb);
}

static void print_table_methods(void)
{
    double eng = best(methods[ENGINE_METHOD].mb_s, methods[ENGINE_METHOD].n);

    printf("\n%-42s %10s %12s %10s\n", "sequential read, whole file", "best MB/s", "median MB/s",
           "vs 2 (best)");
    for (size_t i = 0; i < NMETHODS; i++) {
        const method *m = &methods[i];
        if (m->skip) {
            printf("%-42s %s\n", m->label, m->skip);
            continue;
        }
        printf("%-42s %10.0f %12.0f %9.2fx\n", m->label, best(m->mb_s, m->n),
               median(m->mb_s, m->n), eng > 0 ? best(m->mb_s, m->n) / eng : 0);
    }
}

static void print_table_rand(const ctx *c)
{
    printf("\n%-44s %9s %9s %14s\n", "random 4 KiB reads", "p50 us", "p99 us", "streamer MB/s");
    for (int ph = 0; ph < NPHASES; ph++) {
        const lat_result *l = &c->lat[ph];
        if (!l->valid) {
            printf("%-44s not measured: %s\n", phases[ph].label, l->note ? l->note : "?");
            continue;
        }
        printf("%-44s %9.0f %9.0f", phases[ph].label, l->p50, l->p99);
        if (phases[ph].busy) {
            printf(" %14.0f", l->stream_mb_s);
        }
        putchar('\n');
    }
    printf("  (buffered: only pages not cached are read; d skipped %" PRIu64
           " draws that the streamer had cached)\n", c->lat[PH_BUSY_BUFFERED].cached_draws);
    printf("  ioprio RT for the reader: %s; BE 7 for the streamer: %s\n", c->ioprio_rt, c->ioprio_be7);
}

static void print_table(const ctx *c)
{
    size_t b = best_method();
    double disk = best(methods[b].mb_s, methods[b].n);
    double eng = best(methods[ENGINE_METHOD].mb_s, methods[ENGINE_METHOD].n);
    char date[32];

    today(date, sizeof(date));
    printf("\n%s: %" PRIu64 " MiB, buffered chunk %" PRIu64 " KiB, %u reps, %s\n", c->o.path,
           c->o.size / MIB, c->o.chunk / KIB, c->o.reps, date);
    printf("device %s, scheduler %s (%s), read_ahead_kb %ld, max_sectors_kb %ld\n", c->dev,
           c->scheduler, c->sched_line[0] ? c->sched_line : "?", c->read_ahead_kb, c->max_sectors_kb);
    printf("cache dropped before each method: fsync + FADV_DONTNEED%s\n",
           c->root && !c->drop_failed ? " + drop_caches" : " (not root: no drop_caches)");
    print_table_methods();
    printf("\ndisk sequential (best of all): %.0f MB/s, %s; the engine's method 2: %.0f MB/s = %.0f %%\n",
           disk, methods[b].name, eng, disk > 0 ? 100 * eng / disk : 0);
    print_table_rand(c);
}

int main(int argc, char **argv)
{
    ctx c = { .o = parse_opts(argc, argv) };
    void *map;

    quiet_stdout = c.o.json;
    c.root = geteuid() == 0;
    ensure_file(&c.o);
    c.fd = open_file(&c, false);
    map = mmap(NULL, (size_t)c.o.size, PROT_READ, MAP_SHARED, c.fd, 0);
    if (map == MAP_FAILED) {
        die("mmap %s: %s", c.o.path, strerror(errno));
    }
    c.map = map;
    close(open_file(&c, true));   /* O_DIRECT refused here: say so now */
    device_info(&c);
    run_sequential(&c);
    run_latency(&c);
    if (c.o.json) {
        print_json(&c);
    } else {
        print_table(&c);
    }
    munmap(map, (size_t)c.o.size);
    close(c.fd);
    return 0;
}
