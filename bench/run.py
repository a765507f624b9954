#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""snapload benchmark: every figure side by side, measured in one run.

For each snapshot size and memory backend (anon, shmem, hugetlbfs-2M,
hugetlbfs-1G), medians over --reps repetitions, page cache warm:
  - lazy restore (`snapload restore`, default loaders, one thread touching
    random pages): time to ready, time to complete, fault service latency
    p50/p99/max with the loaders at full speed; and the eager pread load of
    the same file into the same backend with 1 and with all CPUs' threads,
    timed right after it in the same process;
  - fault service latency with the loaders idle (faults only), at the
    smallest size;
  - placement throughput of the loaders alone (nobody touching) against the
    memory-copy limit: a plain memcpy of the same bytes from the page cache
    into fresh memory of the backend (`snapload-peers memcpy`);
  - peer strategies, re-implemented in bench/strategies.c from their published
    algorithms and run on the same files: one background thread in MISSING
    mode with a bounce buffer (QEMU's fast snapshot load), copy everything
    on the first fault (the simplest external handler), eager load;
  - peak private memory (RssAnon) of the restore process against the guest
    RAM size;
  - stock QEMU (when qemu-system-x86_64 is installed; --no-qemu leaves it
    out): lazy `qemu-restore` of QEMU's own mapped-ram file against QEMU's
    own eager loads of the same guest (`file:` without and with multifd,
    `exec:` stream), on anon, shmem and hugetlbfs-2M guest RAM, at
    --qemu-sizes (scripts/bench-qemu.py; its whole table: OUT/bench-qemu.md);
  - with --only linux (not in the default run: it boots a Linux guest under
    TCG here and takes a while): what the Linux guest's user feels, eager,
    lazy and lazy+hot restores of QEMU's own file of a --linux-mem guest
    on --linux-backend (bench/linux.py; OUT/bench-linux.md, .json, .svg).
The eager baselines are plain pread loads (no checksum checks), while the
lazy restores check every page: the comparison is, if anything, unfair to
snapload.  Sizes default to 1G,4G, plus 16G where the machine has memory
for it and for its snapshot in the page cache (warm figures).

The issue-12 acceptance table (sections fill, latency, cold, sparse, thp;
docs/bench.md, "Issue 12 table"): one row per check, each figure against a
baseline measured in the same run, with its target and met / NOT met:
background fill of shmem and hugetlbfs-2M against the eager load and
against memcpy; idle fault latency of shmem against anon and of a 2 MiB
hugetlbfs fault against memcpy + XXH3 of 2 MiB (`snapload-peers
memcpy-hash`); cold fill against the disk's sequential bandwidth and cold
faults against one random disk read (`snapload-coldread`, when built);
page-map state per page, metadata per GiB and sparse 16/64 GiB guests
(95 % zero pages) verified; THP-backed RAM after a lazy anon restore
against after the eager load.

Prints the tables; writes OUT/bench.json, OUT/bench.md and (with the main
section) OUT/pages-over-time.svg (bytes in place over time, lazy against
eager).  Hugepages are taken under flock /tmp/snapload-hugepages.lock and
the pools put back afterwards.

usage: bench/run.py [--sizes 1G,4G] [--backends anon,shmem,hugetlbfs-2M,hugetlbfs-1G]
                    [--reps 3] [--dir /var/tmp/snapload-bench] [--out DIR] [--no-qemu]
                    [--qemu-sizes 1G,4G] [--build DIR] [--only SECTIONS]
                    [--sparse-sizes 16G,64G] [--linux-mem 4G] [--linux-backend shmem]
  --build DIR       binaries from DIR (default: $SNAPLOAD_BUILD, else ./build)
  --only SECTIONS   of main,qemu,fill,latency,cold,sparse,thp,reset,linux (default: all
                    but linux); issue12 = fill,latency,cold,sparse,thp
"""
import argparse
import contextlib
import datetime
import fcntl
import json
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The binaries: --build DIR, else $SNAPLOAD_BUILD, else ./build (set in main()).
BUILD = os.path.join(ROOT, "build")
SNAPLOAD = os.path.join(BUILD, "snapload")
PEERS = os.path.join(BUILD, "snapload-peers")
COLDREAD = os.path.join(BUILD, "snapload-coldread")
RESETCOST = os.path.join(BUILD, "snapload-resetcost")
# The reset section: memory kinds and write patterns (snapload-resetcost).
RESET_RUNS = (("anon", "random"), ("anon", "runs"), ("shmem", "random"))
HUGEPAGE_LOCK = "/tmp/snapload-hugepages.lock"
POOLS = {2 << 20: "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
         1 << 30: "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"}
# Sections of the run (--only): the side-by-side table with peers and the
# picture, stock QEMU, and the five of the issue-12 acceptance table.
SECTIONS = ("main", "qemu", "fill", "latency", "cold", "sparse", "thp", "reset", "linux")
# The default run: every section but linux (a Linux guest booted and restored
# under TCG: asked for by name, --only linux).
DEFAULT_SECTIONS = tuple(x for x in SECTIONS if x != "linux")
ISSUE12 = ("fill", "latency", "cold", "sparse", "thp")
BACKENDS = {  # name -> (restore arguments, hugepage size in bytes)
    "anon": (["--backend", "anon"], 0),
    "shmem": (["--backend", "shmem"], 0),
    "hugetlbfs-2M": (["--backend", "hugetlbfs", "--hugepage-size", "2M"], 2 << 20),
    "hugetlbfs-1G": (["--backend", "hugetlbfs", "--hugepage-size", "1G"], 1 << 30),
}
PEER_STRATEGIES = ("qemu-missing", "first-fault-copy-all", "eager")
QEMU_BACKENDS = ("anon", "shmem", "hugetlbfs-2M")  # what scripts/bench-qemu.py measures
TOUCHES = 2000
# The stand-in for vCPUs in every lazy run: one thread touching TOUCHES
# random pages once the restore is ready, as the peers' runs do.
WORKLOAD = ("--touch-threads", "1", "--access", "random", "--workload", str(TOUCHES))
# The eager baseline: a plain pread load of the same file, same backend.
EAGER = ("--compare-eager", "--eager-no-checksum")


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def parse_size(s):
    units = {"M": 20, "G": 30}
    return int(s[:-1]) << units[s[-1].upper()] if s[-1].upper() in units else int(s)


def run_json(cmd):
    """Runs @cmd, which prints one JSON object; fails loudly otherwise."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("bench: %s failed (%d): %s" % (shlex.join(cmd), p.returncode, p.stderr.strip()))
    return json.loads(p.stdout)


def run_json_io(cmd):
    """run_json(), and the bytes the command read from the disk (its
    ru_inblock: block input of the filesystem, 512-byte units)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock
    out = run_json(cmd)
    return out, (resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock - before) * 512


def run_json_cpu(cmd):
    """run_json(), and the CPU seconds (user + system) the command used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = run_json(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def drop_cache(path):
    """Drops @path's cached pages (as `restore --cold` does), so that the
    next command neither finds them nor pays for dropping them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def median(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def warm(path):
    """Reads @path through the page cache, so that the figures are warm ones:
    its data only (SEEK_DATA), as a restore never reads the holes where a
    snapshot leaves out zero pages; a 64 GiB guest's file is mostly holes."""
    with open(path, "rb", buffering=0) as f:
        fd, off, end = f.fileno(), 0, os.fstat(f.fileno()).st_size
        while off < end:
            try:
                off = os.lseek(fd, off, os.SEEK_DATA)
                hole = os.lseek(fd, off, os.SEEK_HOLE)
            except OSError:  # ENXIO: no data after off
                break
            while off < hole:
                n = len(os.pread(fd, min(8 << 20, hole - off), off))
                if n == 0:
                    break
                off += n


def spread(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return [min(vals), max(vals)] if vals else None


def reserve(hugepage, size, release=True):
    """Reserves hugepages for one restore of @size, after giving the free
    pages of the other size back (1 GiB pages need contiguous memory that
    a 2 MiB pool may hold) unless not @release; returns None or why not."""
    name = "2M" if hugepage == 2 << 20 else "1G"
    need = size // hugepage + (16 if hugepage == 2 << 20 else 0)
    setup = os.path.join(ROOT, "scripts/hugetlb-setup.sh")
    if release:
        subprocess.run(["bash", setup, "--release", "1G" if name == "2M" else "2M"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = subprocess.run(["bash", setup, str(need), name],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return None if p.returncode == 0 else p.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def hugepages(hugepage, size, release=True):
    """Holds the machine's hugepage lock (other engineers' tests take
    hugepages too) with the pool reserved for one restore of @size (see
    reserve()); yields None or why not; puts both pools back to their
    former sizes."""
    with open(HUGEPAGE_LOCK, "a") as lock:
        log("waiting for %s" % HUGEPAGE_LOCK)
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = {}
        for hp, path in POOLS.items():
            if os.path.exists(path):
                before[path] = open(path).read().strip()
        try:
            yield reserve(hugepage, size, release)
        finally:
            for path, n in before.items():
                try:
                    with open(path, "w") as f:
                        f.write(n)
                except OSError:
                    pass  # pages still in use: the kernel frees them later


def mem_available():
    return int(next(l for l in open("/proc/meminfo")
                    if l.startswith("MemAvailable")).split()[1]) << 10


def dig(d, dotted):
    """d["a"]["b"] for "a.b", or d["a.b"] / d["a_b"] flat; None if absent."""
    for k in (dotted, dotted.replace(".", "_")):
        if k in d:
            return d[k]
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


class Bench:
    def __init__(self, a):
        self.a = a
        self.cpus = os.cpu_count()
        os.makedirs(a.dir, exist_ok=True)
        self.res = {"sizes": {}, "skipped": []}
        self.only = a.only

    def snapshot(self, size):
        snap = os.path.join(self.a.dir, "snap-%s.sl" % size)
        if not os.path.exists(snap):
            raw = os.path.join(self.a.dir, "ram-%s.img" % size)
            log("making a %s snapshot (30%% zero pages)" % size)
            subprocess.run([SNAPLOAD, "synth", "-o", raw, "--size", size, "--zero-percent", "30"],
                           check=True, stdout=subprocess.DEVNULL)
            subprocess.run([SNAPLOAD, "save", "--raw", raw + ":pc.ram", "-o", snap], check=True,
                           stdout=subprocess.DEVNULL)
            os.unlink(raw)
        warm(snap)
        return snap

    def restore(self, snap, be, *extra):
        return run_json([SNAPLOAD, "restore", snap] + BACKENDS[be][0] + ["--json"] + list(extra))

    def peers(self, strategy, snap, be, *extra):
        args = ["--backend", "hugetlbfs", "--hugepage-size", be.split("-")[1]] \
            if be.startswith("hugetlbfs") else ["--backend", be]
        return run_json([PEERS, strategy, snap] + args + ["--touch", str(TOUCHES)] + list(extra))

    def one_backend(self, size, snap, be, smallest):
        reps = self.a.reps
        lazy, eager1, eagern, fill, lat_idle = [], [], [], [], []
        peers = {s: [] for s in PEER_STRATEGIES}
        memcpy = []
        for i in range(reps):
            log("%s %s: repetition %d of %d" % (size, be, i + 1, reps))
            warm(snap)  # the host evicts quickly, and reserving hugepages may drop caches
            r = self.restore(snap, be, *WORKLOAD, *EAGER, "--eager-threads", "1")
            lazy.append(r)
            eager1.append(r["eager_ms"])
            r = self.restore(snap, be, *WORKLOAD, *EAGER, "--eager-threads", str(self.cpus))
            lazy.append(r)
            eagern.append(r["eager_ms"])
            f = self.restore(snap, be, "--touch-threads", "0", "--threads", str(self.cpus))
            f["fill_ms"] = f["time_to_complete_ms"] - f["time_to_ready_ms"]
            fill.append(f)
            if smallest:
                lat_idle.append(self.restore(snap, be, *LAT_IDLE))
            for s in PEER_STRATEGIES:
                peers[s].append(self.peers(s, snap, be))
            memcpy.append(self.peers("memcpy", snap, be, "--threads", str(self.cpus)))
        bytes_ = lazy[0]["guest_bytes"]
        row = {
            "guest_bytes": bytes_,
            "time_to_ready_ms": median(lazy, "time_to_ready_ms"),
            "time_to_ready_min_max_ms": spread(lazy, "time_to_ready_ms"),
            "time_to_complete_ms": median(lazy, "time_to_complete_ms"),
            "time_to_complete_min_max_ms": spread(lazy, "time_to_complete_ms"),
            "eager_1thread_ms": statistics.median(eager1),
            "eager_%dthreads_ms" % self.cpus: statistics.median(eagern),
            "fault_busy_p50_us": median(lazy, "fault_p50_us"),
            "fault_busy_p99_us": median(lazy, "fault_p99_us"),
            "fault_busy_max_us": median(lazy, "fault_max_us"),
            "loaders_only_complete_ms": median(fill, "time_to_complete_ms"),
            "memcpy_mb_s": median(memcpy, "throughput_mb_s"),
            "peak_rss_anon_kb": max(r["peak_rss_anon_kb"] for r in lazy),
            "peak_vm_hwm_kb": max(r["vm_hwm_kb"] for r in lazy),
            "pages_placed_twice": max(r["pages_placed_twice"] for r in lazy + fill),
            "touch_mismatches": max(r["touch_mismatches"] for r in lazy),
            "touch_p50_us": median(lazy, "touch_p50_us"),
            "touch_p99_us": median(lazy, "touch_p99_us"),
            "touch_first_wait_ms": median(lazy, "touch_first_wait_ms"),
            "peers": {s: {k: median(v, k) for k in ("time_to_ready_ms", "time_to_complete_ms",
                                                   "time_to_first_touch_served_ms",
                                                   "touch_p50_us", "touch_p99_us",
                                                   "touch_max_us", "touch_mismatches")}
                      for s, v in peers.items()},
            "runs": {"lazy": lazy, "fill": fill, "lat_idle": lat_idle, "peers": peers,
                     "memcpy": memcpy},
        }
        stored = memcpy[0]["present_bytes"]
        row["loader_mb_s"] = stored / 2**20 / (median(fill, "fill_ms") / 1e3)
        row["loader_fraction_of_memcpy"] = row["loader_mb_s"] / row["memcpy_mb_s"]
        if lat_idle:
            row.update({"fault_idle_p50_us": median(lat_idle, "fault_p50_us"),
                        "fault_idle_p99_us": median(lat_idle, "fault_p99_us"),
                        "fault_idle_max_us": median(lat_idle, "fault_max_us")})
        return row

    def timeline(self, snap, be):
        path = os.path.join(self.a.out, "timeline.csv")
        self.restore(snap, be, *WORKLOAD, *EAGER, "--timeline", path)
        series = {"lazy": [], "eager": []}
        ready = None
        for line in open(path):
            if line.startswith("#"):
                ready = float(line.rsplit("at ", 1)[1].split()[0])
                continue
            mode, t, present, total = line.strip().split(",")
            series[mode].append((float(t), int(present) / int(total)))
        return {"backend": be, "snapshot": os.path.basename(snap), "lazy_ready_ms": ready,
                "series": series}

    def run(self):
        t0 = time.time()
        self.res["sections"] = list(self.only)
        self.res["phase_s"] = {}
        if "main" in self.only:
            self.main_table()
            self.res["phase_s"]["main"] = round(time.time() - t0)
        if any(x in self.only for x in ISSUE12):
            self.res["issue12"] = Issue12(self).run()
        t = time.time()
        q = self.qemu() if self.a.qemu and "qemu" in self.only else None
        if q:
            self.res["qemu"] = q
            self.res["phase_s"]["qemu"] = round(time.time() - t)
        if "reset" in self.only:
            t = time.time()
            self.res["reset"] = self.reset()
            self.res["phase_s"]["reset"] = round(time.time() - t)
        if "linux" in self.only:
            t = time.time()
            self.res["linux"] = self.linux()
            self.res["phase_s"]["linux"] = round(time.time() - t)
        self.res["duration_s"] = round(time.time() - t0)

    def main_table(self):
        sizes = self.a.sizes.split(",")
        for size in sizes:
            snap = self.snapshot(size)
            rows = {}
            for be in self.a.backends.split(","):
                hp = BACKENDS[be][1]
                if hp and parse_size(size) % hp:
                    why = "a %s block is not a multiple of the %s page" % (size, be.split("-")[1])
                    log("skipping %s %s: %s" % (size, be, why))
                    self.res["skipped"].append({"size": size, "backend": be, "why": why})
                    continue
                with (hugepages(hp, parse_size(size)) if hp else contextlib.nullcontext()) as why:
                    if why:
                        log("skipping %s %s: %s" % (size, be, why))
                        self.res["skipped"].append({"size": size, "backend": be, "why": why})
                        continue
                    rows[be] = self.one_backend(size, snap, be, size == sizes[0])
            self.res["sizes"][size] = rows
        big = self.snapshot(sizes[-1])
        self.res["timeline"] = self.timeline(big, "anon")

    def qemu(self):
        """scripts/bench-qemu.py on the backends it knows, with the same
        repetitions; its JSON (without the single runs, which stay in
        OUT/bench-qemu.json) goes into ours."""
        bes = [b for b in self.a.backends.split(",") if b in QEMU_BACKENDS]
        if not bes:
            log("stock QEMU left out: none of %s among --backends" % ",".join(QEMU_BACKENDS))
            return None
        cmd = [sys.executable, os.path.join(ROOT, "scripts/bench-qemu.py"),
               "--sizes", self.a.qemu_sizes, "--backends", ",".join(bes),
               "--reps", str(self.a.reps), "--dir", os.path.join(self.a.dir, "qemu"),
               "--out", self.a.out]
        log("stock QEMU: %s" % shlex.join(cmd[1:]))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.a.out, "bench-qemu.json")) as f:
            q = json.load(f)
        for rows in q["results"].values():
            for r in rows.values():
                r.pop("runs", None)
                r.pop("verify_run", None)
        return q


    def reset(self):
        """snapload-resetcost at this run's sizes: a reset after 1 % of the
        largest size's units were written (the same count at every size),
        by dropping and in place, against a lazy restore to completion and
        an eager load, in one run per memory kind and pattern."""
        out = []
        for be, pattern in RESET_RUNS:
            cmd = [RESETCOST, "--backend", be, "--sizes", self.a.sizes, "--written", "1",
                   "--pattern", pattern, "--reps", str(max(3, self.a.reps)), "--dir", self.a.dir]
            log("resets: %s" % shlex.join(cmd[1:]))
            p = subprocess.run(cmd, capture_output=True, text=True)
            out.append({"command": shlex.join(["snapload-resetcost"] + cmd[1:]),
                        "status": p.returncode, "table": p.stdout.splitlines(),
                        "error": p.stderr.strip()})
        return out

    def linux(self):
        """bench/linux.py with this run's repetitions: the Linux guest's
        first answer, first pass and faults after eager, lazy and lazy+hot
        restores; its summary goes into our JSON (every run stays in
        OUT/bench-linux.json)."""
        cmd = [sys.executable, os.path.join(ROOT, "bench/linux.py"), "--mem", self.a.linux_mem,
               "--backend", self.a.linux_backend, "--reps", str(self.a.reps),
               "--dir", os.path.join(self.a.dir, "linux"), "--out", self.a.out,
               "--build", BUILD]
        log("the Linux guest: %s" % shlex.join(cmd[1:]))
        path = os.path.join(self.a.out, "bench-linux.json")
        t = time.time()
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL)
        if not os.path.exists(path) or os.path.getmtime(path) < t:  # none, or an older run's
            return {"error": "bench/linux.py failed (status %d) before writing its report"
                    % p.returncode}
        with open(path) as f:
            lx = json.load(f)
        return {"status": p.returncode, "command": lx["command"], "mem": lx["mem"],
                "backend": lx["backend"], "accel": lx["accel"], "reps": lx["reps"],
                "summary": lx["summary"], "failures": lx["failures"]}


# The issue-12 acceptance table (--only fill,latency,cold,sparse,thp).
FILL_BACKENDS = ("shmem", "hugetlbfs-2M")
# Fault latency with the loaders idle: one thread touching every page in order,
# each fault serving its own page (fault-around off: the goal times a 4 KiB
# fault; with fault-around a sequential toucher faults once per 64 KiB).
LAT_IDLE = ("--threads", "0", "--touch-threads", "1", "--access", "seq", "--fault-around", "4K")
SPARSE_ZERO = 95        # % zero pages of the sparse guests
SPARSE_ZERO_UNIT = "2M"  # zero pages in aligned 2 MiB runs (see Issue12.sparse)
SPARSE_BASE = "1G"      # the sparse guest the big ones are compared with
COLD_TOUCHES = 2000     # random pages of the cold faults-only run


def mib(b):
    return b / 2**20


def gib_s(size):
    return "%g GiB" % (parse_size(size) / 2**30)


class Issue12:
    """Issue 12's acceptance table: one row per check, each figure a ratio
    against a baseline measured in the same run (docs/bench.md, "Issue 12
    table")."""

    def __init__(self, bench):
        self.b = bench
        self.a = bench.a
        self.sizes = self.a.sizes.split(",")
        self.reps = self.a.reps
        self.out = {"checks": [], "notes": [], "runs": {}, "phase_s": {}}
        self.anon_runs = {}  # size -> anon restores (page-map and metadata figures)

    def check(self, section, name, figure, baseline, ratio, target, met, **data):
        self.out["checks"].append({"section": section, "check": name, "figure": figure,
                                   "baseline": baseline, "ratio": ratio, "target": target,
                                   "met": met, "data": data})

    def not_measured(self, section, name, why, target="-"):
        log("%s: not measured: %s" % (name, why))
        self.check(section, name, "not measured: %s" % why, "-", None, target, None)

    def run(self):
        for sec in ("latency", "fill", "thp", "cold", "sparse"):
            if sec in self.b.only:
                t = time.time()
                log("issue 12: %s" % sec)
                getattr(self, sec)()
                self.out["phase_s"][sec] = round(time.time() - t)
        if "thp" in self.b.only or "sparse" in self.b.only:
            self.bookkeeping()
        return self.out

    # -------------------------------------------------------------- fill
    def fill(self):
        """Background completion (nobody touching, checksums on, default
        loaders) against an eager plain pread load into the same backend,
        and against memcpy of the same stored bytes into the same backend
        with all CPUs (the machine's copy limit)."""
        runs = self.out["runs"].setdefault("fill", {})
        for size in self.sizes:
            snap = self.b.snapshot(size)
            for be in FILL_BACKENDS:
                name = "%s %s" % (gib_s(size), be)
                hp = BACKENDS[be][1]
                with (hugepages(hp, parse_size(size), release=False) if hp
                      else contextlib.nullcontext()) as why:
                    if why:
                        self.not_measured("fill", "fill vs eager, " + name, why, "≥ 1.0×")
                        continue
                    fill, cp = [], []
                    for i in range(self.reps):
                        log("fill %s: repetition %d of %d" % (name, i + 1, self.reps))
                        warm(snap)
                        r = self.b.restore(snap, be, "--touch-threads", "0", *EAGER)
                        r["fill_ms"] = r["time_to_complete_ms"] - r["time_to_ready_ms"]
                        fill.append(r)
                        warm(snap)
                        cp.append(self.b.peers("memcpy", snap, be, "--threads", str(self.b.cpus)))
                runs["%s %s" % (size, be)] = {"restore": fill, "memcpy": cp}
                stored = cp[0]["present_bytes"]
                fill_ms, eager_ms = median(fill, "fill_ms"), median(fill, "eager_ms")
                fill_mb_s = mib(stored) / (fill_ms / 1e3)
                cp_mb_s = median(cp, "throughput_mb_s")
                cp_ms = mib(stored) / cp_mb_s * 1e3
                loaders = fill[0]["loader_threads"]
                self.check("fill", "fill vs eager, " + name,
                           "fill %.0f ms (%d loader, checksums on)" % (fill_ms, loaders),
                           "eager pread, 1 thread: %.0f ms" % eager_ms,
                           "%.2f×" % (eager_ms / fill_ms), "eager/fill ≥ 1.0×",
                           eager_ms / fill_ms >= 1.0, fill_ms=fill_ms, eager_ms=eager_ms,
                           fill_min_max_ms=spread(fill, "fill_ms"),
                           eager_min_max_ms=spread(fill, "eager_ms"))
                self.check("fill", "fill vs memcpy, " + name,
                           "fill %.0f MB/s (%.0f MiB stored in %.0f ms)" % (fill_mb_s, mib(stored),
                                                                            fill_ms),
                           "memcpy, %d threads, same bytes into %s: %.0f ms, %.0f MB/s"
                           % (self.b.cpus, be, cp_ms, cp_mb_s),
                           "%.0f %%" % (100 * fill_mb_s / cp_mb_s), "≥ 80 % of memcpy",
                           fill_mb_s / cp_mb_s >= 0.8, fill_mb_s=fill_mb_s, memcpy_mb_s=cp_mb_s,
                           memcpy_ms=cp_ms, stored_bytes=stored)

    # ----------------------------------------------------------- latency
    def latency(self):
        """Fault service latency with the loaders idle, at the first size:
        4 KiB shmem (MINOR) against anon (MISSING); a 2 MiB hugetlbfs fault
        against memcpy + XXH3 of a 2 MiB unit from the page cache."""
        size = self.sizes[0]
        snap = self.b.snapshot(size)
        lat = {"anon": [], "shmem": [], "hugetlbfs-2M": []}
        mh, why2m = [], None
        for i in range(self.reps):
            log("latency %s: repetition %d of %d" % (size, i + 1, self.reps))
            for be in ("anon", "shmem"):
                warm(snap)
                lat[be].append(self.b.restore(snap, be, *LAT_IDLE))
            with hugepages(2 << 20, parse_size(size), release=False) as why:
                why2m = why
                if not why:
                    warm(snap)
                    lat["hugetlbfs-2M"].append(self.b.restore(snap, "hugetlbfs-2M", *LAT_IDLE))
            warm(snap)
            mh.append(run_json([PEERS, "memcpy-hash", snap, "--unit-size", "2M"]))
        self.out["runs"]["latency"] = {"size": size, "restore": lat, "memcpy_hash": mh}
        a50, s50 = median(lat["anon"], "fault_p50_us"), median(lat["shmem"], "fault_p50_us")
        self.check("latency", "4 KiB fault p50, shmem (MINOR) vs anon (MISSING), %s" % gib_s(size),
                   "shmem p50 %.1f µs (p99 %.1f)" % (s50, median(lat["shmem"], "fault_p99_us")),
                   "anon p50 %.1f µs (p99 %.1f)" % (a50, median(lat["anon"], "fault_p99_us")),
                   "%.2f×" % (s50 / a50), "≤ 1.2×", s50 / a50 <= 1.2,
                   shmem_p50_us=s50, anon_p50_us=a50)
        name = "2 MiB fault p50, hugetlbfs vs memcpy+hash of 2 MiB, %s" % gib_s(size)
        if not lat["hugetlbfs-2M"]:
            self.not_measured("latency", name, why2m or "no run", "≤ 1.5×")
            return
        h50 = median(lat["hugetlbfs-2M"], "fault_p50_us")
        m50 = median(mh, "unit_p50_us")
        self.check("latency", name,
                   "hugetlbfs-2M p50 %.0f µs (p99 %.0f)" % (h50, median(lat["hugetlbfs-2M"],
                                                                        "fault_p99_us")),
                   "memcpy from page cache + XXH3 per 4 KiB: p50 %.0f µs (p99 %.0f) per 2 MiB"
                   % (m50, median(mh, "unit_p99_us")),
                   "%.2f×" % (h50 / m50), "≤ 1.5×", h50 / m50 <= 1.5,
                   hugetlbfs_p50_us=h50, memcpy_hash_p50_us=m50)

    # --------------------------------------------------------------- THP
    def thp(self):
        """Anonymous RAM in transparent hugepages after the lazy restore
        (completed) against after the eager load (MADV_HUGEPAGE, as QEMU)."""
        setting = open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
        runs = self.out["runs"].setdefault("thp", {})
        for size in self.sizes:
            snap = self.b.snapshot(size)
            rs = []
            for i in range(self.reps):
                log("thp %s anon: repetition %d of %d" % (size, i + 1, self.reps))
                warm(snap)
                # The loaders moving whole chunks (the default) beside
                # copying (--place-by-copy), first or second in turn: here a
                # fresh hugepage costs more than recycled memory
                # (docs/bench.md, "Moving whole chunks").
                cp = None
                if i % 2:
                    cp = self.b.restore(snap, "anon", "--touch-threads", "0", "--place-by-copy")
                r = self.b.restore(snap, "anon", "--touch-threads", "0", *EAGER)
                if not i % 2:
                    cp = self.b.restore(snap, "anon", "--touch-threads", "0", "--place-by-copy")
                r["fill_ms"] = r["time_to_complete_ms"] - r["time_to_ready_ms"]
                r["final_ms"] = r.get("time_to_final_ms", float("nan"))
                r["copy_fill_ms"] = cp["time_to_complete_ms"] - cp["time_to_ready_ms"]
                r["copy_final_ms"] = cp.get("time_to_final_ms", float("nan"))
                r["copy_anon_huge_kb"] = cp.get("anon_huge_kb", 0)
                rs.append(r)
            runs[size] = rs
            self.anon_runs.setdefault(size, []).extend(rs)
            self.check("thp", "anon restore, loaders moving 2 MiB chunks vs copying, %s"
                       % gib_s(size),
                       "moving (the default; %.0f MiB moved): fill %.0f ms, THPs final after "
                       "%.0f ms" % (mib(4096 * median(rs, "pages_moved")),
                                    median(rs, "fill_ms"), median(rs, "final_ms")),
                       "--place-by-copy: fill %.0f ms, THPs final after %.0f ms (collapsed "
                       "once complete)" % (median(rs, "copy_fill_ms"),
                                           median(rs, "copy_final_ms")),
                       "%.2f× the fill, %.2f× the time to final" % (
                           median(rs, "fill_ms") / median(rs, "copy_fill_ms"),
                           median(rs, "final_ms") / median(rs, "copy_final_ms")),
                       "none set (reported)", None)
            lazy, eager = median(rs, "anon_huge_kb"), median(rs, "eager_anon_huge_kb")
            self.check("thp", "THP-backed guest RAM, anon lazy vs eager, %s" % gib_s(size),
                       "lazy, completed: %.0f MiB (engine's thp_bytes %.0f MiB)"
                       % (lazy / 1024, mib(median(rs, "thp_bytes"))),
                       "eager load: %.0f MiB" % (eager / 1024),
                       "%.2f×" % (lazy / eager) if eager else "-", "lazy/eager ≥ 1.0×",
                       lazy >= eager, lazy_kb=lazy, eager_kb=eager, thp_setting=setting)

    # -------------------------------------------------------------- cold
    def coldread(self):
        """The disk's figures from snapload-coldread, or why not."""
        if not os.access(COLDREAD, os.X_OK):
            return None, "no snapload-coldread"
        path = os.path.join(self.a.dir, "coldread.dat")
        log("snapload-coldread on %s (about 2 minutes)" % path)
        p = subprocess.run([COLDREAD, "--file", path, "--size", "2G", "--json",
                            "--reps", str(max(1, min(3, self.reps)))],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            return None, "snapload-coldread failed (%d): %s" % (p.returncode,
                                                                p.stderr.strip()[-200:])
        try:
            return json.loads(p.stdout), None
        except ValueError:
            return None, "snapload-coldread printed no JSON"

    def cold(self):
        """Cold snapshots (`restore --cold` drops the file's page cache):
        the fill's read throughput against the disk's sequential bandwidth,
        and a fault's latency against one random 4 KiB read of the disk."""
        disk, why = self.coldread()
        self.out["runs"]["coldread"] = disk
        seq = dig(disk, "disk_seq_mb_s") if disk else None
        rand = dig(disk, "rand4k.idle_p50_us") if disk else None
        runs = self.out["runs"].setdefault("cold", {})
        for size in self.sizes:
            rs = self.cold_fills(self.b.snapshot(size), size)
            runs[size] = rs
            self.cold_fill_checks(rs, size, disk, seq, why)
        self.cold_faults(runs, disk, rand, why)

    def cold_fills(self, snap, size):
        """The cold fills of @snap, each repetition: cold, warm right after,
        and cold again with each way of reading and placing."""
        rs = []
        for i in range(self.reps):
            log("cold fill %s anon: repetition %d of %d" % (size, i + 1, self.reps))
            r, io = run_json_io([SNAPLOAD, "restore", snap, "--backend", "anon", "--cold",
                                 "--touch-threads", "0", "--json"])
            r["fill_ms"] = r["time_to_complete_ms"] - r["time_to_ready_ms"]
            r["disk_read_bytes"] = io
            # Bytes actually read: the engine's count if its JSON has one,
            # else what the process read from the disk (ru_inblock).
            r["read_bytes"] = r.get("bytes_read", io)
            # MB/s of 10^6 bytes, as snapload-coldread counts.
            r["read_mb_s"] = r["read_bytes"] / 1e6 / (r["fill_ms"] / 1e3)
            # The same fill right after, warm (the cold run left the
            # file's data cached): what placing alone costs here.
            w = run_json([SNAPLOAD, "restore", snap, "--backend", "anon", "--touch-threads",
                          "0", "--json"])
            r["warm_fill_ms"] = w["time_to_complete_ms"] - w["time_to_ready_ms"]
            # Cold again, pread then direct reads (O_DIRECT on io_uring),
            # each from a dropped cache, with the CPU time each used.
            # pread and direct reads (O_DIRECT on io_uring where the
            # file is not cached), each moving whole chunks (the
            # default) and copying, each from a dropped cache.
            for mode, extra in (("off", ["--direct-reads", "off"]),
                                ("auto", ["--direct-reads", "auto"]),
                                ("copy", ["--direct-reads", "off", "--place-by-copy"]),
                                ("autocopy", ["--direct-reads", "auto", "--place-by-copy"])):
                drop_cache(snap)
                c, cpu = run_json_cpu([SNAPLOAD, "restore", snap, "--backend", "anon",
                                       "--cold", "--touch-threads", "0", "--json"] + extra)
                r["%s_fill_ms" % mode] = c["time_to_complete_ms"] - c["time_to_ready_ms"]
                r["%s_final_ms" % mode] = c.get("time_to_final_ms", float("nan"))
                r["%s_cpu_s" % mode] = cpu
                r["%s_direct_bytes" % mode] = c.get("bytes_read_direct", 0)
                r["%s_read_mb_s" % mode] = c.get("bytes_read", 0) / 1e3 / r["%s_fill_ms" % mode]
            rs.append(r)
        return rs

    def cold_fill_checks(self, rs, size, disk, seq, why):
        """The cold-fill rows of @size from its runs @rs: against the disk
        (@seq MB/s), the same fill warm, and each way of reading and placing."""
        def fig(mode, label):
            return "%s: fill %.0f ms (%.0f MB/s), final %.0f ms, CPU %.2f s" % (
                label, median(rs, mode + "_fill_ms"), median(rs, mode + "_read_mb_s"),
                median(rs, mode + "_final_ms"), median(rs, mode + "_cpu_s"))

        def ratio(a, b):
            return "%.2f× the fill, %.2f× the time to final, %.2f× the CPU" % tuple(
                median(rs, a + k) / median(rs, b + k)
                for k in ("_fill_ms", "_final_ms", "_cpu_s"))

        for a, b, what in (("auto", "off", "direct reads vs pread, both moving"),
                           ("autocopy", "copy", "direct reads vs pread, both copying"),
                           ("off", "copy", "moving 2 MiB chunks vs copying, both pread")):
            self.check("cold", "cold fill, %s, %s anon" % (what, gib_s(size)),
                       fig(a, "--direct-reads auto" if a.startswith("auto") else "pread")
                       + ("" if a in ("off", "auto") else " (--place-by-copy)"),
                       fig(b, "--direct-reads auto" if b.startswith("auto") else "pread")
                       + ("" if b in ("off", "auto") else " (--place-by-copy)"),
                       ratio(a, b), "none set (reported; final: THPs in place, CPU: the "
                       "whole process)", None)
        self.check("cold", "cold fill vs the same fill warm, %s anon" % gib_s(size),
                   "cold fill %.0f ms" % median(rs, "fill_ms"),
                   "warm fill %.0f ms (the snapshot's data in the page cache, run right "
                   "after each cold one)" % median(rs, "warm_fill_ms"),
                   "%.0f %%" % (100 * median(rs, "warm_fill_ms") / median(rs, "fill_ms")),
                   "none set (reported: under 100 %, the disk costs more than placing)",
                   None)
        mb_s = median(rs, "read_mb_s")
        src = "bytes_read" if "bytes_read" in rs[0] else "disk reads of the process"
        fig = "cold fill %.0f MB/s (10^6 B/s; %.0f MiB read, %s, in %.0f ms)" % (
            mb_s, mib(median(rs, "read_bytes")), src, median(rs, "fill_ms"))
        name = "cold fill vs disk sequential read, %s anon" % gib_s(size)
        if seq is None:
            self.check("cold", name, fig, "not measured: %s" % (why or "no disk_seq_mb_s"),
                       None, "≥ 85 % of the disk", None, read_mb_s=mb_s)
        else:
            self.check("cold", name, fig, "disk sequential read %.0f MB/s (snapload-coldread: "
                       "best of its methods, %s; the engine's, %s: %.0f MB/s)"
                       % (seq, disk.get("best_method", "?"), disk.get("engine_method", "?"),
                          dig(disk, "methods.%s.mb_s_best" % disk.get("engine_method")) or 0),
                       "%.0f %%" % (100 * mb_s / seq), "≥ 85 % of the disk",
                       mb_s / seq >= 0.85, read_mb_s=mb_s, disk_seq_mb_s=seq)

    def cold_faults(self, runs, disk, rand, why):
        """Cold 4 KiB faults at the first size against one random disk read
        (@rand µs), with one loader streaming and with the loaders idle."""
        # At the first size: with one loader streaming (as the
        # issue asks), and with the loaders idle (faults only, ending after
        # COLD_TOUCHES random pages): there each fault reads from the disk.
        size = self.sizes[0]
        snap = self.b.snapshot(size)
        busy, idle = [], []
        hot = os.path.join(self.a.dir, "cold-faults.hot")
        for i in range(self.reps):
            log("cold faults %s anon: repetition %d of %d" % (size, i + 1, self.reps))
            busy.append(run_json([SNAPLOAD, "restore", snap, "--backend", "anon", "--cold",
                                  "--threads", "1", "--touch-threads", "1", "--access", "random",
                                  "--json"]))
            idle.append(run_json([SNAPLOAD, "restore", snap, "--backend", "anon", "--cold",
                                  "--threads", "0", "--touch-threads", "1", "--access", "random",
                                  "--workload", str(COLD_TOUCHES), "--record", hot, "--json"]))
        if os.path.exists(hot):
            os.unlink(hot)
        runs["faults " + size] = {"loader_busy": busy, "loaders_idle": idle}
        for rs, how in ((busy, "1 loader streaming"), (idle, "loaders idle, %d random pages"
                                                       % COLD_TOUCHES)):
            p50 = median(rs, "fault_p50_us")
            name = "cold 4 KiB fault p50 (%s) vs one random disk read, %s" % (how, gib_s(size))
            nfaults = max(1, sum(r["faults"] for r in rs))
            fig = ("fault p50 %.0f µs (p99 %.0f); %.0f %% of faults found the page placed, "
                   "%.0f %% were served before their cold neighbours (split)") % (
                p50, median(rs, "fault_p99_us"),
                100 * sum(r["faults_on_present"] for r in rs) / nfaults,
                100 * sum(r.get("faults_split", 0) for r in rs) / nfaults)
            if rand is None:
                self.check("cold", name, fig, "not measured: %s" % (why or "no rand4k.idle_p50_us"),
                           None, "none set (reported)", None, fault_p50_us=p50)
            else:
                self.check("cold", name, fig, "random 4 KiB read, disk idle (O_DIRECT): p50 %.0f µs; "
                           "buffered, idle: %s µs" % (rand, dig(disk, "rand4k.idle_buffered_random_p50_us")),
                           "%.2f×" % (p50 / rand), "none set (reported)", None, fault_p50_us=p50,
                           rand4k_idle_p50_us=rand)

    # ------------------------------------------------------------ sparse
    def sparse_snapshot(self, size):
        """A snapshot of a SIZE guest with 95 % zero pages, in 2 MiB runs;
        what making it took."""
        d = os.path.join(self.a.dir, "sparse")
        os.makedirs(d, exist_ok=True)
        raw, snap = os.path.join(d, "ram-%s.img" % size), os.path.join(d, "snap-%s.sl" % size)
        made = {"size": size}
        t = time.time()
        subprocess.run([SNAPLOAD, "synth", "-o", raw, "--size", size, "--zero-percent",
                        str(SPARSE_ZERO), "--zero-unit", SPARSE_ZERO_UNIT], check=True,
                       stdout=subprocess.DEVNULL)
        made["synth_s"] = round(time.time() - t, 1)
        made["raw_disk_bytes"] = os.stat(raw).st_blocks * 512
        t = time.time()
        subprocess.run([SNAPLOAD, "save", "--raw", raw + ":pc.ram", "-o", snap], check=True,
                       stdout=subprocess.DEVNULL)
        made["save_s"] = round(time.time() - t, 1)
        os.unlink(raw)
        made["snapshot_disk_bytes"] = os.stat(snap).st_blocks * 512
        made["snapshot_bytes"] = os.stat(snap).st_size
        log("sparse %s: synth %.1f s, save --raw %.1f s, snapshot %.2f GiB on disk"
            % (size, made["synth_s"], made["save_s"], made["snapshot_disk_bytes"] / 2**30))
        return snap, made

    def sparse(self):
        """Anonymous restores of big guests with 95 % zero pages, --verify:
        time to ready flat against the 1 GiB guest's, time to complete with
        the present pages, 0 mismatches, 0 placed twice."""
        big = [x for x in self.a.sparse_sizes.split(",") if x]
        if not big:
            self.out["notes"].append("Sparse guests left out (--sparse-sizes '').")
            return
        snaps, made = {}, {}
        try:
            for size in [SPARSE_BASE] + big:
                present = parse_size(size) * (100 - SPARSE_ZERO) // 100
                free = shutil.disk_usage(self.a.dir).free
                if free < 2 * present + (4 << 30):
                    self.not_measured("sparse", "sparse %s" % gib_s(size),
                                      "%.1f GiB free under %s, %.1f GiB needed" % (
                                          free / 2**30, self.a.dir, (2 * present + (4 << 30)) / 2**30))
                    continue
                snaps[size], made[size] = self.sparse_snapshot(size)
            runs = {s: [] for s in snaps}
            for i in range(self.reps):
                for size, snap in snaps.items():
                    # Its data in the page cache and its RAM, with room to spare.
                    need = 2 * parse_size(size) * (100 - SPARSE_ZERO) // 100 + (2 << 30)
                    if mem_available() < need:
                        log("sparse %s: %.1f GiB available, %.1f GiB needed: skipped" % (
                            size, mem_available() / 2**30, need / 2**30))
                        continue
                    log("sparse %s anon: repetition %d of %d (MemAvailable %.1f GiB)"
                        % (size, i + 1, self.reps, mem_available() / 2**30))
                    warm(snap)
                    t = time.time()
                    r = self.b.restore(snap, "anon", *WORKLOAD, "--verify")
                    r["wall_s"] = round(time.time() - t, 1)
                    r["present_pages"] = r["pages"] - r["zero_pages"]
                    runs[size].append(r)
        finally:
            for snap in snaps.values():
                os.unlink(snap)
        self.out["runs"]["sparse"] = runs
        self.out["sparse_made"] = made
        for size, rs in runs.items():
            self.anon_runs.setdefault("sparse " + size, []).extend(rs)
        base = runs.get(SPARSE_BASE)
        for size in big:
            rs = runs.get(size)
            name = "sparse %s (%d %% zero)" % (gib_s(size), SPARSE_ZERO)
            if size not in snaps:
                continue
            if not rs or not base:
                self.not_measured("sparse", name, "not enough memory for the restore")
                continue
            r0, r1 = median(base, "time_to_ready_ms"), median(rs, "time_to_ready_ms")
            self.check("sparse", name + ": time to ready vs %s" % gib_s(SPARSE_BASE),
                       "ready %.2f ms (fastest %.2f)" % (r1, spread(rs, "time_to_ready_ms")[0]),
                       "%s guest: %.2f ms (fastest %.2f)" % (gib_s(SPARSE_BASE), r0,
                                                            spread(base, "time_to_ready_ms")[0]),
                       "%.2f×" % (r1 / r0), "≤ 1.5×", r1 / r0 <= 1.5,
                       ready_ms=r1, base_ready_ms=r0,
                       fastest_ratio=spread(rs, "time_to_ready_ms")[0] /
                       spread(base, "time_to_ready_ms")[0])
            c0, c1 = median(base, "time_to_complete_ms"), median(rs, "time_to_complete_ms")
            p0, p1 = base[0]["present_pages"], rs[0]["present_pages"]
            self.check("sparse", name + ": time to complete vs present pages",
                       "complete %.0f ms, %.2f GiB present (%.0f ms per GiB present)"
                       % (c1, p1 * 4096 / 2**30, c1 / (p1 * 4096 / 2**30)),
                       "%s guest: %.0f ms, %.2f GiB present (%.0f ms per GiB)"
                       % (gib_s(SPARSE_BASE), c0, p0 * 4096 / 2**30, c0 / (p0 * 4096 / 2**30)),
                       "%.1f× the time for %.1f× the present pages" % (c1 / c0, p1 / p0),
                       "grows with the present pages (reported)", None,
                       complete_ms=c1, base_complete_ms=c0, present_pages=p1,
                       base_present_pages=p0)
            bad = max(x["verify_mismatches"] for x in rs)
            twice = max(x["pages_placed_twice"] for x in rs)
            never = max(x["pages_never_placed"] for x in rs)
            touch = max(x["touch_mismatches"] for x in rs)
            self.check("sparse", name + ": verified",
                       "%d mismatching pages (--verify, every byte), %d placed twice, %d never "
                       "placed, %d touch mismatches; %d of %d runs" % (bad, twice, never, touch,
                                                                       len(rs), self.reps),
                       "-", "-", "0 mismatches, 0 placed twice",
                       bad == 0 and twice == 0 and never == 0 and touch == 0,
                       peak_rss_anon_kb=max(x["peak_rss_anon_kb"] for x in rs),
                       vm_hwm_kb=max(x["vm_hwm_kb"] for x in rs))

    # -------------------------------------------------------- bookkeeping
    def bookkeeping(self):
        """Page-map state per 4 KiB page and the restore's metadata per GiB
        of guest RAM, from every anonymous restore of this run."""
        per_page, meta = [], []
        worst = None
        for name, rs in self.anon_runs.items():
            if not rs:
                continue
            r = rs[0]
            pages = r["guest_bytes"] // 4096
            b = r["map_bytes"] / pages
            per_page.append("%s %.4f" % (name, b))
            meta.append("%s %.2f" % (name, mib(r["metadata_bytes"]) / (r["guest_bytes"] / 2**30)))
            # One byte of state per page, plus a fixed header per map (one
            # map per block): map_bytes - pages is that header.
            if worst is None or b > worst[0]:
                worst = (b, r["map_bytes"] - pages, name)
        if worst is None:
            return
        self.check("sparse", "page-map state per 4 KiB page (anon restores of this run)",
                   "B per page: " + ", ".join(per_page), "1 B per page",
                   "%.4f" % worst[0], "≤ 1 B per page (+ a fixed header per block)",
                   worst[1] <= 4096, worst_header_bytes=worst[1], worst=worst[2])
        self.check("sparse", "restore metadata per GiB of guest RAM (metadata_bytes)",
                   "MiB per GiB: " + ", ".join(meta), "-", "-", "none set (reported)", None)


def issue12_lines(res):
    """The issue-12 table, as Markdown lines."""
    i12 = res["issue12"]
    out = ["| # | check | figure | baseline (same run) | ratio | target | result |",
           "|---|---|---|---|---:|---|---|"]
    for n, c in enumerate(i12["checks"], 1):
        out.append("| %d | %s | %s | %s | %s | %s | %s |" % (
            n, c["check"], c["figure"], c["baseline"], c["ratio"] or "-", c["target"],
            "—" if c["met"] is None else "met" if c["met"] else "**NOT met**"))
    made = i12.get("sparse_made")
    if made:
        out += ["", "Sparse guests (%d %% zero pages in aligned %s runs), made in this run: " %
                (SPARSE_ZERO, SPARSE_ZERO_UNIT) + "; ".join(
                    "%s: synth %.1f s, image %.2f GiB on disk; `save --raw` %.1f s, snapshot "
                    "%.2f GiB on disk (%.0f GiB long)" % (
                        gib_s(s), m["synth_s"], m["raw_disk_bytes"] / 2**30, m["save_s"],
                        m["snapshot_disk_bytes"] / 2**30, m["snapshot_bytes"] / 2**30)
                    for s, m in made.items()) + "."]
    out += [""] + i12["notes"] if i12["notes"] else []
    met = [c["met"] for c in i12["checks"] if c["met"] is not None]
    out += ["", "%d of %d checks with a target met; time per section: %s." % (
        sum(met), len(met), ", ".join("%s %d s" % kv for kv in i12["phase_s"].items()))]
    return out


def default_sizes():
    """1G,4G, and 16G when guest RAM, its snapshot in the page cache and the
    eager copy fit in memory with room to spare (about 40 GiB)."""
    kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
    return "1G,4G,16G" if kb >= 40 << 20 else "1G,4G"


def ready_growth(res):
    """Per backend: time to ready at the largest size over the smallest."""
    sizes = list(res["sizes"])
    out = {}
    for be in res["sizes"][sizes[0]] if sizes else ():
        rows = [res["sizes"][s][be] for s in sizes if be in res["sizes"][s]]
        if len(rows) > 1:
            mins = [r["time_to_ready_min_max_ms"][0] for r in (rows[0], rows[-1])]
            out[be] = {"sizes": [sizes[0], sizes[-1]],
                       "ram_ratio": rows[-1]["guest_bytes"] / rows[0]["guest_bytes"],
                       "ready_ratio": rows[-1]["time_to_ready_ms"] / rows[0]["time_to_ready_ms"],
                       "ready_min_ratio": mins[1] / mins[0],
                       "eager_ratio": rows[-1]["eager_1thread_ms"] / rows[0]["eager_1thread_ms"]}
    return out


def growth_lines(g):
    return ["%s: %.0f× the RAM (%s to %s): time to ready %.2f× (medians), %.2f× (fastest "
            "runs, less exposed to the host's noise); eager load %.1f×."
            % (be, v["ram_ratio"], v["sizes"][0], v["sizes"][1], v["ready_ratio"],
               v["ready_min_ratio"], v["eager_ratio"]) for be, v in g.items()]


def machine():
    mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu": cpu,
            "mem_gib": round(int(mem) / 2**20, 1), "date": datetime.date.today().isoformat()}


def fmt(v, unit="", digits=1):
    return "-" if v is None else ("%.*f%s" % (digits, v, unit))


def ranged(r, key, digits=1):
    """The median of @key with the range of the runs: "8.1 (7.9–9.0)"."""
    mm = r.get(key.replace("_ms", "_min_max_ms"))
    if not mm:
        return fmt(r[key], digits=digits)
    return "%s (%s–%s)" % (fmt(r[key], digits=digits), fmt(mm[0], digits=digits),
                           fmt(mm[1], digits=digits))


def table(res, cpus):
    """The side-by-side table, as Markdown lines."""
    n = "eager_%dthreads_ms" % cpus
    out = ["| size | backend | ready (min–max) | complete (min–max) | eager 1 thr | eager %d thr | eager1/ready | "
           "fault p50/p99/max busy | fault p50/p99/max idle | loaders vs memcpy | "
           "peak RssAnon / guest |" % cpus,
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size, rows in res["sizes"].items():
        for be, r in rows.items():
            idle = "%s/%s/%s µs" % (fmt(r.get("fault_idle_p50_us")), fmt(r.get("fault_idle_p99_us")),
                                    fmt(r.get("fault_idle_max_us"), digits=0)) \
                if "fault_idle_p50_us" in r else "-"
            out.append("| %s | %s | %s ms | %s ms | %s ms | %s ms | %.0f× | %s/%s/%s µs | %s | "
                       "%.0f%% of %.0f MB/s | %.1f%% |" % (
                           size, be, ranged(r, "time_to_ready_ms"),
                           ranged(r, "time_to_complete_ms", 0),
                           fmt(r["eager_1thread_ms"], digits=0), fmt(r[n], digits=0),
                           r["eager_1thread_ms"] / r["time_to_ready_ms"],
                           fmt(r["fault_busy_p50_us"]), fmt(r["fault_busy_p99_us"]),
                           fmt(r["fault_busy_max_us"], digits=0), idle,
                           100 * r["loader_fraction_of_memcpy"], r["memcpy_mb_s"],
                           100 * r["peak_rss_anon_kb"] * 1024 / r["guest_bytes"]))
    return out


def peer_table(res):
    out = ["| size | backend | strategy | ready | first touch waited | complete | "
           "touch p50/p99 | wrong pages |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for size, rows in res["sizes"].items():
        for be, r in rows.items():
            out.append("| %s | %s | **snapload** | %s ms | %s ms | %s ms | %s/%s µs | %d |"
                       % (size, be, fmt(r["time_to_ready_ms"]), fmt(r["touch_first_wait_ms"]),
                          fmt(r["time_to_complete_ms"], digits=0), fmt(r["touch_p50_us"]),
                          fmt(r["touch_p99_us"]), r["touch_mismatches"]))
            for s, p in r["peers"].items():
                out.append("| %s | %s | %s | %s ms | %s ms | %s ms | %s/%s µs | %s |" % (
                    size, be, s, fmt(p["time_to_ready_ms"]),
                    fmt(p["time_to_first_touch_served_ms"]), fmt(p["time_to_complete_ms"], digits=0),
                    fmt(p["touch_p50_us"]), fmt(p["touch_p99_us"]), fmt(p["touch_mismatches"], digits=0)))
    return out


def qemu_lines(q):
    """Stock QEMU: time from migrate-incoming to `cont` answered, per path,
    and the ratio against the fastest eager path (the whole table and every
    run: bench-qemu.md and bench-qemu.json)."""
    paths, notes = None, []
    out = ["Stock %s (%s), the walker guest (30 %% zero pages): lazy `snapload qemu-restore` "
           "of QEMU's own mapped-ram file against QEMU's own eager loads of the same guest. "
           "Time from `migrate-incoming` to `cont` answered, medians of %d (QEMU's own start, "
           "the same on every path, apart); the whole table is in "
           "[bench-qemu.md](bench-qemu.md):" % (q["qemu_version"], q["accel"], q["reps"]), ""]
    for size, rows in q["results"].items():
        for be, r in rows.items():
            if "fastest_eager" not in r:
                notes.append("Stock QEMU, %s %s not measured: %s" % (
                    size, be, r.get("skipped") or "; ".join(
                        f["error"].splitlines()[0][:200] for f in r.get("failures", []))))
                continue
            p = r["paths"]
            if paths is None:
                paths = list(p)
                out += ["| size | RAM | " + " | ".join(
                    "lazy" if x == "lazy" else x.replace("eager-file-mfd", "eager file: multifd ")
                    .replace("eager-file", "eager file:").replace("eager-exec", "eager exec:")
                    for x in paths) + " | fastest eager / lazy | QEMU start | lazy: every page "
                    "in place | lazy: placed twice, guest checks |",
                    "|---|---|" + "---:|" * (len(paths) + 3) + "---|"]
            lz = p["lazy"]
            out.append("| %s | %s | %s | **%.0f×** (%s) | %.0f ms | %.0f ms | %s, %d of %d ok |" % (
                size, be, " | ".join(fmt(p[x]["incoming_to_running_ms"]) + " ms" for x in paths),
                r["ratio_incoming_to_running"], r["fastest_eager"], lz["qemu_start_ms"],
                lz["time_to_complete_ms"], lz["pages_placed_twice"],
                sum(c == "ok" for c in lz["guest_checks"]), len(lz["guest_checks"])))
    out += [""] + notes + (["" ] if notes else []) + \
        ["- %s: %s: **%s**" % (c["check"], "-" if c["value"] is None else c["value"],
                                "met" if c["met"] else "NOT met") for c in q.get("acceptance", [])]
    return out


def linux_lines(lx):
    """The Linux guest's acceptance rows (the whole report: bench-linux.md)."""
    if "error" in lx:
        return ["The Linux guest (--only linux): not measured: %s" % lx["error"]]
    out = ["The Linux guest (`%s`, %s %s under %s, medians of %d; every figure in "
           "[bench-linux.md](bench-linux.md)):" % (lx["command"], lx["mem"], lx["backend"],
                                                   lx["accel"], lx["reps"]), "",
           "| check | figure | baseline | ratio | target | |", "|---|---:|---:|---:|---|---|"]
    for c in lx["summary"]["acceptance"]:
        r = c["ratio"]
        ratio = "-" if r is None else ("%.1f %% fewer" % (r * 100) if c["check"].startswith(
            "faults") else "%.2f×" % r)
        out.append("| %s | %s | %s | %s | %s | %s |" % (
            c["check"], fmt(c["figure"]), fmt(c["baseline"]), ratio, c["target"],
            {True: "met", False: "**NOT met**", None: ""}[c["met"]]))
    for f in lx["failures"]:
        out.append("- failed: %s repetition %d: %s" % (f["mode"], f["rep"],
                                                     f["error"].splitlines()[0][:200]))
    return out


def svg(tl, path):
    """Bytes in place over time, lazy against eager, as an SVG line chart."""
    w, h, l, b = 640, 360, 60, 40
    # Time on a log axis from T0: a ready time of milliseconds and an eager
    # load of seconds both stay readable.
    t0 = 0.5
    tmax = max([t for s in tl["series"].values() for t, _ in s] + [10 * t0])
    span = math.log10(tmax / t0)
    x = lambda t: l + (w - l - 20) * math.log10(max(t, t0) / t0) / span
    y = lambda f: h - b - (h - b - 20) * f
    parts = ['<!-- SPDX-License-Identifier: GPL-2.0-or-later -->',
             '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'font-family="sans-serif" font-size="12">' % (w, h),
             '<rect width="100%" height="100%" fill="white"/>',
             '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (l, h - b, w - 20, h - b),
             '<line x1="%d" y1="20" x2="%d" y2="%d" stroke="black"/>' % (l, l, h - b)]
    for i in range(0, 5):
        parts.append('<text x="%d" y="%d" text-anchor="end">%d%%</text>'
                     % (l - 5, y(i / 4) + 4, 25 * i))
    t = 1.0
    while t <= tmax:
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ccc"/>'
                     % (x(t), 20, x(t), h - b))
        parts.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                     % (x(t), h - b + 16, "%g ms" % t if t < 1000 else "%g s" % (t / 1000)))
        t *= 10
    colors = {"lazy": "#1f77b4", "eager": "#d62728"}
    for mode, pts in tl["series"].items():
        if not pts:
            continue
        d = " ".join("%.1f,%.1f" % (x(t), y(f)) for t, f in pts)
        parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                     % (colors[mode], d))
    runs = [("lazy", tl["lazy_ready_ms"]), ("eager", tl["series"]["eager"][-1][0])]
    for i, (mode, t) in enumerate(runs):
        parts.append('<line x1="%.1f" y1="20" x2="%.1f" y2="%d" stroke="%s" '
                     'stroke-dasharray="4,3"/>' % (x(t), x(t), h - b, colors[mode]))
        right = x(t) > w / 2
        parts.append('<text x="%.1f" y="%d" fill="%s" text-anchor="%s">%s: guest may run at '
                     '%.1f ms</text>' % (x(t) - 4 if right else x(t) + 4, 34 + 16 * i,
                                         colors[mode], "end" if right else "start", mode, t))
    parts.append('<text x="%d" y="%d" text-anchor="middle">guest RAM in place over time, %s, %s '
                 '(dashed: when the guest can run; log time)</text>' % (w / 2, h - 6, tl["snapshot"],
                                                              tl["backend"]))
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    global BUILD, SNAPLOAD, PEERS, COLDREAD, RESETCOST
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=default_sizes())
    ap.add_argument("--backends", default="anon,shmem,hugetlbfs-2M,hugetlbfs-1G")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp/snapload-bench", help="snapshots and scratch")
    ap.add_argument("--out", default=None, help="where results go (default: DIR/results)")
    ap.add_argument("--build", default=None,
                    help="snapload build directory (default: $SNAPLOAD_BUILD, else ./build)")
    ap.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                    help="sections to run, of %s; 'issue12' stands for %s (default: all "
                    "but linux)" % (",".join(SECTIONS), ",".join(ISSUE12)))
    ap.add_argument("--linux-mem", default="4G", help="guest RAM of the linux section")
    ap.add_argument("--linux-backend", default="shmem", choices=("shmem", "anon", "hugetlbfs-2M"),
                    help="guest RAM of the linux section: shmem, anon or hugetlbfs-2M")
    ap.add_argument("--sparse-sizes", default="16G,64G",
                    help="the sparse guests (95%% zero pages) of the issue-12 table; '' leaves "
                    "them out")
    ap.add_argument("--no-qemu", dest="qemu", action="store_false",
                    help="leave out stock QEMU (scripts/bench-qemu.py)")
    ap.add_argument("--qemu-sizes", default="1G,4G", help="guest sizes of the stock QEMU runs")
    ap.add_argument("--qemu-size", dest="qemu_sizes", help=argparse.SUPPRESS)  # the old spelling
    a = ap.parse_args()
    only = []
    for x in a.only.split(","):
        for y in (ISSUE12 if x == "issue12" else (x,) if x else ()):
            if y not in SECTIONS:
                ap.error("--only: unknown section '%s' (known: %s, issue12)" % (y, ",".join(SECTIONS)))
            only.append(y)
    a.only = tuple(only)
    BUILD = os.path.abspath(a.build or os.environ.get("SNAPLOAD_BUILD") or BUILD)
    SNAPLOAD, PEERS = os.path.join(BUILD, "snapload"), os.path.join(BUILD, "snapload-peers")
    COLDREAD = os.path.join(BUILD, "snapload-coldread")
    RESETCOST = os.path.join(BUILD, "snapload-resetcost")
    os.environ["SNAPLOAD_BUILD"] = BUILD  # scripts/bench-qemu.py takes its binaries from there
    if a.qemu and "qemu" in a.only and not shutil.which("qemu-system-x86_64"):
        log("no qemu-system-x86_64: stock QEMU left out")
        a.qemu = False
    a.out = a.out or os.path.join(a.dir, "results")
    os.makedirs(a.out, exist_ok=True)
    for p in (SNAPLOAD, PEERS):
        if not os.access(p, os.X_OK):
            sys.exit("bench: %s is not built: run scripts/install-deps.sh first (or --build DIR)"
                     % p)
    b = Bench(a)
    b.run()
    res = b.res
    res["machine"] = machine()
    res["command"] = "bench/run.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    res["build"] = BUILD
    res["reps"] = a.reps
    res["ready_growth"] = ready_growth(res)
    with open(os.path.join(a.out, "bench.json"), "w") as f:
        json.dump(res, f, indent=1)
    if "timeline" in res:
        svg(res["timeline"], os.path.join(a.out, "pages-over-time.svg"))
    m = res["machine"]
    lines = ["<!-- SPDX-License-Identifier: GPL-2.0-or-later -->", "# snapload benchmark results", "",
             "`%s` on %s: %d CPUs (%s), %.0f GiB, kernel %s. Medians of %d repetitions, page "
             "cache warm unless cold, snapshots with 30%% zero pages unless sparse; every figure "
             "in a row comes from the same run. It took %.1f minutes."
             % (res["command"], m["date"], m["cpus"], m["cpu"], m["mem_gib"], m["kernel"],
                a.reps, res["duration_s"] / 60), ""]
    if res["sizes"]:
        lines += table(res, b.cpus) + [""]
        lines += ["How the figures grow with guest RAM:", ""] + growth_lines(res["ready_growth"]) + [""]
        lines += ["Peer strategies (re-implementations of their published algorithms in "
                  "bench/strategies.c, same files, same backends; one thread touching %d random "
                  "pages once ready; ready counts from before the snapshot is opened for all):" % TOUCHES, ""] + peer_table(res) + [""]
    if "issue12" in res:
        lines += ["## Issue 12: fill, fault latency, cold reads, bookkeeping, THP", ""]
        lines += issue12_lines(res) + [""]
    if "qemu" in res:
        lines += qemu_lines(res["qemu"]) + [""]
    if "reset" in res:
        lines += ["## Resets (issue 14)", ""]
        for r in res["reset"]:
            lines += ["`%s` (status %d)%s" % (r["command"], r["status"],
                                              ": " + r["error"] if r["error"] else ""), "", "```"]
            lines += r["table"] + ["```", ""]
    if "linux" in res:
        lines += linux_lines(res["linux"]) + [""]
    for s in res["skipped"]:
        lines.append("Not measured: %s %s: %s" % (s["size"], s["backend"], s["why"]))
    if "timeline" in res:
        lines += ["", "![pages over time](pages-over-time.svg)", ""]
    with open(os.path.join(a.out, "bench.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    log("results in %s (bench.json, bench.md%s) after %.1f minutes" % (
        a.out, ", pages-over-time.svg" if "timeline" in res else "", res["duration_s"] / 60))


if __name__ == "__main__":
    main()
