#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs every snapload test: installs what is missing, builds, and runs the
# meson test suites.  Tests needing a capability this machine has (see
# scripts/capabilities.sh) must not skip: SNAPLOAD_REQUIRE turns such a skip
# into a failure.  Then the sanitizer steps: the unit suites again under
# ASan+UBSan (build-asan) and, those that TSan can run, under TSan
# (build-tsan), and a short run of each fuzz target (scripts/fuzz.sh,
# SNAPLOAD_FUZZ_SECONDS each, default 30), summed up in one line
# "sanitizers: ..." and counted apart from the main run; any failure or
# sanitizer report there fails the command too.  SNAPLOAD_SANITIZERS
# picks those steps (default asan,tsan,fuzz; empty: none), and
# SNAPLOAD_TSAN_SUITES the suites run under TSan (default pagemap format).
# Ends with one line "N passed, N failed, N skipped", the main run's.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

# Files our tests and benchmarks put on hugetlbfs and /dev/shm (snapload-*)
# that no process has open or mapped any more are leftovers of a run that
# was killed: each one holds its hugepages until removed.
remove_stale_files() {
    local f held
    # Processes come and go while we look: their errors are not ours.
    held=$( { ls -l /proc/[0-9]*/fd/ 2>/dev/null | sed -n 's/.* -> //p'
              cat /proc/[0-9]*/maps 2>/dev/null | awk '{print $6}'; } || true)
    for f in $(awk '$3 == "hugetlbfs" {print $2}' /proc/mounts) /dev/shm; do
        for f in "$f"/snapload-*; do
            [ -f "$f" ] || continue
            grep -qxF "$f" <<<"$held" && continue
            echo "snapload: removing $f, left by an earlier run" >&2
            rm -f "$f"
        done
    done
}
remove_stale_files
# Hugepages the tests need (as root; the 1 GiB ones only where the kernel
# can find them: their tests are then required, otherwise they skip).
# SNAPLOAD_WITHOUT=kvm,hugepages,hugepages-1G runs as a host without them
# would: QEMU under TCG, that hugepage pool given back and left empty.
without() { [[ ",${SNAPLOAD_WITHOUT:-}," == *",$1,"* ]]; }
reserve() { # count size capability
    if without "$3"; then
        bash scripts/hugetlb-setup.sh --release "$2" >/dev/null 2>&1 || true
        echo "snapload: SNAPLOAD_WITHOUT: $2 hugepages left empty" >&2
    else
        bash scripts/hugetlb-setup.sh "$1" "$2" || echo "snapload: no $2 hugepages here" >&2
    fi
}
if [ "$(id -u)" -eq 0 ]; then
    reserve 256 2M hugepages
    reserve 2 1G hugepages-1G
fi
export SNAPLOAD_WITHOUT="${SNAPLOAD_WITHOUT:-}"
without kvm && echo "snapload: SNAPLOAD_WITHOUT: QEMU runs under TCG" >&2
export SNAPLOAD_REQUIRE="${SNAPLOAD_REQUIRE:-$(bash scripts/capabilities.sh)}"
echo "snapload: capabilities required of the tests: ${SNAPLOAD_REQUIRE:-none}"

# Counts TAP results of every test case in meson log $1 (meson counts whole
# executables): prints each skip, then "N passed, N failed, N skipped";
# fails if a case failed or none passed.  Cases a program announced (its
# TAP plans, "1..N", one per group) but never reported, because it crashed
# or was killed first, count as failures, one each.  A program that failed
# although all its cases passed (a sanitizer report at exit, say) counts as
# one more failure.  Each failure is printed after the skips, with the lines
# its test printed just before it, so that the tail of a CI log names it.
count_cases() { # testlog.json
    python3 - "$1" <<'PY'
import json, re, sys
passed = failed = skipped = 0
failures = []  # printed after the skips, so that a log's tail shows them
sys.stdout.reconfigure(errors="backslashreplace")  # any locale prints any output
RESULT = re.compile(r"(not )?ok \d+|1\.\.\d+")

def context(lines, err, at):
    """What a failure printed: its own stdout lines (since the previous
    result, and cmocka's diagnostics after its TAP line) and the ERROR
    lines, else the tail, of the program's stderr (not split by case)."""
    start = at
    while start > 0 and not RESULT.match(lines[start - 1]):
        start -= 1
    end = at + 1
    while end < len(lines) and not RESULT.match(lines[end]):
        end += 1
    own = [l for l in lines[start:at] + lines[at + 1:end] if l.strip()][-15:]
    errs = [l for l in err.splitlines() if l.strip()]
    errs = [l for l in errs if "ERROR" in l][-5:] or errs[-8:]
    return "".join("    | %s\n" % l for l in own + errs)

for line in open(sys.argv[1]):
    t = json.loads(line)
    out = t.get("stdout") or ""
    err = t.get("stderr") or ""
    lines = out.splitlines()
    cases = [l for l in lines if re.match(r"(not )?ok \d+", l)]
    planned = sum(int(m.group(1)) for m in re.finditer(r"^1\.\.(\d+)", out, re.M))
    if planned > len(cases):
        failed += planned - len(cases)
        failures.append("failed: %s: %d of its %d cases never ran (%s)\n%s" %
                        (t["name"], planned - len(cases), planned, t.get("result"),
                         context(lines, err, len(lines))))
    if not cases and not planned:  # a non-TAP test counts once
        r = t.get("result")
        passed += r == "OK"; skipped += r == "SKIP"; failed += r not in ("OK", "SKIP")
        if r not in ("OK", "SKIP"):
            failures.append("failed: %s (%s)\n%s" % (t["name"], r, context(lines, err, len(lines))))
        continue
    for i, l in enumerate(lines):
        if not re.match(r"(not )?ok \d+", l):
            continue
        if "# SKIP" in l:
            skipped += 1
            print("skipped: %s: %s" % (t["name"], l))
        elif l.startswith("ok"):
            passed += 1
        else:
            failed += 1
            failures.append("failed: %s: %s\n%s" % (t["name"], l, context(lines, err, i)))
    if t.get("result") not in ("OK", "SKIP") and planned <= len(cases) and \
            not any(l.startswith("not ok") for l in cases):
        failed += 1
        failures.append("failed: %s: the program failed after its cases (%s)\n%s" %
                        (t["name"], t.get("result"), context(lines, err, len(lines))))
sys.stdout.write("".join(failures))
print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
sys.exit(1 if failed or passed == 0 else 0)
PY
}

sanitizer_wanted() { [[ ",${SNAPLOAD_SANITIZERS-asan,tsan,fuzz}," == *",$1,"* ]]; }

# Sets up (once) and builds a sanitizer build $1 with meson options $2...
# Warnings do not fail it: the main build holds the code to those.
sanitizer_build() { # dir option...
    local dir=$1 log rc=0
    shift
    log=$(mktemp)
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" -Dtests=enabled -Dwerror=false -Db_lundef=false "$@" >"$log" 2>&1 || rc=1
    fi
    [ $rc -ne 0 ] || ninja -C "$dir" >>"$log" 2>&1 || rc=1
    [ $rc -eq 0 ] || tail -40 "$log" >&2
    rm -f "$log"
    return $rc
}

# Runs unit suites $2... of build $1 (quietly but for failures) and prints
# their counts as count_cases does.
sanitizer_suites() { # dir suite...
    local dir=$1 rc=0
    shift
    # Sanitizers slow the suites 2-3x: their time limits grow to match.
    meson test -C "$dir" -q --no-rebuild --timeout-multiplier 2 --print-errorlogs "$@" >&2 || rc=1
    count_cases "$dir/meson-logs/testlog.json" || rc=1
    return $rc
}

# ASan+UBSan: every unit suite but handoff (it preloads our client into a
# CLI process, and an ASan library cannot be preloaded that way).  Any
# report aborts the test program.  Slow unwinding on malloc gives leaks
# whole stacks through GLib, for about 10 s in all.
run_asan() {
    sanitizer_build build-asan -Db_sanitize=address,undefined || return 1
    ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:fast_unwind_on_malloc=0 \
    UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1 \
        sanitizer_suites build-asan format qemu-format qemu-split chain pagemap restore contract numa daemon peers \
            track reset verify space qmp
}

# TSan: the suites it can run, and fast.  numa and peers pass too but take
# 80-90 s each.  GLib's GMutex and GCond wait on futexes TSan does not
# see, so what they order looks racy to it: daemon and restore (views_lock,
# the tests' own gates) report such races, and restore's reads of poisoned
# pages (SIGBUS, siglongjmp) end the program under TSan.
run_tsan() {
    sanitizer_build build-tsan -Db_sanitize=thread || return 1
    # shellcheck disable=SC2086 # a list of suite names
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        sanitizer_suites build-tsan ${SNAPLOAD_TSAN_SUITES:-pagemap format}
}

# A short run of each fuzz target; its last line sums them up.
run_fuzz() {
    local t line ok rc=0 results=()
    for t in reader qemu protocol index; do
        ok=ok
        line=$(FUZZ_QUIET=1 bash scripts/fuzz.sh "$t" "${SNAPLOAD_FUZZ_SECONDS:-30}") ||
            { ok=FAILED; rc=1; }
        echo "${line#fuzz: }"
        results+=("$t $ok")
    done
    line=$(printf '%s, ' "${results[@]}")
    echo "${line%, }"
    return $rc
}

# Runs the sanitizer steps wanted, each line of theirs labelled, then the
# line "sanitizers: ..." with each step's counts or result.
run_sanitizers() {
    local step out last rc=0 summary=()
    for step in asan tsan fuzz; do
        sanitizer_wanted "$step" || continue
        if out=$("run_$step"); then
            last=$(tail -1 <<<"$out")
        else
            rc=1
            last="FAILED ($(tail -1 <<<"$out" | grep . || echo 'see above'))"
        fi
        sed '$d' <<<"$out" | sed "s/^/$step: /"
        summary+=("$step: $last")
    done
    [ ${#summary[@]} -eq 0 ] || (IFS=';'; echo "sanitizers:${summary[*]/#/ }")
    return $rc
}

status=0
meson test -C build --print-errorlogs "$@" || status=$?
counts=$(count_cases build/meson-logs/testlog.json) || status=1
run_sanitizers || status=1
echo "$counts"
exit $status
