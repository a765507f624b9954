/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Shared by the fuzz harnesses: the report of a broken invariant, and the
 * sanitizer options they default to, so that a harness run by hand stops
 * at the first undefined behaviour and reports leaks just as
 * scripts/fuzz.sh runs it (the *_OPTIONS variables still override them).
 */
#include <stdio.h>
#include <stdlib.h>
#include "fuzz-common.h"

void fuzz_fail(const char *file, int line, const char *cond, const char *what)
{
    fprintf(stderr, "fuzz: %s:%d: %s (%s does not hold)\n", file, line, what, cond);
    abort();
}

const char *__asan_default_options(void);
const char *__ubsan_default_options(void);

const char *__asan_default_options(void)
{
    return "detect_leaks=1";
}

const char *__ubsan_default_options(void)
{
    return "halt_on_error=1:print_stacktrace=1";
}
