"""Loki's protobuf push (``application/x-protobuf``, snappy), without Ray: requests
encoded by the ``protobuf`` package from Loki's own schema, read by Realm's decoder
and pushed through the real route to a stand-in client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

cramjam = pytest.importorskip("cramjam", reason="the cramjam package (snappy) is not installed")

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

from actors.logs.errors import BadEntry  # noqa: E402
from actors.runtime.settings import Settings  # noqa: E402
from apps.logs import loki_proto, make_app  # noqa: E402
from tests.unit.fronts import calling_as, principal  # noqa: E402

PROTOBUF = {"content-type": "application/x-protobuf"}


def loki_messages() -> dict[str, Any]:
    """Loki's ``pkg/push/push.proto`` (and ``google.protobuf.Timestamp``), described to
    the protobuf package field by field."""
    T = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="realm_test_push.proto", package="logproto")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        made = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            added = made.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                added.type_name = type_name

    one, many = T.LABEL_OPTIONAL, T.LABEL_REPEATED
    message("Timestamp", ("seconds", 1, T.TYPE_INT64, one, ""), ("nanos", 2, T.TYPE_INT32, one, ""))
    message(
        "LabelPairAdapter",
        ("name", 1, T.TYPE_STRING, one, ""),
        ("value", 2, T.TYPE_STRING, one, ""),
    )
    message(
        "EntryAdapter",
        ("timestamp", 1, T.TYPE_MESSAGE, one, ".logproto.Timestamp"),
        ("line", 2, T.TYPE_STRING, one, ""),
        ("structuredMetadata", 3, T.TYPE_MESSAGE, many, ".logproto.LabelPairAdapter"),
    )
    message(
        "StreamAdapter",
        ("labels", 1, T.TYPE_STRING, one, ""),
        ("entries", 2, T.TYPE_MESSAGE, many, ".logproto.EntryAdapter"),
        ("hash", 3, T.TYPE_UINT64, one, ""),
    )
    message("PushRequest", ("streams", 1, T.TYPE_MESSAGE, many, ".logproto.StreamAdapter"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"logproto.{name}"))
        for name in ("PushRequest",)
    }


def encoded(streams: list[tuple[str, list[tuple[int, str, dict[str, str]]]]]) -> bytes:
    request = loki_messages()["PushRequest"]()
    for labels, entries in streams:
        stream = request.streams.add(labels=labels, hash=2**63 + 5)  # hash: read past
        for ts, line, metadata in entries:
            entry = stream.entries.add(line=line)
            entry.timestamp.seconds, entry.timestamp.nanos = divmod(ts, 1_000_000_000)
            for name, value in metadata.items():
                entry.structuredMetadata.add(name=name, value=value)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def test_a_push_request_reads_as_lokis_json_shape() -> None:
    body = encoded(
        [
            (
                '{app="shop", msg="say \\"hi\\"\\n"}',
                [
                    (1_700_000_000_123_456_789, "first", {"trace_id": "abc"}),
                    (1_700_000_001_000_000_000, "second ✓", {}),
                ],
            ),
            ('{app="db"}', []),
        ]
    )
    data = loki_proto.push_request(loki_proto.decompress(body, limit=1 << 20))
    assert data == {
        "streams": [
            {
                "stream": {"app": "shop", "msg": 'say "hi"\n'},
                "values": [
                    ["1700000000123456789", "first", {"trace_id": "abc"}],
                    ["1700000001000000000", "second ✓"],
                ],
            },
            {"stream": {"app": "db"}, "values": []},
        ]
    }


@pytest.mark.parametrize(
    "bad",
    [
        b"",  # no snappy header
        b"\xff\xff\xff\xff\x0f" + b"x" * 10,  # says 4 GiB: over the limit, not decompressed
        bytes(cramjam.snappy.compress_raw(b"\x0a\x05abc")),  # a field cut off
        bytes(cramjam.snappy.compress_raw(b"\x0b")),  # wire type 3 (a group)
        bytes(cramjam.snappy.compress_raw(b"\x0a\x03\x0a\x01x")),  # labels not {...}
        b"\x05not snappy",
    ],
)
def test_malformed_bodies_are_bad_entries(bad: bytes) -> None:
    with pytest.raises(BadEntry):
        loki_proto.push_request(loki_proto.decompress(bad, limit=1 << 20))


def test_labels_text() -> None:
    assert loki_proto.parse_labels('{a="1",b = "x,y" }') == {"a": "1", "b": "x,y"}
    assert loki_proto.parse_labels("{}") == {}
    for bad in ("a=1", '{a="1"', "{a=1}", '{1a="x"}', '{a="x" b="y"}'):
        with pytest.raises(BadEntry):
            loki_proto.parse_labels(bad)


class Pushes:
    """The logs client's ``push``, recording what the route hands it."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    async def push(self, tenant: str, streams: Any) -> dict[str, int]:
        self.got.append((tenant, streams))
        return {"accepted": sum(len(e) for _, e in streams)}


async def test_the_route_takes_protobuf_with_the_json_pushs_checks(
    make_settings: Callable[..., Settings],
) -> None:
    client = Pushes()
    app = make_app(client, make_settings())  # type: ignore[arg-type]
    async with calling_as(app, [principal("ada", {"logs:push"})]) as http:
        body = encoded([('{app="shop"}', [(1_700_000_000_000_000_001, "hello", {"k": "v"})])])
        answer = await http.post("/loki/api/v1/push", content=body, headers=PROTOBUF)
        assert answer.status_code == 204, answer.text
        assert client.got == [
            ("ada", [({"app": "shop"}, [(1_700_000_000_000_000_001, "hello", {"k": "v"})])])
        ]
        # the JSON push's model checks apply: a label value may not be empty
        refused = await http.post(
            "/loki/api/v1/push",
            content=encoded([('{app=""}', [(1, "x", {})])]),
            headers=PROTOBUF,
        )
        assert refused.status_code == 422
        garbage = await http.post("/loki/api/v1/push", content=b"\x05not snappy", headers=PROTOBUF)
        assert garbage.status_code == 422
        assert garbage.json()["error"]["code"] == "bad_entry"
        other = await http.post(
            "/loki/api/v1/push", content=b"x", headers={"content-type": "text/plain"}
        )
        assert other.status_code == 422
    assert len(client.got) == 1  # nothing refused reached the shards
