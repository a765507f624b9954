/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The clock and the median the small benchmark programs (trackcost,
 * resetcost) report with: header-only, each program is one file.
 */
#ifndef SNAPLOAD_BENCHUTIL_H
#define SNAPLOAD_BENCHUTIL_H

#include <stdlib.h>
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

#endif /* SNAPLOAD_BENCHUTIL_H */
