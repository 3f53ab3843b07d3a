"""The task queue over real HTTP, through Serve's ingress, as a logged-in user calls it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import ray

from tests.integration.conftest import error_code, service_client, sign_up

SERVICE = "queue"  # of the `http` fixture
H = "actors.queue.handlers"


@pytest.fixture
async def q(http: httpx.AsyncClient) -> AsyncIterator[str]:
    """A fresh queue per test, created by the session's user."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    created = await http.put(f"/{name}")
    assert created.status_code == 201, created.text
    yield name
    await http.delete(f"/{name}")  # a user holds a few queues only


async def test_enqueue_run_and_read_back(http, q):
    one = await http.post(f"/{q}/jobs", json={"handler": f"{H}:echo", "args": {"x": 1}})
    assert one.status_code == 201, one.text
    job = one.json()
    assert (job["queue"], job["priority"], job["duplicate"]) == (q, 5, False)
    batch = await http.post(
        f"/{q}/jobs/batch",
        json={"jobs": [{"handler": f"{H}:add", "args": {"a": i, "b": 1}} for i in range(3)]},
    )
    assert batch.status_code == 201, batch.text
    done = (await http.get(f"/{q}/jobs/{job['id']}/wait", params={"timeout_s": 30})).json()
    assert (done["state"], done["result"]) == ("succeeded", {"x": 1})
    for added, i in zip(batch.json()["jobs"], range(3), strict=True):
        got = (await http.get(f"/{q}/jobs/{added['id']}/wait")).json()
        assert got["result"] == i + 1
    page = (await http.get(f"/{q}/jobs", params={"state": "succeeded", "limit": 2})).json()
    assert (page["total"], len(page["jobs"]), page["next_offset"]) == (4, 2, 2)
    stats = (await http.get(f"/{q}/stats")).json()
    assert stats["completed"] == 4 and stats["depth"]["succeeded"] == 4
    # an Idempotency-Key header answers the same job again
    first = await http.post(
        f"/{q}/jobs", json={"handler": f"{H}:noop"}, headers={"idempotency-key": "abc"}
    )
    again = await http.post(
        f"/{q}/jobs", json={"handler": f"{H}:noop"}, headers={"idempotency-key": "abc"}
    )
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True


async def test_dead_jobs_retry_and_discard_cancel_pause(http, q):
    dead = (await http.post(f"/{q}/jobs", json={"handler": f"{H}:fail", "max_attempts": 1})).json()
    got = (await http.get(f"/{q}/jobs/{dead['id']}/wait")).json()
    assert got["state"] == "dead" and "failed on purpose" in got["error"]
    retried = await http.post(f"/{q}/jobs/{dead['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert (await http.get(f"/{q}/jobs/{dead['id']}/wait")).json()["state"] == "dead"
    assert (await http.get(f"/{q}/stats")).json()["counters"]["retried"] == 1
    discarded = await http.post(f"/{q}/dead/discard", json={"ids": None})
    assert discarded.json() == {"ids": [dead["id"]]}
    missing = await http.get(f"/{q}/jobs/{dead['id']}")
    assert missing.status_code == 404 and error_code(missing) == "job_not_found"
    # pause: a new job waits; cancel it; resume
    assert (await http.post(f"/{q}/pause")).json()["paused"] is True
    waiting = (await http.post(f"/{q}/jobs", json={"handler": f"{H}:noop"})).json()
    assert (await http.get(f"/{q}/jobs/{waiting['id']}")).json()["state"] == "queued"
    cancelled = await http.post(f"/{q}/jobs/{waiting['id']}/cancel")
    assert cancelled.json()["state"] == "cancelled"
    again = await http.post(f"/{q}/jobs/{waiting['id']}/cancel")
    assert again.status_code == 409 and error_code(again) == "job_state_conflict"
    config = await http.put(f"/{q}/config", json={"concurrency": 4, "rate_limit_per_s": 100})
    assert config.json() == {
        "queue": q,
        "paused": True,
        "concurrency": 4,
        "rate_limit_per_s": 100.0,
        "rate_burst": None,
    }
    assert (await http.post(f"/{q}/resume")).json()["paused"] is False


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"handler": f"{H}:nope"}, 422, "unknown_handler"),
        ({"handler": "os:system", "args": {"command": "true"}}, 422, "unknown_handler"),
        ({"handler": "nocolon"}, 422, "unknown_handler"),
        ({"handler": f"{H}:echo", "args": {"x": "y" * 70_000}}, 413, "job_args_too_large"),
        ({"handler": f"{H}:echo", "priority": 10}, 422, "invalid_input"),
        ({"handler": f"{H}:echo", "args": [1, 2]}, 422, "invalid_input"),
        ({"handler": f"{H}:echo", "delay_s": 1, "run_at": 1}, 422, "invalid_input"),
    ],
)
async def test_bad_input_is_a_4xx_and_enqueues_nothing(http, q, body, status, code):
    answer = await http.post(f"/{q}/jobs", json=body)
    assert answer.status_code == status, answer.text
    assert error_code(answer) == code
    batch = await http.post(f"/{q}/jobs/batch", json={"jobs": [{"handler": f"{H}:noop"}, body]})
    assert batch.status_code == status and error_code(batch) == code
    stats = (await http.get(f"/{q}/stats")).json()
    assert stats["counters"]["enqueued"] == 0 and sum(stats["depth"].values()) == 0


async def test_a_user_is_required_and_names_are_checked(base_url, http, q):
    async with service_client(base_url, "queue") as anonymous:
        refused = await anonymous.post(f"/{q}/jobs", json={"handler": f"{H}:noop"})
        assert refused.status_code == 401
        assert (await anonymous.put("/other")).status_code == 401
    bad_name = await http.post("/-bad/jobs", json={"handler": f"{H}:noop"})
    assert bad_name.status_code == 422
    assert (await http.put("/a%2Fb")).status_code in (404, 405, 422)  # no '/' in a queue name
    jobs = {"jobs": [{"handler": f"{H}:noop"}] * 1001}
    too_many = await http.post(f"/{q}/jobs/batch", json=jobs)
    assert too_many.status_code == 413 and error_code(too_many) == "batch_too_large"


# --- queues are created explicitly and belong to their owner --------------------


def _named(namespace: str) -> set[str]:
    return {
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == namespace
    }


#: Every route on a queue, with a body it would take.
ROUTES = [
    ("GET", "", None),
    ("GET", "/stats", None),
    ("GET", "/jobs", None),
    ("POST", "/jobs", {"handler": f"{H}:noop"}),
    ("POST", "/jobs/batch", {"jobs": [{"handler": f"{H}:noop"}]}),
    ("GET", "/jobs/some-job", None),
    ("GET", "/jobs/some-job/wait?timeout_s=0", None),
    ("POST", "/jobs/some-job/cancel", None),
    ("POST", "/jobs/some-job/retry", None),
    ("POST", "/dead/retry", {"ids": None}),
    ("POST", "/dead/discard", {"ids": None}),
    ("POST", "/pause", None),
    ("POST", "/resume", None),
    ("PUT", "/config", {"concurrency": 2}),
    ("DELETE", "", None),
]


async def test_a_queue_that_does_not_exist_is_404_everywhere_and_creates_nothing(
    http, http_settings
):
    before = _named(http_settings.namespace)
    for method, path, body in ROUTES:
        answer = await http.request(method, f"/never-made{path}", json=body)
        assert answer.status_code == 404, (method, path, answer.text)
        assert error_code(answer) == "queue_not_found"
    assert _named(http_settings.namespace) == before


async def test_another_users_queue_is_404_on_every_route(base_url, http, q, http_settings):
    job = (await http.post(f"/{q}/jobs", json={"handler": f"{H}:noop"})).json()
    before = _named(http_settings.namespace)
    async with service_client(base_url, "queue", await sign_up(base_url)) as other:
        for method, path, body in ROUTES:
            answer = await other.request(method, f"/{q}{path.replace('some-job', job['id'])}",
                                         json=body)  # fmt: skip
            assert answer.status_code == 404, (method, path, answer.text)
            assert error_code(answer) == "queue_not_found"
        assert (await other.get("/")).json()["queues"] == []
        # their queue of the same name is their own, and does not touch this one
        assert (await other.put(f"/{q}")).status_code == 201
        theirs = (await other.post(f"/{q}/jobs", json={"handler": f"{H}:noop"})).json()
        assert (await other.get(f"/{q}/jobs/{job['id']}")).status_code == 404
        assert (await other.delete(f"/{q}")).status_code == 200
    assert (await http.get(f"/{q}/jobs/{theirs['id']}")).status_code == 404
    assert (await http.get(f"/{q}/jobs/{job['id']}")).status_code == 200
    assert _named(http_settings.namespace) >= before


async def test_queues_are_created_listed_and_deleted_within_a_quota(base_url, http_settings):
    limit = 10  # REALM_QUEUE_MAX_QUEUES_PER_OWNER's default
    async with service_client(base_url, "queue", await sign_up(base_url)) as http:
        for i in range(limit):
            created = await http.put(f"/mine-{i}", json={"concurrency": 3} if i == 0 else None)
            assert created.status_code == 201, created.text
        first = created.json()
        assert (first["paused"], first["concurrency"]) == (False, 64)
        again = await http.put("/mine-0", json={"concurrency": 2})
        assert again.status_code == 200 and again.json()["concurrency"] == 2
        refused = await http.put("/one-more")
        assert (refused.status_code, error_code(refused)) == (403, "limit_reached")
        listed = (await http.get("/")).json()
        assert listed["limit"] == limit
        assert [q["queue"] for q in listed["queues"]] == sorted(f"mine-{i}" for i in range(limit))
        assert (await http.get("/mine-0")).json()["concurrency"] == 2
        deleted = await http.delete("/mine-0")
        assert deleted.json() == {"queue": "mine-0", "deleted": True}
        assert (await http.get("/mine-0/stats")).status_code == 404
        assert (await http.put("/one-more")).status_code == 201
        for i in range(1, limit):
            assert (await http.delete(f"/mine-{i}")).status_code == 200
        assert (await http.delete("/one-more")).status_code == 200
    # only the queue that was used ever had an actor, and it is gone
    assert not any("/mine-" in name or "/one-more/" in name
                   for name in _named(http_settings.namespace))  # fmt: skip


async def test_a_queue_called_slots_runs_its_jobs(http):
    # `slots` was once the name of the global slot actor: no job ran anywhere then.
    assert (await http.put("/slots")).status_code == 201
    try:
        job = (await http.post("/slots/jobs", json={"handler": f"{H}:add",
                                                    "args": {"a": 1, "b": 2}})).json()  # fmt: skip
        done = (await http.get(f"/slots/jobs/{job['id']}/wait", params={"timeout_s": 30})).json()
        assert (done["state"], done["result"]) == ("succeeded", 3)
    finally:
        await http.delete("/slots")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"handler": f"{H}:HandlerFailed"}, "unknown_handler"),  # a class, not a function
        ({"handler": f"{H}:time"}, "unknown_handler"),  # a module it imported
        ({"handler": f"{H}:noop", "timeout_s": 10**7}, "invalid_input"),  # over the maximum
        ({"handler": f"{H}:noop", "delay_s": 10**9}, "invalid_input"),
        ({"handler": f"{H}:noop", "priority": "5"}, "invalid_input"),  # strict types
        ({"handler": f"{H}:noop", "max_attempts": True}, "invalid_input"),
    ],
)
async def test_handlers_and_numbers_are_bounded(http, q, body, code):
    answer = await http.post(f"/{q}/jobs", json=body)
    assert (answer.status_code, error_code(answer)) == (422, code), answer.text
