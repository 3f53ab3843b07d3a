"""PubSubClient's bookkeeping of what the brokers follow, against stand-in brokers (no Ray)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.pubsub.broker import MAX_SEQ, OWNER_SEPARATOR, Message
from actors.pubsub.client import HISTORY_PAGE, PubSubClient, SlowConsumer
from actors.runtime.errors import InvalidInput
from actors.runtime.settings import Settings
from tests.conftest import until
from tests.unit.conftest import settle


class Broker:
    """One stand-in broker: nothing to deliver, every other call answered at once."""

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "pull":
            await asyncio.Event().wait()
        return None


class Brokers:
    """Stand-in ``Shards``: records each follow sent to all brokers, and each answered;
    ``gate`` holds the answers back."""

    def __init__(self, count: int = 2) -> None:
        self.refs = [Broker() for _ in range(count)]
        self.sent: list[list[Any]] = []
        self.answered: list[list[Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def call_all(self, method: str, follower: str, interests: list[Any]) -> None:
        assert method == "follow"
        self.sent.append(interests)
        await self.gate.wait()
        self.answered.append(interests)

    def __getitem__(self, index: int) -> Broker:
        return self.refs[index]

    def __iter__(self) -> Any:
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)


@pytest.fixture
async def client() -> Any:
    client = PubSubClient(Settings())
    client.brokers = Brokers()  # type: ignore[assignment]
    yield client
    await client.close()


async def test_a_follow_cut_short_is_sent_again(client: PubSubClient) -> None:
    brokers: Brokers = client.brokers  # type: ignore[assignment]
    await client.subscribe("a")
    brokers.gate.clear()
    subscribing = asyncio.create_task(client.subscribe("b"))
    await settle()
    subscribing.cancel()  # while the brokers are being told about "b"
    brokers.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await subscribing
    # The brokers may have heard of "b": they are told again that "a" is all.
    assert brokers.sent == [[("a", None)], [("a", None), ("b", None)], [("a", None)]]


async def test_a_close_cut_short_still_tells_the_brokers(client: PubSubClient) -> None:
    brokers: Brokers = client.brokers  # type: ignore[assignment]
    subscription = await client.subscribe("a")
    brokers.gate.clear()
    closing = asyncio.create_task(subscription.close())
    await settle()
    closing.cancel()  # as when the stream it served is cancelled
    brokers.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await settle()
    assert brokers.answered[-1] == []


# --- request/reply, resume and bounds ------------------------------------------------


class Publishing(Brokers):
    """Stand-in brokers that also take publishes (recorded) and answer history
    from ``kept``, a list of messages per topic."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, bytes, dict[str, Any]]] = []
        self.kept: dict[str, list[Message]] = {}
        self.pages = 0
        outer = self

        class Owner(Broker):
            async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
                if method == "publish":
                    topic, payload = args
                    outer.published.append((topic, payload, kwargs))
                    return 1, 0.0
                if method == "last_seq":
                    kept = outer.kept.get(args[0])
                    return kept[-1].seq if kept else 0
                if method == "history":
                    topic, after = args
                    outer.pages += 1
                    messages = [m for m in outer.kept.get(topic, []) if m.seq > after]
                    last = outer.kept[topic][-1].seq if outer.kept.get(topic) else 0
                    return {"messages": messages[: kwargs["limit"]], "complete": True,
                            "last_seq": last}  # fmt: skip
                return await super().call(method, *args, **kwargs)

        self.owner_ref = Owner()

    def owner(self, key: str) -> Broker:
        return self.owner_ref


@pytest.fixture
async def publishing() -> Any:
    client = PubSubClient(Settings(pubsub_max_resume_topics=3))
    client.brokers = Publishing()  # type: ignore[assignment]
    yield client
    await client.close()


async def test_a_burst_of_replies_nobody_waits_for_never_stops_replies(
    publishing: PubSubClient,
) -> None:
    """Replies go straight to the request waiting for them: a burst on the reply
    topics (past any queue bound: 10,000 once stopped the router for good) is
    dropped, and a later request is still answered."""
    brokers: Publishing = publishing.brokers  # type: ignore[assignment]
    asking = asyncio.create_task(publishing.request("svc", b"?", timeout_s=30))
    await until(lambda: brokers.published)
    reply_to = brokers.published[0][2]["reply_to"]
    prefix, _, token = reply_to.rpartition(".")
    assert prefix == f"_inbox.{publishing.follower}" and len(token) == 32
    for i in range(20_000):
        publishing._fan_out(Message(f"{prefix}.guess{i}", 0, 0.0, b"spam"), ())
    publishing._fan_out(Message(reply_to, 0, 0.0, b"answer"), ())
    assert (await asking).payload == b"answer"

    second = asyncio.create_task(publishing.request("svc", b"?", timeout_s=30))
    await until(lambda: len(brokers.published) == 2)
    publishing._fan_out(Message(brokers.published[1][2]["reply_to"], 0, 0.0, b"again"), ())
    assert (await second).payload == b"again"
    assert publishing._interests() == [(f"{prefix}.*", None)]


async def test_a_reply_topic_is_never_kept(publishing: PubSubClient) -> None:
    brokers: Publishing = publishing.brokers  # type: ignore[assignment]
    await publishing.publish("_inbox.a.b", b"reply")
    await publishing.publish("other", b"kept")
    assert [kwargs["ephemeral"] for _, _, kwargs in brokers.published] == [True, False]


async def test_resuming_fetches_history_a_page_at_a_time_as_it_is_read(
    publishing: PubSubClient,
) -> None:
    brokers: Publishing = publishing.brokers  # type: ignore[assignment]
    total = 3 * HISTORY_PAGE + 10
    brokers.kept["feed"] = [Message("feed", i, 0.0, b"x") for i in range(1, total + 1)]
    subscription = await publishing.subscribe("feed", resume={"feed": 5})
    assert brokers.pages == 0 and subscription.pending == 0  # nothing loaded yet
    brokers.kept["feed"].append(Message("feed", total + 1, 0.0, b"live"))  # comes live
    first = await anext(subscription)
    assert first.seq == 6 and brokers.pages == 1 and subscription.pending < HISTORY_PAGE
    seen = [first.seq]
    while len(seen) < total - 5:
        seen.append((await anext(subscription)).seq)
        assert subscription.pending <= HISTORY_PAGE
    assert seen == list(range(6, total + 1)) and brokers.pages == 4
    publishing._fan_out(Message("feed", total + 1, 0.0, b"live"), ())
    assert (await anext(subscription)).payload == b"live" and brokers.pages == 4


async def test_a_resume_map_is_bounded(publishing: PubSubClient) -> None:
    with pytest.raises(InvalidInput):
        await publishing.subscribe(">", resume={f"t.{i}": 0 for i in range(4)})
    with pytest.raises(InvalidInput):
        await publishing.subscribe(">", resume={"t": MAX_SEQ + 1})
    await publishing.subscribe(">", resume={f"t.{i}": MAX_SEQ for i in range(3)})


async def test_a_subscription_is_bounded_in_bytes_as_well_as_in_messages(
    publishing: PubSubClient,
) -> None:
    big = Message("t", 1, 0.0, b"x" * 1_000)
    by_bytes = await publishing.subscribe("t", max_pending=100, max_pending_bytes=2_600)
    for seq in (1, 2):
        by_bytes._offer(big._replace(seq=seq))
    assert by_bytes.pending == 2 and by_bytes.closed_because is None
    by_bytes._offer(big._replace(seq=3))
    with pytest.raises(SlowConsumer):
        await anext(by_bytes)
    alone = await publishing.subscribe("t", max_pending=100, max_pending_bytes=10)
    alone._offer(big)  # one message always fits an empty queue
    assert (await anext(alone)).seq == 1


async def test_queue_groups_of_different_owners_are_different_groups(
    publishing: PubSubClient,
) -> None:
    mine = await publishing.subscribe("jobs", group="workers", owner="u1")
    theirs = await publishing.subscribe("jobs", group="workers", owner="u2")
    python = await publishing.subscribe("jobs", group="workers")
    assert len({mine.group, theirs.group, python.group}) == 3
    publishing._fan_out(Message("jobs", 1, 0.0, b"x"), (mine.group,))  # type: ignore[arg-type]
    assert (mine.pending, theirs.pending, python.pending) == (1, 0, 0)
    with pytest.raises(InvalidInput):  # no name a user chooses is another's group
        await publishing.subscribe("jobs", group=f"u1{OWNER_SEPARATOR}workers")


async def test_a_live_message_reaches_an_idle_readers_sink_within_the_fan_out(
    publishing: PubSubClient,
) -> None:
    """While the reader waits, a live message goes to the sink in the fan-out's own
    call (no wakeup of the reader's task per message); one after a gap, or behind
    one queued, waits for the reader, which fills the gap from history first."""
    brokers: Publishing = publishing.brokers  # type: ignore[assignment]
    subscription = await publishing.subscribe("feed")
    got: list[int] = []
    subscription.deliver_to(lambda message: got.append(message.seq))

    async def read() -> None:
        async for message in subscription:
            got.append(message.seq)

    reader = asyncio.create_task(read())
    await settle()
    publishing._fan_out(Message("feed", 1, 0.0, b"a"), ())
    publishing._fan_out(Message("feed", 2, 0.0, b"b"), ())
    assert got == [1, 2]  # before the reader ran at all
    publishing._fan_out(Message("feed", 2, 0.0, b"b"), ())  # a repeat
    brokers.kept["feed"] = [Message("feed", i, 0.0, b"x") for i in range(1, 6)]
    publishing._fan_out(Message("feed", 5, 0.0, b"e"), ())  # 3 and 4 were missed
    publishing._fan_out(Message("feed", 6, 0.0, b"f"), ())  # queued behind it
    assert got == [1, 2]
    await until(lambda: len(got) == 6)
    assert got == [1, 2, 3, 4, 5, 6] and brokers.pages == 1
    await settle()
    publishing._fan_out(Message("feed", 7, 0.0, b"g"), ())
    assert got[-1] == 7
    reader.cancel()


async def test_a_sink_that_fails_closes_the_subscription_with_its_error(
    publishing: PubSubClient,
) -> None:
    subscription = await publishing.subscribe("feed")

    def refuse(message: Message) -> None:
        raise LookupError("refused")

    subscription.deliver_to(refuse)
    reader = asyncio.create_task(anext(subscription))
    await settle()
    publishing._fan_out(Message("feed", 1, 0.0, b"a"), ())
    with pytest.raises(LookupError):
        await reader
