/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Sparse files for the snapshot-reader fuzzer (format in sparse.h): the
 * decoder the harness runs on every input, and the encoder that turns the
 * snapshots `snapload save` writes into seeds.  Zero runs of 16 bytes or
 * more become gaps, so a snapshot of a few mostly empty blocks is a seed of
 * a few kilobytes.
 */
#include <unistd.h>
#include "sparse.h"

#define MIN_ZEROS 16u   /* a run of zeros at least this long becomes a gap */

static uint64_t get_le(const uint8_t *p, unsigned bytes)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < bytes; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static void put_le(GByteArray *out, uint64_t v, unsigned bytes)
{
    for (unsigned i = 0; i < bytes; i++) {
        uint8_t b = (uint8_t)(v >> (8 * i));
        g_byte_array_append(out, &b, 1);
    }
}

static int pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n <= 0) {
            return -1;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int64_t sparse_write(int fd, const uint8_t *in, size_t n, uint64_t max)
{
    uint64_t pos = 0;

    if (ftruncate(fd, 0) < 0) {
        return -1;
    }
    while (n >= SPARSE_RECORD) {
        uint64_t gap = get_le(in, 4);
        size_t len = MIN((size_t)get_le(in + 4, 2), n - SPARSE_RECORD);

        in += SPARSE_RECORD;
        n -= SPARSE_RECORD;
        if (gap + len > max - pos) {
            return -1;
        }
        pos += gap;
        if (len && pwrite_all(fd, in, len, pos) < 0) {
            return -1;
        }
        pos += len;
        in += len;
        n -= len;
    }
    return ftruncate(fd, (off_t)pos) < 0 ? -1 : (int64_t)pos;
}

/* Zero bytes at the start of @p (@n bytes). */
static size_t zero_run(const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n && p[i] == 0) {
        i++;
    }
    return i;
}

/* Bytes from @p that one record carries: up to the next MIN_ZEROS zeros. */
static size_t data_run(const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n && i < UINT16_MAX) {
        size_t z = zero_run(p + i, MIN(n - i, MIN_ZEROS));
        if (z >= MIN_ZEROS) {
            break;
        }
        i += z ? z : 1;
    }
    return MIN(i, (size_t)UINT16_MAX);
}

/* One record; a gap too long for 32 bits goes first as empty records. */
static void put_record(GByteArray *out, uint64_t gap, const uint8_t *data, size_t len)
{
    for (; gap > UINT32_MAX; gap -= UINT32_MAX) {
        put_le(out, UINT32_MAX, 4);
        put_le(out, 0, 2);
    }
    put_le(out, gap, 4);
    put_le(out, len, 2);
    g_byte_array_append(out, data, (guint)len);
}

void sparse_encode(const uint8_t *data, size_t len, GByteArray *out)
{
    size_t pos = 0, end = 0; /* end: where the file the records build ends */

    for (;;) {
        pos += zero_run(data + pos, len - pos);
        if (pos == len) {
            break;
        }
        size_t run = data_run(data + pos, len - pos);
        put_record(out, pos - end, data + pos, run);
        pos += run;
        end = pos;
    }
    if (end < len) {
        put_record(out, len - end, NULL, 0);
    }
}
