"""The matchmaker: tickets with properties and a query, parties, widening with time.

A ticket is one player, or a party (created by its leader, joined with its
code by the others), looking for a match. It carries **properties** (``level``,
``region``, ``mode``: what it is) and a **query** (what it accepts of the
others), in a small JSON language, one condition per property:

- ``"region": "eu"`` or ``{"eq": "eu"}``: equality;
- ``{"in": ["eu", "us"]}``: one of;
- ``{"min": 3, "max": 8}`` (either may be left out): a numeric range, widened by
  ``REALM_GAME_MATCHMAKER_WIDEN_PER_S`` on each side per second the ticket has
  waited, so a lonely ticket accepts more and more.

Tickets match when each one's query holds of every other's properties (both
ways). Every ``REALM_GAME_MATCHMAKER_INTERVAL_MS`` the oldest waiting ticket
gathers compatible tickets, oldest first, up to its ``max_count`` players; if
they reach its ``min_count`` (and every ticket's own bounds hold), they are a
match: a room is made (zone ``arena`` for the ``duel`` and ``arena`` modes,
else ``meadow``) and each player gets a seat reservation there, read from the
ticket. Tickets are ephemeral: a restarted matchmaker has none, and players
queue again (their reservations, once made, are durable in the room).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from actors.game.errors import TicketNotFound
from actors.game.settings import GameSettings
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import Forbidden, InvalidInput, LimitReached
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, remote_actor, run_start_hooks

log = logging.getLogger(__name__)

MATCHMAKER_NAME = "game-matchmaker"
PROPERTIES = ("level", "region", "mode")
MAX_IN = 16
MAX_PARTY = 8
MAX_TEXT = 32
#: Modes whose matches are played in the arena.
ARENA_MODES = frozenset({"duel", "arena"})


class PartyNotFound(TicketNotFound):
    """No such party (or a wrong code)."""

    code = "party_not_found"


def check_properties(props: dict[str, Any]) -> dict[str, Any]:
    if set(props) - set(PROPERTIES):
        raise InvalidInput(f"properties are {', '.join(PROPERTIES)}", field="properties")
    level = props.get("level", 1)
    if type(level) is not int or not 1 <= level <= 1_000:
        raise InvalidInput("level is an integer from 1 to 1000", field="level")
    for key in ("region", "mode"):
        value = props.get(key, "")
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise InvalidInput(f"{key} is a string of at most {MAX_TEXT}", field=key)
    return {"level": level, "region": props.get("region", ""), "mode": props.get("mode", "")}


def check_query(query: dict[str, Any]) -> dict[str, Any]:
    """A query in the language above, checked (``InvalidInput`` otherwise)."""
    if not isinstance(query, dict) or set(query) - set(PROPERTIES):
        raise InvalidInput(f"a query names properties among {', '.join(PROPERTIES)}",
                           field="query")  # fmt: skip
    checked: dict[str, Any] = {}
    for key, condition in query.items():
        if isinstance(condition, str | int) and not isinstance(condition, bool):
            condition = {"eq": condition}
        if not isinstance(condition, dict) or not condition:
            raise InvalidInput("a condition is a value, {eq}, {in} or {min, max}", field=key)
        ops = set(condition)
        if ops <= {"min", "max"}:
            low, high = condition.get("min"), condition.get("max")
            if any(b is not None and (type(b) not in (int, float)) for b in (low, high)):
                raise InvalidInput("min and max are numbers", field=key)
            if low is not None and high is not None and low > high:
                raise InvalidInput("min is above max", field=key)
        elif ops == {"eq"}:
            if not isinstance(condition["eq"], str | int) or isinstance(condition["eq"], bool):
                raise InvalidInput("eq is a string or an integer", field=key)
        elif ops == {"in"}:
            values = condition["in"]
            if not isinstance(values, list) or not 1 <= len(values) <= MAX_IN:
                raise InvalidInput(f"in is a list of 1 to {MAX_IN} values", field=key)
        else:
            raise InvalidInput("a condition is a value, {eq}, {in} or {min, max}", field=key)
        checked[key] = condition
    return checked


def accepts(query: dict[str, Any], props: dict[str, Any], widen: float) -> bool:
    """Whether ``props`` meet ``query``, its ranges widened by ``widen`` on each side."""
    for key, condition in query.items():
        value = props.get(key)
        if "eq" in condition:
            if value != condition["eq"]:
                return False
        elif "in" in condition:
            if value not in condition["in"]:
                return False
        else:
            if type(value) not in (int, float):
                return False
            low, high = condition.get("min"), condition.get("max")
            if low is not None and value < low - widen:
                return False
            if high is not None and value > high + widen:
                return False
    return True


@dataclass
class Party:
    id: str
    code: str
    leader: str
    #: user -> character
    members: dict[str, dict[str, Any]]


@dataclass
class Ticket:
    id: str
    owner: str
    #: user -> character: the owner, or every member of the owner's party
    players: dict[str, dict[str, Any]]
    props: dict[str, Any]
    query: dict[str, Any]
    min_count: int
    max_count: int
    created: float
    state: str = "waiting"
    room: str = ""
    seats: dict[str, dict[str, Any]] = field(default_factory=dict)
    ended: float = 0.0

    def shown(self, user: str, now: float) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id, "state": self.state, "players": len(self.players),
            "waited_s": round((self.ended or now) - self.created, 3),
        }  # fmt: skip
        if self.room:
            shown["room"] = self.room
            seat = self.seats.get(user)
            if seat is not None:
                shown["seat"] = seat["seat"]
        return shown


class Matchmaker:
    """Tickets and parties, and the matching itself (no I/O: ``find`` returns the
    matches, the actor makes their rooms)."""

    def __init__(self, config: GameSettings, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.tickets: dict[str, Ticket] = {}
        self.parties: dict[str, Party] = {}
        self.matches = 0

    # --- parties --------------------------------------------------------------

    def create_party(self, leader: str, character: dict[str, Any]) -> dict[str, Any]:
        party = Party(f"y-{secrets.token_hex(6)}", secrets.token_urlsafe(6), leader,
                      {leader: character})  # fmt: skip
        self.parties[party.id] = party
        return {"id": party.id, "code": party.code, "members": 1}

    def join_party(self, user: str, party_id: str, code: str,
                   character: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        party = self.parties.get(party_id)
        if party is None or not secrets.compare_digest(party.code, code):
            raise PartyNotFound(party=party_id)
        if user not in party.members and len(party.members) >= MAX_PARTY:
            raise LimitReached(kind="party member", limit=MAX_PARTY)
        party.members[user] = character
        return {"id": party.id, "members": len(party.members)}

    # --- tickets --------------------------------------------------------------

    def add(self, owner: str, character: dict[str, Any], *, props: dict[str, Any],
            query: dict[str, Any], min_count: int = 2, max_count: int = 2,
            party: str | None = None) -> dict[str, Any]:  # fmt: skip
        props, query = check_properties(props), check_query(query)
        if not 1 <= min_count <= max_count <= self.config.max_players_per_room:
            raise InvalidInput("1 <= min_count <= max_count <= the room size", field="min_count")
        mine = sum(1 for t in self.tickets.values() if t.owner == owner and t.state == "waiting")
        if mine >= self.config.max_tickets_per_user:
            raise LimitReached(kind="ticket", limit=self.config.max_tickets_per_user)
        players = {owner: character}
        if party is not None:
            found = self.parties.get(party)
            if found is None or owner not in found.members:
                raise PartyNotFound(party=party)
            if found.leader != owner:
                raise Forbidden("only the party's leader queues it")
            players = dict(found.members)
        if len(players) > max_count:
            raise InvalidInput("the party is larger than max_count", field="max_count")
        ticket = Ticket(f"t-{secrets.token_hex(8)}", owner, players, props, query, min_count,
                        max_count, self.clock.now())  # fmt: skip
        self.tickets[ticket.id] = ticket
        return ticket.shown(owner, self.clock.now())

    def get(self, user: str, ticket_id: str) -> dict[str, Any]:
        ticket = self.tickets.get(ticket_id)
        if ticket is None or user not in ticket.players:
            raise TicketNotFound(ticket=ticket_id)
        return ticket.shown(user, self.clock.now())

    def remove(self, user: str, ticket_id: str) -> None:
        ticket = self.tickets.get(ticket_id)
        if ticket is None or ticket.owner != user:
            raise TicketNotFound(ticket=ticket_id)
        del self.tickets[ticket_id]

    def _widen(self, ticket: Ticket, now: float) -> float:
        return (now - ticket.created) * self.config.matchmaker_widen_per_s

    def _compatible(self, a: Ticket, b: Ticket, now: float) -> bool:
        if set(a.players) & set(b.players):
            return False
        return accepts(a.query, b.props, self._widen(a, now)) and accepts(
            b.query, a.props, self._widen(b, now)
        )

    def find(self) -> list[list[Ticket]]:
        """Matches that can be formed now (their tickets leave the waiting list);
        expired tickets are marked so."""
        now = self.clock.now()
        for ticket in self.tickets.values():
            if (
                ticket.state == "waiting"
                and now - ticket.created > self.config.matchmaker_ticket_ttl_s
            ):
                ticket.state, ticket.ended = "expired", now
        self._forget(now)
        waiting = sorted((t for t in self.tickets.values() if t.state == "waiting"),
                         key=lambda t: t.created)  # fmt: skip
        taken: set[str] = set()
        found = []
        for anchor in waiting:
            if anchor.id in taken:
                continue
            group, count = [anchor], len(anchor.players)
            for other in waiting:
                if other.id in taken or other is anchor:
                    continue
                size = count + len(other.players)
                if size > anchor.max_count or size > other.max_count:
                    continue
                if all(self._compatible(member, other, now) for member in group):
                    group.append(other)
                    count = size
                if count == anchor.max_count:
                    break
            if all(t.min_count <= count for t in group):
                taken.update(t.id for t in group)
                for t in group:
                    t.state, t.ended = "matching", now
                found.append(group)
        return found

    def matched(self, group: list[Ticket], room: str, seats: dict[str, dict[str, Any]]) -> None:
        self.matches += 1
        for ticket in group:
            ticket.state, ticket.room = "matched", room
            ticket.seats = {user: seats[user] for user in ticket.players if user in seats}

    def failed(self, group: list[Ticket]) -> None:
        """A match whose room could not be made: its tickets wait again."""
        for ticket in group:
            ticket.state, ticket.ended = "waiting", 0.0

    def _forget(self, now: float) -> None:
        """Matched and expired tickets are readable for a while, then forgotten."""
        keep = self.config.matchmaker_ticket_ttl_s
        for ticket_id, ticket in list(self.tickets.items()):
            if ticket.state in ("matched", "expired") and now - ticket.ended > keep:
                del self.tickets[ticket_id]


def zone_for(mode: str) -> str:
    return "arena" if mode in ARENA_MODES else "meadow"


class _MatchmakerProcess(Matchmaker):
    """The matchmaker actor: matches every interval, makes rooms and reservations."""

    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        run_start_hooks(settings, "game", name)
        super().__init__(GameSettings.of(settings))
        self.settings = settings
        self._loop = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from actors.game.client import GameClient

        game = GameClient(self.settings)
        interval = self.config.matchmaker_interval_ms / 1000
        while True:
            await self.clock.sleep(interval)
            for group in self.find():
                try:
                    await self._make(game, group)
                except Exception as error:
                    log.warning("matchmaker: a match's room could not be made (%r)", error)
                    self.failed(group)

    async def _make(self, game: Any, group: list[Ticket]) -> None:
        from actors.game.directory import MATCH

        anchor = group[0]
        players = {user: c for t in group for user, c in t.players.items()}
        room = await game.create_room(
            anchor.owner, zone=zone_for(anchor.props["mode"]), mode=anchor.props["mode"] or "match",
            label="match", private=True, max_players=max(len(players), 2), made_by=MATCH,
        )  # fmt: skip
        seats = {}
        for user, character in players.items():
            seats[user] = await game.call_room(room["id"], "reserve", user, character)
        self.matched(group, room["id"], seats)

    async def ping(self) -> int:
        return len(self.tickets)

    async def ticket(self, owner: str, character: dict[str, Any], spec: dict[str, Any]) -> dict:
        return self.add(owner, character, **spec)

    async def ticket_of(self, user: str, ticket_id: str) -> dict[str, Any]:
        return self.get(user, ticket_id)

    async def withdraw(self, user: str, ticket_id: str) -> None:
        self.remove(user, ticket_id)

    async def party(self, leader: str, character: dict[str, Any]) -> dict[str, Any]:
        return self.create_party(leader, character)

    async def join(self, user: str, party: str, code: str, character: dict[str, Any]) -> dict:
        return self.join_party(user, party, code, character)


#: Ephemeral (tickets are not journaled): restarted after a crash, calls in
#: flight fail to their callers, who queue again.
MatchmakerActor = remote_actor(_MatchmakerProcess, restart=Restart.TRANSIENT)
