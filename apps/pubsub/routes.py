"""Pub/sub's plain HTTP routes: publish, read history, and request/reply."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field

from actors.auth.client import Principal
from actors.pubsub.acl import Acl
from actors.pubsub.broker import MAX_SEQ
from actors.pubsub.client import PubSubClient
from actors.pubsub.settings import PubSubSettings
from actors.pubsub.topics import MAX_TOPIC_CHARS
from apps.models import Body
from apps.pubsub.messages import Topic, encode_data, message_body
from apps.signin import Scope

Publisher = Annotated[Principal, Scope("pubsub:publish")]
Subscriber = Annotated[Principal, Scope("pubsub:subscribe")]
#: Longest ``Idempotency-Key`` header.
MAX_KEY_CHARS = 128
#: Longest a request waits for its reply, in seconds.
MAX_REQUEST_TIMEOUT_S = 60.0

#: Statuses every route may answer besides its own (all in the error envelope).
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token."},
    403: {
        "description": "An API key without this route's scope, or a topic the caller may "
        "not use (another user's private topic, a reply topic, the ACL hook)."
    },
    422: {"description": "The request is not valid."},
}


def errors(*more: int) -> dict[int | str, dict[str, Any]]:
    described: dict[int, dict[str, Any]] = {
        413: {"description": "The message's data is over REALM_PUBSUB_MAX_PAYLOAD_BYTES."},
        504: {"description": "No reply came in time."},
    }
    return {**ERRORS, **{status: described[status] for status in more}}


class PublishBody(Body):
    topic: Topic
    data: Any = Field(..., description="Any JSON document.")
    reply_to: Topic | None = Field(
        None,
        description="Where a reply should be published: a topic the publisher may publish "
        "to itself.",
    )


class Published(BaseModel):
    topic: str
    seq: int = Field(..., description="0 for a reply (to an `_inbox.` topic): not kept.")
    at: float


class MessageOut(BaseModel):
    topic: str
    seq: int
    at: float
    data: Any = None
    data_base64: str | None = None
    reply_to: str | None = None


class History(BaseModel):
    messages: list[MessageOut]
    complete: bool = Field(..., description="False if messages after the cursor were trimmed.")
    last_seq: int = Field(
        ...,
        description="The topic's last sequence number (for a topic with no history kept, "
        "a number its next message will be above).",
    )


class RequestBody(Body):
    topic: Topic
    data: Any
    timeout_s: float = Field(5.0, gt=0, le=MAX_REQUEST_TIMEOUT_S)


def router(client: PubSubClient, acl: Acl, config: PubSubSettings) -> APIRouter:
    routes = APIRouter()

    @routes.post("/publish", responses=errors(413))
    async def publish(
        body: PublishBody,
        user: Publisher,
        idempotency_key: Annotated[str | None, Header(max_length=MAX_KEY_CHARS)] = None,
    ) -> Published:
        """Publish; answered once the message is durable. A repeated
        ``Idempotency-Key`` answers the first publish again. A reply (to the
        ``_inbox.`` topic a request carried) is delivered at once and not kept."""
        acl.check_publish(user, body.topic)
        acl.check_reply_to(user, body.reply_to)
        payload = encode_data(body.data, config)
        key = f"{user.user_id}:{idempotency_key}" if idempotency_key else None
        seq, at = await client.publish(body.topic, payload, key=key, reply_to=body.reply_to)
        return Published(topic=body.topic, seq=seq, at=at)

    @routes.get("/history", responses=errors())
    async def history(
        user: Subscriber,
        topic: Annotated[str, Query(min_length=1, max_length=MAX_TOPIC_CHARS)],
        after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> History:
        """Messages after ``after_seq``, oldest first: at most ``limit``, and at most
        ``REALM_PUBSUB_HISTORY_PAGE_MAX_BYTES`` of data (but at least one message)."""
        acl.check_read(user, topic)
        page = await client.history(topic, after_seq, limit)
        return History(
            messages=[MessageOut(**message_body(m)) for m in page["messages"]],
            complete=page["complete"],
            last_seq=page["last_seq"],
        )

    @routes.post("/request", responses=errors(413, 504))
    async def request(body: RequestBody, user: Publisher) -> MessageOut:
        """Publish with a private reply topic; the first reply (504 if none in time)."""
        acl.check_publish(user, body.topic)
        payload = encode_data(body.data, config)
        reply = await client.request(body.topic, payload, timeout_s=body.timeout_s)
        return MessageOut(**message_body(reply))

    return routes
