"""A queue's jobs and their indexes.

``JobTable`` holds every job of one queue by id, and finds them by state (each
state's jobs in the order they entered it), by readiness (a heap of queued
jobs, best priority first, first in first out within one), by due time (a
heap of scheduled and retrying jobs) and by expiry (a heap of finished jobs),
and the unique and idempotency keys that point at them. Heap entries are
never removed early: an entry whose job has moved on since is stale (its
``ready_seq`` or ``expires_at`` differs, or its state) and skipped when popped.

It also weighs them: ``unfinished_bytes`` is the size (as JSON) of the
arguments of the jobs not finished yet, ``finished_bytes`` that of the
arguments and results of the finished ones, which the queue's limits bound.

Only the jobs and the keys are stored (``JobQueue``'s snapshot): ``rebuild``
makes the indexes and weights again from the jobs, without the stale entries.
"""

from __future__ import annotations

import heapq
from typing import Any

import orjson

from actors.queue.model import FINISHED, WAITING, Job, JobState


class JobTable:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.by_state: dict[JobState, dict[str, None]] = {s: {} for s in JobState}
        self.ready: list[tuple[int, int, str]] = []  #: heap of (-priority, ready_seq, id)
        self.waiting: list[tuple[float, int, str]] = []  #: heap of (run_at, ready_seq, id)
        self.finished: list[tuple[float, str]] = []  #: heap of (expires_at, id)
        self.unique: dict[str, tuple[str, float]] = {}  #: unique key -> (job id, until)
        self.idempotent: dict[str, str] = {}  #: idempotency key -> job id
        self.seq = 0  #: the last ready_seq handed out
        self.args_bytes: dict[str, int] = {}  #: job id -> its arguments' size as JSON
        self.result_bytes: dict[str, int] = {}  #: finished job id -> its result's size
        self.unfinished_bytes = 0  #: arguments of the jobs not finished
        self.finished_bytes = 0  #: arguments and results of the finished jobs

    @classmethod
    def rebuild(
        cls,
        jobs: list[Job],
        *,
        unique: dict[str, tuple[str, float]],
        idempotent: dict[str, str],
        seq: int,
    ) -> JobTable:
        """The table of ``jobs`` (listed as ``in_order`` lists them) and these keys,
        its indexes made again from the jobs."""
        table = cls()
        table.jobs = {job.id: job for job in jobs}
        for job in jobs:
            table.by_state[job.state][job.id] = None
            table._weigh(job)
            if job.state is JobState.QUEUED:
                table.ready.append((-job.priority, job.ready_seq, job.id))
            elif job.state in WAITING:
                table.waiting.append((job.run_at, job.ready_seq, job.id))
            elif job.state in FINISHED and job.expires_at is not None:
                table.finished.append((job.expires_at, job.id))
        heapq.heapify(table.ready)
        heapq.heapify(table.waiting)
        heapq.heapify(table.finished)
        table.unique, table.idempotent, table.seq = unique, idempotent, seq
        return table

    def in_order(self) -> list[Job]:
        """Every job, state by state, each state's in the order they entered it."""
        jobs = self.jobs
        return [jobs[job_id] for ids in self.by_state.values() for job_id in ids]

    def _weigh(self, job: Job) -> None:
        """Count a job that joins the table in its state."""
        size = self.args_bytes[job.id] = json_size(job.args)
        if job.state in FINISHED:
            result = self.result_bytes[job.id] = json_size(job.result)
            self.finished_bytes += size + result
        else:
            self.unfinished_bytes += size

    def unfinished(self) -> int:
        """How many jobs have not finished (they count against the queue's limits)."""
        return len(self.jobs) - self.finished_count()

    def add(self, job: Job, at: float, *, unique_until: float) -> None:
        """A new job (in state queued), due now or at its ``run_at``, and its keys."""
        self.jobs[job.id] = job
        self.by_state[job.state][job.id] = None
        self._weigh(job)
        self.make_due(job, at)
        if job.idempotency_key is not None:
            self.idempotent[job.idempotency_key] = job.id
        if job.unique_key is not None:
            self.unique[job.unique_key] = (job.id, unique_until)

    def holder(
        self, *, idempotency_key: str | None, unique_key: str | None, at: float
    ) -> str | None:
        """The job an enqueue with these keys at ``at`` repeats, if any."""
        if idempotency_key is not None:
            existing = self.idempotent.get(idempotency_key)
            if existing is not None:
                return existing
        if unique_key is not None:
            held = self.unique.get(unique_key)
            if held is not None and held[1] > at and held[0] in self.jobs:
                return held[0]
        return None

    def move(self, job: Job, state: JobState) -> None:
        del self.by_state[job.state][job.id]
        self.by_state[state][job.id] = None
        was_finished, finished = job.state in FINISHED, state in FINISHED
        job.state = state
        if was_finished != finished:
            size = self.args_bytes[job.id]
            if finished:  # its result, set just before, is weighed now
                result = self.result_bytes[job.id] = json_size(job.result)
                self.unfinished_bytes -= size
                self.finished_bytes += size + result
            else:
                self.finished_bytes -= size + self.result_bytes.pop(job.id, 0)
                self.unfinished_bytes += size

    def make_due(self, job: Job, at: float) -> None:
        """Queue ``job`` now if it is due at ``at``, else schedule it for ``job.run_at``."""
        self.seq += 1
        job.ready_seq = self.seq
        if job.run_at <= at:
            self.move(job, JobState.QUEUED)
            heapq.heappush(self.ready, (-job.priority, job.ready_seq, job.id))
        else:
            if job.state is not JobState.FAILED:
                self.move(job, JobState.SCHEDULED)
            heapq.heappush(self.waiting, (job.run_at, job.ready_seq, job.id))

    def finish(self, job: Job, state: JobState, at: float, ttl_s: float) -> None:
        """``job`` ended in ``state`` at ``at``; it is kept ``ttl_s`` more."""
        self.move(job, state)
        job.finished_at, job.lease_until = at, None
        job.expires_at = at + ttl_s
        heapq.heappush(self.finished, (job.expires_at, job.id))

    def forget(self, job: Job) -> None:
        del self.jobs[job.id]
        del self.by_state[job.state][job.id]
        size = self.args_bytes.pop(job.id)
        if job.state in FINISHED:
            self.finished_bytes -= size + self.result_bytes.pop(job.id, 0)
        else:
            self.unfinished_bytes -= size
        if job.idempotency_key is not None and self.idempotent.get(job.idempotency_key) == job.id:
            del self.idempotent[job.idempotency_key]
        if job.unique_key is not None and self.unique.get(job.unique_key, ("",))[0] == job.id:
            del self.unique[job.unique_key]

    def promote(self, now: float) -> None:
        """Scheduled and retrying jobs that are due at ``now`` become queued (not
        journaled: a lease of a due job is valid in either state, so replay agrees)."""
        while self.waiting and self.waiting[0][0] <= now:
            _, seq, job_id = heapq.heappop(self.waiting)
            job = self.jobs.get(job_id)
            if job is not None and job.state in WAITING and job.ready_seq == seq:
                self.move(job, JobState.QUEUED)
                heapq.heappush(self.ready, (-job.priority, seq, job_id))

    def next_due(self) -> float | None:
        """When the next scheduled or retrying job may come due (None: none waits)."""
        return self.waiting[0][0] if self.waiting else None

    def take_ready(self, n: int) -> list[Job]:
        """Up to ``n`` queued jobs off the ready heap, best priority first."""
        taken: list[Job] = []
        while self.ready and len(taken) < n:
            _, seq, job_id = heapq.heappop(self.ready)
            job = self.jobs.get(job_id)
            if job is not None and job.state is JobState.QUEUED and job.ready_seq == seq:
                taken.append(job)
        return taken

    def prunable(self, at: float, keep: int | None, max_bytes: int | None = None) -> bool:
        """Whether a finished job has expired at ``at``, or more than ``keep`` are kept,
        or they weigh more than ``max_bytes``."""
        if not self.finished:
            return False
        return (
            self.finished[0][0] <= at
            or (keep is not None and self.finished_count() > keep)
            or (max_bytes is not None and self.finished_bytes > max_bytes)
        )

    def over(self, keep: int | None, max_bytes: int | None) -> bool:
        """Whether more finished jobs are kept than ``keep``, or of more than ``max_bytes``."""
        return (keep is not None and self.finished_count() > keep) or (
            max_bytes is not None and self.finished_bytes > max_bytes
        )

    def prune(self, at: float, keep: int | None, max_bytes: int | None = None) -> int:
        """Forget finished jobs while ``prunable``, the soonest-expiring first."""
        pruned = 0
        while self.prunable(at, keep, max_bytes):
            expires_at, job_id = heapq.heappop(self.finished)
            job = self.jobs.get(job_id)
            if job is not None and job.state in FINISHED and job.expires_at == expires_at:
                self.forget(job)
                pruned += 1
        return pruned

    def finished_count(self) -> int:
        return sum(len(self.by_state[state]) for state in FINISHED)

    def count(self, state: JobState) -> int:
        return len(self.by_state[state])

    def __len__(self) -> int:
        return len(self.jobs)

    def __repr__(self) -> str:
        depth = " ".join(f"{s.value}={len(ids)}" for s, ids in self.by_state.items() if ids)
        return f"<JobTable {depth or 'empty'}>"


def json_size(value: Any) -> int:
    """``value``'s size as JSON (0 for None: no result)."""
    return 0 if value is None else len(orjson.dumps(value))


__all__ = ["JobTable", "json_size"]
