"""The error envelope (apps.errors) without Ray: what an answer may carry, the
request id, the Allow of a 405, and the OpenAPI every service app documents."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query

from actors.auth.client import Principal
from actors.runtime.errors import (
    Conflict,
    LimitReached,
    NotFound,
    RealmError,
    StoreUnavailable,
    Unavailable,
)
from actors.runtime.settings import Settings
from actors.runtime.store import RedisStore, redacted
from apps.common import service_app
from apps.errors import ENVELOPE_SCHEMA_NAME, envelope
from apps.models import Body
from apps.signin import Scope, current_principal

PASSWORD = "s3cret-pa55"
#: Nothing listens on port 1: connecting is refused at once.
DEAD_REDIS = f"redis://:{PASSWORD}@127.0.0.1:1/0"
ALICE = Principal("u1", "alice", ("user",), "s1")


class Thing(Body):
    name: str


def make_app() -> FastAPI:
    app = service_app("test", description="routes that fail", settings=Settings())

    @app.get("/store")
    async def store_route() -> dict[str, Any]:
        store = RedisStore(DEAD_REDIS)
        try:
            return {"head": await store.head("stream")}
        finally:
            await store.close()

    @app.get("/sqlite")
    async def sqlite_route() -> None:
        raise StoreUnavailable("sqlite: disk I/O error", path="/srv/realm/data/queue-q.sqlite3")

    @app.get("/missing/{key}")
    async def missing(key: str) -> None:
        raise NotFound("no such key", key=key)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"boom: could not open /etc/realm/secret ({PASSWORD})")

    @app.get("/gone")
    async def gone() -> None:
        raise Unavailable("a ledger shard did not answer", cause="ActorDiedError(pid=4242)")

    @app.put("/things/{name}", responses={504: {}})
    async def put_thing(
        name: str, body: Thing, user: Annotated[Principal, Scope("cache:write")]
    ) -> Thing:
        return body

    @app.get("/things/{name}")
    async def get_thing(name: str, full: Annotated[bool, Query()] = False) -> Thing:
        return Thing(name=name)

    @app.post("/things/batch")
    async def batch(body: Thing) -> Thing:
        return body

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return {}

    app.dependency_overrides[current_principal] = lambda: ALICE
    return app


@pytest.fixture
async def client() -> Any:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://realm") as http:
        yield http


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    error: dict[str, Any] = body["error"]
    return error


# --- secrets and internals stay out of answers ------------------------------------------


async def test_a_store_that_does_not_answer_shows_no_url_nor_password(client, caplog):
    """High 1: StoreUnavailable(url=...) put the Redis URL, password and all, in
    the 503's details."""
    with caplog.at_level(logging.WARNING, logger="apps.errors"):
        answer = await client.get("/store", headers={"x-request-id": "req-store-1"})
    assert answer.status_code == 503
    error = error_of(answer)
    assert error["code"] == "store_unavailable"
    assert error["details"] == {}
    assert error["message"] == StoreUnavailable.summary()
    assert error["request_id"] == "req-store-1"
    assert PASSWORD not in answer.text and "127.0.0.1" not in answer.text
    # The details went to the log, under the same request id, the password masked.
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "req-store-1" in logged and "redis://:***@127.0.0.1:1/0" in logged
    assert PASSWORD not in logged


async def test_a_store_fault_shows_no_file_path(client):
    answer = await client.get("/sqlite")
    error = error_of(answer)
    assert answer.status_code == 503 and error["code"] == "store_unavailable"
    assert "/srv" not in answer.text and "sqlite" not in answer.text
    assert error["details"] == {}


async def test_an_unavailable_actor_shows_no_exception_text(client):
    answer = await client.get("/gone")
    error = error_of(answer)
    assert answer.status_code == 503 and error["code"] == "unavailable"
    assert error["message"] == Unavailable.summary() and error["details"] == {}
    assert "ActorDiedError" not in answer.text and "shard" not in answer.text


async def test_an_unexpected_error_answers_internal_and_is_logged_with_its_request_id(
    client, caplog
):
    with caplog.at_level(logging.ERROR, logger="apps.errors"):
        answer = await client.get("/boom", headers={"x-request-id": "req-boom"})
    assert answer.status_code == 500
    assert error_of(answer) == {
        "code": "internal",
        "message": "internal error",
        "details": {},
        "request_id": "req-boom",
    }
    assert PASSWORD not in answer.text and "/etc" not in answer.text
    (record,) = [r for r in caplog.records if "req-boom" in r.getMessage()]
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


async def test_a_client_error_keeps_its_message_and_details(client):
    answer = await client.get("/missing/k1")
    assert answer.status_code == 404
    error = error_of(answer)
    assert (error["code"], error["message"], error["details"]) == (
        "not_found",
        "no such key",
        {"key": "k1"},
    )


def test_a_fault_as_a_client_sees_it_in_any_frame_has_no_details():
    """``to_dict`` feeds WebSocket frames and results kept for users too."""
    fault = StoreUnavailable("redis: Error 111 connecting to 10.0.0.5:6379", url=DEAD_REDIS)
    assert fault.to_dict() == {
        "code": "store_unavailable",
        "message": StoreUnavailable.summary(),
        "details": {},
    }
    refused = Conflict("busy", pool="p")
    assert refused.to_dict() == {"code": "conflict", "message": "busy", "details": {"pool": "p"}}


def test_a_default_message_is_the_whole_first_paragraph_and_the_root_says_internal():
    assert LimitReached().message.endswith("delete one first, or ask for a higher limit.")
    assert RealmError().message == "internal error"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@10.0.0.1:6379/0", "redis://:***@10.0.0.1:6379/0"),
        ("rediss://realm:pw@redis.internal/2", "rediss://realm:***@redis.internal/2"),
        ("redis://[::1]:6380/0?password=pw", "redis://[::1]:6380/0"),
        ("unix:///run/redis.sock?password=pw&db=1", "unix:///run/redis.sock"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_a_store_url_is_shown_without_its_password(url, shown):
    assert redacted(url) == shown
    assert "pw" not in repr(RedisStore(url)) or "pw" in shown


# --- request ids --------------------------------------------------------------------


async def test_the_request_id_is_serves_or_a_new_one(client):
    given = await client.get("/missing/a", headers={"x-request-id": "9f0c-41:ab.c_d"})
    assert error_of(given)["request_id"] == "9f0c-41:ab.c_d"
    # A client may send anything: what is not a plain token is not used (nor logged).
    odd = await client.get("/missing/a", headers={"x-request-id": "a b<script>" + "x" * 300})
    made = error_of(odd)["request_id"]
    assert made.isalnum() and len(made) == 32
    none = await client.get("/missing/a")
    assert error_of(none)["request_id"] != made


async def test_an_envelope_made_before_the_routes_names_the_requests_id(client):
    """The body limit answers before any route, with the request's id all the same."""
    big = {"content-length": str(Settings().max_body_bytes + 1), "x-request-id": "req-big"}
    answer = await client.post("/things/batch", content=b"{}", headers=big)
    assert answer.status_code == 413
    assert error_of(answer)["request_id"] == "req-big"


def test_no_envelope_shows_a_faults_own_words_whoever_makes_it():
    answer = envelope(503, "store_unavailable", f"redis: {DEAD_REDIS}", {"url": DEAD_REDIS})
    assert PASSWORD.encode() not in answer.body and b"redis:" not in answer.body
    assert StoreUnavailable.summary().encode() in answer.body


def test_an_envelope_made_outside_a_request_has_a_request_id():
    answer = envelope(413, "too_large", "request body is over 10 bytes", {"limit": 10})
    assert answer.body.startswith(b'{"error":{"code":"too_large"')
    assert b'"request_id":"' in answer.body


# --- 405 and Allow ------------------------------------------------------------------


async def test_a_405_allows_every_method_of_the_path(client):
    answer = await client.request("DELETE", "/things/t1")
    assert answer.status_code == 405 and error_of(answer)["code"] == "method_not_allowed"
    assert answer.headers["allow"] == "GET, PUT"


async def test_a_405_on_a_concrete_path_allows_its_own_methods_only(client):
    """As OpenAPI reads paths: ``/things/batch`` before ``/things/{name}``."""
    answer = await client.request("OPTIONS", "/things/batch")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"


async def test_a_body_that_does_not_decode_is_a_400_and_broken_json_a_422(client):
    json = {"content-type": "application/json"}
    not_text = await client.post("/things/batch", content=b"\xff{", headers=json)
    assert not_text.status_code == 400 and error_of(not_text)["code"] == "bad_request"
    broken = await client.post("/things/batch", content=b"{", headers=json)
    assert broken.status_code == 422 and error_of(broken)["code"] == "invalid_input"


# --- OpenAPI ------------------------------------------------------------------------


def test_every_route_documents_every_status_it_can_answer_in_the_envelope():
    schema = make_app().openapi()
    paths = schema["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    anywhere = {"404", "409", "413", "429", "500", "503"}
    assert statuses("/stats", "get") == {"200"} | anywhere
    assert statuses("/missing/{key}", "get") == {"200", "422"} | anywhere
    assert statuses("/things/batch", "post") == {"200", "400", "422"} | anywhere
    # A signed-in route can answer 401 and 403, and keeps what it declares.
    signed_in = {"200", "400", "401", "403", "422", "504"}
    assert statuses("/things/{name}", "put") == signed_in | anywhere
    envelope_ref = {"$ref": f"#/components/schemas/{ENVELOPE_SCHEMA_NAME}"}
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == envelope_ref, (
                        path,
                        method,
                        status,
                    )
                    assert response["description"]
    put = paths["/things/{name}"]["put"]
    assert put["security"] == [{"bearer": []}]
    assert put["responses"]["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert "security" not in paths["/stats"]["get"]
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
    }
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components and "ValidationError" not in components
    error = components[ENVELOPE_SCHEMA_NAME]["properties"]["error"]
    assert error["required"] == ["code", "message", "details", "request_id"]


def test_the_codes_of_a_status_are_listed_in_its_description():
    responses = make_app().openapi()["paths"]["/missing/{key}"]["get"]["responses"]
    assert "`not_found`" in responses["404"]["description"]
    assert "`internal`" in responses["500"]["description"]
    assert "`store_unavailable`" in responses["503"]["description"]
