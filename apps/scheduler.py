"""HTTP front of the scheduler (service 7), under ``/scheduler``; every route needs a user.

A user sees and changes only their own schedules (anyone else's id is a 404).
Bad input (a bad cron expression or time zone, an unknown target or handler,
oversized arguments) is refused with a 4xx in the error envelope, and nothing
is created.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from actors.runtime.settings import Settings
from actors.scheduler.client import SchedulerClient
from apps.common import ClientIngress, ingress_application, service_app
from apps.signin import CurrentUser

Misfire = Literal["fire_once", "fire_all", "skip"]
Overlap = Literal["allow", "skip"]


class ScheduleFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    cron: str | None = Field(None, description="5 fields, or 6 with seconds first.")
    every_s: float | None = Field(None, description="Interval in seconds (>= 1).")
    at: str | None = Field(None, description="ISO 8601; without an offset, local to timezone.")
    start_at: str | None = Field(None, description="With every_s: the first due time.")
    timezone: str | None = Field(None, description="IANA zone; UTC if omitted.")
    target: dict[str, Any] | None = Field(
        None, description="{'type': 'queue', ...} or {'type': 'pubsub', ...}"
    )
    misfire: Misfire | None = None
    misfire_grace_s: float | None = None
    overlap: Overlap | None = None
    jitter_s: float | None = None

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class ScheduleIn(ScheduleFields):
    target: dict[str, Any] = Field(
        ..., description="{'type': 'queue', ...} or {'type': 'pubsub', ...}"
    )
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


def make_app(client: SchedulerClient, settings: Settings) -> FastAPI:
    app = service_app(
        title="scheduler",
        description="Cron, interval and one-shot schedules in IANA time zones, "
        "fired exactly once into queues or topics.",
        settings=settings,
    )
    errors: dict[int | str, dict[str, Any]] = {404: {}, 413: {}, 422: {}}

    @app.post("/schedules", status_code=201, responses=errors)
    async def create(body: ScheduleIn, user: CurrentUser) -> ScheduleOut:
        spec = body.given()
        spec["target"] = body.target
        return ScheduleOut(**await client.create(spec, owner=user.user_id))

    @app.get("/schedules")
    async def list_schedules(user: CurrentUser) -> Schedules:
        found = await client.list_schedules(owner=user.user_id)
        return Schedules(schedules=[ScheduleOut(**view) for view in found])

    @app.get("/schedules/{schedule_id}", responses=errors)
    async def get(schedule_id: str, user: CurrentUser) -> ScheduleOut:
        return ScheduleOut(**await client.get(schedule_id, owner=user.user_id))

    @app.patch("/schedules/{schedule_id}", responses=errors)
    async def update(schedule_id: str, body: ScheduleFields, user: CurrentUser) -> ScheduleOut:
        view = await client.update(schedule_id, body.given(), owner=user.user_id)
        return ScheduleOut(**view)

    @app.delete("/schedules/{schedule_id}", responses=errors)
    async def delete(schedule_id: str, user: CurrentUser) -> Deleted:
        return Deleted(id=schedule_id, deleted=await client.delete(schedule_id, owner=user.user_id))

    @app.post("/schedules/{schedule_id}/pause", responses=errors)
    async def pause(schedule_id: str, user: CurrentUser) -> ScheduleOut:
        return ScheduleOut(**await client.pause(schedule_id, owner=user.user_id))

    @app.post("/schedules/{schedule_id}/resume", responses=errors)
    async def resume(schedule_id: str, user: CurrentUser) -> ScheduleOut:
        return ScheduleOut(**await client.resume(schedule_id, owner=user.user_id))

    @app.get("/schedules/{schedule_id}/upcoming", responses=errors)
    async def upcoming(
        schedule_id: str, user: CurrentUser, count: Annotated[int, Query(ge=1, le=1000)] = 10
    ) -> Upcoming:
        found = await client.upcoming(schedule_id, count, owner=user.user_id)
        return Upcoming(id=schedule_id, upcoming=[FireTime(**t) for t in found])

    @app.get("/schedules/{schedule_id}/history", responses=errors)
    async def history(
        schedule_id: str, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
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
