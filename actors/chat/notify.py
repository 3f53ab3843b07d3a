"""Mentions: how a mentioned user hears of a message, behind one small interface.

The shard calls ``MentionNotifier.notify`` once per mentioned member after the
message is durable, in the background (a send does not wait for it), at most
once: a shard that crashes between the commit and the notice does not send it.

For now ``PubSubMentions`` publishes an in-app notice to the pub/sub topic
``user.<id>.mentions`` (private to that user: only they may subscribe to it),
which their WebSocket or SSE clients of ``/pubsub`` receive. The push service
(service 12) will replace it with a notifier that reaches every device of the
user, offline ones included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from actors.pubsub.client import PubSubClient
from actors.runtime.settings import Settings

log = logging.getLogger(__name__)

#: Characters of the message's text a notice carries.
EXCERPT_CHARS = 200


@dataclass(frozen=True, slots=True)
class Mention:
    user_id: str  #: who is mentioned
    room: str
    room_name: str
    seq: int
    at: float
    sender_id: str
    sender_name: str
    text: str

    def body(self) -> dict[str, Any]:
        return {
            "type": "mention",
            "room": self.room,
            "room_name": self.room_name,
            "seq": self.seq,
            "at": self.at,
            "from": {"user_id": self.sender_id, "username": self.sender_name},
            "excerpt": self.text[:EXCERPT_CHARS],
        }


class MentionNotifier(Protocol):
    async def notify(self, mention: Mention) -> None:
        """Tell ``mention.user_id`` of the message (raise to have the failure logged)."""

    async def close(self) -> None: ...


def mentions_topic(user_id: str) -> str:
    return f"user.{user_id}.mentions"


class PubSubMentions:
    """A notice on ``user.<id>.mentions`` through pub/sub (the push service replaces this)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._bus: PubSubClient | None = None

    async def notify(self, mention: Mention) -> None:
        if self._bus is None:
            self._bus = PubSubClient(self.settings)
        key = f"chat-mention:{mention.room}:{mention.seq}:{mention.user_id}"
        await self._bus.publish(
            mentions_topic(mention.user_id), orjson.dumps(mention.body()), key=key
        )

    async def close(self) -> None:
        if self._bus is not None:
            await self._bus.close()


class NoMentions:
    """A notifier that tells nobody (tests, and deployments without notices)."""

    async def notify(self, mention: Mention) -> None:
        return None

    async def close(self) -> None:
        return None


__all__ = ["Mention", "MentionNotifier", "NoMentions", "PubSubMentions", "mentions_topic"]
