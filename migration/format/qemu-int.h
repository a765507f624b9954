/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the two readers of QEMU's migration stream share (qemu.c: mapped-ram
 * files; qemu-split.c: a plain precopy stream split into RAM and device
 * state): its constants, the reader's position, and reads of big-endian
 * fields that name the field on error.  A reader may read through a window
 * of the stream read ahead (sl_qs_window()): one pread then serves many
 * fields, and the errors stay those of a pread of the field alone.
 */
#ifndef SNAPLOAD_QEMU_INT_H
#define SNAPLOAD_QEMU_INT_H

#include "migration/format/format.h"

#define QEVM_MAGIC        0x5145564du
#define QEVM_VERSION      3u
#define QEMU_MAX_RAM      (1ull << 45) /* 32 TiB of guest RAM: page bitmaps up to 1 GiB */
#define SEC_EOF           0x00
#define SEC_START         0x01
#define SEC_SUBSECTION    0x05
#define SEC_VMDESC        0x06
#define SEC_CONFIGURATION 0x07
#define SEC_FOOTER        0x7e
#define RAM_MEM_SIZE      0x04ull
#define RAM_EOS           0x10ull
#define RAM_VERSION       4u
#define TARGET_PAGE       4096ull
#define MAX_CAPS          64u
#define MAX_VMDESC_SCAN   (64ull << 20)

/* The parser's position in the stream and what it found so far. */
typedef struct {
    sl_snapshot *s;
    sl_regions *regions;
    sl_qemu_stream *q;
    GArray *blocks;        /* sl_block */
    uint64_t off;          /* next byte of the stream */
    int fd;                /* the stream's file */
    uint8_t *win;          /* bytes of the stream read ahead (NULL: none, each read a pread) */
    size_t win_cap;        /* its size */
    size_t win_len;        /* bytes in it */
    uint64_t win_off;      /* the stream offset of win[0] */
    bool pipe;             /* @fd is read in order (read(), no pread): see sl_qs_window_pipe() */
    uint64_t keep;         /* pipe: the window keeps the stream from here on, if it can
                            * (UINT64_MAX: only the last bytes read) */
} qctx;

/* sl_qs_window: reads of @c go through a window of @cap bytes from now on. */
void sl_qs_window(qctx *c, size_t cap);
/*
 * sl_qs_window_pipe: like sl_qs_window(), for a stream read in order from
 * a pipe or socket (@c->fd's own position is the stream's offset 0).  The
 * window then holds what was read last: a read before the window (a
 * header copied after its fields) is served only if @c->keep or the few
 * bytes kept before each read (qemu.c, PIPE_BEHIND) hold it, else refused
 * as a format error.
 */
void sl_qs_window_pipe(qctx *c, size_t cap);
/* sl_qs_window_free: releases @c's window (none: nothing). */
void sl_qs_window_free(qctx *c);
/*
 * sl_qs_view: @n bytes at stream offset @at (@n at most the window's size),
 * *@p pointing at them in the window until the next read of @c; the
 * position does not move.  Errors name @what as sl_read_at()'s do.
 */
bool sl_qs_view(qctx *c, uint64_t at, size_t n, const uint8_t **p, const char *what,
                GError **errp);

/* sl_qs_take: sl_qs_view() of @n bytes at the position, then past them. */
bool sl_qs_take(qctx *c, size_t n, const uint8_t **p, const char *what, GError **errp);
/* sl_qs_peek: @n bytes at the position into @buf; the position does not move. */
bool sl_qs_peek(qctx *c, void *buf, size_t n, const char *what, GError **errp);
/* sl_qs_get: @n bytes at the position into @buf, then past them. */
bool sl_qs_get(qctx *c, void *buf, size_t n, const char *what, GError **errp);
/* sl_qs_u8, sl_qs_be32, sl_qs_be64: one field of that size. */
bool sl_qs_u8(qctx *c, uint8_t *v, const char *what, GError **errp);
bool sl_qs_be32(qctx *c, uint32_t *v, const char *what, GError **errp);
bool sl_qs_be64(qctx *c, uint64_t *v, const char *what, GError **errp);
/* sl_qs_str8: a u8-length string (QEMU's idstr): 1..255 printable bytes. */
bool sl_qs_str8(qctx *c, char out[SL_BLOCK_NAME_MAX], const char *what, GError **errp);
/* sl_qs_header: "QEVM" 3 and the optional configuration section (into @c->q). */
bool sl_qs_header(qctx *c, GError **errp);

#endif /* SNAPLOAD_QEMU_INT_H */
