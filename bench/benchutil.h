/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The clock and the median the small benchmark programs (trackcost,
 * resetcost) report with, and the checks of their arguments: header-only,
 * each program is one file.
 */
#ifndef SNAPLOAD_BENCHUTIL_H
#define SNAPLOAD_BENCHUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/** Milliseconds of the monotonic clock. */
static inline double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/** The median of the @n values of @v (sorts @v). */
static inline double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), bench_cmp);
    return v[n / 2];
}

/**
 * bench_size: @s as bytes into *@out: digits and M or G (64M, 4G); false
 * for anything else (a size without its unit is refused, not guessed).
 */
static inline bool bench_size(const char *s, uint64_t *out)
{
    char *end = NULL;
    uint64_t v = strtoull(s, &end, 10);

    if (end == s || !v || (strcmp(end, "M") && strcmp(end, "G"))) {
        return false;
    }
    *out = v << (*end == 'G' ? 30 : 20);
    return true;
}

/**
 * bench_args_ok: whether @argv holds OPTION VALUE pairs only; prints
 * @usage (to stdout, true exit) for --help, to stderr otherwise.  *@help
 * says which.
 */
static inline bool bench_args_ok(int argc, char **argv, const char *usage, bool *help)
{
    *help = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            *help = true;
            printf("%s\n", usage);
            return false;
        }
    }
    if ((argc - 1) % 2) {
        fprintf(stderr, "%s: '%s' needs a value\n%s\n", argv[0], argv[argc - 1], usage);
        return false;
    }
    return true;
}

#endif /* SNAPLOAD_BENCHUTIL_H */
