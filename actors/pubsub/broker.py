"""Pub/sub (service 5): the broker's logic, as a plain class.

A ``Broker`` owns a set of topics (the client routes each topic to one broker).
Per topic it numbers messages and keeps a bounded history, so a subscriber
that reconnects can resume from the last sequence number it saw and learn
whether it missed anything (``complete``). Publishing is journaled
(``Durable``): sequence numbers and history survive a restart.

Memory is bounded. A topic's history is bounded by count, bytes and age; all
the topics of a broker together by bytes (the topics published to least
recently give up their oldest messages first) and by number (the least
recently published topic is forgotten). A topic nothing was published to for
``history_max_age_s`` is forgotten too. A forgotten topic leaves only
``seq_floor`` behind, a number its sequence numbers never went above: a topic
is (re)created numbering from above it, so a topic's numbers only ever grow
and a subscriber's cursor never mistakes a new message for one it has seen.
The publish record carries the number it was given, so a replay gives every
message the number it had whatever was forgotten meanwhile (forgetting is not
journaled) and whatever the limits are now.

Limits (payload size, topic syntax) are checked where a message comes in,
``publish``, never on replay: lowering ``max_payload_bytes`` cannot make a
broker refuse its own journal.

Delivery to live subscribers goes through followers, one per Serve replica:
a replica registers the patterns its clients want (``follow``), and every
published message is posted once to the mailbox of each follower with a
matching pattern, which the replica long-polls (``pull``). A message is posted
only once its journal record is committed, so no subscriber sees a sequence
number that a crash could hand out again. Followers are not durable: a pull
from a follower the broker does not know (it restarted, dropped the follower
as idle, or as more than ``follower_buffer_bytes`` behind) raises
``NotFound``, and the replica follows again and pulls from cursor 0.

Queue groups: a follower may register ``(pattern, group)`` interests; of the
followers with members in a group, the broker posts each message to one, in
turn, naming the group, and that follower hands it to one local member. A
group's id is scoped to its owner (``group_id``) when users choose its name.
Ephemeral messages (replies to requests: every message on an ``_inbox.``
topic) are posted at once and neither numbered, kept nor journaled.

Trimming by age uses the publish's own timestamp when publishing and the
clock when reading; both only drop messages older than ``history_max_age_s``.

Records are ``publish(topic, payload, at, reply_to, seq)``; a snapshot is a
``_State``: every topic's ``_Topic`` (its last sequence number and its history
of ``Message``), least recently published first, and ``seq_floor``, typed back
from ``restore_state``'s annotation.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from actors.pubsub.settings import MESSAGE_OVERHEAD_BYTES, PubSubSettings
from actors.pubsub.topics import INBOX, SubscriptionIndex, check_pattern, check_topic
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.errors import InvalidInput, NotFound, TooLarge
from actors.runtime.fanout import Mailboxes
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor

#: Prefix of the broker actors' names: ``pubsub-broker-<i>`` (``actors.runtime.shards``).
BROKER_PREFIX = "pubsub-broker"
#: Messages a follower may leave unpulled before the oldest are dropped.
MAX_PENDING_PER_FOLLOWER = 100_000
#: Longest queue-group name a caller chooses.
MAX_GROUP_CHARS = 64
#: Longest queue-group id the brokers know (an owner's id and a name, see ``group_id``).
MAX_GROUP_ID_CHARS = 512
#: Between an owner's id and a group's name in a group id; no name a caller chooses has it.
OWNER_SEPARATOR = "\x1f"
#: Largest sequence number (and cursor) there is: a 64-bit integer.
MAX_SEQ = 2**63 - 1


class Message(NamedTuple):
    """A published message. ``seq`` is 0 for an ephemeral one (not numbered, not kept)."""

    topic: str
    seq: int
    at: float
    payload: bytes
    reply_to: str | None = None


def message_size(message: Message) -> int:
    """What a kept or queued message counts in the byte limits."""
    return len(message.payload) + MESSAGE_OVERHEAD_BYTES


def is_inbox(topic: str) -> bool:
    """Whether ``topic`` is a reply topic (``_inbox.``): ephemeral, never kept."""
    return topic.partition(".")[0] == INBOX


#: What a follower pulls: the message, and the queue groups it was chosen to serve.
Delivery = tuple[Message, tuple[str, ...]]
#: A follower's subscriptions: (pattern, queue-group id or None).
Interest = tuple[str, str | None]


def check_group(group: object) -> str | None:
    """Refuse anything but a queue-group name a caller may choose (or None)."""
    if group is None:
        return None
    if not isinstance(group, str) or not group or len(group) > MAX_GROUP_CHARS:
        raise InvalidInput(
            f"a queue group is a non-empty string of at most {MAX_GROUP_CHARS} characters",
            group=repr(group)[:100],
        )
    if any(c.isspace() or not c.isprintable() for c in group):
        raise InvalidInput("a queue group must not contain whitespace", group=group)
    return group


def group_id(group: str | None, owner: str | None = None) -> str | None:
    """The id the brokers know a queue group by.

    With an ``owner`` (the user behind an HTTP, WebSocket or SSE subscriber) the
    group is that owner's alone: another user naming the same group makes
    another group. Without one (Python callers, trusted) the id is the name.
    No name a caller chooses contains ``OWNER_SEPARATOR``, so an owned id never
    equals a name.
    """
    check_group(group)
    if group is None or owner is None:
        return group
    return f"{owner}{OWNER_SEPARATOR}{group}"


def _check_group_id(group: object) -> str | None:
    if group is None:
        return None
    if not isinstance(group, str) or not 0 < len(group) <= MAX_GROUP_ID_CHARS or "\x00" in group:
        raise InvalidInput("not a queue-group id", group=repr(group)[:100])
    return group


def _group_member(group: str, follower: str) -> str:
    return f"{group}\x00{follower}"


@dataclass(slots=True)
class _Topic:
    last_seq: int = 0  #: sequence number of the last message published
    history: deque[Message] = field(default_factory=deque)  #: contiguous, oldest first
    last_at: float = 0.0  #: when the last message was published
    size: int = 0  #: bytes of ``history`` (``message_size``)

    def first_kept(self) -> int:
        return self.history[0].seq if self.history else self.last_seq + 1


@dataclass(slots=True)
class _State:
    """A broker's snapshot: its topics, least recently published first, and the
    number every forgotten topic's sequence numbers stayed at or under."""

    topics: OrderedDict[str, _Topic] = field(default_factory=OrderedDict)
    seq_floor: int = 0


class Broker(Durable):
    """Topics with sequence numbers and bounded history; fan-out to followers."""

    #: 2: a snapshot is a ``_State`` (version 1 was the topics alone); records are unchanged
    #: but for the optional ``seq`` of a publish.
    schema_version = 2

    def __init__(
        self,
        config: PubSubSettings,
        *,
        clock: Clock | None = None,
        max_pending: int = MAX_PENDING_PER_FOLLOWER,
    ) -> None:
        self.clock = clock or SystemClock()
        self.config = config
        self.history_max = config.history_max
        self.history_max_age_s = config.history_max_age_s
        self.max_payload_bytes = config.max_payload_bytes
        #: Least recently published first.
        self.topics: OrderedDict[str, _Topic] = OrderedDict()
        #: A forgotten topic had sequence numbers up to here at most; a topic is
        #: (re)created above it, so its numbers never go back.
        self.seq_floor = 0
        self.history_bytes = 0  #: bytes of every topic's history
        self.kept = 0  #: messages in every topic's history
        #: Topics with some history, least recently published first.
        self._holding: OrderedDict[str, None] = OrderedDict()
        self.index = SubscriptionIndex()  #: plain subscriptions: pattern -> followers
        self.groups = SubscriptionIndex()  #: queue groups: pattern -> "group\0follower"
        self._turn: dict[str, int] = {}  #: queue group -> round-robin counter
        self.mailboxes = Mailboxes(self.clock, max_pending=max_pending, name="pubsub")
        #: Per follower: (mailbox number, size) of what it has not acknowledged, and the sum.
        self._unpulled: dict[str, deque[tuple[int, int]]] = {}
        self._unpulled_bytes: dict[str, int] = {}
        #: Applied but not yet posted: (topic, seq) -> (addressees, message), in journal order.
        self._outbox: OrderedDict[tuple[str, int], tuple[dict[str, tuple[str, ...]], Message]] = (
            OrderedDict()
        )
        self.delivered = 0  #: mailbox posts by this incarnation
        self.behind = 0  #: followers dropped for falling too far behind

    # state changes (deterministic; replayed on recovery)

    def apply_publish(
        self,
        topic: str,
        payload: bytes,
        at: float,
        reply_to: str | None = None,
        seq: int | None = None,
    ) -> tuple[int, float]:
        """Number and keep a message. No limit is checked here: limits are checked
        where a message comes in (``publish``), so a replay never refuses a record
        that a later, lower limit would refuse. ``seq`` is the number ``publish``
        gave it (None in records that predate it: the next one)."""
        state = self.topics.get(topic)
        if state is None:
            state = self.topics[topic] = _Topic(last_seq=self.seq_floor)
        else:
            self.topics.move_to_end(topic)
        if seq is None:
            seq = state.last_seq + 1
        elif seq != state.last_seq + 1:  # the topic was forgotten meanwhile
            while state.history:
                self._drop_oldest(topic, state)
        state.last_seq, state.last_at = seq, at
        message = Message(topic, seq, at, payload, reply_to)
        state.history.append(message)
        size = message_size(message)
        state.size += size
        self.history_bytes += size
        self.kept += 1
        self._holding[topic] = None
        self._holding.move_to_end(topic)
        self._trim(topic, state, at)
        self._trim_broker()
        while len(self.topics) > self.config.broker_max_topics:
            self._forget(next(iter(self.topics)))  # never this one: it is the newest
        addressees = self._addressees(topic)  # none while replaying: they follow after open
        if addressees:
            self._outbox[(topic, message.seq)] = (addressees, message)
        return message.seq, at

    def snapshot_state(self) -> _State:
        return _State(self.topics, self.seq_floor)

    def restore_state(self, state: _State) -> None:
        self.topics, self.seq_floor = state.topics, state.seq_floor
        self.history_bytes = self.kept = 0
        self._holding.clear()
        for topic, kept in self.topics.items():
            kept.size = sum(message_size(m) for m in kept.history)
            if kept.history:
                kept.last_at = max(kept.last_at, kept.history[-1].at)
                self._holding[topic] = None
            self.history_bytes += kept.size
            self.kept += len(kept.history)

    def upgrade_state(self, version: int, state: Any) -> Any:
        if version == 1:  # the topics alone
            return {"topics": state, "seq_floor": 0}
        return super().upgrade_state(version, state)

    def upgrade_record(
        self, version: int, op: str, args: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        if version == 1:  # the same records, without seq
            return op, args
        return super().upgrade_record(version, op, args)

    def state_size(self) -> int:
        return len(self.topics) + self.kept

    # history bounds

    def _drop_oldest(self, topic: str, state: _Topic) -> None:
        size = message_size(state.history.popleft())
        state.size -= size
        self.history_bytes -= size
        self.kept -= 1
        if not state.history:
            self._holding.pop(topic, None)

    def _trim(self, topic: str, state: _Topic, now: float) -> None:
        cutoff = now - self.history_max_age_s
        while state.history and (
            len(state.history) > self.history_max
            or state.size > self.config.history_max_bytes
            or state.history[0].at < cutoff
        ):
            self._drop_oldest(topic, state)

    def _trim_broker(self) -> None:
        """Keep every topic's history together under ``broker_history_max_bytes``:
        the topics published to least recently give up their oldest messages."""
        while self.history_bytes > self.config.broker_history_max_bytes and self._holding:
            topic = next(iter(self._holding))
            self._drop_oldest(topic, self.topics[topic])

    def _forget(self, topic: str) -> None:
        state = self.topics.pop(topic)
        self.seq_floor = max(self.seq_floor, state.last_seq)
        self.history_bytes -= state.size
        self.kept -= len(state.history)
        self._holding.pop(topic, None)

    def forget_idle(self) -> int:
        """Forget the topics nothing was published to for ``history_max_age_s`` (their
        history is all too old); returns how many. Not journaled: a replay that brings
        one back only brings back what the topic had, and numbers stay above it."""
        cutoff = self.clock.time() - self.history_max_age_s
        forgotten = 0
        while self.topics:
            topic, state = next(iter(self.topics.items()))
            if state.last_at >= cutoff:
                break
            self._forget(topic)
            forgotten += 1
        return forgotten

    def _addressees(self, topic: str) -> dict[str, tuple[str, ...]]:
        """Followers to post ``topic``'s message to, each with the queue groups it serves.

        Every follower with a plain subscription gets it; each queue group
        with members on any follower is served by one of those followers,
        in turn.
        """
        addressees: dict[str, tuple[str, ...]] = dict.fromkeys(self.index.match(topic), ())
        members: dict[str, list[str]] = {}
        for member in self.groups.match(topic):
            group, _, follower = member.partition("\x00")
            members.setdefault(group, []).append(follower)
        for group, followers in members.items():
            followers.sort()
            turn = self._turn.get(group, 0)
            self._turn[group] = turn + 1
            chosen = followers[turn % len(followers)]
            addressees[chosen] = (*addressees.get(chosen, ()), group)
        return addressees

    # publishing and reading

    def _check_message(self, topic: str, payload: bytes, reply_to: str | None) -> None:
        check_topic(topic)
        if reply_to is not None:
            check_topic(reply_to)
        if not isinstance(payload, bytes):
            raise InvalidInput("a payload must be bytes", type=type(payload).__name__)
        if len(payload) > self.max_payload_bytes:
            raise TooLarge(
                "the payload is over the size limit",
                size=len(payload),
                limit=self.max_payload_bytes,
            )

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        key: str | None = None,
        reply_to: str | None = None,
        ephemeral: bool = False,
    ) -> tuple[int, float]:
        """Publish; answers ``(seq, at)`` once journaled (a repeated ``key`` answers again).

        An ephemeral message (a reply to a request; every message to a reply
        topic is one) is not numbered, kept or journaled: it goes to the
        followers at once and answers ``(0, at)``.
        """
        self._check_message(topic, payload, reply_to)
        if ephemeral or is_inbox(topic):
            at = self.clock.time()
            message = Message(topic, 0, at, payload, reply_to)
            self._post(self._addressees(topic), message)
            return 0, at
        state = self.topics.get(topic)
        seq = (self.seq_floor if state is None else state.last_seq) + 1
        seq, at = await self.execute(
            "publish",
            key=key,
            topic=topic,
            payload=payload,
            at=self.clock.time(),
            reply_to=reply_to,
            seq=seq,
        )
        self._deliver_through(topic, seq)
        return seq, at

    def _post(self, addressees: dict[str, tuple[str, ...]], message: Message) -> None:
        size = message_size(message)
        for follower, groups in addressees.items():
            if follower not in self.mailboxes:  # it may have unfollowed meanwhile
                continue
            number = self.mailboxes.post(follower, (message, groups))
            self.delivered += 1
            unpulled = self._unpulled.setdefault(follower, deque())
            unpulled.append((number, size))
            self._unpulled_bytes[follower] = self._unpulled_bytes.get(follower, 0) + size
            if self._unpulled_bytes[follower] > self.config.follower_buffer_bytes:
                # Far behind: it follows again when it next pulls, and its
                # subscribers close the gap from history.
                self.behind += 1
                self.unfollow(follower)

    def _deliver_through(self, topic: str, seq: int) -> None:
        """Post everything applied up to ``(topic, seq)``, which is committed, so all before it is.

        Whichever publisher of a group commit resumes first posts for the whole
        group, in journal order; the others (and repeats of a key) find their
        message already posted.
        """
        if (topic, seq) not in self._outbox:
            return
        while self._outbox:
            position, (addressees, message) = self._outbox.popitem(last=False)
            self._post(addressees, message)
            if position == (topic, seq):
                return

    async def history(
        self, topic: str, after_seq: int = 0, *, limit: int = 100, max_bytes: int | None = None
    ) -> dict[str, Any]:
        """Messages after ``after_seq`` (oldest first, at most ``limit``, and at most
        ``max_bytes`` of payload, ``history_page_max_bytes`` if None, but at least one).

        ``complete`` says whether history still reaches back to ``after_seq + 1``:
        if not, messages between the cursor and the first one returned were trimmed.
        ``last_seq`` is the topic's latest sequence number; for a topic the broker
        does not hold, a number its next message will be above (0 if none was ever
        forgotten).
        """
        check_topic(topic)
        for name, value, least in (("after_seq", after_seq, 0), ("limit", limit, 1)):
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not least <= value <= MAX_SEQ
            ):
                raise InvalidInput(f"{name} must be an integer from {least} to {MAX_SEQ}",
                                   **{name: repr(value)[:40]})  # fmt: skip
        budget = self.config.history_page_max_bytes if max_bytes is None else max_bytes
        state = self.topics.get(topic)
        if state is None:
            return {"messages": [], "complete": after_seq >= self.seq_floor,
                    "last_seq": self.seq_floor}  # fmt: skip
        self._trim(topic, state, self.clock.time())
        first = state.first_kept()
        start = min(max(0, after_seq + 1 - first), len(state.history))
        messages: list[Message] = []
        size = 0
        for message in itertools.islice(
            state.history, start, start + min(limit, len(state.history))
        ):
            size += len(message.payload)
            if messages and size > budget:
                break
            messages.append(message)
        return {
            "messages": messages,
            "complete": after_seq + 1 >= first,
            "last_seq": state.last_seq,
        }

    async def last_seq(self, topic: str) -> int:
        check_topic(topic)
        state = self.topics.get(topic)
        return self.seq_floor if state is None else state.last_seq

    # followers (one per Serve replica; not durable)

    def follow(self, follower: str, interests: list[Interest] | list[str]) -> None:
        """Make ``interests`` the follower's whole set (replacing any earlier set).

        An interest is a pattern, or ``(pattern, group)`` for a queue group
        (``group_id``).
        """
        pairs = [
            (i, None) if isinstance(i, str) else (i[0], _check_group_id(i[1])) for i in interests
        ]
        for pattern, _ in pairs:
            check_pattern(pattern)
        self._forget_interests(follower)
        for pattern, group in pairs:
            if group is None:
                self.index.add(pattern, follower)
            else:
                self.groups.add(pattern, _group_member(group, follower))
        self.mailboxes.register(follower)
        self._prune_turns()

    def _forget_interests(self, follower: str) -> None:
        self.index.remove_subscriber(follower)
        suffix = _group_member("", follower)
        for member in [m for m in self.groups.subscribers() if m.endswith(suffix)]:
            self.groups.remove_subscriber(member)

    def _prune_turns(self) -> None:
        """Forget the turn of each queue group that has no member left."""
        live = {member.partition("\x00")[0] for member in self.groups.subscribers()}
        for group in [g for g in self._turn if g not in live]:
            del self._turn[group]

    def unfollow(self, follower: str) -> None:
        """Forget the follower: its patterns, its mailbox, and its waiting pull."""
        self._forget_interests(follower)
        self._prune_turns()
        self.mailboxes.drop(follower)
        self._unpulled.pop(follower, None)
        self._unpulled_bytes.pop(follower, None)

    async def pull(
        self, follower: str, *, after: int, timeout_s: float
    ) -> list[tuple[int, Delivery]]:
        """Acknowledge up to ``after``; return later deliveries, waiting up to ``timeout_s``."""
        if follower not in self.mailboxes:
            raise NotFound("not following: follow again and pull from 0", follower=follower)
        unpulled = self._unpulled.get(follower)
        while unpulled and unpulled[0][0] <= after:
            self._unpulled_bytes[follower] -= unpulled.popleft()[1]
        return await self.mailboxes.pull(follower, after=after, timeout_s=timeout_s)

    def drop_idle(self, idle_s: float) -> list[str]:
        """Unfollow followers that have not pulled for ``idle_s`` (a replica that died)."""
        idle = self.mailboxes.drop_idle(idle_s)
        for follower in idle:
            self.unfollow(follower)
        return idle

    def __repr__(self) -> str:
        return (
            f"<Broker topics={len(self.topics)} kept={self.kept} bytes={self.history_bytes} "
            f"delivered={self.delivered} followers={len(self.mailboxes)} "
            f"subscriptions={len(self.index) + len(self.groups)}>"
        )


# --- the actor --------------------------------------------------------------

#: How often a broker forgets followers that stopped pulling (after how long) and idle topics.
SWEEP_S = 30.0
FOLLOWER_IDLE_S = 90.0


class _BrokerProcess(Broker):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        super().__init__(PubSubSettings.of(settings))
        self.restarts = await recover(self, settings, name)
        self._sweeper = every(self.clock, SWEEP_S, self.sweep)

    def sweep(self) -> None:
        self.drop_idle(FOLLOWER_IDLE_S)
        self.forget_idle()

    async def ping(self) -> int:
        return len(self.topics)


#: Durable history; publishes in flight at a crash are retried (idempotent by key).
BrokerActor = remote_actor(_BrokerProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD")
