/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A real vhost-user back-end during a lazy restore (docs/linux-guest.md):
 * qemu-storage-daemon (Debian's qemu-utils) exports a 32 MiB raw image as
 * vhost-user-blk to the Linux test guest (-device vhost-user-blk-pci), with
 * guest RAM in a share=on memory-backend-file on shmem or hugetlbfs-2M.
 * The back-end maps guest RAM from the file descriptors QEMU hands it and
 * reads and writes guest buffers itself.  The guest's workload
 * (tests/qtest/linux/slwork.c, slwork.disk=/dev/vda) writes every block of
 * the disk through its page cache, fsyncs, drops the cached blocks and reads
 * them back (buffered and O_DIRECT in turn), checking every byte.
 *
 * The guest is booted once per kind of RAM and saved (QEMU's own mapped-ram
 * file) while a whole pass of new disk data is only in its page cache
 * (the HOLD request); the image is copied as it was at the save.  Then:
 *  - registered_backend_keeps_guest_memory_and_disk_clean: `qemu-restore
 *    --vhost-user SOCKET=qemu-storage-daemon ...` starts the back-end
 *    registered with the restore; the guest's fsync then has the back-end
 *    read those dirty pages from guest RAM while the restore still places
 *    them, and its reads have it write into guest pages; the workload finds
 *    no wrong byte in memory, files or disk, answers, runs on; the restore
 *    places every page once; and afterwards every block of the image holds
 *    its own data of a generation at least the last one the guest checked
 *    (no zero block, no block with another block's data);
 *  - registered_backend_served_by_faults_only_keeps_disk_clean: the same
 *    with no loaders (--threads 0), so that every page the back-end
 *    touches comes through its own registration; the guest and the image
 *    stay clean, and qemu-restore says, when QEMU quits, that pages were
 *    still missing (nothing else touched them);
 *  - unregistered_backend_is_refused_before_any_byte_is_lost: a back-end
 *    the test starts plainly never gets guest RAM: QEMU ends with the
 *    preload client's reason before the guest runs, and the image is
 *    byte for byte what it was at the save;
 *  - shmem-4G/registered_backend_of_ram_in_two_regions_keeps_memory_and_disk_clean:
 *    the first case with 4 GiB of guest RAM, which QEMU splits below and
 *    above 4 GiB: the back-end gets two memory regions and maps guest RAM
 *    as two parts of one block (the daemon refused the first part, and
 *    the preload client killed the back-end, before views of parts).
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "backends/backend.h"
#include "tests/unit/testutil.h"
#include "linux-guest.h"
#include "linux/slwork-pattern.h"

#define DISK_MB 32
#define HOLD_MS 120000 /* at most: the restored guest is RELEASEd at once */
#define APPEND "console=ttyS0 panic=-1 slwork.ws_pct=25 slwork.hb_ms=500 slwork.disk=/dev/vda"

static const mem_kind kinds[] = {
    { "shmem", NULL, 0, false },
    { "hugetlbfs-2M", "hugepages", 2l << 20, false },
    /* Above 3.5 GiB a pc guest's RAM is split below and above 4 GiB: two
     * memory regions for the back-end.  One case only (about a minute). */
    { "shmem-4G", NULL, 0, false },
};
#define NKINDS_ALL 2 /* kinds every case runs on; the others run one case */

/* Each kind's guest RAM in MiB (0: LG_RAM_MB). */
static const unsigned kind_ram_mb[G_N_ELEMENTS(kinds)] = { 0, 0, 4096 };

static const char *const modules[] = { "virtio_pci", "virtio_blk", NULL };

static linux_guest guest = { .append = APPEND, .modules = modules };

/* One boot per kind of RAM: its snapshot and the disk image at the save. */
static struct {
    char *snap[G_N_ELEMENTS(kinds)];
    char *disk[G_N_ELEMENTS(kinds)];
    uint64_t pages[G_N_ELEMENTS(kinds)]; /* the workload's page counter before the save */
    uint64_t dirty_gen[G_N_ELEMENTS(kinds)]; /* the disk pass only in the page cache */
    const char *format;                  /* qemu-save --format of those snapshots */
} vu;

/* The back-end's socket for this case. */
static char *vu_socket(const fixture *f)
{
    return path_in(f, "vub.sock");
}

/* The guest's QEMU command line: the Linux guest's and the vhost-user disk. */
static void vu_args(GPtrArray *a, const fixture *f, const char *serial, const char *qmp)
{
    g_autofree char *sock = vu_socket(f);

    lg_args(a, f, &guest, serial, qmp);
    add2(a, "-chardev", g_strdup_printf("socket,id=vub0,path=%s", sock));
    add2(a, "-device", g_strdup("vhost-user-blk-pci,chardev=vub0,num-queues=1"));
}

/* qemu-storage-daemon exporting image @img as vhost-user-blk on @sock. */
static char *qsd_command(const char *img, const char *sock)
{
    return g_strdup_printf("qemu-storage-daemon --blockdev driver=file,node-name=file0,"
                           "filename=%s,cache.direct=off --blockdev driver=raw,node-name=disk0,"
                           "file=file0 --export type=vhost-user-blk,id=exp0,node-name=disk0,"
                           "addr.type=unix,addr.path=%s,writable=on", img, sock);
}

/* Starts qemu-storage-daemon plainly (tracked by the fixture) and waits for its socket. */
static child start_qsd(fixture *f, const char *img, const char *sock, const char *logs)
{
    g_autofree char *cmd = qsd_command(img, sock);
    g_auto(GStrv) argv = NULL;
    g_autoptr(GPtrArray) a = g_ptr_array_new_with_free_func(g_free);
    struct stat st;
    child c;

    g_autofree char *exe = g_find_program_in_path("qemu-storage-daemon");

    if (!exe) {
        fail_msg("no qemu-storage-daemon: apt-get install qemu-utils (of the same version as "
                 "qemu-system-x86; scripts/install-deps.sh does)");
    }
    unlink(sock);
    assert_true(g_shell_parse_argv(cmd, NULL, &argv, NULL));
    for (unsigned i = 0; argv[i]; i++) {
        g_ptr_array_add(a, g_strdup(argv[i]));
    }
    c = spawn(f, a, logs);
    for (int i = 0; i < 1000; i++) {
        if (stat(sock, &st) == 0 && S_ISSOCK(st.st_mode)) {
            return c;
        }
        g_usleep(10000);
    }
    g_autofree char *errs = slurp(c.err);
    fail_msg("qemu-storage-daemon did not create %s (is qemu-utils installed?): %s", sock, errs);
    return c;
}

static void copy_file(const char *from, const char *to)
{
    g_autofree char *data = NULL;
    gsize len;

    assert_true(g_file_get_contents(from, &data, &len, NULL));
    assert_true(g_file_set_contents(to, data, (gssize)len, NULL));
}

/* What check_disk_image() found. */
typedef struct {
    uint64_t top;         /* the highest generation */
    uint64_t below_top;   /* blocks of an older one */
} disk_gens;

/*
 * Checks every block of disk image @path: each must hold the workload's
 * data for its own index, whole, of generation @min_gen or later (and at
 * most @max_gen); fails saying how many are zero, foreign or torn.
 */
static disk_gens check_disk_image(const char *path, uint64_t min_gen, uint64_t max_gen,
                                  const char *what)
{
    g_autofree char *data = NULL;
    uint64_t zero = 0, foreign = 0, torn = 0, old = 0, top = 0, first_bad = UINT64_MAX;
    disk_gens g = { 0 };
    gsize len;

    assert_true(g_file_get_contents(path, &data, &len, NULL));
    assert_int_equal(len, (gsize)DISK_MB << 20);
    for (uint64_t b = 0; b < len / SLW_BLOCK; b++) {
        const uint64_t *p = (const uint64_t *)(data + b * SLW_BLOCK);
        uint64_t want;
        unsigned nbad;
        bool bad = true;
        if (!p[0] && !p[1] && !p[2] && !p[SLW_WORDS - 1]) {
            zero++;
        } else if (p[0] != SLW_MAGIC_DISK || p[1] != b) {
            foreign++;
        } else if (slw_check(p, SLW_MAGIC_DISK, SLW_KIND_DISK, b, p[2], &want, &nbad) !=
                   SLW_WORDS) {
            torn++;
        } else if (p[2] < min_gen || p[2] > max_gen) {
            old++;
        } else {
            bad = false;
            top = MAX(top, p[2]);
        }
        if (bad && first_bad == UINT64_MAX) {
            first_bad = b;
        }
    }
    if (zero || foreign || torn || old) {
        fail_msg("%s: of the %zu blocks of %s, %" PRIu64 " are zero, %" PRIu64 " hold another "
                 "block's data, %" PRIu64 " are torn and %" PRIu64 " have a generation outside "
                 "[%" PRIu64 ", %" PRIu64 "] (first bad block %" PRIu64 ")", what,
                 len / SLW_BLOCK, path, zero, foreign, torn, old, min_gen, max_gen, first_bad);
    }
    g.top = top;
    for (uint64_t b = 0; b < len / SLW_BLOCK; b++) {
        g.below_top += ((const uint64_t *)(data + b * SLW_BLOCK))[2] < top;
    }
    return g;
}

/*
 * Boots the guest on kind @ki with its disk served by a plain
 * qemu-storage-daemon, waits for a whole clean disk pass, asks the workload
 * to hold the next pass's data in its page cache and saves it then.
 */
static void boot_and_save_with_disk(fixture *f, unsigned ki)
{
    g_autofree char *serial = path_in(f, "boot.serial"), *qmp = path_in(f, "boot.qmp");
    g_autofree char *saveq = path_in(f, "boot-save.qmp"), *req = lg_req_path(serial);
    g_autofree char *img = path_in(f, "boot-disk.img"), *sock = vu_socket(f);
    g_autofree char *holding = NULL, *disk = NULL, *log = NULL, *hold = NULL;
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GString) in = g_string_new(NULL);
    int lq = listen_at(qmp), pidfd, rfd;
    double t0 = lg_now_ms();
    child qsd, qemu;
    disk_gens g;
    sl_qmp *q;
    lg_hb h;
    FILE *fp;

    fp = fopen(img, "w");
    assert_non_null(fp);
    assert_int_equal(ftruncate(fileno(fp), (off_t)DISK_MB << 20), 0);
    fclose(fp);
    qsd = start_qsd(f, img, sock, "qsd-boot");
    vu_args(argv, f, serial, qmp);
    add2(argv, "-qmp", g_strdup_printf("unix:%s,server=on,wait=off", saveq));
    qemu = spawn(f, argv, "boot");
    pidfd = (int)syscall(SYS_pidfd_open, qemu.pid, 0);
    assert_true(pidfd >= 0);
    q = accept_qmp(lq, &qemu);
    h = lg_wait_heartbeats(serial, pidfd, 2, 0, "boot", false);
    rfd = lg_req_connect(req);
    lg_ping(rfd, in, "boot");
    disk = lg_req_call(rfd, in, "DISK", "DISK ", LG_REQ_WAIT_MS, NULL);
    print_message("# %s: booted in %.1f s, working set %" PRIu64 " pages, disk pass: %s\n",
                  f->k->name, (lg_now_ms() - t0) / 1000, h.ws, disk);
    /* Save while a whole pass of disk data is in the guest's page cache only. */
    hold = g_strdup_printf("HOLD %d", HOLD_MS);
    holding = lg_req_call(rfd, in, hold, "HOLDING ", LG_REQ_WAIT_MS, NULL);
    assert_int_equal(sscanf(holding, "HOLDING gen=%" SCNu64, &vu.dirty_gen[ki]), 1);
    log = slurp(serial);
    vu.pages[ki] = lg_heartbeats(log).pages;
    g_free(vu.snap[ki]);
    vu.snap[ki] = g_strdup_printf("%s/%s.mig", guest.dir, f->k->name);
    lg_save(saveq, vu.format, vu.snap[ki]);
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    reap(&qemu, 60000);
    kill(qsd.pid, SIGTERM);
    reap(&qsd, 30000);
    g_clear_pointer(&log, g_free);
    log = slurp(serial);
    lg_check_console(log, "boot", false);
    g_free(vu.disk[ki]);
    vu.disk[ki] = g_strdup_printf("%s/%s-disk.img", guest.dir, f->k->name);
    copy_file(img, vu.disk[ki]);
    /* The pass held at the save is on the disk only in part (the guest's
     * writeback may have begun): the rest is only in its page cache. */
    g = check_disk_image(vu.disk[ki], vu.dirty_gen[ki] - 1, vu.dirty_gen[ki],
                         "the image at the save");
    if (g.top == vu.dirty_gen[ki] && !g.below_top) {
        fail_msg("the guest wrote all of disk pass %" PRIu64 " back before the save: nothing "
                 "was left only in its page cache", vu.dirty_gen[ki]);
    }
    print_message("# %s: saved while %" PRIu64 " of the %d blocks of disk pass %" PRIu64 " were "
                  "only in the guest's page cache\n", f->k->name,
                  g.top == vu.dirty_gen[ki] ? g.below_top : (uint64_t)DISK_MB * 256, DISK_MB * 256,
                  vu.dirty_gen[ki]);
    close(rfd);
    close(pidfd);
    close(lq);
    child_free(&qemu);
    child_free(&qsd);
}

static int vsetup(void **state)
{
    setup(state);
    ((fixture *)*state)->ram_mb = kind_ram_mb[((fixture *)*state)->k - kinds];
    lg_setup(*state, &guest, vu_args, NULL);
    return 0;
}

/* Skips (or fails, where required) without uffd or 2M pages for the guest. */
static unsigned need_vu(fixture *f)
{
    g_autofree char *why = NULL;
    bool have = sl_test_have_uffd(&why);
    unsigned ki = (unsigned)(f->k - kinds);

    SL_TEST_NEED("uffd", have, why ? why : "");
    if (f->k->cap) {
        g_autoptr(GError) err = NULL;
        bool ok = f->memfile &&
                  sl_hugetlb_check((uint64_t)f->k->hugepage,
                                   ((uint64_t)lg_ram_mb(f) << 20) / (uint64_t)f->k->hugepage,
                                   &err);
        SL_TEST_NEED(f->k->cap, ok, err ? err->message : "no hugetlbfs mount for 2 MiB pages");
    }
    lg_prepare(&guest);
    if (!vu.snap[ki]) {
        boot_and_save_with_disk(f, ki);
    }
    return ki;
}

/* What the restored guest's requests measured (restore_with_registered_backend()). */
typedef struct {
    double rtt, rel_ms, d1ms, d2ms, pass_ms; /* first PONG, held pass, disk passes, PASS */
    uint64_t gen1, gen2;                     /* the disk generations of the two passes */
    lg_hb h;                                 /* the last heartbeats seen */
} vu_passes;

/*
 * Drives the restored guest of kind @ki on its request port @rfd while the
 * restore @r runs: the disk pass it held at the save is released (its
 * fsync makes the back-end read guest RAM that may not be placed yet), a
 * disk pass, a full PASS, then (once every page is in place, unless
 * @faults_only) another disk pass; the workload's counter never goes back
 * and its console stays clean.
 */
static vu_passes drive_restored_guest(fixture *f, unsigned ki, int rfd, GString *in, int qpfd,
                                      const child *r, bool faults_only, const char *serial)
{
    g_autofree char *release = NULL, *disk1 = NULL, *disk2 = NULL, *pass = NULL, *log = NULL;
    vu_passes v = { .rel_ms = -1, .d1ms = -1, .d2ms = -1, .pass_ms = -1 };
    uint64_t held = 0;

    v.rtt = lg_ping(rfd, in, "restored");
    release = lg_req_call(rfd, in, "RELEASE", "RELEASED ", LG_REQ_WAIT_MS, &v.rel_ms);
    disk1 = lg_req_call(rfd, in, "DISK", "DISK ", LG_WAIT_MS, NULL);
    if (sscanf(release, "RELEASED gen=%" SCNu64, &held) != 1 || held != vu.dirty_gen[ki]) {
        fail_msg("the restored guest was not holding disk pass %" PRIu64 ": %s",
                 vu.dirty_gen[ki], release);
    }
    assert_int_equal(sscanf(disk1, "DISK ms=%lf gen=%" SCNu64, &v.d1ms, &v.gen1), 2);
    assert_true(v.gen1 > vu.dirty_gen[ki]);
    pass = lg_req_call(rfd, in, "PASS", "PASS ", LG_WAIT_MS, NULL);
    sscanf(pass, "PASS ms=%lf", &v.pass_ms);
    v.h = lg_wait_heartbeats(serial, qpfd, 3, vu.pages[ki], "restore", true);
    if (!faults_only) {
        wait_for_text(r->out, "\"mode\""); /* every page is in place */
    }
    disk2 = lg_req_call(rfd, in, "DISK", "DISK ", LG_WAIT_MS, NULL);
    assert_int_equal(sscanf(disk2, "DISK ms=%lf gen=%" SCNu64, &v.d2ms, &v.gen2), 2);
    v.h = lg_wait_heartbeats(serial, qpfd, v.h.count + 2, v.h.pages, "restore", true);
    if (v.h.first_pages < vu.pages[ki]) {
        fail_msg("the restored workload's counter went back: %" PRIu64 " pages, saved at %"
                 PRIu64 " or later", v.h.first_pages, vu.pages[ki]);
    }
    lg_ping(rfd, in, "after");
    log = slurp(serial);
    lg_check_console(log, "restore", true);
    return v;
}

/*
 * qemu-restore's end (status @st, stderr @errs, JSON @res) after a run
 * with every page placed: clean, 0 placed twice or never, 0 checksum
 * failures; printed with @v's figures and the disk's top generation
 * @top.  Returns how many blocks the restore took a written-page list for.
 */
static int64_t check_complete_restore(const fixture *f, int st, const char *errs,
                                      JsonObject *res, const vu_passes *v, uint64_t top,
                                      bool reuse)
{
    JsonObject *rs;
    int64_t listed;

    if (!g_spawn_check_wait_status(st, NULL)) {
        fail_msg("qemu-restore failed: %s", errs);
    }
    rs = restore_was_clean(res);
    listed = json_object_get_int_member(rs, "blocks_with_written_list");
    if (reuse) {
        print_message("# %s, --reuse-ram: %" PRId64 " of %" PRId64 " pages kept unread (the "
                      "previous run's list: %s)\n", f->k->name,
                      json_object_get_int_member(rs, "pages_known"),
                      json_object_get_int_member(rs, "pages"), listed ? "used" : "none");
    }
    print_message("# %s: running %.0f ms after QEMU's start, first PONG in %.1f ms, held pass "
                  "released in %.1f ms; it and the next took %.0f ms (gen %" PRIu64 "), a full "
                  "pass over %" PRIu64 " pages %.0f ms; every page in place %.0f ms after the "
                  "start (%" PRId64 " faults); disk pass after that %.0f ms (gen %" PRIu64 "); "
                  "image clean up to generation %" PRIu64 "\n", f->k->name,
                  json_object_get_double_member(res, "time_to_running_ms"), v->rtt, v->rel_ms,
                  v->d1ms, v->gen1, v->h.ws, v->pass_ms,
                  json_object_get_double_member(res, "time_to_complete_ms"),
                  json_object_get_int_member(rs, "faults"), v->d2ms, v->gen2, top);
    return listed;
}

/* The same end after a faults-only run that QEMU quit before every page was
 * placed: it fails saying so; printed with @v's figures. */
static void check_faults_only_restore(const fixture *f, int st, const char *errs,
                                      JsonObject *res, const vu_passes *v, uint64_t top)
{
    if (g_spawn_check_wait_status(st, NULL) || !strstr(errs, "before every page was in place")) {
        fail_msg("qemu-restore --threads 0, quit before the restore could complete: "
                 "status %d, stderr:\n%s", st, errs);
    }
    print_message("# %s, faults only: running %.0f ms after QEMU's start, first PONG in "
                  "%.1f ms, held pass released in %.1f ms; it and the next took %.0f ms "
                  "(gen %" PRIu64 "), a full pass over %" PRIu64 " pages %.0f ms, another "
                  "disk pass %.0f ms (gen %" PRIu64 "); image clean up to generation %"
                  PRIu64 "\n", f->k->name,
                  json_object_get_double_member(res, "time_to_running_ms"), v->rtt, v->rel_ms,
                  v->d1ms, v->gen1, v->h.ws, v->pass_ms, v->d2ms, v->gen2, top);
}

/*
 * Restores kind @ki's snapshot with the back-end registered through
 * --vhost-user and @threads loaders per node (0: every page, the
 * back-end's included, comes by a fault) and checks guest and disk.
 * @reuse: over the RAM file a previous run left (--reuse-ram: QEMU's and
 * the back-end's writes tracked).  Returns how many blocks the restore
 * took a written-page list for (-1 when it could not complete).
 */
static int64_t restore_with_registered_backend(fixture *f, unsigned ki, const char *threads,
                                               bool reuse)
{
    int64_t listed = -1;
    bool faults_only = !strcmp(threads, "0");
    g_autofree char *serial = path_in(f, "restore.serial"), *qmp = path_in(f, "restore.qmp");
    g_autofree char *req = lg_req_path(serial), *img = path_in(f, "disk.img");
    g_autofree char *sock = vu_socket(f), *dsock = path_in(f, "daemon.sock");
    g_autofree char *qsd = NULL, *vhost = NULL, *out = NULL, *errs = NULL;
    g_autoptr(GString) in = g_string_new(NULL);
    g_autoptr(JsonObject) res = NULL;
    disk_gens g;
    vu_passes v;
    int lq, qpfd, rfd, st;
    pid_t qemu;
    sl_qmp *q;
    child r;

    copy_file(vu.disk[ki], img);
    g_free(f->snap);
    f->snap = g_strdup(vu.snap[ki]);
    qsd = qsd_command(img, sock);
    vhost = g_strdup_printf("%s=%s", sock, qsd);
    unlink(qmp); /* a previous run's, on a restart */
    unlink(serial);
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ "--json", "--threads", threads, "--socket", dsock,
                                           "--vhost-user", vhost,
                                           reuse ? "--reuse-ram" : NULL, NULL },
                      serial, qmp, NULL);
    q = accept_qmp(lq, &r);
    qemu = sl_qmp_peer_pid(q);
    qpfd = (int)syscall(SYS_pidfd_open, qemu, 0);
    assert_true(qemu > 0 && qpfd >= 0);
    lg_wait_running(q, qpfd, "restore");
    rfd = lg_req_connect(req);
    v = drive_restored_guest(f, ki, rfd, in, qpfd, &r, faults_only, serial);
    sl_qmp_ok(q, "quit", NULL, NULL);
    sl_qmp_close(q);
    st = reap(&r, 60000); /* qemu-restore ends the back-end after QEMU */
    out = slurp(r.out);
    errs = slurp(r.err);
    res = parse_json(out);
    g = check_disk_image(img, v.gen2, UINT64_MAX, "the image after the restore");
    if (faults_only) {
        /* Pages nothing touched are still missing when QEMU quits: said so. */
        check_faults_only_restore(f, st, errs, res, &v, g.top);
    } else {
        listed = check_complete_restore(f, st, errs, res, &v, g.top, reuse);
    }
    close(rfd);
    close(qpfd);
    close(lq);
    child_free(&r);
    return listed;
}

static void test_registered_backend_keeps_guest_memory_and_disk_clean(void **state)
{
    fixture *f = *state;

    restore_with_registered_backend(f, need_vu(f), "1", false);
}

static void test_registered_backend_of_ram_in_two_regions_keeps_memory_and_disk_clean(
    void **state)
{
    fixture *f = *state;

    restore_with_registered_backend(f, need_vu(f), "1", false);
}

static void test_registered_backend_served_by_faults_only_keeps_disk_clean(void **state)
{
    fixture *f = *state;

    restore_with_registered_backend(f, need_vu(f), "0", false);
}

/*
 * Two runs over the same RAM file (--reuse-ram), the back-end registered
 * and so tracked too: the first leaves a list of what QEMU and the
 * back-end wrote (the back-end reports in its exit handlers, after
 * qemu-restore ends it), the second takes it and checks only those pages,
 * and the guest's memory and the disk stay clean in both.  A write the
 * list missed (the back-end's disk reads into guest buffers) would be
 * kept unread and found by the guest's checks.
 */
static void test_restart_with_a_tracked_backend_uses_the_written_list(void **state)
{
    fixture *f = *state;
    unsigned ki = need_vu(f);

    restore_with_registered_backend(f, ki, "1", true);
    assert_int_equal(restore_with_registered_backend(f, ki, "1", true), 1);
}

/*
 * A back-end that is not registered: QEMU must not hand it guest RAM while
 * the restore runs.  With no loaders (--threads 0) the restore cannot have
 * completed when QEMU starts the device (after that, any peer may have
 * guest RAM: on hugetlbfs-2M one loader fills 512 MiB in about 0.1 s).
 */
static void test_unregistered_backend_is_refused_before_any_byte_is_lost(void **state)
{
    fixture *f = *state;
    unsigned ki = need_vu(f);
    g_autofree char *serial = path_in(f, "restore.serial"), *qmp = path_in(f, "restore.qmp");
    g_autofree char *img = path_in(f, "disk.img"), *sock = vu_socket(f);
    g_autofree char *errs = NULL, *log = NULL, *saved = NULL, *after = NULL;
    gsize n1, n2;
    int lq, st;
    child qsd, r;

    copy_file(vu.disk[ki], img);
    g_free(f->snap);
    f->snap = g_strdup(vu.snap[ki]);
    qsd = start_qsd(f, img, sock, "qsd-plain"); /* not registered with the restore */
    lq = listen_at(qmp);
    r = start_restore(f, (const char *[]){ "--json", "--threads", "0", NULL }, serial, qmp, NULL);
    st = reap(&r, 60000); /* QEMU must end by itself, before the guest runs */
    errs = slurp(r.err);
    if (g_spawn_check_wait_status(st, NULL) ||
        !strstr(errs, "refusing to hand guest RAM block 'ram0'") ||
        !strstr(errs, "qemu-storage-d")) {
        fail_msg("qemu-restore with an unregistered back-end: status %d, stderr:\n%s", st, errs);
    }
    kill(qsd.pid, SIGTERM);
    reap(&qsd, 30000);
    log = slurp(serial);
    if (lg_heartbeats(log).count) {
        fail_msg("the guest ran with an unregistered back-end:\n%s", log);
    }
    assert_true(g_file_get_contents(vu.disk[ki], &saved, &n1, NULL));
    assert_true(g_file_get_contents(img, &after, &n2, NULL));
    if (n1 != n2 || memcmp(saved, after, n1)) {
        fail_msg("the refused back-end changed the disk image");
    }
    /* One TAP comment line: the refusal, not the lines qemu-restore printed after it. */
    print_message("# %s: refused: %.*s\n", f->k->name,
                  (int)strcspn(strstr(errs, "refusing"), "\n"), strstr(errs, "refusing"));
    close(lq);
    child_free(&r);
    child_free(&qsd);
}

#define CASE(fn, k) cmocka_unit_test_prestate_setup_teardown(fn, vsetup, teardown, (void *)&kinds[k])

int main(void)
{
    struct CMUnitTest tests[4 * G_N_ELEMENTS(kinds)];
    const unsigned big = NKINDS_ALL;
    unsigned n = 0;
    int failed;

    qtest_pick_qemu();
    /* QEMU's own mapped-ram file where QEMU writes one (9.0+), else our container. */
    vu.format = qtest_qemu_major() >= 9 ? "qemu" : "snapload";
    for (unsigned k = 0; k < NKINDS_ALL; k++) {
        tests[n] = (struct CMUnitTest)CASE(test_registered_backend_keeps_guest_memory_and_disk_clean,
                                           k);
        tests[n++].name = g_strdup_printf(
            "%s/registered_backend_keeps_guest_memory_and_disk_clean", kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(
            test_registered_backend_served_by_faults_only_keeps_disk_clean, k);
        tests[n++].name = g_strdup_printf(
            "%s/registered_backend_served_by_faults_only_keeps_disk_clean", kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(
            test_unregistered_backend_is_refused_before_any_byte_is_lost, k);
        tests[n++].name = g_strdup_printf(
            "%s/unregistered_backend_is_refused_before_any_byte_is_lost", kinds[k].name);
        tests[n] = (struct CMUnitTest)CASE(
            test_restart_with_a_tracked_backend_uses_the_written_list, k);
        tests[n++].name = g_strdup_printf(
            "%s/restart_with_a_tracked_backend_uses_the_written_list", kinds[k].name);
    }
    tests[n] = (struct CMUnitTest)CASE(
        test_registered_backend_of_ram_in_two_regions_keeps_memory_and_disk_clean, big);
    tests[n++].name = g_strdup_printf(
        "%s/registered_backend_of_ram_in_two_regions_keeps_memory_and_disk_clean", kinds[big].name);
    qtest_skip_without_qemu(tests, n);
    if (g_getenv("SL_TEST_FILTER")) {
        cmocka_set_test_filter(g_getenv("SL_TEST_FILTER"));
    }
    guest.dir = sl_test_tmpdir();
    failed = _cmocka_run_group_tests("vhost-user-blk", tests, n, NULL, NULL);
    for (unsigned k = 0; k < G_N_ELEMENTS(kinds); k++) {
        g_free(vu.snap[k]);
        g_free(vu.disk[k]);
    }
    if (!g_getenv("SL_TEST_KEEP")) {
        sl_test_rmdir(guest.dir);
    }
    g_free(guest.kernel);
    g_free(guest.initrd);
    for (unsigned i = 0; i < n; i++) {
        g_free((char *)tests[i].name);
    }
    return failed;
}
