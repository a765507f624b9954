/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Values the subcommands read from their arguments, as text with no side
 * effect: sizes ("4G", "512MiB") and NAME=NODE pairs.  Kept apart from the
 * CLI's entry point so that tests of the parsers that use them (QEMU's
 * arguments, tools/qemu.c) link without it.
 */
#include <errno.h>
#include <string.h>
#include "cli.h"

bool cli_parse_size(const char *s, uint64_t *out)
{
    char *end = NULL;
    guint64 v;
    unsigned shift = 0;

    if (!g_ascii_isdigit(*s)) { /* strtoull would take "-1" (as 2^64 - 1) and " 1" */
        return false;
    }
    errno = 0;
    v = g_ascii_strtoull(s, &end, 10);
    if (errno == ERANGE) {
        return false;
    }
    switch (g_ascii_toupper(*end)) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    case 'T': shift = 40; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'I') {
        end++;
    }
    if (*end == 'B' || *end == 'b') {
        end++;
    }
    if (*end || (shift && v > (UINT64_MAX >> shift))) {
        return false;
    }
    *out = v << shift;
    return true;
}

bool cli_parse_name_node(const char *arg, char **name, int *node)
{
    const char *eq = strrchr(arg, '=');
    char *end = NULL;
    long n = eq && g_ascii_isdigit(eq[1]) ? strtol(eq + 1, &end, 10) : -1;

    if (!eq || eq == arg || !end || *end || n < 0 || n > 1023) {
        return false;
    }
    if (name) {
        *name = g_strndup(arg, (gsize)(eq - arg));
    }
    *node = (int)n;
    return true;
}
