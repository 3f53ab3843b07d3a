"""HTTP front of the scheduler (service 7), under ``/scheduler``.

Every route needs a principal: a signed-in user, or an API key holding
``scheduler:read`` (reads) or ``scheduler:write`` (changes); a key that makes
a schedule fire into a target also needs that target's scope
(``queue:enqueue``, ``pubsub:publish``). A user sees and changes only their
own schedules (anyone else's id is a 404), up to
``REALM_SCHEDULER_MAX_SCHEDULES_PER_OWNER`` of them, and a schedule fires only
where its owner may: their own queues (any other queue is absent: 404) and
topics the pub/sub ACL lets them publish to (403). Bad input (a bad cron
expression or time zone, an unknown target or handler, oversized arguments) is
refused with a 4xx in the error envelope, and nothing is created.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.auth.client import Principal
from actors.runtime.settings import Settings
from actors.scheduler.client import SchedulerClient
from actors.scheduler.model import MAX_GRACE_S, MAX_ID_CHARS, MAX_JITTER_S, MAX_NAME_CHARS
from actors.scheduler.targets import target_scope
from apps.common import ClientIngress, ingress_application, service_app
from apps.models import Body
from apps.signin import Scope

Misfire = Literal["fire_once", "fire_all", "skip"]
Overlap = Literal["allow", "skip"]
ScheduleId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)]
Reader = Annotated[Principal, Scope("scheduler:read")]
Writer = Annotated[Principal, Scope("scheduler:write")]
#: Longest interval (a year), as the triggers check it.
MAX_EVERY_S = 366 * 86_400.0
TARGET_DOC = (
    "{'type': 'queue', 'queue': <one of your queues>, 'handler': ..., 'args': {...}, "
    "'priority', 'max_attempts', 'timeout_s'} or {'type': 'pubsub', 'topic': ..., 'payload': ...}"
)


class ScheduleFields(Body):
    name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    cron: str | None = Field(None, max_length=200, description="5 fields, or 6 with seconds first.")
    every_s: float | None = Field(
        None, ge=1, le=MAX_EVERY_S, description="Interval in seconds (1 s to a year)."
    )
    at: str | None = Field(
        None, max_length=64, description="ISO 8601; without an offset, local to timezone."
    )
    start_at: str | None = Field(
        None, max_length=64, description="With every_s: the first due time."
    )
    timezone: str | None = Field(None, max_length=64, description="IANA zone; UTC if omitted.")
    target: dict[str, Any] | None = Field(None, description=TARGET_DOC)
    misfire: Misfire | None = None
    misfire_grace_s: float | None = Field(None, ge=0, le=MAX_GRACE_S)
    overlap: Overlap | None = None
    jitter_s: float | None = Field(None, ge=0, le=MAX_JITTER_S)

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class ScheduleIn(ScheduleFields):
    target: dict[str, Any] = Field(..., description=TARGET_DOC)
    paused: bool = False


class ScheduleOut(BaseModel):
    id: str
    name: str
    cron: str | None = None
    every_s: float | None = None
    at: str | None = None
    start_at: str | None = None
    timezone: str
    target: dict[str, Any]
    misfire: Misfire
    misfire_grace_s: float
    overlap: Overlap
    jitter_s: float
    paused: bool
    state: Literal["active", "paused", "completed"]
    next_fire_at: str | None
    created_at: str
    updated_at: str
    fired: int
    failed: int
    skipped: int
    pending: int


class Schedules(BaseModel):
    schedules: list[ScheduleOut]


class FireTime(BaseModel):
    due_at: str
    fire_at: str = Field(..., description="due_at plus this schedule's jitter")


class Upcoming(BaseModel):
    id: str
    upcoming: list[FireTime]


class Run(BaseModel):
    outcome: Literal["fired", "failed", "skipped_overlap", "missed"]
    due_at: str
    fire_at: str | None = None
    handed_at: str | None = None
    lateness_ms: float | None = Field(None, description="handed_at minus fire_at")
    ref: dict[str, Any] | None = Field(None, description="what the target made (a job)")
    error: dict[str, Any] | None = None
    count: int | None = Field(None, description="missed: how many runs")
    last_due_at: str | None = None
    uncounted: bool | None = None
    decided_at: str | None = None


class History(BaseModel):
    id: str
    runs: list[Run]


class Deleted(BaseModel):
    id: str
    deleted: bool


def _may_target(user: Principal, target: dict[str, Any] | None) -> None:
    """A key must also hold the scope of the target it has schedules fire into."""
    if target is not None:
        scope = target_scope(target.get("type"))
        if scope is not None:
            user.require(scope)


#: What any route may answer besides its own result (all in the error envelope).
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token."},
    403: {"description": "A key without the scope; or the owner's ACL refuses the topic."},
    404: {"description": "No such schedule (for the caller), or no such queue of theirs."},
    422: {"description": "The request is not valid."},
}
CHANGES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    403: {
        "description": "A key without the scope, the ACL refuses the topic, or the owner "
        "holds as many schedules as allowed."
    },
    413: {"description": "A target's arguments or payload over the size limit."},
}


def make_app(client: SchedulerClient, settings: Settings) -> FastAPI:
    app = service_app(
        "scheduler",
        description="Cron, interval and one-shot schedules in IANA time zones, "
        "fired exactly once into queues or topics.",
        settings=settings,
    )

    @app.post("/schedules", status_code=201, responses=CHANGES)
    async def create(body: ScheduleIn, user: Writer) -> ScheduleOut:
        _may_target(user, body.target)
        spec = body.given()
        spec["target"] = body.target
        return ScheduleOut(**await client.create(spec, owner=user.user_id))

    @app.get("/schedules", responses=ERRORS)
    async def list_schedules(user: Reader) -> Schedules:
        found = await client.list_schedules(owner=user.user_id)
        return Schedules(schedules=[ScheduleOut(**view) for view in found])

    @app.get("/schedules/{schedule_id}", responses=ERRORS)
    async def get(schedule_id: ScheduleId, user: Reader) -> ScheduleOut:
        return ScheduleOut(**await client.get(schedule_id, owner=user.user_id))

    @app.patch("/schedules/{schedule_id}", responses=CHANGES)
    async def update(schedule_id: ScheduleId, body: ScheduleFields, user: Writer) -> ScheduleOut:
        _may_target(user, body.target)
        if body.target is None and user.scopes is not None:  # a key: the target's scope too
            current = await client.get(schedule_id, owner=user.user_id)
            _may_target(user, current["target"])
        view = await client.update(schedule_id, body.given(), owner=user.user_id)
        return ScheduleOut(**view)

    @app.delete("/schedules/{schedule_id}", responses=ERRORS)
    async def delete(schedule_id: ScheduleId, user: Writer) -> Deleted:
        return Deleted(id=schedule_id, deleted=await client.delete(schedule_id, owner=user.user_id))

    @app.post("/schedules/{schedule_id}/pause", responses=ERRORS)
    async def pause(schedule_id: ScheduleId, user: Writer) -> ScheduleOut:
        return ScheduleOut(**await client.pause(schedule_id, owner=user.user_id))

    @app.post("/schedules/{schedule_id}/resume", responses=ERRORS)
    async def resume(schedule_id: ScheduleId, user: Writer) -> ScheduleOut:
        return ScheduleOut(**await client.resume(schedule_id, owner=user.user_id))

    @app.get("/schedules/{schedule_id}/upcoming", responses=ERRORS)
    async def upcoming(
        schedule_id: ScheduleId, user: Reader, count: Annotated[int, Query(ge=1, le=1000)] = 10
    ) -> Upcoming:
        found = await client.upcoming(schedule_id, count, owner=user.user_id)
        return Upcoming(id=schedule_id, upcoming=[FireTime(**t) for t in found])

    @app.get("/schedules/{schedule_id}/history", responses=ERRORS)
    async def history(
        schedule_id: ScheduleId, user: Reader, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> History:
        found = await client.history(schedule_id, limit, owner=user.user_id)
        return History(id=schedule_id, runs=[Run(**run) for run in found])

    return app


@serve.deployment
@serve.ingress()
class SchedulerIngress(ClientIngress):
    make_client = staticmethod(SchedulerClient)
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(SchedulerIngress, settings)
