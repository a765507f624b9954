#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs unit test programs inside a QEMU guest (TCG, -cpu max) booted from a
# Debian kernel, for what this host cannot give them: 1 GiB hugepages on a
# CPU without them (pdpe1gb: TCG emulates it), or another kernel than the
# host's (Debian 12's stock 6.1, a backports 6.12).  By default it runs the
# hugetlbfs-1G cases of every suite that has them, with two 1 GiB pages, as
# CI reserves on a host that has them (scripts/test.sh).  Slow (TCG): about
# an hour for the default set on 2 cores; not part of scripts/test.sh.
#
#   scripts/vm-test.sh [--kernel VMLINUZ] [--build DIR] [--suites a,b,...]
#                      [--filter GLOB] [--require CAPS] [--pages-1G N]
#                      [--mem SIZE] [--log FILE] [--timeout SECS]
#
# --kernel: default the newest /boot/vmlinuz-*-cloud-amd64 (any x86-64
#   kernel with hugetlbfs, userfaultfd, tmpfs and the 8250 console built in;
#   a backports one without installing it: apt-get download
#   linux-image-6.12.N+deb12-cloud-amd64 && dpkg -x THAT.deb DIR).
# --filter: SL_TEST_FILTER of each program (default '*1G*'; '*' for all).
# --require: SNAPLOAD_REQUIRE inside (default uffd,hugepages-1G): a case
#   skipped for one of them fails.
# --timeout: each test program is ended after SECS (default 1800), so that
#   one that hangs (a kernel without a feature it waits on) is reported as
#   exit status 143 and the next suites still run.
# The guest's console goes to --log (default /var/tmp/snapload-vm-test.log).
# Prints each failure with its output, then "N passed, N failed, N skipped";
# exits 1 if a case failed, a program failed or the guest never finished.
set -euo pipefail
cd "$(dirname "$0")/.."

kernel="" build=build suites=contract,peers,reset,restore,track,verify filter='*1G*'
require=uffd,hugepages-1G pages=2 mem="" log="" timeout=1800
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kernel="${2:?}"; shift ;;
        --build) build="${2:?}"; shift ;;
        --suites) suites="${2:?}"; shift ;;
        --filter) filter="${2:?}"; shift ;;
        --require) require="${2?}"; shift ;;
        --pages-1G) pages="${2:?}"; shift ;;
        --mem) mem="${2:?}"; shift ;;
        --log) log="${2:?}"; shift ;;
        --timeout) timeout="${2:?}"; shift ;;
        *) echo "usage: $0 [--kernel VMLINUZ] [--build DIR] [--suites a,b] [--filter GLOB]" \
                "[--require CAPS] [--pages-1G N] [--mem SIZE] [--log FILE] [--timeout SECS]" >&2; exit 2 ;;
    esac
    shift
done
[[ "$pages" =~ ^[0-9]+$ ]] || { echo "vm-test: --pages-1G $pages is not a count" >&2; exit 2; }
[[ "$timeout" =~ ^[0-9]+$ ]] || { echo "vm-test: --timeout $timeout is not seconds" >&2; exit 2; }
# They go on the kernel command line, which splits at spaces.
for v in "$build" "$suites" "$filter" "$require"; do
    [[ "$v" != *[[:space:]]* ]] || { echo "vm-test: '$v' holds a space" >&2; exit 2; }
done
if [ -z "$kernel" ]; then
    kernel=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -1 || true)
    [ -n "$kernel" ] || { echo "vm-test: no /boot/vmlinuz-*-cloud-amd64: apt-get install" \
                               "linux-image-cloud-amd64, or give --kernel" >&2; exit 1; }
fi
build=$(realpath "$build")
case "$build/" in # the VM mounts tmpfs there, over the build the root holds
    /tmp/* | /var/tmp/* | /dev/shm/*)
        echo "vm-test: --build $build lies under /tmp, /var/tmp or /dev/shm, which the VM" \
             "mounts afresh: build elsewhere" >&2; exit 2 ;;
esac
for t in ${suites//,/ }; do
    [ -x "$build/tests/unit/test-$t" ] || { echo "vm-test: no $build/tests/unit/test-$t:" \
                                                 "build first (ninja -C $build)" >&2; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "vm-test: no qemu-system-x86_64" >&2; exit 1; }
# Guest RAM: the 1 GiB pages, 6 GiB of tmpfs for the tests' snapshots, the rest.
mem=${mem:-$((pages + 10))G}
work=$(mktemp -d /var/tmp/snapload-vm-XXXXXX)
trap 'rm -rf "$work"' EXIT
log=${log:-${TMPDIR:-/var/tmp}/snapload-vm-test.log} # kept: the failures point into it
# unix_diag, where the kernel has it as a module: the preload client names a
# socket pair's peer through it (a Debian kernel's own, or one unpacked
# with dpkg -x beside its boot/).
ver=${kernel##*/vmlinuz-}
modules=()
for d in "$(dirname "$kernel")/../lib/modules/$ver" "/lib/modules/$ver"; do
    m="$d/kernel/net/unix/unix_diag.ko"
    if [ -e "$m" ] && [ ${#modules[@]} -eq 0 ]; then modules+=("$m"); fi
done
python3 tests/vm/mkroot.py "$build" "$work/root.cpio" "${modules[@]}"
echo "vm-test: $(basename "$kernel"), $mem, $pages x 1 GiB pages, suites $suites," \
     "filter '$filter'; console in $log"
timeout 4h qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp "$(nproc)" -m "$mem" \
    -kernel "$kernel" -initrd "$work/root.cpio" -nographic -no-reboot \
    -append "console=ttyS0 panic=-1 quiet default_hugepagesz=2M hugepagesz=1G \
hugepages=$pages hugepagesz=2M hugepages=128 sl.build=$build sl.suites=$suites \
sl.filter=$filter sl.require=$require sl.timeout=$timeout sl.tmp=6G sl.shm=2G" </dev/null >"$log" 2>&1 || true

python3 - "$log" <<'PY'
import re, sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
passed = failed = skipped = 0
done, out, ctx = False, [], []
for line in lines:
    if line.startswith("=== "):
        print(line)
        m = re.match(r"=== EXIT (\S+) (\d+)", line)
        if m and m.group(2) != "0":
            out.append("program test-%s exited %s" % m.groups())
        done |= line == "=== DONE"
        ctx = []
        continue
    if re.match(r"ok \d+", line):
        passed += 1
        ctx = []
    elif re.match(r"not ok \d+ # SKIP", line):
        skipped += 1
        print("skipped:", line)
        ctx = []
    elif re.match(r"not ok \d+", line):
        failed += 1
        out.append("\n".join(ctx[-8:] + [line]))
        ctx = []
    else:
        ctx.append(line)
for o in out:
    print("FAILED:", o)
if not done:
    print("FAILED: the guest did not finish (see the console log): last lines:")
    print("\n".join(lines[-15:]))
print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
sys.exit(1 if failed or out or not done else 0)
PY
