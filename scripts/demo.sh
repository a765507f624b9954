#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The main job: installs what is missing, builds, makes a demo snapshot of a
# few GiB (synthetic guest RAM, 30 % zero pages), restores it lazily into
# anonymous memory while two threads touch random pages, verifies every
# byte, and times an eager load of the same file in the same run.
#   SIZE=4G (default)  DIR=/var/tmp/snapload-demo (default)
#   BACKEND=anon (default) | shmem | hugetlbfs (2 MiB pages, reserved here)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${SIZE:-4G}"
DIR="${DIR:-/var/tmp/snapload-demo}"
BACKEND="${BACKEND:-anon}"

bash scripts/install-deps.sh >/dev/null
SL=./build/snapload
mkdir -p "$DIR"
# A snapshot kept from an earlier run in an older format is made again.
if [ -f "$DIR/snap-$SIZE.sl" ] && ! $SL inspect --quick "$DIR/snap-$SIZE.sl" >/dev/null 2>&1; then
    echo "== $DIR/snap-$SIZE.sl does not open (an older format?): making it again"
    rm -f "$DIR/snap-$SIZE.sl"
fi
if [ ! -f "$DIR/snap-$SIZE.sl" ]; then
    echo "== making a $SIZE raw RAM image and its snapshot in $DIR"
    $SL synth -o "$DIR/ram-$SIZE.img" --size "$SIZE" --zero-percent 30
    $SL save --raw "$DIR/ram-$SIZE.img:pc.ram" -o "$DIR/snap-$SIZE.sl"
    rm -f "$DIR/ram-$SIZE.img"
fi
echo "== snapshot"
$SL inspect --quick "$DIR/snap-$SIZE.sl"
echo
if [ "$BACKEND" = hugetlbfs ]; then
    bytes=$(stat -c %s "$DIR/snap-$SIZE.sl")
    # lazy and eager memory exist one after the other: one block's worth
    bash scripts/hugetlb-setup.sh $(( (bytes >> 21) + 8 )) 2M
fi
echo "== lazy restore ($BACKEND) against an eager load of the same file, same run"
$SL restore "$DIR/snap-$SIZE.sl" --backend "$BACKEND" --threads 1 --touch-threads 2 \
    --access random --verify --compare-eager
