#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Prints, comma-separated, the capabilities this machine has that tests may
# need: uffd (userfaultfd usable by us), kvm (/dev/kvm usable), hugepages
# (free, unreserved 2 MiB hugepages on a hugetlbfs mount), hugepages-1G (the same for
# 1 GiB pages).  scripts/test.sh requires exactly these, so a test that
# skips for a capability the machine has fails instead.
caps=()
if [ -r /dev/userfaultfd ] && [ -w /dev/userfaultfd ]; then
    caps+=(uffd)
elif [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" = 1 ] || [ "$(id -u)" -eq 0 ]; then
    caps+=(uffd)
fi
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    caps+=(kvm)
fi
has_pages() { # kB: free pages that no existing mapping has reserved
    local d="/sys/kernel/mm/hugepages/hugepages-$1kB"
    [ -r "$d/free_hugepages" ] && grep -q hugetlbfs /proc/mounts &&
        [ "$(cat "$d/free_hugepages")" -gt "$(cat "$d/resv_hugepages" 2>/dev/null || echo 0)" ]
}
has_pages 2048 && caps+=(hugepages)
has_pages 1048576 && caps+=(hugepages-1G)
(IFS=,; echo "${caps[*]}")
