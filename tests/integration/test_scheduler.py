"""The scheduler on Ray: schedules over HTTP fire jobs on the real task queue, and a
partition killed between fires neither fires a due time twice nor skips one.

What reached the target is read back from the queue itself: every job a firing
made carries the firing's idempotency key ``<schedule id>:<due ms>``.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import ray

from actors.queue.client import QueueClient
from actors.runtime.settings import Settings
from actors.scheduler.client import SchedulerClient
from tests.conftest import until
from tests.integration.conftest import error_code, service_client, sign_up, store_overrides

DEADLINE_S = 60.0
OWNER = "tester"


def fired(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [run for run in runs if run["outcome"] == "fired"]


async def test_schedule_over_http_fires_jobs_on_the_queue(
    base_url: str, user_headers: dict[str, str]
):
    queue = f"sched-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=base_url, headers=user_headers, timeout=30) as http:
        # a schedule fires into one of its owner's queues, which must exist
        assert (await http.put(f"/queue/{queue}")).status_code == 201
        created = await http.post(
            "/scheduler/schedules",
            json={
                "name": "echo every second",
                "every_s": 1,
                "timezone": "Europe/Paris",
                "target": {
                    "type": "queue",
                    "queue": queue,
                    "handler": "actors.queue.handlers:echo",
                    "args": {"hello": "world"},
                },
            },
        )
        assert created.status_code == 201, created.text
        schedule = created.json()
        assert schedule["state"] == "active" and schedule["every_s"] == 1
        sid = schedule["id"]
        upcoming = await http.get(f"/scheduler/schedules/{sid}/upcoming", params={"count": 3})
        assert len(upcoming.json()["upcoming"]) == 3

        async def two_fired() -> list[dict[str, Any]]:
            runs = (await http.get(f"/scheduler/schedules/{sid}/history")).json()["runs"]
            return fired(runs) if len(fired(runs)) >= 2 else []

        runs = await until(two_fired, within_s=DEADLINE_S, what="two firings")
        assert all(run["lateness_ms"] is not None for run in runs)

        async def job_done() -> dict[str, Any] | None:
            job_id = runs[-1]["ref"]["job_id"]
            job = (await http.get(f"/queue/{queue}/jobs/{job_id}")).json()
            return job if job["state"] == "succeeded" else None

        job = await until(job_done, within_s=DEADLINE_S, what="the scheduled job to run")
        assert job["args"] == {"hello": "world"}
        assert job["idempotency_key"].startswith(f"{sid}:")

        assert (await http.post(f"/scheduler/schedules/{sid}/pause")).json()["state"] == "paused"
        changed = await http.patch(
            f"/scheduler/schedules/{sid}", json={"cron": "0 9 * * MON", "name": "weekly"}
        )
        assert changed.status_code == 200, changed.text
        assert (changed.json()["cron"], changed.json()["every_s"]) == ("0 9 * * MON", None)
        bad = await http.patch(f"/scheduler/schedules/{sid}", json={"timezone": "Nowhere/Land"})
        assert error_code(bad) == "unknown_time_zone"
        resumed = (await http.post(f"/scheduler/schedules/{sid}/resume")).json()
        assert resumed["state"] == "active" and resumed["name"] == "weekly"
        assert resumed["next_fire_at"].endswith(("+01:00", "+02:00"))  # Paris, 09:00
        assert "T09:00:00" in resumed["next_fire_at"]
        listed = (await http.get("/scheduler/schedules")).json()["schedules"]
        assert sid in [s["id"] for s in listed]
        assert (await http.delete(f"/scheduler/schedules/{sid}")).json()["deleted"] is True
        assert (await http.get(f"/scheduler/schedules/{sid}")).status_code == 404
        assert (await http.delete(f"/queue/{queue}")).status_code == 200


async def test_bad_input_is_refused_and_creates_nothing(base_url: str):
    headers = await sign_up(base_url)
    queue_target = {"type": "queue", "queue": "q", "handler": "actors.queue.handlers:noop"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"cron": "61 * * * *", "target": queue_target}, 422, "bad_cron"),
        (
            {"cron": "0 9 * * *", "timezone": "Mars/Base", "target": queue_target},
            422,
            "unknown_time_zone",
        ),
        ({"every_s": 10, "target": {"type": "fax"}}, 422, "unknown_target"),
        (
            {"every_s": 10, "target": {**queue_target, "handler": "os:system"}},
            422,
            "unknown_handler",
        ),
        (
            {"every_s": 10, "target": {**queue_target, "handler": "actors.queue.handlers:nope"}},
            422,
            "unknown_handler",
        ),
        (
            {"every_s": 10, "target": {**queue_target, "args": {"x": "y" * 70_000}}},
            413,
            "job_args_too_large",
        ),
        ({"every_s": 10, "cron": "* * * * *", "target": queue_target}, 422, "invalid_input"),
        ({"every_s": 10}, 422, "invalid_input"),
        ({"every_s": 10, "target": queue_target}, 404, "queue_not_found"),  # no such queue
        ({"every_s": True, "target": queue_target}, 422, "invalid_input"),  # strict types
    ]
    async with service_client(base_url, "scheduler") as http:
        assert (await http.get("/schedules")).status_code == 401
        for body, status, code in cases:
            answer = await http.post("/schedules", json=body, headers=headers)
            assert (answer.status_code, error_code(answer)) == (status, code), body
        assert (await http.get("/schedules", headers=headers)).json()["schedules"] == []
        missing = await http.get("/schedules/nope", headers=headers)
        assert missing.status_code == 404
        assert error_code(missing) == "schedule_not_found"


async def test_partition_killed_between_fires_neither_doubles_nor_skips(
    ray_settings: Callable[..., Settings], store_kind: str
):
    settings = ray_settings(scheduler_partitions=1, **store_overrides(store_kind))
    scheduler, queues = SchedulerClient(settings), QueueClient(settings)
    await scheduler.start()
    await queues.start()
    queue = "ticks"
    await queues.create(queue, owner=OWNER)
    schedule = await scheduler.create(
        {
            "every_s": 1,
            "misfire": "fire_all",
            "misfire_grace_s": 60,
            "target": {"type": "queue", "queue": queue, "handler": "actors.queue.handlers:noop"},
        },
        owner=OWNER,
    )
    sid = schedule["id"]

    async def fired_at_least(n: int) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
        async def check() -> list[dict[str, Any]]:
            runs = fired(await scheduler.history(sid))
            return runs if len(runs) >= n else []

        return check

    await until(await fired_at_least(2), within_s=DEADLINE_S, what="two firings before the kill")
    partition = ray.get_actor(scheduler.partitions[0].name, namespace=settings.namespace)
    ray.kill(partition, no_restart=False)
    # Firings went on being due while the partition was down and restarting.
    await until(await fired_at_least(7), within_s=DEADLINE_S, what="firings after the restart")
    await scheduler.pause(sid)
    runs = fired(await scheduler.history(sid))
    page = await queues.list(queue, owner=OWNER, limit=1_000)
    keys = Counter(job["idempotency_key"] for job in page["jobs"])
    assert all(count == 1 for count in keys.values()), "a due time made two jobs"
    dues = sorted(int(key.split(":")[1]) for key in keys)
    assert all(key.startswith(f"{sid}:") for key in keys)
    # No due time was skipped: one job per second from the first to the last.
    assert [b - a for a, b in itertools.pairwise(dues)] == [1_000] * (len(dues) - 1)
    # History agrees with the queue: each job recorded once, as fired.
    recorded = Counter(run["ref"]["job_id"] for run in runs)
    assert all(count == 1 for count in recorded.values())
    assert set(recorded) <= {job["id"] for job in page["jobs"]}
    assert len(dues) >= 7
    await queues.close()


async def test_pubsub_target_publishes_each_firing_once(ray_settings: Callable[..., Settings]):
    from actors.pubsub.client import PubSubClient

    settings = ray_settings(scheduler_partitions=1)
    scheduler, bus = SchedulerClient(settings), PubSubClient(settings)
    await scheduler.start()
    topic = f"ticks.{uuid.uuid4().hex[:8]}"
    schedule = await scheduler.create(
        {"every_s": 1, "target": {"type": "pubsub", "topic": topic, "payload": {"n": 1}}},
        owner=OWNER,
    )

    async def two_published() -> dict[str, Any] | None:
        page = await bus.history(topic)
        return page if len(page["messages"]) >= 2 else None

    page = await until(two_published, within_s=DEADLINE_S, what="two published firings")
    await scheduler.pause(schedule["id"])
    runs = fired(await scheduler.history(schedule["id"]))
    assert [m.payload for m in page["messages"][:2]] == [b'{"n":1}'] * 2
    # Each recorded run names its own message, and no message was published twice.
    page = await bus.history(topic)
    seqs = [m.seq for m in page["messages"]]
    assert sorted(run["ref"]["seq"] for run in runs) == seqs[: len(runs)]
    assert len(seqs) <= len(runs) + 1  # at most one hand-off not yet recorded
    await scheduler.delete(schedule["id"])


# --- a schedule acts for its owner: their queues and topics only ---------------


async def _user_id(base_url: str, headers: dict[str, str]) -> str:
    async with service_client(base_url, "auth", headers) as auth:
        return str((await auth.get("/me")).json()["id"])


async def test_a_schedule_cannot_reach_another_users_queue_or_private_topic(base_url: str):
    ada, bob = await sign_up(base_url), await sign_up(base_url)
    ada_id, bob_id = await _user_id(base_url, ada), await _user_id(base_url, bob)
    queue = f"private-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        assert (await http.put(f"/queue/{queue}", headers=ada)).status_code == 201
        target = {"type": "queue", "queue": queue, "handler": "actors.queue.handlers:noop"}
        refused = await http.post(
            "/scheduler/schedules", json={"every_s": 1, "target": target}, headers=bob
        )
        assert (refused.status_code, error_code(refused)) == (404, "queue_not_found")
        to_ada = {"type": "pubsub", "topic": f"user.{ada_id}.inbox", "payload": {"x": 1}}
        refused = await http.post(
            "/scheduler/schedules", json={"every_s": 1, "target": to_ada}, headers=bob
        )
        assert (refused.status_code, error_code(refused)) == (403, "forbidden")
        listed = await http.get("/scheduler/schedules", headers=bob)
        assert listed.json()["schedules"] == []
        # a schedule of bob's may not be pointed at them later either
        own = {"type": "pubsub", "topic": f"user.{bob_id}.news", "payload": None}
        created = await http.post(
            "/scheduler/schedules", json={"cron": "0 0 1 1 *", "target": own}, headers=bob
        )
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        moved = await http.patch(
            f"/scheduler/schedules/{sid}", json={"target": target}, headers=bob
        )
        assert (moved.status_code, error_code(moved)) == (404, "queue_not_found")
        moved = await http.patch(
            f"/scheduler/schedules/{sid}", json={"target": to_ada}, headers=bob
        )
        assert (moved.status_code, error_code(moved)) == (403, "forbidden")
        # ada's queue got nothing
        stats = (await http.get(f"/queue/{queue}/stats", headers=ada)).json()
        assert stats["counters"]["enqueued"] == 0
        assert (await http.delete(f"/scheduler/schedules/{sid}", headers=bob)).status_code == 200
        assert (await http.delete(f"/queue/{queue}", headers=ada)).status_code == 200


async def test_firings_stop_reaching_a_queue_its_owner_deleted(
    ray_settings: Callable[..., Settings],
):
    settings = ray_settings(scheduler_partitions=1)
    scheduler, queues = SchedulerClient(settings), QueueClient(settings)
    await scheduler.start()
    await queues.start()
    await queues.create("ticks", owner=OWNER)
    target = {"type": "queue", "queue": "ticks", "handler": "actors.queue.handlers:noop"}
    sid = (await scheduler.create({"every_s": 1, "target": target}, owner=OWNER))["id"]

    async def history_has(outcome: str) -> list[dict[str, Any]]:
        runs = await scheduler.history(sid)
        return [run for run in runs if run["outcome"] == outcome]

    await until(lambda: history_has("fired"), within_s=DEADLINE_S, what="a firing")
    actor = await queues.actor_name("ticks", owner=OWNER)
    await queues.delete("ticks", owner=OWNER)
    # checked again at each firing: the queue is gone for its owner, so is the firing
    [failed, *_] = await until(lambda: history_has("failed"), within_s=DEADLINE_S,
                               what="a firing refused")  # fmt: skip
    assert failed["error"]["code"] == "queue_not_found"
    await scheduler.pause(sid)
    named = ray.util.list_named_actors(all_namespaces=True)
    mine = {a["name"] for a in named if a["namespace"] == settings.namespace}
    assert not any(name.startswith(f"queue/{OWNER}/ticks/") for name in mine), actor
    await queues.close()
