/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The record of QEMU's migration settings from before a qemu-save changed
 * them, for the next save of the same QEMU if this one is killed
 * (qemu-settings.c).
 */
#ifndef SNAPLOAD_QEMU_SETTINGS_H
#define SNAPLOAD_QEMU_SETTINGS_H

#include <sys/types.h>
#include "qemu-migrate.h"

/** sl_qemu_settings_record_path: the record of QEMU process @qemu (pid and
 *  start time), or NULL if it cannot be told. */
char *sl_qemu_settings_record_path(pid_t qemu);

/** sl_qemu_settings_load_record: @s from the record at @path; false if there
 *  is none (or it is not one), @s then empty. */
bool sl_qemu_settings_load_record(const char *path, sl_qemu_settings *s);

/** sl_qemu_settings_write_record: writes @s to the record at @path (atomically),
 *  after removing the records of QEMU processes that are gone. */
bool sl_qemu_settings_write_record(const char *path, const sl_qemu_settings *s, GError **errp);

#endif /* SNAPLOAD_QEMU_SETTINGS_H */
