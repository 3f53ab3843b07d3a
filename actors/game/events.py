"""World events: each zone's timed events, fired by the scheduler service.

Every event of a zone's map (``"events"``, e.g. the dragon at 20:00 in the
caves' time zone) is one daily cron schedule in the scheduler, owned by the
game (``WORLD_OWNER``), in the zone's time zone, whose target publishes the
event on the game's private pub/sub topic ``TOPIC``. The rooms list actor
(one per deployment) makes the schedules that are missing when it starts,
follows the topic, and hands each event to every open room of its zone (a
boss appears once: a room that has one alive ignores the next).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from actors.game import world

log = logging.getLogger(__name__)

#: The owner of the game's schedules (not a user: no user id has this shape).
WORLD_OWNER = "svc-game"
#: Private to that owner (pub/sub's ``user.<id>.`` rule): nobody else publishes here.
TOPIC = f"user.{WORLD_OWNER}.world"


def schedule_name(zone: str, event: dict[str, Any]) -> str:
    return f"game.{zone}.{event['kind']}.{event.get('monster', '')}.{event['at']}"


def schedules() -> list[dict[str, Any]]:
    """The scheduler specs of every zone's events."""
    specs = []
    for name in world.zones():
        zone = world.load(name)
        for event in zone.events:
            hour, minute = (int(part) for part in event["at"].split(":"))
            specs.append({
                "name": schedule_name(name, event),
                "cron": f"{minute} {hour} * * *",
                "timezone": zone.time_zone,
                "target": {"type": "pubsub", "topic": TOPIC, "payload": {
                    "zone": name, "kind": event["kind"], "monster": event.get("monster", ""),
                    "x": event["x"], "y": event["y"],
                }},
            })  # fmt: skip
    return specs


async def ensure_schedules(scheduler: Any) -> int:
    """Create the schedules that do not exist yet; how many were made."""
    existing = {s.get("name") for s in await scheduler.list_schedules(owner=WORLD_OWNER)}
    made = 0
    for spec in schedules():
        if spec["name"] not in existing:
            await scheduler.create(spec, owner=WORLD_OWNER)
            made += 1
    return made


async def follow(pubsub: Any, deliver: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Hand every event published on ``TOPIC`` to ``deliver`` (until cancelled)."""
    subscription = await pubsub.subscribe(TOPIC)
    async for message in subscription:
        try:
            event = orjson.loads(message.payload)
            await deliver(event)
        except Exception:
            log.exception("world event %r not delivered", message.payload[:200])
