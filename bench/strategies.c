/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapload-peers: the restore strategies snapload is compared with,
 * re-implemented here from their published descriptions so that the
 * benchmark can run them on the same snapshot files and backends.  None of
 * this is those projects' code, and none of it uses snapload's engine (no
 * page map, no MINOR mode, no checksums, no NUMA): it reads pages through
 * the public snapshot reader and places them with plain userfaultfd ioctls.
 *
 *   qemu-missing          MISSING mode only; a fault thread reads the page
 *                         into a bounce buffer and UFFDIO_COPYs it; one
 *                         background thread streams every page in file
 *                         order the same way (QEMU's fast snapshot load).
 *   first-fault-copy-all  MISSING mode; at the first fault the handler
 *                         copies everything in, then the faulting thread
 *                         runs on (the simplest external handler).
 *   eager                 pread every stored page into fresh memory first.
 *   memcpy                the copy limit: memcpy of the stored pages from
 *                         the page cache (the file mapped and pre-faulted)
 *                         into fresh memory, a run of them at a time with
 *                         one pwrite into a shmem file, else populated with
 *                         one MADV_POPULATE_WRITE and copied with memcpy,
 *                         with --threads threads over stripes of at least
 *                         one backend page; not a restore.
 *   memcpy-hash           the floor of one hugepage fault: for each
 *                         --unit-size unit (2M) of the page area, memcpy its
 *                         stored pages from the page cache (the file mapped
 *                         and pre-faulted) into a warm buffer, zeros for the
 *                         others, then XXH3-64 each stored 4 KiB page against
 *                         its checksum, as the engine checks a unit before
 *                         placing it; times each unit (p50/p99/max).  No
 *                         backend memory, no restore (--backend optional).
 *
 * After "ready" one thread touches --touch random backend pages, timing
 * each access and comparing each page with the snapshot.  Prints one JSON
 * object.  Only this file's main() logs.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include "backends/backend.h"
#include "migration/format/format.h"
#include "migration/histogram.h"
#include "migration/uffd.h"
#include "tools/timeline.h"

#define RUN_BYTES (1u << 20) /* background read size for runs of 4 KiB pages */

/* One block: its fresh memory and geometry.  Read-only once mapped. */
typedef struct {
    sl_block_info bi;
    sl_mem mem;
    uint64_t units;            /* backend pages */
    uint64_t per_unit;         /* snapshot pages per backend page */
    _Atomic uint8_t *placed;   /* per unit, a hint to skip work: EEXIST decides */
} peer_block;

/*
 * The whole run.  The main thread owns everything until the handler threads
 * start; then the fault thread owns fault_buf, the background thread bg_buf;
 * `placed` flags are shared (relaxed: a placement is decided by the ioctl,
 * the flag only saves a read).  `failed` is set once by a handler thread
 * (release) and read by the main thread after joining (acquire).
 */
typedef struct {
    sl_snapshot *snap;
    peer_block *b;
    unsigned nb;
    uint64_t unit;             /* the backend page size */
    bool zeropage;             /* UFFDIO_ZEROPAGE usable (not on hugetlbfs) */
    int uffd, efd;
    uint8_t *fault_buf, *bg_buf, *zeros;
    double t0, first_fault_ms;
    uint64_t copy_mode;        /* UFFDIO_COPY/ZEROPAGE mode: DONTWAKE for copy-all-first */
    _Atomic int failed;        /* first -errno of a handler thread */
    _Atomic uint64_t remaining;/* units not yet placed (acq_rel with the placers) */
    _Atomic uint64_t done_ns;  /* when the last unit was placed (release by that placer) */
} peer;

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* UFFDIO_COPY (@src) or UFFDIO_ZEROPAGE (@src NULL) of [@dst, +@len) with
 * p->copy_mode, retried on partial EAGAIN.  0 or -errno (-EEXIST: some
 * page was there already). */
static int fill(peer *p, uint8_t *dst, const uint8_t *src, uint64_t len)
{
    for (uint64_t done = 0; done < len;) {
        int ret;
        int64_t got;
        if (src) {
            struct uffdio_copy c = { .dst = (uintptr_t)(dst + done), .src = (uintptr_t)(src + done),
                                     .len = len - done, .mode = p->copy_mode };
            ret = ioctl(p->uffd, UFFDIO_COPY, &c);
            got = c.copy;
        } else {
            struct uffdio_zeropage z = { .range = { .start = (uintptr_t)(dst + done),
                                                    .len = len - done },
                                         .mode = p->copy_mode ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0 };
            ret = ioctl(p->uffd, UFFDIO_ZEROPAGE, &z);
            got = z.zeropage;
        }
        if (ret == 0) {
            return 0;
        }
        if (errno != EAGAIN) {
            return -errno;
        }
        done += got > 0 ? (uint64_t)got : 0;
    }
    return 0;
}

static bool unit_stored(const peer *p, const peer_block *b, unsigned bi, uint64_t u)
{
    for (uint64_t q = u * b->per_unit; q < (u + 1) * b->per_unit; q++) {
        if (sl_snapshot_page_present(p->snap, bi, q)) {
            return true;
        }
    }
    return false;
}

/* Places units [u, u+n) of block @bi through the uffd, from @buf (a bounce
 * buffer), or as zeros.  Returns 0 or -errno; EEXIST (placed by the other
 * thread) counts as placed, and its range is woken. */
static int place(peer *p, unsigned bi, uint64_t u, uint64_t n, uint8_t *buf)
{
    peer_block *b = &p->b[bi];
    uint8_t *dst = b->mem.host + u * p->unit;
    uint64_t len = n * p->unit, fresh = 0, left;
    bool stored = false;
    int ret;

    for (uint64_t i = 0; i < n && !stored; i++) {
        stored = unit_stored(p, b, bi, u + i);
    }
    if (stored) {
        ret = sl_snapshot_read_pages(p->snap, bi, u * b->per_unit, n * b->per_unit, buf, false);
        ret = ret < 0 ? ret : fill(p, dst, buf, len);
    } else if (p->zeropage) {
        ret = fill(p, dst, NULL, len);
    } else {
        ret = 0;
        for (uint64_t off = 0; ret == 0 && off < len; off += p->unit) {
            ret = fill(p, dst + off, p->zeros, p->unit);
        }
    }
    if (ret == -EEXIST) {
        sl_uffd_wake(p->uffd, dst, len);
        ret = n == 1 ? 0 : -EEXIST;
    }
    for (uint64_t i = 0; i < n && ret == 0; i++) {
        fresh += !atomic_exchange_explicit(&b->placed[u + i], 1, memory_order_relaxed);
    }
    left = atomic_fetch_sub_explicit(&p->remaining, fresh, memory_order_acq_rel) - fresh;
    if (fresh && left == 0) {
        atomic_store_explicit(&p->done_ns, (uint64_t)(now_ms() * 1e6), memory_order_release);
    }
    return ret;
}

/* Places a run unit by unit after a multi-unit EEXIST. */
static int place_each(peer *p, unsigned bi, uint64_t u, uint64_t n, uint8_t *buf)
{
    int ret = 0;

    for (uint64_t i = 0; i < n && ret == 0; i++) {
        if (!atomic_load_explicit(&p->b[bi].placed[u + i], memory_order_relaxed)) {
            ret = place(p, bi, u + i, 1, buf);
        }
    }
    return ret;
}

/* Every unit not yet placed, in file order, in runs of up to RUN_BYTES. */
static int copy_all(peer *p, uint8_t *buf)
{
    uint64_t per_run = MAX(RUN_BYTES / p->unit, 1);

    for (unsigned bi = 0; bi < p->nb; bi++) {
        for (uint64_t u = 0; u < p->b[bi].units; u += per_run) {
            uint64_t n = MIN(per_run, p->b[bi].units - u);
            int ret = place(p, bi, u, n, buf);
            ret = ret == -EEXIST ? place_each(p, bi, u, n, buf) : ret;
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

static void fail(peer *p, int err)
{
    int zero = 0;

    atomic_compare_exchange_strong_explicit(&p->failed, &zero, err, memory_order_release,
                                            memory_order_relaxed);
}

/* Finds the block and unit of a faulting address; false if none. */
static bool locate(const peer *p, uint64_t addr, unsigned *bi, uint64_t *u)
{
    for (unsigned i = 0; i < p->nb; i++) {
        uint64_t base = (uint64_t)(uintptr_t)p->b[i].mem.host;
        if (addr >= base && addr < base + p->b[i].bi.length) {
            *bi = i;
            *u = (addr - base) / p->unit;
            return true;
        }
    }
    return false;
}

typedef struct {
    peer *p;
    bool copy_all_first;       /* first-fault-copy-all */
} fault_args;

static int serve_fault(peer *p, const struct uffd_msg *m, bool *all_done, bool copy_all_first)
{
    unsigned bi;
    uint64_t u;

    if (m->event != UFFD_EVENT_PAGEFAULT || !locate(p, m->arg.pagefault.address, &bi, &u)) {
        return 0;
    }
    if (p->first_fault_ms < 0) {
        p->first_fault_ms = now_ms() - p->t0;
    }
    if (copy_all_first && !*all_done) {
        int ret;
        *all_done = true;
        ret = copy_all(p, p->fault_buf); /* DONTWAKE: nobody runs before the end */
        for (unsigned i = 0; i < p->nb; i++) {
            sl_uffd_wake(p->uffd, p->b[i].mem.host, p->b[i].bi.length);
        }
        p->copy_mode = 0;
        return ret;
    }
    if (atomic_load_explicit(&p->b[bi].placed[u], memory_order_relaxed)) {
        return sl_uffd_wake(p->uffd, p->b[bi].mem.host + u * p->unit, p->unit);
    }
    return place(p, bi, u, 1, p->fault_buf);
}

/* The fault thread: polls {uffd, eventfd} until the eventfd says stop. */
static gpointer fault_thread(gpointer opaque)
{
    fault_args *a = opaque;
    peer *p = a->p;
    struct pollfd fds[2] = { { .fd = p->uffd, .events = POLLIN }, { .fd = p->efd, .events = POLLIN } };
    bool all_done = false;

    for (;;) {
        struct uffd_msg m;
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            fail(p, -errno);
            return NULL;
        }
        if (fds[1].revents) {
            return NULL;
        }
        if (read(p->uffd, &m, sizeof(m)) != sizeof(m)) {
            continue; /* EAGAIN: another wake-up consumed it */
        }
        int ret = serve_fault(p, &m, &all_done, a->copy_all_first);
        if (ret < 0) {
            fail(p, ret);
        }
    }
}

static gpointer background_thread(gpointer opaque)
{
    peer *p = opaque;
    int ret = copy_all(p, p->bg_buf);

    if (ret < 0) {
        fail(p, ret);
    }
    return NULL;
}

/* ------------------------------ setup ------------------------------------ */

static bool map_all(peer *p, sl_backend_kind kind, uint64_t hugepage, GError **errp)
{
    p->nb = sl_snapshot_n_blocks(p->snap);
    p->b = g_new0(peer_block, p->nb);
    for (unsigned i = 0; i < p->nb; i++) {
        peer_block *b = &p->b[i];
        sl_snapshot_block(p->snap, i, &b->bi);
        if (!sl_mem_map(&b->mem, kind, b->bi.length, hugepage, errp)) {
            return false;
        }
        p->unit = b->mem.page_size;
        b->units = b->bi.length / p->unit;
        b->per_unit = p->unit / b->bi.page_size;
        b->placed = g_new0(_Atomic uint8_t, b->units);
        atomic_fetch_add_explicit(&p->remaining, b->units, memory_order_relaxed);
    }
    return true;
}

static bool register_all(peer *p, sl_backend_kind kind, GError **errp)
{
    uint64_t got = 0, need = SL_IOCTL(_UFFDIO_COPY) | SL_IOCTL(_UFFDIO_WAKE);
    uint64_t feat = kind == SL_BACKEND_SHMEM ? UFFD_FEATURE_MISSING_SHMEM
                    : kind == SL_BACKEND_HUGETLBFS ? UFFD_FEATURE_MISSING_HUGETLBFS : 0;

    p->zeropage = kind != SL_BACKEND_HUGETLBFS;
    need |= p->zeropage ? SL_IOCTL(_UFFDIO_ZEROPAGE) : 0;
    p->uffd = sl_uffd_open(feat, 0, &got, errp);
    if (p->uffd < 0) {
        return false;
    }
    for (unsigned i = 0; i < p->nb; i++) {
        if (!sl_uffd_register(p->uffd, p->b[i].mem.host, p->b[i].bi.length,
                              UFFDIO_REGISTER_MODE_MISSING, need, &got, errp)) {
            return false;
        }
    }
    p->efd = eventfd(0, EFD_CLOEXEC);
    return p->efd >= 0;
}

/* ---------------------------- strategies --------------------------------- */

/* Loads every stored page straight into the memory (no uffd). */
static int eager_load(peer *p)
{
    for (unsigned i = 0; i < p->nb; i++) {
        peer_block *b = &p->b[i];
        for (uint64_t q = 0; q < b->bi.pages;) {
            uint64_t n = 0;
            while (q + n < b->bi.pages && n < RUN_BYTES / b->bi.page_size &&
                   sl_snapshot_page_present(p->snap, i, q + n)) {
                n++;
            }
            int ret = n ? sl_snapshot_read_pages(p->snap, i, q, n,
                                                 b->mem.host + q * b->bi.page_size, false)
                        : 0;
            if (ret < 0) {
                return ret;
            }
            q += n ? n : 1;
        }
    }
    return 0;
}

typedef struct {
    peer *p;
    const uint8_t *file;
    unsigned id, n;
} copier;

/*
 * Copies pages [q0, end) of block @i that the snapshot stores, a run at a
 * time, the fastest way the backend allows: into a memory file that takes
 * write() (shmem) with one pwrite (no page faults, no page tables); else
 * (anon, hugetlbfs) populated first with one MADV_POPULATE_WRITE (its
 * pages allocated in a batch, not by one user fault per 4 KiB page), then
 * copied with one memcpy.
 */
static void copy_runs(copier *c, unsigned i, uint64_t q0, uint64_t end)
{
    peer_block *b = &c->p->b[i];
    const uint64_t ps = b->bi.page_size;
    const bool pwrite_ok = b->mem.fd >= 0 && c->p->unit == 4096; /* shmem, not hugetlbfs */

    for (uint64_t q = q0, j; q < end; q = j) {
        bool stored = sl_snapshot_page_present(c->p->snap, i, q);
        const uint8_t *src = c->file + b->bi.pages_offset + q * ps;
        for (j = q + 1; j < end && sl_snapshot_page_present(c->p->snap, i, j) == stored; j++) {
        }
        if (!stored || (pwrite_ok && sl_pwrite_full(b->mem.fd, src, (j - q) * ps,
                                                      b->mem.offset + q * ps) == 0)) {
            continue;
        }
        (void)madvise(b->mem.host + q * ps, (j - q) * ps, MADV_POPULATE_WRITE);
        memcpy(b->mem.host + q * ps, src, (j - q) * ps);
    }
}

/*
 * Copies the stored pages of every n-th stripe, starting at stripe id.  A
 * stripe is 1 MiB or the backend's page, whichever is larger, so that no
 * two threads share (and wait on each other's allocation of) one hugepage.
 */
static gpointer copy_stripes(gpointer opaque)
{
    copier *c = opaque;
    peer *p = c->p;

    for (unsigned i = 0; i < p->nb; i++) {
        peer_block *b = &p->b[i];
        uint64_t per = MAX(RUN_BYTES, p->unit) / b->bi.page_size;
        for (uint64_t q0 = (uint64_t)c->id * per; q0 < b->bi.pages; q0 += (uint64_t)c->n * per) {
            copy_runs(c, i, q0, MIN(q0 + per, b->bi.pages));
        }
    }
    return NULL;
}

/* memcpy of the stored pages from the pre-faulted file mapping, with
 * @threads threads over interleaved 1 MiB stripes. */
static int memcpy_load(peer *p, const char *path, unsigned threads, double *copy_ms)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint64_t size = sl_snapshot_file_size(p->snap);
    uint8_t *file = fd < 0 ? MAP_FAILED
                           : mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    double t;

    if (fd >= 0) {
        close(fd);
    }
    if (file == MAP_FAILED) {
        return -errno;
    }
    t = now_ms();
    {
        g_autofree copier *c = g_new0(copier, threads);
        g_autofree GThread **th = g_new0(GThread *, threads);
        for (unsigned i = 0; i < threads; i++) {
            c[i] = (copier){ .p = p, .file = file, .id = i, .n = threads };
            th[i] = g_thread_new("memcpy", copy_stripes, &c[i]);
        }
        for (unsigned i = 0; i < threads; i++) {
            g_thread_join(th[i]);
        }
    }
    *copy_ms = now_ms() - t;
    munmap(file, size);
    return 0;
}

/* ------------------------------ touching --------------------------------- */

typedef struct {
    sl_histogram lat;
    uint64_t touches, mismatches;
    double first_ms;           /* the first touch's wait */
} touch_result;

static uint64_t touch_random(peer *p, uint64_t n, uint32_t seed, touch_result *t)
{
    g_autoptr(GRand) rng = g_rand_new_with_seed(seed);
    g_autofree uint8_t *want = g_malloc(p->b[0].bi.page_size);
    uint64_t total = 0;

    for (unsigned i = 0; i < p->nb; i++) {
        total += p->b[i].bi.pages;
    }
    for (uint64_t k = 0; k < n; k++) {
        uint64_t g = ((uint64_t)g_rand_int(rng) << 32 | g_rand_int(rng)) % total;
        unsigned bi = 0;
        while (g >= p->b[bi].bi.pages) {
            g -= p->b[bi++].bi.pages;
        }
        volatile uint8_t *addr = p->b[bi].mem.host + g * p->b[bi].bi.page_size;
        double t0 = now_ms();
        (void)*addr;
        double d = now_ms() - t0;
        sl_hist_record(&t->lat, (uint64_t)(d * 1e6));
        t->first_ms = k == 0 ? d : t->first_ms;
        if (sl_snapshot_read_pages(p->snap, bi, g, 1, want, false) < 0 ||
            memcmp(want, (const uint8_t *)addr, p->b[bi].bi.page_size)) {
            t->mismatches++;
        }
        t->touches++;
    }
    return t->touches;
}

static uint64_t verify_all(peer *p)
{
    g_autofree uint8_t *want = g_malloc(RUN_BYTES);
    uint64_t bad = 0;

    for (unsigned i = 0; i < p->nb; i++) {
        peer_block *b = &p->b[i];
        uint64_t per = RUN_BYTES / b->bi.page_size;
        for (uint64_t q = 0; q < b->bi.pages; q += per) {
            uint64_t n = MIN(per, b->bi.pages - q);
            if (sl_snapshot_read_pages(p->snap, i, q, n, want, false) < 0) {
                return UINT64_MAX;
            }
            for (uint64_t k = 0; k < n; k++) {
                bad += memcmp(want + k * b->bi.page_size,
                              b->mem.host + (q + k) * b->bi.page_size, b->bi.page_size) != 0;
            }
        }
    }
    return bad;
}

/* -------------------------------- main ----------------------------------- */

typedef struct {
    char *strategy, *path;      /* owned: freed by main() */
    sl_backend_kind kind;
    uint64_t hugepage;
    gint64 touches;
    gint seed, threads;
    gboolean verify;
    uint64_t unit_size;         /* memcpy-hash: bytes per timed unit */
    gint64 units;               /* memcpy-hash: units timed (0: all) */
} peer_opts;

/* ----------------------------- memcpy-hash -------------------------------- */

/*
 * memcpy-hash: what one hugepage fault has to do at the least, without the
 * userfaultfd and the hugetlbfs page: copy the unit's stored pages out of
 * the page cache (a pre-faulted mapping of the snapshot, so no read(2) and
 * no page fault on the source), zeros for its zero pages, into a buffer
 * touched beforehand (no fault on the destination), then hash every stored
 * page and compare with its checksum.  @o->units units spread evenly over
 * the blocks (all of them when 0).  Prints one JSON object; 0 or -1.
 */
static int memcpy_hash(sl_snapshot *snap, const peer_opts *o, GError **errp)
{
    int fd = open(o->path, O_RDONLY | O_CLOEXEC);
    uint64_t size = sl_snapshot_file_size(snap), total = 0, done = 0, mism = 0, bytes = 0;
    uint8_t *file = fd < 0 ? MAP_FAILED
                           : mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    unsigned nb = sl_snapshot_n_blocks(snap);
    sl_histogram lat;
    uint8_t *buf = NULL;
    uint64_t step;
    double t_all;

    if (fd >= 0) {
        close(fd);
    }
    if (file == MAP_FAILED) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", o->path, g_strerror(errno));
        return -1;
    }
    memset(&lat, 0, sizeof(lat));
    for (unsigned i = 0; i < nb; i++) {
        sl_block_info bi;
        sl_snapshot_block(snap, i, &bi);
        if (o->unit_size < bi.page_size || o->unit_size % bi.page_size ||
            bi.length % o->unit_size) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--unit-size %" G_GUINT64_FORMAT
                        " does not divide block '%s' in whole pages", o->unit_size, bi.name);
            munmap(file, size);
            return -1;
        }
        total += bi.length / o->unit_size;
    }
    step = o->units > 0 && (uint64_t)o->units < total ? total / (uint64_t)o->units : 1;
    if (posix_memalign((void **)&buf, 4096, o->unit_size)) {
        munmap(file, size);
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "no memory for a %" G_GUINT64_FORMAT
                    "-byte buffer", o->unit_size);
        return -1;
    }
    memset(buf, 1, o->unit_size); /* warm: no page fault inside the timed copy */
    t_all = now_ms();
    for (uint64_t g = 0, gi = 0; gi < nb; gi++) {
        sl_block_info bi;
        sl_snapshot_block(snap, (unsigned)gi, &bi);
        const uint64_t ps = bi.page_size, per = o->unit_size / ps;
        for (uint64_t u = 0; u < bi.length / o->unit_size; u++, g++) {
            if (g % step || (o->units > 0 && done >= (uint64_t)o->units)) {
                continue;
            }
            double t0 = now_ms();
            for (uint64_t k = 0; k < per; k++) {
                uint64_t q = u * per + k;
                if (sl_snapshot_page_present(snap, (unsigned)gi, q)) {
                    memcpy(buf + k * ps, file + bi.pages_offset + q * ps, ps);
                } else {
                    memset(buf + k * ps, 0, ps);
                }
            }
            for (uint64_t k = 0; k < per; k++) {
                uint64_t q = u * per + k;
                if (sl_snapshot_page_present(snap, (unsigned)gi, q)) {
                    mism += sl_hash(buf + k * ps, ps) !=
                            sl_snapshot_page_checksum(snap, (unsigned)gi, q);
                    bytes += ps;
                }
            }
            sl_hist_record(&lat, (uint64_t)((now_ms() - t0) * 1e6));
            done++;
        }
    }
    t_all = now_ms() - t_all;
    munmap(file, size);
    free(buf);
    printf("{\"strategy\": \"memcpy-hash\", \"models\": \"the floor of a hugepage fault: memcpy "
           "of a unit's stored pages from the page cache into a warm buffer, then XXH3-64 of "
           "each against its checksum\", \"unit_bytes\": %" G_GUINT64_FORMAT ", \"units\": %"
           G_GUINT64_FORMAT ", \"present_bytes\": %" G_GUINT64_FORMAT ", \"checksums\": %s, "
           "\"mismatches\": %" G_GUINT64_FORMAT ", \"unit_p50_us\": %.1f, \"unit_p99_us\": "
           "%.1f, \"unit_max_us\": %.1f, \"total_ms\": %.3f, \"throughput_mb_s\": %.1f}\n",
           o->unit_size, done, bytes, sl_snapshot_has_checksums(snap) ? "true" : "false", mism,
           sl_hist_percentile(&lat, 50) / 1e3, sl_hist_percentile(&lat, 99) / 1e3,
           sl_hist_max(&lat) / 1e3, t_all, (double)bytes / 1048576.0 / (MAX(t_all, 1e-3) / 1e3));
    /* Without checksums every page "mismatches" 0: only a real file's count. */
    return sl_snapshot_has_checksums(snap) && mism ? -1 : 0;
}

typedef struct {
    double ready_ms, complete_ms, fill_ms;
    touch_result t;
    uint64_t verify_bad;
    bool verified;
} peer_result;

/* Runs a uffd strategy: handler threads, the touches, the wait for the end. */
static int run_lazy(peer *p, const peer_opts *o, peer_result *r, GError **errp)
{
    fault_args fa = { .p = p, .copy_all_first = !strcmp(o->strategy, "first-fault-copy-all") };
    uint64_t buf = MAX(RUN_BYTES, p->unit);
    GThread *ft, *bg = NULL;
    uint64_t one = 1;

    if (!register_all(p, o->kind, errp)) {
        return -1;
    }
    /* Bounce buffers: a run of 4 KiB pages, or one whole hugepage. */
    p->fault_buf = g_malloc(buf);
    p->bg_buf = fa.copy_all_first ? NULL : g_malloc(buf);
    p->zeros = p->zeropage ? NULL : g_malloc0(p->unit);
    p->copy_mode = fa.copy_all_first ? UFFDIO_COPY_MODE_DONTWAKE : 0;
    ft = g_thread_new("fault", fault_thread, &fa);
    if (!fa.copy_all_first) {
        bg = g_thread_new("background", background_thread, p);
    }
    r->ready_ms = now_ms() - p->t0;
    touch_random(p, (uint64_t)o->touches, (uint32_t)o->seed, &r->t);
    if (bg) {
        g_thread_join(bg);
    }
    r->complete_ms = (double)atomic_load_explicit(&p->done_ns, memory_order_acquire) / 1e6 - p->t0;
    r->fill_ms = r->complete_ms - r->ready_ms;
    if (write(p->efd, &one, sizeof(one)) != sizeof(one)) {
        return -1;
    }
    g_thread_join(ft);
    if (atomic_load_explicit(&p->remaining, memory_order_acquire) != 0 && !p->failed) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %" G_GUINT64_FORMAT " pages never placed",
                    o->strategy, (uint64_t)p->remaining);
        return -1;
    }
    return atomic_load_explicit(&p->failed, memory_order_acquire);
}

static int run_strategy(peer *p, const peer_opts *o, peer_result *r, GError **errp)
{
    double copy_ms = 0;
    int ret;

    if (!strcmp(o->strategy, "qemu-missing") || !strcmp(o->strategy, "first-fault-copy-all")) {
        ret = run_lazy(p, o, r, errp);
    } else if (!strcmp(o->strategy, "eager") || !strcmp(o->strategy, "memcpy")) {
        ret = !strcmp(o->strategy, "eager") ? eager_load(p)
                                             : memcpy_load(p, o->path, (unsigned)o->threads, &copy_ms);
        r->ready_ms = r->complete_ms = now_ms() - p->t0;
        r->fill_ms = copy_ms ? copy_ms : r->complete_ms;
        touch_random(p, (uint64_t)o->touches, (uint32_t)o->seed, &r->t);
    } else {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "unknown strategy '%s' (qemu-missing, "
                    "first-fault-copy-all, eager, memcpy)", o->strategy);
        return -1;
    }
    if (ret > 0 || (ret < 0 && errp && !*errp)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "%s: %s", o->strategy, g_strerror(-ret));
    }
    return ret;
}

static const char *models(const char *s)
{
    return !strcmp(s, "qemu-missing") ? "QEMU fast snapshot load: MISSING mode, bounce buffer, "
                                        "one background thread (re-implementation)"
           : !strcmp(s, "first-fault-copy-all") ? "simplest external uffd handler: copy "
                                                  "everything at the first fault (re-implementation)"
           : !strcmp(s, "eager") ? "eager load: everything before the guest runs"
                                 : "memcpy from page cache: the copy limit";
}

static void print_json(const peer *p, const peer_opts *o, const peer_result *r)
{
    uint64_t bytes = 0, stored = 0;
    char vbad[32] = "null";

    if (r->verified) {
        g_snprintf(vbad, sizeof(vbad), "%" G_GUINT64_FORMAT, r->verify_bad);
    }
    for (unsigned i = 0; i < p->nb; i++) {
        bytes += p->b[i].bi.length;
        stored += p->b[i].bi.present_pages * p->b[i].bi.page_size;
    }
    printf("{\"strategy\": \"%s\", \"models\": \"%s\", \"backend\": \"%s\", \"hugepage_size\": %"
           G_GUINT64_FORMAT ", \"bytes\": %" G_GUINT64_FORMAT ", \"present_bytes\": %"
           G_GUINT64_FORMAT ", \"time_to_ready_ms\": %.3f, \"time_to_first_touch_served_ms\": "
           "%.3f, \"time_to_complete_ms\": %.3f, \"touch_p50_us\": %.1f, \"touch_p99_us\": %.1f, "
           "\"touch_max_us\": %.1f, \"touches\": %" G_GUINT64_FORMAT ", \"touch_mismatches\": %"
           G_GUINT64_FORMAT ", \"verify_mismatches\": %s, \"throughput_mb_s\": %.1f, "
           "\"rss_anon_kb\": %" G_GUINT64_FORMAT ", \"vm_hwm_kb\": %" G_GUINT64_FORMAT "}\n",
           o->strategy, models(o->strategy), sl_backend_get(o->kind)->name,
           o->kind == SL_BACKEND_HUGETLBFS ? p->unit : 0, bytes, stored, r->ready_ms,
           r->t.first_ms, r->complete_ms, sl_hist_percentile(&r->t.lat, 50) / 1e3,
           sl_hist_percentile(&r->t.lat, 99) / 1e3, sl_hist_max(&r->t.lat) / 1e3, r->t.touches,
           r->t.mismatches,
           vbad,
           (double)stored / 1048576.0 / (MAX(r->fill_ms, 1e-3) / 1e3),
           sl_proc_status_kb("RssAnon"), sl_proc_status_kb("VmHWM"));
}

static void peer_free(peer *p)
{
    for (unsigned i = 0; p->b && i < p->nb; i++) {
        sl_mem_release(&p->b[i].mem);
        g_free((void *)p->b[i].placed);
    }
    g_free(p->b);
    g_free(p->fault_buf);
    g_free(p->bg_buf);
    g_free(p->zeros);
    if (p->uffd > 0) {
        close(p->uffd);
    }
    if (p->efd > 0) {
        close(p->efd);
    }
    sl_snapshot_close(p->snap);
}

static bool parse(int argc, char **argv, peer_opts *o, GError **errp)
{
    g_autofree char *backend = NULL, *hps = NULL, *units = NULL;
    GOptionEntry entries[] = {
        { "backend", 0, 0, G_OPTION_ARG_STRING, &backend, "anon|shmem|hugetlbfs", "KIND" },
        { "hugepage-size", 0, 0, G_OPTION_ARG_STRING, &hps, "2M|1G (hugetlbfs)", "SIZE" },
        { "touch", 0, 0, G_OPTION_ARG_INT64, &o->touches, "random pages touched (default 2000)", "N" },
        { "seed", 0, 0, G_OPTION_ARG_INT, &o->seed, "seed of the touches", "S" },
        { "verify", 0, 0, G_OPTION_ARG_NONE, &o->verify, "compare every byte at the end", NULL },
        { "threads", 0, 0, G_OPTION_ARG_INT, &o->threads, "memcpy: copying threads (default 1)", "N" },
        { "unit-size", 0, 0, G_OPTION_ARG_STRING, &units, "memcpy-hash: bytes per timed unit (default 2M)", "SIZE" },
        { "units", 0, 0, G_OPTION_ARG_INT64, &o->units, "memcpy-hash: units timed, spread evenly (default 0: all)", "N" },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("STRATEGY SNAP - restore strategies of "
                                                         "other projects, for comparison");

    o->touches = 2000;
    o->seed = 1;
    o->threads = 1;
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, errp)) {
        return false;
    }
    bool no_mem = argc == 3 && !strcmp(argv[1], "memcpy-hash"); /* needs no backend */
    if (argc != 3 || (!backend && !no_mem) ||
        (backend && !sl_backend_by_name(backend, &o->kind))) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "usage: snapload-peers STRATEGY SNAP "
                    "--backend anon|shmem|hugetlbfs [--hugepage-size 2M|1G] [--touch N] "
                    "[--seed S] [--verify] [--threads N]; snapload-peers memcpy-hash SNAP "
                    "[--unit-size 2M] [--units N]");
        return false;
    }
    o->unit_size = 2u << 20;
    if (units) {
        o->unit_size = !strcmp(units, "4K") ? 4096u : !strcmp(units, "2M") ? 2u << 20
                       : !strcmp(units, "1G") ? 1u << 30 : 0;
        if (!o->unit_size) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--unit-size: 4K, 2M or 1G, not %s",
                        units);
            return false;
        }
    }
    if (o->units < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--units: 0 (all) or more");
        return false;
    }
    if (o->threads < 1 || o->threads > 256) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--threads: 1 to 256");
        return false;
    }
    o->strategy = g_strdup(argv[1]);
    o->path = g_strdup(argv[2]);
    o->hugepage = !hps ? 0 : !strcmp(hps, "2M") ? 2u << 20 : !strcmp(hps, "1G") ? 1u << 30 : 1;
    if (o->hugepage == 1) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--hugepage-size: 2M or 1G, not %s", hps);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    peer_opts o = { 0 };
    peer_result r = { 0 };
    peer p = { .uffd = -1, .efd = -1, .first_fault_ms = -1 };
    int ret = -1;

    /* Times count from here, like `snapload restore`'s: open, map and
     * register are part of the time to ready. */
    p.t0 = now_ms();
    if (parse(argc, argv, &o, &err) && (p.snap = sl_snapshot_open(o.path, &err)) &&
        !strcmp(o.strategy, "memcpy-hash")) {
        ret = memcpy_hash(p.snap, &o, &err);
        if (ret < 0 && !err) {
            fprintf(stderr, "snapload-peers: memcpy-hash: pages differ from their checksums\n");
        }
        if (ret < 0 && err) {
            fprintf(stderr, "snapload-peers: %s\n", err->message);
        }
        peer_free(&p);
        g_free(o.strategy);
        g_free(o.path);
        return ret == 0 ? 0 : 1;
    }
    if (p.snap && map_all(&p, o.kind, o.hugepage, &err)) {
        ret = run_strategy(&p, &o, &r, &err);
    }
    if (ret == 0 && o.verify) {
        r.verify_bad = verify_all(&p);
        r.verified = true;
    }
    if (ret == 0) {
        print_json(&p, &o, &r);
    } else {
        fprintf(stderr, "snapload-peers: %s\n", err ? err->message : "failed");
    }
    peer_free(&p);
    g_free(o.strategy);
    g_free(o.path);
    return ret == 0 && r.t.mismatches == 0 && (!r.verified || r.verify_bad == 0) ? 0 : 1;
}
