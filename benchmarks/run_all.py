"""Run every benchmark in order, each as ``python -m <module>`` with this script's arguments.

    python -m benchmarks.run_all [--quick] [--duration-s S] ...

Stops at the first benchmark that fails and exits with its status.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from actors.runtime.registry import SERVICES
from benchmarks.harness import progress

#: Benchmarks of the platform itself, run first.
PLATFORM = ["benchmarks.engine_limit", "benchmarks.http_overhead"]
#: Run on their own, not by ``make bench``: the soak takes 10 minutes (``make soak``);
#: scale starts a cluster of its own and runs cache and queue on it at 1-3 nodes;
#: serial_points measures each service's serial actor alone; ledger_gc is the
#: ledger's garbage-collection study, without Ray.
SEPARATE = [
    "benchmarks.soak",
    "benchmarks.scale",
    "benchmarks.serial_points",
    "benchmarks.ledger_gc",
]
ROOT = Path(__file__).resolve().parent.parent


def benchmarks() -> list[str]:
    """The platform's benchmarks, then ``benchmarks/<service>.py`` for each
    registered service that has one, in the registry's order."""
    services = [
        f"benchmarks.{s.name}" for s in SERVICES if (ROOT / "benchmarks" / f"{s.name}.py").exists()
    ]
    return [*PLATFORM, *services]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    modules = benchmarks()
    for i, module in enumerate(modules, 1):
        progress(f"[{i}/{len(modules)}] {module} {' '.join(args)}")
        started = time.monotonic()
        rc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT).returncode
        if rc != 0:
            progress(f"FAILED: {module} exited with status {rc}; later benchmarks not run")
            return rc
        progress(f"[{i}/{len(modules)}] {module} done in {time.monotonic() - started:.1f} s")
    progress(f"all {len(modules)} benchmarks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
