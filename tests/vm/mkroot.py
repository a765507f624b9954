#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Builds the initramfs of the test VM (scripts/vm-test.sh).

The VM runs this project's unit test programs on a kernel, or with
hugepages, that the host does not have: 1 GiB hugepages on a CPU without
them (QEMU's TCG offers them), an older or newer Debian kernel.  The archive
holds busybox-static (every applet linked), the build tree at its own path
(the test programs find their helpers by absolute path), every shared
library those programs and libraries load (from ldd, at their own paths),
and tests/vm/init.sh as /init.  Nothing is downloaded.

    mkroot.py BUILD_DIR OUT.cpio [MODULE.ko...]

Also libgcc_s (glibc loads it at the first pthread_cancel), util-linux's
unshare (busybox's lacks options the tests use) as /usr/bin/unshare, and
each kernel MODULE given (unix_diag: the preload client names a socket
pair's peer through it) under /modules, which /init loads.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "qtest", "linux"))
from mkinitramfs import Cpio  # noqa: E402  (one writer of newc archives)

SKIP_SUFFIXES = (".o", ".a", ".json", ".ninja", ".txt", ".log", ".dat")


class Tree:
    """A Cpio archive that creates each file's parent directories once."""

    def __init__(self):
        self.cpio = Cpio()
        self.dirs = set()

    def parents(self, path):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self.cpio.dir(d)

    def file(self, path, arc=None):
        arc = (arc or path).strip("/")
        self.parents(arc)
        with open(path, "rb") as f:
            self.cpio.file(arc, f.read(), os.stat(path).st_mode & 0o777)

    def symlink(self, path, target):
        self.parents(path)
        self.cpio.symlink(path.strip("/"), target)


def libraries(path):
    """Absolute paths of the shared libraries @path loads (ldd)."""
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    return {t for line in r.stdout.splitlines() for t in line.split()
            if t.startswith("/") and os.path.exists(t)}


def add_build(tree, build):
    """The build tree's programs and libraries; returns what they load."""
    libs = set()
    for root, _, files in os.walk(build):
        if "meson-" in root or ".p" in os.path.basename(root):
            continue
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                tree.symlink(path, os.readlink(path))
            elif not name.endswith(SKIP_SUFFIXES):
                tree.file(path)
                if os.access(path, os.X_OK) or ".so" in name:
                    libs |= libraries(path)
    return {l for l in libs if not l.startswith(build + "/")}


EXTRA_PROGRAMS = ("/usr/bin/unshare",)
EXTRA_LIBRARIES = ("/lib/x86_64-linux-gnu/libgcc_s.so.1",)


def add_extras(tree, modules):
    """The programs, libraries and modules beside the build; returns what they load."""
    libs = set()
    for prog in EXTRA_PROGRAMS:
        if os.path.exists(prog):
            tree.file(prog)
            libs |= libraries(prog)
    for lib in EXTRA_LIBRARIES:
        if os.path.exists(lib):
            libs.add(lib)
    for mod in modules:
        tree.file(mod, "modules/" + os.path.basename(mod))
    return libs


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: mkroot.py BUILD_DIR OUT.cpio [MODULE.ko...]")
    build, out = os.path.abspath(sys.argv[1]), sys.argv[2]
    tree = Tree()
    for d in ("proc", "sys", "dev", "tmp", "run", "bin", "etc", "root", "var/tmp"):
        tree.parents(d + "/x")
    tree.cpio.chardev("dev/console", 5, 1)
    tree.file("/bin/busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            tree.symlink("bin/" + applet, "busybox")
    for lib in sorted(add_build(tree, build) | add_extras(tree, sys.argv[3:])):
        real = os.path.realpath(lib)
        tree.file(real)
        if real != lib:
            tree.symlink(lib, real)
    tree.file(os.path.join(HERE, "init.sh"), "init")
    tree.cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    with open(out, "wb") as f:
        f.write(tree.cpio.finish())


if __name__ == "__main__":
    main()
