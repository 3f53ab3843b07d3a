"""Logs over real HTTP through Serve: push (Realm's and Loki's shapes), LogQL
queries, labels, limits and their 429s, tail over SSE and WebSocket with a
resume cursor, deletes, a shard killed mid-ingest, and Realm's own logs."""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import ray
from websockets.asyncio.client import connect

from actors.logs.settings import LogsSettings
from actors.runtime.settings import Settings
from tests.conftest import until
from tests.integration.conftest import admin_headers, error_code, service_client, sign_up

SERVICE = "logs"
NS = 1_000_000_000


@pytest.fixture
async def alice(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(base_url, SERVICE, await sign_up(base_url)) as client:
        yield client


async def push(
    client: httpx.AsyncClient, labels: dict[str, str], lines: list[str], ts: int | None = None
) -> dict[str, Any]:
    now = ts or time.time_ns()
    body = {
        "streams": [
            {
                "labels": labels,
                "entries": [{"ts": now + i, "line": line} for i, line in enumerate(lines)],
            }
        ]
    }
    answer = await client.post("/push", json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def query(client: httpx.AsyncClient, text: str, **params: Any) -> dict[str, Any]:
    answer = await client.get("/query", params={"query": text, **params})
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def lines_of(data: dict[str, Any]) -> list[str]:
    found = [(int(v[0]), v[1]) for s in data["result"] for v in s["values"]]
    return [line for _, line in sorted(found, reverse=True)]


async def test_push_query_filters_and_tenancy(base_url: str, alice: httpx.AsyncClient) -> None:
    app = uuid.uuid4().hex[:8]
    lines = [
        '{"level": "error", "status": 503, "msg": "needle down"}',
        '{"level": "info", "status": 200, "msg": "fine"}',
        "level=warn dur=1.5 msg=needle",
    ]
    assert (await push(alice, {"app": app, "env": "prod"}, lines))["accepted"] == 3
    assert lines_of(await query(alice, f'{{app="{app}"}} |= "needle"')) == [lines[2], lines[0]]
    assert lines_of(await query(alice, f'{{app="{app}"}} | json | status >= 500')) == [lines[0]]
    assert lines_of(await query(alice, f'{{app="{app}"}} | logfmt | dur > 1')) == [lines[2]]
    assert lines_of(await query(alice, f'{{app=~"{app}|x", env!="dev"}} !~ "needle"')) == [lines[1]]
    forward = await query(alice, f'{{app="{app}"}}', direction="forward", limit=1)
    assert lines_of(forward) == [lines[0]]
    counted = await query(
        alice, f'sum by (level) (count_over_time({{app="{app}"}} | json [1m]))', step="10s"
    )
    assert counted["resultType"] == "matrix"
    levels = {s["metric"].get("level"): s["values"][-1][1] for s in counted["result"]}
    assert levels == {"error": "1", "info": "1", None: "1"}
    labels = (await alice.get("/loki/api/v1/labels")).json()["data"]
    assert {"app", "env"} <= set(labels)
    values = (await alice.get("/loki/api/v1/label/app/values")).json()["data"]
    assert app in values
    # another user sees none of it, and may not name another tenant
    async with service_client(base_url, SERVICE, await sign_up(base_url)) as bob:
        assert lines_of(await query(bob, f'{{app="{app}"}}')) == []
        assert app not in (await bob.get("/labels/app/values")).json()["data"]
        refused = await bob.get("/query", params={"query": f'{{app="{app}"}}', "tenant": "realm"})
        assert refused.status_code == 403, refused.text


async def test_loki_push_json_and_gzip(alice: httpx.AsyncClient) -> None:
    app = uuid.uuid4().hex[:8]
    now = time.time_ns()
    body = {
        "streams": [
            {
                "stream": {"app": app},
                "values": [[str(now), "plain"], [str(now + 1), "meta", {"trace_id": "t1"}]],
            }
        ]
    }
    answer = await alice.post("/loki/api/v1/push", json=body)
    assert answer.status_code == 204, answer.text
    zipped = gzip.compress(
        orjson.dumps({"streams": [{"stream": {"app": app}, "values": [[str(now + 2), "zipped"]]}]})
    )
    answer = await alice.post(
        "/loki/api/v1/push", content=zipped,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )  # fmt: skip
    assert answer.status_code == 204, answer.text
    data = (
        await alice.get("/loki/api/v1/query_range", params={"query": f'{{app="{app}"}}'})
    ).json()["data"]
    assert data["resultType"] == "streams"
    values = sorted(v for s in data["result"] for v in s["values"])
    assert values == [
        [str(now), "plain"],
        [str(now + 1), "meta", {"trace_id": "t1"}],
        [str(now + 2), "zipped"],
    ]
    bad = await alice.post(
        "/loki/api/v1/push", json={"streams": [{"stream": {"app": app}, "values": [["x", "y"]]}]}
    )
    assert bad.status_code == 422 and error_code(bad) == "bad_entry"


async def test_limits_answer_429_with_the_reason_and_count(
    base_url: str, alice: httpx.AsyncClient
) -> None:
    sixteen = {f"l{i}": "v" for i in range(16)}
    refused = await alice.post(
        "/push", json={"streams": [{"labels": sixteen, "entries": [{"line": "x"}]}]}
    )
    assert refused.status_code == 429 and error_code(refused) == "ingest_limited"
    assert refused.json()["error"]["details"]["reason"] == "max_label_names_per_series"
    me = (await alice.get("/stats")).json()
    user_id = None
    async with service_client(base_url, "auth", dict(alice.headers)) as auth:
        user_id = (await auth.get("/me")).json()["id"]
    # a burst of 5 lines and almost no refill: the second push cannot fit, however slow the machine
    limits = {"limits": {"ingest_rate_lines_per_s": 0.01, "ingest_burst_lines": 5}}
    not_admin = await alice.put(f"/admin/limits/{user_id}", json=limits)
    assert not_admin.status_code == 403
    async with service_client(base_url, SERVICE, await admin_headers(base_url)) as admin:
        answer = await admin.put(f"/admin/limits/{user_id}", json=limits)
        assert answer.status_code == 200, answer.text
    app = uuid.uuid4().hex[:8]
    await push(alice, {"app": app}, ["1", "2", "3"])
    fast = await alice.post(
        "/push",
        json={
            "streams": [{"labels": {"app": app}, "entries": [{"line": str(i)} for i in range(4)]}]
        },
    )
    assert fast.status_code == 429, fast.text
    assert (
        fast.json()["error"]["details"]["reason"] == "rate_limited"
        and "retry-after" in fast.headers
    )
    assert lines_of(await query(alice, f'{{app="{app}"}}')) == ["3", "2", "1"]  # nothing of it kept
    after = (await alice.get("/stats")).json()
    assert after["discarded"]["rate_limited"] == me["discarded"].get("rate_limited", 0) + 4
    big = await alice.post(
        "/push", json={"streams": [{"labels": {"app": app}, "entries": [{"line": "x" * 300_000}]}]}
    )
    assert big.status_code == 429 and big.json()["error"]["details"]["reason"] == "line_too_long"


async def test_tail_over_sse_and_websocket_resumes_from_a_cursor(
    base_url: str, alice: httpx.AsyncClient
) -> None:
    app = uuid.uuid4().hex[:8]
    selector = f'{{app="{app}"}} |= "keep"'
    ws_url = base_url.replace("http://", "ws://") + f"/{SERVICE}/tail/ws"
    headers = {"authorization": alice.headers["authorization"]}
    async with connect(
        f"{ws_url}?{httpx.QueryParams({'query': selector})}", additional_headers=headers
    ) as ws:
        ready = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        assert ready["type"] == "ready"  # the tail starts at the newest entry: push after it
        await push(alice, {"app": app}, ["keep 1", "drop", "keep 2"])
        got: list[dict[str, Any]] = []
        while len(got) < 2:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            assert frame["type"] == "entries"
            got.extend(frame["entries"])
    assert [e["line"] for e in got] == ["keep 1", "keep 2"]
    cursor = got[0]["cursor"]  # seen only the first: resume after it
    await push(alice, {"app": app}, ["keep 3"])
    seen: list[str] = []
    async with alice.stream(
        "GET", "/tail/sse", params={"query": selector, "cursor": cursor}
    ) as stream:
        assert stream.status_code == 200
        event = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "entry":
                seen.append(orjson.loads(line[6:])["line"])
            if len(seen) == 2:
                break
    assert seen == ["keep 2", "keep 3"]
    bad = await alice.get("/tail/sse", params={"query": selector, "cursor": "c1-zz"})
    assert bad.status_code == 422


async def test_delete_is_asynchronous_and_final(alice: httpx.AsyncClient) -> None:
    app = uuid.uuid4().hex[:8]
    now = time.time_ns()
    await push(alice, {"app": app}, ["secret a", "public", "secret b"], ts=now)
    made = await alice.post(
        "/deletes",
        json={"query": f'{{app="{app}"}} |= "secret"', "start": now - NS, "end": now + NS},
    )
    assert made.status_code == 202, made.text
    request = made.json()["id"]
    assert lines_of(await query(alice, f'{{app="{app}"}}')) == ["public"]  # hidden at once

    async def status() -> dict[str, Any]:
        answer: dict[str, Any] = (await alice.get(f"/deletes/{request}")).json()
        return answer

    done = await until(status, lambda s: s["state"] == "done", within_s=60, what="the delete done")
    assert done["removed"] == 2
    assert lines_of(await query(alice, f'{{app="{app}"}}')) == ["public"]
    assert (await alice.get("/deletes/nope")).status_code == 404


async def test_a_shard_killed_mid_ingest_loses_nothing_acknowledged(
    http_settings: Settings, alice: httpx.AsyncClient
) -> None:
    app = uuid.uuid4().hex[:8]
    acknowledged: list[str] = []

    async def writer(n: int) -> None:
        for batch in range(15):
            lines = [f"w{n} b{batch} l{i}" for i in range(50)]
            try:
                answer = await alice.post(
                    "/push",
                    json={
                        "streams": [
                            {
                                "labels": {"app": app, "w": str(n)},
                                "entries": [{"line": line} for line in lines],
                            }
                        ]
                    },
                )
            except httpx.HTTPError:
                continue
            if answer.status_code == 200:
                acknowledged.extend(lines)

    writers = [asyncio.create_task(writer(n)) for n in range(4)]
    await until(lambda: len(acknowledged) >= 500, within_s=60, what="some pushes acknowledged")
    config = LogsSettings.of(http_settings)
    for index in range(config.shards):
        ray.kill(
            ray.get_actor(f"logs-shard-{index}", namespace=http_settings.namespace),
            no_restart=False,
        )
    await asyncio.gather(*writers)

    async def everything() -> set[str]:
        answer = await alice.get("/query", params={"query": f'{{app="{app}"}}', "limit": 5_000})
        if answer.status_code != 200:
            return set()
        return set(lines_of(answer.json()["data"]))

    found = await until(
        everything, lambda f: set(acknowledged) <= f, within_s=60, what="every acknowledged line"
    )
    assert len(acknowledged) >= 500 and set(acknowledged) <= found


async def test_an_operator_reads_realm_own_logs_by_service(base_url: str) -> None:
    async with service_client(base_url, "queue", await sign_up(base_url)) as queue:
        name = f"q{uuid.uuid4().hex[:8]}"
        made = await queue.put(f"/{name}", json={})
        assert made.status_code in (200, 201), made.text
    async with service_client(base_url, SERVICE, await admin_headers(base_url)) as admin:

        async def realm_queue_lines() -> list[str]:
            answer = await admin.get(
                "/query", params={"query": '{service="queue"}', "tenant": "realm", "limit": 50}
            )
            assert answer.status_code == 200, answer.text
            return lines_of(answer.json()["data"])

        found = await until(
            realm_queue_lines, bool, within_s=30, what="the queue's own logs shipped"
        )
        assert found
        labels = (await admin.get("/labels", params={"tenant": "realm"})).json()["data"]
        assert {"service", "actor", "node", "level"} <= set(labels)
