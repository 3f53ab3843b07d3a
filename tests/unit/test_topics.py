"""Topics and patterns: validation, wildcard semantics, and the trie index."""

from __future__ import annotations

import random

import pytest

from actors.pubsub.topics import (
    MAX_TOPIC_CHARS,
    MAX_TOPIC_TOKENS,
    SubscriptionIndex,
    check_pattern,
    check_topic,
    matches,
)
from actors.runtime.errors import InvalidInput

SEMANTICS = [
    # pattern, topic, matches?
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b.d", False),
    ("a.b", "a.b.c", False),  # no prefix matching
    ("a.b.c", "a.b", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.b.x.c", False),  # '*' is exactly one token
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*.*", "a.b", True),
    ("a.>", "a.b", True),
    ("a.>", "a.b.c.d", True),
    ("a.>", "a", False),  # '>' is one or more tokens
    ("a.>", "b.c", False),
    (">", "a", True),
    (">", "a.b.c", True),
    ("*.b.>", "a.b.c", True),
    ("*.b.>", "a.b", False),
    ("*.b.>", "a.x.c", False),
    ("ab", "a", False),
    ("a", "ab", False),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), SEMANTICS)
def test_wildcard_semantics(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


@pytest.mark.parametrize(("pattern", "topic", "expected"), SEMANTICS)
def test_the_index_follows_the_same_semantics(pattern: str, topic: str, expected: bool) -> None:
    index = SubscriptionIndex()
    index.add(pattern, "s")
    assert index.match(topic) == ({"s"} if expected else set())


@pytest.mark.parametrize(
    "topic",
    [
        "",
        ".a",
        "a.",
        "a..b",
        "a b",
        "a.\tb",
        "a.\x00",
        "a.*",
        "a.>",
        "a.b*",
        "x" * (MAX_TOPIC_CHARS + 1),
        ".".join(["t"] * (MAX_TOPIC_TOKENS + 1)),
        42,
        None,
    ],
)
def test_invalid_topics_are_refused(topic: object) -> None:
    with pytest.raises(InvalidInput):
        check_topic(topic)


@pytest.mark.parametrize(
    "pattern",
    ["", "a..b", "a.>.c", ">.a", "a.b>", "a*", "a.*b", "a.**", "a b.*", 7],
)
def test_invalid_patterns_are_refused(pattern: object) -> None:
    with pytest.raises(InvalidInput):
        check_pattern(pattern)


def test_limits_are_inclusive_and_tokens_returned() -> None:
    longest = "x" * MAX_TOPIC_CHARS
    deepest = ".".join(["t"] * MAX_TOPIC_TOKENS)
    assert check_topic(longest) == [longest]
    assert len(check_topic(deepest)) == MAX_TOPIC_TOKENS
    assert check_pattern("a.*.>") == ["a", "*", ">"]
    assert check_topic("unicode.é.ok-_:1") == ["unicode", "é", "ok-_:1"]


def test_a_refusal_says_what_was_wrong() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_topic("a.*")
    assert "'*'" in refused.value.message
    assert refused.value.details == {"topic": "a.*"}
    with pytest.raises(InvalidInput) as refused:
        check_pattern("a.>.b")
    assert "last token" in refused.value.message


def test_index_add_is_idempotent_and_remove_prunes() -> None:
    index = SubscriptionIndex()
    index.add("a.b", "s")
    index.add("a.b", "s")
    index.add("a.>", "s")
    index.add("a.*", "t")
    assert len(index) == 3
    assert index.match("a.b") == {"s", "t"}
    assert index.remove("a.b", "s") is True
    assert index.remove("a.b", "s") is False
    assert index.remove("never", "nobody") is False
    assert index.match("a.b") == {"s", "t"}  # still through 'a.>' and 'a.*'
    assert index.remove_subscriber("s") == 1
    assert index.match("a.b") == {"t"}
    assert index.remove("a.*", "t") is True
    assert len(index) == 0
    assert index._root.empty()  # nothing left behind


def test_invalid_pattern_is_refused_by_the_index() -> None:
    index = SubscriptionIndex()
    with pytest.raises(InvalidInput):
        index.add("a.>.b", "s")
    assert len(index) == 0


def test_the_index_agrees_with_matches_on_random_patterns() -> None:
    rng = random.Random(20240605)
    alphabet = ["a", "b", "c", "d"]

    def topic() -> str:
        return ".".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))

    def pattern() -> str:
        tokens = [rng.choice([*alphabet, "*", "*"]) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.3:
            tokens[-1] = ">"
        return ".".join(tokens)

    index = SubscriptionIndex()
    subscriptions: set[tuple[str, str]] = set()
    for _ in range(400):
        pair = (pattern(), f"s{rng.randrange(40)}")
        index.add(*pair)
        subscriptions.add(pair)
    for pair in rng.sample(sorted(subscriptions), 100):  # some removals too
        assert index.remove(*pair)
        subscriptions.discard(pair)
    assert len(index) == len(subscriptions)
    hits = 0
    for _ in range(1_000):
        t = topic()
        expected = {s for p, s in subscriptions if matches(p, t)}
        assert index.match(t) == expected, t
        hits += sum(matches(p, t) for p, _ in subscriptions)
    # the sample exercises both answers, and mostly "no"
    assert 10_000 < hits < len(subscriptions) * 1_000 // 2
