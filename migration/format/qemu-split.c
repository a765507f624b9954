/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Splits QEMU's plain precopy migration stream (what `migrate` writes
 * without mapped-ram: the only kind QEMU 7.2 writes) into the pages of
 * chosen RAM blocks and the rest.  qemu-save uses it for guest RAM that is
 * in no file (plain -m, memory-backend-ram): those blocks' pages go into
 * files of their own (then into the snapshot, with checksums), and what is
 * left (the RAM section's block list, the pages of the other blocks, the
 * device state) is a stream QEMU loads as it is, RAM then left untouched
 * for a lazy restore to fill.  What is read:
 *
 *   "QEVM" 3 [configuration]
 *   0x01 id "ram" instance 4   u64 total|MEM_SIZE  { idstr u64 length [u64 GPA] }*
 *        records  [0x7e id]
 *   { 0x02|0x03 id  records  [0x7e id] }*
 *   [0x08 u16 command u16 length bytes]  (copied)
 *   after the RAM section's END: the other devices' state and the end, copied as it is
 *
 * A record is u64 offset|flags, then (unless CONTINUE) the block's idstr,
 * then a fill byte (ZERO) or a 4 KiB page (PAGE); EOS ends a section's
 * records.  QEMU writes the devices' full state after the RAM section's
 * END (savevm.c, completion of precopy): that END starts the tail.  Refused,
 * naming what: any other section before it (virtio-mem writes its state
 * right after the RAM section's start since QEMU 8.0: RAM records after it
 * cannot be found without walking it), another iterative
 * device (its data cannot be walked), postcopy-ram (page sizes the stream
 * does not say), compressed, XBZRLE or multifd pages, a block or offset
 * the block list does not have.  Kept records always name their block, so
 * dropping the ones between never breaks a CONTINUE chain.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "migration/format/qemu-int.h"

#define SEC_PART        0x02
#define SEC_END         0x03
#define SEC_START_FULL  0x04
#define SEC_COMMAND     0x08
#define CMD_PACKAGED    8u      /* a whole stream inside (postcopy): not walked */
#define RAM_ZERO        0x02ull
#define RAM_PAGE        0x08ull
#define RAM_CONTINUE    0x20ull
#define RAM_FLAGS       (TARGET_PAGE - 1)
#define OUT_BUF         (1u << 20)
#define IN_WINDOW       (1u << 20)  /* the input read ahead: one pread per 255 page records */
#define RUN_PAGES       256u        /* a lazy block's consecutive pages written at once */

/* One block of the RAM section's list. */
typedef struct {
    char name[SL_BLOCK_NAME_MAX];
    uint64_t length;
    int lazy;              /* index into the caller's arrays, -1: kept in the stream */
    uint64_t *written;     /* lazy: pages written to its file (a later ZERO clears them) */
} split_block;

/* The splitter's state: the reader, the output and the block list. */
typedef struct {
    qctx c;
    int out;
    uint64_t out_off;
    GByteArray *buf;       /* output not yet written */
    split_block *blocks;
    unsigned nblocks;
    const int *lazy_fds;
    int last;              /* the block of the last record, -1: none yet */
    uint8_t *run;          /* pages of a lazy block not yet written, consecutive */
    int run_block;         /* their block */
    uint64_t run_first;    /* the first one's index */
    unsigned run_pages;    /* how many (0: none) */
} splitter;

static bool flush(splitter *sp, GError **errp)
{
    int ret = sp->buf->len ? sl_pwrite_full(sp->out, sp->buf->data, sp->buf->len, sp->out_off) : 0;

    if (ret < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "writing the device state: %s",
                    g_strerror(-ret));
        return false;
    }
    sp->out_off += sp->buf->len;
    g_byte_array_set_size(sp->buf, 0);
    return true;
}

static bool emit(splitter *sp, const void *p, size_t n, GError **errp)
{
    g_byte_array_append(sp->buf, p, (guint)n);
    return sp->buf->len < OUT_BUF || flush(sp, errp);
}

/* Copies the input from @from to the reader's position to the output, in
 * 4 KiB pieces (a short file: the error names the piece's offset). */
static bool emit_input(splitter *sp, uint64_t from, GError **errp)
{
    const uint8_t *p;

    for (uint64_t o = from; o < sp->c.off;) {
        size_t n = (size_t)MIN(TARGET_PAGE, sp->c.off - o);
        if (!sl_qs_view(&sp->c, o, n, &p, "stream", errp) || !emit(sp, p, n, errp)) {
            return false;
        }
        o += n;
    }
    return true;
}

/* The rest of a pipe, from the reader's position to its end, as it is. */
static bool emit_pipe_tail(splitter *sp, GError **errp)
{
    for (;;) {
        ssize_t r;
        if (sp->c.off < sp->c.win_off + sp->c.win_len) {
            size_t n = (size_t)(sp->c.win_off + sp->c.win_len - sp->c.off);
            if (!emit(sp, sp->c.win + (sp->c.off - sp->c.win_off), n, errp)) {
                return false;
            }
            sp->c.off += n;
        }
        sp->c.win_off = sp->c.off; /* the window is empty: read on */
        sp->c.win_len = 0;
        do {
            r = read(sp->c.fd, sp->c.win, sp->c.win_cap);
        } while (r < 0 && errno == EINTR);
        if (r <= 0) {
            return r == 0 || (g_set_error(errp, SL_ERROR, SL_ERROR_IO, "reading the stream at "
                                          "offset %" G_GUINT64_FORMAT ": %s", sp->c.off,
                                          g_strerror(errno)), false);
        }
        sp->c.win_len = (size_t)r;
    }
}

/* The rest of the input, from @from to its end, as it is. */
static bool emit_tail(splitter *sp, uint64_t from, GError **errp)
{
    struct stat st;

    if (sp->c.pipe) {
        return emit_input(sp, from, errp) && emit_pipe_tail(sp, errp);
    }
    if (fstat(sp->c.fd, &st) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "stream: %s", g_strerror(errno));
        return false;
    }
    sp->c.off = (uint64_t)st.st_size;
    return emit_input(sp, from, errp);
}

static int find_block(const splitter *sp, const char *name)
{
    for (unsigned i = 0; i < sp->nblocks; i++) {
        if (!strcmp(sp->blocks[i].name, name)) {
            return (int)i;
        }
    }
    return -1;
}

/* The RAM section's block list, after its header; copied as it is. */
static bool parse_block_list(splitter *sp, const char *const *lazy, const uint64_t *sizes,
                             GError **errp)
{
    uint64_t total, acc = 0, gpa;

    if (!sl_qs_be64(&sp->c, &total, "RAM total size", errp)) {
        return false;
    }
    if (!(total & RAM_MEM_SIZE) || (total & ~RAM_FLAGS) > QEMU_MAX_RAM) {
        return SL_BAD(errp, "section 'ram': total 0x%" G_GINT64_MODIFIER "x is no MEM_SIZE "
                      "record of at most %llu TiB", total, QEMU_MAX_RAM >> 40);
    }
    total &= ~RAM_FLAGS;
    while (acc < total) {
        split_block *b;
        if (sp->nblocks == SL_MAX_BLOCKS) {
            return SL_BAD(errp, "more than %u RAM blocks", SL_MAX_BLOCKS);
        }
        b = &sp->blocks[sp->nblocks];
        if (!sl_qs_str8(&sp->c, b->name, "RAM block name", errp) ||
            !sl_qs_be64(&sp->c, &b->length, "RAM block length", errp) ||
            (sp->c.q->ignore_shared && !sl_qs_be64(&sp->c, &gpa, "RAM block address", errp))) {
            return false;
        }
        if (b->length % TARGET_PAGE || b->length > total - acc || find_block(sp, b->name) >= 0) {
            return SL_BAD(errp, "RAM block '%s': length %" G_GUINT64_FORMAT " is not whole "
                          "pages within the total, or the name comes twice", b->name, b->length);
        }
        acc += b->length;
        b->lazy = -1;
        for (int i = 0; lazy[i]; i++) {
            if (strcmp(lazy[i], b->name) || b->lazy >= 0) { /* a name given twice: the first */
                continue;
            }
            if (b->length != sizes[i]) {
                return SL_BAD(errp, "RAM block '%s' has %" G_GUINT64_FORMAT " bytes in the "
                              "stream, not the %" G_GUINT64_FORMAT " of QEMU's backend", b->name,
                              b->length, sizes[i]);
            }
            b->lazy = i;
            b->written = g_new0(uint64_t, sl_bitmap_bytes(b->length / TARGET_PAGE) / 8);
        }
        sp->nblocks++;
    }
    return true;
}

static bool lazy_write_failed(const split_block *b, uint64_t idx, int err, GError **errp)
{
    g_set_error(errp, SL_ERROR, SL_ERROR_IO, "RAM block '%s': writing page %" G_GUINT64_FORMAT
                ": %s", b->name, idx, g_strerror(err));
    return false;
}

/* The pages held back for a lazy block into its file, in one write (a
 * failure names the page it reached, as a write of each alone would). */
static bool flush_run(splitter *sp, GError **errp)
{
    const split_block *b = &sp->blocks[sp->run_block];
    uint64_t off = sp->run_first * TARGET_PAGE;
    size_t len = sp->run_pages * TARGET_PAGE, done = 0;

    sp->run_pages = 0;
    while (done < len) {
        ssize_t n = pwrite(sp->lazy_fds[b->lazy], sp->run + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return lazy_write_failed(b, (off + done) / TARGET_PAGE, n < 0 ? errno : EIO, errp);
        }
        done += (size_t)n;
    }
    return true;
}

/* Whether page @idx of @block goes at the end of the pages held back. */
static bool joins_run(const splitter *sp, int block, uint64_t idx)
{
    return sp->run_block == block && sp->run_pages < RUN_PAGES &&
           idx == sp->run_first + sp->run_pages;
}

/* A lazy block's page @idx: @page's bytes (NULL: zeros, as a hole) into its
 * file; pages that follow each other are held back and written together
 * (before anything else touches the file). */
static bool put_lazy(splitter *sp, int block, uint64_t idx, const uint8_t *page, GError **errp)
{
    split_block *b = &sp->blocks[block];
    uint64_t off = idx * TARGET_PAGE;

    if (sp->run_pages && (page ? !joins_run(sp, block, idx) : sl_bit_test(b->written, idx)) &&
        !flush_run(sp, errp)) {
        return false;
    }
    if (page) {
        if (!sp->run_pages) {
            sp->run_block = block;
            sp->run_first = idx;
        }
        memcpy(sp->run + (size_t)sp->run_pages++ * TARGET_PAGE, page, TARGET_PAGE);
        sl_bit_set(b->written, idx);
    } else if (sl_bit_test(b->written, idx)) { /* sent again, now zero: back to a hole */
        if (fallocate(sp->lazy_fds[b->lazy], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      (off_t)off, (off_t)TARGET_PAGE) < 0) {
            return lazy_write_failed(b, idx, errno, errp);
        }
        sl_bit_clear(b->written, idx);
    }
    return true;
}

/* A kept record, naming its block: header, then @payload (@n bytes). */
static bool emit_record(splitter *sp, const split_block *b, uint64_t head, const uint8_t *payload,
                        size_t n, GError **errp)
{
    uint8_t h[8 + 1 + 255], len = (uint8_t)strlen(b->name);

    sl_put_be64(h, head & ~RAM_CONTINUE);
    h[8] = len;
    memcpy(h + 9, b->name, len);
    return emit(sp, h, 9u + len, errp) && emit(sp, payload, n, errp);
}

/* One record after its u64 @head (not EOS). */
static bool split_record(splitter *sp, uint64_t head, GError **errp)
{
    uint64_t flags = head & RAM_FLAGS, addr = head & ~RAM_FLAGS;
    uint8_t filled[TARGET_PAGE], fill = 0;
    const uint8_t *page = &fill;
    char name[SL_BLOCK_NAME_MAX];
    bool zero = (flags & ~RAM_CONTINUE) == RAM_ZERO;
    split_block *b;

    if (!zero && (flags & ~RAM_CONTINUE) != RAM_PAGE) {
        return SL_BAD(errp, "section 'ram': record flags 0x%" G_GINT64_MODIFIER "x at offset %"
                      G_GUINT64_FORMAT ": only whole and zero pages are read (no compression, "
                      "XBZRLE or multifd)", flags, sp->c.off - 8);
    }
    if (!(flags & RAM_CONTINUE)) {
        if (!sl_qs_str8(&sp->c, name, "RAM record block name", errp)) {
            return false;
        }
        sp->last = find_block(sp, name);
        if (sp->last < 0) {
            return SL_BAD(errp, "section 'ram': a page of block '%s', which the block list "
                          "does not have", name);
        }
    } else if (sp->last < 0) {
        return SL_BAD(errp, "section 'ram': the first page record continues no block");
    }
    b = &sp->blocks[sp->last];
    if (addr >= b->length) {
        return SL_BAD(errp, "RAM block '%s': page at 0x%" G_GINT64_MODIFIER "x is beyond its %"
                      G_GUINT64_FORMAT " bytes", b->name, addr, b->length);
    }
    if (!(zero ? sl_qs_u8(&sp->c, &fill, "zero page fill", errp)
               : sl_qs_take(&sp->c, TARGET_PAGE, &page, "RAM page", errp))) {
        return false; /* a page: in the reader's window until its next read */
    }
    if (b->lazy < 0) {
        return emit_record(sp, b, head, page, zero ? 1 : TARGET_PAGE, errp);
    }
    if (zero && fill) {
        page = memset(filled, fill, sizeof(filled));
    }
    return put_lazy(sp, sp->last, addr / TARGET_PAGE, zero && !fill ? NULL : page, errp);
}

/* Records until EOS (copied), then the section's footer if there is one. */
static bool split_records(splitter *sp, uint32_t id, GError **errp)
{
    uint64_t head, at;
    uint32_t fid;
    uint8_t type;

    for (;;) {
        if (!sl_qs_be64(&sp->c, &head, "RAM record", errp)) {
            return false;
        }
        if (head & RAM_EOS) {
            if (head != RAM_EOS) {
                return SL_BAD(errp, "section 'ram': end-of-section record 0x%" G_GINT64_MODIFIER
                              "x carries other flags", head);
            }
            break;
        }
        if (!split_record(sp, head, errp)) {
            return false;
        }
    }
    at = sp->c.off - 8; /* the EOS record, kept */
    if (!emit_input(sp, at, errp) || !sl_qs_u8(&sp->c, &type, "section type", errp)) {
        return false;
    }
    if (type != SEC_FOOTER) {
        sp->c.off--;
        return true;
    }
    if (!sl_qs_be32(&sp->c, &fid, "section footer", errp)) {
        return false;
    }
    if (fid != id) {
        return SL_BAD(errp, "section 'ram': footer of section %u after section %u", fid, id);
    }
    return emit_input(sp, sp->c.off - 5, errp);
}

/*
 * A command between sections (QEMU 10 sends SWITCHOVER_START before the
 * last RAM section): u16 command, u16 length, its bytes; copied.
 */
static bool copy_command(splitter *sp, uint64_t at, GError **errp)
{
    uint8_t h[4];
    unsigned cmd;

    if (!sl_qs_get(&sp->c, h, sizeof(h), "command header", errp)) {
        return false;
    }
    cmd = (unsigned)h[0] << 8 | h[1];
    if (cmd == CMD_PACKAGED) {
        return SL_BAD(errp, "a packaged stream (postcopy) at offset %" G_GUINT64_FORMAT, at);
    }
    /* Its data, copied (read once; a stream cut short there fails the copy). */
    sp->c.off += (unsigned)h[2] << 8 | h[3];
    return emit_input(sp, at, errp);
}

/*
 * Any other section before the RAM section's end: refused, named.  QEMU
 * writes some devices' state early (virtio-mem, since 8.0, right after the
 * RAM section's start); RAM records after it cannot be found without
 * walking it, and taking it for the tail would leave them in the stream.
 */
static bool refuse_early(splitter *sp, uint8_t type, GError **errp)
{
    char name[SL_BLOCK_NAME_MAX] = "?";
    uint32_t id;

    if (type == SEC_START_FULL) {
        (void)(sl_qs_be32(&sp->c, &id, "section id", NULL) &&
               sl_qs_str8(&sp->c, name, "section name", NULL));
    }
    return SL_BAD(errp, "section type %u ('%s') before the end of the RAM section: device "
                  "state QEMU writes early (virtio-mem?) cannot be walked here", type, name);
}

/* The sections after the header: RAM ones split, commands among them
 * copied; what follows the RAM section's end is the tail, as it is. */
static bool split_sections(splitter *sp, const char *const *lazy, const uint64_t *sizes,
                           GError **errp)
{
    uint32_t id, ram_id = 0, instance, version;
    char name[SL_BLOCK_NAME_MAX];
    bool started = false;
    uint8_t type;

    for (;;) {
        uint64_t at = sp->c.off;
        sp->c.keep = at; /* read from a pipe, the section's header stays to be copied */
        if (!sl_qs_u8(&sp->c, &type, "section type", errp)) {
            return false;
        }
        if (type == SEC_COMMAND && started) {
            if (!copy_command(sp, at, errp)) {
                return false;
            }
            continue;
        }
        if (type != SEC_START && type != SEC_PART && type != SEC_END) {
            return refuse_early(sp, type, errp);
        }
        if (!sl_qs_be32(&sp->c, &id, "section id", errp)) {
            return false;
        }
        if (type == SEC_START) {
            if (!sl_qs_str8(&sp->c, name, "section name", errp) ||
                !sl_qs_be32(&sp->c, &instance, "section instance", errp) ||
                !sl_qs_be32(&sp->c, &version, "section version", errp)) {
                return false;
            }
            if (strcmp(name, "ram") || started) {
                return SL_BAD(errp, "iterative section '%s' beside 'ram': its data cannot be "
                              "walked without QEMU (migrate without block migration or dirty "
                              "bitmaps)", name);
            }
            if (version != RAM_VERSION) {
                return SL_BAD(errp, "section 'ram': version %u is not supported (want %u)",
                              version, RAM_VERSION);
            }
            started = true;
            ram_id = id;
            if (!parse_block_list(sp, lazy, sizes, errp)) {
                return false;
            }
        } else if (!started || id != ram_id) {
            return SL_BAD(errp, "section %u continues no section this reader started", id);
        }
        if (!emit_input(sp, at, errp)) {
            return false;
        }
        sp->c.keep = UINT64_MAX; /* the records are read once, in order */
        if (!split_records(sp, id, errp)) {
            return false;
        }
        if (type == SEC_END) { /* the RAM section's last: the rest is the devices' */
            return emit_tail(sp, sp->c.off, errp);
        }
    }
}

bool sl_qemu_split_stream(int in, int out, const char *const *lazy, const int *lazy_fds,
                          const uint64_t *lazy_sizes, bool ignore_shared, GError **errp)
{
    splitter sp = { .c = { .fd = in }, .out = out, .lazy_fds = lazy_fds, .last = -1,
                    .buf = g_byte_array_new(), .blocks = g_new0(split_block, SL_MAX_BLOCKS),
                    .run = g_malloc(RUN_PAGES * TARGET_PAGE) };
    struct stat st;
    bool ok;

    if (fstat(in, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
        sl_qs_window_pipe(&sp.c, IN_WINDOW); /* QEMU writing it now: split as it comes */
    } else {
        sl_qs_window(&sp.c, IN_WINDOW);
    }
    sp.c.q = g_new0(sl_qemu_stream, 1);
    sp.c.q->caps = g_ptr_array_new_with_free_func(g_free);
    sp.c.q->ignore_shared = ignore_shared; /* the configuration, if any, may say it too */
    ok = sl_qs_header(&sp.c, errp);
    if (ok && g_ptr_array_find_with_equal_func(sp.c.q->caps, "postcopy-ram", g_str_equal, NULL)) {
        ok = SL_BAD(errp, "the stream was saved with postcopy-ram, whose block list holds page "
                    "sizes it does not announce");
    }
    ok = ok && emit_input(&sp, 0, errp) && split_sections(&sp, lazy, lazy_sizes, errp);
    /* The pages held back are written even after a refusal, as they were before. */
    ok = (!sp.run_pages || flush_run(&sp, ok ? errp : NULL)) && ok && flush(&sp, errp);
    for (unsigned i = 0; ok && lazy[i]; i++) {
        bool found = false;
        for (unsigned k = 0; k < sp.nblocks; k++) {
            found |= sp.blocks[k].lazy == (int)i;
        }
        ok = found || SL_BAD(errp, "RAM block '%s' is not in the stream", lazy[i]);
    }
    for (unsigned i = 0; i < sp.nblocks; i++) {
        g_free(sp.blocks[i].written);
    }
    g_free(sp.blocks);
    g_free(sp.run);
    sl_qs_window_free(&sp.c);
    g_byte_array_unref(sp.buf);
    sl_qemu_stream_free(sp.c.q);
    return ok;
}
