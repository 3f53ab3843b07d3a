"""AuthClient under races, without Ray: the client's actor refs are replaced by
local UserStore / SessionStore instances on one SQLite file."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.auth.client import AuthClient
from actors.auth.errors import InvalidCredentials, TooManyAttempts
from actors.auth.sessions import SessionStore
from actors.auth.users import UserStore
from actors.runtime.clock import FakeClock
from actors.runtime.errors import Forbidden, Unauthorized
from actors.runtime.settings import Settings
from actors.runtime.store import SQLiteStore

PASSWORD = "correct horse battery"


class LocalRef:
    """Stands in for an ActorRef: calls the plain object in this process."""

    def __init__(self, target: Any, name: str) -> None:
        self.target, self.name = target, name

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.target, method)(*args, **kwargs)


async def local_client(tmp_path, **overrides: Any) -> AuthClient:
    settings = Settings(
        data_dir=tmp_path,
        auth_argon2_memory_kib=64,
        auth_argon2_time_cost=1,
        auth_session_shards=1,
        **overrides,
    )
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "auth.sqlite3")
    users, shard = UserStore(settings, clock=clock), SessionStore(settings, clock=clock)
    await users.open(store, "users", on_failure=lambda e: None)
    await shard.open(store, "s0", on_failure=lambda e: None)
    client = AuthClient(settings, clock=clock)
    client.users = LocalRef(users, "users")  # type: ignore[assignment]
    client.shards.refs = [LocalRef(shard, "s0")]  # type: ignore[list-item]
    client.near.owners = client.shards.refs  # type: ignore[assignment]
    return client


async def test_parallel_guesses_cannot_slip_past_throttling(tmp_path):
    client = await local_client(tmp_path, auth_max_failures=3, auth_lockout_s=900)
    await client.register("ada", PASSWORD)
    guesses = [client.login("ada", f"guess-{i:04d}") for i in range(50)]
    results = await asyncio.gather(*guesses, return_exceptions=True)
    checked = sum(isinstance(r, InvalidCredentials) for r in results)
    refused = sum(isinstance(r, TooManyAttempts) for r in results)
    # One failure already makes the next attempt wait auth_backoff_base_s, so at
    # most one guess should be checked before the backoff; here every guess is.
    assert checked <= 1, f"{checked} passwords checked, {refused} refused by throttling"


async def test_a_login_racing_a_disable_leaves_no_live_session(tmp_path, monkeypatch):
    client = await local_client(tmp_path)
    ada = await client.register("ada", PASSWORD)
    verifying, release = asyncio.Event(), asyncio.Event()
    real_verify = client._verify

    async def slow_verify(password_hash: str, password: str) -> bool:
        good = await real_verify(password_hash, password)
        verifying.set()
        await release.wait()
        return good

    monkeypatch.setattr(client, "_verify", slow_verify)
    login = asyncio.ensure_future(client.login("ada", PASSWORD))
    await verifying.wait()  # credentials read: not disabled yet
    await client.set_disabled(ada["id"], True)  # disable acknowledged, sessions ended
    release.set()
    try:
        answer = await login
    except Forbidden:
        return  # what should happen
    # Had the login answered with a token, the token must not work:
    with pytest.raises(Unauthorized):
        await client.authenticate(answer["token"])


async def test_old_failures_age_out(tmp_path):
    settings = Settings(data_dir=tmp_path, auth_max_failures=3, auth_lockout_s=900)
    clock = FakeClock()
    users = UserStore(settings, clock=clock)
    # Three typos by different people behind one office address, a week apart
    for name in ("ann", "ben", "cat"):
        await users.login_failed(name, "10.0.0.1")
        clock.advance(7 * 86400)
    # A month later, one more typo locks the whole address out for the lockout
    clock.advance(30 * 86400)
    wait = await users.login_failed("dan", "10.0.0.1")
    assert wait < 900, f"a single failure after a month of quiet locks the address for {wait}s"


async def test_concurrent_logins_share_actor_calls_and_each_gets_its_session(tmp_path):
    client = await local_client(tmp_path)
    names = [f"user{i}" for i in range(4)]
    for name in names:
        await client.register(name, PASSWORD)
    logins = await asyncio.gather(*(client.login(name, PASSWORD) for name in names))
    # Steps of logins in flight together went in fewer calls than steps.
    assert client._login_steps.calls < client._login_steps.requests == 2 * len(names)
    # Their sessions are created after argon2, whose threads end at different
    # moments: whether those creates overlap is timing, so only their count is checked.
    assert client._creates[0].requests == len(names)
    for name, login in zip(names, logins, strict=True):
        assert (await client.authenticate(login["token"])).username == name
    # Each attempt was undone by its finish step: every account may log in again at once.
    again = await asyncio.gather(*(client.login(name, PASSWORD) for name in names))
    assert len({login["session"]["id"] for login in [*logins, *again]}) == 2 * len(names)
