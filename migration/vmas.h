/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A process's mappings, as /proc/PID/maps and smaps list them (vmas.c):
 * what backs a range of addresses, and whether a fork copies it.
 */
#ifndef SNAPLOAD_VMAS_H
#define SNAPLOAD_VMAS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>

/** One mapping (VMA) of a process. */
typedef struct {
    uint64_t start, end;   /* addresses [start, end) */
    uint64_t offset;       /* file offset of @start (0 for anonymous memory) */
    dev_t dev;             /* the mapped file's device (0 if none) */
    uint64_t ino;          /* and inode */
    bool shared;           /* MAP_SHARED */
    bool dontcopy;         /* MADV_DONTFORK (with @flags of sl_vmas_each() only) */
    bool uffd_missing;     /* registered with a uffd for MISSING faults (@flags only) */
    bool uffd_minor;       /* and for MINOR faults (@flags only) */
    const char *path;      /* the listed path ("" if none): valid during the callback only */
} sl_vma;

/**
 * sl_vmas_each: calls @fn for every mapping of process @pid (0: this one)
 * that overlaps [@lo, @hi), in address order, until @fn returns false.
 * With @flags the list comes from smaps and sl_vma.dontcopy, uffd_missing
 * and uffd_minor are known (slower: the kernel counts each mapping's
 * pages).  False with @errp set if the list cannot be read, errno then
 * saying why (EMFILE or ENFILE: no fd was free to open it).
 */
bool sl_vmas_each(pid_t pid, uint64_t lo, uint64_t hi, bool flags,
                  bool (*fn)(const sl_vma *vma, void *opaque), void *opaque, GError **errp);

/**
 * sl_vmas_check_file: whether [@addr, @addr + @len) is mapped, without a
 * gap, from file @fd starting at file offset @offset.  False with @errp
 * naming the first address that is not (unmapped, another file, or another
 * offset).
 */
bool sl_vmas_check_file(void *addr, uint64_t len, int fd, uint64_t offset, GError **errp);

#endif /* SNAPLOAD_VMAS_H */
