/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload save`: raw RAM images -> snapshot, zero pages left out, with
 * optional per-block NUMA node hints (--node NAME=NODE), as a child of
 * --parent PARENT if given (PARENT's moved ancestors: --ancestor PATH,
 * repeated, its parent first), and
 * `snapload synth`: a deterministic raw RAM image with a chosen share of
 * zero pages, so demos and tests have guest-like data without a guest.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"
#include "client.h"
#include "migration/busy.h"
#include "migration/format/format.h"

#define IO_CHUNK (8u << 20)

typedef struct {
    char *path;
    char *name;
    uint64_t size;
    dev_t dev;      /* the image file, to refuse an -o that names it */
    ino_t ino;
    int node;       /* node hint stored in the block table, -1: none */
} raw_input;

/* One save, owned by the saving thread. */
typedef struct {
    sl_writer *w;
    sl_snapshot *parent;  /* a child's parent (only changed pages stored), or NULL */
    uint64_t psize;
    const char *dsock;    /* daemon serving a busy memory file, or NULL */
    const char *tmp;      /* the partial snapshot being written */
    uint8_t *buf;         /* @chunk bytes */
    uint64_t chunk;       /* IO_CHUNK, or one page if larger */
    uint64_t done, total; /* bytes read, of all blocks */
    uint64_t stored;      /* pages a child stores */
    uint64_t *const *written; /* per block: the only pages to read (a child's), or NULL */
    cli_interrupt *intr;  /* a signal that came ends the save; NULL: none watched */
} save_ctx;

/*
 * The next span of block @block (@size bytes) to read from byte @from on:
 * [*@off, +*@len), at most c->chunk; with a written list, only listed
 * pages.  False when nothing is left.
 */
static bool next_span(const save_ctx *c, unsigned block, uint64_t size, uint64_t from,
                      uint64_t *off, size_t *len)
{
    const uint64_t *w = c->written ? c->written[block] : NULL;
    uint64_t p = from / c->psize, end = size / c->psize, n;

    p += w ? sl_bit_run(w, p, end, false) : 0;
    if (p >= end) {
        return false;
    }
    n = MIN(c->chunk / c->psize, end - p); /* at least one page: see save_all() */
    n = w ? sl_bit_run(w, p, p + n, true) : n;
    *off = p * c->psize;
    *len = (size_t)(n * c->psize);
    return true;
}

/* @len bytes of block @block at @off (in c->buf) into the snapshot. */
static bool put_chunk(save_ctx *c, unsigned block, uint64_t off, size_t len, GError **errp)
{
    int sig = cli_interrupt_signal(c->intr);
    bool ok;

    if (sig) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "interrupted by %s", strsignal(sig));
        return false;
    }
    ok = sl_writer_write_changed(c->w, c->parent, block, off, c->buf, len, &c->stored, errp);

    c->done += len;
    cli_progress("save", c->done, c->total);
    return ok;
}

/* FILE[:NAME]; the default name is the file's basename.  A FILE whose
 * name holds a colon is taken whole when the part before the last colon
 * names no file and the whole does (`--raw a:b.raw` read a file "a"). */
static void parse_raw(const char *arg, raw_input *in)
{
    const char *colon = strrchr(arg, ':');
    g_autofree char *before = colon ? g_strndup(arg, (gsize)(colon - arg)) : NULL;

    if (colon && access(before, F_OK) < 0 && access(arg, F_OK) == 0) {
        colon = NULL;
    }
    in->path = colon ? g_strndup(arg, (gsize)(colon - arg)) : g_strdup(arg);
    in->name = colon ? g_strdup(colon + 1) : g_path_get_basename(in->path);
    in->node = -1;
}

/* The size and identity of raw image @in; false (said) if it cannot be seen. */
static bool stat_raw(raw_input *in)
{
    struct stat st;

    if (stat(in->path, &st) < 0) {
        cli_fail("raw image %s: %s", in->path, g_strerror(errno));
        return false;
    }
    in->size = (uint64_t)st.st_size;
    in->dev = st.st_dev;
    in->ino = st.st_ino;
    return true;
}

/* Refuses an -o @out that names one of the @n raw images (it would replace it). */
static bool out_is_new(const char *out, const raw_input *ins, unsigned n)
{
    struct stat st;

    for (unsigned i = 0; i < n && stat(out, &st) == 0; i++) {
        if (st.st_dev == ins[i].dev && st.st_ino == ins[i].ino) {
            cli_fail("-o %s is the raw image %s: the snapshot must be another file", out,
                     ins[i].path);
            return false;
        }
    }
    return true;
}

/* One --node NAME=NODE: the hint of the block named NAME (0 <= NODE < 1024);
 * 0, or exit status 2 (every way it can be wrong is bad usage). */
static int apply_node_hint(const char *arg, raw_input *ins, unsigned n)
{
    g_autofree char *name = NULL;
    int node;

    if (!cli_parse_name_node(arg, &name, &node)) {
        return cli_usage("--node '%s': expected NAME=NODE with NODE from 0 to 1023", arg);
    }
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(ins[i].name, name) != 0) {
            continue;
        }
        if (ins[i].node >= 0) {
            return cli_usage("--node '%s': block '%s' already has node %d", arg, name,
                             ins[i].node);
        }
        ins[i].node = node;
        return 0;
    }
    return cli_usage("--node '%s': no --raw block is named '%s'", arg, name);
}

/*
 * A memory file that a lazy restore still fills, read through our own
 * mapping of it registered with that restore's daemon (@dsock), as a
 * vhost-user back-end's is: a page not placed yet is served with the
 * snapshot's bytes when the copy touches it, never read as a hole.  Pages
 * go through @buf, so the writer never sees the busy mapping itself.
 */
/*
 * While a save reads through its view (copy_served()), a page not placed
 * yet is a fault that only the daemon answers: were the daemon to die, the
 * read would wait for ever (never reading zeros, but never ending either).
 * This watchdog ends the process instead, the partial snapshot removed,
 * when the view's connection closes before DONE.  Owned by its thread;
 * @stop ends it when the copy is over.
 */
typedef struct {
    int sock;              /* the view's connection to the daemon */
    int stop;              /* eventfd: the copy is over */
    const char *tmp;       /* the partial snapshot */
    const char *block;
} save_watch;

static gpointer watch_daemon(gpointer opaque)
{
    save_watch *w = opaque;
    struct pollfd p[2] = { { .fd = w->stop, .events = POLLIN },
                           { .fd = w->sock, .events = POLLIN } };

    while (poll(p, 2, -1) < 0 && errno == EINTR) {
    }
    if (p[0].revents || sl_client_wait_done(w->sock)) {
        return NULL; /* the copy is over, or every page is in place: no wait is left */
    }
    unlink(w->tmp);
    fprintf(stderr, "snapload: the restore's daemon went away while block '%s' was read "
            "through it: the pages it had not placed can no longer be read; no snapshot "
            "was written\n", w->block);
    _exit(1);
}

/* Copies block @block of @in through @map (registered with the daemon on @sock). */
static bool copy_watched(save_ctx *c, unsigned block, const raw_input *in, const uint8_t *map,
                         int sock, GError **errp)
{
    save_watch w = { .sock = sock, .stop = eventfd(0, EFD_CLOEXEC), .tmp = c->tmp,
                     .block = in->name };
    GThread *th = w.stop < 0 ? NULL : g_thread_new("sl-save-watch", watch_daemon, &w);
    bool ok = th != NULL;

    if (!ok) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "eventfd: %s", g_strerror(errno));
    }
    for (uint64_t off = 0, len = 0; ok && next_span(c, block, in->size, off + len, &off, &len);) {
        memcpy(c->buf, map + off, len); /* faults on missing pages are served */
        ok = put_chunk(c, block, off, len, errp);
    }
    if (th) {
        uint64_t one = 1;
        (void)!write(w.stop, &one, sizeof(one)); /* an eventfd write cannot fail here */
        g_thread_join(th);
    }
    if (w.stop >= 0) {
        close(w.stop);
    }
    return ok;
}

static bool copy_served(save_ctx *c, unsigned block, const raw_input *in, GError **errp)
{
    int fd = open(in->path, O_RDWR | O_CLOEXEC), sock = -1, uffd = -1;
    uint8_t *map = fd < 0 ? MAP_FAILED : mmap(NULL, in->size, PROT_READ, MAP_SHARED, fd, 0);
    bool ok = map != MAP_FAILED, tracked = false;
    g_autoptr(GError) err = NULL;

    if (!ok) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", in->path, g_strerror(errno));
    }
    ok = ok && (uffd = sl_client_register_view(c->dsock, "save", in->name, map, in->size, fd,
                                               &sock, &tracked, errp)) >= 0;
    ok = ok && copy_watched(c, block, in, map, sock, errp);
    /* A tracked view reports (it wrote nothing) before it goes, else the
     * daemon counts it as gone unreported. */
    if (tracked && !sl_client_report_written(c->dsock, in->name, map, in->size, 0, &err)) {
        fprintf(stderr, "snapload: block '%s': %s\n", in->name, err->message);
    }
    if (map != MAP_FAILED) {
        munmap(map, in->size);
    }
    for (unsigned i = 0; i < 3; i++) {
        int c = (int[]){ uffd, sock, fd }[i];
        if (c >= 0) {
            close(c);
        }
    }
    return ok;
}

bool cli_idle_or_served(int fd, uint64_t size, const char *path, const char *dsock,
                        bool *served, GError **errp)
{
    *served = false;
    if (sl_busy_check(fd, 0, size, path, errp)) {
        return true;
    }
    if (!dsock || (*errp)->code != SL_ERROR_STATE) {
        return false; /* holes would read as zeros */
    }
    g_clear_error(errp);
    *served = true;
    return true;
}

static bool copy_raw(save_ctx *c, unsigned block, const raw_input *in, GError **errp)
{
    int fd = open(in->path, O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0, served = false;

    if (!ok) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", in->path, g_strerror(errno));
    } else if (!c->written || !c->written[block]) {
        /* With a written list, only listed pages are read, and each was
         * placed before a tracked mapping could write it (the write
         * faulted to the daemon first): in the file even while the
         * restore still fills the rest, so read plainly, registering no
         * view (which would count as an untracked mapping). */
        ok = cli_idle_or_served(fd, in->size, in->path, c->dsock, &served, errp);
        if (!ok && !c->dsock && (*errp)->code == SL_ERROR_STATE) {
            /* the way that works now (found by a user's test: not named) */
            g_autofree char *why = g_strdup((*errp)->message);
            g_clear_error(errp);
            g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "%s, or now with --daemon SOCKET, the "
                        "socket of that restore's daemon (qemu-restore --socket), which "
                        "places each page before the save reads it", why);
        }
    }
    if (ok && served) {
        close(fd);
        return copy_served(c, block, in, errp);
    }
    for (uint64_t off = 0, len = 0; ok && next_span(c, block, in->size, off + len, &off, &len);) {
        int ret = sl_pread_full(fd, c->buf, len, off);
        if (ret < 0) { /* sl_pread_full: -EIO also for a file that ends early */
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "reading %s at offset %" G_GUINT64_FORMAT
                        ": %s (was it cut short or changed while it was saved? it had %"
                        G_GUINT64_FORMAT " bytes)", in->path, off, g_strerror(-ret), in->size);
            ok = false;
            break;
        }
        ok = put_chunk(c, block, off, len, errp);
    }
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* Checks a hot-page list against the blocks being saved, then stores it. */
static bool add_hot_list(sl_writer *w, const char *path, const raw_input *ins, unsigned n,
                         uint64_t psize, GError **errp)
{
    g_autofree char *data = NULL;
    gsize len;

    if (!g_file_get_contents(path, &data, &len, errp)) {
        g_prefix_error(errp, "--hot: ");
        return false;
    }
    if (len % 16) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "hot-page list %s: length %zu is not a "
                    "multiple of 16 (entries are u32 block, u32 0, u64 page)", path, (size_t)len);
        return false;
    }
    for (gsize i = 0; i < len / 16; i++) {
        uint32_t b = sl_le32((uint8_t *)data + i * 16);
        uint64_t p = sl_le64((uint8_t *)data + i * 16 + 8);
        if (sl_le32((uint8_t *)data + i * 16 + 4)) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "hot-page list %s: entry %zu has "
                        "flags that are not zero (entries are u32 block, u32 0, u64 page)",
                        path, (size_t)i);
            return false;
        }
        if (b >= n || p >= ins[b].size / psize) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "hot-page list %s: entry %zu names "
                        "block %u page %" G_GUINT64_FORMAT ", which is not in this snapshot",
                        path, (size_t)i, b, p);
            return false;
        }
    }
    return sl_writer_add_section(w, SL_SECTION_HOT_PAGES, data, len, errp);
}

/* Declares the blocks (checking each size against the page size). */
static bool add_blocks(save_ctx *c, const raw_input *ins, unsigned n, GError **errp)
{
    for (unsigned i = 0; i < n; i++) {
        if (ins[i].size % c->psize) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "raw image %s: size %"
                        G_GUINT64_FORMAT " is not a multiple of the page size %" G_GUINT64_FORMAT,
                        ins[i].path, ins[i].size, c->psize);
            return false;
        }
        if (sl_writer_add_block(c->w, ins[i].name, ins[i].size, c->psize, ins[i].node,
                                errp) < 0) {
            return false;
        }
        c->total += ins[i].size;
    }
    return true;
}

/* Opens @o's parent and makes the writer a child of it, recorded by the
 * path cli_parent_path() gives; refuses to write over the parent. */
static bool become_child(save_ctx *c, const cli_save_opts *o, GError **errp)
{
    g_autofree char *rec = NULL;
    uint8_t id[SL_IDENTITY_LEN];

    if (!(c->parent = cli_open_snapshot(o->parent, o->ancestors, 0, errp))) {
        return false;
    }
    if (cli_refuse_chain_file(o->out, c->parent, "the child", errp)) {
        return false;
    }
    if (o->has_parent_id && !sl_snapshot_identity(c->parent, id, errp)) {
        return false;
    }
    if (o->has_parent_id && memcmp(id, o->parent_id, SL_IDENTITY_LEN)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_STATE, "%s changed during the save (its content "
                    "is not the one the pages written were listed against)", o->parent);
        return false;
    }
    rec = cli_parent_path(o->parent, o->out, o->parent_path);
    return sl_writer_set_parent(c->w, c->parent, rec, errp);
}

/* The sections after the pages: device state and hot-page list, if given. */
static bool add_sections(save_ctx *c, const cli_save_opts *o, const raw_input *ins,
                         unsigned n, GError **errp)
{
    if (o->devstate) {
        g_autofree char *data = NULL;
        gsize len;
        if (!g_file_get_contents(o->devstate, &data, &len, errp)) {
            g_prefix_error(errp, "--device-state: ");
            return false;
        }
        if (!sl_writer_add_section(c->w, SL_SECTION_DEVICE_STATE, data, len, errp)) {
            return false;
        }
    }
    return !o->hot || add_hot_list(c->w, o->hot, ins, n, c->psize, errp);
}

static bool save_into(save_ctx *c, const cli_save_opts *o, const raw_input *ins, unsigned n,
                      GError **errp)
{
    if ((o->parent && !become_child(c, o, errp)) || !add_blocks(c, ins, n, errp)) {
        return false;
    }
    for (unsigned i = 0; i < n; i++) {
        if (!copy_raw(c, i, &ins[i], errp)) {
            return false;
        }
    }
    return add_sections(c, o, ins, n, errp) && sl_writer_finish(c->w, errp);
}

static int save_all(raw_input *ins, unsigned n, const cli_save_opts *o)
{
    g_autoptr(GError) err = NULL;
    /* Pages larger than IO_CHUNK are read one at a time (found by review:
     * with none per chunk, a save of 16 MiB pages never ended). */
    uint64_t chunk = MAX(IO_CHUNK, o->psize);
    g_autofree uint8_t *buf = g_malloc(chunk);
    /* Written beside @out and renamed over it only when complete: a failed
     * save never destroys an earlier snapshot of the same name. */
    g_autofree char *tmp = cli_partial_path(o->out);
    save_ctx c = { .w = sl_writer_new(tmp, &err), .psize = o->psize, .dsock = o->dsock,
                   .tmp = tmp, .buf = buf, .chunk = chunk, .written = o->written,
                   .intr = o->intr };
    bool ok = c.w && save_into(&c, o, ins, n, &err);

    sl_writer_free(c.w);
    sl_snapshot_close(c.parent);
    if (!cli_finish_partial(tmp, o->out, ok, &err)) {
        return cli_fail_error(g_steal_pointer(&err));
    }
    if (o->parent) {
        fprintf(stderr, "snapload: wrote %s: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                " pages differ from its parent %s\n", o->out, c.stored, c.total / c.psize,
                o->parent);
    }
    return 0;
}

/*
 * Block names the format refuses, or one given twice, as bad usage (2)
 * before any file is opened (found by a docs review: the writer refused
 * them with 1, after the output was created).
 */
static int check_names(const raw_input *ins, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        const char *name = ins[i].name;

        if (!*name || strlen(name) >= SL_NAME_MAX || !sl_name_printable(name)) {
            return cli_usage("--raw %s: a block name must be 1 to %u bytes of UTF-8 text "
                             "without control characters", ins[i].path, SL_NAME_MAX - 1);
        }
        for (unsigned j = 0; j < i; j++) {
            if (!strcmp(ins[j].name, name)) {
                return cli_usage("--raw: block '%s' is named twice", name);
            }
        }
    }
    return 0;
}

/* Reads the raw images' sizes, applies --node hints, writes the snapshot. */
static int save_hinted(char **raws, char **nodes, const cli_save_opts *o)
{
    unsigned n = g_strv_length(raws);
    raw_input *ins = g_new0(raw_input, n);
    int ret = 0;

    for (unsigned i = 0; i < n; i++) {
        parse_raw(raws[i], &ins[i]);
    }
    ret = check_names(ins, n);
    for (unsigned i = 0; nodes && nodes[i] && ret == 0; i++) {
        ret = apply_node_hint(nodes[i], ins, n); /* usage: before any file is looked at */
    }
    for (unsigned i = 0; i < n && ret == 0; i++) {
        ret = stat_raw(&ins[i]) ? 0 : 1;
    }
    ret = ret ? ret : !out_is_new(o->out, ins, n);
    ret = ret ? ret : save_all(ins, n, o);
    for (unsigned i = 0; i < n; i++) {
        g_free(ins[i].path);
        g_free(ins[i].name);
    }
    g_free(ins);
    return ret;
}

int cmd_save(int argc, char **argv)
{
    g_auto(GStrv) raws = NULL, nodes = NULL;
    g_autofree char *out = NULL, *psize_s = NULL, *devstate = NULL, *hot = NULL;
    g_autofree char *parent = NULL, *daemon = NULL, *given = NULL;
    g_auto(GStrv) ancestors = NULL;
    uint64_t psize = 4096;
    GOptionEntry entries[] = {
        { "raw", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &raws, "raw RAM image of a block", "FILE[:NAME]" },
        { "page-size", 0, 0, G_OPTION_ARG_STRING, &psize_s, "page size (default 4K)", "SIZE" },
        { "device-state", 0, 0, G_OPTION_ARG_FILENAME, &devstate, "store FILE as the device-state section", "FILE" },
        { "hot", 0, 0, G_OPTION_ARG_FILENAME, &hot, "store a hot-page list (from restore --record)", "HOTLIST" },
        { "node", 0, 0, G_OPTION_ARG_STRING_ARRAY, &nodes, "store NODE as block NAME's NUMA node hint (repeatable)", "NAME=NODE" },
        { "output", 'o', 0, G_OPTION_ARG_FILENAME, &out, "snapshot to write", "SNAP" },
        { "parent", 0, 0, G_OPTION_ARG_FILENAME, &parent, "write an incremental snapshot: only "
          "the pages that differ from PARENT's (by checksum)", "PARENT" },
        { "parent-path", 0, 0, G_OPTION_ARG_FILENAME, &given, "with --parent: the parent's "
          "path to record (default: its name when SNAP is in its directory, else its absolute "
          "path; a relative path is taken from SNAP's directory)", "PATH" },
        CLI_ANCESTOR_OPTION(ancestors),
        { "daemon", 0, 0, G_OPTION_ARG_FILENAME, &daemon, "a RAM file that a lazy restore "
          "still fills is read through a view registered with that restore's daemon at SOCKET "
          "(its missing pages served), instead of being refused", "SOCKET" },
        { NULL },
    };
    int ret;

    if (!cli_parse("- raw RAM images to a snapshot", entries, &argc, &argv)) {
        return 2;
    }
    if (!raws || !out) {
        return cli_usage("save needs at least one --raw FILE[:NAME] and -o SNAP");
    }
    if (ancestors && !parent) {
        return cli_usage("--ancestor names PARENT's ancestors: it needs --parent PARENT");
    }
    if (given && !parent) {
        return cli_usage("--parent-path is the path to record for PARENT: it needs --parent "
                         "PARENT");
    }
    if (given && (ret = cli_check_parent_path(parent, out, given)) != 0) {
        return ret;
    }
    if (psize_s && !cli_parse_size(psize_s, &psize)) {
        return cli_usage("--page-size: '%s' is not a size", psize_s);
    }
    if (psize & (psize - 1) || psize < 4096 || psize > (1u << 30)) {
        return cli_usage("--page-size: %s is not a power of two from 4K to 1G", psize_s);
    }
    return save_hinted(raws, nodes, &(cli_save_opts){ .psize = psize, .out = out,
                       .devstate = devstate, .hot = hot, .parent = parent,
                       .parent_path = given,
                       .ancestors = ancestors, .dsock = daemon });
}

int cli_save(char **raws, const cli_save_opts *o)
{
    return save_hinted(raws, NULL, o);
}

/* ------------------------------- synth --------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Page @idx of the synthetic image: zero for @zero_pct % of 64 KiB groups
 * (of @zero_unit bytes with --zero-unit).  Returns whether it is zero. */
static bool synth_page(uint8_t *p, uint64_t idx, uint64_t seed, unsigned zero_pct,
                       uint64_t group)
{
    uint64_t *w = (uint64_t *)p;
    uint64_t s = mix64(seed ^ (idx * 0x9e3779b97f4a7c15ull));

    if (mix64(seed + idx / group) % 100 < zero_pct) {
        memset(p, 0, 4096);
        return true;
    }
    w[0] = idx;
    for (unsigned i = 1; i < 4096 / 8; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        w[i] = s;
    }
    return false;
}

/*
 * Writes the synthetic image of @size bytes to @fd: the whole size first,
 * then only the runs of non-zero pages, so zero pages stay holes, which
 * read as zeros (a 64 GiB image with 95 % zero pages takes about 3.2 GiB
 * of disk).  0 or -errno.
 */
static int write_synth(int fd, uint64_t size, uint64_t seed, unsigned zero_pct, uint64_t unit)
{
    g_autofree uint8_t *buf = g_malloc(IO_CHUNK);
    g_autofree bool *zero = g_new(bool, IO_CHUNK / 4096);

    if (ftruncate(fd, (off_t)size) < 0) {
        return -errno;
    }
    for (uint64_t off = 0; off < size; off += IO_CHUNK) {
        size_t len = (size_t)MIN(IO_CHUNK, size - off);
        for (size_t k = 0; k < len; k += 4096) {
            zero[k / 4096] = synth_page(buf + k, (off + k) / 4096, seed, zero_pct, unit / 4096);
        }
        for (size_t k = 0; k < len;) {
            size_t end = k;
            while (end < len && !zero[end / 4096]) {
                end += 4096;
            }
            int ret = end > k ? sl_pwrite_full(fd, buf + k, end - k, off + k) : 0;
            if (ret < 0) {
                return ret;
            }
            k = end + (end < len ? 4096 : 0);
        }
        cli_progress("synth", off + len, size);
    }
    return 0;
}

int cmd_synth(int argc, char **argv)
{
    g_autofree char *out = NULL, *size_s = NULL, *unit_s = NULL, *tmp = NULL;
    gint zero_pct = 30;
    gint64 seed = 1;
    GOptionEntry entries[] = {
        { "output", 'o', 0, G_OPTION_ARG_FILENAME, &out, "raw image to write", "FILE" },
        { "size", 0, 0, G_OPTION_ARG_STRING, &size_s, "image size (e.g. 4G)", "SIZE" },
        { "zero-percent", 0, 0, G_OPTION_ARG_INT, &zero_pct, "share of zero pages (default 30)", "N" },
        { "zero-unit", 0, 0, G_OPTION_ARG_STRING, &unit_s, "zero pages come in aligned runs of SIZE (default 64K)", "SIZE" },
        { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "content seed (default 1)", "N" },
        { NULL },
    };
    g_autoptr(GError) err = NULL;
    uint64_t size, unit = 64u << 10;
    int fd, ret;

    if (!cli_parse("- write a synthetic raw RAM image", entries, &argc, &argv)) {
        return 2;
    }
    if (!out || !size_s) {
        return cli_usage("synth needs -o FILE and --size SIZE");
    }
    if (!cli_parse_size(size_s, &size) || size == 0 || size % 4096) {
        return cli_usage("--size: '%s' is not a size that is a non-zero multiple of 4K "
                        "(digits and K, M, G or T: 64M, 4G)", size_s);
    }
    if (zero_pct < 0 || zero_pct > 100) {
        return cli_usage("--zero-percent: %d is not between 0 and 100", zero_pct);
    }
    if (unit_s && (!cli_parse_size(unit_s, &unit) || unit < 4096 || unit % 4096)) {
        return cli_usage("--zero-unit: '%s' is not a multiple of 4K", unit_s);
    }
    /* Written beside @out and renamed when whole: a full disk leaves nothing. */
    tmp = cli_partial_path(out);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        return cli_fail("%s: cannot be written: %s", out, g_strerror(errno));
    }
    ret = write_synth(fd, size, (uint64_t)seed, (unsigned)zero_pct, unit);
    if (close(fd) < 0 && ret == 0) {
        ret = -errno;
    }
    if (ret < 0) {
        cli_finish_partial(tmp, out, false, NULL);
        return cli_fail("writing %s: %s", out, g_strerror(-ret));
    }
    return cli_finish_partial(tmp, out, true, &err) ? 0 : cli_fail_error(g_steal_pointer(&err));
}
