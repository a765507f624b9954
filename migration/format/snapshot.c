/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A snapshot, whatever its format: opening (the first bytes pick the
 * reader: our container, or QEMU's migration stream), closing, block and
 * section queries, and the one page reader shared by the fault path, the
 * loaders, the eager baseline and verification.  A stored page whose
 * checksum does not match is an error (-EBADMSG), never data.  A child
 * (chain.c) is opened with its whole chain, and each run of pages is read
 * from the file of the layer that stores it.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "migration/format/format.h"

/* Picks the reader by the first bytes of @s's file (fd and size set). */
static bool parse_any(sl_snapshot *s, unsigned flags, GError **errp)
{
    bool lazy = flags & SL_OPEN_LAZY_CHECKSUMS;
    uint8_t magic[8] = { 0 };

    if (s->file_size >= 4 && !sl_read_at(s->fd, magic, MIN(8, s->file_size), 0, "magic",
                                         errp)) {
        return false;
    }
    if (!memcmp(magic, "QEVM", 4)) {
        g_autofree char *index = g_strdup_printf("%s.slidx", s->path);
        /* Its sidecar index, where there is one: checksums for a file without. */
        return sl_qemu_parse(s, errp) &&
               ((flags & SL_OPEN_NO_INDEX) || !g_file_test(index, G_FILE_TEST_EXISTS) ||
                sl_index_attach(s, index, lazy, errp));
    }
    if (s->file_size >= 8 && memcmp(magic, SL_MAGIC, 8)) {
        return SL_BAD(errp, "magic: neither a snapload snapshot (\"%s\") nor a QEMU "
                      "migration stream (\"QEVM\")", SL_MAGIC);
    }
    return sl_container_parse(s, lazy, false, errp);
}

/* Whether the file of @st was opened before in this chain. */
static bool in_walk(const sl_chain_walk *walk, const struct stat *st)
{
    for (unsigned i = 0; i < walk->depth; i++) {
        if (walk->dev[i] == (uint64_t)st->st_dev && walk->ino[i] == (uint64_t)st->st_ino) {
            return true;
        }
    }
    return false;
}

/* @st's modification time in nanoseconds (sl_snapshot_unchanged()). */
static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* Opens and parses the one file @path; notes it in @walk (a chain's files). */
sl_snapshot *sl_snapshot_open_one(const char *path, unsigned flags, sl_chain_walk *walk,
                                  GError **errp)
{
    sl_snapshot *s = sl_snapshot_alloc(path);
    struct stat st;
    bool ok;

    /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
    s->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (s->fd < 0 || fstat(s->fd, &st) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", path, g_strerror(errno));
        ok = false;
    } else if (!S_ISREG(st.st_mode)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "%s: not a regular file", path);
        ok = false;
    } else if (walk->depth >= SL_MAX_CHAIN) {
        g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "%s: a chain of more than %u snapshots",
                    path, SL_MAX_CHAIN);
        ok = false;
    } else if (in_walk(walk, &st)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "%s: already in this chain (it loops)",
                    path);
        ok = false;
    } else {
        walk->dev[walk->depth] = (uint64_t)st.st_dev;
        walk->ino[walk->depth++] = (uint64_t)st.st_ino;
        s->file_size = (uint64_t)st.st_size;
        s->mtime_ns = mtime_ns(&st);
        ok = parse_any(s, flags, errp);
        if (!ok) {
            g_prefix_error(errp, "%s: ", path);
        }
    }
    if (!ok) {
        sl_snapshot_close(s);
        return NULL;
    }
    return s;
}

sl_snapshot *sl_snapshot_open_in(const char *path, unsigned flags, sl_chain_walk *walk,
                                 GError **errp)
{
    sl_snapshot *s = sl_snapshot_open_one(path, flags, walk, errp);

    if (s && !sl_chain_attach(s, flags, walk, errp)) {
        sl_snapshot_close(s);
        return NULL;
    }
    if (s) {
        sl_identity_compute(s);
    }
    return s;
}

sl_snapshot *sl_snapshot_open_unindexed(const char *path, GError **errp)
{
    sl_chain_walk walk = { .depth = 0 };

    return sl_snapshot_open_in(path, SL_OPEN_NO_INDEX, &walk, errp);
}

sl_snapshot *sl_snapshot_open(const char *path, GError **errp)
{
    return sl_snapshot_open_flags(path, 0, errp);
}

/* Refuses open flags this library does not know (a newer caller's). */
static bool known_flags(const char *path, unsigned flags, GError **errp)
{
    if (flags & ~(unsigned)SL_OPEN_LAZY_CHECKSUMS) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s: unknown open flags 0x%x", path,
                    flags & ~(unsigned)SL_OPEN_LAZY_CHECKSUMS);
        return false;
    }
    return true;
}

/* Opens @path and its chain, its ancestors where @ancestors says (NULL: recorded). */
static sl_snapshot *open_walk(const char *path, const char *const *ancestors, unsigned flags,
                              GError **errp)
{
    sl_chain_walk walk = { .depth = 0, .ancestors = ancestors };
    sl_snapshot *s;

    if (!*path) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "no snapshot path given (an empty one)");
        return NULL;
    }
    if (!known_flags(path, flags, errp)) {
        return NULL;
    }
    s = sl_snapshot_open_in(path, flags, &walk, errp);
    if (s && !sl_chain_fits_list(s, ancestors, errp)) {
        sl_snapshot_close(s);
        return NULL;
    }
    return s;
}

sl_snapshot *sl_snapshot_open_flags(const char *path, unsigned flags, GError **errp)
{
    SL_ARG(path, errp, NULL);
    return open_walk(path, NULL, flags, errp);
}

sl_snapshot *sl_snapshot_open_chain(const char *child, const char *parent, unsigned flags,
                                    GError **errp)
{
    SL_ARG(child, errp, NULL);
    if (!parent || !*parent) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s: no parent path given", child);
        return NULL;
    }
    return open_walk(child, (const char *const[]){ parent, NULL }, flags, errp);
}

sl_snapshot *sl_snapshot_open_ancestors(const char *child, const char *const *ancestors,
                                        unsigned flags, GError **errp)
{
    SL_ARG(child, errp, NULL);
    SL_ARG(ancestors, errp, NULL);
    return open_walk(child, ancestors, flags, errp);
}

sl_snapshot *sl_snapshot_alloc(const char *path)
{
    sl_snapshot *s = g_new0(sl_snapshot, 1);

    s->refs = 1;
    s->path = g_strdup(path);
    s->fd = -1;
    s->index_fd = -1;
    return s;
}

sl_snapshot *sl_snapshot_ref(sl_snapshot *s)
{
    /* Full barrier (GLib); the caller already holds a reference, so the
     * count cannot reach zero meanwhile. */
    g_atomic_int_inc(&s->refs);
    return s;
}

void sl_snapshot_close(sl_snapshot *s)
{
    /* Full barrier (GLib): every holder's use of @s comes before the last
     * decrement, so the one that reaches zero frees it alone. */
    if (!s || !g_atomic_int_dec_and_test(&s->refs)) {
        return;
    }
    if (s->fd >= 0) {
        close(s->fd);
    }
    if (s->index_fd >= 0) {
        close(s->index_fd);
    }
    g_free(s->index_path);
    sl_snapshot_close(s->parent);
    for (unsigned i = 0; s->blocks && i < s->nblocks; i++) {
        g_free(s->blocks[i].bitmap);
        g_free(s->blocks[i].own_bitmap);
        g_free(s->blocks[i].seg_state);
        g_free(s->blocks[i].digests);
        sl_csums_free(&s->blocks[i]);
    }
    g_free(s->blocks);
    g_free(s->sections);
    sl_qemu_stream_free(s->qemu);
    g_free(s->path);
    g_free(s);
}

const char *sl_snapshot_path(const sl_snapshot *s)
{
    return s ? s->path : NULL;
}

sl_snapshot_format sl_snapshot_get_format(const sl_snapshot *s)
{
    return s ? s->format : SL_FORMAT_SNAPLOAD;
}

int sl_snapshot_unchanged(const sl_snapshot *s)
{
    for (; s; s = s->parent) {
        struct stat st;

        if (fstat(s->fd, &st) < 0) {
            return -errno;
        }
        if ((uint64_t)st.st_size != s->file_size ||
            mtime_ns(&st) != s->mtime_ns) {
            return -ESTALE;
        }
    }
    return 0;
}

bool sl_snapshot_has_checksums(const sl_snapshot *s)
{
    return s && s->has_checksums;
}

uint64_t sl_snapshot_max_page_size(const sl_snapshot *s)
{
    uint64_t most = 0;

    for (unsigned b = 0; b < s->nblocks; b++) {
        most = MAX(most, s->blocks[b].page_size);
    }
    return most;
}

unsigned sl_snapshot_n_blocks(const sl_snapshot *s)
{
    return s ? s->nblocks : 0;
}

bool sl_snapshot_block(const sl_snapshot *s, unsigned i, sl_block_info *out)
{
    const sl_block *b;

    if (!s || !out || i >= s->nblocks) {
        return false;
    }
    b = &s->blocks[i];
    *out = (sl_block_info){
        .name = b->name, .length = b->length, .page_size = b->page_size,
        .numa_node = b->numa_node, .pages = b->npages,
        .present_pages = b->present_pages, .pages_offset = b->pages_offset,
    };
    return true;
}

bool sl_snapshot_block_in_file(const sl_snapshot *s, unsigned i)
{
    return s && i < s->nblocks && s->blocks[i].in_file;
}

int sl_snapshot_find_block(const sl_snapshot *s, const char *name)
{
    for (unsigned i = 0; s && name && i < s->nblocks; i++) {
        if (strcmp(s->blocks[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

uint64_t sl_snapshot_file_size(const sl_snapshot *s)
{
    return s ? s->file_size : 0;
}

unsigned sl_snapshot_n_sections(const sl_snapshot *s)
{
    return s ? s->nsections : 0;
}

bool sl_snapshot_section(const sl_snapshot *s, unsigned i, uint32_t *type, uint64_t *length)
{
    if (!s || !type || !length || i >= s->nsections) {
        return false;
    }
    *type = s->sections[i].type;
    *length = s->sections[i].length;
    return true;
}

/* Sections larger than this are checked before they are held in memory. */
#define SECTION_CHECK_FIRST (64ull << 20)

/*
 * Section @i of @s, read whole and matching its checksum; NULL with @errp.
 * A large one is checked first, a megabyte at a time, so that a corrupt
 * length (a sparse file claiming gigabytes) is refused as corrupt, and
 * only then allocated, as an error if it does not fit (found by review:
 * inspect aborted on a section claiming 64 GiB).
 */
const char *sl_sections_path(const sl_snapshot *s)
{
    return s->index_path ? s->index_path : s->path;
}

static GBytes *read_section_at(const sl_snapshot *s, unsigned i, GError **errp)
{
    const sl_section *sec = &s->sections[i];
    uint64_t sum = 0;
    uint8_t *buf;
    int ret;

    if (sec->length > SECTION_CHECK_FIRST) {
        g_autofree char *what = g_strdup_printf("section %u", i);
        if (!sl_hash_file(sec->fd, sec->offset, sec->length, &sum, what, errp)) {
            g_prefix_error(errp, "%s: ", sl_sections_path(s));
            return NULL;
        }
        if (sum != sec->csum) {
            g_set_error(errp, SL_ERROR, SL_ERROR_CHECKSUM, "%s: section %u (type %u): checksum "
                        "mismatch (data corrupted)", sl_sections_path(s), i, sec->type);
            return NULL;
        }
    }
    buf = g_try_malloc(sec->length ? sec->length : 1);
    if (!buf) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: section %u (type %u): %" G_GUINT64_FORMAT
                    " bytes do not fit in memory", sl_sections_path(s), i, sec->type,
                    sec->length);
        return NULL;
    }
    ret = sl_pread_full(sec->fd, buf, sec->length, sec->offset);

    if (ret < 0 || sl_hash(buf, sec->length) != sec->csum) {
        g_free(buf);
        g_set_error(errp, SL_ERROR, ret < 0 ? SL_ERROR_IO : SL_ERROR_CHECKSUM,
                    "%s: section %u (type %u): %s", sl_sections_path(s), i, sec->type,
                    ret < 0 ? g_strerror(-ret) : "checksum mismatch (data corrupted)");
        return NULL;
    }
    return g_bytes_new_take(buf, sec->length);
}

GBytes *sl_snapshot_read_section(sl_snapshot *s, uint32_t type, GError **errp)
{
    SL_ARG(s, errp, NULL);
    for (unsigned i = 0; i < s->nsections; i++) {
        if (s->sections[i].type == type) {
            return read_section_at(s, i, errp);
        }
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "%s: no section of type %u", sl_sections_path(s),
                type);
    return NULL;
}

bool sl_hot_list_check(const sl_snapshot *s, const uint8_t *p, gsize len, GError **errp)
{
    if (len % 16) {
        g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "hot-page list: length %zu is not a "
                    "multiple of 16", (size_t)len);
        return false;
    }
    for (gsize i = 0; i < len / 16; i++) {
        uint32_t block = sl_le32(p + i * 16);
        uint64_t page = sl_le64(p + i * 16 + 8);
        if (block >= s->nblocks || page >= s->blocks[block].npages) {
            g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "hot-page list entry %zu: block %u "
                        "page %" G_GUINT64_FORMAT " is out of range", (size_t)i, block, page);
            return false;
        }
        if (sl_le32(p + i * 16 + 4)) {
            g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "hot-page list entry %zu: flags "
                        "0x%x are not zero", (size_t)i, sl_le32(p + i * 16 + 4));
            return false;
        }
    }
    return true;
}

bool sl_snapshot_check_sections(sl_snapshot *s, GError **errp)
{
    for (unsigned i = 0; i < s->nsections; i++) {
        g_autoptr(GBytes) data = read_section_at(s, i, errp);
        gsize len = 0;
        const uint8_t *p = data ? g_bytes_get_data(data, &len) : NULL;

        if (!data) {
            return false;
        }
        if (s->sections[i].type == SL_SECTION_HOT_PAGES && !sl_hot_list_check(s, p, len, errp)) {
            g_prefix_error(errp, "%s: ", sl_sections_path(s));
            return false;
        }
    }
    return true;
}

bool sl_snapshot_page_present(const sl_snapshot *s, unsigned block, uint64_t idx)
{
    return s && block < s->nblocks && idx < s->blocks[block].npages &&
           sl_bit_test(s->blocks[block].bitmap, idx);
}

uint64_t sl_snapshot_page_checksum(const sl_snapshot *s, unsigned block, uint64_t idx)
{
    if (!s || !s->has_checksums || block >= s->nblocks || idx >= s->blocks[block].npages ||
        sl_csums_get(s, &s->blocks[block], idx, 1) < 0) {
        return 0;
    }
    return s->blocks[block].csums[idx];
}

bool sl_snapshot_page_matches(sl_snapshot *s, unsigned block, uint64_t idx, const void *data)
{
    const sl_block *b = s && block < s->nblocks ? &s->blocks[block] : NULL;
    uint8_t small[16384];
    uint8_t *buf;
    bool same;

    if (!b || !data || idx >= b->npages) {
        return false;
    }
    if (s->has_checksums) { /* the bit is proven first, a zero page included */
        const uint8_t *p = data;
        if (sl_csums_get(s, b, idx, 1) < 0) {
            return false;
        }
        return sl_bit_test(b->bitmap, idx) ? sl_hash(p, b->page_size) == b->csums[idx]
                                           : sl_all_zero(p, b->page_size);
    }
    buf = b->page_size <= sizeof(small) ? small : g_malloc(b->page_size);
    same = sl_snapshot_read_pages(s, block, idx, 1, buf, false) == 0 &&
           memcmp(buf, data, b->page_size) == 0;
    if (buf != small) {
        g_free(buf);
    }
    return same;
}

/* Present pages of [first, first+n) at @buf against their (proven) checksums. */
static int verify_present(const sl_block *b, uint64_t first, uint64_t n, const uint8_t *buf)
{
    for (uint64_t k = 0; k < n; k++) {
        if (sl_bit_test(b->bitmap, first + k) &&
            sl_hash(buf + k * b->page_size, b->page_size) != b->csums[first + k]) {
            return -EBADMSG;
        }
    }
    return 0;
}

static int read_layer(sl_snapshot *s, int fd, unsigned block, uint64_t first, uint64_t n,
                      uint8_t *buf, bool zeroed);

/*
 * Pages [first, first+n) of block @block: each run this file stores read
 * through @fd, each other run from the parent (through its own file) or,
 * without a parent, zeros (left alone when @zeroed: @buf is zero already).
 */
static int read_runs(sl_snapshot *s, int fd, unsigned block, uint64_t first, uint64_t n,
                     uint8_t *buf, bool zeroed)
{
    const sl_block *b = &s->blocks[block];
    const uint64_t *own = sl_own_bitmap(b);
    uint64_t end = first + n;

    for (uint64_t i = first; i < end;) {
        bool stored = sl_bit_test(own, i);
        uint64_t run = sl_bit_run(own, i, end, stored);
        uint8_t *dst = buf + (i - first) * b->page_size;
        int ret = 0;

        if (stored) {
            ret = sl_pread_full(fd, dst, run * b->page_size, b->pages_offset + i * b->page_size);
        } else if (s->parent) {
            ret = read_layer(s->parent, s->parent->fd, block, i, run, dst, zeroed);
        } else if (!zeroed) {
            memset(dst, 0, run * b->page_size);
        }
        if (ret < 0) {
            return ret;
        }
        i += run;
    }
    return 0;
}

/* Whether pages [first, first+n) of block @block exist in @s. */
static bool in_range(const sl_snapshot *s, unsigned block, uint64_t first, uint64_t n)
{
    return block < s->nblocks && first <= s->blocks[block].npages &&
           n <= s->blocks[block].npages - first;
}

/*
 * Why pages [first, first+n) of @block cannot be read from @s: -ERANGE
 * outside the block, -EREMOTE for a block whose pages are not in the file
 * (QEMU's x-ignore-shared left them in the guest's shared memory: its
 * bitmap is empty, and reading it as zeros gave wrong pages; found by
 * review), else 0.
 */
static int unreadable(const sl_snapshot *s, unsigned block, uint64_t first, uint64_t n)
{
    if (!in_range(s, block, first, n)) {
        return -ERANGE;
    }
    return s->blocks[block].in_file ? 0 : -EREMOTE;
}

/* read_runs() of a range checked against @s's block first: 0, -ERANGE, -EREMOTE or -errno. */
static int read_layer(sl_snapshot *s, int fd, unsigned block, uint64_t first, uint64_t n,
                      uint8_t *buf, bool zeroed)
{
    int ret = unreadable(s, block, first, n);

    return ret ? ret : read_runs(s, fd, block, first, n, buf, zeroed);
}

int sl_snapshot_read_pages(sl_snapshot *s, unsigned block, uint64_t first, uint64_t n,
                           void *buf, bool verify)
{
    SL_ARG_ERRNO(s);
    SL_ARG_ERRNO(buf || n == 0);
    return sl_snapshot_read_pages_fd(s, s->fd, block, first, n, buf, verify);
}

int sl_snapshot_read_pages_fd(sl_snapshot *s, int fd, unsigned block, uint64_t first, uint64_t n,
                              void *buf, bool verify)
{
    int ret = unreadable(s, block, first, n);

    if (ret) {
        return ret;
    }
    if (verify && !s->has_checksums) {
        return -ENODATA; /* nothing to verify against */
    }
    if (verify) { /* the bitmap bits below are proven, zero pages included */
        ret = sl_csums_get(s, &s->blocks[block], first, n);
        if (ret < 0) {
            return ret;
        }
    }
    ret = read_runs(s, fd, block, first, n, buf, false);
    if (ret == 0 && verify) {
        ret = verify_present(&s->blocks[block], first, n, buf);
    }
    return ret;
}

int sl_snapshot_read_stored_fd(sl_snapshot *s, int fd, unsigned block, uint64_t first, uint64_t n,
                               void *buf)
{
    return read_layer(s, fd, block, first, n, buf, true);
}

int sl_snapshot_gather_fd(sl_snapshot *s, int fd, unsigned block, uint64_t first, uint64_t n,
                          uint8_t *buf, bool zeroed, uint64_t skip, uint64_t nskip)
{
    uint64_t below = skip > first ? MIN(skip, first + n) - first : 0;
    uint64_t above = first + n > skip + nskip ? first + n - MAX(skip + nskip, first) : 0;
    int ret = unreadable(s, block, first, n);
    uint64_t ps;

    if (ret) {
        return ret;
    }
    ps = s->blocks[block].page_size;
    if (!s->parent) {
        return sl_gather_read(fd, &s->blocks[block], sl_own_bitmap(&s->blocks[block]), first, n,
                              buf, zeroed, SL_GATHER_GAP, skip, nskip);
    }
    /* a chain: each run from the layer that stores it, around the skipped pages */
    ret = below ? read_runs(s, fd, block, first, below, buf, zeroed) : 0;
    return ret < 0 || !above ? ret
                             : read_runs(s, fd, block, first + n - above, above,
                                         buf + (n - above) * ps, zeroed);
}

/*
 * Whether every page of [first, first+n) that this file stores is cached:
 * 1 or 0, -1 when the kernel cannot tell (no cachestat(2)).
 */
static int stored_cached(const sl_snapshot *s, const sl_block *b, uint64_t first, uint64_t n)
{
    int64_t cached = sl_cached_pages(s->fd, b->pages_offset + first * b->page_size,
                                     n * b->page_size);
    const uint64_t *own = sl_own_bitmap(b);
    const uint64_t base = (uint64_t)getpagesize(); /* what cachestat counts */
    uint64_t stored = 0;

    if (cached < 0) {
        return -1;
    }
    for (uint64_t i = first; i < first + n;) {
        bool set = sl_bit_test(own, i);
        uint64_t run = sl_bit_run(own, i, first + n, set);
        stored += set ? run * b->page_size / base : 0;
        i += run;
    }
    return (uint64_t)cached >= stored;
}

int sl_snapshot_cached(const sl_snapshot *s, unsigned block, uint64_t first, uint64_t n)
{
    if (s->parent || !in_range(s, block, first, n)) {
        return -1;
    }
    return stored_cached(s, &s->blocks[block], first, n);
}

void sl_snapshot_readahead(const sl_snapshot *s, unsigned block, uint64_t first, uint64_t n)
{
    const sl_block *b = &s->blocks[block];
    const uint64_t *bm = sl_own_bitmap(b); /* the pages this file stores */
    /* A warm file: one cachestat instead of a WILLNEED per run (a 1 GiB
     * fill made 3.5 thousand of them for nothing). */
    bool warm = !s->parent && stored_cached(s, b, first, n) == 1;

    /* Only runs of stored pages: advising a hole of the file makes the
     * kernel add zeroed pages to its page cache (a 64 GiB guest with 95 %
     * zero pages spent most of its fill clearing them). */
    for (uint64_t i = first; i < first + n && !warm;) {
        bool stored = sl_bit_test(bm, i);
        uint64_t run = sl_bit_run(bm, i, first + n, stored);
        if (stored) {
            (void)posix_fadvise(s->fd, (off_t)(b->pages_offset + i * b->page_size),
                                (off_t)(run * b->page_size), POSIX_FADV_WILLNEED);
        } else if (s->parent) {
            sl_snapshot_readahead(s->parent, block, i, run);
        }
        i += run;
    }
}
