"""The scheduler's HTTP front without Ray: scopes, strict bodies, the owner passed on.

The app is built on a fake client, and the caller is set by overriding
``apps.signin.current_principal`` (a user, or an API key with given scopes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from actors.auth.client import Principal
from actors.runtime.settings import Settings
from actors.scheduler.errors import ScheduleNotFound
from apps.scheduler import make_app
from tests.unit.fronts import calling_as, principal

QUEUE_TARGET = {"type": "queue", "queue": "q", "handler": "actors.queue.handlers:noop"}
PUBSUB_TARGET = {"type": "pubsub", "topic": "news", "payload": None}


def view(schedule_id: str, owner: str, target: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": schedule_id,
        "owner": owner,
        "name": "",
        "every_s": 10.0,
        "timezone": "UTC",
        "target": target,
        "misfire": "fire_once",
        "misfire_grace_s": 60.0,
        "overlap": "allow",
        "jitter_s": 0.0,
        "paused": False,
        "state": "active",
        "next_fire_at": None,
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
        "fired": 0,
        "failed": 0,
        "skipped": 0,
        "pending": 0,
    }


class FakeScheduler:
    """Schedules by id, each with its owner, as the real client scopes them."""

    def __init__(self) -> None:
        self.views: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str | None]] = []  #: (method, owner)

    async def create(self, spec: dict[str, Any], *, owner: str) -> dict[str, Any]:
        self.calls.append(("create", owner))
        found = self.views[f"s{len(self.views)}"] = view(
            f"s{len(self.views)}", owner, spec["target"]
        )
        return found

    async def get(self, schedule_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self.calls.append(("get", owner))
        found = self.views.get(schedule_id)
        if found is None or found["owner"] != owner:
            raise ScheduleNotFound(schedule_id=schedule_id)
        return found

    async def update(
        self, schedule_id: str, changes: dict[str, Any], *, owner: str | None = None
    ) -> dict[str, Any]:
        found = await self.get(schedule_id, owner=owner)
        self.calls.append(("update", owner))
        return {**found, **changes}

    async def list_schedules(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(("list", owner))
        return [v for v in self.views.values() if v["owner"] == owner]

    async def delete(self, schedule_id: str, *, owner: str | None = None) -> bool:
        await self.get(schedule_id, owner=owner)
        self.calls.append(("delete", owner))
        return True


@pytest.fixture
async def front() -> AsyncIterator[tuple[httpx.AsyncClient, FakeScheduler, list[Principal]]]:
    fake = FakeScheduler()
    caller = [principal()]
    app = make_app(fake, Settings())  # type: ignore[arg-type]
    async with calling_as(app, caller) as http:
        yield http, fake, caller


async def test_a_key_needs_the_routes_scope_and_its_targets(front) -> None:
    http, fake, caller = front
    body = {"every_s": 10, "target": QUEUE_TARGET}
    caller[0] = principal(scopes={"scheduler:read"})
    refused = await http.post("/schedules", json=body)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert (await http.get("/schedules")).status_code == 200
    # scheduler:write alone does not let a key make jobs or messages it could not itself
    caller[0] = principal(scopes={"scheduler:write"})
    assert (await http.post("/schedules", json=body)).status_code == 403
    assert (
        await http.post("/schedules", json={**body, "target": PUBSUB_TARGET})
    ).status_code == 403
    assert (await http.get("/schedules")).status_code == 403
    assert [c for c, _ in fake.calls if c == "create"] == []
    caller[0] = principal(scopes={"scheduler:write", "queue:enqueue"})
    created = await http.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    # a key changing a schedule needs the scope of the target it fires into
    caller[0] = principal(scopes={"scheduler:write"})
    sid = created.json()["id"]
    assert (await http.patch(f"/schedules/{sid}", json={"name": "x"})).status_code == 403
    caller[0] = principal(scopes={"scheduler:write", "queue:enqueue"})
    assert (await http.patch(f"/schedules/{sid}", json={"name": "x"})).status_code == 200
    # a signed-in user holds every scope
    caller[0] = principal()
    assert (
        await http.post("/schedules", json={**body, "target": PUBSUB_TARGET})
    ).status_code == 201


async def test_schedules_belong_to_the_caller(front) -> None:
    http, fake, caller = front
    created = await http.post("/schedules", json={"every_s": 10, "target": QUEUE_TARGET})
    sid = created.json()["id"]
    assert fake.calls[-1] == ("create", "ada")
    caller[0] = principal("bob")
    for answer in (
        await http.get(f"/schedules/{sid}"),
        await http.patch(f"/schedules/{sid}", json={"name": "mine"}),
        await http.delete(f"/schedules/{sid}"),
    ):
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "schedule_not_found")
    assert (await http.get("/schedules")).json() == {"schedules": []}


@pytest.mark.parametrize(
    "body",
    [
        {"every_s": True, "target": QUEUE_TARGET},  # a boolean is not a number
        {"every_s": "10", "target": QUEUE_TARGET},  # nor is a string
        {"every_s": 0.5, "target": QUEUE_TARGET},  # under a second
        {"every_s": 10**9, "target": QUEUE_TARGET},  # over a year
        {"every_s": 10, "jitter_s": 10**6, "target": QUEUE_TARGET},
        {"every_s": 10, "misfire_grace_s": -1, "target": QUEUE_TARGET},
        {"every_s": 10, "paused": 1, "target": QUEUE_TARGET},
        {"every_s": 10, "target": QUEUE_TARGET, "colour": "blue"},  # unknown fields are refused
        {"every_s": 10, "name": "x" * 500, "target": QUEUE_TARGET},
        {"every_s": 10},
    ],
)
async def test_bodies_are_strict_and_bounded(front, body: dict[str, Any]) -> None:
    http, fake, _ = front
    answer = await http.post("/schedules", json=body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "invalid_input")
    assert fake.calls == []
