/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Encoding and validation of restore-daemon messages (see protocol.h and
 * docs/protocol.md).  Pure functions: no I/O, no allocation.
 */
#include <string.h>
#include "snapload/snapload.h"
#include "migration/format/format.h"
#include "protocol.h"

G_STATIC_ASSERT(SL_PROTO_IDENTITY == SL_IDENTITY_LEN);

/* Payload sizes on the wire, per type. */
static size_t payload_size(uint16_t type)
{
    switch (type) {
    case SL_MSG_HELLO: return 8 + 32;
    case SL_MSG_WELCOME: return 8;
    case SL_MSG_REGISTER:
    case SL_MSG_REGISTER_WP: return SL_PROTO_NAME + 32;
    case SL_MSG_REGISTER_MOVER: return SL_PROTO_NAME + 48;
    case SL_MSG_MOVE: return 32;
    case SL_MSG_MOVED: return 20;
    case SL_MSG_WRITTEN: return SL_PROTO_NAME + 24;
    case SL_MSG_REGISTERED: return 4 + 120;
    case SL_MSG_WRITTEN_QUERY: return SL_PROTO_NAME + SL_PROTO_IDENTITY;
    case SL_MSG_WRITTEN_PAGES: return 4 + 16 + 120;
    case SL_MSG_UNTRACKED: return SL_PROTO_NAME;
    case SL_MSG_DONE: return 0;
    default: return SIZE_MAX;
    }
}

size_t sl_msg_encode(const sl_msg *m, uint8_t *buf)
{
    size_t len = payload_size(m->type);
    uint8_t *p = buf + SL_PROTO_HDR;

    memset(buf, 0, SL_PROTO_HDR + len);
    sl_put_le32(buf, SL_PROTO_MAGIC);
    buf[4] = SL_PROTO_VERSION & 0xff;
    buf[5] = SL_PROTO_VERSION >> 8;
    buf[6] = m->type & 0xff;
    buf[7] = m->type >> 8;
    sl_put_le32(buf + 8, (uint32_t)len);
    switch (m->type) {
    case SL_MSG_HELLO:
        sl_put_le32(p, m->u.hello.version_min);
        sl_put_le32(p + 4, m->u.hello.version_max);
        memcpy(p + 8, m->u.hello.name, 32);
        break;
    case SL_MSG_WELCOME:
        sl_put_le32(p, m->u.welcome.version);
        sl_put_le32(p + 4, m->u.welcome.nblocks);
        break;
    case SL_MSG_REGISTER_MOVER:
        sl_put_le64(p + 96, m->u.reg.staging_addr);
        sl_put_le64(p + 104, m->u.reg.staging_slots);
        /* fall through */
    case SL_MSG_REGISTER:
    case SL_MSG_REGISTER_WP:
        memcpy(p, m->u.reg.block, SL_PROTO_NAME);
        sl_put_le64(p + 64, m->u.reg.host_addr);
        sl_put_le64(p + 72, m->u.reg.length);
        sl_put_le64(p + 80, m->u.reg.file_offset);
        sl_put_le64(p + 88, m->u.reg.page_size);
        break;
    case SL_MSG_MOVE:
        sl_put_le64(p, m->u.move.slot);
        sl_put_le64(p + 8, m->u.move.dst);
        sl_put_le64(p + 16, m->u.move.len);
        sl_put_le64(p + 24, m->u.move.deadline_ns);
        break;
    case SL_MSG_MOVED:
        sl_put_le32(p, (uint32_t)m->u.moved.status);
        sl_put_le64(p + 4, m->u.moved.done);
        sl_put_le64(p + 12, m->u.moved.dst);
        break;
    case SL_MSG_WRITTEN:
        memcpy(p, m->u.written.block, SL_PROTO_NAME);
        sl_put_le64(p + 64, m->u.written.host_addr);
        sl_put_le64(p + 72, m->u.written.length);
        sl_put_le64(p + 80, m->u.written.flags);
        break;
    case SL_MSG_REGISTERED:
        sl_put_le32(p, (uint32_t)m->u.status.status);
        memcpy(p + 4, m->u.status.message, 120);
        break;
    case SL_MSG_WRITTEN_QUERY:
        memcpy(p, m->u.query.block, SL_PROTO_NAME);
        memcpy(p + 64, m->u.query.identity, SL_PROTO_IDENTITY);
        break;
    case SL_MSG_UNTRACKED:
        memcpy(p, m->u.untracked.block, SL_PROTO_NAME);
        break;
    case SL_MSG_WRITTEN_PAGES:
        sl_put_le32(p, (uint32_t)m->u.wpages.status);
        sl_put_le64(p + 4, m->u.wpages.pages);
        sl_put_le64(p + 12, m->u.wpages.written);
        memcpy(p + 20, m->u.wpages.message, 120);
        break;
    default:
        break;
    }
    return SL_PROTO_HDR + len;
}

static bool bad(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static bool bad(GError **errp, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "protocol: %s", msg);
    return false;
}

static bool terminated(const uint8_t *s, size_t n)
{
    return memchr(s, 0, n) != NULL;
}

/*
 * A block name: NUL-terminated, not empty, and printable (as every block
 * name of a snapshot is): it goes into the daemon's log lines and answers.
 */
static bool block_name_ok(const uint8_t *p, const char *what, GError **errp)
{
    return (terminated(p, SL_PROTO_NAME) && p[0] && sl_name_printable((const char *)p)) ||
           bad(errp, "%s block name is empty, not NUL-terminated or not printable", what);
}

static bool decode_payload(const uint8_t *p, sl_msg *m, GError **errp)
{
    switch (m->type) {
    case SL_MSG_HELLO:
        m->u.hello.version_min = sl_le32(p);
        m->u.hello.version_max = sl_le32(p + 4);
        memcpy(m->u.hello.name, p + 8, 32);
        return terminated(p + 8, 32) || bad(errp, "HELLO name is not NUL-terminated");
    case SL_MSG_WELCOME:
        m->u.welcome.version = sl_le32(p);
        m->u.welcome.nblocks = sl_le32(p + 4);
        return true;
    case SL_MSG_REGISTER:
    case SL_MSG_REGISTER_WP:
    case SL_MSG_REGISTER_MOVER:
        memcpy(m->u.reg.block, p, SL_PROTO_NAME);
        m->u.reg.host_addr = sl_le64(p + 64);
        m->u.reg.length = sl_le64(p + 72);
        m->u.reg.file_offset = sl_le64(p + 80);
        m->u.reg.page_size = sl_le64(p + 88);
        if (!block_name_ok(p, "REGISTER", errp)) {
            return false;
        }
        if (m->type != SL_MSG_REGISTER_MOVER) {
            return true;
        }
        m->u.reg.staging_addr = sl_le64(p + 96);
        m->u.reg.staging_slots = sl_le64(p + 104);
        return (m->u.reg.staging_slots >= 1 && m->u.reg.staging_slots <= SL_MOVE_MAX_SLOTS &&
                m->u.reg.staging_addr % SL_MOVE_CHUNK == 0) ||
               bad(errp, "REGISTER_MOVER offers %" G_GUINT64_FORMAT " staging slots at 0x%"
                   G_GINT64_MODIFIER "x (want 1 to %u, 2 MiB aligned)",
                   m->u.reg.staging_slots, m->u.reg.staging_addr, SL_MOVE_MAX_SLOTS);
    case SL_MSG_MOVE:
        m->u.move.slot = sl_le64(p);
        m->u.move.dst = sl_le64(p + 8);
        m->u.move.len = sl_le64(p + 16);
        m->u.move.deadline_ns = sl_le64(p + 24);
        return (m->u.move.len && m->u.move.len <= SL_MOVE_CHUNK) ||
               bad(errp, "MOVE of %" G_GUINT64_FORMAT " bytes (want 1 to %u)", m->u.move.len,
                   SL_MOVE_CHUNK);
    case SL_MSG_MOVED:
        m->u.moved.status = (int32_t)sl_le32(p);
        m->u.moved.done = sl_le64(p + 4);
        m->u.moved.dst = sl_le64(p + 12);
        return m->u.moved.status <= 0 ||
               bad(errp, "MOVED status %d is not 0 or a negative errno", m->u.moved.status);
    case SL_MSG_WRITTEN:
        memcpy(m->u.written.block, p, SL_PROTO_NAME);
        m->u.written.host_addr = sl_le64(p + 64);
        m->u.written.length = sl_le64(p + 72);
        m->u.written.flags = sl_le64(p + 80);
        return block_name_ok(p, "WRITTEN", errp);
    case SL_MSG_REGISTERED:
        m->u.status.status = (int32_t)sl_le32(p);
        memcpy(m->u.status.message, p + 4, 120);
        return terminated(p + 4, 120) || bad(errp, "REGISTERED message is not terminated");
    case SL_MSG_WRITTEN_QUERY:
        memcpy(m->u.query.block, p, SL_PROTO_NAME);
        memcpy(m->u.query.identity, p + 64, SL_PROTO_IDENTITY);
        return block_name_ok(p, "WRITTEN_QUERY", errp);
    case SL_MSG_UNTRACKED:
        memcpy(m->u.untracked.block, p, SL_PROTO_NAME);
        return block_name_ok(p, "UNTRACKED", errp);
    case SL_MSG_WRITTEN_PAGES:
        m->u.wpages.status = (int32_t)sl_le32(p);
        m->u.wpages.pages = sl_le64(p + 4);
        m->u.wpages.written = sl_le64(p + 12);
        memcpy(m->u.wpages.message, p + 20, 120);
        return terminated(p + 20, 120) || bad(errp, "WRITTEN_PAGES message is not terminated");
    default:
        return true;
    }
}

bool sl_msg_decode(const uint8_t *buf, size_t len, sl_msg *m, GError **errp)
{
    uint32_t plen;
    unsigned version;

    memset(m, 0, sizeof(*m));
    if (len < SL_PROTO_HDR) {
        return bad(errp, "packet of %zu bytes is shorter than the 16-byte header", len);
    }
    if (sl_le32(buf) != SL_PROTO_MAGIC) {
        return bad(errp, "magic 0x%08x is not 0x%08x", sl_le32(buf), SL_PROTO_MAGIC);
    }
    version = (unsigned)buf[4] | (unsigned)buf[5] << 8;
    if (version != SL_PROTO_VERSION) {
        return bad(errp, "message version %u is not %u", version, SL_PROTO_VERSION);
    }
    m->type = (uint16_t)(buf[6] | buf[7] << 8);
    plen = sl_le32(buf + 8);
    if (payload_size(m->type) == SIZE_MAX) {
        return bad(errp, "unknown message type %u", m->type);
    }
    if (plen != payload_size(m->type) || len != SL_PROTO_HDR + (size_t)plen) {
        return bad(errp, "type %u: length field %u and packet of %zu bytes; expected a %zu-byte "
                   "payload", m->type, plen, len, payload_size(m->type));
    }
    if (sl_le32(buf + 12) != 0) {
        return bad(errp, "reserved header field is not zero");
    }
    return decode_payload(buf + SL_PROTO_HDR, m, errp);
}
