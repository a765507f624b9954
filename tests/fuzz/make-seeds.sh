#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Makes the seed corpora of the fuzz harnesses at run time, with the
# project's own writers, so that they follow the formats as they change:
# small snapshots from `snapload synth` and `snapload save` (a few blocks,
# mostly zero pages, 4 KiB and 2 MiB pages, a block past one 8192-page
# metadata segment, node hints, device-state and hot-page sections, and a
# child of the parent fuzz-reader keeps: tests/fuzz/chain-seed.h),
# turned into fuzz-reader inputs by `fuzz-seeds encode`, QEMU mapped-ram
# streams from the unit tests' generator by `fuzz-seeds qemu`, and one
# packet per message type from sl_msg_encode() by `fuzz-seeds protocol`,
# and sidecar indexes of fuzz-index's fixed stream by `fuzz-seeds index`.
#
# usage: tests/fuzz/make-seeds.sh BUILD_DIR OUT_DIR
#   writes OUT_DIR/fuzz-reader/*, OUT_DIR/fuzz-qemu/*, OUT_DIR/fuzz-protocol/* and
#   OUT_DIR/fuzz-index/*
set -euo pipefail
build=${1:?usage: make-seeds.sh BUILD_DIR OUT_DIR}
out=${2:?usage: make-seeds.sh BUILD_DIR OUT_DIR}
snapload=$build/snapload
seeds=$build/tests/fuzz/fuzz-seeds
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The writers are built with ASan here too; their leaks are the unit
# suites' business (build-asan), not a reason to fuzz without seeds.
export ASAN_OPTIONS=detect_leaks=0

# raw FILE BYTES PAGE_SIZE PAGE...: a zero image with a short text on each PAGE.
raw() {
    local f=$1 size=$2 psize=$3 p
    shift 3
    truncate -s "$size" "$f"
    for p in "$@"; do
        printf 'snapload fuzz seed, page %d' "$p" |
            dd of="$f" bs=1 seek=$((p * psize)) conv=notrunc status=none
    done
}

# hot FILE BLOCK:PAGE...: a hot-page list (docs/format.md, section type 2).
hot() {
    local f=$1
    shift
    python3 -c 'import struct, sys
sys.stdout.buffer.write(b"".join(struct.pack("<IIQ", int(b), 0, int(p))
                                 for b, p in (a.split(":") for a in sys.argv[1:])))' "$@" >"$f"
}

reader_seeds() {
    local d=$tmp
    printf 'device state: cpu regs, timers, virtio queues\n%.0s' {1..8} >"$d/dev"
    raw "$d/a" $((16 * 4096)) 4096 0 3 15
    hot "$d/hot1" 0:0 0:3 0:15
    "$snapload" save --raw "$d/a:pc.ram" --device-state "$d/dev" --hot "$d/hot1" -o "$d/one.sl"

    "$snapload" synth -o "$d/b" --size 16K --zero-percent 0 --seed 7 >/dev/null
    raw "$d/c" $((70 * 4096)) 4096 1 69
    hot "$d/hot2" 1:69 0:2 1:1
    "$snapload" save --raw "$d/b:pc.ram" --raw "$d/c:vga.vram" --node vga.vram=1 \
        --device-state "$d/dev" --hot "$d/hot2" -o "$d/two.sl"

    raw "$d/h" $((4 << 20)) $((2 << 20)) 1
    "$snapload" save --page-size 2M --raw "$d/h:pc.ram" -o "$d/huge.sl"

    raw "$d/s" $((8200 * 4096)) 4096 0 8191 8192 8199
    "$snapload" save --raw "$d/s:pc.ram" --device-state "$d/dev" -o "$d/segments.sl"

    raw "$d/z" 4096 4096
    raw "$d/r" 8192 4096 1
    raw "$d/m" $((64 * 4096)) 4096 0 63
    "$snapload" save --raw "$d/z:zero" --raw "$d/r:rom" --raw "$d/m:ram" --node ram=0 \
        -o "$d/three.sl"

    # An incremental snapshot: its parent is the one fuzz-reader keeps (chain-seed.h).
    "$seeds" chain "$d/chain.sl"

    mkdir -p "$out/fuzz-reader"
    for f in "$d"/*.sl; do
        "$seeds" encode "$f" "$out/fuzz-reader/$(basename "$f" .sl)"
    done
}

reader_seeds >/dev/null
"$seeds" qemu "$out/fuzz-qemu"
"$seeds" protocol "$out/fuzz-protocol"
"$seeds" index "$out/fuzz-index"
