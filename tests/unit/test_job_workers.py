"""JobWorker run directly (no Ray), with a fake queue handle; and handler resolution."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.queue.errors import UnknownHandler
from actors.queue.model import Work, resolve_handler
from actors.queue.workers import JobWorker
from tests.unit.conftest import cancel, settle

H = "actors.queue.handlers"


class _Method:
    def __init__(self, answer: Any = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.answer = answer

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(self.answer)
        return future


class FakeQueue:
    def __init__(self) -> None:
        self.heartbeat = _Method(answer=[])
        self.progress = _Method()


@pytest.fixture
async def worker() -> Any:
    queue = FakeQueue()
    worker = object.__new__(JobWorker)
    await JobWorker.__init__(
        worker,
        queue,
        handler_modules=f"{H},{__name__}",
        heartbeat_s=3_600,
        max_result_bytes=100,
        threads=4,
    )
    yield worker, queue
    await cancel(worker._heartbeat)


def work(job_id: str, handler: str, args: dict[str, Any], timeout_s: float = 60.0) -> Work:
    return (job_id, 1, f"{H}:{handler}", args, timeout_s, f"key-{job_id}", "q")


async def test_a_batch_runs_each_job_and_answers_each_outcome(worker) -> None:
    worker, _ = worker
    outcomes = await worker.run(
        [
            work("a", "echo", {"x": 1}),
            work("b", "add", {"a": 1, "b": 2}),  # a plain function: runs in a thread
            work("c", "fail", {"message": "nope"}),
            work("d", "echo", {"big": "x" * 200}),  # result over 100 bytes
            work("e", "add", {"a": 1}),  # a missing argument
            work("f", "sleep", {"seconds": 600}, timeout_s=0.01),
        ]
    )
    by_id = {o[0]: o for o in outcomes}
    assert [o[0] for o in outcomes] == ["a", "b", "c", "d", "e", "f"]
    assert by_id["a"][2:4] == (True, {"x": 1}) and by_id["b"][2:4] == (True, 3)
    assert by_id["c"][2:5] == (False, None, "HandlerFailed: nope")
    assert not by_id["d"][2] and "over the limit" in by_id["d"][4]
    assert not by_id["e"][2] and "TypeError" in by_id["e"][4]
    assert by_id["f"][4] == "timed out after 0.01s"
    assert all(o[5] <= o[6] for o in outcomes)
    assert worker.ran == 6


async def test_a_job_gets_its_context_and_reports_progress(worker) -> None:
    worker, queue = worker
    [outcome] = await worker.run([work("a", "hang_first", {"seconds": 0})])
    assert outcome[2:4] == (True, {"attempt": 1, "key": "key-a"})
    assert queue.progress.calls == [("a", {"started": 1})]


async def test_cancel_and_heartbeat_drop_running_jobs(worker) -> None:
    worker, queue = worker
    batch = asyncio.ensure_future(
        worker.run([work("a", "sleep", {"seconds": 600}), work("b", "sleep", {"seconds": 600})])
    )
    await settle()
    assert sorted(await worker.running()) == ["a", "b"]
    assert worker.cancel(["a", "unknown"]) == 1
    await settle()
    queue.heartbeat.answer = ["b"]  # the queue no longer counts b as running
    await worker.heartbeat()
    assert queue.heartbeat.calls == [(["b"],)]
    outcomes = await batch
    assert [(o[0], o[2], o[4]) for o in outcomes] == [
        ("a", False, "cancelled"),
        ("b", False, "cancelled"),
    ]
    assert await worker.running() == []


async def raises_timeout() -> None:
    """A handler whose own call timed out: not the job's timeout."""
    raise TimeoutError("upstream did not answer")


async def test_a_handler_raising_timeout_error_is_not_a_job_timeout(worker) -> None:
    worker, _ = worker
    [outcome] = await worker.run([(*work("a", "noop", {})[:2], f"{__name__}:raises_timeout",
                                   {}, 60.0, "k", "q")])  # fmt: skip
    assert outcome[4] == "TimeoutError('upstream did not answer')"


async def returns_a_tuple() -> tuple[int, int]:
    return (1, 2)


async def test_a_result_is_kept_as_json_reads_it_back(worker) -> None:
    # the queue journals it, and a replay gives what JSON (and MessagePack) hold
    worker, _ = worker
    [outcome] = await worker.run([("a", 1, f"{__name__}:returns_a_tuple", {}, 60.0, "k", "q")])
    assert outcome[2:4] == (True, [1, 2])


def test_handlers_resolve_only_from_allowed_modules() -> None:
    handler = resolve_handler(f"{H}:fail_until", (H,))
    assert handler.is_async and handler.wants_job
    assert not resolve_handler(f"{H}:add", (H,)).is_async
    for bad in ("os:system", f"{H}:_private", f"{H}:HandlerFailed.x", f"{H}:", "x"):
        with pytest.raises(UnknownHandler):
            resolve_handler(bad, (H,))
