/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * sl_qemu_split_stream() (migration/format/qemu-split.c) on hand-built
 * plain precopy streams, as QEMU 7.2 and later write them for a stopped
 * guest: the pages of the chosen blocks land in their files (zero pages
 * as holes, a page sent again as it was last), every other byte of the
 * stream comes out as QEMU loads it, kept records naming their block; and
 * each kind of stream the splitter cannot walk is refused by name.  Every
 * case runs twice: the stream read from a file, and from a pipe a thread
 * writes it into (as qemu-save splits QEMU's migration while it runs).
 */
#include <signal.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "testutil.h"
#include "migration/format/format.h"
#include "qemu-stream.h"

#define PG 4096u
#define F_ZERO 0x02u
#define F_PAGE 0x08u
#define F_EOS 0x10u
#define F_CONT 0x20u
#define F_COMPRESS 0x100u
#define LAZY_LEN (8u * PG)
#define KEPT_LEN (2u * PG)
#define DEVICE "\x04\0\0\0\x07\x05" "dev:0" "device state bytes"

static void be32(GByteArray *a, uint32_t v)
{
    uint8_t b[4] = { v >> 24, v >> 16, v >> 8, v };

    g_byte_array_append(a, b, 4);
}

static void be64(GByteArray *a, uint64_t v)
{
    be32(a, (uint32_t)(v >> 32));
    be32(a, (uint32_t)v);
}

static void str8(GByteArray *a, const char *s)
{
    uint8_t n = (uint8_t)strlen(s);

    g_byte_array_append(a, &n, 1);
    g_byte_array_append(a, (const uint8_t *)s, n);
}

static void u8(GByteArray *a, uint8_t v)
{
    g_byte_array_append(a, &v, 1);
}

/* A page of block @name's page @i: its bytes say which. */
static void fill_page(uint8_t *p, const char *name, uint64_t i, unsigned gen)
{
    for (unsigned k = 0; k < PG; k++) {
        p[k] = (uint8_t)(name[0] + i * 7 + k + gen * 3);
    }
}

/* A record: @flags|offset, the block's name unless CONTINUE, the payload. */
static void record(GByteArray *a, const char *name, uint64_t page, unsigned flags, unsigned gen)
{
    uint8_t p[PG];

    be64(a, page * PG | flags);
    if (!(flags & F_CONT)) {
        str8(a, name);
    }
    if (flags & F_ZERO) {
        u8(a, 0);
    } else if (flags & F_PAGE) {
        fill_page(p, name, page, gen);
        g_byte_array_append(a, p, PG);
    }
}

/* "QEVM" 3, a configuration with the capability @cap (NULL: none). */
static void header(GByteArray *a, const char *cap)
{
    be32(a, 0x5145564d);
    be32(a, 3);
    u8(a, 0x07);
    be32(a, 9);
    g_byte_array_append(a, (const uint8_t *)"pc-i440fx", 9);
    if (cap) {
        u8(a, 0x05);
        str8(a, "configuration/capabilities");
        be32(a, 1);
        be32(a, 1);
        str8(a, cap);
    }
}

/* The start of 'ram' (id 2) with blocks pc.ram (LAZY_LEN) and pc.bios (KEPT_LEN). */
static void ram_start(GByteArray *a, bool gpa)
{
    u8(a, 0x01);
    be32(a, 2);
    str8(a, "ram");
    be32(a, 0);
    be32(a, 4);
    be64(a, (LAZY_LEN + KEPT_LEN) | 0x04);
    str8(a, "pc.ram");
    be64(a, LAZY_LEN);
    if (gpa) {
        be64(a, 0);
    }
    str8(a, "pc.bios");
    be64(a, KEPT_LEN);
    if (gpa) {
        be64(a, 0xfffc0000);
    }
}

static void section(GByteArray *a, uint8_t type, uint32_t id)
{
    u8(a, type);
    be32(a, id);
}

static void end_records(GByteArray *a, uint32_t id)
{
    be64(a, F_EOS);
    u8(a, 0x7e);
    be32(a, id);
}

/*
 * A whole stream and, in @want, what the splitter must leave of it: pages
 * of pc.ram in both iterations (page 1 first data then zero, page 2 zero
 * then data, page 3 sent twice), pc.bios kept, records chained by CONTINUE
 * across both blocks, a command (QEMU 10's SWITCHOVER_START comes before
 * the last RAM section), then the device state.
 */
static GByteArray *good_stream(GByteArray *want, bool gpa, bool bare)
{
    GByteArray *a = g_byte_array_new();
    GByteArray *w = want;

    if (bare) { /* no configuration section: an old machine type's stream */
        be32(a, 0x5145564d);
        be32(a, 3);
        be32(w, 0x5145564d);
        be32(w, 3);
    } else {
        header(a, gpa ? "x-ignore-shared" : NULL);
        header(w, gpa ? "x-ignore-shared" : NULL);
    }
    ram_start(a, gpa);
    ram_start(w, gpa);
    end_records(a, 2);
    end_records(w, 2);
    section(a, 0x02, 2);
    section(w, 0x02, 2);
    record(a, "pc.ram", 0, F_PAGE, 0);
    record(a, "pc.ram", 1, F_PAGE | F_CONT, 0);
    record(a, "pc.bios", 0, F_PAGE, 0);
    record(w, "pc.bios", 0, F_PAGE, 0);
    record(a, "pc.bios", 1, F_ZERO | F_CONT, 0);
    record(w, "pc.bios", 1, F_ZERO, 0);
    record(a, "pc.ram", 2, F_ZERO, 0);
    record(a, "pc.ram", 3, F_PAGE | F_CONT, 0);
    end_records(a, 2);
    end_records(w, 2);
    g_byte_array_append(a, (const uint8_t *)"\x08\x00\x0b\x00\x02hi", 7); /* a command */
    g_byte_array_append(w, (const uint8_t *)"\x08\x00\x0b\x00\x02hi", 7);
    section(a, 0x03, 2);
    section(w, 0x03, 2);
    record(a, "pc.ram", 1, F_ZERO, 0);       /* data, now zero: a hole again */
    record(a, "pc.ram", 2, F_PAGE | F_CONT, 1);
    record(a, "pc.ram", 3, F_PAGE | F_CONT, 1);
    record(a, "pc.bios", 1, F_PAGE, 1);
    record(w, "pc.bios", 1, F_PAGE, 1);
    end_records(a, 2);
    end_records(w, 2);
    g_byte_array_append(a, (const uint8_t *)DEVICE, sizeof(DEVICE) - 1);
    g_byte_array_append(w, (const uint8_t *)DEVICE, sizeof(DEVICE) - 1);
    return a;
}

/* Where the splitter reads the stream from: a case's prestate. */
typedef enum { FROM_FILE, FROM_PIPE } input_kind;
static const input_kind from_file = FROM_FILE, from_pipe = FROM_PIPE;

typedef struct {
    char *dir;
    int in, out, ram;
    GThread *writer;        /* FROM_PIPE: writing the stream into @in's pipe */
} files;

typedef struct {
    int fd;
    GByteArray *data;
    bool lockstep;          /* each piece once the reader took the one before */
} pipe_writer;

/* Writes the stream into its pipe (of one page) until done or the reader
 * left, mostly in pieces of 1-97 bytes, now and then a big one. */
static gpointer write_pipe(gpointer opaque)
{
    pipe_writer *w = opaque;

    qs_feed_pipe(w->fd, w->data->data, w->data->len, 0, 70001, w->lockstep);
    close(w->fd);
    g_byte_array_unref(w->data);
    g_free(w);
    return NULL;
}

static files files_of_lockstep(const GByteArray *stream, input_kind from, bool lockstep)
{
    files f = { .dir = sl_test_tmpdir() };
    g_autofree char *in = g_build_filename(f.dir, "stream", NULL);
    g_autofree char *out = g_build_filename(f.dir, "device", NULL);
    g_autofree char *ram = g_build_filename(f.dir, "ram", NULL);

    if (from == FROM_PIPE) {
        int p[2];
        pipe_writer *w = g_new(pipe_writer, 1);
        assert_int_equal(pipe(p), 0);
        /* One page of pipe: the reader's reads end at ever other places. */
        assert_true(fcntl(p[1], F_SETPIPE_SZ, 4096) >= 4096);
        *w = (pipe_writer){ p[1], g_byte_array_ref((GByteArray *)stream), lockstep };
        f.in = p[0];
        f.writer = g_thread_new("stream", write_pipe, w);
    } else {
        assert_true(g_file_set_contents(in, (const char *)stream->data, stream->len, NULL));
        f.in = open(in, O_RDONLY);
    }
    f.out = open(out, O_RDWR | O_CREAT, 0600);
    f.ram = open(ram, O_RDWR | O_CREAT, 0600);
    assert_true(f.in >= 0 && f.out >= 0 && f.ram >= 0 && ftruncate(f.ram, LAZY_LEN) == 0);
    return f;
}

/* The files of a case, the stream read from a file or a pipe written in
 * lock-step (each read of the splitter gets one piece: the pieces' ends
 * fall everywhere in headers and records). */
static files files_of(const GByteArray *stream, input_kind from)
{
    return files_of_lockstep(stream, from, true);
}

static void files_free(files *f)
{
    close(f->in); /* a writer still writing gets EPIPE */
    if (f->writer) {
        g_thread_join(f->writer);
    }
    close(f->out);
    close(f->ram);
    sl_test_rmdir(f->dir);
}

/* The split of @f, the caller saying x-ignore-shared was set if @told. */
static bool split_told(files *f, uint64_t size, bool told, GError **err)
{
    const char *const lazy[] = { "pc.ram", NULL };

    return sl_qemu_split_stream(f->in, f->out, lazy, &f->ram, &size, told, err);
}

static bool split(files *f, uint64_t size, GError **err)
{
    return split_told(f, size, false, err);
}

/* Whether page @i of the lazy file is allocated (not a hole). */
static bool allocated(int fd, uint64_t i)
{
    off_t d = lseek(fd, (off_t)(i * PG), SEEK_DATA);

    return d >= 0 && (uint64_t)d < (i + 1) * PG;
}

/* What the split left (@f's output) is @want, byte for byte. */
static void check_device_state(const files *f, const GByteArray *want)
{
    g_autofree uint8_t *out = g_malloc(want->len);
    struct stat st;

    assert_int_equal(fstat(f->out, &st), 0);
    assert_int_equal(st.st_size, want->len);
    assert_int_equal(pread(f->out, out, want->len, 0), want->len);
    assert_memory_equal(out, want->data, want->len);
}

/* The split of good_stream(@gpa, @bare) read from @from, told of
 * x-ignore-shared when the stream has no configuration to say it. */
static void check_split(bool gpa, bool bare, input_kind from)
{
    g_autoptr(GByteArray) want = g_byte_array_new();
    g_autoptr(GByteArray) in = good_stream(want, gpa, bare);
    g_autoptr(GError) err = NULL;
    files f = files_of(in, from);
    uint8_t got[PG], exp[PG];

    if (!split_told(&f, LAZY_LEN, bare && gpa, &err)) {
        fail_msg("split: %s", err->message);
    }
    check_device_state(&f, want);
    for (uint64_t i = 0; i < LAZY_LEN / PG; i++) {
        unsigned gen = i >= 2 ? 1 : 0;
        bool data = i == 0 || i == 2 || i == 3;
        assert_int_equal(allocated(f.ram, i), data);
        assert_int_equal(pread(f.ram, got, PG, (off_t)(i * PG)), PG);
        if (data) {
            fill_page(exp, "pc.ram", i, gen);
        } else {
            memset(exp, 0, PG);
        }
        assert_memory_equal(got, exp, PG);
    }
    files_free(&f);
}

static void test_lazy_pages_go_to_their_file_and_the_rest_loads_as_it_was(void **state)
{
    check_split(false, false, *(const input_kind *)*state);
}

static void test_x_ignore_shared_block_addresses_are_walked_and_kept(void **state)
{
    check_split(true, false, *(const input_kind *)*state);
}

/*
 * A stream with no configuration section (machine types such as
 * pc-i440fx-2.3 send none) cannot say that x-ignore-shared was on, yet its
 * block list then holds each block's address: told so by the caller
 * (qemu-save sets it), the splitter walks it; not told, it refuses the
 * stream rather than take an address for the next block's name (found by
 * review: qemu-save of such a guest failed after the stop).
 */
static void test_a_stream_without_configuration_splits_when_told_of_x_ignore_shared(void **state)
{
    g_autoptr(GByteArray) want = g_byte_array_new();
    g_autoptr(GByteArray) in = good_stream(want, true, true);
    g_autoptr(GError) err = NULL;
    files f = files_of(in, *(const input_kind *)*state);

    check_split(true, true, *(const input_kind *)*state);
    assert_false(split(&f, LAZY_LEN, &err));
    files_free(&f);
}

/* Streams the splitter must refuse, and a word of each reason. */
typedef enum {
    BAD_COMPRESSED, BAD_BEYOND, BAD_UNKNOWN_BLOCK, BAD_FIRST_CONTINUES, BAD_OTHER_ITERATIVE,
    BAD_OTHER_ID, BAD_TRUNCATED, BAD_POSTCOPY, BAD_NO_SUCH_LAZY, BAD_EOS_FLAGS, BAD_FOOTER,
    BAD_PACKAGED, BAD_SIZE, BAD_EARLY_DEVICE,
} bad_kind;

static const struct {
    bad_kind kind;
    const char *want;
} bad_cases[] = {
    { BAD_COMPRESSED, "record flags 0x100" },
    { BAD_BEYOND, "is beyond its 32768 bytes" },
    { BAD_UNKNOWN_BLOCK, "block 'vga.vram', which the block list does not have" },
    { BAD_FIRST_CONTINUES, "the first page record continues no block" },
    { BAD_OTHER_ITERATIVE, "iterative section 'block' beside 'ram'" },
    { BAD_OTHER_ID, "section 9 continues no section" },
    { BAD_TRUNCATED, "RAM page" },
    { BAD_POSTCOPY, "postcopy-ram" },
    { BAD_NO_SUCH_LAZY, "RAM block 'pc.ram' is not in the stream" },
    { BAD_EOS_FLAGS, "end-of-section record 0x18" },
    { BAD_FOOTER, "footer of section 7 after section 2" },
    { BAD_PACKAGED, "a packaged stream (postcopy)" },
    { BAD_SIZE, "RAM block 'pc.ram' has 32768 bytes in the stream, not the 36864 of QEMU" },
    { BAD_EARLY_DEVICE, "section type 4 ('virtio-mem-device-early') before the end of the RAM" },
};

/* The good stream's start, then what @kind puts in the RAM section's end. */
static GByteArray *bad_stream(bad_kind kind)
{
    GByteArray *a = g_byte_array_new();

    header(a, kind == BAD_POSTCOPY ? "postcopy-ram" : NULL);
    if (kind == BAD_NO_SUCH_LAZY) {
        u8(a, 0x01);
        be32(a, 2);
        str8(a, "ram");
        be32(a, 0);
        be32(a, 4);
        be64(a, KEPT_LEN | 0x04);
        str8(a, "pc.bios");
        be64(a, KEPT_LEN);
    } else {
        ram_start(a, false);
    }
    end_records(a, 2);
    section(a, 0x03, kind == BAD_OTHER_ID ? 9 : 2); /* the RAM section's end */
    switch (kind) {
    case BAD_COMPRESSED: record(a, "pc.ram", 0, F_COMPRESS, 0); break;
    case BAD_BEYOND: record(a, "pc.ram", LAZY_LEN / PG, F_PAGE, 0); break;
    case BAD_UNKNOWN_BLOCK: record(a, "vga.vram", 0, F_PAGE, 0); break;
    case BAD_FIRST_CONTINUES: record(a, "pc.ram", 0, F_PAGE | F_CONT, 0); break;
    case BAD_TRUNCATED: record(a, "pc.ram", 0, F_PAGE, 0); g_byte_array_set_size(a, a->len - 9);
        return a;
    case BAD_EOS_FLAGS: be64(a, F_EOS | F_PAGE); return a;
    case BAD_FOOTER: be64(a, F_EOS); u8(a, 0x7e); be32(a, 7); return a;
    case BAD_EARLY_DEVICE: /* a device's state between the RAM section's start and pages */
        g_byte_array_set_size(a, a->len - 5);
        u8(a, 0x04);
        be32(a, 3);
        str8(a, "virtio-mem-device-early");
        be32(a, 0);
        be32(a, 1);
        section(a, 0x02, 2);
        record(a, "pc.ram", 0, F_PAGE, 0);
        break;
    case BAD_PACKAGED:
        g_byte_array_set_size(a, a->len - 5);
        g_byte_array_append(a, (const uint8_t *)"\x08\x00\x08\x00\x00", 5);
        break;
    case BAD_OTHER_ITERATIVE:
        g_byte_array_set_size(a, a->len - 5);
        u8(a, 0x01);
        be32(a, 3);
        str8(a, "block");
        be32(a, 0);
        be32(a, 1);
        break;
    default: break;
    }
    end_records(a, 2);
    g_byte_array_append(a, (const uint8_t *)DEVICE, sizeof(DEVICE) - 1);
    return a;
}

static void test_streams_the_splitter_cannot_walk_are_refused_by_name(void **state)
{
    for (size_t i = 0; i < G_N_ELEMENTS(bad_cases); i++) {
        g_autoptr(GByteArray) in = bad_stream(bad_cases[i].kind);
        g_autoptr(GError) err = NULL;
        files f = files_of(in, *(const input_kind *)*state);

        if (split(&f, bad_cases[i].kind == BAD_SIZE ? LAZY_LEN + PG : LAZY_LEN, &err) ||
            !strstr(err->message, bad_cases[i].want)) {
            fail_msg("case %zu: wanted an error with '%s', got %s", i, bad_cases[i].want,
                     err ? err->message : "success");
        }
        files_free(&f);
    }
}

/*
 * A stream of several of the reader's windows (1 MiB): 48 sections of up
 * to 40 records of both blocks, pc.ram's pages mostly one after another
 * (runs written together) and often sent again or as ZERO, CONTINUE where
 * the block is the last one's, commands now and then; records fall across
 * every window's end.  @want gets what the splitter must leave, @gen the
 * last data generation of each pc.ram page (-1: a hole).
 */
static GByteArray *long_stream(GByteArray *want, int gen[LAZY_LEN / PG], uint64_t *records_end)
{
    GByteArray *a = g_byte_array_new();
    GRand *r = g_rand_new_with_seed(20261206);
    const char *last = NULL;
    uint64_t page = 0;

    for (unsigned i = 0; i < LAZY_LEN / PG; i++) {
        gen[i] = -1;
    }
    header(a, NULL);
    header(want, NULL);
    ram_start(a, false);
    ram_start(want, false);
    end_records(a, 2);
    end_records(want, 2);
    for (unsigned sec = 0; sec < 48; sec++) {
        unsigned n = (unsigned)g_rand_int_range(r, 1, 41);
        section(a, sec == 47 ? 0x03 : 0x02, 2);
        section(want, sec == 47 ? 0x03 : 0x02, 2);
        for (unsigned k = 0; k < n; k++) {
            bool bios = g_rand_int_range(r, 0, 5) == 0;
            const char *name = bios ? "pc.bios" : "pc.ram";
            unsigned flags = g_rand_int_range(r, 0, 4) ? F_PAGE : F_ZERO, g = sec * 64 + k;
            uint64_t at = bios ? (uint64_t)g_rand_int_range(r, 0, KEPT_LEN / PG)
                        : (page = g_rand_int_range(r, 0, 4) ? (page + 1) % (LAZY_LEN / PG)
                                                             : (uint64_t)g_rand_int_range(r, 0, 8));
            record(a, name, at, flags | (last == name && g_rand_boolean(r) ? F_CONT : 0), g);
            if (bios) {
                record(want, name, at, flags, g);
            } else {
                gen[at] = flags == F_PAGE ? (int)g : -1;
            }
            last = name;
        }
        end_records(a, 2);
        end_records(want, 2);
        if (sec % 9 == 4) {
            g_byte_array_append(a, (const uint8_t *)"\x08\x00\x0b\x00\x02hi", 7);
            g_byte_array_append(want, (const uint8_t *)"\x08\x00\x0b\x00\x02hi", 7);
        }
    }
    *records_end = a->len;
    g_byte_array_append(a, (const uint8_t *)DEVICE, sizeof(DEVICE) - 1);
    g_byte_array_append(want, (const uint8_t *)DEVICE, sizeof(DEVICE) - 1);
    g_rand_free(r);
    return a;
}

static void test_streams_longer_than_the_read_window_split_the_same(void **state)
{
    g_autoptr(GByteArray) want = g_byte_array_new();
    g_autoptr(GError) err = NULL;
    int gen[LAZY_LEN / PG];
    uint64_t end;
    g_autoptr(GByteArray) in = long_stream(want, gen, &end);
    files f = files_of(in, *(const input_kind *)*state);
    uint8_t got[PG], exp[PG];

    assert_true(in->len > (2u << 20));
    assert_true(split(&f, LAZY_LEN, &err));
    check_device_state(&f, want);
    for (uint64_t i = 0; i < LAZY_LEN / PG; i++) {
        assert_int_equal(allocated(f.ram, i), gen[i] >= 0);
        assert_int_equal(pread(f.ram, got, PG, (off_t)(i * PG)), PG);
        if (gen[i] >= 0) {
            fill_page(exp, "pc.ram", i, (unsigned)gen[i]);
        } else {
            memset(exp, 0, PG);
        }
        assert_memory_equal(got, exp, PG);
    }
    files_free(&f);
}

/* Cut anywhere before the device state, the long stream is refused as a
 * short file (or stream), naming an offset the input does not reach past. */
static void test_a_long_stream_cut_short_anywhere_is_refused(void **state)
{
    g_autoptr(GByteArray) want = g_byte_array_new();
    int gen[LAZY_LEN / PG];
    uint64_t end;
    g_autoptr(GByteArray) in = long_stream(want, gen, &end);
    input_kind from = *(const input_kind *)*state;
    const char *ends = from == FROM_PIPE ? "the stream ends early" : "file ends early";

    for (uint64_t cut = 0; cut < end; cut += cut < 64 ? 1 : 16411) {
        g_autoptr(GByteArray) part = g_byte_array_new();
        g_autoptr(GError) err = NULL;
        const char *at;
        files f;

        g_byte_array_append(part, in->data, (guint)cut);
        f = files_of_lockstep(part, from, false); /* 180 streams: lock-step would take minutes */
        assert_false(split(&f, LAZY_LEN, &err));
        at = strstr(err->message, " at offset ");
        if (err->code != SL_ERROR_FORMAT || !strstr(err->message, ends) || !at ||
            g_ascii_strtoull(at + 11, NULL, 10) > cut) {
            fail_msg("cut at %" G_GUINT64_FORMAT ": %s", cut, err->message);
        }
        files_free(&f);
    }
}

/*
 * A plain stream from the generator the mapped-ram tests and the fuzz
 * seeds use (qemu-stream.c, qs_desc.plain), with and without
 * x-ignore-shared: pc.ram's stored pages land in its file, its other
 * pages stay holes, and the device state after the RAM is left as it is.
 */
static void test_a_generated_plain_stream_splits_into_its_pages(void **state)
{
    static const char *const none[] = { NULL }, *const shared[] = { "x-ignore-shared", NULL };
    const qs_block blocks[] = {
        { .idstr = "pc.bios", .length = 3 * PG, .gpa = 0xfffd0000, .stored_every = 2, .seed = 1 },
        { .idstr = "pc.ram", .length = LAZY_LEN, .stored_every = 3, .seed = 2 },
    };
    input_kind from = *(const input_kind *)*state;

    for (int gpa = 0; gpa < 2; gpa++) {
        qs_desc d = { .machine = "pc", .caps = gpa ? shared : none, .section_id = 5,
                      .blocks = blocks, .nblocks = 2, .devstate_len = 40, .plain = true };
        char *dir = sl_test_tmpdir(); /* sl_test_rmdir() frees it */
        g_autofree char *path = g_build_filename(dir, "s", NULL);
        g_autoptr(GByteArray) in = g_byte_array_new();
        g_autoptr(GError) err = NULL;
        g_autofree char *data = NULL;
        uint8_t got[PG], want[PG];
        qs_layout l;
        gsize len;
        files f;

        assert_true(qs_write(&d, path, &l, &err));
        assert_true(g_file_get_contents(path, &data, &len, NULL));
        g_byte_array_append(in, (const uint8_t *)data, (guint)len);
        f = files_of(in, from);
        if (!split(&f, LAZY_LEN, &err)) {
            fail_msg("x-ignore-shared %d: %s", gpa, err->message);
        }
        for (uint64_t i = 0; i < LAZY_LEN / PG; i++) {
            assert_int_equal(allocated(f.ram, i), qs_page_stored(&d, 1, i));
            assert_int_equal(pread(f.ram, got, PG, (off_t)(i * PG)), PG);
            qs_page(&d, 1, i, want);
            assert_memory_equal(got, want, PG);
        }
        assert_int_equal(l.blocks[1].stored, 3);
        qs_layout_clear(&l);
        files_free(&f);
        sl_test_rmdir(dir);
    }
}

int main(void)
{
#define BOTH(fn) \
    { "file/" #fn, fn, NULL, NULL, (void *)&from_file }, \
    { "pipe/" #fn, fn, NULL, NULL, (void *)&from_pipe }
    const struct CMUnitTest tests[] = {
        BOTH(test_lazy_pages_go_to_their_file_and_the_rest_loads_as_it_was),
        BOTH(test_x_ignore_shared_block_addresses_are_walked_and_kept),
        BOTH(test_a_stream_without_configuration_splits_when_told_of_x_ignore_shared),
        BOTH(test_streams_the_splitter_cannot_walk_are_refused_by_name),
        BOTH(test_streams_longer_than_the_read_window_split_the_same),
        BOTH(test_a_long_stream_cut_short_anywhere_is_refused),
        BOTH(test_a_generated_plain_stream_splits_into_its_pages),
    };

    signal(SIGPIPE, SIG_IGN); /* a refused stream's writer gets EPIPE instead */
    if (g_getenv("SL_TEST_FILTER")) {
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    return cmocka_run_group_tests_name("qemu-split", tests, NULL, NULL);
}
