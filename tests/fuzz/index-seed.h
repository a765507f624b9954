/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The one QEMU mapped-ram stream fuzz-index attaches its inputs to, and the
 * sidecar indexes of it that seed the fuzzer.  The stream comes from the
 * unit tests' generator (tests/unit/qemu-stream.h) with a fixed
 * description, so that the harness (which writes it at start) and
 * fuzz-seeds (which indexes it) make the same bytes, and an index written
 * by `snapload index` for one matches the other's identity.  Its first
 * block spans two 8192-page segments of the index.
 */
#ifndef SNAPLOAD_FUZZ_INDEX_SEED_H
#define SNAPLOAD_FUZZ_INDEX_SEED_H

#include <stdbool.h>
#include <glib.h>

/** index_seed_stream: write the fixed QEMU stream to @path. */
bool index_seed_stream(const char *path, GError **errp);

/**
 * index_seed_index: write the index of the stream at @stream (no index may
 * lie beside it) to @out, with a hot-page list of a few pages of each
 * block when @hot.
 */
bool index_seed_index(const char *stream, const char *out, bool hot, GError **errp);

#endif /* SNAPLOAD_FUZZ_INDEX_SEED_H */
