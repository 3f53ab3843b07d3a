"""The store's encoding: data in, data out, typed back from annotations; never code."""

from __future__ import annotations

import pickle
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgspec
import pytest

from actors.runtime import codec
from actors.runtime.errors import NotFound, RealmError


class Colour(str, Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Thing:
    name: str
    colour: Colour
    pair: tuple[int, str] = (0, "")
    tags: set[str] = field(default_factory=set)
    recent: deque[tuple[int, str]] = field(default_factory=deque)
    ordered: OrderedDict[str, int] = field(default_factory=OrderedDict)
    by_id: dict[int, str] = field(default_factory=dict)
    blob: bytes = b""


def test_rich_values_come_back_equal_when_typed_by_their_annotation():
    thing = Thing(
        "a", Colour.BLUE, (1, "x"), {"t"}, deque([(2, "y")]),
        OrderedDict(b=1, a=2), {7: "seven"}, b"\x00\xff",
    )  # fmt: skip
    raw = codec.decode(codec.encode(thing))
    assert raw["colour"] == "blue" and raw["pair"] == [1, "x"]  # plain data on the way out
    back = codec.convert(raw, Thing)
    assert back == thing
    assert list(back.ordered) == ["b", "a"] and isinstance(back.recent, deque)


def test_any_leaves_plain_data_as_it_decoded():
    assert codec.convert([1, {"a": None}], Any) == [1, {"a": None}]


def test_an_error_comes_back_as_its_class_with_its_fields():
    error = NotFound("no such thing", thing="a")
    back = codec.decode(codec.encode({"answer": error}))["answer"]
    assert type(back) is NotFound and back.message == "no such thing"
    assert back.details == {"thing": "a"}


def test_an_unknown_error_code_comes_back_as_a_plain_realm_error():
    back = RealmError.from_code("gone_in_a_later_version", "it was", {})
    assert type(back) is RealmError and back.message == "it was"


def test_values_that_are_not_data_are_refused_when_written():
    with pytest.raises(TypeError, match="object"):
        codec.encode({"x": object()})
    with pytest.raises(OverflowError):
        codec.encode(2**64)  # larger numbers are the actor's to encode


def test_a_pickle_is_not_a_record():
    class Boom:
        def __reduce__(self) -> Any:
            return (print, ("this must never run",))

    with pytest.raises(msgspec.DecodeError):
        codec.decode(pickle.dumps(Boom()))


def test_parameter_and_return_types_are_read_from_annotations():
    def apply_add(self: Any, amount: int, tags: tuple[str, ...] = ()) -> list[int]:
        return []

    assert codec.parameter_types(apply_add) == {"amount": int, "tags": tuple[str, ...]}
    assert codec.return_type(apply_add) == list[int]
