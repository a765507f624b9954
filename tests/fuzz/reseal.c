/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Recomputes a snapshot's tables_csum and header_csum (see reseal.h).  The
 * field offsets are those of docs/format.md's file header, which every
 * version so far shares; nothing here trusts the file: a table that does
 * not fit is simply not resealed.
 */
#include <stdbool.h>
#include <unistd.h>
#include <glib.h>
#include <xxhash.h>
#include "reseal.h"

enum {
    H_SIZE = 64, H_NBLOCKS = 24, H_NSECTIONS = 28, H_BLKTAB = 32, H_SECTAB = 40,
    H_TABLES_CSUM = 48, H_HEADER_CSUM = 56,
    BLOCK_ENTRY = 128, SECTION_ENTRY = 32, MAX_ENTRIES = 1024,
};

static uint64_t get_le(const uint8_t *p, unsigned bytes)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < bytes; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* Reads @len bytes at @off into @buf if they lie inside a file of @size. */
static bool read_inside(int fd, uint64_t size, uint64_t off, uint64_t len, uint8_t *buf)
{
    return off <= size && len <= size - off &&
           pread(fd, buf, len, (off_t)off) == (ssize_t)len;
}

/* Sets tables_csum in header @h: XXH3(block table ‖ section table). */
static void reseal_tables(int fd, uint64_t size, uint8_t *h)
{
    uint64_t nb = get_le(h + H_NBLOCKS, 4), ns = get_le(h + H_NSECTIONS, 4);
    uint64_t blen = nb * BLOCK_ENTRY, slen = ns * SECTION_ENTRY;
    g_autofree uint8_t *tabs = NULL;

    if (nb > MAX_ENTRIES || ns > MAX_ENTRIES) {
        return;
    }
    tabs = g_malloc(blen + slen + 1);
    if (read_inside(fd, size, get_le(h + H_BLKTAB, 8), blen, tabs) &&
        read_inside(fd, size, get_le(h + H_SECTAB, 8), slen, tabs + blen)) {
        put_le64(h + H_TABLES_CSUM, XXH3_64bits(tabs, blen + slen));
    }
}

void reseal(int fd, uint64_t size)
{
    uint8_t h[H_SIZE];

    if (!read_inside(fd, size, 0, H_SIZE, h)) {
        return;
    }
    reseal_tables(fd, size, h);
    put_le64(h + H_HEADER_CSUM, XXH3_64bits(h, H_HEADER_CSUM));
    if (pwrite(fd, h, H_SIZE, 0) != H_SIZE) {
        g_error("reseal: rewriting the header failed");
    }
}
