/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-restore's look into the QEMU it restores into (see qemu-verify.h):
 * `info ramblock` for where each RAM block lives, and --verify, which reads
 * every page of guest RAM the way a consumer would and compares it with the
 * snapshot before the guest runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "client.h"
#include "migration/format/format.h"
#include "qemu.h"
#include "qemu-verify.h"

#define CHUNK (1u << 20)

/*
 * Where QEMU keeps guest RAM region @name, which the guest sees at @gpa,
 * @off bytes into the region: `gpa2hva` (HMP, QEMU 2.9 and later) of
 * @gpa, less @off; 0 if QEMU names another region there.
 */
static uint64_t region_hva(sl_qmp *q, const char *name, uint64_t gpa, uint64_t off,
                           GError **errp)
{
    g_autofree char *cmd = g_strdup_printf("gpa2hva 0x%" G_GINT64_MODIFIER "x", gpa);
    g_autofree char *out = sl_qmp_hmp(q, cmd, errp);
    g_autofree char *want = g_strdup_printf("(%s) is 0x", name);
    const char *at = out ? strstr(out, want) : NULL;

    return at ? g_ascii_strtoull(at + strlen(want), NULL, 16) - off : 0;
}

/*
 * For a QEMU whose `info ramblock` has no HVA column (before 8.1; Debian
 * 12's 7.2): each RAM region of the guest's memory address space, from the
 * first place `info mtree -f` shows it (`START-END (prio P, ram): NAME
 * [@OFFSET]`), then region_hva() of that place.  Blocks the guest does not
 * see stay out of @h.  False with @errp if QEMU does not answer.
 */
static bool hvas_from_gpa(sl_qmp *q, GHashTable *h, GError **errp)
{
    g_autofree char *out = sl_qmp_hmp(q, "info mtree -f", errp);
    g_auto(GStrv) lines = out ? g_strsplit(out, "\n", -1) : NULL;
    bool in_memory = false;

    for (unsigned i = 0; lines && lines[i]; i++) {
        uint64_t start, end, off = 0, hva;
        char type[16], name[128];
        if (g_str_has_prefix(lines[i], "FlatView")) {
            in_memory = false;
        }
        in_memory = in_memory || strstr(lines[i], " AS \"memory\"") != NULL;
        if (!in_memory ||
            sscanf(lines[i], " %" SCNx64 "-%" SCNx64 " (prio %*d, %15[^)]): %127s @%" SCNx64,
                   &start, &end, type, name, &off) < 4 ||
            strcmp(type, "ram") || g_hash_table_contains(h, name)) {
            continue;
        }
        if (!(hva = region_hva(q, name, start, off, errp))) {
            if (errp && *errp) {
                return false;
            }
            continue;
        }
        g_hash_table_insert(h, g_strdup(name), GSIZE_TO_POINTER((gsize)hva));
    }
    return out != NULL;
}

const char *sl_qemu_device_block(GHashTable *hva, const char *id)
{
    g_autofree char *tail = g_strconcat("/", id, NULL);
    const char *found = NULL;
    unsigned n = 0;
    GHashTableIter it;
    gpointer name, v;

    if (!hva || g_hash_table_contains(hva, id)) {
        return NULL;
    }
    g_hash_table_iter_init(&it, hva);
    while (g_hash_table_iter_next(&it, &name, &v)) {
        if (g_str_has_suffix(name, tail)) {
            found = name;
            n++;
        }
    }
    return n == 1 ? found : NULL;
}

GHashTable *sl_qemu_ramblock_names(sl_qmp *q)
{
    g_autofree char *out = sl_qmp_hmp(q, "info ramblock", NULL);
    g_auto(GStrv) lines = out ? g_strsplit(out, "\n", -1) : NULL;
    GHashTable *h;

    if (!out) {
        return NULL;
    }
    h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (unsigned i = 1; lines[0] && lines[i]; i++) { /* the first is the header */
        g_auto(GStrv) t = g_strsplit_set(g_strstrip(lines[i]), " \t", 2);
        if (t[0] && *t[0]) {
            g_hash_table_add(h, g_strdup(t[0]));
        }
    }
    return h;
}

bool sl_qemu_refuse_device_block(GHashTable *blocks, const char *id, const char *remedy,
                                 GError **errp)
{
    const char *owned = sl_qemu_device_block(blocks, id);

    if (owned) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s' belongs to a device "
                    "(QEMU names its RAM block '%s', not the backend's id): it cannot come "
                    "back from our container (ivshmem's, for one, fails QEMU's address check "
                    "on x-ignore-shared loads); %s", id, owned, remedy);
    }
    return !owned;
}

GHashTable *sl_qemu_ramblock_hvas(sl_qmp *q, GError **errp)
{
    g_autofree char *out = sl_qmp_hmp(q, "info ramblock", errp);
    g_auto(GStrv) lines = out ? g_strsplit(out, "\n", -1) : NULL;
    GHashTable *h;
    bool has_hva;

    if (!out) {
        return NULL;
    }
    h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    has_hva = lines[0] && strstr(lines[0], "HVA");
    if (!has_hva && !hvas_from_gpa(q, h, errp)) {
        g_hash_table_destroy(h);
        return NULL;
    }
    for (unsigned i = 1; has_hva && lines[i]; i++) {
        g_auto(GStrv) t = g_strsplit_set(g_strstrip(lines[i]), " \t", -1);
        guint n = 0;
        char *name = NULL, *hva = NULL;
        for (guint k = 0; t[k]; k++) {
            if (*t[k]) {
                name = name ? name : t[k];
                hva = n++ >= 1 && g_str_has_prefix(t[k], "0x") ? t[k] : hva; /* the last 0x... */
            }
        }
        if (name && hva) {
            g_hash_table_insert(h, g_strdup(name),
                                GSIZE_TO_POINTER((gsize)g_ascii_strtoull(hva, NULL, 16)));
        }
    }
    return h;
}

static void report_mismatch(const char *block, uint64_t addr, const uint8_t *want,
                            const uint8_t *got)
{
    unsigned first = 0, n = 0;

    for (unsigned i = 4096; i-- > 0;) {
        if (want[i] != got[i]) {
            first = i;
            n++;
        }
    }
    fprintf(stderr, "snapload: verify: block '%s' page at 0x%" G_GINT64_MODIFIER "x differs "
            "from the snapshot in %u bytes, the first at +0x%x (snapshot %02x, memory %02x)\n",
            block, addr, n, first, want[first], got[first]);
}

/* The pages of one block that differ: how many, the lowest and the highest address. */
typedef struct {
    uint64_t n, lo, hi;
} block_diff;

/* After block @b: a line naming how many pages differ and where, whatever
 * the cap on the lines of single pages (a test tells where they all lie). */
static void report_block(const sl_qemu_backend *b, const block_diff *d)
{
    if (d->n) {
        fprintf(stderr, "snapload: verify: block '%s': %" G_GUINT64_FORMAT " pages differ, "
                "from 0x%" G_GINT64_MODIFIER "x to 0x%" G_GINT64_MODIFIER "x\n", b->id, d->n,
                d->lo, d->hi);
    }
}

/* Compares [@off, +@len) of block @b (snapshot block @idx) as read at @got. */
static bool compare_chunk(sl_snapshot *snap, unsigned idx, const sl_qemu_backend *b,
                          uint64_t off, uint64_t len, const uint8_t *got, uint64_t *mismatches,
                          block_diff *d, GError **errp)
{
    g_autofree uint8_t *want = g_malloc(len);

    if (sl_snapshot_read_pages(snap, idx, off / 4096, len / 4096, want,
                               sl_snapshot_has_checksums(snap)) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "verify: cannot read block '%s' of the "
                    "snapshot", b->id);
        return false;
    }
    for (uint64_t p = 0; p < len; p += 4096) {
        if (!memcmp(want + p, got + p, 4096)) {
            continue;
        }
        d->lo = d->n++ ? MIN(d->lo, off + p) : off + p;
        d->hi = MAX(d->hi, off + p);
        if ((*mismatches)++ < 8) {
            report_mismatch(b->id, off + p, want + p, got + p);
        }
    }
    return true;
}

/*
 * A file-backed block, through our own view of its file registered with the
 * daemon at @dsock: tracked where the daemon tracks writes, and reported
 * (nothing written) before it goes, so that it ends no written-page list.
 */
static bool verify_file(const char *dsock, sl_snapshot *snap, unsigned idx,
                        const sl_qemu_backend *b, uint64_t *mismatches, block_diff *d,
                        GError **errp)
{
    int fd = open(b->mem_path, O_RDWR | O_CLOEXEC), uffd = -1, sock = -1;
    uint8_t *map = fd < 0 ? MAP_FAILED : mmap(NULL, b->size, PROT_READ, MAP_SHARED, fd, 0);
    bool tracked = false, ok = map != MAP_FAILED &&
              (uffd = sl_client_register_view(dsock, "verify", b->id, map, b->size, fd, &sock,
                                              &tracked, errp)) >= 0;

    if (map == MAP_FAILED) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "verify: %s: %s", b->mem_path, g_strerror(errno));
    }
    for (uint64_t off = 0; ok && off < b->size; off += CHUNK) {
        ok = compare_chunk(snap, idx, b, off, MIN(CHUNK, b->size - off), map + off, mismatches,
                           d, errp);
    }
    if (tracked && !sl_client_report_written(dsock, b->id, map, b->size, 0,
                                             ok ? errp : NULL)) {
        ok = false;
    }
    if (map != MAP_FAILED) {
        munmap(map, b->size);
    }
    for (unsigned i = 0; i < 3; i++) {
        int c = (int[]){ uffd, sock, fd }[i];
        if (c >= 0) {
            close(c);
        }
    }
    return ok;
}

/* An anonymous block, read from QEMU's memory at @hva (its faults are served). */
static bool verify_anon(int memfd, sl_snapshot *snap, unsigned idx, const sl_qemu_backend *b,
                        uint64_t hva, uint64_t *mismatches, block_diff *d, GError **errp)
{
    g_autofree uint8_t *got = g_malloc(CHUNK);
    bool ok = true;

    for (uint64_t off = 0; ok && off < b->size; off += CHUNK) {
        uint64_t len = MIN(CHUNK, b->size - off);
        int ret = sl_pread_full(memfd, got, len, hva + off);
        if (ret < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "verify: reading QEMU's block '%s': %s",
                        b->id, g_strerror(-ret));
            return false;
        }
        ok = compare_chunk(snap, idx, b, off, len, got, mismatches, d, errp);
    }
    return ok;
}

bool sl_qemu_verify(sl_qmp *q, sl_snapshot *snap, GPtrArray *backends, const char *dsock,
                    uint64_t *mismatches, GError **errp)
{
    g_autoptr(GHashTable) hva = sl_qemu_ramblock_hvas(q, errp);
    g_autofree char *mempath = g_strdup_printf("/proc/%d/mem", (int)sl_qmp_peer_pid(q));
    int memfd = -1;
    bool ok = hva != NULL;

    for (guint i = 0; ok && i < backends->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(backends, i);
        unsigned idx = (unsigned)sl_snapshot_find_block(snap, b->id);
        block_diff d = { 0 };
        if (b->mem_path) {
            ok = verify_file(dsock, snap, idx, b, mismatches, &d, errp);
        } else if (memfd < 0 && (memfd = open(mempath, O_RDONLY | O_CLOEXEC)) < 0) {
            g_set_error(errp, SL_ERROR, SL_ERROR_IO, "verify: %s: %s", mempath, g_strerror(errno));
            ok = false;
        } else {
            ok = verify_anon(memfd, snap, idx, b,
                             (uint64_t)GPOINTER_TO_SIZE(g_hash_table_lookup(hva, b->id)),
                             mismatches, &d, errp);
        }
        report_block(b, &d);
    }
    if (memfd >= 0) {
        close(memfd);
    }
    return ok;
}
