"""Gold: ledger accounts, one per player and one for the world.

Loot is a transfer from the world account to the player's (its id made from
the room and the pickup, so a room replaying its log after a crash repeats
the same transfer, which the ledger answers once). A trade is a linked chain:
the gold to the other player and the fee to the world, all or nothing. The
world account may go below zero (it is where gold comes from); a player's may
not. Money is conserved: the sum over every gold account is always zero.
"""

from __future__ import annotations

from typing import Any

from actors.game.settings import GameSettings
from actors.ledger.client import AccountSpec, LedgerClient, TransferSpec

WORLD_ACCOUNT = "game.world"
#: Ledger ``code`` of gold transfers: loot and trades.
LOOT, TRADE, FEE = 1, 2, 3


def account_of(user: str) -> str:
    return f"game.gold.{user}"


def balance_of(account: dict[str, Any] | None) -> int:
    if account is None:
        return 0
    return int(account["credits_posted"]) - int(account["debits_posted"])


class Gold:
    """Gold accounts over the ledger client (the game acts as the system)."""

    def __init__(self, ledger: LedgerClient, config: GameSettings) -> None:
        self.ledger = ledger
        self.number = config.gold_ledger
        self.fee_percent = config.trade_fee_percent
        self._made: set[str] = set()

    async def _ensure(self, *accounts: str) -> None:
        missing = [a for a in accounts if a not in self._made]
        if not missing:
            return
        specs = [
            AccountSpec(a, self.number)
            if a == WORLD_ACCOUNT
            else AccountSpec(a, self.number, debits_must_not_exceed_credits=True)
            for a in missing
        ]
        answers = await self.ledger.create_accounts(specs)
        for spec, answer in zip(specs, answers, strict=True):
            if isinstance(answer, Exception) and getattr(answer, "code", "") != "id_conflict":
                raise answer
            self._made.add(spec.id)

    async def balance(self, user: str) -> int:
        await self._ensure(account_of(user))
        return balance_of(await self.ledger.get_account(account_of(user)))

    async def credit(self, user: str, amount: int, transfer_id: str) -> int:
        """Loot: ``amount`` from the world to ``user``; their balance after it."""
        account = account_of(user)
        await self._ensure(WORLD_ACCOUNT, account)
        answer = await self.ledger.create_transfer(
            TransferSpec(transfer_id, WORLD_ACCOUNT, account, amount, self.number, code=LOOT)
        )
        return balance_of(answer["credit_account"])

    def fee(self, amount: int) -> int:
        if not self.fee_percent:
            return 0
        return max(1, amount * self.fee_percent // 100)

    async def trade(self, payer: str, payee: str, amount: int, trade_id: str) -> dict[str, Any]:
        """``payer`` pays ``payee`` ``amount`` plus the fee to the world, as one linked
        chain (both or neither); a repeat of ``trade_id`` is answered once."""
        source, target = account_of(payer), account_of(payee)
        await self._ensure(WORLD_ACCOUNT, source, target)
        fee = self.fee(amount)
        chain = [
            TransferSpec(
                f"game.trade.{trade_id}",
                source,
                target,
                amount,
                self.number,
                code=TRADE,
                linked=bool(fee),
            )
        ]
        if fee:
            chain.append(
                TransferSpec(
                    f"game.trade.{trade_id}.fee", source, WORLD_ACCOUNT, fee, self.number, code=FEE
                )
            )
        answers = await self.ledger.create_transfers(chain)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return {
            "id": trade_id,
            "gold": amount,
            "fee": fee,
            "balance": balance_of(answers[-1]["debit_account"]),
        }
