#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""What the Linux guest's user feels: eager, lazy and lazy+hot restores.

Boots the Linux test guest (Debian's cloud kernel, the busybox initramfs
whose PID 1 is the checking workload tests/qtest/linux/slwork.c;
docs/linux-guest.md) in QEMU with --mem of RAM on the --backend (shmem:
memory-backend-file share=on on /dev/shm; anon: plain -m; hugetlbfs-2M:
the same file on a 2 MiB hugetlbfs mount), a working set of --ws-pct of it.
Once the workload says READY and walks, QEMU saves the guest with its own
`migrate file:PATH` and the mapped-ram capability (over QMP, the guest
stopped first) and quits.  Then, on that one file, for each repetition and
with the order of the modes rotating:

  eager     `snapload qemu-restore FILE --eager FILE --json -- ARGS`: QEMU's
            own eager mapped-ram load, timed the same way;
  eager-mfd the same with `--multifd N` (--multifd, default 16): QEMU loads
            with N multifd threads.  Which eager load is faster depends on
            the host (page faults into fresh memory overlap across threads),
            so every acceptance ratio is taken against the faster of the
            two, per figure;
  lazy      `snapload qemu-restore FILE --json -- ARGS`, without the sidecar
            index (moved aside for the run: QEMU's file as a QEMU user has
            it, no checksums; --lazy-index plain gives it a checksums-only
            index instead);
  lazy+hot  the same with FILE.slidx: checksums and the hot-page list that a
            recording run wrote (once, untimed, before the repetitions:
            `--threads 0 --record hot.list`, the guest asked for one PASS,
            then QEMU quit; then `snapload index FILE --hot hot.list`).
  lazy-single  (only when --modes names it) lazy with `--fault-around 4K`:
            each fault serves its own page alone, as before fault-around.
  lazy-copy  (only when --modes names it) lazy with `--place-by-copy`: on
            anonymous RAM the daemon copies every page into QEMU
            (UFFDIO_COPY) instead of handing QEMU's mover whole 2 MiB
            chunks to move in, as before library 1.15.

--fault-around SIZE goes to every lazy run but lazy-single (and to the
recording run); without it qemu-restore's default (64K) runs.
--faults-only N adds, after the repetitions, N runs each of lazy and
lazy-single with no loaders (`--threads 0`), each ended once the PASS is
answered: the guest's first pass when every page it touches comes by a
fault, with fault-around and without (information rows).

Every run is measured on the host's monotonic clock from the moment
qemu-restore issued migrate-incoming (its JSON: start_monotonic_ms +
incoming_ms): the guest's first answer to a `PING` sent on its request
port every 5 ms from the moment the guest runs (QMP RESUME on a monitor of
the script's own); the answer to a `PASS` sent right after that
(the workload has then checked every working-set page once more), with
the guest's own duration; the faults taken; the workload's throughput
(pages checked and rewritten per second, from its heartbeats and PONGs)
between `cont` and the end of the fill and in the --after seconds after
it; and the checks: 0 pages placed twice, no ERR line, no Oops, BUG,
panic, Call Trace or restart on the console, errors=0 in every heartbeat.
Then QEMU quits.

Writes OUT/bench-linux.json (every run), OUT/bench-linux.md (the issue-13
acceptance table, ratios of medians measured in the same run, with met or
NOT met), OUT/bench-linux-timeline.csv (the guest's progress over time,
per run) and OUT/bench-linux.svg (that progress for every mode).

usage: bench/linux.py [--mem 4G] [--backend shmem|anon|hugetlbfs-2M] [--reps 3]
                      [--ws-pct 25] [--hb-ms 200] [--after 5] [--threads N]
                      [--modes eager,eager-mfd,lazy,lazy+hot[,lazy-single]] [--multifd 16]
                      [--fault-around SIZE] [--faults-only N] [--lazy-index none|plain]
                      [--accel auto|kvm|tcg] [--dir /var/tmp/snapload-linux-bench]
                      [--out DIR] [--build DIR] [--keep]
The binaries come from --build, else $SNAPLOAD_BUILD, else ./build.  As root.
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
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmp  # noqa: E402  (bench/qmp.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINUX_DIR = os.path.join(ROOT, "tests", "qtest", "linux")
HUGEPAGE_LOCK = "/tmp/snapload-hugepages.lock"
HUGEPAGES_2M = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
MODES = ("eager", "eager-mfd", "lazy", "lazy+hot", "lazy-single", "lazy-copy")
DEFAULT_MODES = MODES[:4]
FAULTS_ONLY_MODES = ("lazy", "lazy-single")  # --faults-only: fault-around on, off
EAGER = ("eager", "eager-mfd")
PING_MS = 5            # a PING every this often until the first PONG ...
PING_BACKLOG = 200     # ... and every PING_SLOW_MS once this many are unanswered
PING_SLOW_MS = 20
PASS_TIMEOUT_S = 120   # a timed run's PASS unanswered after this (+ 30 s per GiB) was lost
# Targets of issue 13.
TARGET_FIRST_ANSWER = 20.0   # lazy answers >= 20x sooner than eager
TARGET_FIRST_PASS = 2.0      # lazy+hot's first full pass >= 2x sooner than eager + pass
TARGET_FAULTS = 0.90         # the hot list removes >= 90 % of the faults


def log(msg):
    print("bench-linux: " + msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step failed; the message says which and why."""


def parse_size(s):
    units = {"M": 20, "G": 30}
    s = s.strip()
    return int(s[:-1]) << units[s[-1].upper()] if s[-1].upper() in units else int(s)


def now():
    return time.monotonic()


def unlink(*paths):
    for p in paths:
        if p and os.path.lexists(p):
            os.unlink(p)


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def warm(path):
    """Reads the data of @path (SEEK_DATA: not the holes where QEMU's file
    leaves out zero pages) through the page cache: every figure is warm."""
    with open(path, "rb", buffering=0) as f:
        fd, off, end = f.fileno(), 0, os.fstat(f.fileno()).st_size
        while off < end:
            try:
                off = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, off, os.SEEK_HOLE)
            while off < hole:
                n = len(os.pread(fd, min(8 << 20, hole - off), off))
                if not n:
                    break
                off += n


def descendants(pid):
    """The pids of every process below @pid (children, theirs, ...)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def guest_ram_thp_mib(root, mem_bytes):
    """MiB of AnonHugePages in the QEMU below process @root, over its
    mappings of at least @mem_bytes (guest RAM); None if not found."""
    for pid in descendants(root):
        try:
            if "qemu-system" not in read_text("/proc/%d/comm" % pid):
                continue
            smaps = read_text("/proc/%d/smaps" % pid)
        except OSError:
            continue
        kb, big = 0, False
        for line in smaps.splitlines():
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
            if m:
                big = int(m.group(2), 16) - int(m.group(1), 16) >= mem_bytes
            elif big and line.startswith("AnonHugePages:"):
                kb += int(line.split()[1])
        return kb >> 10
    return None


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


# ------------------------------ the guest's ports ----------------------------

class Console(threading.Thread):
    """Follows the console log file QEMU writes (-serial file:) and stamps
    every whole line with the host's monotonic time when it was seen (polled
    every 10 ms: the heartbeats come every --hb-ms)."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.lines = []   # (host time, line)
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        f, part = None, b""
        while True:
            stopping = self.halt.is_set()
            if f is None:
                try:
                    f = open(self.path, "rb")
                except FileNotFoundError:
                    pass
            if f is not None:
                data = f.read()
                if data:
                    t = now()
                    part += data
                    *whole, part = part.split(b"\n")
                    with self.lock:
                        self.lines += [(t, w.decode(errors="replace").rstrip("\r")) for w in whole]
            if stopping:
                break
            time.sleep(0.01)
        if f is not None:
            f.close()

    def stop(self):
        self.halt.set()
        self.join(5)

    def snapshot(self):
        with self.lock:
            return list(self.lines)


class ReqPort:
    """The workload's request port (the guest's ttyS1, a unix socket that
    QEMU listens on): lines out, answer lines in, each stamped when read."""

    def __init__(self, path):
        self.path = path
        self.s = None
        self.buf = b""
        self.lines = []   # (host time, line), not yet taken

    def try_connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            return False
        s.setblocking(False)
        self.s = s
        return True

    def send(self, line):
        try:
            self.s.sendall((line + "\n").encode())
        except BlockingIOError:
            pass  # the guest is not reading (paused, loading): this one is dropped

    def poll(self, timeout):
        """Reads what arrived within @timeout seconds into self.lines."""
        r, _, _ = select.select([self.s], [], [], max(0.0, timeout))
        if not r:
            return
        try:
            data = self.s.recv(65536)
        except BlockingIOError:
            return
        if not data:
            raise BenchError("the guest's request port %s closed" % self.path)
        t = now()
        self.buf += data
        *whole, self.buf = self.buf.split(b"\n")
        self.lines += [(t, w.decode(errors="replace").strip()) for w in whole]

    def close(self):
        if self.s:
            self.s.close()
            self.s = None


def QMP(path, timeout=30):
    """QEMU's monitor (bench/qmp.py), failing with BenchError."""
    return qmp.QMP(path, timeout, error=BenchError)


class Resumed(threading.Thread):
    """Waits on our own monitor for the guest to run (QMP's RESUME event, or
    query-status already running) and stamps when it saw it; then closes the
    connection (a QMP socket takes one client: the quit comes later)."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.t = None
        self.error = None
        self.done = threading.Event()

    def run(self):
        m = None
        try:
            m = QMP(self.path)
            running = m.cmd("query-status").get("running")
            while not running and not any(e["event"] == "RESUME" for e in m.events):
                e = m.read()
                running = e.get("event") == "RESUME"
            self.t = now()
        except BenchError as e:
            self.error = str(e)
        finally:
            if m:
                m.close()
            self.done.set()


# ------------------------------- the console ---------------------------------

HB_RX = re.compile(r"HB n=(\d+) t=(\d+) pass=(\d+) pages=(\d+) ws=(\d+) files=(\d+) "
                   r"errors=(\d+) ready=(\d)")
PONG_RX = re.compile(r"PONG (\S+) pass=(\d+) pages=(\d+) ws=(\d+) files=(\d+) errors=(\d+) "
                     r"ready=(\d)")


def trouble(lines, restored):
    """The first console line that shows a wrong guest, or None: a wrong
    page or file (ERR), a kernel Oops/BUG/panic/Call Trace, the workload's
    own complaint, errors counted in a heartbeat, or (restored) a restart."""
    for _, l in lines:
        if "ommand line:" in l:
            continue  # the kernel echoes its command line, panic=-1 included
        if ("ERR " in l or "Oops" in l or "BUG" in l or "panic" in l or "Call Trace" in l
                or "slwork:" in l or re.search(r"errors=[1-9]", l)
                or (restored and ("SLWORK START" in l or "Linux version" in l))):
            return l
    return None


def tail(lines, n=30):
    return "\n".join(l for _, l in lines[-n:])


# -------------------------------- the bench ----------------------------------

class Bench:
    def __init__(self, a):
        self.a = a
        self.build = os.path.abspath(a.build or os.environ.get("SNAPLOAD_BUILD")
                                     or os.path.join(ROOT, "build"))
        self.snapload = os.path.join(self.build, "snapload")
        for p in (self.snapload, os.path.join(self.build, "libsnapload-preload.so")):
            if not os.access(p, os.R_OK):
                raise BenchError("%s is missing: build snapload first (bash "
                                 "scripts/install-deps.sh, or meson setup B && ninja -C B; "
                                 "--build B)" % p)
        self.dir = os.path.abspath(a.dir)
        self.out = os.path.abspath(a.out or os.path.join(a.dir, "results"))
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.out, exist_ok=True)
        self.mem_bytes = parse_size(a.mem)
        self.mem_mb = self.mem_bytes >> 20
        self.pass_timeout = PASS_TIMEOUT_S + 30 * (self.mem_bytes >> 30)
        self.snap = os.path.join(self.dir, "guest-%s-%s.mig" % (a.mem, a.backend))
        self.hot = os.path.join(self.dir, "hot.list")
        self.index = self.snap + ".slidx"
        self.memfile = None
        self.accel, self.accel_why = self.pick_accel()
        self.kernel = self.find_kernel()
        self.initrd = os.path.join(self.dir, "initrd.img")
        self.append = "console=ttyS0 panic=-1 slwork.ws_pct=%d slwork.hb_ms=%d" % (
            a.ws_pct, a.hb_ms)

    # ------------------------------ setup ------------------------------

    def pick_accel(self):
        """KVM only where it is hardware-assisted (a software KVM such as
        kvm_pvm does not boot this guest in minutes), as the tests choose;
        SL_LINUX_ACCEL or --accel decide instead."""
        force = self.a.accel if self.a.accel != "auto" else os.environ.get("SL_LINUX_ACCEL")
        if force:
            return force, "asked for (%s)" % force
        if os.path.exists("/sys/module/kvm_intel") or os.path.exists("/sys/module/kvm_amd"):
            return "kvm", "kvm_intel/kvm_amd loaded"
        return "tcg", "no hardware-assisted KVM (kvm_intel/kvm_amd not loaded)"

    def find_kernel(self):
        env = os.environ.get("SL_LINUX_KERNEL")
        if env:
            return env
        cands = [n for n in os.listdir("/boot") if n.startswith("vmlinuz-")
                 and n.endswith("-cloud-amd64")]
        if not cands:
            raise BenchError("no Debian cloud kernel in /boot (vmlinuz-*-cloud-amd64): "
                             "apt-get install linux-image-cloud-amd64 (scripts/install-deps.sh "
                             "does), or set SL_LINUX_KERNEL")

        def key(n):
            return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", n)]
        return os.path.join("/boot", max(cands, key=key))

    def make_initrd(self):
        p = subprocess.run([sys.executable, os.path.join(LINUX_DIR, "mkinitramfs.py"),
                            "-o", self.initrd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if p.returncode:
            raise BenchError("building the initramfs failed (busybox-static and a static "
                             "glibc installed?):\n" + p.stdout)

    def qemu_args(self, serial, req, qmp):
        """The guest's QEMU command line (the same at boot and at every
        restore): console in file @serial, request port on socket @req, a
        monitor of ours on @qmp."""
        a = ["qemu-system-x86_64", "-accel", self.accel,
             "-machine", "pc" if self.a.backend == "anon" else "pc,memory-backend=ram0",
             "-m", "%dM" % self.mem_mb, "-smp", str(self.a.smp), "-display", "none",
             "-nodefaults", "-no-user-config", "-no-reboot",
             "-global", "apic-common.vapic=false"]
        if self.a.backend != "anon":
            a += ["-object", "memory-backend-file,id=ram0,size=%dM,mem-path=%s,share=on"
                  % (self.mem_mb, self.memfile)]
        a += ["-kernel", self.kernel, "-initrd", self.initrd, "-append", self.append,
              "-serial", "file:" + serial,
              "-chardev", "socket,id=req,path=%s,server=on,wait=off" % req,
              "-serial", "chardev:req",
              "-qmp", "unix:%s,server=on,wait=off" % qmp]
        return a

    def paths(self, name):
        return tuple(os.path.join(self.dir, "%s.%s" % (name, x)) for x in ("serial", "req", "qmp"))

    # ------------------------------ boot and save ------------------------------

    def boot_and_save(self):
        """Boots the guest, waits until the workload walks its working set,
        and saves it with QEMU's own migrate file: + mapped-ram."""
        serial, req, qmp = self.paths("boot")
        unlink(serial, req, qmp, self.snap, self.index, self.hot, self.memfile)
        args = self.qemu_args(serial, req, qmp)
        log("booting the guest: %s RAM (%s), working set %d %%, %s (%s)"
            % (self.a.mem, self.a.backend, self.a.ws_pct, self.accel, self.accel_why))
        t0 = now()
        con = Console(serial)
        con.start()
        with open(os.path.join(self.dir, "boot.err"), "w") as err:
            q = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True)
        try:
            ready_at, hbs = None, 0
            deadline = t0 + self.a.boot_timeout
            while True:
                lines = con.snapshot()
                bad = trouble(lines, False)
                if bad:
                    raise BenchError("the booting guest's console says: %s\n--- last lines:\n%s"
                                     % (bad, tail(lines)))
                ready = [t for t, l in lines if l.startswith("READY ")]
                if ready and ready_at is None:
                    ready_at = ready[0]
                    log("guest READY after %.1f s: %s" % (ready_at - t0, next(
                        l for _, l in lines if l.startswith("READY "))))
                hbs = sum(1 for t, l in lines if ready_at and t > ready_at
                          and (m := HB_RX.search(l)) and m.group(8) == "1")
                if hbs >= 3:
                    break
                if q.poll() is not None:
                    raise BenchError("QEMU exited (%d) while booting: %s\n--- console:\n%s"
                                     % (q.returncode, read_text(os.path.join(self.dir,
                                                                             "boot.err")),
                                        tail(lines)))
                if now() > deadline:
                    raise BenchError("the guest was not walking its working set %d s after "
                                     "boot; console:\n%s" % (self.a.boot_timeout, tail(lines)))
                time.sleep(0.1)
            boot_s = now() - t0
            m = QMP(qmp)
            # The walk's counter at the save, give or take the pages walked
            # between this answer and `stop` (a millisecond or two): where
            # every restored guest's progress starts.
            port = ReqPort(req)
            if not port.try_connect():
                raise BenchError("cannot connect to the booted guest's request port %s" % req)
            port.send("PING save")
            saved_pages, end = None, now() + 60
            while saved_pages is None and now() < end:
                port.poll(0.05)
                for _, l in port.lines:
                    pm = PONG_RX.search(l)
                    if pm and pm.group(1) == "save":
                        saved_pages = int(pm.group(3))
                port.lines = []
            t_save = now()
            m.cmd("stop")
            port.close()
            if saved_pages is None:
                raise BenchError("the booted guest did not answer PING within 60 s")
            m.cmd("migrate-set-capabilities", capabilities=[
                {"capability": c, "state": c in ("mapped-ram", "events")}
                for c in ("x-ignore-shared", "mapped-ram", "multifd", "events")])
            m.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            m.cmd("migrate", uri="file:" + self.snap)
            deadline = now() + 1800
            while True:
                st = m.cmd("query-migrate")
                status = st.get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled"):
                    raise BenchError("QEMU's migrate file:%s %s: %s"
                                     % (self.snap, status, st.get("error-desc", "")))
                if now() > deadline:
                    raise BenchError("QEMU's migrate file: did not complete in 30 minutes")
                time.sleep(0.05)
            save_s = now() - t_save
            lines = con.snapshot()
            m.cmd("quit")
            m.close()
            q.wait(timeout=60)
        finally:
            if q.poll() is None:
                os.killpg(q.pid, signal.SIGKILL)
                q.wait()
            con.stop()
            unlink(self.memfile, req, qmp)
        hb = [HB_RX.search(l) for _, l in lines if HB_RX.search(l)]
        info = json.loads(subprocess.run([self.snapload, "inspect", "--json", "--quick",
                                          self.snap], check=True, stdout=subprocess.PIPE,
                                         text=True).stdout)
        ready = next(l for _, l in lines if l.startswith("READY "))
        log("saved to %s in %.1f s (%d MiB on disk)" % (self.snap, save_s,
                                                         os.stat(self.snap).st_blocks * 512 >> 20))
        self.saved_pages = saved_pages
        return {"boot_s": round(boot_s, 1), "save_s": round(save_s, 2), "file": self.snap,
                "pages_walked_at_save": saved_pages,
                "file_bytes": os.path.getsize(self.snap),
                "file_data_bytes": os.stat(self.snap).st_blocks * 512,
                "ready": ready, "ws_pages": int(re.search(r"ws_pages=(\d+)", ready).group(1)),
                "last_heartbeat_before_save": hb[-1].group(0) if hb else None,
                "blocks": [{k: b.get(k) for k in ("name", "pages", "present_pages",
                                                  "zero_pages")}
                           for b in info.get("blocks", [])]}

    # ------------------------------ one restore ------------------------------

    def restore_opts(self, mode, record, faults_only, faults_file):
        """qemu-restore's options for a run in @mode (see restore())."""
        opts = ["--json"]
        if mode in EAGER:
            opts += ["--eager", self.snap]
        if mode == "eager-mfd":
            opts += ["--multifd", str(self.a.multifd)]
        if record:
            opts += ["--threads", "0", "--record", self.hot]
        elif faults_only:
            opts += ["--threads", "0"]
        elif mode not in EAGER and self.a.threads is not None:
            opts += ["--threads", str(self.a.threads)]
        if mode == "lazy-copy":
            opts += ["--place-by-copy"]
        if mode == "lazy-single":
            opts += ["--fault-around", "4K"]
        elif mode not in EAGER and self.a.fault_around:
            opts += ["--fault-around", self.a.fault_around]
        if not record and not faults_only and mode not in EAGER and self.a.record_faults:
            opts += ["--record", faults_file]
        return opts

    @staticmethod
    def quit_qemu(qmp):
        """`quit` on QEMU's monitor @qmp."""
        m = QMP(qmp)
        try:
            m.cmd("quit")
        finally:
            m.close()

    def first_pong(self, r, port, qmp, req, alive):
        """(a) PING from the moment the guest runs until the first PONG, into
        @r.  Not before: bytes QEMU's serial port takes in before the device
        state is loaded are lost, and a backlog of seconds of PINGs (eager
        loads) sometimes stalled the port's input for good.  Returns the
        number of PINGs sent."""
        resumed = Resumed(qmp)
        resumed.start()
        while not port.try_connect():
            alive("before QEMU's request port %s took a connection" % req)
            time.sleep(PING_MS / 1000)
        while not resumed.done.wait(0.001):
            alive("waiting for the guest to run (QMP RESUME)")
        if resumed.error:
            raise BenchError("waiting for the guest to run: %s" % resumed.error)
        r["t_resume_seen"] = resumed.t
        token, first = 0, None
        while first is None:
            alive("waiting for the guest's first PONG")
            token += 1
            port.send("PING %d" % token)
            # Every PING is unanswered until the first PONG: slow down
            # once many wait, so that the guest's answer backlog stays small.
            port.poll((PING_MS if token < PING_BACKLOG else PING_SLOW_MS) / 1000)
            for t, l in port.lines:
                pm = PONG_RX.search(l)
                if pm:
                    first = (t, pm)
                    break
            port.lines = []
        r["t_first_pong"] = first[0]
        r["first_pong"] = first[1].group(0)
        r["pings_sent"] = token
        return token

    def pass_answer(self, r, port, con, record, token, alive):
        """(b) PASS right after the first PONG: every working-set page
        checked once more; its answer into @r."""
        t_pass_sent = now()
        port.send("PASS")
        pass_m, other, pongs = None, [], []
        while pass_m is None:
            alive("waiting for the guest's PASS answer")
            if not record and now() - t_pass_sent > self.pass_timeout:
                with con.lock:
                    hb = [l for _, l in con.lines if l.startswith("HB ")][-1:]
                raise BenchError("no answer to PASS %d s after it was sent (the request "
                                 "or its answer was lost?); %d PINGs sent, %d PONGs after "
                                 "the first (last: %s); the guest's last heartbeat (req: "
                                 "request lines it read, ans: answers it wrote): %s; other "
                                 "lines meanwhile: %s"
                                 % (self.pass_timeout, token, len(pongs), pongs[-1:],
                                    hb, other[-5:]))
            port.poll(0.05)
            for t, l in port.lines:
                if l.startswith("BUSY"):
                    raise BenchError("the guest answered PASS with: %s" % l)
                mm = re.match(r"PASS ms=([\d.]+) pages=(\d+)", l)
                if mm:
                    pass_m = (t, mm)
                elif l.startswith("PONG"):
                    pongs.append(l.split(" ", 2)[1])
                else:
                    other.append(l)
            port.lines = []
        r["t_pass_sent"] = t_pass_sent
        r["t_pass"] = pass_m[0]
        r["pass_guest_ms"] = float(pass_m[1].group(1))
        r["pass_pages"] = int(pass_m[1].group(2))

    def end_untimed(self, r, p, reader, qmp, errf, con, t_launch, faults_only):
        """The end of a recording or faults-only run: QEMU quits, and @r gets
        the hot list's size, or the first answer's figures."""
        if faults_only:
            r["first_answer_from_launch_ms"] = round((r["t_first_pong"] - t_launch) * 1000, 2)
            r["pass_rtt_ms"] = round((r["t_pass"] - r["t_pass_sent"]) * 1000, 2)
            r["console_check"] = trouble(con.snapshot(), True) or "ok"
        self.quit_qemu(qmp)
        p.wait(timeout=120)
        reader.join(10)
        if faults_only:
            return r
        if not os.path.exists(self.hot) or os.path.getsize(self.hot) == 0:
            raise BenchError("the recording run wrote no hot list %s; its stderr: %s"
                             % (self.hot, read_text(errf)[-2000:]))
        r["hot_pages"] = os.path.getsize(self.hot) // 16
        r["qemu_restore_status"] = p.returncode
        r["qemu_restore_said"] = read_text(errf).strip()[-500:]
        return r

    def restore_json(self, result, port, errf, alive):
        """qemu-restore's JSON line: at running (eager) or every page in place (lazy)."""
        while "line" not in result:
            alive("waiting for qemu-restore's JSON")
            port.poll(0.05)
            port.lines = []
        if not result["line"].strip():
            raise BenchError("qemu-restore printed no JSON: %s" % read_text(errf)[-2000:])
        js = json.loads(result["line"])
        if js.get("status") != "ok":
            raise BenchError("qemu-restore failed: %s" % js.get("error"))
        return js

    def end_timed(self, r, js, p, port, con, qmp, errf, mode, t_launch, faults_file, alive):
        """The end of a timed run: (d) the guest runs on for --after seconds
        past the fill and the PASS, QEMU quits, and @r gets the figures."""
        start = js.get("start_monotonic_ms")
        t0 = start / 1000 if start is not None else t_launch
        r["time_origin"] = "start_monotonic_ms" if start is not None else "launch"
        t_inc = t0 + js["incoming_ms"] / 1000
        t_run = t_inc + js["incoming_to_running_ms"] / 1000
        t_done = t0 + js["time_to_complete_ms"] / 1000 if mode not in EAGER else t_run
        until = max(t_done, r["t_pass"]) + self.a.after
        while now() < until:
            alive("while the guest ran on after its restore")
            port.poll(min(0.1, max(0.0, until - now())))
            port.lines = []
        r["ram_thp_mib"] = guest_ram_thp_mib(p.pid, self.mem_bytes) \
            if self.a.backend == "anon" else None
        self.quit_qemu(qmp)
        p.wait(timeout=120)
        if p.returncode != 0:
            raise BenchError("qemu-restore ended with status %d: %s" % (
                p.returncode, read_text(errf)[-2000:]))
        con.stop()
        r.update(self.figures(js, t_launch, t_inc, t_run, t_done, r, con.snapshot()))
        if mode not in EAGER and self.a.record_faults:
            r["faulted"] = self.faulted_pages(faults_file)
        return r

    def restore(self, mode, rep, record=False, faults_only=False):
        """One qemu-restore of the saved guest in @mode, measured; with
        @record, the untimed recording run of the hot list instead; with
        @faults_only, a run with no loaders (every page the guest touches
        comes by a fault) that ends once the PASS is answered."""
        name = "record" if record else "%s%s-%d" % ("faults-only-" if faults_only else "",
                                                     mode.replace("+", "-"), rep)
        serial, req, qmp = self.paths(name)
        errf = os.path.join(self.dir, name + ".err")
        unlink(serial, req, qmp)
        faults_file = os.path.join(self.dir, name + ".faults")
        unlink(faults_file)
        cmd = [self.snapload, "qemu-restore", self.snap] + \
            self.restore_opts(mode, record, faults_only, faults_file) + ["--"] + \
            self.qemu_args(serial, req, qmp)
        warm(self.snap)
        loadavg = open("/proc/loadavg").read().split()[0]
        con = Console(serial)
        port = ReqPort(req)
        result = {}

        def read_json(p):
            line = p.stdout.readline()
            result["t_json"] = now()
            result["line"] = line

        t_launch = now()
        with open(errf, "w") as err:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                 start_new_session=True)
        reader = threading.Thread(target=read_json, args=(p,), daemon=True)
        reader.start()
        con.start()
        r = {"mode": "record" if record else mode, "rep": rep, "loadavg_before": loadavg,
             "command": shlex.join(cmd)}
        deadline = t_launch + self.a.timeout

        def alive(what):
            if p.poll() is not None:
                raise BenchError("qemu-restore ended (status %d) %s: %s" % (
                    p.returncode, what, read_text(errf).strip()[-2000:]))
            if now() > deadline:
                raise BenchError("timed out after %d s %s" % (self.a.timeout, what))

        try:
            token = self.first_pong(r, port, qmp, req, alive)
            self.pass_answer(r, port, con, record, token, alive)
            if record or faults_only:
                return self.end_untimed(r, p, reader, qmp, errf, con, t_launch, faults_only)
            js = self.restore_json(result, port, errf, alive)
            return self.end_timed(r, js, p, port, con, qmp, errf, mode, t_launch, faults_file,
                                  alive)
        except Exception:
            r["console_tail"] = tail(con.snapshot())
            raise
        finally:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)  # qemu-restore; QEMU and its daemon die with it
                except ProcessLookupError:
                    pass
                p.wait()
            con.stop()
            port.close()
            unlink(req, qmp)

    def faulted_pages(self, path):
        """--record-faults: the pages a timed run faulted on (the loaders had
        not placed them), each with its position in the hot list (-1: not
        in it), in fault order."""
        entries = lambda f: [(int.from_bytes(b[0:4], "little"), int.from_bytes(b[8:16], "little"))
                             for b in (f[i:i + 16] for i in range(0, len(f), 16))]  # noqa: E731
        hot = {}
        if os.path.exists(self.hot):
            with open(self.hot, "rb") as f:
                hot = {e: i for i, e in enumerate(entries(f.read()))}
        try:
            with open(path, "rb") as f:
                got = entries(f.read())
        except OSError as e:
            raise BenchError("--record-faults: no record of the run's faults: %s" % e)
        return [{"block": b, "page": pg, "hot_pos": hot.get((b, pg), -1)} for b, pg in got]

    def figures(self, js, t_launch, t_inc, t_run, t_done, r, lines):
        """A run's figures, every time in ms after migrate-incoming."""
        rel = lambda t: round((t - t_inc) * 1000, 2)  # noqa: E731
        st = js.get("restore") or {}
        f = {
            "launch_to_incoming_ms": round((t_inc - t_launch) * 1000, 2),
            "running_ms": rel(t_run),
            "first_answer_ms": rel(r["t_first_pong"]),
            "first_pass_ms": rel(r["t_pass"]),
            "pass_rtt_ms": round((r["t_pass"] - r["t_pass_sent"]) * 1000, 2),
            "complete_ms": rel(t_done) if js.get("mode") == "lazy" else None,
            "device_state_ms": js.get("device_state_ms"),
            "faults": js.get("faults") if js.get("mode") == "lazy" else None,
            "pages_by_fault": st.get("pages_by_fault"),
            "pages_by_loader": st.get("pages_by_loader"),
            "pages_placed_twice": js.get("pages_placed_twice"),
            "pages_never_placed": st.get("pages_never_placed"),
            "checksum_failures": st.get("checksum_failures"),
            "restore": st or None,
            "qemu_restore": {k: v for k, v in js.items() if k != "restore"},
        }
        # The guest's progress: pages checked and rewritten, from heartbeats
        # and PONGs, on the host's time line.
        pts = []
        for t, l in lines:
            hm = HB_RX.search(l)
            if hm and t >= t_run:
                pts.append((t, int(hm.group(4)), "HB"))
        pm = PONG_RX.search(r["first_pong"])
        pts.append((r["t_first_pong"], int(pm.group(3)), "PONG"))
        pts.sort()
        # At `cont` the counter is what it was at the save (the PONG just
        # before `stop`; never above a later sample).
        pts.insert(0, (t_run, min([self.saved_pages] + [n for _, n, _ in pts]), "cont"))
        f["progress"] = [(rel(t), n - pts[0][1], src) for t, n, src in pts] if pts else []
        f["heartbeats"] = sum(1 for p_ in pts if p_[2] == "HB")
        bad = trouble([(t, l) for t, l in lines if t >= t_launch], True)
        f["console_check"] = "ok" if bad is None else bad
        if pm.group(6) != "0":
            f["console_check"] = "the first PONG counts errors: " + pm.group(0)
        # Rates, pages per second: during the fill (cont to every page in
        # place) and in the --after seconds after it; for eager, everything
        # after running is "after".
        f["rate_during"] = rate(pts, t_run, t_done) if t_done > t_run else None
        f["rate_after"] = rate(pts, t_done, t_done + self.a.after) \
            if js.get("mode") == "lazy" else rate(pts, t_run, t_run + 1e9)
        # The guest's longest silence: the largest gap between two
        # consecutive progress points (cont, heartbeats, the first PONG)
        # from cont until --after s after every page is in place (eager:
        # after running).  A running guest shows gaps of about --hb-ms; a
        # frozen one (a collapse holding its memory, a fault queue) longer.
        # A gap that straddles the window's end counts up to that end.
        end = (t_done if js.get("mode") == "lazy" else t_run) + self.a.after
        ts = [t for t, _, _ in pts]
        gaps = [min(b, end) - a for a, b in zip(ts, ts[1:]) if a < end]
        f["longest_silence_ms"] = round(max(gaps) * 1000, 1) if gaps else None
        f["pass_over_ws_s_after"] = None
        ws = int(pm.group(4))
        if f["rate_after"]:
            f["pass_over_ws_s_after"] = round(ws / f["rate_after"], 3)
        f["ok"] = (f["console_check"] == "ok" and
                   (js.get("mode") != "lazy" or (f["pages_placed_twice"] == 0 and
                                                f["pages_never_placed"] in (0, None) and
                                                f["checksum_failures"] in (0, None))))
        return f

    # ------------------------------ the run ------------------------------

    def set_index(self, mode):
        """Puts the right sidecar at FILE.slidx for @mode: the hot one for
        lazy+hot, none (or the checksums-only one) for lazy and eager."""
        unlink(self.index)
        src = {"lazy+hot": self.index + ".hot",
               "lazy": self.index + ".plain" if self.a.lazy_index == "plain" else None}.get(
                   "lazy" if mode in ("lazy-single", "lazy-copy") else mode)
        if src:
            os.link(src, self.index)

    def faults_only_runs(self, res):
        """--faults-only N: N repetitions of lazy and lazy-single with no
        loaders (qemu-restore --threads 0), each ended once the guest's
        PASS is answered: the guest's first pass when every page it
        touches comes by a fault, with fault-around and without."""
        res["faults_only"] = []
        for rep in range(1, self.a.faults_only + 1):
            for mode in FAULTS_ONLY_MODES[::1 if rep % 2 else -1]:
                log("faults only (--threads 0): %s, repetition %d of %d"
                    % (mode, rep, self.a.faults_only))
                self.set_index(mode)
                try:
                    r = self.restore(mode, rep, faults_only=True)
                    res["faults_only"].append({k: v for k, v in r.items()
                                               if not k.startswith("t_")})
                    log("  first answer %.1f ms after the launch, PASS answered after %.0f ms "
                        "(guest %.0f ms), console %s" % (
                            r["first_answer_from_launch_ms"], r["pass_rtt_ms"],
                            r["pass_guest_ms"], r["console_check"]))
                except BenchError as e:
                    log("  faults-only %s repetition %d FAILED: %s" % (mode, rep, e))
                    res["failures"].append({"mode": "faults-only " + mode, "rep": rep,
                                            "error": str(e)})
                finally:
                    unlink(self.index)

    def run(self):
        t_start = now()
        res = {"command": "bench/linux.py " + shlex.join(sys.argv[1:]),
               "mem": self.a.mem, "backend": self.a.backend, "reps": self.a.reps,
               "ws_pct": self.a.ws_pct, "hb_ms": self.a.hb_ms, "after_s": self.a.after,
               "smp": self.a.smp, "threads": self.a.threads, "accel": self.accel,
               "accel_why": self.accel_why, "kernel": self.kernel, "modes": self.a.modes,
               "multifd": self.a.multifd, "fault_around": self.a.fault_around,
               "lazy_index": self.a.lazy_index, "machine": machine(), "runs": [],
               "failures": []}
        self.make_initrd()
        res["guest"] = self.boot_and_save()
        if "lazy+hot" in self.a.modes:
            log("recording the hot list: --threads 0 --record, one PASS, then quit (untimed)")
            unlink(self.index)
            rec = self.restore("lazy", 0, record=True)
            log("recorded %d pages; the guest's PASS took %.0f ms faulting every page"
                % (rec["hot_pages"], rec["pass_guest_ms"]))
            res["record_run"] = rec
            t = now()
            subprocess.run([self.snapload, "index", self.snap, "--hot", self.hot, "-o",
                            self.index + ".hot"], check=True, stdout=subprocess.DEVNULL)
            res["index_s"] = round(now() - t, 2)
        if self.a.lazy_index == "plain":
            subprocess.run([self.snapload, "index", self.snap, "-o", self.index + ".plain"],
                           check=True, stdout=subprocess.DEVNULL)
        modes = list(self.a.modes)
        for rep in range(1, self.a.reps + 1):
            k = (rep - 1) % len(modes)
            for mode in modes[k:] + modes[:k]:
                log("%s, repetition %d of %d" % (mode, rep, self.a.reps))
                self.set_index(mode)
                try:
                    run = self.restore(mode, rep)
                    res["runs"].append(run)
                    log("  running %.1f ms, first answer %.1f ms, PASS answered %.1f ms (guest "
                        "%.0f ms), faults %s, complete %s ms, rate during %s / after %s pages/s,"
                        " longest silence %s ms, console %s"
                        % (run["running_ms"], run["first_answer_ms"], run["first_pass_ms"],
                           run["pass_guest_ms"], run["faults"], run["complete_ms"],
                           run["rate_during"], run["rate_after"], run["longest_silence_ms"],
                           run["console_check"]))
                except BenchError as e:
                    log("  %s repetition %d FAILED: %s" % (mode, rep, e))
                    res["failures"].append({"mode": mode, "rep": rep, "error": str(e)})
                finally:
                    unlink(self.index)
        self.faults_only_runs(res)
        res["summary"] = summarize(res)
        res["duration_s"] = round(now() - t_start)
        return res

    def cleanup(self):
        unlink(self.memfile)
        for x in ("", ".hot", ".plain"):
            if not self.a.keep:
                unlink(self.index + x)
        if not self.a.keep:
            unlink(self.snap, self.hot)


def interp(pts, t):
    """The walk's counter at host time @t, linear between the progress
    points @pts ((time, pages, source), sorted); None outside them."""
    for (t1, n1, _), (t2, n2, _) in zip(pts, pts[1:]):
        if t1 <= t <= t2:
            return n1 + (n2 - n1) * ((t - t1) / (t2 - t1) if t2 > t1 else 1)
    return None


def rate(pts, a, b):
    """Pages per second between host times @a and @b (@b clipped to the
    last point), the counter interpolated between the progress points
    @pts; None if the points do not cover @a or the span is under 50 ms."""
    b = min(b, pts[-1][0]) if pts else b
    na, nb = interp(pts, a), interp(pts, b)
    if na is None or nb is None or b - a < 0.05:
        return None
    return round((nb - na) / (b - a))


# ------------------------------- the report ----------------------------------

FIGS = ("running_ms", "first_answer_ms", "first_pass_ms", "pass_guest_ms", "complete_ms",
        "faults", "pages_by_fault", "pages_by_loader", "rate_during", "rate_after",
        "launch_to_incoming_ms", "device_state_ms", "longest_silence_ms", "ram_thp_mib")


def summarize(res):
    s = {}
    for mode in res["modes"]:
        runs = [r for r in res["runs"] if r["mode"] == mode]
        row = {"runs": len(runs), "failed": sum(1 for f in res["failures"] if f["mode"] == mode)}
        for k in FIGS:
            vals = [r.get(k) for r in runs if r.get(k) is not None]
            row[k] = median(vals)
            row[k + "_range"] = [min(vals), max(vals)] if vals else None
        row["placed_twice_total"] = sum(r.get("pages_placed_twice") or 0 for r in runs)
        row["console_ok"] = all(r["console_check"] == "ok" for r in runs)
        row["all_ok"] = all(r["ok"] for r in runs) and not row["failed"]
        s[mode] = row
    acc = []

    def g(mode, k):
        return s.get(mode, {}).get(k)

    def check(name, figure, baseline, ratio, target, met, how):
        acc.append({"check": name, "figure": figure, "baseline": baseline, "ratio": ratio,
                    "target": target, "met": met, "how": how})

    fl = g("lazy", "first_answer_ms")
    me, fe = fastest_eager(s, "first_answer_ms")
    ratio = fe / fl if fl and fe else None
    check("first answer, lazy vs eager (%s)" % me, fl, fe, ratio,
          ">= %.0fx sooner" % TARGET_FIRST_ANSWER,
          None if ratio is None else ratio >= TARGET_FIRST_ANSWER,
          "median ms from migrate-incoming to the first PONG")
    ph = g("lazy+hot", "first_pass_ms")
    me, pe = fastest_eager(s, "first_pass_ms")
    ratio = pe / ph if ph and pe else None
    check("first full pass over the working set, lazy+hot vs eager load (%s) "
          "+ that pass" % me, ph, pe,
          ratio, ">= %.0fx sooner" % TARGET_FIRST_PASS,
          None if ratio is None else ratio >= TARGET_FIRST_PASS,
          "median ms from migrate-incoming to the PASS answer (PASS sent at the first PONG)")
    pl, pll = g("lazy+hot", "first_pass_ms"), g("lazy", "first_pass_ms")
    check("first full pass, lazy+hot vs lazy (information)", pl, pll,
          pll / pl if pl and pll else None, "-", None, "the same figure")
    hf, lf = g("lazy+hot", "faults"), g("lazy", "faults")
    red = 1 - hf / lf if lf and hf is not None else None
    check("faults, lazy+hot vs lazy", hf, lf, red, ">= %.0f %% fewer" % (TARGET_FAULTS * 100),
          None if red is None else red >= TARGET_FAULTS,
          "median faults (qemu-restore's JSON); ratio = share removed")
    fo = res.get("faults_only") or []
    for k, what in (("pass_guest_ms", "the guest's own ms"),
                    ("first_answer_from_launch_ms", "ms from QEMU's launch")):
        on, off = (median([r[k] for r in fo if r["mode"] == m]) for m in FAULTS_ONLY_MODES)
        if on is not None or off is not None:
            check("with faults only (--threads 0): %s, lazy vs lazy-single (information)"
                  % ("first pass over the working set" if k == "pass_guest_ms"
                     else "first answer"), on, off, off / on if on and off else None, "-",
                  None, "median of --faults-only runs, %s" % what)
    fs, ff = g("lazy-single", "first_answer_ms"), g("lazy", "first_answer_ms")
    check("first answer, lazy vs lazy-single (fault-around off; information)", ff, fs,
          fs / ff if fs and ff else None, "-", None, "the same figure")
    fs, ff = g("lazy-single", "faults"), g("lazy", "faults")
    check("faults, lazy vs lazy-single (information)", ff, fs,
          1 - ff / fs if fs and ff is not None else None, "-", None,
          "median faults; ratio = share removed by fault-around")
    for k, what in (("first_answer_ms", "first answer"),
                    ("first_pass_ms", "first full pass over the working set"),
                    ("longest_silence_ms", "longest silence"), ("ram_thp_mib", "RAM in THPs")):
        fc, fm = g("lazy-copy", k), g("lazy", k)
        if fc is not None:
            check("%s, lazy vs lazy-copy (anon: chunks copied in, not moved; information)"
                  % what, fm, fc, fc / fm if fc and fm else None, "-", None, "the same figure")
    sl_, (me, se) = g("lazy", "longest_silence_ms"), fastest_eager(s, "longest_silence_ms")
    check("the guest's longest silence, lazy vs eager (%s; information)"
          % me.replace("the faster", "the shorter"), sl_, se,
          se / sl_ if sl_ and se else None, "-", None,
          "median of each run's largest gap in ms between two heartbeats, from cont to "
          "%g s after every page is in place" % res["after_s"])
    lt = g("lazy", "ram_thp_mib")
    et, me = max([(g(m, "ram_thp_mib"), m) for m in EAGER if g(m, "ram_thp_mib") is not None],
                 default=(None, "none measured"))
    if lt is not None or et is not None:
        check("anonymous guest RAM in THPs when the run ends, lazy vs eager (%s, the most; "
              "information)" % me, lt, et, lt / et if lt is not None and et else None,
              "-", None, "median MiB of AnonHugePages over QEMU's guest RAM mappings, read "
              "just before quit (%g s after every page is in place)" % res["after_s"])
    for mode in ("lazy", "lazy+hot"):
        d, a_ = g(mode, "rate_during"), g(mode, "rate_after")
        check("throughput during the fill vs after it, %s" % mode, d, a_,
              d / a_ if d and a_ else None, "reported", None,
              "median pages checked+rewritten per second, cont to every page in place, "
              "and in the %g s after" % res["after_s"])
    s["acceptance"] = acc
    return s


def fastest_eager(s, k):
    """(label, median) of the eager mode with the smallest median @k: the
    baseline is QEMU's strongest eager load in this run, whichever it is;
    the label says so when more than one was measured."""
    got = [(s[m][k], m) for m in EAGER if s.get(m, {}).get(k) is not None]
    if not got:
        return "none measured", None
    v, m = min(got)
    return (m + ", the faster" if len(got) > 1 else m), v


def fmt(v, digits=1, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) >= 1000:
        digits = 0
    return ("%.*f" % (digits, v) if isinstance(v, float) else str(v)) + unit


def rng(row, k, digits=1):
    r = row.get(k + "_range")
    if not r or r[0] == r[1]:
        return fmt(row.get(k), digits)
    return "%s (%s-%s)" % (fmt(row.get(k), digits), fmt(r[0], digits), fmt(r[1], digits))


def markdown(res):
    s, g, m = res["summary"], res["guest"], res["machine"]
    lines = ["<!-- SPDX-License-Identifier: GPL-2.0-or-later -->",
             "# What the Linux guest's user feels: eager, lazy, lazy+hot", "",
             "`%s` on %s: %d CPUs, %.0f GiB, kernel %s, QEMU %s, guest under %s (%s). "
             "Guest: %s RAM (%s), %d vCPUs, working set %s (%d %%), heartbeat every %d ms. "
             "Medians of %d repetitions (range in brackets), the order of the modes rotating; "
             "page cache warm. It took %.1f minutes."
             % (res["command"], m["date"], m["cpus"], m["mem_gib"], m["kernel"], m["qemu"],
                res["accel"], res["accel_why"], res["mem"], res["backend"], res["smp"],
                g["ready"].split(" ", 1)[1], res["ws_pct"], res["hb_ms"], res["reps"],
                res["duration_s"] / 60), "",
             "The snapshot: QEMU's own `migrate file:` with mapped-ram, the guest stopped, "
             "%d MiB of data in a %d MiB file (boot to walking %.0f s, save %.1f s). "
             "lazy ran %s; lazy+hot with `FILE.slidx` (checksums and the hot list of %s pages "
             "recorded by one `--threads 0 --record` run in which the guest did one PASS)."
             % (g["file_data_bytes"] >> 20, g["file_bytes"] >> 20, g["boot_s"], g["save_s"],
                "without a sidecar index (moved aside: no checksums, QEMU's file as it is)"
                if res["lazy_index"] == "none" else "with a checksums-only sidecar index",
                res.get("record_run", {}).get("hot_pages", "-")), "",
             "## Acceptance (issue 13), ratios of medians of the same run", "",
             "| check | figure | baseline | ratio | target | |", "|---|---:|---:|---:|---|---|"]
    for c in s["acceptance"]:
        unit = " ms" if "ms" in c["how"] else ""
        if c["check"].startswith("faults,"):
            ratio = "%.1f %% fewer" % (c["ratio"] * 100) if c["ratio"] is not None else "-"
        else:
            ratio = "%.2fx" % c["ratio"] if c["ratio"] is not None else "-"
        verdict = {True: "met", False: "**NOT met**", None: ""}[c["met"]]
        if c["met"] is None and c["target"] != "-" and c["target"] != "reported":
            verdict = "not measured"
        lines.append("| %s | %s%s | %s%s | %s | %s | %s |" % (
            c["check"], fmt(c["figure"]), unit if c["figure"] is not None else "",
            fmt(c["baseline"]), unit if c["baseline"] is not None else "", ratio, c["target"],
            verdict))
    lines += ["", "Figures are medians; the ratio of throughputs is during / after. "
              "ms are from the moment qemu-restore issued `migrate-incoming`, on the host's "
              "monotonic clock.", "",
              "## Every figure", "",
              "| mode | running | first answer | PASS answered | PASS, guest's ms | every page "
              "in place | faults | pages by fault / by loader | pages/s during fill | "
              "pages/s after | longest silence | RAM in THPs, MiB | placed twice | console |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for mode in res["modes"]:
        row = s[mode]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s "
                     "| %s |" % (
            mode, rng(row, "running_ms"), rng(row, "first_answer_ms"),
            rng(row, "first_pass_ms"), rng(row, "pass_guest_ms", 0), rng(row, "complete_ms"),
            rng(row, "faults", 0), fmt(row["pages_by_fault"]), fmt(row["pages_by_loader"]),
            rng(row, "rate_during", 0), rng(row, "rate_after", 0),
            rng(row, "longest_silence_ms", 0), rng(row, "ram_thp_mib", 0),
            row["placed_twice_total"] if mode not in EAGER else "-",
            ("clean" if row["console_ok"] else "**NOT clean**") +
            ("" if not row["failed"] else ", %d run(s) FAILED" % row["failed"])))
    lines += ["", "running: `cont` answered; first answer: the first `PONG` read (a `PING` "
              "went out every %d ms from launch); PASS answered: the answer to the `PASS` sent "
              "right after it (every working-set page checked and rewritten once more); the "
              "guest's ms: that pass as the guest timed it from the request; pages/s: the "
              "workload's page visits per second from its heartbeats and PONGs, between `cont` "
              "and every page in place (during) and in the %g s after (after; for eager, "
              "everything after running); longest silence: the largest gap between two of "
              "the guest's heartbeats (or `cont` and the first), from `cont` until %g s "
              "after every page is in place (a running guest: about %d ms); RAM in THPs: "
              "AnonHugePages over QEMU's guest RAM mappings just before `quit` (anon RAM "
              "only). Console: no `ERR` line, Oops, BUG, panic, Call "
              "Trace or restart, errors=0 in every heartbeat." % (PING_MS, res["after_s"],
                                                                  res["after_s"], res["hb_ms"]),
              ""]
    if res["failures"]:
        lines += ["## Failed runs", ""]
        for f in res["failures"]:
            lines.append("- %s, repetition %d: %s" % (f["mode"], f["rep"],
                                                     f["error"].splitlines()[0][:400]))
        lines.append("")
    lines += ["![the guest's progress over time](bench-linux.svg)", "",
              "Timeline of every run: `bench-linux-timeline.csv` (mode, repetition, ms after "
              "migrate-incoming, pages walked since the first sample, source); every run's "
              "figures: `bench-linux.json`.", ""]
    return "\n".join(lines)


def timeline_csv(res, path):
    with open(path, "w") as f:
        f.write("mode,rep,ms_after_incoming,pages_walked,source\n")
        for r in res["runs"]:
            for t, n, src in r.get("progress", []):
                f.write("%s,%d,%.1f,%d,%s\n" % (r["mode"], r["rep"], t, n, src))
            for ev in ("running_ms", "first_answer_ms", "first_pass_ms", "complete_ms"):
                if r.get(ev) is not None:
                    f.write("%s,%d,%.1f,,%s\n" % (r["mode"], r["rep"], r[ev], ev[:-3]))


COLORS = {"eager": "#c0392b", "eager-mfd": "#e67e22", "lazy": "#2471a3", "lazy+hot": "#1e8449",
          "lazy-single": "#7d3c98", "lazy-copy": "#5d6d7e"}


def svg(res, path):
    """The guest's progress (pages walked) over time after migrate-incoming,
    one line per mode (its first repetition that ran), with its first
    answer (circle), PASS answered (square) and every page in place (dash)."""
    runs = {}
    for r in res["runs"]:
        if r["mode"] in COLORS and r["mode"] not in runs and r.get("progress"):
            runs[r["mode"]] = r
    w, h, l, b, top, right = 760, 400, 80, 50, 30, 140
    if not runs:
        open(path, "w").write('<svg xmlns="http://www.w3.org/2000/svg" width="300" '
                              'height="40"><text x="10" y="25">no run to draw</text></svg>\n')
        return
    tmax = max(max(t for t, _, _ in r["progress"]) for r in runs.values()) / 1000
    nmax = max(max(n for _, n, _ in r["progress"]) for r in runs.values()) or 1
    X = lambda t: l + (w - l - right) * (t / 1000) / tmax  # noqa: E731
    Y = lambda n: h - b - (h - b - top) * n / nmax  # noqa: E731
    p = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif"'
         ' font-size="12">' % (w, h), '<rect width="100%" height="100%" fill="white"/>',
         '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (l, h - b, w - right, h - b),
         '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (l, h - b, l, top)]
    step = max(1, round(tmax / 8))
    for i in range(0, int(tmax) + 1, step):
        p.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (X(i * 1000), h - b + 16, i))
    for k in range(5):
        n = nmax * k / 4
        p.append('<text x="%d" y="%.1f" text-anchor="end">%.0fk</text>' % (l - 4, Y(n) + 4, n / 1000))
    p.append('<text x="%d" y="%d" text-anchor="middle">seconds after migrate-incoming</text>'
             % ((l + w - right) / 2, h - 12))
    p.append('<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">pages '
             'checked by the guest</text>' % ((h - b + top) / 2, (h - b + top) / 2))
    for i, (mode, r) in enumerate(sorted(runs.items())):
        c = COLORS[mode]
        pts = [(t, n) for t, n, _ in r["progress"]]
        p.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
            c, " ".join("%.1f,%.1f" % (X(t), Y(n)) for t, n in pts)))
        fa = r["first_answer_ms"]
        p.append('<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>' % (X(fa), Y(0), c))
        fp = r["first_pass_ms"]
        npass = next((n for t, n in pts if t >= fp), pts[-1][1])
        p.append('<rect x="%.1f" y="%.1f" width="8" height="8" fill="%s"/>' % (X(fp) - 4, Y(npass) - 4, c))
        if r.get("complete_ms") is not None:
            p.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="4 3"/>'
                     % (X(r["complete_ms"]), top, X(r["complete_ms"]), h - b, c))
        y = top + 16 * i
        p.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>'
                 % (w - right + 10, y, w - right + 30, y, c))
        p.append('<text x="%d" y="%d">%s (rep %d)</text>' % (w - right + 34, y + 4, mode, r["rep"]))
    y = top + 16 * len(runs) + 10
    for txt in ("circle: first answer", "square: PASS answered", "dashed: every page in place"):
        p.append('<text x="%d" y="%d" font-size="10">%s</text>' % (w - right + 10, y, txt))
        y += 14
    p.append('<text x="%d" y="18" text-anchor="middle">%s guest (%s), %s: the workload\'s '
             'progress after a restore</text>' % ((l + w - right) / 2, res["mem"], res["backend"],
                                                   res["accel"]))
    p.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(p) + "\n")


def machine():
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], stdout=subprocess.PIPE,
                          text=True).stdout.split("\n")[0]
    qv = re.search(r"version (\S+)", qemu)
    return {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count(),
            "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "kernel": platform.release(), "qemu": qv.group(1) if qv else qemu}


def write(res, out):
    for r in res["runs"]:
        for k in [k for k in r if k.startswith("t_")]:
            r.pop(k)
    with open(os.path.join(out, "bench-linux.json"), "w") as f:
        json.dump(res, f, indent=1)
    timeline_csv(res, os.path.join(out, "bench-linux-timeline.csv"))
    svg(res, os.path.join(out, "bench-linux.svg"))
    md = markdown(res)
    with open(os.path.join(out, "bench-linux.md"), "w") as f:
        f.write(md)
    return md


def brief(res):
    """A few lines for scripts/demo.sh: per mode, when the guest answered
    and when it had checked its working set, and what was checked."""
    g = res["guest"]
    out = ["%s guest (%s RAM, %s), working set %s, saved with QEMU's migrate file: + "
           "mapped-ram (%d MiB of data). Times from migrate-incoming:" % (
               res["mem"], res["backend"], res["accel"], g["ready"].split(" ", 1)[1],
               g["file_data_bytes"] >> 20)]
    for r in res["runs"]:
        what = {"eager": "eager (QEMU loads everything first)",
                "eager-mfd": "eager, %d multifd channels" % res["multifd"],
                "lazy": "lazy (snapload%s)" % (", every page checked against its checksum"
                                               if res["lazy_index"] == "plain" else ""),
                "lazy+hot": "lazy+hot (snapload, hot list first)",
                "lazy-single": "lazy, fault-around off",
                "lazy-copy": "lazy, anon pages copied in, not moved"}[r["mode"]]
        line = "  %-40s first answer %8.1f ms, working set checked (PASS) %8.1f ms, " \
            "longest silence %s ms" % (what + ":", r["first_answer_ms"], r["first_pass_ms"],
                                       fmt(r.get("longest_silence_ms"), 0))
        if r.get("ram_thp_mib") is not None:
            line += ", %d MiB of RAM in THPs at the end" % r["ram_thp_mib"]
        if r["mode"] not in EAGER:
            line += ", every page in place %.0f ms, %d faults, %d placed twice, %s checksum " \
                "failures" % (r["complete_ms"], r["faults"], r["pages_placed_twice"],
                              r["checksum_failures"])
        line += "; guest console %s" % ("clean (no ERR, no oops)" if r["console_check"] == "ok"
                                        else "NOT clean: " + r["console_check"])
        out.append(line)
    for f in res["failures"]:
        out.append("  %s FAILED: %s" % (f["mode"], f["error"].splitlines()[0][:300]))
    s = res["summary"]
    (me, fe), fl = fastest_eager(s, "first_answer_ms"), s.get("lazy", {}).get("first_answer_ms")
    (mp, pe), pl = fastest_eager(s, "first_pass_ms"), s.get("lazy", {}).get("first_pass_ms")
    if fe and fl and pe and pl:
        out.append("  the lazy guest answered %.1fx sooner than after QEMU's eager load (%s) "
                   "and had checked its working set %.2fx sooner (%s)"
                   % (fe / fl, me, pe / pl, mp))
    return "\n".join(out)


def hugetlbfs(b, fn):
    """Runs @fn with 2 MiB pages reserved for one guest (boot and restores
    never overlap), under the hugepage lock; the pool goes back after."""
    with open(HUGEPAGE_LOCK, "a") as lock:
        log("waiting for %s" % HUGEPAGE_LOCK)
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = int(open(HUGEPAGES_2M).read())
        try:
            p = subprocess.run(["bash", os.path.join(ROOT, "scripts/hugetlb-setup.sh"),
                                str((b.mem_bytes >> 21) + 16), "2M"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode:
                raise BenchError("cannot reserve 2 MiB pages: " + p.stdout.strip())
            mnt = re.search(r"mount: (\S+)", p.stdout)
            b.memfile = os.path.join(mnt.group(1) if mnt else "/dev/hugepages",
                                     "snapload-linux-bench")
            return fn()
        finally:
            unlink(b.memfile)
            with open(HUGEPAGES_2M, "w") as f:
                f.write(str(before))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mem", default="4G", help="guest RAM (default 4G)")
    ap.add_argument("--backend", default="shmem", choices=("shmem", "anon", "hugetlbfs-2M"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ws-pct", type=int, default=25, help="working set, %% of guest RAM")
    ap.add_argument("--hb-ms", type=int, default=200, help="the workload's heartbeat period")
    ap.add_argument("--after", type=float, default=5.0,
                    help="seconds the guest runs on after every page is in place")
    ap.add_argument("--smp", type=int, default=2, help="guest vCPUs")
    ap.add_argument("--threads", type=int, default=None,
                    help="qemu-restore --threads (loaders per node; default: its own)")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES))
    ap.add_argument("--faults-only", type=int, default=0, metavar="N",
                    help="after the repetitions, N runs each of lazy and lazy-single with no "
                    "loaders (--threads 0), ended once the PASS is answered")
    ap.add_argument("--fault-around", default=None, metavar="SIZE",
                    help="qemu-restore --fault-around of the lazy runs (default: its own, 64K)")
    ap.add_argument("--multifd", type=int, default=16,
                    help="multifd channels of the eager-mfd mode (default 16)")
    ap.add_argument("--lazy-index", default="none", choices=("none", "plain"),
                    help="lazy runs without a sidecar (none) or with a checksums-only one")
    ap.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--timeout", type=int, default=900, help="seconds per restore run")
    ap.add_argument("--boot-timeout", type=int, default=1200, help="seconds for the boot")
    ap.add_argument("--dir", default="/var/tmp/snapload-linux-bench", help="files and scratch")
    ap.add_argument("--out", default=None, help="where the report goes (default DIR/results)")
    ap.add_argument("--build", default=None, help="snapload build dir (default "
                    "$SNAPLOAD_BUILD, else ./build)")
    ap.add_argument("--record-faults", action="store_true",
                    help="record each lazy run's faulted pages (--record) and report them "
                    "with their hot-list positions")
    ap.add_argument("--keep", action="store_true", help="keep the snapshot and the hot list")
    ap.add_argument("--brief", action="store_true",
                    help="print a few lines per run instead of the report (scripts/demo.sh)")
    a = ap.parse_args()
    a.modes = tuple(x for x in a.modes.split(",") if x)
    for x in a.modes:
        if x not in MODES:
            ap.error("--modes: unknown mode %s (known: %s)" % (x, ",".join(MODES)))
    if a.reps < 1:
        ap.error("--reps must be at least 1")
    if a.multifd < 1:
        ap.error("--multifd must be at least 1")
    try:
        b = Bench(a)
        if a.backend == "shmem":
            b.memfile = "/dev/shm/snapload-linux-bench-%d" % os.getpid()
        try:
            res = hugetlbfs(b, b.run) if a.backend == "hugetlbfs-2M" else b.run()
        finally:
            b.cleanup()
    except (BenchError, subprocess.CalledProcessError, OSError) as e:
        sys.exit("bench-linux: %s" % e)
    md = write(res, b.out)
    print(brief(res) if a.brief else md)
    log("results in %s (bench-linux.md, .json, -timeline.csv, .svg) after %.1f minutes"
        % (b.out, res["duration_s"] / 60))
    bad = res["failures"] or not all(res["summary"][m]["all_ok"] for m in a.modes)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
