#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Builds the initramfs of the Linux test guest (docs/linux-guest.md).

It compiles the workload, slwork.c beside this script, into a static
binary (cc -static: the initramfs carries no libraries), and writes a cpio
archive in the kernel's "newc" format holding busybox-static (/bin/busybox,
with /bin/sh), init.sh as /init, the workload as /bin/slwork, /dev/console,
the empty directories init mounts on, and, when asked, kernel modules of
the guest kernel (with the modules they depend on, decompressed, loaded by
init in dependency order).  Nothing is downloaded: busybox and the modules
come from installed Debian packages (busybox-static, linux-image-cloud-amd64).

    mkinitramfs.py -o initrd.img [--gzip] [--busybox /bin/busybox]
                   [--kernel /boot/vmlinuz-VERSION --module virtio_blk ...]

Every entry gets mtime 0 and uid/gid 0, so the same inputs give the same
archive.
"""
import argparse
import gzip
import lzma
import os
import re
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


class Cpio:
    """A newc ("070701") cpio archive written to memory."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1

    def _pad(self):
        self.out += b"\0" * (-len(self.out) % 4)

    def add(self, name, mode, data=b"", rdev=(0, 0)):
        """One entry: @name without a leading slash, full st_mode, contents."""
        fields = [self.ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data),
                  0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08x" % v for v in fields)
        self.out += name.encode() + b"\0"
        self._pad()
        self.out += data
        self._pad()

    def dir(self, name):
        self.add(name, 0o040755)

    def file(self, name, data, perm=0o644):
        self.add(name, 0o100000 | perm, data)

    def symlink(self, name, target):
        self.add(name, 0o120777, target.encode())

    def chardev(self, name, major, minor):
        self.add(name, 0o020600, rdev=(major, minor))

    def finish(self):
        self.add("TRAILER!!!", 0)
        self.out += b"\0" * (-len(self.out) % 512)
        return bytes(self.out)


def is_static_elf(data):
    """True for a 64-bit ELF executable without a program interpreter."""
    if data[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        ptype, = struct.unpack_from("<I", data, phoff + i * phentsize)
        if ptype == 3:  # PT_INTERP: needs a dynamic loader
            return False
    return True


def build_workload(cc, tmp):
    """The static workload binary's bytes."""
    exe = os.path.join(tmp, "slwork")
    cmd = [cc, "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread",
           "-o", exe, os.path.join(HERE, "slwork.c")]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode:
        sys.exit("mkinitramfs: building the workload failed (%s):\n%s" % (" ".join(cmd), r.stdout))
    with open(exe, "rb") as f:
        return f.read()


def kernel_release(kernel):
    """The release of a kernel image /boot/vmlinuz-RELEASE (from its name)."""
    m = re.match(r"vmlinuz-(.+)$", os.path.basename(os.path.realpath(kernel)))
    if not m:
        sys.exit("mkinitramfs: cannot tell the release of %s (want /boot/vmlinuz-RELEASE)" % kernel)
    return m.group(1)


def module_order(moddir, names):
    """Module files (relative to @moddir) for @names and what they depend
    on, each after its dependencies."""
    deps = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
    by_name = {}
    for path in deps:
        base = os.path.basename(path).split(".ko")[0]
        by_name[base] = path
        by_name[base.replace("-", "_")] = path
    builtin = set()
    bfile = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bfile):
        with open(bfile) as f:
            builtin = {os.path.basename(l.strip()).split(".ko")[0].replace("-", "_") for l in f}
    order, seen = [], set()

    def visit(path):
        if path in seen:
            return
        seen.add(path)
        for d in deps.get(path, []):
            visit(d)
        order.append(path)

    for n in names:
        key = n.replace("-", "_")
        if key in builtin:
            continue  # built into the kernel: nothing to load
        if key not in by_name:
            sys.exit("mkinitramfs: module %s is not in %s/modules.dep" % (n, moddir))
        visit(by_name[key])
    return order


def read_module(path):
    """A module's bytes, decompressed (busybox insmod wants plain .ko)."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        r = subprocess.run(["zstd", "-dc", path], stdout=subprocess.PIPE, check=True)
        return r.stdout
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True, help="the initramfs to write")
    ap.add_argument("--busybox", default="/bin/busybox", help="a static busybox (busybox-static)")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler (static glibc)")
    ap.add_argument("--gzip", action="store_true", help="compress the archive with gzip")
    ap.add_argument("--kernel", help="the guest kernel, to find its modules (with --module)")
    ap.add_argument("--module", action="append", default=[], help="a kernel module to load")
    a = ap.parse_args()

    with open(a.busybox, "rb") as f:
        busybox = f.read()
    if not is_static_elf(busybox):
        sys.exit("mkinitramfs: %s is not static: install busybox-static" % a.busybox)
    with open(os.path.join(HERE, "init.sh"), "rb") as f:
        init = f.read()

    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", busybox, 0o755)
    c.symlink("bin/sh", "busybox")
    c.file("init", init, 0o755)
    with tempfile.TemporaryDirectory(prefix="mkinitramfs-") as tmp:
        c.file("bin/slwork", build_workload(a.cc, tmp), 0o755)
    if a.module:
        if not a.kernel:
            sys.exit("mkinitramfs: --module needs --kernel")
        moddir = os.path.join("/lib/modules", kernel_release(a.kernel))
        load = []
        for rel in module_order(moddir, a.module):
            name = os.path.basename(rel).split(".ko")[0] + ".ko"
            c.file("lib/modules/" + name, read_module(os.path.join(moddir, rel)))
            load.append(name)
        c.file("lib/modules/load", ("\n".join(load) + "\n").encode())
    data = c.finish()
    if a.gzip:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    tmpout = a.output + ".tmp"
    with open(tmpout, "wb") as f:
        f.write(data)
    os.replace(tmpout, a.output)


if __name__ == "__main__":
    main()
