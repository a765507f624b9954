/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What qemu-restore asks of the QEMU it restores into (qemu-verify.c):
 * where QEMU keeps each RAM block, and every page of guest RAM compared
 * with the snapshot before the guest runs (--verify).
 */
#ifndef SNAPLOAD_QEMU_VERIFY_H
#define SNAPLOAD_QEMU_VERIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "snapload/snapload.h"
#include "qmp.h"

/**
 * sl_qemu_ramblock_hvas: block name -> host address in QEMU (GSIZE_TO_POINTER),
 * from `info ramblock`; where this QEMU shows no HVA column there (before
 * 8.1, e.g. Debian 12's 7.2), of each RAM block the guest sees, from where
 * `info mtree -f` places it and `gpa2hva` there.  NULL with @errp set if
 * QEMU does not answer.
 */
GHashTable *sl_qemu_ramblock_hvas(sl_qmp *q, GError **errp);

/**
 * sl_qemu_ramblock_names: the names of QEMU's RAM blocks (`info
 * ramblock`'s first column, every QEMU version), as a set; NULL if QEMU
 * does not answer.
 */
GHashTable *sl_qemu_ramblock_names(sl_qmp *q);

/**
 * sl_qemu_device_block: where @hva (sl_qemu_ramblock_hvas(), or the set of
 * sl_qemu_ramblock_names()) has no block
 * named @id but exactly one named ".../@id", that name: how QEMU names the
 * RAM block of a backend a device owns (ivshmem: "0000:00:02.0/hostmem").
 * NULL otherwise (virtio-mem's backend is named so too; a pc-dimm's is
 * not).  Such memory does not come back from our container: QEMU checks
 * ivshmem's guest-physical address on an x-ignore-shared load before the
 * device that maps it is loaded.
 */
const char *sl_qemu_device_block(GHashTable *hva, const char *id);

/**
 * sl_qemu_refuse_device_block: false with @errp saying why (the remedy
 * being @remedy) if backend @id belongs to a device
 * (sl_qemu_device_block() of @blocks); true otherwise.
 */
bool sl_qemu_refuse_device_block(GHashTable *blocks, const char *id, const char *remedy,
                                 GError **errp);

/**
 * sl_qemu_verify: every page of each lazy block in @backends
 * (sl_qemu_backend *) against @snap: a file-backed block through a mapping
 * of its file registered with the daemon at @dsock (so missing pages are
 * served, never read as holes), an anonymous one through QEMU's own memory
 * (/proc/PID/mem: only once every page is in place, since such a read of a
 * missing page fails instead of faulting).  Counts the pages that
 * differ in *@mismatches and prints the first few; false on an error.
 */
bool sl_qemu_verify(sl_qmp *q, sl_snapshot *snap, GPtrArray *backends, const char *dsock,
                    uint64_t *mismatches, GError **errp);

#endif /* SNAPLOAD_QEMU_VERIFY_H */
