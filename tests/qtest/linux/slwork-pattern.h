/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The contents of the Linux test guest's checkable blocks, shared by the
 * workload (slwork.c, in the guest) and the tests on the host that check
 * a disk image it wrote (test-vhost-user-blk.c).  A 4 KiB block holds a
 * magic number, its index, its generation and a seed (a hash of kind,
 * index and generation), then 508 words of a xorshift stream from that
 * seed: every byte of it follows from (kind, index, generation).
 */
#ifndef SLWORK_PATTERN_H
#define SLWORK_PATTERN_H

#include <stdint.h>

#define SLW_BLOCK 4096u
#define SLW_WORDS (SLW_BLOCK / 8u)
#define SLW_HEADER 4u

/* Kinds of block, each with its magic number. */
#define SLW_KIND_PAGE 1u /* a working-set page in guest RAM */
#define SLW_KIND_FILE 2u /* the stream of a tmpfs file (no header) */
#define SLW_KIND_DISK 3u /* a block of the test disk */
#define SLW_MAGIC_PAGE 0x534c574f524b5047ull /* "SLWORKPG" */
#define SLW_MAGIC_DISK 0x534c574f524b444bull /* "SLWORKDK" */

static inline uint64_t slw_mix64(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

/* The seed of a block: a hash of what it is and its generation (never 0). */
static inline uint64_t slw_seed(uint64_t kind, uint64_t idx, uint64_t gen)
{
    return slw_mix64(slw_mix64(kind ^ (idx << 8)) + gen * 0x9e3779b97f4a7c15ull) | 1;
}

static inline uint64_t slw_next(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* Word @j of block (@magic, @kind, @idx, @gen), given the stream state *@s
 * (which starts at the seed and is advanced for j >= SLW_HEADER). */
static inline uint64_t slw_word(unsigned j, uint64_t magic, uint64_t idx, uint64_t gen,
                                uint64_t seed, uint64_t *s)
{
    switch (j) {
    case 0:
        return magic;
    case 1:
        return idx;
    case 2:
        return gen;
    case 3:
        return seed;
    default:
        return slw_next(s);
    }
}

/* Writes block (@magic, @kind, @idx, @gen) into @p. */
static inline void slw_fill(uint64_t *p, uint64_t magic, uint64_t kind, uint64_t idx,
                            uint64_t gen)
{
    uint64_t seed = slw_seed(kind, idx, gen), s = seed;

    for (unsigned j = 0; j < SLW_WORDS; j++) {
        p[j] = slw_word(j, magic, idx, gen, seed, &s);
    }
}

/*
 * Compares @p with block (@magic, @kind, @idx, @gen): the index of the
 * first wrong word (SLW_WORDS if none), with what it should hold in
 * *@want and how many words are wrong in *@nbad.
 */
static inline unsigned slw_check(const uint64_t *p, uint64_t magic, uint64_t kind, uint64_t idx,
                                 uint64_t gen, uint64_t *want, unsigned *nbad)
{
    uint64_t seed = slw_seed(kind, idx, gen), s = seed;
    unsigned bad = SLW_WORDS;

    *nbad = 0;
    for (unsigned j = 0; j < SLW_WORDS; j++) {
        uint64_t w = slw_word(j, magic, idx, gen, seed, &s);
        if (__builtin_expect(p[j] != w, 0)) {
            if (bad == SLW_WORDS) {
                bad = j;
                *want = w;
            }
            (*nbad)++;
        }
    }
    return bad;
}

#endif /* SLWORK_PATTERN_H */
