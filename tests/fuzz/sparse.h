/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The fuzz-reader input format: a snapshot file written sparsely, so that
 * libFuzzer mutates its metadata rather than the megabyte of zeros every
 * snapshot holds before its 1 MiB aligned page data.
 *
 *   input  := flags:u8 record*
 *   record := gap:u32le len:u16le bytes[len]
 *
 * The file is built from offset 0: each record skips @gap bytes (a hole,
 * which reads as zeros) and writes its bytes there.  A last record shorter
 * than its len field writes what is left; fewer than 6 trailing bytes are
 * ignored.  The file ends where the last record does, so a record with
 * len 0 extends it with zeros.  Flags: SPARSE_RESEAL (see reseal.h).
 */
#ifndef SNAPLOAD_FUZZ_SPARSE_H
#define SNAPLOAD_FUZZ_SPARSE_H

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

#define SPARSE_RESEAL 0x01u   /* recompute the container checksums after building */
#define SPARSE_RECORD 6u      /* bytes of a record header */

/**
 * sparse_write: truncate @fd and write the file that @in (@n bytes, the
 * records after the flags byte) describes.  Returns its size, or -1 if it
 * would be larger than @max bytes or a write failed.
 */
int64_t sparse_write(int fd, const uint8_t *in, size_t n, uint64_t max);

/**
 * sparse_encode: append to @out the records of the @len bytes at @data,
 * runs of zeros turned into gaps (the flags byte is the caller's).
 */
void sparse_encode(const uint8_t *data, size_t len, GByteArray *out);

#endif /* SNAPLOAD_FUZZ_SPARSE_H */
