"""Settings of pub/sub: ``REALM_PUBSUB_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import MiB, Section


class PubSubSettings(Section, service="pubsub"):
    """Pub/sub: read once, where the deployment is built."""

    brokers: int = Field(2, ge=1, le=256)
    """Broker actors; topics are spread over them by rendezvous hashing."""

    history_max: int = Field(1_000, ge=0)
    """Messages kept per topic for resuming subscribers."""

    history_max_age_s: float = Field(3_600.0, gt=0)
    """Seconds a message stays in a topic's history (trimmed on publish and on read)."""

    max_payload_bytes: int = Field(1 * MiB, ge=64)
    """Largest message payload (the JSON-encoded ``data`` over HTTP and WebSocket): a message
    is copied into the journal and into every following replica's mailbox."""

    send_buffer: int = Field(1_000, ge=1)
    """Messages waiting to be sent to one WebSocket or SSE client (and, unless it asks for
    another bound, to one subscription of the Python client); a client that falls further
    behind is disconnected as a slow consumer.
    """

    max_subscriptions: int = Field(100, ge=1)
    """Subscriptions one WebSocket connection may hold."""

    keepalive_s: float = Field(15.0, gt=0)
    """Seconds between keepalive comments on an SSE stream, and between re-checks of the
    session of every WebSocket and SSE client (one that ended closes the stream)."""

    acl_hook: str = ""
    """``module:function`` called as ``f(user, action, subject) -> bool`` (action ``publish``
    with a topic, or ``subscribe`` with a pattern) after the built-in rules; empty: the
    built-in rules only.
    """
