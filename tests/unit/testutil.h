/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Helpers shared by the unit tests: capability checks that skip with a
 * reason (or fail when CI requires the capability through SNAPLOAD_REQUIRE),
 * temporary directories, and building small snapshots with known contents.
 */
#ifndef SNAPLOAD_TESTUTIL_H
#define SNAPLOAD_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include "snapload/snapload.h"

/** True if the comma-separated SNAPLOAD_REQUIRE lists @cap (or "all"). */
bool sl_test_required(const char *cap);

/**
 * True if the comma-separated SNAPLOAD_WITHOUT lists @cap: the run pretends
 * the host lacks it (e.g. "kvm" to run QEMU under TCG on a KVM host), so a
 * host that has everything can also try the paths of hosts that do not.
 */
bool sl_test_withheld(const char *cap);

/** Whether userfaultfd MISSING mode on anonymous memory works here; @why gets the reason if not. */
bool sl_test_have_uffd(char **why);

/** How many threads of this process are named @name (their /proc comm). */
unsigned sl_test_threads_named(const char *name);

/*
 * Skip the current test when @have is false, printing @why; fail instead when
 * the capability is required (so CI never passes a skipped capability).
 */
#define SL_TEST_NEED(cap, have, why)                                             \
    do {                                                                         \
        if (!(have)) {                                                           \
            if (sl_test_required(cap)) {                                         \
                fail_msg("capability '%s' is required here but missing: %s",     \
                         cap, why);                                              \
            }                                                                    \
            print_message("# SKIP: needs %s: %s\n", cap, why);                   \
            skip();                                                              \
        }                                                                        \
    } while (0)

/**
 * When hugepages of @hugepage bytes (0: none needed) cannot be had here at
 * all (no mount or pool of that size, or not one page free), makes @t a
 * test that only says so and skips (fails, if @cap is required), before
 * any of its code runs: a skip from inside a test body would leak what the
 * body had allocated (LeakSanitizer fails the suite).
 */
void sl_test_skip_if_absent(struct CMUnitTest *t, const char *cap, uint64_t hugepage);

/** sl_test_skip_as_absent: makes @t a test that only skips for want of @cap, saying @why. */
void sl_test_skip_as_absent(struct CMUnitTest *t, const char *cap, const char *why);

/** A fresh temporary directory (removed by sl_test_rmdir). */
char *sl_test_tmpdir(void);

/** Entries of directory @dir ("." and ".." not counted; 0 if it cannot be read). */
unsigned sl_test_dir_entries(const char *dir);

/* Pages of the file at @path the kernel still has to write to disk (dirty
 * or under writeback), by cachestat(2); -1 (errno set) if it cannot tell.
 * Always 0 on tmpfs. */
int64_t sl_test_pages_not_on_disk(const char *path);

/** Whether the kernel has cachestat(2) (Linux 6.5+; not Debian 12's 6.1). */
bool sl_test_have_cachestat(void);

/* Skips the current test (fails it where "cachestat" is required) on a
 * kernel without cachestat(2), saying what @needs it.  Call before the
 * test allocates anything. */
#define SL_TEST_NEED_CACHESTAT(needs) \
    SL_TEST_NEED("cachestat", sl_test_have_cachestat(), "cachestat(2) needs Linux 6.5: " needs)

/** Removes @dir and the files directly in it; frees @dir. */
void sl_test_rmdir(char *dir);

/**
 * sl_test_fork_waiting: forks a child that does nothing until *@hold (the
 * write end of its pipe) is written to or closed, then exits 0; its pid,
 * or -1.  Its memory can then be read with sl_test_read_child().
 */
pid_t sl_test_fork_waiting(int *hold);

/** AnonHugePages, in KiB, of this process's mapping that holds @addr (0: none). */
uint64_t sl_test_anon_huge_kb(const void *addr);

/**
 * sl_test_have_thp_collapse: whether process_madvise(MADV_COLLAPSE) of
 * another process's memory makes a transparent hugepage here (kernel
 * 6.1+, CAP_SYS_NICE, whatever the THP sysfs mode), tried on 2 MiB of a
 * child's; false with *@why (to free) otherwise.
 */
bool sl_test_have_thp_collapse(char **why);

/** process_vm_readv() of [@addr, +@len) of process @pid into @buf: 0 or -errno. */
int sl_test_read_child(pid_t pid, const void *addr, void *buf, uint64_t len);

/** Content of page @idx for seed @seed: zero when (idx % zero_every) == 0 and zero_every > 0. */
void sl_test_fill_page(uint8_t *p, size_t size, uint64_t idx, uint64_t seed, unsigned zero_every);

/**
 * Writes @path: one block per entry of @lengths (named "b0", "b1", ...),
 * page size @psize, contents from sl_test_fill_page(seed = block index + 1),
 * plus a device-state section of @devstate_len bytes (0 = none).
 */
void sl_test_make_snapshot(const char *path, const uint64_t *lengths, unsigned nblocks,
                           uint64_t psize, unsigned zero_every, size_t devstate_len);

/** The placement order of each unit of region @i (config.trace_order), or NULL. */
const uint32_t *sl_test_restore_order(const sl_restore *r, unsigned i);

/**
 * Sets the loader hook of @r (before sl_restore_start()): @fn runs in a
 * loader right after it claimed units [u, u+n) of region @region, before it
 * fills them, so a test can hold a loader there.
 */
void sl_test_set_loader_hook(sl_restore *r,
                             void (*fn)(void *opaque, unsigned region, uint64_t u, uint64_t n),
                             void *opaque);

/**
 * Sets the staged hook of @r (before sl_restore_start()): @fn runs in a
 * loader that read and checked the whole chunk [u, u+n) of region @region
 * to move it, right before it claims the chunk's units, so a test can let a
 * fault take one of them first.
 */
void sl_test_set_staged_hook(sl_restore *r,
                             void (*fn)(void *opaque, unsigned region, uint64_t u, uint64_t n),
                             void *opaque);

/**
 * Sets the dead-view hook of @r (before sl_restore_start()): @fn runs in a
 * thread other than the fault thread (a loader) about to leave a consumer's
 * view that is dead, still inside it, so a test can hold it there.
 */
void sl_test_set_dead_view_hook(sl_restore *r, void (*fn)(void *opaque), void *opaque);

/**
 * Sets the around hook of @r (before sl_restore_start()): @fn runs in the
 * fault thread's around assistant when it starts on the neighbours [u, u+n)
 * of a cold fault in region @region (the faulted unit already served), so
 * a test can hold the assistant there.
 */
void sl_test_set_around_hook(sl_restore *r,
                             void (*fn)(void *opaque, unsigned region, uint64_t u, uint64_t n),
                             void *opaque);

/**
 * Makes @r (before sl_restore_start()) take the optional UFFD_FEATURE_*
 * bits @features (POISON, MOVE, the async WP set, EVENT_UNMAP/REMAP) as
 * absent from the kernel for its own uffd, as on an older kernel (Debian
 * 12's 6.1 has none of them), so a host that has them runs the fallbacks.
 */
void sl_test_withhold_uffd_features(sl_restore *r, uint64_t features);

/** The snapload CLI of this build tree (or $SNAPLOAD_BIN); caller frees. */
char *sl_test_snapload_bin(void);

/**
 * Runs the snapload CLI ($SNAPLOAD_BIN, else the one of this build tree)
 * with @args (NULL-terminated, without the program); returns its wait
 * status and fills @out and @err (caller frees).
 */
int sl_test_run_cli(const char *const *args, char **out, char **err);

/** sl_test_run_cli(), the CLI ended by SIGALRM after @seconds (0: never). */
int sl_test_run_cli_within(const char *const *args, unsigned seconds, char **out, char **err);

/* The members every case of sl_test_run_matrix() begins with, in this order. */
typedef struct {
    const char *name;
    sl_backend_kind kind;
    uint64_t hugepage;   /* 0: 4 KiB pages */
    const char *cap;     /* capability name for SNAPLOAD_REQUIRE */
} sl_test_case;

/** A feature of a table-driven suite: its name, its test, the cases it applies to. */
typedef struct {
    const char *name;
    CMUnitTestFunction fn;
    bool (*applies)(const sl_test_case *tc); /* NULL: every case */
} sl_test_feature;

/**
 * Runs every one of @nfeatures @features on every one of @ncases cases
 * (@case_size bytes each from @cases, each beginning with the members of
 * sl_test_case), as tests named CASE/FEATURE whose initial state is the
 * case, with @setup and @teardown; SL_TEST_FILTER (a glob) picks some.
 * The cases of a hugepage size this host cannot give only skip
 * (sl_test_skip_if_absent()).
 * Returns cmocka's count of failed tests.
 */
int sl_test_run_matrix(const char *group, const void *cases, size_t ncases, size_t case_size,
                       const sl_test_feature *features, size_t nfeatures,
                       CMFixtureFunction setup, CMFixtureFunction teardown);

/** sl_test_run_matrix() followed by @nplain tests @plain that run once, not per case. */
int sl_test_run_matrix_and(const char *group, const void *cases, size_t ncases,
                           size_t case_size, const sl_test_feature *features, size_t nfeatures,
                           CMFixtureFunction setup, CMFixtureFunction teardown,
                           const struct CMUnitTest *plain, size_t nplain);

struct sockaddr_un;

/**
 * Sends @fd with one byte over unix socket @sock (to @to, if not NULL),
 * with sendmsg or, if @mmsg, as the first of two messages of one
 * sendmmsg (the second carries no fd); whether the call took it.
 */
bool sl_test_send_fd_to(int sock, int fd, const struct sockaddr_un *to, bool mmsg);

/** Sends @fd with one byte over connected unix socket @sock; whether it went. */
bool sl_test_send_fd(int sock, int fd);

/** The fd that came with one byte on unix socket @sock, or -1. */
int sl_test_recv_fd(int sock);

#endif /* SNAPLOAD_TESTUTIL_H */
