#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Installs the Debian 12 packages snapload needs to build and test, and
# builds it into ./build.  Runs apt only for packages that are missing, so a
# machine that has them needs no network.  Run as root (or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential pkg-config meson ninja-build python3 libjson-glib-dev
          libglib2.0-dev libnuma-dev libhugetlbfs-dev libcmocka-dev libxxhash-dev
          liburing-dev
          clang libclang-rt-14-dev)   # the fuzz targets: clang 14 and its libFuzzer
# QEMU itself comes below: 10 from bookworm-backports, installed once (not
# 7.2 first, then upgraded), and Debian 12's 7.2 unpacked beside it.
# The Linux test guest (docs/linux-guest.md): the kernel it boots and the
# busybox of its initramfs, without their recommendations (firmware,
# apparmor), which the guest does not need.
GUEST_PACKAGES=(linux-image-cloud-amd64 busybox-static)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
guest_missing=()
for p in "${GUEST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || guest_missing+=("$p")
done
if ((${#missing[@]} + ${#guest_missing[@]})); then
    echo "snapload: installing ${missing[*]} ${guest_missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    if ((${#missing[@]})); then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
    fi
    if ((${#guest_missing[@]})); then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
            "${guest_missing[@]}"
    fi
fi

# QEMU 10 (mapped-ram files, `file:` migration) from the bookworm-backports
# suite of the Debian archive this machine already uses: its source is
# added beside the machine's own, with the same URIs and key, and only
# qemu-system-x86 and what it needs come from it, with the qemu-utils of
# the same version (qemu-storage-daemon, the vhost-user-blk back-end of
# tests/qtest/test-vhost-user-blk.c).
backports_source() {
    local f=/etc/apt/sources.list.d/snapload-backports.sources uris="" key=""
    grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
    # deb822 stanzas first, then one-line sources: the stanza serving "bookworm".
    # A machine with only /etc/apt/sources.list (the Debian installer's and
    # debootstrap's layout) has no stanza: read then finds no line, which
    # must not end the script under set -e.
    read -r uris key < <(awk 'BEGIN{RS=""} /Suites:[^\n]*[ \t]bookworm([ \t\n]|$)/ {
            u=""; k=""; n=split($0, l, "\n");
            for (i = 1; i <= n; i++) {
                if (l[i] ~ /^URIs:/) { u = l[i]; sub(/^URIs:[ \t]*/, "", u) }
                if (l[i] ~ /^Signed-By:/) { k = l[i]; sub(/^Signed-By:[ \t]*/, "", k) }
            }
            if (u != "") { print u, k; exit }
        }' /etc/apt/sources.list.d/*.sources 2>/dev/null) || true
    if [ -z "$uris" ]; then
        # "deb [options] URI bookworm components": a signed-by= among the
        # options is kept, the rest of them dropped.
        read -r uris key < <(awk '$1 == "deb" {
                k = ""; i = 2
                if ($2 ~ /^\[/) {
                    for (; i <= NF; i++) {
                        if ($i ~ /signed-by=/) { k = $i; sub(/.*signed-by=/, "", k); sub(/\]$/, "", k) }
                        if ($i ~ /\]$/) { i++; break }
                    }
                }
                if ($(i + 1) == "bookworm") { print $i, k; exit }
            }' /etc/apt/sources.list 2>/dev/null) || true
    fi
    if [ -z "$uris" ]; then
        echo "snapload: no Debian bookworm apt source found to add bookworm-backports to" >&2
        return 1
    fi
    echo "snapload: adding bookworm-backports ($uris) for QEMU 10" >&2
    { echo "Types: deb"; echo "URIs: $uris"; echo "Suites: bookworm-backports"
      echo "Components: main"; [ -z "$key" ] || echo "Signed-By: $key"; } >"$f"
}
qemu_is_10() {
    dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null | grep -Eq '^1:(9|[1-9][0-9])\.'
}
qemu_utils_ok() {
    dpkg-query -W -f='${Status}' qemu-utils 2>/dev/null | grep -q "install ok installed"
}
if ! qemu_is_10 || ! qemu_utils_ok; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    backports_source
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q -t bookworm-backports \
        qemu-system-x86 qemu-system-common qemu-system-data qemu-utils
fi

# Debian 12's own QEMU 7.2, unpacked beside it: the qtest suites ending in
# -7.2 run it (stock QEMU of both versions is what users restore into).
bash scripts/qemu-7.2.sh

if [ ! -f build/build.ninja ]; then
    meson setup build -Dtests=enabled
else
    meson setup build --reconfigure -Dtests=enabled >/dev/null
fi
ninja -C build
