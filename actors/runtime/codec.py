"""What durable actors keep in the store, encoded as data: MessagePack, never pickle.

The store holds data, not code: a record or snapshot decodes into plain values
(``None``, bools, 64-bit ints, floats, str, bytes, lists, dicts) whatever
module wrote it, so moving or renaming a module never breaks a replay, and
whoever can write to the store (Redis) cannot make an actor run code.

Richer values are encoded by value and typed again on the way back in by
``convert``, from the annotations of the code that reads them (the
``apply_<op>`` method a record replays through, the ``restore_state`` a
snapshot goes to): dataclasses and ``msgspec.Struct`` become maps, tuples and
sets become arrays, enums their values. ``RealmError`` values (answers that
carry a refusal) travel as an extension of their own and come back as the same
error class. Integers beyond 64 bits are refused: an actor that holds larger
numbers encodes them itself (the ledger writes its 128-bit balances as strings).

``msgspec`` does the work: it is faster than pickle at encoding here, and
strict about what it accepts.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections import OrderedDict, deque
from collections.abc import Callable
from types import GenericAlias
from typing import Any

import msgspec

from actors.runtime.errors import RealmError

#: Extension type of an encoded ``RealmError``.
_EXT_ERROR = 1


def _enc_hook(value: Any) -> Any:
    if isinstance(value, deque):
        return list(value)
    if isinstance(value, RealmError):
        fields = [value.code, value.message, value.details]
        return msgspec.msgpack.Ext(_EXT_ERROR, _encoder.encode(fields))
    raise TypeError(f"{type(value).__name__} values cannot be stored; encode them as data")


def _ext_hook(code: int, data: memoryview) -> Any:
    if code == _EXT_ERROR:
        error_code, message, details = _decoder.decode(data)
        return RealmError.from_code(error_code, message, details)
    raise ValueError(f"unknown extension type {code}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


def encode(value: Any) -> bytes:
    """``value`` as MessagePack; ``TypeError``/``OverflowError`` for what cannot be stored."""
    return _encoder.encode(value)


def decode(data: bytes | memoryview) -> Any:
    """Plain values back from ``encode``; ``msgspec.DecodeError`` for bytes that are not."""
    return _decoder.decode(data)


def convert(value: Any, into: Any) -> Any:
    """``value`` (plain, as decoded) typed as ``into`` (an annotation); ``Any`` leaves it."""
    if into is Any:
        return value
    return msgspec.convert(value, into, strict=False, dec_hook=_dec_hook)


def _dec_hook(into: Any, value: Any) -> Any:
    """Types msgspec does not build itself: deques and ordered dicts (with typed
    items), and values already of the type (an error decoded from its extension)."""
    origin, args = typing.get_origin(into) or into, typing.get_args(into)
    if origin is deque:
        return deque(convert(value, GenericAlias(list, args) if args else list))
    if origin is OrderedDict:
        return OrderedDict(convert(value, GenericAlias(dict, args) if args else dict))
    if isinstance(origin, type) and isinstance(value, origin):
        return value
    raise msgspec.ValidationError(f"expected {into}, got {type(value).__name__}")


@functools.cache
def parameter_types(function: Callable[..., Any]) -> dict[str, Any]:
    """The annotations of ``function``'s parameters (``Any`` where none), resolved."""
    hints = typing.get_type_hints(function)
    return {
        name: hints.get(name, Any)
        for name in inspect.signature(function).parameters
        if name != "self"
    }


@functools.cache
def return_type(function: Callable[..., Any]) -> Any:
    """The annotation of what ``function`` returns (``Any`` where none), resolved."""
    return typing.get_type_hints(function).get("return", Any)


__all__ = ["convert", "decode", "encode", "parameter_types", "return_type"]
