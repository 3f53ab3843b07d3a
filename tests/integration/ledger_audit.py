"""The bank audit shared by the ledger's fault tests: after random transfers
(some refused, some in flight when actors died), check the books.

Every transfer the ledger acknowledged must be applied exactly once, none it
refused may be applied (an unknown outcome may go either way, once), no
account may break its flags, and money is conserved.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from actors.ledger.client import LedgerClient
from actors.ledger.model import AccountSpec, TransferSpec
from actors.runtime.errors import RealmError, Unavailable
from tests.conftest import until

FUNDING = 1_000


@dataclass
class Books:
    customers: list[str]
    planned: dict[str, TransferSpec] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)

    def record(self, transfer_id: str, outcome: Any) -> None:
        if isinstance(outcome, dict):
            self.acknowledged.add(transfer_id)
        elif isinstance(outcome, RealmError) and not isinstance(outcome, Unavailable):
            assert 400 <= outcome.status < 500, outcome
            self.refused.add(transfer_id)
        else:
            self.unknown.add(transfer_id)


async def open_books(client: LedgerClient, tag: str, customers: int) -> Books:
    """A bank (no limits) and customers that may not overdraw, each funded once."""
    names = [f"{tag}-c{i}" for i in range(customers)]
    bank = f"{tag}-bank"
    specs = [AccountSpec(bank, 1)] + [
        AccountSpec(n, 1, debits_must_not_exceed_credits=True) for n in names
    ]
    created = await client.create_accounts(specs)
    assert all(isinstance(c, dict) for c in created), created
    funding = [TransferSpec(f"{n}-fund", bank, n, FUNDING, 1) for n in names]
    answers = await client.create_transfers(funding)
    assert all(isinstance(a, dict) for a in answers), answers
    return Books(customers=names)


def random_transfers(books: Books, count: int, *, seed: int, cross_only: Any = None) -> list:
    rng = random.Random(seed)
    specs = []
    for i in range(count):
        debit, credit = rng.sample(books.customers, 2)
        if cross_only is not None:
            while cross_only(debit) == cross_only(credit):
                debit, credit = rng.sample(books.customers, 2)
        spec = TransferSpec(f"{books.customers[0]}-t{i}", debit, credit, rng.randint(1, 400), 1)
        books.planned[spec.id] = spec
        specs.append(spec)
    return specs


async def settled(client: LedgerClient, *, timeout_s: float = 60.0) -> dict[str, Any]:
    """Totals once no shard holds a prepared transaction (recovery has run)."""
    totals: dict[str, Any] = await until(
        client.totals,
        lambda totals: totals["total"]["prepared"] == 0,
        within_s=timeout_s,
        what="no transaction in doubt",
    )
    return totals


async def audit(client: LedgerClient, books: Books) -> dict[str, int]:
    totals = (await settled(client))["total"]
    assert totals["debits_posted"] == totals["credits_posted"], totals  # double entry
    assert totals["debits_pending"] == totals["credits_pending"] == 0, totals
    applied = set()
    for transfer_id in books.planned:
        try:
            found = await client.get_transfer(transfer_id)
        except RealmError as error:
            assert error.code == "transfer_not_found", error
            continue
        assert found["amount"] == books.planned[transfer_id].amount
        applied.add(transfer_id)
    # every acknowledged transfer is applied, none refused is
    assert books.acknowledged <= applied, sorted(books.acknowledged - applied)[:5]
    assert not (books.refused & applied), sorted(books.refused & applied)[:5]
    # exactly once: each account's balance is its funding plus what was applied, once
    expected = dict.fromkeys(books.customers, FUNDING)
    for transfer_id in applied:
        spec = books.planned[transfer_id]
        expected[spec.debit_account_id] -= spec.amount
        expected[spec.credit_account_id] += spec.amount
    total = 0
    for name in books.customers:
        account = await client.get_account(name)
        assert account["debits_pending"] == account["credits_pending"] == 0, account
        balance = account["credits_posted"] - account["debits_posted"]
        assert balance == expected[name], (name, balance, expected[name])
        assert account["debits_posted"] <= account["credits_posted"], account  # its flag
        total += balance
    # money is conserved: the customers hold what the bank put in
    assert total == FUNDING * len(books.customers)
    return {
        "acknowledged": len(books.acknowledged),
        "refused": len(books.refused),
        "unknown": len(books.unknown),
        "applied": len(applied),
    }
