#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Prints, comma-separated, the capabilities this machine has that tests may
# need: uffd (userfaultfd usable by us), uffd-move (and UFFDIO_MOVE, kernel
# 6.8+), uffd-poison (and UFFDIO_POISON, 6.6+), uffd-wp-async (asynchronous
# write-protection and PAGEMAP_SCAN, 6.7+), kvm (/dev/kvm usable), thp
# (MADV_COLLAPSE works), hugepages (enough free, unreserved 2 MiB
# hugepages and a hugetlbfs mount of that size), hugepages-1G (the same for 1 GiB pages), mount (a small tmpfs can
# be mounted), qemu-7.2 (Debian 12's QEMU 7.2 unpacked by
# scripts/qemu-7.2.sh), root, pid-namespace, page-cache-drop, direct-io and
# cachestat (below).  scripts/test.sh requires exactly these, so a test that
# skips for a capability the machine has fails instead.
caps=()
if [ -r /dev/userfaultfd ] && [ -w /dev/userfaultfd ]; then
    caps+=(uffd)
elif [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" = 1 ] || [ "$(id -u)" -eq 0 ]; then
    caps+=(uffd)
fi
# UFFDIO_MOVE (the loaders' moving of whole chunks) came with kernel 6.8.
kver=$(uname -r | sed -E 's/^([0-9]+)\.([0-9]+).*/\1 \2/')
if [[ " ${caps[*]} " == *" uffd "* ]] && read -r kmaj kmin <<< "$kver" &&
   { [ "$kmaj" -gt 6 ] || { [ "$kmaj" -eq 6 ] && [ "$kmin" -ge 8 ]; }; }; then
    caps+=(uffd-move)
fi
# UFFDIO_POISON came with kernel 6.6: with it a restore also watches its
# memory being unmapped or moved (UFFD_EVENT_UNMAP/REMAP, migration/lost.c).
if [[ " ${caps[*]} " == *" uffd "* ]] && read -r kmaj kmin <<< "$kver" &&
   { [ "$kmaj" -gt 6 ] || { [ "$kmaj" -eq 6 ] && [ "$kmin" -ge 6 ]; }; }; then
    caps+=(uffd-poison)
fi
# Asynchronous write-protection and PAGEMAP_SCAN (written-page tracking)
# came with kernel 6.7.
if [[ " ${caps[*]} " == *" uffd "* ]] && read -r kmaj kmin <<< "$kver" &&
   { [ "$kmaj" -gt 6 ] || { [ "$kmaj" -eq 6 ] && [ "$kmin" -ge 7 ]; }; }; then
    caps+=(uffd-wp-async)
fi
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    caps+=(kvm)
fi
# A hugepage capability is there when a mount of that page size exists and
# the pool has, free and not reserved by existing mappings, at least as
# many pages as the largest test takes (test-numa: 128 x 2 MiB; the 1 GiB
# cases: 2 pages).
has_pages() { # kB min
    local d="/sys/kernel/mm/hugepages/hugepages-$1kB" f r
    [ -r "$d/free_hugepages" ] || return 1
    f=$(cat "$d/free_hugepages"); r=$(cat "$d/resv_hugepages" 2>/dev/null || echo 0)
    [ $((f - r)) -ge "$2" ] || return 1
    python3 - "$1" <<'PY'
import re, sys
default = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("Hugepagesize:"))
units = {"K": 1, "M": 1024, "G": 1 << 20}
for line in open("/proc/mounts"):
    _, _, fstype, opts = line.split()[:4]
    if fstype != "hugetlbfs":
        continue
    m = re.search(r"pagesize=(\d+)([KMG])", opts)
    if (int(m.group(1)) * units[m.group(2)] if m else default) == int(sys.argv[1]):
        sys.exit(0)
sys.exit(1)
PY
}
has_pages 2048 128 && caps+=(hugepages)
has_pages 1048576 2 && caps+=(hugepages-1G)
# thp: process_madvise(MADV_COLLAPSE) makes a transparent hugepage of a
# 2 MiB range of another process (kernel 6.1+ with THP, CAP_SYS_NICE):
# what the daemon does to a VMM's anonymous RAM.
if python3 - <<'PY' 2>/dev/null
import ctypes, mmap, os, struct, sys
thp = 2 << 20
r1, w1 = os.pipe()  # child -> parent: the address
r2, w2 = os.pipe()  # parent -> child: done (closed)
pid = os.fork()
if pid == 0:
    os.close(r1)
    os.close(w2)
    m = mmap.mmap(-1, 2 * thp, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    off = (thp - base % thp) % thp
    m.madvise(mmap.MADV_NOHUGEPAGE, off, thp)
    m[off:off + thp] = b"\1" * thp
    m.madvise(mmap.MADV_HUGEPAGE, off, thp)
    os.write(w1, struct.pack("Q", base + off))
    os.read(r2, 1)
    os._exit(0)
os.close(w1)
os.close(r2)
addr = struct.unpack("Q", os.read(r1, 8))[0]
libc = ctypes.CDLL(None, use_errno=True)
class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
iov = Iovec(addr, thp)
fd = os.pidfd_open(pid)
# process_madvise(pidfd, iov, 1, MADV_COLLAPSE, 0): the bytes advised, or -1
ret = libc.syscall(ctypes.c_long(440), ctypes.c_int(fd), ctypes.byref(iov), ctypes.c_size_t(1),
                   ctypes.c_int(25), ctypes.c_uint(0))
os.close(w2)
os.waitpid(pid, 0)
sys.exit(0 if ret == thp else 1)
PY
then
    caps+=(thp)
fi
# qemu-7.2: Debian 12's QEMU 7.2 where scripts/qemu-7.2.sh unpacks it (the
# meson option qemu72_dir), for the qtest suites ending in -7.2.
if /var/lib/snapload/qemu-7.2/usr/bin/qemu-system-x86_64 --version 2>/dev/null |
   grep -q "version 7\.2\."; then
    caps+=(qemu-7.2)
fi
# mount: a test may mount a small tmpfs of its own (test-space: guest RAM
# on a tmpfs that runs out of room), which needs CAP_SYS_ADMIN, some in a
# mount namespace of their own (test-daemon), whose / must be made private:
# not possible in a chroot whose / is no mount point (found on a fresh
# debootstrap root).
probe=$(mktemp -d)
if mount -t tmpfs -o size=64k snapload-probe "$probe" 2>/dev/null; then
    umount "$probe" && unshare -m -- true 2>/dev/null && caps+=(mount)
fi
rmdir "$probe"
# root: tests that act as another uid.  pid-namespace: `unshare --pid`
# works (a consumer whose pid the VMM cannot see).
[ "$(id -u)" -eq 0 ] && caps+=(root)
unshare --pid --fork --kill-child -- true 2>/dev/null && caps+=(pid-namespace)
# page-cache-drop: the test directory (TMPDIR, else /tmp) is on a file
# system whose cached pages can be dropped (not tmpfs/ramfs: a cold snapshot
# there is never cold).  direct-io: that file system takes O_DIRECT and
# an io_uring can be set up (the build links liburing, a required package here).
tdir=${TMPDIR:-/tmp}
case "$(stat -f -c %T "$tdir" 2>/dev/null)" in
    tmpfs|ramfs|"") ;;
    *) caps+=(page-cache-drop) ;;
esac
if python3 - "$tdir" <<'PY' 2>/dev/null
import os, sys, tempfile
fd, path = tempfile.mkstemp(dir=sys.argv[1])
os.close(fd)
try:
    os.close(os.open(path, os.O_RDWR | os.O_DIRECT))
finally:
    os.unlink(path)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
ring = libc.syscall(ctypes.c_long(425), ctypes.c_uint(1), params)  # io_uring_setup(1, &p)
if ring < 0:
    sys.exit(1)  # disabled (sysctl), filtered (seccomp) or absent
os.close(ring)
PY
then
    caps+=(direct-io)
fi
# cachestat: cachestat(2) (Linux 6.5) answers for a file of the test
# directory (a test checks that a saved snapshot has no page left dirty).
if python3 - "$tdir" <<'PY' 2>/dev/null
import ctypes, os, sys, tempfile
fd, path = tempfile.mkstemp(dir=sys.argv[1])
try:
    libc = ctypes.CDLL(None, use_errno=True)
    rng = (ctypes.c_uint64 * 2)(0, 0)
    out = (ctypes.c_uint64 * 5)()
    ok = libc.syscall(ctypes.c_long(451), ctypes.c_uint(fd), rng, out, ctypes.c_uint(0)) == 0
finally:
    os.close(fd)
    os.unlink(path)
sys.exit(0 if ok else 1)
PY
then
    caps+=(cachestat)
fi
# SNAPLOAD_WITHOUT=cap,... : the run pretends the host lacks those (the
# tests honour it too), so a host that has everything can try the others' paths.
kept=()
for c in "${caps[@]}"; do
    [[ ",${SNAPLOAD_WITHOUT:-}," == *",$c,"* ]] || kept+=("$c")
done
(IFS=,; echo "${kept[*]}")
