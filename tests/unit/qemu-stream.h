/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A generator of QEMU migration streams as `migrate file:PATH` writes them
 * with the mapped-ram capability (QEMU >= 9.0), so that the reader
 * (migration/format/qemu.c) is tested against a description written down
 * here, not against itself.  From a qs_desc (machine type, capabilities,
 * optional configuration subsections, blocks with their page contents) it
 * writes a sparse file laid out as QEMU lays it out: every block's
 * mapped-ram header followed by its bitmap, pages_offset rounded up to
 * 1 MiB, zero pages left as holes, the stream going on after each page
 * area, the RAM section's end-of-section flag and footer, opaque device
 * state, the end-of-file byte and an optional JSON description.  Every
 * field it writes is recorded by name with its offset and size (qs_layout),
 * so a test can corrupt one named field or cut the file at each boundary.
 * It uses GLib only (no cmocka), so the fuzz seed maker links it too.
 * With qs_desc.plain it writes a plain precopy stream instead (what
 * `migrate` writes without mapped-ram, read by qemu-split.c): no
 * mapped-ram headers, and after the RAM section's start one END section
 * with a record of every page (stored pages as PAGE, the others ZERO),
 * the first of each block naming it and the rest CONTINUE.
 */
#ifndef SNAPLOAD_TESTS_QEMU_STREAM_H
#define SNAPLOAD_TESTS_QEMU_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

#define QS_PAGE       4096u        /* QEMU's target page on x86 */
#define QS_QEMU_ALIGN (1u << 20)   /* QEMU's pages_offset alignment */
#define QS_RAM_EOS    0x10u        /* RAM_SAVE_FLAG_EOS */
#define QS_MEM_SIZE   0x04u        /* RAM_SAVE_FLAG_MEM_SIZE */

/* One RAM block of the stream. */
typedef struct {
    const char *idstr;           /* 1..255 bytes */
    uint64_t length;             /* used length: a non-zero multiple of QS_PAGE */
    uint64_t gpa;                /* written when the capabilities hold x-ignore-shared */
    bool left_out;               /* x-ignore-shared kept it in shared memory: offsets 0, no pages */
    uint64_t postcopy_page_size; /* non-zero: the page-size field postcopy-ram adds */
    unsigned zero_every;         /* page i is a zero page when i % zero_every == 0 (0: none) */
    unsigned stored_every;       /* and when i % stored_every != 0 (0: no such pages) */
    uint64_t seed;               /* picks the contents of the other pages */
} qs_block;

/* What to write. */
typedef struct {
    const char *machine;         /* machine type; NULL: no configuration section */
    const char *const *caps;     /* capability names, NULL-terminated (valid: with "mapped-ram") */
    bool target_page_bits;       /* the configuration/target-page-bits subsection (12) */
    unsigned uuid;               /* configuration/uuid subsections (QEMU writes 0 or 1) */
    uint32_t section_id;         /* the RAM section's id */
    bool no_footer;              /* end the RAM section with its flag alone (no 0x7e footer) */
    const qs_block *blocks;
    unsigned nblocks;
    size_t devstate_len;         /* opaque device-state bytes after the RAM section */
    const char *json;            /* the JSON description after the end-of-file byte; NULL: none */
    uint64_t pages_align;        /* pages_offset alignment; 0: 1 MiB like QEMU */
    bool plain;                  /* a plain precopy stream (no mapped-ram): the block list,
                                  * then one END section of page records (qs_write()) */
} qs_desc;

/* One field the generator wrote: "magic", "block1.used_length", ... */
typedef struct {
    char *name;
    uint64_t offset, size;
} qs_field;

/* Where a block's parts went. */
typedef struct {
    uint64_t record, record_len;   /* idstr length byte .. end of the mapped-ram header */
    uint64_t bitmap, bitmap_len;   /* 0, 0 for a left-out block */
    uint64_t pages, pages_len;     /* pages_offset and length; 0, 0 for a left-out block */
    uint64_t stored;               /* pages whose bit is set */
} qs_block_layout;

/* What qs_write() wrote, and where. */
typedef struct {
    GArray *fields;                /* qs_field, in file order */
    qs_block_layout *blocks;       /* one per described block */
    unsigned nblocks;
    uint64_t total;                /* the RAM total without flags */
    uint64_t eos;                  /* offset of the RAM end-of-section flag: the tail starts here */
    uint64_t devstate;             /* offset of the first device-state byte */
    uint64_t vmdesc;               /* offset of the 0x06 byte of the JSON description; 0: none */
    uint64_t vmdesc_len;           /* 0x06 + length + JSON: what the reader calls vmdesc_length */
    uint64_t file_size;
} qs_layout;

/**
 * qs_write: writes the stream @d describes to @path (created or
 * truncated), sparsely, and fills @out (release it with qs_layout_clear()).
 * Returns false with @errp set if a write fails or @d is not writable
 * (an idstr longer than 255 bytes, a length that is not whole pages).
 */
bool qs_write(const qs_desc *d, const char *path, qs_layout *out, GError **errp);

/** qs_layout_clear: frees what qs_write() put in @l. */
void qs_layout_clear(qs_layout *l);

/** qs_find: the field called @name, or NULL. */
const qs_field *qs_find(const qs_layout *l, const char *name);

/** qs_page: the guest contents of page @i of block @b (QS_PAGE bytes to @out). */
void qs_page(const qs_desc *d, unsigned b, uint64_t i, uint8_t *out);

/** qs_page_stored: whether the file holds page @i of block @b (its bitmap bit is set). */
bool qs_page_stored(const qs_desc *d, unsigned b, uint64_t i);

/** qs_devstate_byte: byte @i of the device state the generator writes. */
uint8_t qs_devstate_byte(size_t i);

/**
 * qs_feed_pipe: writes @len bytes of @data into pipe @fd, as QEMU fills
 * the pipe of a `migrate fd:` that a splitter reads: in pieces of 1-97
 * bytes with one of @big bytes every 27th, the cycle of sizes started at
 * @first.  With @lockstep each piece waits until the reader took the one
 * before, so that each of its reads gets exactly one piece when @big is
 * at most a page (a write of a page into a pipe is atomic): the reads end
 * inside headers and records, and a run is deterministic.  Stops early
 * when the reader is gone (EPIPE: ignore SIGPIPE).  Does not close @fd.
 */
void qs_feed_pipe(int fd, const uint8_t *data, size_t len, unsigned first, size_t big,
                  bool lockstep);

#endif /* SNAPLOAD_TESTS_QEMU_STREAM_H */
