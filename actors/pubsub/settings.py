"""Settings of pub/sub: ``REALM_PUBSUB_*`` variables (``docs/configuration.md``).

Sizes of messages held in memory are counted as the payload's bytes plus
``MESSAGE_OVERHEAD_BYTES`` (the topic, numbers and the object around them), so
that many small messages count too.
"""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import MiB, Section

#: What one kept or queued message costs beyond its payload, counted in every byte limit.
MESSAGE_OVERHEAD_BYTES = 256


class PubSubSettings(Section, service="pubsub"):
    """Pub/sub: read once, where the deployment is built."""

    brokers: int = Field(2, ge=1, le=256)
    """Broker actors; topics are spread over them by rendezvous hashing."""

    history_max: int = Field(1_000, ge=0)
    """Messages kept per topic for resuming subscribers."""

    history_max_bytes: int = Field(8 * MiB, ge=0)
    """Bytes of history kept per topic (each message counts its payload plus 256); the
    oldest messages go first."""

    history_max_age_s: float = Field(3_600.0, gt=0)
    """Seconds a message stays in a topic's history (trimmed on publish and on read). A
    topic with nothing published for this long is forgotten; published to again, its
    sequence numbers go on above any it had before."""

    broker_history_max_bytes: int = Field(256 * MiB, ge=0)
    """Bytes of history one broker keeps over all its topics (each message counts its
    payload plus 256); past it, the topics published to least recently lose their oldest
    messages first."""

    broker_max_topics: int = Field(100_000, ge=1)
    """Topics one broker remembers; past it, the topic published to least recently is
    forgotten (as an idle topic is)."""

    follower_buffer_bytes: int = Field(64 * MiB, ge=1)
    """Bytes of messages (each counts its payload plus 256) a broker holds for one Serve
    replica that has not pulled them yet; a replica further behind is dropped, follows
    again, and its subscribers close the gap from history."""

    max_payload_bytes: int = Field(1 * MiB, ge=64)
    """Largest message payload (the JSON-encoded ``data`` over HTTP and WebSocket): a message
    is copied into the journal and into every following replica's mailbox. Checked when a
    message is published, never when the journal is replayed. A WebSocket message from a
    client is at most this plus 4096 bytes, refused (close 1009) as soon as its frame header
    announces more."""

    history_page_max_bytes: int = Field(4 * MiB, ge=1)
    """Payload bytes one history answer (``GET /pubsub/history``, a resume, a gap being
    closed) carries at most; it always carries at least one message, and the rest comes
    with the next page."""

    send_buffer: int = Field(1_000, ge=1)
    """Messages waiting to be sent to one WebSocket or SSE client (and, unless it asks for
    another bound, to one subscription of the Python client); a client that falls further
    behind is disconnected as a slow consumer.
    """

    send_buffer_bytes: int = Field(4 * MiB, ge=1)
    """Bytes waiting to be sent to one WebSocket or SSE client (a WebSocket's frames as
    held in memory; queued messages count their payload plus 256), and queued for one
    subscription of the Python client unless it asks for another bound; a client that falls
    further behind is disconnected as a slow consumer. One message always fits in an empty
    buffer."""

    max_subscriptions: int = Field(100, ge=1)
    """Subscriptions one WebSocket connection may hold."""

    max_resume_topics: int = Field(64, ge=1, le=10_000)
    """Topics one subscription may resume from history (a WebSocket ``resume`` map, an SSE
    ``Last-Event-ID`` cursor, whose wildcard cursors keep this many topics)."""

    keepalive_s: float = Field(15.0, gt=0)
    """Seconds between keepalive comments on an SSE stream, and between re-checks of the
    session of every WebSocket and SSE client (one that ended closes the stream)."""

    acl_hook: str = ""
    """``module:function`` called as ``f(user, action, subject) -> bool`` (action ``publish``
    with a topic, or ``subscribe`` with a pattern, and ``subscribe`` with the topic of each
    message a wildcard subscription would deliver) after the built-in rules; empty: the
    built-in rules only.
    """
