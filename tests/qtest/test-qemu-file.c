/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Integration tests of QEMU's own snapshot files with stock QEMU 10 and
 * real vCPUs (KVM here, TCG where KVM is absent), table-driven over the
 * guest's RAM: anonymous (plain -m), shmem and hugetlbfs-2M.  The walker
 * guest is saved by QEMU itself (`migrate file:` with mapped-ram, through
 * `snapload qemu-save --format qemu`), then:
 *  - `snapload qemu-restore --verify` of that file runs it lazily: before
 *    the guest runs, every page of its RAM (read the way a consumer reads
 *    it) equals the file's but in the legacy range QEMU rewrites during
 *    every load; then it runs on, the walker (which checks each page
 *    against its previous pass) finds no error in two more passes, and the
 *    daemon placed no page twice and missed none;
 *  - the same with the file written by multifd threads;
 *  - plain QEMU loads the file eagerly (`migrate-incoming file:`) and the
 *    guest runs on: one file serves both;
 *  - `qemu-restore --record` lists the pages the guest faulted on, and
 *    `snapload index --hot` puts that list into the file's sidecar index.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "tests/unit/testutil.h"
#include "qtest-util.h"

static const mem_kind kinds[] = {
    { "anon", NULL, 0, true },
    { "shmem", NULL, 0, false },
    { "hugetlbfs-2M", "hugepages", 2l << 20, false },
};

/*
 * Blocks of @errs whose differing pages ("verify: block 'B': N pages
 * differ, from 0xLO to 0xHI") reach outside the legacy range.  The span,
 * not the lines of single pages, which stop after 8 (found by an audit:
 * a wrong page past the eighth was never seen).
 */
static unsigned mismatches_outside_legacy(const char *errs)
{
    unsigned outside = 0;

    for (const char *p = strstr(errs, "differ, from 0x"); p; p = strstr(p + 1, "differ, from 0x")) {
        char *end = NULL;
        uint64_t lo = g_ascii_strtoull(p + 13, &end, 16);
        const char *to = end ? strstr(end, "to 0x") : NULL;
        uint64_t hi = to ? g_ascii_strtoull(to + 3, NULL, 16) : UINT64_MAX;
        outside += lo < LEGACY_LO || hi >= LEGACY_HI;
    }
    return outside;
}

/*
 * Restores the saved file lazily, verified before the guest runs (qemu-restore
 * conts after its --verify), runs it two passes on, checks the figures.
 */
static void restore_lazily_and_run_on(fixture *f, const char *block)
{
    g_autofree char *serial = path_in(f, "restore.serial"), *qmp = path_in(f, "restore.qmp");
    g_autofree char *out = NULL, *errs = NULL, *lazy = NULL;
    g_autoptr(JsonObject) res = NULL;
    int lq = listen_at(qmp), st;
    sl_qmp *q;
    child r;

    r = start_restore(f, (const char *[]){ "--json", "--verify", "--threads", "1", NULL },
                      serial, qmp, NULL);
    q = accept_qmp(lq, &r);
    wait_walker(serial, f->saved_pass + 2, 0);
    wait_for_text(r.out, "\"mode\""); /* its report: every page is in place */
    st = quit_and_reap(q, &r, &out, &errs);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("qemu-restore failed: %s", errs);
    }
    res = parse_json(out);
    restore_was_clean(res);
    assert_string_equal(json_object_get_string_member(res, "snapshot_format"), "qemu");
    lazy = json_to_string(json_object_get_member(res, "lazy_blocks"), false);
    assert_non_null(strstr(lazy, block));
    if (mismatches_outside_legacy(errs)) {
        fail_msg("--verify found pages that differ outside [0x%x, 0x%x):\n%s", LEGACY_LO,
                 LEGACY_HI, errs);
    }
    close(lq);
    child_free(&r);
}

static const char *block_of(const fixture *f)
{
    return f->k->anon ? "pc.ram" : "ram0";
}

static void test_qemu_file_restores_lazily_and_the_guest_runs_on(void **state)
{
    fixture *f = *state;

    need(f);
    f->save_format = "qemu";
    boot_and_save(f);
    restore_lazily_and_run_on(f, block_of(f));
}

static void test_qemu_file_written_by_multifd_restores_lazily(void **state)
{
    fixture *f = *state;

    need(f);
    f->save_format = "qemu";
    f->save_multifd = 2;
    boot_and_save(f);
    restore_lazily_and_run_on(f, block_of(f));
}

/* The same file in plain QEMU: its own eager `migrate-incoming file:` load. */
static void test_qemu_file_loads_eagerly_in_plain_qemu(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = NULL, *qmp = NULL, *errs = NULL;
    int lq, st;
    sl_qmp *q;
    child r;

    need(f);
    f->save_format = "qemu";
    boot_and_save(f);
    serial = path_in(f, "eager.serial");
    qmp = path_in(f, "eager.qmp");
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ "--eager", f->snap, "--json", NULL }, serial, qmp,
                      NULL);
    q = accept_qmp(lq, &r);
    wait_walker(serial, f->saved_pass + 2, 0);
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    st = reap(&r, 60000);
    errs = slurp(r.err);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("QEMU's eager load of its own file failed: %s", errs);
    }
    close(lq);
    child_free(&r);
}

/* Entries of the hot-page list @path that name a page of @snap; fails on one that does not. */
static uint64_t valid_hot_entries(const char *path, const char *snap_path)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *data = NULL;
    sl_snapshot *snap = sl_snapshot_open(snap_path, &err);
    gsize len = 0;

    assert_non_null(snap);
    assert_true(g_file_get_contents(path, &data, &len, NULL));
    assert_int_equal(len % 16, 0);
    for (gsize i = 0; i < len / 16; i++) {
        uint32_t b;
        uint64_t page;
        sl_block_info bi;
        memcpy(&b, data + i * 16, 4);
        memcpy(&page, data + i * 16 + 8, 8);
        if (!sl_snapshot_block(snap, b, &bi) || page >= bi.pages) {
            fail_msg("hot-list entry %zu names block %u page %" G_GUINT64_FORMAT ", not in the "
                     "snapshot", (size_t)i, b, page);
        }
    }
    sl_snapshot_close(snap);
    return len / 16;
}

/*
 * `qemu-restore --threads 0 --record LIST` writes the pages the guest
 * faulted on (the walker's pass touches them all), and `snapload index
 * FILE --hot LIST` takes the list into the file's sidecar index, which
 * the next open attaches (its hot-pages section is the list itself).
 */
static void test_recorded_faults_become_the_hot_list_of_the_index(void **state)
{
    fixture *f = *state;
    g_autofree char *serial = path_in(f, "record.serial"), *qmp = path_in(f, "record.qmp");
    g_autofree char *hot = path_in(f, "hot.list"), *out = NULL, *errs = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(GBytes) section = NULL;
    uint64_t n;
    int lq, st;
    sl_snapshot *snap;
    sl_qmp *q;
    child r;

    need(f);
    f->save_format = "qemu";
    boot_and_save(f);
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ "--threads", "0", "--record", hot, NULL }, serial,
                      qmp, NULL);
    q = accept_qmp(lq, &r);
    /* +2: the pass running at the save ends after whatever part of RAM it
     * had left (937 pages in one CI run); the next one touches it all. */
    wait_walker(serial, f->saved_pass + 2, 0);
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    reap(&r, 60000);
    n = valid_hot_entries(hot, f->snap);
    if (n < 1000) {
        fail_msg("the recorded list holds %" G_GUINT64_FORMAT " pages after a pass of the "
                 "walker over its RAM", n);
    }
    st = sl_test_run_cli((const char *[]){ "index", f->snap, "--hot", hot, NULL }, &out, &errs);
    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("snapload index --hot: %s", errs);
    }
    snap = sl_snapshot_open(f->snap, &err);
    assert_non_null(snap);
    section = sl_snapshot_read_section(snap, SL_SECTION_HOT_PAGES, &err);
    assert_non_null(section);
    assert_int_equal(g_bytes_get_size(section), n * 16);
    print_message("# %s: %" G_GUINT64_FORMAT " faulted pages recorded, in the index\n",
                  f->k->name, n);
    sl_snapshot_close(snap);
    close(lq);
    child_free(&r);
}

#define CASE(fn, k) cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)&kinds[k])

int main(void)
{
    struct CMUnitTest tests[G_N_ELEMENTS(kinds) + 3];
    unsigned n = 0;

    for (unsigned k = 0; k < G_N_ELEMENTS(kinds); k++) {
        tests[n] = (struct CMUnitTest)CASE(test_qemu_file_restores_lazily_and_the_guest_runs_on, k);
        tests[n++].name = g_strdup_printf("%s/qemu_file_restores_lazily_and_the_guest_runs_on",
                                          kinds[k].name);
    }
    tests[n] = (struct CMUnitTest)CASE(test_qemu_file_written_by_multifd_restores_lazily, 0);
    tests[n++].name = g_strdup("anon/qemu_file_written_by_multifd_restores_lazily");
    tests[n] = (struct CMUnitTest)CASE(test_qemu_file_loads_eagerly_in_plain_qemu, 1);
    tests[n++].name = g_strdup("shmem/qemu_file_loads_eagerly_in_plain_qemu");
    tests[n] = (struct CMUnitTest)CASE(test_recorded_faults_become_the_hot_list_of_the_index, 1);
    tests[n++].name = g_strdup("shmem/recorded_faults_become_the_hot_list_of_the_index");
    if (g_getenv("SL_TEST_FILTER")) {
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    int failed = _cmocka_run_group_tests("qemu-file", tests, n, NULL, NULL);
    for (unsigned i = 0; i < n; i++) {
        g_free((char *)tests[i].name);
    }
    return failed;
}
