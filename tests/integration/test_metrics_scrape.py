"""Realm's metrics on Ray's Prometheus scrape page: after requests to the cache,
the queue and the ledger (and a queue actor killed and restarted), the
``ray_realm_*`` series appear on every node's scrape address, on loopback, with
the expected names and labels."""

from __future__ import annotations

import ipaddress
import urllib.parse
import uuid
from collections.abc import Iterable
from typing import Any

import httpx
import ray
from prometheus_client.parser import text_string_to_metric_families

from actors.runtime.metrics import scrape_targets
from tests.conftest import until
from tests.integration.conftest import service_client, sign_up

#: How long the series may take to show: Ray's workers report to the metrics agent
#: every 10 s, and a loaded machine may take a few turns.
APPEAR_WITHIN_S = 60.0

Sample = tuple[str, dict[str, str], float]


async def scrape(targets: Iterable[str]) -> list[Sample]:
    """Every ``ray_realm_*`` sample on the scrape pages."""
    samples: list[Sample] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for target in targets:
            try:
                page = await client.get(target)
            except httpx.HTTPError:
                continue  # the agent is still starting
            if page.status_code != 200:
                continue
            for family in text_string_to_metric_families(page.text):
                for sample in family.samples:
                    if sample.name.startswith("ray_realm_"):
                        samples.append((sample.name, dict(sample.labels), sample.value))
    return samples


def has(samples: list[Sample], name: str, at_least: float = 1, **labels: Any) -> bool:
    """A sample ``name`` whose labels include ``labels`` (a callable tests a value)
    and whose value is at least ``at_least``."""

    def matches(found: dict[str, str]) -> bool:
        for key, wanted in labels.items():
            value = found.get(key)
            if value is None or not (wanted(value) if callable(wanted) else value == wanted):
                return False
        return True

    return any(n == name and matches(found) and v >= at_least for n, found, v in samples)


async def test_realm_series_appear_on_the_scrape_address_with_their_labels(base_url):
    targets = scrape_targets()
    assert targets, "the test runtime exports no metrics"
    for target in targets:  # the scrape address is on loopback
        host = urllib.parse.urlsplit(target).hostname
        assert host is not None and ipaddress.ip_address(host).is_loopback, target

    user = await sign_up(base_url)
    tag = uuid.uuid4().hex[:8]
    async with service_client(base_url, "cache", user) as cache:
        put = await cache.put(f"/keys/m-{tag}", json={"value": {"n": 1}})
        assert put.status_code == 200, put.text
        assert (await cache.get(f"/keys/m-{tag}")).status_code == 200
        assert (await cache.get(f"/keys/m-{tag}-missing")).status_code == 404
    queue = f"m-{tag}"
    async with service_client(base_url, "queue", user) as queues:
        created = await queues.put(f"/{queue}")
        assert created.status_code == 201, created.text
        job = {"handler": "actors.queue.handlers:echo", "args": {}, "delay_s": 3600}
        for _ in range(2):
            enqueued = await queues.post(f"/{queue}/jobs", json=job)
            assert enqueued.status_code == 201, enqueued.text
    async with service_client(base_url, "ledger", user) as ledger:
        names = [f"m-{tag}-bank", *(f"m-{tag}-{i}" for i in range(6))]
        accounts = {"accounts": [{"id": name, "ledger": 1} for name in names]}
        opened = await ledger.post("/accounts", json=accounts)
        assert opened.status_code == 200, opened.text
        for i, name in enumerate(names[1:]):  # with 4 shards, some cross shards: 2PC
            body = {"id": f"m-{tag}-t{i}", "debit_account_id": names[0],
                    "credit_account_id": name, "amount": 1, "ledger": 1}  # fmt: skip
            moved = await ledger.post("/transfers", json=body)
            assert moved.status_code == 201, moved.text
    # A crash of the queue's actor: the restarted one counts its restart.
    [actor] = [
        entry
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if f"/{queue}/" in entry["name"]
    ]
    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=False)
    async with service_client(base_url, "queue", user) as queues:
        stats = await until(lambda: queues.get(f"/{queue}/stats"), lambda r: r.status_code == 200)
        assert stats.json()["depth"]["scheduled"] == 2  # durable: nothing lost

    expected = {
        "requests by route template": lambda s: has(
            s, "ray_realm_http_requests_total",
            service="cache", route="/keys/{key}", method="PUT", status="200",
        ),
        "a miss answered 404": lambda s: has(
            s, "ray_realm_http_requests_total",
            service="cache", route="/keys/{key}", method="GET", status="404",
        ),
        "request latency": lambda s: has(
            s, "ray_realm_http_request_seconds_count",
            service="ledger", route="/transfers", method="POST", status="201",
        ),
        "cache hits": lambda s: has(s, "ray_realm_cache_lookups_total", result="hit"),
        "cache misses": lambda s: has(s, "ray_realm_cache_lookups_total", result="miss"),
        "queue depth": lambda s: has(
            s, "ray_realm_queue_jobs", at_least=2,
            queue=lambda name: f"/{queue}/" in name, state="scheduled",
        ),
        "journal commits": lambda s: has(
            s, "ray_realm_journal_commit_seconds_count", actor="JobQueue"
        ),
        "journal batches": lambda s: has(
            s, "ray_realm_journal_batch_records_bucket", actor="LedgerShard", le="+Inf"
        ),
        "2PC prepare": lambda s: has(
            s, "ray_realm_ledger_2pc_total", phase="prepare", outcome="ok"
        ),
        "2PC commit": lambda s: has(s, "ray_realm_ledger_2pc_total", phase="commit", outcome="ok"),
        "2PC timing": lambda s: has(s, "ray_realm_ledger_2pc_seconds_count", phase="decide"),
        "actor restarts": lambda s: has(s, "ray_realm_actor_restarts_total", actor="JobQueue"),
    }  # fmt: skip

    async def missing() -> tuple[list[str], list[Sample]]:
        samples = await scrape(targets)
        return [what for what, found in expected.items() if not found(samples)], samples

    _, samples = await until(
        missing,
        lambda found: not found[0],
        within_s=APPEAR_WITHIN_S,
        what="every expected series on the scrape page",
    )
    # Routes are templates: no raw key ever becomes a label value.
    routes = {labels.get("route", "") for _, labels, _ in samples}
    assert not any(tag in route for route in routes), routes
