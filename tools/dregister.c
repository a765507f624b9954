/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore daemon's REGISTER (docs/protocol.md): a consumer hands over
 * its userfaultfd and, for shared memory, its memory file.  Each is checked
 * against the snapshot and the kernel objects it names (peercheck.c: the
 * range is the consumer's shared mapping of that very file, at the offset
 * and length it names); the first registration of a block attaches it to
 * the restore, later ones must name the same file and become views.  A
 * mapping of shared memory may cover a part of the block (a vhost-user
 * back-end maps each memory region QEMU sends it): it becomes a view of
 * that part.  Once every served block is attached, the restore starts.
 * Called from the daemon's poll loop (daemon.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"
#include "daemon-int.h"
#include "mover.h"
#include "peercheck.h"
#include "wire.h"
#include "backends/backend.h"
#include "migration/format/format.h"
#include "migration/uffd.h"

/* An engine error as the errno a refused client is told. */
static int engine_status(const GError *err)
{
    return err->code == SL_ERROR_INVALID ? -EINVAL : -EIO;
}

/* The range the consumer named is its shared mapping of the file it sent: 0 or -errno. */
static int check_mapping(server *d, const sl_msg_register *m, pid_t pid, const struct stat *st,
                         GError **errp)
{
    g_autoptr(GError) err = NULL;
    int ret = sl_peer_check_mapping(pid, m->host_addr, m->length, st, m->file_offset, &err);

    if (ret == 0 || ret == -EMFILE || ret == -ENFILE) { /* refused, or we cannot look now */
        g_propagate_error(errp, g_steal_pointer(&err));
        return ret == 0 ? -EINVAL : ret;
    }
    if (ret < 0) { /* not ours to read (say, a non-dumpable consumer): the engine copes */
        dlog(d, "block '%s': %s; taking the consumer's word for it", m->block, err->message);
    }
    return 0;
}

/* The memory file is a regular file on tmpfs or hugetlbfs: its kind, page size, identity. */
static int check_file(int memfd, sl_backend_kind *kind, uint64_t *psize, struct stat *st,
                      GError **errp)
{
    if (!sl_wire_file_kind(memfd, kind, psize, errp)) {
        return -EINVAL;
    }
    if (fstat(memfd, st) < 0) {
        int err = errno;
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "memory fd: %s", g_strerror(err));
        return -err;
    }
    if (!S_ISREG(st->st_mode)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory fd is not a regular file");
        return -EINVAL;
    }
    return 0;
}

/* The range fits the memory file: its page size, alignment, no overflow, inside the file. */
static int check_layout(const sl_msg_register *m, uint64_t psize, const struct stat *st,
                        GError **errp)
{
    if (m->page_size != psize) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "page size %" G_GUINT64_FORMAT ", but the "
                    "memory file's is %" G_GUINT64_FORMAT, m->page_size, psize);
    } else if (m->file_offset % psize) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "offset %" G_GUINT64_FORMAT " is not a "
                    "multiple of the page size %" G_GUINT64_FORMAT, m->file_offset, psize);
    } else if (m->host_addr % psize) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "address 0x%" G_GINT64_MODIFIER "x is not "
                    "a multiple of the page size %" G_GUINT64_FORMAT, m->host_addr, psize);
    } else if (m->host_addr > UINT64_MAX - m->length || m->file_offset > UINT64_MAX - m->length) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "address 0x%" G_GINT64_MODIFIER "x or "
                    "offset %" G_GUINT64_FORMAT " plus the length overflows", m->host_addr,
                    m->file_offset);
    } else if ((uint64_t)st->st_size < m->file_offset + m->length) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the memory file has %" G_GINT64_FORMAT
                    " bytes, fewer than offset %" G_GUINT64_FORMAT " plus the length",
                    (gint64)st->st_size, m->file_offset);
    } else {
        return 0;
    }
    return -EINVAL;
}

/* Checks a REGISTER of client pid @pid against the snapshot and the fds it carried: 0 or -errno. */
static int check_register(server *d, const sl_msg_register *m, bool wp, pid_t pid, int uffd,
                          int memfd, int *idx, sl_backend_kind *kind, struct stat *st,
                          GError **errp)
{
    sl_block_info bi;
    uint64_t psize = 0;
    int ret;

    *idx = sl_snapshot_find_block(d->snap, m->block);
    if (*idx < 0 || !sl_snapshot_block(d->snap, (unsigned)*idx, &bi)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "no block '%s' in the snapshot", m->block);
        return -EINVAL;
    }
    if (!d->served[*idx]) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s' is not served by this daemon "
                    "(its owner loads it)", m->block);
        return -EINVAL;
    }
    /* Shared memory may be mapped in parts (where, attach_or_match() checks);
     * anonymous memory has one owner, who maps all of it. */
    if (memfd < 0 ? m->length != bi.length : m->length == 0 || m->length > bi.length) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': length %" G_GUINT64_FORMAT
                    ", but the block has %" G_GUINT64_FORMAT " bytes%s", m->block, m->length,
                    bi.length, memfd < 0 ? " (anonymous memory is registered whole)" : "");
        return -EINVAL;
    }
    if (memfd < 0) { /* anonymous memory of the consumer's own */
        *kind = SL_BACKEND_ANON;
        memset(st, 0, sizeof(*st));
        st->st_size = (off_t)m->length;
        psize = (uint64_t)sysconf(_SC_PAGESIZE);
        ret = m->file_offset ? (g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "offset %"
                                            G_GUINT64_FORMAT " for anonymous memory (want 0)",
                                            m->file_offset), -EINVAL) : 0;
    } else {
        ret = check_file(memfd, kind, &psize, st, errp);
    }
    ret = ret ? ret : check_layout(m, psize, st, errp);
    ret = ret ? ret : sl_peer_check_uffd(uffd, sl_backend_get(*kind)->uffd_features |
                                                   (wp ? SL_UFFD_TRACK_FEATURES : 0), errp);
    ret = ret ? ret : check_mapping(d, m, pid, memfd < 0 ? NULL : st, errp);
    if (ret < 0) {
        g_prefix_error(errp, "block '%s': ", m->block);
    }
    return ret;
}

/* The length of block @idx of @snap (an index check_register() found). */
static uint64_t block_bytes(const sl_snapshot *snap, int idx)
{
    sl_block_info bi;

    return sl_snapshot_block(snap, (unsigned)idx, &bi) ? bi.length : 0;
}

/* A reused RAM file's list of what the previous run wrote: only that is checked. */
static void use_written_list(server *d, const char *block, int idx, int memfd,
                             uint64_t offset)
{
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(sl_page_run));
    g_autoptr(GError) err = NULL;
    g_autofree char *why = NULL;

    if (!d->dt) {
        return;
    }
    if (!sl_dtrack_attached(d->dt, (unsigned)idx, memfd, offset, runs, &why)) {
        if (why) {
            dlog(d, "block '%s': the written-page list is not used, every page is checked: %s",
                 block, why);
        }
        return;
    }
    if (!sl_restore_keep_known(d->r, block, (const sl_page_run *)(void *)runs->data, runs->len,
                               &err)) {
        dlog(d, "block '%s': %s", block, err->message);
        return;
    }
    d->nknown++;
    dlog(d, "block '%s': %u runs written by the previous run are checked, the rest kept",
         block, runs->len);
}

/*
 * Where block @idx starts in the memory file @st that mapping @m names.
 * Once attached, where it was attached.  Before, a mapping of the whole
 * block says it; a mapping of a part says it only when the file holds the
 * block alone (QEMU's RAM files: the block from offset 0), and otherwise
 * is refused rather than guessed (a wrong guess would serve other pages).
 */
static bool block_start(server *d, const sl_msg_register *m, int idx, uint64_t blen,
                        const struct stat *st, uint64_t *start, GError **errp)
{
    if (d->files[idx].st_ino) {
        *start = d->offsets[idx];
    } else if (m->length == blen) {
        *start = m->file_offset;
    } else if ((uint64_t)st->st_size == blen) {
        *start = 0;
    } else {
        /* (short: REGISTERED carries 120 bytes of reason) */
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': a part of the block, whose "
                    "place in the larger memory file is unknown until all of it registers",
                    m->block);
        return false;
    }
    return true;
}

/*
 * The part of block @idx that file mapping @m covers, *@off bytes into the
 * block: inside the block, and whole placement units (the larger of the
 * file's page and the snapshot's), checked before anything is attached.
 */
static int view_offset(server *d, const sl_msg_register *m, int idx, const struct stat *st,
                       uint64_t *off, GError **errp)
{
    sl_block_info bi;
    uint64_t start, unit;

    if (!sl_snapshot_block(d->snap, (unsigned)idx, &bi) ||
        !block_start(d, m, idx, bi.length, st, &start, errp)) {
        return -EINVAL;
    }
    unit = MAX(bi.page_size, m->page_size);
    *off = m->file_offset - start;
    if (m->file_offset < start || *off > bi.length - m->length) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': file bytes [%"
                    G_GUINT64_FORMAT ", +%" G_GUINT64_FORMAT ") lie outside the block's [%"
                    G_GUINT64_FORMAT ", +%" G_GUINT64_FORMAT ")", m->block, m->file_offset,
                    m->length, start, bi.length);
    } else if (*off % unit || m->length % unit) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': %s %" G_GUINT64_FORMAT
                    " is not a multiple of its placement unit, %" G_GUINT64_FORMAT " bytes",
                    m->block, *off % unit ? "offset in the block" : "length",
                    *off % unit ? *off : m->length, unit);
    } else {
        return 0;
    }
    return -EINVAL;
}

/*
 * The memory file @memfd of the REGISTER that attaches a block can take its
 * pages: the restore writes them through it (its own duplicate), which an
 * fd opened read-only, or as O_PATH, cannot.  Only the attaching one: a
 * later view's file is only compared with it.
 */
static int check_writable(const sl_msg_register *m, int memfd, GError **errp)
{
    int fl = fcntl(memfd, F_GETFL);

    if (fl >= 0 && !(fl & O_PATH) && (fl & O_ACCMODE) == O_RDWR) {
        return 0;
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': memory fd %s; the restore "
                "writes the block through it: send it O_RDWR", m->block,
                fl < 0 ? g_strerror(errno) : (fl & O_PATH) ? "is O_PATH"
                : (fl & O_ACCMODE) == O_RDONLY ? "is read-only" : "is write-only");
    return -EINVAL;
}

/* Whether @attached (a block's file; st_ino 0: not attached) is the file @st. */
static bool same_file(const struct stat *attached, const struct stat *st)
{
    return attached->st_ino && attached->st_ino == st->st_ino && attached->st_dev == st->st_dev;
}

/*
 * Block @idx at file bytes [@start, +its length) of file @st overlaps no
 * other block attached to the same file: each would place its pages over
 * the other's.
 */
static int check_no_overlap(server *d, const sl_msg_register *m, int idx, const struct stat *st,
                            uint64_t start, GError **errp)
{
    uint64_t len = block_bytes(d->snap, idx);
    sl_block_info bi;

    for (unsigned i = 0; i < sl_snapshot_n_blocks(d->snap); i++) {
        if ((int)i == idx || !same_file(&d->files[i], st) || !sl_snapshot_block(d->snap, i, &bi) ||
            d->offsets[i] >= start + len || start >= d->offsets[i] + bi.length) {
            continue;
        }
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': file bytes [%"
                    G_GUINT64_FORMAT ", +%" G_GUINT64_FORMAT ") overlap block '%s' in the same "
                    "memory file", m->block, start, len, bi.name);
        return -EINVAL;
    }
    return 0;
}

/*
 * Attaches the block on its first REGISTER; later ones must name the same
 * file (anonymous memory has one owner: no later one).  *@off: where in
 * the block the mapping starts (a file mapping may cover a part).  0 or
 * -errno.
 */
static int attach_or_match(server *d, const sl_msg_register *m, int idx, sl_backend_kind kind,
                           int memfd, const struct stat *st, uint64_t *off, GError **errp)
{
    int ret;

    *off = 0;
    if (d->anon[idx] || (memfd < 0 && d->files[idx].st_ino)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': registered already; "
                    "anonymous memory has one owner, the first to register", m->block);
        return -EEXIST;
    }
    if (memfd < 0) {
        if (!sl_restore_attach(d->r, m->block, NULL, m->length, kind, errp)) {
            return engine_status(*errp);
        }
        d->anon[idx] = true;
        d->anon_addr[idx] = m->host_addr;
        d->nattached++;
        return 0;
    }
    if (d->files[idx].st_ino && !same_file(&d->files[idx], st)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': not the memory file its "
                    "first consumer registered", m->block);
        return -EINVAL;
    }
    if ((ret = view_offset(d, m, idx, st, off, errp)) < 0 || d->files[idx].st_ino) {
        return ret;
    }
    if (d->started) { /* cannot be: the restore starts once every block is attached */
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "block '%s': the restore started without "
                    "it", m->block);
        return -EIO;
    }
    if ((ret = check_writable(m, memfd, errp)) < 0 ||
        (ret = check_no_overlap(d, m, idx, st, m->file_offset - *off, errp)) < 0) {
        return ret;
    }
    /* the whole block, from where it starts in the file (the mapping may be a part) */
    if (!sl_restore_attach_file(d->r, m->block, NULL, block_bytes(d->snap, idx), kind, memfd,
                                m->file_offset - *off, errp)) {
        return engine_status(*errp);
    }
    use_written_list(d, m->block, idx, memfd, m->file_offset - *off);
    d->files[idx] = *st;
    d->offsets[idx] = m->file_offset - *off;
    d->nattached++;
    return 0;
}

/* Starts the restore once every block is attached: 0, or -EIO when it cannot start. */
static int start_when_complete(server *d, GError **errp)
{
    if (d->started || d->nattached < d->nblocks) {
        return 0;
    }
    if (!sl_restore_start(d->r, errp)) {
        /* Fatal: nothing would ever serve the views.  Leaving the loop
         * seals what they map and ends every consumer (never zeros). */
        dlog(d, "the restore could not start: %s", (*errp)->message);
        d->done = true;
        d->status = -EIO;
        return -EIO;
    }
    d->started = true;
    dlog(d, "every block registered: restore started");
    return 0;
}

/*
 * REGISTER_MOVER: the consumer moves whole chunks into its anonymous block
 * itself (mover.h), through the channel @chan (ours to duplicate).  A
 * mover that cannot be set up costs only speed: the block is copied into.
 */
static void add_mover(server *d, client *c, const sl_msg_register *m, int idx, int chan)
{
    g_autoptr(GError) err = NULL;
    int mine = fcntl(chan, F_DUPFD_CLOEXEC, 0);
    sl_mover_server *mv = mine < 0 ? NULL
                                   : sl_mover_server_new(mine, c->pid, c->pidfd, m->staging_addr,
                                                         (unsigned)m->staging_slots, &err);

    if (mv && sl_restore_set_mover(d->r, m->block, sl_mover_server_move, mv, &err)) {
        d->movers[idx] = mv;
        return;
    }
    if (mv) {
        sl_mover_server_free(mv);
    } else if (mine >= 0) {
        close(mine);
    }
    dlog(d, "block '%s': copied into, not moved: %s", m->block,
         err ? err->message : g_strerror(errno));
}

static int do_register(server *d, client *c, const sl_msg_register *m, bool wp, int uffd,
                       int memfd, int chan, GError **errp)
{
    sl_backend_kind kind;
    struct stat st;
    uint64_t off;
    int idx, ret = check_register(d, m, wp, c->pid, uffd, memfd, &idx, &kind, &st, errp);

    if (ret < 0) {
        return ret;
    }
    if (c->registered[idx]) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s' registered twice on one "
                    "connection", m->block);
        return -EEXIST;
    }
    if (wp && (!d->dt || memfd < 0)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "block '%s': a tracked mapping, but %s",
                    m->block, memfd < 0 ? "anonymous memory is not tracked"
                                        : "this daemon does not track writes");
        return -EOPNOTSUPP; /* the client may register it plainly instead */
    }
    ret = attach_or_match(d, m, idx, kind, memfd, &st, &off, errp);
    if (ret == 0 && chan >= 0) {
        add_mover(d, c, m, idx, chan);
    }
    if (ret == 0 && !sl_restore_add_view_range(d->r, m->block, uffd, m->host_addr, off,
                                               m->length, c->id,
                                               wp ? SL_VIEW_WRITE_PROTECTED : 0, errp)) {
        ret = engine_status(*errp);
    }
    if (ret < 0) {
        return ret;
    }
    if (d->dt && memfd >= 0) {
        sl_dtrack_registered(d->dt, (unsigned)idx, wp);
    }
    c->wp_addr[idx] = wp ? m->host_addr : 0;
    c->wp_off[idx] = off; /* a part is scanned where it lies in the block (dtrack.c) */
    c->wp_len[idx] = m->length;
    c->registered[idx] = 1;
    c->nregistered++;
    if (memfd < 0) {
        /* its owner, to collapse it into THPs when complete */
        d->anon_pidfd[idx] = c->pidfd >= 0 ? fcntl(c->pidfd, F_DUPFD_CLOEXEC, 0) : -1;
    }
    return start_when_complete(d, errp);
}

/* Tells the stats reader (qemu-restore) where a consumer registered a block. */
static void note_registered(server *d, client *c, const sl_msg_register *m)
{
    g_autofree char *text = NULL;
    cli_json j;

    if (d->o->stats_fd < 0) {
        return;
    }
    json_begin(&j);
    json_str(&j, "registered", m->block);
    json_u64(&j, "addr", m->host_addr);
    json_int(&j, "pid", c->pid);
    text = json_end(&j);
    if (dprintf(d->o->stats_fd, "%s\n", text) < 0) {
        dlog(d, "cannot write stats: %s", g_strerror(errno));
    }
}

/* REGISTER: REGISTERED (then DONE if the restore is over); 0, or -errno with the reason. */
int on_register(server *d, client *c, uint16_t type, const sl_msg_register *m,
                const int *fds, unsigned nfds, GError **errp)
{
    sl_msg done = { .type = SL_MSG_DONE };
    bool mover = type == SL_MSG_REGISTER_MOVER;
    int ret;

    if (!c->greeted) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "REGISTER before HELLO");
        return -EPROTO;
    }
    /* REGISTER_MOVER is served at any level: the first clients that sent it
     * offered level 1 only (levels came after them). */
    if (mover ? nfds != 2 : nfds != 1 && nfds != 2) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "REGISTER carries %u fds, not %s", nfds,
                    mover ? "two (uffd of anonymous memory, mover channel)"
                          : "two (uffd, memory file) or one (uffd of anonymous memory)");
        return -EINVAL;
    }
    ret = do_register(d, c, m, type == SL_MSG_REGISTER_WP, fds[0],
                      nfds == 2 && !mover ? fds[1] : -1, mover ? fds[1] : -1, errp);
    if (ret < 0) {
        return ret;
    }
    note_registered(d, c, m);
    if ((ret = answer_status(c, 0, "ok", "REGISTER", errp)) < 0) {
        return ret; /* registered, but deaf to the answer: dropped, its view removed */
    }
    if (d->done && d->status == 0) { /* joined after completion: all is in place */
        sl_wire_send(c->fd, &done, NULL, 0);
    }
    return 0;
}

