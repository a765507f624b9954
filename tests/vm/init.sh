#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the test VM (scripts/vm-test.sh, tests/vm/mkroot.py): mounts what
# the unit tests use (tmpfs on /tmp and /dev/shm, a hugetlbfs mount of each
# page size the kernel offers), runs the test programs named on the kernel
# command line (sl.suites=a,b sl.filter=GLOB sl.require=CAPS, each program
# ended after sl.timeout seconds: a hang shows as status 143) with the
# environment meson gives them, prints each one's TAP output between
# "=== SUITE name" and "=== EXIT name status" lines, then powers off.
export PATH=/usr/bin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ln -s /proc/self/fd /dev/fd
mkdir -p /dev/shm
arg() { sed -n "s/.*sl\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
mount -t tmpfs -o "size=$(arg shm)" tmpfs /dev/shm
mount -t tmpfs -o "size=$(arg tmp)" tmpfs /tmp
mount -t tmpfs -o size=1G tmpfs /var/tmp
for d in /sys/kernel/mm/hugepages/hugepages-*kB; do
    kb=${d##*hugepages-}; kb=${kb%kB}
    mkdir -p "/dev/hugepages-$kb"
    mount -t hugetlbfs -o "pagesize=${kb}K" none "/dev/hugepages-$kb"
done
ip link set lo up # loopback TCP (a test's lingering socket)
for m in /modules/*.ko; do
    [ -e "$m" ] && insmod "$m"
done
echo "=== KERNEL $(uname -r), $(nproc) CPUs"
grep -E "HugePages_Total|Hugepagesize|MemTotal" /proc/meminfo
for d in /sys/kernel/mm/hugepages/hugepages-*kB; do echo "$d: $(cat "$d/nr_hugepages")"; done
build=$(arg build)
cd "$build" || poweroff -f
for t in $(arg suites | tr , ' '); do
    echo "=== SUITE $t"
    CMOCKA_MESSAGE_OUTPUT=TAP SL_TEST_FILTER="$(arg filter)" SNAPLOAD_REQUIRE="$(arg require)" \
        SNAPLOAD_PRELOAD="$build/libsnapload-preload.so" SNAPLOAD_PEERS="$build/snapload-peers" \
        SL_DLCTOR="$build/tests/unit/libsl-dlctor.so" \
        timeout "$(arg timeout)" "$build/tests/unit/test-$t" 2>&1
    echo "=== EXIT $t $? after $(cut -d' ' -f1 /proc/uptime) s"
done
echo "=== DONE"
poweroff -f
