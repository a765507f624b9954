/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A record of the migration settings a qemu-save found in QEMU before it
 * changed them, kept in the runtime directory (/run/snapload as root) for
 * the length of the save.  A save that is killed (SIGKILL: no handler runs)
 * leaves QEMU with x-ignore-shared or mapped-ram on; without the record the
 * next save took those for the user's own and kept them for good, and the
 * user's next live migration left shared RAM out (found by a user's test).
 * With it, the next save of the same QEMU process (its pid and start time)
 * puts back what the user had.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "qemu-settings.h"
#include "written.h"

/* "PID-START-BOOT" of the process at @pid: its start time in clock ticks
 * since boot (/proc/PID/stat field 22: a pid reused later differs) and the
 * boot's first 8 id characters (a record in a directory that outlives a
 * reboot, ~/.cache, never matches a process of a later boot); or NULL. */
static char *process_key(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
    g_autofree char *text = NULL, *boot = NULL;
    g_auto(GStrv) fields = NULL;
    const char *rest;

    if (pid <= 0 || !g_file_get_contents(path, &text, NULL, NULL) ||
        !(rest = strrchr(text, ')')) ||
        !g_file_get_contents("/proc/sys/kernel/random/boot_id", &boot, NULL, NULL) ||
        strlen(boot) < 8) {
        return NULL;
    }
    fields = g_strsplit(rest + 2, " ", 0); /* field 3 (state) first */
    if (g_strv_length(fields) < 20) {
        return NULL;
    }
    return g_strdup_printf("%d-%s-%.8s", (int)pid, fields[19], boot);
}

/* Whether @name is a record's name: "qemu-settings-" then a key of digits,
 * '-' and hexadecimal digits, nothing else (not the temporary file of one
 * being written, "NAME.XXXXXX": found by review, a prune removed it). */
static bool record_name(const char *name)
{
    const char *k = name + strlen("qemu-settings-");

    if (!g_str_has_prefix(name, "qemu-settings-") || !*k) {
        return false;
    }
    for (; *k; k++) {
        if (!g_ascii_isxdigit(*k) && *k != '-') {
            return false;
        }
    }
    return true;
}

char *sl_qemu_settings_record_path(pid_t qemu)
{
    g_autofree char *key = process_key(qemu);
    g_autofree char *dir = key ? sl_written_dir() : NULL;

    return dir ? g_strdup_printf("%s/qemu-settings-%s", dir, key) : NULL;
}

bool sl_qemu_settings_load_record(const char *path, sl_qemu_settings *s)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;

    *s = (sl_qemu_settings){ 0 };
    if (!path || !g_file_get_contents(path, &text, NULL, NULL)) {
        return false;
    }
    lines = g_strsplit(text, "\n", 3);
    if (g_strv_length(lines) < 2 || lines[0][0] != '{' || lines[1][0] != '{') {
        return false; /* not ours, or cut short: QEMU is asked instead */
    }
    s->caps = g_strdup(lines[0]);
    s->params = g_strdup(lines[1]);
    return true;
}

/* Removes the records in @dir of QEMU processes that are gone (a save
 * killed, then its QEMU ended): nobody can use them any more. */
static void prune_records(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        g_autofree char *now = NULL, *path = NULL;
        if (!record_name(name)) {
            continue;
        }
        now = process_key((pid_t)atoi(name + strlen("qemu-settings-")));
        if (!now || strcmp(now, name + strlen("qemu-settings-"))) {
            path = g_build_filename(dir, name, NULL);
            (void)unlink(path);
        }
    }
}

bool sl_qemu_settings_write_record(const char *path, const sl_qemu_settings *s, GError **errp)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *text = g_strdup_printf("%s\n%s\n", s->caps, s->params);

    prune_records(dir);
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", dir, g_strerror(errno));
        return false;
    }
    return g_file_set_contents(path, text, -1, errp);
}
