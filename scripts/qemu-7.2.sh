#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Unpacks Debian 12's own QEMU 7.2 (qemu-system-x86, qemu-system-common,
# qemu-system-data of the bookworm suite) into DIR (default
# /var/lib/snapload/qemu-7.2), beside the QEMU 10 from bookworm-backports
# that scripts/install-deps.sh installs: the tests run both (the qtest
# suites ending in -7.2).  The packages are downloaded with apt and
# unpacked, not installed, so the two versions do not conflict; the
# libraries 7.2 needs are installed as usual.  Firmware comes from the
# machine's seabios and ipxe-qemu packages, as for the installed QEMU.
# Does nothing when DIR already holds a working 7.2.  Run as root.
set -euo pipefail

DIR=${1:-/var/lib/snapload/qemu-7.2}
BIN="$DIR/usr/bin/qemu-system-x86_64"
PKGS=(qemu-system-x86 qemu-system-common qemu-system-data)

works() {
    "$BIN" --version 2>/dev/null | grep -q "version 7\.2\." &&
        ! ldd "$BIN" | grep -q "not found"
}
works && exit 0

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chown _apt "$tmp" 2>/dev/null || true # apt downloads as its sandbox user
download() {
    (cd "$tmp" && apt-get download -q "${PKGS[@]/%//bookworm}")
}
if ! download; then
    $SUDO apt-get update -q
    download
fi
echo "snapload: unpacking QEMU 7.2 (Debian 12) into $DIR" >&2
rm -rf "$DIR.new"
mkdir -p "$DIR.new"
for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$DIR.new"
done
# QEMU looks for its firmware relative to its binary: point those places at
# the machine's seabios and iPXE ROMs.
ln -sfn /usr/share/seabios "$DIR.new/usr/share/seabios"
mkdir -p "$DIR.new/usr/lib/ipxe"
ln -sfn /usr/lib/ipxe/qemu "$DIR.new/usr/lib/ipxe/qemu"
# The libraries and firmware the three depend on (their Depends, but for QEMU's own).
deps=$(for deb in "$tmp"/*.deb; do dpkg-deb -f "$deb" Depends; echo; done | tr ',' '\n' |
       sed -E 's/\(.*\)//; s/\|.*//; s/[[:space:]]//g' | grep -v '^qemu-' | grep -v '^$' |
       sort -u)
missing=()
for p in $deps; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
rm -rf "$DIR"
mv "$DIR.new" "$DIR"
if ! works; then
    echo "snapload: QEMU 7.2 in $DIR does not run:" >&2
    "$BIN" --version >&2 || true
    ldd "$BIN" | grep "not found" >&2 || true
    exit 1
fi
