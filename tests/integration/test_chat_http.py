"""Chat over real HTTP, WebSocket and SSE clients, through Serve's ingress.

WebSocket clients ping every second (the deployment closes one silent for
``CHAT_HEARTBEAT_TIMEOUT_S``), except the one a test keeps silent on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import ray
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from actors.chat.settings import ChatSettings
from actors.chat.shard import SHARD_PREFIX, ChatShardActor
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from tests.conftest import until
from tests.integration.conftest import (
    CHAT_MAX_MESSAGE_BYTES,
    CHAT_SEND_BURST,
    service_client,
    sign_up,
)
from tests.unit.test_push_standins import WebhookReceiver

SERVICE = "chat"  # of the `http` fixture
DEADLINE_S = 60.0
PING_EVERY_S = 1.0


# --- people and clients ------------------------------------------------------------------


def error_code(response: httpx.Response) -> str:
    """The code of an answer in the error envelope (which has at least these fields)."""
    error = response.json()["error"]
    assert {"code", "message", "details"} <= set(error), error
    return str(error["code"])


@dataclass
class Person:
    headers: dict[str, str]
    id: str
    name: str
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def people(base_url: str, count: int) -> AsyncIterator[list[Person]]:
    made: list[Person] = []
    try:
        for _ in range(count):
            name = f"u{uuid.uuid4().hex[:10]}"
            headers = await sign_up(base_url, name)
            async with service_client(base_url, "auth", headers) as auth:
                me = (await auth.get("/me")).json()
            made.append(
                Person(headers, me["id"], me["username"], service_client(base_url, "chat", headers))
            )
        yield made
    finally:
        for person in made:
            await person.http.aclose()


async def make_room(owner: Person, kind: str = "public", **extra: Any) -> str:
    answer = await owner.http.post("/rooms", json={"kind": kind, "name": "room", **extra})
    assert answer.status_code == 201, answer.text
    room: str = answer.json()["id"]
    return room


async def send(person: Person, room: str, text: str, **extra: Any) -> dict[str, Any]:
    answer = await person.http.post(f"/rooms/{room}/messages", json={"text": text, **extra})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


@dataclass
class Socket:
    """A test's WebSocket client: every message it receives is kept, in order, in
    ``seen``, and handed out once by ``receive`` (which can skip ahead to a type
    and come back for what it skipped)."""

    ws: ClientConnection
    pinger: asyncio.Task[None] | None = None
    refs: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    unread: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, **frame: Any) -> str:
        self.refs += 1
        ref = frame.setdefault("ref", f"q{self.refs}")
        await self.ws.send(orjson.dumps(frame).decode())
        return str(ref)

    async def _more(self, deadline: float) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"nothing expected came within {DEADLINE_S} s: {self.unread[-5:]}")
        frame = await asyncio.wait_for(self.ws.recv(), remaining)
        assert isinstance(frame, str)
        for line in frame.split("\n"):
            message = orjson.loads(line)
            self.seen.append(message)
            if message["type"] != "pong" or "ref" in message:  # not the pinger's
                self.unread.append(message)

    async def first(self, wanted: Any) -> dict[str, Any]:
        """The first unread message ``wanted(message)`` holds of, waiting for it."""
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        checked = 0
        while True:
            for index in range(checked, len(self.unread)):
                if wanted(self.unread[index]):
                    return self.unread.pop(index)
            checked = len(self.unread)
            await self._more(deadline)

    async def receive(self, *types: str) -> dict[str, Any]:
        """The next unread message of one of ``types`` (any type if none)."""
        return await self.first(lambda m: not types or m["type"] in types)

    async def ask(self, **frame: Any) -> dict[str, Any]:
        """Send a frame; its answer (an ``error`` too)."""
        ref = await self.send(**frame)
        return await self.first(lambda m: m.get("ref") == ref)

    async def join(self, room: str, **resume: Any) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "join", "room": room}
        if resume:
            frame["resume"] = resume
        answer = await self.ask(**frame)
        assert answer["type"] == "joined", answer
        return answer

    async def events(self, count: int, kind: str | None = "message") -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while len(found) < count:
            found.append(
                await self.first(lambda m: m["type"] == "event" and kind in (None, m["kind"]))
            )
        return found


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/chat/ws"


@contextlib.asynccontextmanager
async def socket(base_url: str, person: Person, *, silent: bool = False) -> AsyncIterator[Socket]:
    async with connect(ws_url(base_url), additional_headers=person.headers, max_size=None) as ws:
        opened = Socket(ws)

        async def ping() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.send('{"type":"ping"}')
                    await asyncio.sleep(PING_EVERY_S)

        if not silent:
            opened.pinger = asyncio.create_task(ping())
        try:
            yield opened
        finally:
            if opened.pinger is not None:
                opened.pinger.cancel()


# --- rooms over HTTP ---------------------------------------------------------------------


async def test_rooms_members_history_search_and_unread_over_http(base_url):
    async with people(base_url, 2) as (alice, bob):
        room = await make_room(alice, topic="plans")
        assert (await bob.http.post(f"/rooms/{room}/join")).json() == {"status": "joined"}
        first = await send(alice, room, "hello @" + bob.name, client_id="c1")
        again = await send(alice, room, "hello @" + bob.name, client_id="c1")
        assert first["seq"] == again["seq"] and again["duplicate"] is True
        assert first["mentions"] == [bob.id]
        reply = await send(bob, room, "hi alice", reply_to=first["seq"])
        rooms = (await bob.http.get("/rooms")).json()["rooms"]
        assert [(r["id"], r["unread"]) for r in rooms] == [(room, 1)]
        await bob.http.post(f"/rooms/{room}/read", json={"seq": reply["seq"]})
        assert (await bob.http.get("/rooms")).json()["rooms"][0]["unread"] == 0
        page = (await bob.http.get(f"/rooms/{room}/messages")).json()
        assert [(m["text"], m["reply_to"]) for m in page["messages"]] == [
            (f"hello @{bob.name}", None),
            ("hi alice", first["seq"]),
        ]
        edited = await alice.http.patch(
            f"/rooms/{room}/messages/{first['seq']}", json={"text": "hello"}
        )
        assert edited.status_code == 200
        assert (
            await alice.http.put(f"/rooms/{room}/messages/{first['seq']}/reactions/🎉")
        ).status_code == 200
        found = (await bob.http.get(f"/rooms/{room}/search", params={"q": "HELLO"})).json()
        assert [(m["text"], m["reactions"]) for m in found["messages"]] == [
            ("hello", [{"emoji": "🎉", "count": 1, "me": False}])
        ]
        by_sender = (await bob.http.get(f"/rooms/{room}/search", params={"sender": bob.id})).json()
        assert [m["text"] for m in by_sender["messages"]] == ["hi alice"]
        members = (await alice.http.get(f"/rooms/{room}/members")).json()["members"]
        assert sorted((m["username"], m["role"]) for m in members) == sorted(
            [(alice.name, "owner"), (bob.name, "member")]
        )
        events = (await bob.http.get(f"/rooms/{room}/events", params={"after_seq": 2})).json()
        assert [e["kind"] for e in events["events"]] == ["message", "message", "edit", "reaction"]
        assert events["recovered"] is True


async def test_private_and_direct_rooms_are_invisible_to_others(base_url):
    async with people(base_url, 3) as (alice, bob, carol):
        room = await make_room(alice, "private")
        for answer in (
            await carol.http.get(f"/rooms/{room}"),
            await carol.http.get(f"/rooms/{room}/messages"),
            await carol.http.post(f"/rooms/{room}/messages", json={"text": "hi"}),
            await carol.http.get(f"/rooms/r-{'0' * 24}"),
            await carol.http.get("/rooms/not-a-room-id"),
        ):
            assert answer.status_code == 404 and error_code(answer) == "room_not_found", answer.text
        invited = await alice.http.post(f"/rooms/{room}/invites", json={"user_id": bob.id})
        assert invited.json() == {"status": "invited"}
        assert [r["id"] for r in (await bob.http.get("/invites")).json()["rooms"]] == [room]
        assert (await bob.http.post(f"/rooms/{room}/join")).json() == {"status": "joined"}
        asked = await carol.http.post(f"/rooms/{room}/join")
        assert asked.json() == {"status": "requested"}
        assert (await carol.http.get(f"/rooms/{room}")).status_code == 404
        approved = await alice.http.post(f"/rooms/{room}/requests/{carol.id}/approve")
        assert approved.status_code == 204
        assert (await carol.http.get(f"/rooms/{room}")).json()["role"] == "member"

        direct = await alice.http.post("/direct", json={"user_id": bob.id})
        assert direct.status_code == 201
        same = await bob.http.post("/direct", json={"user_id": alice.id})
        assert same.status_code == 200 and same.json()["id"] == direct.json()["id"]
        dm = direct.json()["id"]
        assert (await carol.http.get(f"/rooms/{dm}")).status_code == 404
        nobody = await alice.http.post("/direct", json={"user_id": "0123456789abcdef"})
        assert nobody.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"text": 5},
        {"text": "hi", "reply_to": False},
        {"text": "hi", "unknown": 1},
        {"text": "hi", "mentions": "bob"},
        {"text": ""},
    ],
)
async def test_bad_sends_are_refused_and_send_nothing(base_url, body):
    async with people(base_url, 1) as (alice,):
        room = await make_room(alice)
        answer = await alice.http.post(f"/rooms/{room}/messages", json=body)
        assert answer.status_code == 422 and error_code(answer) == "invalid_input", answer.text
        assert (await alice.http.get(f"/rooms/{room}/messages")).json()["messages"] == []


async def test_every_refusal_answers_in_the_envelope(base_url):
    async with people(base_url, 3) as (alice, bob, carol):
        room = await make_room(alice)
        await bob.http.post(f"/rooms/{room}/join")
        # not a member
        answer = await carol.http.post(f"/rooms/{room}/messages", json={"text": "hi"})
        assert (answer.status_code, error_code(answer)) == (403, "not_a_member")
        # too large
        answer = await bob.http.post(
            f"/rooms/{room}/messages", json={"text": "x" * (CHAT_MAX_MESSAGE_BYTES + 1)}
        )
        assert (answer.status_code, error_code(answer)) == (413, "too_large")
        # muted
        await alice.http.post(f"/rooms/{room}/mutes", json={"user_id": bob.id, "duration_s": 600})
        answer = await bob.http.post(f"/rooms/{room}/messages", json={"text": "hi"})
        assert (answer.status_code, error_code(answer)) == (403, "muted")
        await alice.http.delete(f"/rooms/{room}/mutes/{bob.id}")
        # a member moderating
        answer = await bob.http.delete(f"/rooms/{room}/members/{alice.id}")
        assert (answer.status_code, error_code(answer)) == (403, "not_allowed")
        # slow mode
        await alice.http.patch(f"/rooms/{room}", json={"slow_mode_s": 3600})
        await send(bob, room, "one")
        answer = await bob.http.post(f"/rooms/{room}/messages", json={"text": "two"})
        assert (answer.status_code, error_code(answer)) == (429, "slow_mode")
        assert int(answer.headers["retry-after"]) > 0
        await alice.http.patch(f"/rooms/{room}", json={"slow_mode_s": 0})
        # banned
        await alice.http.post(f"/rooms/{room}/bans", json={"user_id": bob.id, "reason": "spam"})
        answer = await bob.http.post(f"/rooms/{room}/messages", json={"text": "hi"})
        assert (answer.status_code, error_code(answer)) == (403, "not_a_member")
        answer = await bob.http.post(f"/rooms/{room}/join")
        assert (answer.status_code, error_code(answer)) == (403, "banned")
        # archived
        await alice.http.post(f"/rooms/{room}/archive")
        answer = await alice.http.post(f"/rooms/{room}/messages", json={"text": "hi"})
        assert (answer.status_code, error_code(answer)) == (409, "room_archived")
        # rate limited: a burst, then one a second (the deployment's limit)
        other = await make_room(carol)
        answers = await asyncio.gather(
            *(
                carol.http.post(f"/rooms/{other}/messages", json={"text": f"m{i}"})
                for i in range(CHAT_SEND_BURST * 2)
            )
        )
        refused = [a for a in answers if a.status_code == 429]
        assert refused and {error_code(a) for a in refused} == {"rate_limited"}
        assert int(refused[0].headers["retry-after"]) >= 1


async def test_api_keys_hold_only_their_chat_scopes(base_url, api_key):
    async with people(base_url, 1) as (alice,):
        room = await make_room(alice)
        reader = await api_key(["chat:read"], owner=alice.headers)
        async with service_client(base_url, "chat", reader) as key:
            assert (await key.get(f"/rooms/{room}")).status_code == 200
            refused = await key.post(f"/rooms/{room}/messages", json={"text": "hi"})
            assert (refused.status_code, error_code(refused)) == (403, "forbidden")
            refused = await key.post("/rooms", json={"name": "mine"})
            assert refused.status_code == 403
        writer = await api_key(["chat:write"], owner=alice.headers)
        async with service_client(base_url, "chat", writer) as key:
            assert (
                await key.post(f"/rooms/{room}/messages", json={"text": "hi"})
            ).status_code == 201
            assert (await key.get(f"/rooms/{room}")).status_code == 403
        async with connect(ws_url(base_url), additional_headers=writer) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), DEADLINE_S)
            assert ws.close_code == 4403


async def test_missing_and_wrong_tokens_are_refused(base_url):
    async with service_client(base_url, "chat") as anonymous:
        assert (await anonymous.get("/rooms")).status_code == 401
    async with service_client(base_url, "chat", {"authorization": "Bearer nope"}) as wrong:
        assert (await wrong.get("/rooms")).status_code == 401
    with pytest.raises(Exception, match="401"):
        async with connect(ws_url(base_url)):
            pass


# --- WebSocket ----------------------------------------------------------------------------


async def test_two_clients_chat_and_a_third_resumes_after_a_disconnect(base_url):
    async with people(base_url, 3) as (alice, bob, carol):
        room = await make_room(alice)
        for person in (bob, carol):
            await person.http.post(f"/rooms/{room}/join")
        async with socket(base_url, alice) as a, socket(base_url, bob) as b:
            joined_a = await a.join(room)
            await b.join(room)
            async with socket(base_url, carol) as c:
                joined_c = await c.join(room)
                epoch = joined_c["epoch"]
                assert joined_c["recovered"] is None and joined_a["epoch"] == epoch
                sent = await a.ask(type="send", room=room, text="hi bob", client_id="a1")
                assert sent["type"] == "sent" and sent["duplicate"] is False
                answer = await b.ask(type="send", room=room, text="hi alice")
                assert answer["type"] == "sent"
                for s in (a, b, c):
                    heard = await s.events(2)
                    assert [e["text"] for e in heard] == ["hi bob", "hi alice"]
                last_seen = heard[-1]["seq"]
            # carol is away: four messages she misses, one edited
            for i in range(3):
                await a.ask(type="send", room=room, text=f"missed {i}")
            edit = await b.ask(type="edit", room=room, seq=sent["seq"] + 1, text="hi alice!")
            assert edit["type"] == "ok", edit
            repeat = await a.ask(type="send", room=room, text="hi bob", client_id="a1")
            assert repeat["seq"] == sent["seq"] and repeat["duplicate"] is True
            for s in (a, b):
                kinds = [(e["kind"], e.get("text")) for e in await s.events(4, None)]
                assert kinds[-1] == ("edit", "hi alice!")
            async with socket(base_url, carol) as again:
                resumed = await again.join(room, seq=last_seen, epoch=epoch)
                assert resumed["recovered"] is True and resumed["missed"] == 4
                await a.ask(type="send", room=room, text="live")
                got = await again.events(5, None)
                assert [e["seq"] for e in got] == list(range(last_seen + 1, last_seen + 6))
                assert [e.get("text") for e in got] == [
                    "missed 0",
                    "missed 1",
                    "missed 2",
                    "hi alice!",
                    "live",
                ]


async def test_websocket_refusals_come_as_error_frames_and_the_connection_stays(base_url):
    async with people(base_url, 2) as (alice, bob):
        room = await make_room(alice)
        private = await make_room(alice, "private")
        async with socket(base_url, bob) as b:
            answer = await b.ask(type="join", room=private)
            assert answer["type"] == "error" and answer["error"]["code"] == "room_not_found"
            answer = await b.ask(type="send", room=room, text="not a member")
            assert answer["error"]["code"] == "not_a_member"
            answer = await b.ask(type="send", room=room, text=7)
            assert answer["error"]["code"] == "invalid_input"
            await b.join(room)  # joining a public room over the socket makes bob a member
            answer = await b.ask(type="send", room=room, text="x" * (CHAT_MAX_MESSAGE_BYTES + 1))
            assert answer["error"]["code"] == "too_large"
            await alice.http.post(f"/rooms/{room}/mutes", json={"user_id": bob.id})
            answer = await b.ask(type="send", room=room, text="muted?")
            assert answer["error"]["code"] == "muted"
            await alice.http.delete(f"/rooms/{room}/mutes/{bob.id}")
            # a burst past the limit, sent at once: some are refused, as error frames
            refs = [
                await b.send(type="send", room=room, text=f"m{i}")
                for i in range(CHAT_SEND_BURST * 2)
            ]
            answers = [await b.first(lambda m, r=ref: m.get("ref") == r) for ref in refs]
            refused = [a for a in answers if a["type"] == "error"]
            assert refused and {a["error"]["code"] for a in refused} == {"rate_limited"}
            assert refused[0]["error"]["details"]["retry_after_s"] > 0
            assert (await b.ask(type="ping"))["type"] == "pong"  # still open
            await alice.http.post(f"/rooms/{room}/bans", json={"user_id": bob.id})
            left = await b.receive("left")
            assert left == {"type": "left", "ref": None, "room": room, "reason": "banned"}


async def test_presence_diffs_a_list_on_join_typing_and_a_silent_client_leaving(base_url):
    async with people(base_url, 3) as (alice, bob, carol):
        room = await make_room(alice)
        for person in (bob, carol):
            await person.http.post(f"/rooms/{room}/join")
        async with socket(base_url, alice) as a:
            await a.join(room)
            await until(lambda: present(alice, room), lambda users: users == {alice.id})
            async with socket(base_url, bob) as b1, socket(base_url, bob) as b2:
                await b1.join(room)
                await b2.join(room)  # a second device of bob's
                joined = await diff_with(a, joins=bob.id)
                assert joined["leaves"] == []
                async with socket(base_url, carol, silent=True) as c:
                    listed = await c.join(room)
                    assert {u["user_id"] for u in listed["presence"]} == {alice.id, bob.id}
                    await diff_with(a, joins=carol.id)
                    await b1.send(type="typing", room=room)
                    typing = await a.receive("typing")
                    assert (typing["user_id"], typing["username"]) == (bob.id, bob.name)
                    # carol says nothing: closed after the heartbeat timeout, she leaves
                    left = await diff_with(a, leaves=carol.id)
                    assert left["joins"] == []
                    with pytest.raises(ConnectionClosed):
                        while True:
                            await c.receive()
                    assert c.ws.close_code == 4408
                await b1.ws.close()
                assert await present(alice, room) >= {alice.id, bob.id}  # b2 is still there
            await diff_with(a, leaves=bob.id)
            assert await present(alice, room) == {alice.id}


async def present(person: Person, room: str) -> set[str]:
    answer = await person.http.get(f"/rooms/{room}/presence")
    assert answer.status_code == 200, answer.text
    return {u["user_id"] for u in answer.json()["users"]}


async def diff_with(
    s: Socket, *, joins: str | None = None, leaves: str | None = None
) -> dict[str, Any]:
    while True:
        diff = await s.receive("presence_diff", "presence")
        if diff["type"] == "presence_diff" and (
            (joins is not None and joins in {u["user_id"] for u in diff["joins"]})
            or (leaves is not None and leaves in diff["leaves"])
        ):
            return diff


def presence_view(s: Socket, room: str) -> set[str]:
    """Who a client sees present: the list it joined with, then each list and diff since."""
    view: set[str] = set()
    for message in s.seen:
        if message.get("room") not in (room, None) and message["type"] != "joined":
            continue
        if message["type"] == "joined" and message["room"]["id"] == room:
            view = {u["user_id"] for u in message["presence"]}
        elif message["type"] == "presence" and message["room"] == room:
            view = {u["user_id"] for u in message["users"]}
        elif message["type"] == "presence_diff" and message["room"] == room:
            view = (view | {u["user_id"] for u in message["joins"]}) - set(message["leaves"])
    return view


async def view_becomes(s: Socket, room: str, expected: set[str]) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while presence_view(s, room) != expected:
        await s._more(deadline)


async def test_a_mention_is_a_push_to_the_mentioned_user_s_devices(base_url):
    receiver = WebhookReceiver()
    await receiver.start()
    async with people(base_url, 2) as (alice, bob), contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(receiver.stop)
        push = await stack.enter_async_context(service_client(base_url, "push", bob.headers))
        hook = await push.post(
            "/devices", json={"platform": "webhook", "token": f"{receiver.url}/bob", "app": "chat"}
        )
        assert hook.status_code == 201, hook.text
        receiver.secrets[hook.json()["id"]] = hook.json()["secret"]
        inapp = await push.post(
            "/devices", json={"platform": "inapp", "token": "bob-phone", "app": "chat"}
        )
        assert inapp.status_code == 201, inapp.text
        room = await make_room(alice)
        await bob.http.post(f"/rooms/{room}/join")
        sent = await send(alice, room, f"ping @{bob.name}, look at this")
        assert sent["mentions"] == [bob.id]
        [got] = await until(
            lambda: receiver.received, within_s=DEADLINE_S, what="the webhook is called"
        )
        # the offline in-app device finds it in its inbox when it connects
        inbox = await until(
            lambda: push.get(f"/devices/{inapp.json()['id']}/inbox"),
            lambda r: r.json()["messages"],
            within_s=DEADLINE_S,
        )
    assert receiver.refused == []  # signed with the device's secret
    for notice in (got["data"], inbox.json()["messages"][0]["data"]):
        assert (notice["type"], notice["room"], notice["seq"]) == ("mention", room, sent["seq"])
        assert notice["excerpt"] == f"ping @{bob.name}, look at this"
        assert notice["from"] == {"user_id": alice.id, "username": alice.name}
    assert got["title"] == f"{alice.name} mentioned you in room"
    assert got["body"] == f"ping @{bob.name}, look at this"


# --- SSE ----------------------------------------------------------------------------------


#: Each stream's line iterator (a response's lines can be iterated once).
_lines: dict[int, Any] = {}


async def read_sse(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    """The next ``count`` data events of a stream, each with its ``id`` (if any)."""
    found: list[dict[str, Any]] = []
    event: dict[str, Any] = {}
    lines = _lines.setdefault(id(response), response.aiter_lines())
    while len(found) < count:
        line = await asyncio.wait_for(lines.__anext__(), DEADLINE_S)
        if line.startswith("id: "):
            event["id"] = line[4:]
        elif line.startswith("data: "):
            event["data"] = orjson.loads(line[6:])
        elif line == "" and "data" in event:
            found.append(event)
            event = {}
        elif line == "":
            event = {}
    return found


async def test_sse_streams_a_room_and_resumes_with_last_event_id(base_url):
    async with people(base_url, 2) as (alice, bob):
        room = await make_room(alice)
        await bob.http.post(f"/rooms/{room}/join")
        url = f"{base_url}/chat/rooms/{room}/sse"
        async with httpx.AsyncClient(timeout=DEADLINE_S, headers=bob.headers) as sse:
            async with sse.stream("GET", url) as response:
                assert response.status_code == 200
                [joined] = await read_sse(response, 1)
                assert joined["data"]["type"] == "joined"
                for i in range(3):
                    await send(alice, room, f"m{i}")
                got = await read_sse(response, 3)
            epoch = joined["data"]["epoch"]
            assert [e["id"] for e in got] == [f"{epoch}:{s}" for s in (3, 4, 5)]
            assert [e["data"]["text"] for e in got] == ["m0", "m1", "m2"]
            for i in range(3, 5):
                await send(alice, room, f"m{i}")
            resumed = {"last-event-id": got[-1]["id"]}
            async with sse.stream("GET", url, headers=resumed) as again:
                [joined] = await read_sse(again, 1)
                assert joined["data"]["recovered"] is True and joined["data"]["missed"] == 2
                rest = await read_sse(again, 2)
            assert [e["data"]["text"] for e in rest] == ["m3", "m4"]
            assert (await sse.get(url, headers={"last-event-id": "garbage"})).status_code == 422
        private = await make_room(alice, "private")
        async with httpx.AsyncClient(timeout=DEADLINE_S, headers=bob.headers) as sse:
            refused = await sse.get(f"{base_url}/chat/rooms/{private}/sse")
            assert refused.status_code == 404


# --- faults -------------------------------------------------------------------------------


async def owning_shard(room: str, settings: Settings) -> Any:
    shards = Shards(ChatShardActor, SHARD_PREFIX, ChatSettings.of(settings).shards, settings)
    return ray.get_actor(shards.owner(room).name, namespace=settings.namespace)


async def test_a_shard_killed_mid_conversation_loses_nothing_acknowledged(
    base_url, http_settings: Settings
):
    async with people(base_url, 3) as (alice, bob, carol):
        room = await make_room(alice)
        for person in (bob, carol):
            await person.http.post(f"/rooms/{room}/join")
        total = 40
        acked: dict[int, str] = {}
        async with (
            socket(base_url, alice) as a,
            socket(base_url, bob) as b,
            socket(base_url, carol) as c,
        ):
            for s in (a, b, c):
                await s.join(room)
            await until(lambda: present(alice, room), lambda u: u == {alice.id, bob.id, carol.id})
            epoch = (await alice.http.get(f"/rooms/{room}")).json()["epoch"]
            for i in range(total):
                if i == total // 3:
                    ray.kill(await owning_shard(room, http_settings), no_restart=False)
                sender = (a, b)[i % 2]
                answer = await sender.ask(type="send", room=room, text=f"n{i}", client_id=f"c{i}")
                while answer["type"] == "error":  # unavailable while it restarts: retry the same id
                    assert answer["error"]["code"] in ("unavailable", "store_unavailable"), answer
                    answer = await sender.ask(
                        type="send", room=room, text=f"n{i}", client_id=f"c{i}"
                    )
                acked[answer["seq"]] = f"n{i}"
            # every client gets every acknowledged message, in order, once
            for s in (a, b, c):
                got = [e for e in await s.events(total) if e["kind"] == "message"]
                assert [e["text"] for e in got] == [f"n{i}" for i in range(total)]
                assert [e["seq"] for e in got] == sorted(acked)
            # presence is rebuilt from the connections that exist, and every client's
            # view (the list it joined with, then lists and diffs) comes to agree
            everyone = {alice.id, bob.id, carol.id}
            await until(lambda: present(alice, room), lambda u: u == everyone)
            for s in (a, b, c):
                await view_becomes(s, room, everyone)
            await c.ws.close()
            await until(lambda: present(alice, room), lambda u: u == {alice.id, bob.id})
            for s in (a, b):
                await view_becomes(s, room, {alice.id, bob.id})
        history = (await alice.http.get(f"/rooms/{room}/messages", params={"limit": 500})).json()
        assert {m["seq"]: m["text"] for m in history["messages"]} == acked
        assert history["epoch"] == epoch
        # and a client that was away resumes with no gap and no duplicate
        async with socket(base_url, carol) as again:
            resumed = await again.join(room, seq=sorted(acked)[total // 2], epoch=epoch)
            assert resumed["recovered"] is True
            got = await again.events(total - total // 2 - 1)
            assert [e["text"] for e in got] == [f"n{i}" for i in range(total // 2 + 1, total)]
