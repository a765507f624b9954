# SPDX-License-Identifier: GPL-2.0-or-later
"""A small QMP client for the benchmark scripts (bench/linux.py,
scripts/bench-qemu.py): connects to QEMU's monitor socket
(-qmp unix:PATH,server=on), negotiates, runs commands and keeps the events
that arrive meanwhile.  Errors are raised as the caller's exception class.
"""
import json
import socket
import time


class QMP:
    """One QMP connection; failures raise @error (RuntimeError by default)."""

    def __init__(self, path, timeout=30, error=RuntimeError):
        self.error = error
        end = time.monotonic() + timeout
        while True:
            self.s = socket.socket(socket.AF_UNIX)
            self.s.settimeout(timeout)
            try:
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > end:
                    raise error("cannot connect to QEMU's monitor %s" % path)
                time.sleep(0.02)
        self.f = self.s.makefile("rw")
        self.events = []
        if not self.f.readline():  # the greeting
            raise error("QEMU's monitor %s closed at once" % path)
        self.cmd("qmp_capabilities")

    def read(self):
        line = self.f.readline()
        if not line:
            raise self.error("QEMU closed its monitor connection")
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            m = self.read()
            if "event" in m:
                self.events.append(m)
            elif "error" in m:
                raise self.error("QMP %s: %s" % (name, m["error"].get("desc", m["error"])))
            else:
                return m.get("return")

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass
