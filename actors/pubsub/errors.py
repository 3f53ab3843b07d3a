"""Errors of the pubsub service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import RealmError


class NoReply(RealmError):
    """Nobody answered a pub/sub request in time."""

    code = "no_reply"
    status = 504
