#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Benchmark of the restore paths, every figure from the same run:
#  - fault service latency p50/p99 with loaders idle (faults only, one thread
#    touching every page in order) for 4 KiB anon (MISSING + UFFDIO_COPY),
#    4 KiB shmem (MINOR mode + CONTINUE) and 2 MiB hugetlbfs (MINOR mode);
#  - background fill throughput (one loader, nobody touching) against an
#    eager single-thread pread of the same snapshot into the same backend.
#   SIZE=1G (default)  DIR=/var/tmp/snapload-bench (default)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${SIZE:-1G}"
DIR="${DIR:-/var/tmp/snapload-bench}"

bash scripts/install-deps.sh >/dev/null
SL=./build/snapload
mkdir -p "$DIR"
SNAP="$DIR/snap-$SIZE.sl"
if [ ! -f "$SNAP" ]; then
    $SL synth -o "$DIR/ram.img" --size "$SIZE" --zero-percent 30
    $SL save --raw "$DIR/ram.img:pc.ram" -o "$SNAP"
    rm -f "$DIR/ram.img"
fi
bytes=$(stat -c %s "$SNAP")
bash scripts/hugetlb-setup.sh $(( (bytes >> 21) + 16 )) 2M >/dev/null
cat "$SNAP" > /dev/null # warm the page cache: these are warm figures

run() { # backend [hugepage args] -- restore args
    local be=$1; shift
    $SL restore "$SNAP" --backend "$be" "$@" --json
}
{
    for be in anon shmem hugetlbfs; do
        echo "latency $be $(run $be --threads 0 --touch-threads 1 --access seq)"
        echo "fill $be $(run $be --threads 1 --touch-threads 0 --compare-eager --eager-no-checksum)"
    done
} > "$DIR/results.txt"

python3 - "$DIR/results.txt" "$SIZE" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    kind, be, js = line.split(" ", 2)
    rows[(kind, be)] = json.loads(js)
size = sys.argv[2]
names = {"anon": "anon 4K (MISSING, COPY)", "shmem": "shmem 4K (MINOR, CONTINUE)",
         "hugetlbfs": "hugetlbfs 2M (MINOR, CONTINUE)"}
print(f"snapload restore benchmark, {size} snapshot, warm page cache, one run\n")
print(f"{'backend':32} {'fault p50':>10} {'fault p99':>10} {'fill':>10} {'fill MB/s':>10} "
      f"{'eager':>10} {'eager MB/s':>10} {'eager/fill':>10}")
for be in ("anon", "shmem", "hugetlbfs"):
    lat, fill = rows[("latency", be)], rows[("fill", be)]
    ratio = fill["eager_ms"] / fill["time_to_complete_ms"]
    mb = fill["guest_bytes"] / 2**20
    print(f"{names[be]:32} {lat['fault_p50_us']:8.1f}us {lat['fault_p99_us']:8.1f}us "
          f"{fill['time_to_complete_ms']:8.0f}ms {mb / fill['time_to_complete_ms'] * 1e3:10.0f} "
          f"{fill['eager_ms']:8.0f}ms {mb / fill['eager_ms'] * 1e3:10.0f} {ratio:9.2f}x")
print("\nfill: one background loader, nobody touching, until every page is present")
print("(MB/s: guest RAM in place per second, zero pages included);")
print("eager: one thread preads the same file into fresh memory of the same backend")
print("(a plain pread load, no checksum checks; the fill checks every page).")
print("eager/fill > 1 means the lazy fill finished sooner than the eager load.")
PY
