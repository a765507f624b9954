#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The main job: installs what is missing and builds, then boots a real Linux
# guest in QEMU (Debian's cloud kernel and the checking workload of
# tests/qtest/linux, docs/linux-guest.md), saves it with QEMU's own
# `migrate file:` + mapped-ram, and restores that file twice in one run:
# lazily with `snapload qemu-restore` (every page checked against a
# checksum from a sidecar index) and eagerly with QEMU's own load (plain and
# with 16 multifd threads; the faster is the one compared).  For each it
# prints when the guest first answered and when it had checked every
# page of its working set once more (bench/linux.py does the work), and
# whether the guest found any wrong byte (ERR) or a page was placed twice.
#   GUEST_MEM=1G (default)  guest RAM
#   BACKEND=shmem (default) | anon | hugetlbfs-2M   guest RAM of the Linux guest
#   DIR=/var/tmp/snapload-demo (default)  files and results (DIR/linux)
#   BUILD=build (default)  where snapload is built; SKIP_DEPS=1 skips
#   scripts/install-deps.sh (which installs and builds ./build) when BUILD is
#   already built
#
# `bash scripts/demo.sh --synthetic` (or DEMO=synthetic) runs the former demo
# instead: a synthetic snapshot of a few GiB (30 % zero pages) restored
# lazily into memory of this process while two threads touch random pages,
# every byte verified, against an eager load of the same file:
#   SIZE=4G (default)  BACKEND=anon (default) | shmem | hugetlbfs (2 MiB pages)
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO="${DEMO:-linux}"
for arg in "$@"; do
    case "$arg" in
        --synthetic) DEMO=synthetic ;;
        --linux) DEMO=linux ;;
        -h|--help) sed -n '3,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument $arg (--synthetic, --linux)" >&2; exit 2 ;;
    esac
done
DIR="${DIR:-/var/tmp/snapload-demo}"

BUILD="${BUILD:-build}"
[ -n "${SKIP_DEPS:-}" ] || bash scripts/install-deps.sh >/dev/null
SL="$BUILD/snapload"
mkdir -p "$DIR"

if [ "$DEMO" = linux ]; then
    GUEST_MEM="${GUEST_MEM:-1G}"
    BACKEND="${BACKEND:-shmem}"
    echo "== a $GUEST_MEM Linux guest ($BACKEND RAM): boot, save with QEMU's migrate file: +"
    echo "   mapped-ram, then restore it lazily (snapload) and eagerly (QEMU), same run"
    echo "   (under TCG unless hardware KVM is loaded: the boot takes a minute or two)"
    exec python3 bench/linux.py --mem "$GUEST_MEM" --backend "$BACKEND" --reps 1 \
        --modes lazy,eager,eager-mfd --lazy-index plain --after 2 --brief \
        --dir "$DIR/linux" --out "$DIR/linux" --build "$BUILD"
fi

if [ "$DEMO" != synthetic ]; then
    echo "demo.sh: DEMO=$DEMO: want linux or synthetic" >&2
    exit 2
fi
SIZE="${SIZE:-4G}"
BACKEND="${BACKEND:-anon}"
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
