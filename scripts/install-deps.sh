#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Installs the Debian 12 packages snapload needs to build and test, and
# builds it into ./build.  Runs apt only for packages that are missing, so a
# machine that has them needs no network.  Run as root (or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential pkg-config meson ninja-build python3 libjson-glib-dev
          libglib2.0-dev libnuma-dev libhugetlbfs-dev libcmocka-dev libxxhash-dev
          qemu-system-x86
          clang libclang-rt-14-dev)   # the fuzz targets: clang 14 and its libFuzzer

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "snapload: installing ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

if [ ! -f build/build.ninja ]; then
    meson setup build -Dtests=enabled
else
    meson setup build --reconfigure -Dtests=enabled >/dev/null
fi
ninja -C build
