"""The matchmaker's query language, widening, parties and match forming (no Ray)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.game.matchmaker import Matchmaker, PartyNotFound, accepts, check_query
from actors.game.settings import GameSettings
from actors.runtime.clock import FakeClock
from actors.runtime.errors import Forbidden, InvalidInput, LimitReached


def char(name: str) -> dict[str, Any]:
    return {"id": f"c-{name}", "name": name, "class": "warrior", "level": 1}


def mm(clock: FakeClock, **settings: Any) -> Matchmaker:
    return Matchmaker(GameSettings(matchmaker_widen_per_s=1.0, **settings), clock=clock)


def test_the_query_language() -> None:
    props = {"level": 5, "region": "eu", "mode": "duel"}
    assert accepts(check_query({"region": "eu", "level": {"min": 3, "max": 8}}), props, 0)
    assert accepts(check_query({"region": {"in": ["us", "eu"]}}), props, 0)
    assert not accepts(check_query({"mode": {"eq": "ctf"}}), props, 0)
    assert not accepts(check_query({"level": {"min": 7}}), props, 0)
    assert accepts(check_query({"level": {"min": 7}}), props, 2.0)  # widened by 2
    assert not accepts(check_query({"level": {"max": 2}}), props, 2.9)
    for bad in ({"colour": "red"}, {"level": {"min": 5, "max": 1}}, {"level": {"gt": 1}},
                {"region": {"in": []}}, {"level": {"min": "x"}}, {"mode": True}):  # fmt: skip
        with pytest.raises(InvalidInput):
            check_query(bad)


def test_compatible_tickets_match_and_others_wait(clock: FakeClock) -> None:
    m = mm(clock)
    a = m.add("a", char("a"), props={"level": 2, "region": "eu", "mode": "duel"},
              query={"region": "eu", "mode": "duel"})  # fmt: skip
    m.add("b", char("b"), props={"level": 9, "region": "us", "mode": "duel"},
          query={"mode": "duel"})  # fmt: skip
    c = m.add("c", char("c"), props={"level": 3, "region": "eu", "mode": "duel"},
              query={"level": {"min": 1, "max": 4}})  # fmt: skip
    (group,) = m.find()
    assert sorted(t.id for t in group) == sorted([a["id"], c["id"]])
    m.matched(group, "g-room", {"a": {"seat": "s1"}, "c": {"seat": "s3"}})
    assert m.get("a", a["id"])["room"] == "g-room" and m.get("c", c["id"])["seat"] == "s3"
    assert m.find() == []  # b waits alone


def test_waiting_widens_the_ranges_until_a_match_forms(clock: FakeClock) -> None:
    m = mm(clock)
    m.add("a", char("a"), props={"level": 9}, query={"level": {"min": 8, "max": 12}})
    m.add("b", char("b"), props={"level": 10}, query={"level": {"min": 0, "max": 4}})
    assert m.find() == []  # b does not accept level 9
    clock.advance(3)  # b accepts up to 7 now
    assert m.find() == []
    clock.advance(2.5)  # b accepts up to 9.5
    assert len(m.find()) == 1


def test_parties_queue_together_and_only_their_leader_queues_them(clock: FakeClock) -> None:
    m = mm(clock)
    party = m.create_party("lead", char("lead"))
    with pytest.raises(PartyNotFound):
        m.join_party("mate", party["id"], "wrong code", char("mate"))
    m.join_party("mate", party["id"], party["code"], char("mate"))
    with pytest.raises(Forbidden):
        m.add("mate", char("mate"), props={}, query={}, party=party["id"])
    with pytest.raises(PartyNotFound):
        m.add("stranger", char("s"), props={}, query={}, party=party["id"])
    team = m.add("lead", char("lead"), props={}, query={}, min_count=4, max_count=4,
                 party=party["id"])  # fmt: skip
    assert team["players"] == 2
    m.add("x", char("x"), props={}, query={}, min_count=3, max_count=4)
    assert m.find() == []  # 3 players: the party wants 4
    m.add("y", char("y"), props={}, query={}, min_count=2, max_count=4)
    (group,) = m.find()
    assert sum(len(t.players) for t in group) == 4


def test_tickets_expire_and_are_bounded_per_user(clock: FakeClock) -> None:
    m = mm(clock, matchmaker_ticket_ttl_s=10, max_tickets_per_user=2)
    first = m.add("a", char("a"), props={}, query={})
    m.add("a", char("a"), props={}, query={"mode": "x"})
    with pytest.raises(LimitReached):
        m.add("a", char("a"), props={}, query={})
    clock.advance(11)
    m.find()
    assert m.get("a", first["id"])["state"] == "expired"
    with pytest.raises(InvalidInput):
        m.add("b", char("b"), props={}, query={}, min_count=3, max_count=2)


def test_world_events_are_daily_schedules_in_the_zone_time_zone() -> None:
    from actors.game import events

    (dragon,) = events.schedules()
    assert dragon["cron"] == "0 20 * * *" and dragon["timezone"] == "America/New_York"
    assert dragon["target"]["topic"] == events.TOPIC == "user.svc-game.world"
    assert dragon["target"]["payload"] == {"zone": "caves", "kind": "boss", "monster": "dragon",
                                           "x": 27, "y": 25}  # fmt: skip


async def test_missing_world_event_schedules_are_made_once() -> None:
    from actors.game import events

    class Scheduler:
        def __init__(self) -> None:
            self.made: list[dict[str, Any]] = []

        async def list_schedules(self, *, owner: str) -> list[dict[str, Any]]:
            assert owner == events.WORLD_OWNER
            return self.made

        async def create(self, spec: dict[str, Any], *, owner: str) -> dict[str, Any]:
            self.made.append(spec)
            return spec

    scheduler = Scheduler()
    assert await events.ensure_schedules(scheduler) == 1
    assert await events.ensure_schedules(scheduler) == 0
