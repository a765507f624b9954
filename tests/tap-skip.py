#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Run a cmocka test program and make its skips count as skips in TAP.

Debian 12's cmocka (1.1.5) reports a skipped case as "not ok N # SKIP name",
which TAP consumers such as meson count as a failure; TAP says a skip is
"ok N # SKIP reason".  This wrapper runs the program given as its arguments,
rewrites exactly that line form and nothing else, passes stderr through and
exits with the program's own status (128 + signal if it was killed), so a
real failure stays a failure: its line is "not ok N - name" and its exit
status is non-zero.
"""
import re
import signal
import subprocess
import sys

SKIP = re.compile(rb"^not ok (\d+) # SKIP\b")


def main():
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
    for sig in (signal.SIGTERM, signal.SIGINT):  # meson's timeout reaches the test
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    out = sys.stdout.buffer
    for line in child.stdout:
        out.write(SKIP.sub(rb"ok \1 # SKIP", line))
        out.flush()
    status = child.wait()
    sys.exit(128 - status if status < 0 else status)


if __name__ == "__main__":
    main()
