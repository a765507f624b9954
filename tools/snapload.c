/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapload command-line tool: dispatches to the subcommands and holds the
 * helpers they share (errors, progress bar, option parsing; the value
 * parsers are in cliargs.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    { "save", cmd_save, "raw RAM images -> snapshot" },
    { "synth", cmd_synth, "write a deterministic raw RAM image (for demos and tests)" },
    { "inspect", cmd_inspect, "validate a snapshot and list its blocks and sections" },
    { "extract", cmd_extract, "write one block of a snapshot as a raw RAM image" },
    { "index", cmd_index, "checksums and hot pages for a QEMU mapped-ram file, in a sidecar" },
    { "delta", cmd_delta, "an incremental snapshot: the pages of NEW that differ from PARENT" },
    { "flatten", cmd_flatten, "a child with its chain of parents as one full snapshot" },
    { "restore", cmd_restore, "restore a snapshot lazily into fresh memory, with stats" },
    { "serve", cmd_serve, "serve a lazy restore to consumer processes over a unix socket" },
    { "qemu-save", cmd_qemu_save, "save a running QEMU guest over QMP (any guest RAM)" },
    { "qemu-restore", cmd_qemu_restore, "run a QEMU guest at once while its RAM streams in" },
    { "reset-loop", cmd_reset_loop, "restore, then write, reset to the snapshot and check, round after round" },
    { "attach", cmd_attach, "run a vhost-user back-end registered with a restore in progress" },
};

bool cli_check_threads(int threads)
{
    if (threads != CLI_THREADS_UNSET && (threads < 0 || threads > 256)) {
        cli_fail("--threads: %d is not between 0 (faults only) and 256", threads);
        return false;
    }
    return true;
}

bool cli_parse_around(const char *s, uint32_t *out)
{
    uint64_t v;

    if (!cli_parse_size(s, &v) || v < 4096 || v > SL_FAULT_AROUND_MAX || (v & (v - 1))) {
        cli_fail("--fault-around: '%s' is not a power of two from 4K to 2M", s);
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* Prints "snapload: MSG" for both; @status is what the caller returns. */
static int say(int status, const char *fmt, va_list ap)
{
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);

    cli_progress(NULL, 0, 0);
    fprintf(stderr, "snapload: %s\n", msg);
    return status;
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    int status;

    va_start(ap, fmt);
    status = say(1, fmt, ap);
    va_end(ap);
    return status;
}

int cli_usage(const char *fmt, ...)
{
    va_list ap;
    int status;

    va_start(ap, fmt);
    status = say(2, fmt, ap);
    va_end(ap);
    return status;
}

int cli_fail_error(GError *err)
{
    int ret = cli_fail("%s", err ? err->message : "unknown error");
    g_clear_error(&err);
    return ret;
}

double cli_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void cli_progress(const char *what, uint64_t done, uint64_t total)
{
    static bool shown; /* CLI-only state: the one progress line on stderr */
    int width = 40, fill;

    if (!isatty(STDERR_FILENO)) {
        return;
    }
    if (!what || total == 0) {
        if (shown) {
            fputs("\r\033[K", stderr);
            shown = false;
        }
        return;
    }
    fill = (int)((double)done / (double)total * width);
    fprintf(stderr, "\r%-10s [%.*s%*s] %5.1f%%", what, fill,
            "########################################", width - fill, "",
            100.0 * (double)done / (double)total);
    shown = done < total;
    if (!shown) {
        fputs("\r\033[K", stderr);
    }
    fflush(stderr);
}

bool cli_parse(const char *usage, const GOptionEntry *entries, int *argc, char ***argv)
{
    g_autoptr(GOptionContext) ctx = g_option_context_new(usage);
    g_autoptr(GError) err = NULL;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, argc, argv, &err)) {
        fprintf(stderr, "snapload: %s (see --help)\n", err->message);
        return false;
    }
    return true;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: snapload COMMAND [OPTIONS]   (snapload COMMAND --help for options)\n\n");
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            return commands[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "snapload: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
