#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Stock QEMU: lazy `snapload qemu-restore` against QEMU's own eager load.

Boots the walker guest (tests/qtest/guest) with its RAM in a
memory-backend-file, lets it write every page once, saves it with
`snapload qemu-save --full-stream`, then, in one run and alternating:
  - eager: stock QEMU loads the full migration stream (`--eager`);
  - lazy:  `snapload qemu-restore` (device state only, RAM on demand), after
           which the guest must finish its pass with no error;
and once more lazily with --verify (every page compared before `cont`).
Prints medians and the eager/lazy ratio of start-to-running; writes all
figures to DIR/bench-qemu.json.  Page cache warm (the files are read first).

usage: scripts/bench-qemu.py [--size 4G] [--backend hugetlbfs|shmem]
                             [--reps 3] [--dir /var/tmp/snapload-qemu-bench]
"""
import argparse
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
SNAPLOAD = os.path.join(BUILD, "snapload")


def parse_size(s):
    units = {"M": 20, "G": 30}
    return int(s[:-1]) << units[s[-1].upper()] if s[-1].upper() in units else int(s)


def qmp_command(path, cmd, timeout=30):
    """Runs one QMP command on a server socket and returns its answer."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    f = s.makefile("rw")
    f.readline()
    for c in ("qmp_capabilities", cmd):
        f.write(json.dumps({"execute": c}) + "\n")
        f.flush()
        while True:
            msg = json.loads(f.readline())
            if "return" in msg or "error" in msg:
                break
    s.close()
    return msg


def wait_for(path, pattern, timeout):
    """Waits until file @path has a whole line matching regex @pattern (the
    guest may be in the middle of writing it); fails on an ERR line."""
    end = time.time() + timeout
    rx = re.compile(pattern + r".*\n")
    while time.time() < end:
        log = open(path, errors="replace").read() if os.path.exists(path) else ""
        if "ERR" in log:
            sys.exit("bench-qemu: the guest found a wrong page:\n" + log)
        if rx.search(log):
            return log
        time.sleep(0.05)
    sys.exit("bench-qemu: timed out waiting for %r in %s" % (pattern, path))


class Bench:
    def __init__(self, a):
        self.a = a
        self.size = parse_size(a.size)
        self.dir = a.dir
        os.makedirs(self.dir, exist_ok=True)
        self.snap = os.path.join(self.dir, "guest.sl")
        self.full = os.path.join(self.dir, "guest.full")
        self.img = os.path.join(self.dir, "walker.img")
        shutil.copy(os.path.join(BUILD, "tests/qtest/guest/walker.img"), self.img)
        mnt = "/dev/hugepages" if a.backend == "hugetlbfs" else "/dev/shm"
        self.mem = os.path.join(mnt, "snapload-bench-qemu")
        self.kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)

    def qemu_args(self, serial, *extra):
        mb = self.size >> 20
        return ["qemu-system-x86_64", "-accel", "kvm" if self.kvm else "tcg",
                "-machine", "pc,memory-backend=ram0", "-m", "%dM" % mb,
                "-display", "none", "-nodefaults", "-no-user-config",
                "-global", "apic-common.vapic=false",
                "-object", "memory-backend-file,id=ram0,size=%dM,mem-path=%s,share=on"
                % (mb, self.mem),
                "-drive", "format=raw,file=%s,if=ide,file.locking=off" % self.img,
                "-serial", "file:" + serial] + list(extra)

    def save(self):
        serial = os.path.join(self.dir, "boot.serial")
        qmp = os.path.join(self.dir, "save.qmp")
        for p in (serial, qmp, self.mem):
            if os.path.exists(p):
                os.unlink(p)
        q = subprocess.Popen(self.qemu_args(serial, "-qmp", "unix:%s,server=on,wait=off" % qmp))
        print("bench-qemu: booting a %s guest; it writes every page once" % self.a.size,
              file=sys.stderr)
        wait_for(serial, r"PASS 1 OK errors=\d+", 1800)
        subprocess.run([SNAPLOAD, "qemu-save", "--qmp", qmp, "-o", self.snap,
                        "--full-stream", self.full, "--quit"], check=True)
        q.wait(timeout=60)

    def warm(self):
        for p in (self.snap, self.full):
            with open(p, "rb") as f:
                while f.read(8 << 20):
                    pass

    def restore(self, name, opts, extra=()):
        serial = os.path.join(self.dir, name + ".serial")
        if os.path.exists(serial):
            os.unlink(serial)
        cmd = [SNAPLOAD, "qemu-restore", self.snap, "--json"] + opts + ["--"] + \
            self.qemu_args(serial, *extra)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True), serial

    def eager(self):
        p, _ = self.restore("eager", ["--eager", self.full, "--quit-when-done"])
        out = json.loads(p.stdout.readline())
        p.wait(timeout=120)
        return out

    def lazy(self):
        qmp = os.path.join(self.dir, "lazy.qmp")
        if os.path.exists(qmp):
            os.unlink(qmp)
        p, serial = self.restore("lazy", [], ("-qmp", "unix:%s,server=on,wait=off" % qmp))
        out = json.loads(p.stdout.readline())
        log = wait_for(serial, r"PASS \d+ OK errors=\d+", 1800)  # the pass under way
        out["guest_check"] = "ok" if "errors=0" in log and "ERR" not in log else log
        qmp_command(qmp, "quit")
        p.wait(timeout=120)
        return out

    def verify(self):
        """--verify (every page through a second mapping, before cont), then
        all guest RAM read over QEMU's qtest protocol against the snapshot,
        then the guest's own pass."""
        raw = os.path.join(self.dir, "ram0.img")
        subprocess.run([SNAPLOAD, "extract", self.snap, "--block", "ram0", "-o", raw], check=True)
        qmp, qt = (os.path.join(self.dir, n) for n in ("verify.qmp", "verify.qtest"))
        for p in (qmp, qt):
            if os.path.exists(p):
                os.unlink(p)
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(qt)
        lsock.listen(1)
        p, serial = self.restore("verify", ["--verify", "--paused"],
                                 ("-qmp", "unix:%s,server=on,wait=off" % qmp,
                                  "-qtest", "unix:" + qt, "-qtest-log", "/dev/null"))
        conn, _ = lsock.accept()
        out = json.loads(p.stdout.readline())
        out["qtest_differing_pages"] = qtest_compare(conn.makefile("rwb"), raw, self.size)
        qmp_command(qmp, "cont")
        log = wait_for(serial, r"PASS \d+ OK errors=\d+", 1800)
        out["guest_check"] = "ok" if "errors=0" in log and "ERR" not in log else log
        qmp_command(qmp, "quit")
        p.wait(timeout=120)
        conn.close()
        lsock.close()
        os.unlink(raw)
        return out


def qtest_compare(f, raw, size):
    """Guest RAM read with qtest `b64read` against the raw image; returns the
    addresses of differing 4 KiB pages.  The pc machine puts RAM beyond 3 GiB
    (when it has 3.5 GiB or more) above 4 GiB."""
    low = 0xc0000000 if size >= 0xe0000000 else size
    bad = []
    with open(raw, "rb") as img:
        for off in range(0, size, 1 << 20):
            gpa = off if off < low else off - low + (1 << 32)
            f.write(b"b64read 0x%x 0x100000\n" % gpa)
            f.flush()
            line = f.readline()
            while line.startswith(b"IRQ"):
                line = f.readline()
            if not line.startswith(b"OK "):
                sys.exit("bench-qemu: qtest answered %r" % line[:80])
            got = base64.b64decode(line[3:].strip())
            img.seek(off)
            want = img.read(1 << 20)
            if got != want:
                bad += [gpa + i for i in range(0, 1 << 20, 4096)
                        if got[i:i + 4096] != want[i:i + 4096]]
    return ["0x%x" % a for a in bad]

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4G")
    ap.add_argument("--backend", default="hugetlbfs", choices=["hugetlbfs", "shmem"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp/snapload-qemu-bench")
    a = ap.parse_args()
    b = Bench(a)
    if a.backend == "hugetlbfs":
        subprocess.run(["bash", os.path.join(ROOT, "scripts/hugetlb-setup.sh"),
                        str((b.size >> 21) + 16), "2M"], check=True, stdout=subprocess.DEVNULL)
    try:
        run(a, b)
    finally:
        # mem-path=FILE outlives QEMU: a file left on hugetlbfs would hold
        # its hugepages (used or reserved) until someone removes it.
        if os.path.exists(b.mem):
            os.unlink(b.mem)


def run(a, b):
    b.save()
    b.warm()
    runs = {"eager": [], "lazy": []}
    for _ in range(a.reps):
        runs["eager"].append(b.eager())
        runs["lazy"].append(b.lazy())
    ver = b.verify()
    med = lambda k, f: statistics.median(r[f] for r in runs[k])
    e_run, l_run = med("eager", "time_to_running_ms"), med("lazy", "time_to_running_ms")
    l_dev = statistics.median(r["device_state_ms"] + r["running_after_device_state_ms"]
                              for r in runs["lazy"])
    summary = {
        "machine": os.uname().release, "size": a.size, "backend": a.backend,
        "accel": "kvm" if b.kvm else "tcg", "reps": a.reps,
        "eager_time_to_running_ms": e_run, "lazy_time_to_running_ms": l_run,
        "ratio_eager_over_lazy": e_run / l_run,
        "lazy_device_state_load_to_running_ms": l_dev,
        "lazy_time_to_complete_ms": med("lazy", "time_to_complete_ms"),
        "lazy_pages_placed_twice": max(r["restore"]["pages_placed_twice"] for r in runs["lazy"]),
        "guest_checks": [r["guest_check"] for r in runs["lazy"]],
        "verify_mismatches": ver.get("verify_mismatches"),
        "qtest_differing_pages": ver["qtest_differing_pages"],
        "verify_guest_check": ver["guest_check"],
        "runs": runs, "verify_run": ver,
    }
    with open(os.path.join(a.dir, "bench-qemu.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("stock QEMU %s guest, %s, %s, %d reps (medians, warm page cache)"
          % (a.size, a.backend, summary["accel"], a.reps))
    print("  eager -incoming (full stream), start to running : %8.1f ms" % e_run)
    print("  snapload qemu-restore, start to running         : %8.1f ms" % l_run)
    print("  ratio eager / lazy                               : %8.1f x" % (e_run / l_run))
    print("  lazy: device-state load start to running        : %8.1f ms" % l_dev)
    print("  lazy: start to every page in place              : %8.1f ms"
          % summary["lazy_time_to_complete_ms"])
    print("  pages placed twice: %d; guest's own checks: %s; verify mismatches: %s"
          % (summary["lazy_pages_placed_twice"], ",".join(summary["guest_checks"]),
             summary["verify_mismatches"]))
    print("  qtest view of all guest RAM against the snapshot: %d differing pages %s"
          % (len(summary["qtest_differing_pages"]), " ".join(summary["qtest_differing_pages"])))
    print("  (one differing page at 0xe8000 is KVM's kvmclock update: docs/qemu.md)")


if __name__ == "__main__":
    main()
