/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload attach SOCKET -- COMMAND...`: runs COMMAND (a vhost-user
 * back-end such as qemu-storage-daemon, or any process that will map the
 * guest RAM of a restore in progress) registered with the restore daemon
 * listening on SOCKET: with the preload client and the guest RAM files
 * that qemu-restore wrote beside its socket (SOCKET.blocks).  Every
 * mapping it makes of those files is then served like QEMU's, and QEMU's
 * own preload client lets it have guest RAM (docs/qemu.md, "vhost-user
 * back-ends").  When the restore is already complete (no SOCKET.blocks),
 * COMMAND runs plainly: all of guest RAM is in place.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

/* The consumer environment SOCKET.blocks asks for: its first line names the
 * blocks; a line "track" says the back-end's writes are tracked too. */
static char **attach_env(const char *sock, const char *text, GError **errp)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    bool track = false;

    for (char **l = lines + 1; *lines && *l; l++) {
        track = track || strcmp(g_strstrip(*l), "track") == 0;
    }
    return cli_consumer_env(g_get_environ(), sock, *lines ? g_strstrip(lines[0]) : "", track,
                            errp);
}

int cmd_attach(int argc, char **argv)
{
    g_autofree char *blocks_file = NULL, *blocks = NULL;
    g_autoptr(GError) err = NULL;
    g_auto(GStrv) env = NULL;
    int dash = -1;

    for (int i = 1; i < argc && dash < 0; i++) {
        dash = strcmp(argv[i], "--") ? -1 : i;
    }
    if (dash != 2 || dash + 1 >= argc) {
        return cli_fail("usage: snapload attach SOCKET -- COMMAND [ARGS...] (SOCKET: the "
                        "restore daemon's, as given to qemu-restore --socket)");
    }
    blocks_file = g_strconcat(argv[1], ".blocks", NULL);
    if (!g_file_get_contents(blocks_file, &blocks, NULL, &err)) {
        if (!g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT) ||
            access(argv[1], F_OK) == 0) {
            return cli_fail("%s: %s (is %s the socket of a qemu-restore whose guest RAM is in "
                            "files?)", blocks_file, err->message, argv[1]);
        }
        env = g_get_environ(); /* no daemon, no blocks: nothing left to restore */
    } else if (!(env = attach_env(argv[1], blocks, &err))) {
        return cli_fail_error(g_steal_pointer(&err));
    }
    execvpe(argv[dash + 1], argv + dash + 1, env);
    return cli_fail("%s: %s", argv[dash + 1], g_strerror(errno));
}
