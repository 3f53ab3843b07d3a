"""Pub/sub's Python API: publish and subscribe from any Ray actor, task or replica.

Topics are spread over the broker actors by rendezvous hashing. A client is
one follower of every broker: it registers the union of its subscriptions'
patterns (wildcards may match topics on any broker), keeps one long-poll per
broker, and fans each message out locally to its matching subscriptions. So a
message crosses the network once per client (per Serve replica), not once per
subscriber.

Live delivery is at-most-once: a subscription whose queue is full (by count
or by bytes) is closed as a slow consumer, and a broker restart loses what was
published before the client followed it again. A subscription closes those
gaps itself where history still has the messages: it remembers the last
sequence number it delivered per topic, and when the next live message skips
ahead it first fetches the missing ones from history, a page at a time; it
drops any message it already delivered. ``subscribe(..., resume={topic:
last_seen_seq})`` starts with the history after those cursors (fetched a page
at a time as it is read), then goes on live with no gap and no duplicate.

Queue groups: of the subscriptions in one group (on any client), each message
goes to one. A group named for a user (``owner``) is that user's alone.
Request/reply: ``request`` publishes with a reply topic
``_inbox.<client>.<token>`` (the token random, known only to whoever receives
the request) and waits for the first ``reply`` to it; replies are ephemeral
(not numbered, not kept), and go straight to the waiting request: a reply
nobody waits for is dropped, so no burst of them can hold anything up.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from actors.pubsub.acl import Acl, Hook, load_hook
from actors.pubsub.broker import (
    BROKER_PREFIX,
    MAX_SEQ,
    BrokerActor,
    Delivery,
    Interest,
    Message,
    check_group,
    group_id,
    is_inbox,
    message_size,
)
from actors.pubsub.errors import NoReply
from actors.pubsub.settings import PubSubSettings
from actors.pubsub.topics import INBOX, SubscriptionIndex, check_pattern, check_topic, matches
from actors.runtime.errors import InvalidInput, NotFound
from actors.runtime.fanout import follow
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards

#: How long a follower's long-poll waits before answering empty.
PULL_TIMEOUT_S = 10.0
#: Topics whose last delivered sequence number a subscription remembers.
CURSORS_KEPT = 10_000
#: Messages fetched from history per call while resuming or closing a gap.
HISTORY_PAGE = 500


class SlowConsumer(Exception):
    """The subscription fell behind its queue bound and was closed; resume from history."""


class Subscription:
    """Messages for one pattern, as an async iterator of ``Message``.

    Its queue holds at most ``max_pending`` messages and ``max_pending_bytes``
    (``message_size``; one message always fits in an empty queue); history
    being resumed or filling a gap is fetched a page at a time, as it is read.
    """

    def __init__(
        self,
        client: PubSubClient,
        pattern: str,
        max_pending: int,
        group: str | None = None,
        *,
        max_pending_bytes: int | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.pattern = pattern
        self.group = group  #: the group's id (``group_id``)
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._client = client
        self._queue: deque[Message] = deque()
        self._queued_bytes = 0
        self._arrived = asyncio.Event()
        self._ready: deque[Message] = deque()  #: history to deliver before the queue
        #: history still to fetch: (topic, after, up to)
        self._resuming: deque[tuple[str, int, int]] = deque()
        #: topic -> last sequence number delivered (numbered messages only)
        self.cursors: OrderedDict[str, int] = OrderedDict()
        self.closed_because: BaseException | None = None
        #: Takes live messages in the caller's stack while the reader waits idle.
        self._sink: Callable[[Message], None] | None = None
        self._idle = False  #: the reader waits for a message, holding none

    def deliver_to(self, sink: Callable[[Message], None]) -> None:
        """Hand each live message to ``sink`` as it arrives, in the fan-out's own
        stack, whenever the reader is idle (waiting, nothing queued, no history
        being fetched), so a message costs no wakeup of the reader's task; the
        reader must pass what it reads to ``sink`` too (it still gets history,
        gaps and whatever queued while it was busy, in order). A ``sink`` that
        raises closes the subscription: the reader gets the error."""
        self._sink = sink

    def _offer(self, message: Message) -> None:
        if self.closed_because is not None:
            return
        if self._idle and self._sink is not None and not self._queue:
            admitted = self._admit(message)
            if admitted is False:
                return  # delivered already
            if admitted:
                try:
                    self._sink(message)
                except Exception as error:
                    self._close(error)
                return
            # a gap before it: the reader fills it from history first
        size = message_size(message)
        if self._queue and (
            len(self._queue) >= self.max_pending
            or (
                self.max_pending_bytes is not None
                and self._queued_bytes + size > self.max_pending_bytes
            )
        ):
            self._close(
                SlowConsumer(
                    f"more than {self.max_pending} messages or "
                    f"{self.max_pending_bytes} bytes pending"
                )
            )
            return
        self._queue.append(message)
        self._queued_bytes += size
        self._arrived.set()

    def _close(self, reason: BaseException | None) -> None:
        if self.closed_because is None:
            self.closed_because = reason or StopAsyncIteration()
            self._queue.clear()
            self._queued_bytes = 0
            self._ready.clear()
            self._resuming.clear()
            self._arrived.set()

    def _resume(self, cursors: dict[str, tuple[int, int]]) -> None:
        """Deliver the history after each cursor first, up to the topic's last
        sequence number when the subscription began, ahead of live messages (those
        after it are live)."""
        for topic, (after, until) in cursors.items():
            self.cursors[topic] = after
            if after < until:
                self._resuming.append((topic, after, until))

    async def _fetch_resumed(self) -> None:
        """One page of the history being resumed, into the ready queue."""
        topic, after, until = self._resuming[0]
        after = max(after, self.cursors.get(topic, after))
        page = await self._client.history(topic, after, min(HISTORY_PAGE, max(1, until - after)))
        messages: list[Message] = [m for m in page["messages"] if m.seq <= until]
        if messages and messages[-1].seq < until:
            self._resuming[0] = (topic, messages[-1].seq, until)
        else:
            self._resuming.popleft()
        self._ready.extend(messages)

    @property
    def pending(self) -> int:
        """Messages queued here and not read yet (history still to be fetched not
        counted; a plain subscription skips any it delivered already)."""
        return len(self._ready) + len(self._queue)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self.closed_because is not None:
                if isinstance(self.closed_because, StopAsyncIteration):
                    raise StopAsyncIteration
                raise self.closed_because  # a slow consumer, or a sink that failed
            if self._ready:
                message = self._ready.popleft()
            elif self._resuming:
                await self._fetch_resumed()
                continue
            elif self._queue:
                message = self._queue.popleft()
                self._queued_bytes -= message_size(message)
            else:
                self._arrived.clear()
                self._idle = True
                try:
                    await self._arrived.wait()
                finally:
                    self._idle = False
                continue
            admitted = self._admit(message)
            if admitted is False:
                continue  # delivered already (from history, or a repeat)
            if admitted is None:
                last = self.cursors[message.topic]
                missed = await self._client._history_page(message.topic, last, message.seq)
                if missed:  # deliver this page of what history still has, then look again
                    self._ready.extendleft(reversed([*missed, message]))
                    continue
                self._advance(message)  # history has none of the gap any more
            return message

    def _admit(self, message: Message) -> bool | None:
        """Whether to deliver ``message`` now: True (its cursor advanced), False
        (delivered already), None (messages before it were missed)."""
        if message.seq == 0 or self.group is not None:  # unnumbered, or shared
            return True
        last = self.cursors.get(message.topic)
        if last is not None:
            if message.seq <= last:
                return False
            if message.seq > last + 1:
                return None
        self._advance(message)
        return True

    def _advance(self, message: Message) -> None:
        self.cursors[message.topic] = message.seq
        self.cursors.move_to_end(message.topic)
        if len(self.cursors) > CURSORS_KEPT:
            self.cursors.popitem(last=False)

    async def close(self) -> None:
        """End the subscription here first, then tell the brokers: a close cut short
        (its stream cancelled) leaves at most a pattern the brokers still send."""
        self._close(None)
        await self._client._unsubscribe(self)


class PubSubClient:
    def __init__(self, settings: Settings) -> None:
        self.config = PubSubSettings.of(settings)
        self.brokers = Shards(BrokerActor, BROKER_PREFIX, self.config.brokers, settings)
        self.follower = uuid.uuid4().hex
        self._plain = SubscriptionIndex()  #: pattern -> ids of subscriptions with no group
        self._grouped = SubscriptionIndex()  #: pattern -> ids of queue-group subscriptions
        self._subscriptions: dict[str, Subscription] = {}
        self._turn = 0  #: round robin among local members of a queue group
        self._pollers: list[asyncio.Task[None]] = []
        #: Prefix of this client's reply topics; followed once it has made a request.
        self._inbox = f"{INBOX}.{self.follower}."
        self._inbox_followed = False
        self._replies: dict[str, asyncio.Future[Message]] = {}
        self._following = asyncio.Lock()
        #: The interests every broker has; None: unknown (a follow was cut short).
        self._followed: list[Interest] | None = []
        self._background: set[asyncio.Future[None]] = set()  #: follows nobody waits for

    async def start(self) -> None:
        await self.brokers.start()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        key: str | None = None,
        reply_to: str | None = None,
        ephemeral: bool = False,
    ) -> tuple[int, float]:
        """Publish; answers ``(seq, at)`` once the message is durable.

        ``key`` makes a retried publish count once (one is made if not given).
        An ephemeral message is delivered live only and answers ``(0, at)``;
        every message to a reply topic (``_inbox.``) is.
        """
        check_topic(topic)
        seq, at = await self.brokers.owner(topic).call(
            "publish",
            topic,
            payload,
            key=key or uuid.uuid4().hex,
            reply_to=reply_to,
            ephemeral=ephemeral or is_inbox(topic),
        )
        return seq, at

    async def history(self, topic: str, after_seq: int = 0, limit: int = 100) -> dict[str, Any]:
        """Messages after ``after_seq``; ``complete`` is False if some were trimmed.

        A page holds at most ``limit`` messages and ``history_page_max_bytes``."""
        check_topic(topic)
        found: dict[str, Any] = await self.brokers.owner(topic).call(
            "history", topic, after_seq, limit=limit
        )
        return found

    async def _last_seq(self, topic: str) -> int:
        last: int = await self.brokers.owner(topic).call("last_seq", topic)
        return last

    async def _history_page(self, topic: str, after: int, before: int) -> list[Message]:
        """A page of what history still has after ``after`` and before ``before``."""
        if after + 1 >= before:
            return []
        page = await self.history(topic, after, min(HISTORY_PAGE, before - after - 1))
        return [m for m in page["messages"] if m.seq < before]

    def _check_resume(self, pattern: str, resume: dict[str, int]) -> None:
        if len(resume) > self.config.max_resume_topics:
            raise InvalidInput(
                f"a subscription resumes at most {self.config.max_resume_topics} topics",
                topics=len(resume),
                limit=self.config.max_resume_topics,
            )
        for topic, seq in resume.items():
            check_topic(topic)
            if not matches(pattern, topic):
                raise InvalidInput("a resumed topic must match the pattern", topic=topic)
            if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
                raise InvalidInput(
                    f"a resume cursor is an integer from 0 to {MAX_SEQ}",
                    topic=topic,
                    seq=repr(seq)[:40],
                )

    async def subscribe(
        self,
        pattern: str,
        *,
        max_pending: int | None = None,
        max_pending_bytes: int | None = None,
        group: str | None = None,
        owner: str | None = None,
        resume: dict[str, int] | None = None,
    ) -> Subscription:
        """Live messages on topics matching ``pattern`` from now on.

        ``max_pending`` and ``max_pending_bytes`` bound the messages waiting to
        be read (the settings ``send_buffer`` and ``send_buffer_bytes`` if
        None); a subscription that falls further behind is closed with
        ``SlowConsumer``. ``resume`` maps topics (each matching ``pattern``, at
        most ``max_resume_topics``) to the last sequence number seen: the
        subscription first delivers their history after it.
        A ``group`` shares the messages among its subscriptions (no resume);
        with an ``owner`` (a user's id) the group is that owner's alone.
        """
        check_pattern(pattern)
        check_group(group)
        if resume and group is not None:
            raise InvalidInput("a queue-group subscription cannot resume from history")
        self._check_resume(pattern, resume or {})
        subscription = Subscription(
            self,
            pattern,
            self.config.send_buffer if max_pending is None else max_pending,
            group_id(group, owner),
            max_pending_bytes=(
                self.config.send_buffer_bytes if max_pending_bytes is None else max_pending_bytes
            ),
        )
        self._subscriptions[subscription.id] = subscription
        index = self._plain if subscription.group is None else self._grouped
        index.add(pattern, subscription.id)
        cursors = resume or {}
        try:
            await self._follow_all()  # live messages queue up from here on...
            lasts = await asyncio.gather(*(self._last_seq(topic) for topic in cursors))
        except BaseException:
            await self._unsubscribe(subscription)
            raise
        # ...behind the history up to now
        spans = zip(cursors.items(), lasts, strict=True)
        subscription._resume({topic: (after, last) for (topic, after), last in spans})
        self._start_polling()
        return subscription

    def _start_polling(self) -> None:
        if not self._pollers:
            self._pollers = [
                asyncio.create_task(self._follow_broker(i)) for i in range(len(self.brokers))
            ]

    async def _unsubscribe(self, subscription: Subscription) -> None:
        if self._subscriptions.pop(subscription.id, None) is not None:
            index = self._plain if subscription.group is None else self._grouped
            index.remove(subscription.pattern, subscription.id)
        # Also when closed already: that close may have been cut short before the
        # brokers heard of it (it costs nothing when they have). In a task the
        # caller's cancellation does not stop: a stream's close often runs in
        # the cancellation that ended the stream, and the brokers would go on
        # sending what nobody here reads.
        following = asyncio.ensure_future(self._follow_all())
        self._background.add(following)
        following.add_done_callback(self._settled)
        await asyncio.shield(following)

    def _settled(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # its caller, if still there, has it too

    def _interests(self) -> list[Interest]:
        interests = {(s.pattern, s.group) for s in self._subscriptions.values()}
        if self._inbox_followed:
            interests.add((f"{self._inbox}*", None))
        return sorted(interests, key=str)

    async def _follow_all(self) -> None:
        async with self._following:  # brokers see the follows in the order made
            interests = self._interests()
            if interests == self._followed:
                return  # e.g. one more subscriber to a pattern already followed
            self._followed = None  # unknown until every broker has answered
            await self.brokers.call_all("follow", self.follower, interests)
            self._followed = interests

    def _fan_out(self, message: Message, groups: tuple[str, ...]) -> None:
        if message.topic.startswith(self._inbox):  # a reply: to its request, or nowhere
            waiter = self._replies.get(message.topic)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            return
        for subscription_id in self._plain.match(message.topic):
            self._subscriptions[subscription_id]._offer(message)
        if not groups:
            return
        matching = [self._subscriptions[i] for i in self._grouped.match(message.topic)]
        for group in groups:
            members = sorted((s for s in matching if s.group == group), key=lambda s: s.id)
            if members:
                self._turn += 1
                members[self._turn % len(members)]._offer(message)

    async def _follow_broker(self, index: int) -> None:
        """Pull broker ``index``'s deliveries and fan them out, for as long as the client lives."""
        broker = self.brokers[index]

        async def pull(after: int) -> list[tuple[int, Delivery]]:
            deliveries: list[tuple[int, Delivery]] = await broker.call(
                "pull", self.follower, after=after, timeout_s=PULL_TIMEOUT_S
            )
            return deliveries

        async def lost(error: BaseException) -> None:
            if isinstance(error, NotFound):  # the broker restarted or forgot us: follow again
                async with self._following:
                    await broker.call("follow", self.follower, self._interests())

        await follow(pull, lambda delivery: self._fan_out(*delivery),
                     what=f"pub/sub following broker {index}", on_lost=lost)  # fmt: skip

    # request/reply

    async def request(self, topic: str, payload: bytes, *, timeout_s: float = 5.0) -> Message:
        """Publish ``payload`` with a private reply topic; the first reply to it.

        Raises ``NoReply`` (504) if no reply comes within ``timeout_s``.
        """
        check_topic(topic)
        if not self._inbox_followed:
            self._inbox_followed = True
            try:
                await self._follow_all()
            except BaseException:
                self._inbox_followed = False
                raise
            self._start_polling()
        reply_to = f"{self._inbox}{secrets.token_hex(16)}"
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._replies[reply_to] = waiter
        try:
            await self.publish(topic, payload, reply_to=reply_to)
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            raise NoReply("no reply in time", topic=topic, timeout_s=timeout_s) from None
        finally:
            self._replies.pop(reply_to, None)

    async def reply(self, request: Message, payload: bytes) -> None:
        """Answer a message that came with a reply topic."""
        if request.reply_to is None:
            raise InvalidInput("the message asks for no reply", topic=request.topic)
        await self.publish(request.reply_to, payload, ephemeral=True)

    async def close(self) -> None:
        for task in self._pollers:
            task.cancel()
        self._pollers = []
        for subscription in list(self._subscriptions.values()):
            subscription._close(None)
        self._subscriptions.clear()
        self._inbox_followed = False
        self._followed = []  # so a subscription closed late does not follow again
        await asyncio.gather(
            *(b.call("unfollow", self.follower) for b in self.brokers), return_exceptions=True
        )

    def __repr__(self) -> str:
        return (
            f"<PubSubClient brokers={len(self.brokers)} subscriptions={len(self._subscriptions)}>"
        )


#: The public face of pub/sub to other services and to its app. ``Message`` and
#: the subject checks are re-exported so that a caller needs no other module.
__all__ = [
    "INBOX",
    "Acl",
    "Hook",
    "Message",
    "NoReply",
    "PubSubClient",
    "SlowConsumer",
    "Subscription",
    "check_pattern",
    "check_topic",
    "load_hook",
    "matches",
]
