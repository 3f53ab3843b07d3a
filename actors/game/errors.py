"""Errors of the game service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import Conflict, NotFound


class RoomNotFound(NotFound):
    """No such room (or it is private and not yours, or it was disposed)."""

    code = "game_room_not_found"


class RoomChatNotFound(NotFound):
    """The room has no chat room yet (nobody has taken a seat since the chat service
    was last reachable)."""

    code = "game_room_chat_not_found"


class CharacterNotFound(NotFound):
    """No such character (or it is someone else's)."""

    code = "character_not_found"


class ZoneNotFound(NotFound):
    """No such zone."""

    code = "zone_not_found"


class TicketNotFound(NotFound):
    """No such matchmaker ticket (or it is someone else's)."""

    code = "ticket_not_found"


class RoomFull(Conflict):
    """Every seat of the room is taken or reserved."""

    code = "game_room_full"


class NameTaken(Conflict):
    """You already have a character of that name."""

    code = "character_name_taken"
