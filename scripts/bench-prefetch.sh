#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Prefetch benchmark, every figure from the same run (docs/numa.md):
#  1. background completion (nobody touching) with 1, 2 and all loader
#     threads, each against an eager multi-threaded pread load of the same
#     snapshot into the same backend, measured right beside it;
#  2. fault service latency p50/p99 while the loaders run at full speed,
#     against idle loaders (faults only);
#  3. the hot-page list: faults and time until a recorded workload finishes,
#     without and with the list recorded from the same workload.
#   SIZE=1G  BACKEND=anon|shmem|hugetlbfs  DIR=/var/tmp/snapload-bench  REPS=3
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${SIZE:-1G}"
BACKEND="${BACKEND:-anon}"
DIR="${DIR:-/var/tmp/snapload-bench}"
WORKLOAD="${WORKLOAD:-20000}"
REPS="${REPS:-3}"

bash scripts/install-deps.sh >/dev/null
SL=./build/snapload
ALL=$(nproc)
mkdir -p "$DIR"
RAW="$DIR/ram-$SIZE.img"
SNAP="$DIR/snap-$SIZE.sl"
[ -f "$RAW" ] || $SL synth -o "$RAW" --size "$SIZE" --zero-percent 30
[ -f "$SNAP" ] || $SL save --raw "$RAW:pc.ram" -o "$SNAP"
if [ "$BACKEND" = hugetlbfs ]; then
    bash scripts/hugetlb-setup.sh $(( ($(stat -c %s "$RAW") >> 21) + 16 )) 2M >/dev/null
fi
cat "$SNAP" "$RAW" > /dev/null # warm figures: both files in the page cache
R() { $SL restore "$1" --backend "$BACKEND" --json "${@:2}"; }
R "$SNAP" --touch-threads 0 > /dev/null # warm-up run, not reported
OUT="$DIR/prefetch-results.txt"
HOT="$DIR/snap-hot-$SIZE.sl"
# Recording: faults only, so every page the workload touches is recorded.
R "$SNAP" --threads 0 --touch-threads 1 --workload "$WORKLOAD" --record "$DIR/hot.bin" > /dev/null
$SL save --raw "$RAW:pc.ram" --hot "$DIR/hot.bin" -o "$HOT"
cat "$HOT" > /dev/null
{
    # Repetitions interleave every configuration, so that the host's noise
    # falls on all of them alike; the table shows medians.
    for rep in $(seq "$REPS"); do
        for t in $(printf '%s\n' 1 2 "$ALL" | sort -nu); do
            echo "fill $t $(R "$SNAP" --threads "$t" --touch-threads 0 --compare-eager --eager-no-checksum --eager-threads "$ALL")"
        done
        echo "lat idle $(R "$SNAP" --threads 0 --touch-threads 1 --access seq)"
        echo "lat busy $(R "$SNAP" --threads "$ALL" --touch-threads 1 --access random)"
        echo "hot without $(R "$SNAP" --threads 1 --touch-threads 1 --workload "$WORKLOAD")"
        echo "hot with $(R "$HOT" --threads 1 --touch-threads 1 --workload "$WORKLOAD")"
    done
} > "$OUT"

python3 - "$OUT" "$SIZE" "$BACKEND" "$ALL" "$WORKLOAD" "$REPS" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    a, b, js = line.split(" ", 2)
    runs.setdefault((a, b), []).append(json.loads(js))
# Each field: the median over the repetitions.
rows = {k: {f: statistics.median(r[f] for r in v) for f in v[0] if isinstance(v[0][f], (int, float))
            and not isinstance(v[0][f], bool)} for k, v in runs.items()}
size, be, allt, wl, reps = sys.argv[2:7]
print(f"snapload prefetch benchmark: {size} snapshot, {be}, {allt} CPUs, warm page cache, "
      f"one run, medians of {reps}\n")
print("background completion (nobody touching) against an eager pread load with", allt, "threads")
print(f"  {'loaders':>8} {'complete':>10} {'eager':>10} {'eager/complete':>15}")
for t in sorted({"1", "2", allt}, key=int):
    r = rows[("fill", t)]
    print(f"  {t:>8} {r['time_to_complete_ms']:8.0f}ms {r['eager_ms']:8.0f}ms "
          f"{r['eager_ms'] / r['time_to_complete_ms']:14.2f}x")
idle, busy = rows[("lat", "idle")], rows[("lat", "busy")]
print("\nfault service latency          p50        p99")
print(f"  loaders idle       {idle['fault_p50_us']:9.1f}us {idle['fault_p99_us']:9.1f}us")
print(f"  {allt} loaders busy    {busy['fault_p50_us']:9.1f}us {busy['fault_p99_us']:9.1f}us")
w, h = rows[("hot", "without")], rows[("hot", "with")]
print(f"\nhot-page list, workload of {wl} random pages (1 touch thread, 1 loader)")
print(f"  {'':14} {'faults':>8} {'workload':>10}")
print(f"  {'without list':14} {w['faults']:8.0f} {w['workload_ms']:8.1f}ms")
print(f"  {'with list':14} {h['faults']:8.0f} {h['workload_ms']:8.1f}ms   "
      f"({h['hot_pages']:.0f} hot units; {100 * (1 - h['faults'] / max(w['faults'], 1)):.0f}% fewer faults, "
      f"{w['workload_ms'] / h['workload_ms']:.2f}x sooner)")
PY
