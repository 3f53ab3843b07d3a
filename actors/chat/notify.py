"""Mentions: how a mentioned user hears of a message, behind one small interface.

The shard calls ``MentionNotifier.notify`` once per mentioned member after the
message is durable, in the background (a send does not wait for it), at most
once: a shard that crashes between the commit and the notice does not send it.

``PushMentions`` sends it through the push service (``actors.push.client``) to
every device of the mentioned user: Web Push, FCM, APNs, webhooks and in-app
devices, whose offline inbox keeps it until the device connects. The sender
of the notification is the message's author; the idempotency key is made of
the room, the seq and the mentioned user, so a notice repeated for any reason
is delivered once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from actors.push.client import PushClient
from actors.runtime.settings import Settings

log = logging.getLogger(__name__)

#: Characters of the message's text a notice carries.
EXCERPT_CHARS = 200
#: Characters of the room's name a notice's title carries.
TITLE_ROOM_CHARS = 100


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

    @property
    def excerpt(self) -> str:
        return self.text[:EXCERPT_CHARS]

    def body(self) -> dict[str, Any]:
        """The notification's ``data``: what a client needs to open the message."""
        return {
            "type": "mention",
            "room": self.room,
            "room_name": self.room_name,
            "seq": self.seq,
            "at": self.at,
            "from": {"user_id": self.sender_id, "username": self.sender_name},
            "excerpt": self.excerpt,
        }

    def title(self) -> str:
        return (
            f"{self.sender_name or 'Someone'} mentioned you in {self.room_name[:TITLE_ROOM_CHARS]}"
        )

    def key(self) -> str:
        """The push idempotency key: one notification per room, seq and mentioned user
        (hashed: room and user ids together may be longer than a key may be)."""
        made = hashlib.blake2b(
            f"{self.room}\0{self.seq}\0{self.user_id}".encode(), digest_size=16
        ).hexdigest()
        return f"chat-mention:{made}"


class MentionNotifier(Protocol):
    async def notify(self, mention: Mention) -> None:
        """Tell ``mention.user_id`` of the message (raise to have the failure logged)."""

    async def close(self) -> None: ...


class PushMentions:
    """A push notification to every device of the mentioned user."""

    def __init__(self, settings: Settings, push: PushClient | None = None) -> None:
        self.settings = settings
        self._push = push  #: made on first use (the shard's process has Ray by then)

    async def notify(self, mention: Mention) -> None:
        if self._push is None:
            self._push = PushClient(self.settings)
        await self._push.send(
            mention.sender_id,
            to={"user": mention.user_id},
            title=mention.title(),
            body=mention.excerpt,
            data=mention.body(),
            collapse_key=None,
            priority="high",
            idempotency_key=mention.key(),
            privileged=True,  # the room checked that both are members
        )

    async def close(self) -> None:
        if self._push is not None:
            await self._push.close()


class NoMentions:
    """A notifier that tells nobody (tests, and deployments without notices)."""

    async def notify(self, mention: Mention) -> None:
        return None

    async def close(self) -> None:
        return None


__all__ = ["Mention", "MentionNotifier", "NoMentions", "PushMentions"]
