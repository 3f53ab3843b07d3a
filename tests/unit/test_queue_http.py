"""The task queue's HTTP front without Ray: every route's scope, strict bodies, and
the caller's user id passed as the owner of every call.

The app is built on a fake client, and the caller is set by overriding
``apps.signin.current_principal`` (a user, or an API key with given scopes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from actors.auth.client import Principal
from actors.queue.errors import QueueNotFound
from actors.runtime.settings import Settings
from apps.queue import make_app
from tests.unit.fronts import calling_as, principal

H = "actors.queue.handlers"
LIMITS = {"queue": "q", "paused": False, "concurrency": 4, "rate_limit_per_s": None,
          "rate_burst": None}  # fmt: skip
JOB = {
    "id": "j", "queue": "q", "handler": f"{H}:noop", "args": {}, "priority": 5,
    "state": "queued", "attempts": 0, "max_attempts": 5, "timeout_s": 300.0,
    "enqueued_at": 1.0, "run_at": 1.0, "started_at": None, "finished_at": None,
    "lease_until": None, "unique_key": None, "idempotency_key": None,
}  # fmt: skip
STATS = {**LIMITS, "depth": {}, "in_flight": 0, "completed": 0, "failed": 0, "counters": {},
         "throughput_per_s": 0.0, "wait_s": {}, "run_s": {},
         "bytes": {"unfinished": 0, "finished": 0}}  # fmt: skip
ANSWERS: dict[str, Any] = {
    "create": {**LIMITS, "created_at": 1.0, "created": True},
    "info": {**LIMITS, "created_at": 1.0},
    "list_queues": [{"queue": "q", "created_at": 1.0}],
    "delete": True,
    "enqueue": JOB,
    "enqueue_many": [JOB],
    "get": JOB,
    "wait": JOB,
    "cancel": JOB,
    "retry": JOB,
    "list": {"jobs": [JOB], "total": 1, "next_offset": None},
    "retry_dead": ["j"],
    "discard_dead": ["j"],
    "stats": STATS,
    "pause": LIMITS,
    "resume": LIMITS,
    "configure": LIMITS,
}


class FakeQueues:
    """Answers every call of ``QueueClient`` and remembers (method, owner); queues
    exist only for their owner (``ada``'s ``q``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, method: str) -> Any:
        async def answer(*args: Any, owner: str, **kwargs: Any) -> Any:
            self.calls.append((method, owner))
            if owner != "ada" and method not in ("create", "list_queues"):
                raise QueueNotFound(queue="q")
            found = ANSWERS[method]
            return dict(found) if isinstance(found, dict) else found

        return answer


#: Every route, a body it accepts, and the scope an API key needs for it.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/", None, "queue:read"),
    ("PUT", "/q", {"concurrency": 4}, "queue:manage"),
    ("GET", "/q", None, "queue:read"),
    ("DELETE", "/q", None, "queue:manage"),
    ("POST", "/q/jobs", {"handler": f"{H}:noop"}, "queue:enqueue"),
    ("POST", "/q/jobs/batch", {"jobs": [{"handler": f"{H}:noop"}]}, "queue:enqueue"),
    ("GET", "/q/jobs", None, "queue:read"),
    ("GET", "/q/jobs/j", None, "queue:read"),
    ("GET", "/q/jobs/j/wait?timeout_s=0", None, "queue:read"),
    ("POST", "/q/jobs/j/cancel", None, "queue:manage"),
    ("POST", "/q/jobs/j/retry", None, "queue:manage"),
    ("POST", "/q/dead/retry", {"ids": None}, "queue:manage"),
    ("POST", "/q/dead/discard", {"ids": ["j"]}, "queue:manage"),
    ("GET", "/q/stats", None, "queue:read"),
    ("POST", "/q/pause", None, "queue:manage"),
    ("POST", "/q/resume", None, "queue:manage"),
    ("PUT", "/q/config", {"concurrency": 2}, "queue:manage"),
]
SCOPES = {"queue:read", "queue:enqueue", "queue:manage"}


@pytest.fixture
async def front() -> AsyncIterator[tuple[httpx.AsyncClient, FakeQueues, list[Principal]]]:
    fake = FakeQueues()
    caller = [principal()]
    app = make_app(fake, Settings())  # type: ignore[arg-type]
    async with calling_as(app, caller) as http:
        yield http, fake, caller


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
async def test_every_route_takes_its_scope(front, method, path, body, scope) -> None:
    http, fake, caller = front
    caller[0] = principal(scopes=SCOPES - {scope})
    refused = await http.request(method, path, json=body)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert fake.calls == []
    caller[0] = principal(scopes={scope})
    allowed = await http.request(method, path, json=body)
    assert allowed.status_code in (200, 201), allowed.text
    assert fake.calls and all(owner == "ada" for _, owner in fake.calls)


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES[2:])
async def test_another_users_queue_is_not_found_on_every_route(
    front, method, path, body, scope
) -> None:
    http, fake, caller = front
    caller[0] = principal("bob")
    answer = await http.request(method, path, json=body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "queue_not_found")
    assert fake.calls == [(fake.calls[0][0], "bob")]


async def test_creating_a_queue_that_exists_answers_200(front) -> None:
    http, _, _ = front
    ANSWERS["create"]["created"] = False
    try:
        answer = await http.put("/q")
    finally:
        ANSWERS["create"]["created"] = True
    assert answer.status_code == 200 and answer.json()["created_at"] == 1.0
    assert (await http.put("/q")).status_code == 201


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/q/jobs", {"handler": f"{H}:noop", "priority": "5"}),  # a string is not a number
        ("/q/jobs", {"handler": f"{H}:noop", "priority": True}),  # nor is a boolean
        ("/q/jobs", {"handler": f"{H}:noop", "max_attempts": False}),
        ("/q/jobs", {"handler": f"{H}:noop", "timeout_s": 10**7}),  # over its maximum
        ("/q/jobs", {"handler": f"{H}:noop", "delay_s": 10**9}),
        ("/q/jobs", {"handler": f"{H}:noop", "run_at": 1e300}),
        ("/q/jobs", {"handler": f"{H}:noop", "unique_for_s": 10**9}),
        ("/q/jobs", {"handler": f"{H}:noop", "colour": "blue"}),  # unknown fields
        ("/q/jobs", {"handler": "x" * 300}),
        ("/q/jobs/batch", {"jobs": [{"handler": f"{H}:noop", "priority": "1"}]}),
        ("/q/dead/retry", {"ids": "j"}),
    ],
)
async def test_bodies_are_strict_and_bounded(front, path: str, body: dict[str, Any]) -> None:
    http, fake, _ = front
    answer = await http.post(path, json=body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "invalid_input")
    assert fake.calls == []


@pytest.mark.parametrize(
    "body",
    [
        {"concurrency": 10**6},
        {"concurrency": 1.5},
        {"rate_limit_per_s": 1e12},
        {"rate_burst": True},
        {"workers": 100},
    ],
)
async def test_queue_limits_are_bounded(front, body: dict[str, Any]) -> None:
    http, fake, _ = front
    for path in ("/q", "/q/config"):
        answer = await http.put(path, json=body)
        assert answer.status_code == 422, answer.text
    assert fake.calls == []
