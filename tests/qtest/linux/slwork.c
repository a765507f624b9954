/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * slwork: the workload of the Linux test guest (docs/linux-guest.md).
 *
 * It runs as PID 1 of a busybox initramfs (started by init.sh), built
 * statically so that the initramfs needs no libraries.  It fills a share of
 * guest RAM with pages whose every byte it can predict (the page's index,
 * its generation and a stream seeded by a hash of both), then walks them
 * for ever: each page is checked against its last generation and rewritten
 * with the next.  It also keeps a few files in tmpfs whose contents have a
 * known checksum, re-reads them after every pass and rewrites one of them.
 * A snapshot restored wrongly (a page missing, stale, zero or placed twice
 * over newer data) shows up as an `ERR` line on the console.
 *
 * Console (ttyS0): `READY ...` once the working set is filled, a heartbeat
 * `HB ...` with its counters every hb_ms, `ERR ...` on any wrong byte.
 * Requests (ttyS1, one line each, answered on the same port):
 *   PING <token>  ->  PONG <token> pass=.. pages=.. files=.. errors=..
 *   PASS          ->  (once the walk has touched every working-set page
 *                     once more) PASS ms=<duration> pages=<count>
 *   STAT          ->  STAT <the heartbeat's counters>
 *   FLIP <page>   ->  FLIPPED ...: flips a bit of byte 100 of that working-set
 *                     page, so that a test can see the checker report it
 *   FLIPFILE <n>  ->  FLIPPED ...: the same in file n
 *   DISK          ->  (once a disk pass that started after the request is
 *                     done) DISK ms=<duration> gen=<its generation> blocks=..
 *   HOLD <ms>     ->  the next disk pass, once it has written every block,
 *                     answers HOLDING gen=<its generation> ms=<ms> and waits
 *                     that long (or until RELEASE) before its fsync: its data
 *                     is then only in the guest's page cache (as far as the
 *                     kernel has not written it back), for a save to catch
 *   RELEASE       ->  ends a HOLD: RELEASED gen=.. held_ms=.. (RELEASED none
 *                     without one), and the pass goes on with its fsync
 *
 * Settings come from the kernel command line (slwork.KEY=VALUE) or, when
 * run by hand on a host, from the arguments (KEY=VALUE): ws_pct (share of
 * RAM in percent, default 25), ws_mb (working set in MiB, overrides
 * ws_pct), files (default 8), file_kb (default 1024), hb_ms (default
 * 1000), console (default /dev/ttyS0, "-" for stdout), req (default
 * /dev/ttyS1, "-" for stdin, "none" for no requests), dir (default /tmp),
 * disk (a block device to keep writing and checking, default none; see
 * disker()), disk_mb (how much of it, default all).
 */
#define _GNU_SOURCE /* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "slwork-pattern.h"

#define PAGE SLW_BLOCK
#define WORDS SLW_WORDS
#define MAX_ERR_LINES 64

struct cfg {
    unsigned ws_pct, files, file_kb, hb_ms;
    uint64_t ws_mb, disk_mb;
    char console[128], req[128], dir[128], disk[128];
};

static struct cfg cfg = {
    .ws_pct = 25, .files = 8, .file_kb = 1024, .hb_ms = 1000,
    .console = "/dev/ttyS0", .req = "/dev/ttyS1", .dir = "/tmp",
};

static int con_fd = 1, req_fd = -1;
static pthread_mutex_t con_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t req_lock = PTHREAD_MUTEX_INITIALIZER;
/* A file is rewritten (truncated, then written) under it, and FLIPFILE
 * flips its byte under it: a flip in between read an empty file and was
 * answered UNKNOWN (seen once in a loop of the qtests). */
static pthread_mutex_t file_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t *ws;          /* the working set, ws_pages pages */
static uint32_t *gens;        /* generation each page holds now */
static uint64_t ws_pages;
static uint64_t *file_hash;   /* checksum each file must have */
static uint32_t *file_gen;

static atomic_bool ready;
static atomic_uint_fast64_t passes, pages_done, file_checks, errors, err_lines;
/* PASS request: 0 when none, else the pages_done value that ends it. */
static atomic_uint_fast64_t pass_target;
static double pass_t0;
/* The disk: passes started and done (each its own generation), DISK request. */
static atomic_uint_fast64_t disk_started, disk_done, disk_target;
/* Request lines read, answers written: in the heartbeat, so that a host
 * missing an answer can tell a request never read from an answer stuck. */
static atomic_uint_fast64_t req_lines, req_answers;
static atomic_uint_fast64_t disk_hold_ms; /* HOLD request: keep the next pass dirty */
static atomic_bool disk_holding, disk_release; /* a HOLD in progress; RELEASE asked */
static uint64_t disk_blocks;
static double disk_t0;

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* One line on the console, whole (threads never interleave). */
static void __attribute__((format(printf, 1, 2))) say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n > sizeof(line) - 2) {
        n = (int)sizeof(line) - 2;
    }
    line[n++] = '\n';
    pthread_mutex_lock(&con_lock);
    write_all(con_fd, line, (size_t)n);
    pthread_mutex_unlock(&con_lock);
}

/* One answer line on the request port. */
static void __attribute__((format(printf, 1, 2))) answer(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || req_fd < 0) {
        return;
    }
    if ((size_t)n > sizeof(line) - 2) {
        n = (int)sizeof(line) - 2;
    }
    line[n++] = '\n';
    pthread_mutex_lock(&req_lock);
    write_all(req_fd == 0 ? 1 : req_fd, line, (size_t)n);
    pthread_mutex_unlock(&req_lock);
    atomic_fetch_add(&req_answers, 1);
}

/* A wrong byte: counted always, reported on the first MAX_ERR_LINES. */
static void __attribute__((format(printf, 1, 2))) report_error(const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    atomic_fetch_add(&errors, 1);
    if (atomic_fetch_add(&err_lines, 1) >= MAX_ERR_LINES) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    say("ERR %s", msg);
}

/* Page @i with generation @gen (slwork-pattern.h). */
static void write_page(uint64_t i, uint32_t gen)
{
    slw_fill(ws + i * WORDS, SLW_MAGIC_PAGE, SLW_KIND_PAGE, i, gen);
}

/* Checks page @i against generation @gen; reports the first wrong byte. */
static void check_page(uint64_t i, uint32_t gen)
{
    const uint64_t *p = ws + i * WORDS;
    uint64_t want = 0;
    unsigned nbad, bad = slw_check(p, SLW_MAGIC_PAGE, SLW_KIND_PAGE, i, gen, &want, &nbad);

    if (__builtin_expect(bad != WORDS, 0)) {
        unsigned byte = bad * 8u + (unsigned)__builtin_ctzll(want ^ p[bad]) / 8u;
        report_error("page=%" PRIu64 " gen=%u byte=%u want=%016" PRIx64 " got=%016" PRIx64
                     " wrong_words=%u%s", i, gen, byte, want, p[bad], nbad,
                     nbad == WORDS && !p[0] && !p[WORDS - 1] ? " (zero page?)" : "");
    }
}

static void file_path(char *buf, size_t n, unsigned f)
{
    snprintf(buf, n, "%s/slwork.%u", cfg.dir, f);
}

static uint64_t hash_words(const uint64_t *w, size_t n)
{
    uint64_t h = 0x243f6a8885a308d3ull;

    for (size_t i = 0; i < n; i++) {
        h = slw_mix64(h ^ w[i]);
    }
    return h;
}

/* Writes file @f with generation @gen and records its checksum. */
static void write_file(unsigned f, uint32_t gen, uint64_t *buf)
{
    size_t words = (size_t)cfg.file_kb * 1024 / 8;
    uint64_t s = slw_seed(SLW_KIND_FILE, f, gen);
    char path[200];
    int fd;

    for (size_t i = 0; i < words; i++) {
        buf[i] = slw_next(&s);
    }
    file_path(path, sizeof(path), f);
    pthread_mutex_lock(&file_lock);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        pthread_mutex_unlock(&file_lock);
        report_error("file=%s cannot be written: %s", path, strerror(errno));
        return;
    }
    write_all(fd, (const char *)buf, words * 8);
    close(fd);
    pthread_mutex_unlock(&file_lock);
    file_hash[f] = hash_words(buf, words);
    file_gen[f] = gen;
}

/* Re-reads every file and compares its checksum with the recorded one. */
static void check_files(uint64_t *buf)
{
    size_t bytes = (size_t)cfg.file_kb * 1024;

    for (unsigned f = 0; f < cfg.files; f++) {
        char path[200];
        ssize_t got = 0, r;
        uint64_t h;
        char extra;
        int fd;

        file_path(path, sizeof(path), f);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            report_error("file=%s cannot be read: %s", path, strerror(errno));
            continue;
        }
        while ((size_t)got < bytes && (r = read(fd, (char *)buf + got, bytes - (size_t)got)) > 0) {
            got += r;
        }
        r = read(fd, &extra, 1); /* must be at its end now */
        close(fd);
        if ((size_t)got != bytes || r != 0) {
            report_error("file=%s gen=%u has the wrong size (read %zd of %zu bytes)", path,
                         file_gen[f], got, bytes);
            continue;
        }
        h = hash_words(buf, bytes / 8);
        if (h != file_hash[f]) {
            report_error("file=%s gen=%u checksum want=%016" PRIx64 " got=%016" PRIx64, path,
                         file_gen[f], file_hash[f], h);
        }
        atomic_fetch_add(&file_checks, 1);
    }
}

/* Ends a PASS request once the walk has gone once round the working set. */
static void pass_progress(uint64_t done)
{
    uint64_t target = atomic_load_explicit(&pass_target, memory_order_acquire);

    if (__builtin_expect(target != 0, 0) && done >= target) {
        double ms = now_ms() - pass_t0;
        atomic_store(&pass_target, 0);
        answer("PASS ms=%.3f pages=%" PRIu64, ms, ws_pages);
    }
}

static void *worker(void *arg)
{
    uint64_t *buf = arg, pass;

    for (uint64_t i = 0; i < ws_pages; i++) {
        write_page(i, 1);
        gens[i] = 1;
    }
    for (unsigned f = 0; f < cfg.files; f++) {
        write_file(f, 1, buf);
    }
    say("READY ws_pages=%" PRIu64 " ws_mb=%" PRIu64 " files=%u file_kb=%u", ws_pages,
        ws_pages * PAGE >> 20, cfg.files, cfg.file_kb);
    atomic_store(&ready, true);
    for (pass = 1;; pass++) {
        for (uint64_t i = 0; i < ws_pages; i++) {
            check_page(i, gens[i]);
            write_page(i, gens[i] + 1);
            gens[i]++;
            pass_progress(atomic_fetch_add_explicit(&pages_done, 1, memory_order_relaxed) + 1);
        }
        check_files(buf);
        if (cfg.files) {
            unsigned f = (unsigned)(pass % cfg.files);
            write_file(f, file_gen[f] + 1, buf);
        }
        atomic_store(&passes, pass);
    }
    return NULL;
}

static int counters(char *buf, size_t n)
{
    int k = snprintf(buf, n, "pass=%" PRIu64 " pages=%" PRIu64 " ws=%" PRIu64 " files=%" PRIu64
                     " errors=%" PRIu64 " ready=%d", (uint64_t)atomic_load(&passes),
                     (uint64_t)atomic_load(&pages_done), ws_pages,
                     (uint64_t)atomic_load(&file_checks), (uint64_t)atomic_load(&errors),
                     (int)atomic_load(&ready));

    if (cfg.disk[0] && k > 0 && (size_t)k < n) {
        /* passes done; each pass writes its own generation, its number */
        k += snprintf(buf + k, n - (size_t)k, " disk=%" PRIu64, (uint64_t)atomic_load(&disk_done));
    }
    return k;
}

/* Ends a DISK request once a disk pass that started after it is done. */
static void disk_progress(uint64_t done)
{
    uint64_t target = atomic_load_explicit(&disk_target, memory_order_acquire);

    if (target && done >= target) {
        atomic_store(&disk_target, 0);
        answer("DISK ms=%.3f gen=%" PRIu64 " blocks=%" PRIu64, now_ms() - disk_t0, done,
               disk_blocks);
    }
}

/* Drops the disk's clean cached blocks, so that the next reads go to it. */
static void drop_disk_cache(int fd)
{
    int dc;

    if (ioctl(fd, BLKFLSBUF, 0) == 0) {
        return;
    }
    dc = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (dc >= 0) {
        write_all(dc, "1\n", 2);
        close(dc);
    }
}

/* Checks the @n blocks read into @buf, the first being @first, against @gen. */
static void check_disk_blocks(const uint64_t *buf, uint64_t first, uint64_t n, uint64_t gen)
{
    for (uint64_t k = 0; k < n; k++) {
        const uint64_t *p = buf + k * WORDS;
        uint64_t want = 0, b = first + k;
        unsigned nbad, bad = slw_check(p, SLW_MAGIC_DISK, SLW_KIND_DISK, b, gen, &want, &nbad);
        if (bad != WORDS) {
            unsigned byte = bad * 8u + (unsigned)__builtin_ctzll(want ^ p[bad]) / 8u;
            report_error("disk=%s block=%" PRIu64 " gen=%" PRIu64 " byte=%u want=%016" PRIx64
                         " got=%016" PRIx64 " wrong_words=%u holds=(block %" PRIu64 " gen %"
                         PRIu64 ")", cfg.disk, b, gen, byte, want, p[bad], nbad, p[1], p[2]);
        }
    }
}

/*
 * The disk workload: pass after pass, writes every block of the disk with
 * the pass's generation through the page cache, fsyncs (after a HOLD, if
 * one was asked for), drops the cached blocks and reads them all back,
 * through the page cache on even passes and with O_DIRECT (into this
 * buffer) on odd ones, checking every byte.
 */
static void *disker(void *arg)
{
    const uint64_t chunk = 16; /* blocks per read */
    uint64_t *buf = NULL, size = 0;
    int fd = -1, dfd;

    (void)arg;
    for (int i = 0; i < 100 && fd < 0; i++) { /* the device node may come late */
        fd = open(cfg.disk, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            usleep(100000);
        }
    }
    if (fd >= 0 && ioctl(fd, BLKGETSIZE64, &size) != 0) {
        struct stat st; /* a plain file, when run by hand on a host */
        size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    }
    if (fd < 0 || !size || posix_memalign((void **)&buf, PAGE, chunk * PAGE)) {
        report_error("disk=%s cannot be used: %s", cfg.disk, strerror(errno));
        return NULL;
    }
    dfd = open(cfg.disk, O_RDONLY | O_DIRECT | O_CLOEXEC);
    disk_blocks = size / PAGE;
    if (cfg.disk_mb && cfg.disk_mb * (1u << 20) / PAGE < disk_blocks) {
        disk_blocks = cfg.disk_mb * (1u << 20) / PAGE;
    }
    say("DISK %s blocks=%" PRIu64 " direct=%s", cfg.disk, disk_blocks, dfd >= 0 ? "yes" : "no");
    for (uint64_t gen = 1;; gen++) {
        int rfd = (gen & 1) && dfd >= 0 ? dfd : fd;
        atomic_store(&disk_started, gen);
        for (uint64_t b = 0; b < disk_blocks; b++) {
            slw_fill(buf, SLW_MAGIC_DISK, SLW_KIND_DISK, b, gen);
            if (pwrite(fd, buf, PAGE, (off_t)(b * PAGE)) != (ssize_t)PAGE) {
                report_error("disk=%s block=%" PRIu64 " cannot be written: %s", cfg.disk, b,
                             strerror(errno));
            }
        }
        uint64_t hold = atomic_exchange(&disk_hold_ms, 0);
        if (hold) { /* the pass's blocks are only in the page cache for now */
            double end = now_ms() + (double)hold, t0 = now_ms();
            atomic_store(&disk_release, false);
            atomic_store(&disk_holding, true);
            answer("HOLDING gen=%" PRIu64 " ms=%" PRIu64, gen, hold);
            while (!atomic_load(&disk_release) && now_ms() < end) {
                usleep(5000);
            }
            atomic_store(&disk_holding, false);
            answer("RELEASED gen=%" PRIu64 " held_ms=%.0f", gen, now_ms() - t0);
        }
        if (fsync(fd) != 0) {
            report_error("disk=%s fsync: %s", cfg.disk, strerror(errno));
        }
        drop_disk_cache(fd);
        for (uint64_t b = 0; b < disk_blocks; b += chunk) {
            uint64_t n = disk_blocks - b < chunk ? disk_blocks - b : chunk;
            if (pread(rfd, buf, n * PAGE, (off_t)(b * PAGE)) != (ssize_t)(n * PAGE)) {
                report_error("disk=%s blocks %" PRIu64 "+%" PRIu64 " cannot be read: %s",
                             cfg.disk, b, n, strerror(errno));
                continue;
            }
            check_disk_blocks(buf, b, n, gen);
        }
        atomic_store(&disk_done, gen);
        disk_progress(gen);
    }
    return NULL;
}

static void *heartbeat(void *arg)
{
    struct timespec ts = { .tv_sec = cfg.hb_ms / 1000, .tv_nsec = (long)(cfg.hb_ms % 1000) * 1000000L };
    char c[256];

    (void)arg;
    for (uint64_t n = 1;; n++) {
        nanosleep(&ts, NULL);
        counters(c, sizeof(c));
        say("HB n=%" PRIu64 " t=%.0f %s req=%" PRIu64 " ans=%" PRIu64, n, now_ms(), c,
            (uint64_t)atomic_load(&req_lines), (uint64_t)atomic_load(&req_answers));
    }
    return NULL;
}

static void request(char *line)
{
    char c[256];

    counters(c, sizeof(c));
    if (!strncmp(line, "PING", 4) && (line[4] == ' ' || !line[4])) {
        answer("PONG %s %s", line[4] ? line + 5 : "-", c);
    } else if (!strcmp(line, "PASS")) {
        if (!atomic_load(&ready)) {
            answer("BUSY still filling the working set");
        } else if (atomic_load(&pass_target)) {
            answer("BUSY a PASS is running");
        } else {
            pass_t0 = now_ms();
            atomic_store(&pass_target, (uint64_t)atomic_load(&pages_done) + ws_pages);
        }
    } else if (!strncmp(line, "FLIP ", 5)) {
        uint64_t i = strtoull(line + 5, NULL, 0);
        if (i < ws_pages) {
            /* The checker's own test: the next visit must report this byte. */
            ((volatile uint8_t *)ws)[i * PAGE + 100] ^= 0x10;
            answer("FLIPPED page=%" PRIu64 " byte=100", i);
        } else {
            answer("UNKNOWN page %" PRIu64 " is outside the working set", i);
        }
    } else if (!strncmp(line, "FLIPFILE ", 9)) {
        unsigned f = (unsigned)strtoul(line + 9, NULL, 0);
        char path[200], b;
        int fd = -1;
        bool flipped;
        file_path(path, sizeof(path), f);
        pthread_mutex_lock(&file_lock);
        flipped = f < cfg.files && (fd = open(path, O_RDWR | O_CLOEXEC)) >= 0 &&
                  pread(fd, &b, 1, 100) == 1 && (b ^= 0x10, pwrite(fd, &b, 1, 100) == 1);
        if (fd >= 0) {
            close(fd);
        }
        pthread_mutex_unlock(&file_lock);
        if (flipped) {
            answer("FLIPPED file=%s byte=100", path);
        } else {
            answer("UNKNOWN file %u cannot be changed", f);
        }
    } else if (!strcmp(line, "DISK")) {
        if (!cfg.disk[0]) {
            answer("UNKNOWN this guest has no disk workload (slwork.disk=)");
        } else if (atomic_load(&disk_target)) {
            answer("BUSY a DISK is running");
        } else {
            disk_t0 = now_ms();
            atomic_store(&disk_target, (uint64_t)atomic_load(&disk_started) + 1);
        }
    } else if (!strncmp(line, "HOLD ", 5)) {
        if (!cfg.disk[0]) {
            answer("UNKNOWN this guest has no disk workload (slwork.disk=)");
        } else {
            atomic_store(&disk_hold_ms, strtoull(line + 5, NULL, 0));
        }
    } else if (!strcmp(line, "RELEASE")) {
        if (atomic_load(&disk_holding)) {
            atomic_store(&disk_release, true); /* the disk thread answers RELEASED */
        } else {
            answer("RELEASED none");
        }
    } else if (!strcmp(line, "STAT")) {
        answer("STAT %s", c);
    } else if (line[0]) {
        answer("UNKNOWN %.64s", line);
    }
}

/* Reads request lines from the request port for ever. */
static void *responder(void *arg)
{
    char line[256];
    size_t len = 0;

    (void)arg;
    for (;;) {
        char ch;
        ssize_t r = read(req_fd, &ch, 1);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            if (req_fd == 0) {
                return NULL; /* stdin closed (by hand on a host) */
            }
            sleep(1); /* a serial port has no end: try again */
            continue;
        }
        if (ch == '\n' || ch == '\r') {
            line[len] = 0;
            atomic_fetch_add(&req_lines, len > 0);
            request(line);
            len = 0;
        } else if (len < sizeof(line) - 1) {
            line[len++] = ch;
        }
    }
    return NULL;
}

static void set_option(const char *kv)
{
    const char *eq = strchr(kv, '=');
    size_t k = eq ? (size_t)(eq - kv) : 0;
    const char *v = eq ? eq + 1 : "";

#define KEY(name) (k == strlen(name) && !strncmp(kv, name, k))
    if (KEY("ws_pct")) {
        cfg.ws_pct = (unsigned)strtoul(v, NULL, 0);
    } else if (KEY("ws_mb")) {
        cfg.ws_mb = strtoull(v, NULL, 0);
    } else if (KEY("files")) {
        cfg.files = (unsigned)strtoul(v, NULL, 0);
    } else if (KEY("file_kb")) {
        cfg.file_kb = (unsigned)strtoul(v, NULL, 0);
    } else if (KEY("hb_ms")) {
        cfg.hb_ms = (unsigned)strtoul(v, NULL, 0);
    } else if (KEY("console")) {
        snprintf(cfg.console, sizeof(cfg.console), "%s", v);
    } else if (KEY("req")) {
        snprintf(cfg.req, sizeof(cfg.req), "%s", v);
    } else if (KEY("dir")) {
        snprintf(cfg.dir, sizeof(cfg.dir), "%s", v);
    } else if (KEY("disk")) {
        snprintf(cfg.disk, sizeof(cfg.disk), "%s", v);
    } else if (KEY("disk_mb")) {
        cfg.disk_mb = strtoull(v, NULL, 0);
    }
#undef KEY
}

/* slwork.KEY=VALUE words of the kernel command line. */
static void read_cmdline(void)
{
    char buf[4096], *save = NULL;
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

    if (fd >= 0) {
        close(fd);
    }
    if (n <= 0) {
        return;
    }
    buf[n] = 0;
    for (char *w = strtok_r(buf, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
        if (!strncmp(w, "slwork.", 7)) {
            set_option(w + 7);
        }
    }
}

static int open_tty(const char *path, int flags)
{
    int fd = open(path, flags | O_NOCTTY | O_CLOEXEC);
    struct termios t;

    if (fd >= 0 && tcgetattr(fd, &t) == 0) {
        cfmakeraw(&t);
        cfsetspeed(&t, B115200);
        tcsetattr(fd, TCSANOW, &t);
    }
    return fd;
}

int main(int argc, char **argv)
{
    pthread_t tw, th, tr, td;
    struct sysinfo si;
    uint64_t *buf;

    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            set_option(argv[i]);
        }
    } else {
        read_cmdline();
    }
    if (strcmp(cfg.console, "-")) {
        con_fd = open(cfg.console, O_WRONLY | O_NOCTTY | O_CLOEXEC);
        if (con_fd < 0) {
            con_fd = 1;
            say("slwork: cannot open %s (%s): reporting on stdout", cfg.console, strerror(errno));
        }
    }
    if (!strcmp(cfg.req, "-")) {
        req_fd = 0;
    } else if (strcmp(cfg.req, "none") && (req_fd = open_tty(cfg.req, O_RDWR)) < 0) {
        say("slwork: cannot open %s (%s): no requests", cfg.req, strerror(errno));
    }
    if (sysinfo(&si) != 0) {
        say("slwork: sysinfo: %s", strerror(errno));
        return 1;
    }
    ws_pages = cfg.ws_mb ? cfg.ws_mb * (1u << 20) / PAGE
                         : (uint64_t)si.totalram * si.mem_unit / 100 * cfg.ws_pct / PAGE;
    if (!ws_pages || !cfg.hb_ms || !cfg.file_kb || cfg.file_kb % 8) {
        say("slwork: nothing to do (ws_pages=%" PRIu64 " hb_ms=%u file_kb=%u)", ws_pages,
            cfg.hb_ms, cfg.file_kb);
        return 1;
    }
    ws = mmap(NULL, ws_pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gens = calloc(ws_pages, sizeof(*gens));
    buf = malloc((size_t)cfg.file_kb * 1024);
    file_hash = calloc(cfg.files + 1, sizeof(*file_hash));
    file_gen = calloc(cfg.files + 1, sizeof(*file_gen));
    if (ws == MAP_FAILED || !gens || !buf || !file_hash || !file_gen) {
        say("slwork: cannot allocate a working set of %" PRIu64 " pages", ws_pages);
        return 1;
    }
    say("SLWORK START ram_mb=%" PRIu64 " ws_pages=%" PRIu64 " files=%u file_kb=%u hb_ms=%u",
        (uint64_t)si.totalram * si.mem_unit >> 20, ws_pages, cfg.files, cfg.file_kb, cfg.hb_ms);
    if (pthread_create(&tw, NULL, worker, buf) || pthread_create(&th, NULL, heartbeat, NULL) ||
        (req_fd >= 0 && pthread_create(&tr, NULL, responder, NULL)) ||
        (cfg.disk[0] && pthread_create(&td, NULL, disker, NULL))) {
        say("slwork: cannot start its threads");
        return 1;
    }
    pthread_join(tw, NULL);
    return 1;
}
