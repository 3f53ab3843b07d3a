"""The replica side of chat without Ray: feeds keep a room's events contiguous, watches
hand each connection its events once and in order, and the WebSocket's frames and
buffers hold their bounds.

The shard is a real ``ChatShard`` behind a stand-in for ``ActorRef`` that calls its
methods directly, so the client's routing, gap filling and rejoining run as they do
against actors.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from actors.auth.client import Principal
from actors.chat.client import ChatClient, Post, Watch
from actors.chat.errors import NotAMember
from actors.chat.model import Event
from actors.chat.settings import ChatSettings
from actors.chat.shard import ChatShard
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput, RateLimited
from actors.runtime.store import SQLiteStore
from apps.chat.frames import post_json
from apps.chat.sse import parse_last_event_id
from apps.chat.ws import MAX_FRAME_BYTES, Connection, InFlight, Outbox, parse_frame, ref_of
from tests.unit.conftest import settle

ROOM = "r-" + "a" * 24


class LocalRef:
    """An ``ActorRef`` stand-in: calls the shard's method in this process."""

    def __init__(self, shard: ChatShard) -> None:
        self.shard = shard

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.shard, method)(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = await result
        return result


class Directory:
    async def username(self, user_id: str) -> str | None:
        return user_id.title() if user_id != "ghost" else None

    async def close(self) -> None:
        return None


@pytest.fixture
async def shard(clock: FakeClock, store: SQLiteStore) -> ChatShard:
    opened = ChatShard(ChatSettings(send_burst=1_000), clock=clock)
    await opened.open(store, "chat-shard-0", on_failure=lambda error: None)
    return opened


@pytest.fixture
def client(shard: ChatShard, clock: FakeClock, make_settings: Any) -> ChatClient:
    made = ChatClient(
        make_settings(chat_shards=1), render=post_json, directory=Directory(), clock=clock
    )
    made.shards.refs = [LocalRef(shard)]  # type: ignore[list-item]
    made._start_following = lambda: None  # type: ignore[method-assign]  # posts are pulled by hand
    return made


class Seen:
    """A connection's sink: the JSON messages it was handed, and why its watch ended."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.ended: list[str] = []

    def sink(self, post: Post, text: str) -> None:
        self.lines.append(orjson.loads(text))

    def on_end(self, watch: Watch, reason: str) -> None:
        self.ended.append(reason)

    def seqs(self) -> list[int]:
        return [line["seq"] for line in self.lines if line["type"] == "event"]


async def deliver(client: ChatClient, shard: ChatShard) -> None:
    """What the follow loop does: pull the shard's posts and route each."""
    posts = await shard.pull(client.follower, after=0, timeout_s=0)
    for _, post in posts:
        client._route(post)
    await settle()
    if posts:  # acknowledged, as the next pull of the follow loop does
        await shard.pull(client.follower, after=posts[-1][0], timeout_s=0)


async def open_room(client: ChatClient, user: str, seen: Seen, **options: Any) -> Watch:
    watch, answer = await client.open(
        ROOM, user, user.title(), sink=seen.sink, on_end=seen.on_end, **options
    )
    await client.catch_up(watch, answer["visible_seq"], options.pop("resume", None))
    return watch


async def test_a_watch_gets_live_events_in_order_once(client: ChatClient, shard: ChatShard) -> None:
    await shard.create_room(ROOM, "public", "general", "", "alice", "Alice")
    seen = Seen()
    await open_room(client, "bob", seen)  # bob joins: seq 2
    for i in range(3):
        await client.send(ROOM, "alice", f"m{i}")
    await deliver(client, shard)
    assert seen.seqs() == [3, 4, 5]
    assert [line["text"] for line in seen.lines if line["type"] == "event"] == ["m0", "m1", "m2"]


async def test_a_feed_closes_a_gap_from_history_before_going_on(
    client: ChatClient, shard: ChatShard
) -> None:
    await shard.create_room(ROOM, "public", "general", "", "alice", "Alice")
    seen = Seen()
    await open_room(client, "bob", seen)
    shard.followers.unfollow(client.follower)  # as a restart would: nothing posted to us
    for i in range(3):
        await client.send(ROOM, "alice", f"missed {i}")
    await client._rejoin(0)  # what the follow loop does when the shard says "not following"
    await client.send(ROOM, "alice", "live")
    await deliver(client, shard)
    assert seen.seqs() == [3, 4, 5, 6]  # no gap, no duplicate
    assert seen.lines[-1]["text"] == "live"


async def test_a_resume_gives_what_was_missed_then_live_with_no_duplicate(
    client: ChatClient, shard: ChatShard
) -> None:
    await shard.create_room(ROOM, "public", "general", "", "alice", "Alice")
    await shard.join(ROOM, "bob", "Bob")
    for i in range(4):
        await shard.send(ROOM, "alice", f"m{i}")
    epoch = shard.rooms[ROOM].epoch
    seen = Seen()
    watch, answer = await client.open(ROOM, "bob", "Bob", sink=seen.sink, on_end=seen.on_end)
    await client.send(ROOM, "alice", "while catching up")  # posted before the watch begins
    caught = await client.catch_up(watch, answer["visible_seq"], (3, epoch))
    await deliver(client, shard)
    assert caught.recovered is True and len(caught.history) == 4
    assert seen.seqs() == [4, 5, 6, 7]


async def test_a_resume_with_another_epoch_starts_from_now_and_says_so(
    client: ChatClient, shard: ChatShard
) -> None:
    await shard.create_room(ROOM, "public", "general", "", "alice", "Alice")
    await shard.send(ROOM, "alice", "old")
    seen = Seen()
    watch, answer = await client.open(ROOM, "bob", "Bob", sink=seen.sink)
    caught = await client.catch_up(watch, answer["visible_seq"], (1, "f" * 16))
    assert caught.recovered is False and caught.history == []
    await client.send(ROOM, "alice", "new")
    await deliver(client, shard)
    assert [line.get("text") for line in seen.lines if line["type"] == "event"] == ["new"]


async def test_a_kicked_member_s_watch_ends_after_it_sees_the_kick(
    client: ChatClient, shard: ChatShard
) -> None:
    await shard.create_room(ROOM, "public", "general", "", "alice", "Alice")
    seen = Seen()
    watch = await open_room(client, "bob", seen)
    await shard.kick(ROOM, "alice", "bob")
    await shard.send(ROOM, "alice", "after bob left")
    await deliver(client, shard)
    assert seen.ended == ["kicked"] and watch.ended == "kicked"
    assert [line.get("action") for line in seen.lines if line["type"] == "event"] == ["kicked"]


async def test_presence_diffs_older_than_the_list_a_watch_started_from_are_dropped() -> None:
    seen = Seen()
    watch = Watch(ROOM, "bob", "Bob", None, seen.sink, seen.on_end)
    watch.presence_version = 10
    watch.begin(0, [])
    for version, joined in ((9, "old"), (10, "same"), (11, "new")):
        post = Post("presence", ROOM, version=version, users=((joined, joined),))
        watch.offer(post, post_json(post))
    assert [line["joins"][0]["user_id"] for line in seen.lines] == ["new"]


async def test_the_last_watch_leaving_unwatches_the_room(
    client: ChatClient, shard: ChatShard
) -> None:
    await shard.create_room(ROOM, "public", "general", "", "alice", "Alice")
    first, second = Seen(), Seen()
    one = await open_room(client, "alice", first)
    two = await open_room(client, "bob", second)
    await client.close_watch(one)
    assert client.follower in shard.followers.watchers[ROOM]
    await client.close_watch(two)
    assert ROOM not in shard.followers.watchers and ROOM not in client.feeds


async def test_devices_are_refreshed_and_reported_again_after_a_restart(
    client: ChatClient, shard: ChatShard
) -> None:
    await shard.create_room(ROOM, "public", "general", "", "alice", "Alice")
    await open_room(client, "alice", Seen())
    shard.presence.rooms.clear()  # presence lost, as in a restart
    await client._refresh()
    assert shard.presence.devices(ROOM) == {"alice": 1}
    shard.presence.rooms.clear()
    shard.followers.unfollow(client.follower)
    await client._rejoin(0)
    assert shard.presence.devices(ROOM) == {"alice": 1}


async def test_a_direct_room_needs_a_peer_that_exists(client: ChatClient) -> None:
    made = await client.create_direct("alice", "Alice", "bob")
    again = await client.create_direct("bob", "Bob", "alice")
    assert made["created"] is True and again == {"room": again["room"], "created": False}
    assert made["room"]["id"] == again["room"]["id"]
    with pytest.raises(Exception, match="no such user"):
        await client.create_direct("alice", "Alice", "ghost")
    with pytest.raises(InvalidInput):
        await client.create_direct("alice", "Alice", "alice")


def test_new_room_ids_land_on_their_owner_s_shard(make_settings: Any) -> None:
    client = ChatClient(make_settings(chat_shards=4))
    for owner in ("alice", "bob", "carol"):
        home = client.shards.index(f"user:{owner}")
        assert {client.shards.index(client.new_room_id(owner)) for _ in range(20)} == {home}


# --- the WebSocket and SSE fronts -----------------------------------------------------------


class SlowSends:
    """A client whose sends to a room wait until the test lets that room go."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.order: list[str] = []

    async def send(self, room: str, user: str, text: str, **options: Any) -> dict[str, Any]:
        await self.gates.setdefault(room, asyncio.Event()).wait()
        self.order.append(text)
        return {"seq": len(self.order), "at": 0.0, "client_id": None, "duplicate": False}


async def test_frames_about_one_room_keep_their_order_and_other_rooms_do_not_wait(
    clock: FakeClock, make_settings: Any
) -> None:
    config = ChatSettings.of(make_settings())
    client = SlowSends()
    user = Principal("alice", "alice", ("user",), "s")
    # No socket and no session checks: only frames are handled here.
    pieces: dict[str, Any] = {"verifier": None, "user": user, "credential": "", "config": config}
    connection = Connection(None, client, clock=clock, **pieces)  # type: ignore[arg-type]
    for ref, room in (("a1", "r-a"), ("a2", "r-a"), ("b1", "r-b")):
        await connection.handle_text(
            orjson.dumps({"type": "send", "ref": ref, "room": room, "text": ref}).decode()
        )
    client.gates.setdefault("r-b", asyncio.Event()).set()
    await settle()
    assert client.order == ["b1"]  # room b did not wait for room a
    client.gates["r-a"].set()
    await settle()
    assert client.order == ["b1", "a1", "a2"]
    answers = [orjson.loads(line) for line in connection.outbox.lines]
    assert [a["ref"] for a in answers] == ["b1", "a1", "a2"]


async def test_frames_in_flight_are_bounded_in_count_and_bytes(
    clock: FakeClock, make_settings: Any
) -> None:
    # many rooms at once, as one sender to 100 rooms does, up to the bound; then the
    # reader waits (back pressure) until one finishes
    config = ChatSettings.of(make_settings(chat_frames_in_flight=40))
    client = SlowSends()
    user = Principal("alice", "alice", ("user",), "s")
    pieces: dict[str, Any] = {"verifier": None, "user": user, "credential": "", "config": config}
    connection = Connection(None, client, clock=clock, **pieces)  # type: ignore[arg-type]

    def frame(n: int) -> str:
        return orjson.dumps(
            {"type": "send", "ref": f"s{n}", "room": f"r-{n}", "text": "x"}
        ).decode()

    for n in range(40):
        await connection.handle_text(frame(n))
    assert connection.in_flight.frames == 40  # more than the 32 the replica used to allow
    reader = asyncio.ensure_future(connection.handle_text(frame(40)))
    await settle()
    assert not reader.done()  # the 41st waits
    client.gates.setdefault("r-3", asyncio.Event()).set()
    await settle()
    assert reader.done() and client.order == ["x"]
    # bytes: one frame always fits, a second not beyond the bound
    bounded = InFlight(max_frames=100, max_bytes=1_500)
    await bounded.acquire(1_200)
    waiting = asyncio.ensure_future(bounded.acquire(1_200))
    await settle()
    assert not waiting.done()
    bounded.release(1_200)
    await settle()
    assert waiting.done() and (bounded.frames, bounded.bytes) == (1, 1_200)
    for gate in range(41):
        client.gates.setdefault(f"r-{gate}", asyncio.Event()).set()
    await settle()


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "send", "room": "r-1", "text": 5}',
        '{"type": "send", "room": "r-1", "text": "x", "extra": 1}',
        '{"type": "read", "room": "r-1", "seq": false}',
        '{"type": "read", "room": "r-1", "seq": "5"}',
        '{"type": "history", "room": "r-1", "limit": 100000}',
        '{"type": "dance"}',
        "not json",
    ],
)
def test_bad_frames_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_frame(text)


def test_a_bad_frame_s_ref_is_still_found() -> None:
    assert ref_of('{"type": "send", "ref": "s1", "text": 7}') == "s1"
    assert ref_of('{"ref": 5}') is None and ref_of("not json") is None and ref_of("[1]") is None


def test_frames_parse_into_their_kinds() -> None:
    frame = parse_frame(
        '{"type": "join", "ref": "j", "room": "r-1", "resume": {"seq": 3, "epoch": "ab"}}'
    )
    assert (frame.room, frame.resume.seq, frame.resume.epoch) == ("r-1", 3, "ab")


async def test_an_outbox_is_bounded_in_lines_and_bytes_and_batches_frames() -> None:
    lines = Outbox(max_lines=3, max_bytes=10_000)
    assert [lines.put("x") for _ in range(4)] == [True, True, True, False]
    assert await lines.next_frame() == "x\nx\nx"
    sized = Outbox(max_lines=100, max_bytes=2_000)
    assert sized.put("y" * 5_000) is True  # one line always fits an empty buffer
    assert sized.put("z") is False
    big = Outbox(max_lines=1_000, max_bytes=10**9)
    for _ in range(3):
        big.put("w" * (MAX_FRAME_BYTES // 3))
    assert (await big.next_frame()).count("\n") == 1  # a frame stays under the size limit


def test_sse_ids_are_epoch_and_seq() -> None:
    assert parse_last_event_id("abc123:42") == (42, "abc123")
    assert parse_last_event_id(None) is None
    with pytest.raises(InvalidInput):
        parse_last_event_id("42")


def test_events_render_as_the_protocol_says() -> None:
    event = Event(
        7, 1.5, "message", "u1", "ann", text="hi", reply_to=3, mentions=("u2",), client_id="c"
    )
    assert orjson.loads(post_json(Post("event", ROOM, event))) == {
        "type": "event",
        "room": ROOM,
        "seq": 7,
        "at": 1.5,
        "kind": "message",
        "user_id": "u1",
        "username": "ann",
        "text": "hi",
        "reply_to": 3,
        "mentions": ["u2"],
        "client_id": "c",
    }
    kicked = Event(8, 2.0, "member", "u1", "ann", action="kicked", subject="u3", value="cat")
    body = orjson.loads(post_json(Post("event", ROOM, kicked)))
    assert (body["action"], body["subject"], body["subject_name"]) == ("kicked", "u3", "cat")


async def test_a_connection_refuses_frames_beyond_its_rate(clock: FakeClock) -> None:
    from actors.chat.ratelimit import UserRates

    rates = UserRates(clock, rate_per_s=2, burst=2)
    rates.take("c")
    rates.take("c")
    with pytest.raises(RateLimited):
        rates.take("c")
    clock.advance(0.5)
    rates.take("c")


async def test_sends_made_at_once_go_to_their_shard_in_one_call(
    client: ChatClient, shard: ChatShard
) -> None:
    await shard.create_room(ROOM, "public", "general", "", "alice", "Alice")
    sent = await asyncio.gather(*(client.send(ROOM, "alice", f"m{i}") for i in range(20)))
    assert sorted(s["seq"] for s in sent) == list(range(2, 22))
    assert client._senders[0].calls < 20  # coalesced: the first alone, the rest together
    with pytest.raises(NotAMember):
        await client.send(ROOM, "mallory", "not a member")
