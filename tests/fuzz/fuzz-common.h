/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the libFuzzer harnesses share: FUZZ_CHECK, which turns a broken
 * invariant into an abort (a crash libFuzzer keeps as an artifact), and the
 * sanitizer defaults every harness runs with (fuzz-common.c).
 */
#ifndef SNAPLOAD_FUZZ_COMMON_H
#define SNAPLOAD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/** FUZZ_CHECK: abort, naming @what and the condition, unless @cond holds. */
#define FUZZ_CHECK(cond, what) \
    do { \
        if (!(cond)) { \
            fuzz_fail(__FILE__, __LINE__, #cond, what); \
        } \
    } while (0)

__attribute__((noreturn)) void fuzz_fail(const char *file, int line, const char *cond,
                                         const char *what);

/* The libFuzzer entry points the harnesses define. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif /* SNAPLOAD_FUZZ_COMMON_H */
