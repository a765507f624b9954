/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer harness of the restore daemon's message parser and encoder
 * (migration/protocol.c).  Each input is tried two ways.  As a packet: it
 * goes to sl_msg_decode(), which must fail exactly when it sets an error,
 * and whatever decodes must encode back to exactly the packet's bytes.  As
 * a message: its first byte picks a valid type and the rest fills the
 * payload; the encoding must fit a packet, decode to the same message
 * unless a string or field in it breaks docs/protocol.md's rules (not
 * NUL-terminated, a block name empty or not printable, staging slots,
 * chunk lengths or statuses out of range), and pass the packet checks too.
 */
#include <stddef.h>
#include <string.h>
#include "snapload/snapload.h"
#include "migration/format/format.h"
#include "migration/protocol.h"
#include "fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

/* Bytes of the payload member of @type that decoding fills. */
static size_t member_size(uint16_t type)
{
    switch (type) {
    case SL_MSG_HELLO: return sizeof(sl_msg_hello);
    case SL_MSG_WELCOME: return sizeof(sl_msg_welcome);
    case SL_MSG_REGISTER:
    case SL_MSG_REGISTER_WP: return offsetof(sl_msg_register, staging_addr);
    case SL_MSG_REGISTER_MOVER: return sizeof(sl_msg_register);
    case SL_MSG_MOVE: return sizeof(sl_msg_move);
    case SL_MSG_REGISTERED: return sizeof(sl_msg_status);
    case SL_MSG_WRITTEN: return sizeof(sl_msg_written);
    case SL_MSG_WRITTEN_QUERY: return sizeof(sl_msg_written_query);
    case SL_MSG_UNTRACKED: return sizeof(sl_msg_untracked);
    case SL_MSG_WRITTEN_PAGES: /* not its tail padding */
        return offsetof(sl_msg_written_pages, message) + sizeof(((sl_msg_written_pages *)0)->message);
    default: return 0;
    }
}

/* Whether @b decodes to the message @a was (MOVED compared field by field: it has padding). */
static bool same_message(const sl_msg *a, const sl_msg *b)
{
    if (a->type != b->type) {
        return false;
    }
    if (a->type == SL_MSG_MOVED) {
        return a->u.moved.status == b->u.moved.status && a->u.moved.done == b->u.moved.done &&
               a->u.moved.dst == b->u.moved.dst;
    }
    return !memcmp(&a->u, &b->u, member_size(a->type));
}

static bool terminated(const char *s, size_t n)
{
    return memchr(s, 0, n) != NULL;
}

/* A block name docs/protocol.md refuses: unterminated, empty or not printable. */
static bool bad_block(const char *b)
{
    return !terminated(b, SL_PROTO_NAME) || !b[0] || !sl_name_printable(b);
}

/* Whether @m has a string or a field docs/protocol.md refuses. */
static bool has_bad_string(const sl_msg *m)
{
    switch (m->type) {
    case SL_MSG_REGISTER_MOVER:
        return bad_block(m->u.reg.block) || m->u.reg.staging_slots < 1 ||
               m->u.reg.staging_slots > SL_MOVE_MAX_SLOTS ||
               m->u.reg.staging_addr % SL_MOVE_CHUNK != 0;
    case SL_MSG_MOVE:
        return m->u.move.len < 1 || m->u.move.len > SL_MOVE_CHUNK;
    case SL_MSG_MOVED:
        return m->u.moved.status > 0;
    case SL_MSG_HELLO:
        return !terminated(m->u.hello.name, sizeof(m->u.hello.name));
    case SL_MSG_REGISTER:
    case SL_MSG_REGISTER_WP:
        return bad_block(m->u.reg.block);
    case SL_MSG_REGISTERED:
        return !terminated(m->u.status.message, sizeof(m->u.status.message));
    case SL_MSG_WRITTEN:
        return bad_block(m->u.written.block);
    case SL_MSG_WRITTEN_QUERY:
        return bad_block(m->u.query.block);
    case SL_MSG_UNTRACKED:
        return bad_block(m->u.untracked.block);
    case SL_MSG_WRITTEN_PAGES:
        return !terminated(m->u.wpages.message, sizeof(m->u.wpages.message));
    default:
        return false;
    }
}

static void check_packet(const uint8_t *data, size_t size)
{
    uint8_t again[SL_PROTO_MAX];
    GError *err = NULL;
    sl_msg m;
    bool ok = sl_msg_decode(data, size, &m, &err);

    FUZZ_CHECK(ok == (err == NULL), "decode fails exactly when it sets an error");
    FUZZ_CHECK(ok || err->domain == SL_ERROR, "decode errors are in SL_ERROR");
    g_clear_error(&err);
    if (ok) {
        FUZZ_CHECK(size <= SL_PROTO_MAX, "a decoded packet fits SL_PROTO_MAX");
        FUZZ_CHECK(sl_msg_encode(&m, again) == size && !memcmp(again, data, size),
                   "a decoded packet encodes back to its bytes");
    }
}

static void check_message(const uint8_t *data, size_t size)
{
    static const uint16_t types[] = { SL_MSG_HELLO, SL_MSG_WELCOME, SL_MSG_REGISTER,
                                      SL_MSG_REGISTERED, SL_MSG_DONE, SL_MSG_REGISTER_WP,
                                      SL_MSG_WRITTEN, SL_MSG_WRITTEN_QUERY,
                                      SL_MSG_WRITTEN_PAGES, SL_MSG_UNTRACKED,
                                      SL_MSG_REGISTER_MOVER, SL_MSG_MOVE, SL_MSG_MOVED };
    uint8_t buf[SL_PROTO_MAX];
    GError *err = NULL;
    sl_msg m = { 0 }, back;
    size_t len;

    m.type = types[data[0] % G_N_ELEMENTS(types)];
    memcpy(&m.u, data + 1, MIN(size - 1, sizeof(m.u)));
    len = sl_msg_encode(&m, buf);
    FUZZ_CHECK(len >= SL_PROTO_HDR && len <= SL_PROTO_MAX, "an encoding fits a packet");
    if (sl_msg_decode(buf, len, &back, &err)) {
        FUZZ_CHECK(!has_bad_string(&m), "a message with a bad string is refused");
        FUZZ_CHECK(same_message(&m, &back), "an encoded message decodes to itself");
    } else {
        FUZZ_CHECK(has_bad_string(&m), "only a message with a bad string is refused");
        g_clear_error(&err);
    }
    check_packet(buf, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_packet(data, size);
    if (size > 0) {
        check_message(data, size);
    }
    return 0;
}
