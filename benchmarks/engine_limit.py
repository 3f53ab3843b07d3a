"""Engine limit: a raw Ray async actor with a no-op method, the floor under every service.

Variants, each awaited from the driver's event loop:
  sync       one call in flight, each awaited before the next
  pipelined  --concurrency calls in flight
  batched    one call in flight, each carrying --batch-size operations
"""

from __future__ import annotations

import argparse
import asyncio
import random
from typing import Any

from benchmarks import harness

CLAIM = (
    "DESIGN (Placement and scale): one actor call costs about 1 ms, while 1,000 operations "
    "in one call cost about the same; pipelining raises calls/s a few times."
)


class NoOp:
    """The peer: a bare async actor with nothing behind its methods."""

    async def noop(self) -> None:
        return None

    async def noop_batch(self, ops: list[int]) -> int:
        done = 0
        for op in ops:
            done += self._apply(op)
        return done

    def _apply(self, op: int) -> int:
        return 1


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=1000, help="operations per batched call")


async def measure(ray: Any, args: argparse.Namespace) -> dict[str, harness.Sampler]:
    actor = ray.remote(num_cpus=0)(NoOp).remote()
    await actor.noop.remote()  # the actor process is up before any clock starts
    batch = [random.randrange(1 << 30) for _ in range(args.batch_size)]
    assert await actor.noop_batch.remote(batch) == args.batch_size
    variants: dict[str, Any] = {
        "sync": dict(op=actor.noop.remote, concurrency=1),
        "pipelined": dict(op=actor.noop.remote, concurrency=args.concurrency),
        "batched": dict(
            op=lambda: actor.noop_batch.remote(batch), concurrency=1, ops_per_call=args.batch_size
        ),
    }
    samplers = await harness.run_variants(variants, duration_s=args.duration_s, warmup=50)
    ray.kill(actor)
    return samplers


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, duration_s=5.0, concurrency=32, extra=_add_flags)
    harness.progress("starting Ray")
    with harness.ray_session() as ray:
        samplers = asyncio.run(measure(ray, args))
    metrics = {name: s.metrics() for name, s in samplers.items()}
    sync, pipelined, batched = (metrics[n] for n in ("sync", "pipelined", "batched"))
    ratios = {
        "pipelined/sync calls": round(pipelined["calls_per_s"] / sync["calls_per_s"], 2),
        "batched ops/sync calls": round(batched["throughput_ops_s"] / sync["calls_per_s"], 1),
    }
    harness.write_result(
        "engine_limit",
        {"claim": CLAIM, "params": vars(args), "variants": metrics, "ratios": ratios},
    )


if __name__ == "__main__":
    main()
