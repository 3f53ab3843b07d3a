"""Chat's HTTP routes: rooms, membership, moderation, messages, history, search, presence.

Scopes: ``chat:read`` to read, ``chat:write`` to send and to join or leave,
``chat:manage`` to create, change, archive and delete rooms and to moderate.
A room the caller cannot see answers 404 ``room_not_found``, as one that does
not exist.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from pydantic import Field

from actors.auth.client import Principal
from actors.chat.client import ChatClient
from actors.chat.model import (
    MAX_DURATION_S,
    MAX_MENTIONS,
    MAX_NAME_CHARS,
    MAX_PAGE,
    MAX_QUERY_CHARS,
    MAX_SLOW_MODE_S,
    MAX_TOPIC_CHARS,
)
from actors.chat.settings import ChatSettings
from apps.chat.frames import event_body
from apps.models import Body
from apps.signin import Scope, current_principal

RoomId = Annotated[str, Path(max_length=40, description="The room's id (`r-…` or `d-…`).")]
UserId = Annotated[str, Path(max_length=64)]
SeqPath = Annotated[int, Path(ge=1)]
Reader = Annotated[Principal, Scope("chat:read")]
Writer = Annotated[Principal, Scope("chat:write")]
Manager = Annotated[Principal, Scope("chat:manage")]
#: Signed in, with the scope checked in the route (it depends on whom the call is about).
Caller = Annotated[Principal, Depends(current_principal)]
UserIdField = Annotated[str, Field(min_length=1, max_length=64)]
Duration = Annotated[float, Field(gt=0, le=MAX_DURATION_S)]
ERRORS: dict[int | str, dict[str, Any]] = {401: {}, 403: {}, 404: {}, 409: {}, 422: {}}

# --- bodies -------------------------------------------------------------------------------


class RoomBody(Body):
    kind: Literal["public", "private"] = "public"
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
    topic: Annotated[str, Field(max_length=MAX_TOPIC_CHARS)] = ""


class DirectBody(Body):
    user_id: UserIdField


class UpdateBody(Body):
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)] | None = None
    topic: Annotated[str, Field(max_length=MAX_TOPIC_CHARS)] | None = None
    slow_mode_s: Annotated[float, Field(ge=0, le=MAX_SLOW_MODE_S)] | None = Field(
        None, description="Seconds between two messages of a member (0: off)."
    )


class UserBody(Body):
    user_id: UserIdField


class RoleBody(Body):
    role: Literal["moderator", "member"]


class BanBody(Body):
    user_id: UserIdField
    duration_s: Duration | None = Field(None, description="Null: until lifted.")
    reason: Annotated[str, Field(max_length=500)] = ""


class MuteBody(Body):
    user_id: UserIdField
    duration_s: Duration | None = Field(None, description="Null: until lifted.")


class SendBody(Body):
    text: str = Field(..., description="UTF-8, at most REALM_CHAT_MAX_MESSAGE_BYTES bytes.")
    client_id: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="The sender's id for the message: a repeat answers the first send."
    )
    reply_to: Annotated[int, Field(ge=1)] | None = Field(None, description="The parent's seq.")
    mentions: Annotated[list[UserIdField], Field(max_length=MAX_MENTIONS)] = Field(
        default_factory=list, description="User ids to notify (members only; @username works too)."
    )


class EditBody(Body):
    text: str


class ReadBody(Body):
    seq: Annotated[int, Field(ge=0)]


def router(client: ChatClient, config: ChatSettings) -> APIRouter:
    routes = APIRouter()

    # --- rooms --------------------------------------------------------------------------

    @routes.post("/rooms", status_code=201, responses=ERRORS)
    async def create_room(
        body: RoomBody,
        user: Manager,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> dict[str, Any]:
        """A public or private room, owned by the caller (``max_rooms_per_owner``)."""
        return await client.create_room(
            user.user_id,
            user.username,
            kind=body.kind,
            name=body.name,
            topic=body.topic,
            key=idempotency_key,
        )

    @routes.post("/direct", status_code=201, responses=ERRORS)
    async def create_direct(body: DirectBody, user: Writer, response: Response) -> dict[str, Any]:
        """The caller's direct room with ``user_id`` (one per pair): 201 if made now, else 200."""
        answer = await client.create_direct(user.user_id, user.username, body.user_id)
        if not answer["created"]:
            response.status_code = 200
        room: dict[str, Any] = answer["room"]
        return room

    @routes.get("/rooms", responses=ERRORS)
    async def my_rooms(
        user: Reader,
        after: Annotated[str, Query(max_length=40)] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        """The caller's rooms by id (after ``after``), each with ``unread`` and ``last_read``."""
        return {"rooms": await client.rooms(user.user_id, after=after, limit=limit)}

    @routes.get("/invites", responses=ERRORS)
    async def my_invites(user: Reader) -> dict[str, Any]:
        """Rooms inviting the caller (join one with ``POST /rooms/{room}/join``)."""
        return {"rooms": await client.invites(user.user_id)}

    @routes.get("/rooms/{room}", responses=ERRORS)
    async def get_room(room: RoomId, user: Reader) -> dict[str, Any]:
        return await client.room(room, user.user_id)

    @routes.patch("/rooms/{room}", responses=ERRORS)
    async def update_room(room: RoomId, body: UpdateBody, user: Manager) -> dict[str, Any]:
        """Rename (owner), change the topic or slow mode (moderators)."""
        return await client.update_room(room, user.user_id, **body.model_dump(exclude_none=True))

    @routes.post("/rooms/{room}/archive", responses=ERRORS)
    async def archive(room: RoomId, user: Manager) -> dict[str, Any]:
        """Make the room read-only (owner)."""
        return await client.archive(room, user.user_id, True)

    @routes.delete("/rooms/{room}/archive", responses=ERRORS)
    async def unarchive(room: RoomId, user: Manager) -> dict[str, Any]:
        return await client.archive(room, user.user_id, False)

    @routes.delete("/rooms/{room}", status_code=204, responses=ERRORS)
    async def delete_room(room: RoomId, user: Manager) -> None:
        """Delete the room and its history for good (owner); frees a place in the quota."""
        await client.delete_room(room, user.user_id)

    # --- membership ---------------------------------------------------------------------

    @routes.post("/rooms/{room}/join", responses=ERRORS)
    async def join(room: RoomId, user: Writer) -> dict[str, Any]:
        """Join a public room, or a private one that invited you; otherwise ask to join a
        private one (``status: requested``; its moderators approve)."""
        answer = await client.join(room, user.user_id, user.username)
        return {"status": answer["status"]}

    @routes.post("/rooms/{room}/leave", status_code=204, responses=ERRORS)
    async def leave(room: RoomId, user: Writer) -> None:
        await client.leave(room, user.user_id)

    @routes.get("/rooms/{room}/members", responses=ERRORS)
    async def members(
        room: RoomId,
        user: Reader,
        after: Annotated[str, Query(max_length=64)] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        return {"members": await client.members(room, user.user_id, after=after, limit=limit)}

    @routes.get("/rooms/{room}/pending", responses=ERRORS)
    async def pending(room: RoomId, user: Manager) -> dict[str, Any]:
        """Open invitations, join requests and bans (moderators)."""
        return await client.pending(room, user.user_id)

    @routes.post("/rooms/{room}/invites", responses=ERRORS)
    async def invite(room: RoomId, body: UserBody, user: Manager) -> dict[str, Any]:
        """Invite a user (moderators); one who asked to join is let in (``joined``)."""
        return {"status": await client.invite(room, user.user_id, body.user_id)}

    @routes.delete("/rooms/{room}/invites/{user_id}", status_code=204, responses=ERRORS)
    async def uninvite(room: RoomId, user_id: UserId, user: Caller) -> None:
        """Decline an invitation to oneself (``chat:write``), or revoke one (moderators,
        ``chat:manage``)."""
        user.require("chat:write" if user_id == user.user_id else "chat:manage")
        await client.uninvite(room, user.user_id, user_id)

    @routes.post("/rooms/{room}/requests/{user_id}/approve", status_code=204, responses=ERRORS)
    async def approve(room: RoomId, user_id: UserId, user: Manager) -> None:
        await client.approve(room, user.user_id, user_id)

    @routes.delete("/rooms/{room}/requests/{user_id}", status_code=204, responses=ERRORS)
    async def deny(room: RoomId, user_id: UserId, user: Caller) -> None:
        """Withdraw one's own join request (``chat:write``), or refuse one (moderators,
        ``chat:manage``)."""
        user.require("chat:write" if user_id == user.user_id else "chat:manage")
        await client.deny(room, user.user_id, user_id)

    # --- moderation ---------------------------------------------------------------------

    @routes.put("/rooms/{room}/members/{user_id}/role", status_code=204, responses=ERRORS)
    async def set_role(room: RoomId, user_id: UserId, body: RoleBody, user: Manager) -> None:
        """Make a member a moderator, or a moderator a member (owner)."""
        await client.set_role(room, user.user_id, user_id, body.role)

    @routes.delete("/rooms/{room}/members/{user_id}", status_code=204, responses=ERRORS)
    async def kick(room: RoomId, user_id: UserId, user: Manager) -> None:
        """Kick a member of a lower role (moderators)."""
        await client.kick(room, user.user_id, user_id)

    @routes.post("/rooms/{room}/bans", responses=ERRORS)
    async def ban(room: RoomId, body: BanBody, user: Manager) -> dict[str, Any]:
        """Ban a user (kicked if a member) for ``duration_s`` or until lifted (moderators)."""
        return await client.ban(
            room, user.user_id, body.user_id, duration_s=body.duration_s, reason=body.reason
        )

    @routes.delete("/rooms/{room}/bans/{user_id}", status_code=204, responses=ERRORS)
    async def unban(room: RoomId, user_id: UserId, user: Manager) -> None:
        await client.unban(room, user.user_id, user_id)

    @routes.post("/rooms/{room}/mutes", responses=ERRORS)
    async def mute(room: RoomId, body: MuteBody, user: Manager) -> dict[str, Any]:
        """Stop a member of a lower role from sending, for ``duration_s`` or until lifted."""
        return await client.mute(room, user.user_id, body.user_id, duration_s=body.duration_s)

    @routes.delete("/rooms/{room}/mutes/{user_id}", status_code=204, responses=ERRORS)
    async def unmute(room: RoomId, user_id: UserId, user: Manager) -> None:
        await client.unmute(room, user.user_id, user_id)

    # --- messages -----------------------------------------------------------------------

    @routes.post("/rooms/{room}/messages", status_code=201, responses={**ERRORS, 413: {}, 429: {}})
    async def send(
        room: RoomId,
        body: SendBody,
        user: Writer,
        idempotency_key: Annotated[str | None, Header(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Send; answered once durable. A repeated ``client_id`` (or ``Idempotency-Key``)
        answers the first send (``duplicate: true``)."""
        return await client.send(
            room,
            user.user_id,
            body.text,
            client_id=body.client_id or idempotency_key or "",
            reply_to=body.reply_to or 0,
            mentions=tuple(body.mentions),
        )

    @routes.get("/rooms/{room}/messages", responses=ERRORS)
    async def history(
        room: RoomId,
        user: Reader,
        after: Annotated[int | None, Query(ge=0)] = None,
        before: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> dict[str, Any]:
        """Messages in their current state (deleted ones as tombstones), after ``after``
        oldest first, or else the latest before ``before``."""
        return await client.history(room, user.user_id, after=after, before=before, limit=limit)

    @routes.patch("/rooms/{room}/messages/{seq}", responses={**ERRORS, 413: {}, 429: {}})
    async def edit(room: RoomId, seq: SeqPath, body: EditBody, user: Writer) -> dict[str, Any]:
        """Edit one's own message; answers the seq of the edit event."""
        return await client.edit(room, user.user_id, seq, body.text)

    @routes.delete("/rooms/{room}/messages/{seq}", responses={**ERRORS, 429: {}})
    async def delete_message(room: RoomId, seq: SeqPath, user: Writer) -> dict[str, Any]:
        """Delete one's own message (moderators: a lower role's); it stays as a tombstone."""
        return await client.delete_message(room, user.user_id, seq)

    @routes.put("/rooms/{room}/messages/{seq}/reactions/{emoji}", responses={**ERRORS, 429: {}})
    async def react(
        room: RoomId, seq: SeqPath, emoji: Annotated[str, Path(max_length=32)], user: Writer
    ) -> dict[str, Any]:
        return await client.react(room, user.user_id, seq, emoji, True)

    @routes.delete("/rooms/{room}/messages/{seq}/reactions/{emoji}", responses={**ERRORS, 429: {}})
    async def unreact(
        room: RoomId, seq: SeqPath, emoji: Annotated[str, Path(max_length=32)], user: Writer
    ) -> dict[str, Any]:
        return await client.react(room, user.user_id, seq, emoji, False)

    @routes.post("/rooms/{room}/read", responses=ERRORS)
    async def read(room: RoomId, body: ReadBody, user: Writer) -> dict[str, Any]:
        """Mark the room read up to ``seq`` (never backwards)."""
        return {"last_read": await client.read(room, user.user_id, body.seq)}

    @routes.get("/rooms/{room}/events", responses=ERRORS)
    async def events(
        room: RoomId,
        user: Reader,
        after_seq: Annotated[int, Query(ge=0)] = 0,
        epoch: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        """Events after ``after_seq`` as the WebSocket sends them; ``recovered: false`` when
        some cannot be given (trimmed, or ``epoch`` names another incarnation)."""
        page = await client.events(room, user.user_id, after=after_seq, epoch=epoch, limit=limit)
        return page | {"events": [event_body(room, e) for e in page["events"]]}

    @routes.get("/rooms/{room}/search", responses=ERRORS)
    async def search(
        room: RoomId,
        user: Reader,
        q: Annotated[str, Query(max_length=MAX_QUERY_CHARS)] = "",
        sender: Annotated[str | None, Query(max_length=64)] = None,
        before: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> dict[str, Any]:
        """Kept messages holding every word of ``q`` and/or sent by ``sender``, newest first."""
        found = await client.search(
            room, user.user_id, text=q, sender=sender, before=before, limit=limit
        )
        return {"messages": found}

    @routes.get("/rooms/{room}/presence", responses=ERRORS)
    async def presence(room: RoomId, user: Reader) -> dict[str, Any]:
        """Who is connected to the room now, with how many devices each."""
        return {"users": await client.presence(room, user.user_id)}

    del config
    return routes
