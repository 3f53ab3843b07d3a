"""The auth client against real UserStore and SessionStore actors.

Sessions are durable (they survive killed actors, on both stores), and a
revocation acknowledged anywhere is seen at once by every client's near cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import ray

from actors.auth.client import AuthClient
from actors.auth.errors import UsernameTaken
from actors.auth.sessions import SESSIONS_PREFIX
from actors.auth.users import USERS_NAME
from actors.runtime.errors import Forbidden, Unauthorized
from actors.runtime.settings import Settings
from actors.runtime.shards import shard_names
from actors.runtime.store import open_store
from actors.runtime.supervision import ActorRef
from tests.integration.conftest import ON_SQLITE

PASSWORD = "correct horse battery"
#: Cheap argon2 and a short lease: these tests are about state, not cost.
FAST: dict[str, Any] = {
    "auth_argon2_memory_kib": 64,
    "auth_argon2_time_cost": 1,
    "auth_session_lease_s": 1.0,
    "auth_session_shards": 3,
}


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[Settings], AuthClient]]:
    made: list[AuthClient] = []

    def make(settings: Settings) -> AuthClient:
        client = AuthClient(settings)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def started(client: AuthClient) -> AuthClient:
    await client.start()
    return client


async def restarts(settings: Settings, ref: ActorRef) -> int:
    """How often the actor behind ``ref`` has restarted, as it reported to the store."""
    store = open_store(settings, ref.name)
    try:
        return await store.incr(f"restarts:{ref.name}:{ref.handle._actor_id.hex()}", 0)
    finally:
        await store.close()


async def test_sessions_and_accounts_survive_killed_actors(ray_settings, clients):
    # Given users with live sessions, on stores that snapshot often (so
    # recovery uses snapshot + replay)
    settings = ray_settings(snapshot_every=3, **FAST, **ON_SQLITE)
    client = await started(clients(settings))
    names = [f"user{i}" for i in range(6)]
    for name in names:
        await client.register(name, PASSWORD)
    logged_in = [await client.login(name, PASSWORD) for name in names]
    ended = logged_in.pop()
    await client.logout(await client.authenticate(ended["token"]))
    principals = [await client.authenticate(answer["token"]) for answer in logged_in]

    # When the user store and every session shard are killed (Ray restarts them)
    refs = [client.users, *client.shards]
    for ref in refs:
        ray.kill(ref.handle, no_restart=False)

    # Then the users can still log in, and every earlier token still authenticates,
    # through this client and through a new one with nothing cached
    fresh = await started(clients(settings))
    for name in names:
        assert (await fresh.login(name, PASSWORD))["user"]["username"] == name
    for answer, principal in zip(logged_in, principals, strict=True):
        assert await client.authenticate(answer["token"]) == principal
        assert await fresh.authenticate(answer["token"]) == principal
    # And the logged-out session stays ended
    for checker in (client, fresh):
        with pytest.raises(Unauthorized):
            await checker.authenticate(ended["token"])
    # And each actor really was restarted
    assert [ref.name for ref in refs] == [USERS_NAME, *shard_names(SESSIONS_PREFIX, 3)]
    assert [await restarts(settings, ref) for ref in refs] == [1] * len(refs)


async def test_a_logout_reaches_another_clients_near_cache_at_once(ray_settings, clients):
    # Given two clients (say two ingress replicas), and A holding a session near
    settings = ray_settings(**FAST)
    a, b = await started(clients(settings)), await started(clients(settings))
    await a.register("ada", PASSWORD)
    for _ in range(10):
        token = (await b.login("ada", PASSWORD))["token"]
        principal = await a.authenticate(token)
        assert await a.authenticate(token) == principal  # served from A's near cache
        # When B logs the session out
        await b.logout(await b.authenticate(token))
        # Then the very next check on A refuses it
        with pytest.raises(Unauthorized):
            await a.authenticate(token)
    assert a.near.hits >= 10


async def test_disabling_a_user_ends_their_sessions_everywhere_at_once(ray_settings, clients):
    settings = ray_settings(**FAST)
    admin, a, b = [await started(clients(settings)) for _ in range(3)]
    ada = await admin.register("ada", PASSWORD)
    await admin.register("bob", PASSWORD)
    # Given ada logged in several times (sessions on several shards: a session's
    # shard follows its random id, so six logins may all land on one), held by
    # two clients
    tokens: list[str] = []
    while len(tokens) < 6 or len({a.shards.index(t.partition(".")[0]) for t in tokens}) < 2:
        assert len(tokens) < 30, "every session landed on one shard"
        tokens.append((await admin.login("ada", PASSWORD))["token"])
    bobs = (await admin.login("bob", PASSWORD))["token"]
    for client in (a, b):
        for token in [*tokens, bobs]:
            await client.authenticate(token)
            await client.authenticate(token)
    assert a.near.hits >= len(tokens) + 1

    # When an admin disables ada
    assert (await admin.set_disabled(ada["id"], True))["disabled"] is True

    # Then no client accepts any of her tokens, and she cannot log in
    for client in (a, b):
        for token in tokens:
            with pytest.raises(Unauthorized):
                await client.authenticate(token)
        assert (await client.authenticate(bobs)).username == "bob"
    with pytest.raises(Forbidden):
        await a.login("ada", PASSWORD)
    assert await admin.sessions(ada["id"]) == []

    # And enabling her again lets her log in, without reviving the old sessions
    await admin.set_disabled(ada["id"], False)
    token = (await a.login("ada", PASSWORD))["token"]
    assert (await b.authenticate(token)).user_id == ada["id"]
    with pytest.raises(Unauthorized):
        await b.authenticate(tokens[0])


USERS = 40
#: Logins that return before the kill: a session of one of them is on the
#: killed shard but for a chance of (2/3)**20, 3e-4.
KILL_AFTER_LOGINS = 20
#: Logins started after those, before the kill (the last one is in flight).
STARTED_BEFORE_KILL = 5


async def test_every_login_that_returned_survives_a_shard_kill(ray_settings, clients):
    # Given many users, on SQLite
    settings = ray_settings(**FAST, **ON_SQLITE)
    client = await started(clients(settings))
    names = [f"user{i}" for i in range(USERS)]
    await asyncio.gather(*(client.register(name, PASSWORD) for name in names))

    # When some log in, then the rest start one after another and a session
    # shard is killed right after one of them has sent its first call (so the
    # kill falls in the middle of logins by construction, not by timing)
    before = await asyncio.gather(*(client.login(n, PASSWORD) for n in names[:KILL_AFTER_LOGINS]))
    tasks: list[asyncio.Future[dict[str, Any]]] = []
    for name in names[KILL_AFTER_LOGINS:]:
        tasks.append(asyncio.ensure_future(client.login(name, PASSWORD)))
        await asyncio.sleep(0)  # the new login has sent its first call
        if len(tasks) == STARTED_BEFORE_KILL:
            ray.kill(client.shards[0].handle, no_restart=False)
        await asyncio.sleep(0.002)
    results = [*before, *await asyncio.gather(*tasks, return_exceptions=True)]

    # Then every login that returned a token authenticates afterwards
    logged_in = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, failed[:3]
    fresh = await started(clients(settings))
    for answer in logged_in:
        for checker in (client, fresh):
            principal = await checker.authenticate(answer["token"])
            assert principal.username == answer["user"]["username"]
    on_victim = [r for r in before if client.shards.index(r["session"]["id"]) == 0]
    assert on_victim, "no session acknowledged before the kill lives on the killed shard"
    assert await restarts(settings, client.shards[0]) == 1


async def test_api_keys_survive_killed_shards_and_a_revocation_reaches_every_client(
    ray_settings, clients
):
    # Given keys on several shards, held in two clients' near caches
    settings = ray_settings(**FAST, **ON_SQLITE)
    admin_client, a, b = [await started(clients(settings)) for _ in range(3)]
    await admin_client.ensure_admin("root", password=PASSWORD)
    admin = await admin_client.authenticate((await admin_client.login("root", PASSWORD))["token"])
    made = [await admin_client.create_api_key(admin, scopes=["cache:read"]) for _ in range(6)]
    assert len({a.shards.index(k["id"]) for k in made}) > 1
    for client in (a, b):
        for key in made:
            assert (await client.authenticate(key["key"])).session_id == key["id"]
            await client.authenticate(key["key"])
    assert a.near.hits >= len(made)

    # When every session shard is killed (Ray restarts them)
    for ref in admin_client.shards:
        ray.kill(ref.handle, no_restart=False)

    # Then every key still signs in, through a client with nothing cached too
    fresh = await started(clients(settings))
    for key in made:
        principal = await fresh.authenticate(key["key"])
        assert principal.scopes == frozenset({"cache:read"}) and principal.user_id == admin.user_id

    # And a key revoked through one client is refused by the others at once
    for key in made:
        await a.authenticate(key["key"])
        await admin_client.revoke_api_key(key["id"])
        for client in (a, b, fresh):
            with pytest.raises(Unauthorized):
                await client.authenticate(key["key"])


async def test_the_bootstrap_command_makes_the_admin_of_a_running_deployment(ray_settings, clients):
    from actors.auth.bootstrap import make_admin

    settings = ray_settings(**FAST, auth_admin_username="boss")
    client = await started(clients(settings))
    # Registering the admin's name is refused; the command makes the account
    with pytest.raises(UsernameTaken):
        await client.register("boss", PASSWORD)
    made = await make_admin(settings, "boss", PASSWORD)
    assert made["changed"] is True and "admin" in made["user"]["roles"]
    session = await client.login("boss", PASSWORD)
    assert (await client.authenticate(session["token"])).is_admin
    # Run again it changes nothing, unless told to reset the password (then sessions end)
    assert (await make_admin(settings, "boss", "another password"))["changed"] is False
    await client.login("boss", PASSWORD)
    assert (await make_admin(settings, "boss", "another password", reset=True))["changed"]
    with pytest.raises(Unauthorized):
        await client.authenticate(session["token"])
    await client.login("boss", "another password")
