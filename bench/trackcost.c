/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapload-trackcost: what written-page tracking (migration/track.c) costs
 * a guest, measured in one run, tracking off and on alternately:
 *  - a writing workload: one write per page over SIZE of populated memory
 *    (with tracking, each first write to a protected page takes a
 *    write-protect fault that the kernel resolves by itself);
 *  - the same pass again (pages already written: no more faults);
 *  - a collect with re-arm (PAGEMAP_SCAN) after 1 % and after 100 % of the
 *    pages were written.
 *
 *   snapload-trackcost [--backend anon|shmem|hugetlbfs] [--size 1G] [--reps 3]
 *
 * Prints one line per figure (medians) and the ratios on/off.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "benchutil.h"
#include "backends/backend.h"
#include "migration/track.h"

/* One write per page of @step over @n pages; ms. */
static double write_pass(uint8_t *p, uint64_t n, uint64_t unit, uint64_t step, uint8_t v)
{
    double t0 = now_ms();

    for (uint64_t i = 0; i < n; i += step) {
        p[i * unit] = v;
    }
    return now_ms() - t0;
}

static double collect_ms(sl_tracker *t, int64_t *bytes)
{
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(sl_written_run));
    double t0 = now_ms();

    *bytes = sl_tracker_collect(t, true, runs);
    return now_ms() - t0;
}

int main(int argc, char **argv)
{
    const char *backend = "anon", *size_s = "1G";
    int reps = 3;
    sl_backend_kind kind;
    g_autoptr(GError) err = NULL;
    double off[16], on[16], again[16], c1[16], c100[16];
    uint64_t size, unit, n;
    sl_mem m = { 0 };

    static const char usage[] = "usage: snapload-trackcost [--backend anon|shmem|hugetlbfs] "
        "[--size 1G] [--reps 3]";
    bool help, known = true;

    if (!bench_args_ok(argc, argv, usage, &help)) {
        return help ? 0 : 2;
    }
    for (int i = 1; i + 1 < argc && known; i += 2) {
        if (!strcmp(argv[i], "--backend")) {
            backend = argv[i + 1];
        } else if (!strcmp(argv[i], "--size")) {
            size_s = argv[i + 1];
        } else if (!strcmp(argv[i], "--reps")) {
            reps = CLAMP(atoi(argv[i + 1]), 1, 16);
        } else {
            fprintf(stderr, "snapload-trackcost: unknown option '%s'\n", argv[i]);
            known = false;
        }
    }
    if (!known || !sl_backend_by_name(backend, &kind) || !bench_size(size_s, &size)) {
        fprintf(stderr, "%s\n", usage);
        return 2;
    }
    if (!sl_mem_map(&m, kind, size, 0, &err)) {
        fprintf(stderr, "snapload-trackcost: %s\n", err->message);
        return 1;
    }
    unit = m.page_size;
    n = size / unit;
    write_pass(m.host, n, unit, 1, 1); /* populated: the guest's RAM after a restore */
    for (int r = 0; r < reps; r++) {
        int64_t b1 = 0, b100 = 0;
        sl_tracker *t;
        off[r] = write_pass(m.host, n, unit, 1, (uint8_t)(r + 2));
        t = sl_tracker_new(m.host, size, &err);
        if (!t) {
            fprintf(stderr, "snapload-trackcost: %s\n", err->message);
            return 1;
        }
        write_pass(m.host, n, unit, 100, 3); /* 1 % of the pages */
        c1[r] = collect_ms(t, &b1);
        on[r] = write_pass(m.host, n, unit, 1, (uint8_t)(r + 4));
        again[r] = write_pass(m.host, n, unit, 1, (uint8_t)(r + 5));
        c100[r] = collect_ms(t, &b100);
        sl_tracker_free(t);
        write_pass(m.host, n, unit, 1, 9); /* writable again everywhere: "off" is steady state */
        if (b1 != (int64_t)(((n + 99) / 100) * unit) || b100 != (int64_t)size) {
            fprintf(stderr, "snapload-trackcost: collected %" G_GINT64_FORMAT " and %"
                    G_GINT64_FORMAT " bytes, expected %" G_GUINT64_FORMAT " and %"
                    G_GUINT64_FORMAT "\n", b1, b100, ((n + 99) / 100) * unit, size);
            return 1;
        }
    }
    printf("%s %s, %d reps (medians): write pass off %.1f ms, on %.1f ms (%.2fx, %.2f us per "
           "page more); second pass on %.1f ms; collect+re-arm after 1 %% %.2f ms, after 100 %% "
           "%.2f ms\n", backend, size_s, reps, median(off, reps), median(on, reps),
           median(on, reps) / median(off, reps),
           (median(on, reps) - median(off, reps)) * 1e3 / (double)n, median(again, reps),
           median(c1, reps), median(c100, reps));
    sl_mem_release(&m);
    return 0;
}
