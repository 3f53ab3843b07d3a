"""Loki's protobuf push: a snappy-compressed ``logproto.PushRequest``, what Promtail
and Grafana Alloy send by default (``Content-Type: application/x-protobuf``).

The schema is small and fixed (Loki's ``pkg/push/push.proto``)::

    message PushRequest   { repeated StreamAdapter streams = 1; }
    message StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2;
                            uint64 hash = 3; }
    message EntryAdapter  { google.protobuf.Timestamp timestamp = 1; string line = 2;
                            repeated LabelPairAdapter structuredMetadata = 3; }
    message LabelPairAdapter { string name = 1; string value = 2; }
    message Timestamp     { int64 seconds = 1; int32 nanos = 2; }

so it is read by hand here (about as long as describing it to the ``protobuf``
package, and no generated code to keep). Fields not listed are skipped, as any
protobuf reader does. The result is Loki's JSON push shape (``{"streams":
[{"stream": {...}, "values": [["<ns>", "line", {metadata}], ...]}]}``), which the
route then checks with the same model and limits as a JSON push.

Snappy is the block format (no framing), as Loki's ``util.ParseProtoReader`` reads
it; its header says the decompressed size, which is checked against the limit
before anything is decompressed.
"""

from __future__ import annotations

import re
from typing import Any

from actors.logs.errors import BadEntry

#: ``{name="value", ...}``, Prometheus's label-set text (values escaped as Go quotes).
_PAIR = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\}$)')
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
NS = 1_000_000_000


def decompress(raw: bytes, *, limit: int) -> bytes:
    """Snappy block ``raw``, refused if it would come to more than ``limit`` bytes."""
    try:
        size, _ = _varint(raw, 0, len(raw))
    except BadEntry:
        raise BadEntry("the body is not snappy-compressed") from None
    if size > limit:
        raise BadEntry("the decompressed body is too large")
    try:
        import cramjam
    except ImportError:  # the dependency is in pyproject.toml; an old venv may lack it
        raise BadEntry("this deployment takes Loki's JSON push only") from None
    try:
        return bytes(cramjam.snappy.decompress_raw(raw))
    except Exception:  # cramjam raises its own DecompressionError
        raise BadEntry("the body does not decompress (snappy)") from None


def push_request(data: bytes) -> dict[str, Any]:
    """A ``PushRequest`` as Loki's JSON push shape."""
    streams = []
    for field, value in _fields(data, 0, len(data)):
        if field == 1:
            streams.append(_stream(data, value))
    return {"streams": streams}


def _stream(data: bytes, span: Any) -> dict[str, Any]:
    start, end = _span(span)
    labels: dict[str, str] = {}
    values: list[list[Any]] = []
    for field, value in _fields(data, start, end):
        if field == 1:
            labels = parse_labels(_text(data, value))
        elif field == 2:
            values.append(_entry(data, value))
    return {"stream": labels, "values": values}


def _entry(data: bytes, span: Any) -> list[Any]:
    start, end = _span(span)
    ts, line = 0, ""
    metadata: dict[str, str] = {}
    for field, value in _fields(data, start, end):
        if field == 1:
            ts = _timestamp(data, value)
        elif field == 2:
            line = _text(data, value)
        elif field == 3:
            name, text = _pair(data, value)
            metadata[name] = text
    if ts <= 0:
        raise BadEntry("an entry's timestamp is missing or before 1970")
    return [str(ts), line, metadata] if metadata else [str(ts), line]


def _timestamp(data: bytes, span: Any) -> int:
    start, end = _span(span)
    seconds = nanos = 0
    for field, value in _fields(data, start, end):
        if field == 1 and isinstance(value, int):
            seconds = _signed(value)
        elif field == 2 and isinstance(value, int):
            nanos = _signed(value)
    if not 0 <= nanos < NS:
        raise BadEntry("a timestamp's nanos are 0 to 999,999,999")
    return seconds * NS + nanos


def _pair(data: bytes, span: Any) -> tuple[str, str]:
    start, end = _span(span)
    name = text = ""
    for field, value in _fields(data, start, end):
        if field == 1:
            name = _text(data, value)
        elif field == 2:
            text = _text(data, value)
    return name, text


def parse_labels(text: str) -> dict[str, str]:
    """``{app="x", env="prod"}`` as a dict; ``BadEntry`` if it is not one."""
    text = text.strip()
    if not text.startswith("{") or not text.endswith("}"):
        raise BadEntry('a stream\'s labels are written {name="value", ...}')
    labels: dict[str, str] = {}
    at = 1
    if text[1:-1].strip() == "":
        return labels
    while at < len(text):
        found = _PAIR.match(text, at)
        if found is None:
            raise BadEntry('a stream\'s labels are written {name="value", ...}')
        labels[found.group(1)] = re.sub(
            r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), found.group(2)
        )
        at = found.end()
    return labels


# --- the wire format ------------------------------------------------------------------


def _varint(data: bytes, at: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= end or shift > 63:
            raise BadEntry("the body is not a Loki protobuf push (a number is cut off)")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _signed(value: int) -> int:
    """An int64/int32 field's varint as the signed number (two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(data: bytes, at: int, end: int) -> Any:
    """``(field number, value)`` of a message in ``data[at:end]``: an int for a varint,
    ``(start, end)`` for a length-delimited field; fixed-width fields are skipped."""
    while at < end:
        key, at = _varint(data, at, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at, end)
            yield field, value
        elif wire == 2:
            size, at = _varint(data, at, end)
            if at + size > end:
                raise BadEntry("the body is not a Loki protobuf push (a field is cut off)")
            yield field, (at, at + size)
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
            if at > end:
                raise BadEntry("the body is not a Loki protobuf push (a field is cut off)")
        else:
            raise BadEntry("the body is not a Loki protobuf push (unknown wire type)")


def _span(value: Any) -> tuple[int, int]:
    if not isinstance(value, tuple):
        raise BadEntry("the body is not a Loki protobuf push (a message is a number)")
    return value


def _text(data: bytes, value: Any) -> str:
    start, end = _span(value)
    try:
        return data[start:end].decode()
    except UnicodeDecodeError:
        raise BadEntry("a string in the push is not UTF-8") from None
