"""Push: notifications to 1,000 devices through the webhook and in-app providers,
against the same fan-out done by a plain asyncio + httpx sender.

Variants, one after the other in each round (the receiver runs in a process of
its own, at the same niceness as Ray's workers, ``--worker-niceness``):

  httpx         the floor: this process POSTs each notification, signed as
                Realm signs it, to the 1,000 webhook URLs with ``--concurrency``
                requests in flight (one ``httpx.AsyncClient``, HTTP/1.1 keep-alive)
  realm-webhook ``PushClient.send`` to a user with 1,000 webhook devices: accepted
                durably by the push shard, fanned out as delivery jobs on the task
                queue (``--batch-size`` devices each), sent by the queue's workers
  realm-inapp   the same to 1,000 in-app devices: each delivery journaled in the
                device's inbox (one commit per shard per job) and published on
                pub/sub ``user.<id>.push``

Deliveries/s is devices reached per second from the first send to the last
delivery; accept-to-deliver is, per device, the time from the send being
accepted (``created_at``) to the receiver getting it (webhook) or the inbox
having it (in-app, the shard's report).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import multiprocessing
import os
import shutil
import tempfile
import time
from typing import Any

from benchmarks import harness  # sets loopback-only Ray before ray is imported

CLAIM = (
    "Issue 11 (push): notifications/s to 1,000 devices through the webhook and in-app "
    "providers, against a plain asyncio + httpx sender; p99 accept-to-deliver."
)
NAMESPACE = "realm-bench-push"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--notifications", type=int, default=5, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=250, help="devices per delivery job")
    parser.add_argument("--shards", type=int, default=2, help="push shard actors")


# --- the receiver (a process of its own) -----------------------------------------


def _receiver(port_out: Any, niceness: int) -> None:
    os.nice(niceness)
    import orjson
    from aiohttp import web

    latencies: dict[str, list[float]] = {}

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        message = orjson.loads(body)
        tag = str(message.get("title", ""))
        latencies.setdefault(tag, []).append((now - float(message["created_at"])) * 1000)
        return web.Response(status=200)

    async def count(request: web.Request) -> web.Response:
        return web.json_response(len(latencies.get(request.match_info["tag"], [])))

    async def take(request: web.Request) -> web.Response:
        return web.json_response(latencies.pop(request.match_info["tag"], []))

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/{path}", handle)
        app.router.add_get("/count/{tag}", count)
        app.router.add_get("/take/{tag}", take)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()  # until the process is terminated

    asyncio.run(serve())


class Receiver:
    """A webhook receiver in a process of its own: latency per tag (the title)."""

    def __init__(self, niceness: int) -> None:
        context = multiprocessing.get_context("spawn")
        ports: Any = context.Queue()
        self.process = context.Process(target=_receiver, args=(ports, niceness), daemon=True)
        self.process.start()
        self.url = f"http://127.0.0.1:{int(ports.get(timeout=60))}"

    async def collect(self, tag: str, expected: int, timeout_s: float) -> list[float]:
        """The latencies of deliveries tagged ``tag``, once ``expected`` of them arrived
        (or ``timeout_s`` passed)."""
        import httpx

        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.url) as http:
            while (await http.get(f"/count/{tag}")).json() < expected:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            taken: list[float] = (await http.get(f"/take/{tag}")).json()
            return taken

    def close(self) -> None:
        self.process.terminate()
        self.process.join(timeout=10)


# --- variants ------------------------------------------------------------------------


def _sign(secret: str, body: bytes) -> str:
    t = int(time.time())
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


async def run_httpx(args: argparse.Namespace, receiver: Receiver, tag: str) -> dict[str, Any]:
    import httpx
    import orjson

    urls = [f"{receiver.url}/d{i}" for i in range(args.devices)]
    gate = asyncio.Semaphore(args.concurrency)
    started = time.monotonic()
    async with httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=args.concurrency, max_keepalive_connections=args.concurrency
        )
    ) as http:

        async def post(url: str, message: dict[str, Any]) -> None:
            async with gate:
                body = orjson.dumps({"type": "notification", **message})
                await http.post(url, content=body, headers={
                    "content-type": "application/json", "Realm-Signature": _sign("s", body),
                })  # fmt: skip

        for n in range(args.notifications):
            message = {"id": f"{tag}-{n}", "title": tag, "body": "b", "data": {"n": n},
                       "created_at": time.time()}  # fmt: skip
            await asyncio.gather(*(post(url, message) for url in urls))
    expected = args.devices * args.notifications
    latencies = await receiver.collect(tag, expected, timeout_s=60)
    elapsed = time.monotonic() - started
    return _summary(latencies, len(latencies), expected, elapsed)


async def run_realm(
    args: argparse.Namespace, client: Any, sender: str, receiver: Receiver | None, tag: str
) -> dict[str, Any]:
    started = time.monotonic()
    ids = []
    for _ in range(args.notifications):
        sent = await client.send(sender, to={"user": sender}, title=tag, body="b", data={"x": 1})
        ids.append(sent["id"])
    expected = args.devices * args.notifications
    latencies: list[float] = []
    states: dict[str, int] = {}
    for notification in ids:
        while True:
            done = await client.wait(sender, notification, timeout_s=60)
            if done["finished"]:
                break
        for result in done["results"]:
            states[result["state"]] = states.get(result["state"], 0) + 1
            if receiver is None and result["latency_ms"] is not None:
                latencies.append(result["latency_ms"])
    delivered = states.get("delivered", 0)
    if receiver is not None:
        latencies = await receiver.collect(tag, delivered, timeout_s=60)
    elapsed = time.monotonic() - started
    summary = _summary(latencies, delivered, expected, elapsed)
    summary["states"] = states
    return summary


def _summary(
    latencies: list[float], delivered: int, expected: int, elapsed: float
) -> dict[str, Any]:
    ordered = sorted(latencies) or [float("nan")]

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "expected": expected,
        "delivered": delivered,
        "elapsed_s": round(elapsed, 3),
        "deliveries_per_s": round(delivered / elapsed, 1) if elapsed else 0.0,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1], 2),
    }


async def run_all(args: argparse.Namespace, data_dir: str) -> list[dict[str, dict[str, Any]]]:
    from actors.push.client import PushClient
    from actors.runtime.settings import Settings

    settings = Settings(
        namespace=NAMESPACE,
        store_prefix=NAMESPACE,
        data_dir=data_dir,
        queue_handler_modules="actors.queue.handlers,actors.push.jobs",
        push_shards=args.shards,
        push_allow_private_addresses=True,
        push_max_devices_per_user=max(args.devices, 1),
        push_user_quota_per_min=10_000_000,
        push_batch_size=args.batch_size,
        push_send_concurrency=min(args.concurrency, args.batch_size),
    )
    receiver = Receiver(args.worker_niceness)
    client = PushClient(settings)
    await client.start()
    try:
        gate = asyncio.Semaphore(32)

        async def register(owner: str, **device: Any) -> None:
            async with gate:
                await client.register(owner, app="bench", **device)

        started = time.monotonic()
        await asyncio.gather(
            *(register("bench-webhook", platform="webhook", token=f"{receiver.url}/d{i}")
              for i in range(args.devices)),
            *(register("bench-inapp", platform="inapp", token=f"install-{i}")
              for i in range(args.devices)),
        )  # fmt: skip
        harness.progress(
            f"{2 * args.devices} devices registered in {time.monotonic() - started:.1f} s"
        )
        # warm-up: the queue, its workers, the providers' connections
        await run_realm(
            argparse.Namespace(**{**vars(args), "notifications": 1}), client, "bench-webhook",
            receiver, "warm-webhook",
        )  # fmt: skip
        await run_realm(
            argparse.Namespace(**{**vars(args), "notifications": 1}), client, "bench-inapp",
            None, "warm-inapp",
        )  # fmt: skip
        rounds = []
        for r in range(args.rounds):
            one: dict[str, dict[str, Any]] = {}
            one["httpx"] = await run_httpx(args, receiver, f"httpx-{r}")
            one["realm-webhook"] = await run_realm(
                args, client, "bench-webhook", receiver, f"webhook-{r}"
            )
            one["realm-inapp"] = await run_realm(args, client, "bench-inapp", None, f"inapp-{r}")
            for name, m in one.items():
                harness.progress(
                    f"round {r + 1}: {name}: {m['delivered']}/{m['expected']} in "
                    f"{m['elapsed_s']} s = {m['deliveries_per_s']:,.0f}/s, "
                    f"p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms {m.get('states', '')}"
                )
            rounds.append(one)
        stats = await client.stats()
        harness.progress(f"push stats: failed {stats['failed']}, latency {stats['latency']}")
        return rounds
    finally:
        receiver.close()


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, concurrency=64, extra=_add_flags)
    if args.quick:
        args.devices, args.notifications, args.rounds = 100, 2, 1
    os.environ.setdefault("REALM_QUEUE_HANDLER_MODULES", "actors.queue.handlers,actors.push.jobs")
    data_dir = tempfile.mkdtemp(prefix="realm-bench-push-")
    try:
        with harness.ray_session(namespace=NAMESPACE):
            rounds = asyncio.run(run_all(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    variants: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        runs = [r[name] for r in rounds]
        best = max(runs, key=lambda m: m["deliveries_per_s"])
        variants[name] = {
            "throughput_ops_s": best["deliveries_per_s"],  # what the harness plots
            "deliveries_per_s": best["deliveries_per_s"],
            "p50_ms": max(m["p50_ms"] for m in runs),
            "p99_ms": max(m["p99_ms"] for m in runs),
            "delivered": sum(m["delivered"] for m in runs),
            "expected": sum(m["expected"] for m in runs),
        }
    floor = variants["httpx"]["deliveries_per_s"] or 1.0
    ratios = {
        "realm-webhook/httpx deliveries/s": round(
            variants["realm-webhook"]["deliveries_per_s"] / floor, 3
        ),
        "realm-inapp/httpx deliveries/s": round(
            variants["realm-inapp"]["deliveries_per_s"] / floor, 3
        ),
    }
    harness.write_result(
        "push",
        {
            "claim": CLAIM,
            "params": vars(args) | {"load_avg_at_end": os.getloadavg()},
            "variants": variants,
            "ratios": ratios,
            "rounds": rounds,
        },
    )


if __name__ == "__main__":
    main()
