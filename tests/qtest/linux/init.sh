#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the Linux test guest's initramfs (mkinitramfs.py puts it there):
# mounts what the workload needs (proc, sysfs, devtmpfs for the serial
# ports, a tmpfs for its checksummed files), loads the kernel modules the
# initramfs carries (listed in /lib/modules/load, in order), and hands PID 1
# to the workload, tests/qtest/linux/slwork.c.  Should the workload ever
# exit, the kernel panics ("Attempted to kill init"), which the tests see.
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mount -t tmpfs -o size=64m tmpfs /tmp
if [ -f /lib/modules/load ]; then
    for m in $($bb cat /lib/modules/load); do
        $bb insmod "/lib/modules/$m" || echo "init: cannot load $m"
    done
fi
exec /bin/slwork
