"""The ledger over HTTP (``/ledger``, deployed with every service): each route,
its refusals in the error envelope, bad input refused with 4xx while nothing
changes, and owners: another user's accounts and transfers are not found, a
transfer debits only the caller's accounts, and accounts count against a quota."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.conftest import error_code, service_client, sign_up

SERVICE = "ledger"  # of the `http` fixture
MAX_AMOUNT = 2**63 - 1


@pytest.fixture
def ledger(http: httpx.AsyncClient) -> httpx.AsyncClient:
    """The ledger's routes, signed in (the conftest's `http`, named for this file)."""
    return http


@pytest.fixture
async def books(ledger) -> dict[str, str]:
    """A bank, alice and bob (who may not overdraw), with 100 for alice."""
    tag = uuid.uuid4().hex[:8]
    names = {"bank": f"{tag}-bank", "alice": f"{tag}-alice", "bob": f"{tag}-bob"}
    flags = ["debits_must_not_exceed_credits"]
    answer = await ledger.post(
        "/accounts",
        json={
            "accounts": [
                {"id": names["bank"], "ledger": 1},
                {"id": names["alice"], "ledger": 1, "flags": flags},
                {"id": names["bob"], "ledger": 1, "flags": flags},
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    assert all(r["account"] for r in answer.json()["results"])
    funded = await transfer(ledger, f"{tag}-fund", names["bank"], names["alice"], 100)
    assert funded.status_code == 201, funded.text
    return names | {"tag": tag}


async def transfer(ledger, id: str, debit: str, credit: str, amount: Any, **kw: Any):
    body = {"id": id, "debit_account_id": debit, "credit_account_id": credit,
            "amount": amount, "ledger": 1, **kw}  # fmt: skip
    return await ledger.post("/transfers", json=body)


async def balance(ledger, account_id: str) -> tuple[int, int, int, int]:
    answer = await ledger.get(f"/accounts/{account_id}")
    assert answer.status_code == 200, answer.text
    a = answer.json()
    return a["debits_pending"], a["debits_posted"], a["credits_pending"], a["credits_posted"]


async def test_a_transfer_answers_both_balances_and_repeats_answer_the_same(ledger, books):
    tag, alice, bob = books["tag"], books["alice"], books["bob"]
    first = await transfer(ledger, f"{tag}-t1", alice, bob, 30)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["debit_account"] == {"id": alice, "debits_pending": 0, "debits_posted": 30,
                                     "credits_pending": 0, "credits_posted": 100}  # fmt: skip
    assert body["credit_account"]["credits_posted"] == 30
    again = await transfer(ledger, f"{tag}-t1", alice, bob, 30)
    assert again.status_code == 201 and again.json() == body
    conflict = await transfer(ledger, f"{tag}-t1", alice, bob, 31)
    assert conflict.status_code == 409 and error_code(conflict) == "id_conflict"
    assert await balance(ledger, bob) == (0, 0, 0, 30)
    got = await ledger.get(f"/transfers/{tag}-t1")
    assert got.status_code == 200 and got.json()["amount"] == 30


async def test_refusals_have_their_own_codes_and_change_nothing(ledger, books):
    tag, bank, alice, bob = books["tag"], books["bank"], books["alice"], books["bob"]
    poor = await transfer(ledger, f"{tag}-t1", bob, alice, 1)
    assert poor.status_code == 422 and error_code(poor) == "insufficient_funds"
    missing = await transfer(ledger, f"{tag}-t2", alice, f"{tag}-nobody", 1)
    assert missing.status_code == 404 and error_code(missing) == "account_not_found"
    await ledger.post("/accounts", json={"accounts": [{"id": f"{tag}-eur", "ledger": 2}]})
    mismatch = await transfer(ledger, f"{tag}-t3", alice, f"{tag}-eur", 1)
    assert mismatch.status_code == 422 and error_code(mismatch) == "ledger_mismatch"
    assert (await ledger.get(f"/accounts/{tag}-nobody")).status_code == 404
    assert (await ledger.get(f"/transfers/{tag}-t1")).status_code == 404
    assert await balance(ledger, alice) == (0, 0, 0, 100)
    assert await balance(ledger, bob) == (0, 0, 0, 0)
    assert await balance(ledger, bank) == (0, 100, 0, 0)


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 1.5},
        {"amount": "5"},
        {"amount": 0},
        {"amount": -1},
        {"amount": MAX_AMOUNT + 1},
        {"amount": True},
        {"ledger": 0},
        {"id": "has space"},
        {"id": "x" * 129},
        {"debit_account_id": None},
        {"flags": ["sideways"]},
        {"flags": ["pending", "void_pending_transfer"]},
        {"flags": ["linked"]},
        {"timeout_s": 5},
        {"credit_account_id": "SAME"},
        {"pending_id": "p1"},
    ],
)
async def test_bad_transfers_are_refused_with_422_and_change_nothing(ledger, books, change):
    tag, alice, bob = books["tag"], books["alice"], books["bob"]
    body = {"id": f"{tag}-bad", "debit_account_id": alice, "credit_account_id": bob,
            "amount": 5, "ledger": 1} | change  # fmt: skip
    if body.get("credit_account_id") == "SAME":
        body["credit_account_id"] = alice
    answer = await ledger.post("/transfers", json=body)
    assert answer.status_code == 422, answer.text
    assert error_code(answer) == "invalid_input"
    assert await balance(ledger, alice) == (0, 0, 0, 100)
    assert await balance(ledger, bob) == (0, 0, 0, 0)


async def test_bad_batches_and_accounts_are_refused_whole(ledger, books):
    tag, alice, bob = books["tag"], books["alice"], books["bob"]
    good = {"id": f"{tag}-g", "debit_account_id": alice, "credit_account_id": bob,
            "amount": 5, "ledger": 1}  # fmt: skip
    bad = good | {"id": f"{tag}-b", "amount": 2.5}
    answer = await ledger.post("/transfers/batch", json={"transfers": [good, bad]})
    assert answer.status_code == 422
    open_chain = good | {"flags": ["linked"]}
    answer = await ledger.post("/transfers/batch", json={"transfers": [open_chain]})
    assert answer.status_code == 422
    assert (await ledger.post("/transfers/batch", json={"transfers": []})).status_code == 422
    many = [good | {"id": f"{tag}-m{i}"} for i in range(1_001)]
    answer = await ledger.post("/transfers/batch", json={"transfers": many})
    assert answer.status_code == 413 and error_code(answer) == "batch_too_large"
    for account in (
        {"id": f"{tag}-x", "ledger": 1.0},
        {"id": f"{tag}-x", "ledger": 1, "flags": list(("debits_must_not_exceed_credits",
                                                       "credits_must_not_exceed_debits"))},
        {"id": "", "ledger": 1},
    ):  # fmt: skip
        answer = await ledger.post("/accounts", json={"accounts": [account]})
        assert answer.status_code == 422, answer.text
    assert (await ledger.get(f"/accounts/{tag}-x")).status_code == 404
    assert (await ledger.get(f"/transfers/{tag}-g")).status_code == 404
    assert await balance(ledger, alice) == (0, 0, 0, 100)


async def test_a_batch_answers_per_transfer_and_chains_are_all_or_nothing(ledger, books):
    tag, bank, alice, bob = books["tag"], books["bank"], books["alice"], books["bob"]

    def t(id: str, debit: str, credit: str, amount: int, *flags: str) -> dict[str, Any]:
        return {"id": f"{tag}-{id}", "debit_account_id": debit, "credit_account_id": credit,
                "amount": amount, "ledger": 1, "flags": list(flags)}  # fmt: skip

    answer = await ledger.post(
        "/transfers/batch",
        json={
            "transfers": [
                t("a", alice, bob, 10),
                t("b", alice, bob, 50, "linked"),
                t("c", bob, bank, 100),  # bob never has 100: the chain fails
                t("d", bank, bob, 1),
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    # (units of a batch apply in no set order: d may come before a on bob's shard)
    assert results[0]["credit_account"]["credits_posted"] in (10, 11)
    assert results[1]["error"]["code"] == "linked_event_failed"
    assert results[2]["error"]["code"] == "insufficient_funds"
    assert results[3]["transfer"]["id"] == f"{tag}-d"
    assert await balance(ledger, bob) == (0, 0, 0, 11)
    assert await balance(ledger, alice) == (0, 10, 0, 100)


async def test_pending_post_void_and_history(ledger, books):
    tag, alice, bob = books["tag"], books["alice"], books["bob"]
    pending = await transfer(ledger, f"{tag}-p1", alice, bob, 40, flags=["pending"])
    assert pending.status_code == 201, pending.text
    assert pending.json()["transfer"]["state"] == "pending"
    assert await balance(ledger, alice) == (40, 0, 0, 100)
    posted = await ledger.post(
        f"/transfers/{tag}-p1/post", json={"id": f"{tag}-post", "amount": 25}
    )
    assert posted.status_code == 201, posted.text
    assert posted.json()["credit_account"]["credits_posted"] == 25
    assert (await ledger.get(f"/transfers/{tag}-p1")).json()["state"] == "posted"
    again = await ledger.post(f"/transfers/{tag}-p1/void", json={"id": f"{tag}-void"})
    assert again.status_code == 409 and error_code(again) == "pending_transfer_closed"
    assert await balance(ledger, alice) == (0, 25, 0, 100)

    await transfer(ledger, f"{tag}-p2", alice, bob, 10, flags=["pending"])
    voided = await ledger.post(f"/transfers/{tag}-p2/void", json={"id": f"{tag}-void2"})
    assert voided.status_code == 201, voided.text
    assert await balance(ledger, alice) == (0, 25, 0, 100)
    nothing = await ledger.post(f"/transfers/{tag}-nope/post", json={"id": f"{tag}-post3"})
    assert nothing.status_code == 404 and error_code(nothing) == "pending_transfer_not_found"

    page = await ledger.get(f"/accounts/{alice}/history", params={"limit": 2})
    assert page.status_code == 200, page.text
    first = page.json()
    assert [e["transfer_id"] for e in first["entries"]] == [f"{tag}-fund", f"{tag}-p1"]
    rest = await ledger.get(
        f"/accounts/{alice}/history", params={"after_ns": first["next_after_ns"], "limit": 100}
    )
    ids = [e["transfer_id"] for e in rest.json()["entries"]]
    assert ids == [f"{tag}-post", f"{tag}-p2", f"{tag}-void2"]
    assert rest.json()["next_after_ns"] is None
    too_long = await ledger.get(f"/accounts/{alice}/history", params={"limit": 100_000})
    assert too_long.status_code == 422


async def test_the_ledger_requires_a_user(base_url):
    async with service_client(base_url, "ledger") as anonymous:
        answer = await anonymous.get("/accounts/anything")
    assert answer.status_code == 401 and error_code(answer) == "unauthorized"


# --- owners ----------------------------------------------------------------------------


@pytest.fixture
async def stranger(base_url) -> Any:
    """A client of the ledger signed in as another user."""
    async with service_client(base_url, "ledger", await sign_up(base_url)) as client:
        yield client


def without_id(response: httpx.Response) -> dict[str, Any]:
    """An error answer, less what names the request (the id asked for, the request id)."""
    error = dict(response.json()["error"])
    error.pop("request_id", None)
    error["details"] = {k: v for k, v in error["details"].items() if k != "account_id"}
    return {"status": response.status_code, **error}


async def test_another_users_accounts_and_transfers_answer_as_missing_ones(ledger, books, stranger):
    tag, alice, bob = books["tag"], books["alice"], books["bob"]
    paid = await transfer(ledger, f"{tag}-t1", alice, bob, 5)
    assert paid.status_code == 201, paid.text
    missing = f"{tag}-nobody"
    for path in ("/accounts/{}", "/accounts/{}/history"):
        theirs = await stranger.get(path.format(alice))
        absent = await stranger.get(path.format(missing))
        assert theirs.status_code == 404, theirs.text
        assert without_id(theirs) == without_id(absent)
    theirs = await stranger.get(f"/transfers/{tag}-t1")
    assert theirs.status_code == 404 and error_code(theirs) == "transfer_not_found"

    # the stranger may not debit alice, post or void her pending transfers...
    await stranger.post("/accounts", json={"accounts": [{"id": f"{tag}-s", "ledger": 1}]})
    stolen = await transfer(stranger, f"{tag}-steal", alice, f"{tag}-s", 5)
    absent = await transfer(stranger, f"{tag}-steal", missing, f"{tag}-s", 5)
    assert stolen.status_code == 404 and without_id(stolen) == without_id(absent)
    hold = await transfer(ledger, f"{tag}-p1", alice, bob, 7, flags=["pending"])
    assert hold.status_code == 201, hold.text
    for action, body in (("post", {"id": f"{tag}-x"}), ("void", {"id": f"{tag}-y"})):
        closed = await stranger.post(f"/transfers/{tag}-p1/{action}", json=body)
        assert closed.status_code == 404, closed.text
        assert error_code(closed) == "pending_transfer_not_found"
    # ...nor take an account id she holds
    taken = await stranger.post("/accounts", json={"accounts": [{"id": alice, "ledger": 1}]})
    assert taken.json()["results"][0]["error"]["code"] == "id_conflict"
    assert await balance(ledger, alice) == (7, 5, 0, 100)


async def test_a_payment_to_another_user_shows_the_payer_none_of_the_payees_account(
    ledger, books, stranger
):
    tag, alice = books["tag"], books["alice"]
    payee, capped = f"{tag}-payee", f"{tag}-capped"
    created = await stranger.post("/accounts", json={"accounts": [
        {"id": payee, "ledger": 1},
        {"id": capped, "ledger": 1, "flags": ["credits_must_not_exceed_debits"]},
    ]})  # fmt: skip
    assert all(r["account"] for r in created.json()["results"]), created.text

    paid = await transfer(ledger, f"{tag}-pay", alice, payee, 30)
    assert paid.status_code == 201, paid.text
    assert paid.json()["credit_account"] is None
    assert paid.json()["debit_account"]["debits_posted"] == 30
    # the payee sees the payment: its transfer and their history
    seen = await stranger.get(f"/transfers/{tag}-pay")
    assert seen.status_code == 200 and seen.json()["amount"] == 30
    history = (await stranger.get(f"/accounts/{payee}/history")).json()["entries"]
    assert [(e["transfer_id"], e["credits_posted"]) for e in history] == [(f"{tag}-pay", 30)]
    # an account of theirs that refuses the credit answers as a missing one does
    refused = await transfer(ledger, f"{tag}-pay2", alice, capped, 1)
    absent = await transfer(ledger, f"{tag}-pay2", alice, f"{tag}-nobody", 1)
    assert refused.status_code == 404 and without_id(refused) == without_id(absent)


async def test_accounts_count_against_a_quota_per_owner(base_url):
    limit = 1_000  # REALM_LEDGER_MAX_ACCOUNTS_PER_OWNER of the deployment
    tag = uuid.uuid4().hex[:8]
    async with service_client(base_url, "ledger", await sign_up(base_url)) as owner:
        accounts = [{"id": f"{tag}-q{i}", "ledger": 1} for i in range(limit)]
        full = await owner.post("/accounts", json={"accounts": accounts})
        assert full.status_code == 200, full.text
        assert all(r["account"] for r in full.json()["results"])
        again = await owner.post("/accounts", json={"accounts": accounts[:3]})  # repeats fit
        assert again.status_code == 200 and all(r["account"] for r in again.json()["results"])
        over = await owner.post("/accounts", json={"accounts": [{"id": f"{tag}-qx", "ledger": 1}]})
        assert over.status_code == 403 and error_code(over) == "limit_reached"
        assert (await owner.get(f"/accounts/{tag}-qx")).status_code == 404


async def test_a_pending_timeout_has_a_maximum(ledger, books):
    tag, alice, bob = books["tag"], books["alice"], books["bob"]
    day = 86_400
    too_long = await transfer(ledger, f"{tag}-p", alice, bob, 1, flags=["pending"],
                              timeout_s=30 * day + 1)  # fmt: skip
    assert too_long.status_code == 422 and error_code(too_long) == "invalid_input"
    fine = await transfer(ledger, f"{tag}-p", alice, bob, 1, flags=["pending"], timeout_s=30 * day)
    assert fine.status_code == 201, fine.text
