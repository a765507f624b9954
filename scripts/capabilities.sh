#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Prints, comma-separated, the capabilities this machine has that tests may
# need: uffd (userfaultfd usable by us), kvm (/dev/kvm usable), hugepages
# (free 2 MiB hugepages).  scripts/test.sh requires exactly these, so a test
# that skips for a capability the machine has fails instead.
caps=()
if [ -r /dev/userfaultfd ] && [ -w /dev/userfaultfd ]; then
    caps+=(uffd)
elif [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" = 1 ] || [ "$(id -u)" -eq 0 ]; then
    caps+=(uffd)
fi
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    caps+=(kvm)
fi
if [ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" -gt 0 ] 2>/dev/null; then
    caps+=(hugepages)
fi
(IFS=,; echo "${caps[*]}")
