#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Fuzzes one libFuzzer target for as long as one likes:
#
#   bash scripts/fuzz.sh reader|qemu|protocol|index [SECONDS] [libFuzzer flags...]
#
# reader fuzzes the snapshot reader (tests/fuzz/fuzz-reader.c), qemu the
# reader of QEMU's mapped-ram streams and their device-stream copy
# (tests/fuzz/fuzz-qemu.c), protocol the daemon's message parser
# (tests/fuzz/fuzz-protocol.c), index the sidecar index of a QEMU file
# (tests/fuzz/fuzz-index.c).  SECONDS
# defaults to 30; 0 fuzzes until interrupted.  Builds build-fuzz (clang,
# ASan+UBSan, library instrumented for coverage) when needed, makes the
# seeds afresh (tests/fuzz/make-seeds.sh) and grows a corpus that later
# runs start from.  Under build-fuzz/fuzz/: corpus/TARGET, seeds/TARGET,
# TARGET.log, and artifacts/TARGET/ where an input that crashed, leaked,
# timed out or broke an invariant is kept; its path is printed and the
# script exits 1.  FUZZ_QUIET=1 prints only a summary line (the log holds
# the rest); FUZZ_BUILD=DIR uses another build directory.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: bash scripts/fuzz.sh reader|qemu|protocol|index [SECONDS] [libFuzzer flags...]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
case "$1" in
    reader|fuzz-reader) target=fuzz-reader ;;
    qemu|fuzz-qemu) target=fuzz-qemu ;;
    protocol|fuzz-protocol) target=fuzz-protocol ;;
    index|fuzz-index) target=fuzz-index ;;
    *) usage ;;
esac
seconds=${2:-30}
[[ "$seconds" =~ ^[0-9]+$ ]] || usage
shift $(($# < 2 ? $# : 2))
build=${FUZZ_BUILD:-build-fuzz}
work=$build/fuzz

# The fuzz build: every object instrumented for coverage, the harnesses
# linked with libFuzzer.  A warning of clang's is not a finding here.
setup_build() {
    local log
    log=$(mktemp)
    if [ ! -f "$build/build.ninja" ]; then
        CC=clang meson setup "$build" -Dfuzz=enabled -Dtests=disabled -Dwerror=false \
            -Db_sanitize=address,undefined -Db_lundef=false \
            -Dc_args=-fsanitize=fuzzer-no-link >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; return 1; }
    fi
    ninja -C "$build" >"$log" 2>&1 || { tail -40 "$log" >&2; rm -f "$log"; return 1; }
    rm -f "$log"
}

symbolizer() {
    local s
    for s in llvm-symbolizer llvm-symbolizer-14; do
        command -v "$s" && return 0
    done
    return 0
}

# Prints the failing inputs libFuzzer wrote, each with how to reproduce it.
report_artifacts() {
    local f
    for f in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$work/$target.log"); do
        echo "snapload: $target kept the failing input $(realpath "$f")" >&2
        echo "  reproduce: $build/tests/fuzz/$target $f" >&2
        [ "$target" = fuzz-reader ] &&
            echo "  as a snapshot file: $build/tests/fuzz/fuzz-seeds decode $f OUT.snap" >&2
        [ "$target" = fuzz-qemu ] &&
            echo "  as a stream file: $build/tests/fuzz/fuzz-seeds qemu-decode $f OUT.mig" >&2
        [ "$target" = fuzz-index ] &&
            echo "  as files: $build/tests/fuzz/fuzz-seeds index-stream OUT.mig &&" \
                 "$build/tests/fuzz/fuzz-seeds decode $f OUT.mig.slidx" >&2
    done
    return 0
}

summary() { # status
    local stats
    stats=$(sed -nE 's/^#([0-9]+)[[:space:]]+DONE[[:space:]]+(.*) lim:.*/\1 runs, \2/p' \
            "$work/$target.log" | tail -1)
    [ -n "$stats" ] || stats="stopped after $(sed -n 's/^stat::number_of_executed_units: *//p' \
                                             "$work/$target.log" | tail -1) runs"
    echo "fuzz: $target ${seconds}s: $stats -> $([ "$1" -eq 0 ] && echo ok || echo FAILED)"
}

setup_build
mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
rm -rf "$work/seeds"
bash tests/fuzz/make-seeds.sh "$build" "$work/seeds"
sym=$(symbolizer)
[ -z "$sym" ] || export ASAN_SYMBOLIZER_PATH="$sym"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

status=0
# New inputs go to the corpus (the first directory).  Inputs that failed
# before are run again at the start, so a failure stays one until it is fixed
# (or its file removed).  Ctrl-C ends an open-ended run: not a failure.
run=("$build/tests/fuzz/$target" -max_total_time="$seconds" -timeout=10 -print_final_stats=1
     -interrupted_exitcode=0 -artifact_prefix="$work/artifacts/$target/" "$@"
     "$work/corpus/$target" "$work/seeds/$target" "$work/artifacts/$target")
if [ "${FUZZ_QUIET:-0}" = 1 ]; then
    "${run[@]}" >"$work/$target.log" 2>&1 || status=$?
    [ $status -eq 0 ] || grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' \
        "$work/$target.log" | tail -60 >&2
else
    "${run[@]}" 2>&1 | tee "$work/$target.log" || status=$?
fi
report_artifacts
summary $status
exit $((status != 0))
