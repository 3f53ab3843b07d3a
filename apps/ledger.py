"""HTTP front of the ledger (service 8), under ``/ledger``; every route needs a user.

Bodies become the ledger's domain types (``AccountSpec``, ``TransferSpec``)
here; integers are strict (a JSON ``1.0`` or ``"1"`` is refused, not rounded).
A route for one thing answers a refusal with its own status in the error
envelope (404 ``account_not_found``, 409 ``id_conflict``, 422
``insufficient_funds``...); a batch answers 200 with one result per item,
each either the thing or its error, as TigerBeetle does. Malformed input
refuses the whole request with 422 (or 413 for too many items) and changes
nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field, StrictInt
from ray import serve
from ray.serve import Application

from actors.ledger.client import LedgerClient
from actors.ledger.model import (
    MAX_AMOUNT,
    MAX_CODE,
    MAX_LEDGER,
    MAX_TIMEOUT_S,
    AccountSpec,
    Kind,
    TransferSpec,
)
from actors.runtime.errors import InvalidInput, RealmError
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.signin import CurrentUser

Id = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9._:\-]{1,128}$", description="1-128 of [A-Za-z0-9._:-]")
]
Amount = Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT, description="Minor units, 1..2**63-1.")]
Ledger = Annotated[StrictInt, Field(ge=1, le=MAX_LEDGER, description="Currency, 1..2**32-1.")]
Code = Annotated[StrictInt, Field(ge=0, le=MAX_CODE, description="Your classification.")]
AccountFlag = Literal["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"]
TransferFlag = Literal["linked", "pending", "post_pending_transfer", "void_pending_transfer"]


class AccountIn(BaseModel):
    id: Id
    ledger: Ledger
    code: Code = 0
    flags: list[AccountFlag] = []

    def spec(self) -> AccountSpec:
        return AccountSpec(
            self.id,
            self.ledger,
            self.code,
            debits_must_not_exceed_credits="debits_must_not_exceed_credits" in self.flags,
            credits_must_not_exceed_debits="credits_must_not_exceed_debits" in self.flags,
        ).check()


class AccountsIn(BaseModel):
    accounts: list[AccountIn] = Field(..., min_length=1)


class Balances(BaseModel):
    id: str
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int


class Account(Balances):
    ledger: int
    code: int
    flags: list[str]
    timestamp: int = Field(..., description="Creation, ns since the epoch.")


class Problem(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class AccountResult(BaseModel):
    account: Account | None = None
    error: Problem | None = None


class AccountResults(BaseModel):
    results: list[AccountResult]


class TransferIn(BaseModel):
    id: Id
    debit_account_id: Id | None = Field(None, description="Optional for a post or void.")
    credit_account_id: Id | None = Field(None, description="Optional for a post or void.")
    amount: Amount | None = Field(None, description="For a post: part of the pending amount.")
    ledger: Ledger | None = Field(None, description="Optional for a post or void.")
    code: Code = 0
    flags: list[TransferFlag] = []
    pending_id: Id | None = Field(None, description="The pending transfer to post or void.")
    timeout_s: Annotated[StrictInt, Field(ge=0, le=MAX_TIMEOUT_S)] = Field(
        0, description="A pending transfer is voided this long after it was made; 0: never."
    )

    def spec(self) -> TransferSpec:
        kinds = [Kind(f) for f in self.flags if f != "linked"]
        if len(kinds) > 1:
            raise InvalidInput(
                "at most one of pending, post_pending_transfer, void_pending_transfer"
            )
        kind = kinds[0] if kinds else Kind.POSTED
        if kind in (Kind.POSTED, Kind.PENDING):
            missing = [
                name
                for name in ("debit_account_id", "credit_account_id", "amount", "ledger")
                if getattr(self, name) is None
            ]
            if missing:
                raise InvalidInput("a transfer needs accounts, amount and ledger", missing=missing)
        return TransferSpec(
            id=self.id,
            debit_account_id=self.debit_account_id or "",
            credit_account_id=self.credit_account_id or "",
            amount=self.amount or 0,
            ledger=self.ledger or 0,
            code=self.code,
            kind=kind,
            linked="linked" in self.flags,
            pending_id=self.pending_id,
            timeout_s=self.timeout_s,
        ).check()


class TransfersIn(BaseModel):
    transfers: list[TransferIn] = Field(..., min_length=1)


class Transfer(BaseModel):
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    ledger: int
    code: int
    flags: list[str]
    pending_id: str | None
    timeout_s: int
    timestamp: int = Field(..., description="When it was applied, ns since the epoch.")
    state: str = Field(..., description="posted; for a pending one pending/posted/voided/expired")


class TransferAnswer(BaseModel):
    transfer: Transfer
    debit_account: Balances = Field(..., description="Its balances right after this transfer.")
    credit_account: Balances


class TransferResult(BaseModel):
    transfer: Transfer | None = None
    debit_account: Balances | None = None
    credit_account: Balances | None = None
    error: Problem | None = None


class TransferResults(BaseModel):
    results: list[TransferResult]


class PostIn(BaseModel):
    id: Id = Field(..., description="Id of the post transfer itself.")
    amount: Amount | None = Field(None, description="Post only this much; the rest is released.")


class VoidIn(BaseModel):
    id: Id = Field(..., description="Id of the void transfer itself.")


class HistoryEntry(BaseModel):
    timestamp: int
    transfer_id: str
    side: Literal["debit", "credit"]
    kind: str
    amount: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int


class History(BaseModel):
    account_id: str
    entries: list[HistoryEntry]
    next_after_ns: int | None = Field(None, description="Pass as after_ns for the next page.")


def _problem(error: RealmError) -> Problem:
    return Problem(**error.to_dict())


def make_app(client: LedgerClient, settings: Settings) -> FastAPI:
    app = service_app(
        title="ledger",
        description="Double-entry accounts and transfers (TigerBeetle's rules), sharded, "
        "with two-phase commit across shards.",
        settings=settings,
    )
    errors: dict[int | str, dict[str, Any]] = {404: {}, 409: {}, 413: {}, 422: {}}

    @app.post("/accounts", responses=errors)
    async def create_accounts(body: AccountsIn, user: CurrentUser) -> AccountResults:
        specs = [account.spec() for account in body.accounts]
        results = await client.create_accounts(specs)
        return AccountResults(
            results=[
                AccountResult(error=_problem(r))
                if isinstance(r, RealmError)
                else AccountResult(account=Account(**r))
                for r in results
            ]
        )

    @app.get("/accounts/{account_id}", responses=errors)
    async def get_account(account_id: str, user: CurrentUser) -> Account:
        return Account(**await client.get_account(account_id))

    @app.get("/accounts/{account_id}/history", responses=errors)
    async def history(
        account_id: str,
        user: CurrentUser,
        since_ns: Annotated[int, Query(ge=0)] = 0,
        until_ns: Annotated[int | None, Query(ge=0)] = None,
        after_ns: Annotated[int | None, Query(ge=0, description="next_after_ns")] = None,
        limit: Annotated[int, Query(ge=1)] = 100,
    ) -> History:
        page = await client.history(
            account_id, since_ns=since_ns, until_ns=until_ns, after_ns=after_ns, limit=limit
        )
        return History(**page)

    @app.post("/transfers", status_code=201, responses=errors)
    async def create_transfer(body: TransferIn, user: CurrentUser) -> TransferAnswer:
        return TransferAnswer(**await client.create_transfer(body.spec()))

    @app.post("/transfers/batch", responses=errors)
    async def create_transfers(body: TransfersIn, user: CurrentUser) -> TransferResults:
        specs = [transfer.spec() for transfer in body.transfers]
        results = await client.create_transfers(specs)
        return TransferResults(
            results=[
                TransferResult(error=_problem(r))
                if isinstance(r, RealmError)
                else TransferResult(**r)
                for r in results
            ]
        )

    @app.get("/transfers/{transfer_id}", responses=errors)
    async def get_transfer(transfer_id: str, user: CurrentUser) -> Transfer:
        return Transfer(**await client.get_transfer(transfer_id))

    @app.post("/transfers/{pending_id}/post", status_code=201, responses=errors)
    async def post_pending(pending_id: str, body: PostIn, user: CurrentUser) -> TransferAnswer:
        return TransferAnswer(**await client.post_pending(pending_id, body.id, body.amount))

    @app.post("/transfers/{pending_id}/void", status_code=201, responses=errors)
    async def void_pending(pending_id: str, body: VoidIn, user: CurrentUser) -> TransferAnswer:
        return TransferAnswer(**await client.void_pending(pending_id, body.id))

    return app


@serve.deployment
@serve.ingress()
class LedgerIngress(ClientIngress):
    make_client = staticmethod(LedgerClient)
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(LedgerIngress, settings)
