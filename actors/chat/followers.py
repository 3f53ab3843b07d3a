"""The replicas following a shard's rooms, and what is posted to them.

A follower is one Serve replica's ``ChatClient``. It follows the rooms its
connections have joined, each with a generation (a number the client raises
every time it starts following a room), so that an ``unwatch`` that arrives
after a later ``watch`` of the same room does not undo it. Posts go to the
follower's mailbox (``actors.runtime.fanout.Mailboxes``), which it
long-polls. A follower that leaves more than ``follower_buffer_bytes`` unpulled
is dropped: its next pull is refused, it follows again and closes the gap
from history.
"""

from __future__ import annotations

import logging

from actors.chat.model import Post
from actors.runtime.clock import Clock
from actors.runtime.errors import NotFound
from actors.runtime.fanout import Mailboxes

log = logging.getLogger(__name__)

#: Posts a follower may leave unpulled before the oldest are dropped (it then
#: sees a gap, which it closes from history).
MAX_PENDING_PER_FOLLOWER = 100_000


class Followers:
    def __init__(self, clock: Clock, *, max_bytes: int) -> None:
        self.clock = clock
        self.max_bytes = max_bytes
        self.mailboxes = Mailboxes(clock, max_pending=MAX_PENDING_PER_FOLLOWER)
        self.watchers: dict[str, dict[str, int]] = {}  #: room -> follower -> generation
        self.following: dict[str, set[str]] = {}  #: follower -> rooms
        self.pending_bytes: dict[str, int] = {}  #: follower -> bytes posted, not yet pulled
        self.posted = 0  #: posts so far

    def __contains__(self, follower: str) -> bool:
        return follower in self.mailboxes

    def register(self, follower: str) -> None:
        if follower not in self.mailboxes:
            self.mailboxes.register(follower)
            self.pending_bytes[follower] = 0

    def watch(self, follower: str, room: str, generation: int) -> None:
        self.register(follower)
        watching = self.watchers.setdefault(room, {})
        watching[follower] = max(generation, watching.get(follower, generation))
        self.following.setdefault(follower, set()).add(room)

    def unwatch(self, follower: str, room: str, generation: int) -> None:
        """The follower has had no connection in ``room`` since ``generation``."""
        watching = self.watchers.get(room)
        if watching is None or watching.get(follower, generation + 1) > generation:
            return
        del watching[follower]
        if not watching:
            del self.watchers[room]
        rooms = self.following.get(follower)
        if rooms is not None:
            rooms.discard(room)

    def forget_room(self, room: str) -> None:
        for follower in self.watchers.pop(room, {}):
            self.following.get(follower, set()).discard(room)

    def post(self, room: str, post: Post) -> None:
        """Post to every follower of ``room``."""
        followers = self.watchers.get(room)
        if not followers:
            return
        size = post.size()
        over = []
        for follower in followers:
            if follower in self.mailboxes:
                self.mailboxes.post(follower, post)
                self.posted += 1
                pending = self.pending_bytes.get(follower, 0) + size
                self.pending_bytes[follower] = pending
                if pending > self.max_bytes:
                    over.append(follower)
        for follower in over:
            log.warning("follower %s is over its buffer: dropped (it follows again)", follower)
            self.unfollow(follower)

    def post_to(self, follower: str, post: Post) -> None:
        if follower in self.mailboxes:
            self.mailboxes.post(follower, post)
            self.posted += 1
            self.pending_bytes[follower] = self.pending_bytes.get(follower, 0) + post.size()

    async def pull(self, follower: str, *, after: int, timeout_s: float) -> list[tuple[int, Post]]:
        """Acknowledge up to ``after``; return later posts, waiting up to ``timeout_s``."""
        if follower not in self.mailboxes:
            raise NotFound("not following: rejoin and pull from 0", follower=follower)
        posts: list[tuple[int, Post]] = await self.mailboxes.pull(
            follower, after=after, timeout_s=timeout_s
        )
        if follower in self.pending_bytes:
            self.pending_bytes[follower] = sum(post.size() for _, post in posts)
        return posts

    def unfollow(self, follower: str) -> None:
        """Forget the follower: its rooms, its mailbox, and its waiting pull."""
        for room in self.following.pop(follower, set()):
            watching = self.watchers.get(room)
            if watching is not None:
                watching.pop(follower, None)
                if not watching:
                    del self.watchers[room]
        self.pending_bytes.pop(follower, None)
        self.mailboxes.drop(follower)

    def drop_idle(self, idle_s: float) -> list[str]:
        """Unfollow followers that have not pulled for ``idle_s`` (a replica that died)."""
        cutoff = self.clock.now() - idle_s
        idle = [
            f for f in self.mailboxes.followers() if (self.mailboxes.idle_since(f) or 0) < cutoff
        ]
        for follower in idle:
            self.unfollow(follower)
        return idle

    def __len__(self) -> int:
        return len(self.mailboxes)


__all__ = ["MAX_PENDING_PER_FOLLOWER", "Followers"]
