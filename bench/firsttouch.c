/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapload-firsttouch: what the guest's first pass over anonymous RAM costs
 * after the RAM was filled each way a restore can fill it, in one run:
 *  - eager: the process writes it itself into MADV_HUGEPAGE memory (QEMU's
 *    eager load: THP faults);
 *  - copy: UFFDIO_COPY of every 4 KiB page from outside the access path
 *    (what the daemon does into QEMU's memory), MADV_HUGEPAGE asked;
 *  - copy + collapse: the same, then MADV_COLLAPSE of the whole range (what
 *    the daemon does at completion);
 *  - move: 2 MiB buffers filled and moved in with UFFDIO_MOVE (what the
 *    in-process loaders do), when the kernel has it.
 * For each: the fill's time, then a read pass touching one byte per 4 KiB
 * page (the guest's first pass), then the same pass again.  On a host whose
 * page-table work is dear (a PVM guest) a page mapped by someone else costs
 * its first touch a fault into the hypervisor; a THP costs one per 2 MiB.
 *
 *   snapload-firsttouch [--size 1G] [--reps 3]
 *
 * Prints one line per way (medians) and each first pass against eager's.
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "benchutil.h"

#define HUGE (2ull << 20)
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#define _UFFDIO_MOVE 0x05
struct uffdio_move { uint64_t dst, src, len, mode; int64_t move; };
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

enum { EAGER, COPY, COPY_COLLAPSE, MOVE, WAYS };
static const char *const way_name[WAYS] = { "eager (THP faults)", "UFFDIO_COPY 4 KiB",
                                            "UFFDIO_COPY + MADV_COLLAPSE", "UFFDIO_MOVE 2 MiB" };

/* @size bytes of 2 MiB-aligned anonymous memory advised for THPs, or NULL. */
static uint8_t *map_aligned(uint64_t size)
{
    uint8_t *p = mmap(NULL, size + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);

    if (p == MAP_FAILED) {
        return NULL;
    }
    p = (uint8_t *)(((uintptr_t)p + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
    madvise(p, size, MADV_HUGEPAGE);
    return p;
}

/* A userfaultfd with @features, @p's @size registered MISSING; -1 on failure. */
static int uffd_over(uint8_t *p, uint64_t size, uint64_t features)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    struct uffdio_api api = { .api = UFFD_API, .features = features };
    struct uffdio_register reg = { .range = { (uintptr_t)p, size },
                                   .mode = UFFDIO_REGISTER_MODE_MISSING };

    if (fd < 0 || ioctl(fd, UFFDIO_API, &api) || ioctl(fd, UFFDIO_REGISTER, &reg)) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

/* Fills @p (@size) the way @way does; false if this kernel cannot. */
static bool fill(int way, uint8_t *p, uint64_t size, uint8_t *src)
{
    int fd = way == EAGER ? -2 : uffd_over(p, size, way == MOVE ? UFFD_FEATURE_MOVE : 0);
    bool ok = fd != -1;

    if (way == EAGER) {
        memset(p, 0x5a, size);
    }
    for (uint64_t o = 0; ok && way != EAGER && o < size; o += HUGE) {
        if (way == MOVE) {
            memset(src, 0x5a, HUGE); /* a fresh hugepage each time: the last one moved */
            struct uffdio_move m = { .dst = (uintptr_t)(p + o), .src = (uintptr_t)src,
                                     .len = HUGE };
            ok = ioctl(fd, UFFDIO_MOVE, &m) == 0;
        } else {
            struct uffdio_copy c = { .dst = (uintptr_t)(p + o), .src = (uintptr_t)src,
                                     .len = HUGE };
            ok = ioctl(fd, UFFDIO_COPY, &c) == 0;
        }
    }
    if (ok && way == COPY_COLLAPSE) {
        madvise(p, size, MADV_COLLAPSE); /* best effort, as the daemon's */
    }
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* One byte read in every 4 KiB page of @p; ms. */
static double read_pass(const volatile uint8_t *p, uint64_t size)
{
    double t0 = now_ms();
    uint64_t sum = 0;

    for (uint64_t o = 0; o < size; o += 4096) {
        sum += p[o + (o >> 12) % 4000];
    }
    (void)sum;
    return now_ms() - t0;
}

int main(int argc, char **argv)
{
    static const char usage[] = "usage: snapload-firsttouch [--size 1G] [--reps 3]";
    double t_fill[WAYS][16], t_first[WAYS][16], t_second[WAYS][16];
    const char *size_s = "1G";
    uint64_t size;
    int reps = 3;
    bool help, known = true, can[WAYS] = { true, true, true, true };

    if (!bench_args_ok(argc, argv, usage, &help)) {
        return help ? 0 : 2;
    }
    for (int i = 1; i + 1 < argc && known; i += 2) {
        if (!strcmp(argv[i], "--size")) {
            size_s = argv[i + 1];
        } else if (!strcmp(argv[i], "--reps")) {
            reps = atoi(argv[i + 1]) < 1 ? 1 : atoi(argv[i + 1]) > 16 ? 16 : atoi(argv[i + 1]);
        } else {
            fprintf(stderr, "snapload-firsttouch: unknown option '%s'\n", argv[i]);
            known = false;
        }
    }
    if (!known || !bench_size(size_s, &size) || size % HUGE) {
        fprintf(stderr, "%s (SIZE a multiple of 2M)\n", usage);
        return 2;
    }
    for (int r = 0; r < reps; r++) {
        for (int w = 0; w < WAYS; w++) { /* the ways alternate within each repetition */
            uint8_t *p = map_aligned(size), *src = map_aligned(HUGE);
            double t0 = now_ms();
            if (!p || !src) {
                fprintf(stderr, "snapload-firsttouch: no memory for %s\n", size_s);
                return 1;
            }
            memset(src, 0x5a, HUGE);
            can[w] = can[w] && fill(w, p, size, src);
            t_fill[w][r] = now_ms() - t0;
            t_first[w][r] = read_pass(p, size);
            t_second[w][r] = read_pass(p, size);
            munmap(p, size);
            munmap(src, HUGE);
        }
    }
    printf("first pass over %s of anonymous memory after each fill (medians of %d)\n", size_s,
           reps);
    for (int w = 0; w < WAYS; w++) {
        if (!can[w]) {
            printf("  %-28s not measured: this kernel refused it\n", way_name[w]);
            continue;
        }
        double first = median(t_first[w], reps), eager = median(t_first[EAGER], reps);
        printf("  %-28s fill %8.1f ms  first pass %8.1f ms (%.1fx eager's)  second %6.1f ms\n",
               way_name[w], median(t_fill[w], reps), first, first / eager,
               median(t_second[w], reps));
    }
    return 0;
}
