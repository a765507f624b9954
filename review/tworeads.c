/* Review reproducer: the around job reads a cold block's neighbours in two
 * preads (below u, then above u) through an FADV_RANDOM fd; how long does
 * that take against one pread of the whole run (u itself already cached)? */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static uint64_t now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000ull + t.tv_nsec; }
static int cmp(const void *a, const void *b) { uint64_t x = *(uint64_t *)a, y = *(uint64_t *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/tmp/review-split/review/blob";
    const uint64_t size = 256ull << 20, blk = 64 << 10, pg = 4096;
    int iters = 150;
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    static char buf[1 << 16] __attribute__((aligned(4096)));
    uint64_t *two = calloc(iters, 8), *one = calloc(iters, 8);
    if (lseek(fd, 0, SEEK_END) < (off_t)size) {
        for (uint64_t o = 0; o < size; o += sizeof(buf)) {
            for (size_t i = 0; i < sizeof(buf); i += 8) *(uint64_t *)(buf + i) = o + i + 1;
            if (pwrite(fd, buf, sizeof(buf), o) != sizeof(buf)) return 1;
        }
        fdatasync(fd);
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    srand(7);
    for (int mode = 0; mode < 2; mode++) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        for (int i = 0; i < iters; i++) {
            uint64_t b = ((uint64_t)rand() % (size / blk)) * blk, u = 1 + rand() % 14, t0;
            if (pread(fd, buf, pg, b + u * pg) != pg) return 1; /* the fault thread's read of u */
            t0 = now();
            if (mode == 0) {
                if (pread(fd, buf, u * pg, b) != (ssize_t)(u * pg)) return 1;
                if (pread(fd, buf, blk - (u + 1) * pg, b + (u + 1) * pg) != (ssize_t)(blk - (u + 1) * pg)) return 1;
                two[i] = now() - t0;
            } else {
                if (pread(fd, buf, blk, b) != (ssize_t)blk) return 1;
                one[i] = now() - t0;
            }
            posix_fadvise(fd, b, blk, POSIX_FADV_DONTNEED);
        }
    }
    qsort(two, iters, 8, cmp);
    qsort(one, iters, 8, cmp);
    printf("neighbours in two preads: p50 %.0f us p90 %.0f us\n", two[iters / 2] / 1e3, two[iters * 9 / 10] / 1e3);
    printf("neighbours in one pread:  p50 %.0f us p90 %.0f us\n", one[iters / 2] / 1e3, one[iters * 9 / 10] / 1e3);
    return 0;
}
