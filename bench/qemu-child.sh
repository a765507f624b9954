#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# What `qemu-save --parent` costs with and without the restore's list of
# written pages, on one stock QEMU guest (the walker, RAM on /dev/shm, TCG
# or KVM): the guest is booted and saved as the parent, then, REPS times
# each way, restored from it (`qemu-restore --paused`, every page in place,
# with and without --track-writes), run for RUN_MS (0: not at all, so it
# wrote nothing), and saved as a child of the parent with --quit.  Prints
# each save's time and the medians' ratio (a baseline of the same run).
#
#   bash bench/qemu-child.sh [--build DIR] [--size-mb 2048] [--reps 3] [--run-ms 0]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build MB=2048 REPS=3 RUN_MS=0
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --size-mb) MB=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --run-ms) RUN_MS=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--size-mb N] [--reps N] [--run-ms MS]" >&2; exit 2 ;;
    esac
done
SL=$PWD/$BUILD/snapload
export SNAPLOAD_PRELOAD_LIB=$PWD/$BUILD/libsnapload-preload.so
DIR=$(mktemp -d /tmp/snapload-qemu-child-XXXXXX)
MEM=/dev/shm/snapload-qemu-child-$$
trap 'rm -rf "$DIR"; rm -f "$MEM"' EXIT
cp "$BUILD/tests/qtest/guest/walker.img" "$DIR/walker.img"
ACCEL=tcg; [ -w /dev/kvm ] && ACCEL=kvm

args() { # $1: run name
    echo qemu-system-x86_64 -accel $ACCEL -machine pc,memory-backend=ram0 -m "$MB" \
        -display none -nodefaults -no-user-config -global apic-common.vapic=false \
        -object "memory-backend-file,id=ram0,size=${MB}M,mem-path=$MEM,share=on" \
        -drive "format=raw,file=$DIR/walker.img,if=ide,file.locking=off" \
        -serial "file:$DIR/serial-$1" -qmp "unix:$DIR/qmp-$1,server=on,wait=off"
}

wait_for() { # $1: file, $2: text; bounded
    for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "$1 never said '$2'" >&2; return 1
}

ms() { echo $(( $(date +%s%N) / 1000000 )); }

# The parent: the walker booted and running its passes, saved.
$(args boot) & QEMU=$!
wait_for "$DIR/serial-boot" "PASS 1 "
"$SL" qemu-save --qmp "$DIR/qmp-boot" -o "$DIR/parent.sl" --quit 2>/dev/null
wait $QEMU || true

declare -A TIMES
for k in $(seq "$REPS"); do
    for mode in all listed; do
        extra=(); [ $mode = listed ] && extra=(--track-writes)
        name=$mode-$k
        "$SL" qemu-restore "$DIR/parent.sl" --paused "${extra[@]}" -- $(args "$name") \
            > "$DIR/$name.out" 2> "$DIR/$name.err" &
        R=$!
        wait_for "$DIR/$name.out" "every page in place"
        if [ "$RUN_MS" -gt 0 ]; then
            python3 -c "import sys; sys.path.insert(0, 'bench'); import qmp, time
q = qmp.QMP('$DIR/qmp-$name'); q.cmd('cont'); time.sleep($RUN_MS / 1000)"
        fi
        t0=$(ms)
        "$SL" qemu-save --qmp "$DIR/qmp-$name" -o "$DIR/child.sl" --parent "$DIR/parent.sl" \
            --quit 2> "$DIR/save.err"
        t=$(( $(ms) - t0 ))
        wait $R || true
        TIMES[$mode]+="$t "
        echo "$mode, run $k: qemu-save --parent $t ms ($(grep -o 'reading [^:]*' "$DIR/save.err" |
            head -1); $(grep -o '[0-9]* of [0-9]* pages differ' "$DIR/save.err"))"
        rm -f "$DIR/child.sl"
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ALL=$(echo "${TIMES[all]}" | median)
LISTED=$(echo "${TIMES[listed]}" | median)
echo "qemu-save --parent of a ${MB} MiB guest ($ACCEL, run ${RUN_MS} ms after its restore):" \
     "reading all RAM ${ALL} ms, only the listed pages ${LISTED} ms:" \
     "$(awk -v a="$ALL" -v b="$LISTED" 'BEGIN {printf "%.1fx", a / b}') (medians of $REPS)"
