/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What `qemu-save` and `qemu-restore` need to know about a stock QEMU:
 * its memory-backend-file objects (from its command line, or over QMP from
 * a running QEMU) and the hugepage pool a hugetlbfs file will draw from.
 * Guest RAM of such a backend is one snapshot block named after the
 * backend's id.
 */
#ifndef SNAPLOAD_QEMU_H
#define SNAPLOAD_QEMU_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "qmp.h"

typedef struct {
    char *id;        /* backend id: the snapshot block's name */
    char *mem_path;  /* the memory file; NULL for anonymous RAM */
    uint64_t size;   /* bytes */
    uint64_t offset; /* memory-backend-file offset= (QEMU 8.2+): where guest RAM starts */
    bool share;      /* share=on: guest RAM lives in the file */
    bool anon;       /* memory-backend-ram, or plain -m: private anonymous memory */
    bool readonly;   /* readonly=on */
    unsigned order;  /* sl_qemu_args_backends(): its place among QEMU's backends, in the
                      * order QEMU allocates them (its -objects, then plain -m's RAM) */
} sl_qemu_backend;

/** sl_qemu_backend_free: free one backend description. */
void sl_qemu_backend_free(sl_qemu_backend *b);

/**
 * sl_qemu_args_backends: the guest RAM of a QEMU command line, as an array
 * of sl_qemu_backend *: every memory-backend-file object
 * (`-object memory-backend-file,id=..,size=..,mem-path=..,share=on`), every
 * memory-backend-ram object (anonymous), and, where `-machine` names no
 * memory-backend, the plain `-m` RAM (anonymous, block "pc.ram", 128 MiB
 * if `-m` is absent).  Errors name the bad option.
 */
GPtrArray *sl_qemu_args_backends(char **argv, GError **errp);

/**
 * sl_qemu_args_machine_fits: whether QEMU's arguments @argv (their
 * -machine/-M type) may make machine type @saved, the one a snapshot's
 * stream names; false with @errp naming both only where both are upstream
 * x86 machines told apart (the i440FX and Q35 families, by alias or
 * versioned name): other names, no -machine and an unknown @saved (NULL
 * or "") fit, and are left to QEMU.
 */
bool sl_qemu_args_machine_fits(char **argv, const char *saved, GError **errp);

/** sl_qemu_args_object_type: the qom-type of the -object of id @id in @argv, or NULL; g_free() it. */
char *sl_qemu_args_object_type(char **argv, const char *id);

/**
 * sl_qemu_args_mem_path: the file of legacy -mem-path in @argv, or NULL.
 * QEMU's RAM is then a private mapping of it (not plain -m's anonymous
 * pc.ram): an eager load takes it, no lazy restore can serve it.
 */
const char *sl_qemu_args_mem_path(char **argv);

/** sl_qemu_qmp_backends: the same, asked of a running QEMU over QMP. */
GPtrArray *sl_qemu_qmp_backends(sl_qmp *q, GError **errp);

/**
 * sl_qemu_fresh_files: replace the memory file of every backend in
 * @backends (sl_qemu_backend *) by an empty (all holes) file of its size,
 * so that every page must come from the restore.  Old files are removed
 * first; then the hugetlbfs pools must hold the pages of all files
 * together (the error names how many pages of which size and the command
 * that reserves them), and only then are the new files created.  Each new
 * file is locked (flock) by an fd added to @locks (int), which the caller
 * keeps open while the restore runs; an old file that another restore
 * holds locked is refused by name before any file is removed.
 */
bool sl_qemu_fresh_files(GPtrArray *backends, GArray *locks, GError **errp);

/**
 * sl_qemu_reuse_files: keep the memory file of every backend in @backends
 * that a previous run left (a regular file of its size on tmpfs or
 * hugetlbfs), as sl_qemu_fresh_files() makes the others; anonymous RAM is
 * refused.  The restore then keeps what the files still hold of the
 * snapshot (config.keep_memory).  Kept files are locked into @locks as
 * sl_qemu_fresh_files() locks new ones; one in use is refused.
 */
bool sl_qemu_reuse_files(GPtrArray *backends, GArray *locks, GError **errp);

/** sl_qemu_unlock_files: closes every fd in @locks (int), which lets their files go. */
void sl_qemu_unlock_files(GArray *locks);

#endif /* SNAPLOAD_QEMU_H */
