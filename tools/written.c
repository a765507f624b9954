/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The written-page list of a RAM file (see written.h).  Layout, all
 * little-endian:
 *   0   "SLWRIT03"
 *   8   the snapshot's content identity (SL_IDENTITY_LEN bytes), or for one
 *       without checksums a hash of its file's identity and times
 *   24  block name, NUL-padded (64 bytes)
 *   88  RAM file: dev, ino, size, mtime s, mtime ns, ctime s, ctime ns, allocated
 *       512-byte blocks (u64 each)
 *   152 where the block starts in the RAM file (u64)
 *   160 pages in the block (u64), runs (u64)
 *   176 runs: first page, pages (u64, u64)
 *   end sl_hash() of everything before it (u64)
 * A list is named by the RAM file and the block's offset in it: two blocks
 * of one file have a list each, and a block found at another offset of the
 * same unchanged file (another layout) never takes a list made for what
 * lay there before (found by review: its unlisted pages, another block's
 * bytes, were kept unread).  Version 02 had no offset.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "written.h"
#include "migration/format/format.h"

#define MAGIC "SLWRIT03"
#define NAME_LEN 64
#define HEAD 176
#define FILE_WORDS 8

char *sl_written_dir(void)
{
    return getuid() == 0 ? g_strdup("/run/snapload")
                         : g_build_filename(g_get_user_runtime_dir(), "snapload", NULL);
}

char *sl_written_path(const char *dir, const struct stat *st, uint64_t offset)
{
    return g_strdup_printf("%s/written-%" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT "-%"
                           G_GUINT64_FORMAT, dir, (guint64)st->st_dev, (guint64)st->st_ino,
                           (guint64)offset);
}

void sl_written_forget_elsewhere(const char *dir, const struct stat *st, uint64_t offset)
{
    const struct passwd *pw = getpwuid(getuid());
    g_autofree char *xdg = g_build_filename(g_get_user_runtime_dir(), "snapload", NULL);
    g_autofree char *cache = g_build_filename(g_get_user_cache_dir(), "snapload", NULL);
    g_autofree char *run_user = g_strdup_printf("/run/user/%u/snapload", (unsigned)getuid());
    g_autofree char *home_cache = pw && pw->pw_dir
                                      ? g_build_filename(pw->pw_dir, ".cache", "snapload", NULL)
                                      : NULL;
    const char *dirs[] = { "/run/snapload", xdg, cache, run_user, home_cache };

    for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++) {
        if (dirs[i] && g_strcmp0(dirs[i], dir) != 0) {
            g_autofree char *path = sl_written_path(dirs[i], st, offset);
            (void)unlink(path); /* mostly ENOENT; another user's: EACCES */
        }
    }
}

/*
 * What names @snap in a list: its content identity, or, for a snapshot
 * without one (a QEMU file with no sidecar index: no checksums), a hash of
 * its file's device, inode, size, mtime and ctime: the same file, unchanged.
 */
static bool snapshot_key(const sl_snapshot *snap, uint8_t id[SL_IDENTITY_LEN], GError **errp)
{
    g_autoptr(GError) err = NULL;
    struct stat st;
    uint64_t w[5], h;

    if (sl_snapshot_identity(snap, id, &err)) {
        return true;
    }
    if (stat(sl_snapshot_path(snap), &st) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", sl_snapshot_path(snap),
                    g_strerror(errno));
        return false;
    }
    w[0] = (uint64_t)st.st_dev;
    w[1] = (uint64_t)st.st_ino;
    w[2] = (uint64_t)st.st_size;
    w[3] = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
    w[4] = (uint64_t)st.st_ctim.tv_sec * 1000000000u + (uint64_t)st.st_ctim.tv_nsec;
    memset(id, 0, SL_IDENTITY_LEN);
    h = sl_hash(w, sizeof(w));
    memcpy(id, &h, sizeof(h));
    return true;
}

/*
 * The RAM file's identity, times and allocation, in the order the list
 * stores them.  The allocation catches a hole punched into a hugetlbfs file
 * between runs, which moves neither its mtime nor its ctime.
 */
static void file_words(const struct stat *st, uint64_t w[FILE_WORDS])
{
    w[0] = (uint64_t)st->st_dev;
    w[1] = (uint64_t)st->st_ino;
    w[2] = (uint64_t)st->st_size;
    w[3] = (uint64_t)st->st_mtim.tv_sec;
    w[4] = (uint64_t)st->st_mtim.tv_nsec;
    w[5] = (uint64_t)st->st_ctim.tv_sec;
    w[6] = (uint64_t)st->st_ctim.tv_nsec;
    w[7] = (uint64_t)st->st_blocks;
}

/* The list's first HEAD bytes for @nruns runs. */
static void put_head(GByteArray *out, const uint8_t *id, const char *block,
                     const struct stat *st, uint64_t offset, uint64_t npages, uint64_t nruns)
{
    uint8_t h[HEAD] = { 0 };
    uint64_t w[FILE_WORDS];

    memcpy(h, MAGIC, 8);
    memcpy(h + 8, id, SL_IDENTITY_LEN);
    g_strlcpy((char *)h + 24, block, NAME_LEN);
    file_words(st, w);
    for (unsigned i = 0; i < FILE_WORDS; i++) {
        sl_put_le64(h + 88 + 8 * i, w[i]);
    }
    sl_put_le64(h + 152, offset);
    sl_put_le64(h + 160, npages);
    sl_put_le64(h + 168, nruns);
    g_byte_array_append(out, h, HEAD);
}

static void put_u64(GByteArray *out, uint64_t v)
{
    uint8_t b[8];

    sl_put_le64(b, v);
    g_byte_array_append(out, b, 8);
}

/* A list file of @dir: its path and modification time. */
typedef struct {
    char *path;
    gint64 mtime_ns;
} old_list;

static gint newest_first(gconstpointer a, gconstpointer b)
{
    const old_list *x = a, *y = b;

    return x->mtime_ns < y->mtime_ns ? 1 : x->mtime_ns > y->mtime_ns ? -1 : 0;
}

/*
 * Keeps the SL_WRITTEN_KEEP - 1 newest lists of @dir and removes the rest,
 * before a new one is written: a list whose RAM file was deleted (a
 * fuzzing farm's scratch files) is never loaded, so without a bound they
 * would pile up in a RAM-backed directory.  A list removed while still of
 * use costs its restart a check of every page, nothing else.
 */
static void prune_lists(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    g_autoptr(GArray) lists = g_array_new(false, false, sizeof(old_list));
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        old_list l = { .path = g_build_filename(dir, name, NULL) };
        struct stat st;
        if (!g_str_has_prefix(name, "written-") || stat(l.path, &st) != 0) {
            g_free(l.path);
            continue;
        }
        l.mtime_ns = (gint64)st.st_mtim.tv_sec * G_GINT64_CONSTANT(1000000000) + st.st_mtim.tv_nsec;
        g_array_append_val(lists, l);
    }
    g_array_sort(lists, newest_first);
    for (guint i = 0; i < lists->len; i++) {
        old_list *l = &g_array_index(lists, old_list, i);
        if (i >= SL_WRITTEN_KEEP - 1) {
            (void)unlink(l->path);
        }
        g_free(l->path);
    }
}

bool sl_written_save(const char *dir, const sl_snapshot *snap, const char *block,
                     const struct stat *st, uint64_t offset, const uint64_t *pages,
                     uint64_t npages, GError **errp)
{
    g_autoptr(GByteArray) runs = g_byte_array_new();
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autofree char *path = sl_written_path(dir, st, offset);
    uint8_t id[SL_IDENTITY_LEN];
    uint64_t nruns = 0;

    if (!snapshot_key(snap, id, errp)) {
        return false;
    }
    for (uint64_t p = 0; p < npages;) {
        bool set = sl_bit_test(pages, p);
        uint64_t n = sl_bit_run(pages, p, npages, set);
        if (set) {
            put_u64(runs, p);
            put_u64(runs, n);
            nruns++;
        }
        p += n;
    }
    put_head(out, id, block, st, offset, npages, nruns);
    g_byte_array_append(out, runs->data, runs->len);
    put_u64(out, sl_hash(out->data, out->len));
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", dir, g_strerror(errno));
        return false;
    }
    (void)unlink(path); /* an older list of the same file is replaced: not counted */
    prune_lists(dir);
    return g_file_set_contents(path, (const char *)out->data, out->len, errp);
}

/* Whether @buf (@len bytes) is a whole list for @snap, @block and @st; else why not. */
static const char *mismatch(const uint8_t *buf, gsize len, const uint8_t *id,
                            const char *block, const struct stat *st, uint64_t offset,
                            uint64_t npages)
{
    uint64_t w[FILE_WORDS], nruns;

    if (len < HEAD + 8 || memcmp(buf, MAGIC, 8) != 0) {
        return "not a written-page list";
    }
    nruns = sl_le64(buf + 168);
    if (nruns > (len - HEAD - 8) / 16 || len != HEAD + 16 * nruns + 8 ||
        sl_le64(buf + len - 8) != sl_hash(buf, len - 8)) {
        return "truncated or corrupt";
    }
    if (memcmp(buf + 8, id, SL_IDENTITY_LEN) != 0) {
        return "made for another snapshot";
    }
    if (strncmp((const char *)buf + 24, block, NAME_LEN) != 0 || sl_le64(buf + 160) != npages) {
        return "made for another block";
    }
    if (sl_le64(buf + 152) != offset) {
        return "made for the block at another offset of the file";
    }
    file_words(st, w);
    for (unsigned i = 0; i < FILE_WORDS; i++) {
        if (sl_le64(buf + 88 + 8 * i) != w[i]) {
            return i < 2 ? "made for another file"
                         : "the RAM file changed since (size, mtime, ctime or allocated blocks)";
        }
    }
    return NULL;
}

bool sl_written_load(const char *dir, const sl_snapshot *snap, const char *block,
                     const struct stat *st, uint64_t offset, GArray *runs, GError **errp)
{
    g_autofree char *path = sl_written_path(dir, st, offset);
    g_autofree char *buf = NULL;
    int idx = sl_snapshot_find_block(snap, block);
    uint8_t id[SL_IDENTITY_LEN];
    sl_block_info bi;
    const char *why;
    gsize len = 0;

    if (!g_file_get_contents(path, &buf, &len, errp)) {
        return false;
    }
    unlink(path); /* used once: the run it is for is about to write the file again */
    if (idx < 0 || !sl_snapshot_block(snap, (unsigned)idx, &bi)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s: no block '%s' in the snapshot",
                    path, block);
        return false;
    }
    if (!snapshot_key(snap, id, errp)) {
        return false;
    }
    why = mismatch((const uint8_t *)buf, len, id, block, st, offset, bi.length / bi.page_size);
    if (why) {
        g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "%s: %s", path, why);
        return false;
    }
    for (uint64_t i = 0; i < sl_le64((const uint8_t *)buf + 168); i++) {
        const uint8_t *r = (const uint8_t *)buf + HEAD + 16 * i;
        sl_page_run run = { sl_le64(r), sl_le64(r + 8) };
        if (run.first > bi.length / bi.page_size ||
            run.n > bi.length / bi.page_size - run.first) {
            g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, "%s: a run lies outside the block",
                        path);
            return false;
        }
        g_array_append_val(runs, run);
    }
    return true;
}
