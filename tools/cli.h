/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Shared pieces of the snapload command-line tool: the subcommands, size
 * parsing, the progress bar, error reporting and a small JSON writer.
 * Only the CLI prints or logs; the library reports through GError/-errno.
 */
#ifndef SNAPLOAD_CLI_H
#define SNAPLOAD_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "snapload/snapload.h"

/*
 * The subcommands: each parses its own options from @argc/@argv (argv[0]
 * is the subcommand's name) and returns the process's exit status (0 ok,
 * 1 failed, 2 bad usage), printing what went wrong.
 */
int cmd_save(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_index(int argc, char **argv);
int cmd_delta(int argc, char **argv);
int cmd_flatten(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_qemu_save(int argc, char **argv);
int cmd_qemu_restore(int argc, char **argv);
int cmd_attach(int argc, char **argv);
int cmd_reset_loop(int argc, char **argv);

/** cli_find_preload: the path of libsnapload-preload.so, or NULL with @errp set. */
char *cli_find_preload(GError **errp);

/**
 * cli_consumer_env: @env (taken) made that of a process whose mappings of
 * the guest RAM files @blocks (NAME=PATH;...) register with the daemon at
 * @dsock, tracking their writes when @track (SNAPLOAD_TRACK=1: a restore
 * with --reuse-ram); NULL with @errp set (and @env freed) if the library
 * is missing.
 */
char **cli_consumer_env(char **env, const char *dsock, const char *blocks, bool track,
                        GError **errp);

/*
 * SIGINT, SIGTERM and SIGHUP for a supervising command (tools/interrupt.c):
 * blocked, and watched by a thread that remembers the first one and sends
 * SIGTERM to the target process, so that the command fails through its
 * usual paths and cleans up instead of dying mid-way.
 */
typedef struct cli_interrupt cli_interrupt;

/**
 * cli_interrupt_start: block the three signals in the calling thread (and
 * the threads it starts afterwards) and start the watcher; call before any
 * other thread or child.  NULL if it could not (the signals then act as
 * before); every other cli_interrupt_ function accepts NULL.
 */
cli_interrupt *cli_interrupt_start(void);

/**
 * cli_interrupt_target: on a signal (or now, if one came already), send
 * SIGTERM to the process of @pidfd (kept open by the caller until
 * cli_interrupt_stop() or another target).
 */
void cli_interrupt_target(cli_interrupt *in, int pidfd);

/** cli_interrupt_signal: the first signal that came, 0 if none. */
int cli_interrupt_signal(cli_interrupt *in);

/**
 * cli_interrupt_fd: a descriptor that becomes readable (for good) when
 * the first signal comes, for a wait to poll beside its own (-1 for NULL).
 */
int cli_interrupt_fd(const cli_interrupt *in);

/** cli_interrupt_child: in a child before exec: unblock the three signals. */
void cli_interrupt_child(void);

/** cli_interrupt_stop: end the watcher and restore the signal mask. */
void cli_interrupt_stop(cli_interrupt *in);

/**
 * cli_interrupt_remove_on_signal: on SIGINT, SIGTERM or SIGHUP (where they
 * are not ignored), remove @path before the signal ends the process; for a
 * partial output (cli_partial_path()).  Undone by cli_interrupt_keep().
 */
void cli_interrupt_remove_on_signal(const char *path);

/** cli_interrupt_keep: no longer remove @path on a signal (renamed, or removed). */
void cli_interrupt_keep(const char *path);

/** What cli_save() writes. */
typedef struct {
    uint64_t psize;       /* page size of every block */
    const char *out;      /* snapshot to write */
    const char *devstate; /* file to store as the device state, or NULL */
    const char *hot;      /* hot-page list to store, or NULL */
    const char *dsock;    /* daemon that serves a busy memory file, or NULL */
    const char *parent;   /* write a child of this snapshot, or NULL */
    const char *parent_path; /* with @parent: the path to record for it (checked), or NULL */
    char *const *ancestors; /* with @parent: @parent's own ancestors where they moved
                           * (--ancestor: NULL-terminated, its parent first), or NULL */
    uint64_t *const *written; /* with @parent: per raw input, a bitmap of the only pages
                               * that may differ from it (the rest are not read), or NULL */
    uint8_t parent_id[SL_IDENTITY_LEN]; /* with @has_parent_id: the identity @parent must
                               * still have (the one @written was made against) */
    bool has_parent_id;
    cli_interrupt *intr;  /* a signal that came here ends the save, or NULL */
} cli_save_opts;

/**
 * cli_save: write snapshot @o->out from raw images @raws (FILE[:NAME]
 * each), with an optional device-state file and hot-page list.  With
 * @o->dsock, a memory file that a lazy restore still fills is read
 * through a view registered with that restore's daemon (its missing pages
 * served), else such a file is refused.  With @o->parent, an incremental
 * snapshot: only the pages whose checksum differs from the parent's.
 * Returns an exit status (errors printed).
 */
int cli_save(char **raws, const cli_save_opts *o);

/**
 * cli_idle_or_served: whether memory file @fd (@size bytes, called @path)
 * may be saved: no restore fills it (*@served false), or one does and its
 * daemon @dsock can serve its missing pages (*@served true: read it through
 * a registered view, never plainly).  False with @errp otherwise.
 */
bool cli_idle_or_served(int fd, uint64_t size, const char *path, const char *dsock,
                        bool *served, GError **errp);

/**
 * cli_parent_path: the path a child at @child records for its parent at
 * @parent: @given if set, else the parent's name alone when both lie in
 * one directory (the pair can move together), else its absolute path.
 */
char *cli_parent_path(const char *parent, const char *child, const char *given);

/**
 * cli_check_parent_path: a --parent-path @given (taken from @child's
 * directory) must lead to @parent, to a copy of it (the same identity), or
 * to nothing yet (noted on stderr), and not be empty nor name @child
 * itself.  0, or the exit status after saying why (2: a usage error).
 */
int cli_check_parent_path(const char *parent, const char *child, const char *given);

/**
 * cli_partial_path: where a snapshot meant for @out is written until it is
 * complete (beside it, so a rename puts it in place); g_free() it.  Until
 * cli_finish_partial(), SIGINT, SIGTERM or SIGHUP removes it before ending
 * the process.  Partial files of @out that runs now gone left (SIGKILL)
 * are removed first, each named on stderr.
 */
char *cli_partial_path(const char *out);

/**
 * cli_run_dir_make: makes this run's private working directory
 * @parent/@prefixXXXXXX (@parent NULL: the temporary directory) and holds a
 * flock on a lock file in it through *@lockfd (close-on-exec; a forked
 * child shares it) until cli_run_dir_release().  First removes, each named
 * on stderr, the directories of that prefix, with their files, whose lock
 * file no run holds: a run killed with SIGKILL left them.
 * Returns the path (g_free() it), or NULL with @errp.
 */
char *cli_run_dir_make(const char *parent, const char *prefix, int *lockfd, GError **errp);

/** cli_run_dir_release: removes @dir if nothing but its lock file is left
 * in it (else a later run's sweep does), then drops the lock @lockfd. */
void cli_run_dir_release(char *dir, int lockfd);

/** cli_ms_left: milliseconds from now until @deadline_us (monotonic), at least 0. */
int cli_ms_left(int64_t deadline_us);

/**
 * cli_exits_by: true once child @pid has exited (left for the caller to
 * reap), or is no child of ours; false at @deadline_us (monotonic) while
 * it runs.  Waits on a pidfd (tools/procwait.c).
 */
bool cli_exits_by(pid_t pid, int64_t deadline_us);

/* What cli_wait_socket() saw first. */
typedef enum {
    CLI_WAIT_DONE,        /* the socket is there */
    CLI_WAIT_EXITED,      /* the process exited without making it */
    CLI_WAIT_INTERRUPTED, /* the interrupt descriptor became readable */
    CLI_WAIT_TIMEOUT,     /* @deadline_us came */
} cli_wait_result;

/**
 * cli_wait_socket: waits until @path is a socket, child @pid exits (left
 * unreaped), @intr_fd (cli_interrupt_fd(); -1: none) becomes readable, or
 * @deadline_us (monotonic) comes, whichever is first: on inotify events of
 * @path's directory and the child's pidfd.
 */
cli_wait_result cli_wait_socket(const char *path, pid_t pid, int intr_fd, int64_t deadline_us);

/**
 * cli_finish_partial: if @ok, flushes the complete @tmp to disk
 * (fdatasync) and renames it over @out; else (or if that fails, with @errp)
 * removes @tmp.  A failed save, delta or flatten
 * never destroys an earlier snapshot named @out.  An error already in
 * @errp that names @tmp is made to name @out, the file the user asked for.
 * Returns whether @out is new.
 */
bool cli_finish_partial(const char *tmp, const char *out, bool ok, GError **errp);

/** cli_same_file: whether paths @a and @b name one file: the same text,
 * the same device and inode, or, where one does not exist yet, the same
 * path once their directories are resolved. */
bool cli_same_file(const char *a, const char *b);

/**
 * cli_refuse_chain_file: whether @path names a file that @s needs: @s's
 * own, a parent's further up its chain, or a QEMU file's sidecar index;
 * then @errp says so, calling the file to be written @what ("the child",
 * "the image").  Writing it would destroy the snapshot, or a chain that
 * depends on it.
 */
bool cli_refuse_chain_file(const char *path, const sl_snapshot *s, const char *what,
                           GError **errp);

/**
 * cli_refuse_output: cli_refuse_chain_file(), and whether @path exists and
 * is not a regular file (a device, a FIFO, a directory), which a file
 * written there would replace, or its directory does not exist; then
 * @errp says so.
 */
bool cli_refuse_output(const char *path, const sl_snapshot *s, const char *what,
                       GError **errp);


/** Parses "4096", "4K", "2M", "1G", "3T" (binary units). */
bool cli_parse_size(const char *s, uint64_t *out);

/**
 * cli_parse_name_node: @arg as NAME=NODE (--node, --bind): a name of at
 * least one byte (the last '=' ends it), a node from 0 to 1023.  The name
 * in *@name (g_free() it), if not NULL.
 */
bool cli_parse_name_node(const char *arg, char **name, int *node);

/**
 * Parses --fault-around SIZE (a power of two from 4K to 2M) into
 * config.fault_around; prints why and returns false when it is not one.
 */
bool cli_parse_around(const char *s, uint32_t *out);

/** The value --threads has when it is not given (no number typed can be it). */
#define CLI_THREADS_UNSET G_MININT

/**
 * Checks --threads N (loaders per NUMA node): CLI_THREADS_UNSET (the
 * default) or 0 to 256; prints why and returns false when it is not.
 */
bool cli_check_threads(int threads);

/** The --fault-around option entry, its value string into @var (restore, qemu-restore, serve). */
#define CLI_FAULT_AROUND_OPTION(var)                                                            \
    { "fault-around", 0, 0, G_OPTION_ARG_STRING, &(var), "a fault serves the pages holding "  \
      "data around it in its aligned block of SIZE (default 64K; 4K: the faulted page alone)", \
      "SIZE" }

/**
 * The --parent option entry, repeatable, its paths into @var (a GStrv):
 * for every command that opens a snapshot which may be a child (inspect,
 * extract, flatten, restore, reset-loop, serve, qemu-restore), to name a
 * parent that moved, then its parent, and so on.
 */
#define CLI_PARENT_OPTION(var)                                                                 \
    { "parent", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &(var), "an incremental snapshot's parent, " \
      "instead of the path it records; repeated: the next --parent is that parent's parent, "  \
      "and so on ('' keeps a recorded path)", "PATH" }

/**
 * The --ancestor option entry, repeatable, its paths into @var (a GStrv):
 * for the commands that write a child of PARENT (save, qemu-save, delta),
 * PARENT's own parent where it moved, then that one's parent, and so on.
 */
#define CLI_ANCESTOR_OPTION(var)                                                               \
    { "ancestor", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &(var), "PARENT's own parent, instead "  \
      "of the path PARENT records; repeated: the next is that one's parent, and so on ('' "   \
      "keeps a recorded path)", "PATH" }

/**
 * cli_open_snapshot: snapshot @path opened with SL_OPEN_* @flags; with
 * @parents (--parent PATH, repeated: a NULL-terminated list), as a child
 * whose parent is @parents[0], grandparent @parents[1] and so on, instead
 * of the paths they record (one path: sl_snapshot_open_chain(), as before
 * --parent could repeat; more, or '' alone: sl_snapshot_open_ancestors(),
 * where '' keeps a recorded path).  A snapshot
 * that is no child, or a list longer than its chain, is refused naming
 * the path.  NULL with @errp set.  Inline, so that the daemon (daemon.c,
 * also linked into its tests) needs no other file.
 */
static inline sl_snapshot *cli_open_snapshot(const char *path, char *const *parents,
                                             unsigned flags, GError **errp)
{
    if (!parents || !parents[0]) {
        return sl_snapshot_open_flags(path, flags, errp);
    }
    return !parents[1] && parents[0][0] ? sl_snapshot_open_chain(path, parents[0], flags, errp)
                       : sl_snapshot_open_ancestors(path, (const char *const *)parents, flags,
                                                    errp);
}

/** Prints "snapload: MSG" on one line of stderr and returns exit status 1. */
int cli_fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/** cli_fail() for bad usage (arguments missing or not what they claim): exit status 2. */
int cli_usage(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/** Same, for a GError (freed). */
int cli_fail_error(GError *err);

/**
 * cli_read_failure: what to tell the user when reading pages [@first, +@n)
 * of block @b of @s failed with @ret: the first page of the range that
 * cannot be read, the file of @s's chain that stores it, and why (checksum
 * mismatch, file ends early, errno).  Reads the range again page by page.
 */
char *cli_read_failure(sl_snapshot *s, unsigned b, uint64_t first, uint64_t n, int ret);

/** Progress bar on stderr, only when stderr is a terminal; done == total ends it. */
void cli_progress(const char *what, uint64_t done, uint64_t total);

/** Milliseconds of the monotonic clock. */
double cli_now_ms(void);

/** Parses a GOptionEntry table; prints usage errors. false on error. */
bool cli_parse(const char *usage, const GOptionEntry *entries, int *argc, char ***argv);

/* A flat JSON object writer. */
typedef struct {
    GString *s;
    bool first;
} cli_json;

/** json_begin: starts an empty object in @j. */
void json_begin(cli_json *j);
/** json_u64, json_int, json_double, json_bool: adds member @key with value @v. */
void json_u64(cli_json *j, const char *key, uint64_t v);
void json_int(cli_json *j, const char *key, int64_t v);
void json_double(cli_json *j, const char *key, double v);
/** json_quote: appends the string @v (not NULL) to @s as a JSON string, escaped;
 * a byte of @v that is not valid UTF-8 (a path need not be) becomes U+FFFD. */
void json_quote(GString *s, const char *v);
/** json_str: adds member @key with the string @v (not NULL), escaped. */
void json_str(cli_json *j, const char *key, const char *v);
void json_bool(cli_json *j, const char *key, bool v);
/** Inserts @raw (already JSON) as the value of @key. */
void json_raw(cli_json *j, const char *key, const char *raw);
/** Closes the object and returns its text (caller frees). */
char *json_end(cli_json *j);

#endif /* SNAPLOAD_CLI_H */
