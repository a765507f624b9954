/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Samples of a restore's progress and of the process's memory, for the
 * benchmark's pages-over-time picture and its memory figures (see
 * timeline.h).  Not on any fault path: the CLI samples between waits.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "tools/timeline.h"

void sl_timeline_init(sl_timeline *tl, uint64_t total)
{
    *tl = (sl_timeline){ .samples = g_array_new(false, false, sizeof(sl_sample)),
                         .total = total };
}

void sl_timeline_add(sl_timeline *tl, double t_ms, uint64_t present)
{
    sl_sample s = { .t_ms = t_ms, .present = present };
    uint64_t rss = sl_proc_status_kb("RssAnon");

    g_array_append_val(tl->samples, s);
    tl->peak_rss_anon_kb = MAX(tl->peak_rss_anon_kb, rss);
}

void sl_timeline_write(const sl_timeline *tl, const char *label, FILE *f)
{
    for (guint i = 0; i < tl->samples->len; i++) {
        const sl_sample *s = &g_array_index(tl->samples, sl_sample, i);
        fprintf(f, "%s,%.3f,%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT "\n", label, s->t_ms,
                s->present, tl->total);
    }
}

void sl_timeline_clear(sl_timeline *tl)
{
    if (tl->samples) {
        g_array_free(tl->samples, true);
    }
    tl->samples = NULL;
}

uint64_t sl_proc_status_kb(const char *field)
{
    g_autofree char *text = NULL;
    size_t n = strlen(field);

    if (!g_file_get_contents("/proc/self/status", &text, NULL, NULL)) {
        return 0;
    }
    for (char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (!strncmp(l, field, n) && l[n] == ':') {
            return g_ascii_strtoull(l + n + 1, NULL, 10);
        }
    }
    return 0;
}

uint64_t sl_mapping_kb(const void *addr, uint64_t len, const char *field)
{
    g_autofree char *text = NULL;
    uint64_t a = (uintptr_t)addr, kb = 0, start = 0, end = 0;
    size_t n = strlen(field);

    if (!g_file_get_contents("/proc/self/smaps", &text, NULL, NULL)) {
        return 0;
    }
    for (char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (g_ascii_isxdigit(*l) && sscanf(l, "%" G_GINT64_MODIFIER "x-%" G_GINT64_MODIFIER "x",
                                           &start, &end) == 2) {
            continue; /* a mapping's first line: its range */
        }
        if (!strncmp(l, field, n) && l[n] == ':' && start < a + len && end > a) {
            kb += g_ascii_strtoull(l + n + 1, NULL, 10);
        }
    }
    return kb;
}

uint64_t sl_resident_bytes(const void *addr, uint64_t len)
{
    uint64_t sys = (uint64_t)sysconf(_SC_PAGESIZE), n = (len + sys - 1) / sys, bytes = 0;
    g_autofree unsigned char *vec = g_malloc(n ? n : 1);

    if (mincore((void *)addr, len, vec) < 0) {
        return 0;
    }
    /* mincore answers per base page, also for hugetlb mappings. */
    for (uint64_t i = 0; i < n; i++) {
        bytes += vec[i] & 1;
    }
    return bytes * sys;
}
