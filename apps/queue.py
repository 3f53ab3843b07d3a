"""HTTP front of the task queue (service 2), under ``/queue``.

Every route needs a user (``Authorization: Bearer <token>`` from ``/auth``).
A queue exists once something is enqueued on it (or it is configured). An
enqueue's ``Idempotency-Key`` header becomes the job's idempotency key when
the body gives none: a repeat answers the same job.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Query
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.queue.client import QueueClient
from actors.queue.model import JobState
from actors.queue.settings import QueueSettings
from actors.runtime.errors import BatchTooLarge
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.signin import CurrentUser

QueueName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.:-]*$")]
Key = Annotated[str, Field(min_length=1, max_length=256)]
IdempotencyKey = Annotated[str | None, Header(max_length=256)]


class EnqueueBody(BaseModel):
    handler: str = Field(
        ...,
        max_length=256,
        description="`package.module:function` in an allowed module "
        "(e.g. `actors.queue.handlers:echo`).",
        examples=["actors.queue.handlers:echo"],
    )
    args: dict[str, Any] | None = Field(None, description="Keyword arguments, a JSON object.")
    priority: int = Field(5, ge=0, le=9, description="9 runs first, 0 last.")
    delay_s: float | None = Field(None, ge=0, description="Run this many seconds from now.")
    run_at: float | None = Field(None, description="Run at this Unix time (or not before).")
    unique_key: Key | None = Field(
        None, description="While `unique_for_s` lasts, the same key answers the same job."
    )
    unique_for_s: float | None = Field(None, gt=0)
    idempotency_key: Key | None = Field(
        None,
        description="The same key answers the same job while it is kept; "
        "handlers see it (the job id when absent) to make effects happen once.",
    )
    max_attempts: int | None = Field(None, ge=1, le=1_000)
    timeout_s: float | None = Field(None, gt=0, description="Longest run of one attempt.")


class Job(BaseModel):
    id: str
    queue: str
    handler: str
    args: dict[str, Any]
    priority: int
    state: JobState
    attempts: int
    max_attempts: int
    timeout_s: float
    enqueued_at: float = Field(..., description="Unix time.")
    run_at: float = Field(..., description="When it is (or was) due, Unix time.")
    started_at: float | None
    finished_at: float | None
    lease_until: float | None
    unique_key: str | None
    idempotency_key: str | None
    result: Any = None
    error: str | None = None
    progress: Any = None
    expires_at: float | None = Field(None, description="When the finished job is pruned.")
    duplicate: bool | None = Field(
        None, description="On enqueue: an existing job answered for this key."
    )


class BatchBody(BaseModel):
    jobs: list[EnqueueBody] = Field(..., min_length=1)


class Jobs(BaseModel):
    jobs: list[Job]


class JobPage(BaseModel):
    jobs: list[Job]
    total: int
    next_offset: int | None = Field(..., description="Offset of the next page; null at the end.")


class IdsBody(BaseModel):
    ids: list[str] | None = Field(None, description="These dead jobs, or null for every one.")


class Ids(BaseModel):
    ids: list[str]


class Limits(BaseModel):
    queue: str
    paused: bool
    concurrency: int
    rate_limit_per_s: float | None
    rate_burst: int | None


class ConfigBody(BaseModel):
    concurrency: int | None = Field(None, ge=1, description="Null keeps the current one.")
    rate_limit_per_s: float | None = Field(None, gt=0, description="Null: no rate limit.")
    rate_burst: int | None = Field(None, ge=1)


class Stats(Limits):
    depth: dict[str, int]
    in_flight: int
    completed: int
    failed: int = Field(..., description="Failed attempts (including lost workers and leases).")
    counters: dict[str, int]
    throughput_per_s: float = Field(..., description="Completions per second over the last minute.")
    wait_s: dict[str, float | None] = Field(..., description="Due to started: p50, p99.")
    run_s: dict[str, float | None]


def _spec(body: EnqueueBody, idempotency_key: str | None = None) -> dict[str, Any]:
    spec = body.model_dump(exclude_none=True)
    if idempotency_key and "idempotency_key" not in spec:
        spec["idempotency_key"] = idempotency_key
    return spec


def make_app(client: QueueClient, settings: Settings) -> FastAPI:
    app = service_app(
        title="task queue",
        description="Durable named job queues: at-least-once with leases, retries with "
        "backoff, dead letters, priorities, delays, unique jobs, rate limits.",
        settings=settings,
    )
    max_batch_jobs = QueueSettings.of(settings).max_batch_jobs

    @app.post("/{queue}/jobs", status_code=201)
    async def enqueue(
        queue: QueueName,
        body: EnqueueBody,
        user: CurrentUser,
        idempotency_key: IdempotencyKey = None,
    ) -> Job:
        spec = _spec(body, idempotency_key)
        return Job(
            **await client.enqueue(queue, spec.pop("handler"), spec.pop("args", None), **spec)
        )

    @app.post("/{queue}/jobs/batch", status_code=201)
    async def enqueue_batch(queue: QueueName, body: BatchBody, user: CurrentUser) -> Jobs:
        if len(body.jobs) > max_batch_jobs:
            raise BatchTooLarge(size=len(body.jobs), limit=max_batch_jobs)
        jobs = await client.enqueue_many(queue, [_spec(job) for job in body.jobs])
        return Jobs(jobs=[Job(**job) for job in jobs])

    @app.get("/{queue}/jobs")
    async def list_jobs(
        queue: QueueName,
        user: CurrentUser,
        state: JobState | None = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
    ) -> JobPage:
        page = await client.list(queue, state.value if state else None, offset=offset, limit=limit)
        return JobPage(**page)

    @app.get("/{queue}/jobs/{job_id}", responses={404: {}})
    async def get_job(queue: QueueName, job_id: str, user: CurrentUser) -> Job:
        return Job(**await client.get(queue, job_id))

    @app.get("/{queue}/jobs/{job_id}/wait", responses={404: {}})
    async def wait_job(
        queue: QueueName,
        job_id: str,
        user: CurrentUser,
        timeout_s: Annotated[float, Query(ge=0, le=60)] = 30.0,
    ) -> Job:
        """The job once it finished, or as it is after ``timeout_s`` (a long poll)."""
        return Job(**await client.wait(queue, job_id, timeout_s=timeout_s))

    @app.post("/{queue}/jobs/{job_id}/cancel", responses={404: {}, 409: {}})
    async def cancel_job(queue: QueueName, job_id: str, user: CurrentUser) -> Job:
        return Job(**await client.cancel(queue, job_id))

    @app.post("/{queue}/jobs/{job_id}/retry", responses={404: {}, 409: {}})
    async def retry_job(queue: QueueName, job_id: str, user: CurrentUser) -> Job:
        return Job(**await client.retry(queue, job_id))

    @app.post("/{queue}/dead/retry", responses={404: {}, 409: {}})
    async def retry_dead(queue: QueueName, body: IdsBody, user: CurrentUser) -> Ids:
        return Ids(ids=await client.retry_dead(queue, body.ids))

    @app.post("/{queue}/dead/discard", responses={404: {}, 409: {}})
    async def discard_dead(queue: QueueName, body: IdsBody, user: CurrentUser) -> Ids:
        return Ids(ids=await client.discard_dead(queue, body.ids))

    @app.get("/{queue}/stats")
    async def stats(queue: QueueName, user: CurrentUser) -> Stats:
        return Stats(**await client.stats(queue))

    @app.post("/{queue}/pause")
    async def pause(queue: QueueName, user: CurrentUser) -> Limits:
        return Limits(**await client.pause(queue))

    @app.post("/{queue}/resume")
    async def resume(queue: QueueName, user: CurrentUser) -> Limits:
        return Limits(**await client.resume(queue))

    @app.put("/{queue}/config")
    async def configure(queue: QueueName, body: ConfigBody, user: CurrentUser) -> Limits:
        return Limits(**await client.configure(queue, **body.model_dump()))

    return app


@serve.deployment
@serve.ingress()
class QueueIngress(ClientIngress):
    make_client = QueueClient
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(QueueIngress, settings)
