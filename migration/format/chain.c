/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Incremental snapshots: a child stores only the pages written since its
 * parent and names the parent in a parent section (docs/format.md): the
 * parent's content identity and its path.  Opening a child opens its
 * parent (a relative path from the child's directory), which opens its
 * own, and so on; each parent must have the identity its child recorded,
 * no file may come twice (a loop) and a chain holds at most SL_MAX_CHAIN
 * files.  The chain is then merged into the child's blocks: a page is
 * present when any layer stores it, and its checksum is the newest such
 * layer's, so the rest of the library sees one snapshot.  A page a child
 * does not store is its parent's, never zero: a child stores a page that
 * became zero explicitly (present, a hole, the checksum of zeros).
 *
 * A chain opened with SL_OPEN_LAZY_CHECKSUMS merges the bitmaps at open
 * and the checksum entries segment by segment, when a segment is proven
 * (segments.c calls sl_chain_seg_merge() once the child's own entries
 * match their digest): the parent's segment is proven first, so no bit of
 * any layer decides anything before it is.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "migration/format/format.h"

/* What a parent section says. */
typedef struct {
    uint8_t id[SL_IDENTITY_LEN];
    char *path;
} parent_ref;

/*
 * The first control byte (below 0x20, or 0x7f) of the @len bytes of a
 * parent's path at @p, or -1.  Such a byte would drive the terminal that
 * prints the path; any other byte is a file name's (a Latin-1 name too).
 */
static int control_byte(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) {
            return p[i];
        }
    }
    return -1;
}

GBytes *sl_parent_section(const uint8_t id[SL_IDENTITY_LEN], const char *path, GError **errp)
{
    size_t len = path ? strlen(path) : 0;
    uint8_t *d;

    if (len == 0 || len > SL_PARENT_PATH_MAX) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the parent's path must be 1 to %u bytes "
                    "(it is %zu)", SL_PARENT_PATH_MAX, len);
        return NULL;
    }
    if (control_byte((const uint8_t *)path, len) >= 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the parent's path holds control byte "
                    "0x%02x (readers print it): rename the parent, or give delta "
                    "--parent-path", control_byte((const uint8_t *)path, len));
        return NULL;
    }
    d = g_malloc0(SL_PARENT_HDR + len);
    memcpy(d, id, SL_IDENTITY_LEN);
    sl_put_le32(d + SL_IDENTITY_LEN, (uint32_t)len);
    memcpy(d + SL_PARENT_HDR, path, len);
    return g_bytes_new_take(d, SL_PARENT_HDR + len);
}

/* Decodes @data (a parent section, checksum checked) into @out. */
static bool parent_decode(GBytes *data, parent_ref *out, GError **errp)
{
    gsize len;
    const uint8_t *d = g_bytes_get_data(data, &len);
    uint32_t plen, flags;

    if (len < SL_PARENT_HDR) {
        return SL_BAD(errp, "parent section: %" G_GSIZE_FORMAT " bytes, shorter than its "
                      "%u-byte header", len, SL_PARENT_HDR);
    }
    plen = sl_le32(d + SL_IDENTITY_LEN);
    flags = sl_le32(d + SL_IDENTITY_LEN + 4);
    if (flags) {
        return SL_BAD(errp, "parent section: flags 0x%x are not known", flags);
    }
    if (plen == 0 || plen > SL_PARENT_PATH_MAX) {
        return SL_BAD(errp, "parent section: path length %u is not between 1 and %u", plen,
                      SL_PARENT_PATH_MAX);
    }
    if (len != SL_PARENT_HDR + (gsize)plen) {
        return SL_BAD(errp, "parent section: %" G_GSIZE_FORMAT " bytes, but a %u-byte header "
                      "and a %u-byte path make %u", len, SL_PARENT_HDR, plen,
                      SL_PARENT_HDR + plen);
    }
    if (memchr(d + SL_PARENT_HDR, 0, plen)) {
        return SL_BAD(errp, "parent section: the parent's path holds a NUL byte");
    }
    memcpy(out->id, d, SL_IDENTITY_LEN);
    if (control_byte(d + SL_PARENT_HDR, plen) >= 0) {
        return SL_BAD(errp, "parent section: the parent's path holds control byte 0x%02x",
                      control_byte(d + SL_PARENT_HDR, plen));
    }
    out->path = g_strndup((const char *)d + SL_PARENT_HDR, plen);
    return true;
}

/* The data of section @sec of @s, checked against its checksum. */
static GBytes *read_checked(const sl_snapshot *s, const sl_section *sec, GError **errp)
{
    uint8_t *buf;

    if (sec->length > SL_PARENT_HDR + SL_PARENT_PATH_MAX) {
        g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "parent section: %" G_GUINT64_FORMAT
                    " bytes, more than a header and the longest path (%u)", sec->length,
                    SL_PARENT_HDR + SL_PARENT_PATH_MAX);
        return NULL;
    }
    buf = g_malloc(sec->length + 1);
    if (!sl_read_at(sec->fd, buf, sec->length, sec->offset, "the parent section", errp)) {
        g_free(buf);
        return NULL;
    }
    if (sl_hash(buf, sec->length) != sec->csum) {
        g_free(buf);
        g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "parent section: its data does not "
                    "match its checksum (corrupted)");
        return NULL;
    }
    return g_bytes_new_take(buf, sec->length);
}

/* @s's parent section, if it has one (*@has); false with @errp if it is bad. */
static bool find_parent(sl_snapshot *s, bool *has, parent_ref *out, GError **errp)
{
    g_autoptr(GBytes) data = NULL;
    const sl_section *sec = NULL;
    unsigned n = 0;

    for (unsigned i = 0; i < s->nsections; i++) {
        if (s->sections[i].type == SL_SECTION_PARENT) {
            sec = &s->sections[i];
            n++;
        }
    }
    *has = n > 0;
    if (n == 0) {
        return true;
    }
    /* Named by the file holding the sections: a QEMU stream's are its
     * index's (found by fuzz-index: a lazy open's refusal named only the
     * stream). */
    if (n > 1) {
        return SL_BAD(errp, "%s: %u parent sections (a child has one parent)",
                      sl_sections_path(s), n);
    }
    if (s->format != SL_FORMAT_SNAPLOAD) {
        return SL_BAD(errp, "%s: a parent section in a sidecar index (only snapload snapshots "
                      "can be children)", sl_sections_path(s));
    }
    data = read_checked(s, sec, errp);
    return data && parent_decode(data, out, errp);
}

/*
 * The recorded @path of @s's parent, relative to @s's directory unless
 * absolute: the directory of the path @s was opened by, or, if the parent
 * is not there and that path is a symbolic link, the directory of the file
 * it leads to (where the child was written).
 */
static char *resolve(const sl_snapshot *s, const char *path)
{
    g_autofree char *dir = NULL, *first = NULL;
    char *real;

    if (g_path_is_absolute(path)) {
        return g_strdup(path);
    }
    dir = g_path_get_dirname(s->path);
    first = g_build_filename(dir, path, NULL);
    if (access(first, F_OK) == 0 || !(real = realpath(s->path, NULL))) {
        return g_steal_pointer(&first);
    }
    g_free(dir);
    dir = g_path_get_dirname(real);
    free(real);
    return g_build_filename(dir, path, NULL);
}

/* A loop (@path is a file of the chain already) or a chain too deep. */
static bool may_open_next(const sl_chain_walk *walk, const char *path, GError **errp)
{
    struct stat st;

    if (walk->depth >= SL_MAX_CHAIN) {
        return SL_BAD(errp, "its chain of parents is longer than %u snapshots (a loop, or "
                      "far too deep)", SL_MAX_CHAIN);
    }
    if (stat(path, &st) < 0) {
        return true; /* the open says why */
    }
    for (unsigned i = 0; i < walk->depth; i++) {
        if (walk->dev[i] == (uint64_t)st.st_dev && walk->ino[i] == (uint64_t)st.st_ino) {
            return SL_BAD(errp, "its parent %s is already in its chain (the chain loops)",
                          path);
        }
    }
    return true;
}

/* @p's blocks are @s's: same number, names, lengths and page sizes, each in its file. */
static bool same_blocks(const sl_snapshot *s, const sl_snapshot *p, GError **errp)
{
    if (p->nblocks != s->nblocks) {
        return SL_BAD(errp, "it has %u blocks, its parent %s %u (a child has its parent's "
                      "blocks)", s->nblocks, p->path, p->nblocks);
    }
    for (unsigned i = 0; i < s->nblocks; i++) {
        const sl_block *a = &s->blocks[i], *b = &p->blocks[i];
        if (strcmp(a->name, b->name) || a->length != b->length ||
            a->page_size != b->page_size || !b->in_file) {
            return SL_BAD(errp, "block %u is '%s' (%" G_GUINT64_FORMAT " bytes, %"
                          G_GUINT64_FORMAT "-byte pages), but in its parent %s '%s' (%"
                          G_GUINT64_FORMAT " bytes, %" G_GUINT64_FORMAT "-byte pages%s)", i,
                          a->name, a->length, a->page_size, p->path, b->name, b->length,
                          b->page_size, b->in_file ? "" : ", not in its file");
        }
    }
    return true;
}

/* @p's identity is the one @s recorded. */
static bool same_identity(const sl_snapshot *s, const sl_snapshot *p, const parent_ref *ref,
                          GError **errp)
{
    char want[2 * SL_IDENTITY_LEN + 1], got[2 * SL_IDENTITY_LEN + 1];

    if (!p->has_identity) {
        return SL_BAD(errp, "its parent %s has no page checksums (a QEMU file without its "
                      "index), so it cannot be the parent it records", p->path);
    }
    if (memcmp(p->identity, ref->id, SL_IDENTITY_LEN) == 0) {
        return true;
    }
    sl_identity_hex(ref->id, want);
    sl_identity_hex(p->identity, got);
    return SL_BAD(errp, "its parent %s holds other content than the snapshot it was made "
                  "from (identity %s, recorded %s): it cannot be restored over it", p->path,
                  got, want);
}

/* Checksum entries of child pages [first, +n) that @b does not store: @pb's. */
static void take_parent_csums(sl_block *b, const sl_block *pb, uint64_t first, uint64_t n)
{
    for (uint64_t p = first; p < first + n; p++) {
        if (!sl_bit_test(b->own_bitmap, p)) {
            b->csums[p] = pb->csums[p];
        }
    }
}

int sl_chain_seg_merge(const sl_snapshot *s, const sl_block *b, uint64_t first, uint64_t n)
{
    const sl_block *pb = &s->parent->blocks[b - s->blocks];
    int ret = sl_csums_get(s->parent, pb, first, n);

    if (ret == 0) {
        take_parent_csums((sl_block *)b, pb, first, n);
    }
    return ret;
}

/*
 * Block @b of child @s becomes the chain's: its bitmap the union, its
 * checksums (at once, unless it is proven lazily) the owning layer's.
 */
static bool merge_block(sl_snapshot *s, sl_block *b, const sl_block *pb, GError **errp)
{
    uint64_t words = sl_bitmap_bytes(b->npages) / 8, count = 0;
    int ret;

    b->own_bitmap = b->bitmap;
    b->own_present = b->present_pages;
    b->bitmap = sl_alloc_large(words * 8);
    for (uint64_t w = 0; w < words; w++) {
        b->bitmap[w] = b->own_bitmap[w] | pb->bitmap[w];
        count += (uint64_t)__builtin_popcountll(b->bitmap[w]);
    }
    b->present_pages = count;
    if (b->seg_state) {
        return true; /* segments.c merges each segment when it proves it */
    }
    ret = sl_csums_get(s->parent, pb, 0, b->npages);
    if (ret < 0) {
        return SL_BAD(errp, "block '%s': the metadata of its parent %s: %s", b->name,
                      s->parent->path, ret == -EBADMSG ? "does not match its digests"
                                                       : g_strerror(-ret));
    }
    take_parent_csums(b, pb, 0, b->npages);
    return true;
}

/*
 * Whether @p, opened alone, is the parent @ref names, as far as its own
 * metadata and the parent identity it records tell, before its own chain
 * is walked: a stranger in the middle of a chain is named where it is
 * (found by a user's test: the error blamed the stranger's parent, the
 * right file, since the walk failed below it first).  Where @p records a
 * wrong parent of its own, its walk says so; without checksums, the check
 * after the walk does.
 */
static bool may_be(sl_snapshot *p, const parent_ref *ref, GError **errp)
{
    parent_ref pref = { .path = NULL };
    uint8_t id[SL_IDENTITY_LEN];
    char want[2 * SL_IDENTITY_LEN + 1], got[2 * SL_IDENTITY_LEN + 1];
    g_autoptr(GError) ignored = NULL;
    bool has = false, known;

    known = find_parent(p, &has, &pref, &ignored) &&
            sl_identity_with_parent(p, has ? pref.id : NULL, id);
    g_free(pref.path);
    if (!known || memcmp(id, ref->id, SL_IDENTITY_LEN) == 0) {
        return true;
    }
    sl_identity_hex(ref->id, want);
    sl_identity_hex(id, got);
    return SL_BAD(errp, "its parent %s holds other content than the snapshot it was made "
                  "from (identity %s, recorded %s): it cannot be restored over it", p->path,
                  got, want);
}

/* Opens @s's parent at @path (walked by @walk), checks it and merges it in. */
static bool attach_parent(sl_snapshot *s, const parent_ref *ref, const char *path,
                          unsigned flags, sl_chain_walk *walk, GError **errp)
{
    GError *err = NULL;
    sl_snapshot *p;

    if (!may_open_next(walk, path, errp)) {
        return false;
    }
    p = sl_snapshot_open_one(path, flags, walk, &err);
    if (!p) {
        g_propagate_prefixed_error(errp, err, "its parent (recorded as '%s'): ", ref->path);
        return false;
    }
    if (!may_be(p, ref, errp)) {
        sl_snapshot_close(p);
        return false;
    }
    if (!sl_chain_attach(p, flags, walk, &err)) {
        sl_snapshot_close(p);
        g_propagate_error(errp, err); /* it names the file that failed, below */
        return false;
    }
    sl_identity_compute(p);
    s->parent = p;
    if (!same_identity(s, s->parent, ref, errp) || !same_blocks(s, s->parent, errp)) {
        return false;
    }
    for (unsigned i = 0; i < s->nblocks; i++) {
        if (!merge_block(s, &s->blocks[i], &s->parent->blocks[i], errp)) {
            return false;
        }
    }
    return true;
}

/* Every block of a child has the delta flag, and no block of another file. */
static bool delta_flags_agree(const sl_snapshot *s, bool child, GError **errp)
{
    for (unsigned i = 0; i < s->nblocks; i++) {
        if (s->blocks[i].delta != child) {
            return SL_BAD(errp, "block %u ('%s'): %s", i, s->blocks[i].name, child
                          ? "no delta flag (0x2), which every block of a child has"
                          : "flags 0x2 (a child's block: the pages it does not store are its "
                            "parent's), but the file has no parent section");
        }
    }
    return true;
}

/*
 * The path @walk's caller gives for the parent of the file at @level of
 * the chain (0: the child), or NULL for its recorded one.
 */
static const char *given_ancestor(const sl_chain_walk *walk, unsigned level)
{
    const char *const *a = walk->ancestors;

    for (unsigned i = 0; a && a[i]; i++) {
        if (i == level) {
            return *a[i] ? a[i] : NULL;
        }
    }
    return NULL;
}

/*
 * A failure at @level of the walk: the file whose own check failed names
 * itself (and is remembered); the files between it and the child add
 * nothing, and the child says the failure lies down its chain (found by a
 * user's test: a 63-link chain whose base was missing gave a 3 KB line,
 * each link prefixed in turn).
 */
static void name_failure(const sl_snapshot *s, unsigned level, sl_chain_walk *walk,
                         GError **errp)
{
    if (!walk->failed_plus1) {
        walk->failed_plus1 = level + 1;
        g_prefix_error(errp, "%s: ", s->path);
    } else if (level == 0) {
        g_prefix_error(errp, "%s: down its chain, at link %u: ", s->path,
                       walk->failed_plus1 - 1);
    }
}

bool sl_chain_attach(sl_snapshot *s, unsigned flags, sl_chain_walk *walk, GError **errp)
{
    parent_ref ref = { .path = NULL };
    g_autofree char *path = NULL;
    const unsigned level = walk->depth - 1;
    const char *given = given_ancestor(walk, level);
    bool has, ok;

    ok = find_parent(s, &has, &ref, errp) && delta_flags_agree(s, has, errp);
    if (ok && has) {
        path = given ? g_strdup(given) : resolve(s, ref.path);
        ok = attach_parent(s, &ref, path, flags, walk, errp);
    }
    if (!ok) {
        name_failure(s, level, walk, errp);
    }
    g_free(ref.path);
    return ok;
}

bool sl_chain_fits_list(const sl_snapshot *s, const char *const *ancestors, GError **errp)
{
    unsigned links = sl_snapshot_chain_length(s) - 1;
    unsigned n = ancestors ? g_strv_length((char **)ancestors) : 0;

    if (n <= links) {
        return true;
    }
    if (links == 0) {
        return SL_BAD(errp, "%s: it has no parent section: it is not an incremental snapshot "
                      "(parent '%s' given)", s->path, ancestors[0]);
    }
    return SL_BAD(errp, "%s: its chain holds %u ancestors, but %u paths were given: '%s' is "
                  "one more than the chain has", s->path, links, n, ancestors[links]);
}

sl_snapshot *sl_snapshot_parent(const sl_snapshot *s)
{
    return s ? s->parent : NULL;
}

unsigned sl_snapshot_chain_length(const sl_snapshot *s)
{
    unsigned n = 0;

    for (const sl_snapshot *p = s; p; p = p->parent) {
        n++;
    }
    return n;
}

uint64_t sl_snapshot_stored_pages(const sl_snapshot *s, unsigned block)
{
    if (!s || block >= s->nblocks) {
        return 0;
    }
    return s->blocks[block].own_bitmap ? s->blocks[block].own_present
                                       : s->blocks[block].present_pages;
}

const char *sl_snapshot_page_file(const sl_snapshot *s, unsigned block, uint64_t index)
{
    for (; s && block < s->nblocks && index < s->blocks[block].npages; s = s->parent) {
        if (sl_bit_test(sl_own_bitmap(&s->blocks[block]), index)) {
            return s->path;
        }
    }
    return NULL;
}
