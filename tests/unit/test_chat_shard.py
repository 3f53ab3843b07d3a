"""ChatShard run directly (no Ray) on a FakeClock and a real SQLite store.

Recovery is a second shard opened on the same store and stream, as a restarted
actor would be. A follower's posts are read with ``pull`` (nothing is posted
before its record is committed, so a pull right after a write sees it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.chat.book import SIZE_RECOUNT_FRACTION
from actors.chat.errors import (
    Banned,
    MessageNotFound,
    Muted,
    NotAllowed,
    NotAMember,
    RoomArchived,
    RoomFull,
    RoomNotFound,
    SlowMode,
)
from actors.chat.model import Device, Post
from actors.chat.notify import Mention
from actors.chat.settings import EVENT_OVERHEAD_BYTES, ChatSettings
from actors.chat.shard import ChatShard
from actors.runtime.clock import FakeClock
from actors.runtime.errors import (
    Conflict,
    InvalidInput,
    LimitReached,
    NotFound,
    RateLimited,
    TooLarge,
)
from actors.runtime.store import SQLiteStore
from tests.unit.conftest import settle

R1 = "r-" + "1" * 24
R2 = "r-" + "2" * 24
POLL_S = 0.0

OpenShard = Callable[..., Awaitable[ChatShard]]


class Notices:
    """A mention notifier that keeps what it is told."""

    def __init__(self) -> None:
        self.got: list[Mention] = []

    async def notify(self, mention: Mention) -> None:
        self.got.append(mention)

    async def close(self) -> None:
        return None


@pytest.fixture
def notices() -> Notices:
    return Notices()


@pytest.fixture
def open_shard(clock: FakeClock, store: SQLiteStore, notices: Notices) -> OpenShard:
    """A shard recovered from ``store`` (a second call is a restarted actor)."""

    async def open_(*, snapshot_every: int = 10_000, **overrides: Any) -> ChatShard:
        values: dict[str, Any] = {
            "max_rooms_per_owner": 3,
            "max_members_per_room": 4,
            "max_pending_per_room": 2,
            "max_message_bytes": 64,
            "history_max": 8,
            "send_rate_per_s": 1.0,
            "send_burst": 50,
            "max_direct_rooms_per_user": 2,
        } | overrides
        shard = ChatShard(ChatSettings(**values), clock=clock, notifier=notices)
        await shard.open(
            store, "chat-shard-0", snapshot_every=snapshot_every, on_failure=lambda error: None
        )
        return shard

    return open_


@pytest.fixture
async def shard(open_shard: OpenShard) -> ChatShard:
    return await open_shard()


async def room_with(shard: ChatShard, *members: str, kind: str = "public", room: str = R1) -> str:
    await shard.create_room(room, kind, "general", "", "alice", "Alice")
    for user in members:
        if kind == "public":
            await shard.join(room, user, user.title())
        else:
            await shard.invite(room, "alice", user, user.title())
            await shard.join(room, user, user.title())
    return room


async def posts(shard: ChatShard, follower: str = "f1") -> list[Post]:
    return [post for _, post in await shard.pull(follower, after=0, timeout_s=POLL_S)]


def kinds(events: list[Any]) -> list[tuple[int, str]]:
    return [(e.seq, e.kind) for e in events]


# --- rooms and membership -------------------------------------------------------------


async def test_a_new_room_has_its_owner_and_counts_against_the_owner_quota(
    shard: ChatShard,
) -> None:
    created = await shard.create_room(R1, "public", " general ", "all things", "alice", "Alice")
    assert created["name"] == "general" and created["role"] == "owner" and created["members"] == 1
    assert created["last_seq"] == 1  # the owner joined
    for i in (2, 3):
        await shard.create_room(f"r-{i:024d}", "private", f"room {i}", "", "alice", "Alice")
    with pytest.raises(LimitReached):
        await shard.create_room("r-" + "4" * 24, "public", "one too many", "", "alice", "Alice")
    await shard.create_room("r-" + "4" * 24, "public", "bob's", "", "bob", "Bob")  # another owner
    await shard.delete_room(R1, "alice")
    await shard.create_room("r-" + "5" * 24, "public", "again", "", "alice", "Alice")


@pytest.mark.parametrize(
    ("name", "topic"), [("", ""), ("x" * 101, ""), ("two\nlines", ""), ("ok", "t" * 501)]
)
async def test_bad_names_and_topics_are_refused_and_create_nothing(
    shard: ChatShard, name: str, topic: str
) -> None:
    with pytest.raises(InvalidInput):
        await shard.create_room(R1, "public", name, topic, "alice", "Alice")
    assert shard.rooms == {}


async def test_a_private_room_is_invisible_to_strangers_and_joined_by_invitation(
    shard: ChatShard,
) -> None:
    await shard.create_room(R1, "private", "secret", "", "alice", "Alice")
    for call in (shard.room(R1, "bob"), shard.history(R1, "bob"), shard.members(R1, "bob")):
        with pytest.raises(RoomNotFound):
            await call
    with pytest.raises(RoomNotFound):
        await shard.send(R1, "bob", "hi")
    await shard.invite(R1, "alice", "bob", "Bob")
    assert (await shard.room(R1, "bob"))["invited"] is True
    assert [r["id"] for r in await shard.invites_of("bob")] == [R1]
    assert (await shard.join(R1, "bob", "Bob"))["status"] == "joined"
    assert await shard.invites_of("bob") == []
    assert [r["id"] for r in await shard.rooms_of("bob")] == [R1]


async def test_asking_to_join_a_private_room_waits_for_a_moderator(shard: ChatShard) -> None:
    await shard.create_room(R1, "private", "secret", "", "alice", "Alice")
    assert (await shard.join(R1, "bob", "Bob"))["status"] == "requested"
    with pytest.raises(RoomNotFound):
        await shard.room(R1, "bob")  # a request shows nothing of the room
    assert [p["user_id"] for p in (await shard.pending(R1, "alice"))["requests"]] == ["bob"]
    await shard.join(R1, "carol", "Carol")
    await shard.deny(R1, "alice", "carol")
    with pytest.raises(RoomFull):  # max_pending_per_room = 2
        for user in ("dave", "erin", "fay"):
            await shard.join(R1, user, user)
    await shard.approve(R1, "alice", "bob")
    assert (await shard.room(R1, "bob"))["role"] == "member"
    with pytest.raises(NotAllowed):
        await shard.approve(R1, "bob", "dave")  # members do not approve


async def test_a_public_room_is_joined_by_anyone_up_to_its_member_limit(shard: ChatShard) -> None:
    await room_with(shard, "bob", "carol", "dave")
    with pytest.raises(RoomFull):
        await shard.join(R1, "erin", "Erin")
    assert (await shard.join(R1, "bob", "Bob"))["status"] == "member"
    await shard.leave(R1, "dave")
    await shard.join(R1, "erin", "Erin")


async def test_the_owner_cannot_leave_and_members_cannot_moderate(shard: ChatShard) -> None:
    await room_with(shard, "bob", "carol")
    with pytest.raises(NotAllowed):
        await shard.leave(R1, "alice")
    for call in (
        shard.kick(R1, "bob", "carol"),
        shard.ban(R1, "bob", "carol"),
        shard.mute(R1, "bob", "carol"),
        shard.update_room(R1, "bob", topic="mine now"),
        shard.set_role(R1, "bob", "carol", "moderator"),
        shard.archive(R1, "bob", True),
        shard.delete_room(R1, "bob"),
    ):
        with pytest.raises(NotAllowed):
            await call


async def test_moderators_act_only_on_lower_roles(shard: ChatShard) -> None:
    await room_with(shard, "bob", "carol", "dave")
    await shard.set_role(R1, "alice", "bob", "moderator")
    await shard.set_role(R1, "alice", "carol", "moderator")
    with pytest.raises(NotAllowed):
        await shard.kick(R1, "bob", "carol")  # a moderator, as bob is
    with pytest.raises(NotAllowed):
        await shard.kick(R1, "bob", "alice")
    await shard.kick(R1, "bob", "dave")
    assert "dave" not in shard.rooms[R1].members
    await shard.kick(R1, "alice", "carol")  # the owner outranks moderators
    with pytest.raises(NotAllowed):
        await shard.update_room(R1, "bob", name="renamed")  # only the owner renames
    await shard.update_room(R1, "bob", topic="new topic", slow_mode_s=5)
    assert shard.rooms[R1].topic == "new topic" and shard.rooms[R1].slow_mode_s == 5


async def test_a_ban_removes_the_member_and_lasts_until_it_expires(
    shard: ChatShard, clock: FakeClock
) -> None:
    await room_with(shard, "bob")
    answer = await shard.ban(R1, "alice", "bob", duration_s=60, reason="spam")
    assert answer["until"] == pytest.approx(clock.time() + 60)
    with pytest.raises(NotAMember):
        await shard.send(R1, "bob", "let me in")
    with pytest.raises(Banned) as refused:
        await shard.join(R1, "bob", "Bob")
    assert refused.value.details["until"] == answer["until"]
    clock.advance(61)
    assert (await shard.join(R1, "bob", "Bob"))["status"] == "joined"
    await shard.ban(R1, "alice", "bob")  # for good
    clock.advance(10**6)
    with pytest.raises(Banned):
        await shard.join(R1, "bob", "Bob")
    await shard.unban(R1, "alice", "bob")
    await shard.join(R1, "bob", "Bob")


async def test_a_muted_member_cannot_send_until_the_mute_ends(
    shard: ChatShard, clock: FakeClock
) -> None:
    await room_with(shard, "bob")
    await shard.mute(R1, "alice", "bob", duration_s=30)
    with pytest.raises(Muted):
        await shard.send(R1, "bob", "hello?")
    clock.advance(31)
    await shard.send(R1, "bob", "hello!")
    await shard.mute(R1, "alice", "bob")
    with pytest.raises(Muted):
        await shard.send(R1, "bob", "hello?")
    await shard.unmute(R1, "alice", "bob")
    await shard.send(R1, "bob", "back")


async def test_slow_mode_allows_one_message_per_interval_except_for_moderators(
    shard: ChatShard, clock: FakeClock
) -> None:
    await room_with(shard, "bob")
    await shard.update_room(R1, "alice", slow_mode_s=10)
    await shard.send(R1, "bob", "one")
    with pytest.raises(SlowMode) as refused:
        await shard.send(R1, "bob", "two")
    assert refused.value.status == 429 and 0 < refused.value.details["retry_after_s"] <= 10
    await shard.send(R1, "alice", "owners are not slowed")
    await shard.send(R1, "alice", "at all")
    clock.advance(10)
    await shard.send(R1, "bob", "two")


async def test_the_per_user_send_rate_is_limited(open_shard: OpenShard, clock: FakeClock) -> None:
    shard = await open_shard(send_rate_per_s=1.0, send_burst=3)
    await room_with(shard, "bob")
    for i in range(3):
        await shard.send(R1, "bob", f"m{i}")
    with pytest.raises(RateLimited) as refused:
        await shard.send(R1, "bob", "too fast")
    assert refused.value.status == 429 and refused.value.details["retry_after_s"] > 0
    await shard.send(R1, "alice", "others are not limited by bob")
    clock.advance(1.0)
    await shard.send(R1, "bob", "after a second")


async def test_an_archived_room_is_read_only(shard: ChatShard) -> None:
    await room_with(shard, "bob")
    seq = (await shard.send(R1, "bob", "before"))["seq"]
    await shard.archive(R1, "alice", True)
    for call in (
        shard.send(R1, "bob", "after"),
        shard.edit(R1, "bob", seq, "changed"),
        shard.react(R1, "bob", seq, "+1"),
        shard.join(R1, "carol", "Carol"),
    ):
        with pytest.raises(RoomArchived):
            await call
    assert [m["text"] for m in (await shard.history(R1, "bob"))["messages"]] == ["before"]
    await shard.archive(R1, "alice", False)
    await shard.send(R1, "bob", "after")


# --- messages ---------------------------------------------------------------------------


async def test_messages_are_numbered_in_order_and_a_client_id_makes_a_send_count_once(
    shard: ChatShard,
) -> None:
    await room_with(shard, "bob")  # seqs 1, 2: alice and bob joined
    first = await shard.send(R1, "bob", "hello", client_id="c1", key="send:R1:bob:c1")
    again = await shard.send(R1, "bob", "hello", client_id="c1", key="send:R1:bob:c1")
    other = await shard.send(R1, "alice", "hi bob")
    assert (first["seq"], again["seq"], other["seq"]) == (3, 3, 4)
    assert first["duplicate"] is False and again["duplicate"] is True
    page = await shard.history(R1, "bob")
    assert [(m["seq"], m["text"], m["client_id"]) for m in page["messages"]] == [
        (3, "hello", "c1"),
        (4, "hi bob", None),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [("", InvalidInput), ("   ", InvalidInput), ("x" * 65, TooLarge), ("é" * 33, TooLarge)],
)
async def test_empty_and_oversized_messages_are_refused(
    shard: ChatShard, text: str, error: type
) -> None:
    await room_with(shard)
    with pytest.raises(error):
        await shard.send(R1, "alice", text)
    assert shard.rooms[R1].last_seq == 1


async def test_only_a_member_sends(shard: ChatShard) -> None:
    await room_with(shard)
    with pytest.raises(NotAMember):
        await shard.send(R1, "bob", "not a member")
    with pytest.raises(RoomNotFound):
        await shard.send(R2, "alice", "no such room")


async def test_edit_and_delete_own_messages_leave_a_tombstone_in_order(shard: ChatShard) -> None:
    await room_with(shard, "bob")
    seq = (await shard.send(R1, "bob", "helo"))["seq"]
    await shard.send(R1, "alice", "next")
    with pytest.raises(NotAllowed):
        await shard.edit(R1, "alice", seq, "not yours")
    await shard.edit(R1, "bob", seq, "hello")
    await shard.delete_message(R1, "bob", seq)
    messages = (await shard.history(R1, "alice"))["messages"]
    assert [(m["seq"], m["text"], m["deleted"]) for m in messages] == [
        (seq, "", True),
        (seq + 1, "next", False),
    ]
    events = (await shard.events(R1, "alice", after=2))["events"]
    assert kinds(events) == [(3, "message"), (4, "message"), (5, "edit"), (6, "delete")]
    assert events[0].text == "" and events[2].text == ""  # the deleted text is gone
    with pytest.raises(Conflict):
        await shard.edit(R1, "bob", seq, "again")
    assert (await shard.delete_message(R1, "bob", seq))["seq"] == 0  # deleted already


async def test_moderators_delete_lower_roles_messages_and_members_only_their_own(
    shard: ChatShard,
) -> None:
    await room_with(shard, "bob", "carol")
    await shard.set_role(R1, "alice", "bob", "moderator")
    by_carol = (await shard.send(R1, "carol", "spam"))["seq"]
    by_alice = (await shard.send(R1, "alice", "rules"))["seq"]
    with pytest.raises(NotAllowed):
        await shard.delete_message(R1, "carol", by_alice)
    with pytest.raises(NotAllowed):
        await shard.delete_message(R1, "bob", by_alice)  # the owner's
    await shard.delete_message(R1, "bob", by_carol)
    assert (await shard.history(R1, "carol"))["messages"][0]["deleted"] is True


async def test_replies_and_reactions(shard: ChatShard) -> None:
    await room_with(shard, "bob")
    parent = (await shard.send(R1, "alice", "question"))["seq"]
    answer = await shard.send(R1, "bob", "answer", reply_to=parent)
    with pytest.raises(InvalidInput):
        await shard.send(R1, "bob", "to a join event", reply_to=1)
    with pytest.raises(MessageNotFound):
        await shard.send(R1, "bob", "to the future", reply_to=99)
    assert (await shard.react(R1, "bob", parent, "👍"))["seq"] > 0
    assert (await shard.react(R1, "bob", parent, "👍"))["seq"] == 0  # no change, no event
    await shard.react(R1, "alice", parent, "👍")
    await shard.react(R1, "alice", parent, "🎉")
    await shard.react(R1, "alice", parent, "🎉", False)
    page = await shard.history(R1, "bob")
    first, second = page["messages"]
    assert first["reactions"] == [{"emoji": "👍", "count": 2, "me": True}]
    assert second["reply_to"] == parent and second["seq"] == answer["seq"]
    with pytest.raises(InvalidInput):
        await shard.react(R1, "bob", parent, "two words")


async def test_mentions_by_id_and_by_name_notify_members_once_durable(
    shard: ChatShard, notices: Notices
) -> None:
    await room_with(shard, "bob", "carol")
    sent = await shard.send(
        R1, "alice", "@Bob and @nobody look", mentions=("carol", "mallory", "alice")
    )
    await settle()
    assert sorted(sent["mentions"]) == ["bob", "carol"]  # members only, not oneself
    assert sorted(n.user_id for n in notices.got) == ["bob", "carol"]
    notice = notices.got[0]
    assert notice.room == R1 and notice.seq == sent["seq"] and notice.sender_id == "alice"
    assert notice.body()["excerpt"] == "@Bob and @nobody look"


async def test_search_by_text_and_sender_newest_first(shard: ChatShard) -> None:
    await room_with(shard, "bob")
    for user, text in [("alice", "Deploy at noon"), ("bob", "deploy done"), ("bob", "lunch?")]:
        await shard.send(R1, user, text)
    found = await shard.search(R1, "alice", text="DEPLOY")
    assert [m["text"] for m in found] == ["deploy done", "Deploy at noon"]
    assert [m["text"] for m in await shard.search(R1, "alice", sender="bob")] == [
        "lunch?",
        "deploy done",
    ]
    assert await shard.search(R1, "alice", text="deploy noon", sender="bob") == []
    with pytest.raises(InvalidInput):
        await shard.search(R1, "alice")
    with pytest.raises(NotAMember):
        await shard.search(R1, "carol", text="deploy")


async def test_unread_counts_follow_the_read_marker(shard: ChatShard) -> None:
    await room_with(shard, "bob")
    for i in range(3):
        await shard.send(R1, "alice", f"m{i}")
    await shard.send(R1, "bob", "mine do not count")
    [room] = await shard.rooms_of("bob")
    assert room["unread"] == 3 and room["last_read"] == 2
    marker = await shard.read(R1, "bob", 4)
    assert marker == 4
    assert (await shard.rooms_of("bob"))[0]["unread"] == 1
    assert await shard.read(R1, "bob", 2) == 4  # never backwards
    assert await shard.read(R1, "bob", 1_000) == 6  # at most the last seq
    assert (await shard.rooms_of("bob"))[0]["unread"] == 0


# --- history: bounds, resume, epochs ----------------------------------------------------


async def test_history_is_bounded_by_count_bytes_and_age(
    open_shard: OpenShard, clock: FakeClock
) -> None:
    shard = await open_shard(
        history_max=5, history_max_bytes=3 * (EVENT_OVERHEAD_BYTES + 10), history_max_age_s=100
    )
    await room_with(shard)
    for i in range(6):
        await shard.send(R1, "alice", f"message {i}")  # 9 bytes each: 3 fit
    page = await shard.events(R1, "alice", after=0)
    assert kinds(page["events"]) == [(5, "message"), (6, "message"), (7, "message")]
    assert page["recovered"] is False and page["first_seq"] == 5
    assert (await shard.events(R1, "alice", after=4))["recovered"] is True
    clock.advance(101)
    page = await shard.events(R1, "alice", after=4)
    assert page["events"] == [] and page["recovered"] is False and page["last_seq"] == 7


async def test_resuming_with_another_epoch_or_a_seq_beyond_the_room_does_not_recover(
    shard: ChatShard,
) -> None:
    await room_with(shard)
    await shard.send(R1, "alice", "one")
    epoch = shard.rooms[R1].epoch
    assert (await shard.events(R1, "alice", after=1, epoch=epoch))["recovered"] is True
    other = await shard.events(R1, "alice", after=1, epoch="0" * 16)
    assert other["recovered"] is False and other["events"] == [] and other["epoch"] == epoch
    assert (await shard.events(R1, "alice", after=9, epoch=epoch))["recovered"] is False


async def test_the_journal_and_snapshots_bring_every_room_back(open_shard: OpenShard) -> None:
    shard = await open_shard(snapshot_every=7)
    await room_with(shard, "bob", "carol", kind="private")
    await shard.set_role(R1, "alice", "bob", "moderator")
    await shard.ban(R1, "bob", "carol", duration_s=600)
    sent = [
        (await shard.send(R1, "bob", f"m{i}", client_id=f"c{i}", key=f"k{i}"))["seq"]
        for i in range(10)
    ]
    await shard.edit(R1, "bob", sent[-1], "m9 edited")
    await shard.react(R1, "alice", sent[-1], "👍")
    await shard.read(R1, "alice", sent[5])
    await shard.journal.drain()
    before = shard.rooms[R1]

    again = await open_shard(snapshot_every=7)
    after = again.rooms[R1]
    assert after.members == before.members and after.bans == before.bans
    assert list(after.events) == list(before.events) and after.messages == before.messages
    assert after.epoch == before.epoch and after.last_seq == before.last_seq
    assert again.visible[R1] == after.last_seq
    assert [r["id"] for r in await again.rooms_of("bob")] == [R1]
    repeat = await again.send(R1, "bob", "m3", client_id="c3", key="k3")
    assert repeat == {**repeat, "seq": sent[3], "duplicate": True}
    with pytest.raises(RoomNotFound):  # banned from a private room: it is out of sight
        await again.join(R1, "carol", "Carol")


class CountedRooms(dict[str, Any]):
    """A shard's rooms that count how often all of them are walked."""

    walks = 0

    def values(self) -> Any:
        self.walks += 1
        return super().values()


async def test_a_send_does_not_walk_every_room_of_the_shard(open_shard: OpenShard) -> None:
    # The journal asks for the state's size on every record (to pace snapshots); a
    # count walks every room, so asking it each time made a message cost O(rooms).
    shard = await open_shard(max_rooms_per_owner=100, send_burst=1_000)
    rooms = [f"r-{i:024d}" for i in range(64)]
    for room in rooms:
        await shard.create_room(room, "public", "many", "", "alice", "Alice")
    shard.state.rooms = counted = CountedRooms(shard.state.rooms)
    for room in rooms:
        await shard.send(room, "alice", "one at a time")
    answers = await shard.send_many(
        [{"room": room, "user": "alice", "text": "in one call"} for room in rooms]
    )
    assert all(isinstance(answer, dict) for answer in answers)
    sends = 2 * len(rooms)
    assert counted.walks * 8 <= sends, f"{counted.walks} walks of every room for {sends} sends"
    # The size it answers lags the true one by a bounded fraction (it paces snapshots).
    true_size = sum(len(r.events) + len(r.members) + 1 for r in dict.values(counted))
    assert true_size * (1 - 2 * SIZE_RECOUNT_FRACTION) <= shard.state_size() <= true_size


# --- direct rooms -----------------------------------------------------------------------


async def test_a_direct_room_is_for_its_two_users_only(shard: ChatShard) -> None:
    room = "d-" + "a" * 24
    await shard.claim_direct("alice", room)
    made = await shard.create_direct(room, "alice", "Alice", "bob", "Bob")
    assert made["created"] is True and made["room"]["kind"] == "direct"
    assert (await shard.create_direct(room, "bob", "Bob", "alice", "Alice"))["created"] is False
    with pytest.raises(RoomNotFound):
        await shard.room(room, "carol")
    with pytest.raises(RoomNotFound):
        await shard.join(room, "carol", "Carol")
    with pytest.raises(NotAllowed):
        await shard.invite(room, "alice", "carol", "Carol")
    with pytest.raises(NotAllowed):
        await shard.leave(room, "bob")
    await shard.send(room, "bob", "hi alice")


async def test_direct_rooms_a_user_starts_are_counted(shard: ChatShard) -> None:
    for i in range(2):
        await shard.claim_direct("alice", f"d-{i:024d}")
    await shard.claim_direct("alice", f"d-{0:024d}")  # the same claim again costs nothing
    with pytest.raises(LimitReached):
        await shard.claim_direct("alice", "d-" + "9" * 24)
    await shard.release_direct("alice", f"d-{0:024d}")
    await shard.claim_direct("alice", "d-" + "9" * 24)


# --- followers, fan-out, presence, typing ----------------------------------------------


async def test_followers_get_each_event_once_it_is_durable_in_order(shard: ChatShard) -> None:
    await room_with(shard, "bob")
    opened = await shard.open_room("f1", R1, "bob", "Bob", device=None, generation=1)
    assert opened["visible_seq"] == 2 and opened["room"]["role"] == "member"
    for i in range(3):
        await shard.send(R1, "alice", f"m{i}")
    got = [p.event for p in await posts(shard) if p.event is not None]
    assert [(e.seq, e.text) for e in got] == [(3, "m0"), (4, "m1"), (5, "m2")]
    await shard.send(R1, "bob", "again")
    assert shard.visible[R1] == 6


async def test_an_unwatch_older_than_the_last_watch_changes_nothing(shard: ChatShard) -> None:
    await room_with(shard)
    await shard.open_room("f1", R1, "alice", "Alice", device=None, generation=1)
    await shard.open_room("f1", R1, "alice", "Alice", device=None, generation=2)
    shard.unwatch("f1", R1, 1)  # late, from before the second watch
    await shard.send(R1, "alice", "still followed")
    assert any(p.kind == "event" for p in await posts(shard))
    shard.unwatch("f1", R1, 2)
    assert shard.followers.watchers == {}


async def test_a_follower_too_far_behind_is_dropped_and_rejoins(open_shard: OpenShard) -> None:
    shard = await open_shard(
        follower_buffer_bytes=1024 * 1024, max_message_bytes=4096, send_burst=1000, history_max=10
    )
    await room_with(shard)
    await shard.open_room("f1", R1, "alice", "Alice", device=None, generation=1)
    for i in range(300):  # about 4.3 kB each, never pulled
        await shard.send(R1, "alice", "x" * 4000 + str(i))
    with pytest.raises(NotFound):
        await shard.pull("f1", after=0, timeout_s=POLL_S)
    answer = shard.rejoin("f1", {R1: 1}, [])
    assert answer == {R1: shard.visible[R1]}
    await shard.send(R1, "alice", "live again")
    assert [p.kind for p in await posts(shard)][-1] == "event"


async def test_opening_a_room_joins_a_public_one_but_never_asks_for_a_private_one(
    shard: ChatShard,
) -> None:
    await room_with(shard)
    opened = await shard.open_room("f1", R1, "bob", "Bob", device=None, generation=1)
    assert opened["room"]["role"] == "member"
    with pytest.raises(NotAMember):
        await shard.open_room("f1", R1, "carol", "Carol", device=None, generation=1, join=False)
    await shard.create_room(R2, "private", "secret", "", "alice", "Alice")
    with pytest.raises(RoomNotFound):
        await shard.open_room("f1", R2, "bob", "Bob", device=None, generation=1)
    assert shard.rooms[R2].requests == {}


async def test_presence_is_announced_in_batched_diffs_with_rising_versions(
    shard: ChatShard,
) -> None:
    await room_with(shard, "bob", "carol")
    first = await shard.open_room("f1", R1, "alice", "Alice", device="f1.1", generation=1)
    assert first["presence"]["users"] == []  # announced with the next diff
    await shard.open_room("f1", R1, "bob", "Bob", device="f1.2", generation=1)
    await shard.open_room("f1", R1, "bob", "Bob", device="f1.3", generation=1)  # a second device
    shard.announce_presence()
    [diff] = [p for p in await posts(shard) if p.kind == "presence"]
    assert sorted(diff.users) == [("alice", "Alice"), ("bob", "Bob")] and diff.leaves == ()
    assert diff.version > first["presence"]["version"]
    third = await shard.open_room("f1", R1, "carol", "Carol", device="f1.4", generation=1)
    assert third["presence"]["users"] == [("alice", "Alice"), ("bob", "Bob")]
    assert third["presence"]["version"] == diff.version
    shard.close(R1, "bob", "f1.2")  # bob still has another device
    shard.close(R1, "alice", "f1.1")
    shard.announce_presence()
    last = [p for p in await posts(shard) if p.kind == "presence"][-1]
    assert last.users == (("carol", "Carol"),) and last.leaves == ("alice",)
    assert last.version > diff.version
    assert [p["user_id"] for p in await shard.presence_of(R1, "carol")] == ["bob", "carol"]


async def test_a_device_not_refreshed_leaves_presence_after_its_ttl(
    shard: ChatShard, clock: FakeClock
) -> None:
    await room_with(shard, "bob")
    await shard.open_room("f1", R1, "alice", "Alice", device="f1.1", generation=1)
    await shard.open_room("f1", R1, "bob", "Bob", device="f1.2", generation=1)
    for _ in range(4):
        clock.advance(shard.config.presence_ttl_s / 3)
        shard.refresh([Device(R1, "alice", "Alice", "f1.1")])  # bob's replica is silent
        shard.expire_presence()
    shard.announce_presence()
    assert [p["user_id"] for p in await shard.presence_of(R1, "alice")] == ["alice"]


async def test_a_restarted_shard_rebuilds_presence_from_the_replicas(open_shard: OpenShard) -> None:
    shard = await open_shard()
    await room_with(shard, "bob")
    await shard.open_room("f1", R1, "alice", "Alice", device="f1.1", generation=1)
    await shard.open_room("f2", R1, "bob", "Bob", device="f2.1", generation=1)
    shard.announce_presence()
    await shard.journal.drain()

    again = await open_shard()  # the same journal: a restart, with presence gone
    with pytest.raises(NotFound):
        await again.pull("f1", after=0, timeout_s=POLL_S)
    answer = again.rejoin("f1", {R1: 1}, [Device(R1, "alice", "Alice", "f1.1")])
    assert answer == {R1: again.rooms[R1].last_seq}
    [state] = [p for p in await posts(again) if p.kind == "presence_state"]
    assert state.users == (("alice", "Alice"),)
    again.rejoin(
        "f2", {R1: 1}, [Device(R1, "bob", "Bob", "f2.1"), Device(R1, "mallory", "M", "f2.2")]
    )
    diffs = [p for p in await posts(again) if p.kind == "presence"]
    assert diffs[-1].users == (("bob", "Bob"),) and diffs[-1].version > state.version
    assert [p["user_id"] for p in await again.presence_of(R1, "bob")] == ["alice", "bob"]


async def test_a_kicked_user_leaves_presence_at_once(shard: ChatShard) -> None:
    await room_with(shard, "bob")
    await shard.open_room("f1", R1, "bob", "Bob", device="f1.1", generation=1)
    shard.announce_presence()
    await shard.kick(R1, "alice", "bob")
    shard.announce_presence()
    diffs = [p for p in await posts(shard) if p.kind == "presence"]
    assert diffs[-1].leaves == ("bob",)
    assert shard.refresh([Device(R1, "bob", "Bob", "f1.1")]) == 0  # not a member: not re-added


async def test_a_user_has_a_bounded_number_of_devices_in_a_room(open_shard: OpenShard) -> None:
    shard = await open_shard(max_devices_per_user=2)
    await room_with(shard)
    for device in ("d1", "d2"):
        await shard.open_room("f1", R1, "alice", "Alice", device=device, generation=1)
    with pytest.raises(LimitReached):
        await shard.open_room("f1", R1, "alice", "Alice", device="d3", generation=1)


async def test_typing_is_passed_on_at_most_once_per_throttle_interval(
    shard: ChatShard, clock: FakeClock
) -> None:
    await room_with(shard, "bob")
    await shard.open_room("f1", R1, "alice", "Alice", device=None, generation=1)
    assert await shard.typing(R1, "bob") is True
    assert await shard.typing(R1, "bob") is False
    clock.advance(shard.config.typing_throttle_s)
    assert await shard.typing(R1, "bob") is True
    typing = [p for p in await posts(shard) if p.kind == "typing"]
    assert [(p.user, p.username) for p in typing] == [("bob", "Bob"), ("bob", "Bob")]
    with pytest.raises(NotAMember):
        await shard.typing(R1, "carol")


async def test_read_receipts_are_posted_to_followers(shard: ChatShard) -> None:
    await room_with(shard, "bob")
    await shard.open_room("f1", R1, "alice", "Alice", device=None, generation=1)
    await shard.send(R1, "alice", "hi")
    await shard.read(R1, "bob", 3)
    [receipt] = [p for p in await posts(shard) if p.kind == "receipt"]
    assert (receipt.user, receipt.seq) == ("bob", 3)


async def test_deleting_a_room_tells_its_followers_and_forgets_it(shard: ChatShard) -> None:
    await room_with(shard, "bob")
    await shard.open_room("f1", R1, "bob", "Bob", device=None, generation=1)
    await shard.delete_room(R1, "alice")
    assert [p.kind for p in await posts(shard)][-1] == "gone"
    with pytest.raises(RoomNotFound):
        await shard.room(R1, "alice")
    assert await shard.rooms_of("bob") == [] and shard.owned == {}


async def test_a_batch_of_sends_answers_each_in_order_or_with_its_refusal(
    shard: ChatShard,
) -> None:
    await room_with(shard, "bob")
    answers = await shard.send_many(
        [
            {"room": R1, "user": "bob", "text": "one", "key": "k1"},
            {"room": R1, "user": "carol", "text": "not a member"},
            {"room": R2, "user": "bob", "text": "no such room"},
            {"room": R1, "user": "alice", "text": "x" * 65},
            {"room": R1, "user": "alice", "text": "two"},
            {"room": R1, "user": "bob", "text": "one", "key": "k1"},
        ]
    )
    assert [type(a).__name__ for a in answers] == [
        "dict",
        "NotAMember",
        "RoomNotFound",
        "TooLarge",
        "dict",
        "dict",
    ]
    first, *_, two, again = answers
    assert (first["seq"], two["seq"]) == (3, 4)
    assert again["seq"] == 3 and again["duplicate"] is True
    assert [m["text"] for m in (await shard.history(R1, "bob"))["messages"]] == ["one", "two"]


async def test_a_replay_is_not_refused_for_limits_lowered_since(open_shard: OpenShard) -> None:
    shard = await open_shard()
    await room_with(shard, "bob", "carol", "dave")  # 4 members
    await shard.create_room(R2, "public", "second", "", "alice", "Alice")
    await shard.journal.drain()
    again = await open_shard(max_members_per_room=2, max_rooms_per_owner=1)
    assert len(again.rooms[R1].members) == 4 and len(again.owned["alice"]) == 2
    with pytest.raises(RoomFull):  # new joins meet the new limit
        await again.join(R1, "erin", "Erin")
