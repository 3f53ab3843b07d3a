"""Subjects for pub/sub, NATS style: topics, wildcard patterns, and an index.

A topic is dot-separated tokens, ``orders.eu.created``. A pattern may use
``*`` for exactly one token (``orders.*.created``) and ``>`` as its last token
for one or more remaining tokens (``orders.>`` matches ``orders.eu`` and
``orders.eu.created``, not ``orders``). Nothing else is special: there is no
prefix matching, ``orders`` does not match ``orders.eu``.

``SubscriptionIndex`` maps patterns to subscriber ids in a token trie, so
matching a topic walks at most a few branches per token instead of testing
every pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.runtime.errors import InvalidInput

#: Longest topic or pattern, in characters: topics travel in every message.
MAX_TOPIC_CHARS = 256
#: Most tokens in a topic or pattern; bounds the trie's depth.
MAX_TOPIC_TOKENS = 16
#: Matches exactly one token.
#: Prefix of reply topics; only the requesting client subscribes to its own.
INBOX = "_inbox"
ONE = "*"
#: As the last token, matches one or more remaining tokens.
REST = ">"


def _tokens(text: object, what: str) -> list[str]:
    if not isinstance(text, str):
        raise InvalidInput(f"a {what} must be a string", **{what: repr(text)})
    if not text:
        raise InvalidInput(f"a {what} must not be empty", **{what: text})
    if len(text) > MAX_TOPIC_CHARS:
        raise InvalidInput(
            f"a {what} has at most {MAX_TOPIC_CHARS} characters",
            **{what: text[:MAX_TOPIC_CHARS] + "..."},
            length=len(text),
            limit=MAX_TOPIC_CHARS,
        )
    tokens = text.split(".")
    if len(tokens) > MAX_TOPIC_TOKENS:
        raise InvalidInput(
            f"a {what} has at most {MAX_TOPIC_TOKENS} tokens",
            **{what: text},
            tokens=len(tokens),
            limit=MAX_TOPIC_TOKENS,
        )
    for token in tokens:
        if not token:
            raise InvalidInput(
                f"a {what} has an empty token (leading, trailing or '..')", **{what: text}
            )
        if any(c.isspace() or not c.isprintable() for c in token):
            raise InvalidInput(
                f"a {what} must not contain whitespace or control characters", **{what: text}
            )
    return tokens


def check_topic(topic: object) -> list[str]:
    """Refuse anything but a concrete topic (no wildcards); returns its tokens."""
    tokens = _tokens(topic, "topic")
    if any(ONE in token or REST in token for token in tokens):
        raise InvalidInput(
            "a published topic must not contain '*' or '>' (those are for patterns)",
            topic=topic,
        )
    return tokens


def check_pattern(pattern: object) -> list[str]:
    """Refuse anything but a valid pattern; returns its tokens."""
    tokens = _tokens(pattern, "pattern")
    for index, token in enumerate(tokens):
        if token == REST:
            if index != len(tokens) - 1:
                raise InvalidInput("'>' may only be the last token of a pattern", pattern=pattern)
        elif token != ONE and (ONE in token or REST in token):
            raise InvalidInput(
                "'*' and '>' must be whole tokens (like 'a.*.c' or 'a.>')", pattern=pattern
            )
    return tokens


def matches(pattern: str, topic: str) -> bool:
    """Whether ``pattern`` matches ``topic``; both assumed valid (see the checks)."""
    wanted, tokens = pattern.split("."), topic.split(".")
    for index, want in enumerate(wanted):
        if want == REST:
            return len(tokens) > index
        if index >= len(tokens) or (want != ONE and want != tokens[index]):
            return False
    return len(wanted) == len(tokens)


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)  #: token (or '*') -> node
    here: set[str] = field(default_factory=set)  #: patterns that end at this node
    rest: set[str] = field(default_factory=set)  #: patterns with '>' after this node

    def empty(self) -> bool:
        return not (self.children or self.here or self.rest)


class SubscriptionIndex:
    """Patterns -> subscriber ids, as a token trie."""

    def __init__(self) -> None:
        self._root = _Node()
        self._by_subscriber: dict[str, set[str]] = {}
        self._count = 0

    def add(self, pattern: str, subscriber: str) -> None:
        tokens = check_pattern(pattern)
        node = self._root
        for token in tokens[:-1]:
            node = node.children.setdefault(token, _Node())
        last = tokens[-1]
        target = node.rest if last == REST else node.children.setdefault(last, _Node()).here
        if subscriber not in target:
            target.add(subscriber)
            self._by_subscriber.setdefault(subscriber, set()).add(pattern)
            self._count += 1

    def remove(self, pattern: str, subscriber: str) -> bool:
        """Forget one subscription; returns whether it existed."""
        patterns = self._by_subscriber.get(subscriber)
        if patterns is None or pattern not in patterns:
            return False
        patterns.discard(pattern)
        if not patterns:
            del self._by_subscriber[subscriber]
        tokens = pattern.split(".")
        path = [self._root]
        for token in tokens[:-1]:
            path.append(path[-1].children[token])
        if tokens[-1] == REST:
            path[-1].rest.discard(subscriber)
        else:
            path.append(path[-1].children[tokens[-1]])
            path[-1].here.discard(subscriber)
        self._count -= 1
        # Prune the nodes this subscription alone kept alive, deepest first.
        for depth in range(len(path) - 1, 0, -1):
            if not path[depth].empty():
                break
            del path[depth - 1].children[tokens[depth - 1]]
        return True

    def remove_subscriber(self, subscriber: str) -> int:
        """Forget every subscription of ``subscriber``; returns how many there were."""
        patterns = list(self._by_subscriber.get(subscriber, ()))
        for pattern in patterns:
            self.remove(pattern, subscriber)
        return len(patterns)

    def patterns(self, subscriber: str) -> set[str]:
        return set(self._by_subscriber.get(subscriber, ()))

    def match(self, topic: str) -> set[str]:
        """Subscribers with at least one pattern matching ``topic`` (a valid topic)."""
        found: set[str] = set()
        nodes = [self._root]
        for token in topic.split("."):
            following: list[_Node] = []
            for node in nodes:
                found |= node.rest  # '>' here takes this token and any after it
                for key in (token, ONE):
                    child = node.children.get(key)
                    if child is not None:
                        following.append(child)
            nodes = following
            if not nodes:
                return found
        for node in nodes:
            found |= node.here
        return found

    def subscribers(self) -> list[str]:
        return list(self._by_subscriber)

    def __len__(self) -> int:
        """Number of (pattern, subscriber) subscriptions."""
        return self._count

    def __repr__(self) -> str:
        return (
            f"<SubscriptionIndex subscriptions={self._count} "
            f"subscribers={len(self._by_subscriber)}>"
        )
