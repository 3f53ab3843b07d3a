"""Chat as clients see it, over HTTP, WebSocket and SSE alike: events, presence, typing.

``post_json`` renders what a shard posts (``actors.chat.model.Post``) as the
JSON line a client receives; the replica's ``ChatClient`` calls it once per
post, however many connections get it.
"""

from __future__ import annotations

from typing import Any

import orjson

from actors.chat.client import Event, Post


def event_body(room: str, event: Event) -> dict[str, Any]:
    """A room's numbered event, as clients see it (see docs/chat.md)."""
    body: dict[str, Any] = {
        "type": "event",
        "room": room,
        "seq": event.seq,
        "at": event.at,
        "kind": event.kind,
        "user_id": event.user,
        "username": event.username,
    }
    kind = event.kind
    if kind == "message":
        body |= {
            "text": event.text,
            "reply_to": event.reply_to or None,
            "mentions": list(event.mentions),
            "client_id": event.client_id or None,
        }
    elif kind == "edit":
        body |= {"target": event.target, "text": event.text}
    elif kind == "delete":
        body |= {"target": event.target}
    elif kind == "reaction":
        body |= {"target": event.target, "emoji": event.emoji, "on": event.on}
    elif kind == "member":
        body |= {"action": event.action, "subject": event.subject}
        if event.action == "role":
            body["role"] = event.value
        else:
            body["subject_name"] = event.value
    elif kind == "room":
        body |= {"action": event.action, "value": event.value or None}
    return body


def users(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"user_id": user, "username": name} for user, name in pairs]


def post_body(post: Post) -> dict[str, Any]:
    kind, room = post.kind, post.room
    if kind == "event":
        assert post.event is not None
        return event_body(room, post.event)
    if kind == "presence_state":
        return {"type": "presence", "room": room, "users": users(post.users)}
    if kind == "presence":
        return {
            "type": "presence_diff",
            "room": room,
            "joins": users(post.users),
            "leaves": list(post.leaves),
        }
    if kind == "typing":
        return {"type": "typing", "room": room, "user_id": post.user, "username": post.username}
    if kind == "receipt":
        return {"type": "receipt", "room": room, "user_id": post.user, "seq": post.seq}
    return {"type": "room_deleted", "room": room}


def post_json(post: Post) -> str:
    """``post_body`` as one line of JSON."""
    return orjson.dumps(post_body(post)).decode()


def frame(body: dict[str, Any]) -> str:
    return orjson.dumps(body).decode()


__all__ = ["event_body", "frame", "post_body", "post_json", "users"]
