"""Run every benchmark in order, each as ``python -m <module>`` with this script's arguments.

    python -m benchmarks.run_all [--quick] [--duration-s S] ...

Stops at the first benchmark that fails and exits with its status.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import progress

#: Run in this order; each module writes benchmarks/results/<name>.json and .png.
BENCHMARKS = [
    "benchmarks.engine_limit",
    "benchmarks.http_overhead",
    "benchmarks.cache_client",
    "benchmarks.auth",
    "benchmarks.pubsub",
    "benchmarks.resources",
    "benchmarks.queue",
    "benchmarks.scheduler",
    "benchmarks.ledger",
]

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for i, module in enumerate(BENCHMARKS, 1):
        progress(f"[{i}/{len(BENCHMARKS)}] {module} {' '.join(args)}")
        started = time.monotonic()
        rc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT).returncode
        if rc != 0:
            progress(f"FAILED: {module} exited with status {rc}; later benchmarks not run")
            return rc
        progress(f"[{i}/{len(BENCHMARKS)}] {module} done in {time.monotonic() - started:.1f} s")
    progress(f"all {len(BENCHMARKS)} benchmarks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
