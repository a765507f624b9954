/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore daemon's wire protocol (docs/protocol.md), version 1.
 *
 * Messages travel on a SOCK_SEQPACKET unix socket, one message per packet:
 * a 16-byte little-endian header (magic, version, type, payload length)
 * followed by a fixed-size payload per type.  REGISTER carries two fds with
 * SCM_RIGHTS: the consumer's userfaultfd and its guest-RAM memory file.
 * Encoding and validation live here, without I/O, so they can be tested on
 * hostile input directly.
 */
#ifndef SNAPLOAD_PROTOCOL_H
#define SNAPLOAD_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

#define SL_PROTO_MAGIC   0x31444c53u /* "SLD1" little-endian */
#define SL_PROTO_VERSION 1u        /* of the framing: every header carries it */
/*
 * Protocol levels, negotiated in HELLO (the range a client speaks) and
 * WELCOME (the highest both speak): level 1 is messages 1 to 10; level 2
 * adds REGISTER_MOVER, MOVE and MOVED.  A client sends REGISTER_MOVER only
 * on a connection that chose level 2, so that a daemon which predates it
 * gets a plain REGISTER instead of a message it would drop the client for;
 * a daemon serves REGISTER_MOVER at any level (the first clients that sent
 * it came before levels and offered 1).
 */
#define SL_PROTO_LEVEL_MIN   1u
#define SL_PROTO_LEVEL       2u
#define SL_PROTO_LEVEL_MOVER 2u
#define SL_PROTO_HDR     16u
#define SL_PROTO_MAX     512u        /* largest packet we accept */
#define SL_PROTO_NAME    64u

enum {
    SL_MSG_HELLO = 1,      /* client -> daemon: versions it speaks, its name */
    SL_MSG_WELCOME = 2,    /* daemon -> client: chosen version, block count */
    SL_MSG_REGISTER = 3,   /* client -> daemon (+ uffd, memory fd): one mapping */
    SL_MSG_REGISTERED = 4, /* daemon -> client: status of a REGISTER */
    SL_MSG_DONE = 5,       /* daemon -> client: every page is in place */
    SL_MSG_REGISTER_WP = 6, /* REGISTER of a mapping whose uffd does async WP and whose
                             * range is registered in WP mode too: placed write-protected */
    SL_MSG_WRITTEN = 7,    /* client -> daemon, on a connection of its own: list what my
                            * REGISTER_WP mapping wrote (I unmap it or exit next) */
    SL_MSG_WRITTEN_QUERY = 8, /* client -> daemon: which pages of a block have the tracked
                               * mappings written since the restore began, so far? */
    SL_MSG_WRITTEN_PAGES = 9, /* daemon -> client (+ a memfd holding the bitmap when
                               * status is 0): the answer to a WRITTEN_QUERY */
    SL_MSG_UNTRACKED = 10, /* client -> daemon, on a connection of its own: this process is
                            * about to change a block's file where no list shows it */
    SL_MSG_REGISTER_MOVER = 11, /* REGISTER of anonymous memory (+ uffd, mover channel):
                                 * the client moves whole 2 MiB chunks into it (MOVE) */
    SL_MSG_MOVE = 12,      /* daemon -> client, on the mover channel: move the chunk the
                            * daemon wrote into staging slot @slot to @dst */
    SL_MSG_MOVED = 13,     /* client -> daemon, on the mover channel: the answer to a MOVE */
};

/* Largest chunk a MOVE carries, and most staging slots a client may offer. */
#define SL_MOVE_CHUNK (2u << 20)
#define SL_MOVE_MAX_SLOTS 64u

/* sl_msg_written.flags: the file also changed in ways the list does not
 * show: the process discarded pages of it (punched holes, MADV_REMOVE), or
 * handed it to a process that does not track its writes. */
#define SL_WRITTEN_UNTRACKED 1u

typedef struct {
    uint32_t version_min, version_max;
    char name[32];
} sl_msg_hello;

typedef struct {
    uint32_t version;
    uint32_t nblocks;
} sl_msg_welcome;

typedef struct {
    char block[SL_PROTO_NAME];
    uint64_t host_addr;     /* where the client mapped the block */
    uint64_t length;
    uint64_t file_offset;   /* offset of the block in the memory file */
    uint64_t page_size;     /* page size of that mapping */
    uint64_t staging_addr;  /* REGISTER_MOVER: the client's staging slots, SL_MOVE_CHUNK
                             * each, 2 MiB aligned (0 in the other REGISTERs) */
    uint64_t staging_slots; /* REGISTER_MOVER: how many (1..SL_MOVE_MAX_SLOTS) */
} sl_msg_register;

typedef struct {
    uint64_t slot;          /* staging slot holding the chunk's bytes */
    uint64_t dst;           /* where it goes in the registered mapping */
    uint64_t len;           /* bytes, at most SL_MOVE_CHUNK */
    uint64_t deadline_ns;   /* CLOCK_MONOTONIC: not moved if read after this */
} sl_msg_move;

typedef struct {            /* (on the wire: status, done, dst) */
    int32_t status;         /* 0 or -errno of UFFDIO_MOVE */
    uint64_t done;          /* bytes moved, from the start of the chunk */
    uint64_t dst;           /* the MOVE's dst: which one this answers */
} sl_msg_moved;

typedef struct {
    char block[SL_PROTO_NAME];
    uint64_t host_addr;     /* the REGISTER_WP mapping, as registered */
    uint64_t length;
    uint64_t flags;         /* SL_WRITTEN_* */
} sl_msg_written;

typedef struct {
    int32_t status;         /* 0 or -errno */
    char message[120];
} sl_msg_status;

#define SL_PROTO_IDENTITY 16u /* SL_IDENTITY_LEN */

typedef struct {
    char block[SL_PROTO_NAME];
    uint8_t identity[SL_PROTO_IDENTITY]; /* the snapshot the asker compares against */
} sl_msg_written_query;

typedef struct {
    char block[SL_PROTO_NAME];
} sl_msg_untracked;

typedef struct {            /* (on the wire: status, pages, written, message) */
    uint64_t pages;         /* bits of the bitmap: the block's snapshot pages */
    uint64_t written;       /* bits set */
    int32_t status;         /* 0, or -errno: no list (@message says why) */
    char message[120];
} sl_msg_written_pages;

typedef struct {
    uint16_t type;
    union {
        sl_msg_hello hello;
        sl_msg_welcome welcome;
        sl_msg_register reg;
        sl_msg_status status;
        sl_msg_written written;
        sl_msg_written_query query;
        sl_msg_written_pages wpages;
        sl_msg_untracked untracked;
        sl_msg_move move;
        sl_msg_moved moved;
    } u;
} sl_msg;

/** sl_msg_encode: @m into @buf (SL_PROTO_MAX bytes); returns the length. */
size_t sl_msg_encode(const sl_msg *m, uint8_t *buf);

/**
 * sl_msg_decode: parse one packet.  Checks magic, version, type, that the
 * length field equals the packet and the type's payload size, and that
 * every string is NUL-terminated.  Errors name the bad field.
 */
bool sl_msg_decode(const uint8_t *buf, size_t len, sl_msg *m, GError **errp);

#endif /* SNAPLOAD_PROTOCOL_H */
