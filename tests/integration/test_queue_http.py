"""The task queue over real HTTP, through Serve's ingress, as a logged-in user calls it."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conftest import error_code, service_client

SERVICE = "queue"  # of the `http` fixture
H = "actors.queue.handlers"


@pytest.fixture
def q() -> str:
    """A fresh queue name per test."""
    return f"q-{uuid.uuid4().hex[:8]}"


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


async def test_a_user_is_required_and_names_are_checked(base_url, http):
    async with service_client(base_url, "queue") as anonymous:
        refused = await anonymous.post("/q/jobs", json={"handler": f"{H}:noop"})
    assert refused.status_code == 401
    bad_name = await http.post("/-bad/jobs", json={"handler": f"{H}:noop"})
    assert bad_name.status_code == 422
    too_many = await http.post("/q/jobs/batch", json={"jobs": [{"handler": f"{H}:noop"}] * 1001})
    assert too_many.status_code == 413 and error_code(too_many) == "batch_too_large"
