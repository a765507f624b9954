#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Stock QEMU: lazy `snapload qemu-restore` against QEMU's own eager loads.

One run, for each guest size (default 1G,4G):
  1. The guest: the walker (tests/qtest/guest) booted with its RAM already
     holding data: the RAM file is written first with `snapload synth`
     (random pages, 30 % zero pages, the first MiB zero), then mapped by
     QEMU (memory-backend-file,share=on, id pc.ram); the walker starts its
     first pass and marks pages, and at its first progress line QEMU saves
     itself to its own mapped-ram file (`snapload qemu-save --format qemu`:
     `migrate file:`, no x-ignore-shared).  From that file, a paused QEMU
     that loaded it (and never ran) writes the full `exec:` stream of the
     same guest state.  So every path below loads the same guest.
  2. For each RAM backend (anon: plain -m; shmem: memory-backend-file
     share=on on /dev/shm; hugetlbfs-2M: the same on hugetlbfs), --reps
     interleaved repetitions (the order rotates each repetition) of:
       lazy             `snapload qemu-restore FILE` (device state only, RAM
                        on demand); the guest must then finish the pass under
                        way and one more pass that checks every page (walker
                        `PASS 2 OK errors=0`, no ERR, no reset);
       eager-file       QEMU's own `migrate-incoming file:FILE` (mapped-ram);
       eager-file-mfdN  the same with N multifd channels, for each N of
                        --multifd (2,16: on a host where fresh memory is
                        dear, 16 threads overlap their page faults and load
                        fastest; elsewhere fewer may win);
       eager-exec       QEMU's `migrate-incoming exec:cat STREAM`;
     each timed by `snapload qemu-restore --json` (with --eager for QEMU's
     own loads), page cache warm (the file is read right before each run);
     then one lazy run with --verify (every page compared with the file
     before `cont`) that also runs the guest on two passes, and, at the
     first size, one more load of each eager path after which the guest
     runs the same passes (the baselines load a working guest).
A run that fails or hangs (no figures in RESTORE_TIMEOUT) is recorded with
its reason and left out of the medians.
Figures: QEMU start (process start to its QMP connection), migrate-incoming
to `cont` answered, start to running, and for lazy every page in place;
medians with min-max; eager/lazy ratios against the FASTEST eager path.
Writes OUT/bench-qemu.json (every run) and OUT/bench-qemu.md (the table).
Hugepages are taken under flock /tmp/snapload-hugepages.lock and the pool is
given back to its former size afterwards.  As root.

usage: scripts/bench-qemu.py [--sizes 1G,4G] [--backends anon,shmem,hugetlbfs-2M]
                             [--reps 3] [--multifd 2,16] [--dir /var/tmp/snapload-qemu-bench]
                             [--out DIR] [--build DIR] [--keep]
       scripts/bench-qemu.py --summarize OUT/bench-qemu.json
The snapload binaries come from --build, else $SNAPLOAD_BUILD, else ./build.
"""
import argparse
import datetime
import fcntl
import json
import os
import platform
import re
import select
import shlex
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import qmp  # noqa: E402  (bench/qmp.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("anon", "shmem", "hugetlbfs-2M")
HUGEPAGE_LOCK = "/tmp/snapload-hugepages.lock"
HUGEPAGES_2M = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
FIGURES = ("qemu_start_ms", "device_state_ms", "cont_ms", "incoming_to_running_ms",
           "time_to_running_ms", "setup_ms")
WALKER_TIMEOUT = 900     # s, for the walker's passes after a restore
RESTORE_TIMEOUT = 300    # s, for qemu-restore's figures
SAVED_PASS = 1           # the walker is saved during its first pass


def log(msg):
    print("bench-qemu: " + msg, file=sys.stderr, flush=True)


def fail(msg):
    sys.exit("bench-qemu: " + msg)


def parse_size(s):
    units = {"M": 20, "G": 30}
    return int(s[:-1]) << units[s[-1].upper()] if s[-1].upper() in units else int(s)


def unlink(*paths):
    for p in paths:
        if p and os.path.lexists(p):
            os.unlink(p)


def warm(path):
    """Reads @path through the page cache: every figure is a warm one."""
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


class QMP(qmp.QMP):
    """QEMU's monitor (bench/qmp.py), with a migration that waits for its end."""

    def __init__(self, path, timeout=60):
        super().__init__(path, timeout)

    def migrate(self, uri):
        """migrate to @uri, waited for until completed (fails otherwise)."""
        self.events = []  # a MIGRATION event of the incoming load may be queued
        self.cmd("migrate", uri=uri)
        while True:
            for e in self.events:
                st = e["data"].get("status") if e["event"] == "MIGRATION" else None
                if st in ("completed", "failed", "cancelled"):
                    if st != "completed":
                        raise RuntimeError("migration %s: %s" % (
                            st, self.cmd("query-migrate").get("error-desc", "")))
                    return
            self.events = []
            m = self.read()
            if "event" in m:
                self.events.append(m)


def read_log(path):
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def guest_trouble(text):
    """Why the walker's serial log shows a wrong guest, or None."""
    if "ERR" in text:
        return "the walker found a wrong page"
    if "WALKER START" in text:
        return "the guest was reset (a second WALKER START)"
    if re.search(r"errors=[1-9]", text):
        return "the walker counted errors"
    return None


class RunFailed(Exception):
    """One run went wrong: recorded with its reason, the bench goes on."""


def wait_serial(path, pattern, timeout, proc=None, restored=False):
    """Waits until the serial log @path has a whole line matching @pattern;
    raises RunFailed on a wrong page, on a reset of a restored guest, or
    when @proc ended first.  Returns the log."""
    rx = re.compile(pattern + r".*\n")
    end = time.time() + timeout
    while time.time() < end:
        text = read_log(path)
        why = guest_trouble(text) if restored else ("the walker found a wrong page"
                                                    if "ERR" in text else None)
        if why:
            raise RunFailed("%s:\n%s" % (why, text[-3000:]))
        if rx.search(text):
            return text
        if proc is not None and proc.poll() is not None:
            raise RunFailed("%s ended (status %s) before %r appeared in %s"
                            % (proc.args[0], proc.returncode, pattern, path))
        time.sleep(0.05)
    raise RunFailed("timed out waiting for %r in %s" % (pattern, path))


def stop(p):
    """Ends qemu-restore @p if it still runs (its daemon and QEMU die with
    it: PR_SET_PDEATHSIG) and reaps it."""
    if p.poll() is None:
        p.kill()
    p.wait()


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


class Bench:
    def __init__(self, a):
        self.a = a
        self.build = a.build or os.environ.get("SNAPLOAD_BUILD") or os.path.join(ROOT, "build")
        self.snapload = os.path.join(self.build, "snapload")
        walker = os.path.join(self.build, "tests/qtest/guest/walker.img")
        for p in (self.snapload, walker, os.path.join(self.build, "libsnapload-preload.so")):
            if not os.path.exists(p):
                fail("%s is missing: build snapload first (meson setup B && ninja -C B; "
                     "--build B)" % p)
        self.dir = a.dir
        self.out = a.out or a.dir
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.out, exist_ok=True)
        self.img = os.path.join(self.dir, "walker.img")
        with open(walker, "rb") as src, open(self.img, "wb") as dst:
            dst.write(src.read())
        self.kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
        self.mem = {"shmem": "/dev/shm/snapload-bench-qemu"}
        self.eager_paths = ["eager-file"] + ["eager-file-mfd%d" % n for n in a.multifd] + \
            ["eager-exec"]
        self.paths = ["lazy"] + self.eager_paths

    # ------------------------------ the guest ------------------------------

    def qemu_args(self, size, backend, serial, *extra):
        """The guest's QEMU command line; RAM is the block "pc.ram" on every
        backend, so that one file loads into each of them."""
        mb = parse_size(size) >> 20
        args = ["qemu-system-x86_64", "-accel", "kvm" if self.kvm else "tcg",
                "-machine", "pc" if backend == "anon" else "pc,memory-backend=pc.ram",
                "-m", "%dM" % mb, "-display", "none", "-nodefaults", "-no-user-config",
                "-global", "apic-common.vapic=false"]
        if backend != "anon":
            args += ["-object", "memory-backend-file,id=pc.ram,size=%dM,mem-path=%s,share=on"
                     % (mb, self.mem[backend])]
        return args + ["-drive", "format=raw,file=%s,if=ide,file.locking=off" % self.img,
                       "-serial", "file:" + serial] + list(extra)

    def files(self, size):
        return (os.path.join(self.dir, "guest-%s.mig" % size),
                os.path.join(self.dir, "guest-%s.stream" % size))

    def make_guest(self, size):
        """Boots the walker on RAM that already holds data, saves it to QEMU's
        mapped-ram file early in its first pass, and writes the full exec:
        stream of the same state from that file."""
        mig, stream = self.files(size)
        t0 = time.time()
        ram = "/dev/shm/snapload-bench-qemu-save"
        serial, qmp = (os.path.join(self.dir, n) for n in ("save.serial", "save.qmp"))
        unlink(serial, qmp, ram, mig, stream)
        # The RAM the guest boots with: random pages, 30 % of them zero, the
        # first MiB (real-mode and BIOS areas) zero.
        subprocess.run([self.snapload, "synth", "-o", ram, "--size", size,
                        "--zero-percent", "30", "--seed", "11"], check=True,
                       stdout=subprocess.DEVNULL)
        with open(ram, "r+b") as f:
            f.write(bytes(1 << 20))
        self.mem["save"] = ram
        log("%s guest: booting the walker on RAM filled by `snapload synth`" % size)
        q = subprocess.Popen(self.qemu_args(size, "save", serial, "-qmp",
                                            "unix:%s,server=on,wait=off" % qmp))
        try:
            # Its first progress line: 64 MiB marked in pass 1.
            try:
                wait_serial(serial, r"\. 0x[0-9a-f]+", 600, q)
            except RunFailed as e:
                fail("booting the guest to save: %s" % e)
            t_save = time.time()
            subprocess.run([self.snapload, "qemu-save", "--qmp", qmp, "--format", "qemu",
                            "-o", mig, "--quit"], check=True)
            save_s = time.time() - t_save
            q.wait(timeout=120)
        finally:
            if q.poll() is None:
                q.kill()
                q.wait()
            unlink(ram)
        text = read_log(serial)
        if "ERR" in text or "PASS" in text:
            fail("the guest was not saved in its first pass without error:\n" + text)
        start = re.search(r"WALKER START ram=(0x[0-9a-f]+)", text)
        marked = re.findall(r"\. (0x[0-9a-f]+)", text)
        log("%s guest: saved to %s (%.1f s); writing the exec: stream of the same state"
            % (size, mig, save_s))
        self.stream_from(size, mig, stream)
        info = json.loads(subprocess.run([self.snapload, "inspect", "--json", "--quick", mig],
                                         check=True, stdout=subprocess.PIPE).stdout)
        ram_block = next(b for b in info["blocks"] if b["name"] == "pc.ram")
        return {
            "mapped_ram_file": mig, "mapped_ram_bytes": os.path.getsize(mig),
            "exec_stream": stream, "exec_stream_bytes": os.path.getsize(stream),
            "ram_pages": ram_block["pages"], "ram_pages_stored": ram_block["present_pages"],
            "ram_zero_pages": ram_block["zero_pages"],
            "zero_page_share": ram_block["zero_pages"] / ram_block["pages"],
            "device_state_bytes": info.get("device_state_length"),
            "capabilities": info.get("capabilities"),
            "walker_ram": start.group(1) if start else None,
            "saved_in_pass": SAVED_PASS,
            "walker_marked_up_to": marked[-1] if marked else None,
            "save_s": round(save_s, 2), "make_s": round(time.time() - t0, 1),
        }

    def stream_from(self, size, mig, stream):
        """The full exec: stream of the guest in @mig: a QEMU loads @mig
        (paused, it never runs) and migrates to `exec:cat > STREAM`."""
        serial, qmp = (os.path.join(self.dir, n) for n in ("stream.serial", "stream.qmp"))
        unlink(serial, qmp)
        p = subprocess.Popen([self.snapload, "qemu-restore", mig, "--eager", mig, "--multifd",
                              str(max(self.a.multifd)), "--paused", "--json", "--"] +
                             self.qemu_args(size, "anon", serial, "-qmp",
                                            "unix:%s,server=on,wait=off" % qmp),
                             stdout=subprocess.PIPE, text=True)
        try:
            out = json.loads(p.stdout.readline() or "{}")
            if out.get("status") != "ok":
                fail("loading %s for the exec: stream failed: %s" % (mig, out))
            m = QMP(qmp)
            m.cmd("migrate-set-capabilities", capabilities=[
                {"capability": c, "state": c == "events"}
                for c in ("x-ignore-shared", "mapped-ram", "multifd", "events")])
            m.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            m.migrate("exec:cat > %s" % shlex.quote(stream))
            m.cmd("quit")
            m.close()
            p.wait(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()

    # ------------------------------- the runs ------------------------------

    def restore(self, size, backend, name, opts, extra=()):
        """Starts `snapload qemu-restore` and reads its JSON: the process
        (still running: QEMU runs the guest), the figures, the serial log."""
        serial = os.path.join(self.dir, name + ".serial")
        err = os.path.join(self.dir, name + ".err")
        unlink(serial)
        mig, _ = self.files(size)
        cmd = [self.snapload, "qemu-restore", mig, "--json"] + opts + ["--"] + \
            self.qemu_args(size, backend, serial, *extra)
        load = open("/proc/loadavg").read().split()[0]  # the host's own noise
        with open(err, "w") as e:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=e, text=True)
        try:
            # qemu-restore prints its JSON once the guest runs (eager) or once
            # every page is in place (lazy): seconds.
            if not select.select([p.stdout], [], [], RESTORE_TIMEOUT)[0]:
                raise RunFailed("printed nothing in %d s (the guest finished %d passes "
                                "meanwhile)" % (RESTORE_TIMEOUT, read_log(serial).count("PASS")))
            line = p.stdout.readline()
            out = json.loads(line) if line.strip() else {"status": "failed",
                                                         "error": "no output"}
            if out.get("status") != "ok":
                raise RunFailed("failed: %s" % out.get("error"))
        except RunFailed as e:
            stop(p)
            raise RunFailed("%s %s; its stderr:\n%s" % (shlex.join(cmd), e,
                                                        read_log(err)[-3000:]))
        out["setup_ms"] = out["time_to_running_ms"] - out["qemu_start_ms"] - \
            out["incoming_to_running_ms"] if out["time_to_running_ms"] >= 0 else None
        out["loadavg_before"] = load
        return p, out, serial, err

    def run_on(self, p, out, serial, qmp):
        """The restored guest finishes the pass under way and a pass that
        checks every page; then QEMU quits."""
        t = time.time()
        try:
            text = wait_serial(serial, r"PASS %d OK errors=\d+" % (SAVED_PASS + 1),
                               WALKER_TIMEOUT, p, restored=True)
            out["guest_passes_s"] = round(time.time() - t, 1)
            out["guest_passes"] = re.findall(r"PASS \d+ OK errors=\d+", text)
            out["guest_check"] = "ok"
            m = QMP(qmp)
            m.cmd("quit")
            m.close()
            if p.wait(timeout=120) != 0:
                raise RunFailed("qemu-restore ended with status %d" % p.returncode)
        finally:
            stop(p)

    def lazy(self, size, backend, verify=False):
        name = "verify" if verify else "lazy"
        qmp = os.path.join(self.dir, name + ".qmp")
        unlink(qmp)
        p, out, serial, err = self.restore(size, backend, name, ["--verify"] if verify else [],
                                           ("-qmp", "unix:%s,server=on,wait=off" % qmp))
        if verify:
            out["verify_differing_pages"] = re.findall(r"page at (0x[0-9a-f]+) differs",
                                                       read_log(err))
        self.run_on(p, out, serial, qmp)
        return out

    def eager(self, size, backend, path, check=False):
        """QEMU's own eager load; with @check the guest then runs the same
        passes as after a lazy restore (the baselines load a working guest)."""
        mig, stream = self.files(size)
        opts = ["--eager", stream if path == "eager-exec" else mig]
        if path.startswith("eager-file-mfd"):
            opts += ["--multifd", path.rsplit("mfd", 1)[1]]
        if check:
            qmp = os.path.join(self.dir, "eager.qmp")
            unlink(qmp)
            p, out, serial, _ = self.restore(size, backend, "eager", opts,
                                             ("-qmp", "unix:%s,server=on,wait=off" % qmp))
            self.run_on(p, out, serial, qmp)
            return out
        p, out, _, _ = self.restore(size, backend, "eager", opts + ["--quit-when-done"])
        try:
            if p.wait(timeout=120) != 0:
                raise RunFailed("qemu-restore --eager ended with status %d" % p.returncode)
        finally:
            stop(p)
        return out

    def one(self, size, backend, path):
        mig, stream = self.files(size)
        warm(stream if path == "eager-exec" else mig)
        return self.lazy(size, backend) if path == "lazy" else self.eager(size, backend, path)

    def backend(self, size, backend):
        """Every path on one backend: interleaved repetitions, then the
        verify run.  A run that fails is recorded with its reason (and left
        out of the medians)."""
        runs = {p: [] for p in self.paths}
        failures = []
        for rep in range(self.a.reps):
            order = self.paths[rep % len(self.paths):] + self.paths[:rep % len(self.paths)]
            for path in order:
                log("%s %s: %s, repetition %d of %d" % (size, backend, path, rep + 1,
                                                          self.a.reps))
                try:
                    runs[path].append(self.one(size, backend, path))
                except RunFailed as e:
                    log("%s %s: %s FAILED: %s" % (size, backend, path, e))
                    failures.append({"path": path, "repetition": rep + 1, "error": str(e)})
        log("%s %s: lazy with --verify" % (size, backend))
        warm(self.files(size)[0])
        try:
            ver = self.lazy(size, backend, verify=True)
        except RunFailed as e:
            log("%s %s: the verify run FAILED: %s" % (size, backend, e))
            failures.append({"path": "lazy --verify", "error": str(e)})
            ver = None
        checks = {}
        if size == self.a.sizes.split(",")[0]:
            for path in self.eager_paths:
                log("%s %s: %s, then the guest runs two passes" % (size, backend, path))
                try:
                    checks[path] = self.eager(size, backend, path, check=True)["guest_check"]
                except RunFailed as e:
                    log("%s %s: %s FAILED: %s" % (size, backend, path, e))
                    checks[path] = str(e)
        row = summarize(runs, ver, self.eager_paths, failures)
        row["eager_guest_checks"] = checks
        return row

    def hugetlbfs(self, size, fn):
        """Runs @fn with the 2 MiB pool reserved, under the hugepage lock;
        gives the pool back to its former size afterwards."""
        with open(HUGEPAGE_LOCK, "a") as lock:
            log("waiting for %s" % HUGEPAGE_LOCK)
            fcntl.flock(lock, fcntl.LOCK_EX)
            before = int(open(HUGEPAGES_2M).read())
            try:
                p = subprocess.run(["bash", os.path.join(ROOT, "scripts/hugetlb-setup.sh"),
                                    str((parse_size(size) >> 21) + 16), "2M"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if p.returncode:
                    return {"skipped": p.stdout.strip().splitlines()[-1]}
                mnt = re.search(r"mount: (\S+)", p.stdout)
                self.mem["hugetlbfs-2M"] = os.path.join(mnt.group(1) if mnt else "/dev/hugepages",
                                                        "snapload-bench-qemu")
                return fn()
            finally:
                # mem-path=FILE outlives QEMU: a file left on hugetlbfs holds its pages.
                unlink(self.mem.get("hugetlbfs-2M"))
                with open(HUGEPAGES_2M, "w") as f:
                    f.write(str(before))

    def run(self):
        t0 = time.time()
        res = {"guests": {}, "results": {}, "phase_s": {}}
        for size in self.a.sizes.split(","):
            t = time.time()
            res["guests"][size] = self.make_guest(size)
            rows = res["results"][size] = {}
            for be in self.a.backends.split(","):
                tb = time.time()
                if be == "hugetlbfs-2M":
                    rows[be] = self.hugetlbfs(size, lambda: self.backend(size, be))
                else:
                    try:
                        rows[be] = self.backend(size, be)
                    finally:
                        unlink(self.mem.get(be))
                res["phase_s"]["%s %s" % (size, be)] = round(time.time() - tb)
            res["phase_s"][size] = round(time.time() - t)
            if not self.a.keep:
                unlink(*self.files(size))
        res["duration_s"] = round(time.time() - t0)
        return res


def summarize(runs, ver, eager_paths, failures):
    """Medians (with min-max) of every figure per path; the ratios eager /
    lazy against the fastest eager path and the fastest mapped-ram one."""
    row = {"paths": {}, "failures": failures, "runs": runs, "verify_run": ver}
    for path, rs in runs.items():
        s = {"runs": len(rs), "failed_runs": sum(f["path"] == path for f in failures)}
        for k in FIGURES + (("time_to_complete_ms", "faults") if path == "lazy" else ()):
            vals = [r.get(k) for r in rs if r.get(k) is not None]
            s[k] = median(vals)
            s[k.replace("_ms", "") + "_min_max" + ("_ms" if k.endswith("_ms") else "")] = \
                [min(vals), max(vals)] if vals else None
        row["paths"][path] = s
    lazy = row["paths"]["lazy"]
    lruns = runs["lazy"] + ([ver] if ver else [])
    lazy["pages_placed_twice"] = max((r["pages_placed_twice"] for r in lruns), default=None)
    lazy["pages_never_placed"] = max((r["restore"]["pages_never_placed"] for r in lruns),
                                     default=None)
    # Every lazy restore that did not get as far as the guest's checks counts as not ok.
    lazy["guest_checks"] = [r["guest_check"] for r in lruns] + \
        ["failed" for f in failures if f["path"].startswith("lazy")]
    lazy["verify_mismatches"] = ver.get("verify_mismatches") if ver else None
    lazy["verify_differing_pages"] = ver.get("verify_differing_pages") if ver else None
    key = "incoming_to_running_ms"
    measured = [p for p in eager_paths if row["paths"][p][key] is not None]
    if lazy[key] is None or not measured:
        return row
    fastest = min(measured, key=lambda p: row["paths"][p][key])
    files = [p for p in measured if p.startswith("eager-file")]
    fastest_file = min(files, key=lambda p: row["paths"][p][key]) if files else fastest
    row["fastest_eager"] = fastest
    row["fastest_eager_mapped_ram"] = fastest_file
    for tag, p, group in (("", fastest, measured),
                          ("_mapped_ram", fastest_file, files or measured)):
        e = row["paths"][p]
        row["ratio%s_incoming_to_running" % tag] = e[key] / lazy[key]
        row["ratio%s_time_to_running" % tag] = e["time_to_running_ms"] / lazy["time_to_running_ms"]
        # The most cautious reading: the fastest single eager run (of any
        # path in the group) against the slowest lazy one.
        row["ratio%s_incoming_to_running_worst_case" % tag] = \
            min(row["paths"][g]["incoming_to_running_min_max_ms"][0] for g in group) / \
            lazy["incoming_to_running_min_max_ms"][1]
    return row


# ------------------------------- the report --------------------------------

TARGETS = {"anon": 50, "shmem": 50, "hugetlbfs-2M": 20}
PATH_NAMES = {"lazy": "**lazy** `snapload qemu-restore`",
              "eager-file": "eager `file:` (mapped-ram)", "eager-exec": "eager `exec:` stream"}


def path_name(p):
    return PATH_NAMES.get(p) or "eager `file:` + multifd %s" % p.rsplit("mfd", 1)[1]


def fmt(v, digits=1):
    return "-" if v is None else "%.*f" % (digits, v)


def acceptance(res):
    """The targets of issue 11, item 5, checked on the figures of this run."""
    out = []
    for be, want in TARGETS.items():
        r = res["results"].get("4G", {}).get(be)
        if not r or "paths" not in r:
            continue
        got = r.get("ratio_mapped_ram_incoming_to_running")
        out.append({"check": "4 GiB %s: lazy at least %d× sooner than QEMU's eager mapped-ram "
                    "load (migrate-incoming to `cont` answered, medians)" % (be, want),
                    "value": None if got is None else round(got, 1),
                    "against": r.get("fastest_eager_mapped_ram"),
                    "met": got is not None and got >= want})
    for be, r in res["results"].get("1G", {}).items():
        if "paths" not in r:
            continue
        got = r["paths"]["lazy"]["device_state_ms"]
        mm = r["paths"]["lazy"]["device_state_min_max_ms"]
        out.append({"check": "1 GiB %s: device-state load of the walker guest under 20 ms "
                    "(lazy, median; min–max %s–%s ms)"
                    % (be, fmt(mm and mm[0]), fmt(mm and mm[1])),
                    "value": None if got is None else round(got, 1),
                    "met": got is not None and got < 20})
    for size, rows in res["results"].items():
        for be, r in rows.items():
            if "paths" not in r:
                continue
            l = r["paths"]["lazy"]
            ok = l["pages_placed_twice"] == 0 and l["pages_never_placed"] == 0 and \
                l["guest_checks"] and all(c == "ok" for c in l["guest_checks"])
            out.append({"check": "%s %s: 0 pages placed twice (or never placed), and after every "
                        "lazy restore the guest runs on (walker PASS lines go on, no ERR)"
                        % (size, be),
                        "value": "%s placed twice, %s never placed, guest checks %d of %d ok" % (
                            l["pages_placed_twice"], l["pages_never_placed"],
                            sum(c == "ok" for c in l["guest_checks"]), len(l["guest_checks"])),
                        "met": bool(ok)})
    return out


def ms(v, digits=1):
    return "-" if v is None else "%.*f ms" % (digits, v)


def markdown(res):
    m = res["machine"]
    lines = ["<!-- SPDX-License-Identifier: GPL-2.0-or-later -->",
             "# Stock QEMU: lazy `qemu-restore` against QEMU's own eager loads", "",
             "`%s` on %s: %d CPUs (%s), %.0f GiB, kernel %s, %s, %s. Medians of %d interleaved "
             "repetitions (min–max in brackets), page cache warm. The whole run took %.0f min."
             % (res["command"], m["date"], m["cpus"], m["cpu"], m["mem_gib"], m["kernel"],
                res["qemu_version"], res["accel"], res["reps"], res["duration_s"] / 60), "",
             "The guest: the walker (tests/qtest/guest) booted on RAM that `snapload synth` "
             "filled first (random pages, 30 % zero, first MiB zero), saved by QEMU itself to "
             "its mapped-ram file (`snapload qemu-save --format qemu`) early in the walker's "
             "first pass; the exec: stream holds the same guest state (written by a QEMU that "
             "loaded that file and never ran). Every path on every backend loads that one "
             "guest.", ""]
    for size, g in res["guests"].items():
        lines.append("- %s: %d of %d RAM pages stored (%.1f %% zero pages); mapped-ram file "
                     "%.2f GiB, exec: stream %.2f GiB, device state %s bytes; made and saved "
                     "in %.0f s." % (size, g["ram_pages_stored"], g["ram_pages"],
                                     100 * g["zero_page_share"], g["mapped_ram_bytes"] / 2**30,
                                     g["exec_stream_bytes"] / 2**30, g["device_state_bytes"],
                                     g["make_s"]))
    lines += ["", "| size | RAM | load path | QEMU start | migrate-incoming → `cont` answered "
              "(min–max) | of it: device state | QEMU start → running | every page in place |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for size, rows in res["results"].items():
        for be, r in rows.items():
            if "paths" not in r:
                lines.append("| %s | %s | not measured: %s | | | | | |" % (size, be, r["skipped"]))
                continue
            for p, s in r["paths"].items():
                mm = s["incoming_to_running_min_max_ms"] or [None, None]
                name = path_name(p) + (" (fastest eager)" if p == r.get("fastest_eager") else "")
                if s["failed_runs"]:
                    name += " (%d run(s) failed)" % s["failed_runs"]
                lines.append("| %s | %s | %s | %s | %s (%s–%s) | %s | %s | %s |" % (
                    size, be, name, ms(s["qemu_start_ms"]), ms(s["incoming_to_running_ms"]),
                    fmt(mm[0]), fmt(mm[1]), ms(s["device_state_ms"]),
                    ms(s["time_to_running_ms"]),
                    ms(s.get("time_to_complete_ms"), 0) if p == "lazy" else ""))
    lines += ["", "Eager / lazy, against the fastest eager path of each backend (medians "
              "unless said):", "",
              "| size | RAM | fastest eager | migrate-incoming → `cont` answered | the same, "
              "fastest eager run of any path / slowest lazy run | QEMU start → running | against "
              "the fastest mapped-ram load | lazy: faults; placed twice; guest checks; --verify |",
              "|---|---|---|---:|---:|---:|---:|---|"]
    for size, rows in res["results"].items():
        for be, r in rows.items():
            if "fastest_eager" not in r:
                continue
            lz = r["paths"]["lazy"]
            lines.append("| %s | %s | %s: %s | **%.0f×** | %.0f× | %.1f× | %.0f× (%s) | %s; %s; "
                         "%d of %d ok; %s page(s) differ %s |" % (
                             size, be, path_name(r["fastest_eager"]),
                             ms(r["paths"][r["fastest_eager"]]["incoming_to_running_ms"], 0),
                             r["ratio_incoming_to_running"],
                             r["ratio_incoming_to_running_worst_case"],
                             r["ratio_time_to_running"],
                             r["ratio_mapped_ram_incoming_to_running"],
                             path_name(r["fastest_eager_mapped_ram"]), fmt(lz["faults"], 0),
                             lz["pages_placed_twice"],
                             sum(c == "ok" for c in lz["guest_checks"]), len(lz["guest_checks"]),
                             lz["verify_mismatches"],
                             " ".join(lz["verify_differing_pages"] or [])))
    checked = [(size, be, r["eager_guest_checks"]) for size, rows in res["results"].items()
               for be, r in rows.items() if r.get("eager_guest_checks")]
    if checked:
        lines += ["", "QEMU's own eager loads load a guest that runs on: after one more load of "
                  "each path (not timed), the walker's next two passes (the second checks every "
                  "page):", ""]
        lines += ["- %s %s: %s" % (size, be, ", ".join(
            "%s %s" % (path_name(p), c if c == "ok" else "FAILED: " + c.splitlines()[0][:200])
            for p, c in checks.items())) for size, be, checks in checked]
    loads = [float(x["loadavg_before"]) for rows in res["results"].values()
             for r in rows.values() for rs in r.get("runs", {}).values() for x in rs]
    if loads:
        lines += ["", "The host's load average (1 min) when the timed runs started: %.2f–%.2f, "
                  "median %.2f (2 CPUs; other work on the machine shows here)."
                  % (min(loads), max(loads), statistics.median(loads))]
    lines += ["", "Acceptance (issue 11, item 5):", ""]
    for c in res["acceptance"]:
        lines.append("- %s: %s%s: **%s**" % (
            c["check"], "-" if c["value"] is None else c["value"],
            "× against %s" % path_name(c["against"]) if c.get("against") else "",
            "met" if c["met"] else "NOT met"))
    fails = [(size, be, f) for size, rows in res["results"].items()
             for be, r in rows.items() for f in r.get("failures", [])]
    if fails:
        lines += ["", "Failed runs (left out of the medians):", ""]
        for size, be, f in fails:
            lines.append("- %s %s %s: %s" % (size, be, f["path"],
                                              f["error"].splitlines()[0][:400]))
    return "\n".join(lines) + "\n"


def machine():
    mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu": cpu,
            "mem_gib": round(int(mem) / 2**20, 1), "date": datetime.date.today().isoformat()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1G,4G")
    ap.add_argument("--size", dest="sizes", help=argparse.SUPPRESS)  # the old spelling
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--multifd", default="2,16",
                    help="channels of the multifd eager loads, one path each (default 2,16)")
    ap.add_argument("--dir", default="/var/tmp/snapload-qemu-bench", help="files and scratch")
    ap.add_argument("--out", default=None, help="where results go (default: DIR)")
    ap.add_argument("--build", default=None, help="snapload build directory")
    ap.add_argument("--keep", action="store_true", help="keep the saved guests in DIR")
    ap.add_argument("--summarize", metavar="JSON", help="only derive the medians, ratios and "
                    "table again from the runs kept in a bench-qemu.json (written back, with "
                    "bench-qemu.md beside it)")
    a = ap.parse_args()
    try:
        a.multifd = sorted({int(x) for x in a.multifd.split(",") if x})
    except ValueError:
        ap.error("--multifd: a comma-separated list of channel counts, got %r" % a.multifd)
    if not a.multifd or min(a.multifd) < 1:
        ap.error("--multifd: at least one channel count, each 1 or more")
    if a.summarize:
        with open(a.summarize) as f:
            res = json.load(f)
        out = os.path.dirname(os.path.abspath(a.summarize))
        for rows in res["results"].values():
            for be, r in rows.items():
                if "paths" in r:
                    checks = r.get("eager_guest_checks")
                    rows[be] = summarize(r["runs"], r["verify_run"],
                                         [p for p in r["paths"] if p != "lazy"], r["failures"])
                    rows[be]["eager_guest_checks"] = checks
        write(res, out)
        return
    for be in a.backends.split(","):
        if be not in BACKENDS:
            fail("unknown backend %s (%s)" % (be, ",".join(BACKENDS)))
    b = Bench(a)
    res = b.run()
    res.update({
        "machine": machine(), "command": "scripts/bench-qemu.py " + shlex.join(sys.argv[1:]),
        "qemu_version": subprocess.run(["qemu-system-x86_64", "--version"], stdout=subprocess.PIPE,
                                       text=True).stdout.splitlines()[0]
                        .replace("QEMU emulator version", "QEMU"),
        "accel": "kvm" if b.kvm else "tcg", "reps": a.reps, "multifd": a.multifd,
    })
    write(res, b.out)


def write(res, out):
    res["acceptance"] = acceptance(res)
    with open(os.path.join(out, "bench-qemu.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(os.path.join(out, "bench-qemu.md"), "w") as f:
        f.write(md)
    print(md)
    log("results in %s (bench-qemu.json, bench-qemu.md); the run took %.0f s"
        % (out, res["duration_s"]))


if __name__ == "__main__":
    main()
