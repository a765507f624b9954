/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The sidecar index of a QEMU mapped-ram file: what our container has and
 * QEMU's file lacks (a checksum per page, the segment digests that prove
 * the bitmap, a hot-page list), in a file of its own beside QEMU's, which
 * is never rewritten or touched.  `snapload index vm.mig` writes
 * vm.mig.slidx: a container (docs/format.md) whose blocks are external
 * (flag SL_BLOCK_EXTERNAL, no page area: the pages are QEMU's) and whose
 * SOURCE section names the file it was made from by size and content
 * (XXH3 of everything but the page areas and bitmaps: the stream header,
 * every block record and the device state).
 *
 * Opening a QEMU file attaches its index when one lies beside it: the
 * identity must match and every block agree in name, length and page size,
 * or the open fails saying so.  From then on the file has checksums like
 * our own container: each segment of 8192 pages is proven, QEMU's bitmap
 * words with the index's checksum entries, against the index's digest
 * before any bit of it decides anything (segments.c), so a bitmap that
 * changed since, or a page whose bytes did, is refused, never placed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>
#include "migration/format/format.h"

#define IDENTITY_LEN 16u  /* le64 file size, le64 XXH3 of the metadata and device state */
#define CHUNK (1u << 20)
#define WHAT "the QEMU file" /* what a failed read of it names */

/* The identity of QEMU file @s: its size and the hash of all but its pages and bitmaps. */
static bool identity(const sl_snapshot *s, uint8_t out[IDENTITY_LEN], GError **errp)
{
    XXH3_state_t st;
    bool ok;

    XXH3_64bits_reset(&st);
    ok = sl_hash_update_file(&st, s->fd, 0, s->blocks[0].record_offset, WHAT, errp);
    for (unsigned i = 0; ok && i < s->nblocks; i++) {
        ok = sl_hash_update_file(&st, s->fd, s->blocks[i].record_offset, s->blocks[i].record_len,
                                 WHAT, errp);
    }
    ok = ok && sl_hash_update_file(&st, s->fd, s->qemu->tail_offset, s->qemu->tail_length, WHAT,
                                   errp);
    sl_put_le64(out, s->file_size);
    sl_put_le64(out + 8, XXH3_64bits_digest(&st));
    return ok;
}

/* Checksums of every page of block @i of @s (0 for a zero page), host order. */
static uint64_t *block_csums(sl_snapshot *s, unsigned i, GError **errp)
{
    const sl_block *b = &s->blocks[i];
    uint64_t per = MAX(1, CHUNK / b->page_size);
    g_autofree uint8_t *buf = g_malloc(per * b->page_size);
    uint64_t *cs = g_try_new0(uint64_t, b->npages); /* a file's claim: no abort */

    if (!cs) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block '%s': no memory for the "
                    "checksums of its %" G_GUINT64_FORMAT " pages", b->name, b->npages);
        return NULL;
    }
    for (uint64_t p = 0; b->in_file && p < b->npages; p += per) {
        uint64_t n = MIN(per, b->npages - p);
        int ret = sl_snapshot_read_pages(s, i, p, n, buf, false);
        if (ret < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "block '%s': reading pages at %"
                        G_GUINT64_FORMAT ": %s", b->name, p, g_strerror(-ret));
            g_free(cs);
            return NULL;
        }
        for (uint64_t k = 0; k < n; k++) {
            cs[p + k] = sl_bit_test(b->bitmap, p + k) ? sl_hash(buf + k * b->page_size,
                                                                b->page_size) : 0;
        }
    }
    return cs;
}

/* Declares @s's blocks in @w, external, with their bitmaps and checksums. */
static bool add_blocks(sl_writer *w, sl_snapshot *s, GError **errp)
{
    for (unsigned i = 0; i < s->nblocks; i++) {
        const sl_block *b = &s->blocks[i];
        if (strlen(b->name) >= SL_NAME_MAX) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': names longer than %u "
                        "bytes cannot be indexed", b->name, SL_NAME_MAX - 1);
            return false;
        }
        if (sl_writer_add_block(w, b->name, b->length, b->page_size, -1, errp) < 0) {
            return false;
        }
    }
    for (unsigned i = 0; i < s->nblocks; i++) {
        g_autofree uint64_t *cs = block_csums(s, i, errp);
        if (!cs || !sl_writer_set_external(w, i, s->blocks[i].bitmap, cs, errp)) {
            return false;
        }
    }
    return true;
}

/* Refuses an index @path that is the QEMU file @s itself, or a hot list unfit for @s. */
static bool index_inputs_ok(const sl_snapshot *s, const char *path, GBytes *hot, GError **errp)
{
    struct stat a, b;
    bool exists = stat(path, &a) == 0;

    if (exists && !S_ISREG(a.st_mode)) {
        /* A device, a FIFO, a directory: never replaced by a file (found by
         * a user's test: /dev/null became one). */
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s exists and is not a regular file: "
                    "nothing was put in its place", path);
        return false;
    }
    if (exists && fstat(s->fd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s is the QEMU file itself: the index "
                    "must be another file", path);
        return false;
    }
    return !hot ||
           sl_hot_list_check(s, g_bytes_get_data(hot, NULL), g_bytes_get_size(hot), errp);
}

bool sl_index_write(sl_snapshot *s, const char *path, GBytes *hot, GError **errp)
{
    /* Written beside @path, flushed and renamed when whole: a failure leaves
     * no index and never touches an earlier file of that name. */
    g_autofree char *tmp = sl_partial_path(path);
    uint8_t id[IDENTITY_LEN];
    sl_writer *w;
    bool ok;

    if (s->format != SL_FORMAT_QEMU) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s is no QEMU file: snapload's own "
                    "snapshots carry their checksums", s->path);
        return false;
    }
    if (G_BYTE_ORDER != G_LITTLE_ENDIAN) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED, "indexes: little-endian hosts");
        return false;
    }
    if (!index_inputs_ok(s, path, hot, errp) || !identity(s, id, errp) ||
        !(w = sl_writer_new(tmp, errp))) {
        return false;
    }
    ok = add_blocks(w, s, errp) &&
         sl_writer_add_section(w, SL_SECTION_SOURCE, id, sizeof(id), errp) &&
         (!hot || sl_writer_add_section(w, SL_SECTION_HOT_PAGES, g_bytes_get_data(hot, NULL),
                                        g_bytes_get_size(hot), errp)) &&
         sl_writer_finish(w, errp);
    sl_writer_free(w);
    ok = ok && sl_sync_path(tmp, path, errp);
    if (ok && rename(tmp, path) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", path, g_strerror(errno));
        ok = false;
    }
    if (ok) {
        sl_sync_dir_of(path);
    }
    if (!ok) {
        unlink(tmp);
    }
    if (!ok) {
        sl_error_names(errp, tmp, path);
    }
    return ok;
}

/* @ix (an index) was made from @s: its identity, and every block alike. */
static bool matches(sl_snapshot *s, sl_snapshot *ix, GError **errp)
{
    g_autoptr(GBytes) want = sl_snapshot_read_section(ix, SL_SECTION_SOURCE, errp);
    uint8_t id[IDENTITY_LEN];

    if (!want || !identity(s, id, errp)) {
        return false;
    }
    if (g_bytes_get_size(want) != IDENTITY_LEN || memcmp(g_bytes_get_data(want, NULL), id,
                                                         IDENTITY_LEN)) {
        return SL_BAD(errp, "it was made from another file (size or contents differ from "
                      "%s): make it again with `snapload index`", s->path);
    }
    if (ix->nblocks != s->nblocks) {
        return SL_BAD(errp, "it has %u blocks, the file %u", ix->nblocks, s->nblocks);
    }
    for (unsigned i = 0; i < s->nblocks; i++) {
        const sl_block *a = &s->blocks[i], *b = &ix->blocks[i];
        if (strcmp(a->name, b->name) || a->length != b->length || a->page_size != b->page_size) {
            return SL_BAD(errp, "block %u is '%s' there, '%s' in the file", i, b->name, a->name);
        }
    }
    return true;
}

/* A fully read index: every segment proven again, now with QEMU's bitmap. */
static bool prove_all(const sl_snapshot *s, GError **errp)
{
    for (unsigned i = 0; i < s->nblocks; i++) {
        const sl_block *b = &s->blocks[i];
        for (uint64_t k = 0; !b->seg_state && k < b->nsegs; k++) {
            if (sl_seg_digest(b->bitmap, b->csums, b->npages, k) != b->digests[k]) {
                return SL_BAD(errp, "block %u ('%s'): segment %" G_GUINT64_FORMAT ": the "
                              "file's bitmap or the index's checksums changed since the index "
                              "was made", i, b->name, k);
            }
        }
    }
    return true;
}

/* Moves @ix's checksum arrays, digests and sections into @s. */
static void take_over(sl_snapshot *s, sl_snapshot *ix)
{
    for (unsigned i = 0; i < s->nblocks; i++) {
        sl_block *a = &s->blocks[i], *b = &ix->blocks[i];
        a->csums = b->csums;
        a->csum_mem = b->csum_mem;
        a->csum_offset = b->csum_offset;
        a->digests = b->digests;
        a->digest_offset = b->digest_offset;
        a->seg_state = b->seg_state;
        b->csums = NULL;
        b->csum_mem = (sl_large){ 0 };
        b->digests = NULL;
        b->seg_state = NULL;
    }
    g_free(s->sections);
    s->sections = g_steal_pointer(&ix->sections);
    s->nsections = ix->nsections;
    s->csum_fd = s->index_fd = ix->fd;
    s->index_path = g_strdup(ix->path);
    ix->fd = -1;
    s->has_checksums = true;
}

bool sl_index_attach(sl_snapshot *s, const char *path, bool lazy, GError **errp)
{
    sl_snapshot *ix = sl_snapshot_alloc(path);
    struct stat st;
    bool ok;

    ix->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (ix->fd < 0 || fstat(ix->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "sidecar index %s: %s", path,
                    ix->fd < 0 ? g_strerror(errno) : "not a regular file");
        sl_snapshot_close(ix);
        return false;
    }
    ix->file_size = (uint64_t)st.st_size;
    ok = (G_BYTE_ORDER == G_LITTLE_ENDIAN ||
          (g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED, "little-endian hosts only"), false)) &&
         sl_container_parse(ix, lazy, true, errp) && matches(s, ix, errp);
    if (ok) {
        take_over(s, ix);
        ok = prove_all(s, errp);
    }
    if (!ok) {
        g_prefix_error(errp, "sidecar index %s: ", path);
    }
    sl_snapshot_close(ix);
    return ok;
}
