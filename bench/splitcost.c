/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapload-splitcost: what splitting QEMU's plain precopy stream costs
 * (sl_qemu_split_stream(), the step of `qemu-save` for anonymous RAM), per
 * GiB of stream and per page record, with the stream in the page cache.
 * It writes a stream like the one QEMU writes of a stopped guest: block
 * pc.ram of SIZE, every page a 4 KiB PAGE record (--zero-percent of them
 * ZERO records instead), in sections of 64 MiB whose first record names
 * the block and the rest CONTINUE it; pc.bios (256 KiB) kept in the
 * stream; 256 KiB of device state.  Each repetition splits it into a fresh
 * sparse file for pc.ram (as qemu-save creates it) and a device-state
 * file, both in DIR, checks a sample of the pages and the device state's
 * size, and removes them; three ways, in turn: from the stream's file (the
 * split alone), and as qemu-save gets QEMU's stream: copied into a new
 * file in DIR first, then split (`exec:cat > FILE`, qemu-save before
 * 2026-12-06), and split from a pipe a thread writes it into meanwhile
 * (`migrate fd:`, now).
 *
 *   snapload-splitcost [--size 1G] [--reps 5] [--dir /var/tmp]
 *                      [--zero-percent 0] [--stream FILE]
 *
 * --stream FILE splits FILE when it exists (written by an earlier run with
 * the same --size and --zero-percent) and writes it there, kept, when it
 * does not: two builds can then split the same file in turn.  Prints each
 * repetition and the median: ms, ms per GiB of stream, us per record.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "benchutil.h"
#include "migration/format/format.h"

#define PG          4096u
#define SECTION     (64ull << 20)   /* guest RAM per section of records */
#define BIOS_LEN    (256u << 10)
#define DEVICE_LEN  (256u << 10)
#define MAX_REPS    16

/* The stream being written: its file, a 1 MiB buffer, where it is. */
typedef struct {
    int fd;
    uint8_t *buf;
    size_t len;
    uint64_t records;
} writer;

static void die(const char *what)
{
    fprintf(stderr, "snapload-splitcost: %s\n", what);
    exit(1);
}

static void drain(writer *w)
{
    if (w->len && write(w->fd, w->buf, w->len) != (ssize_t)w->len) {
        die("writing the stream failed");
    }
    w->len = 0;
}

static void put(writer *w, const void *p, size_t n)
{
    if (w->len + n > (1u << 20)) {
        drain(w);
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void put_u8(writer *w, uint8_t v)
{
    put(w, &v, 1);
}

static void put_be32(writer *w, uint32_t v)
{
    uint8_t b[4];

    sl_put_be32(b, v);
    put(w, b, 4);
}

static void put_be64(writer *w, uint64_t v)
{
    uint8_t b[8];

    sl_put_be64(b, v);
    put(w, b, 8);
}

static void put_str8(writer *w, const char *s)
{
    put_u8(w, (uint8_t)strlen(s));
    put(w, s, strlen(s));
}

/* Page @i of block @tag: its first word says which, the rest varies. */
static void page_of(uint8_t *p, uint8_t tag, uint64_t i)
{
    for (unsigned k = 0; k < PG; k += 8) {
        uint64_t v = (i * 0x9e3779b97f4a7c15ull) ^ k;
        memcpy(p + k, &v, 8);
    }
    p[0] = tag;
    memcpy(p + 8, &i, 8);
}

/* Whether page @i of pc.ram is sent as a ZERO record. */
static bool is_zero(uint64_t i, unsigned zero_percent)
{
    return (i * 37 + 11) % 100 < zero_percent;
}

/* Pages [@from, @to) of @name, the first record naming it. */
static void put_records(writer *w, const char *name, uint8_t tag, uint64_t from, uint64_t to,
                        unsigned zero_percent)
{
    uint8_t page[PG];

    for (uint64_t i = from; i < to; i++) {
        bool zero = is_zero(i, zero_percent);
        put_be64(w, i * PG | (zero ? 0x02 : 0x08) | (i == from ? 0 : 0x20));
        if (i == from) {
            put_str8(w, name);
        }
        if (zero) {
            put_u8(w, 0);
        } else {
            page_of(page, tag, i);
            put(w, page, PG);
        }
        w->records++;
    }
}

static void put_section_end(writer *w)
{
    put_be64(w, 0x10);     /* EOS */
    put_u8(w, 0x7e);
    put_be32(w, 2);
}

/* "QEVM" 3, the configuration, the RAM section's start with its block list. */
static void put_head(writer *w, uint64_t size)
{
    put_be32(w, 0x5145564d);
    put_be32(w, 3);
    put_u8(w, 0x07);
    put_be32(w, 9);
    put(w, "pc-i440fx", 9);
    put_u8(w, 0x01);
    put_be32(w, 2);
    put_str8(w, "ram");
    put_be32(w, 0);
    put_be32(w, 4);
    put_be64(w, (size + BIOS_LEN) | 0x04);
    put_str8(w, "pc.ram");
    put_be64(w, size);
    put_str8(w, "pc.bios");
    put_be64(w, BIOS_LEN);
    put_section_end(w);
}

/* The whole stream into @path; its number of page records. */
static uint64_t write_stream(const char *path, uint64_t size, unsigned zero_percent)
{
    writer w = { .fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600), .buf = g_malloc(1u << 20) };

    if (w.fd < 0) {
        die("cannot create the stream");
    }
    put_head(&w, size);
    for (uint64_t at = 0; at < size; at += SECTION) {
        put_u8(&w, 0x02);
        put_be32(&w, 2);
        put_records(&w, "pc.ram", 1, at / PG, MIN(at + SECTION, size) / PG, zero_percent);
        put_section_end(&w);
    }
    put_u8(&w, 0x03);
    put_be32(&w, 2);
    put_records(&w, "pc.bios", 2, 0, BIOS_LEN / PG, 0);
    put_section_end(&w);
    for (unsigned i = 0; i < DEVICE_LEN; i++) {
        put_u8(&w, (uint8_t)(i * 7 + 3));
    }
    put_u8(&w, 0x00);
    drain(&w);
    if (fsync(w.fd) < 0 || close(w.fd) < 0) {
        die("writing the stream failed");
    }
    g_free(w.buf);
    return w.records;
}

/* A sample of pc.ram's pages in @fd, as the stream has them. */
static void check_pages(int fd, uint64_t size, unsigned zero_percent)
{
    uint8_t got[PG], want[PG];

    for (uint64_t i = 0; i < size / PG; i += 997) {
        if (is_zero(i, zero_percent)) {
            memset(want, 0, PG);
        } else {
            page_of(want, 1, i);
        }
        if (pread(fd, got, PG, (off_t)(i * PG)) != PG || memcmp(got, want, PG)) {
            die("a page of pc.ram is not what the stream holds");
        }
    }
}

/* How the splitter gets the stream, as qemu-save did and does. */
typedef enum {
    FROM_FILE,      /* the stream file itself (the split alone) */
    VIA_FILE,       /* copied into a new file first (`cat > FILE`), then split */
    VIA_PIPE,       /* written into a pipe (`migrate fd:`) while it is split */
} split_input;

/* The copier's thread: @src (a file) into @dst (a file or a pipe), as
 * `cat` does, in 128 KiB writes; closes @dst. */
typedef struct {
    int src, dst;
    bool own;       /* the job was allocated for the thread: freed by it */
} copy_job;

static gpointer copy_stream(gpointer opaque)
{
    copy_job *j = opaque;
    static __thread char buf[128 << 10];
    ssize_t n;

    while ((n = read(j->src, buf, sizeof(buf))) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(j->dst, buf + off, (size_t)(n - off));
            if (w <= 0) {
                die("copying the stream");
            }
            off += w;
        }
    }
    close(j->dst);
    close(j->src);
    if (j->own) {
        g_free(j);
    }
    return NULL;
}

/* The fd the splitter reads @stream from, the way @how says (VIA_PIPE: a
 * copier thread in *@t writing it meanwhile). */
static int input_of(const char *stream, const char *dir, split_input how, GThread **t)
{
    g_autofree char *copy = g_build_filename(dir, "splitcost-copy", NULL);
    copy_job j = { open(stream, O_RDONLY), -1, false };
    int p[2];

    *t = NULL;
    if (how == FROM_FILE || j.src < 0) {
        return j.src;
    }
    if (how == VIA_FILE) {
        j.dst = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (j.dst < 0) {
            die("cannot create the stream's copy");
        }
        copy_stream(&j);
        p[0] = open(copy, O_RDONLY);
        unlink(copy);
        return p[0];
    }
    if (pipe(p) < 0) {
        die("pipe");
    }
    fcntl(p[0], F_SETPIPE_SZ, 1 << 20); /* as qemu-save sets it */
    j.dst = p[1];
    j.own = true;
    *t = g_thread_new("copy", copy_stream, g_memdup2(&j, sizeof(j)));
    return p[0];
}

/* One split of @stream in @dir, read as @how says; ms, from the first byte
 * copied (if any) to the split's end. */
static double split_once(const char *stream, const char *dir, uint64_t size,
                         unsigned zero_percent, uint64_t kept, split_input how)
{
    g_autofree char *ram_path = g_build_filename(dir, "splitcost-ram", NULL);
    g_autofree char *dev_path = g_build_filename(dir, "splitcost-device", NULL);
    const char *const lazy[] = { "pc.ram", NULL };
    int out = open(dev_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int ram = open(ram_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    g_autoptr(GError) err = NULL;
    GThread *copier;
    struct stat st;
    double t0;
    int in;

    if (out < 0 || ram < 0 || ftruncate(ram, (off_t)size) < 0) {
        die("cannot create the split's files");
    }
    t0 = now_ms();
    if ((in = input_of(stream, dir, how, &copier)) < 0) {
        die("cannot open the stream");
    }
    if (!sl_qemu_split_stream(in, out, lazy, &ram, &size, false, &err)) {
        die(err->message);
    }
    if (copier) {
        g_thread_join(copier);
    }
    t0 = now_ms() - t0;
    if (fstat(out, &st) < 0 || (uint64_t)st.st_size != kept) {
        die("the device state is not the size the stream leaves");
    }
    check_pages(ram, size, zero_percent);
    close(in);
    close(out);
    close(ram);
    unlink(ram_path);
    unlink(dev_path);
    return t0;
}

int main(int argc, char **argv)
{
    const char *size_s = "1G", *dir = "/var/tmp", *stream_arg = NULL;
    unsigned zero_percent = 0;
    int reps = 5;
    uint64_t size, records = 0, kept;
    double ms[MAX_REPS], via_file[MAX_REPS], via_pipe[MAX_REPS];
    g_autofree char *stream = NULL;
    struct stat st;

    static const char usage[] = "usage: snapload-splitcost [--size 1G] [--reps 5] "
        "[--dir /var/tmp] [--zero-percent 0] [--stream FILE]";
    bool help, known = true;

    if (!bench_args_ok(argc, argv, usage, &help)) {
        return help ? 0 : 2;
    }
    for (int i = 1; i + 1 < argc && known; i += 2) {
        if (!strcmp(argv[i], "--size")) {
            size_s = argv[i + 1];
        } else if (!strcmp(argv[i], "--reps")) {
            reps = CLAMP(atoi(argv[i + 1]), 1, MAX_REPS);
        } else if (!strcmp(argv[i], "--dir")) {
            dir = argv[i + 1];
        } else if (!strcmp(argv[i], "--zero-percent")) {
            zero_percent = (unsigned)CLAMP(atoi(argv[i + 1]), 0, 100);
        } else if (!strcmp(argv[i], "--stream")) {
            stream_arg = argv[i + 1];
        } else {
            fprintf(stderr, "snapload-splitcost: unknown option '%s'\n", argv[i]);
            known = false;
        }
    }
    if (!known || !bench_size(size_s, &size)) {
        fprintf(stderr, "%s\n", usage);
        return 2;
    }
    stream = stream_arg ? g_strdup(stream_arg) : g_build_filename(dir, "splitcost-stream", NULL);
    if (!stream_arg || stat(stream, &st) < 0) {
        records = write_stream(stream, size, zero_percent);
    } else {
        records = size / PG + BIOS_LEN / PG;
    }
    if (stat(stream, &st) < 0) {
        die("the stream is gone");
    }
    /* What stays: all but pc.ram's records (each section's 5-byte head and
     * 13-byte end are kept, the records between them are not); each kept
     * pc.bios record after the first names its block (8 bytes more). */
    kept = (uint64_t)st.st_size + (BIOS_LEN / PG - 1) * 8;
    for (uint64_t at = 0; at < size; at += SECTION) {
        uint64_t from = at / PG, to = MIN(at + SECTION, size) / PG, zeros = 0;
        for (uint64_t i = from; i < to; i++) {
            zeros += is_zero(i, zero_percent);
        }
        kept -= (to - from) * (8 + PG) - zeros * (PG - 1) + 7;
    }
    for (int r = 0; r < reps; r++) {
        via_file[r] = split_once(stream, dir, size, zero_percent, kept, VIA_FILE);
        via_pipe[r] = split_once(stream, dir, size, zero_percent, kept, VIA_PIPE);
        ms[r] = split_once(stream, dir, size, zero_percent, kept, FROM_FILE);
        printf("rep %d: %.1f ms; copied to a file, then split: %.1f ms; split from a pipe as "
               "it is written: %.1f ms\n", r + 1, ms[r], via_file[r], via_pipe[r]);
    }
    printf("qemu-save's path, medians: copied to a file, then split (before): %.1f ms; split "
           "from a pipe (now): %.1f ms; %.2fx\n", median(via_file, reps), median(via_pipe, reps),
           median(via_file, reps) / median(via_pipe, reps));
    printf("split %s (%" G_GUINT64_FORMAT " bytes of stream, %" G_GUINT64_FORMAT " records, "
           "%u %% zero), %d reps, median: %.1f ms, %.0f ms per GiB of stream, %.2f us per "
           "record\n", size_s, (uint64_t)st.st_size, records, zero_percent, reps,
           median(ms, reps), median(ms, reps) * (double)(1ull << 30) / (double)st.st_size,
           median(ms, reps) * 1e3 / (double)records);
    if (!stream_arg) {
        unlink(stream);
    }
    return 0;
}
