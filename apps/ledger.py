"""HTTP front of the ledger (service 8), under ``/ledger``.

Every route takes a principal with a scope: ``ledger:read`` (accounts,
history, transfers), ``ledger:transfer`` (transfers, posts, voids) or
``ledger:accounts`` (creating accounts); a signed-in user holds all three, an
API key those it was granted. The caller's ``user_id`` is the owner the
ledger acts for: accounts are theirs, transfers debit only their accounts,
and another user's account or transfer answers 404 as a missing one does
(``docs/ledger.md``, "Owners").

Bodies (``apps.models.Body``: strict, unknown fields refused) become the
ledger's domain types (``AccountSpec``, ``TransferSpec``) here; numbers are
strict (a JSON ``1.0``, ``"1"`` or ``false`` is refused, not converted) and
bounded. A route for one thing answers a refusal with its own status in the
error envelope (404 ``account_not_found``, 409 ``id_conflict``, 422
``insufficient_funds``...); a batch answers 200 with one result per item,
each either the thing or its error, as TigerBeetle does. Malformed input
refuses the whole request with 422 (or 413 for too many items) and changes
nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query
from pydantic import BaseModel, Field, StrictInt
from ray import serve
from ray.serve import Application

from actors.auth.client import Principal
from actors.ledger.client import LedgerClient
from actors.ledger.model import (
    MAX_AMOUNT,
    MAX_CODE,
    MAX_LEDGER,
    MAX_NS,
    MAX_TIMEOUT_S,
    AccountSpec,
    Kind,
    TransferSpec,
)
from actors.runtime.errors import InvalidInput, RealmError
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.models import Body
from apps.signin import Scope

ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
Id = Annotated[str, Field(pattern=ID_PATTERN, description="1-128 of [A-Za-z0-9._:-]")]
PathId = Annotated[str, Path(pattern=ID_PATTERN, description="1-128 of [A-Za-z0-9._:-]")]
Nanos = Annotated[int, Query(ge=0, le=MAX_NS, description="ns since the epoch, 0..2**63-1")]
Limit = Annotated[
    int,
    Query(ge=1, le=100_000, description="Entries per page; at most REALM_LEDGER_HISTORY_PAGE_MAX "
          "(1,000 by default): more is refused with 422."),
]  # fmt: skip
#: The callers of the routes, by the scope each needs.
Reader = Annotated[Principal, Scope("ledger:read")]
Payer = Annotated[Principal, Scope("ledger:transfer")]
Opener = Annotated[Principal, Scope("ledger:accounts")]
Amount = Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT, description="Minor units, 1..2**63-1.")]
Ledger = Annotated[StrictInt, Field(ge=1, le=MAX_LEDGER, description="Currency, 1..2**32-1.")]
Code = Annotated[StrictInt, Field(ge=0, le=MAX_CODE, description="Your classification.")]
AccountFlag = Literal["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"]
TransferFlag = Literal["linked", "pending", "post_pending_transfer", "void_pending_transfer"]


class AccountIn(Body):
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


class AccountsIn(Body):
    accounts: list[AccountIn] = Field(
        ..., min_length=1, description="At most REALM_LEDGER_MAX_BATCH (1,000): more is 413."
    )


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


class TransferIn(Body):
    id: Id
    debit_account_id: Id | None = Field(None, description="Optional for a post or void.")
    credit_account_id: Id | None = Field(None, description="Optional for a post or void.")
    amount: Amount | None = Field(None, description="For a post: part of the pending amount.")
    ledger: Ledger | None = Field(None, description="Optional for a post or void.")
    code: Code = 0
    flags: list[TransferFlag] = []
    pending_id: Id | None = Field(None, description="The pending transfer to post or void.")
    timeout_s: Annotated[StrictInt, Field(ge=0, le=MAX_TIMEOUT_S)] = Field(
        0,
        description="A pending transfer is voided this long after it was made; 0: never. "
        "At most REALM_LEDGER_MAX_TIMEOUT_S (30 days by default).",
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


class TransfersIn(Body):
    transfers: list[TransferIn] = Field(
        ..., min_length=1, description="At most REALM_LEDGER_MAX_BATCH (1,000): more is 413."
    )


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
    debit_account: Balances | None = Field(
        ..., description="Its balances right after this transfer (null if not yours)."
    )
    credit_account: Balances | None = Field(
        ..., description="The same; null when the credit account is another user's."
    )


class TransferResult(BaseModel):
    transfer: Transfer | None = None
    debit_account: Balances | None = None
    credit_account: Balances | None = None
    error: Problem | None = None


class TransferResults(BaseModel):
    results: list[TransferResult]


class PostIn(Body):
    id: Id = Field(..., description="Id of the post transfer itself.")
    amount: Amount | None = Field(None, description="Post only this much; the rest is released.")


class VoidIn(Body):
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
        "ledger",
        description="Double-entry accounts and transfers (TigerBeetle's rules), sharded, "
        "with two-phase commit across shards. Accounts belong to the user who creates "
        "them; a transfer debits one of the caller's accounts and may credit anyone's.",
        settings=settings,
    )

    @app.post("/accounts")
    async def create_accounts(body: AccountsIn, user: Opener) -> AccountResults:
        specs = [account.spec() for account in body.accounts]
        results = await client.create_accounts(specs, owner=user.user_id)
        return AccountResults(
            results=[
                AccountResult(error=_problem(r))
                if isinstance(r, RealmError)
                else AccountResult(account=Account(**r))
                for r in results
            ]
        )

    @app.get("/accounts/{account_id}")
    async def get_account(account_id: PathId, user: Reader) -> Account:
        return Account(**await client.get_account(account_id, owner=user.user_id))

    @app.get("/accounts/{account_id}/history")
    async def history(
        account_id: PathId,
        user: Reader,
        since_ns: Nanos = 0,
        until_ns: Nanos | None = None,
        after_ns: Annotated[int | None, Query(ge=0, le=MAX_NS, description="next_after_ns")] = None,
        limit: Limit = 100,
    ) -> History:
        page = await client.history(
            account_id, since_ns=since_ns, until_ns=until_ns, after_ns=after_ns, limit=limit,
            owner=user.user_id,
        )  # fmt: skip
        return History(**page)

    @app.post("/transfers", status_code=201)
    async def create_transfer(body: TransferIn, user: Payer) -> TransferAnswer:
        return TransferAnswer(**await client.create_transfer(body.spec(), owner=user.user_id))

    @app.post("/transfers/batch")
    async def create_transfers(body: TransfersIn, user: Payer) -> TransferResults:
        specs = [transfer.spec() for transfer in body.transfers]
        results = await client.create_transfers(specs, owner=user.user_id)
        return TransferResults(
            results=[
                TransferResult(error=_problem(r))
                if isinstance(r, RealmError)
                else TransferResult(**r)
                for r in results
            ]
        )

    @app.get("/transfers/{transfer_id}")
    async def get_transfer(transfer_id: PathId, user: Reader) -> Transfer:
        return Transfer(**await client.get_transfer(transfer_id, owner=user.user_id))

    @app.post("/transfers/{pending_id}/post", status_code=201)
    async def post_pending(pending_id: PathId, body: PostIn, user: Payer) -> TransferAnswer:
        answer = await client.post_pending(pending_id, body.id, body.amount, owner=user.user_id)
        return TransferAnswer(**answer)

    @app.post("/transfers/{pending_id}/void", status_code=201)
    async def void_pending(pending_id: PathId, body: VoidIn, user: Payer) -> TransferAnswer:
        return TransferAnswer(**await client.void_pending(pending_id, body.id, owner=user.user_id))

    return app


@serve.deployment
@serve.ingress()
class LedgerIngress(ClientIngress):
    make_client = staticmethod(LedgerClient)
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(LedgerIngress, settings)
