/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Small shared helpers of the snapshot code: the error quark, the checksum
 * function (XXH3-64 from libxxhash, through its run-time CPU dispatch where
 * the library has it), the checksum of a zero page, the page-cache count
 * of a file range, full-length pread/pwrite loops, and flushing a file to
 * disk before it is renamed into place.
 */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>
#ifdef SL_HAVE_XXH_DISPATCH
#include <xxh_x86dispatch.h> /* XXH3_64bits* -> the vector code the CPU runs best */
#endif
#include "migration/format/format.h"

G_DEFINE_QUARK(snapload-error-quark, sl_error)

/* The portable loop: the compiler's popcount is a table walk without -mpopcnt. */
static uint64_t count_words(const uint64_t *bm, uint64_t words)
{
    uint64_t count = 0;

    for (uint64_t w = 0; w < words; w++) {
        count += (uint64_t)__builtin_popcountll(bm[w]);
    }
    return count;
}

#if defined(__x86_64__)
/* The same loop built for the POPCNT instruction (x86-64 CPUs since 2008). */
__attribute__((target("popcnt"))) static uint64_t count_words_popcnt(const uint64_t *bm,
                                                                     uint64_t words)
{
    uint64_t count = 0;

    for (uint64_t w = 0; w < words; w++) {
        count += (uint64_t)__builtin_popcountll(bm[w]);
    }
    return count;
}
#endif

uint64_t sl_bitmap_count(const uint64_t *bm, uint64_t npages)
{
#if defined(__x86_64__)
    if (__builtin_cpu_supports("popcnt")) {
        return count_words_popcnt(bm, (npages + 63) / 64);
    }
#endif
    return count_words(bm, (npages + 63) / 64);
}

uint64_t sl_hash(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

bool sl_name_printable(const char *name)
{
    if (!g_utf8_validate(name, -1, NULL)) {
        return false;
    }
    for (const char *p = name; *p; p = g_utf8_next_char(p)) {
        if (g_unichar_iscntrl(g_utf8_get_char(p))) {
            return false;
        }
    }
    return true;
}

uint64_t sl_hash2(const void *a, size_t alen, const void *b, size_t blen)
{
    XXH3_state_t st;

    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, a, alen);
    XXH3_64bits_update(&st, b, blen);
    return XXH3_64bits_digest(&st);
}

uint64_t sl_zero_hash(uint64_t page_size)
{
    uint8_t zeros[4096] = { 0 }; /* page sizes are multiples of it */
    XXH3_state_t st;

    XXH3_64bits_reset(&st);
    for (uint64_t done = 0; done < page_size; done += sizeof(zeros)) {
        XXH3_64bits_update(&st, zeros, MIN(sizeof(zeros), page_size - done));
    }
    return XXH3_64bits_digest(&st);
}

int sl_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return -EIO; /* the file ended early */
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int sl_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;

    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int sl_pwrite_nonzero(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf, *run = NULL; /* the file pages to write, in one call */
    const uint64_t fp = 4096;
    uint64_t run_off = 0;

    while (len || run) {
        size_t n = len ? (size_t)MIN((uint64_t)len, fp - off % fp) : 0; /* to the next page */
        bool data = n && !sl_all_zero(p, n);
        if (data && !run) {
            run = p;
            run_off = off;
        } else if (!data && run) {
            int ret = sl_pwrite_full(fd, run, (size_t)(p - run), run_off);
            if (ret < 0) {
                return ret;
            }
            run = NULL;
        }
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

char *sl_partial_path(const char *out)
{
    g_autofree char *base = g_path_get_basename(out), *dir = g_path_get_dirname(out);
    g_autofree char *suffix = g_strdup_printf(".%d.partial", (int)getpid());

    if (strlen(base) + strlen(suffix) <= NAME_MAX) {
        return g_strconcat(out, suffix, NULL);
    }
    /* A name near NAME_MAX: its first bytes, a hash of the whole and the
     * suffix, hidden beside it (found by a user's test: a valid long name
     * was refused with "File name too long"). */
    return g_strdup_printf("%s/.%.*s.%08x%s", dir, (int)(NAME_MAX - 10 - strlen(suffix)), base,
                           g_str_hash(base), suffix);
}

void sl_error_names(GError **errp, const char *tmp, const char *name)
{
    GString *m;

    if (!errp || !*errp || !strstr((*errp)->message, tmp)) {
        return;
    }
    m = g_string_new((*errp)->message);
    g_string_replace(m, tmp, name, 0);
    g_free((*errp)->message);
    (*errp)->message = g_string_free(m, false);
}

bool sl_sync_path(const char *tmp, const char *name, GError **errp)
{
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    int err = fd < 0 || fdatasync(fd) < 0 ? errno : 0;

    if (fd >= 0) {
        close(fd);
    }
    if (err == EACCES || err == EPERM || err == EINVAL || err == EROFS || err == ENOSYS) {
        /* A file we may not read (QEMU, as another user, wrote it) or a
         * file system without fdatasync: the rename goes ahead unflushed,
         * as before the flush existed (found by review). */
        err = 0;
    }
    if (err) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: flushing to disk: %s", name,
                    g_strerror(err));
    }
    return !err;
}

void sl_sync_dir_of(const char *path)
{
    g_autofree char *dir = g_path_get_dirname(path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

#ifndef __NR_cachestat
#define __NR_cachestat 451 /* the same on every architecture (Linux 6.5) */
#endif

int64_t sl_cached_pages(int fd, uint64_t off, uint64_t len)
{
    /* cachestat(2)'s range and result, as in <linux/mman.h> of Linux 6.5. */
    struct {
        uint64_t off, len;
    } rg = { off, len };
    struct {
        uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
    } cs = { 0 };

    if (syscall(__NR_cachestat, fd, &rg, &cs, 0) != 0) {
        return -1;
    }
    return (int64_t)cs.nr_cache;
}

bool sl_hash_update_file(XXH3_state_t *st, int fd, uint64_t off, uint64_t len, const char *what,
                         GError **errp)
{
    const size_t chunk = 1u << 20;
    g_autofree uint8_t *buf = g_malloc(MIN(len, chunk) + 1);

    for (uint64_t done = 0; done < len;) {
        size_t n = (size_t)MIN(len - done, chunk);
        if (!sl_read_at(fd, buf, n, off + done, what, errp)) {
            return false;
        }
        XXH3_64bits_update(st, buf, n);
        done += n;
    }
    return true;
}

bool sl_hash_file(int fd, uint64_t off, uint64_t len, uint64_t *out, const char *what,
                  GError **errp)
{
    XXH3_state_t st;

    XXH3_64bits_reset(&st);
    if (!sl_hash_update_file(&st, fd, off, len, what, errp)) {
        return false;
    }
    *out = XXH3_64bits_digest(&st);
    return true;
}
