"""Settings of chat: ``REALM_CHAT_*`` variables (``docs/configuration.md``).

Sizes held in memory are counted as a text's UTF-8 bytes plus
``EVENT_OVERHEAD_BYTES`` (the numbers, names and object around it), so that
many small events count too.
"""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import MiB, Section

#: What one kept or queued event costs beyond its text, counted in every byte limit.
EVENT_OVERHEAD_BYTES = 256


class ChatSettings(Section, service="chat"):
    """Chat: read once, where the deployment is built."""

    shards: int = Field(2, ge=1, le=256)
    """Chat shard actors; rooms are spread over them by rendezvous hashing (a user's own
    rooms live on the shard their user id hashes to)."""

    max_rooms_per_owner: int = Field(50, ge=1)
    """Public and private rooms one user may own (archived ones count; deleted ones do not)."""

    max_direct_rooms_per_user: int = Field(500, ge=1)
    """Direct rooms one user may start (the peer's side does not count)."""

    max_members_per_room: int = Field(10_000, ge=2)
    """Members one room may have."""

    max_pending_per_room: int = Field(1_000, ge=1)
    """Open invitations, and join requests, one room may hold (each)."""

    max_message_bytes: int = Field(4_096, ge=16, le=MiB)
    """Largest message text, in UTF-8 bytes (a send or an edit)."""

    history_max: int = Field(1_000, ge=1)
    """Events (messages, edits, deletions, reactions, membership changes) kept per room
    for history, search and resuming clients; the oldest go first."""

    history_max_bytes: int = Field(2 * MiB, ge=512)
    """Bytes of history kept per room (each event counts its text plus 256); the oldest
    events go first."""

    history_max_age_s: float = Field(7 * 86_400.0, gt=0)
    """Seconds an event stays in a room's history (trimmed on every write and read)."""

    send_rate_per_s: float = Field(5.0, gt=0)
    """Messages (sends, edits, reactions) one user may write per second on average, per
    shard; beyond it a write is refused with 429 ``rate_limited``."""

    send_burst: int = Field(20, ge=1)
    """Writes one user may make at once before ``send_rate_per_s`` applies."""

    typing_throttle_s: float = Field(2.0, gt=0)
    """A user's typing indicator is passed on at most once per this many seconds per room."""

    heartbeat_timeout_s: float = Field(20.0, gt=0, le=25.0)
    """A WebSocket client that sends nothing (a ``ping`` is enough) for this long is
    disconnected and leaves presence; clients should ping about every 10 s."""

    presence_ttl_s: float = Field(15.0, gt=0, le=25.0)
    """A device the shard has not heard refreshed for this long leaves presence (a Serve
    replica that died); replicas refresh every third of it."""

    presence_batch_s: float = Field(0.2, gt=0, le=2.0)
    """Presence changes of a room are gathered for this long into one diff (so a thousand
    members joining do not send a million frames)."""

    send_buffer: int = Field(1_000, ge=1)
    """Frames waiting to be sent to one WebSocket or SSE client; a client that falls further
    behind is disconnected as a slow consumer (close code 4008) and resumes."""

    send_buffer_bytes: int = Field(4 * MiB, ge=1024)
    """Bytes waiting to be sent to one WebSocket or SSE client (each frame counts its size
    plus 256); a client further behind is disconnected as a slow consumer."""

    frames_per_s: float = Field(50.0, gt=0)
    """WebSocket frames one connection may send per second on average (bursts of four times
    as many); beyond it each frame gets an ``error`` (``rate_limited``), and a connection
    that keeps on is closed (4429)."""

    frames_in_flight: int = Field(512, ge=1, le=100_000)
    """WebSocket frames of one connection being handled at once (frames about one room
    one after the other, about different rooms side by side); its reader waits beyond
    it. A client sending to many rooms needs about its send rate times the round trip
    of a send (a shard call and a journal commit)."""

    frames_in_flight_bytes: int = Field(4 * MiB, ge=64 * 1024)
    """Bytes of the frames of one connection being handled at once (each counts its text
    plus 1 KiB); its reader waits beyond it."""

    max_rooms_per_connection: int = Field(100, ge=1)
    """Rooms one WebSocket connection may have joined at once."""

    max_devices_per_user: int = Field(10, ge=1)
    """Connections of one user present in one room at once."""

    follower_buffer_bytes: int = Field(64 * MiB, ge=MiB)
    """Bytes of events a shard holds for one Serve replica that has not pulled them (each
    counts its text plus 256); a replica further behind is dropped, follows again, and
    closes the gap from history."""

    keepalive_s: float = Field(15.0, gt=0)
    """Seconds between keepalive comments on an SSE stream, and between re-checks of the
    session of every WebSocket and SSE client (one that ended closes the stream)."""
