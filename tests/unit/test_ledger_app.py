"""The ledger's HTTP front without Ray: every route's scope, strict and bounded
bodies and parameters, and the caller's user id passed as the owner of every
call (``docs/ledger.md``, "Owners").

The app is built on a fake client, and the caller is set by overriding
``apps.signin.current_principal`` (a user, or an API key with given scopes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from actors.auth.client import Principal
from actors.ledger.errors import AccountNotFound
from actors.ledger.model import MAX_NS, MAX_TIMEOUT_S
from actors.runtime.settings import Settings
from apps.ledger import make_app
from tests.unit.fronts import calling_as, principal

BALANCES = {"debits_pending": 0, "debits_posted": 0, "credits_pending": 0, "credits_posted": 0}
ACCOUNT = {"id": "a", **BALANCES, "ledger": 1, "code": 0, "flags": [], "timestamp": 1}
TRANSFER = {
    "id": "t", "debit_account_id": "a", "credit_account_id": "b", "amount": 5, "ledger": 1,
    "code": 0, "flags": [], "pending_id": None, "timeout_s": 0, "timestamp": 2, "state": "posted",
}  # fmt: skip
ANSWER = {"transfer": TRANSFER, "debit_account": {"id": "a", **BALANCES}, "credit_account": None}
ANSWERS: dict[str, Any] = {
    "create_accounts": [ACCOUNT],
    "get_account": ACCOUNT,
    "history": {"account_id": "a", "entries": [], "next_after_ns": None},
    "create_transfer": ANSWER,
    "create_transfers": [ANSWER],
    "get_transfer": TRANSFER,
    "post_pending": ANSWER,
    "void_pending": ANSWER,
}


class FakeLedger:
    """Answers every call of ``LedgerClient`` and remembers (method, owner); only
    ``ada`` has accounts."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, method: str) -> Any:
        async def answer(*args: Any, owner: str, **kwargs: Any) -> Any:
            self.calls.append((method, owner))
            if owner != "ada" and method in ("get_account", "history"):
                raise AccountNotFound(account_id="a")
            return ANSWERS[method]

        return answer


TRANSFER_IN = {"id": "t", "debit_account_id": "a", "credit_account_id": "b", "amount": 5,
               "ledger": 1}  # fmt: skip
#: Every route, a body it accepts, and the scope an API key needs for it.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("POST", "/accounts", {"accounts": [{"id": "a", "ledger": 1}]}, "ledger:accounts"),
    ("GET", "/accounts/a", None, "ledger:read"),
    ("GET", "/accounts/a/history", None, "ledger:read"),
    ("POST", "/transfers", TRANSFER_IN, "ledger:transfer"),
    ("POST", "/transfers/batch", {"transfers": [TRANSFER_IN]}, "ledger:transfer"),
    ("GET", "/transfers/t", None, "ledger:read"),
    ("POST", "/transfers/p/post", {"id": "t", "amount": 2}, "ledger:transfer"),
    ("POST", "/transfers/p/void", {"id": "t"}, "ledger:transfer"),
]
SCOPES = {"ledger:read", "ledger:transfer", "ledger:accounts"}


@pytest.fixture
async def front() -> AsyncIterator[tuple[httpx.AsyncClient, FakeLedger, list[Principal]]]:
    fake = FakeLedger()
    caller = [principal()]
    app = make_app(fake, Settings())  # type: ignore[arg-type]
    async with calling_as(app, caller) as http:
        yield http, fake, caller


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
async def test_every_route_takes_its_scope_and_acts_for_the_callers_user(
    front, method, path, body, scope
) -> None:
    http, fake, caller = front
    caller[0] = principal(scopes=SCOPES - {scope})
    refused = await http.request(method, path, json=body)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert fake.calls == []
    caller[0] = principal(scopes={scope})  # an API key of ada's
    allowed = await http.request(method, path, json=body)
    assert allowed.status_code in (200, 201), allowed.text
    assert fake.calls and all(owner == "ada" for _, owner in fake.calls)
    caller[0] = principal()  # ada herself
    assert (await http.request(method, path, json=body)).status_code in (200, 201)


async def test_another_users_account_is_not_found(front) -> None:
    http, fake, caller = front
    caller[0] = principal("bob")
    for path in ("/accounts/a", "/accounts/a/history"):
        answer = await http.get(path)
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "account_not_found")
    assert fake.calls == [("get_account", "bob"), ("history", "bob")]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/transfers", TRANSFER_IN | {"amount": False}),
        ("/transfers", TRANSFER_IN | {"amount": True}),
        ("/transfers", TRANSFER_IN | {"amount": 5.0}),
        ("/transfers", TRANSFER_IN | {"amount": "5"}),
        ("/transfers", TRANSFER_IN | {"amount": 2**63}),
        ("/transfers", TRANSFER_IN | {"ledger": True}),
        ("/transfers", TRANSFER_IN | {"code": False}),
        ("/transfers", TRANSFER_IN | {"flags": ["pending"], "timeout_s": MAX_TIMEOUT_S + 1}),
        ("/transfers", TRANSFER_IN | {"flags": ["pending"], "timeout_s": True}),
        ("/transfers", TRANSFER_IN | {"owner": "bob"}),
        ("/transfers", TRANSFER_IN | {"expiry": True}),
        ("/transfers/batch", {"transfers": [TRANSFER_IN], "extra": 1}),
        ("/accounts", {"accounts": [{"id": "a", "ledger": 1, "owner": "bob"}]}),
        ("/accounts", {"accounts": [{"id": "a", "ledger": False}]}),
        ("/accounts", {"accounts": []}),
        ("/transfers/p/post", {"id": "t", "amount": False}),
        ("/transfers/p/void", {"id": "t", "amount": 5}),
    ],
)
async def test_bodies_are_strict_and_bounded(front, path, body) -> None:
    http, fake, _ = front
    answer = await http.post(path, json=body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "invalid_input")
    assert fake.calls == []


@pytest.mark.parametrize(
    "query",
    [
        {"since_ns": MAX_NS + 1},
        {"until_ns": -1},
        {"after_ns": MAX_NS + 1},
        {"limit": 0},
        {"limit": 100_001},
        {"limit": "true"},
    ],
)
async def test_history_parameters_are_bounded(front, query) -> None:
    http, fake, _ = front
    answer = await http.get("/accounts/a/history", params=query)
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "invalid_input")
    assert fake.calls == []


async def test_ids_in_paths_follow_the_id_rule(front) -> None:
    http, fake, _ = front
    for path in ("/accounts/" + "x" * 129, "/transfers/has%20space"):
        answer = await http.get(path)
        assert answer.status_code == 422, answer.text
    assert fake.calls == []
