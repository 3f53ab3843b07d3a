"""Auth over real HTTP, through Serve's ingress, as a user calls it.

The deployment is shared by every test, so each test uses its own usernames.
Failed logins are throttled per username and per client address: each client
here connects from a loopback address of its own (``service_client``), so one
test's failures do not throttle another's logins.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.conftest import (
    ADMIN_PASSWORD,
    BACKOFF_BASE_S,
    admin_headers,
    client_address,
    error_code,
    service_client,
)
from tests.integration.conftest import ADMIN_USERNAME as ADMIN

SERVICE = "auth"  # of the `http` fixture
SIGNED_IN = False
PASSWORD = "correct horse battery"
MB = 1_000_000


def new_name() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def refused_as_unauthorized(response: httpx.Response, code: str = "unauthorized") -> bool:
    return (
        response.status_code == 401
        and error_code(response) == code
        and response.headers.get("www-authenticate") == "Bearer"
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def register(http: httpx.AsyncClient, name: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await http.post("/register", json={"username": name, "password": password})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def login(
    http: httpx.AsyncClient, name: str, password: str = PASSWORD, **headers: str
) -> dict[str, Any]:
    response = await http.post(
        "/login", json={"username": name, "password": password}, headers=headers
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def token_works(http: httpx.AsyncClient, token: str) -> bool:
    response = await http.get("/me", headers=bearer(token))
    assert response.status_code == 200 or refused_as_unauthorized(response), response.text
    return response.status_code == 200


@pytest.fixture
async def admin(base_url) -> dict[str, str]:
    """Bearer headers of the admin account (made from the deployment's settings)."""
    return await admin_headers(base_url)


# --- accounts and sessions ---------------------------------------------------


async def test_register_login_me_logout(http, base_url):
    name = new_name()
    user = await register(http, name)
    assert set(user) == {"id", "username", "roles", "disabled", "created_at"}
    assert user["username"] == name and user["roles"] == ["user"] and user["disabled"] is False

    address = client_address()
    async with service_client(base_url, "auth", address=address) as phone:
        answer = await login(phone, name, **{"user-agent": "phone/1.0"})
    assert set(answer) == {"token", "token_type", "session", "user"}
    assert answer["token_type"] == "bearer" and answer["user"] == user
    session = answer["session"]
    assert session["user_id"] == user["id"]
    assert session["device"] == "phone/1.0" and session["address"] == address
    assert session["created_at"] <= session["last_seen_at"] < session["expires_at"]

    me = await http.get("/me", headers=bearer(answer["token"]))
    assert me.status_code == 200
    assert me.json() == {
        "id": user["id"],
        "username": name,
        "roles": ["user"],
        "session_id": session["id"],
    }

    out = await http.post("/logout", headers=bearer(answer["token"]))
    assert out.status_code == 204 and out.content == b""
    assert refused_as_unauthorized(await http.get("/me", headers=bearer(answer["token"])))
    assert refused_as_unauthorized(await http.post("/logout", headers=bearer(answer["token"])))


async def test_usernames_are_case_folded(http):
    name = new_name()
    user = await register(http, "  " + name.upper() + " ")
    assert user["username"] == name
    assert (await login(http, name.title()))["user"]["id"] == user["id"]


async def test_a_taken_username_is_409_whatever_its_case(http):
    name = new_name()
    await register(http, name)
    for taken in (name, name.upper()):
        again = await http.post("/register", json={"username": taken, "password": "other pass 2"})
        assert again.status_code == 409 and error_code(again) == "username_taken"
    await login(http, name)  # the first account is untouched


async def test_wrong_password_and_unknown_user_get_the_same_answer(http, base_url):
    name = new_name()
    await register(http, name)
    async with service_client(base_url, "auth") as one, service_client(base_url, "auth") as two:
        wrong = await one.post("/login", json={"username": name, "password": "not the password"})
        unknown = await two.post("/login", json={"username": new_name(), "password": PASSWORD})
    for response in (wrong, unknown):
        assert refused_as_unauthorized(response, "invalid_credentials"), response.text
    # The same answer (but for a request id, where the envelope carries one).
    same = ("code", "message", "details")
    assert [wrong.json()["error"][k] for k in same] == [unknown.json()["error"][k] for k in same]


async def test_failed_logins_are_throttled_with_retry_after(http, base_url):
    name, other = new_name(), new_name()
    await register(http, name)
    await register(http, other)
    failed = await http.post("/login", json={"username": name, "password": "not the password"})
    assert refused_as_unauthorized(failed, "invalid_credentials")

    # Right after a failure the next try for that name waits (the backoff
    # base), even with the right password and from anywhere. (An address is
    # slowed only after several failures: people share addresses.)
    async with service_client(base_url, "auth") as elsewhere:
        for response in (
            await http.post("/login", json={"username": name, "password": PASSWORD}),
            await elsewhere.post("/login", json={"username": name, "password": PASSWORD}),
        ):
            assert response.status_code == 429 and error_code(response) == "too_many_attempts"
            assert 0 < response.json()["error"]["details"]["retry_after_s"] <= BACKOFF_BASE_S
            assert 0 < int(response.headers["retry-after"]) <= BACKOFF_BASE_S

        # Another user from another address is not held up.
        await login(elsewhere, other)


async def test_an_oversized_password_is_refused_before_hashing_and_nothing_is_created(http):
    name = new_name()
    huge = await http.post("/register", json={"username": name, "password": "x" * MB})
    assert huge.status_code == 413 and error_code(huge) == "too_large"
    assert huge.json()["error"]["details"] == {"size": MB, "limit": 1024}
    short = await http.post("/register", json={"username": name, "password": "short"})
    assert short.status_code == 422 and error_code(short) == "invalid_input"
    # Nothing was created: the name is free, and a huge password cannot log in.
    await register(http, name)
    response = await http.post("/login", json={"username": name, "password": "x" * MB})
    assert refused_as_unauthorized(response, "invalid_credentials")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/register", b"{not json"),
        ("/register", b'{"username": "someone"}'),
        ("/register", b'{"username": 5, "password": "long enough"}'),
        ("/register", b'{"username": "someone", "password": null}'),
        ("/register", b'{"username": "", "password": "long enough"}'),
        ("/register", b'{"username": "has space", "password": "long enough"}'),
        ("/register", b'{"username": "' + b"a" * 65 + b'", "password": "long enough"}'),
        ("/register", b'{"username": "' + b"a" * 300 + b'", "password": "long enough"}'),
        ("/login", b'{"username": "someone"}'),
        ("/login", b"[]"),
        ("/password-reset/request", b"{}"),
        ("/password-reset/confirm", b'{"token": "", "new_password": "long enough"}'),
        ("/password-reset/confirm", b'{"new_password": "long enough"}'),
    ],
)
async def test_malformed_bodies_are_422(http, path, body):
    response = await http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert error_code(response) == "invalid_input"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer .",
        "Token 0123456789abcdef.secret",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-token",
        "Bearer 0123456789abcdef.",
        "Bearer 0123456789abcdef.unknown-secret",
        "Bearer 0123456789abcdef." + "x" * 200,
    ],
)
async def test_a_missing_wrong_or_malformed_bearer_is_401(http, authorization):
    headers = {} if authorization is None else {"authorization": authorization}
    for method, path in [("GET", "/me"), ("GET", "/sessions"), ("POST", "/logout")]:
        response = await http.request(method, path, headers=headers)
        assert refused_as_unauthorized(response), (path, response.text)


async def test_a_real_session_id_with_a_wrong_secret_is_401(http):
    name = new_name()
    await register(http, name)
    token = (await login(http, name))["token"]
    session_id, _, secret = token.partition(".")
    forged = f"{session_id}.{secret[::-1]}"
    assert refused_as_unauthorized(await http.get("/me", headers=bearer(forged)))
    assert await token_works(http, token)


async def test_sessions_are_listed_and_one_can_be_revoked(http):
    name = new_name()
    await register(http, name)
    phone = await login(http, name, **{"user-agent": "phone"})
    laptop = await login(http, name, **{"user-agent": "laptop"})
    listed = await http.get("/sessions", headers=bearer(phone["token"]))
    assert listed.status_code == 200
    sessions = listed.json()["sessions"]
    assert [s["id"] for s in sessions] == [phone["session"]["id"], laptop["session"]["id"]]
    assert [s["device"] for s in sessions] == ["phone", "laptop"]

    revoked = await http.delete(
        f"/sessions/{laptop['session']['id']}", headers=bearer(phone["token"])
    )
    assert revoked.status_code == 204
    assert not await token_works(http, laptop["token"])  # refused at once
    assert await token_works(http, phone["token"])
    after = (await http.get("/sessions", headers=bearer(phone["token"]))).json()["sessions"]
    assert [s["id"] for s in after] == [phone["session"]["id"]]
    again = await http.delete(
        f"/sessions/{laptop['session']['id']}", headers=bearer(phone["token"])
    )
    assert again.status_code == 404 and error_code(again) == "not_found"


async def test_a_user_cannot_revoke_another_users_session(http):
    alice, bob = new_name(), new_name()
    await register(http, alice)
    await register(http, bob)
    theirs = await login(http, alice)
    mine = await login(http, bob)
    for session_id in (theirs["session"]["id"], "0123456789abcdef"):
        response = await http.delete(f"/sessions/{session_id}", headers=bearer(mine["token"]))
        assert response.status_code == 404 and error_code(response) == "not_found"
    assert await token_works(http, theirs["token"])
    bobs = (await http.get("/sessions", headers=bearer(mine["token"]))).json()["sessions"]
    assert [s["id"] for s in bobs] == [mine["session"]["id"]]


async def test_logout_everywhere_ends_every_session(http):
    name, bystander = new_name(), new_name()
    await register(http, name)
    await register(http, bystander)
    tokens = [(await login(http, name))["token"] for _ in range(3)]
    theirs = (await login(http, bystander))["token"]
    ended = await http.post("/logout-everywhere", headers=bearer(tokens[0]))
    assert ended.status_code == 200 and ended.json() == {"ended": 3}
    for token in tokens:
        assert not await token_works(http, token)
    assert await token_works(http, theirs)


# --- passwords -------------------------------------------------------------------


async def test_changing_the_password_ends_the_other_sessions_only(http):
    name, new = new_name(), "a brand new password"
    await register(http, name)
    current = (await login(http, name))["token"]
    others = [(await login(http, name))["token"] for _ in range(2)]

    short = await http.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=bearer(current),
    )
    assert short.status_code == 422 and error_code(short) == "invalid_input"
    assert all([await token_works(http, token) for token in others])  # nothing changed

    changed = await http.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": new},
        headers=bearer(current),
    )
    assert changed.status_code == 200 and changed.json() == {"ended_other_sessions": 2}
    assert await token_works(http, current)
    for token in others:
        assert not await token_works(http, token)
    await login(http, name, new)
    old = await http.post("/login", json={"username": name, "password": PASSWORD})
    assert refused_as_unauthorized(old, "invalid_credentials")


async def test_changing_the_password_needs_the_current_one(http):
    name = new_name()
    await register(http, name)
    token = (await login(http, name))["token"]
    other = (await login(http, name))["token"]
    wrong = await http.post(
        "/password",
        json={"current_password": "not the password", "new_password": "whatever it is"},
        headers=bearer(token),
    )
    # 403, not 401: the token is fine, only the password is wrong.
    assert wrong.status_code == 403 and error_code(wrong) == "wrong_password"
    assert await token_works(http, token) and await token_works(http, other)
    huge = await http.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": "x" * MB},
        headers=bearer(token),
    )
    assert huge.status_code == 413 and error_code(huge) == "too_large"
    assert await token_works(http, other)  # nothing changed


async def test_a_reset_request_is_accepted_alike_for_any_username(http):
    name = new_name()
    await register(http, name)
    answers = [
        await http.post("/password-reset/request", json={"username": username})
        for username in (name, new_name())
    ]
    for response in answers:
        assert response.status_code == 202 and response.json() == {"accepted": True}
    assert "token" not in answers[0].text


async def test_a_reset_token_sets_a_new_password_once(http, admin):
    name, new = new_name(), "reset password 123"
    user = await register(http, name)
    token = (await login(http, name))["token"]

    issued = await http.post(f"/admin/users/{user['id']}/reset-token", headers=admin)
    assert issued.status_code == 200
    assert set(issued.json()) == {"token", "expires_in_s"}
    assert issued.json()["expires_in_s"] == 900
    reset = issued.json()["token"]

    # A refused new password does not use up the token.
    short = await http.post("/password-reset/confirm", json={"token": reset, "new_password": "x"})
    assert short.status_code == 422 and error_code(short) == "invalid_input"
    assert await token_works(http, token)

    confirmed = await http.post(
        "/password-reset/confirm", json={"token": reset, "new_password": new}
    )
    assert confirmed.status_code == 204
    assert not await token_works(http, token)  # every session of the user ended
    again = await http.post(
        "/password-reset/confirm", json={"token": reset, "new_password": "yet another one"}
    )
    assert again.status_code == 422 and error_code(again) == "invalid_reset_token"
    bogus = await http.post(
        "/password-reset/confirm", json={"token": "made-up", "new_password": "yet another one"}
    )
    assert bogus.status_code == 422 and error_code(bogus) == "invalid_reset_token"

    await login(http, name, new)
    old = await http.post("/login", json={"username": name, "password": PASSWORD})
    assert refused_as_unauthorized(old, "invalid_credentials")


# --- administration ----------------------------------------------------------------


async def test_admin_routes_refuse_non_admins(http):
    name = new_name()
    user = await register(http, name)
    token = (await login(http, name))["token"]
    routes = [
        ("GET", "/admin/users"),
        ("POST", f"/admin/users/{user['id']}/disable"),
        ("POST", f"/admin/users/{user['id']}/enable"),
        ("POST", f"/admin/users/{user['id']}/reset-token"),
    ]
    for method, path in routes:
        forbidden = await http.request(method, path, headers=bearer(token))
        assert forbidden.status_code == 403 and error_code(forbidden) == "forbidden", path
        assert refused_as_unauthorized(await http.request(method, path))
    assert await token_works(http, token)  # and nothing was disabled


async def test_the_admin_comes_from_the_settings_and_its_name_cannot_be_registered(http, admin):
    # Before: whoever registered the admin name first became the admin.
    for spelling in (ADMIN, ADMIN.upper(), f" {ADMIN} "):
        taken = await http.post("/register", json={"username": spelling, "password": PASSWORD})
        assert taken.status_code == 409 and error_code(taken) == "username_taken"
    me = (await http.get("/me", headers=admin)).json()
    assert me["username"] == ADMIN and "admin" in me["roles"]
    # The admin is made from the password file, and logs in with that password.
    assert (await login(http, ADMIN, ADMIN_PASSWORD))["user"]["roles"] == ["user", "admin"]


async def test_the_admin_lists_users(http, admin):
    me = (await http.get("/me", headers=admin)).json()
    assert me["username"] == ADMIN and me["roles"] == ["user", "admin"]
    name = new_name()
    user = await register(http, name)
    listed = await http.get("/admin/users", params={"limit": 1000}, headers=admin)
    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == len(body["users"]) >= 2
    assert user in body["users"]
    page = (await http.get("/admin/users", params={"offset": 1, "limit": 1}, headers=admin)).json()
    assert page["total"] == body["total"] and page["users"] == body["users"][1:2]
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "many"}):
        bad = await http.get("/admin/users", params=params, headers=admin)
        assert bad.status_code == 422 and error_code(bad) == "invalid_input", params


async def test_disabling_ends_sessions_at_once_and_enabling_restores_login(http, admin):
    name, bystander = new_name(), new_name()
    user = await register(http, name)
    await register(http, bystander)
    tokens = [(await login(http, name))["token"] for _ in range(2)]
    theirs = (await login(http, bystander))["token"]

    disabled = await http.post(f"/admin/users/{user['id']}/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json() == {**user, "disabled": True}
    for token in tokens:
        assert not await token_works(http, token)
    assert await token_works(http, theirs)
    refused = await http.post("/login", json={"username": name, "password": PASSWORD})
    assert refused.status_code == 403 and error_code(refused) == "forbidden"

    enabled = await http.post(f"/admin/users/{user['id']}/enable", headers=admin)
    assert enabled.status_code == 200 and enabled.json() == user
    assert await token_works(http, (await login(http, name))["token"])


async def test_admin_routes_answer_404_for_an_unknown_user(http, admin):
    for action in ("disable", "enable", "reset-token"):
        response = await http.post(f"/admin/users/0123456789abcdef/{action}", headers=admin)
        assert response.status_code == 404 and error_code(response) == "not_found", action


async def test_openapi_docs_are_served(http):
    assert (await http.get("/docs")).status_code == 200
    spec = (await http.get("/openapi.json")).json()
    assert spec["info"]["title"] == "Realm auth"
    assert {"/register", "/login", "/me", "/sessions/{session_id}"} <= set(spec["paths"])


async def test_unknown_routes_and_methods_use_the_envelope(http):
    missing = await http.get("/nowhere")
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    wrong = await http.get("/login")
    assert wrong.status_code == 405 and error_code(wrong) == "method_not_allowed"
