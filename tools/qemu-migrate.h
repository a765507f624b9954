/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Driving QEMU's migration over QMP (qemu-migrate.c): capabilities set
 * explicitly, migrate and migrate-incoming to exec: or file: URIs.
 */
#ifndef SNAPLOAD_QEMU_MIGRATE_H
#define SNAPLOAD_QEMU_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>
#include "qmp.h"

/** The migration capabilities snapload sets; every other one is left as QEMU has it. */
typedef struct {
    bool ignore_shared;  /* x-ignore-shared: shared RAM stays out of the stream */
    bool mapped_ram;     /* pages at fixed file offsets (QEMU >= 9.0, file: URIs) */
    bool multifd;        /* several channels (with mapped-ram: threads writing the file) */
} sl_qemu_caps;

/** sl_qemu_has_capability: whether this QEMU has migration capability @name. */
bool sl_qemu_has_capability(sl_qmp *q, const char *name, GError **errp);

/**
 * sl_qemu_set_caps: sets x-ignore-shared, mapped-ram, multifd, events
 * (always on), pause-before-switchover and postcopy-ram (always off)
 * explicitly; a capability this QEMU lacks is an error only if it was
 * asked on.
 */
bool sl_qemu_set_caps(sl_qmp *q, const sl_qemu_caps *c, GError **errp);

/**
 * sl_qemu_migrate: @cmd ("migrate" or "migrate-incoming") to @uri, then
 * waits until it completes; a failure carries QEMU's own reason.
 */
bool sl_qemu_migrate(sl_qmp *q, const char *cmd, const char *uri, GError **errp);

/**
 * QEMU's migration settings that snapload changes (the capabilities
 * sl_qemu_set_caps() sets, max-bandwidth and multifd-channels) as they
 * were when read.  They persist between migrations of one QEMU: left as a
 * save set them, x-ignore-shared would keep shared RAM out of the user's
 * next live migration without a word, and mapped-ram would refuse it.
 */
typedef struct {
    char *caps;    /* migrate-set-capabilities arguments */
    char *params;  /* migrate-set-parameters arguments */
} sl_qemu_settings;

/** sl_qemu_settings_read: reads @s from QEMU (sl_qemu_settings_clear() it). */
bool sl_qemu_settings_read(sl_qmp *q, sl_qemu_settings *s, GError **errp);

/** sl_qemu_settings_put_back: sets QEMU's settings back to @s (no migration may run). */
bool sl_qemu_settings_put_back(sl_qmp *q, const sl_qemu_settings *s, GError **errp);

/** sl_qemu_settings_clear: frees what @s holds. */
void sl_qemu_settings_clear(sl_qemu_settings *s);

/** sl_qemu_exec_uri: "exec:@shell". */
char *sl_qemu_exec_uri(const char *shell);

/** sl_qemu_file_uri: "file:@path[,offset=@offset]" (QEMU >= 8.2). */
char *sl_qemu_file_uri(const char *path, uint64_t offset);

#endif /* SNAPLOAD_QEMU_MIGRATE_H */
