"""``AlertManager`` without Ray: grouping and timing, routing with ``continue``,
silences (with notices), inhibition, acknowledgement, resolved notices, and no
repeated notification after a restart."""

from __future__ import annotations

from typing import Any

import pytest

from actors.monitor.alerting import AlertIn, AlertManager, Inhibit, Receiver, Route
from actors.monitor.errors import AlertNotFound, BadRule
from actors.monitor.evaluator import Transition
from actors.monitor.model import fingerprint, parse_matchers
from actors.monitor.settings import MonitorSettings
from actors.runtime.clock import FakeClock
from actors.runtime.store import SQLiteStore


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, owner: str, receiver: Receiver, payload: dict[str, Any]) -> None:
        self.got.append((receiver.name, payload))

    def summary(self) -> list[tuple[str, str, list[str]]]:
        return [
            (
                name,
                p["status"],
                sorted(f"{a['labels']['alertname']}:{a['status']}" for a in p["alerts"]),
            )
            for name, p in self.got
            if "alerts" in p
        ]


ROUTE = Route(
    receiver="default",
    group_by=["alertname"],
    group_wait_s=10.0,
    group_interval_s=30.0,
    repeat_interval_s=300.0,
    routes=[
        Route(receiver="pager", matchers=['severity="page"'], continue_=True),
        Route(receiver="team", matchers=['team="db"']),
    ],
)
RECEIVERS = [
    Receiver("default", "webhook"),
    Receiver("pager", "webhook"),
    Receiver("team", "webhook"),
]


async def manager(store: SQLiteStore, clock: FakeClock, sink: Sink, **kw: Any) -> AlertManager:
    made = AlertManager(MonitorSettings(resolve_timeout_s=86_400), clock=clock, notify=sink)
    await made.open(store, "monitor-alerts-0")
    if kw.get("configure", True):
        await made.execute(
            "configure",
            owner="u",
            route=ROUTE,
            receivers=RECEIVERS,
            inhibit=kw.get("inhibit", []),
            at=clock.time(),
        )
    return made


def alert(name: str, ends: float = 0.0, **labels: str) -> AlertIn:
    return AlertIn({"alertname": name, **labels}, {}, 0.0, ends)


async def step(am: AlertManager, clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    await am.flush()


async def test_grouping_and_timing(store: SQLiteStore, clock: FakeClock) -> None:
    sink = Sink()
    am = await manager(store, clock, sink)
    await am.execute("post", owner="u", alerts=[alert("A", x="1")], at=clock.time())
    await step(am, clock, 5)
    await am.execute("post", owner="u", alerts=[alert("A", x="2"), alert("B")], at=clock.time())
    await step(am, clock, 4)
    assert sink.got == []  # group_wait (10 s) not over
    await step(am, clock, 1)
    assert sink.summary() == [("default", "firing", ["A:firing", "A:firing"])]
    await step(am, clock, 5)  # B's group_wait over
    assert sink.summary()[-1] == ("default", "firing", ["B:firing"])
    await am.execute("post", owner="u", alerts=[alert("A", x="3")], at=clock.time())
    await step(am, clock, 20)
    assert len(sink.got) == 2  # a new alert in a flushed group waits for group_interval
    await step(am, clock, 10)
    assert sink.summary()[-1] == ("default", "firing", ["A:firing"] * 3)
    count = len(sink.got)
    for _ in range(8):
        await step(am, clock, 30)
    assert len(sink.got) == count  # nothing changed: no repeat before repeat_interval
    await step(am, clock, 30)
    assert sink.summary()[-1] == ("default", "firing", ["B:firing"])  # 300 s after its last
    await step(am, clock, 30)
    assert len(sink.got) == count + 2 and sink.summary()[-1][2] == ["A:firing"] * 3
    # resolve one: a resolved notice at the next group_interval, then the group is gone
    await am.execute("post", owner="u", alerts=[alert("B", ends=clock.time() - 1)], at=clock.time())
    await step(am, clock, 30)
    assert sink.summary()[-1] == ("default", "resolved", ["B:resolved"])
    assert [g["labels"] for g in am.list_groups("u")] == [{"alertname": "A"}]


async def test_routing_continue(store: SQLiteStore, clock: FakeClock) -> None:
    sink = Sink()
    am = await manager(store, clock, sink)
    await am.execute(
        "post",
        owner="u",
        alerts=[alert("P", severity="page", team="db"), alert("D", team="db"), alert("X")],
        at=clock.time(),
    )
    await step(am, clock, 10)
    assert sorted(sink.summary()) == [
        ("default", "firing", ["X:firing"]),
        ("pager", "firing", ["P:firing"]),
        ("team", "firing", ["D:firing"]),
        ("team", "firing", ["P:firing"]),
    ]
    with pytest.raises(BadRule):
        await am.execute(
            "configure", owner="u", route=Route(receiver="nobody"), receivers=[], inhibit=[], at=0.0
        )


@pytest.mark.parametrize(
    ("silence", "labels", "silenced"),
    [
        (['alertname="A"'], {"alertname": "A"}, True),
        (['alertname="A"'], {"alertname": "B"}, False),
        (['alertname=~"A|B"', 'x!="1"'], {"alertname": "B", "x": "2"}, True),
        (['alertname=~"A|B"', 'x!="1"'], {"alertname": "B", "x": "1"}, False),
        (['x!~"1.*"'], {"alertname": "A"}, True),
    ],
)
async def test_silence_matrix(
    store: SQLiteStore, clock: FakeClock, silence: list[str], labels: dict[str, str], silenced: bool
) -> None:
    sink = Sink()
    am = await manager(store, clock, sink)
    made = am.new_silence(parse_matchers(silence), clock.time(), clock.time() + 100, "u", "")
    await am.execute("silence", owner="u", silence=made)
    await am.execute("post", owner="u", alerts=[AlertIn(labels, {}, 0.0, 0.0)], at=clock.time())
    await step(am, clock, 10)
    notices = [p for _, p in sink.got if p.get("kind") == "silence"]
    assert [n["status"] for n in notices] == ["started"]
    assert sink.summary() == (
        [] if silenced else [("default", "firing", [f"{labels['alertname']}:firing"])]
    )
    await step(am, clock, 95)  # silence over: notice, and the alert notifies if it was muted
    notices = [p for _, p in sink.got if p.get("kind") == "silence"]
    assert [n["status"] for n in notices] == ["started", "expired"]
    assert len(sink.summary()) == 1


@pytest.mark.parametrize(
    ("source", "target", "inhibited"),
    [
        ({"alertname": "NodeDown", "node": "n1"}, {"alertname": "ActorDied", "node": "n1"}, True),
        ({"alertname": "NodeDown", "node": "n2"}, {"alertname": "ActorDied", "node": "n1"}, False),
        ({"alertname": "Other", "node": "n1"}, {"alertname": "ActorDied", "node": "n1"}, False),
        ({"alertname": "NodeDown", "node": "n1"}, {"alertname": "Else", "node": "n1"}, False),
    ],
)
async def test_inhibition_matrix(
    store: SQLiteStore,
    clock: FakeClock,
    source: dict[str, str],
    target: dict[str, str],
    inhibited: bool,
) -> None:
    sink = Sink()
    rule = Inhibit(['alertname="NodeDown"'], ['alertname="ActorDied"'], ["node"])
    am = await manager(store, clock, sink, inhibit=[rule])
    await am.execute(
        "post",
        owner="u",
        alerts=[AlertIn(source, {}, 0.0, 0.0), AlertIn(target, {}, 0.0, 0.0)],
        at=clock.time(),
    )
    await step(am, clock, 10)
    names = {a for _, _, alerts in sink.summary() for a in alerts}
    assert (f"{target['alertname']}:firing" in names) is not inhibited
    assert f"{source['alertname']}:firing" in names


async def test_ack_suppresses_repeats_until_resolved(store: SQLiteStore, clock: FakeClock) -> None:
    sink = Sink()
    am = await manager(store, clock, sink)
    await am.execute("post", owner="u", alerts=[alert("A")], at=clock.time())
    await step(am, clock, 10)
    fp = fingerprint({"alertname": "A"})
    await am.execute("ack", owner="u", fp=fp, who="alice", at=clock.time())
    assert am.list_alerts("u", clock.time())[0]["acked_by"] == "alice"
    for _ in range(12):
        await step(am, clock, 30)
    assert len(sink.got) == 1  # no repeat while acknowledged
    await am.execute("post", owner="u", alerts=[alert("A", ends=clock.time())], at=clock.time())
    await step(am, clock, 30)
    assert sink.summary()[-1] == ("default", "resolved", ["A:resolved"])
    with pytest.raises(AlertNotFound):
        await am.execute("ack", owner="u", fp=fp, who="alice", at=clock.time())
    with pytest.raises(AlertNotFound):
        await am.execute("ack", owner="other", fp=fp, who="bob", at=clock.time())


async def test_transitions_once_and_no_repeat_after_restart(
    store: SQLiteStore, clock: FakeClock
) -> None:
    sink = Sink()
    am = await manager(store, clock, sink)
    t = Transition(1, "u", "f", "firing", {"alertname": "T"}, {}, clock.time(), 0.0, "r", 1.0)
    assert await am.execute("transitions", source="e0", transitions=[t], at=clock.time()) == 1
    assert await am.execute("transitions", source="e0", transitions=[t], at=clock.time()) == 0
    await step(am, clock, 10)
    assert sink.summary() == [("default", "firing", ["T:firing"])]
    again = await manager(store, clock, sink, configure=False)  # restarted
    assert await again.execute("transitions", source="e0", transitions=[t], at=clock.time()) == 0
    await step(again, clock, 30)
    assert len(sink.got) == 1  # the notification log came back: no repeat
    done = Transition(
        2, "u", "f", "resolved", {"alertname": "T"}, {}, t.starts_at, clock.time(), "r", 0.0
    )
    await again.execute("transitions", source="e0", transitions=[t, done], at=clock.time())
    await step(again, clock, 30)
    assert sink.summary()[-1] == ("default", "resolved", ["T:resolved"])
    assert again.list_alerts("u", clock.time()) == []


async def test_a_look_with_nothing_to_send_writes_nothing(
    store: SQLiteStore, clock: FakeClock
) -> None:
    sink = Sink()
    am = await manager(store, clock, sink)
    await am.execute("post", owner="u", alerts=[alert("A")], at=clock.time())
    await step(am, clock, 10)
    assert sink.summary() == [("default", "firing", ["A:firing"])]
    await am.after_commit(None)
    written = len(await store.read("monitor-alerts-0"))
    for _ in range(5):  # group_interval passes, nothing changed, repeat_interval far off
        await step(am, clock, 30)
    await am.after_commit(None)
    assert len(sink.got) == 1
    assert len(await store.read("monitor-alerts-0")) == written
    again = await manager(store, clock, sink, configure=False)  # restarted
    await step(again, clock, 1)
    assert len(sink.got) == 1  # looked at again, still nothing to send
    await step(again, clock, 300)
    assert sink.summary()[-1] == ("default", "firing", ["A:firing"])  # the repeat, as before
