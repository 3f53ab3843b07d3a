"""UserStore and SessionStore run directly (no Ray) on a FakeClock and a real SQLite store.

Recovery is a second instance opened on the same store and stream, as a
restarted actor would. Concurrency is driven with tasks and ``settle()``
yields; time moves only by ``clock.advance``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import pytest

from actors.auth.errors import InvalidResetToken, TooManyAttempts, UsernameTaken
from actors.auth.model import (
    ApiKey,
    Role,
    Session,
    User,
    hash_secret,
    key_ref,
    new_api_key,
    new_ticket,
    new_token,
    parse_api_key,
    parse_ticket,
    parse_token,
    secret_matches,
)
from actors.auth.sessions import SessionStore
from actors.auth.users import ADDRESS_LOCKOUT_FACTOR, UserStore
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput, RateLimited, Unauthorized
from actors.runtime.settings import Settings
from actors.runtime.store import SQLiteStore
from tests.unit.conftest import cancel, settle

BASE_S = 1.0
MAX_FAILURES = 3
LOCKOUT_S = 60.0
RESET_TTL_S = 300.0
LEASE_S = 2.0
IDLE_S = 10.0
ABSOLUTE_S = 25.0
SMALL = {
    "auth_backoff_base_s": BASE_S,
    "auth_max_failures": MAX_FAILURES,
    "auth_lockout_s": LOCKOUT_S,
    "auth_reset_token_ttl_s": RESET_TTL_S,
    "auth_session_lease_s": LEASE_S,
    "auth_admin_username": "Root",
    "auth_register_per_address": 3,
    "auth_reset_requests_per_address": 2,
    "auth_rate_window_s": 60.0,
}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**SMALL)


@pytest.fixture
def open_users(
    settings: Settings, clock: FakeClock, store: SQLiteStore
) -> Callable[..., Awaitable[UserStore]]:
    """A UserStore recovered from ``store`` (a second call is a restarted actor)."""

    async def open_(*, snapshot_every: int = 10_000) -> UserStore:
        users = UserStore(settings, clock=clock)
        failures: list[BaseException] = []
        await users.open(store, "users", snapshot_every=snapshot_every,
                         on_failure=failures.append)  # fmt: skip
        return users

    return open_


@pytest.fixture
async def users(open_users: Callable[..., Awaitable[UserStore]]) -> UserStore:
    return await open_users()


@pytest.fixture
def open_sessions(
    settings: Settings, clock: FakeClock, store: SQLiteStore
) -> Callable[..., Awaitable[SessionStore]]:
    async def open_(*, snapshot_every: int = 10_000) -> SessionStore:
        sessions = SessionStore(settings, clock=clock)
        failures: list[BaseException] = []
        await sessions.open(store, "sessions", snapshot_every=snapshot_every,
                            on_failure=failures.append)  # fmt: skip
        return sessions

    return open_


@pytest.fixture
async def sessions(open_sessions: Callable[..., Awaitable[SessionStore]]) -> SessionStore:
    return await open_sessions()


async def user_id(users: UserStore, username: str) -> str:
    account = await users.credentials(username)
    assert account is not None
    return str(account["id"])


# --- registration ------------------------------------------------------------


async def test_register_normalizes_usernames(users: UserStore) -> None:
    created = await users.register("  Ada.Lovelace ", "hash-1")
    assert created["username"] == "ada.lovelace"
    assert created["roles"] == [Role.USER.value]
    assert created["disabled"] is False
    for spelling in ("ada.lovelace", "ADA.LOVELACE", " Ada.Lovelace\t"):
        account = await users.credentials(spelling)
        assert account is not None and account["id"] == created["id"]
        assert account["password_hash"] == "hash-1"
    # Case folding, not just lower-casing: ß folds to ss.
    await users.register("Straße", "h")
    assert (await users.credentials("STRASSE")) is not None


@pytest.mark.parametrize("again", ["ada", "ADA", " ada ", "Ada"])
async def test_a_taken_username_is_refused_in_any_spelling(users: UserStore, again: str) -> None:
    await users.register("Ada", "hash-1")
    with pytest.raises(UsernameTaken):
        await users.register(again, "hash-2")
    assert (await users.list_users())["total"] == 1
    account = await users.credentials("ada")
    assert account is not None and account["password_hash"] == "hash-1"


@pytest.mark.parametrize("spelling", ["Root", " ROOT ", "root"])
async def test_registering_the_admin_name_is_refused_and_grants_nothing(
    users: UserStore, spelling: str
) -> None:
    # Before: the first to register the admin name became admin.
    with pytest.raises(UsernameTaken):
        await users.register(spelling, "h")
    assert await users.credentials("root") is None
    other = await users.register("rooted", "h")
    assert other["roles"] == [Role.USER.value]
    assert (await users.list_users())["total"] == 1


async def test_ensure_admin_makes_the_admin_once(users: UserStore) -> None:
    made = await users.ensure_admin(" Root ", "hash-1")
    assert made["changed"] is True
    assert made["user"]["username"] == "root"
    assert set(made["user"]["roles"]) == {Role.USER.value, Role.ADMIN.value}
    # Another replica starting: nothing changes, the password stays the admin's own.
    await users.set_password(made["user"]["id"], "changed-by-the-admin")
    again = await users.ensure_admin("root", "hash-2")
    assert again == {"user": made["user"], "changed": False}
    account = await users.credentials("root")
    assert account is not None and account["password_hash"] == "changed-by-the-admin"
    # Unless the operator resets it.
    reset = await users.ensure_admin("root", "hash-3", reset=True)
    assert reset["changed"] is True and reset["user"]["id"] == made["user"]["id"]
    account = await users.credentials("root")
    assert account is not None and account["password_hash"] == "hash-3"
    assert (await users.list_users())["total"] == 1


async def test_ensure_admin_takes_the_name_over_from_a_plain_account(
    users: UserStore, clock: FakeClock
) -> None:
    # Given an account that holds the admin name without the role (registered
    # before the name was reserved), with a reset token outstanding and disabled
    squatter = User("a" * 16, "root", "squatters-hash", [Role.USER.value], clock.time())
    await users.execute("create_user", user=squatter)
    token = await users.create_reset("root")
    await users.set_disabled(squatter.id, True)
    # When the operator's password arrives
    taken = await users.ensure_admin("root", "operators-hash")
    # Then the account is the admin's, enabled, with the operator's password only
    assert taken["changed"] is True
    assert taken["user"]["roles"] == [Role.USER.value, Role.ADMIN.value]
    assert taken["user"]["disabled"] is False
    account = await users.credentials("root")
    assert account is not None and account["password_hash"] == "operators-hash"
    assert token is not None
    with pytest.raises(InvalidResetToken):
        await users.use_reset(token, "squatters-new-hash")


async def test_nobody_is_admin_without_a_configured_admin_name(
    make_settings: Callable[..., Settings], clock: FakeClock, store: SQLiteStore
) -> None:
    users = UserStore(make_settings(auth_admin_username=""), clock=clock)
    await users.open(store, "users", on_failure=lambda error: None)
    for name in ("root", "admin"):
        assert (await users.register(name, "h"))["roles"] == [Role.USER.value]


async def test_a_repeated_register_key_returns_the_first_answer(users: UserStore) -> None:
    first = await users.register("ada", "hash-1", key="k1")
    again = await users.register("ada", "hash-2", key="k1")
    assert again == first
    assert (await users.list_users())["total"] == 1
    account = await users.credentials("ada")
    assert account is not None and account["password_hash"] == "hash-1"
    # A different key is a different request: the name is taken.
    with pytest.raises(UsernameTaken):
        await users.register("ada", "hash-2", key="k2")


async def test_concurrent_registers_with_one_key_create_one_user(users: UserStore) -> None:
    answers = await asyncio.gather(*(users.register("ada", "h", key="same") for _ in range(5)))
    assert all(answer == answers[0] for answer in answers)
    assert (await users.list_users())["total"] == 1


async def test_list_users_pages_in_creation_order(users: UserStore, clock: FakeClock) -> None:
    for name in ("c", "a", "b"):
        await users.register(name, "h")
        clock.advance(1)
    listed = await users.list_users(offset=1, limit=1)
    assert listed["total"] == 3
    assert [u["username"] for u in listed["users"]] == ["a"]
    assert "password_hash" not in listed["users"][0]


# --- recovery ----------------------------------------------------------------


async def everything(users: UserStore) -> dict[str, Any]:
    """What a user store answers about its accounts, including the hashes."""
    listed = await users.list_users()
    return {u["username"]: await users.credentials(u["username"]) for u in listed["users"]}


@pytest.mark.parametrize("snapshot_every", [10_000, 3], ids=["replay", "snapshot+replay"])
async def test_a_reopened_store_has_the_same_accounts(
    open_users: Callable[..., Awaitable[UserStore]], clock: FakeClock, snapshot_every: int
) -> None:
    # Given accounts with changed passwords, a disabled flag and reset tokens
    users = await open_users(snapshot_every=snapshot_every)
    for name in ("ada", "bob", "cy", "dee", "eve"):
        await users.register(name, f"hash-{name}", key=f"reg-{name}")
        clock.advance(1)
    bob, cy = await user_id(users, "bob"), await user_id(users, "cy")
    await users.set_password(bob, "hash-bob-2")
    await users.set_disabled(cy, True)
    used = await users.create_reset("dee")
    await users.use_reset(used, "hash-dee-2")
    outstanding = await users.create_reset("eve")
    assert outstanding is not None and used is not None
    if snapshot_every < 10_000:
        assert users._snapshot_task is not None
        await users._snapshot_task
        snapshot = await users.journal.store.read_snapshot("users")
        assert snapshot is not None and snapshot[0] > 0
    before = await everything(users)

    # When the actor restarts (a new instance recovers from the same stream)
    again = await open_users(snapshot_every=snapshot_every)

    # Then its state is the same, record for record
    assert again.state == users.state
    # And it answers the same accounts, hashes and flags
    assert await everything(again) == before
    assert before["bob"]["password_hash"] == "hash-bob-2"
    assert before["cy"]["disabled"] is True
    assert before["dee"]["password_hash"] == "hash-dee-2"
    # And reset tokens: the used one stays used, the outstanding one still works
    with pytest.raises(InvalidResetToken):
        await again.use_reset(used, "hash-x")
    assert await again.use_reset(outstanding, "hash-eve-2") == await user_id(again, "eve")
    # And idempotency keys: a retried register answers as the first time did
    first = {
        k: v for k, v in before["ada"].items() if k not in ("password_hash", "password_changed_at")
    }
    assert await again.register("ada", "other", key="reg-ada") == first


async def test_throttling_is_forgiven_by_a_restart(
    open_users: Callable[..., Awaitable[UserStore]],
) -> None:
    users = await open_users()
    await users.login_failed("ada", "10.0.0.1")
    with pytest.raises(TooManyAttempts):
        await users.check_throttle("ada", "10.0.0.1")
    again = await open_users()
    await again.check_throttle("ada", "10.0.0.1")


# --- throttling --------------------------------------------------------------


async def retry_after(users: UserStore, username: str, address: str = "") -> float:
    """How long ``check_throttle`` makes the next attempt wait (0 if it lets it in)."""
    try:
        await users.check_throttle(username, address)
    except TooManyAttempts as error:
        return float(error.details["retry_after_s"])
    return 0.0


async def test_failures_back_off_exponentially_then_lock_out(
    users: UserStore, clock: FakeClock
) -> None:
    assert await retry_after(users, "ada") == 0.0
    expected = [BASE_S, 2 * BASE_S, LOCKOUT_S]  # MAX_FAILURES == 3
    for wait in expected:
        assert await users.login_failed("ada") == pytest.approx(wait)
        assert await retry_after(users, "ada") == pytest.approx(wait)
        clock.advance(wait / 2)
        assert await retry_after(users, "ada") == pytest.approx(wait / 2)
        clock.advance(wait / 2 - 0.01)
        assert await retry_after(users, "ada") == pytest.approx(0.01)
        clock.advance(0.01)
        assert await retry_after(users, "ada") == 0.0


async def test_a_refusal_carries_its_retry_after(users: UserStore, clock: FakeClock) -> None:
    await users.login_failed("ada")
    with pytest.raises(TooManyAttempts) as refused:
        await users.check_throttle("ada")
    assert refused.value.details == {"retry_after_s": pytest.approx(BASE_S)}
    assert refused.value.status == 429
    clock.advance(BASE_S)
    await users.check_throttle("ada")


async def test_throttling_is_per_normalized_username(users: UserStore) -> None:
    await users.login_failed("  Ada ")
    assert await retry_after(users, "ADA") == pytest.approx(BASE_S)
    assert await retry_after(users, "bob") == 0.0


async def test_throttling_is_the_same_whether_or_not_the_account_exists(
    users: UserStore, clock: FakeClock
) -> None:
    await users.register("ada", "h")
    seen: dict[str, list[float]] = {"ada": [], "nobody": []}
    for name, waits in seen.items():
        for _ in range(MAX_FAILURES + 1):
            waits.append(await users.login_failed(name))
            waits.append(await retry_after(users, name))
            clock.advance(1.5)
            waits.append(await retry_after(users, name))
        clock.advance(LOCKOUT_S)
    assert seen["ada"] == pytest.approx(seen["nobody"])
    assert seen["ada"][:2] == pytest.approx([BASE_S, BASE_S])


async def test_an_address_is_slowed_only_past_its_grace_then_locked(
    users: UserStore, clock: FakeClock
) -> None:
    # Given as many failures from one address as one name may have, over names
    for name in ("a", "b", "c")[:MAX_FAILURES]:
        await users.login_failed(name, "10.0.0.1")
        clock.advance(4 * BASE_S)  # past each name's own backoff
    # Then another name from there is not slowed yet (people share addresses)
    assert await retry_after(users, "zed", "10.0.0.1") == 0.0
    # And each further failure from it doubles the wait, for every name there
    assert await users.login_failed("zed", "10.0.0.1") == BASE_S
    assert await retry_after(users, "yves", "10.0.0.1") == pytest.approx(BASE_S)
    assert await retry_after(users, "yves", "10.0.0.2") == 0.0
    # And at four times the name limit the address is locked out
    for n in range(MAX_FAILURES + 2, ADDRESS_LOCKOUT_FACTOR * MAX_FAILURES + 1):
        clock.advance(LOCKOUT_S / 10)
        await users.login_failed(f"n{n}", "10.0.0.1")
    assert await retry_after(users, "yves", "10.0.0.1") == pytest.approx(LOCKOUT_S)


async def test_a_check_waits_for_the_longer_of_name_and_address(
    users: UserStore, clock: FakeClock
) -> None:
    for _ in range(MAX_FAILURES):
        await users.login_failed("ada", "10.0.0.9")
        clock.advance(2 * BASE_S)
    await users.login_failed("bob", "10.0.0.1")
    assert await retry_after(users, "ada", "10.0.0.1") == pytest.approx(LOCKOUT_S - 2 * BASE_S)
    assert await retry_after(users, "bob", "10.0.0.9") == pytest.approx(BASE_S)


async def test_failures_are_forgotten_after_a_quiet_lockout_window(
    users: UserStore, clock: FakeClock
) -> None:
    for _ in range(MAX_FAILURES - 1):
        await users.login_failed("ada", "10.0.0.1")
    clock.advance(LOCKOUT_S + 1)
    # One more typo long after: it counts as the first again, not a lockout.
    assert await users.login_failed("ada", "10.0.0.1") == BASE_S


async def test_a_begun_login_counts_until_it_finishes(users: UserStore) -> None:
    await users.register("ada", "hash", key="r")
    account = await users.begin_login("ada", "10.0.0.1")
    assert account is not None
    # A parallel guess is refused while the first attempt is in flight.
    with pytest.raises(TooManyAttempts):
        await users.begin_login("ada", "10.0.0.1")
    state = await users.finish_login("ada", "10.0.0.1", account["id"])
    assert state == {"disabled": False, "password_changed_at": 0.0}
    assert await retry_after(users, "ada", "10.0.0.1") == 0.0


async def test_login_steps_in_one_call_act_in_order_and_answer_each(users: UserStore) -> None:
    await users.register("ada", "hash", key="r")
    [(began, account), (refused, error), (unknown, nobody)] = await users.login_steps(
        [("begin", "ada", "10.0.0.1"), ("begin", "ada", "10.0.0.2"), ("begin", "bob", "")]
    )
    # The second begin sees the first counted: each step saw the ones before it.
    assert began and account is not None and account["username"] == "ada"
    assert not refused and isinstance(error, TooManyAttempts)
    assert unknown and nobody is None
    [(finished, state), (_, again)] = await users.login_steps(
        [("finish", "ada", "10.0.0.1", account["id"]), ("begin", "ada", "10.0.0.1")]
    )
    assert finished and state == {"disabled": False, "password_changed_at": 0.0}
    assert again is not None and again["id"] == account["id"]  # the finish undid the count
    [(ok, bad)] = await users.login_steps([("guess", "ada", "")])
    assert not ok and isinstance(bad, InvalidInput)


async def test_a_success_clears_the_usernames_failures_and_one_address_attempt(
    users: UserStore,
) -> None:
    for _ in range(MAX_FAILURES + 2):
        await users.login_failed("x", "10.0.0.1")
    await users.login_succeeded("X", "10.0.0.1")
    assert await retry_after(users, "x") == 0.0
    # The address keeps the rest of its count: one good account must not wash out a spray.
    assert await retry_after(users, "y", "10.0.0.1") == pytest.approx(BASE_S)
    # And the name starts again from the first step.
    assert await users.login_failed("x") == BASE_S


# --- rate limits per address ------------------------------------------------


async def refused_after(users: UserStore, kind: str, address: str) -> float:
    """How long ``take`` makes the next request wait (0 if it lets it in)."""
    try:
        await users.take(kind, address)
    except RateLimited as error:
        assert error.status == 429
        return float(error.details["retry_after_s"])
    return 0.0


@pytest.mark.parametrize(("kind", "limit"), [("register", 3), ("reset", 2)])
async def test_registrations_and_reset_requests_are_limited_per_address(
    users: UserStore, clock: FakeClock, kind: str, limit: int
) -> None:
    # A burst of `limit` is let in
    for _ in range(limit):
        assert await refused_after(users, kind, "10.0.0.1") == 0.0
    # Then one more waits for one allowance to come back (the window over the limit)
    every = 60.0 / limit
    assert await refused_after(users, kind, "10.0.0.1") == pytest.approx(every)
    # Other addresses, and the other kind, are not held up
    assert await refused_after(users, kind, "10.0.0.2") == 0.0
    other = "reset" if kind == "register" else "register"
    assert await refused_after(users, other, "10.0.0.1") == 0.0
    # And once that time has passed, exactly one more gets in
    clock.advance(every / 2)
    assert await refused_after(users, kind, "10.0.0.1") == pytest.approx(every / 2)
    clock.advance(every / 2)
    assert await refused_after(users, kind, "10.0.0.1") == 0.0
    assert await refused_after(users, kind, "10.0.0.1") == pytest.approx(every)
    # An unknown address has nothing to key on (like the login throttle)
    for _ in range(limit + 1):
        await users.take(kind, "")


async def test_an_address_that_stops_gets_its_whole_burst_back(
    users: UserStore, clock: FakeClock
) -> None:
    for _ in range(3):
        await users.take("register", "10.0.0.1")
    clock.advance(3600)
    for _ in range(3):
        assert await refused_after(users, "register", "10.0.0.1") == 0.0
    assert await refused_after(users, "register", "10.0.0.1") > 0


# --- reset tokens ------------------------------------------------------------


async def test_a_reset_token_sets_the_password_once(users: UserStore) -> None:
    await users.register("ada", "old")
    assert await users.create_reset("nobody") is None
    token = await users.create_reset(" ADA ")
    assert token is not None
    assert await users.use_reset(token, "new") == await user_id(users, "ada")
    account = await users.credentials("ada")
    assert account is not None and account["password_hash"] == "new"
    with pytest.raises(InvalidResetToken):
        await users.use_reset(token, "newer")
    account = await users.credentials("ada")
    assert account is not None and account["password_hash"] == "new"


async def test_a_retried_reset_with_its_key_answers_again(users: UserStore) -> None:
    await users.register("ada", "old")
    token = await users.create_reset("ada")
    assert token is not None
    first = await users.use_reset(token, "new", key="r1")
    assert await users.use_reset(token, "new", key="r1") == first
    with pytest.raises(InvalidResetToken):
        await users.use_reset(token, "new", key="r2")


async def test_a_reset_token_expires(users: UserStore, clock: FakeClock) -> None:
    await users.register("ada", "old")
    late = await users.create_reset("ada")
    assert late is not None
    clock.advance(RESET_TTL_S)
    with pytest.raises(InvalidResetToken):
        await users.use_reset(late, "new")
    in_time = await users.create_reset("ada")
    assert in_time is not None
    clock.advance(RESET_TTL_S - 1)
    await users.use_reset(in_time, "new")
    account = await users.credentials("ada")
    assert account is not None and account["password_hash"] == "new"


async def test_a_used_token_voids_the_users_other_tokens_only(users: UserStore) -> None:
    await users.register("ada", "h")
    await users.register("bob", "h")
    first, second = await users.create_reset("ada"), await users.create_reset("ada")
    bobs = await users.create_reset("bob")
    assert first and second and bobs
    await users.use_reset(second, "ada-new")
    with pytest.raises(InvalidResetToken):
        await users.use_reset(first, "ada-newer")
    assert await users.use_reset(bobs, "bob-new") == await user_id(users, "bob")


async def test_a_password_change_voids_outstanding_reset_tokens(users: UserStore) -> None:
    ada = (await users.register("ada", "h"))["id"]
    await users.register("bob", "h")
    adas, bobs = await users.create_reset("ada"), await users.create_reset("bob")
    assert adas and bobs
    await users.set_password(ada, "ada-new")
    with pytest.raises(InvalidResetToken):
        await users.check_reset(adas)
    with pytest.raises(InvalidResetToken):
        await users.use_reset(adas, "someone-elses")
    account = await users.credentials("ada")
    assert account is not None and account["password_hash"] == "ada-new"
    await users.check_reset(bobs)  # other users' tokens stand


async def test_a_password_change_journaled_before_voiding_replays_as_it_was(
    open_users: Callable[..., Awaitable[UserStore]],
) -> None:
    # A record written before a password change voided reset tokens has no
    # void_resets: replayed, it keeps the token it kept then.
    users = await open_users()
    ada = (await users.register("ada", "h"))["id"]
    token = await users.create_reset("ada")
    assert token is not None
    await users.execute("set_password", user_id=ada, password_hash="h2", at=1.0)
    again = await open_users()
    await again.check_reset(token)


async def test_an_unknown_reset_token_is_refused(users: UserStore) -> None:
    with pytest.raises(InvalidResetToken):
        await users.use_reset("not-a-token", "h")


async def test_disabling_and_enabling(users: UserStore) -> None:
    ada = (await users.register("ada", "h"))["id"]
    assert (await users.set_disabled(ada, True))["disabled"] is True
    assert (await users.user(ada))["disabled"] is True
    assert (await users.set_disabled(ada, False))["disabled"] is False


# --- tokens --------------------------------------------------------------------


def session_record(
    clock: FakeClock,
    *,
    user: str = "u1",
    idle_s: float = IDLE_S,
    absolute_s: float = ABSOLUTE_S,
) -> tuple[Session, str]:
    """A session as AuthClient.login builds it, and its bearer token."""
    session_id, secret, token = new_token()
    now = clock.time()
    session = Session(
        id=session_id,
        user_id=user,
        username=user,
        roles=[Role.USER.value],
        secret_hash=hash_secret(secret),
        created_at=now,
        last_seen_at=now,
        idle_timeout_s=idle_s,
        absolute_expires_at=now + absolute_s,
    )
    return session, token


def test_new_token_round_trips_through_parse_and_secret_matches(clock: FakeClock) -> None:
    session, token = session_record(clock)
    session_id, secret = parse_token(token)
    assert session_id == session.id and len(session_id) == 16
    assert secret_matches(session, secret)
    assert not secret_matches(session, secret + "x")
    assert not secret_matches(session, new_token()[1])
    assert len({new_token()[2] for _ in range(100)}) == 100


@pytest.mark.parametrize(
    "token",
    [
        "",
        "no-dot-at-all",
        ".secret",
        "0123456789abcdef",
        "0123456789abcdef.",
        "0123456789abcde.secret",
        "0123456789abcdef0.secret",
        "0123456789abcdef." + "s" * 112,
    ],
)
def test_parse_token_rejects_malformed_tokens(token: str) -> None:
    with pytest.raises(Unauthorized):
        parse_token(token)


# --- sessions --------------------------------------------------------------------


async def create(
    sessions: SessionStore, clock: FakeClock, **kwargs: Any
) -> tuple[str, dict[str, Any]]:
    record, _ = session_record(clock, **kwargs)
    public = await sessions.create(record)
    return record.id, public


async def live(sessions: SessionStore, session_id: str) -> bool:
    [(session, _)] = await sessions.lookup([session_id])
    return session is not None


async def test_create_and_lookup(sessions: SessionStore, clock: FakeClock) -> None:
    record, token = session_record(clock)
    public = await sessions.create(record)
    assert public["id"] == record.id
    assert public["expires_at"] == pytest.approx(clock.time() + IDLE_S)
    assert "secret_hash" not in public
    [(found, lease), (missing, none)] = await sessions.lookup([record.id, "f" * 16])
    assert found is not None and found.user_id == "u1"
    assert secret_matches(found, parse_token(token)[1])
    assert (lease, missing, none) == (0.0, None, 0.0)


async def test_idle_expiry_slides_with_touch(sessions: SessionStore, clock: FakeClock) -> None:
    session_id, _ = await create(sessions, clock)
    clock.advance(IDLE_S - 1)
    touched = await sessions.touch(session_id)
    assert touched is not None and touched.last_seen_at == clock.time()
    clock.advance(IDLE_S - 1)
    assert await live(sessions, session_id)
    clock.advance(1)
    assert not await live(sessions, session_id)
    assert await sessions.touch(session_id) is None  # too late to revive it


async def test_absolute_expiry_caps_a_session_in_use(
    sessions: SessionStore, clock: FakeClock
) -> None:
    session_id, _ = await create(sessions, clock)
    used_for = 0.0
    while used_for + 5 < ABSOLUTE_S:
        clock.advance(5)
        used_for += 5
        assert await sessions.touch(session_id) is not None
    [(session, _)] = await sessions.lookup([session_id])
    assert session is not None
    assert session.expires_at() == session.absolute_expires_at
    clock.advance(ABSOLUTE_S - used_for)
    assert not await live(sessions, session_id)


async def test_end_and_end_for_user(sessions: SessionStore, clock: FakeClock) -> None:
    one, _ = await create(sessions, clock)
    two, _ = await create(sessions, clock)
    three, _ = await create(sessions, clock)
    other, _ = await create(sessions, clock, user="u2")
    assert await sessions.end([one]) == 1
    assert await sessions.end([one]) == 0
    assert not await live(sessions, one)
    assert await sessions.end_for_user("u1", keep=three) == 1
    assert [await live(sessions, s) for s in (two, three, other)] == [False, True, True]
    assert await sessions.end_for_user("u1") == 1
    assert await sessions.end_for_user("u1") == 0
    assert sessions.by_user == {"u2": {other}}


async def test_for_user_lists_only_live_sessions(sessions: SessionStore, clock: FakeClock) -> None:
    short, _ = await create(sessions, clock, idle_s=1)
    ended, _ = await create(sessions, clock)
    kept, _ = await create(sessions, clock)
    await create(sessions, clock, user="u2")
    await sessions.end([ended])
    clock.advance(1)
    assert [s["id"] for s in await sessions.for_user("u1")] == [kept]
    assert short in sessions.sessions  # expired, not yet swept
    assert await sessions.for_user("nobody") == []


async def test_sweep_ends_expired_sessions(sessions: SessionStore, clock: FakeClock) -> None:
    idle, _ = await create(sessions, clock, idle_s=1)
    capped, _ = await create(sessions, clock, absolute_s=3)
    kept, _ = await create(sessions, clock, user="u2")
    assert await sessions.sweep() == 0
    clock.advance(3)
    assert await sessions.touch(kept) is not None
    assert await sessions.sweep() == 2
    assert set(sessions.sessions) == {kept}
    assert sessions.by_user == {"u2": {kept}}
    assert await sessions.end([idle, capped]) == 0  # already ended


async def test_sessions_created_together_are_each_journaled(
    open_sessions: Callable[..., Awaitable[SessionStore]], clock: FakeClock
) -> None:
    sessions = await open_sessions()
    records = [session_record(clock, user=user)[0] for user in ("u1", "u2", "u1")]
    commits = sessions.journal.commits
    public = await sessions.create_many(records)
    assert [p["id"] for p in public] == [r.id for r in records]
    assert all("secret_hash" not in p for p in public)
    assert sessions.journal.committed == sessions.journal.assigned  # durable once answered
    assert sessions.journal.commits - commits == 1  # one commit for the lot
    again = await open_sessions()
    assert set(again.sessions) == {r.id for r in records}
    assert again.by_user == {"u1": {records[0].id, records[2].id}, "u2": {records[1].id}}


@pytest.mark.parametrize("snapshot_every", [10_000, 2], ids=["replay", "snapshot+replay"])
async def test_a_reopened_session_store_has_the_same_sessions(
    open_sessions: Callable[..., Awaitable[SessionStore]], clock: FakeClock, snapshot_every: int
) -> None:
    sessions = await open_sessions(snapshot_every=snapshot_every)
    ended, _ = await create(sessions, clock)
    touched, _ = await create(sessions, clock)
    await create(sessions, clock, user="u2")
    clock.advance(5)
    await sessions.touch(touched)
    await sessions.end([ended])
    if snapshot_every < 10_000:
        assert sessions._snapshot_task is not None
        await sessions._snapshot_task
        snapshot = await sessions.journal.store.read_snapshot("sessions")
        assert snapshot is not None and snapshot[0] > 0
    again = await open_sessions(snapshot_every=snapshot_every)
    assert again.sessions == sessions.sessions
    assert {k: asdict(v) for k, v in again.sessions.items()} == {
        k: asdict(v) for k, v in sessions.sessions.items()
    }
    assert again.by_user == sessions.by_user
    assert again.sessions[touched].last_seen_at == clock.time()


# --- leases ----------------------------------------------------------------------


async def test_a_follower_lookup_grants_a_lease_capped_by_the_sessions_life(
    sessions: SessionStore, clock: FakeClock
) -> None:
    session_id, _ = await create(sessions, clock)
    [(found, lease)] = await sessions.lookup([session_id], "f")
    assert found is not None and lease == LEASE_S
    clock.advance(IDLE_S - 0.5)
    [(found, lease)] = await sessions.lookup([session_id], "f")
    assert found is not None and lease == pytest.approx(0.5)
    clock.advance(0.5)
    assert await sessions.lookup([session_id], "f") == [(None, 0.0)]


async def held(sessions: SessionStore, clock: FakeClock, follower: str = "f") -> str:
    """A session that ``follower`` holds under a lease."""
    session_id, _ = await create(sessions, clock)
    [(_, lease)] = await sessions.lookup([session_id], follower)
    assert lease == LEASE_S
    return session_id


def write(sessions: SessionStore, how: str, session_id: str) -> Awaitable[Any]:
    if how == "end":
        return sessions.end([session_id])
    if how == "end_for_user":
        return sessions.end_for_user("u1")
    return sessions.touch(session_id)


@pytest.mark.parametrize("how", ["end", "end_for_user", "touch"])
async def test_a_write_waits_for_the_follower_to_acknowledge(
    sessions: SessionStore, clock: FakeClock, how: str
) -> None:
    session_id = await held(sessions, clock)
    writer = asyncio.ensure_future(write(sessions, how, session_id))
    await settle()
    assert not writer.done()
    incarnation, messages = await sessions.poll_invalidations("f", 0, None)
    assert (incarnation, messages) == (sessions.leases.incarnation, [(1, session_id)])
    await settle()
    assert not writer.done()  # received is not acknowledged
    poller = asyncio.ensure_future(sessions.poll_invalidations("f", 1, incarnation))
    await writer
    await cancel(poller)
    assert await live(sessions, session_id) is (how == "touch")


async def test_a_silent_follower_delays_end_only_until_its_lease_runs_out(
    sessions: SessionStore, clock: FakeClock
) -> None:
    session_id = await held(sessions, clock)
    clock.advance(0.5)
    ender = asyncio.ensure_future(sessions.end([session_id]))
    await settle()
    clock.advance(LEASE_S - 0.5 - 0.01)
    await settle()
    assert not ender.done()
    clock.advance(0.01)
    assert await ender == 1
    assert not await live(sessions, session_id)


async def test_end_waits_for_every_holder(sessions: SessionStore, clock: FakeClock) -> None:
    session_id = await held(sessions, clock, "f1")
    await sessions.lookup([session_id], "f2")
    ender = asyncio.ensure_future(sessions.end([session_id]))
    incarnation, _ = await sessions.poll_invalidations("f1", 0, None)
    first = asyncio.ensure_future(sessions.poll_invalidations("f1", 1, incarnation))
    await settle()
    assert not ender.done()  # f2 has not acknowledged yet
    await sessions.poll_invalidations("f2", 0, None)
    second = asyncio.ensure_future(sessions.poll_invalidations("f2", 1, incarnation))
    assert await ender == 1
    await cancel(first)
    await cancel(second)


async def test_a_follower_that_closed_does_not_delay_end(
    sessions: SessionStore, clock: FakeClock
) -> None:
    session_id = await held(sessions, clock)
    await sessions.forget_follower("f")
    assert await sessions.end([session_id]) == 1


async def test_end_does_not_wait_for_a_lease_that_has_run_out(
    sessions: SessionStore, clock: FakeClock
) -> None:
    session_id = await held(sessions, clock)
    clock.advance(LEASE_S)
    assert await sessions.end([session_id]) == 1


async def test_a_lookup_without_a_follower_grants_no_lease(
    sessions: SessionStore, clock: FakeClock
) -> None:
    session_id, _ = await create(sessions, clock)
    await sessions.lookup([session_id])
    assert await sessions.end([session_id]) == 1  # nobody to wait for
    assert sessions.leases.followers() == 0


# --- API keys and tickets: formats -----------------------------------------------


def test_keys_tickets_and_tokens_cannot_pass_for_one_another() -> None:
    session_id, _, token = new_token()
    key_id, key_secret, key = new_api_key()
    ticket_id, ticket_secret, ticket = new_ticket()
    assert key.startswith("rk_") and ticket.startswith("rt_")
    assert parse_api_key(key) == (key_id, key_secret)
    assert parse_ticket(ticket) == (ticket_id, ticket_secret)
    # Each parser refuses the other two kinds
    for parse, others in [
        (parse_token, [key, ticket]),
        (parse_api_key, [token, ticket]),
        (parse_ticket, [token, key]),
    ]:
        for other in others:
            with pytest.raises(Unauthorized):
                parse(other)
    # A key's lookup reference is not a session id
    assert key_ref(key_id) != key_id and not key_ref(key_id).isalnum()
    assert len(session_id) == len(key_id) == len(ticket_id) == 16


@pytest.mark.parametrize(
    "key", ["rk_", "rk_.secret", "rk_0123456789abcdef", "rk_0123456789abcdef.", "rk_0123.secret",
            "rk_0123456789abcdef." + "s" * 120, "RK_0123456789abcdef.secret"],
)  # fmt: skip
def test_parse_api_key_rejects_malformed_keys(key: str) -> None:
    with pytest.raises(Unauthorized):
        parse_api_key(key)


# --- API keys in the session store ------------------------------------------------


def key_record(
    clock: FakeClock, *, user: str = "u1", scopes: tuple[str, ...] = ("cache:read",),
    expires_in_s: float = 0.0,
) -> tuple[ApiKey, str]:  # fmt: skip
    """A key as AuthClient.create_api_key builds it, and the key itself."""
    key_id, secret, key = new_api_key()
    now = clock.time()
    record = ApiKey(
        id=key_id,
        user_id=user,
        username=user,
        name="ci",
        scopes=list(scopes),
        secret_hash=hash_secret(secret),
        created_at=now,
        created_by="admin",
        expires_at=now + expires_in_s if expires_in_s else 0.0,
    )
    return record, key


async def test_keys_are_created_looked_up_listed_and_revoked(
    sessions: SessionStore, clock: FakeClock
) -> None:
    record, key = key_record(clock)
    theirs, _ = key_record(clock, user="u2")
    public = await sessions.create_key(record)
    await sessions.create_key(theirs)
    assert "secret_hash" not in public and public["expires_at"] is None
    # A key is found under its key_ref, never under its bare id (a session's place)
    [(found, _), (missing, _)] = await sessions.lookup([key_ref(record.id), record.id])
    assert found == record and missing is None
    assert secret_matches(record, parse_api_key(key)[1])
    assert [k["id"] for k in await sessions.list_keys("u1")] == [record.id]
    assert len(await sessions.list_keys()) == 2
    assert await sessions.count_keys("u1") == 1
    # Revoked: gone, and a second revocation finds nothing
    assert await sessions.revoke_keys([record.id]) == 1
    assert await sessions.revoke_keys([record.id]) == 0
    assert await sessions.lookup([key_ref(record.id)]) == [(None, 0.0)]
    assert await sessions.count_keys("u1") == 0
    assert await sessions.revoke_keys_for_user("u2") == 1
    assert sessions.keys == {} and sessions.keys_by_user == {}


async def test_a_key_expires_and_its_lease_ends_with_it(
    sessions: SessionStore, clock: FakeClock
) -> None:
    record, _ = key_record(clock, expires_in_s=LEASE_S / 2)
    forever, _ = key_record(clock)
    await sessions.create_key(record)
    await sessions.create_key(forever)
    [(_, lease), (_, unbounded)] = await sessions.lookup(
        [key_ref(record.id), key_ref(forever.id)], "f"
    )
    assert lease == pytest.approx(LEASE_S / 2) and unbounded == LEASE_S
    clock.advance(LEASE_S / 2)
    assert await sessions.lookup([key_ref(record.id)], "f") == [(None, 0.0)]
    assert await sessions.list_keys("u1") == [forever.public()]
    clock.advance(LEASE_S)  # past every lease, so the sweep's revocation waits for nobody
    assert await sessions.sweep() == 1
    assert set(sessions.keys) == {forever.id}


async def test_revoking_a_key_waits_for_the_follower_holding_it(
    sessions: SessionStore, clock: FakeClock
) -> None:
    record, _ = key_record(clock)
    await sessions.create_key(record)
    [(_, lease)] = await sessions.lookup([key_ref(record.id)], "f")
    assert lease == LEASE_S
    revoker = asyncio.ensure_future(sessions.revoke_keys([record.id]))
    await settle()
    assert not revoker.done()
    incarnation, messages = await sessions.poll_invalidations("f", 0, None)
    assert messages == [(1, key_ref(record.id))]
    poller = asyncio.ensure_future(sessions.poll_invalidations("f", 1, incarnation))
    assert await revoker == 1
    await cancel(poller)


@pytest.mark.parametrize("snapshot_every", [10_000, 2], ids=["replay", "snapshot+replay"])
async def test_a_reopened_session_store_has_the_same_keys(
    open_sessions: Callable[..., Awaitable[SessionStore]], clock: FakeClock, snapshot_every: int
) -> None:
    sessions = await open_sessions(snapshot_every=snapshot_every)
    kept, _ = key_record(clock, scopes=("queue:enqueue", "queue:read"))
    revoked, _ = key_record(clock, user="u2", expires_in_s=100)
    await sessions.create_key(kept)
    await sessions.create_key(revoked)
    await create(sessions, clock)
    await sessions.revoke_keys([revoked.id])
    await create(sessions, clock, user="u2")
    if snapshot_every < 10_000:
        assert sessions._snapshot_task is not None
        await sessions._snapshot_task
    again = await open_sessions(snapshot_every=snapshot_every)
    assert again.keys == sessions.keys == {kept.id: kept}
    assert again.keys_by_user == {"u1": {kept.id}}
    assert again.sessions == sessions.sessions


async def test_a_snapshot_of_the_first_version_is_read_as_sessions_without_keys(
    open_sessions: Callable[..., Awaitable[SessionStore]], clock: FakeClock, store: SQLiteStore
) -> None:
    # Given a shard whose store holds a version-1 snapshot (sessions by id) and a record after it
    session, _ = session_record(clock)
    later, _ = session_record(clock, user="u2")
    from actors.runtime import codec

    state = {session.id: asdict(session)}
    await store.append(
        "sessions", 0, [codec.encode([1, "create", {"session": asdict(session)}, None])]
    )
    await store.write_snapshot(
        "sessions", 1, codec.encode({"version": 1, "state": state, "replies": []})
    )
    await store.append(
        "sessions", 1, [codec.encode([1, "create", {"session": asdict(later)}, None])]
    )
    # When it opens with this code
    sessions = await open_sessions()
    # Then it has both sessions, and no keys
    assert set(sessions.sessions) == {session.id, later.id}
    assert sessions.keys == {}
    assert sessions.by_user == {"u1": {session.id}, "u2": {later.id}}


# --- tickets ----------------------------------------------------------------------


TICKET_S = 30.0


async def issue(sessions: SessionStore, clock: FakeClock, credential: str = "s1") -> str:
    ticket_id, secret, ticket = new_ticket()
    await sessions.issue_ticket(ticket_id, hash_secret(secret), credential, clock.time() + TICKET_S)
    return ticket


async def redeem(sessions: SessionStore, ticket: str) -> str | None:
    return await sessions.redeem_ticket(*parse_ticket(ticket))


async def test_a_ticket_signs_in_once(sessions: SessionStore, clock: FakeClock) -> None:
    ticket = await issue(sessions, clock)
    assert await redeem(sessions, ticket) == "s1"
    assert await redeem(sessions, ticket) is None
    assert sessions.tickets == {}


async def test_a_ticket_expires(sessions: SessionStore, clock: FakeClock) -> None:
    late, in_time = await issue(sessions, clock), await issue(sessions, clock)
    clock.advance(TICKET_S - 0.01)
    assert await redeem(sessions, in_time) == "s1"
    clock.advance(0.01)
    assert await redeem(sessions, late) is None


async def test_a_wrong_secret_uses_the_ticket_up(sessions: SessionStore, clock: FakeClock) -> None:
    ticket = await issue(sessions, clock)
    ticket_id, secret = parse_ticket(ticket)
    assert await sessions.redeem_ticket(ticket_id, secret[::-1]) is None
    assert await sessions.redeem_ticket(ticket_id, secret) is None


async def test_a_credential_holds_a_bounded_number_of_tickets(
    sessions: SessionStore, clock: FakeClock
) -> None:
    from actors.auth.sessions import TICKETS_PER_CREDENTIAL

    tickets = [await issue(sessions, clock) for _ in range(TICKETS_PER_CREDENTIAL + 2)]
    other = await issue(sessions, clock, credential="s2")
    assert len(sessions.tickets) == TICKETS_PER_CREDENTIAL + 1
    # The oldest were replaced; the newest and another credential's still work
    assert [await redeem(sessions, t) for t in tickets[:2]] == [None, None]
    assert await redeem(sessions, tickets[-1]) == "s1"
    assert await redeem(sessions, other) == "s2"


async def test_tickets_are_forgotten_by_a_restart_and_swept_when_expired(
    open_sessions: Callable[..., Awaitable[SessionStore]], clock: FakeClock
) -> None:
    sessions = await open_sessions()
    ticket = await issue(sessions, clock)
    again = await open_sessions()
    assert await redeem(again, ticket) is None
    await issue(sessions, clock)
    clock.advance(TICKET_S)
    await sessions.sweep()
    assert sessions.tickets == {}
