"""HTTP front of the task queue (service 2), under ``/queue``.

Every route needs a principal (``Authorization: Bearer <token>``: a signed-in
user, or an API key holding the route's scope: ``queue:read``,
``queue:enqueue`` or ``queue:manage``). Queues belong to their owner, the
caller's user: a queue is created with ``PUT /queue/{queue}`` (within the
owner's quota), listed with ``GET /queue/``, deleted with ``DELETE
/queue/{queue}``; every other route on a queue that does not exist for the
caller (someone else's included) answers 404 and creates nothing. An
enqueue's ``Idempotency-Key`` header becomes the job's idempotency key when
the body gives none: a repeat answers the same job.
"""

from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Query, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.auth.client import Principal
from actors.queue.client import QueueClient
from actors.queue.model import (
    MAX_CONCURRENCY,
    MAX_HANDLER_CHARS,
    MAX_KEY_CHARS,
    MAX_RATE_BURST,
    MAX_RATE_PER_S,
    JobState,
)
from actors.queue.settings import QueueSettings
from actors.runtime.errors import BatchTooLarge
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.models import Body
from apps.signin import Scope

QueueName = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
JobId = Annotated[str, Path(min_length=1, max_length=64)]
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS)]
IdempotencyKey = Annotated[str | None, Header(max_length=MAX_KEY_CHARS)]
Reader = Annotated[Principal, Scope("queue:read")]
Enqueuer = Annotated[Principal, Scope("queue:enqueue")]
Manager = Annotated[Principal, Scope("queue:manage")]
#: The largest Unix time a body may name (the year 9999): a ``run_at`` is also
#: refused further ahead than ``REALM_QUEUE_MAX_DELAY_S``.
MAX_UNIX_TIME = 253_402_300_799.0
#: Largest page offset.
MAX_OFFSET = 10_000_000

#: Statuses every route may answer besides its own (all in the error envelope).
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token."},
    403: {"description": "An API key without this route's scope."},
    404: {"description": "No such queue (for the caller), or no such job."},
    422: {"description": "The request is not valid."},
}


def _errors(*more: int) -> dict[int | str, dict[str, Any]]:
    described = {
        409: {"description": "The job is not in a state that allows this."},
        413: {"description": "Arguments or the batch over their limit."},
        429: {"description": "The queue holds as many unfinished jobs as it may."},
    }
    return {**ERRORS, **{status: described[status] for status in more}}


def make_enqueue_body(config: QueueSettings) -> type[Body]:
    """The enqueue body, its maxima those of this deployment's settings."""

    class EnqueueBody(Body):
        handler: str = Field(
            ...,
            min_length=1,
            max_length=MAX_HANDLER_CHARS,
            description="`package.module:function`, a function defined in an allowed module "
            "(e.g. `actors.queue.handlers:echo`).",
            examples=["actors.queue.handlers:echo"],
        )
        args: dict[str, Any] | None = Field(None, description="Keyword arguments, a JSON object.")
        priority: int = Field(5, ge=0, le=9, description="9 runs first, 0 last.")
        delay_s: float | None = Field(
            None, ge=0, le=config.max_delay_s, description="Run this many seconds from now."
        )
        run_at: float | None = Field(
            None,
            ge=0,
            le=MAX_UNIX_TIME,
            description="Run at this Unix time (or not before); at most "
            f"{config.max_delay_s:g} s ahead.",
        )
        unique_key: Key | None = Field(
            None, description="While `unique_for_s` lasts, the same key answers the same job."
        )
        unique_for_s: float | None = Field(None, gt=0, le=config.max_delay_s)
        idempotency_key: Key | None = Field(
            None,
            description="The same key answers the same job while it is kept; "
            "handlers see it (the job id when absent) to make effects happen once.",
        )
        max_attempts: int | None = Field(None, ge=1, le=1_000)
        timeout_s: float | None = Field(
            None, gt=0, le=config.max_job_timeout_s, description="Longest run of one attempt."
        )

    return EnqueueBody


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


class Jobs(BaseModel):
    jobs: list[Job]


class JobPage(BaseModel):
    jobs: list[Job]
    total: int
    next_offset: int | None = Field(..., description="Offset of the next page; null at the end.")


class IdsBody(Body):
    ids: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, max_length=10_000, description="These dead jobs, or null for every one."
    )


class Ids(BaseModel):
    ids: list[str]


class Limits(BaseModel):
    queue: str
    paused: bool
    concurrency: int
    rate_limit_per_s: float | None
    rate_burst: int | None


class ConfigBody(Body):
    concurrency: int | None = Field(
        None, ge=1, le=MAX_CONCURRENCY, description="Null keeps the current one."
    )
    rate_limit_per_s: float | None = Field(
        None, gt=0, le=MAX_RATE_PER_S, description="Null: no rate limit."
    )
    rate_burst: int | None = Field(None, ge=1, le=MAX_RATE_BURST)


class QueueBody(ConfigBody):
    """A queue's limits when it is created (each omitted: the deployment's default)."""


class QueueInfo(Limits):
    created_at: float = Field(..., description="Unix time.")


class QueueListed(BaseModel):
    queue: str
    created_at: float = Field(..., description="Unix time.")


class Queues(BaseModel):
    queues: list[QueueListed]
    limit: int = Field(..., description="How many queues the owner may hold.")


class Deleted(BaseModel):
    queue: str
    deleted: bool


class Stats(Limits):
    depth: dict[str, int]
    in_flight: int
    completed: int
    failed: int = Field(..., description="Failed attempts (including lost workers and leases).")
    counters: dict[str, int]
    throughput_per_s: float = Field(..., description="Completions per second over the last minute.")
    wait_s: dict[str, float | None] = Field(..., description="Due to started: p50, p99.")
    run_s: dict[str, float | None]
    bytes: dict[str, int] = Field(
        ..., description="Arguments of unfinished jobs; arguments and results of finished ones."
    )


def _spec(body: Body, idempotency_key: str | None = None) -> dict[str, Any]:
    spec = body.model_dump(exclude_none=True)
    if idempotency_key and "idempotency_key" not in spec:
        spec["idempotency_key"] = idempotency_key
    return spec


def make_app(client: QueueClient, settings: Settings) -> FastAPI:
    app = service_app(
        "queue",
        title="task queue",
        description="Durable named job queues: at-least-once with leases, retries with "
        "backoff, dead letters, priorities, delays, unique jobs, rate limits.",
        settings=settings,
    )
    config = QueueSettings.of(settings)
    max_batch_jobs = config.max_batch_jobs
    # A class made here (its maxima are the settings'): so this module does not postpone
    # annotations, and FastAPI reads the routes' annotations as the objects they name.
    EnqueueBody = make_enqueue_body(config)

    class BatchBody(Body):
        jobs: list[EnqueueBody] = Field(..., min_length=1)  # type: ignore[valid-type]

    @app.get("/", responses=ERRORS)
    async def list_queues(user: Reader) -> Queues:
        """The caller's queues, by name."""
        found = await client.list_queues(owner=user.user_id)
        return Queues(queues=[QueueListed(**q) for q in found], limit=config.max_queues_per_owner)

    @app.put(
        "/{queue}",
        status_code=201,
        responses={
            **ERRORS,
            200: {"model": QueueInfo, "description": "The queue existed; its limits are set."},
            403: {"description": "The owner holds as many queues as allowed, or a key's scope."},
        },
    )
    async def create_queue(
        queue: QueueName, user: Manager, response: Response, body: QueueBody | None = None
    ) -> QueueInfo:
        """Create the caller's queue (201), or set the limits of the one they have (200)."""
        limits = (body or QueueBody()).model_dump(exclude_none=True)
        info = await client.create(queue, owner=user.user_id, **limits)
        if not info.pop("created"):
            response.status_code = 200
        return QueueInfo(**info)

    @app.get("/{queue}", responses=ERRORS)
    async def get_queue(queue: QueueName, user: Reader) -> QueueInfo:
        return QueueInfo(**await client.info(queue, owner=user.user_id))

    @app.delete("/{queue}", responses=ERRORS)
    async def delete_queue(queue: QueueName, user: Manager) -> Deleted:
        """Delete the queue and every job in it (running ones are stopped)."""
        return Deleted(queue=queue, deleted=await client.delete(queue, owner=user.user_id))

    @app.post("/{queue}/jobs", status_code=201, responses=_errors(413, 429))
    async def enqueue(
        queue: QueueName,
        body: EnqueueBody,  # type: ignore[valid-type]
        user: Enqueuer,
        idempotency_key: IdempotencyKey = None,
    ) -> Job:
        spec = _spec(body, idempotency_key)
        job = await client.enqueue(
            queue, spec.pop("handler"), spec.pop("args", None), owner=user.user_id, **spec
        )
        return Job(**job)

    @app.post("/{queue}/jobs/batch", status_code=201, responses=_errors(413, 429))
    async def enqueue_batch(queue: QueueName, body: BatchBody, user: Enqueuer) -> Jobs:
        if len(body.jobs) > max_batch_jobs:
            raise BatchTooLarge(size=len(body.jobs), limit=max_batch_jobs)
        jobs = await client.enqueue_many(
            queue, [_spec(job) for job in body.jobs], owner=user.user_id
        )
        return Jobs(jobs=[Job(**job) for job in jobs])

    @app.get("/{queue}/jobs", responses=ERRORS)
    async def list_jobs(
        queue: QueueName,
        user: Reader,
        state: JobState | None = None,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
    ) -> JobPage:
        page = await client.list(
            queue, state.value if state else None, owner=user.user_id, offset=offset, limit=limit
        )
        return JobPage(**page)

    @app.get("/{queue}/jobs/{job_id}", responses=ERRORS)
    async def get_job(queue: QueueName, job_id: JobId, user: Reader) -> Job:
        return Job(**await client.get(queue, job_id, owner=user.user_id))

    @app.get("/{queue}/jobs/{job_id}/wait", responses=ERRORS)
    async def wait_job(
        queue: QueueName,
        job_id: JobId,
        user: Reader,
        timeout_s: Annotated[float, Query(ge=0, le=60)] = 30.0,
    ) -> Job:
        """The job once it finished, or as it is after ``timeout_s`` (a long poll)."""
        return Job(**await client.wait(queue, job_id, owner=user.user_id, timeout_s=timeout_s))

    @app.post("/{queue}/jobs/{job_id}/cancel", responses=_errors(409))
    async def cancel_job(queue: QueueName, job_id: JobId, user: Manager) -> Job:
        return Job(**await client.cancel(queue, job_id, owner=user.user_id))

    @app.post("/{queue}/jobs/{job_id}/retry", responses=_errors(409))
    async def retry_job(queue: QueueName, job_id: JobId, user: Manager) -> Job:
        return Job(**await client.retry(queue, job_id, owner=user.user_id))

    @app.post("/{queue}/dead/retry", responses=_errors(409))
    async def retry_dead(queue: QueueName, body: IdsBody, user: Manager) -> Ids:
        return Ids(ids=await client.retry_dead(queue, body.ids, owner=user.user_id))

    @app.post("/{queue}/dead/discard", responses=_errors(409))
    async def discard_dead(queue: QueueName, body: IdsBody, user: Manager) -> Ids:
        return Ids(ids=await client.discard_dead(queue, body.ids, owner=user.user_id))

    @app.get("/{queue}/stats", responses=ERRORS)
    async def stats(queue: QueueName, user: Reader) -> Stats:
        return Stats(**await client.stats(queue, owner=user.user_id))

    @app.post("/{queue}/pause", responses=ERRORS)
    async def pause(queue: QueueName, user: Manager) -> Limits:
        return Limits(**await client.pause(queue, owner=user.user_id))

    @app.post("/{queue}/resume", responses=ERRORS)
    async def resume(queue: QueueName, user: Manager) -> Limits:
        return Limits(**await client.resume(queue, owner=user.user_id))

    @app.put("/{queue}/config", responses=ERRORS)
    async def configure(queue: QueueName, body: ConfigBody, user: Manager) -> Limits:
        return Limits(**await client.configure(queue, owner=user.user_id, **body.model_dump()))

    return app


@serve.deployment
@serve.ingress()
class QueueIngress(ClientIngress):
    make_client = QueueClient
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(QueueIngress, settings)
