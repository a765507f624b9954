/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Anonymous private memory: userfaultfd MISSING mode, pages placed with
 * UFFDIO_COPY from a bounce buffer and zero pages with UFFDIO_ZEROPAGE;
 * the loaders move whole 2 MiB chunks staged in a transparent hugepage
 * into our own mapping with UFFDIO_MOVE (kernel 6.8+) instead of copying.
 * Before registration the range is emptied with MADV_DONTNEED, so every
 * page faults exactly once.  Anonymous memory is private to one process,
 * so it has exactly one view: our own mapping, or the mapping of the one
 * process that handed its uffd over (a VMM through the restore daemon).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "backend.h"
#include "../migration/uffd.h"
#include "../migration/vmas.h"

#define THP_BYTES (2u << 20)

/*
 * Fresh memory, 2 MiB aligned as QEMU aligns guest RAM: each 2 MiB of it
 * can be a transparent hugepage (and take one moved whole).
 */
static bool anon_map(sl_mem *m, uint64_t length, uint64_t hugepage, GError **errp)
{
    uint64_t slack = length >= THP_BYTES ? THP_BYTES : 0, head;
    uint8_t *p = mmap(NULL, length + slack, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

    if (p == MAP_FAILED) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "mmap of %" G_GUINT64_FORMAT
                    " anonymous bytes: %s", length, g_strerror(errno));
        return false;
    }
    head = slack ? (THP_BYTES - (uintptr_t)p % THP_BYTES) % THP_BYTES : 0;
    if (head) {
        munmap(p, head);
    }
    if (slack - head) {
        munmap(p + head + length, slack - head);
    }
    p += head;
    madvise(p, length, MADV_HUGEPAGE); /* as QEMU asks for guest RAM; a hint */
    m->host = p;
    m->length = length;
    m->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
    m->owned = true;
    return true;
}

/* sl_vmas_each() callback: stops at the first mapping that is not private anonymous. */
static bool find_not_private(const sl_vma *v, void *opaque)
{
    if (!v->shared && v->ino == 0) {
        return true;
    }
    *(sl_vma *)opaque = *v;
    return false;
}

/*
 * The caller's memory at @m->host must be private anonymous memory: what
 * MADV_DONTNEED empties and MISSING faults see as missing.  A shared or
 * file mapping keeps its pages through DONTNEED, so every placement would
 * find a page there (EEXIST) and the old bytes would stay, unnoticed.
 */
static bool private_anonymous(const sl_mem *m, GError **errp)
{
    uint64_t a = (uintptr_t)m->host;
    sl_vma bad = { 0 };

    if (access("/proc/self/maps", R_OK) != 0) {
        return true; /* no /proc: madvise() below is the only check */
    }
    if (!sl_vmas_each(0, a, a + m->length, false, find_not_private, &bad, errp)) {
        return false;
    }
    if (bad.end) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "anonymous block at %p: the memory at "
                    "%#" G_GINT64_MODIFIER "x is not private anonymous memory (%s): map it "
                    "MAP_PRIVATE|MAP_ANONYMOUS, or attach a shared file with "
                    "sl_restore_attach_file()", m->host, bad.start,
                    bad.shared ? "a shared mapping" : "a file mapping");
        return false;
    }
    return true;
}

/*
 * Empties our own mapping.  Memory only another process maps (its one
 * view, handed over) was registered by that process as it mapped it, fresh:
 * there is nothing of ours to empty.
 */
static bool anon_prepare(sl_mem *m, GError **errp)
{
    m->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
    if (m->host && !private_anonymous(m, errp)) {
        return false;
    }
    if (m->host && madvise(m->host, m->length, MADV_DONTNEED) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "madvise(DONTNEED) on %p: %s "
                    "(is it private anonymous memory?)", m->host, g_strerror(errno));
        return false;
    }
    return true;
}

static uint8_t *anon_stage(const sl_mem *m, uint64_t off, uint8_t *bounce)
{
    return bounce;
}

static int anon_place(const sl_mem *m, const sl_view *v, uint64_t off, const uint8_t *src,
                      uint64_t len, uint64_t *done, uint64_t *eagain)
{
    return sl_uffd_copy(v->uffd, &v->fence, (void *)(uintptr_t)(v->base + off), src, len, v->wp,
                        done, eagain);
}

static int anon_adopt(const sl_mem *m, const sl_view *v, uint64_t off, uint8_t *src,
                      uint64_t len, uint64_t *done, uint64_t *eagain)
{
    if (m->mover) { /* another process's memory: its owner moves the chunk in */
        int ret;
        *done = 0;
        ret = m->mover(m->mover_opaque, v->base + off, src, len, done);
        if (ret == 0) {
            *done = len; /* 0 is the whole chunk (snapload.h), whatever *done says */
        }
        return ret;
    }
    return sl_uffd_move(v->uffd, &v->fence, (void *)(uintptr_t)(v->base + off), src, len, done,
                        eagain);
}

/*
 * Zeros into a view that tracks writes: ZEROPAGE cannot map the zero page
 * write-protected, and protecting it afterwards would race a write by
 * another thread (lost from the tracking), so each page is a copy of
 * zeros, mapped write-protected in the same ioctl.
 */
static int zero_tracked(const sl_view *v, uint64_t off, uint64_t len, uint64_t *done,
                        uint64_t *eagain)
{
    static const uint8_t zeros[4096]; /* read-only */
    int ret = 0;

    *done = 0;
    while (*done < len && ret == 0) {
        uint64_t did = 0;
        ret = sl_uffd_copy(v->uffd, &v->fence, (void *)(uintptr_t)(v->base + off + *done), zeros,
                           sizeof(zeros), true, &did, eagain);
        *done += did;
    }
    return ret;
}

/* A present unit's page is missing: the guest discarded it (only a
 * placement maps one), and it comes back as zeros, protected only where
 * they are what the snapshot holds (see show in backend.h). */
static int anon_show(const sl_mem *m, const sl_view *v, uint64_t off, uint64_t len, unsigned how,
                     uint64_t *done, uint64_t *eagain)
{
    if (v->wp && !(how & (SL_SHOW_DATA | SL_SHOW_WRITTEN))) {
        return zero_tracked(v, off, len, done, eagain);
    }
    /* ZEROPAGE has no WP mode: the zero page reads as written */
    return sl_uffd_zero(v->uffd, &v->fence, (void *)(uintptr_t)(v->base + off), len, done, eagain);
}

/* Zeros are what the snapshot holds there: the show of a unit without data. */
static int anon_zero(const sl_mem *m, const sl_view *v, uint64_t off, uint64_t len,
                     uint64_t *done, uint64_t *eagain)
{
    return anon_show(m, v, off, len, 0, done, eagain);
}

/* Our own mapping's pages of @runs go: the next access faults (MISSING). */
static int anon_drop(const sl_mem *m, const sl_range *runs, size_t n)
{
    if (!m->host) {
        return -EOPNOTSUPP; /* another process's memory: not ours to drop */
    }
    return sl_madvise_ranges(m->host, runs, n, MADV_DONTNEED);
}

static void anon_release(sl_mem *m)
{
    munmap(m->host, m->length);
}

const sl_backend_ops sl_backend_anon = {
    .name = "anon",
    .kind = SL_BACKEND_ANON,
    .thp = true,
    .holes = SL_HOLES_NONE,
    .in_place = false,
    .bounce = true,
    .uffd_features = 0,
    .register_mode = UFFDIO_REGISTER_MODE_MISSING,
    .range_ioctls = SL_IOCTL(_UFFDIO_COPY) | SL_IOCTL(_UFFDIO_ZEROPAGE) |
                    SL_IOCTL(_UFFDIO_WAKE),
    .map = anon_map,
    .prepare = anon_prepare,
    .stage = anon_stage,
    .place = anon_place,
    .adopt = anon_adopt,
    .zero = anon_zero,
    .show = anon_show, /* EEXIST if present; a discarded page comes back as zeros */
    .discard = NULL,
    .drop = anon_drop,
    .rewrite = sl_mem_host_rewrite,
    .release = anon_release,
};
