"""Settings of the ledger: ``REALM_LEDGER_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.ledger.model import MAX_TIMEOUT_S
from actors.runtime.settings import Section


class LedgerSettings(Section, service="ledger"):
    """The ledger: read once, where the deployment is built."""

    shards: int = Field(4, ge=1, le=256)
    """Ledger shard actors; accounts are spread over them by rendezvous hashing of the account
    id (fixed for a deployment: changing it moves accounts).
    """

    coordinators: int = Field(2, ge=1, le=256)
    """Two-phase-commit coordinator actors; a cross-shard transfer goes to the one its (first)
    transfer id hashes to.
    """

    max_batch: int = Field(1_000, ge=1, le=100_000)
    """Most accounts or transfers in one batch request."""

    history_page_max: int = Field(1_000, ge=1, le=100_000)
    """Most history entries in one page (the largest ``limit`` of a history request)."""

    max_accounts_per_owner: int = Field(1_000, ge=1, le=10_000_000)
    """Most accounts one owner (a user, and the API keys acting for them) may have; one more
    is refused with ``limit_reached`` (403).
    """

    max_timeout_s: int = Field(30 * 86_400, ge=1, le=MAX_TIMEOUT_S)
    """Longest ``timeout_s`` of a pending transfer, in seconds (30 days by default).
    """

    pending_sweep_s: float = Field(1.0, gt=0)
    """How often shards (and coordinators) void pending transfers whose timeout passed."""

    in_doubt_after_s: float = Field(5.0, gt=0)
    """A shard asks the coordinator about a transaction it prepared this long ago and heard
    nothing more of; a coordinator re-drives stalled ones as often.
    """
