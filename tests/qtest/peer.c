/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A stand-in for a vhost-user back-end: a second process that maps guest
 * RAM the way such a back-end does (it opens the memory file — a real one
 * would receive the fd — and mmaps it MAP_SHARED) while a lazy restore
 * runs.  Started with LD_PRELOAD=libsnapload-preload.so, it registers
 * through the same client as QEMU, then reads pages in a random order and
 * compares each with the snapshot.
 *
 *   peer MEMFILE SNAP BLOCK PAGES SEED
 *
 * PAGES "all" reads every page once, in order, instead of PAGES at random
 * (the legacy range too, without comparing it), so every page gets placed.
 *
 * Pages in [0xa0000, 0x100000) are left out: QEMU itself rewrites that
 * legacy range while it loads the device state.  Prints
 * "peer: checked N pages, M differ" and exits 0 only when M is 0.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "snapload/snapload.h"

int main(int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *snap;
    sl_block_info bi;
    uint8_t want[4096];
    uint64_t pages, checked = 0, differ = 0;
    GRand *rnd;
    uint8_t *map;
    int fd, b;
    bool all;

    if (argc != 6) {
        fprintf(stderr, "usage: peer MEMFILE SNAP BLOCK PAGES SEED\n");
        return 2;
    }
    snap = sl_snapshot_open(argv[2], &err);
    b = snap ? sl_snapshot_find_block(snap, argv[3]) : -1;
    if (b < 0 || !sl_snapshot_block(snap, (unsigned)b, &bi)) {
        fprintf(stderr, "peer: %s\n", err ? err->message : "no such block");
        return 2;
    }
    fd = open(argv[1], O_RDWR | O_CLOEXEC);
    map = fd < 0 ? MAP_FAILED : mmap(NULL, bi.length, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        perror("peer: mapping the memory file");
        return 2;
    }
    all = !strcmp(argv[4], "all");
    pages = all ? bi.length / 4096 : strtoull(argv[4], NULL, 0);
    rnd = g_rand_new_with_seed((guint32)strtoul(argv[5], NULL, 0));
    for (uint64_t i = 0; i < pages; i++) {
        uint64_t idx = all ? i : (uint64_t)g_rand_double_range(rnd, 0, (double)(bi.length / 4096));
        if (idx * 4096 >= 0xa0000 && idx * 4096 < 0x100000) {
            (void)*(volatile uint8_t *)(map + idx * 4096); /* touched, not compared */
            continue;
        }
        if (sl_snapshot_read_pages(snap, (unsigned)b, idx, 1, want,
                                   sl_snapshot_has_checksums(snap)) < 0) {
            fprintf(stderr, "peer: cannot read page %" G_GUINT64_FORMAT " of the snapshot\n", idx);
            return 2;
        }
        checked++;
        if (memcmp(want, map + idx * 4096, 4096)) {
            fprintf(stderr, "peer: page at 0x%" G_GINT64_MODIFIER "x differs\n", idx * 4096);
            differ++;
        }
    }
    printf("peer: checked %" G_GUINT64_FORMAT " pages, %" G_GUINT64_FORMAT " differ\n", checked,
           differ);
    g_rand_free(rnd);
    sl_snapshot_close(snap);
    return differ ? 1 : 0;
}
