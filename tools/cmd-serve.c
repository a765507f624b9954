/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `snapload serve SNAP --socket PATH [--block NAME...] [--track-writes]
 * [--fault-around SIZE] [--parent PATH]`:
 * run the restore daemon for consumer processes (docs/protocol.md), of
 * every block of SNAP or of the blocks named; with --track-writes it takes
 * tracked mappings (REGISTER_WP) and answers WRITTEN_QUERY.
 */
#include "cli.h"
#include "daemon.h"
#include "written.h"

int cmd_serve(int argc, char **argv)
{
    g_autofree char *sock = NULL, *topo = NULL, *written_dir = NULL, *around = NULL;
    g_auto(GStrv) parents = NULL;
    uint32_t around_bytes = 0;
    g_auto(GStrv) blocks = NULL;
    gint threads = CLI_THREADS_UNSET;
    gboolean once = false, track = false, by_copy = false;
    GOptionEntry entries[] = {
        { "socket", 0, 0, G_OPTION_ARG_FILENAME, &sock, "unix socket to create (mode 0600)", "PATH" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "loaders per NUMA node (0: faults only)", "N" },
        { "numa-topology", 0, 0, G_OPTION_ARG_STRING, &topo, "fake NUMA nodes (docs/numa.md)", "SPEC" },
        { "exit-when-done", 0, 0, G_OPTION_ARG_NONE, &once, "exit once complete and every client left", NULL },
        { "block", 0, 0, G_OPTION_ARG_STRING_ARRAY, &blocks, "serve only this block (repeat; "
          "default: every block in the file): the others are the consumer's to load", "NAME" },
        { "track-writes", 0, 0, G_OPTION_ARG_NONE, &track, "take tracked mappings and answer "
          "what they wrote (WRITTEN_QUERY)", NULL },
        { "place-by-copy", 0, 0, G_OPTION_ARG_NONE, &by_copy, "anonymous memory: copy every "
          "page in instead of handing the consumer whole chunks to move in", NULL },
        CLI_FAULT_AROUND_OPTION(around),
        CLI_PARENT_OPTION(parents),
        { NULL },
    };
    sl_daemon_opts o = { .ready_fd = -1, .stats_fd = -1 };

    if (!cli_parse("SNAP - serve a lazy restore to consumer processes", entries, &argc, &argv)) {
        return 2;
    }
    if (argc != 2 || !sock) {
        return cli_usage("serve needs SNAP and --socket PATH");
    }
    if ((around && !cli_parse_around(around, &around_bytes)) || !cli_check_threads(threads)) {
        return 2;
    }
    o.snapshot = argv[1];
    o.parents = parents;
    o.socket = sock;
    o.exit_when_done = once;
    o.serve = (const char *const *)blocks;
    written_dir = track ? sl_written_dir() : NULL;
    o.written_dir = written_dir;
    o.ignore_lists = true; /* a fresh restore: no earlier run's list applies */
    o.cfg = (sl_restore_config){ .size = sizeof(o.cfg), .numa_topology = topo,
                                 .loader_threads = threads > 0 ? (unsigned)threads : 0,
                                 .no_loaders = threads == 0, .fault_around = around_bytes,
                                 .place_by_copy = by_copy };
    return sl_daemon_run(&o);
}
