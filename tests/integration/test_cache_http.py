"""The cache over real HTTP, through Serve's ingress, as a user calls it."""

from __future__ import annotations

import pytest

from tests.integration.conftest import error_code

SERVICE = "cache"  # of the `http` fixture
SIGNED_IN = False  # the cache asks for no sign-in
MiB = 1024 * 1024


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


async def test_stats_count_what_happened(http):
    before = (await http.get("/stats")).json()
    await http.put("/keys/stats:a", json={"value": "x"})
    await http.get("/keys/stats:missing")
    after = (await http.get("/stats")).json()
    assert len(after["shards"]) == 4
    assert after["total"]["sets"] == before["total"]["sets"] + 1
    assert after["total"]["misses"] == before["total"]["misses"] + 1
    assert after["total"]["entries"] == sum(s["entries"] for s in after["shards"])


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
