/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the reader of QEMU's own snapshot files (the mapped-ram
 * migration stream, migration/format/qemu.c) and of the device-stream copy
 * made from them (sl_qemu_write_device_stream).  Every file comes from the
 * generator in qemu-stream.c, and every check is made against the
 * generator's description and the layout it recorded, never against what
 * the reader says: blocks, lengths, GPAs, stored pages and their bytes, the
 * device-state tail.  Damaged files are made by rewriting one named field
 * (a table of cases, each naming the words the error must contain), by
 * cutting the file at every field boundary, and by seeded runs of random
 * byte flips and insertions, after which a file the reader still accepts
 * must read exactly what its bytes hold where the generator put them.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "testutil.h"
#include "qemu-stream.h"
#include "migration/format/format.h"

#define PAGE ((uint64_t)QS_PAGE)
#define MiB (1024ull * 1024)
#define JSON "{\"page_size\": 4096, \"devices\": [{\"name\": \"timer\"}]}"

/* ------------------------------------------------------------------ */
/* Descriptions                                                        */
/* ------------------------------------------------------------------ */

static const char *const caps_plain[] = { "mapped-ram", NULL };
static const char *const caps_shared[] = { "x-ignore-shared", "mapped-ram", NULL };

/*
 * pc.ram fills two whole bitmap words; the ACPI block has 10 pages, so its
 * last word has bits past the end; pc.bios has no zero page.
 */
static const qs_block plain_blocks[] = {
    { .idstr = "pc.ram", .length = 128 * PAGE, .zero_every = 3, .seed = 1 },
    { .idstr = "/rom@etc/acpi/tables", .length = 10 * PAGE, .zero_every = 4, .seed = 2 },
    { .idstr = "pc.bios", .length = 16 * PAGE, .seed = 3 },
};

static const qs_desc plain_desc = {
    .machine = "pc-i440fx-10.0", .caps = caps_plain, .target_page_bits = true, .uuid = true,
    .section_id = 2, .blocks = plain_blocks, .nblocks = 3, .devstate_len = 300, .json = JSON,
};

/* x-ignore-shared: every block records its GPA; two were left in shared memory. */
static const qs_block shared_blocks[] = {
    { .idstr = "pc.rom", .length = 8 * PAGE, .gpa = 0xc0000, .zero_every = 2, .seed = 4 },
    { .idstr = "pc.ram", .length = 64 * PAGE, .gpa = 0, .left_out = true },
    { .idstr = "pc.bios", .length = 16 * PAGE, .gpa = 0xfffc0000, .zero_every = 5, .seed = 5 },
    { .idstr = "vga.vram", .length = 32 * PAGE, .gpa = 0xfd000000, .left_out = true },
};

static const qs_desc shared_desc = {
    .machine = "pc-q35-10.0", .caps = caps_shared, .section_id = 1,
    .blocks = shared_blocks, .nblocks = 4, .devstate_len = 100, .json = JSON,
};

/* The page-size field of postcopy before pc.ram's header; no footer, no JSON. */
static const qs_block postcopy_blocks[] = {
    { .idstr = "pc.ram", .length = 64 * PAGE, .postcopy_page_size = 2 * MiB, .zero_every = 3,
      .seed = 6 },
    { .idstr = "pc.rom", .length = 8 * PAGE, .seed = 7 },
};

static const qs_desc postcopy_desc = {
    .machine = "pc-q35-10.0", .caps = caps_plain, .section_id = 3, .no_footer = true,
    .blocks = postcopy_blocks, .nblocks = 2, .devstate_len = 50,
};

/* ------------------------------------------------------------------ */
/* Fixtures: a generated stream on disk, its bytes and its layout      */
/* ------------------------------------------------------------------ */

typedef struct {
    const qs_desc *d;
    qs_layout l;
    char *dir;
    char *path;      /* the generated stream */
    char *copy;      /* damaged copies and device streams go here */
    uint8_t *buf;    /* the generated stream's bytes */
    gsize len;
} fixture;

static fixture *fixture_new(const qs_desc *d)
{
    fixture *fx = g_new0(fixture, 1);
    g_autoptr(GError) err = NULL;

    fx->d = d;
    fx->dir = sl_test_tmpdir();
    fx->path = g_build_filename(fx->dir, "qemu.mig", NULL);
    fx->copy = g_build_filename(fx->dir, "copy.mig", NULL);
    if (!qs_write(d, fx->path, &fx->l, &err)) {
        fail_msg("generating the stream: %s", err->message);
    }
    assert_true(g_file_get_contents(fx->path, (char **)&fx->buf, &fx->len, &err));
    assert_int_equal(fx->len, fx->l.file_size);
    return fx;
}

static void fixture_free(fixture *fx)
{
    qs_layout_clear(&fx->l);
    g_free(fx->buf);
    g_free(fx->path);
    g_free(fx->copy);
    sl_test_rmdir(fx->dir);
    g_free(fx);
}

static int setup_plain(void **state)
{
    *state = fixture_new(&plain_desc);
    return 0;
}

static int setup_shared(void **state)
{
    *state = fixture_new(&shared_desc);
    return 0;
}

static int setup_postcopy(void **state)
{
    *state = fixture_new(&postcopy_desc);
    return 0;
}

static int teardown_fixture(void **state)
{
    fixture_free(*state);
    return 0;
}

/* The field @name of the fixture's layout (the test fails if there is none). */
static const qs_field *field(const fixture *fx, const char *name)
{
    const qs_field *f = qs_find(&fx->l, name);

    if (!f) {
        fail_msg("the generator wrote no field '%s'", name);
    }
    return f;
}

static bool in_field(const qs_field *f, uint64_t off)
{
    return f && off >= f->offset && off - f->offset < f->size;
}

/* Whether @off lies in the field called @name (false if there is none). */
static bool in_named(const fixture *fx, const char *name, uint64_t off)
{
    return in_field(qs_find(&fx->l, name), off);
}

/* ------------------------------------------------------------------ */
/* Files                                                               */
/* ------------------------------------------------------------------ */

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

/* Writes @buf (@len bytes) to a new file @path, leaving its zero pages as holes. */
static void write_sparse(const char *path, const uint8_t *buf, uint64_t len)
{
    int fd;

    /* A new inode each time: truncating the old one makes some file systems flush. */
    assert_true(unlink(path) == 0 || errno == ENOENT);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    for (uint64_t off = 0; off < len; off += PAGE) {
        size_t n = (size_t)MIN(PAGE, len - off);
        if (!all_zero(buf + off, n)) {
            assert_int_equal(sl_pwrite_full(fd, buf + off, n, off), 0);
        }
    }
    close(fd);
}

static uint8_t *read_file(const char *path, gsize *len)
{
    g_autoptr(GError) err = NULL;
    char *data = NULL;

    if (!g_file_get_contents(path, &data, len, &err)) {
        fail_msg("reading %s: %s", path, err->message);
    }
    return (uint8_t *)data;
}

static char *file_sha256(const char *path)
{
    gsize len;
    g_autofree uint8_t *data = read_file(path, &len);

    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, data, len);
}

/* ------------------------------------------------------------------ */
/* What a generated stream must read as                                */
/* ------------------------------------------------------------------ */

static bool desc_has_cap(const qs_desc *d, const char *name)
{
    for (unsigned i = 0; d->caps && d->caps[i]; i++) {
        if (!strcmp(d->caps[i], name)) {
            return true;
        }
    }
    return false;
}

static uint64_t desc_pages(const qs_desc *d, unsigned b)
{
    return d->blocks[b].length / PAGE;
}

/* What the file holds for page @i of block @b: its contents if stored, else zeros. */
static void file_page(const qs_desc *d, unsigned b, uint64_t i, uint8_t *out)
{
    if (qs_page_stored(d, b, i)) {
        qs_page(d, b, i, out);
    } else {
        memset(out, 0, PAGE);
    }
}

/* Reads pages [first, first + n) of block @b unverified and compares them. */
static void check_window(sl_snapshot *s, const qs_desc *d, unsigned b, uint64_t first,
                         uint64_t n)
{
    g_autofree uint8_t *buf = g_malloc(n * PAGE);
    uint8_t want[QS_PAGE];

    if (d->blocks[b].left_out) { /* its pages are in the guest's memory file, not here */
        assert_int_equal(sl_snapshot_read_pages(s, b, first, n, buf, false), -EREMOTE);
        return;
    }
    assert_int_equal(sl_snapshot_read_pages(s, b, first, n, buf, false), 0);
    for (uint64_t i = 0; i < n; i++) {
        file_page(d, b, first + i, want);
        if (memcmp(buf + i * PAGE, want, PAGE)) {
            fail_msg("block %u page %" G_GUINT64_FORMAT " reads wrong", b, first + i);
        }
    }
}

/* All of block @b: at once, page by page, and in windows of 7 that straddle words. */
static void check_block_data(sl_snapshot *s, const qs_desc *d, unsigned b)
{
    uint64_t npages = desc_pages(d, b);

    check_window(s, d, b, 0, npages);
    for (uint64_t i = 0; i < npages; i++) {
        check_window(s, d, b, i, 1);
    }
    for (uint64_t i = 0; i + 7 <= npages; i += 5) {
        check_window(s, d, b, i, 7);
    }
}

static void check_block_bits(sl_snapshot *s, const qs_desc *d, unsigned b)
{
    uint64_t npages = desc_pages(d, b);

    for (uint64_t i = 0; i < npages; i++) {
        if (sl_snapshot_page_present(s, b, i) != qs_page_stored(d, b, i)) {
            fail_msg("block %u page %" G_GUINT64_FORMAT ": present %d, generated %d", b, i,
                     sl_snapshot_page_present(s, b, i), qs_page_stored(d, b, i));
        }
    }
    assert_false(sl_snapshot_page_present(s, b, npages));
}

static uint64_t stored_pages(const qs_desc *d, unsigned b)
{
    uint64_t n = 0;

    for (uint64_t i = 0; i < desc_pages(d, b); i++) {
        n += qs_page_stored(d, b, i);
    }
    return n;
}

/* Block @b's description: name, sizes, offsets, GPA, whether its pages are here. */
static void check_block_info(sl_snapshot *s, const qs_desc *d, const qs_layout *l, unsigned b)
{
    const qs_block *want = &d->blocks[b];
    sl_block_info bi;

    assert_true(sl_snapshot_block(s, b, &bi));
    assert_string_equal(bi.name, want->idstr);
    assert_int_equal(bi.length, want->length);
    assert_int_equal(bi.page_size, PAGE);
    assert_int_equal(bi.pages, desc_pages(d, b));
    assert_int_equal(bi.numa_node, -1);
    assert_int_equal(bi.present_pages, stored_pages(d, b));
    assert_int_equal(bi.present_pages, l->blocks[b].stored);
    assert_int_equal(bi.pages_offset, l->blocks[b].pages);
    assert_int_equal(sl_snapshot_find_block(s, want->idstr), (int)b);
    assert_int_equal(sl_snapshot_block_in_file(s, b), !want->left_out);
    assert_int_equal(s->blocks[b].has_gpa, desc_has_cap(d, "x-ignore-shared"));
    if (desc_has_cap(d, "x-ignore-shared")) {
        assert_int_equal(s->blocks[b].gpa, want->gpa);
    }
}

/* What only a QEMU stream has: configuration, section id, the device-state tail. */
static void check_stream_info(sl_snapshot *s, const qs_desc *d, const qs_layout *l)
{
    const sl_qemu_stream *q = s->qemu;
    unsigned ncaps = 0;

    assert_non_null(q);
    assert_string_equal(q->machine, d->machine);
    while (d->caps[ncaps]) {
        assert_true(ncaps < q->caps->len);
        assert_string_equal(g_ptr_array_index(q->caps, ncaps), d->caps[ncaps]);
        ncaps++;
    }
    assert_int_equal(q->caps->len, ncaps);
    assert_int_equal(q->ignore_shared, desc_has_cap(d, "x-ignore-shared"));
    assert_int_equal(q->ram_section_id, d->section_id);
    assert_int_equal(q->tail_offset, l->eos);
    assert_int_equal(q->tail_length, l->file_size - l->eos);
    assert_int_equal(q->vmdesc_length, l->vmdesc_len);
}

/* The file has no checksums: none claimed, and verified reads refuse. */
static void check_no_checksums(sl_snapshot *s, const qs_desc *d)
{
    g_autoptr(GError) err = NULL;
    uint8_t page[QS_PAGE];

    assert_int_equal(sl_snapshot_get_format(s), SL_FORMAT_QEMU);
    assert_false(sl_snapshot_has_checksums(s));
    for (unsigned b = 0; b < d->nblocks; b++) {
        assert_int_equal(sl_snapshot_read_pages(s, b, 0, 1, page, true),
                         d->blocks[b].left_out ? -EREMOTE : -ENODATA);
    }
    assert_int_equal(sl_snapshot_n_sections(s), 0);
    assert_null(sl_snapshot_read_section(s, SL_SECTION_DEVICE_STATE, &err));
    assert_int_equal(err->code, SL_ERROR_FORMAT);
}

/* Everything the reader reports about a stream, against its description. */
static void check_stream(sl_snapshot *s, const qs_desc *d, const qs_layout *l)
{
    uint8_t page[QS_PAGE];

    assert_int_equal(sl_snapshot_file_size(s), l->file_size);
    assert_int_equal(sl_snapshot_n_blocks(s), d->nblocks);
    for (unsigned b = 0; b < d->nblocks; b++) {
        check_block_info(s, d, l, b);
        check_block_bits(s, d, b);
        check_block_data(s, d, b);
        assert_true(sl_snapshot_read_pages(s, b, desc_pages(d, b), 1, page, false) < 0);
    }
    assert_false(sl_snapshot_block(s, d->nblocks, &(sl_block_info){ 0 }));
    assert_int_equal(sl_snapshot_find_block(s, "no-such-block"), -1);
    check_stream_info(s, d, l);
    check_no_checksums(s, d);
}

static sl_snapshot *open_ok(const char *path, unsigned flags)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *s = sl_snapshot_open_flags(path, flags, &err);

    if (!s) {
        fail_msg("%s does not open: %s", path, err->message);
    }
    return s;
}

/* Opens @path fully and lazily; both must read as @d describes. */
static void check_opens_as_described(const char *path, const qs_desc *d, const qs_layout *l)
{
    static const unsigned flags[] = { 0, SL_OPEN_LAZY_CHECKSUMS };

    for (unsigned k = 0; k < G_N_ELEMENTS(flags); k++) {
        sl_snapshot *s = open_ok(path, flags[k]);
        check_stream(s, d, l);
        sl_snapshot_close(s);
    }
}

/* ------------------------------------------------------------------ */
/* 1. Valid streams read as generated                                  */
/* ------------------------------------------------------------------ */

static void test_stream_reads_blocks_bits_and_pages_as_generated(void **state)
{
    fixture *fx = *state;

    check_opens_as_described(fx->path, fx->d, &fx->l);
}

static void test_x_ignore_shared_gives_gpas_and_left_out_blocks_are_not_read(void **state)
{
    fixture *fx = *state;
    sl_snapshot *s = open_ok(fx->path, 0);

    check_stream(s, fx->d, &fx->l);
    /* The left-out blocks hold no page here, and none of their bytes are in the file. */
    assert_false(sl_snapshot_block_in_file(s, 1));
    assert_false(sl_snapshot_block_in_file(s, 3));
    assert_int_equal(s->blocks[3].record_offset + s->blocks[3].record_len, fx->l.eos);
    assert_false(sl_snapshot_block_in_file(s, 4)); /* out of range */
    sl_snapshot_close(s);
}

static void test_postcopy_page_size_field_is_skipped_and_kept_in_the_record(void **state)
{
    fixture *fx = *state;
    sl_snapshot *s = open_ok(fx->path, 0);
    const qs_field *ps = field(fx, "block0.page_size");
    const qs_field *ver = field(fx, "block0.mr_version");

    check_stream(s, fx->d, &fx->l);
    assert_int_equal(s->blocks[0].ramhdr_offset, ver->offset);
    assert_int_equal(s->blocks[0].record_offset, fx->l.blocks[0].record);
    assert_int_equal(s->blocks[0].record_len, fx->l.blocks[0].record_len);
    assert_true(ps->offset > s->blocks[0].record_offset &&
                ps->offset < s->blocks[0].ramhdr_offset);
    sl_snapshot_close(s);
}

/* Writes @d to a file in a temporary directory and checks it reads as described. */
static void check_generated(const qs_desc *d)
{
    char *dir = sl_test_tmpdir();
    g_autofree char *path = g_build_filename(dir, "v.mig", NULL);
    g_autoptr(GError) err = NULL;
    qs_layout l;

    assert_true(qs_write(d, path, &l, &err));
    check_opens_as_described(path, d, &l);
    qs_layout_clear(&l);
    sl_test_rmdir(dir);
}

static void test_what_qemu_may_leave_out_or_vary_is_accepted(void **state)
{
    static const char *const many_caps[] = { "validate-uuid", "mapped-ram", "x-colo", NULL };
    char name255[256];
    qs_block one = { .idstr = name255, .length = 3 * PAGE, .zero_every = 2, .seed = 9 };
    qs_desc d = { .machine = "m", .caps = many_caps, .section_id = 0xfffffffe,
                  .blocks = &one, .nblocks = 1 };

    memset(name255, 'n', 255);
    name255[255] = '\0';
    check_generated(&d);              /* no footer... */
    d.no_footer = true;
    check_generated(&d);              /* ...or none, no device state, no JSON */
    d.uuid = d.target_page_bits = true;
    d.devstate_len = 1;
    d.json = "{}";
    d.pages_align = PAGE;             /* the reader needs page alignment only */
    check_generated(&d);
}

static void test_blocks_of_many_bitmap_words_and_segments_read_as_generated(void **state)
{
    /* 8193 pages: more than one 8192-page segment, and a last word of one bit. */
    qs_block big[] = {
        { .idstr = "pc.ram", .length = 8193 * PAGE, .zero_every = 7, .seed = 11 },
        { .idstr = "tiny", .length = PAGE, .seed = 12 },
        { .idstr = "sparse", .length = 300 * PAGE, .stored_every = 97, .seed = 13 },
    };
    qs_desc d = { .machine = "pc", .caps = caps_plain, .section_id = 2, .blocks = big,
                  .nblocks = 3, .devstate_len = 10, .json = JSON };

    check_generated(&d);
}

/* ------------------------------------------------------------------ */
/* 2. Each damaged field is refused by name                            */
/* ------------------------------------------------------------------ */

typedef enum {
    SET,      /* the whole field (1, 4 or 8 bytes, big-endian) = base + value */
    ADD,      /* the whole field += value */
    XOR,      /* the whole field ^= value */
    BYTE,     /* the byte at @at = value */
    XOR_BYTE, /* the byte at @at ^= value */
    TEXT,     /* @text written at @at */
} patch_op;

typedef enum { ABS, AT_EOF, AT_EOF_PAGE, AT_FIELD } base_kind;

typedef struct {
    const char *what;
    const char *field;          /* the generator's name of the field */
    patch_op op;
    uint64_t value;
    unsigned at;                /* BYTE, XOR_BYTE, TEXT: offset in the field */
    const char *text;
    base_kind base;             /* SET: what value is added to */
    const char *base_field;     /* AT_FIELD: the offset of this field */
    const char *needle1, *needle2; /* both must be in the error message */
} patch_case;

static uint64_t get_be(const uint8_t *p, uint64_t width)
{
    uint64_t v = 0;

    for (uint64_t i = 0; i < width; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static void put_be(uint8_t *p, uint64_t width, uint64_t v)
{
    for (uint64_t i = 0; i < width; i++) {
        p[width - 1 - i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t base_value(const fixture *fx, const patch_case *c)
{
    switch (c->base) {
    case ABS:         return 0;
    case AT_EOF:      return fx->len;
    case AT_EOF_PAGE: return sl_align_up(fx->len, PAGE);
    case AT_FIELD:    return field(fx, c->base_field)->offset;
    }
    fail();
    return 0;
}

/* Applies @c to @buf, a copy of the fixture's bytes. */
static void apply_patch(const fixture *fx, uint8_t *buf, const patch_case *c)
{
    const qs_field *f = field(fx, c->field);
    uint8_t *p = buf + f->offset;
    uint64_t w = f->size;

    if (c->op <= XOR) {
        assert_true(w == 1 || w == 4 || w == 8);
    } else {
        assert_true(c->at + (c->op == TEXT ? strlen(c->text) : 1) <= w);
    }
    switch (c->op) {
    case SET:      put_be(p, w, base_value(fx, c) + c->value); break;
    case ADD:      put_be(p, w, get_be(p, w) + c->value); break;
    case XOR:      put_be(p, w, get_be(p, w) ^ c->value); break;
    case BYTE:     p[c->at] = (uint8_t)c->value; break;
    case XOR_BYTE: p[c->at] ^= (uint8_t)c->value; break;
    case TEXT:     memcpy(p + c->at, c->text, strlen(c->text)); break;
    }
}

/* Opening @path (with @flags) must fail with SL_ERROR_FORMAT naming both needles. */
static void expect_refused(const char *path, unsigned flags, const char *n1, const char *n2,
                           const char *what)
{
    GError *err = NULL;
    sl_snapshot *s = sl_snapshot_open_flags(path, flags, &err);

    if (s) {
        sl_snapshot_close(s);
        fail_msg("%s: the reader accepted the file (expected \"%s\")", what, n1 ? n1 : "");
    }
    if (!err || err->domain != SL_ERROR || err->code != SL_ERROR_FORMAT || !err->message[0] ||
        (n1 && !strstr(err->message, n1)) || (n2 && !strstr(err->message, n2))) {
        fail_msg("%s: got error %d \"%s\", expected a format error naming \"%s\" and \"%s\"",
                 what, err ? err->code : -1, err ? err->message : "(none)", n1 ? n1 : "",
                 n2 ? n2 : "");
    }
    g_error_free(err);
}

static void run_patch_cases(const fixture *fx, const patch_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        g_autofree uint8_t *buf = g_memdup2(fx->buf, fx->len);

        apply_patch(fx, buf, &cases[i]);
        write_sparse(fx->copy, buf, fx->len);
        expect_refused(fx->copy, 0, cases[i].needle1, cases[i].needle2, cases[i].what);
        expect_refused(fx->copy, SL_OPEN_LAZY_CHECKSUMS, cases[i].needle1, cases[i].needle2,
                       cases[i].what);
    }
}

static const patch_case header_cases[] = {
    { "magic QEVN", "magic", TEXT, .at = 3, .text = "N", .needle1 = "magic",
      .needle2 = "QEVM" },
    { "stream version 2", "version", SET, 2, .needle1 = "version",
      .needle2 = "QEMU stream version 2 is not supported" },
    { "stream version 4", "version", SET, 4, .needle1 = "QEMU stream version 4" },
    { "machine type length 0", "config.machine_len", SET, 0,
      .needle1 = "machine type length 0" },
    { "machine type length 257", "config.machine_len", SET, 257,
      .needle1 = "machine type length 257" },
    { "machine type length 2^32-1", "config.machine_len", SET, 0xffffffffu,
      .needle1 = "machine type length 4294967295" },
    { "unknown configuration subsection", "uuid.name", TEXT, .at = 17, .text = "x",
      .needle1 = "'configuration/uuix' is not known" },
    { "empty subsection name", "caps.name_len", SET, 0,
      .needle1 = "configuration subsection name", .needle2 = "empty" },
    { "NUL in a subsection name", "caps.name", BYTE, 0, .at = 5,
      .needle1 = "configuration subsection name", .needle2 = "NUL" },
    { "control character in the machine type", "config.machine", BYTE, 0x1b, .at = 2,
      .needle1 = "machine type is not UTF-8 text" },
    { "NUL in the machine type", "config.machine", BYTE, 0, .at = 1,
      .needle1 = "machine type is not UTF-8 text", .needle2 = "NUL" },
    { "target page bits 13", "tpb.value", SET, 13, .needle1 = "target page bits 13" },
    { "target page bits 0", "tpb.value", SET, 0, .needle1 = "target page bits 0" },
    { "capabilities count 65", "caps.count", SET, 65, .needle1 = "65 capabilities" },
    { "capabilities count 2^32-1", "caps.count", SET, 0xffffffffu,
      .needle1 = "4294967295 capabilities" },
    { "empty capability name", "caps.cap0_len", SET, 0, .needle1 = "capability name",
      .needle2 = "empty" },
    { "NUL in a capability name", "caps.cap0", BYTE, 0, .at = 9,
      .needle1 = "capability name", .needle2 = "NUL" },
    { "no mapped-ram capability", "caps.cap0", TEXT, .at = 7, .text = "rom",
      .needle1 = "not a mapped-ram stream" },
};

static const patch_case ram_section_cases[] = {
    { "first section a section part", "ram.type", SET, 2,
      .needle1 = "first section is 'ram' (type 2)", .needle2 = "not the start of 'ram'" },
    { "first section not 'ram'", "ram.idstr", TEXT, .at = 0, .text = "rom",
      .needle1 = "first section is 'rom'" },
    { "empty section name", "ram.idstr_len", SET, 0, .needle1 = "section name",
      .needle2 = "empty" },
    { "RAM section version 3", "ram.version", SET, 3,
      .needle1 = "section 'ram': version 3 is not supported" },
    { "RAM section version 5", "ram.version", SET, 5, .needle1 = "version 5" },
    { "no MEM_SIZE flag", "ram.total", XOR, QS_MEM_SIZE, .needle1 = "no MEM_SIZE flag" },
    { "RAM total 0", "ram.total", SET, QS_MEM_SIZE, .needle1 = "has no blocks" },
};

static const patch_case block_cases[] = {
    { "empty block idstr", "block0.idstr_len", SET, 0, .needle1 = "block name",
      .needle2 = "empty" },
    { "NUL in a block idstr", "block1.idstr", BYTE, 0, .at = 4, .needle1 = "block name",
      .needle2 = "NUL" },
    { "used length 0", "block0.used_length", SET, 0, .needle1 = "block 0 ('pc.ram')",
      .needle2 = "used length 0 is zero" },
    { "used length not whole pages", "block1.used_length", ADD, 1,
      .needle1 = "block 1 ('/rom@etc/acpi/tables')", .needle2 = "used length 40961" },
    { "used length past the RAM total", "block0.used_length", SET, 1ull << 40,
      .needle1 = "block 0", .needle2 = "beyond the RAM total" },
    { "last block longer than the total leaves", "block2.used_length", ADD, PAGE,
      .needle1 = "block 2 ('pc.bios')", .needle2 = "beyond the RAM total" },
    { "mapped-ram version 2", "block0.mr_version", SET, 2, .needle1 = "block 0 ('pc.ram')",
      .needle2 = "mapped-ram version 2" },
    { "mapped-ram version 0", "block1.mr_version", SET, 0, .needle1 = "block 1",
      .needle2 = "mapped-ram version 0" },
    { "mapped-ram page size 8192", "block0.mr_page_size", SET, 8192,
      .needle1 = "block 0", .needle2 = "page size 8192" },
    { "mapped-ram page size 2 MiB", "block2.mr_page_size", SET, 2 * MiB,
      .needle1 = "block 2", .needle2 = "page size 2097152" },
    { "pages_offset one byte off", "block0.mr_pages_offset", ADD, 1,
      .needle1 = "block 0 ('pc.ram'): pages_offset", .needle2 = "not page aligned" },
    { "pages_offset half a page off", "block2.mr_pages_offset", ADD, PAGE / 2,
      .needle1 = "block 2", .needle2 = "not page aligned" },
};

static const patch_case range_cases[] = {
    { "bitmap at the end of the file", "block0.mr_bitmap_offset", SET, 0, .base = AT_EOF,
      .needle1 = "block 0 ('pc.ram') bitmap (bitmap_offset)",
      .needle2 = "beyond the end of the file" },
    { "bitmap offset that overflows", "block1.mr_bitmap_offset", SET, UINT64_MAX - 3,
      .needle1 = "block 1 ('/rom@etc/acpi/tables') bitmap",
      .needle2 = "beyond the end of the file" },
    { "page area past the end of the file", "block1.mr_pages_offset", SET, 0,
      .base = AT_EOF_PAGE, .needle1 = "block 1 ('/rom@etc/acpi/tables') page data",
      .needle2 = "beyond the end of the file" },
    { "page area cut by the end of the file", "block2.mr_pages_offset", SET, -PAGE,
      .base = AT_EOF_PAGE, .needle1 = "block 2 ('pc.bios') page data",
      .needle2 = "beyond the end of the file" },
    { "page area offset that overflows", "block2.mr_pages_offset", SET, UINT64_MAX - PAGE + 1,
      .needle1 = "block 2 ('pc.bios') page data", .needle2 = "beyond the end of the file" },
    /* Bitmaps moved onto other bytes are pc.ram's: it has no bits past its end to trip. */
    { "bitmap over another block's bitmap", "block0.mr_bitmap_offset", SET, 0,
      .base = AT_FIELD, .base_field = "block2.bitmap", .needle1 = "overlaps",
      .needle2 = "bitmap (bitmap_offset)" },
    { "bitmap shifted by a word", "block0.mr_bitmap_offset", ADD, 8,
      .needle1 = "block 0 ('pc.ram'): bitmap_offset",
      .needle2 = "is not the end of its mapped-ram header" },
    { "bitmap in the padding before its pages", "block0.mr_bitmap_offset", SET, -PAGE,
      .base = AT_FIELD, .base_field = "block0.pages", .needle1 = "block 0 ('pc.ram')",
      .needle2 = "bitmap" },
    { "bitmap over its own block's record", "block0.mr_bitmap_offset", SET, 0,
      .base = AT_FIELD, .base_field = "block0.idstr_len", .needle1 = "overlaps",
      .needle2 = "block 0 ('pc.ram') record" },
    { "bitmap over the stream header", "block0.mr_bitmap_offset", SET, 8,
      .needle1 = "overlaps", .needle2 = "stream header and RAM section start" },
    { "bitmap over another block's pages", "block0.mr_bitmap_offset", SET, PAGE,
      .base = AT_FIELD, .base_field = "block2.pages", .needle1 = "overlaps",
      .needle2 = "page data" },
    { "bitmap over the device state", "block0.mr_bitmap_offset", SET, 0, .base = AT_FIELD,
      .base_field = "devstate", .needle1 = "overlaps", .needle2 = "device state" },
    { "bitmap_offset 0 with a page area", "block0.mr_bitmap_offset", SET, 0,
      .needle1 = "block 0 ('pc.ram'): bitmap_offset 0", .needle2 = "offset 0 is the stream's header" },
    { "bit past the last page", "block1.bitmap", XOR_BYTE, 0x04, .at = 1,
      .needle1 = "block 1 ('/rom@etc/acpi/tables'): bitmap has bits set past its 10 pages" },
    { "top bit of a last bitmap word", "block2.bitmap", XOR_BYTE, 0x80, .at = 7,
      .needle1 = "block 2 ('pc.bios')", .needle2 = "bits set past its 16 pages" },
};

static const patch_case end_cases[] = {
    { "end-of-section flag 0x11", "eos", XOR_BYTE, 0x01, .at = 7,
      .needle1 = "0x11, not the RAM end-of-section flag" },
    { "end-of-section flag with a high bit", "eos", XOR_BYTE, 0x80, .at = 0,
      .needle1 = "not the RAM end-of-section flag" },
    { "footer names the next section", "footer.id", ADD, 1,
      .needle1 = "section footer names section 3, not 'ram' (2)" },
    { "footer names section 0", "footer.id", SET, 0,
      .needle1 = "section footer names section 0" },
};

static void test_damaged_header_and_configuration_are_refused_by_name(void **state)
{
    run_patch_cases(*state, header_cases, G_N_ELEMENTS(header_cases));
}

static void test_damaged_ram_section_start_is_refused_by_name(void **state)
{
    run_patch_cases(*state, ram_section_cases, G_N_ELEMENTS(ram_section_cases));
}

static void test_damaged_block_records_are_refused_by_name(void **state)
{
    run_patch_cases(*state, block_cases, G_N_ELEMENTS(block_cases));
}

static void test_offsets_outside_the_file_overlaps_and_stray_bits_are_refused(void **state)
{
    run_patch_cases(*state, range_cases, G_N_ELEMENTS(range_cases));
}

static void test_damaged_end_of_the_ram_section_is_refused_by_name(void **state)
{
    run_patch_cases(*state, end_cases, G_N_ELEMENTS(end_cases));
}

/* The GPA sits between the used length and the header: its blocks' cases. */
static const patch_case shared_cases[] = {
    { "x-ignore-shared renamed: GPAs read as headers", "caps.cap0", TEXT, .at = 2,
      .text = "y", .needle1 = "block 0 ('pc.rom')", .needle2 = "mapped-ram version" },
    /* Only both offsets 0 leave a block out.  With one set, the stream goes on at
     * pages_offset + length, and the error names what is found there. */
    { "left-out block given a bitmap only", "block1.mr_bitmap_offset", SET, 0,
      .base = AT_FIELD, .base_field = "block0.bitmap" },
    { "left-out block given a page area only", "block3.mr_pages_offset", SET, 0,
      .base = AT_FIELD, .base_field = "block0.pages", .needle1 = "block 3 ('vga.vram')" },
};

static void test_damaged_x_ignore_shared_records_are_refused(void **state)
{
    run_patch_cases(*state, shared_cases, G_N_ELEMENTS(shared_cases));
}

/* The page-size field of postcopy comes first: each half damaged. */
static const patch_case postcopy_cases[] = {
    { "mapped-ram version 2 after the page-size field", "block0.mr_version", SET, 2,
      .needle1 = "block 0 ('pc.ram'): mapped-ram version 2", .needle2 = "not supported" },
    { "mapped-ram page size 8192 after the page-size field", "block0.mr_page_size", SET, 8192,
      .needle1 = "block 0 ('pc.ram')", .needle2 = "page size 8192 not supported" },
    { "postcopy page size 4096", "block0.page_size", SET, PAGE,
      .needle1 = "block 0 ('pc.ram')", .needle2 = "not supported" },
    { "postcopy page size not a power of two", "block0.page_size", SET, 3 * MiB,
      .needle1 = "block 0 ('pc.ram')", .needle2 = "not supported" },
    { "postcopy page size 2 GiB", "block0.page_size", SET, 2048 * MiB,
      .needle1 = "block 0 ('pc.ram')", .needle2 = "not supported" },
};

static void test_damaged_postcopy_records_are_refused(void **state)
{
    run_patch_cases(*state, postcopy_cases, G_N_ELEMENTS(postcopy_cases));
}

/* Writes @d and expects the reader to refuse it naming @n1 (and @n2). */
static void expect_generated_refused(const qs_desc *d, const char *n1, const char *n2,
                                     const char *what)
{
    char *dir = sl_test_tmpdir();
    g_autofree char *path = g_build_filename(dir, "bad.mig", NULL);
    g_autoptr(GError) err = NULL;
    qs_layout l;

    assert_true(qs_write(d, path, &l, &err));
    expect_refused(path, 0, n1, n2, what);
    qs_layout_clear(&l);
    sl_test_rmdir(dir);
}

static void test_more_than_1024_blocks_are_refused(void **state)
{
    enum { N = SL_MAX_BLOCKS + 1 };
    g_autofree qs_block *blocks = g_new0(qs_block, N);
    g_autofree char *names = g_malloc(N * 8);
    qs_desc d = { .machine = "pc", .caps = caps_plain, .section_id = 2, .blocks = blocks,
                  .nblocks = N, .pages_align = PAGE }; /* 8 KiB per block, not 1 MiB */

    for (unsigned i = 0; i < N; i++) {
        g_snprintf(names + 8 * i, 8, "b%u", i);
        blocks[i] = (qs_block){ .idstr = names + 8 * i, .length = PAGE, .zero_every = 1 };
    }
    expect_generated_refused(&d, "more than 1024 RAM blocks", NULL, "1025 blocks");
    d.nblocks = SL_MAX_BLOCKS; /* the limit itself is fine */
    check_generated(&d);
}

/*
 * Writes @d and opens it: block @b is read as left out of the file, with
 * its size as described.  For sizes check_generated() cannot hold in memory.
 */
static void expect_left_out_block(const qs_desc *d, unsigned b)
{
    char *dir = sl_test_tmpdir();
    g_autofree char *path = g_build_filename(dir, "v.mig", NULL);
    g_autoptr(GError) err = NULL;
    sl_snapshot *snap;
    sl_block_info bi;
    qs_layout l;

    assert_true(qs_write(d, path, &l, &err));
    snap = sl_snapshot_open(path, &err);
    assert_non_null(snap);
    assert_true(sl_snapshot_block(snap, b, &bi));
    assert_true(bi.pages == d->blocks[b].length / PAGE);
    assert_false(sl_snapshot_block_in_file(snap, b));
    sl_snapshot_close(snap);
    qs_layout_clear(&l);
    sl_test_rmdir(dir);
}

/*
 * A block QEMU left out of the file (x-ignore-shared) has nothing in the
 * file to bound its size, yet the reader keeps a page bitmap for it: a
 * stream claiming more than 32 TiB of RAM is refused by name before
 * anything is allocated for it (a fuzzed file asked for a 960 GB bitmap).
 * 32 TiB itself is read.
 */
static void test_ram_beyond_32_tib_is_refused_before_any_allocation(void **state)
{
    qs_block blocks[] = {
        { .idstr = "pc.rom", .length = 8 * PAGE, .gpa = 0xc0000, .zero_every = 2, .seed = 4 },
        { .idstr = "pc.ram", .length = (32ull << 40) - 8 * PAGE + PAGE, .gpa = 1ull << 32,
          .left_out = true },
    };
    qs_desc d = shared_desc;

    d.blocks = blocks;
    d.nblocks = G_N_ELEMENTS(blocks);
    expect_generated_refused(&d, "section 'ram': a RAM total of 35184372092928 bytes",
                             "more than the 32 TiB", "32 TiB + 4 KiB");
    blocks[1].length -= PAGE; /* 32 TiB in all: read (its 1 GiB bitmap never touched) */
    expect_left_out_block(&d, 1);
}

/*
 * QEMU writes each configuration subsection once; a repeat is refused by
 * name (found by review: repeats grew the header without bound, and a
 * header longer than the pipe reader keeps split from a file but not
 * from a pipe).
 */
static void test_a_repeated_configuration_subsection_is_refused(void **state)
{
    qs_block b = { .idstr = "pc.ram", .length = 4 * PAGE, .seed = 1 };
    qs_desc d = { .machine = "pc", .caps = caps_plain, .uuid = 2, .section_id = 2,
                  .blocks = &b, .nblocks = 1 };

    (void)state;
    expect_generated_refused(&d, "configuration subsection 'configuration/uuid' appears twice",
                             NULL, "two uuid subsections");
}

/* A capability name holding JSON's quote and backslash comes out of `inspect --json` escaped. */
static void test_inspect_json_escapes_what_the_stream_names(void **state)
{
    static const char *const odd_caps[] = { "mapped-ram", "x\"quote\\back", NULL };
    qs_block b = { .idstr = "pc.ram", .length = 4 * PAGE, .seed = 1 };
    qs_desc d = { .machine = "pc\"q35", .caps = odd_caps, .section_id = 2, .blocks = &b,
                  .nblocks = 1 };
    char *dir = sl_test_tmpdir();
    g_autofree char *path = g_build_filename(dir, "odd.mig", NULL);
    g_autofree char *out = NULL, *errs = NULL;
    g_autoptr(GError) err = NULL;
    qs_layout l;

    (void)state;
    assert_true(qs_write(&d, path, &l, &err));
    assert_int_equal(sl_test_run_cli((const char *const[]){ "inspect", "--json", path, NULL },
                                     &out, &errs), 0);
    if (!strstr(out, "\"capabilities\": [\"mapped-ram\", \"x\\\"quote\\\\back\"]") ||
        !strstr(out, "\"machine\": \"pc\\\"q35\"")) {
        fail_msg("inspect --json did not escape the names: %s", out);
    }
    qs_layout_clear(&l);
    sl_test_rmdir(dir);
}

/*
 * A block QEMU left in shared memory (x-ignore-shared) has no page in the
 * file: extract and flatten (delta and restore --verify read it the same
 * way) refuse it, naming why, instead of writing its pages as zeros
 * (found by review: they exited 0 with an all-zero image).
 */
static void test_cli_refuses_to_read_a_block_left_in_shared_memory(void **state)
{
    char *dir = sl_test_tmpdir();
    g_autofree char *path = g_build_filename(dir, "shared.mig", NULL);
    g_autofree char *img = g_build_filename(dir, "ram.img", NULL);
    g_autofree char *flat = g_build_filename(dir, "flat.snap", NULL);
    g_autoptr(GError) err = NULL;
    qs_layout l;
    const char *const *cmds[] = {
        (const char *const[]){ "extract", path, "--block", "pc.ram", "-o", img, NULL },
        (const char *const[]){ "flatten", path, "-o", flat, NULL },
    };

    (void)state;
    assert_true(qs_write(&shared_desc, path, &l, &err));
    for (unsigned i = 0; i < G_N_ELEMENTS(cmds); i++) {
        g_autofree char *out = NULL, *errs = NULL;
        assert_int_not_equal(sl_test_run_cli(cmds[i], &out, &errs), 0);
        if (!strstr(errs, "block 'pc.ram'") || !strstr(errs, "is not in the file") ||
            !strstr(errs, "x-ignore-shared")) {
            fail_msg("%s: expected a refusal naming the left-out block, got: %s", cmds[i][0],
                     errs);
        }
    }
    assert_false(g_file_test(flat, G_FILE_TEST_EXISTS));
    qs_layout_clear(&l);
    sl_test_rmdir(dir);
}

static void test_stream_without_configuration_or_mapped_ram_is_refused(void **state)
{
    static const char *const no_caps[] = { NULL };
    static const char *const other_caps[] = { "x-ignore-shared", NULL };
    qs_block b = { .idstr = "pc.ram", .length = 4 * PAGE, .seed = 1 };
    qs_desc d = { .caps = caps_plain, .blocks = &b, .nblocks = 1 };

    expect_generated_refused(&d, "not a mapped-ram stream", NULL, "no configuration");
    d.machine = "pc";
    d.caps = no_caps;
    expect_generated_refused(&d, "not a mapped-ram stream", NULL, "no capabilities");
    d.caps = other_caps;
    expect_generated_refused(&d, "not a mapped-ram stream", NULL, "no mapped-ram");
}

/* ------------------------------------------------------------------ */
/* 3. Known reader bugs (reported)                                     */
/* ------------------------------------------------------------------ */

/* Whether @d written to a file opens; *@msg gets the error if not. */
static bool generated_opens(const qs_desc *d, char **msg, sl_snapshot **keep)
{
    char *dir = sl_test_tmpdir();
    g_autofree char *path = g_build_filename(dir, "k.mig", NULL);
    g_autoptr(GError) err = NULL;
    sl_snapshot *s;
    qs_layout l;

    assert_true(qs_write(d, path, &l, &err));
    s = sl_snapshot_open(path, &err);
    *msg = err ? g_strdup(err->message) : NULL;
    qs_layout_clear(&l);
    if (keep) {
        *keep = s;  /* the open fd keeps the data after the unlink */
    } else {
        sl_snapshot_close(s);
    }
    sl_test_rmdir(dir);
    return s != NULL;
}

/* QEMU writes postcopy's page size before the GPA (ram_save_setup). */
static void test_postcopy_page_size_before_the_gpa_is_read_in_qemu_order(void **state)
{
    qs_block b[] = {
        { .idstr = "pc.ram", .length = 16 * PAGE, .gpa = 0x100000000ull,
          .postcopy_page_size = 2 * MiB, .zero_every = 2, .seed = 1 },
    };
    qs_desc d = { .machine = "pc", .caps = caps_shared, .section_id = 2, .blocks = b,
                  .nblocks = 1 };
    char *msg = NULL;
    sl_snapshot *s = NULL;
    bool opened = generated_opens(&d, &msg, &s);
    bool gpa_right = opened && s->blocks[0].gpa == b[0].gpa;

    g_free(msg);
    sl_snapshot_close(s);
    assert_true(opened);
    assert_true(gpa_right);
}

static void test_duplicate_block_names_are_refused(void **state)
{
    qs_block b[] = {
        { .idstr = "pc.ram", .length = 4 * PAGE, .seed = 1 },
        { .idstr = "pc.ram", .length = 4 * PAGE, .seed = 2 },
    };
    qs_desc d = { .machine = "pc", .caps = caps_plain, .section_id = 2, .blocks = b,
                  .nblocks = 2 };
    char *msg = NULL;
    bool opened = generated_opens(&d, &msg, NULL), named = msg && strstr(msg, "pc.ram");

    g_free(msg);
    assert_false(opened);
    assert_true(named);
}

/* A name that would drive a terminal when printed (an ESC sequence) is refused, not printed. */
static void test_block_name_with_control_bytes_is_refused(void **state)
{
    qs_block b[] = { { .idstr = "pc.ram\x1b[31mRED", .length = 4 * PAGE, .seed = 1 } };
    qs_desc d = { .machine = "pc", .caps = caps_plain, .section_id = 2, .blocks = b,
                  .nblocks = 1 };
    char *msg = NULL;
    bool opened = generated_opens(&d, &msg, NULL);
    bool named = msg && strstr(msg, "block name") && strstr(msg, "not UTF-8 text") &&
                 !strchr(msg, 0x1b);

    if (!opened && !named) {
        print_message("# message: %s\n", msg ? msg : "(none)");
    }
    g_free(msg);
    assert_false(opened);
    assert_true(named);
}

static void test_left_out_block_without_x_ignore_shared_is_refused(void **state)
{
    qs_block b[] = {
        { .idstr = "pc.ram", .length = 4 * PAGE, .left_out = true },
        { .idstr = "pc.rom", .length = 4 * PAGE, .seed = 2 },
    };
    qs_desc d = { .machine = "pc", .caps = caps_plain, .section_id = 2, .blocks = b,
                  .nblocks = 2 };
    char *msg = NULL;
    bool opened = generated_opens(&d, &msg, NULL);
    bool named = msg && strstr(msg, "block 0 ('pc.ram')");

    g_free(msg);
    assert_false(opened);
    assert_true(named);
}

/* In a forked child: a crash ends it (cmocka's handlers would run the
 * other cases there). */
static void crashes_end_the_child(void)
{
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
}

/* Forked child @pid exited with status 0. */
static void assert_child_exits_0(pid_t pid)
{
    int status;

    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * sl_snapshot_page_checksum() on a file without checksums: 0, not a crash
 * (it read a NULL checksum array once).  Asked in a child, so that a crash
 * is observed rather than suffered.
 */
static void test_page_checksum_of_a_stream_without_checksums_is_zero(void **state)
{
    fixture *fx = *state;
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        sl_snapshot *s = sl_snapshot_open(fx->path, NULL);
        crashes_end_the_child();
        _exit(!s ? 2 : sl_snapshot_page_checksum(s, 0, 1) == 0 ? 0 : 3);
    }
    assert_child_exits_0(pid);
}

/*
 * An eager load asked to verify a stream without checksums loads it
 * unverified, every page as the file holds it (found by review: it read
 * the absent checksum array and crashed; restore --compare-eager of a QEMU
 * file without its index took that path).  In a child, as above.
 */
static void test_a_verified_eager_load_of_a_stream_without_checksums_loads_it(void **state)
{
    fixture *fx = *state;
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        sl_snapshot *s = sl_snapshot_open(fx->path, NULL);
        uint64_t len = fx->d->blocks[0].length;
        g_autofree uint8_t *mem = g_malloc0(len), *want = g_malloc(PAGE);
        int bad = 0;

        crashes_end_the_child();
        if (!s || sl_eager_load(s, 0, mem, 2, true) != 0) {
            _exit(2);
        }
        for (uint64_t i = 0; i < len / PAGE; i++) {
            file_page(fx->d, 0, i, want);
            bad += memcmp(mem + i * PAGE, want, PAGE) != 0;
        }
        _exit(bad ? 3 : 0);
    }
    assert_child_exits_0(pid);
}

/* ------------------------------------------------------------------ */
/* 4. Truncation                                                       */
/* ------------------------------------------------------------------ */

/* Where the RAM section ends: the tail past it is opaque, so a cut there is accepted. */
static uint64_t ram_section_end(const fixture *fx)
{
    const qs_field *f = qs_find(&fx->l, "footer.id");

    return f ? f->offset + f->size : fx->l.eos + 9; /* the byte read to look for a footer */
}

/* A cut that leaves the RAM section whole: the file reads as generated, its tail shorter. */
static void expect_cut_accepted(const fixture *fx, uint64_t keep)
{
    sl_snapshot *s = open_ok(fx->copy, 0);

    assert_int_equal(sl_snapshot_n_blocks(s), fx->d->nblocks);
    for (unsigned b = 0; b < fx->d->nblocks; b++) {
        check_block_info(s, fx->d, &fx->l, b);
        check_window(s, fx->d, b, 0, desc_pages(fx->d, b));
    }
    assert_int_equal(s->qemu->tail_offset, fx->l.eos);
    assert_int_equal(s->qemu->tail_length, keep - fx->l.eos);
    assert_int_equal(s->qemu->vmdesc_length, keep == fx->len ? fx->l.vmdesc_len : 0);
    sl_snapshot_close(s);
}

/* A cut inside the RAM section: a format error saying the file ends too
 * early; past it (@in_tail), one saying the end-of-stream marker is missing. */
static void expect_cut_refused(const fixture *fx, uint64_t keep, bool in_tail)
{
    g_autofree char *what = g_strdup_printf("cut to %" G_GUINT64_FORMAT " bytes", keep);
    GError *err = NULL;
    sl_snapshot *s = sl_snapshot_open(fx->copy, &err);
    bool named;

    if (s) {
        sl_snapshot_close(s);
        fail_msg("%s: accepted", what);
    }
    named = in_tail ? strstr(err->message, "does not end with QEMU's end-of-stream marker") != NULL
                    : strstr(err->message, "file ends early") ||
                      strstr(err->message, "beyond the end of the file") ||
                      (keep < 8 && strstr(err->message, "smaller than the 64-byte header"));
    if (err->code != SL_ERROR_FORMAT || !named) {
        fail_msg("%s: error %d \"%s\" does not say the file ends early", what, err->code,
                 err->message);
    }
    g_error_free(err);
}

static void expect_cut(const fixture *fx, uint64_t keep)
{
    write_sparse(fx->copy, fx->buf, keep);
    if (keep < ram_section_end(fx)) {
        expect_cut_refused(fx, keep, false);
    } else if (keep == fx->len || fx->buf[keep - 1] == 0x00) {
        /* whole, or ending in a byte that reads as the end-of-stream marker */
        expect_cut_accepted(fx, keep);
    } else {
        expect_cut_refused(fx, keep, true);
    }
}

/* Cuts at every field's start, one byte in, in its middle and one byte short of its end. */
static void cut_at_every_field(const fixture *fx)
{
    unsigned tried = 0;

    for (guint i = 0; i < fx->l.fields->len; i++) {
        const qs_field *f = &g_array_index(fx->l.fields, qs_field, i);
        uint64_t cuts[] = { f->offset, f->offset + 1, f->offset + f->size / 2,
                            f->offset + f->size - 1 };
        for (unsigned k = 0; k < G_N_ELEMENTS(cuts); k++) {
            if (cuts[k] < fx->len && (k == 0 || cuts[k] != cuts[k - 1])) {
                expect_cut(fx, cuts[k]);
                tried++;
            }
        }
    }
    expect_cut(fx, fx->len);
    assert_true(tried > fx->l.fields->len);
}

static void test_truncation_at_every_field_boundary_is_a_clean_error(void **state)
{
    cut_at_every_field(*state);
}

/* ------------------------------------------------------------------ */
/* 5. Random damage never yields a wrong page                          */
/* ------------------------------------------------------------------ */

#define RANDOM_SEED 0x9e3779b9u
#define FLIPS       3000
#define INSERTIONS  600

/* A damage of the file: one byte flipped (@off, @mask), or none that the pages see. */
typedef struct {
    uint64_t off;       /* UINT64_MAX: no byte of the fixture's layout changed */
    uint8_t mask;
    const char *what;
} damage;

/* Block @b of an accepted damaged file is the generated one, but for what the damage hit. */
static void check_damaged_block_info(const fixture *fx, const sl_block *sb, unsigned b,
                                     const damage *dm)
{
    const qs_block *want = &fx->d->blocks[b];
    g_autofree char *idstr = g_strdup_printf("block%u.idstr", b);
    g_autofree char *gpa = g_strdup_printf("block%u.gpa", b);

    if (sb->length != want->length || sb->in_file == want->left_out ||
        (sb->in_file && sb->pages_offset != fx->l.blocks[b].pages) ||
        (!in_named(fx, idstr, dm->off) && strcmp(sb->name, want->idstr)) ||
        (!in_named(fx, gpa, dm->off) && sb->gpa != want->gpa)) {
        fail_msg("%s: block %u accepted as '%s', %" G_GUINT64_FORMAT " bytes at %"
                 G_GUINT64_FORMAT, dm->what, b, sb->name, sb->length, sb->pages_offset);
    }
}

/*
 * Page @i of block @b (@got, as read) must be the bytes the generator put
 * where the page lies, the flipped byte included, if the file says it is
 * present, else zeros.  Only a flip in the block's bitmap byte of the page
 * or in its bitmap_offset may change whether it is present: QEMU's bitmap
 * is unchecked data, and a cleared bit reads as zeros.
 */
static void check_damaged_page(const fixture *fx, sl_snapshot *s, unsigned b, uint64_t i,
                               const uint8_t *got, const damage *dm)
{
    const qs_block_layout *bl = &fx->l.blocks[b];
    g_autofree char *bmo = g_strdup_printf("block%u.mr_bitmap_offset", b);
    bool present = sl_snapshot_page_present(s, b, i);
    bool may_move = in_named(fx, bmo, dm->off) ||
                    (bl->bitmap_len && dm->off == bl->bitmap + i / 8);
    uint64_t at = bl->pages + i * PAGE;
    uint8_t want[QS_PAGE] = { 0 };

    if (!may_move && present != qs_page_stored(fx->d, b, i)) {
        fail_msg("%s: block %u page %" G_GUINT64_FORMAT " present %d", dm->what, b, i, present);
    }
    if (present) {
        file_page(fx->d, b, i, want);
        if (bl->pages_len && dm->off >= at && dm->off - at < PAGE) {
            want[dm->off - at] ^= dm->mask;
        }
    }
    if (memcmp(got, want, PAGE)) {
        fail_msg("%s: block %u page %" G_GUINT64_FORMAT " read wrong without an error",
                 dm->what, b, i);
    }
}

/* What a damaged file that opened must read as: the generated stream, as far as undamaged. */
static void check_damaged(const fixture *fx, sl_snapshot *s, const damage *dm)
{
    if (sl_snapshot_n_blocks(s) != fx->d->nblocks) {
        fail_msg("%s: accepted with %u blocks", dm->what, sl_snapshot_n_blocks(s));
    }
    for (unsigned b = 0; b < fx->d->nblocks; b++) {
        const sl_block *sb = &s->blocks[b];
        check_damaged_block_info(fx, sb, b, dm);
        g_autofree uint8_t *got = g_malloc(sb->length);
        if (fx->d->blocks[b].left_out) {
            assert_int_equal(sl_snapshot_read_pages(s, b, 0, sb->length / PAGE, got, false),
                             -EREMOTE);
            continue;
        }
        assert_int_equal(sl_snapshot_read_pages(s, b, 0, sb->length / PAGE, got, false), 0);
        for (uint64_t i = 0; i < sb->length / PAGE; i++) {
            check_damaged_page(fx, s, b, i, got + i * PAGE, dm);
        }
    }
    if (s->qemu->tail_offset != fx->l.eos) {
        fail_msg("%s: device state accepted at %" G_GUINT64_FORMAT, dm->what,
                 s->qemu->tail_offset);
    }
}

/* Opens the damaged copy; a refusal must be a format error with a message. */
static sl_snapshot *open_damaged(const char *path, const char *what)
{
    GError *err = NULL;
    sl_snapshot *s = sl_snapshot_open(path, &err);

    if (!s && (!err || err->code != SL_ERROR_FORMAT || !err->message[0])) {
        fail_msg("%s: refused without a format error: %s", what, err ? err->message : "-");
    }
    g_clear_error(&err);
    return s;
}

/* An offset: mostly in a field other than page data, else anywhere. */
static uint64_t pick_offset(const fixture *fx, GRand *rng)
{
    for (;;) {
        guint i = (guint)g_rand_int_range(rng, 0, (gint32)fx->l.fields->len);
        const qs_field *f = &g_array_index(fx->l.fields, qs_field, i);
        bool pages = g_str_has_suffix(f->name, ".pages");

        if (g_rand_int_range(rng, 0, 10) == 0) {
            return (uint64_t)g_rand_int_range(rng, 0, (gint32)fx->len);
        }
        if (f->size && (!pages || g_rand_int_range(rng, 0, 8) == 0)) {
            return f->offset + (uint64_t)g_rand_int_range(rng, 0, (gint32)f->size);
        }
    }
}

/* Flips one byte of the on-disk copy, opens it, checks it, and puts the byte back. */
static bool flip_and_check(const fixture *fx, int fd, uint64_t off, uint8_t mask)
{
    g_autofree char *what = g_strdup_printf("byte %" G_GUINT64_FORMAT " ^ 0x%02x", off, mask);
    uint8_t b = fx->buf[off] ^ mask;
    sl_snapshot *s;

    assert_int_equal(sl_pwrite_full(fd, &b, 1, off), 0);
    s = open_damaged(fx->copy, what);
    if (s) {
        check_damaged(fx, s, &(damage){ off, mask, what });
        sl_snapshot_close(s);
    }
    assert_int_equal(sl_pwrite_full(fd, &fx->buf[off], 1, off), 0);
    return s != NULL;
}

static void test_random_byte_flips_never_crash_or_yield_a_wrong_page(void **state)
{
    fixture *fx = *state;
    g_autoptr(GRand) rng = g_rand_new_with_seed(RANDOM_SEED);
    unsigned accepted = 0;
    int fd;

    write_sparse(fx->copy, fx->buf, fx->len);
    fd = open(fx->copy, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    for (unsigned it = 0; it < FLIPS; it++) {
        uint64_t off = pick_offset(fx, rng);
        accepted += flip_and_check(fx, fd, off, (uint8_t)g_rand_int_range(rng, 1, 256));
    }
    close(fd);
    print_message("# %u of %u flips accepted (data, padding, names, the tail), the rest "
                  "refused\n", accepted, FLIPS);
    assert_in_range(accepted, 1, FLIPS - 1);
}

/* Inserts @n random bytes at @off in a copy, writes it and opens it; true if accepted. */
static bool insert_and_check(const fixture *fx, uint64_t off, unsigned n, GRand *rng)
{
    g_autofree char *what = g_strdup_printf("%u bytes inserted at %" G_GUINT64_FORMAT, n, off);
    g_autofree uint8_t *buf = g_malloc(fx->len + n);
    sl_snapshot *s;

    memcpy(buf, fx->buf, off);
    for (unsigned k = 0; k < n; k++) {
        buf[off + k] = (uint8_t)g_rand_int_range(rng, 0, 256);
    }
    memcpy(buf + off + n, fx->buf + off, fx->len - off);
    write_sparse(fx->copy, buf, fx->len + n);
    s = open_damaged(fx->copy, what);
    if (s) {
        /* Everything before the tail moved: only an insertion into the tail may pass. */
        if (off < fx->l.eos) {
            fail_msg("%s: accepted although the RAM section moved", what);
        }
        check_damaged(fx, s, &(damage){ UINT64_MAX, 0, what });
        assert_int_equal(s->qemu->tail_length, fx->len + n - fx->l.eos);
        sl_snapshot_close(s);
    }
    return s != NULL;
}

static void test_random_insertions_never_crash_or_yield_a_wrong_page(void **state)
{
    fixture *fx = *state;
    g_autoptr(GRand) rng = g_rand_new_with_seed(RANDOM_SEED + 1);
    unsigned accepted = 0;

    for (unsigned it = 0; it < INSERTIONS; it++) {
        uint64_t off = pick_offset(fx, rng);
        unsigned n = (unsigned)g_rand_int_range(rng, 1, 17);
        accepted += insert_and_check(fx, off, n, rng);
    }
    print_message("# %u of %u insertions accepted (all in the device-state tail)\n", accepted,
                  INSERTIONS);
    assert_in_range(accepted, 1, INSERTIONS - 1);
}

/* ------------------------------------------------------------------ */
/* 6. The device stream: eager blocks kept, lazy ones left as holes    */
/* ------------------------------------------------------------------ */

/* @buf with the bitmap and page area of every lazy block zeroed: what the copy must be. */
static uint8_t *expected_device_stream(const fixture *fx, const bool *lazy)
{
    uint8_t *want = g_memdup2(fx->buf, fx->len);

    for (unsigned b = 0; b < fx->d->nblocks; b++) {
        const qs_block_layout *bl = &fx->l.blocks[b];
        if (lazy[b]) {
            memset(want + bl->bitmap, 0, bl->bitmap_len);
            memset(want + bl->pages, 0, bl->pages_len);
        }
    }
    return want;
}

/* The copy re-opens with the same blocks; lazy ones have no page, eager ones all theirs. */
static void check_device_stream_reads(const fixture *fx, const char *path, const bool *lazy)
{
    sl_snapshot *s = open_ok(path, 0);
    uint8_t zero[QS_PAGE] = { 0 };

    assert_int_equal(sl_snapshot_get_format(s), SL_FORMAT_QEMU);
    assert_int_equal(sl_snapshot_n_blocks(s), fx->d->nblocks);
    for (unsigned b = 0; b < fx->d->nblocks; b++) {
        sl_block_info bi;
        if (!lazy[b]) {
            check_block_info(s, fx->d, &fx->l, b);
            check_block_bits(s, fx->d, b);
            check_window(s, fx->d, b, 0, desc_pages(fx->d, b));
            continue;
        }
        assert_true(sl_snapshot_block(s, b, &bi));
        assert_string_equal(bi.name, fx->d->blocks[b].idstr);
        assert_int_equal(bi.length, fx->d->blocks[b].length);
        assert_int_equal(bi.present_pages, 0);
        assert_int_equal(sl_snapshot_block_in_file(s, b), !fx->d->blocks[b].left_out);
        for (uint64_t i = 0; i < bi.pages; i++) {
            uint8_t got[QS_PAGE];
            assert_false(sl_snapshot_page_present(s, b, i));
            if (fx->d->blocks[b].left_out) { /* in the guest's memory file, not here */
                assert_int_equal(sl_snapshot_read_pages(s, b, i, 1, got, false), -EREMOTE);
                continue;
            }
            assert_int_equal(sl_snapshot_read_pages(s, b, i, 1, got, false), 0);
            assert_memory_equal(got, zero, PAGE);
        }
    }
    check_stream_info(s, fx->d, &fx->l);
    sl_snapshot_close(s);
}

/* Writes the device stream of the fixture with @lazy and checks it byte for byte. */
static void check_device_stream(const fixture *fx, const bool *lazy)
{
    g_autofree char *before = file_sha256(fx->path), *after = NULL;
    g_autofree uint8_t *want = expected_device_stream(fx, lazy), *got = NULL;
    g_autoptr(GError) err = NULL;
    sl_snapshot *s = open_ok(fx->path, 0);
    gsize len;

    assert_true(unlink(fx->copy) == 0 || errno == ENOENT);
    if (!sl_qemu_write_device_stream(s, fx->copy, lazy, &err)) {
        fail_msg("writing the device stream: %s", err->message);
    }
    sl_snapshot_close(s);
    got = read_file(fx->copy, &len);
    assert_int_equal(len, fx->len);
    for (uint64_t off = 0; off < len; off++) {
        if (got[off] != want[off]) {
            fail_msg("device stream byte %" G_GUINT64_FORMAT ": 0x%02x, want 0x%02x", off,
                     got[off], want[off]);
        }
    }
    check_device_stream_reads(fx, fx->copy, lazy);
    after = file_sha256(fx->path);
    assert_string_equal(before, after); /* the original is untouched */
}

static void test_device_stream_keeps_eager_blocks_and_empties_lazy_ones(void **state)
{
    fixture *fx = *state;
    g_autofree bool *lazy = g_new0(bool, fx->d->nblocks);

    for (unsigned mask = 0; mask < 1u << fx->d->nblocks; mask++) {
        for (unsigned b = 0; b < fx->d->nblocks; b++) {
            lazy[b] = mask >> b & 1;
        }
        check_device_stream(fx, lazy);
    }
}

static void test_device_stream_of_a_dominant_lazy_block_is_sparse(void **state)
{
    /* 32 MiB of pages, none zero, in the lazy block; 32 KiB in the eager one. */
    static const qs_block blocks[] = {
        { .idstr = "pc.ram", .length = 32 * MiB, .seed = 21 },
        { .idstr = "pc.rom", .length = 8 * PAGE, .seed = 22 },
    };
    static const qs_desc d = { .machine = "pc", .caps = caps_plain, .section_id = 2,
                               .blocks = blocks, .nblocks = 2, .devstate_len = 4096,
                               .json = JSON };
    static const bool lazy[] = { true, false };
    fixture *fx = fixture_new(&d);
    struct stat orig, copy;

    check_device_stream(fx, lazy);
    assert_int_equal(stat(fx->path, &orig), 0);
    assert_int_equal(stat(fx->copy, &copy), 0);
    assert_int_equal(copy.st_size, orig.st_size);
    /* The original really takes its 32 MiB, so the measure below means something. */
    assert_true((uint64_t)orig.st_blocks * 512 >= 32 * MiB);
    if ((uint64_t)copy.st_blocks * 512 >= (uint64_t)copy.st_size / 10) {
        fail_msg("the device stream takes %" G_GUINT64_FORMAT " of its %" G_GUINT64_FORMAT
                 " bytes", (uint64_t)copy.st_blocks * 512, (uint64_t)copy.st_size);
    }
    fixture_free(fx);
}

/* An existing file, the original's own path above all, is never written. */
static void test_device_stream_never_overwrites_an_existing_file(void **state)
{
    fixture *fx = *state;
    g_autofree char *before = file_sha256(fx->path), *after = NULL, *other = NULL;
    g_autoptr(GError) err = NULL;
    static const bool lazy[3] = { true, false, false };
    sl_snapshot *s = open_ok(fx->path, 0);

    assert_false(sl_qemu_write_device_stream(s, fx->path, lazy, &err));
    assert_int_equal(err->code, SL_ERROR_IO);
    g_clear_error(&err);
    assert_true(g_file_set_contents(fx->copy, "keep me", -1, NULL));
    assert_false(sl_qemu_write_device_stream(s, fx->copy, lazy, &err));
    assert_int_equal(err->code, SL_ERROR_IO);
    sl_snapshot_close(s);
    after = file_sha256(fx->path);
    assert_string_equal(before, after);
    other = (char *)read_file(fx->copy, &(gsize){ 0 });
    assert_string_equal(other, "keep me");
}

/*
 * An index is never written over the QEMU file it indexes (that emptied
 * the file), a hot list that a restore would refuse is refused when the
 * index is made (not at every later open), and a failed index leaves no
 * file, partial or stale.
 */
static void test_index_refuses_its_own_file_and_a_bad_hot_list(void **state)
{
    fixture *fx = *state;
    g_autofree char *before = file_sha256(fx->path), *after = NULL;
    g_autofree char *idx = g_strdup_printf("%s.slidx", fx->copy);
    g_autoptr(GError) err = NULL;
    uint8_t bad_list[16] = { 7 }; /* block 7: there is none */
    g_autoptr(GBytes) hot = g_bytes_new_static(bad_list, sizeof(bad_list));
    sl_snapshot *s = open_ok(fx->path, 0);

    assert_false(sl_index_write(s, fx->path, NULL, &err));
    assert_non_null(strstr(err->message, "is the QEMU file itself"));
    g_clear_error(&err);
    assert_false(sl_index_write(s, idx, hot, &err));
    assert_non_null(strstr(err->message, "hot-page list entry 0: block 7"));
    sl_snapshot_close(s);
    after = file_sha256(fx->path);
    assert_string_equal(before, after);
    assert_false(g_file_test(idx, G_FILE_TEST_EXISTS));
}

/*
 * With a sidecar index, the stored pages of the blocks QEMU loads itself
 * (the eager ones) are checked against their checksums as the device stream
 * is written: a page changed since the index was made is refused by block
 * and page, and no stream is left for QEMU to load it from.  Found by
 * review: they were copied raw, so a corrupt ROM page reached the guest.
 */
static void test_device_stream_refuses_an_eager_page_that_fails_its_checksum(void **state)
{
    fixture *fx = *state;
    g_autofree char *idx = NULL, *want = NULL;
    g_autoptr(GError) err = NULL;
    bool lazy[3] = { true, false, false };
    uint8_t byte;
    uint64_t i = 0;
    sl_snapshot *s;
    int fd;

    SL_TEST_NEED_CACHESTAT("it tells the index is on disk before it takes its name");
    idx = g_strdup_printf("%s.slidx", fx->path);
    s = open_ok(fx->path, 0);
    if (!sl_index_write(s, idx, NULL, &err)) {
        fail_msg("indexing: %s", err->message);
    }
    /* On disk before it took its name: a crash leaves no index without its checksums. */
    assert_int_equal(sl_test_pages_not_on_disk(idx), 0);
    sl_snapshot_close(s);
    while (!qs_page_stored(fx->d, 1, i)) {
        assert_true(++i * PAGE < fx->d->blocks[1].length);
    }
    fd = open(fx->path, O_RDWR);
    assert_true(fd >= 0 && pread(fd, &byte, 1, (off_t)(fx->l.blocks[1].pages + i * PAGE + 3)) == 1);
    byte ^= 0x20;
    assert_true(pwrite(fd, &byte, 1, (off_t)(fx->l.blocks[1].pages + i * PAGE + 3)) == 1);
    close(fd);
    s = open_ok(fx->path, 0);
    assert_true(sl_snapshot_has_checksums(s));
    assert_true(unlink(fx->copy) == 0 || errno == ENOENT);
    assert_false(sl_qemu_write_device_stream(s, fx->copy, lazy, &err));
    want = g_strdup_printf("block '%s' page %" G_GUINT64_FORMAT ": checksum mismatch",
                           fx->d->blocks[1].idstr, i);
    if (!strstr(err->message, want)) {
        fail_msg("'%s' not in: %s", want, err->message);
    }
    assert_false(g_file_test(fx->copy, G_FILE_TEST_EXISTS));
    g_clear_error(&err);
    lazy[1] = true; /* left to the restore, which checks each page it places */
    if (!sl_qemu_write_device_stream(s, fx->copy, lazy, &err)) {
        fail_msg("a stream without the corrupt block: %s", err->message);
    }
    sl_snapshot_close(s);
    unlink(idx);
}

/*
 * No bitmap is read before every block's regions are found apart: a file
 * whose block 1 has a bit past its last page (found when its bitmap is
 * read) and whose block 2's bitmap lies over block 1's pages is refused
 * for the overlap.  Found by review: each bitmap was read as its record was
 * parsed, so 1024 overlapping blocks of 32 GiB made a 4 MB file cost
 * 2 GB of memory before the overlap was seen.
 */
static void test_overlaps_are_refused_before_any_bitmap_is_read(void **state)
{
    fixture *fx = *state;
    static const patch_case stray = { "bit past the last page", "block1.bitmap", XOR_BYTE,
                                      0x04, .at = 1 };
    static const patch_case overlap = { "bitmap over block 1's pages", "block2.mr_bitmap_offset",
                                        SET, 0, .base = AT_FIELD, .base_field = "block1.pages" };
    g_autofree uint8_t *buf = g_memdup2(fx->buf, fx->len);

    apply_patch(fx, buf, &stray);
    write_sparse(fx->copy, buf, fx->len);
    expect_refused(fx->copy, 0, "bits set past its 10 pages", NULL, "the stray bit alone");
    apply_patch(fx, buf, &overlap);
    write_sparse(fx->copy, buf, fx->len);
    expect_refused(fx->copy, 0, "overlaps", "block 2 ('pc.bios') bitmap", "both");
    expect_refused(fx->copy, SL_OPEN_LAZY_CHECKSUMS, "overlaps", "bitmap", "both, lazily");
}

/*
 * A section of the sidecar index that is damaged is named as the index's,
 * not the QEMU file's (found by review: the message sent the user to the
 * QEMU file, which was intact).
 */
static void test_a_damaged_index_section_names_the_index(void **state)
{
    fixture *fx = *state;
    g_autofree char *idx = g_strdup_printf("%s.slidx", fx->path), *want = NULL;
    g_autoptr(GError) err = NULL;
    uint8_t entry[16] = { 0 }, byte;
    g_autoptr(GBytes) hot = g_bytes_new(entry, sizeof(entry)); /* block 0 page 0 */
    sl_snapshot *s = open_ok(fx->path, 0);
    uint64_t at = 0;
    int fd;

    if (!sl_index_write(s, idx, hot, &err)) {
        fail_msg("indexing: %s", err->message);
    }
    sl_snapshot_close(s);
    s = open_ok(fx->path, 0);
    for (unsigned j = 0; j < s->nsections; j++) {
        at = s->sections[j].type == SL_SECTION_HOT_PAGES ? s->sections[j].offset : at;
    }
    sl_snapshot_close(s);
    assert_true(at > 0);
    fd = open(idx, O_RDWR);
    assert_true(fd >= 0 && pread(fd, &byte, 1, (off_t)at + 8) == 1);
    byte ^= 0x01;
    assert_true(pwrite(fd, &byte, 1, (off_t)at + 8) == 1);
    close(fd);
    s = open_ok(fx->path, 0);
    assert_null(sl_snapshot_read_section(s, SL_SECTION_HOT_PAGES, &err));
    sl_snapshot_close(s);
    want = g_strdup_printf("%s: section", idx);
    if (!strstr(err->message, want) || !strstr(err->message, "checksum mismatch")) {
        fail_msg("'%s' not in: %s", want, err->message);
    }
    unlink(idx);
}

/*
 * An index is never written over what is not a regular file: a FIFO there
 * is refused by name and stays a FIFO (found by a user's test: /dev/null
 * became a file).  A valid name near NAME_MAX is taken (its partial file
 * was refused as too long); nothing is left beside it either way.
 */
static void test_an_index_never_replaces_a_fifo_and_takes_a_long_name(void **state)
{
    fixture *fx = *state;
    g_autofree char *fifo = g_build_filename(fx->dir, "fifo", NULL);
    g_autofree char *name = g_strnfill(NAME_MAX - 6, 'n');
    g_autofree char *longp = g_build_filename(fx->dir, name, NULL);
    g_autoptr(GError) err = NULL;
    sl_snapshot *s = open_ok(fx->path, 0);
    struct stat st;

    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_false(sl_index_write(s, fifo, NULL, &err));
    assert_non_null(strstr(err->message, "exists and is not a regular file"));
    assert_true(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
    g_clear_error(&err);
    if (!sl_index_write(s, longp, NULL, &err)) {
        fail_msg("an index named with %zu bytes: %s", strlen(name), err->message);
    }
    sl_snapshot_close(s);
    assert_true(stat(longp, &st) == 0 && S_ISREG(st.st_mode));
    /* the QEMU file, its copy's place, the FIFO and the index: no partial */
    assert_int_equal(sl_test_dir_entries(fx->dir), 3 + g_file_test(fx->copy, G_FILE_TEST_EXISTS));
    unlink(longp);
    unlink(fifo);
}

/* XORs byte @off of file @path with 0x01. */
static void flip_file_byte(const char *path, uint64_t off)
{
    uint8_t byte;
    int fd = open(path, O_RDWR);

    assert_true(fd >= 0 && pread(fd, &byte, 1, (off_t)off) == 1);
    byte ^= 0x01;
    assert_true(pwrite(fd, &byte, 1, (off_t)off) == 1);
    close(fd);
}

/* Runs `snapload index` with @args (then the fixture's file): its status and stderr. */
static int run_index(const fixture *fx, const char *a1, const char *a2, char **errs)
{
    g_autofree char *out = NULL;

    g_clear_pointer(errs, g_free);
    return sl_test_run_cli((const char *const[]){ "index", a1 ? a1 : fx->path,
                                                  a1 ? a2 : NULL, a1 ? fx->path : NULL, NULL },
                           &out, errs);
}

/*
 * `snapload index` never loses the index there was: a run that fails (a
 * hot list that names no page of the file) keeps it, and says which --hot
 * file is wrong; and a stale index (the file changed since) neither
 * refuses the run that replaces it nor a run that writes elsewhere.
 * Found by review: the old index was unlinked first, and then attached to
 * the file being indexed, which it refused.
 */
static void test_index_keeps_the_old_index_and_replaces_a_stale_one(void **state)
{
    fixture *fx = *state;
    g_autofree char *idx = g_strdup_printf("%s.slidx", fx->path), *errs = NULL;
    g_autofree char *bad = g_strdup_printf("%s.badhot", fx->path);
    g_autofree char *other = g_strdup_printf("%s.other", fx->path);
    uint8_t entry[16] = { 0, 0, 1 }; /* block 0x10000: there is none */
    sl_snapshot *s;

    assert_true(g_file_set_contents(bad, (const char *)entry, sizeof(entry), NULL));
    assert_int_equal(run_index(fx, NULL, NULL, &errs), 0);
    assert_int_not_equal(run_index(fx, "--hot", bad, &errs), 0);
    if (!strstr(errs, bad) || !strstr(errs, "hot-page list entry 0")) {
        fail_msg("the --hot file is not named: %s", errs);
    }
    s = open_ok(fx->path, 0);
    assert_true(sl_snapshot_has_checksums(s)); /* the index is still there */
    sl_snapshot_close(s);
    flip_file_byte(fx->path, fx->l.devstate); /* the file changes: the index is stale */
    assert_null(sl_snapshot_open(fx->path, NULL));
    if (run_index(fx, "-o", other, &errs) != 0 || run_index(fx, NULL, NULL, &errs) != 0) {
        fail_msg("a stale index refused its replacement: %s", errs);
    }
    s = open_ok(fx->path, 0);
    assert_true(sl_snapshot_has_checksums(s));
    sl_snapshot_close(s);
    unlink(bad);
    unlink(other);
    unlink(idx);
}

/* A case run on fixture @fx (plain, shared, postcopy), named for both. */
#define CASE(fn, fx) { #fn "_" #fx, fn, setup_##fx, teardown_fixture, NULL }

/*
 * A device stream that cannot be written (here: larger than the process may
 * write, RLIMIT_FSIZE) fails with SL_ERROR_IO and leaves no partial file.
 * In a child, so that the limit stays there.
 */
static void test_device_stream_that_cannot_be_written_leaves_no_file(void **state)
{
    fixture *fx = *state;
    static const bool lazy[3] = { false, false, false };
    pid_t pid;

    assert_true(unlink(fx->copy) == 0 || errno == ENOENT);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit lim = { .rlim_cur = MiB, .rlim_max = RLIM_INFINITY };
        sl_snapshot *s = sl_snapshot_open(fx->path, NULL);
        GError *err = NULL;
        bool ok;

        signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
        setrlimit(RLIMIT_FSIZE, &lim);
        ok = s && sl_qemu_write_device_stream(s, fx->copy, lazy, &err);
        if (!s || ok || err->code != SL_ERROR_IO) {
            _exit(2);
        }
        _exit(access(fx->copy, F_OK) == 0 ? 3 : 0); /* 3: a partial file was left */
    }
    assert_child_exits_0(pid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_stream_reads_blocks_bits_and_pages_as_generated, plain),
        CASE(test_x_ignore_shared_gives_gpas_and_left_out_blocks_are_not_read, shared),
        CASE(test_postcopy_page_size_field_is_skipped_and_kept_in_the_record, postcopy),
        cmocka_unit_test(test_what_qemu_may_leave_out_or_vary_is_accepted),
        cmocka_unit_test(test_blocks_of_many_bitmap_words_and_segments_read_as_generated),
        CASE(test_damaged_header_and_configuration_are_refused_by_name, plain),
        CASE(test_damaged_ram_section_start_is_refused_by_name, plain),
        CASE(test_damaged_block_records_are_refused_by_name, plain),
        CASE(test_offsets_outside_the_file_overlaps_and_stray_bits_are_refused, plain),
        CASE(test_damaged_end_of_the_ram_section_is_refused_by_name, plain),
        CASE(test_damaged_x_ignore_shared_records_are_refused, shared),
        CASE(test_damaged_postcopy_records_are_refused, postcopy),
        cmocka_unit_test(test_more_than_1024_blocks_are_refused),
        cmocka_unit_test(test_ram_beyond_32_tib_is_refused_before_any_allocation),
        cmocka_unit_test(test_stream_without_configuration_or_mapped_ram_is_refused),
        cmocka_unit_test(test_a_repeated_configuration_subsection_is_refused),
        cmocka_unit_test(test_cli_refuses_to_read_a_block_left_in_shared_memory),
        cmocka_unit_test(test_inspect_json_escapes_what_the_stream_names),
        cmocka_unit_test(test_postcopy_page_size_before_the_gpa_is_read_in_qemu_order),
        cmocka_unit_test(test_block_name_with_control_bytes_is_refused),
        cmocka_unit_test(test_duplicate_block_names_are_refused),
        cmocka_unit_test(test_left_out_block_without_x_ignore_shared_is_refused),
        CASE(test_page_checksum_of_a_stream_without_checksums_is_zero, plain),
        CASE(test_a_verified_eager_load_of_a_stream_without_checksums_loads_it, plain),
        CASE(test_device_stream_refuses_an_eager_page_that_fails_its_checksum, plain),
        CASE(test_overlaps_are_refused_before_any_bitmap_is_read, plain),
        CASE(test_a_damaged_index_section_names_the_index, plain),
        CASE(test_an_index_never_replaces_a_fifo_and_takes_a_long_name, plain),
        CASE(test_index_keeps_the_old_index_and_replaces_a_stale_one, plain),
        CASE(test_truncation_at_every_field_boundary_is_a_clean_error, plain),
        CASE(test_truncation_at_every_field_boundary_is_a_clean_error, shared),
        CASE(test_truncation_at_every_field_boundary_is_a_clean_error, postcopy),
        CASE(test_random_byte_flips_never_crash_or_yield_a_wrong_page, plain),
        CASE(test_random_byte_flips_never_crash_or_yield_a_wrong_page, shared),
        CASE(test_random_insertions_never_crash_or_yield_a_wrong_page, plain),
        CASE(test_device_stream_keeps_eager_blocks_and_empties_lazy_ones, plain),
        CASE(test_device_stream_keeps_eager_blocks_and_empties_lazy_ones, shared),
        CASE(test_device_stream_keeps_eager_blocks_and_empties_lazy_ones, postcopy),
        cmocka_unit_test(test_device_stream_of_a_dominant_lazy_block_is_sparse),
        CASE(test_device_stream_never_overwrites_an_existing_file, plain),
        CASE(test_index_refuses_its_own_file_and_a_bad_hot_list, plain),
        CASE(test_device_stream_that_cannot_be_written_leaves_no_file, plain),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
