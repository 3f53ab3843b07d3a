"""Pub/sub's plain HTTP routes: publish, read history, and request/reply."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field

from actors.pubsub.acl import Acl
from actors.pubsub.client import PubSubClient
from actors.pubsub.settings import PubSubSettings
from actors.pubsub.topics import MAX_TOPIC_CHARS
from apps.pubsub.messages import Topic, encode_data, message_body
from apps.signin import CurrentUser


class PublishBody(BaseModel):
    topic: Topic
    data: Any = Field(..., description="Any JSON document.")
    reply_to: Topic | None = Field(None, description="Where a reply should be published.")


class Published(BaseModel):
    topic: str
    seq: int
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
    last_seq: int


class RequestBody(BaseModel):
    topic: Topic
    data: Any
    timeout_s: float = Field(5.0, gt=0, le=60)


def router(client: PubSubClient, acl: Acl, config: PubSubSettings) -> APIRouter:
    routes = APIRouter()

    @routes.post("/publish", responses={401: {}, 403: {}, 413: {}, 422: {}})
    async def publish(
        body: PublishBody,
        user: CurrentUser,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> Published:
        """Publish; answered once the message is durable. A repeated
        ``Idempotency-Key`` answers the first publish again."""
        acl.check_publish(user, body.topic)
        payload = encode_data(body.data, config)
        key = f"{user.user_id}:{idempotency_key}" if idempotency_key else None
        seq, at = await client.publish(body.topic, payload, key=key, reply_to=body.reply_to)
        return Published(topic=body.topic, seq=seq, at=at)

    @routes.get("/history", responses={401: {}, 403: {}, 422: {}})
    async def history(
        user: CurrentUser,
        topic: Annotated[str, Query(min_length=1, max_length=MAX_TOPIC_CHARS)],
        after_seq: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> History:
        """Messages after ``after_seq``, oldest first."""
        acl.check_read(user, topic)
        page = await client.history(topic, after_seq, limit)
        return History(
            messages=[MessageOut(**message_body(m)) for m in page["messages"]],
            complete=page["complete"],
            last_seq=page["last_seq"],
        )

    @routes.post("/request", responses={401: {}, 403: {}, 413: {}, 422: {}, 504: {}})
    async def request(body: RequestBody, user: CurrentUser) -> MessageOut:
        """Publish with a private reply topic; the first reply (504 if none in time)."""
        acl.check_publish(user, body.topic)
        payload = encode_data(body.data, config)
        reply = await client.request(body.topic, payload, timeout_s=body.timeout_s)
        return MessageOut(**message_body(reply))

    return routes
