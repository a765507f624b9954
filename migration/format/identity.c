/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The content identity of a snapshot: what a child records of its parent,
 * so that it is never merged over other content.  It is a 128-bit XXH3 of
 * the metadata that proves every page (docs/format.md, "Content
 * identity"): each block's name, length, page size and segment digests,
 * which cover its bitmap words and page checksums, and for a child its
 * parent's identity, so that a grandchild names its whole chain.  Neither
 * the path nor any time goes in, and no page data or checksum array is
 * read: the digests are in memory after any open, lazy or not.  A snapshot
 * without checksums (a QEMU file without its index) has no identity.
 */
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>
#include "migration/format/format.h"

#define ID_TAG "snapload content identity 1"

static void feed_le64(XXH3_state_t *st, uint64_t v)
{
    uint8_t b[8];

    sl_put_le64(b, v);
    XXH3_128bits_update(st, b, sizeof(b));
}

/* One block: geometry, then its digests as stored (little-endian). */
static void feed_block(XXH3_state_t *st, const sl_block *b)
{
    feed_le64(st, strlen(b->name));
    XXH3_128bits_update(st, b->name, strlen(b->name));
    feed_le64(st, b->length);
    feed_le64(st, b->page_size);
    feed_le64(st, b->in_file);
    feed_le64(st, b->nsegs);
    for (uint64_t k = 0; k < b->nsegs; k++) {
        feed_le64(st, b->digests[k]);
    }
}

bool sl_identity_with_parent(const sl_snapshot *s, const uint8_t *parent_id,
                             uint8_t out[SL_IDENTITY_LEN])
{
    XXH3_state_t st;
    XXH128_canonical_t c;

    if (!s->has_checksums) {
        return false;
    }
    for (unsigned i = 0; i < s->nblocks; i++) {
        if (!s->blocks[i].digests) {
            return false;
        }
    }
    XXH3_128bits_reset(&st);
    XXH3_128bits_update(&st, ID_TAG, sizeof(ID_TAG));
    feed_le64(&st, s->nblocks);
    for (unsigned i = 0; i < s->nblocks; i++) {
        feed_block(&st, &s->blocks[i]);
    }
    feed_le64(&st, parent_id != NULL);
    if (parent_id) {
        XXH3_128bits_update(&st, parent_id, SL_IDENTITY_LEN);
    }
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&st));
    G_STATIC_ASSERT(sizeof(c.digest) == SL_IDENTITY_LEN);
    memcpy(out, c.digest, SL_IDENTITY_LEN);
    return true;
}

void sl_identity_compute(sl_snapshot *s)
{
    s->has_identity = (!s->parent || s->parent->has_identity) &&
                      sl_identity_with_parent(s, s->parent ? s->parent->identity : NULL,
                                              s->identity);
}

void sl_identity_hex(const uint8_t id[SL_IDENTITY_LEN], char out[2 * SL_IDENTITY_LEN + 1])
{
    for (unsigned i = 0; i < SL_IDENTITY_LEN; i++) {
        g_snprintf(out + 2 * i, 3, "%02x", id[i]);
    }
}

bool sl_snapshot_identity(const sl_snapshot *s, uint8_t out[SL_IDENTITY_LEN], GError **errp)
{
    SL_ARG(s, errp, false);
    SL_ARG(out, errp, false);
    if (!s->has_identity) {
        g_set_error(errp, SL_ERROR, SL_ERROR_UNSUPPORTED, "%s has no per-page checksums (a "
                    "QEMU file without its sidecar index), so it has no content identity and "
                    "cannot be the parent of an incremental snapshot: make an index with "
                    "`snapload index %s`, or save the guest in snapload's format", s->path,
                    s->path);
        return false;
    }
    memcpy(out, s->identity, SL_IDENTITY_LEN);
    return true;
}
