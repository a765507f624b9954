/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapload public API.
 *
 * A VMM (or any program that owns guest RAM) uses this header to open a
 * snapshot file, attach the memory that must receive each RAM block, start a
 * lazy restore and follow it to completion.  The restore serves page faults
 * on the attached memory through userfaultfd while background loaders stream
 * every remaining page, so the caller may run its vCPUs as soon as
 * sl_restore_start() has returned.
 *
 * The same header describes the snapshot writer used by `snapload save`.
 *
 * Conventions: setup and parsing functions return bool and fill a GError;
 * functions on the fault path return 0 or a negative errno.  Every handle is
 * opaque.  Exported symbols are versioned (SNAPLOAD_1.0, see snapload.map).
 * Since 1.10 a NULL handle or required pointer is refused, not followed:
 * SL_ERROR_INVALID naming the argument, -EINVAL, or the getter's "none"
 * value (0, false, -1, NULL); the *_close, *_free and *_stop functions
 * accept NULL.
 *
 * Memory attached as anonymous must be private anonymous memory (checked
 * at start); memory attached as a file's mapping must map that file at the
 * offset given (checked at attach, since 1.10).
 *
 * Forks: the kernel does not carry a userfaultfd registration into a
 * child, which would read the holes of memory still being filled as zeros.
 * So, since 1.10, a restore marks its own memory MADV_DONTFORK from
 * sl_restore_start() until every page is placed (a child forked meanwhile
 * has no mapping there: a touch is a SIGSEGV, never a wrong byte), then
 * gives it back to forks; parts the caller had marked MADV_DONTFORK itself
 * stay marked.  With config.track_writes the marking lasts until
 * sl_restore_stop() (a reset makes pages missing again).  Memory of a
 * restore that failed or was stopped early stays out of children (a later
 * restore over it takes that marking for the caller's), and so does all
 * of it where /proc/self/smaps cannot be read.  Other processes' views are
 * their own to protect.
 */
#ifndef SNAPLOAD_SNAPLOAD_H
#define SNAPLOAD_SNAPLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

/** Error domain of every GError raised by snapload. */
#define SL_ERROR (sl_error_quark())
GQuark sl_error_quark(void);

/** Error codes within SL_ERROR. */
typedef enum {
    SL_ERROR_IO,          /**< a system call failed (message names it)  */
    SL_ERROR_FORMAT,      /**< the snapshot file is invalid or truncated */
    SL_ERROR_CHECKSUM,    /**< stored data does not match its checksum   */
    SL_ERROR_INVALID,     /**< the caller passed an invalid argument     */
    SL_ERROR_UNSUPPORTED, /**< the kernel or host lacks a capability     */
    SL_ERROR_STATE,       /**< call not allowed in the handle's state    */
} SlErrorCode;

/* ------------------------------------------------------------------ */
/* Snapshot reader                                                    */
/* ------------------------------------------------------------------ */

typedef struct sl_snapshot sl_snapshot;

/** What kind of file a snapshot is.  Since 1.2. */
typedef enum {
    SL_FORMAT_SNAPLOAD = 0, /**< snapload's container (docs/format.md) */
    SL_FORMAT_QEMU = 1,     /**< QEMU's migration stream with mapped-ram (QEMU >= 9.0) */
} sl_snapshot_format;

/** Section types of the snapshot container (see docs/format.md). */
enum {
    SL_SECTION_DEVICE_STATE = 1, /**< opaque bytes saved by the VMM       */
    SL_SECTION_HOT_PAGES    = 2, /**< ordered list of hot pages, prefetched first */
    SL_SECTION_PARENT       = 4, /**< a child's parent: its identity and path (since 1.5) */
};

/** Bytes of a snapshot's content identity (sl_snapshot_identity()).  Since 1.5. */
#define SL_IDENTITY_LEN 16

/** What the reader knows of one RAM block. Strings live as long as the snapshot. */
typedef struct {
    const char *name;        /**< block name (e.g. "pc.ram")                 */
    uint64_t length;         /**< bytes of guest RAM                         */
    uint64_t page_size;      /**< granularity of the bitmap and of page data */
    int numa_node;           /**< host node hint, -1 if none                 */
    uint64_t pages;          /**< length / page_size                         */
    uint64_t present_pages;  /**< pages stored in the file (the rest are 0); for a
                                  child, in the file or an ancestor's          */
    uint64_t pages_offset;   /**< file offset of page 0 (a child: in its own file) */
} sl_block_info;

/**
 * sl_snapshot_open:
 * Open and fully validate a snapshot: header, tables, every block's
 * mapped-ram header, bitmap and checksum array.  Page data is not read.
 * Returns NULL with @errp set (naming the bad field and value) on error.
 */
sl_snapshot *sl_snapshot_open(const char *path, GError **errp);

/** Flags of sl_snapshot_open_flags(). */
enum {
    /**
     * Do not read the per-page checksum array at open (8 bytes per page:
     * 8 MiB for 4 GiB of guest RAM): each segment of 8192 pages is read
     * when a page of it is first used, and proven then, bitmap words and
     * checksum entries together, against its digest (checked at open), so
     * opening takes as long for 64 GiB as for 1 GiB.  Until its segment is
     * proven, no page is placed, zero pages included; a segment that does
     * not match fails the restore with the block and pages it covers.
     * sl_snapshot_page_present() reports the bitmap as stored.  Everything
     * else is validated at open as without the flag.  Little-endian hosts;
     * elsewhere the flag is ignored.
     */
    SL_OPEN_LAZY_CHECKSUMS = 1u << 0,
};

/** sl_snapshot_open_flags: sl_snapshot_open() with SL_OPEN_* @flags.  Since 1.1. */
sl_snapshot *sl_snapshot_open_flags(const char *path, unsigned flags, GError **errp);

/** sl_snapshot_get_format: what kind of file @snap is.  Since 1.2. */
sl_snapshot_format sl_snapshot_get_format(const sl_snapshot *snap);

/**
 * sl_snapshot_has_checksums: whether every page has a checksum and every
 * bitmap bit is proven (our container always; QEMU's file only with a
 * matching sidecar index).  Without, a restore places pages unchecked, as
 * QEMU itself would.  Since 1.2.
 */
bool sl_snapshot_has_checksums(const sl_snapshot *snap);

/**
 * sl_snapshot_close: release a snapshot opened by sl_snapshot_open(). NULL is
 * ok.  A restore made from @snap keeps its own reference: closing the
 * snapshot while the restore runs is allowed, and its file stays open until
 * the last such restore is freed (since 1.10).
 */
void sl_snapshot_close(sl_snapshot *snap);

/** sl_snapshot_n_blocks: number of RAM blocks. */
unsigned sl_snapshot_n_blocks(const sl_snapshot *snap);

/** sl_snapshot_block: fill @out for block @index; false if out of range. */
bool sl_snapshot_block(const sl_snapshot *snap, unsigned index, sl_block_info *out);

/**
 * sl_snapshot_block_in_file: whether block @index has its pages in the
 * file (false for a block QEMU's x-ignore-shared left in its shared memory,
 * which a restore cannot place, or out of range).  Since 1.2.
 */
bool sl_snapshot_block_in_file(const sl_snapshot *snap, unsigned index);

/** sl_snapshot_find_block: index of the block called @name, or -1. */
int sl_snapshot_find_block(const sl_snapshot *snap, const char *name);

/** sl_snapshot_file_size: size of the snapshot file in bytes. */
uint64_t sl_snapshot_file_size(const sl_snapshot *snap);

/** sl_snapshot_n_sections: number of entries in the section table. */
unsigned sl_snapshot_n_sections(const sl_snapshot *snap);

/** sl_snapshot_section: type and length of section @index; false if out of range. */
bool sl_snapshot_section(const sl_snapshot *snap, unsigned index,
                         uint32_t *type, uint64_t *length);

/**
 * sl_snapshot_read_section:
 * Read and checksum-verify the first section of @type.  Returns NULL with
 * @errp set when absent, unreadable or corrupt.
 */
GBytes *sl_snapshot_read_section(sl_snapshot *snap, uint32_t type, GError **errp);

/**
 * sl_snapshot_page_present: whether page @index of block @block is stored,
 * as the bitmap says (with SL_OPEN_LAZY_CHECKSUMS: as stored, proven only
 * once a verified read or a restore used its segment).  Out-of-range
 * arguments return false.
 */
bool sl_snapshot_page_present(const sl_snapshot *snap, unsigned block, uint64_t index);

/**
 * sl_snapshot_page_checksum: the stored XXH3-64 of a present page (0 for a
 * zero page, and for every page of a snapshot without checksums).
 */
uint64_t sl_snapshot_page_checksum(const sl_snapshot *snap, unsigned block, uint64_t index);

/**
 * sl_snapshot_page_matches: whether the @page_size bytes at @data are page
 * @index of @block: against its checksum (the bit proven first) where the
 * snapshot has checksums, else against the file's bytes.  Since 1.2.
 */
bool sl_snapshot_page_matches(sl_snapshot *snap, unsigned block, uint64_t index,
                              const void *data);

/**
 * sl_snapshot_read_pages:
 * Read @n pages starting at @first of @block into @buf (n * page_size bytes):
 * stored pages from the file, zero pages as zeros.  With @verify, the
 * bitmap bits of the range are proven first (a lazily opened snapshot
 * proves their metadata segments now) and every stored page is checked
 * against its checksum.  Returns 0, -EIO on a short read or -EBADMSG on a
 * checksum mismatch or corrupt metadata, -ENODATA for @verify on a
 * snapshot without checksums (sl_snapshot_has_checksums()), -EREMOTE for
 * a block whose pages are not in the file (sl_snapshot_block_in_file():
 * QEMU's x-ignore-shared left them in the guest's shared memory; since
 * 1.16, before which they read as zeros), or another -errno.
 */
int sl_snapshot_read_pages(sl_snapshot *snap, unsigned block, uint64_t first,
                           uint64_t n, void *buf, bool verify);

/* ------------------------------------------------------------------ */
/* Incremental snapshots (since 1.5)                                  */
/* ------------------------------------------------------------------ */

/*
 * A child snapshot stores only the pages that changed since its parent and
 * names the parent by content identity and path (SL_SECTION_PARENT).
 * sl_snapshot_open() of a child opens its whole chain (a relative parent
 * path is taken from the child's directory), refuses a parent whose
 * content differs from the one the child was made from, and presents one
 * merged snapshot: every page comes from the newest snapshot of the chain
 * that stores it, a page none stores is zero.  docs/format.md.
 */

/**
 * sl_snapshot_identity:
 * Copy @snap's content identity into @out: 128 bits computed at open from
 * metadata that proves every page (block names, lengths, page sizes, the
 * segment digests over bitmaps and page checksums) and, for a child, its
 * parent's identity; never from the path or times, and without reading
 * page data.  Fails (SL_ERROR_UNSUPPORTED) for a snapshot without
 * checksums (a QEMU file without its sidecar index), which therefore
 * cannot be a parent.
 */
bool sl_snapshot_identity(const sl_snapshot *snap, uint8_t out[SL_IDENTITY_LEN], GError **errp);

/**
 * sl_snapshot_open_chain:
 * Open child snapshot @child with @parent (a path taken as given, not
 * from the child's directory) as its parent instead of the path the child
 * records, e.g. after the parent was moved.  The parent's own parents are
 * found as usual, and its identity must still be the recorded one.  @flags
 * as sl_snapshot_open_flags().  Fails if @child has no parent.
 */
sl_snapshot *sl_snapshot_open_chain(const char *child, const char *parent, unsigned flags,
                                    GError **errp);

/**
 * sl_snapshot_open_ancestors:
 * Open child snapshot @child with any of its ancestors at paths the
 * caller gives, e.g. after a parent and a grandparent were moved apart.
 * @ancestors is a NULL-terminated list: @ancestors[0] is @child's parent,
 * [1] its grandparent, and so on; an empty string keeps the path that
 * link records (found as usual from the directory of the file that
 * records it), and the links past the list's end are found as usual.  A
 * path given is taken as given (relative to the working directory), and
 * each ancestor's identity must still be the one its child recorded, else
 * the open fails naming the file given.  A list longer than the chain (an
 * entry for the parent of a file that has none) is refused naming that
 * entry; so is a non-empty list for a snapshot with no parent.  A list of
 * one entry is sl_snapshot_open_chain(), except that an empty entry
 * there means the recorded path.  @flags as sl_snapshot_open_flags().
 * Since 1.11.
 */
sl_snapshot *sl_snapshot_open_ancestors(const char *child, const char *const *ancestors,
                                        unsigned flags, GError **errp);

/**
 * sl_snapshot_parent: a child's parent, opened and merged with the rest of
 * the chain (owned by @snap: valid until it is closed), or NULL.
 */
sl_snapshot *sl_snapshot_parent(const sl_snapshot *snap);

/**
 * sl_snapshot_chain_length: how many snapshots @snap's chain holds, @snap
 * included (1 for a full snapshot).  A writer refuses a parent whose chain
 * already holds the most one chain may (64, docs/format.md).
 */
unsigned sl_snapshot_chain_length(const sl_snapshot *snap);

/** sl_snapshot_path: the path @snap was opened from (a parent: as resolved). */
const char *sl_snapshot_path(const sl_snapshot *snap);

/**
 * sl_snapshot_stored_pages: pages of block @block that @snap's own file
 * stores (for a snapshot without parent, present_pages); 0 out of range.
 */
uint64_t sl_snapshot_stored_pages(const sl_snapshot *snap, unsigned block);

/**
 * sl_snapshot_page_file: the path of the file in @snap's chain that stores
 * page @index of block @block (the newest layer whose bitmap has it: @snap
 * itself for a snapshot without parents), to name the file a bad page
 * lives in; NULL for a page no layer stores (a zero page) or out of range.
 * Since 1.14.
 */
const char *sl_snapshot_page_file(const sl_snapshot *snap, unsigned block, uint64_t index);

/* ------------------------------------------------------------------ */
/* Snapshot writer                                                    */
/* ------------------------------------------------------------------ */

typedef struct sl_writer sl_writer;

/** sl_writer_new: create (truncate) @path for writing a snapshot. */
sl_writer *sl_writer_new(const char *path, GError **errp);

/**
 * sl_writer_add_block:
 * Declare a RAM block.  All blocks must be declared before the first
 * sl_writer_write().  @page_size is a power of two from 4 KiB to 1 GiB and
 * divides @length; @numa_node is a hint (-1 for none).  Returns the block's
 * index, or -1 with @errp set.
 */
int sl_writer_add_block(sl_writer *w, const char *name, uint64_t length,
                        uint64_t page_size, int numa_node, GError **errp);

/**
 * sl_writer_write:
 * Store @len bytes of guest RAM at @offset of @block (both page aligned).
 * Zero pages are detected and left out of the file.  Pages may be written
 * in any order; a page never written is a zero page (in a child,
 * sl_writer_set_parent(): the parent's page).  Refuses
 * (SL_ERROR_STATE) @data in a shared mapping of a memory file on which a
 * lazy restore is still running, in this process or another: its missing
 * pages would be stored as zeros.  Save once the restore has completed.
 */
bool sl_writer_write(sl_writer *w, unsigned block, uint64_t offset,
                     const void *data, size_t len, GError **errp);

/**
 * sl_writer_set_parent:
 * Make @w a child of @parent (an open snapshot with checksums), recorded
 * with @parent's identity and @parent_path, stored as given (a relative
 * path is resolved against the child's directory when it is opened).
 * Before the first sl_writer_write().  From then on a page never written
 * is absent and comes from the parent, and a zero page written is stored
 * (a hole with the checksum of zeros), so that it hides the parent's page.
 * The child's blocks must be the parent's, in its order, with the same
 * names, lengths and page sizes: sl_writer_add_block() and
 * sl_writer_finish() refuse others.  @parent may be closed afterwards.
 * Refuses a parent whose chain already holds 64 snapshots (the most a
 * chain may: such a child could not be opened).  Since 1.5.
 */
bool sl_writer_set_parent(sl_writer *w, sl_snapshot *parent, const char *parent_path,
                          GError **errp);

/** sl_writer_add_section: append an opaque section (copied) of @type. */
bool sl_writer_add_section(sl_writer *w, uint32_t type, const void *data,
                           size_t len, GError **errp);

/**
 * sl_writer_finish: write bitmaps, checksums, tables and, last, the header.
 * Does not fsync: a caller that needs durability syncs the file itself.
 */
bool sl_writer_finish(sl_writer *w, GError **errp);

/** sl_writer_free: release the writer (an unfinished file is left invalid). */
void sl_writer_free(sl_writer *w);

/* ------------------------------------------------------------------ */
/* Lazy restore                                                       */
/* ------------------------------------------------------------------ */

typedef struct sl_restore sl_restore;

/** Kinds of memory a block can be restored into. */
typedef enum {
    SL_BACKEND_ANON = 0,      /**< private anonymous memory: MISSING + COPY/ZEROPAGE */
    SL_BACKEND_SHMEM = 1,     /**< tmpfs file or memfd: MISSING|MINOR + CONTINUE   */
    SL_BACKEND_HUGETLBFS = 2, /**< hugetlbfs file (2 MiB or 1 GiB): MINOR + CONTINUE */
} sl_backend_kind;

/** The most loader threads per node sl_restore_new() accepts. */
#define SL_MAX_LOADER_THREADS 256

/** Restore settings; zero-initialise, set size = sizeof, then override. */
typedef struct {
    uint32_t size;             /**< sizeof(sl_restore_config), for versioning; a larger
                                    struct with a byte set past this library's is refused
                                    (since 1.20) */
    unsigned loader_threads;   /**< loaders per NUMA node; 0 = one per CPU of the node (at
                                    least 1; they run at a low priority); at most
                                    SL_MAX_LOADER_THREADS */
    bool no_checksum;          /**< skip checksum verification (trusted file); forced
                                    for a snapshot without checksums */
    bool no_loaders;           /**< serve faults only (for tests/benchmarks)  */
    const char *numa_topology; /**< NULL: the host's; else a SPEC (docs/numa.md) */
    bool interleave;           /**< blocks without a binding: stripes over all nodes */
    bool no_hot_list;          /**< ignore the snapshot's hot-page list */
    bool record;               /**< record the order of faulted pages (sl_restore_recorded) */
    bool trace_order;          /**< keep each unit's placement order (tests) */
    /**
     * Since 1.1: called once when a view added by sl_restore_add_view_tagged()
     * is dropped because its consumer went away (@err -ESRCH/-ENOENT) or its
     * uffd misbehaved (any other -errno but ENOSPC/ENOMEM, a lack of room
     * in the memory, which fails the restore and drops no view): nobody
     * serves that view any more, so the caller should end that consumer.  Runs on an engine thread:
     * must not block or call back into the restore.  NULL: not told.
     */
    void (*view_dropped)(void *opaque, uint64_t tag, int err);
    void *view_dropped_opaque;
    /**
     * Since 1.3: no prefault thread (it allocates the pages of shared
     * memory that will hold data ahead of the loaders and faults), so the
     * fault path allocates them itself.  For tests and benchmarks.  The
     * thread runs only while some CPU of the restore has no loader.
     */
    bool no_prefault;
    /**
     * Since 1.5: know which pages are written (asynchronous userfaultfd
     * write-protection, kernel 6.7+): our own mappings are registered in
     * WP mode as well and every unit is placed write-protected, so the
     * first write to it, by anyone through our mapping (a vCPU under KVM
     * too), marks it written with no fault message.  Needed by
     * sl_restore_written() and sl_restore_reset().  A restore that tracks
     * keeps its mappings registered and its fault thread running after
     * completion, until sl_restore_stop(), and its anonymous memory is not
     * collapsed into transparent hugepages (the kernel does not collapse
     * write-protected ranges).  Writes through another process's mapping
     * are not seen: a reset refuses while one is attached.  Without
     * asynchronous WP it falls back to counting every unit as written
     * (sl_stats.write_tracking says which runs).
     */
    bool track_writes;
    /**
     * Since 1.5: a reset rewrites the written units in place with the
     * snapshot's bytes (checked) before it returns, instead of dropping
     * them for the loaders and faults to bring back: no allocation, no
     * fault afterwards, every page present when sl_restore_reset()
     * returns.  For callers that reset a paused guest and resume it at
     * once (a fuzzer's loop), which then touches the same pages again.
     */
    bool reset_in_place;
    /**
     * Since 1.5, for tests: track_writes as on a kernel without
     * asynchronous WP (before 6.7), where it falls back by itself: every
     * unit counts as written (a reset then brings back all of them, an
     * incremental save stores all of them), correct but in O(guest RAM).
     * sl_stats.write_tracking says which one runs.
     */
    bool track_without_wp;
    /**
     * Since 1.5: the shared memory files (shmem, hugetlbfs) are reused:
     * they are not emptied, and a unit whose pages the file already holds
     * with the snapshot's checksums (or zeros where the snapshot has a zero
     * page) is kept and only mapped, not rewritten; any other unit is
     * restored as usual.  For restarting a VMM from the same snapshot over
     * the RAM file its previous run left: the restart rewrites only what
     * that run changed (the files are read and hashed in the background,
     * or, since 1.6, only what sl_restore_keep_known() lists).  Without
     * checksums nothing is kept unless such a list says so; anonymous
     * memory is refused.
     */
    bool keep_memory;
    /**
     * Since 1.7: how the loaders read a chunk for anonymous memory:
     * SL_DIRECT_AUTO (0, the default since 1.8) with O_DIRECT reads kept in
     * flight on io_uring where the chunk is mostly not in the page cache (a
     * cold snapshot: no page cache to fill and copy out of; with
     * place_by_copy unset the disk reads straight into the hugepage that is
     * then moved into the guest), else pread; SL_DIRECT_OFF always pread,
     * through the page cache; SL_DIRECT_ALWAYS direct whatever is cached.
     * Direct reads need a snapshot without a parent on a file system that
     * takes O_DIRECT, and snapload built with liburing; else pread.
     * sl_stats.bytes_read_direct says how much was read directly.  On the
     * development host a cold 4 GiB fill took 0.58x the time and 0.60x the
     * CPU of pread (docs/bench.md, "Moving whole chunks").
     */
    unsigned direct_reads;
    /**
     * Since 1.8: the loaders copy every page into anonymous memory with
     * UFFDIO_COPY, as before 1.8.  By default, on a kernel with UFFDIO_MOVE
     * (6.8+), they move whole 2 MiB chunks instead: each chunk of our own
     * 2 MiB-aligned anonymous mapping is read into a transparent hugepage
     * of the loader's, checked, and moved into place: one copy fewer, no
     * allocation per 4 KiB page, and the guest memory is a hugepage at
     * once, with nothing left to collapse after completion
     * (sl_stats.pages_moved).  Never with track_writes (MOVE has no
     * write-protect mode) nor for memory only another process maps: there
     * pages are always copied.  For comparisons and tests.
     */
    bool place_by_copy;
    /**
     * Since 1.9: fault-around.  A fault on a 4 KiB unit holding data is
     * served together with its neighbours in the aligned block of this many
     * bytes around it: those that hold data, that nobody has claimed, and
     * that run unbroken from the faulted unit either way, read in one
     * pread and mapped with one placement.  A guest touches pages close
     * together, so each such fault stands for several.  0: the default,
     * SL_FAULT_AROUND_DEFAULT; a value of at most one unit (4096): only the
     * faulted unit.  Never for units larger than 4 KiB, nor with
     * keep_memory.  With record, the neighbours are recorded after the
     * faulted unit (the hot list names what the fault path placed).
     * sl_stats.pages_around counts them.  Since 1.12, a block not in the
     * page cache (cold: each read is a disk request) is served in two
     * steps: the faulted unit is read and placed alone, which wakes the
     * faulting thread after one small read, and a helper thread reads and
     * places the neighbours after it (sl_stats.faults_split counts such
     * faults; a fault on a neighbour meanwhile waits for that read).
     */
    uint32_t fault_around;
} sl_restore_config;

/** sl_restore_config.fault_around when it is 0 (bytes).  Since 1.9. */
#define SL_FAULT_AROUND_DEFAULT (64u << 10)
/** The largest fault-around block (bytes; larger values are taken as this).  Since 1.9. */
#define SL_FAULT_AROUND_MAX (2u << 20)

/** sl_restore_config.direct_reads.  Since 1.7 (AUTO the default since 1.8). */
enum {
    SL_DIRECT_AUTO = 0,   /**< direct where the chunk is not cached (the default) */
    SL_DIRECT_OFF = 1,    /**< always pread */
    SL_DIRECT_ALWAYS = 2, /**< direct wherever it can be */
};

/** Most consumer mappings (views) one block may have. */
#define SL_MAX_VIEWS 16

/** Restore statistics; set size = sizeof before sl_restore_get_stats(). */
typedef struct {
    uint32_t size;                 /**< sizeof(sl_stats), for versioning */
    uint64_t pages_total;          /**< pages of every attached block     */
    uint64_t pages_present;        /**< pages placed so far               */
    uint64_t faults;               /**< page-fault messages read          */
    uint64_t faults_on_claimed;    /**< faults on a page a loader was placing */
    uint64_t faults_on_present;    /**< faults on an already placed page  */
    uint64_t pages_by_fault;       /**< pages placed by the fault thread  */
    uint64_t pages_by_loader;      /**< pages placed by background loaders */
    uint64_t zero_pages;           /**< pages placed as zeros             */
    uint64_t pages_placed_twice;   /**< audit: pages placed more than once */
    uint64_t pages_never_placed;   /**< audit: pages not placed (at completion) */
    uint64_t bytes_read;           /**< bytes read from the snapshot      */
    uint64_t checksum_failures;    /**< pages refused for a bad checksum  */
    uint64_t eexist;               /**< placements answered with EEXIST   */
    uint64_t eagain;               /**< placements retried after EAGAIN   */
    double time_to_ready_ms;       /**< start() call to faults being served */
    double time_to_first_fault_ms; /**< start() to first fault; <0 if none */
    double time_to_complete_ms;    /**< start() to every page present; <0 if not */
    double fault_p50_us;           /**< fault service latency, median     */
    double fault_p99_us;           /**< fault service latency, 99th pct   */
    double fault_max_us;           /**< fault service latency, maximum    */
    double checksum_ms;            /**< CPU time loaders spent hashing    */
    double loader_ms;              /**< wall time of the busiest loader   */
    int error;                     /**< first fatal -errno, 0 if none     */
    unsigned nodes;                /**< prefetch groups (NUMA nodes)      */
    int node_id[64];               /**< node number of each group          */
    unsigned threads_by_node[64];  /**< loader threads of each group       */
    uint64_t pages_by_node[64];    /**< units placed by each group's loaders */
    uint64_t pages_wrong_node;     /**< audit: loader-placed units not of the placer's node */
    uint64_t loader_cpu_violations;/**< audit: loader seen on a CPU outside its node */
    uint64_t hot_pages;            /**< units in the hot-page list used   */
    uint64_t pages_by_hint;        /**< units placed from the locality window or hot list */
    /* Since 1.2: */
    uint64_t map_bytes;            /**< the page maps' memory (one byte per unit)  */
    uint64_t metadata_bytes;       /**< checksum arrays and digests held (8 bytes per page
                                        once its segment was used), bitmaps */
    uint64_t thp_bytes;            /**< our anonymous memory collapsed into transparent
                                        hugepages after completion (as QEMU's eager load
                                        would have them), once sl_restore_stop() joined */
    /* Since 1.5: */
    uint32_t write_tracking;       /**< SL_TRACK_*: how written pages are known */
    uint64_t resets;               /**< sl_restore_reset() calls that brought units back */
    uint64_t pages_kept;           /**< config.keep_memory: units the file already held */
    /* Since 1.6: */
    uint64_t pages_known;          /**< of pages_kept: known unchanged (sl_restore_keep_known),
                                        neither read nor hashed */
    /* Since 1.7: */
    uint64_t bytes_read_direct;    /**< of bytes_read: read by loaders with O_DIRECT
                                        (config.direct_reads) */
    /* Since 1.8: */
    uint64_t pages_moved;          /**< of pages_by_loader: moved into place in whole
                                        2 MiB chunks, not copied (config.place_by_copy) */
    /* Since 1.9: */
    uint64_t pages_around;         /**< of pages_by_fault: neighbours served with a fault
                                        (config.fault_around) */
    /* Since 1.12: */
    uint64_t faults_split;         /**< of faults: cold ones (their fault-around block not
                                        in the page cache) served with their own unit
                                        first, the neighbours read after it */
} sl_stats;

/** sl_stats.write_tracking: how a restore knows the written pages.  Since 1.5. */
enum {
    SL_TRACK_OFF = 0,        /**< config.track_writes not set */
    SL_TRACK_ASYNC_WP = 1,   /**< exact: asynchronous userfaultfd WP + PAGEMAP_SCAN */
    SL_TRACK_ALL = 2,        /**< fallback (no async WP): every unit counts as written */
};

/**
 * sl_restore_new:
 * Create a restore of @snap, which it holds a reference to (the caller may
 * close its own at once).  @cfg may be NULL for defaults.  Nothing is
 * registered until sl_restore_start().
 */
sl_restore *sl_restore_new(sl_snapshot *snap, const sl_restore_config *cfg, GError **errp);

/**
 * sl_restore_attach:
 * Attach the memory at @addr (page aligned, @length bytes, equal to the
 * block's length) that receives block @block_name.  For SL_BACKEND_ANON the
 * memory must be private anonymous; its current contents are discarded.
 * @addr NULL (since 1.2): the memory is another process's, which
 * registered its fresh mapping in MISSING mode and hands its uffd over
 * with sl_restore_add_view() (one view: anonymous memory is private), as
 * a VMM does through the restore daemon; pages are then placed with
 * UFFDIO_COPY into that process.  Anonymous memory must be private
 * (MAP_PRIVATE|MAP_ANONYMOUS): sl_restore_start() refuses a shared or file
 * mapping, whose old pages would survive the restore.
 *
 * Attached memory (of any backend) must stay mapped where it is until
 * sl_restore_stop() has returned: no munmap(), mremap() or new mapping over
 * it meanwhile.  The kernel does not tie a placement to the userfaultfd it
 * came from, so a restore still running would place its pages into
 * whatever is mapped there next (another restore's memory: seen by a
 * review), and memory moved away loses its registration (its missing pages
 * then read as zeros).  Since 1.21, on kernels with UFFDIO_POISON (6.6+),
 * the restore watches for it: the unmap or move fails the restore with
 * -EFAULT (sl_restore_error() names the block and the range), nothing is
 * placed there any more, and what is left of the memory, where it was or
 * where it went, is sealed as by sl_restore_stop().  It stays a misuse
 * (docs/design.md says what is left open).  Discarding pages
 * (MADV_DONTNEED, a balloon) is fine: they come back.
 */
bool sl_restore_attach(sl_restore *r, const char *block_name, void *addr,
                       uint64_t length, sl_backend_kind kind, GError **errp);

/**
 * sl_restore_attach_file:
 * Attach a block kept in a file (SL_BACKEND_SHMEM or SL_BACKEND_HUGETLBFS):
 * @fd is the memory file (it is duplicated), @offset where the block starts
 * in it, and @addr our own MAP_SHARED mapping of that part of the file, or
 * NULL when only other processes map it (see sl_restore_add_view()).  The
 * restore fills pages through its own alias mapping of the file; the
 * file's current contents of the block are discarded at start.  On a
 * tmpfs with a size limit, sl_restore_start() refuses a snapshot whose
 * stored pages do not fit in the room left there.  Since 1.10 an @addr
 * that does not map @fd from @offset over all of @length is refused, naming
 * the first address that does not.
 */
bool sl_restore_attach_file(sl_restore *r, const char *block_name, void *addr,
                            uint64_t length, sl_backend_kind kind, int fd,
                            uint64_t offset, GError **errp);

/**
 * sl_restore_add_view:
 * Add a consumer mapping of a file-backed block, possibly in another process
 * (a vhost-user back-end): its owner mapped the block's part of the same file
 * MAP_SHARED at @base (an address in the owner's address space), registered
 * it with MISSING|MINOR on @uffd, and handed us @uffd (it is duplicated).
 * Before or while the restore runs; after completion the range is simply
 * unregistered, since every page is then in the page cache.  Also the one
 * view of anonymous memory attached without an address (MISSING mode).
 * The owner keeps the view out of processes it forks until then
 * (MADV_DONTFORK): the library cannot mark another process's memory, and
 * a forked copy of the view is registered nowhere (it would read holes as
 * zeros).  The preload client does so for the mappings it hands over.
 */
bool sl_restore_add_view(sl_restore *r, const char *block_name, int uffd, uint64_t base,
                         GError **errp);

/**
 * sl_restore_add_view_tagged: sl_restore_add_view() with @tag, the caller's
 * name for the view (e.g. its connection), which config.view_dropped
 * reports and sl_restore_remove_views() takes.  An error on a view that is
 * not ours never fails the restore: that view alone is dropped (a lack of
 * room in the memory file, ENOSPC or ENOMEM, is no error of the view: it
 * fails the restore).  At most
 * SL_MAX_VIEWS live views per block; slots of dropped views are reused.
 * Since 1.1.
 */
bool sl_restore_add_view_tagged(sl_restore *r, const char *block_name, int uffd,
                                uint64_t base, uint64_t tag, GError **errp);

/** A run of snapshot pages of one block: [first, first + n). */
typedef struct {
    uint64_t first, n;
} sl_page_run;

/** Since 1.6: sl_restore_add_view_flags(): the view's uffd was opened with
 * UFFD_FEATURE_WP_ASYNC (and WP_UNPOPULATED, WP_HUGETLBFS_SHMEM) and its
 * range registered in WP mode as well: every unit is mapped into it
 * write-protected, so that its owner can list the pages it writes
 * (PAGEMAP_SCAN of its own pagemap).  Needs config.track_writes, which
 * keeps views registered (their protection with them) until the stop. */
#define SL_VIEW_WRITE_PROTECTED 1u

/**
 * sl_restore_add_view_flags: sl_restore_add_view_tagged() with @flags
 * (SL_VIEW_*).  Since 1.6.
 */
bool sl_restore_add_view_flags(sl_restore *r, const char *block_name, int uffd,
                               uint64_t base, uint64_t tag, unsigned flags, GError **errp);

/**
 * sl_restore_add_view_range:
 * Since 1.17.  sl_restore_add_view_flags() for a consumer mapping of a
 * part of a file-backed block: its owner mapped block bytes
 * [@offset, @offset + @length) (file offset: the block's own plus
 * @offset) MAP_SHARED at @addr and registered that range on @uffd.  A
 * vhost-user back-end maps each memory region QEMU sends it on its own,
 * and a pc guest's RAM comes in two (below and above 4 GiB).  The engine
 * serves the faults of that range and places into it only the units it
 * covers; units placed before the view joined are in the page cache and
 * are mapped there when touched.  @offset and @length must be multiples
 * of the block's placement unit (the larger of the snapshot's page and
 * the memory's: 4 KiB on tmpfs, the hugepage on hugetlbfs), inside the
 * block; a view of anonymous memory must be the whole block (only its
 * owner maps it).  A refused range is named in @errp.
 */
bool sl_restore_add_view_range(sl_restore *r, const char *block_name, int uffd, uint64_t addr,
                               uint64_t offset, uint64_t length, uint64_t tag, unsigned flags,
                               GError **errp);

/**
 * sl_mover_fn: moves @len bytes of page data at @src (this process's memory,
 * a whole chunk of a block, checked) to @dst, an address in the view of
 * another process's anonymous memory, so that they become those pages
 * there: 0, or -errno with *@done the bytes of the chunk's start now in
 * place.  -ESRCH: that process is gone.  Called by loader threads, several
 * at once.
 */
typedef int (*sl_mover_fn)(void *opaque, uint64_t dst, const void *src, uint64_t len,
                           uint64_t *done);

/**
 * sl_restore_set_mover:
 * Since 1.15.  Before sl_restore_start(), for a block of anonymous memory
 * attached without an address (another process's, see sl_restore_attach()):
 * the loaders hand whole 2 MiB chunks to @fn (with @opaque) instead of
 * placing them 4 KiB page by 4 KiB page with UFFDIO_COPY.  The restore
 * daemon's @fn has the owner move each chunk into place itself
 * (UFFDIO_MOVE works only within the uffd's own process), so the guest
 * gets a transparent hugepage per chunk, as after an eager load.  Not used
 * with config.place_by_copy or config.track_writes, nor for a block whose
 * snapshot pages are larger than the host's pages; where a chunk cannot be
 * moved, the rest of it is copied.
 */
bool sl_restore_set_mover(sl_restore *r, const char *block_name, sl_mover_fn fn, void *opaque,
                          GError **errp);

/**
 * sl_restore_keep_known:
 * Since 1.6.  With config.keep_memory, before sl_restore_start(): the
 * caller knows that the reused file of block @block_name holds the
 * snapshot everywhere but in the @n runs of snapshot pages @changed (for
 * example what the previous run's write tracking listed, and nothing else
 * wrote the file since).  Units that touch none of them, and no hole of
 * the file where the snapshot has data (the holes of a shmem or a
 * hugetlbfs file are looked up), are kept without being read or hashed
 * (sl_stats.pages_known); the others are checked and restored as
 * keep_memory does (without checksums, restored).  Without this call every
 * unit is checked (without checksums, none is kept).
 */
bool sl_restore_keep_known(sl_restore *r, const char *block_name, const sl_page_run *changed,
                           size_t n, GError **errp);

/**
 * sl_restore_remove_views: forget every view added with @tag (its consumer
 * left): it is no longer served and its slot can be reused.  Its uffd is
 * closed as soon as no restore thread uses it, after every page still
 * missing was sealed in that view (so a consumer that lingers gets SIGBUS
 * there, never zeros); a view that cannot be sealed keeps its uffd to the
 * end, unless its process has exited (without poison: the kernel answers
 * ESRCH for it; since 1.22).  Before sl_restore_start() it is closed at
 * once, unsealed (since 1.17: nothing uses it, and its consumer may map
 * that range again).
 * Since 1.1.
 */
void sl_restore_remove_views(sl_restore *r, uint64_t tag);

/**
 * sl_restore_views_released: whether every view removed with @tag
 * (sl_restore_remove_views()) has let go of its uffd: the restore will
 * make no more calls on it (no sealing, no placement, no unregistering).
 * Until then its consumer must not reuse the view's addresses: a uffd
 * acts on whatever registered mapping of that process lies there, even
 * one registered on another uffd.  A view that could not be sealed (it
 * keeps its uffd, unused, to the end) counts as released.  True when @r
 * is NULL.  Since 1.17.
 */
bool sl_restore_views_released(sl_restore *r, uint64_t tag);

/**
 * sl_restore_bind: place block @block_name on NUMA node @node (a node number
 * of the restore's topology): its memory is bound there and that node's
 * prefetch threads fill it.  Before sl_restore_start().
 */
bool sl_restore_bind(sl_restore *r, const char *block_name, int node, GError **errp);

/**
 * sl_restore_recorded: the faulted pages in fault order, as a hot-page list
 * (docs/format.md, section type 2), when config.record was set.  Call after
 * sl_restore_stop().  Caller unrefs.
 */
GBytes *sl_restore_recorded(const sl_restore *r);

/**
 * sl_restore_write_blocks:
 * Save the memory of restore @r, running or complete, into writer @w: adds
 * every block of @r's snapshot to @w (same names, sizes, page sizes and
 * node hints; @w must have none yet) and writes all their pages.  A unit
 * the restore has placed is read from the memory (with whatever was written
 * there since); a unit not placed yet, which nothing can have written, from
 * @r's snapshot, checked; a block that was not attached, from the snapshot
 * too.  So a save during a restore never stores a missing page as zeros.
 * The caller keeps writers of the memory still meanwhile (a VMM pauses its
 * vCPUs), then adds its sections (device state) and finishes @w.  Fails on
 * a page the restore refused, on a restore that was stopped before
 * completion or failed, and on a block whose memory only another process
 * maps (anonymous memory served through the daemon).  Since 1.4.  Since
 * 1.19, the saves and sl_restore_reset() of one restore exclude each
 * other: a call made while another runs waits for it.
 */
bool sl_restore_write_blocks(sl_restore *r, sl_writer *w, GError **errp);

/**
 * sl_restore_start:
 * Register every attached range with userfaultfd, start the fault thread and
 * the loaders.  When it returns true, the memory may be used: any access is
 * served on demand.  Each memory file is marked busy until every page is in
 * place (an OFD lock far past its end, see docs/design.md): saves refuse it
 * meanwhile, and a second restore on the same memory is refused.  When it
 * fails, the restore is stopped (since 1.21): memory it had registered is
 * sealed and let go, as by sl_restore_stop(), never left registered with
 * no thread to answer a touch (nor, on 6.6+ kernels, to read the event a
 * munmap of it would wait for).
 */
bool sl_restore_start(sl_restore *r, GError **errp);

/**
 * sl_restore_poll: 0 when every page is present, -EINPROGRESS while the
 * restore runs (and before sl_restore_start(), which alone can end it),
 * the fatal -errno that stopped it, or -ECANCELED after sl_restore_stop()
 * before completion.  Since 1.24, -EBADMSG after a stop before completion
 * when a page had been refused (checksum mismatch) by then: before, the
 * refusal showed only in a restore that completed.
 */
int sl_restore_poll(sl_restore *r);

/**
 * sl_restore_error: what ended the restore, or NULL while it runs or if it
 * completed.  A refused page (checksum mismatch) gives SL_ERROR_CHECKSUM
 * naming the block, the page and its offset; an unreadable snapshot
 * SL_ERROR_IO; sl_restore_stop() before completion SL_ERROR_STATE; any
 * other failure SL_ERROR_IO with its errno.  Caller frees.  Since 1.1.
 * Since 1.23: a refused page is named also when a consumer that touched
 * it died first (-ESRCH); an unreadable snapshot names the block and
 * pages of the first failed read and why (the file of the chain that
 * shrank, or the errno); a consumer process that ended first gives
 * SL_ERROR_STATE "restore stopped: ...".
 */
GError *sl_restore_error(sl_restore *r);

/**
 * sl_restore_refused: the first page refused so far (its bytes did not
 * match their checksum: it is poisoned, a consumer touching it gets
 * SIGBUS), as sl_restore_error() names it (SL_ERROR_CHECKSUM: block, page
 * and offset), or NULL if none was (a NULL @r: SL_ERROR_INVALID).  Callable at any time: a refused page
 * does not end the restore, which goes on serving the others and fails
 * (-EBADMSG) only at its end or its stop.  Caller frees.  Since 1.24.
 */
GError *sl_restore_refused(sl_restore *r);

/**
 * sl_restore_wait: wait up to @timeout_ms (-1 = forever) for completion or
 * failure (signals to the calling thread do not lengthen the wait, since
 * 1.20);
 * returns as sl_restore_poll(), or -EINVAL at once for a restore that was
 * never started (nothing would end the wait).
 */
int sl_restore_wait(sl_restore *r, int timeout_ms);

/**
 * sl_restore_eventfd: an fd that becomes readable once the restore has
 * completed or failed (for callers with their own poll loop).  Do not read it.
 * After a failure (since 1.20) a thread touching a page not yet present
 * gets SIGBUS at once: the page is poisoned where it is touched (before
 * 1.20, and without UFFDIO_POISON, it waits until sl_restore_stop() seals
 * it).  A failure seen here, by sl_restore_poll() or sl_restore_wait()
 * calls for a prompt sl_restore_stop().
 */
int sl_restore_eventfd(const sl_restore *r);

/**
 * sl_restore_stop: stop the loaders and the fault thread.  Before
 * completion (or after a failure) every page not yet present is sealed
 * first: poisoned where the kernel can (an access raises SIGBUS), else made
 * PROT_NONE in our own mapping (SIGSEGV), never left to read as zeros; the
 * restore then reports -ECANCELED unless it had failed already (since
 * 1.24, -EBADMSG when a page had been refused by then).  Only stop
 * early when the memory will not be used again.  Any thread may call it,
 * several at once: each returns once the memory is sealed (since 1.20).
 * Since 1.21 it closes the restore's userfaultfd, unless a seal had to
 * leave a range registered (then it stays open to the end of the process).
 * Since 1.23 it first waits for a reset, a save or sl_restore_written()
 * of @r running on another thread (a stop beside a dropping reset sealed
 * pages the reset then dropped: they read as zeros); one called after
 * the stop is refused.
 */
void sl_restore_stop(sl_restore *r);

/**
 * sl_restore_get_stats: copy the statistics into @out (set out->size
 * first).  Any time from sl_restore_new() on: before sl_restore_start()
 * (or after a start that failed) no page map exists yet, so pages_total,
 * pages_present and map_bytes are 0 (found by review: the call used to
 * read a NULL page map there and crash).
 */
void sl_restore_get_stats(const sl_restore *r, sl_stats *out);

/** What a reset did (sl_restore_reset()); set size = sizeof. */
typedef struct {
    uint32_t size;            /**< sizeof(sl_reset_stats), for versioning */
    uint64_t units_written;   /**< placement units written since the last reset */
    uint64_t bytes_written;   /**< their bytes */
    uint64_t runs;            /**< runs of consecutive written units */
    double collect_ms;        /**< finding them (PAGEMAP_SCAN) */
    double restore_ms;        /**< dropping them and handing them to the loaders, or
                                   (config.reset_in_place) rewriting them */
} sl_reset_stats;

/**
 * sl_restore_reset:
 * Since 1.5.  Bring memory back to the snapshot, paying only for the pages
 * written since the restore started or since the last reset: each written
 * unit is dropped (MADV_DONTNEED on anonymous memory, a hole punched in a
 * shared file) and marked absent again, so it comes back exactly once, on
 * demand or from the loaders, checked, never as zeros.  Returns once they
 * are dropped: the guest may run at once; sl_restore_wait() tells when
 * every page is present again.  With config.reset_in_place they are
 * rewritten with the snapshot's bytes instead, before the call returns
 * (a unit that fails its check then takes the dropping path, and is
 * refused there).  Needs config.track_writes, a completed
 * restore (sl_restore_wait() returned 0) and no other process's view; the
 * caller pauses every writer of the memory (the vCPUs) during the call.
 * Since 1.10, a write an in-place reset sees land outside the units it
 * rewrites shows a writer was left running: the reset then fails
 * (SL_ERROR_STATE), and every unit that may differ from the snapshot is
 * listed by sl_restore_written() and brought back by the next reset
 * (since 1.23 a page a reader's fault mapped again after the guest
 * discarded it no longer counts as such a write: it is dropped).
 * @out (may be NULL) says what was dropped.  Since 1.19, a reset waits for
 * a save of @r that runs (sl_restore_write_blocks(),
 * sl_restore_write_child()), and a save for a reset: a save beside a
 * dropping reset stored dropped pages of shared memory as zeros.
 */
bool sl_restore_reset(sl_restore *r, sl_reset_stats *out, GError **errp);

/**
 * sl_restore_written:
 * Since 1.5.  The pages of block @block_name written since the restore
 * started or since the last reset, as runs of snapshot pages appended to
 * @runs (an array of sl_page_run), at the granule of the placement unit
 * (a hugepage for hugetlbfs).  Nothing is re-protected: a later call or
 * reset sees them again.  Needs config.track_writes and a started restore.
 * Since 1.18, refused (SL_ERROR_STATE) once another process has mapped the
 * block during this restore: its writes are not seen.  Since 1.23, waits
 * for a reset or a save of @r that runs (a reset rebuilds the list of
 * units a racing writer left, which this one includes).
 */
bool sl_restore_written(sl_restore *r, const char *block_name, GArray *runs, GError **errp);

/**
 * sl_restore_write_child:
 * Since 1.5.  Write into @w (fresh, nothing added yet) an incremental
 * snapshot of the memory of a restore with config.track_writes: only the
 * pages written since the restore started or since the last reset, from
 * the memory, with the restored snapshot as its parent, recorded as
 * @parent_path (relative paths are taken from the child's directory when
 * it is opened).  Every other page is the parent's.  The caller keeps the
 * memory's writers still during the call and finishes @w.  Since 1.18,
 * refused (SL_ERROR_STATE) once another process has mapped a block during
 * this restore, as sl_restore_written() is (@w is then not to be finished);
 * units listed but not placed yet (or refused) are left to the parent.
 * Since 1.19, waits for a reset or another save of @r that runs.  Since
 * 1.24, of each written unit only the pages that differ from the parent's
 * are stored (by checksum, else by the parent's bytes for units of
 * several pages): a written hugepage no longer stores its unchanged pages.
 */
bool sl_restore_write_child(sl_restore *r, sl_writer *w, const char *parent_path,
                            GError **errp);

/**
 * sl_restore_free: stop if needed and release. NULL is ok.  A userfaultfd
 * the stop could not seal (no UFFDIO_POISON: kernels before 6.6) is left
 * open on purpose, ours or a view's: closing it would unregister its range,
 * and pages never placed would read as zeros.
 */
void sl_restore_free(sl_restore *r);

/* ------------------------------------------------------------------ */
/* Eager load (the baseline every benchmark compares against)          */
/* ------------------------------------------------------------------ */

/**
 * sl_eager_load:
 * Copy block @block of @snap into @dst (fresh memory of the block's length)
 * with @threads threads using pread, as a non-lazy loader would.  Zero pages
 * are skipped (fresh memory reads as zero).  Returns 0, -ESTALE if the
 * snapshot's file was written or truncated during the load (without
 * @verify nothing else tells its bytes), or -errno.
 */
int sl_eager_load(sl_snapshot *snap, unsigned block, void *dst,
                  unsigned threads, bool verify);

G_END_DECLS

#endif /* SNAPLOAD_SNAPLOAD_H */
