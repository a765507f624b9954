/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore daemon's written-page messages (docs/protocol.md): WRITTEN
 * (a tracked mapping reports what it wrote before it goes), WRITTEN_QUERY
 * (qemu-save asks what every tracked mapping wrote so far, answered as a
 * sealed memfd bitmap) and UNTRACKED (a consumer changes a file where no
 * list shows it).  Called from the daemon's poll loop (daemon.c); the
 * bookkeeping itself is dtrack.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "daemon-int.h"
#include "peercheck.h"
#include "wire.h"
#include "migration/format/format.h"

/* The connection of process @pid that registered a tracked mapping of block @idx at @addr. */
static client *tracked_mapping(server *d, pid_t pid, int idx, uint64_t addr)
{
    for (guint i = 0; i < d->clients->len; i++) {
        client *c = g_ptr_array_index(d->clients, i);
        if (c->pid == pid && c->wp_addr[idx] == addr && !c->reported[idx]) {
            return c;
        }
    }
    return NULL;
}

/* WRITTEN: the pages a tracked mapping of the same process wrote; REGISTERED 0 once read. */
int on_written(server *d, client *c, const sl_msg_written *m, unsigned nfds,
                      GError **errp)
{
    int idx = sl_snapshot_find_block(d->snap, m->block);
    client *owner;
    int ret;

    if (!c->greeted || nfds) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "WRITTEN %s", nfds ? "carrying fds"
                                                                         : "before HELLO");
        return -EPROTO;
    }
    owner = idx >= 0 && m->host_addr ? tracked_mapping(d, c->pid, idx, m->host_addr) : NULL;
    if (!d->dt || !owner) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "WRITTEN for block '%s' at 0x%"
                    G_GINT64_MODIFIER "x: no tracked mapping of process %d is registered there",
                    m->block, m->host_addr, (int)c->pid);
        return -ENOENT;
    }
    ret = sl_dtrack_scan(d->dt, (unsigned)idx, &(sl_dtrack_map){ c->pid, m->host_addr,
                                                                  owner->wp_off[idx],
                                                                  owner->wp_len[idx] },
                         m->flags & SL_WRITTEN_UNTRACKED, errp);
    if (ret < 0) {
        return ret;
    }
    owner->reported[idx] = 1;
    return answer_status(c, 0, "ok", "WRITTEN", errp);
}

/* A sealed memfd holding @bits (@npages bits), or -errno with @errp saying why not. */
static int bitmap_memfd(const uint64_t *bits, uint64_t npages, GError **errp)
{
    int fd = memfd_create("snapload-written", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int ret = fd < 0 ? -errno : sl_pwrite_full(fd, bits, sl_bitmap_bytes(npages), 0);
    const char *shortage;

    if (ret == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) {
        ret = -errno;
    }
    if (ret == 0) {
        return fd;
    }
    ret = ret < 0 ? ret : -EIO;
    shortage = sl_peer_fd_shortage(-ret);
    g_set_error(errp, SL_ERROR, SL_ERROR_IO, "making the answer to WRITTEN_QUERY: %s",
                shortage ? shortage : g_strerror(-ret));
    if (fd >= 0) {
        close(fd);
    }
    return ret;
}

/* Sends WRITTEN_PAGES: @bits (@npages bits) in a memfd, or (@bits NULL) the
 * refusal @why.  0, or -errno with @errp saying why it could not be sent. */
static int reply_written(client *c, const uint64_t *bits, uint64_t npages, const char *why,
                         GError **errp)
{
    sl_msg m = { .type = SL_MSG_WRITTEN_PAGES,
                 .u.wpages = { .status = bits ? 0 : -ENODATA, .pages = bits ? npages : 0 } };
    int fd = bits ? bitmap_memfd(bits, npages, errp) : -1;
    int ret;

    if (fd < 0 && bits) {
        return fd;
    }
    g_strlcpy(m.u.wpages.message, bits ? "ok" : why, sizeof(m.u.wpages.message));
    m.u.wpages.written = bits ? sl_bitmap_count(bits, npages) : 0;
    ret = send_answer(c, &m, bits ? &fd : NULL, bits ? 1 : 0, "WRITTEN_QUERY", errp);
    if (fd >= 0) {
        close(fd);
    }
    return ret;
}

/* Why the pages block @idx's tracked mappings wrote cannot be given to a
 * client comparing against snapshot @identity, or NULL. */
static const char *query_refusal(const server *d, int idx, const uint8_t *identity)
{
    uint8_t id[SL_IDENTITY_LEN];

    if (!d->dt) {
        return "this daemon does not track writes (qemu-restore --track-writes or --reuse-ram)";
    }
    if (idx < 0 || !d->served[idx]) {
        return "no such block is served here";
    }
    if (!sl_snapshot_identity(d->snap, id, NULL)) {
        return "the snapshot being restored has no content identity";
    }
    if (memcmp(id, identity, SL_IDENTITY_LEN)) {
        return "the pages written are known against another snapshot than the one compared with";
    }
    return NULL;
}

/*
 * WRITTEN_QUERY: the pages of a block written so far by every tracked
 * mapping (those that reported, and each live one, read from its process's
 * pagemap), as a bitmap in a memfd; or WRITTEN_PAGES with the reason there
 * is none.  The connection stays, for that one query: a second one is
 * refused, so a client that never reads its answers cannot pile up memfds
 * in its socket.  0, or -errno to drop the client (also when the answer
 * cannot be made or sent).
 */
int on_written_query(server *d, client *c, const sl_msg_written_query *m,
                            unsigned nfds, GError **errp)
{
    int idx = sl_snapshot_find_block(d->snap, m->block);
    const char *why = query_refusal(d, idx, m->identity);
    g_autoptr(GArray) maps = g_array_new(false, false, sizeof(sl_dtrack_map));
    g_autoptr(GError) err = NULL;
    g_autofree uint64_t *bits = NULL;
    uint64_t npages = 0;

    if (!c->greeted || nfds) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "WRITTEN_QUERY %s",
                    nfds ? "carrying fds" : "before HELLO");
        return -EPROTO;
    }
    if (c->queried) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "a second WRITTEN_QUERY on one connection "
                    "(one per connection)");
        return -EPROTO;
    }
    c->queried = true;
    for (guint i = 0; !why && i < d->clients->len; i++) {
        const client *o = g_ptr_array_index(d->clients, i);
        if (o->wp_addr[idx] && !o->reported[idx]) {
            sl_dtrack_map m = { o->pid, o->wp_addr[idx], o->wp_off[idx], o->wp_len[idx] };
            g_array_append_val(maps, m);
        }
    }
    if (!why) {
        bits = sl_dtrack_written_now(d->dt, (unsigned)idx, (sl_dtrack_map *)maps->data,
                                     maps->len, &npages, &why, &err);
    }
    dlog(d, "%s asked for the written pages of block '%s': %s", c->name, m->block,
         bits ? "sent" : err ? err->message : why);
    return reply_written(c, bits, npages, why, errp);
}

/* UNTRACKED: a consumer is about to change a block's file where no list
 * shows it (punched holes, a hand-off to an untracked process): no list of
 * it from now on, for a query or the next run.  REGISTERED 0 once noted,
 * -ENOENT for a block this restore does not have while it tracks. */
int on_untracked(server *d, client *c, const sl_msg_untracked *m, unsigned nfds,
                        GError **errp)
{
    int idx = sl_snapshot_find_block(d->snap, m->block);

    if (!c->greeted || nfds) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "UNTRACKED %s",
                    nfds ? "carrying fds" : "before HELLO");
        return -EPROTO;
    }
    if (d->dt && idx < 0) {
        /* Not noted: the consumer must not go on believing it was. */
        dlog(d, "%s reported an untracked change of unknown block '%s'", c->name, m->block);
        return answer_status(c, -ENOENT, "no such block in this restore", "UNTRACKED", errp);
    }
    if (d->dt) {
        sl_dtrack_untracked(d->dt, (unsigned)idx);
        dlog(d, "%s changes block '%s' where no list shows it", c->name, m->block);
    }
    return answer_status(c, 0, "ok", "UNTRACKED", errp);
}

