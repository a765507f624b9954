#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Reserves hugepages and makes sure a hugetlbfs mount with the matching page
# size exists.  Idempotent: it only raises the reservation to N free pages
# and only mounts where no mount of that size exists.  Prints what it did
# and what is free now; exits non-zero with a clear message when the kernel
# cannot give the pages.  Run as root.
#
#   scripts/hugetlb-setup.sh N [2M|1G] [--node NODE] [--mount DIR]
#   scripts/hugetlb-setup.sh --release [2M|1G] [--node NODE]
#
# N is the number of *available* pages wanted: free and not reserved by an
# existing mapping (a mapped or half-filled file on a hugetlbfs mount holds a
# reservation even after its process exited).  Pages in use are kept.
# --release gives the available pages of that size back to the kernel (so
# that, say, memory reserved as 2 MiB pages can become 1 GiB pages).
set -euo pipefail

usage() {
    echo "usage: $0 N|--release [2M|1G] [--node NODE] [--mount DIR]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
want="$1"; shift
size=2M
node=""
mnt=""
while [ $# -gt 0 ]; do
    case "$1" in
        2M|2m) size=2M ;;
        1G|1g) size=1G ;;
        --node) node="${2:?}"; shift ;;
        --mount) mnt="${2:?}"; shift ;;
        *) usage ;;
    esac
    shift
done
[[ "$want" =~ ^[0-9]+$ ]] || [ "$want" = --release ] || usage

case "$size" in
    2M) kb=2048 ;;
    1G) kb=1048576 ;;
esac
if [ -n "$node" ]; then
    dir="/sys/devices/system/node/node$node/hugepages/hugepages-${kb}kB"
else
    dir="/sys/kernel/mm/hugepages/hugepages-${kb}kB"
fi
if [ ! -d "$dir" ]; then
    echo "hugetlb-setup: this kernel offers no $size hugepages${node:+ on node $node} ($dir missing)" >&2
    exit 1
fi

# Free pages that mappings have reserved are not ours to take.  The kernel
# keeps reservations per pool, not per node: a node's count is conservative.
resv_file="/sys/kernel/mm/hugepages/hugepages-${kb}kB/resv_hugepages"
avail_pages() {
    local f r=0
    f=$(cat "$dir/free_hugepages")
    [ -r "$resv_file" ] && r=$(cat "$resv_file")
    echo $((f > r ? f - r : 0))
}
total=$(cat "$dir/nr_hugepages")
avail=$(avail_pages)
before=$total
if [ "$want" = --release ]; then
    echo $((total - avail)) > "$dir/nr_hugepages"
    echo "hugetlb-setup: released $avail $size pages${node:+ on node $node};" \
         "$(cat "$dir/nr_hugepages") remain (in use or reserved)"
    exit 0
fi
if [ "$avail" -lt "$want" ]; then
    target=$((total + want - avail))
    if ! err=$( { echo "$target" > "$dir/nr_hugepages"; } 2>&1 ); then
        # EACCES/EPERM: not root; EINVAL: a kernel that cannot allocate
        # gigantic pages at run time (they must be reserved at boot).
        echo "hugetlb-setup: cannot write $dir/nr_hugepages: ${err##*: }" \
             "$( [ "$(id -u)" -eq 0 ] || echo "(are you root?)" )" >&2
        exit 1
    fi
    avail=$(avail_pages)
    if [ "$avail" -lt "$want" ]; then
        # Not enough contiguous memory (usual for 1 GiB pages on a machine
        # that has run a while): drop clean caches, compact, and ask again.
        sync
        echo 3 > /proc/sys/vm/drop_caches
        echo 1 > /proc/sys/vm/compact_memory
        echo "$target" > "$dir/nr_hugepages" 2>/dev/null || true
        echo "hugetlb-setup: dropped caches and compacted memory to find $size pages"
    fi
    total=$(cat "$dir/nr_hugepages")
    avail=$(avail_pages)
    echo "hugetlb-setup: reserved $size pages${node:+ on node $node}: now $total in all"
fi
if [ "$avail" -lt "$want" ]; then
    echo "$before" > "$dir/nr_hugepages" 2>/dev/null || true
    echo "hugetlb-setup: the kernel gave only $avail available $size pages of $want wanted" \
         "(memory too fragmented or too small; try at boot: hugepagesz=$size hugepages=$want)" >&2
    exit 1
fi
free=$(cat "$dir/free_hugepages")
if [ "$free" -lt "$total" ] || [ "$avail" -lt "$free" ]; then
    echo "hugetlb-setup: note: $((total - free)) $size pages in use and $((free - avail))" \
         "reserved by existing mappings or by files left on hugetlbfs mounts"
fi

# A hugetlbfs mount with this page size?
have=""
while read -r _ mp fstype opts _; do
    [ "$fstype" = hugetlbfs ] || continue
    psz=$(sed -n 's/.*pagesize=\([0-9]*[KMG]\).*/\1/p' <<<"$opts")
    case "$psz" in
        *K) psz_kb=${psz%K} ;;
        *M) psz_kb=$((${psz%M} * 1024)) ;;
        *G) psz_kb=$((${psz%G} * 1048576)) ;;
        *) psz_kb=$(awk '/Hugepagesize/ {print $2}' /proc/meminfo) ;;
    esac
    if [ "$psz_kb" = "$kb" ]; then
        have="$mp"
        break
    fi
done < /proc/mounts
if [ -z "$have" ]; then
    if [ -z "$mnt" ]; then
        if [ "$size" = 2M ]; then mnt=/dev/hugepages; else mnt=/dev/hugepages1G; fi
    fi
    mkdir -p "$mnt"
    mount -t hugetlbfs -o "pagesize=$size" none "$mnt"
    have="$mnt"
    echo "hugetlb-setup: mounted hugetlbfs pagesize=$size on $mnt"
fi
echo "hugetlb-setup: $size pages${node:+ on node $node}: $avail available of $total; mount: $have"
