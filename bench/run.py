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
    --qemu-sizes (scripts/bench-qemu.py; its whole table: OUT/bench-qemu.md).
The eager baselines are plain pread loads (no checksum checks), while the
lazy restores check every page: the comparison is, if anything, unfair to
snapload.  Sizes default to 1G,4G, plus 16G where the machine has memory
for it and for its snapshot in the page cache (warm figures).
Prints one table; writes OUT/bench.json, OUT/bench.md and
OUT/pages-over-time.svg (bytes in place over time, lazy against eager).

usage: bench/run.py [--sizes 1G,4G] [--backends anon,shmem,hugetlbfs-2M,hugetlbfs-1G]
                    [--reps 3] [--dir /var/tmp/snapload-bench] [--out DIR] [--no-qemu]
                    [--qemu-sizes 1G,4G]
"""
import argparse
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
SNAPLOAD = os.path.join(BUILD, "snapload")
PEERS = os.path.join(BUILD, "snapload-peers")
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


def median(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def warm(path):
    """Reads @path through the page cache, so that the figures are warm ones."""
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def spread(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return [min(vals), max(vals)] if vals else None


def reserve(hugepage, size):
    """Reserves hugepages for one restore of @size, after giving the free
    pages of the other size back (1 GiB pages need contiguous memory that
    a 2 MiB pool may hold); returns None or why not."""
    name = "2M" if hugepage == 2 << 20 else "1G"
    need = size // hugepage + (16 if hugepage == 2 << 20 else 0)
    setup = os.path.join(ROOT, "scripts/hugetlb-setup.sh")
    subprocess.run(["bash", setup, "--release", "1G" if name == "2M" else "2M"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = subprocess.run(["bash", setup, str(need), name],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return None if p.returncode == 0 else p.stdout.strip().splitlines()[-1]


class Bench:
    def __init__(self, a):
        self.a = a
        self.cpus = os.cpu_count()
        os.makedirs(a.dir, exist_ok=True)
        self.res = {"sizes": {}, "skipped": []}

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
                lat_idle.append(self.restore(snap, be, "--threads", "0", "--touch-threads", "1",
                                             "--access", "seq"))
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
        sizes = self.a.sizes.split(",")
        for size in sizes:
            snap = self.snapshot(size)
            rows = {}
            for be in self.a.backends.split(","):
                hp = BACKENDS[be][1]
                why = None
                if hp and parse_size(size) % hp:
                    why = "a %s block is not a multiple of the %s page" % (size, be.split("-")[1])
                elif hp:
                    why = reserve(hp, parse_size(size))
                if why:
                    log("skipping %s %s: %s" % (size, be, why))
                    self.res["skipped"].append({"size": size, "backend": be, "why": why})
                    continue
                rows[be] = self.one_backend(size, snap, be, size == sizes[0])
            self.res["sizes"][size] = rows
        big = self.snapshot(sizes[-1])
        self.res["timeline"] = self.timeline(big, "anon")
        q = self.qemu() if self.a.qemu else None
        if q:
            self.res["qemu"] = q

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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=default_sizes())
    ap.add_argument("--backends", default="anon,shmem,hugetlbfs-2M,hugetlbfs-1G")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp/snapload-bench", help="snapshots and scratch")
    ap.add_argument("--out", default=None, help="where results go (default: DIR/results)")
    ap.add_argument("--no-qemu", dest="qemu", action="store_false",
                    help="leave out stock QEMU (scripts/bench-qemu.py)")
    ap.add_argument("--qemu-sizes", default="1G,4G", help="guest sizes of the stock QEMU runs")
    ap.add_argument("--qemu-size", dest="qemu_sizes", help=argparse.SUPPRESS)  # the old spelling
    a = ap.parse_args()
    if a.qemu and not shutil.which("qemu-system-x86_64"):
        log("no qemu-system-x86_64: stock QEMU left out")
        a.qemu = False
    a.out = a.out or os.path.join(a.dir, "results")
    os.makedirs(a.out, exist_ok=True)
    for p in (SNAPLOAD, PEERS):
        if not os.access(p, os.X_OK):
            sys.exit("bench: %s is not built: run scripts/install-deps.sh first" % p)
    b = Bench(a)
    b.run()
    res = b.res
    res["machine"] = machine()
    res["command"] = "bench/run.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    res["reps"] = a.reps
    res["ready_growth"] = ready_growth(res)
    with open(os.path.join(a.out, "bench.json"), "w") as f:
        json.dump(res, f, indent=1)
    svg(res["timeline"], os.path.join(a.out, "pages-over-time.svg"))
    m = res["machine"]
    lines = ["<!-- SPDX-License-Identifier: GPL-2.0-or-later -->", "# snapload benchmark results", "",
             "`%s` on %s: %d CPUs (%s), %.0f GiB, kernel %s. Medians of %d repetitions, page "
             "cache warm, snapshots with 30%% zero pages; every figure in a row comes from the "
             "same run." % (res["command"], m["date"], m["cpus"], m["cpu"], m["mem_gib"],
                            m["kernel"], a.reps), ""]
    lines += table(res, b.cpus) + [""]
    lines += ["How the figures grow with guest RAM:", ""] + growth_lines(res["ready_growth"]) + [""]
    lines += ["Peer strategies (re-implementations of their published algorithms in "
              "bench/strategies.c, same files, same backends; one thread touching %d random "
              "pages once ready; ready counts from before the snapshot is opened for all):" % TOUCHES, ""] + peer_table(res) + [""]
    if "qemu" in res:
        lines += qemu_lines(res["qemu"]) + [""]
    for s in res["skipped"]:
        lines.append("Not measured: %s %s: %s" % (s["size"], s["backend"], s["why"]))
    lines += ["", "![pages over time](pages-over-time.svg)", ""]
    with open(os.path.join(a.out, "bench.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    log("results in %s (bench.json, bench.md, pages-over-time.svg)" % a.out)


if __name__ == "__main__":
    main()
