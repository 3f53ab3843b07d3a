"""Messages as pub/sub's clients see them, over HTTP, WebSocket and SSE alike.

A message's ``data`` is the JSON document it was published as; a payload
published from Python that is not JSON travels as ``data_base64`` instead.
"""

from __future__ import annotations

import base64
import functools
from typing import Annotated, Any

import orjson
from pydantic import Field

from actors.pubsub.client import Message
from actors.pubsub.settings import PubSubSettings
from actors.pubsub.topics import MAX_TOPIC_CHARS
from actors.runtime.errors import TooLarge

#: A topic in a request body or frame (checked in full by ``actors.pubsub.topics``).
Topic = Annotated[str, Field(min_length=1, max_length=MAX_TOPIC_CHARS)]


def encode_data(data: Any, config: PubSubSettings) -> bytes:
    """The payload of a message published as JSON ``data``, within the size limit."""
    payload = orjson.dumps(data)
    if len(payload) > config.max_payload_bytes:
        raise TooLarge(
            "the message data is over the size limit",
            size=len(payload),
            limit=config.max_payload_bytes,
        )
    return payload


def message_body(message: Message) -> dict[str, Any]:
    """A message as clients see it."""
    body: dict[str, Any] = {"topic": message.topic, "seq": message.seq, "at": message.at}
    try:
        body["data"] = orjson.loads(message.payload)
    except orjson.JSONDecodeError:
        body["data_base64"] = base64.b64encode(message.payload).decode()
    body["reply_to"] = message.reply_to
    return body


@functools.lru_cache(maxsize=64)
def message_json(message: Message) -> str:
    """``message_body`` as JSON, made once however many subscribers get the message."""
    return orjson.dumps(message_body(message)).decode()
