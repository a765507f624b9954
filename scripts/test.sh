#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs every snapload test: installs what is missing, builds, and runs the
# meson test suites.  Tests needing a capability this machine has (see
# scripts/capabilities.sh) must not skip: SNAPLOAD_REQUIRE turns such a skip
# into a failure.  Ends with one line "N passed, N failed, N skipped".
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

status=0
meson test -C build --print-errorlogs "$@" || status=$?

# Count TAP results of every test case (meson counts whole executables).
python3 - build/meson-logs/testlog.json <<'PY' || status=1
import json, re, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    out = t.get("stdout") or ""
    cases = [l for l in out.splitlines() if re.match(r"(not )?ok \d+", l)]
    if not cases:  # a non-TAP test counts once
        r = t.get("result")
        passed += r == "OK"; skipped += r == "SKIP"; failed += r not in ("OK", "SKIP")
        continue
    for l in cases:
        if "# SKIP" in l:
            skipped += 1
            print("skipped: %s: %s" % (t["name"], l))
        elif l.startswith("ok"):
            passed += 1
        else:
            failed += 1
print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
sys.exit(1 if failed or passed == 0 else 0)
PY
exit $status
