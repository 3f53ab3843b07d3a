"""Settings of the game service: ``REALM_GAME_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import Section


class GameSettings(Section, service="game"):
    """The game server: read once, where the client and the room actors are made."""

    tick_hz: int = Field(20, ge=1, le=30)
    """Simulation ticks per second of every room (Nakama allows up to 30)."""

    patch_ms: int = Field(50, ge=10, le=1_000)
    """A connected player gets a delta patch this often (when something changed, and at
    least once a second)."""

    snapshot_every_s: float = Field(1.0, gt=0, le=60)
    """A room writes a snapshot of its state this often; between snapshots it logs the
    commands it applied, so a restarted room resumes from snapshot plus log."""

    view_radius_tiles: int = Field(12, ge=1, le=100)
    """A player sees entities within this many tiles (Chebyshev distance)."""

    seat_reservation_s: float = Field(15.0, gt=0, le=600)
    """A reserved seat waits this long for its player's WebSocket."""

    reconnect_grace_s: float = Field(15.0, ge=0, le=600)
    """A player whose connection dropped keeps the seat (and its character in the world)
    this long; reconnecting within it gives the same seat and a fresh full state."""

    empty_room_grace_s: float = Field(30.0, ge=0, le=3_600)
    """A room without seats for this long is disposed (its actor ends)."""

    max_players_per_room: int = Field(64, ge=1, le=1_000)
    """Seats (taken or reserved) of a room at most; a room asks for at most this many."""

    max_rooms_per_user: int = Field(5, ge=1, le=1_000)
    """Open rooms one user may have made (quick join and the matchmaker do not count)."""

    max_characters_per_user: int = Field(5, ge=1, le=100)
    """Characters one user may have."""

    max_rooms: int = Field(1_000, ge=1, le=100_000)
    """Open rooms in all (each is an actor, about 60 MB)."""

    input_queue: int = Field(8, ge=1, le=256)
    """Inputs one player may have waiting; one more is refused (``too_fast``)."""

    frames_per_s: float = Field(30.0, gt=0, le=10_000)
    """Frames a connection may send per second (with a burst of as many); beyond, frames
    are dropped with a ``throttled`` error."""

    flood_grace_s: float = Field(2.0, gt=0, le=60)
    """A connection throttled for this long without a pause is closed (4008)."""

    max_frame_bytes: int = Field(1_024, ge=64, le=65_536)
    """Largest client frame (1009 beyond)."""

    send_buffer: int = Field(256, ge=8, le=100_000)
    """Frames waiting to be written to one slow client; beyond, it is closed (4008)."""

    send_buffer_bytes: int = Field(1_048_576, ge=65_536, le=1_073_741_824)
    """Bytes of frames waiting to be written to one slow client; beyond, it is closed
    (4008)."""

    heartbeat_timeout_s: float = Field(90.0, ge=0, le=3_600)
    """A connection that sent nothing (not even a ``ping``) for this long is closed
    (4408), and its seat held for the reconnection grace; 0: never. The browser client
    pings every 2 s."""

    character_shards: int = Field(2, ge=1, le=64)
    """Actors keeping characters (by user id)."""

    gold_ledger: int = Field(700, ge=1, le=2**32 - 1)
    """The ledger number of gold accounts (one per player and the world's)."""

    trade_fee_percent: int = Field(5, ge=0, le=50)
    """Share of a trade paid to the world account (at least 1 gold when not 0)."""

    session_check_s: float = Field(30.0, gt=0, le=3_600)
    """How often a connection's session is checked again (4401 once it ended)."""

    chat_history: int = Field(50, ge=0, le=1_000)
    """Room chat lines a joining player is shown."""

    matchmaker_interval_ms: int = Field(250, ge=10, le=60_000)
    """How often the matchmaker looks for matches."""

    matchmaker_ticket_ttl_s: float = Field(120.0, gt=0, le=3_600)
    """A ticket not matched within this long expires."""

    matchmaker_widen_per_s: float = Field(0.5, ge=0, le=100)
    """Each second of waiting widens a ticket's numeric ranges by this much on each side."""

    max_tickets_per_user: int = Field(3, ge=1, le=100)
    """Matchmaker tickets one user may have waiting."""

    world_events: bool = True
    """Whether zone events (bosses) are scheduled with the scheduler service."""
