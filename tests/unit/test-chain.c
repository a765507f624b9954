/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Incremental snapshots (children and their chains of parents), checked
 * against a model of what each page must hold, never against the reader:
 * a chain is built generation by generation with random writes (some of
 * them zero pages), and every page of the newest child is compared with
 * the model through sl_snapshot_read_pages(), sl_eager_load() and real
 * lazy restores into anonymous and shared memory.  Then what must be
 * refused, each with an error naming what is wrong: a parent with other
 * content, a missing parent, a bad or doubled parent section, a truncated
 * child, loops, chains too deep, a parent without checksums, and blocks
 * unlike the parent's.  Last the CLI: `delta` stores only what changed,
 * `inspect` lists the chain, and every command that opens a snapshot which
 * may be a child, after its parents moved, names the parent it misses and
 * works as before with `--parent PATH`.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "testutil.h"
#include "qemu-stream.h"
#include "backends/backend.h"
#include "migration/format/format.h"
#include "migration/restore-int.h"

#define PSIZE    4096u
#define NBLOCKS  2u
#define MAXGEN   8u
#define ZERO     UINT32_MAX   /* the model's generation of a zero page */

static const uint64_t block_len[NBLOCKS] = { 6u << 20, 2u << 20 };

/* A chain being built: its files, oldest first, and what each page must hold. */
typedef struct {
    char *dir;
    unsigned n;                 /* files in the chain */
    char *path[MAXGEN];         /* path[0]: the full snapshot; path[n-1]: the newest child */
    uint32_t *gen[NBLOCKS];     /* per page: the generation of its content, or ZERO */
} chain;

static uint64_t npages(unsigned b)
{
    return block_len[b] / PSIZE;
}

/* The bytes of page @i of block @b in generation @g. */
static void page_bytes(uint8_t *p, unsigned b, uint64_t i, uint32_t g)
{
    if (g == ZERO) {
        memset(p, 0, PSIZE);
        return;
    }
    sl_test_fill_page(p, PSIZE, i, ((uint64_t)g << 8) | (b + 1), 0);
}

static sl_writer *new_writer(const char *path)
{
    g_autoptr(GError) err = NULL;
    sl_writer *w = sl_writer_new(path, &err);

    assert_non_null(w);
    return w;
}

static void add_blocks(sl_writer *w)
{
    g_autoptr(GError) err = NULL;

    for (unsigned b = 0; b < NBLOCKS; b++) {
        g_autofree char *name = g_strdup_printf("b%u", b);
        if (sl_writer_add_block(w, name, block_len[b], PSIZE, -1, &err) != (int)b) {
            fail_msg("add_block: %s", err->message);
        }
    }
}

static void write_page(sl_writer *w, unsigned b, uint64_t i, uint32_t g)
{
    g_autoptr(GError) err = NULL;
    uint8_t page[PSIZE];

    page_bytes(page, b, i, g);
    if (!sl_writer_write(w, b, i * PSIZE, page, PSIZE, &err)) {
        fail_msg("write: %s", err->message);
    }
}

static void finish(sl_writer *w)
{
    g_autoptr(GError) err = NULL;

    if (!sl_writer_finish(w, &err)) {
        fail_msg("finish: %s", err->message);
    }
    sl_writer_free(w);
}

static sl_snapshot *open_ok(const char *path, unsigned flags)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *s = sl_snapshot_open_flags(path, flags, &err);

    if (!s) {
        fail_msg("open %s: %s", path, err->message);
    }
    return s;
}

/* Generation 0: a full snapshot, every fifth page zero. */
static void chain_init(chain *c)
{
    sl_writer *w;

    memset(c, 0, sizeof(*c));
    c->dir = sl_test_tmpdir();
    c->path[0] = g_build_filename(c->dir, "gen0.snap", NULL);
    c->n = 1;
    w = new_writer(c->path[0]);
    add_blocks(w);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        c->gen[b] = g_new(uint32_t, npages(b));
        for (uint64_t i = 0; i < npages(b); i++) {
            c->gen[b][i] = i % 5 == 0 ? ZERO : 0;
            write_page(w, b, i, c->gen[b][i]);
        }
    }
    finish(w);
}

/* A writer for the next generation, a child of the newest file (recorded by name). */
static sl_writer *child_writer(chain *c)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *name = g_strdup_printf("gen%u.snap", c->n);
    g_autofree char *pname = g_path_get_basename(c->path[c->n - 1]);
    sl_snapshot *parent = open_ok(c->path[c->n - 1], 0);
    sl_writer *w;

    assert_true(c->n < MAXGEN);
    c->path[c->n] = g_build_filename(c->dir, name, NULL);
    w = new_writer(c->path[c->n]);
    if (!sl_writer_set_parent(w, parent, pname, &err)) {
        fail_msg("set_parent: %s", err->message);
    }
    sl_snapshot_close(parent); /* the writer keeps what it needs */
    add_blocks(w);
    return w;
}

/*
 * The next generation: about @permille of the pages written, a quarter of
 * them with zeros; page 1 (data so far) always becomes zero and page 0
 * (zero in generation 0) always gets data, so both cases are there.
 */
static void chain_grow(chain *c, GRand *rng, unsigned permille)
{
    uint32_t g = c->n;
    sl_writer *w = child_writer(c);

    for (unsigned b = 0; b < NBLOCKS; b++) {
        for (uint64_t i = 0; i < npages(b); i++) {
            bool hit = i < 2 || g_rand_int_range(rng, 0, 1000) < (gint32)permille;
            if (hit) {
                c->gen[b][i] = i == 1 ? ZERO : i == 0 ? g
                               : g_rand_int_range(rng, 0, 4) == 0 ? ZERO : g;
                write_page(w, b, i, c->gen[b][i]);
            }
        }
    }
    finish(w);
    c->n++;
}

static void chain_clear(chain *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        g_free(c->path[i]);
    }
    for (unsigned b = 0; b < NBLOCKS; b++) {
        g_free(c->gen[b]);
    }
    if (c->dir) {
        sl_test_rmdir(c->dir);
    }
}

/* A chain of @n files with random writes in each child. */
static void chain_build(chain *c, unsigned n, uint32_t seed)
{
    g_autoptr(GRand) rng = g_rand_new_with_seed(seed);

    chain_init(c);
    while (c->n < n) {
        chain_grow(c, rng, 40);
    }
}

/* Pages of block @b at @mem that differ from the model. */
static uint64_t wrong_pages(const chain *c, unsigned b, const uint8_t *mem)
{
    uint8_t want[PSIZE];
    uint64_t bad = 0;

    for (uint64_t i = 0; i < npages(b); i++) {
        page_bytes(want, b, i, c->gen[b][i]);
        bad += memcmp(want, mem + i * PSIZE, PSIZE) != 0;
    }
    return bad;
}

/* Every page of @s read (verified, in runs of 300 pages) against the model. */
static void check_reads(const chain *c, sl_snapshot *s)
{
    for (unsigned b = 0; b < NBLOCKS; b++) {
        g_autofree uint8_t *all = g_malloc(block_len[b]);
        for (uint64_t i = 0; i < npages(b); i += 300) {
            uint64_t n = MIN(300, npages(b) - i);
            assert_int_equal(sl_snapshot_read_pages(s, b, i, n, all + i * PSIZE, true), 0);
        }
        assert_int_equal(wrong_pages(c, b, all), 0);
    }
}

/* sl_eager_load() of every block of @s against the model. */
static void check_eager(const chain *c, sl_snapshot *s)
{
    for (unsigned b = 0; b < NBLOCKS; b++) {
        g_autofree uint8_t *mem = g_malloc0(block_len[b]);
        assert_int_equal(sl_eager_load(s, b, mem, 2, true), 0);
        assert_int_equal(wrong_pages(c, b, mem), 0);
    }
}

static void need_uffd(void)
{
    g_autofree char *why = NULL;
    bool have = sl_test_have_uffd(&why);
    SL_TEST_NEED("uffd", have, why);
}

/* A restore of @s configured by @cfg, every block in fresh memory of @kind
 * (@mem, NBLOCKS of them) and attached; not started. */
static sl_restore *new_restore(sl_snapshot *s, const sl_restore_config *cfg,
                               sl_backend_kind kind, sl_mem *mem)
{
    g_autoptr(GError) err = NULL;
    sl_restore *r = sl_restore_new(s, cfg, &err);

    assert_non_null(r);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        g_autofree char *name = g_strdup_printf("b%u", b);
        assert_true(sl_mem_map(&mem[b], kind, block_len[b], 0, &err));
        assert_true(sl_mem_attach(r, name, &mem[b], &err));
    }
    return r;
}

/*
 * A lazy restore of @s into fresh memory of @kind: while one loader
 * runs, this thread reads every page in random order (faults), then the
 * restore must complete with every page placed once, as the model says.
 */
static void check_restore(const chain *c, sl_snapshot *s, sl_backend_kind kind)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GRand) rng = g_rand_new_with_seed(7);
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1 };
    sl_stats st = { .size = sizeof(st) };
    sl_mem mem[NBLOCKS] = { { 0 } };
    uint8_t want[PSIZE];
    sl_restore *r;

    need_uffd();
    r = new_restore(s, &cfg, kind, mem);
    if (!sl_restore_start(r, &err)) {
        fail_msg("start: %s", err->message);
    }
    for (unsigned k = 0; k < 2000; k++) {
        unsigned b = (unsigned)g_rand_int_range(rng, 0, NBLOCKS);
        uint64_t i = (uint64_t)g_rand_int_range(rng, 0, (gint32)npages(b));
        page_bytes(want, b, i, c->gen[b][i]);
        assert_memory_equal(mem[b].host + i * PSIZE, want, PSIZE);
    }
    assert_int_equal(sl_restore_wait(r, -1), 0);
    sl_restore_stop(r);
    sl_restore_get_stats(r, &st);
    assert_int_equal(st.pages_placed_twice, 0);
    assert_int_equal(st.pages_never_placed, 0);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        assert_int_equal(wrong_pages(c, b, mem[b].host), 0);
    }
    sl_restore_free(r);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        sl_mem_release(&mem[b]);
    }
}

/*
 * A parent that cannot be read any more (truncated after the chain was
 * opened) fails the restore of its child with -EIO, and the error names
 * every file of the chain, the parent among them (found by a user's test:
 * only the child, which was intact, was named), and the parent as the
 * file that shrank (found by review: the child was named as the cause).
 */
static void test_an_unreadable_parent_is_named_in_the_restore_error(void **state)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *shrank = NULL;
    sl_restore_config cfg = { .size = sizeof(cfg), .loader_threads = 1 };
    sl_mem mem[NBLOCKS] = { { 0 } };
    sl_snapshot *s;
    sl_restore *r;
    chain c;

    (void)state;
    need_uffd();
    chain_build(&c, 2, 11);
    s = open_ok(c.path[1], 0);
    r = new_restore(s, &cfg, SL_BACKEND_ANON, mem);
    assert_int_equal(truncate(c.path[0], 4096), 0);
    assert_true(sl_restore_start(r, &err));
    assert_int_equal(sl_restore_wait(r, 60000), -EIO);
    sl_restore_stop(r);
    err = sl_restore_error(r);
    shrank = g_strdup_printf("%s shrank from ", c.path[0]);
    if (!err || !strstr(err->message, c.path[0]) || !strstr(err->message, c.path[1]) ||
        !strstr(err->message, shrank)) {
        fail_msg("the error does not name the chain's files and the parent that shrank: %s",
                 err ? err->message : "none");
    }
    sl_restore_free(r);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        sl_mem_release(&mem[b]);
    }
    sl_snapshot_close(s);
    chain_clear(&c);
}

/*
 * How many around assistants a lazy restore of @s runs once it served a
 * fault (no loaders: the restore is still running then).  A new thread
 * names itself once it runs: we wait up to 10 s for @expected of them
 * (a loaded host may run it late), and 300 ms when none is expected.
 */
static unsigned around_assistants(sl_snapshot *s, unsigned expected)
{
    g_autoptr(GError) err = NULL;
    sl_restore_config cfg = { .size = sizeof(cfg), .no_loaders = true };
    sl_restore *r;
    sl_mem mem = { 0 };
    unsigned n;

    need_uffd();
    r = sl_restore_new(s, &cfg, &err);
    assert_non_null(r);
    assert_true(sl_mem_map(&mem, SL_BACKEND_ANON, block_len[0], 0, &err));
    assert_true(sl_mem_attach(r, "b0", &mem, &err));
    if (!sl_restore_start(r, &err)) {
        fail_msg("start: %s", err->message);
    }
    (void)*(volatile uint8_t *)mem.host; /* served by the fault thread, now running */
    for (int i = 0; i < (expected ? 1000 : 30) &&
                    (n = sl_test_threads_named("sl-fault-around")) < MAX(expected, 1); i++) {
        g_usleep(10000);
    }
    sl_restore_stop(r);
    sl_restore_free(r);
    sl_mem_release(&mem);
    return n;
}

/*
 * A chain cannot tell a cold block (cachestat sees one layer's file), so
 * its faults always read whole blocks: no around assistant is started to
 * wait for jobs it will never get.  The full snapshot alone runs one.
 */
static void test_a_chain_restore_runs_no_around_assistant(void **state)
{
    chain c;
    sl_snapshot *s;

    (void)state;
    SL_TEST_NEED_CACHESTAT("without it no block is told cold, so no restore runs an assistant");
    chain_build(&c, 2, 5);
    s = open_ok(c.path[0], 0);
    assert_int_equal(around_assistants(s, 1), 1);
    sl_snapshot_close(s);
    s = open_ok(c.path[1], 0);
    assert_non_null(sl_snapshot_parent(s));
    assert_int_equal(around_assistants(s, 0), 0);
    sl_snapshot_close(s);
    chain_clear(&c);
}

/* ------------------------------------------------------------------ */
/* 1. Every page from the newest layer                                */
/* ------------------------------------------------------------------ */

enum { VIA_READ, VIA_ANON, VIA_SHMEM };

typedef struct {
    const char *name;
    unsigned flags;   /* open flags */
    int via;          /* how the pages are checked */
} newest_case;

static const newest_case newest_cases[] = {
    { "eager-open/read-pages-and-eager-load", 0, VIA_READ },
    { "lazy-open/read-pages-and-eager-load", SL_OPEN_LAZY_CHECKSUMS, VIA_READ },
    { "eager-open/restore-anon", 0, VIA_ANON },
    { "lazy-open/restore-anon", SL_OPEN_LAZY_CHECKSUMS, VIA_ANON },
    { "eager-open/restore-shmem", 0, VIA_SHMEM },
    { "lazy-open/restore-shmem", SL_OPEN_LAZY_CHECKSUMS, VIA_SHMEM },
};

static void test_child_restores_every_page_from_the_newest_layer(void **state)
{
    const newest_case *tc = *state;
    chain c;
    sl_snapshot *s;

    chain_build(&c, 3, 42);
    s = open_ok(c.path[2], tc->flags);
    assert_non_null(sl_snapshot_parent(s));
    assert_non_null(sl_snapshot_parent(sl_snapshot_parent(s)));
    assert_null(sl_snapshot_parent(sl_snapshot_parent(sl_snapshot_parent(s))));
    if (tc->via == VIA_READ) {
        check_reads(&c, s);
        check_eager(&c, s);
    } else {
        check_restore(&c, s, tc->via == VIA_ANON ? SL_BACKEND_ANON : SL_BACKEND_SHMEM);
    }
    sl_snapshot_close(s);
    chain_clear(&c);
}

/*
 * The fault thread's gathered reads of a child (sl_snapshot_gather_fd),
 * which read a chain run by run around the skipped pages: over random
 * ranges of both blocks of a three-file chain, with a skipped range
 * below, inside, across either end of or outside the range (or none),
 * every page holds its newest layer's bytes (a page a child wrote with
 * zeros: zeros, never the parent's data), a page no layer stores holds
 * zeros (or is left alone when the memory is zeroed already), and a
 * skipped page is left alone.
 */
static void test_gathered_reads_of_a_child_take_each_page_from_its_newest_layer(void **state)
{
    g_autoptr(GRand) rng = g_rand_new_with_seed(5);
    uint8_t want[PSIZE], mark[PSIZE];
    chain c;
    sl_snapshot *s;

    (void)state;
    memset(mark, 0xa5, PSIZE);
    chain_build(&c, 3, 42);
    s = open_ok(c.path[2], 0);
    for (unsigned k = 0; k < 300; k++) {
        unsigned b = k % NBLOCKS;
        uint64_t first = (uint64_t)g_rand_int_range(rng, 0, (gint32)npages(b));
        uint64_t n = (uint64_t)g_rand_int_range(rng, 0, (gint32)MIN(600, npages(b) - first) + 1);
        int64_t from = (int64_t)first + g_rand_int_range(rng, -40, (gint32)n + 40);
        uint64_t skip = from < 0 ? 0 : (uint64_t)from;
        uint64_t nskip = k % 4 ? (uint64_t)g_rand_int_range(rng, 1, 80) : 0;
        bool zeroed = k % 3 == 0;
        g_autofree uint8_t *buf = g_malloc(MAX(n, 1) * PSIZE);

        memset(buf, 0xa5, MAX(n, 1) * PSIZE);
        assert_int_equal(sl_snapshot_gather_fd(s, s->fd, b, first, n, buf, zeroed, skip, nskip),
                         0);
        for (uint64_t i = first; i < first + n; i++) {
            bool skipped = i >= skip && i < skip + nskip;
            if (skipped || (zeroed && !sl_snapshot_page_present(s, b, i))) {
                memcpy(want, mark, PSIZE);
            } else {
                page_bytes(want, b, i, c.gen[b][i]);
            }
            if (memcmp(buf + (i - first) * PSIZE, want, PSIZE)) {
                fail_msg("block %u page %" G_GUINT64_FORMAT " of [%" G_GUINT64_FORMAT ", +%"
                         G_GUINT64_FORMAT ") skip [%" G_GUINT64_FORMAT ", +%" G_GUINT64_FORMAT
                         ") zeroed %d is wrong", b, i, first, n, skip, nskip, zeroed);
            }
        }
    }
    sl_snapshot_close(s);
    chain_clear(&c);
}

/* A child's present pages and checksums answer from the layer that stores each page. */
static void test_child_answers_presence_and_checksums_from_the_owning_layer(void **state)
{
    chain c;
    uint64_t zero = sl_zero_hash(PSIZE);
    uint8_t want[PSIZE];

    chain_build(&c, 3, 9);
    for (unsigned f = 0; f < 2; f++) {
        sl_snapshot *s = open_ok(c.path[2], f ? SL_OPEN_LAZY_CHECKSUMS : 0);
        sl_snapshot *mid = sl_snapshot_parent(s), *base = sl_snapshot_parent(mid);
        for (unsigned b = 0; b < NBLOCKS; b++) {
            uint64_t present = 0;
            for (uint64_t i = 0; i < npages(b); i++) {
                /* Stored somewhere in the chain: data, or a zero page a child stored. */
                bool stored = sl_bit_test(s->blocks[b].own_bitmap, i) ||
                              sl_bit_test(mid->blocks[b].own_bitmap, i) ||
                              sl_bit_test(base->blocks[b].bitmap, i);
                uint64_t cs = sl_snapshot_page_checksum(s, b, i);
                page_bytes(want, b, i, c.gen[b][i]);
                assert_int_equal(sl_snapshot_page_present(s, b, i), stored);
                assert_int_equal(cs, stored ? sl_hash(want, PSIZE) : 0);
                assert_true(c.gen[b][i] != ZERO || cs == 0 || cs == zero);
                assert_true(sl_snapshot_page_matches(s, b, i, want));
                present += stored;
            }
            sl_block_info bi;
            assert_true(sl_snapshot_block(s, b, &bi));
            assert_int_equal(bi.present_pages, present);
            assert_true(sl_snapshot_stored_pages(s, b) < present);
        }
        sl_snapshot_close(s);
    }
    chain_clear(&c);
}

/* ------------------------------------------------------------------ */
/* 2. Zero pages                                                      */
/* ------------------------------------------------------------------ */

static void test_zeroed_page_in_child_is_not_resurrected_from_parent(void **state)
{
    uint8_t buf[3 * PSIZE], zeros[PSIZE] = { 0 };
    chain c;
    sl_writer *w;
    sl_snapshot *s;

    chain_init(&c);
    assert_int_equal(c.gen[0][2], 0); /* data in the parent */
    w = child_writer(&c);
    write_page(w, 0, 2, ZERO);      /* becomes zero */
    write_page(w, 0, 3, 1);         /* written with data first... */
    write_page(w, 0, 3, ZERO);      /* ...then with zeros: the data is punched out */
    write_page(w, 0, 4, 1);
    finish(w);
    c.n++;
    c.gen[0][2] = c.gen[0][3] = ZERO;
    c.gen[0][4] = 1;
    for (unsigned f = 0; f < 2; f++) {
        s = open_ok(c.path[1], f ? SL_OPEN_LAZY_CHECKSUMS : 0);
        assert_int_equal(sl_snapshot_read_pages(s, 0, 2, 3, buf, true), 0);
        assert_memory_equal(buf, zeros, PSIZE);
        assert_memory_equal(buf + PSIZE, zeros, PSIZE);
        assert_true(sl_snapshot_page_present(s, 0, 2)); /* stored, so it hides the parent's */
        assert_int_equal(sl_snapshot_page_checksum(s, 0, 2), sl_zero_hash(PSIZE));
        assert_int_equal(sl_snapshot_stored_pages(s, 0), 3);
        check_reads(&c, s);
        if (f == 0) {
            check_eager(&c, s);
        } else {
            check_restore(&c, s, SL_BACKEND_ANON);
        }
        sl_snapshot_close(s);
    }
    chain_clear(&c);
}

/* ------------------------------------------------------------------ */
/* 3. What a chain refuses                                            */
/* ------------------------------------------------------------------ */

/* @path opened with @flags: with @ancestors if not NULL, else with @parent if not NULL. */
static sl_snapshot *open_with(const char *path, const char *parent,
                              const char *const *ancestors, unsigned flags, GError **err)
{
    if (ancestors) {
        return sl_snapshot_open_ancestors(path, ancestors, flags, err);
    }
    return parent ? sl_snapshot_open_chain(path, parent, flags, err)
                  : sl_snapshot_open_flags(path, flags, err);
}

/* Opening @path (as open_with()) fails, both eagerly and lazily, and its
 * message holds every needle. */
static void expect_refused_with(const char *path, const char *parent,
                                const char *const *ancestors, const char *const *needles)
{
    for (unsigned f = 0; f < 2; f++) {
        g_autoptr(GError) err = NULL;
        sl_snapshot *s = open_with(path, parent, ancestors, f ? SL_OPEN_LAZY_CHECKSUMS : 0,
                                   &err);
        assert_null(s);
        assert_non_null(err);
        for (unsigned i = 0; needles[i]; i++) {
            if (!strstr(err->message, needles[i])) {
                fail_msg("'%s' not in: %s", needles[i], err->message);
            }
        }
    }
}

/* Opening @path (with @parent, if not NULL) fails, and its message holds every needle. */
static void expect_open_refused(const char *path, const char *parent, const char *const *needles)
{
    expect_refused_with(path, parent, NULL, needles);
}

/*
 * A failure deep in a chain is one short line: the child, the link where
 * it lies and that file's own error, not every file between (found by a
 * user's test: a 63-link chain whose base was missing gave a 3 KB line).
 */
static void test_a_failure_deep_in_a_chain_names_the_child_and_the_failing_link(void **state)
{
    g_autofree char *gone = NULL, *want = NULL;
    g_autoptr(GError) err = NULL;
    chain c;

    chain_build(&c, 5, 23);
    gone = g_strdup_printf("%s.gone", c.path[0]);
    assert_int_equal(rename(c.path[0], gone), 0);
    assert_null(sl_snapshot_open(c.path[4], &err));
    want = g_strdup_printf("%s: down its chain, at link 3: %s: its parent (recorded as "
                           "'gen0.snap'): ", c.path[4], c.path[1]);
    if (!g_str_has_prefix(err->message, want) || strstr(err->message, "gen2.snap") ||
        strstr(err->message, "gen3.snap")) {
        fail_msg("wanted '%s...', naming no file between: %s", want, err->message);
    }
    assert_int_equal(rename(gone, c.path[0]), 0);
    chain_clear(&c);
}

/* Copies file @from over @to. */
static void copy_file_to(const char *from, const char *to)
{
    g_autofree char *data = NULL;
    gsize len;

    assert_true(g_file_get_contents(from, &data, &len, NULL));
    assert_true(g_file_set_contents(to, data, (gssize)len, NULL));
}

/*
 * A file in the middle of a chain replaced by another chain's file of the
 * same name: the refusal names it as the parent its child does not
 * record, not its own parent (found by a user's test: the walk failed
 * below the stranger first, blaming the right file under it).
 */
static void test_a_stranger_in_the_middle_of_a_chain_is_the_one_named(void **state)
{
    g_autofree char *want = NULL;
    chain c, d;

    chain_build(&c, 4, 21);
    chain_build(&d, 4, 22);
    copy_file_to(d.path[2], c.path[2]);
    want = g_strdup_printf("%s: its parent %s holds other content", c.path[3], c.path[2]);
    expect_open_refused(c.path[3], NULL, (const char *const[]){ want, NULL });
    chain_clear(&d);
    chain_clear(&c);
}

static void test_child_refuses_a_parent_with_other_content(void **state)
{
    chain c;
    sl_writer *w;

    chain_build(&c, 2, 5);
    /* The parent saved again with one page changed. */
    w = new_writer(c.path[0]);
    add_blocks(w);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        for (uint64_t i = 0; i < npages(b); i++) {
            write_page(w, b, i, b == 1 && i == 77 ? 3 : c.gen[b][i] == ZERO ? ZERO : 0);
        }
    }
    finish(w);
    expect_open_refused(c.path[1], NULL, (const char *const[]){ c.path[1], c.path[0],
                        "holds other content than the snapshot it was made from", NULL });
    chain_clear(&c);
}

static void test_child_with_missing_parent_names_the_path(void **state)
{
    chain c;

    chain_build(&c, 3, 6);
    assert_int_equal(unlink(c.path[0]), 0);
    expect_open_refused(c.path[2], NULL, (const char *const[]){ c.path[2], c.path[1],
                        c.path[0], "No such file or directory", NULL });
    chain_clear(&c);
}

static void test_open_chain_takes_the_parent_from_the_caller(void **state)
{
    chain c;
    char *other = sl_test_tmpdir();
    g_autofree char *moved = g_build_filename(other, "moved.snap", NULL);
    g_autofree char *base = g_build_filename(other, "gen0.snap", NULL);
    sl_snapshot *s;

    chain_build(&c, 3, 8);
    assert_int_equal(rename(c.path[1], moved), 0);
    expect_open_refused(c.path[2], NULL, (const char *const[]){ "gen1.snap", NULL });
    /* The moved parent finds its own parent by its recorded name: not beside it any more. */
    expect_open_refused(c.path[2], moved, (const char *const[]){ moved, "gen0.snap", NULL });
    assert_int_equal(rename(c.path[0], base), 0);
    s = sl_snapshot_open_chain(c.path[2], moved, 0, NULL);
    assert_non_null(s);
    assert_string_equal(sl_snapshot_path(sl_snapshot_parent(s)), moved);
    check_reads(&c, s);
    sl_snapshot_close(s);
    /* A snapshot without parent has none to replace. */
    expect_open_refused(base, moved, (const char *const[]){ base, "no parent section", NULL });
    sl_test_rmdir(other);
    chain_clear(&c);
}

/*
 * A chain of three whose parent and grandparent move, each keeping its
 * name, to two different directories (@apart), so that the child's
 * recorded path and the parent's both lead nowhere, or together to one.
 */
typedef struct {
    chain c;
    char *pdir, *gdir;  /* where the parent and the grandparent go (one with !apart) */
    char *parent, *grand;
} split_chain;

static void split_chain_build(split_chain *m, bool apart)
{
    chain_build(&m->c, 3, 17);
    m->pdir = sl_test_tmpdir();
    m->gdir = apart ? sl_test_tmpdir() : m->pdir;
    m->parent = g_build_filename(m->pdir, "gen1.snap", NULL);
    m->grand = g_build_filename(m->gdir, "gen0.snap", NULL);
}

static void split_chain_move(split_chain *m)
{
    assert_int_equal(rename(m->c.path[1], m->parent), 0);
    assert_int_equal(rename(m->c.path[0], m->grand), 0);
}

static void split_chain_clear(split_chain *m)
{
    g_free(m->parent);
    g_free(m->grand);
    if (m->gdir != m->pdir) {
        sl_test_rmdir(m->gdir);
    }
    sl_test_rmdir(m->pdir);
    chain_clear(&m->c);
}

/*
 * Without ancestors, and with the parent alone, the open fails naming the
 * recorded path it missed; with both (eager and lazy) every page reads as
 * the model holds it, each layer from the file given; an empty entry
 * keeps the recorded path.
 */
static void test_open_ancestors_takes_every_moved_ancestor(void **state)
{
    g_autofree char *near_parent = NULL;
    split_chain m;

    split_chain_build(&m, true);
    split_chain_move(&m);
    near_parent = g_build_filename(m.pdir, "gen0.snap", NULL);
    expect_open_refused(m.c.path[2], NULL, (const char *const[]){ m.c.path[2], m.c.path[1],
                        "No such file or directory", NULL });
    expect_open_refused(m.c.path[2], m.parent, (const char *const[]){ m.parent, near_parent,
                        "No such file or directory", NULL });
    expect_refused_with(m.c.path[2], NULL, (const char *const[]){ m.parent, "", NULL },
                        (const char *const[]){ near_parent, "No such file", NULL });
    for (unsigned f = 0; f < 2; f++) {
        g_autoptr(GError) err = NULL;
        sl_snapshot *s = sl_snapshot_open_ancestors(
            m.c.path[2], (const char *const[]){ m.parent, m.grand, NULL },
            f ? SL_OPEN_LAZY_CHECKSUMS : 0, &err);
        if (!s) {
            fail_msg("open with both ancestors: %s", err->message);
        }
        assert_int_equal(sl_snapshot_chain_length(s), 3);
        assert_string_equal(sl_snapshot_path(sl_snapshot_parent(s)), m.parent);
        assert_string_equal(sl_snapshot_path(sl_snapshot_parent(sl_snapshot_parent(s))),
                            m.grand);
        check_reads(&m.c, s);
        sl_snapshot_close(s);
    }
    split_chain_clear(&m);
}

/*
 * A file with other content given as an ancestor, at either link, is
 * refused naming it; a list longer than the chain is refused naming the
 * extra path; a NULL list is an invalid argument.
 */
static void test_open_ancestors_refuses_wrong_files_and_too_many(void **state)
{
    g_autofree char *extra = NULL;
    g_autoptr(GError) err = NULL;
    split_chain m;
    chain other;

    split_chain_build(&m, true);
    split_chain_move(&m);
    chain_build(&other, 2, 99); /* its gen1 is no file of m's chain */
    extra = g_build_filename(m.gdir, "extra.snap", NULL);
    expect_refused_with(m.c.path[2], NULL, (const char *const[]){ m.grand, NULL },
                        (const char *const[]){ m.grand, "holds other content", NULL });
    expect_refused_with(m.c.path[2], NULL, (const char *const[]){ m.parent, other.path[1], NULL },
                        (const char *const[]){ m.parent, other.path[1], "holds other content",
                                               NULL });
    expect_refused_with(m.c.path[2], NULL,
                        (const char *const[]){ m.parent, m.grand, extra, NULL },
                        (const char *const[]){ m.c.path[2], extra,
                                               "one more than the chain has", NULL });
    expect_refused_with(m.grand, NULL, (const char *const[]){ extra, NULL },
                        (const char *const[]){ m.grand, extra, "not an incremental snapshot",
                                               NULL });
    assert_null(sl_snapshot_open_ancestors(m.c.path[2], NULL, 0, &err));
    assert_true(g_error_matches(err, SL_ERROR, SL_ERROR_INVALID));
    chain_clear(&other);
    split_chain_clear(&m);
}

/*
 * A child reached through a symbolic link in another directory: its parent,
 * recorded by name beside the child, is found beside the file the link
 * leads to (the directory of the link holds no parent).
 */
static void test_child_opened_through_a_symlink_finds_its_parent_beside_it(void **state)
{
    chain c;
    char *other = sl_test_tmpdir();
    g_autofree char *link = g_build_filename(other, "child-link.snap", NULL);
    sl_snapshot *s;

    chain_build(&c, 3, 8);
    assert_int_equal(symlink(c.path[2], link), 0);
    s = sl_snapshot_open(link, NULL);
    assert_non_null(s);
    assert_string_equal(sl_snapshot_path(sl_snapshot_parent(s)), c.path[1]);
    check_reads(&c, s);
    sl_snapshot_close(s);
    sl_test_rmdir(other);
    chain_clear(&c);
}

/* A child of generation 0 whose parent section is @sec (@len bytes), written raw. */
static char *child_with_section(chain *c, const void *sec, size_t len, unsigned copies)
{
    g_autoptr(GError) err = NULL;
    char *path = g_build_filename(c->dir, "raw-child.snap", NULL);
    sl_writer *w = new_writer(path);

    add_blocks(w);
    write_page(w, 0, 9, 5);
    for (unsigned i = 0; i < copies; i++) {
        assert_true(sl_writer_add_section(w, SL_SECTION_PARENT, sec, len, &err));
    }
    finish(w);
    return path;
}

typedef struct {
    const char *name;
    int cut;             /* bytes of the section kept (-1: all) */
    uint32_t plen;       /* path length written in the header (0: the real one) */
    uint32_t flags;
    const char *path;    /* the path bytes (may hold a NUL: pathlen says how many) */
    size_t pathlen;
    unsigned copies;
    const char *needle;
} section_case;

static const section_case section_cases[] = {
    { "header cut short", 10, 0, 0, "gen0.snap", 9, 1,
      "10 bytes, shorter than its 24-byte header" },
    { "unknown flags", -1, 0, 1, "gen0.snap", 9, 1, "flags 0x1 are not known" },
    { "empty path", -1, 0, 0, "", 0, 1, "path length 0 is not between 1 and 4096" },
    { "path cut short", -1, 100, 0, "gen0.snap", 9, 1,
      "a 24-byte header and a 100-byte path make 124" },
    { "path with a NUL", -1, 0, 0, "gen0\0.snap", 10, 1, "the parent's path holds a NUL byte" },
    { "path that drives a terminal", -1, 0, 0, "\x1b[2J", 4, 1,
      "the parent's path holds control byte 0x1b" },
    { "two parent sections", -1, 0, 0, "gen0.snap", 9, 2, "2 parent sections" },
    { "path beyond any length", -1, 0, 0, NULL, 5000, 1,
      "more than a header and the longest path" },
    { "blocks without the delta flag", -1, 0, 0, "gen0.snap", 9, 1,
      "block 0 ('b0'): no delta flag (0x2)" },
};

static void test_bad_parent_sections_are_refused_by_name(void **state)
{
    const section_case *tc = *state;
    g_autofree uint8_t *sec = g_malloc0(SL_PARENT_HDR + tc->pathlen);
    g_autofree char *path = NULL;
    uint8_t id[SL_IDENTITY_LEN];
    sl_snapshot *base;
    chain c;

    chain_init(&c);
    base = open_ok(c.path[0], 0);
    assert_true(sl_snapshot_identity(base, id, NULL));
    sl_snapshot_close(base);
    memcpy(sec, id, sizeof(id));
    sl_put_le32(sec + SL_IDENTITY_LEN, tc->plen ? tc->plen : (uint32_t)tc->pathlen);
    sl_put_le32(sec + SL_IDENTITY_LEN + 4, tc->flags);
    if (tc->path) {
        memcpy(sec + SL_PARENT_HDR, tc->path, tc->pathlen);
    } else {
        memset(sec + SL_PARENT_HDR, 'a', tc->pathlen);
    }
    path = child_with_section(&c, sec, tc->cut >= 0 ? (size_t)tc->cut
                                                    : SL_PARENT_HDR + tc->pathlen, tc->copies);
    expect_open_refused(path, NULL, (const char *const[]){ path, tc->needle, NULL });
    chain_clear(&c);
}

/* Flips a bit of byte @off of @path. */
static void flip_byte(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    uint8_t v;

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &v, 1, (off_t)off), 1);
    v ^= 0x20;
    assert_int_equal(pwrite(fd, &v, 1, (off_t)off), 1);
    close(fd);
}

static uint64_t file_size_of(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static void test_corrupt_or_truncated_child_is_refused(void **state)
{
    chain c;
    sl_snapshot *s;
    uint64_t off = 0;

    chain_build(&c, 2, 10);
    s = open_ok(c.path[1], 0);
    for (unsigned i = 0; i < s->nsections; i++) {
        off = s->sections[i].type == SL_SECTION_PARENT ? s->sections[i].offset : off;
    }
    sl_snapshot_close(s);
    flip_byte(c.path[1], off + SL_PARENT_HDR + 1);
    expect_open_refused(c.path[1], NULL, (const char *const[]){ c.path[1],
                        "parent section: its data does not match its checksum", NULL });
    flip_byte(c.path[1], off + SL_PARENT_HDR + 1);
    s = open_ok(c.path[1], 0); /* as it was */
    sl_snapshot_close(s);
    assert_int_equal(truncate(c.path[1], (off_t)(file_size_of(c.path[1]) - 4096)), 0);
    expect_open_refused(c.path[1], NULL, (const char *const[]){ c.path[1], "truncated", NULL });
    chain_clear(&c);
}

static void test_chain_that_loops_is_refused(void **state)
{
    g_autoptr(GError) err = NULL;
    chain c;
    sl_snapshot *base;
    g_autofree char *a = NULL, *b = NULL;
    sl_writer *w;

    chain_init(&c);
    a = g_build_filename(c.dir, "a.snap", NULL);
    b = g_build_filename(c.dir, "b.snap", NULL);
    /* b: a child of gen0's content that names a.snap; a: a child of b. */
    base = open_ok(c.path[0], 0);
    w = new_writer(b);
    assert_true(sl_writer_set_parent(w, base, "a.snap", &err));
    add_blocks(w);
    finish(w);
    sl_snapshot_close(base);
    base = sl_snapshot_open_chain(b, c.path[0], 0, &err);
    assert_non_null(base);
    w = new_writer(a);
    assert_true(sl_writer_set_parent(w, base, "b.snap", &err));
    add_blocks(w);
    finish(w);
    sl_snapshot_close(base);
    expect_open_refused(a, NULL, (const char *const[]){ a, b, "is already in its chain "
                        "(the chain loops)", NULL });
    chain_clear(&c);
}

/*
 * Rewrites the parent identity snapshot @path records to @id, with the
 * checksums that cover it (the section's, the tables', the header's): a
 * file whose chain is consistent where the writer would refuse to make it,
 * as only a hostile writer does.
 */
static void forge_parent_identity(const char *path, const uint8_t id[SL_IDENTITY_LEN])
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    uint8_t hdr[64];
    uint64_t bt, st;
    size_t btl, stl;
    g_autofree uint8_t *tables = NULL;

    assert_true(fd >= 0 && pread(fd, hdr, sizeof(hdr), 0) == sizeof(hdr));
    bt = sl_le64(hdr + 32);
    st = sl_le64(hdr + 40);
    btl = (size_t)sl_le32(hdr + 24) * 128;
    stl = (size_t)sl_le32(hdr + 28) * 32;
    tables = g_malloc(btl + stl);
    assert_true(pread(fd, tables, btl, (off_t)bt) == (ssize_t)btl);
    assert_true(pread(fd, tables + btl, stl, (off_t)st) == (ssize_t)stl);
    for (size_t e = btl; e < btl + stl; e += 32) {
        uint64_t off = sl_le64(tables + e + 8), len = sl_le64(tables + e + 16);
        g_autofree uint8_t *data = NULL;
        if (sl_le32(tables + e) != SL_SECTION_PARENT) {
            continue;
        }
        data = g_malloc(len);
        assert_true(pread(fd, data, len, (off_t)off) == (ssize_t)len);
        memcpy(data, id, SL_IDENTITY_LEN);
        assert_true(pwrite(fd, data, len, (off_t)off) == (ssize_t)len);
        sl_put_le64(tables + e + 24, sl_hash(data, len));
    }
    assert_true(pwrite(fd, tables + btl, stl, (off_t)st) == (ssize_t)stl);
    sl_put_le64(hdr + 48, sl_hash(tables, btl + stl));
    sl_put_le64(hdr + 56, sl_hash(hdr, 56));
    assert_true(pwrite(fd, hdr, sizeof(hdr), 0) == sizeof(hdr));
    close(fd);
}

static void test_chain_longer_than_the_limit_is_refused(void **state)
{
    g_autoptr(GRand) rng = g_rand_new_with_seed(3);
    chain c;
    sl_snapshot *s;

    chain_init(&c);
    /* Files named gen1..gen64 reuse the path slots: only the model matters. */
    for (unsigned g = 1; g <= SL_MAX_CHAIN; g++) {
        g_autoptr(GError) err = NULL;
        g_autofree char *name = g_strdup_printf("gen%u.snap", g);
        g_autofree char *pname = g_strdup_printf("gen%u.snap", g - 1);
        g_autofree char *ppath = g_build_filename(c.dir, pname, NULL);
        g_autofree char *path = g_build_filename(c.dir, name, NULL);
        sl_snapshot *parent = open_ok(ppath, 0);
        sl_writer *w = new_writer(path);
        uint64_t i = (uint64_t)g_rand_int_range(rng, 0, (gint32)npages(0));
        assert_int_equal(sl_snapshot_chain_length(parent), g);
        if (g == SL_MAX_CHAIN) { /* the writer refuses to make a 65th... */
            g_autofree char *root = g_build_filename(c.dir, "gen0.snap", NULL);
            assert_false(sl_writer_set_parent(w, parent, pname, &err));
            assert_non_null(strstr(err->message, "chain already holds 64 snapshots"));
            g_clear_error(&err);
            /* ...which a file made against a shallow parent but naming the deep one,
             * as in test_chain_that_loops_is_refused, still gives the reader. */
            sl_snapshot_close(parent);
            parent = open_ok(root, 0);
            assert_true(sl_writer_set_parent(w, parent, pname, &err));
        } else {
            assert_true(sl_writer_set_parent(w, parent, pname, &err));
        }
        sl_snapshot_close(parent);
        add_blocks(w);
        c.gen[0][i] = g;
        write_page(w, 0, i, g);
        finish(w);
        if (g == SL_MAX_CHAIN - 1) { /* 64 files: the longest chain */
            s = open_ok(path, SL_OPEN_LAZY_CHECKSUMS);
            check_reads(&c, s);
            sl_snapshot_close(s);
        }
        if (g == SL_MAX_CHAIN) {
            /* Made over gen0, it records gen0's identity: refused at its
             * parent, the first file that is not what it records. */
            expect_open_refused(path, NULL, (const char *const[]){ path, "holds other content",
                                NULL });
            /* Recording gen63's own identity, as a hostile writer could:
             * the walk goes down and refuses the 65th file. */
            sl_snapshot *p63 = open_ok(ppath, 0);
            uint8_t id[SL_IDENTITY_LEN];
            assert_true(sl_snapshot_identity(p63, id, NULL));
            sl_snapshot_close(p63);
            forge_parent_identity(path, id);
            expect_open_refused(path, NULL, (const char *const[]){ path,
                                "longer than 64 snapshots", NULL });
        }
    }
    /* chain_clear removes the files of the directory, whatever their names. */
    chain_clear(&c);
}

static void test_parent_without_checksums_is_refused_with_the_fix(void **state)
{
    static const char *const caps[] = { "mapped-ram", NULL };
    qs_block qb = { .idstr = "b0", .length = 1u << 20, .zero_every = 3, .seed = 4 };
    qs_desc d = { .machine = "pc", .caps = caps, .section_id = 2, .blocks = &qb, .nblocks = 1 };
    g_autoptr(GError) err = NULL;
    char *dir = sl_test_tmpdir();
    g_autofree char *mig = g_build_filename(dir, "vm.mig", NULL);
    g_autofree char *child = g_build_filename(dir, "child.snap", NULL);
    uint8_t id[SL_IDENTITY_LEN];
    qs_layout l;
    sl_snapshot *q;
    sl_writer *w;

    assert_true(qs_write(&d, mig, &l, &err));
    qs_layout_clear(&l);
    q = open_ok(mig, 0);
    assert_false(sl_snapshot_identity(q, id, &err));
    assert_non_null(strstr(err->message, "snapload index"));
    g_clear_error(&err);
    w = new_writer(child);
    assert_false(sl_writer_set_parent(w, q, "vm.mig", &err));
    assert_non_null(strstr(err->message, "cannot be the parent"));
    assert_non_null(strstr(err->message, mig));
    sl_writer_free(w);
    sl_snapshot_close(q);
    sl_test_rmdir(dir);
}

static void test_qemu_file_with_its_index_can_be_a_parent(void **state)
{
    static const char *const caps[] = { "mapped-ram", NULL };
    qs_block qb = { .idstr = "b0", .length = 2u << 20, .zero_every = 3, .seed = 4 };
    qs_desc d = { .machine = "pc", .caps = caps, .section_id = 2, .blocks = &qb, .nblocks = 1 };
    g_autoptr(GError) err = NULL;
    char *dir = sl_test_tmpdir();
    g_autofree char *mig = g_build_filename(dir, "vm.mig", NULL);
    g_autofree char *idx = g_strdup_printf("%s.slidx", mig);
    g_autofree char *child = g_build_filename(dir, "child.snap", NULL);
    uint8_t want[PSIZE], got[PSIZE];
    qs_layout l;
    sl_snapshot *q;
    sl_writer *w;

    assert_true(qs_write(&d, mig, &l, &err));
    qs_layout_clear(&l);
    q = open_ok(mig, 0);
    assert_true(sl_index_write(q, idx, NULL, &err));
    sl_snapshot_close(q);
    q = open_ok(mig, 0);
    w = new_writer(child);
    assert_true(sl_writer_set_parent(w, q, "vm.mig", &err));
    sl_snapshot_close(q);
    assert_int_equal(sl_writer_add_block(w, "b0", qb.length, PSIZE, -1, &err), 0);
    memset(want, 0x5a, sizeof(want));
    assert_true(sl_writer_write(w, 0, 7 * PSIZE, want, PSIZE, &err));
    memset(want, 0, sizeof(want));
    assert_true(sl_writer_write(w, 0, 8 * PSIZE, want, PSIZE, &err));
    finish(w);
    for (unsigned f = 0; f < 2; f++) {
        sl_snapshot *s = open_ok(child, f ? SL_OPEN_LAZY_CHECKSUMS : 0);
        for (uint64_t i = 0; i < qb.length / PSIZE; i++) {
            qs_page(&d, 0, i, want);
            if (i == 7 || i == 8) {
                memset(want, i == 7 ? 0x5a : 0, sizeof(want));
            }
            assert_int_equal(sl_snapshot_read_pages(s, 0, i, 1, got, true), 0);
            assert_memory_equal(got, want, PSIZE);
        }
        sl_snapshot_close(s);
    }
    sl_test_rmdir(dir);
}

/* What the writer refuses of a child's blocks. */
typedef struct {
    const char *name;
    const char *block;
    uint64_t length, page_size;
    const char *needle;
} block_case;

static const block_case block_cases[] = {
    { "other name", "c0", 6u << 20, PSIZE, "block 0 is 'c0'" },
    { "other length", "b0", 4u << 20, PSIZE, "(4194304 bytes, 4096-byte pages) here but 'b0' "
      "(6291456 bytes" },
    { "other page size", "b0", 6u << 20, 2u << 20, "2097152-byte pages) here" },
};

static void test_writer_refuses_blocks_unlike_the_parents(void **state)
{
    chain c;
    sl_snapshot *base;

    chain_init(&c);
    base = open_ok(c.path[0], 0);
    for (size_t k = 0; k < G_N_ELEMENTS(block_cases); k++) {
        const block_case *tc = &block_cases[k];
        g_autoptr(GError) err = NULL;
        g_autofree char *path = g_build_filename(c.dir, "child.snap", NULL);
        sl_writer *w = new_writer(path);
        assert_true(sl_writer_set_parent(w, base, "gen0.snap", &err));
        assert_int_equal(sl_writer_add_block(w, tc->block, tc->length, tc->page_size, -1, &err),
                         -1);
        if (!strstr(err->message, tc->needle) || !strstr(err->message, "gen0.snap")) {
            fail_msg("%s: '%s' not in: %s", tc->name, tc->needle, err->message);
        }
        sl_writer_free(w);
    }
    {   /* a block missing at the end, a block too many, a parent set too late */
        g_autoptr(GError) err = NULL;
        g_autofree char *path = g_build_filename(c.dir, "child.snap", NULL);
        sl_writer *w = new_writer(path);
        assert_true(sl_writer_set_parent(w, base, "gen0.snap", &err));
        assert_int_equal(sl_writer_add_block(w, "b0", block_len[0], PSIZE, -1, &err), 0);
        assert_false(sl_writer_finish(w, &err));
        assert_non_null(strstr(err->message, "has 1 blocks, its parent gen0.snap 2"));
        g_clear_error(&err);
        assert_int_equal(sl_writer_add_block(w, "b1", block_len[1], PSIZE, -1, &err), 1);
        assert_int_equal(sl_writer_add_block(w, "b2", PSIZE, PSIZE, -1, &err), -1);
        assert_non_null(strstr(err->message, "has only 2 blocks"));
        g_clear_error(&err);
        write_page(w, 0, 0, 1);
        assert_false(sl_writer_set_parent(w, base, "gen0.snap", &err));
        assert_true(g_error_matches(err, SL_ERROR, SL_ERROR_STATE));
        sl_writer_free(w);
    }
    sl_snapshot_close(base);
    chain_clear(&c);
}

/* ------------------------------------------------------------------ */
/* 4. Identity                                                        */
/* ------------------------------------------------------------------ */

static void identity_of(const char *path, unsigned flags, uint8_t id[SL_IDENTITY_LEN])
{
    sl_snapshot *s = open_ok(path, flags);

    assert_true(sl_snapshot_identity(s, id, NULL));
    sl_snapshot_close(s);
}

/* A child of @parent (recorded as @pname) at @path storing page 9 of block 0, generation 5. */
static void small_child(const char *path, const char *parent, const char *pname)
{
    g_autoptr(GError) err = NULL;
    sl_snapshot *p = open_ok(parent, 0);
    sl_writer *w = new_writer(path);

    assert_true(sl_writer_set_parent(w, p, pname, &err));
    sl_snapshot_close(p);
    add_blocks(w);
    write_page(w, 0, 9, 5);
    finish(w);
}

static void test_identity_follows_content_not_path_or_open_mode(void **state)
{
    uint8_t a[SL_IDENTITY_LEN], b[SL_IDENTITY_LEN], x[SL_IDENTITY_LEN], y[SL_IDENTITY_LEN];
    chain c;
    g_autofree char *copy = NULL, *other = NULL, *c1 = NULL, *c2 = NULL, *data = NULL;
    gsize len;
    sl_writer *w;

    chain_init(&c);
    copy = g_build_filename(c.dir, "copy.snap", NULL);
    assert_true(g_file_get_contents(c.path[0], &data, &len, NULL));
    assert_true(g_file_set_contents(copy, data, (gssize)len, NULL));
    identity_of(c.path[0], 0, a);
    identity_of(copy, SL_OPEN_LAZY_CHECKSUMS, b);
    assert_memory_equal(a, b, sizeof(a));                 /* path, mode: no matter */
    /* Other content: no zero pages this time. */
    other = g_build_filename(c.dir, "other.snap", NULL);
    w = new_writer(other);
    add_blocks(w);
    for (uint64_t i = 0; i < npages(0); i++) {
        write_page(w, 0, i, 0);
    }
    finish(w);
    identity_of(other, 0, b);
    assert_memory_not_equal(a, b, sizeof(a));
    /* The same pages over two parents: two identities, neither a parent's. */
    c1 = g_build_filename(c.dir, "c1.snap", NULL);
    c2 = g_build_filename(c.dir, "c2.snap", NULL);
    small_child(c1, c.path[0], "gen0.snap");
    small_child(c2, other, "other.snap");
    identity_of(c1, 0, x);
    identity_of(c2, SL_OPEN_LAZY_CHECKSUMS, y);
    assert_memory_not_equal(x, y, sizeof(x));
    assert_memory_not_equal(x, a, sizeof(x));
    identity_of(c1, SL_OPEN_LAZY_CHECKSUMS, y);
    assert_memory_equal(x, y, sizeof(x));
    chain_clear(&c);
}

/* ------------------------------------------------------------------ */
/* 5. The CLI                                                         */
/* ------------------------------------------------------------------ */

static uint64_t allocated(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

/*
 * A child that stores no page takes next to no disk for the pages it
 * leaves to its parent: its bitmap and checksum array, zero there, are
 * holes (found by a user's test: an empty child of a 128 MiB guest took
 * 268 KiB, its arrays written out as zeros), and it still opens whole.
 */
static void test_an_empty_child_takes_no_room_for_the_pages_it_leaves_to_its_parent(
    void **state)
{
    const uint64_t len = 256u << 20;
    g_autoptr(GError) err = NULL;
    g_autofree char *dir = sl_test_tmpdir();
    g_autofree char *ppath = g_build_filename(dir, "parent.snap", NULL);
    g_autofree char *cpath = g_build_filename(dir, "child.snap", NULL);
    uint8_t page[PSIZE], got[PSIZE];
    sl_snapshot *p, *c;
    sl_writer *w;

    (void)state;
    sl_test_fill_page(page, PSIZE, 7, 1, 0);
    w = new_writer(ppath);
    assert_int_equal(sl_writer_add_block(w, "b0", len, PSIZE, -1, &err), 0);
    assert_true(sl_writer_write(w, 0, 7 * PSIZE, page, PSIZE, &err));
    finish(w);
    p = open_ok(ppath, 0);
    w = new_writer(cpath);
    assert_true(sl_writer_set_parent(w, p, "parent.snap", &err));
    assert_int_equal(sl_writer_add_block(w, "b0", len, PSIZE, -1, &err), 0);
    finish(w);
    sl_snapshot_close(p);
    if (allocated(cpath) > (64u << 10)) { /* its arrays alone are 520 KiB */
        fail_msg("an empty child of a %" G_GUINT64_FORMAT " MiB guest takes %" G_GUINT64_FORMAT
                 " bytes of disk", len >> 20, allocated(cpath));
    }
    c = open_ok(cpath, 0);
    assert_int_equal(sl_snapshot_read_pages(c, 0, 7, 1, got, true), 0);
    assert_memory_equal(got, page, PSIZE);
    sl_snapshot_close(c);
    sl_test_rmdir(g_steal_pointer(&dir));
}

/* A full snapshot of one 64 MiB block: page i is generation gen[i]. */
static void write_full(const char *path, const uint32_t *gen, uint64_t pages)
{
    g_autoptr(GError) err = NULL;
    sl_writer *w = new_writer(path);

    assert_int_equal(sl_writer_add_block(w, "b0", pages * PSIZE, PSIZE, -1, &err), 0);
    for (uint64_t i = 0; i < pages; i++) {
        write_page(w, 0, i, gen[i]);
    }
    assert_true(sl_writer_add_section(w, SL_SECTION_DEVICE_STATE, "dev", 3, &err));
    finish(w);
}

/* A raw RAM image of one block whose page i is generation gen[i]. */
static void write_raw(const char *path, const uint32_t *gen, uint64_t pages)
{
    FILE *f = fopen(path, "wb");
    uint8_t page[PSIZE];

    assert_non_null(f);
    for (uint64_t i = 0; i < pages; i++) {
        page_bytes(page, 0, i, gen[i]);
        assert_int_equal(fwrite(page, PSIZE, 1, f), 1);
    }
    assert_int_equal(fclose(f), 0);
}

/* How a child is made from the same changes: `delta PARENT NEW`, or
 * `save --raw IMAGE --parent PARENT` (the RAM itself). */
typedef enum { CHILD_BY_DELTA, CHILD_BY_SAVE } child_way;

/* Runs the CLI making @child of @parent by @way from the @pages pages of
 * @gen (the full snapshot @next holds them; for a save they are written as
 * a raw image), with --ancestor for each of @ancestors (NULL-terminated, or
 * NULL); returns its exit status, stderr in *@errs. */
static int make_child_of(child_way way, const char *dir, const char *parent,
                         const char *const *ancestors, const char *next, const uint32_t *gen,
                         uint64_t pages, const char *child, char **errs)
{
    g_autofree char *out = NULL, *raw = g_build_filename(dir, "ram.raw", NULL);
    g_autofree char *dev = g_build_filename(dir, "dev", NULL);
    g_autoptr(GStrvBuilder) a = g_strv_builder_new();
    g_auto(GStrv) argv = NULL;

    if (way == CHILD_BY_DELTA) {
        g_strv_builder_addv(a, (const char *[]){ "delta", parent, next, NULL });
    } else {
        g_autofree char *rawarg = g_strdup_printf("%s:b0", raw);
        write_raw(raw, gen, pages);
        assert_true(g_file_set_contents(dev, "dev", 3, NULL));
        g_strv_builder_addv(a, (const char *[]){ "save", "--raw", rawarg, "--device-state", dev,
                                                 "--parent", parent, NULL });
    }
    for (unsigned i = 0; ancestors && ancestors[i]; i++) {
        g_strv_builder_addv(a, (const char *[]){ "--ancestor", ancestors[i], NULL });
    }
    g_strv_builder_addv(a, (const char *[]){ "-o", child, NULL });
    argv = g_strv_builder_end(a);
    return sl_test_run_cli((const char *const *)argv, &out, errs);
}

/* make_child_of() a parent whose ancestors are where it records them. */
static int make_child(child_way way, const char *dir, const char *parent, const char *next,
                      const uint32_t *gen, uint64_t pages, const char *child, char **errs)
{
    return make_child_of(way, dir, parent, NULL, next, gen, pages, child, errs);
}

/* @text holds @needle, else the test fails showing @text. */
static void expect_in(const char *text, const char *needle)
{
    if (!strstr(text, needle)) {
        fail_msg("'%s' not in:\n%s", needle, text);
    }
}

/* A child made by @way stores exactly the pages that changed (a page that
 * became zero included), takes at most 2 % of the parent's disk space at
 * 1 % changed, reads back equal to the new memory with its device state,
 * and is never written over one of its inputs. */
static void check_child_stores_only_changed_pages(child_way way)
{
    enum { PAGES = (64u << 20) / PSIZE };
    g_autofree uint32_t *gen = g_new0(uint32_t, PAGES);
    g_autoptr(GRand) rng = g_rand_new_with_seed(12);
    char *dir = sl_test_tmpdir();
    g_autofree char *parent = g_build_filename(dir, "parent.snap", NULL);
    g_autofree char *next = g_build_filename(dir, "new.snap", NULL);
    g_autofree char *child = g_build_filename(dir, "child.snap", NULL);
    g_autofree char *errs = NULL, *errs2 = NULL;
    g_autoptr(GBytes) dev = NULL;
    uint64_t changed = 0;
    uint8_t a[PSIZE], b[PSIZE];
    sl_snapshot *s, *n;

    write_full(parent, gen, PAGES);
    for (uint64_t i = 0; i < PAGES; i++) {
        if (g_rand_int_range(rng, 0, 100) == 0) {
            gen[i] = g_rand_int_range(rng, 0, 10) == 0 ? ZERO : 1;
            changed++;
        }
    }
    write_full(next, gen, PAGES);
    if (make_child(way, dir, parent, next, gen, PAGES, child, &errs) != 0) {
        fail_msg("making the child failed: %s", errs);
    }
    expect_in(errs, "differ from its parent");
    print_message("# child %" G_GUINT64_FORMAT " bytes allocated, parent %" G_GUINT64_FORMAT
                  ", %" G_GUINT64_FORMAT " of %u pages changed\n", allocated(child),
                  allocated(parent), changed, PAGES);
    assert_true(allocated(child) * 50 <= allocated(parent)); /* at most 2 % */
    s = open_ok(child, 0);
    n = open_ok(next, 0);
    assert_int_equal(sl_snapshot_stored_pages(s, 0), changed);
    for (uint64_t i = 0; i < PAGES; i++) {
        assert_int_equal(sl_snapshot_read_pages(s, 0, i, 1, a, true), 0);
        assert_int_equal(sl_snapshot_read_pages(n, 0, i, 1, b, true), 0);
        assert_memory_equal(a, b, PSIZE);
    }
    dev = sl_snapshot_read_section(s, SL_SECTION_DEVICE_STATE, NULL);
    assert_non_null(dev);
    assert_int_equal(g_bytes_get_size(dev), 3);
    sl_snapshot_close(n);
    sl_snapshot_close(s);
    /* Never over one of its inputs. */
    assert_int_not_equal(make_child(way, dir, parent, next, gen, PAGES,
                                    way == CHILD_BY_SAVE ? parent : next, &errs2), 0);
    expect_in(errs2, "the snapshot read: the child must be another file");
    sl_test_rmdir(dir);
}

/* The whole of file @path (caller frees). */
static GBytes *contents(const char *path)
{
    gchar *data = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &data, &len, NULL)) {
        fail_msg("%s cannot be read", path);
    }
    return g_bytes_new_take(data, len);
}

/*
 * A grandchild made by @way of a child whose parent moved: without
 * --ancestor it fails naming the parent's recorded path, with a wrong file
 * as --ancestor it fails naming that file, with the moved parent as
 * --ancestor it is written, and then reads back (extract) equal to the new
 * memory and restores with a verify, given its ancestors by --parent.
 */
static void check_grandchild_of_moved_chain(child_way way)
{
    enum { PAGES = (8u << 20) / PSIZE };
    g_autofree uint32_t *gen = g_new0(uint32_t, PAGES);
    char *dir = sl_test_tmpdir(), *away = sl_test_tmpdir();
    g_autofree char *base = g_build_filename(dir, "base.snap", NULL);
    g_autofree char *moved = g_build_filename(away, "base.snap", NULL);
    g_autofree char *mid = g_build_filename(dir, "mid.snap", NULL);
    g_autofree char *top = g_build_filename(dir, "top.snap", NULL);
    g_autofree char *next = g_build_filename(dir, "new.snap", NULL);
    g_autofree char *want = g_build_filename(dir, "want.raw", NULL);
    g_autofree char *got = g_build_filename(dir, "got.raw", NULL);
    g_autofree char *errs = NULL, *so = NULL, *se = NULL, *no_uffd = NULL;
    g_autoptr(GBytes) a = NULL, b = NULL;

    write_full(base, gen, PAGES);
    for (uint64_t i = 0; i < PAGES; i += 7) {
        gen[i] = 1;
    }
    write_full(next, gen, PAGES);
    if (make_child(way, dir, base, next, gen, PAGES, mid, &errs) != 0) {
        fail_msg("making the child: %s", errs);
    }
    assert_int_equal(rename(base, moved), 0);
    for (uint64_t i = 3; i < PAGES; i += 11) {
        gen[i] = i % 2 ? 2 : ZERO;
    }
    write_full(next, gen, PAGES);
    write_raw(want, gen, PAGES);
    g_clear_pointer(&errs, g_free);
    assert_int_not_equal(make_child(way, dir, mid, next, gen, PAGES, top, &errs), 0);
    expect_in(errs, base);
    g_clear_pointer(&errs, g_free);
    assert_int_not_equal(make_child_of(way, dir, mid, (const char *const[]){ next, NULL }, next,
                                       gen, PAGES, top, &errs), 0);
    expect_in(errs, next);
    expect_in(errs, "holds other content");
    assert_int_not_equal(access(top, F_OK), 0);
    g_clear_pointer(&errs, g_free);
    if (make_child_of(way, dir, mid, (const char *const[]){ moved, NULL }, next, gen, PAGES,
                      top, &errs) != 0) {
        fail_msg("--ancestor %s: %s", moved, errs);
    }
    if (sl_test_run_cli((const char *const[]){ "extract", top, "--block", "b0", "--parent", mid,
                                               "--parent", moved, "-o", got, NULL },
                        &so, &se) != 0) {
        fail_msg("extract: %s", se);
    }
    a = contents(want);
    b = contents(got);
    assert_true(g_bytes_equal(a, b));
    if (sl_test_have_uffd(&no_uffd)) { /* else the extract above proved the bytes */
        g_clear_pointer(&so, g_free);
        g_clear_pointer(&se, g_free);
        if (sl_test_run_cli((const char *const[]){ "restore", top, "--backend", "anon",
                                                   "--verify", "--json", "--parent", "",
                                                   "--parent", moved, NULL }, &so, &se) != 0) {
            fail_msg("restore: %s", se);
        }
        expect_in(so, "\"verify_mismatches\": 0");
    }
    sl_test_rmdir(away);
    sl_test_rmdir(dir);
}

static void test_delta_writes_a_grandchild_given_the_moved_ancestor(void **state)
{
    check_grandchild_of_moved_chain(CHILD_BY_DELTA);
}

static void test_save_writes_a_grandchild_given_the_moved_ancestor(void **state)
{
    check_grandchild_of_moved_chain(CHILD_BY_SAVE);
}

/*
 * delta whose NEW is a child whose parents moved: without --new-parent it
 * fails naming the parent NEW records, writing nothing; given both moved
 * ancestors it writes a child of PARENT (here NEW's own moved grandparent)
 * whose chain reads as NEW's, every page of every block.
 */
static void test_delta_takes_new_s_moved_parents_from_new_parent(void **state)
{
    g_autofree char *out = NULL, *so = NULL, *se = NULL;
    sl_snapshot *s;
    split_chain m;

    split_chain_build(&m, true);
    split_chain_move(&m);
    out = g_build_filename(m.c.dir, "delta.snap", NULL);
    assert_int_not_equal(sl_test_run_cli((const char *const[]){ "delta", m.grand, m.c.path[2],
                                                                "-o", out, NULL }, &so, &se), 0);
    expect_in(se, m.c.path[1]);
    assert_int_not_equal(access(out, F_OK), 0);
    g_clear_pointer(&se, g_free);
    g_clear_pointer(&so, g_free);
    if (sl_test_run_cli((const char *const[]){ "delta", m.grand, m.c.path[2], "--new-parent",
                                               m.parent, "--new-parent", m.grand, "-o", out,
                                               NULL }, &so, &se) != 0) {
        fail_msg("delta with --new-parent: %s", se);
    }
    s = open_ok(out, 0);
    assert_int_equal(sl_snapshot_chain_length(s), 2);
    assert_string_equal(sl_snapshot_path(sl_snapshot_parent(s)), m.grand);
    check_reads(&m.c, s);
    sl_snapshot_close(s);
    split_chain_clear(&m);
}

static void test_delta_stores_only_changed_pages(void **state)
{
    check_child_stores_only_changed_pages(CHILD_BY_DELTA);
}

static void test_save_with_a_parent_stores_only_changed_pages(void **state)
{
    check_child_stores_only_changed_pages(CHILD_BY_SAVE);
}

/* `snapload flatten` writes a chain of three as one snapshot with no
 * parent that reads as the chain did, and never over a file of the chain. */
static void test_flatten_writes_the_chain_as_one_full_snapshot(void **state)
{
    g_autofree char *full = NULL, *out = NULL, *errs = NULL, *out2 = NULL, *errs2 = NULL;
    chain c;
    sl_snapshot *s;

    chain_build(&c, 3, 17);
    full = g_build_filename(c.dir, "full.snap", NULL);
    if (sl_test_run_cli((const char *const[]){ "flatten", c.path[2], "-o", full, NULL }, &out,
                        &errs) != 0) {
        fail_msg("flatten: %s", errs);
    }
    s = open_ok(full, 0);
    assert_null(sl_snapshot_parent(s));
    check_reads(&c, s);
    sl_snapshot_close(s);
    assert_int_not_equal(sl_test_run_cli((const char *const[]){ "flatten", c.path[2], "-o",
                                                                c.path[1], NULL },
                                         &out2, &errs2), 0);
    expect_in(errs2, "a parent in the chain of");
    s = open_ok(c.path[2], 0); /* the chain is intact */
    check_reads(&c, s);
    sl_snapshot_close(s);
    unlink(full);
    chain_clear(&c);
}

/* A flatten that fails half-way (a page of the base does not match its
 * checksum) says which page, leaves no partial file and keeps an earlier
 * file of the output's name as it was. */
static void test_flatten_that_fails_keeps_the_earlier_output(void **state)
{
    g_autofree char *full = NULL, *out = NULL, *errs = NULL, *kept = NULL;
    g_autoptr(GDir) dir = NULL;
    const char *name;
    uint64_t i = 0;
    sl_snapshot *s;
    chain c;

    chain_build(&c, 3, 23);
    while (c.gen[0][i] != 0) { /* a page only the base stores */
        assert_true(++i < npages(0));
    }
    s = open_ok(c.path[0], 0);
    flip_byte(c.path[0], s->blocks[0].pages_offset + i * PSIZE + 9);
    sl_snapshot_close(s);
    full = g_build_filename(c.dir, "full.snap", NULL);
    assert_true(g_file_set_contents(full, "an earlier snapshot", -1, NULL));
    assert_int_not_equal(sl_test_run_cli((const char *const[]){ "flatten", c.path[2], "-o",
                                                                full, NULL }, &out, &errs), 0);
    expect_in(errs, "checksum mismatch");
    assert_true(g_file_get_contents(full, &kept, NULL, NULL));
    assert_string_equal(kept, "an earlier snapshot");
    dir = g_dir_open(c.dir, 0, NULL);
    while ((name = g_dir_read_name(dir))) {
        if (strstr(name, ".partial")) {
            fail_msg("%s left behind", name);
        }
    }
    unlink(full);
    chain_clear(&c);
}

/* Runs the CLI with @argv, which must fail, and expects @needles in its stderr. */
static void expect_cli_fails_with(const char *const *argv, const char *const *needles)
{
    g_autofree char *out = NULL, *errs = NULL;

    assert_int_not_equal(sl_test_run_cli(argv, &out, &errs), 0);
    for (unsigned i = 0; needles[i]; i++) {
        expect_in(errs, needles[i]);
    }
}

/* In a full snapshot, a zero page (every fifth of generation 0) is no file's. */
static void zero_page_is_nobodys(const char *path)
{
    sl_snapshot *s = open_ok(path, 0);

    assert_string_equal(sl_snapshot_page_file(s, 0, 6), sl_snapshot_path(s));
    assert_null(sl_snapshot_page_file(s, 0, 5));
    sl_snapshot_close(s);
}

/*
 * A page of the base that does not match its checksum is blamed on the
 * base, by name, as a parent of the child given: by the library
 * (sl_snapshot_page_file, a restore's error) and by every command that
 * reads it; pages the child stores (zeroed ones too) are the child's, zero
 * pages of a full snapshot nobody's.
 */
static void test_a_corrupt_base_page_is_blamed_on_the_base_not_the_child(void **state)
{
    g_autofree char *full = NULL, *raw = NULL, *page = NULL, *base = NULL;
    uint64_t i = 0;
    sl_snapshot *s;
    chain c;

    need_uffd();
    chain_build(&c, 3, 29);
    while (c.gen[0][i] != 0) { /* a page only the base stores */
        assert_true(++i < npages(0));
    }
    s = open_ok(c.path[2], 0);
    assert_true(g_str_has_suffix(sl_snapshot_page_file(s, 0, i), "gen0.snap"));
    assert_string_equal(sl_snapshot_page_file(s, 0, 0), sl_snapshot_path(s)); /* the child's */
    assert_string_equal(sl_snapshot_page_file(s, 0, 1), sl_snapshot_path(s)); /* it zeroed it */
    assert_null(sl_snapshot_page_file(s, 0, npages(0)));
    zero_page_is_nobodys(c.path[0]);
    flip_byte(c.path[0], s->blocks[0].pages_offset + i * PSIZE + 9);
    sl_snapshot_close(s);
    full = g_build_filename(c.dir, "full.snap", NULL);
    raw = g_build_filename(c.dir, "b0.raw", NULL);
    page = g_strdup_printf("block 'b0' page %" G_GUINT64_FORMAT " ", i);
    base = g_strdup_printf("gen0.snap (a parent of %s)", c.path[2]);
    expect_cli_fails_with((const char *const[]){ "inspect", c.path[2], NULL },
                          (const char *const[]){ base, page, "checksum mismatch", NULL });
    expect_cli_fails_with((const char *const[]){ "extract", c.path[2], "--block", "b0", "-o",
                                                 raw, NULL },
                          (const char *const[]){ base, page, NULL });
    expect_cli_fails_with((const char *const[]){ "flatten", c.path[2], "-o", full, NULL },
                          (const char *const[]){ base, page, NULL });
    g_free(base);
    base = g_strdup_printf("gen0.snap: %s", page);
    expect_cli_fails_with((const char *const[]){ "restore", c.path[2], "--backend", "anon",
                                                 "--touch-threads", "0", NULL },
                          (const char *const[]){ base, "checksum mismatch", NULL });
    chain_clear(&c);
}

/*
 * A checksum array entry of the base that no longer matches its segment
 * digest fails a lazy restore of the child, and the error names the base,
 * not the child given (the child's segment is refused with its parent's).
 */
static void test_a_corrupt_base_segment_is_blamed_on_the_base_not_the_child(void **state)
{
    g_autofree char *base = NULL;
    uint64_t i = 0, csum_offset;
    sl_snapshot *s;
    chain c;

    need_uffd();
    chain_build(&c, 3, 37);
    while (c.gen[0][i] != 0) { /* a page only the base stores */
        assert_true(++i < npages(0));
    }
    s = open_ok(c.path[0], 0);
    csum_offset = s->blocks[0].csum_offset;
    sl_snapshot_close(s);
    flip_byte(c.path[0], csum_offset + i * 8 + 2);
    base = g_strdup_printf("restore failed: %s: block 'b0'", c.path[0]);
    expect_cli_fails_with((const char *const[]){ "restore", c.path[2], "--backend", "anon",
                                                 "--touch-threads", "0", NULL },
                          (const char *const[]){ base, "does not match its digest", NULL });
    chain_clear(&c);
}

/* Runs @argv, which must succeed. */
static void run_ok(const char *const *argv)
{
    g_autofree char *out = NULL, *errs = NULL;

    if (sl_test_run_cli(argv, &out, &errs) != 0) {
        fail_msg("snapload %s: %s", argv[0], errs);
    }
}

/* Runs @argv, which must fail saying that @victim is a parent in the chain, and leave it whole. */
static void expect_ancestor_kept(const char *const *argv, const char *victim)
{
    g_autoptr(GBytes) before = contents(victim), after = NULL;
    g_autofree char *out = NULL, *errs = NULL;

    if (sl_test_run_cli(argv, &out, &errs) == 0) {
        fail_msg("%s %s wrote over %s", argv[0], argv[1], victim);
    }
    expect_in(errs, victim);
    expect_in(errs, "a parent in the chain of");
    after = contents(victim);
    assert_true(g_bytes_equal(before, after));
}

/*
 * No command writes over a snapshot further up the chain of the one it
 * reads: a child (save --parent, delta from either input's side), a full
 * snapshot (flatten), an image (extract) or a hot list (restore --record).
 * Found by review: all but flatten checked only the file named on their
 * command line, and wrote over the grandparent, losing the chain.
 */
static void test_no_command_writes_over_an_ancestor_of_its_input(void **state)
{
    g_autofree char *full = NULL, *raw0 = NULL, *raw1 = NULL, *arg0 = NULL, *arg1 = NULL;
    sl_snapshot *s;
    chain c;

    chain_build(&c, 3, 41);
    full = g_build_filename(c.dir, "full.snap", NULL);
    raw0 = g_build_filename(c.dir, "b0.raw", NULL);
    raw1 = g_build_filename(c.dir, "b1.raw", NULL);
    arg0 = g_strdup_printf("%s:b0", raw0);
    arg1 = g_strdup_printf("%s:b1", raw1);
    run_ok((const char *const[]){ "flatten", c.path[2], "-o", full, NULL });
    run_ok((const char *const[]){ "extract", full, "--block", "b0", "-o", raw0, NULL });
    run_ok((const char *const[]){ "extract", full, "--block", "b1", "-o", raw1, NULL });
    expect_ancestor_kept((const char *const[]){ "delta", c.path[2], full, "-o", c.path[0],
                                                NULL }, c.path[0]);
    expect_ancestor_kept((const char *const[]){ "delta", full, c.path[2], "-o", c.path[1],
                                                NULL }, c.path[1]);
    expect_ancestor_kept((const char *const[]){ "save", "--raw", arg0, "--raw", arg1,
                                                "--parent", c.path[2], "-o", c.path[0], NULL },
                         c.path[0]);
    expect_ancestor_kept((const char *const[]){ "extract", c.path[2], "--block", "b1", "-o",
                                                c.path[0], NULL }, c.path[0]);
    need_uffd();
    expect_ancestor_kept((const char *const[]){ "restore", c.path[2], "--backend", "anon",
                                                "--touch-threads", "0", "--record", c.path[1],
                                                NULL }, c.path[1]);
    expect_ancestor_kept((const char *const[]){ "restore", c.path[2], "--backend", "anon",
                                                "--touch-threads", "0", "--timeline", c.path[0],
                                                NULL }, c.path[0]);
    s = open_ok(c.path[2], 0); /* the chain is intact */
    check_reads(&c, s);
    sl_snapshot_close(s);
    chain_clear(&c);
}

/*
 * A parent path with a control byte is neither written nor read (it would
 * drive the terminal printing it); one that is not UTF-8 (a Latin-1 file
 * name) is written and opens (found by review: refusing it locked out
 * children of such parents).
 */
static void test_a_parent_path_with_control_bytes_is_refused_and_latin1_taken(void **state)
{
    static const char latin1[] = "gen\xe9.snap";
    g_autoptr(GError) err = NULL;
    g_autofree char *path = NULL, *other = NULL;
    sl_snapshot *base, *s;
    sl_writer *w;
    chain c;

    chain_init(&c);
    path = g_build_filename(c.dir, "child.snap", NULL);
    other = g_build_filename(c.dir, latin1, NULL);
    assert_int_equal(link(c.path[0], other), 0);
    base = open_ok(c.path[0], 0);
    w = new_writer(path);
    assert_false(sl_writer_set_parent(w, base, "\x1b[2J", &err));
    assert_non_null(strstr(err->message, "control byte 0x1b"));
    assert_true(sl_writer_set_parent(w, base, latin1, &err));
    add_blocks(w);
    write_page(w, 0, 3, 1);
    finish(w);
    sl_snapshot_close(base);
    s = open_ok(path, 0);
    assert_non_null(sl_snapshot_parent(s));
    sl_snapshot_close(s);
    chain_clear(&c);
}

/* `--parent ''` alone keeps the path the child records, as in a list. */
static void test_a_lone_empty_parent_option_keeps_the_recorded_path(void **state)
{
    g_autofree char *out = NULL, *errs = NULL;
    chain c;

    chain_build(&c, 2, 31);
    if (sl_test_run_cli((const char *const[]){ "inspect", "--quick", c.path[1], "--parent", "",
                                               NULL }, &out, &errs) != 0) {
        fail_msg("inspect --parent '': %s", errs);
    }
    expect_in(out, "gen0.snap");
    chain_clear(&c);
}

/* inspect of a child prints its chain, and counts as zero the pages that
 * became zero in a child (found by a user's test: counted present). */
static void test_inspect_prints_the_chain(void **state)
{
    chain c;
    sl_snapshot *s;

    chain_build(&c, 3, 13);
    s = open_ok(c.path[2], 0);
    for (unsigned json = 0; json < 2; json++) {
        g_autofree char *out = NULL, *errs = NULL;
        const char *args[] = { "inspect", c.path[2], json ? "--json" : NULL, NULL };
        assert_int_equal(sl_test_run_cli(args, &out, &errs), 0);
        expect_in(out, json ? "\"chain\": [" : "chain (newest first");
        for (const sl_snapshot *p = s; p; p = sl_snapshot_parent(p)) {
            uint8_t id[SL_IDENTITY_LEN];
            char hex[2 * SL_IDENTITY_LEN + 1];
            uint64_t stored = 0;
            assert_true(sl_snapshot_identity(p, id, NULL));
            sl_identity_hex(id, hex);
            for (unsigned b = 0; b < NBLOCKS; b++) {
                stored += sl_snapshot_stored_pages(p, b);
            }
            g_autofree char *want_path = g_strdup_printf(json ? "\"path\": \"%s\"" : "  %s\n",
                                                         sl_snapshot_path(p));
            g_autofree char *want_id = g_strdup_printf(json ? "\"identity\": \"%s\"" : "%s ",
                                                       hex);
            g_autofree char *want_stored = g_strdup_printf(
                json ? "\"stored_pages\": %" G_GUINT64_FORMAT ", \"allocated_bytes\": %"
                       G_GUINT64_FORMAT : " %" G_GUINT64_FORMAT " ",
                stored, allocated(sl_snapshot_path(p)));
            expect_in(out, want_path);
            expect_in(out, want_id);
            expect_in(out, want_stored);
        }
        for (unsigned b = 0; json && b < NBLOCKS; b++) { /* zero: as the model says */
            uint64_t zero = 0;
            for (uint64_t i = 0; i < npages(b); i++) {
                zero += c.gen[b][i] == ZERO;
            }
            g_autofree char *want = g_strdup_printf("\"present_pages\": %" G_GUINT64_FORMAT
                                                    ", \"zero_pages\": %" G_GUINT64_FORMAT,
                                                    npages(b) - zero, zero);
            expect_in(out, want);
        }
    }
    sl_snapshot_close(s);
    chain_clear(&c);
}

/* ------------------------------------------------------------------ */
/* 6. A parent that moved: --parent                                   */
/* ------------------------------------------------------------------ */

/*
 * A command that opens a snapshot which may be a child, run on the
 * newest child of a chain of three whose two parents moved together to
 * another directory.  @opts come after SNAP ("@NAME": NAME in the chain's
 * directory); @out: it writes -o FILE, which must equal what it writes
 * with the parents in place; @says: its stdout when it worked; @runs: it
 * runs to its end here (serve needs a consumer, qemu-restore QEMU:
 * test-daemon.c and tests/qtest/test-qemu.c run them with a moved parent,
 * here they only fail); @uffd: it needs userfaultfd.
 */
typedef struct {
    const char *name;
    const char *opts[8];
    bool out, runs, uffd;
    const char *says;
} moved_case;

static const moved_case moved_cases[] = {
    { "inspect", { NULL }, false, true, false, "chain (newest first" },
    { "extract", { "--block", "b1", NULL }, true, true, false, NULL },
    { "flatten", { NULL }, true, true, false, NULL },
    { "restore", { "--backend", "anon", "--verify", "--threads", "1", "--json", NULL }, false,
      true, true, "\"verify_mismatches\": 0" },
    { "reset-loop", { "--backend", "anon", "--rounds", "2", "--json", NULL }, false, true, true,
      "\"wrong_pages\": 0}" },
    { "serve", { "--socket", "@serve.sock", "--exit-when-done", NULL }, false, false, false,
      NULL },
    { "qemu-restore", { "--", "false", NULL }, false, false, false, NULL },
};

/* Runs @tc's command on @snap, with --parent for each of @parents (a
 * NULL-terminated list, or NULL), writing -o @out where it writes, its
 * "@NAME" options in @dir; its exit status, stdout and stderr. */
static int run_moved(const moved_case *tc, const char *dir, const char *snap,
                     const char *const *parents, const char *out, char **so, char **se)
{
    g_autoptr(GPtrArray) a = g_ptr_array_new_with_free_func(g_free);

    g_ptr_array_add(a, g_strdup(tc->name));
    g_ptr_array_add(a, g_strdup(snap));
    for (unsigned i = 0; parents && parents[i]; i++) {
        g_ptr_array_add(a, g_strdup("--parent"));
        g_ptr_array_add(a, g_strdup(parents[i]));
    }
    for (unsigned i = 0; tc->opts[i]; i++) {
        g_ptr_array_add(a, tc->opts[i][0] == '@'
                               ? g_build_filename(dir, tc->opts[i] + 1, NULL)
                               : g_strdup(tc->opts[i]));
    }
    if (tc->out) {
        g_ptr_array_add(a, g_strdup("-o"));
        g_ptr_array_add(a, g_strdup(out));
    }
    g_ptr_array_add(a, NULL);
    return sl_test_run_cli((const char *const *)a->pdata, so, se);
}

/* @tc's command on @snap (with a --parent for each of @parents) fails, its
 * stderr naming @what and @why; "@NAME" options in @dir. */
static void expect_moved_fails(const moved_case *tc, const char *dir, const char *snap,
                               const char *const *parents, const char *what, const char *why)
{
    g_autofree char *out = g_build_filename(dir, "refused.out", NULL);
    g_autofree char *so = NULL, *se = NULL;

    assert_int_not_equal(run_moved(tc, dir, snap, parents, out, &so, &se), 0);
    expect_in(se, what);
    expect_in(se, why);
    assert_int_not_equal(access(out, F_OK), 0); /* nothing written */
}

/*
 * After a child's parents moved, each command fails naming the parent it
 * looked for where the child records it, refuses --parent for a snapshot
 * that is no child, naming it, and with --parent works as it did with the
 * parents in place: the same output, restored memory that verifies.
 */
/*
 * @tc's command, run in @dir before its parents moved (its -o output then
 * into @want), or, with @parents, after: the second run works as the first
 * did (the same output, its stdout saying tc->says).
 */
static void run_moved_ok(const moved_case *tc, const char *dir, const char *snap,
                         const char *const *parents, const char *want)
{
    g_autofree char *got = g_build_filename(dir, "moved.out", NULL);
    g_autofree char *so = NULL, *se = NULL;
    g_autoptr(GBytes) a = NULL, b = NULL;

    if (run_moved(tc, dir, snap, parents, parents ? got : want, &so, &se) != 0) {
        fail_msg("%s %s: %s", tc->name, parents ? "after the move" : "in place", se);
    }
    if (parents && tc->says) {
        expect_in(so, tc->says);
    }
    if (parents && tc->out) {
        a = contents(want);
        b = contents(got);
        assert_true(g_bytes_equal(a, b));
    }
}

/*
 * Builds @m (its parents moved @apart, see split_chain_build()), runs
 * @tc's command on the child in place when it writes output (kept in the
 * returned path, for the runs after the move to match), then moves them.
 */
static char *moved_chain_after_a_run(const moved_case *tc, split_chain *m, bool apart)
{
    char *want;

    if (tc->uffd) {
        need_uffd();
    }
    split_chain_build(m, apart);
    want = g_build_filename(m->c.dir, "in-place.out", NULL);
    if (tc->out) {
        run_moved_ok(tc, m->c.dir, m->c.path[2], NULL, want);
    }
    split_chain_move(m);
    return want;
}

static void test_moved_parent_is_named_when_missing_and_taken_from_parent_option(void **state)
{
    const moved_case *tc = *state;
    g_autofree char *want = NULL;
    split_chain m;

    want = moved_chain_after_a_run(tc, &m, false);
    expect_moved_fails(tc, m.c.dir, m.c.path[2], NULL, m.c.path[1],
                       "No such file or directory");
    expect_moved_fails(tc, m.c.dir, m.grand, (const char *const[]){ m.parent, NULL }, m.grand,
                       "not an incremental snapshot");
    if (tc->runs) {
        run_moved_ok(tc, m.c.dir, m.c.path[2], (const char *const[]){ m.parent, NULL }, want);
    }
    split_chain_clear(&m);
}

/*
 * After a child's parent and grandparent moved to two directories, each
 * command given only the parent fails naming the grandparent's recorded
 * path (beside the moved parent); given a wrong file as the parent, or one
 * --parent more than the chain has, it fails naming that file; given both
 * (--parent twice) it works as it did with the chain in place.
 */
static void test_moved_ancestors_are_taken_from_repeated_parent_options(void **state)
{
    const moved_case *tc = *state;
    g_autofree char *want = NULL, *near_parent = NULL, *extra = NULL;
    split_chain m;

    want = moved_chain_after_a_run(tc, &m, true);
    near_parent = g_build_filename(m.pdir, "gen0.snap", NULL);
    extra = g_build_filename(m.gdir, "extra.snap", NULL);
    expect_moved_fails(tc, m.c.dir, m.c.path[2], (const char *const[]){ m.parent, NULL },
                       near_parent, "No such file or directory");
    expect_moved_fails(tc, m.c.dir, m.c.path[2], (const char *const[]){ m.grand, m.grand, NULL },
                       m.grand, "holds other content");
    expect_moved_fails(tc, m.c.dir, m.c.path[2],
                       (const char *const[]){ m.parent, m.grand, extra, NULL }, extra,
                       "one more than the chain has");
    if (tc->runs) {
        run_moved_ok(tc, m.c.dir, m.c.path[2], (const char *const[]){ m.parent, m.grand, NULL },
                     want);
    }
    split_chain_clear(&m);
}

int main(void)
{
    GPtrArray *t = g_ptr_array_new();
    struct CMUnitTest *tests;
    size_t n = 0;
    static const struct CMUnitTest plain[] = {
        cmocka_unit_test(test_child_answers_presence_and_checksums_from_the_owning_layer),
        cmocka_unit_test(test_a_chain_restore_runs_no_around_assistant),
        cmocka_unit_test(test_an_unreadable_parent_is_named_in_the_restore_error),
        cmocka_unit_test(test_gathered_reads_of_a_child_take_each_page_from_its_newest_layer),
        cmocka_unit_test(test_zeroed_page_in_child_is_not_resurrected_from_parent),
        cmocka_unit_test(test_child_refuses_a_parent_with_other_content),
        cmocka_unit_test(test_child_with_missing_parent_names_the_path),
        cmocka_unit_test(test_open_chain_takes_the_parent_from_the_caller),
        cmocka_unit_test(test_open_ancestors_takes_every_moved_ancestor),
        cmocka_unit_test(test_open_ancestors_refuses_wrong_files_and_too_many),
        cmocka_unit_test(test_child_opened_through_a_symlink_finds_its_parent_beside_it),
        cmocka_unit_test(test_corrupt_or_truncated_child_is_refused),
        cmocka_unit_test(test_chain_that_loops_is_refused),
        cmocka_unit_test(test_chain_longer_than_the_limit_is_refused),
        cmocka_unit_test(test_a_stranger_in_the_middle_of_a_chain_is_the_one_named),
        cmocka_unit_test(test_a_failure_deep_in_a_chain_names_the_child_and_the_failing_link),
        cmocka_unit_test(test_an_empty_child_takes_no_room_for_the_pages_it_leaves_to_its_parent),
        cmocka_unit_test(test_parent_without_checksums_is_refused_with_the_fix),
        cmocka_unit_test(test_qemu_file_with_its_index_can_be_a_parent),
        cmocka_unit_test(test_writer_refuses_blocks_unlike_the_parents),
        cmocka_unit_test(test_identity_follows_content_not_path_or_open_mode),
        cmocka_unit_test(test_delta_stores_only_changed_pages),
        cmocka_unit_test(test_save_with_a_parent_stores_only_changed_pages),
        cmocka_unit_test(test_delta_writes_a_grandchild_given_the_moved_ancestor),
        cmocka_unit_test(test_delta_takes_new_s_moved_parents_from_new_parent),
        cmocka_unit_test(test_save_writes_a_grandchild_given_the_moved_ancestor),
        cmocka_unit_test(test_flatten_writes_the_chain_as_one_full_snapshot),
        cmocka_unit_test(test_flatten_that_fails_keeps_the_earlier_output),
        cmocka_unit_test(test_inspect_prints_the_chain),
        cmocka_unit_test(test_a_corrupt_base_page_is_blamed_on_the_base_not_the_child),
        cmocka_unit_test(test_a_corrupt_base_segment_is_blamed_on_the_base_not_the_child),
        cmocka_unit_test(test_no_command_writes_over_an_ancestor_of_its_input),
        cmocka_unit_test(test_a_parent_path_with_control_bytes_is_refused_and_latin1_taken),
        cmocka_unit_test(test_a_lone_empty_parent_option_keeps_the_recorded_path),
    };

    tests = g_new0(struct CMUnitTest, G_N_ELEMENTS(newest_cases) + G_N_ELEMENTS(section_cases) +
                   2 * G_N_ELEMENTS(moved_cases) + G_N_ELEMENTS(plain));
    for (size_t i = 0; i < G_N_ELEMENTS(newest_cases); i++) {
        char *name = g_strdup_printf("child_restores_every_page_from_the_newest_layer/%s",
                                     newest_cases[i].name);
        g_ptr_array_add(t, name);
        tests[n++] = (struct CMUnitTest){ .name = name,
            .test_func = test_child_restores_every_page_from_the_newest_layer,
            .initial_state = (void *)&newest_cases[i] };
    }
    for (size_t i = 0; i < G_N_ELEMENTS(section_cases); i++) {
        char *name = g_strdup_printf("bad_parent_sections_are_refused_by_name/%s",
                                     section_cases[i].name);
        g_ptr_array_add(t, name);
        tests[n++] = (struct CMUnitTest){ .name = name,
            .test_func = test_bad_parent_sections_are_refused_by_name,
            .initial_state = (void *)&section_cases[i] };
    }
    for (size_t i = 0; i < G_N_ELEMENTS(moved_cases); i++) {
        char *name = g_strdup_printf(
            "moved_parent_is_named_when_missing_and_taken_from_parent_option/%s",
            moved_cases[i].name);
        g_ptr_array_add(t, name);
        tests[n++] = (struct CMUnitTest){ .name = name,
            .test_func = test_moved_parent_is_named_when_missing_and_taken_from_parent_option,
            .initial_state = (void *)&moved_cases[i] };
    }
    for (size_t i = 0; i < G_N_ELEMENTS(moved_cases); i++) {
        char *name = g_strdup_printf(
            "moved_ancestors_are_taken_from_repeated_parent_options/%s", moved_cases[i].name);
        g_ptr_array_add(t, name);
        tests[n++] = (struct CMUnitTest){ .name = name,
            .test_func = test_moved_ancestors_are_taken_from_repeated_parent_options,
            .initial_state = (void *)&moved_cases[i] };
    }
    for (size_t i = 0; i < G_N_ELEMENTS(plain); i++) {
        tests[n++] = plain[i];
    }
    if (g_getenv("SL_TEST_FILTER")) {
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    int ret = _cmocka_run_group_tests("chain", tests, n, NULL, NULL);
    g_ptr_array_set_free_func(t, g_free);
    g_ptr_array_free(t, true);
    g_free(tests);
    return ret;
}
