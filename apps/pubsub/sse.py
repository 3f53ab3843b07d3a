"""Pub/sub over Server-Sent Events (``GET /pubsub/sse?pattern=...``), EventSource-compatible.

Each message is an event ``message`` whose ``data`` is the message as JSON
and whose ``id`` is the resume cursor: the sequence number for a plain topic,
or ``{"topic": seq, ...}`` (the topics seen on the stream, at most
``REALM_PUBSUB_MAX_RESUME_TOPICS``) for a wildcard pattern. A reconnecting
EventSource sends it back as ``Last-Event-ID`` and the stream resumes from
history with no gap and no duplicate; a ``Last-Event-ID`` that is no such
cursor (or names a sequence number over 2^63 - 1) is refused with 422. A
queue group's stream (``group=``) carries no ``id`` and ignores
``Last-Event-ID``: a group shares messages, it does not resume them. The
stream opens with a ``retry`` hint, carries a ``: keepalive`` comment every
``REALM_PUBSUB_KEEPALIVE_S``, and ends with an event ``error`` (``{"code",
"message"}``) when the client fell more than ``REALM_PUBSUB_SEND_BUFFER``
messages or ``REALM_PUBSUB_SEND_BUFFER_BYTES`` behind (``slow_consumer``:
reconnect and resume) or its session ended (``unauthorized``, checked every
``REALM_PUBSUB_KEEPALIVE_S``).
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from actors.pubsub.acl import Acl
from actors.pubsub.broker import MAX_GROUP_CHARS, MAX_SEQ
from actors.pubsub.client import PubSubClient, SlowConsumer, Subscription
from actors.pubsub.settings import PubSubSettings
from actors.pubsub.topics import MAX_TOPIC_CHARS, ONE, REST
from actors.runtime.errors import InvalidInput
from apps.pubsub.messages import message_json
from apps.pubsub.routes import errors
from apps.signin import StreamUser, until_signed_out, verifier_of
from apps.streams import SEP as SEP
from apps.streams import error_event, retry_hint, sse_event, sse_response

#: Longest Last-Event-ID header.
MAX_LAST_EVENT_ID_CHARS = 8192


# --- cursors --------------------------------------------------------------------------


def is_plain(pattern: str) -> bool:
    return all(token not in (ONE, REST) for token in pattern.split("."))


#: Digits of the largest sequence number (MAX_SEQ).
SEQ_DIGITS = len(str(MAX_SEQ))


def parse_cursor(pattern: str, last_event_id: str | None) -> dict[str, int]:
    """The resume map a Last-Event-ID stands for (see the module docstring)."""
    if not last_event_id:
        return {}
    if is_plain(pattern) and last_event_id.isdigit():
        if len(last_event_id) <= SEQ_DIGITS and int(last_event_id) <= MAX_SEQ:
            return {pattern: int(last_event_id)}
        cursor = None
    else:
        try:
            cursor = orjson.loads(last_event_id)  # it refuses integers over 64 bits
        except orjson.JSONDecodeError:
            cursor = None
    if not isinstance(cursor, dict) or not all(
        isinstance(t, str) and type(s) is int and 0 <= s <= MAX_SEQ for t, s in cursor.items()
    ):
        raise InvalidInput(
            "Last-Event-ID is not a cursor this stream gave out",
            last_event_id=last_event_id[:100],
        )
    return cursor


def format_cursor(pattern: str, cursor: dict[str, int]) -> str:
    if is_plain(pattern):
        return str(cursor.get(pattern, 0))
    return orjson.dumps(cursor).decode()


# --- the stream -------------------------------------------------------------------------


def message_event(event_id: str | None, data: str) -> bytes:
    """An event ``message``, framed by hand (``apps.streams.sse_event``): topics
    have no whitespace, and the data is compact JSON."""
    return sse_event(event_id, data, "message")


async def events(
    subscription: Subscription,
    *,
    pattern: str,
    resume: dict[str, int],
    may_read: Callable[[str], bool],
    signed_out: Callable[[], Awaitable[None]],
    cursor_topics: int,
) -> AsyncIterator[ServerSentEvent | bytes]:
    """The events of ``subscription`` whose topic its owner ``may_read``, until it
    ends or ``signed_out()`` does; a wildcard cursor keeps ``cursor_topics`` topics."""
    session_ended = False

    async def watch_session() -> None:
        nonlocal session_ended
        await signed_out()
        session_ended = True
        await subscription.close()  # ends the loop below

    watcher = asyncio.create_task(watch_session())
    cursor: OrderedDict[str, int] = OrderedDict(resume)
    try:
        yield retry_hint()
        try:
            async for message in subscription:
                if not may_read(message.topic):
                    continue
                event_id = None
                if message.seq and subscription.group is None:
                    cursor[message.topic] = message.seq
                    cursor.move_to_end(message.topic)
                    while len(cursor) > cursor_topics:
                        cursor.popitem(last=False)
                    event_id = format_cursor(pattern, cursor)
                yield message_event(event_id, message_json(message))
        except SlowConsumer:
            yield error_event("slow_consumer", "reconnect to resume")
            return
        if session_ended:
            yield error_event("unauthorized", "the session ended")
    finally:
        if not session_ended:
            watcher.cancel()
        await subscription.close()


def router(client: PubSubClient, acl: Acl, config: PubSubSettings) -> APIRouter:
    routes = APIRouter()

    @routes.get(
        "/sse",
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **errors()},
    )
    async def sse(
        http: Request,
        user: StreamUser,
        pattern: Annotated[str, Query(min_length=1, max_length=MAX_TOPIC_CHARS)],
        group: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=MAX_GROUP_CHARS,
                description="A queue group of the caller's own: each message goes to one of "
                "the group's streams (no resume: Last-Event-ID is ignored).",
            ),
        ] = None,
        last_event_id: Annotated[str | None, Header(max_length=MAX_LAST_EVENT_ID_CHARS)] = None,
    ) -> EventSourceResponse:
        """Server-sent events for ``pattern``; resumes from ``Last-Event-ID``."""
        user.require("pubsub:subscribe")
        acl.check_subscribe(user, pattern)
        resume = {} if group is not None else parse_cursor(pattern, last_event_id)
        for topic in resume:
            acl.check_read(user, topic)
        subscription = await client.subscribe(
            pattern, group=group, owner=user.user_id, resume=resume or None
        )
        signed_out = functools.partial(
            until_signed_out, verifier_of(http), user, config.keepalive_s
        )
        stream = events(
            subscription,
            pattern=pattern,
            resume=resume,
            may_read=acl.reader(user),
            signed_out=signed_out,
            cursor_topics=config.max_resume_topics,
        )
        # sse-starlette frames the events, sends the keepalives and notices a
        # client that went away, idle or not. Closing the subscription then
        # ends the stream at once: cancelling it could wait while messages
        # keep arriving (a cancel scope only lands on a task that waits).
        return sse_response(
            stream,
            config.keepalive_s,
            client_close_handler_callable=lambda _: subscription.close(),
        )

    return routes
