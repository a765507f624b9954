/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Re-sealing a mutated snapshot for the reader fuzzer.  Nearly every field
 * the reader validates sits in the file header or the block and section
 * tables, which two 64-bit checksums guard; a mutation of any of them
 * would otherwise stop at "checksum mismatch" and never reach the check of
 * the field itself.  reseal() recomputes those two checksums from the
 * (mutated) bytes, as docs/format.md defines them, so that the fuzzer tests
 * the validation behind them.  Only the container's two outer checksums:
 * per-block metadata and section checksums are left as the input has them.
 */
#ifndef SNAPLOAD_FUZZ_RESEAL_H
#define SNAPLOAD_FUZZ_RESEAL_H

#include <stdint.h>

/**
 * reseal: set tables_csum (when the tables the header points to lie inside
 * the file) and then header_csum of the snapshot in @fd, @size bytes long.
 * Files shorter than a header are left alone.
 */
void reseal(int fd, uint64_t size);

#endif /* SNAPLOAD_FUZZ_RESEAL_H */
