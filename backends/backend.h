/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Memory backends behind one ops table.  The engine (fault thread and
 * loaders) only calls through sl_backend_ops, so it never switches on the
 * kind of memory.  A backend says which userfaultfd features, register mode
 * and range ioctls it needs, how to create fresh memory of its kind (for the
 * CLI, tests and benchmarks), how to make attached memory empty before
 * registration, and how to place page data or zeros at an offset.
 */
#ifndef SNAPLOAD_BACKEND_H
#define SNAPLOAD_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "snapload/snapload.h"

typedef struct sl_backend_ops sl_backend_ops;

/*
 * One piece of memory of some backend.  Written by the thread that attaches
 * it, read-only once the restore has started.
 */
typedef struct {
    const sl_backend_ops *ops;
    uint8_t *host;       /* the mapping consumers use (registered) */
    uint64_t length;
    uint64_t page_size;  /* the backend's placement granule */
    bool owned;          /* created by ops->map: release unmaps it */
} sl_mem;

struct sl_backend_ops {
    const char *name;
    uint64_t uffd_features;  /* UFFD_FEATURE_* required at UFFDIO_API */
    uint64_t register_mode;  /* UFFDIO_REGISTER_MODE_* */
    uint64_t range_ioctls;   /* SL_IOCTL() bits the registered range must offer */

    /** Create fresh memory of @length bytes, owned by @m. */
    bool (*map)(sl_mem *m, uint64_t length, GError **errp);
    /** Before registration: drop any contents so every page will fault. */
    bool (*prepare)(sl_mem *m, GError **errp);
    /** Place @len bytes from @src at @off; *done = bytes placed. 0 or -errno. */
    int (*place)(const sl_mem *m, int uffd, uint64_t off, const void *src, uint64_t len,
                 uint64_t *done, uint64_t *eagain);
    /** Place zeros over [@off, @off + @len); *done = bytes placed. */
    int (*zero)(const sl_mem *m, int uffd, uint64_t off, uint64_t len, uint64_t *done,
                uint64_t *eagain);
    /** Undo map (only for owned memory). */
    void (*release)(sl_mem *m);
};

/** sl_backend_get: the ops of @kind, or NULL if the kind is unknown. */
const sl_backend_ops *sl_backend_get(sl_backend_kind kind);

/** sl_backend_by_name: the kind called @name ("anon"); false if unknown. */
bool sl_backend_by_name(const char *name, sl_backend_kind *kind);

/** sl_mem_map: fresh memory of @kind in @m (owned). */
bool sl_mem_map(sl_mem *m, sl_backend_kind kind, uint64_t length, GError **errp);

/** sl_mem_release: release memory from sl_mem_map; no-op for unowned memory. */
void sl_mem_release(sl_mem *m);

#endif /* SNAPLOAD_BACKEND_H */
