"""API keys, tickets, the admin bootstrap and the per-address limits, through
``AuthClient`` and the auth app, without Ray: the client's actor refs are local
``UserStore`` / ``SessionStore`` instances (``local_client``), and HTTP goes
through httpx's ASGI transport into the app itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocket as StarletteWebSocket

from actors.auth.bootstrap import password_hash
from actors.auth.client import AuthClient, Principal
from actors.auth.errors import InvalidResetToken, UsernameTaken
from actors.auth.model import Role
from actors.runtime.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    LimitReached,
    NotFound,
    RateLimited,
    Unauthorized,
)
from actors.runtime.settings import Settings
from apps.auth import make_app
from apps.signin import StreamUser, install_verifier, sign_in_websocket, until_signed_out
from tests.unit.conftest import settle
from tests.unit.test_auth_races import PASSWORD, local_client

ADMIN_PASSWORD = "the operator's password"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AuthClient]:
    secret = tmp_path / "admin-password"
    secret.write_text(ADMIN_PASSWORD + "\n")
    made = await local_client(
        tmp_path,
        auth_admin_username="root",
        auth_admin_password_file=str(secret),
        auth_max_api_keys_per_user=3,
        auth_register_per_address=3,
        auth_reset_requests_per_address=2,
    )
    await made.bootstrap_admin()
    yield made
    await made.close()


async def admin_of(client: AuthClient) -> Principal:
    return await client.authenticate((await client.login("root", ADMIN_PASSWORD))["token"])


async def user(client: AuthClient, name: str) -> tuple[dict[str, Any], Principal]:
    account = await client.register(name, PASSWORD)
    principal = await client.authenticate((await client.login(name, PASSWORD))["token"])
    return account, principal


# --- admin bootstrap --------------------------------------------------------------


async def test_the_admin_comes_from_the_settings_not_from_registering(client: AuthClient) -> None:
    admin = await admin_of(client)
    assert admin.is_admin and admin.username == "root"
    for spelling in ("root", "ROOT"):
        with pytest.raises(UsernameTaken):
            await client.register(spelling, PASSWORD)
    # Another replica starting finds it made, and changes nothing
    again = await client.bootstrap_admin()
    assert again is not None and again["changed"] is False
    assert again["user"]["id"] == admin.user_id
    assert await client.authenticate((await client.login("root", ADMIN_PASSWORD))["token"])


async def test_the_admin_password_may_be_given_as_a_hash(tmp_path: Path) -> None:
    hashed = password_hash(Settings(auth_argon2_memory_kib=64, auth_argon2_time_cost=1), PASSWORD)
    client = await local_client(
        tmp_path, auth_admin_username="boss", auth_admin_password_hash=hashed
    )
    made = await client.bootstrap_admin()
    assert made is not None and made["changed"] is True
    logged_in = await client.login("boss", PASSWORD)
    assert Role.ADMIN.value in logged_in["user"]["roles"]
    with pytest.raises(ValueError, match="argon2id"):
        Settings(auth_admin_password_hash="plain text")


async def test_taking_the_admin_name_over_ends_the_holders_sessions(tmp_path: Path) -> None:
    # Given an account holding the admin name from before it was reserved, signed in
    client = await local_client(tmp_path)  # no admin configured: the name is free
    await client.register("root", "squatter's password")
    squatter = (await client.login("root", "squatter's password"))["token"]
    # When the operator makes the admin under that name
    taken = await client.ensure_admin("root", password=ADMIN_PASSWORD)
    # Then the old holder's token and password are worthless, the operator's work
    assert taken["changed"] is True
    with pytest.raises(Unauthorized):
        await client.authenticate(squatter)
    assert (await admin_of(client)).is_admin


async def test_a_password_change_voids_outstanding_reset_tokens(client: AuthClient) -> None:
    account, ada = await user(client, "ada")
    token = await client.reset_token_for(account["id"])
    await client.change_password(ada, PASSWORD, "a new password 2")
    with pytest.raises(InvalidResetToken):
        await client.confirm_reset(token, "the attackers password")
    await client.login("ada", "a new password 2")


# --- API keys -------------------------------------------------------------------------


async def test_an_api_key_acts_for_its_user_with_its_scopes_only(client: AuthClient) -> None:
    admin = await admin_of(client)
    account, _ = await user(client, "ada")
    made = await client.create_api_key(
        admin, scopes=["queue:read", "queue:enqueue"], name="worker", username="ada"
    )
    assert made["key"].startswith("rk_") and made["user_id"] == account["id"]
    assert made["scopes"] == ["queue:enqueue", "queue:read"] and made["expires_at"] is None
    principal = await client.authenticate(made["key"])
    assert principal == Principal(
        account["id"], "ada", (), made["id"], frozenset({"queue:read", "queue:enqueue"})
    )
    assert not principal.is_user and not principal.is_admin
    assert principal.allows("queue:enqueue") and not principal.allows("ledger:transfer")
    with pytest.raises(Forbidden):
        principal.require("cache:write")
    # Served from the near cache the second time, like a session
    hits = client.near.hits
    assert await client.authenticate(made["key"]) == principal
    assert client.near.hits == hits + 1


async def test_a_key_made_without_a_user_acts_for_the_admin(client: AuthClient) -> None:
    admin = await admin_of(client)
    made = await client.create_api_key(admin, scopes=["cache:read"])
    key = await client.authenticate(made["key"])
    assert (key.user_id, key.username, key.roles) == (admin.user_id, "root", ())
    assert not key.is_admin  # a key never holds the admin role


async def test_a_revoked_key_is_refused_at_once(client: AuthClient) -> None:
    admin = await admin_of(client)
    made = await client.create_api_key(admin, scopes=["cache:read"])
    await client.authenticate(made["key"])  # held in the near cache
    await client.revoke_api_key(made["id"])
    with pytest.raises(Unauthorized):
        await client.authenticate(made["key"])
    with pytest.raises(NotFound):
        await client.revoke_api_key(made["id"])
    assert await client.list_api_keys() == []


async def test_an_expired_or_forged_key_is_refused(client: AuthClient) -> None:
    admin = await admin_of(client)
    made = await client.create_api_key(admin, scopes=["cache:read"], expires_in_s=60)
    assert made["expires_at"] == pytest.approx(client.clock.time() + 60)
    prefix, _, secret = made["key"].partition(".")
    with pytest.raises(Unauthorized):
        await client.authenticate(f"{prefix}.{secret[::-1]}")
    await client.authenticate(made["key"])
    client.clock.advance(60)  # type: ignore[attr-defined]
    with pytest.raises(Unauthorized):
        await client.authenticate(made["key"])


async def test_keys_are_listed_without_secrets(client: AuthClient) -> None:
    admin = await admin_of(client)
    account, _ = await user(client, "ada")
    mine = await client.create_api_key(admin, scopes=["cache:read"], name="a")
    client.clock.advance(1)  # type: ignore[attr-defined]
    adas = await client.create_api_key(admin, scopes=["ledger:read"], user_id=account["id"])
    listed = await client.list_api_keys()
    assert [k["id"] for k in listed] == [mine["id"], adas["id"]]
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    assert [k["id"] for k in await client.list_api_keys(account["id"])] == [adas["id"]]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"scopes": []}, InvalidInput),
        ({"scopes": ["cache:read", "cache:everything"]}, InvalidInput),
        ({"scopes": ["cache:read"], "name": "x" * 201}, InvalidInput),
        ({"scopes": ["cache:read"], "expires_in_s": 0}, InvalidInput),
        ({"scopes": ["cache:read"], "user_id": "x", "username": "y"}, InvalidInput),
        ({"scopes": ["cache:read"], "username": "nobody"}, NotFound),
        ({"scopes": ["cache:read"], "user_id": "0123456789abcdef"}, NotFound),
    ],
)
async def test_a_bad_key_request_makes_nothing(
    client: AuthClient, arguments: dict[str, Any], error: type[Exception]
) -> None:
    admin = await admin_of(client)
    with pytest.raises(error):
        await client.create_api_key(admin, **arguments)
    assert await client.list_api_keys() == []


async def test_keys_per_user_are_limited(client: AuthClient) -> None:
    admin = await admin_of(client)
    account, _ = await user(client, "ada")
    for _ in range(3):  # auth_max_api_keys_per_user
        await client.create_api_key(admin, scopes=["cache:read"], user_id=account["id"])
    with pytest.raises(LimitReached):
        await client.create_api_key(admin, scopes=["cache:read"], user_id=account["id"])
    await client.create_api_key(admin, scopes=["cache:read"])  # another user's count


async def test_disabling_a_user_revokes_their_keys_for_good(client: AuthClient) -> None:
    admin = await admin_of(client)
    account, _ = await user(client, "ada")
    made = await client.create_api_key(admin, scopes=["cache:read"], username="ada")
    await client.authenticate(made["key"])
    await client.set_disabled(account["id"], True)
    with pytest.raises(Unauthorized):
        await client.authenticate(made["key"])
    with pytest.raises(Conflict):
        await client.create_api_key(admin, scopes=["cache:read"], username="ada")
    await client.set_disabled(account["id"], False)
    with pytest.raises(Unauthorized):
        await client.authenticate(made["key"])


# --- tickets --------------------------------------------------------------------------


async def test_a_ticket_signs_in_once_as_its_session(client: AuthClient) -> None:
    _, ada = await user(client, "ada")
    issued = await client.issue_ticket(ada)
    assert issued["ticket"].startswith("rt_") and issued["expires_in_s"] == 30
    assert await client.redeem_ticket(issued["ticket"]) == ada
    with pytest.raises(Unauthorized):
        await client.redeem_ticket(issued["ticket"])
    # A ticket is no bearer credential, and a bearer credential no ticket
    other = (await client.issue_ticket(ada))["ticket"]
    with pytest.raises(Unauthorized):
        await client.authenticate(other)
    token = (await client.login("ada", PASSWORD))["token"]
    with pytest.raises(Unauthorized):
        await client.redeem_ticket(token)


async def test_a_ticket_fails_once_its_session_has_ended(client: AuthClient) -> None:
    _, ada = await user(client, "ada")
    ticket = (await client.issue_ticket(ada))["ticket"]
    await client.logout(ada)
    with pytest.raises(Unauthorized):
        await client.redeem_ticket(ticket)


async def test_a_ticket_expires(client: AuthClient) -> None:
    _, ada = await user(client, "ada")
    ticket = (await client.issue_ticket(ada))["ticket"]
    client.clock.advance(30)  # type: ignore[attr-defined]
    with pytest.raises(Unauthorized):
        await client.redeem_ticket(ticket)


async def test_a_keys_ticket_signs_in_as_the_key_until_it_is_revoked(client: AuthClient) -> None:
    admin = await admin_of(client)
    made = await client.create_api_key(admin, scopes=["pubsub:subscribe"])
    key = await client.authenticate(made["key"])
    first, second = [(await client.issue_ticket(key))["ticket"] for _ in range(2)]
    assert await client.redeem_ticket(first) == key
    await client.revoke_api_key(made["id"])
    with pytest.raises(Unauthorized):
        await client.redeem_ticket(second)
    with pytest.raises(Unauthorized):
        await client.recheck(key)


async def test_a_stream_opened_with_a_ticket_is_rechecked_by_its_session(
    client: AuthClient,
) -> None:
    _, ada = await user(client, "ada")
    ticket = (await client.issue_ticket(ada))["ticket"]
    assert await client.redeem_ticket(ticket) == ada
    # Used up for signing in, the ticket still names the stream's session here
    assert await client.recheck(ticket) == ada
    assert await client.recheck(ada) == ada
    await client.logout(ada)
    for signed_in in (ticket, ada):
        with pytest.raises(Unauthorized):
            await client.recheck(signed_in)
    # A ticket this verifier never redeemed names nothing
    _, bob = await user(client, "bob")
    with pytest.raises(Unauthorized):
        await client.recheck((await client.issue_ticket(bob))["ticket"])


async def test_until_signed_out_ends_when_a_tickets_session_ends(client: AuthClient) -> None:
    _, ada = await user(client, "ada")
    ticket = (await client.issue_ticket(ada))["ticket"]
    await client.redeem_ticket(ticket)
    watchers = [
        asyncio.ensure_future(until_signed_out(client, signed_in, 0.0))
        for signed_in in (ticket, ada)
    ]
    await settle()
    assert not any(w.done() for w in watchers)  # the session lives: so do the streams
    await client.logout(ada)
    await asyncio.wait_for(asyncio.gather(*watchers), timeout=30)


# --- limits per address ----------------------------------------------------------------


async def test_registrations_are_limited_per_address_before_any_hashing(
    client: AuthClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        await client.register(f"user{n}", PASSWORD, address="10.0.0.1")
    hashed: list[str] = []
    monkeypatch.setattr(client, "_hash", lambda password: hashed.append(password))
    with pytest.raises(RateLimited) as refused:
        await client.register("user9", PASSWORD, address="10.0.0.1")
    assert refused.value.details["retry_after_s"] > 0 and hashed == []


# --- over HTTP (the auth app, in process) ---------------------------------------------


@pytest.fixture
async def http(client: AuthClient) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(client, client.settings)
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://auth") as http:
        yield http


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


async def signed_in(http: httpx.AsyncClient, name: str, password: str = PASSWORD) -> str:
    answer = await http.post("/login", json={"username": name, "password": password})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


async def test_register_and_reset_requests_answer_429_with_retry_after(
    http: httpx.AsyncClient,
) -> None:
    for n in range(3):
        made = await http.post("/register", json={"username": f"u{n}", "password": PASSWORD})
        assert made.status_code == 201, made.text
    refused = await http.post("/register", json={"username": "u9", "password": PASSWORD})
    resets = [await http.post("/password-reset/request", json={"username": "u0"}) for _ in range(3)]
    assert [r.status_code for r in resets] == [202, 202, 429]
    for response in (refused, resets[-1]):
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "rate_limited" and error["details"]["retry_after_s"] > 0
        assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ada", "password": PASSWORD, "admin": True},
        {"username": "ada", "password": 12345678},
        {"username": ["ada"], "password": PASSWORD},
    ],
)
async def test_auth_bodies_are_strict(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await http.post("/register", json=body)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_input"


async def test_keys_over_http(http: httpx.AsyncClient) -> None:
    admin = bearer(await signed_in(http, "root", ADMIN_PASSWORD))
    await http.post("/register", json={"username": "ada", "password": PASSWORD})
    ada = bearer(await signed_in(http, "ada"))
    body = {"scopes": ["cache:read"], "name": "ci", "username": "ada", "expires_in_s": 3600}

    made = await http.post("/keys", json=body, headers=admin)
    assert made.status_code == 201, made.text
    key = made.json()
    assert set(key) == {
        "id", "user_id", "username", "name", "scopes", "created_at", "created_by",
        "expires_at", "key",
    }  # fmt: skip
    listed = (await http.get("/keys", headers=admin)).json()["keys"]
    assert listed == [{k: v for k, v in key.items() if k != "key"}]
    # Only an admin manages keys; a key is not a signed-in user at all
    for headers in (ada, bearer(key["key"])):
        assert (await http.post("/keys", json=body, headers=headers)).status_code == 403
        assert (await http.get("/keys", headers=headers)).status_code == 403
        assert (await http.delete(f"/keys/{key['id']}", headers=headers)).status_code == 403
    assert (await http.get("/me", headers=bearer(key["key"]))).status_code == 403
    for bad in (
        {**body, "scopes": ["cache:nope"]},
        {**body, "scopes": "cache:read"},
        {**body, "expires_in_s": True},
        {**body, "expires_in_s": 1e12},
        {**body, "extra": 1},
    ):
        assert (await http.post("/keys", json=bad, headers=admin)).status_code == 422, bad
    gone = await http.delete(f"/keys/{key['id']}", headers=admin)
    assert gone.status_code == 204
    assert (await http.get("/me", headers=bearer(key["key"]))).status_code == 401
    assert (await http.delete(f"/keys/{key['id']}", headers=admin)).status_code == 404


async def test_a_ticket_over_http(http: httpx.AsyncClient, client: AuthClient) -> None:
    await http.post("/register", json={"username": "ada", "password": PASSWORD})
    token = await signed_in(http, "ada")
    assert (await http.post("/ticket")).status_code == 401
    issued = await http.post("/ticket", headers=bearer(token))
    assert issued.status_code == 200 and issued.json()["expires_in_s"] == 30
    assert await client.redeem_ticket(issued.json()["ticket"]) == await client.authenticate(token)


# --- streams: StreamUser and sign_in_websocket ---------------------------------------


@pytest.fixture
async def stream(client: AuthClient) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_verifier(app, client)

    @app.get("/stream")
    async def stream_route(user: StreamUser) -> dict[str, str]:
        return {"user": user.username}

    from apps.errors import install_error_handlers

    install_error_handlers(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        yield http


async def test_stream_user_takes_a_ticket_once_and_never_a_token_in_the_url(
    client: AuthClient, stream: httpx.AsyncClient
) -> None:
    _, ada = await user(client, "ada")
    token = (await client.login("ada", PASSWORD))["token"]
    ticket = (await client.issue_ticket(ada))["ticket"]

    assert (await stream.get("/stream", params={"ticket": ticket})).json() == {"user": "ada"}
    again = await stream.get("/stream", params={"ticket": ticket})
    assert again.status_code == 401
    # Before: ?access_token= signed the stream in (and landed in the access log)
    in_url = await stream.get("/stream", params={"access_token": token})
    assert in_url.status_code == 401
    assert "ticket" in in_url.json()["error"]["message"]
    assert (await stream.get("/stream", params={"ticket": token})).status_code == 401
    assert (await stream.get("/stream", headers=bearer(token))).json() == {"user": "ada"}


def handshake(client: AuthClient, query: bytes, sent: list[Any]) -> WebSocket:
    app = FastAPI()
    install_verifier(app, client)

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "headers": [],
        "query_string": query,
        "app": app,
        "extensions": {"websocket.http.response": {}},
    }
    return StarletteWebSocket(scope, receive, send)


async def test_a_websocket_handshake_takes_a_ticket_once(client: AuthClient) -> None:
    _, ada = await user(client, "ada")
    ticket = (await client.issue_ticket(ada))["ticket"]
    sent: list[Any] = []
    assert await sign_in_websocket(handshake(client, f"ticket={ticket}".encode(), sent)) == (
        ada,
        ticket,
    )
    assert sent == []
    assert await sign_in_websocket(handshake(client, f"ticket={ticket}".encode(), sent)) is None
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 401
    token = (await client.login("ada", PASSWORD))["token"]
    sent.clear()
    refused = handshake(client, f"access_token={token}".encode(), sent)
    assert await sign_in_websocket(refused) is None
    assert sent[0]["status"] == 401


def test_the_bootstrap_command_prints_a_hash_for_the_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from argon2 import PasswordHasher

    from actors.auth import bootstrap

    monkeypatch.setattr("sys.stdin", io.StringIO(ADMIN_PASSWORD + "\n"))
    assert bootstrap.main(["--print-hash"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("$argon2id$")
    assert PasswordHasher().verify(printed, ADMIN_PASSWORD)
    Settings(auth_admin_password_hash=printed)  # what the setting accepts
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with pytest.raises(SystemExit):
        bootstrap.main(["--print-hash"])
