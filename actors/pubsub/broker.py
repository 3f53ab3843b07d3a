"""Pub/sub (service 5): the broker's logic, as a plain class.

A ``Broker`` owns a set of topics (the client routes each topic to one broker).
Per topic it numbers messages from 1 and keeps a bounded history, by count
and by age, so a subscriber that reconnects can resume from the last sequence
number it saw and learn whether it missed anything (``complete``). Publishing
is journaled (``Durable``): sequence numbers and history survive a restart.

Delivery to live subscribers goes through followers, one per Serve replica:
a replica registers the patterns its clients want (``follow``), and every
published message is posted once to the mailbox of each follower with a
matching pattern, which the replica long-polls (``pull``). A message is posted
only once its journal record is committed, so no subscriber sees a sequence
number that a crash could hand out again. Followers are not durable: a pull
from a follower the broker does not know (it restarted, or dropped the
follower as idle) raises ``NotFound``, and the replica follows again and pulls
from cursor 0.

Queue groups: a follower may register ``(pattern, group)`` interests; of the
followers with members in a group, the broker posts each message to one, in
turn, naming the group, and that follower hands it to one local member.
Ephemeral messages (replies to requests) are posted at once and neither
numbered, kept nor journaled.

Trimming by age uses the publish's own timestamp when publishing (so replay
is deterministic) and the clock when reading; both only drop messages older
than ``history_max_age_s``.

Records are ``publish(topic, payload, at, reply_to)``; a snapshot is every
topic's ``_Topic`` (its last sequence number and its history of ``Message``),
typed back from ``restore_state``'s annotation.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from actors.pubsub.settings import PubSubSettings
from actors.pubsub.topics import SubscriptionIndex, check_pattern, check_topic
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
#: Longest queue-group name.
MAX_GROUP_CHARS = 64


class Message(NamedTuple):
    """A published message. ``seq`` is 0 for an ephemeral one (not numbered, not kept)."""

    topic: str
    seq: int
    at: float
    payload: bytes
    reply_to: str | None = None


#: What a follower pulls: the message, and the queue groups it was chosen to serve.
Delivery = tuple[Message, tuple[str, ...]]
#: A follower's subscriptions: (pattern, queue group or None).
Interest = tuple[str, str | None]


def check_group(group: object) -> str | None:
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


def _group_member(group: str, follower: str) -> str:
    return f"{group}\x00{follower}"


@dataclass(slots=True)
class _Topic:
    last_seq: int = 0  #: sequence number of the last message published
    history: deque[Message] = field(default_factory=deque)  #: contiguous, oldest first

    def first_kept(self) -> int:
        return self.history[0].seq if self.history else self.last_seq + 1


class Broker(Durable):
    """Topics with sequence numbers and bounded history; fan-out to followers."""

    def __init__(
        self,
        config: PubSubSettings,
        *,
        clock: Clock | None = None,
        max_pending: int = MAX_PENDING_PER_FOLLOWER,
    ) -> None:
        self.clock = clock or SystemClock()
        self.history_max = config.history_max
        self.history_max_age_s = config.history_max_age_s
        self.max_payload_bytes = config.max_payload_bytes
        self.topics: dict[str, _Topic] = {}
        self.index = SubscriptionIndex()  #: plain subscriptions: pattern -> followers
        self.groups = SubscriptionIndex()  #: queue groups: pattern -> "group\0follower"
        self._turn: dict[str, int] = {}  #: queue group -> round-robin counter
        self.mailboxes = Mailboxes(self.clock, max_pending=max_pending)
        #: Applied but not yet posted: (topic, seq) -> (addressees, message), in journal order.
        self._outbox: OrderedDict[tuple[str, int], tuple[dict[str, tuple[str, ...]], Message]] = (
            OrderedDict()
        )
        self.delivered = 0  #: mailbox posts by this incarnation

    # state changes (deterministic; replayed on recovery)

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

    def apply_publish(
        self, topic: str, payload: bytes, at: float, reply_to: str | None = None
    ) -> tuple[int, float]:
        self._check_message(topic, payload, reply_to)
        state = self.topics.setdefault(topic, _Topic())
        state.last_seq += 1
        message = Message(topic, state.last_seq, at, payload, reply_to)
        state.history.append(message)
        while len(state.history) > self.history_max:
            state.history.popleft()
        self._trim_by_age(state, at)
        addressees = self._addressees(topic)  # none while replaying: they follow after open
        if addressees:
            self._outbox[(topic, message.seq)] = (addressees, message)
        return message.seq, at

    def snapshot_state(self) -> dict[str, _Topic]:
        return self.topics

    def restore_state(self, state: dict[str, _Topic]) -> None:
        self.topics = state

    def _trim_by_age(self, state: _Topic, now: float) -> None:
        cutoff = now - self.history_max_age_s
        while state.history and state.history[0].at < cutoff:
            state.history.popleft()

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

        An ephemeral message (a reply to a request) is not numbered, kept or
        journaled: it goes to the followers at once and answers ``(0, at)``.
        """
        if ephemeral:
            self._check_message(topic, payload, reply_to)
            at = self.clock.time()
            message = Message(topic, 0, at, payload, reply_to)
            self._post(self._addressees(topic), message)
            return 0, at
        seq, at = await self.execute(
            "publish",
            key=key,
            topic=topic,
            payload=payload,
            at=self.clock.time(),
            reply_to=reply_to,
        )
        self._deliver_through(topic, seq)
        return seq, at

    def _post(self, addressees: dict[str, tuple[str, ...]], message: Message) -> None:
        for follower, groups in addressees.items():
            if follower in self.mailboxes:  # it may have unfollowed meanwhile
                self.mailboxes.post(follower, (message, groups))
                self.delivered += 1

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

    async def history(self, topic: str, after_seq: int = 0, *, limit: int = 100) -> dict[str, Any]:
        """Messages after ``after_seq`` (oldest first, at most ``limit``).

        ``complete`` says whether history still reaches back to ``after_seq + 1``:
        if not, messages between the cursor and the first one returned were trimmed.
        ``last_seq`` is the topic's latest sequence number (0 if never published).
        """
        check_topic(topic)
        if not isinstance(after_seq, int) or after_seq < 0:
            raise InvalidInput("after_seq must be an integer >= 0", after_seq=after_seq)
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInput("limit must be an integer >= 1", limit=limit)
        state = self.topics.get(topic)
        if state is None:
            return {"messages": [], "complete": True, "last_seq": 0}
        self._trim_by_age(state, self.clock.time())
        first = state.first_kept()
        start = max(0, after_seq + 1 - first)
        messages = list(itertools.islice(state.history, start, start + limit))
        return {
            "messages": messages,
            "complete": after_seq + 1 >= first,
            "last_seq": state.last_seq,
        }

    async def last_seq(self, topic: str) -> int:
        check_topic(topic)
        state = self.topics.get(topic)
        return 0 if state is None else state.last_seq

    # followers (one per Serve replica; not durable)

    def follow(self, follower: str, interests: list[Interest] | list[str]) -> None:
        """Make ``interests`` the follower's whole set (replacing any earlier set).

        An interest is a pattern, or ``(pattern, group)`` for a queue group.
        """
        pairs = [(i, None) if isinstance(i, str) else (i[0], check_group(i[1])) for i in interests]
        for pattern, _ in pairs:
            check_pattern(pattern)
        self._forget(follower)
        for pattern, group in pairs:
            if group is None:
                self.index.add(pattern, follower)
            else:
                self.groups.add(pattern, _group_member(group, follower))
        self.mailboxes.register(follower)

    def _forget(self, follower: str) -> None:
        self.index.remove_subscriber(follower)
        suffix = _group_member("", follower)
        for member in [m for m in self.groups.subscribers() if m.endswith(suffix)]:
            self.groups.remove_subscriber(member)

    def unfollow(self, follower: str) -> None:
        """Forget the follower: its patterns, its mailbox, and its waiting pull."""
        self._forget(follower)
        self.mailboxes.drop(follower)

    async def pull(
        self, follower: str, *, after: int, timeout_s: float
    ) -> list[tuple[int, Delivery]]:
        """Acknowledge up to ``after``; return later deliveries, waiting up to ``timeout_s``."""
        if follower not in self.mailboxes:
            raise NotFound("not following: follow again and pull from 0", follower=follower)
        return await self.mailboxes.pull(follower, after=after, timeout_s=timeout_s)

    def drop_idle(self, idle_s: float) -> list[str]:
        """Unfollow followers that have not pulled for ``idle_s`` (a replica that died)."""
        idle = self.mailboxes.drop_idle(idle_s)
        for follower in idle:
            self._forget(follower)
        return idle

    def __repr__(self) -> str:
        return (
            f"<Broker topics={len(self.topics)} "
            f"delivered={self.delivered} followers={len(self.mailboxes)} "
            f"subscriptions={len(self.index) + len(self.groups)}>"
        )


# --- the actor --------------------------------------------------------------

#: How often a broker forgets followers that stopped pulling, and after how long.
FOLLOWER_SWEEP_S = 30.0
FOLLOWER_IDLE_S = 90.0


class _BrokerProcess(Broker):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        super().__init__(PubSubSettings.of(settings))
        self.restarts = await recover(self, settings, name)
        self._sweeper = every(self.clock, FOLLOWER_SWEEP_S, lambda: self.drop_idle(FOLLOWER_IDLE_S))

    async def ping(self) -> int:
        return len(self.topics)


#: Durable history; publishes in flight at a crash are retried (idempotent by key).
BrokerActor = remote_actor(_BrokerProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD")
