#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The benchmark from a fresh machine: installs what is missing and builds
# (scripts/install-deps.sh, which also brings python3 and QEMU), then runs
# bench/run.py with the given arguments (see docs/bench.md).  As root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
exec python3 bench/run.py "$@"
