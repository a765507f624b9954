/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * On-disk layout of a snapload snapshot (docs/format.md is the reference).
 *
 * The container (file header, block table, section table) is little-endian.
 * Each RAM block carries QEMU's mapped-ram header (28 bytes, big-endian), its
 * bitmap of present pages (64-bit little-endian words), an array of XXH3-64
 * checksums, one per page, and one digest per segment of 8192 pages over
 * that segment's bitmap words and checksum entries, so that a reader can
 * prove any part of the metadata before it uses it.  Page data sits at fixed offsets from the
 * block's 1 MiB aligned pages_offset.  This header also holds the in-memory
 * form of an opened snapshot, shared by the reader, the writer and the engine.
 */
#ifndef SNAPLOAD_FORMAT_H
#define SNAPLOAD_FORMAT_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include "migration/large.h"
#include "snapload/snapload.h"

#define SL_MAGIC             "SNAPLOAD"
#define SL_VERSION           2u
#define SL_HEADER_SIZE       64u
#define SL_BLOCK_ENTRY_SIZE  128u
#define SL_SECTION_ENTRY_SIZE 32u
#define SL_NAME_MAX          64u   /* bytes incl. the terminating NUL (container) */
#define SL_BLOCK_NAME_MAX    257u  /* in memory: QEMU's RAM block ids are up to 256 */
#define SL_NO_NODE           0xffffffffu
#define SL_BLOCK_EXTERNAL    1u    /* block flag: its pages live in another file (an index) */
#define SL_BLOCK_DELTA       2u    /* block flag: a child's; pages it does not store are its
                                      parent's (older readers refuse the flag: never zeros) */
#define SL_SECTION_SOURCE    3u    /* an index's section: the identity of the file it indexes */
#define SL_MAX_CHAIN         64u   /* snapshots in one parent chain, the child included */
#define SL_PARENT_HDR        24u   /* parent section: identity, le32 path length, le32 flags */
#define SL_PARENT_PATH_MAX   4096u /* bytes of the parent's path in the parent section */
#define SL_MAX_BLOCKS        1024u
#define SL_MAX_SECTIONS      1024u
#define SL_MAX_NODE_HINT     1024u /* node hints are below this */

#define SL_MR_HEADER_SIZE    28u   /* packed mapped-ram header */
#define SL_MR_VERSION        1u
#define SL_MR_ALIGN          (1u << 20) /* pages_offset alignment */
#define SL_MIN_PAGE          4096u
#define SL_MAX_PAGE          (1ull << 30)

/* Offsets of the file header fields. */
enum {
    SL_H_MAGIC = 0, SL_H_VERSION = 8, SL_H_HDRSIZE = 12, SL_H_FILESIZE = 16,
    SL_H_NBLOCKS = 24, SL_H_NSECTIONS = 28, SL_H_BLKTAB = 32, SL_H_SECTAB = 40,
    SL_H_TABLES_CSUM = 48, SL_H_HEADER_CSUM = 56,
};

/* Offsets of the block table entry fields. */
enum {
    SL_B_NAME = 0, SL_B_LENGTH = 64, SL_B_PAGESIZE = 72, SL_B_NODE = 80,
    SL_B_FLAGS = 84, SL_B_RAMHDR = 88, SL_B_CSUMS = 96, SL_B_PRESENT = 104,
    SL_B_META_CSUM = 112, SL_B_DIGESTS = 120,
};

/* Offsets of the section table entry fields. */
enum { SL_S_TYPE = 0, SL_S_FLAGS = 4, SL_S_OFFSET = 8, SL_S_LENGTH = 16, SL_S_CSUM = 24 };

/* Offsets of the mapped-ram header fields (big-endian). */
enum { SL_MR_VER = 0, SL_MR_PAGESIZE = 4, SL_MR_BITMAP = 12, SL_MR_PAGES = 20 };

/*
 * One RAM block as loaded by the reader.  Immutable after open, except the
 * checksum array of a lazily opened snapshot: each segment of csums is
 * written once, by the thread that moves its seg_state from ABSENT to
 * LOADING, before LOADED is published (segments.c).  Until its segment is
 * LOADED (proven against its digest), the bitmap words of a lazily opened
 * block are only what the file says, and nothing may act on them.
 */
typedef struct {
    char name[SL_BLOCK_NAME_MAX];
    uint64_t length;
    uint64_t page_size;
    uint64_t npages;
    int numa_node;
    uint64_t ramhdr_offset;
    uint64_t bitmap_offset;
    uint64_t csum_offset;
    uint64_t pages_offset;
    uint64_t present_pages;
    uint64_t *bitmap;   /* npages bits, host-order words */
    uint64_t *csums;    /* npages entries, host order */
    sl_large csum_mem;  /* reader: the mapping csums lives in */
    uint64_t digest_offset; /* segment digests: nsegs little-endian u64 */
    uint64_t nsegs;     /* ceil(npages / SL_CSUM_SEG) */
    uint64_t *digests;  /* per segment, host order; proven against the table at open */
    _Atomic uint32_t *seg_state; /* lazy: per segment; NULL: everything proven at open */
    bool in_file;       /* false: QEMU left it out (x-ignore-shared): no pages here */
    bool external;      /* container: SL_BLOCK_EXTERNAL (pages_offset 0, no page area) */
    bool delta;         /* container: SL_BLOCK_DELTA (a child's block) */
    bool has_gpa;       /* QEMU stream with x-ignore-shared: @gpa is recorded */
    uint64_t gpa;       /* guest physical address of the block (QEMU) */
    uint64_t record_offset, record_len; /* QEMU: the block's record, header included */
    /*
     * A child (a snapshot with a parent section, chain.c): @bitmap, @csums
     * and @present_pages are the whole chain's (a page is present when any
     * layer stores it, its checksum the newest such layer's), while
     * @own_bitmap and @own_present say which pages this file stores itself
     * (at @pages_offset); NULL and 0 for a snapshot without a parent.
     */
    uint64_t *own_bitmap;
    uint64_t own_present;
} sl_block;

typedef struct {
    uint32_t type;
    uint64_t offset;
    uint64_t length;
    uint64_t csum;
    int fd;             /* the file its bytes are in (the snapshot's, or its index's) */
} sl_section;

/* What only a QEMU migration stream has (qemu.c). */
typedef struct {
    char machine[257];         /* machine type of the configuration section */
    GPtrArray *caps;           /* char *: capabilities the stream records */
    bool ignore_shared;        /* x-ignore-shared was on: blocks record their GPA */
    uint32_t ram_section_id;
    uint64_t tail_offset;      /* device state: from the RAM section's EOS... */
    uint64_t tail_length;      /* ...to the end of the file */
    uint64_t vmdesc_length;    /* of it, the JSON description at the end (0: none) */
} sl_qemu_stream;

/* An opened snapshot. Immutable after sl_snapshot_open(); safe to share. */
struct sl_snapshot {
    /* References: the opener's, and one per restore made from it
     * (sl_snapshot_ref()).  Atomic: a restore may be freed on another thread
     * than the one closing the snapshot; the last drop frees everything. */
    gint refs;
    int fd;
    char *path;
    uint64_t file_size;
    int64_t mtime_ns;          /* the file's modification time when opened */
    sl_snapshot_format format;
    bool has_checksums;        /* per-page checksums and segment digests are known */
    int csum_fd;               /* where checksum arrays are read: fd, or index_fd */
    int index_fd;              /* a QEMU file's sidecar index, -1 if none */
    char *index_path;          /* its path, NULL if none */
    unsigned nblocks;
    unsigned nsections;
    sl_block *blocks;
    sl_section *sections;
    sl_qemu_stream *qemu;      /* SL_FORMAT_QEMU only */
    struct sl_snapshot *parent; /* a child's parent: the rest of its chain, merged; else NULL */
    bool has_identity;         /* @identity is known (the snapshot has checksums) */
    uint8_t identity[SL_IDENTITY_LEN]; /* content identity (identity.c) */
};

/** The pages @b's own file stores: its bitmap, unless it is a child's block. */
static inline const uint64_t *sl_own_bitmap(const sl_block *b)
{
    return b->own_bitmap ? b->own_bitmap : b->bitmap;
}

/*
 * A public function's required pointer @arg that is NULL: sets @errp (may
 * be NULL) naming the function and the argument, and returns @ret.  The
 * -errno functions use SL_ARG_ERRNO.  A caller's bug gets an error, never
 * a crash inside the library.
 */
#define SL_ARG(arg, errp, ret)                                                         \
    do {                                                                               \
        if (!(arg)) {                                                                  \
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "%s: %s is NULL", G_STRFUNC, \
                        #arg);                                                         \
            return ret;                                                                \
        }                                                                              \
    } while (0)
#define SL_ARG_ERRNO(arg)   \
    do {                    \
        if (!(arg)) {       \
            return -EINVAL; \
        }                   \
    } while (0)

/* Little-/big-endian field access on byte buffers. */
static inline uint32_t sl_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t sl_le64(const uint8_t *p)
{
    return (uint64_t)sl_le32(p) | (uint64_t)sl_le32(p + 4) << 32;
}
static inline uint32_t sl_be32(const uint8_t *p)
{
    return (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}
static inline uint64_t sl_be64(const uint8_t *p)
{
    return (uint64_t)sl_be32(p) << 32 | (uint64_t)sl_be32(p + 4);
}
static inline void sl_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void sl_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void sl_put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[3 - i] = (uint8_t)(v >> (8 * i));
}
static inline void sl_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[7 - i] = (uint8_t)(v >> (8 * i));
}

/** Bytes of a bitmap of @npages bits, rounded to whole 64-bit words. */
static inline uint64_t sl_bitmap_bytes(uint64_t npages)
{
    return (npages + 63) / 64 * 8;
}

/** Whether the @len bytes at @p are all zero (true for none). */
static inline bool sl_all_zero(const void *p, uint64_t len)
{
    const uint8_t *b = p;

    return len == 0 || (b[0] == 0 && memcmp(b, b + 1, len - 1) == 0);
}

/** Whether bit @i of bitmap @bm (64-bit words, bit 0 the lowest of word 0) is set. */
static inline bool sl_bit_test(const uint64_t *bm, uint64_t i)
{
    return (bm[i / 64] >> (i % 64)) & 1;
}

/** Sets bit @i of @bm (not atomic: the caller owns the bitmap). */
static inline void sl_bit_set(uint64_t *bm, uint64_t i)
{
    bm[i / 64] |= 1ull << (i % 64);
}

/** Clears bit @i of @bm (not atomic: the caller owns the bitmap). */
static inline void sl_bit_clear(uint64_t *bm, uint64_t i)
{
    bm[i / 64] &= ~(1ull << (i % 64));
}

/** Sets bits [@i, @i + @n) of @bm. */
static inline void sl_bit_set_run(uint64_t *bm, uint64_t i, uint64_t n)
{
    for (uint64_t k = i; k < i + n; k++) {
        sl_bit_set(bm, k);
    }
}

/**
 * sl_bitmap_count: bits set in the first @npages bits of @bm (bits past
 * them are clear); with the CPU's popcount instruction where it has one.
 */
uint64_t sl_bitmap_count(const uint64_t *bm, uint64_t npages);

/** Whether some bit of @bm in [@i, @end) is set (whole words at a time). */
static inline bool sl_bit_any(const uint64_t *bm, uint64_t i, uint64_t end)
{
    for (; i < end && i % 64; i++) {
        if (sl_bit_test(bm, i)) {
            return true;
        }
    }
    for (; i + 64 <= end; i += 64) {
        if (bm[i / 64]) {
            return true;
        }
    }
    for (; i < end; i++) {
        if (sl_bit_test(bm, i)) {
            return true;
        }
    }
    return false;
}

/** Pages from @i (< @end) whose bit in @bm is @set, up to the first that differs. */
static inline uint64_t sl_bit_run(const uint64_t *bm, uint64_t i, uint64_t end, bool set)
{
    uint64_t n = 0;

    while (i + n < end && sl_bit_test(bm, i + n) == set) {
        n++;
    }
    return n;
}

/** @v rounded up to a multiple of @a (> 0); the caller keeps it below 2^64. */
static inline uint64_t sl_align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/** XXH3-64 of @len bytes: the one hash used for every checksum. */
uint64_t sl_hash(const void *data, size_t len);

/**
 * sl_name_printable: @name is valid UTF-8 without control characters, so
 * that printing it (inspect, errors) cannot drive a terminal.  Block names
 * from files are held to it.
 */
bool sl_name_printable(const char *name);

/**
 * sl_hash_update_file: feeds @len bytes of @fd at @off into the running
 * XXH3-64 @st, read a megabyte at a time (a size a file claims never sets
 * what is allocated).  False with @errp (naming @what) when the range
 * cannot be read.
 */
struct XXH3_state_s;
bool sl_hash_update_file(struct XXH3_state_s *st, int fd, uint64_t off, uint64_t len,
                         const char *what, GError **errp);

/** sl_hash_file: sl_hash() of @len bytes of @fd at @off (sl_hash_update_file()) into *@out. */
bool sl_hash_file(int fd, uint64_t off, uint64_t len, uint64_t *out, const char *what,
                  GError **errp);

/** Seeded continuation used for checksums over two buffers. */
uint64_t sl_hash2(const void *a, size_t alen, const void *b, size_t blen);

/** XXH3-64 of a page of @page_size zero bytes (a child's stored zero page). */
uint64_t sl_zero_hash(uint64_t page_size);

#define SL_CSUM_SEG 8192u /* pages per segment: 1 KiB of bitmap, 64 KiB of checksums */

/** Segments of a block of @npages pages. */
static inline uint64_t sl_nsegs(uint64_t npages)
{
    return (npages + SL_CSUM_SEG - 1) / SL_CSUM_SEG;
}

/**
 * sl_seg_digest (segments.c): the digest of segment @seg of a block of
 * @npages pages: XXH3(its bitmap words ‖ its checksum entries), both as
 * stored (little-endian); @bitmap_le and @csums_le are the whole arrays.
 */
uint64_t sl_seg_digest(const uint64_t *bitmap_le, const uint64_t *csums_le, uint64_t npages,
                       uint64_t seg);

/**
 * sl_seg_stray_entry (segments.c): the first page of segment @seg whose
 * bitmap bit is clear but whose checksum entry is not 0 (format.md: a
 * page not stored has entry 0), or UINT64_MAX.  Either byte order.
 */
uint64_t sl_seg_stray_entry(const uint64_t *bitmap, const uint64_t *csums, uint64_t npages,
                            uint64_t seg);

/**
 * sl_csums_get (segments.c): pages [@first, @first + @n) of @b are proven:
 * their segments' bitmap words and checksum entries match the segment
 * digests (a no-op unless the snapshot was opened lazily, when everything
 * was proven at open).  Returns 0, -EBADMSG if a segment does not match its
 * digest (the metadata is corrupt: nothing of it may be used), or the
 * -errno of reading it.  Only after it returned 0 may the bitmap bits of
 * those pages decide anything, a zero page above all.
 */
int sl_csums_get(const sl_snapshot *s, const sl_block *b, uint64_t first, uint64_t n);

/**
 * sl_seg_culprit (segments.c): after sl_csums_get() returned -EBADMSG for
 * page @page of @b, the files whose metadata failed, for a message: the
 * oldest layer of @s's chain whose segment holding @page was refused (a
 * child's segment is refused with its parent's), as its path, or, for a
 * QEMU file with a sidecar index, "FILE or its index INDEX".  Free it.
 * *@stray: the page of that segment with a checksum entry but no bitmap
 * bit, where that and not a mismatch of its digest refused it, else
 * UINT64_MAX.
 */
char *sl_seg_culprit(const sl_snapshot *s, const sl_block *b, uint64_t page, uint64_t *stray);

/*
 * Byte ranges a file claims (regions.c): each inside the file, none
 * overlapping another; errors name the range and what it collides with.
 */
typedef struct sl_regions sl_regions;
sl_regions *sl_regions_new(uint64_t file_size);
void sl_regions_free(sl_regions *rs);
bool sl_regions_claim(sl_regions *rs, uint64_t start, uint64_t len, GError **errp,
                      const char *fmt, ...) G_GNUC_PRINTF(5, 6);
bool sl_regions_check(sl_regions *rs, GError **errp);

/**
 * sl_snapshot_read_pages_fd: sl_snapshot_read_pages() through @fd, another
 * open file of the snapshot (a reader with its own readahead state).
 */
int sl_snapshot_read_pages_fd(sl_snapshot *s, int fd, unsigned block, uint64_t first, uint64_t n,
                              void *buf, bool verify);

/**
 * sl_snapshot_read_stored_fd: sl_snapshot_read_pages_fd() without
 * verification into memory the caller knows to be zero (a page freshly
 * allocated by the kernel): the zero pages are left as they are instead of
 * being cleared again.  Pages a parent stores are read from it.
 */
int sl_snapshot_read_stored_fd(sl_snapshot *s, int fd, unsigned block, uint64_t first, uint64_t n,
                               void *buf);

/**
 * sl_snapshot_gather_fd: pages [@first, +@n) of @block into @buf through
 * @fd, the pages [@skip, +@nskip) left alone: as sl_snapshot_read_stored_fd()
 * (@zeroed: the zero pages are left as they are) or as
 * sl_snapshot_read_pages_fd() without verification (!@zeroed: cleared),
 * but with one preadv(2) for all the stored runs less than
 * SL_GATHER_GAP bytes apart (gather.c): one disk request where each run
 * would be one, one after the other.  A chain reads run by run.
 */
int sl_snapshot_gather_fd(sl_snapshot *s, int fd, unsigned block, uint64_t first, uint64_t n,
                          uint8_t *buf, bool zeroed, uint64_t skip, uint64_t nskip);

/**
 * sl_snapshot_unchanged: 0 if @s's file, and each file of its chain, still
 * has the size and modification time it had when opened; -ESTALE if one
 * moved (written, truncated or extended since), or -errno of fstat().  The
 * kernel moves the modification time before a write's or a truncation's
 * bytes change, so bytes read before a check that passes are the
 * snapshot's: the check a restore without checksums makes before it places
 * what it read (found by a user test: QEMU's migrate file: over the file
 * being restored truncated it, and its holes were placed as guest RAM).
 * A hole punched into the file moves the time only after the punch, so a
 * read racing one can still slip through (the next check, or the one at
 * completion, fails the restore).  Not seen: writes through a shared
 * mapping made before the open (the time moves at a page's first write
 * fault only; never on tmpfs after a read fault), and before Linux 6.13
 * (coarse timestamps) a same-size write in the tick of the last change.
 */
int sl_snapshot_unchanged(const sl_snapshot *s);

/** Largest run of unwanted file bytes a gathered read reads through (and drops). */
#define SL_GATHER_GAP (64u << 10)

/**
 * sl_gather_read: the pages of [@first, +@n) of @b that bitmap @own calls
 * stored, read from @fd into @buf, runs at most @gap bytes apart in one
 * preadv(2) (the bytes between go to a scratch page); the other pages are
 * cleared (unless @zeroed), pages [@skip, +@nskip) untouched.  0, -EIO
 * where the file ends early, or -errno.
 */
int sl_gather_read(int fd, const sl_block *b, const uint64_t *own, uint64_t first, uint64_t n,
                   uint8_t *buf, bool zeroed, uint64_t gap, uint64_t skip, uint64_t nskip);

/** Full preadv loop (advances @iov): 0, -EIO on a short read, or -errno. */
struct iovec;
int sl_preadv_full(int fd, struct iovec *iov, int cnt, uint64_t off);

/** sl_read_at: reads @len bytes at @off naming @what in the error (a short file: FORMAT). */
bool sl_read_at(int fd, void *buf, size_t len, uint64_t off, const char *what, GError **errp);

/** A format error naming what is wrong; evaluates to false. */
#define SL_BAD(errp, ...) (g_set_error(errp, SL_ERROR, SL_ERROR_FORMAT, __VA_ARGS__), false)

/**
 * Our container (snapload-read.c): parses @s (fd and size set) from its
 * header on.  External blocks (an index's) only with @index.
 */
bool sl_container_parse(sl_snapshot *s, bool lazy, bool index, GError **errp);

/**
 * sl_writer_set_external (snapload-write.c): block @block of @w becomes
 * external (its pages live in another file; none are written here) with
 * @bitmap and @csums (host order, copied) as its metadata.
 */
bool sl_writer_set_external(sl_writer *w, unsigned block, const uint64_t *bitmap,
                            const uint64_t *csums, GError **errp);

/**
 * Sidecar index of a QEMU file (index.c): sl_index_write() computes every
 * page's checksum of QEMU stream @s and writes @path, a container whose
 * blocks are external, with the file's identity and @hot (a hot-page list,
 * may be NULL), flushed to disk and renamed into place when whole;
 * sl_index_attach() makes @path the checksums of @s, refused
 * (naming the reason) unless it was made from exactly this file.
 */
bool sl_index_write(sl_snapshot *s, const char *path, GBytes *hot, GError **errp);
bool sl_index_attach(sl_snapshot *s, const char *path, bool lazy, GError **errp);

/** QEMU's stream (qemu.c): parses @s (fd and size set) from "QEVM" on. */
bool sl_qemu_parse(sl_snapshot *s, GError **errp);

/**
 * sl_qemu_write_device_stream (qemu.c): writes @path (created, 0600), a
 * copy of QEMU stream @s that QEMU loads with only the device state and the
 * blocks not in @lazy (indexed like the blocks): a lazy block's bitmap and
 * pages are left as holes, so QEMU's mapped-ram load finds no page of it
 * and touches none of its memory.  Offsets are the original's: the file is
 * as large, and sparse.  Never writes into @s's own file.  Where @s has
 * checksums (a sidecar index), every stored page of an eager block is
 * checked first, and one that fails refuses the stream by block and page:
 * QEMU loads those pages without any check of its own.
 */
/**
 * sl_qemu_split_stream (qemu-split.c): reads QEMU's plain precopy stream
 * @in (a stopped guest's `migrate` without mapped-ram, compression, XBZRLE
 * or multifd) and writes it to @out (from offset 0) without the pages of
 * the RAM blocks named in NULL-terminated @lazy: block @lazy[i], which
 * must have @lazy_sizes[i] bytes, has its pages go to @lazy_fds[i] at their
 * offsets in the block (zero pages stay holes).  What is left loads into QEMU as it is,
 * leaving those blocks' memory untouched.  @in may be a pipe or socket
 * (read once, in order, up to its end: QEMU's migration split as it is
 * written) or a file (read from offset 0).  @ignore_shared: the caller
 * set x-ignore-shared on the source, so the block list holds each block's
 * address even where the stream has no configuration section to say so
 * (old machine types, such as pc-i440fx-2.3, send none).  False with
 * @errp naming what this reader refuses or finds wrong; a pipe is then
 * left unread.
 */
bool sl_qemu_split_stream(int in, int out, const char *const *lazy, const int *lazy_fds,
                          const uint64_t *lazy_sizes, bool ignore_shared, GError **errp);

/**
 * sl_qemu_write_device_stream: writes to @path (new: refused if it exists)
 * a copy of QEMU file @s for QEMU's own incoming load, of the same size and
 * layout, with the header, every block's record, the bitmap and pages of
 * each block not @lazy (per block) and the device state after the RAM: a
 * lazy block's bitmap and pages are holes (an empty bitmap), so QEMU loads
 * none of the pages snapload serves.  On failure @path is removed and
 * @errp names it.
 */
bool sl_qemu_write_device_stream(const sl_snapshot *s, const char *path, const bool *lazy,
                                 GError **errp);

/*
 * Parent chains (chain.c).  Opening a chain walks it from the child to its
 * oldest ancestor; @sl_chain_walk holds the files opened so far, so that a
 * loop or an absurd depth is refused before the next file is opened, and
 * the caller's paths for ancestors that moved: @ancestors[i] is the parent
 * of the i-th file opened (0: the child), "" for its recorded path; NULL
 * ends the list (or is the list: every recorded path).
 */
typedef struct {
    unsigned depth;                  /* files opened so far */
    uint64_t dev[SL_MAX_CHAIN], ino[SL_MAX_CHAIN];
    const char *const *ancestors;
    unsigned failed_plus1;           /* 1 + the level of the file whose own check failed, or 0 */
} sl_chain_walk;

/** sl_snapshot_alloc: an empty snapshot of @path holding one reference, no file open. */
sl_snapshot *sl_snapshot_alloc(const char *path);

/**
 * sl_snapshot_ref: take a reference on @s, dropped by sl_snapshot_close().
 * A restore holds one for its life, so the caller may close its snapshot
 * while the restore still reads from it.
 */
sl_snapshot *sl_snapshot_ref(sl_snapshot *s);

/**
 * sl_snapshot_open_in: sl_snapshot_open_flags() of one file of a chain
 * being walked by @walk: with a parent section, its parent (the path
 * @walk->ancestors gives for it, else the path the section records,
 * relative to the file's directory) is opened, its identity checked and
 * the chain merged into the result.
 */
sl_snapshot *sl_snapshot_open_in(const char *path, unsigned flags, sl_chain_walk *walk,
                                 GError **errp);

/* An open flag of the library's own, never a caller's: a QEMU file's sidecar index is left out. */
#define SL_OPEN_NO_INDEX (1u << 31)

/**
 * sl_snapshot_open_unindexed: @path opened fully, without attaching the
 * sidecar index beside a QEMU file: what `snapload index` reads to write
 * a new index, which a stale one must neither refuse nor be needed for.
 */
sl_snapshot *sl_snapshot_open_unindexed(const char *path, GError **errp);

/**
 * sl_chain_attach: if @s (the file @walk opened last) has a parent
 * section, opens its parent as above and merges it into @s; @s alone
 * otherwise.  Errors name @s, the parent's path and what is wrong.
 */
bool sl_chain_attach(sl_snapshot *s, unsigned flags, sl_chain_walk *walk, GError **errp);

/**
 * sl_chain_fits_list: whether the caller's @ancestors (NULL-terminated, or
 * NULL) have no more entries than @s, opened with them, has links: else
 * the error names the first path there is no link for.  Checked once the
 * whole chain opened, so that a wrong file given is named as such first.
 */
bool sl_chain_fits_list(const sl_snapshot *s, const char *const *ancestors, GError **errp);

/**
 * sl_chain_seg_merge: segment pages [@first, +@n) of child block @b, whose
 * own entries were just proven: the parent's segment is proven too, and
 * the entries of the pages @b does not store become the parent's.
 */
int sl_chain_seg_merge(const sl_snapshot *s, const sl_block *b, uint64_t first, uint64_t n);

/**
 * sl_hot_list_check: the @len bytes at @p are a well-formed hot-page list
 * of @s: 16-byte entries (block u32, padding, page u64, little-endian),
 * each naming a page that exists.  Errors name the entry.
 */
bool sl_hot_list_check(const sl_snapshot *s, const uint8_t *p, gsize len, GError **errp);

/**
 * sl_sections_path: the file that holds @s's sections, for messages: a
 * QEMU file's sidecar index once attached (its sections are the index's),
 * else @s's own path.
 */
const char *sl_sections_path(const sl_snapshot *s);

/**
 * sl_snapshot_check_sections: every section of @s reads whole and matches
 * its checksum, and a hot-page list is well formed (what a restore would
 * refuse); for `inspect`.
 */
bool sl_snapshot_check_sections(sl_snapshot *s, GError **errp);

/**
 * sl_parent_section: the data of a parent section naming a parent of
 * identity @id at @path (as given); NULL with @errp if @path is unfit.
 */
GBytes *sl_parent_section(const uint8_t id[SL_IDENTITY_LEN], const char *path, GError **errp);

/** sl_identity_compute (identity.c): sets @s's identity, where it has checksums. */
void sl_identity_compute(sl_snapshot *s);

/**
 * sl_identity_with_parent (identity.c): into @out, the identity @s has
 * with a parent of identity @parent_id (NULL: none), as its own metadata
 * alone gives it: a child opened without its chain yet, checked against
 * what its own child records before the rest of the chain is walked.
 * False where @s has no checksums.
 */
bool sl_identity_with_parent(const sl_snapshot *s, const uint8_t *parent_id,
                             uint8_t out[SL_IDENTITY_LEN]);

/**
 * sl_snapshot_open_one (snapshot.c): one file of a chain, parsed and
 * entered in @walk, its own parent not attached yet (sl_chain_attach()).
 */
sl_snapshot *sl_snapshot_open_one(const char *path, unsigned flags, sl_chain_walk *walk,
                                  GError **errp);

/** sl_identity_hex: @id as 32 lowercase hex digits and a NUL. */
void sl_identity_hex(const uint8_t id[SL_IDENTITY_LEN], char out[2 * SL_IDENTITY_LEN + 1]);

/**
 * sl_snapshot_readahead: POSIX_FADV_WILLNEED for pages [@first, +@n) of
 * @block, in the file of each layer that stores some of them.
 */
void sl_snapshot_readahead(const sl_snapshot *s, unsigned block, uint64_t first, uint64_t n);

/**
 * sl_snapshot_cached: whether every page of [@first, +@n) of @block that @s
 * stores is in the page cache: 1 or 0, or -1 when that cannot be told (a
 * snapshot with parents, a kernel without cachestat(2), a bad range).
 */
int sl_snapshot_cached(const sl_snapshot *s, unsigned block, uint64_t first, uint64_t n);

/** Frees what sl_qemu_parse() allocated in @q (NULL is fine). */
void sl_qemu_stream_free(sl_qemu_stream *q);

/** Memory for @b's checksum array (segments.c); false if none. */
bool sl_csums_alloc(sl_block *b);

/** Releases @b's checksum array. */
void sl_csums_free(sl_block *b);

/** sl_snapshot_max_page_size: the largest page of @s's blocks (internal). */
uint64_t sl_snapshot_max_page_size(const sl_snapshot *s);

/**
 * sl_partial_path: where a file meant for @out is written until it is whole
 * and renamed: @out.PID.partial, or beside it a shorter name where that
 * would pass NAME_MAX.  The same @out gives the same path in one process.
 */
char *sl_partial_path(const char *out);

/**
 * sl_error_names: where *@errp speaks of @tmp (a partial file), it speaks of
 * @name instead: the caller named @name, and a write to @tmp failed for it.
 */
void sl_error_names(GError **errp, const char *tmp, const char *name);

/**
 * sl_sync_path: flushes the data of the file at @tmp to disk (fdatasync),
 * before it is renamed to @name, which the error names (an I/O error, a
 * full disk).  A file it may not open or a file system that cannot flush
 * is left as it is, not refused.
 */
bool sl_sync_path(const char *tmp, const char *name, GError **errp);

/**
 * sl_sync_dir_of: flushes the directory holding @path (after a rename into
 * it); best effort.
 */
void sl_sync_dir_of(const char *path);

/**
 * sl_cached_pages: how many base pages of [@off, +@len) of @fd are in the
 * page cache (cachestat(2), Linux 6.5), or -1 when the kernel cannot tell.
 */
int64_t sl_cached_pages(int fd, uint64_t off, uint64_t len);

/**
 * sl_writer_write_changed (snapload-write.c): writes into @w, by runs, the
 * pages of @buf (@len bytes of block @block at @offset) that differ from
 * @parent's (its checksums, else its bytes; zeros where it stores none:
 * sl_snapshot_page_matches()), counting them in *@stored; every page when
 * @parent is NULL.  What a child stores: `delta`, `save --parent` and
 * sl_restore_write_child().
 */
bool sl_writer_write_changed(sl_writer *w, sl_snapshot *parent, unsigned block,
                             uint64_t offset, const uint8_t *buf, size_t len, uint64_t *stored,
                             GError **errp);

/** Full pread/pwrite loops; return 0, -EIO on a short transfer, or -errno. */
int sl_pread_full(int fd, void *buf, size_t len, uint64_t off);
int sl_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/**
 * sl_pwrite_nonzero: sl_pwrite_full() of @buf, but the 4 KiB parts of the
 * file that would hold only zeros are left unwritten: holes of a file the
 * caller created empty (O_TRUNC), which read as zeros and take no disk.
 */
int sl_pwrite_nonzero(int fd, const void *buf, size_t len, uint64_t off);

#endif /* SNAPLOAD_FORMAT_H */
