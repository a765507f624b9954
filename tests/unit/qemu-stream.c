/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The QEMU mapped-ram stream generator (see qemu-stream.h).  The layout
 * follows what QEMU 9.0 and later write for `migrate file:` with
 * mapped-ram, as seen in QEMU 10.0 files: big-endian stream integers, a
 * block's bitmap (little-endian 64-bit words) right after its mapped-ram
 * header, pages_offset rounded up to 1 MiB past the bitmap, the stream
 * resumed at pages_offset + used length, and the page-size field of
 * postcopy before the GPA of x-ignore-shared.  Each field is written with
 * its own pwrite and recorded by name; zero pages and padding stay holes.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "qemu-stream.h"

/* The writer's state: the file, the next stream offset, the fields so far. */
typedef struct {
    int fd;
    uint64_t pos;
    qs_layout *l;
    GError **errp;
    bool ok;
} qs_writer;

/* ------------------------------------------------------------------ */
/* Page contents                                                       */
/* ------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static bool zero_page(const qs_block *b, uint64_t i)
{
    return (b->zero_every && i % b->zero_every == 0) ||
           (b->stored_every && i % b->stored_every != 0);
}

void qs_page(const qs_desc *d, unsigned b, uint64_t i, uint8_t *out)
{
    const qs_block *blk = &d->blocks[b];
    uint64_t base = mix64(blk->seed * 0x100000001b3ull + i);

    if (zero_page(blk, i)) {
        memset(out, 0, QS_PAGE);
        return;
    }
    for (unsigned w = 0; w < QS_PAGE / 8; w++) {
        uint64_t v = mix64(base + w);
        memcpy(out + 8 * w, &v, 8);
    }
    out[0] = (uint8_t)(b + 1); /* never all zeros, and tells blocks apart */
}

bool qs_page_stored(const qs_desc *d, unsigned b, uint64_t i)
{
    return !d->blocks[b].left_out && !zero_page(&d->blocks[b], i);
}

uint8_t qs_devstate_byte(size_t i)
{
    return (uint8_t)(i * 7 + 3); /* a 0x00 is followed by 0x07: never a false 00 06 */
}

/* ------------------------------------------------------------------ */
/* Writing fields                                                      */
/* ------------------------------------------------------------------ */

static void record_field(qs_writer *w, const char *name, uint64_t off, uint64_t size)
{
    qs_field f = { g_strdup(name), off, size };

    g_array_append_val(w->l->fields, f);
}

/* Writes @n bytes at @off (no field recorded); false once anything failed. */
static bool put_at(qs_writer *w, const void *p, size_t n, uint64_t off)
{
    const uint8_t *b = p;

    while (w->ok && n) {
        ssize_t r = pwrite(w->fd, b, n, (off_t)off);
        if (r <= 0) {
            g_set_error(w->errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                        "writing the stream at offset %" G_GUINT64_FORMAT ": %s", off,
                        g_strerror(r < 0 ? errno : EIO));
            w->ok = false;
        } else {
            b += r;
            off += (uint64_t)r;
            n -= (size_t)r;
        }
    }
    return w->ok;
}

/* The field @name of @n bytes at the stream position, which moves past it. */
static void put(qs_writer *w, const char *name, const void *p, size_t n)
{
    record_field(w, name, w->pos, n);
    put_at(w, p, n, w->pos);
    w->pos += n;
}

static void put_u8(qs_writer *w, const char *name, uint8_t v)
{
    put(w, name, &v, 1);
}

static void put_be32(qs_writer *w, const char *name, uint32_t v)
{
    uint8_t b[4];

    for (int i = 0; i < 4; i++) {
        b[3 - i] = (uint8_t)(v >> (8 * i));
    }
    put(w, name, b, 4);
}

static void put_be64(qs_writer *w, const char *name, uint64_t v)
{
    uint8_t b[8];

    for (int i = 0; i < 8; i++) {
        b[7 - i] = (uint8_t)(v >> (8 * i));
    }
    put(w, name, b, 8);
}

/* A u8-length string: "<prefix>_len" then "<prefix>". */
static void put_str8(qs_writer *w, const char *prefix, const char *s)
{
    g_autofree char *len_name = g_strdup_printf("%s_len", prefix);

    put_u8(w, len_name, (uint8_t)strlen(s));
    put(w, prefix, s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* The configuration section: machine type, then its subsections in    */
/* the order QEMU writes them                                          */
/* ------------------------------------------------------------------ */

/* A subsection's header: 0x05, its name, its version. */
static void put_subsection(qs_writer *w, const char *prefix, const char *name)
{
    g_autofree char *type = g_strdup_printf("%s.type", prefix);
    g_autofree char *sname = g_strdup_printf("%s.name", prefix);
    g_autofree char *version = g_strdup_printf("%s.version", prefix);

    put_u8(w, type, 0x05);
    put_str8(w, sname, name);
    put_be32(w, version, 1);
}

static void put_capabilities(qs_writer *w, const char *const *caps)
{
    uint32_t n = 0;

    while (caps && caps[n]) {
        n++;
    }
    put_subsection(w, "caps", "configuration/capabilities");
    put_be32(w, "caps.count", n);
    for (uint32_t i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("caps.cap%u", i);
        put_str8(w, name, caps[i]);
    }
}

static void put_configuration(qs_writer *w, const qs_desc *d)
{
    static const uint8_t uuid[16] = { 0x5e, 0xed, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
                                      0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d };

    put_u8(w, "config.type", 0x07);
    put_be32(w, "config.machine_len", (uint32_t)strlen(d->machine));
    put(w, "config.machine", d->machine, strlen(d->machine));
    if (d->target_page_bits) {
        put_subsection(w, "tpb", "configuration/target-page-bits");
        put_be32(w, "tpb.value", 12);
    }
    put_capabilities(w, d->caps);
    for (unsigned i = 0; i < d->uuid; i++) {
        put_subsection(w, "uuid", "configuration/uuid");
        put(w, "uuid.value", uuid, sizeof(uuid));
    }
}

/* ------------------------------------------------------------------ */
/* The RAM section                                                     */
/* ------------------------------------------------------------------ */

static bool has_cap(const qs_desc *d, const char *name)
{
    for (unsigned i = 0; d->caps && d->caps[i]; i++) {
        if (!strcmp(d->caps[i], name)) {
            return true;
        }
    }
    return false;
}

static void put_ram_start(qs_writer *w, const qs_desc *d)
{
    put_u8(w, "ram.type", 0x01);
    put_be32(w, "ram.section_id", d->section_id);
    put_str8(w, "ram.idstr", "ram");
    put_be32(w, "ram.instance", 0);
    put_be32(w, "ram.version", 4);
    put_be64(w, "ram.total", w->l->total | QS_MEM_SIZE);
}

/* The bitmap of block @b: bit i of little-endian word i / 64 says page i is stored. */
static void put_bitmap(qs_writer *w, const qs_desc *d, unsigned b, uint64_t npages)
{
    qs_block_layout *bl = &w->l->blocks[b];
    g_autofree uint8_t *bm = g_malloc0(bl->bitmap_len);
    g_autofree char *name = g_strdup_printf("block%u.bitmap", b);

    for (uint64_t i = 0; i < npages; i++) {
        if (qs_page_stored(d, b, i)) {
            bm[i / 8] |= (uint8_t)(1u << (i % 8));
            bl->stored++;
        }
    }
    record_field(w, name, bl->bitmap, bl->bitmap_len);
    put_at(w, bm, bl->bitmap_len, bl->bitmap);
}

/* Block @b's stored pages, each at pages_offset + i * QS_PAGE; zero pages stay holes. */
static void put_pages(qs_writer *w, const qs_desc *d, unsigned b, uint64_t npages)
{
    const qs_block_layout *bl = &w->l->blocks[b];
    g_autofree char *name = g_strdup_printf("block%u.pages", b);
    uint8_t page[QS_PAGE];

    record_field(w, name, bl->pages, bl->pages_len);
    for (uint64_t i = 0; w->ok && i < npages; i++) {
        if (qs_page_stored(d, b, i)) {
            qs_page(d, b, i, page);
            put_at(w, page, QS_PAGE, bl->pages + i * QS_PAGE);
        }
    }
}

/* The mapped-ram header of block @b, then its bitmap and pages if it has them. */
static void put_mapped_ram(qs_writer *w, const qs_desc *d, unsigned b, const char *pfx)
{
    const qs_block *blk = &d->blocks[b];
    qs_block_layout *bl = &w->l->blocks[b];
    uint64_t npages = blk->length / QS_PAGE;
    uint64_t align = d->pages_align ? d->pages_align : QS_QEMU_ALIGN;
    g_autofree char *ver = g_strdup_printf("%s.mr_version", pfx);
    g_autofree char *ps = g_strdup_printf("%s.mr_page_size", pfx);
    g_autofree char *bmo = g_strdup_printf("%s.mr_bitmap_offset", pfx);
    g_autofree char *pgo = g_strdup_printf("%s.mr_pages_offset", pfx);

    if (!blk->left_out) {
        bl->bitmap = w->pos + 28;
        bl->bitmap_len = (npages + 63) / 64 * 8;
        bl->pages = (bl->bitmap + bl->bitmap_len + align - 1) / align * align;
        bl->pages_len = blk->length;
    }
    put_be32(w, ver, 1);
    put_be64(w, ps, QS_PAGE);
    put_be64(w, bmo, bl->bitmap);
    put_be64(w, pgo, bl->pages);
    bl->record_len = w->pos - bl->record;
    if (!blk->left_out) {
        put_bitmap(w, d, b, npages);
        put_pages(w, d, b, npages);
        w->pos = bl->pages + bl->pages_len;
    }
}

static void put_block(qs_writer *w, const qs_desc *d, unsigned b)
{
    const qs_block *blk = &d->blocks[b];
    g_autofree char *pfx = g_strdup_printf("block%u", b);
    g_autofree char *idstr = g_strdup_printf("%s.idstr", pfx);
    g_autofree char *len = g_strdup_printf("%s.used_length", pfx);
    g_autofree char *psize = g_strdup_printf("%s.page_size", pfx);
    g_autofree char *gpa = g_strdup_printf("%s.gpa", pfx);

    w->l->blocks[b].record = w->pos;
    put_str8(w, idstr, blk->idstr);
    put_be64(w, len, blk->length);
    if (blk->postcopy_page_size) {
        put_be64(w, psize, blk->postcopy_page_size);
    }
    if (has_cap(d, "x-ignore-shared")) {
        put_be64(w, gpa, blk->gpa);
    }
    if (d->plain) {
        w->l->blocks[b].record_len = w->pos - w->l->blocks[b].record;
        return;
    }
    put_mapped_ram(w, d, b, pfx);
}

/* Plain streams: block @b's page records: PAGE for each stored page, ZERO
 * for page 1 if it is not (the rest are never sent, as QEMU skips pages
 * never written when it knows them zero). */
static void put_records(qs_writer *w, const qs_desc *d, unsigned b)
{
    const qs_block *blk = &d->blocks[b];
    g_autofree char *name = g_strdup_printf("records%u", b);
    uint8_t page[QS_PAGE];
    bool first = true;

    for (uint64_t i = 0; w->ok && i < blk->length / QS_PAGE; i++) {
        bool stored = qs_page_stored(d, b, i);
        if (!stored && i != 1) {
            continue;
        }
        put_be64(w, name, i * QS_PAGE | (stored ? 0x08u : 0x02u) | (first ? 0 : 0x20u));
        if (first) {
            put_str8(w, name, blk->idstr);
            first = false;
        }
        if (stored) {
            qs_page(d, b, i, page);
            put(w, name, page, QS_PAGE);
            w->l->blocks[b].stored++;
        } else {
            put_u8(w, name, 0);
        }
    }
}

static void put_ram_end(qs_writer *w, const qs_desc *d)
{
    w->l->eos = w->pos;
    put_be64(w, "eos", QS_RAM_EOS);
    if (!d->no_footer) {
        put_u8(w, "footer.type", 0x7e);
        put_be32(w, "footer.id", d->section_id);
    }
}

/* ------------------------------------------------------------------ */
/* Device state and the end of the file                                */
/* ------------------------------------------------------------------ */

static void put_tail(qs_writer *w, const qs_desc *d)
{
    g_autofree uint8_t *ds = g_malloc(d->devstate_len + 1);

    for (size_t i = 0; i < d->devstate_len; i++) {
        ds[i] = qs_devstate_byte(i);
    }
    w->l->devstate = w->pos;
    put(w, "devstate", ds, d->devstate_len);
    put_u8(w, "eof", 0x00);
    if (d->json) {
        w->l->vmdesc = w->pos;
        w->l->vmdesc_len = 5 + strlen(d->json);
        put_u8(w, "vmdesc.type", 0x06);
        put_be32(w, "vmdesc.len", (uint32_t)strlen(d->json));
        put(w, "vmdesc.json", d->json, strlen(d->json));
    }
}

/* ------------------------------------------------------------------ */
/* The whole file                                                      */
/* ------------------------------------------------------------------ */

static bool check_desc(const qs_desc *d, GError **errp)
{
    for (unsigned b = 0; b < d->nblocks; b++) {
        const qs_block *blk = &d->blocks[b];
        if (!blk->idstr || strlen(blk->idstr) > 255 || !blk->length ||
            blk->length % QS_PAGE) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "block %u: an idstr of at most 255 bytes and whole pages, please", b);
            return false;
        }
    }
    for (unsigned i = 0; d->caps && d->caps[i]; i++) {
        if (strlen(d->caps[i]) > 255) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "capability %u too long", i);
            return false;
        }
    }
    return true;
}

static void layout_init(qs_layout *l, const qs_desc *d)
{
    memset(l, 0, sizeof(*l));
    l->fields = g_array_new(false, false, sizeof(qs_field));
    l->nblocks = d->nblocks;
    l->blocks = g_new0(qs_block_layout, d->nblocks ? d->nblocks : 1);
    for (unsigned b = 0; b < d->nblocks; b++) {
        l->total += d->blocks[b].length;
    }
}

static void put_stream(qs_writer *w, const qs_desc *d)
{
    put(w, "magic", "QEVM", 4);
    put_be32(w, "version", 3);
    if (d->machine) {
        put_configuration(w, d);
    }
    put_ram_start(w, d);
    for (unsigned b = 0; b < d->nblocks; b++) {
        put_block(w, d, b);
    }
    put_ram_end(w, d);
    if (d->plain) {
        put_u8(w, "ram_end.type", 0x03);
        put_be32(w, "ram_end.section_id", d->section_id);
        for (unsigned b = 0; b < d->nblocks; b++) {
            put_records(w, d, b);
        }
        put_ram_end(w, d);
    }
    put_tail(w, d);
}

bool qs_write(const qs_desc *d, const char *path, qs_layout *out, GError **errp)
{
    qs_writer w = { .l = out, .errp = errp, .ok = true };

    layout_init(out, d);
    if (!check_desc(d, errp)) {
        return false;
    }
    w.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w.fd < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno), "%s: %s", path,
                    g_strerror(errno));
        return false;
    }
    put_stream(&w, d);
    out->file_size = w.pos;
    if (w.ok && ftruncate(w.fd, (off_t)w.pos) < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno), "%s: %s", path,
                    g_strerror(errno));
        w.ok = false;
    }
    close(w.fd);
    return w.ok;
}

void qs_layout_clear(qs_layout *l)
{
    for (guint i = 0; l->fields && i < l->fields->len; i++) {
        g_free(g_array_index(l->fields, qs_field, i).name);
    }
    if (l->fields) {
        g_array_free(l->fields, true);
    }
    g_free(l->blocks);
    memset(l, 0, sizeof(*l));
}

const qs_field *qs_find(const qs_layout *l, const char *name)
{
    for (guint i = 0; i < l->fields->len; i++) {
        const qs_field *f = &g_array_index(l->fields, qs_field, i);
        if (!strcmp(f->name, name)) {
            return f;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* A stream through a pipe                                             */
/* ------------------------------------------------------------------ */

/* Whether the pipe is empty, or its reader gone (a refusal stops reading). */
static bool reader_took_all(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int queued = 0;

    return ioctl(fd, FIONREAD, &queued) < 0 || queued == 0 ||
           (poll(&p, 1, 0) > 0 && (p.revents & POLLERR));
}

void qs_feed_pipe(int fd, const uint8_t *data, size_t len, unsigned first, size_t big,
                  bool lockstep)
{
    static const size_t sizes[] = { 1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47,
                                    53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 0 /* @big */ };
    const size_t n = sizeof(sizes) / sizeof(sizes[0]);

    for (size_t at = 0, i = first % n; at < len; i = (i + 1) % n) {
        ssize_t wrote;
        while (lockstep && !reader_took_all(fd)) {
            sched_yield();
        }
        wrote = write(fd, data + at, MIN(len - at, sizes[i] ? sizes[i] : big));
        if (wrote <= 0) {
            return; /* EPIPE: the reader stopped reading (a refusal) */
        }
        at += (size_t)wrote;
    }
}
