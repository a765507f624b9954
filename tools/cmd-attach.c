/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload attach SOCKET -- COMMAND...`: runs COMMAND (a vhost-user
 * back-end such as qemu-storage-daemon, or any process that will map the
 * guest RAM of a restore in progress) registered with the restore daemon
 * listening on SOCKET: with the preload client and the guest RAM files
 * that qemu-restore wrote beside its socket (SOCKET.blocks).  Every
 * mapping it makes of those files is then served like QEMU's, and QEMU's
 * own preload client lets it have guest RAM (docs/qemu.md, "vhost-user
 * back-ends").  A daemon must answer on SOCKET before COMMAND starts: a
 * mistyped path, or a restore that has ended, is refused naming SOCKET,
 * since a back-end run unregistered would read holes as zeros.  A daemon
 * that has completed its restore still answers, and registers COMMAND's
 * mappings as complete.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "client.h"

#define ATTACH_USAGE "SOCKET -- COMMAND [ARGS...] - run COMMAND (a vhost-user back-end) " \
                     "registered with the restore daemon at SOCKET (qemu-restore --socket)"

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

/*
 * Whether a restore daemon answers at @sock (a handshake, then the
 * connection closed): else @cmd is not started, and the error says so.
 */
static bool daemon_answers(const char *sock, const char *cmd, GError **errp)
{
    int fd = sl_client_connect(sock, "attach", errp);

    if (fd < 0) {
        g_autofree char *why = g_strdup((*errp)->message);
        g_clear_error(errp);
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s not started: it would run "
                    "unregistered: %s (is %s the --socket of a qemu-restore that still runs?)",
                    cmd, why, sock);
        return false;
    }
    close(fd);
    return true;
}

/* No "--" where it belongs (@n arguments before it): --help prints the
 * usage and exits 0, anything else is a usage error. */
static int usage(int n, char **argv)
{
    GOptionEntry none[] = { { NULL } };

    if (cli_parse(ATTACH_USAGE, none, &n, &argv)) {
        return cli_usage("usage: snapload attach SOCKET -- COMMAND [ARGS...] (SOCKET: the "
                         "restore daemon's, as given to qemu-restore --socket)");
    }
    return 2;
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
    if (dash != 2 || dash + 1 >= argc || argv[1][0] == '-') {
        return usage(dash < 0 ? argc : dash, argv);
    }
    if (!daemon_answers(argv[1], argv[dash + 1], &err)) {
        return cli_fail_error(g_steal_pointer(&err));
    }
    blocks_file = g_strconcat(argv[1], ".blocks", NULL);
    if (!g_file_get_contents(blocks_file, &blocks, NULL, &err)) {
        return cli_fail("%s: %s (is %s the socket of a qemu-restore whose guest RAM is in "
                        "files?)", blocks_file, err->message, argv[1]);
    }
    if (!(env = attach_env(argv[1], blocks, &err))) {
        return cli_fail_error(g_steal_pointer(&err));
    }
    execvpe(argv[dash + 1], argv + dash + 1, env);
    return cli_fail("%s: %s", argv[dash + 1], g_strerror(errno));
}
