"""The ledger's Python client (service 8), usable from any Ray task, actor or replica.

It routes by rendezvous hashing of account ids: a unit (a transfer, or a
linked chain) whose accounts all live on one shard goes straight to that
shard; one spanning shards goes to the coordinator its first transfer id
hashes to, which runs two-phase commit. Concurrent units for one shard (or one
coordinator) are coalesced into one batched call (``actors.runtime.batching``).

A post or void names only its pending transfer: the client looks that up
first (on every shard, in parallel) and fills in its accounts, ledger and
amount, so the post is routed like the pending transfer was.

Every method takes the ``owner`` it acts for: a user's id (the HTTP front
passes the caller's), or None for the system (tests, benchmarks, audits), which
owns nothing and may use every account. A user sees and debits only their own
accounts (another's is answered as a missing one), may credit anyone's, and
sees a transfer only if it is theirs or touches one of their accounts. Their
accounts are created through the coordinator their id hashes to, which counts
them against ``max_accounts_per_owner``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from functools import partial
from typing import Any

from actors.ledger.actors import coordinator_actors, shard_actors
from actors.ledger.errors import AccountNotFound, PendingTransferNotFound, TransferNotFound
from actors.ledger.model import (
    MAX_NS,
    SYSTEM,
    AccountSpec,
    Kind,
    TransferSpec,
    UnitResult,
    chains,
    check_id,
    unit_outcomes,
)
from actors.ledger.settings import LedgerSettings
from actors.runtime.batching import Coalescer
from actors.runtime.errors import BatchTooLarge, InvalidInput, RealmError, Unavailable
from actors.runtime.settings import Settings

#: Batched calls in flight to one coordinator: a cross-shard batch takes several
#: store writes, so waiting for the one in flight would double the latency.
RUNS_IN_FLIGHT = 1
#: States that end a pending transfer (a shard that has committed its side of
#: a post or void shows one while the other may still show "pending").
CLOSED = ("posted", "voided", "expired")


def _failed(error: BaseException) -> RealmError:
    if isinstance(error, RealmError):
        return error
    return Unavailable("a ledger actor did not answer; the outcome is unknown", cause=repr(error))


def _owner(owner: str | None) -> str:
    """The owner a spec carries: a user's id, or ``SYSTEM`` for None."""
    if owner is None:
        return SYSTEM
    if not isinstance(owner, str) or not owner:
        raise ValueError("an owner is a user's id (None for the system)")
    return owner


class LedgerClient:
    """Accounts and transfers over the deployment's shard and coordinator actors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = LedgerSettings.of(settings)
        self.shards = shard_actors(settings)
        self.coordinators = coordinator_actors(settings)
        batch = self.config.max_batch
        self._submit = [
            Coalescer(partial(ref.call, "submit"), max_batch=batch) for ref in self.shards
        ]
        self._run = [
            Coalescer(partial(ref.call, "run"), max_batch=batch, max_in_flight=RUNS_IN_FLIGHT)
            for ref in self.coordinators
        ]

    async def start(self) -> None:
        """Start (or find) every shard and coordinator; returns once all answer."""
        await asyncio.gather(self.shards.start(), self.coordinators.start())

    async def close(self) -> None:
        pass  # nothing held open: actor handles are dropped with the client

    def shard_of(self, account_id: str) -> int:
        return self.shards.index(account_id)

    # --- accounts -----------------------------------------------------------------

    def _check_batch(self, size: int) -> None:
        if size > self.config.max_batch:
            raise BatchTooLarge(size=size, limit=self.config.max_batch)
        if size == 0:
            raise InvalidInput("the batch is empty")

    async def create_accounts(
        self, specs: list[AccountSpec], *, owner: str | None = None
    ) -> list[Any]:
        """Per account, in order: the account, or a ``RealmError`` for that one
        (``id_conflict``: the id is taken, with another body or by another
        owner); accounts are independent of each other. For a user ``owner``
        they become theirs, and a batch that would take them over
        ``max_accounts_per_owner`` raises ``LimitReached`` and creates none."""
        self._check_batch(len(specs))
        specs = [replace(spec, owner=_owner(owner)).check() for spec in specs]
        if len({spec.id for spec in specs}) != len(specs):
            raise InvalidInput("a batch may not repeat an account id", field="id")
        if owner is not None:
            coordinator = self.coordinators[self.coordinators.index(owner)]
            limit = self.config.max_accounts_per_owner
            created: list[Any] = await coordinator.call("create_accounts", owner, specs, limit)
            return created
        groups = self.shards.split(spec.id for spec in specs)
        answers: list[Any] = [None] * len(specs)

        async def one(shard: int, positions: list[int]) -> None:
            try:
                got = await self.shards[shard].call(
                    "create_accounts", [specs[p] for p in positions]
                )
            except Exception as error:
                got = [_failed(error)] * len(positions)
            for position, answer in zip(positions, got, strict=True):
                answers[position] = answer

        await asyncio.gather(*(one(shard, positions) for shard, positions in groups.items()))
        return answers

    async def get_account(self, account_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """The account; ``AccountNotFound`` if it does not exist or is not ``owner``'s."""
        check_id(account_id, "account_id")
        shard = self.shards[self.shard_of(account_id)]
        found = await shard.call("get_accounts", [account_id], owner)
        if found[0] is None:
            raise AccountNotFound(account_id=account_id)
        account: dict[str, Any] = found[0]
        return account

    async def history(
        self,
        account_id: str,
        *,
        since_ns: int = 0,
        until_ns: int | None = None,
        after_ns: int | None = None,
        limit: int = 100,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """A page of the account's history; ``AccountNotFound`` unless it is ``owner``'s."""
        check_id(account_id, "account_id")
        if type(limit) is not int or not 1 <= limit <= self.config.history_page_max:
            raise InvalidInput(
                f"limit must be from 1 to {self.config.history_page_max}", field="limit"
            )
        for name, value in (("since_ns", since_ns), ("until_ns", until_ns), ("after_ns", after_ns)):
            if value is not None and (type(value) is not int or not 0 <= value <= MAX_NS):
                raise InvalidInput(f"{name} must be an integer from 0 to {MAX_NS}", field=name)
        page: dict[str, Any] = await self.shards[self.shard_of(account_id)].call(
            "history_of", account_id, since_ns=since_ns, until_ns=until_ns,
            after_ns=after_ns, limit=limit, owner=owner,
        )  # fmt: skip
        return page

    # --- transfers ----------------------------------------------------------------

    async def create_transfer(
        self, spec: TransferSpec, *, owner: str | None = None
    ) -> dict[str, Any]:
        """One transfer (not linked); its answer, or the refusal raised."""
        if spec.linked:
            raise InvalidInput("a single transfer may not be linked", field="linked")
        (outcome,) = await self.create_transfers([spec], owner=owner)
        if isinstance(outcome, RealmError):
            raise outcome
        answer: dict[str, Any] = outcome
        return answer

    async def create_transfers(
        self, specs: list[TransferSpec], *, owner: str | None = None
    ) -> list[Any]:
        """Per transfer, in order: ``{"transfer", "debit_account", "credit_account"}``
        (balances after it, of the accounts ``owner`` may see; None for another
        user's) or a ``RealmError``. Linked chains apply all or nothing; other
        transfers of a batch are independent of each other. A user ``owner``
        debits only their own accounts."""
        self._check_batch(len(specs))
        specs = [replace(spec, owner=_owner(owner)).check() for spec in specs]
        for spec in specs:
            if spec.expiry and owner is not None:
                raise InvalidInput("expiries are the ledger's own", field="expiry")
            if spec.timeout_s > self.config.max_timeout_s:
                raise InvalidInput(
                    f"timeout_s is at most {self.config.max_timeout_s}", field="timeout_s"
                )
        units = chains(specs)
        results = await asyncio.gather(*(self._unit(unit) for unit in units))
        return [
            outcome
            for unit, result in zip(units, results, strict=True)
            for outcome in unit_outcomes(unit, result)
        ]

    async def _unit(self, unit: list[TransferSpec]) -> UnitResult:
        try:
            unit = await self._fill_pending(unit)
        except RealmError as error:
            return ("error", getattr(error, "index", 0), error)
        shards = {self.shard_of(spec.debit_account_id) for spec in unit}
        shards |= {self.shard_of(spec.credit_account_id) for spec in unit}
        results: list[UnitResult]
        try:
            if len(shards) == 1:
                results = await self._submit[shards.pop()].submit([unit])
            else:
                coordinator = self.coordinators.index(unit[0].id)
                results = await self._run[coordinator].submit([unit])
        except Exception as error:
            return ("error", 0, _failed(error))
        return results[0]

    async def _fill_pending(self, unit: list[TransferSpec]) -> list[TransferSpec]:
        filled = []
        for index, spec in enumerate(unit):
            if spec.kind in (Kind.POST, Kind.VOID):
                assert spec.pending_id is not None
                owner = None if spec.owner == SYSTEM else spec.owner
                pending = await self._find_transfer(spec.pending_id, owner)
                if pending is None or "pending" not in pending["flags"]:
                    error = PendingTransferNotFound(pending_id=spec.pending_id)
                    error.index = index  # type: ignore[attr-defined]
                    raise error
                spec = spec.with_pending(pending)
            filled.append(spec)
        return filled

    async def _find_transfer(self, transfer_id: str, owner: str | None) -> dict[str, Any] | None:
        """The transfer, if ``owner`` may see it (None: anyone): it is theirs, or
        one of its accounts is (each shard names the parties of its sides)."""
        found = await self.shards.call_all("get_transfers", [transfer_id])
        records = [f[0] for f in found if f[0] is not None]
        if not records:
            return None
        if owner is not None and not any(owner in r["parties"] for r in records):
            return None
        records.sort(key=lambda r: "debit" not in r["sides"])  # the debit side's first
        merged = dict(records[0])
        closed = [r["state"] for r in records if r["state"] in CLOSED]
        if merged["state"] == "pending" and closed:
            merged["state"] = closed[0]
        merged.pop("sides")
        merged.pop("parties")
        return merged

    async def get_transfer(self, transfer_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """The transfer; ``TransferNotFound`` if it does not exist or ``owner`` is
        no party to it (neither made it nor holds one of its accounts)."""
        check_id(transfer_id, "transfer_id")
        found = await self._find_transfer(transfer_id, owner)
        if found is None:
            raise TransferNotFound(transfer_id=transfer_id)
        return found

    async def post_pending(
        self,
        pending_id: str,
        transfer_id: str,
        amount: int | None = None,
        *,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Post a pending transfer (all of it, or ``amount`` of it: the rest is
        released); a user posts only the pending transfers they made."""
        spec = TransferSpec(
            id=transfer_id, debit_account_id="", credit_account_id="", amount=amount or 0,
            ledger=0, kind=Kind.POST, pending_id=pending_id,
        )  # fmt: skip
        return await self.create_transfer(spec, owner=owner)

    async def void_pending(
        self, pending_id: str, transfer_id: str, *, owner: str | None = None
    ) -> dict[str, Any]:
        """Void a pending transfer; a user voids only the pending transfers they made."""
        spec = TransferSpec(
            id=transfer_id, debit_account_id="", credit_account_id="", amount=0, ledger=0,
            kind=Kind.VOID, pending_id=pending_id,
        )  # fmt: skip
        return await self.create_transfer(spec, owner=owner)

    # --- audit --------------------------------------------------------------------

    async def totals(self) -> dict[str, Any]:
        """Sums of every balance over all shards, plus per-shard figures."""
        per_shard = await self.shards.call_all("totals")
        keys = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
        total = {key: sum(s[key] for s in per_shard) for key in (*keys, "accounts", "prepared")}
        return {"shards": list(per_shard), "total": total}

    def __repr__(self) -> str:
        return f"<LedgerClient shards={len(self.shards)} coordinators={len(self.coordinators)}>"
