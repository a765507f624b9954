/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The parent every incremental fuzz-reader input names, and a child of it
 * (see chain-seed.h), written with the public writer so that they follow
 * the format as it changes.  The child overwrites a page with data, one
 * that had data with zeros and one that was zero with data, so a seed
 * covers each way a layer can hide its parent's page.
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "snapload/snapload.h"
#include "chain-seed.h"

#define PAGE 4096u

static const struct {
    const char *name;
    uint64_t pages;
} blocks[] = { { "pc.ram", 24 }, { "rom", 4 } };

/* Page @i of block @b in generation @gen: text, or zeros where the pattern says. */
static void page(uint8_t *p, unsigned b, uint64_t i, unsigned gen)
{
    memset(p, 0, PAGE);
    if (gen == 0 && i % 3 == 0) {
        return;
    }
    snprintf((char *)p, PAGE, "fuzz chain seed: block %u page %u generation %u", b,
             (unsigned)i, gen);
}

static bool add_blocks(sl_writer *w, GError **errp)
{
    for (unsigned b = 0; b < G_N_ELEMENTS(blocks); b++) {
        if (sl_writer_add_block(w, blocks[b].name, blocks[b].pages * PAGE, PAGE, -1, errp) < 0) {
            return false;
        }
    }
    return true;
}

static bool put(sl_writer *w, unsigned b, uint64_t i, unsigned gen, bool zero, GError **errp)
{
    uint8_t p[PAGE];

    page(p, b, i, gen);
    if (zero) {
        memset(p, 0, PAGE);
    }
    return sl_writer_write(w, b, i * PAGE, p, PAGE, errp);
}

/* Finishes and frees @w; false (and @path removed) if anything failed. */
static bool done(sl_writer *w, bool ok, const char *path, GError **errp)
{
    ok = ok && sl_writer_finish(w, errp);
    sl_writer_free(w);
    if (!ok) {
        unlink(path);
    }
    return ok;
}

bool fuzz_write_parent(const char *path, GError **errp)
{
    sl_writer *w = sl_writer_new(path, errp);
    bool ok;

    if (!w) {
        return false;
    }
    ok = add_blocks(w, errp);
    for (unsigned b = 0; ok && b < G_N_ELEMENTS(blocks); b++) {
        for (uint64_t i = 0; ok && i < blocks[b].pages; i++) {
            ok = put(w, b, i, 0, false, errp);
        }
    }
    return done(w, ok, path, errp);
}

bool fuzz_write_child(const char *parent, const char *path, GError **errp)
{
    sl_snapshot *p = sl_snapshot_open(parent, errp);
    sl_writer *w = p ? sl_writer_new(path, errp) : NULL;
    bool ok;

    if (!w) {
        sl_snapshot_close(p);
        return false;
    }
    ok = sl_writer_set_parent(w, p, FUZZ_PARENT_NAME, errp) && add_blocks(w, errp) &&
         put(w, 0, 1, 1, false, errp) &&   /* data over data */
         put(w, 0, 2, 1, true, errp) &&    /* zeros over data */
         put(w, 0, 3, 1, false, errp) &&   /* data over zeros */
         put(w, 1, 0, 1, false, errp);
    sl_snapshot_close(p);
    return done(w, ok, path, errp);
}

bool fuzz_install_parent(GError **errp)
{
    int fd = memfd_create("fuzz-parent", 0);
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);

    if (fd < 0 || !fuzz_write_parent(path, errp) || dup2(fd, FUZZ_PARENT_FD) < 0) {
        if (fd >= 0) {
            close(fd);
        }
        if (errp && !*errp) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_FAILED, "the fuzz parent's memfd");
        }
        return false;
    }
    close(fd);
    return true;
}
