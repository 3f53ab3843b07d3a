"""The cache over real HTTP, through Serve's ingress, as a user calls it.

Every route needs a principal; each user's keys are their own.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import admin_headers, error_code, service_client, sign_up

SERVICE = "cache"  # of the `http` fixture
MiB = 1024 * 1024


async def test_every_route_needs_a_principal(base_url):
    async with service_client(base_url, SERVICE) as anonymous:
        for method, path, body in [
            ("GET", "/keys/a", None),
            ("PUT", "/keys/a", {"value": 1}),
            ("DELETE", "/keys/a", None),
            ("POST", "/mget", {"keys": ["a"]}),
            ("POST", "/mset", {"items": {"a": 1}}),
            ("POST", "/incr", {"key": "a"}),
            ("POST", "/expire/a", {"ttl_s": 5}),
            ("GET", "/ttl/a", None),
            ("GET", "/stats", None),
        ]:
            answer = await anonymous.request(method, path, json=body)
            assert answer.status_code == 401, (method, path, answer.text)
            assert error_code(answer) == "unauthorized"


async def test_each_user_has_a_keyspace_of_their_own(http, base_url):
    await http.put("/keys/profile", json={"value": {"name": "ada"}})
    async with service_client(base_url, SERVICE, await sign_up(base_url)) as other:
        assert (await other.get("/keys/profile")).status_code == 404
        assert (await other.post("/mget", json={"keys": ["profile"]})).json()["missing"] == [
            "profile"
        ]
        assert (await other.delete("/keys/profile")).json()["deleted"] is False
        await other.put("/keys/profile", json={"value": {"name": "bob"}})
        assert (await other.get("/keys/profile")).json()["value"] == {"name": "bob"}
    # the near cache of the replica keeps each user's copy apart too
    assert (await http.get("/keys/profile")).json()["value"] == {"name": "ada"}


async def test_an_api_key_acts_in_its_users_keyspace_with_its_scopes(
    http, base_url, api_key, user_headers
):
    await http.put("/keys/shared-with-my-key", json={"value": 42})
    async with service_client(
        base_url, SERVICE, await api_key(["cache:read"], owner=user_headers)
    ) as reader:
        assert (await reader.get("/keys/shared-with-my-key")).json()["value"] == 42
        refused = await reader.put("/keys/shared-with-my-key", json={"value": 0})
        assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert (await http.get("/keys/shared-with-my-key")).json()["value"] == 42


async def test_put_get_delete(http):
    document = {"name": "ada", "tags": ["x", "y"], "n": 1.5, "ok": True, "none": None}
    put = await http.put("/keys/user:1", json={"value": document})
    assert put.status_code == 200 and put.json() == {"key": "user:1", "stored": True}
    got = await http.get("/keys/user:1")
    assert got.status_code == 200 and got.json() == {"key": "user:1", "value": document}
    deleted = await http.delete("/keys/user:1")
    assert deleted.json() == {"key": "user:1", "deleted": True}
    missing = await http.get("/keys/user:1")
    assert missing.status_code == 404 and error_code(missing) == "key_not_found"
    again = await http.delete("/keys/user:1")
    assert again.json() == {"key": "user:1", "deleted": False}


async def test_keys_may_hold_slashes_and_unicode(http):
    for key in ("a/b/c", "ключ", "with space"):
        assert (await http.put(f"/keys/{key}", json={"value": key})).status_code == 200
        assert (await http.get(f"/keys/{key}")).json()["value"] == key


async def test_a_write_is_seen_at_once_by_the_next_read(http):
    # The ingress keeps a near cache: a hot key must still never read stale.
    for i in range(30):
        await http.put("/keys/hot", json={"value": i})
        assert (await http.get("/keys/hot")).json()["value"] == i
        assert (await http.get("/keys/hot")).json()["value"] == i


async def test_mset_and_mget(http):
    items = {f"batch:{i}": {"i": i} for i in range(50)}
    stored = await http.post("/mset", json={"items": items})
    assert stored.json() == {"stored": 50}
    got = await http.post("/mget", json={"keys": [*items, "batch:none"]})
    assert got.json() == {"values": items, "missing": ["batch:none"]}


async def test_incr_and_decr(http):
    assert (await http.post("/incr", json={"key": "hits"})).json() == {"key": "hits", "value": 1}
    assert (await http.post("/incr", json={"key": "hits", "by": 10})).json()["value"] == 11
    assert (await http.post("/incr", json={"key": "hits", "by": -4})).json()["value"] == 7
    assert (await http.get("/keys/hits")).json()["value"] == 7
    await http.put("/keys/text", json={"value": "seven"})
    refused = await http.post("/incr", json={"key": "text"})
    assert refused.status_code == 409 and error_code(refused) == "not_an_integer"
    assert (await http.get("/keys/text")).json()["value"] == "seven"


async def test_ttl_and_expire(http):
    await http.put("/keys/session", json={"value": 1, "ttl_s": 300})
    ttl = (await http.get("/ttl/session")).json()
    assert ttl["exists"] and 0 < ttl["ttl_s"] <= 300
    await http.post("/expire/session", json={"ttl_s": None})
    assert (await http.get("/ttl/session")).json() == {
        "key": "session",
        "exists": True,
        "ttl_s": None,
    }
    assert (await http.get("/ttl/nothing")).json()["exists"] is False
    gone = await http.post("/expire/nothing", json={"ttl_s": 5})
    assert gone.status_code == 404 and error_code(gone) == "key_not_found"


async def test_stats_count_what_happened(http, base_url):
    before = (await http.get("/stats")).json()
    await http.put("/keys/stats:a", json={"value": "x"})
    await http.get("/keys/stats:missing")
    after = (await http.get("/stats")).json()
    assert after["usage"]["entries"] == before["usage"]["entries"] + 1
    assert len(after["usage"]["shards"]) == 4
    assert after["shards"] is None  # a user sees their own usage only

    async with service_client(base_url, SERVICE, await admin_headers(base_url)) as admin:
        everything = (await admin.get("/stats")).json()
    assert len(everything["shards"]) == 4
    assert everything["total"]["entries"] == sum(s["entries"] for s in everything["shards"])
    assert everything["total"]["entries"] >= after["usage"]["entries"]


async def test_openapi_docs_are_served(http):
    assert (await http.get("/docs")).status_code == 200
    spec = (await http.get("/openapi.json")).json()
    assert "/keys/{key}" in spec["paths"]
    assert spec["info"]["title"] == "Realm cache"


# --- bad input: a clear 4xx, never a 500, and nothing changes ------------


async def test_a_key_over_1_kib_is_refused(http):
    response = await http.put("/keys/" + "k" * 1025, json={"value": 1})
    assert response.status_code == 422 and error_code(response) == "key_too_long"
    assert response.json()["error"]["details"] == {"size": 1025, "limit": 1024}


async def test_a_value_over_1_mib_is_refused_and_nothing_is_stored(http):
    response = await http.put("/keys/big", json={"value": "x" * (MiB + 1)})
    assert response.status_code == 413 and error_code(response) == "value_too_large"
    assert (await http.get("/keys/big")).status_code == 404


async def test_a_body_over_the_limit_is_refused(http):
    response = await http.put("/keys/huge", content=b"x" * (4 * MiB))
    assert response.status_code == 413 and error_code(response) == "too_large"


async def test_a_streamed_body_over_the_limit_is_refused(http):
    async def chunks():
        for _ in range(4):
            yield b"x" * MiB

    response = await http.put("/keys/streamed", content=chunks())
    assert response.status_code == 413 and error_code(response) == "too_large"


async def test_a_batch_over_1000_keys_is_refused_and_nothing_is_stored(http):
    items = {f"many:{i}": i for i in range(1001)}
    response = await http.post("/mset", json={"items": items})
    assert response.status_code == 413 and error_code(response) == "batch_too_large"
    assert (await http.post("/mget", json={"keys": ["many:0"]})).json()["missing"] == ["many:0"]
    too_many = await http.post("/mget", json={"keys": list(items)})
    assert too_many.status_code == 413 and error_code(too_many) == "batch_too_large"


async def test_one_bad_item_refuses_the_whole_batch(http):
    items = {"ok:1": 1, "ok:2": 2, "bad" + "k" * 1100: 3}
    response = await http.post("/mset", json={"items": items})
    assert response.status_code == 422 and error_code(response) == "key_too_long"
    got = await http.post("/mget", json={"keys": ["ok:1", "ok:2"]})
    assert got.json()["values"] == {}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/keys/a", b"{not json"),
        ("PUT", "/keys/a", b'{"ttl_s": 5}'),
        ("PUT", "/keys/a", b'{"value": 1, "ttl_s": -1}'),
        ("PUT", "/keys/a", b'{"value": 1, "ttl_s": "soon"}'),
        ("POST", "/mget", b'{"keys": "a"}'),
        ("POST", "/incr", b'{"key": "a", "by": 1.5}'),
        ("POST", "/incr", b'{"key": "a", "by": false}'),
        ("POST", "/incr", b'{"key": "a", "by": "2"}'),
        ("PUT", "/keys/a", b'{"value": 1, "ttl_s": true}'),
        ("PUT", "/keys/a", b'{"value": 1, "unknown": 2}'),
        ("POST", "/mset", b'{"items": [1, 2]}'),
    ],
)
async def test_malformed_input_is_422(http, method, path, body):
    response = await http.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert error_code(response) == "invalid_input"
    assert response.json()["error"]["details"]["problems"]
    assert (await http.get("/keys/a")).status_code == 404


async def test_unknown_routes_and_methods_use_the_envelope(http):
    missing = await http.get("/nowhere")
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    wrong = await http.patch("/keys/a", json={"value": 1})
    assert wrong.status_code == 405 and error_code(wrong) == "method_not_allowed"
