/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A minimal writer for flat JSON objects with proper string escaping, used
 * by `inspect --json` and `restore --json`.
 */
#include <math.h>
#include "cli.h"

static void key(cli_json *j, const char *k)
{
    g_string_append(j->s, j->first ? "\"" : ", \"");
    g_string_append(j->s, k);
    g_string_append(j->s, "\": ");
    j->first = false;
}

void json_begin(cli_json *j)
{
    j->s = g_string_new("{");
    j->first = true;
}

void json_u64(cli_json *j, const char *k, uint64_t v)
{
    key(j, k);
    g_string_append_printf(j->s, "%" G_GUINT64_FORMAT, v);
}

void json_int(cli_json *j, const char *k, int64_t v)
{
    key(j, k);
    g_string_append_printf(j->s, "%" G_GINT64_FORMAT, v);
}

void json_double(cli_json *j, const char *k, double v)
{
    key(j, k);
    if (isfinite(v)) {
        g_string_append_printf(j->s, "%.3f", v);
    } else {
        g_string_append(j->s, "null");
    }
}

/* Appends one character of @p (ASCII or a valid UTF-8 sequence) escaped as
 * JSON needs, or U+FFFD for a byte that starts no valid sequence (a path
 * need not be UTF-8; a JSON text must be).  Returns the bytes consumed. */
static size_t quote_char(GString *s, const unsigned char *p)
{
    gunichar c;

    if (*p == '"' || *p == '\\') {
        g_string_append_c(s, '\\');
        g_string_append_c(s, (char)*p);
        return 1;
    }
    if (*p < 0x20) {
        g_string_append_printf(s, "\\u%04x", *p);
        return 1;
    }
    if (*p < 0x80) {
        g_string_append_c(s, (char)*p);
        return 1;
    }
    c = g_utf8_get_char_validated((const char *)p, -1);
    if (c == (gunichar)-1 || c == (gunichar)-2) {
        g_string_append(s, "\\ufffd");
        return 1;
    }
    g_string_append_len(s, (const char *)p, g_utf8_skip[*p]);
    return g_utf8_skip[*p];
}

void json_quote(GString *s, const char *v)
{
    g_string_append_c(s, '"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p += quote_char(s, p)) {
    }
    g_string_append_c(s, '"');
}

void json_str(cli_json *j, const char *k, const char *v)
{
    key(j, k);
    json_quote(j->s, v);
}

void json_bool(cli_json *j, const char *k, bool v)
{
    key(j, k);
    g_string_append(j->s, v ? "true" : "false");
}

void json_raw(cli_json *j, const char *k, const char *raw)
{
    key(j, k);
    g_string_append(j->s, raw);
}

char *json_end(cli_json *j)
{
    g_string_append_c(j->s, '}');
    return g_string_free(j->s, false);
}
