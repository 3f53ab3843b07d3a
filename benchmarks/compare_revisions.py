"""One benchmark, two revisions of Realm, side by side: did a change make it slower?

    python -m benchmarks.compare_revisions queue --before b79e7bb --pairs 2 [-- <its flags>]

Checks the ``--before`` revision out into a git worktree under /tmp, then runs
``benchmarks/<name>.py`` of this checkout and of that revision in turns
(this, before, this, before, ...), each in its own process on the same
machine and priority, each against the same peer as usual. Every run writes
its own ``results/<name>.json`` in its own tree; this script reads each
variant's throughput from them and writes ``results/<name>.before_after.json``:
every run's figures, the median per variant on each side, and the ratio
after / before. Turns cancel most of the drift of a shared machine's load;
the peer's figures show how much load there was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS_DIR, machine_info, progress

ROOT = Path(__file__).resolve().parent.parent


def worktree(revision: str) -> Path:
    """A checkout of ``revision`` (made once, then reused)."""
    sha = subprocess.check_output(["git", "rev-parse", revision], cwd=ROOT, text=True).strip()
    path = Path("/tmp") / f"realm-rev-{sha[:12]}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT, check=True)
    return path


def run(tree: Path, name: str, extra: list[str]) -> dict[str, float]:
    """Run ``benchmarks/<name>.py`` of ``tree``; each variant's throughput (ops/s)."""
    env = os.environ | {"PYTHONPATH": str(tree)}  # the tree's code, also in Ray's workers
    subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *extra], cwd=tree, env=env,
                   check=True)  # fmt: skip
    result = json.loads((tree / "benchmarks" / "results" / f"{name}.json").read_text())
    return {variant: m["throughput_ops_s"] for variant, m in result["variants"].items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", help="module name under benchmarks/, e.g. queue")
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--pairs", type=int, default=2, help="turns of (this, before)")
    argv = sys.argv[1:] if argv is None else argv
    ours, extra = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    args = parser.parse_args(ours)
    before_tree = worktree(args.before)
    runs: dict[str, list[dict[str, float]]] = {"after": [], "before": []}
    for turn in range(args.pairs):
        for side, tree in (("after", ROOT), ("before", before_tree)):
            progress(f"turn {turn + 1}/{args.pairs}: {side} ({tree})")
            runs[side].append(run(tree, args.benchmark, extra))
    variants = [v for v in runs["after"][0] if all(v in r for r in runs["after"] + runs["before"])]
    medians = {
        side: {v: statistics.median(r[v] for r in side_runs) for v in variants}
        for side, side_runs in runs.items()
    }
    ratios = {v: round(medians["after"][v] / medians["before"][v], 3) for v in variants}
    doc: dict[str, Any] = {
        "name": f"{args.benchmark}.before_after",
        "machine": machine_info(),
        "before": subprocess.check_output(
            ["git", "rev-parse", args.before], cwd=ROOT, text=True
        ).strip(),
        "after": subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True).strip()
        + (" (+ uncommitted changes)" if _dirty() else ""),
        "args": extra,
        "runs": runs,
        "median_ops_s": medians,
        "after_over_before": ratios,
    }
    out = RESULTS_DIR / f"{args.benchmark}.before_after.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for variant, ratio in ratios.items():
        progress(f"{variant}: after / before = {ratio}")
    progress(f"wrote {out.relative_to(ROOT)}")
    return 0


def _dirty() -> bool:
    status = subprocess.check_output(["git", "status", "--porcelain", "--", "actors", "apps"],
                                     cwd=ROOT, text=True)  # fmt: skip
    return bool(status.strip())


if __name__ == "__main__":
    sys.exit(main())
