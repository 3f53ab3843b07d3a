"""The ledger (service 8): double-entry accounts and transfers, sharded, with
two-phase commit across shards (``docs/ledger.md``).

- ``client``: ``LedgerClient``, the ledger's public face (routing, batching,
  posts and voids of pending transfers, totals).
- ``model``: the domain types, ``AccountSpec``, ``TransferSpec``, ``Kind``,
  ``chains``, ``unit_outcomes``, the sides ``DEBIT``/``CREDIT``/``BOTH`` and
  ``Leg``, and their stored forms ``BalancesRecord``/``AnswerRecord``.
- ``books``: ``Books``, one shard's accounts, transfers and history in memory,
  and the balance rules.
- ``shard``: ``LedgerShard``, the journaled shard and its side of two-phase commit.
- ``coordinator``: ``TxCoordinator``, the decision log and 2PC driver;
  ``RemoteShard``, a shard actor seen through coalescers.
- ``actors``: the Ray actors ``LedgerShardActor`` and ``TxCoordinatorActor``,
  wired to each other; ``shard_actors``/``coordinator_actors`` (``Shards``).
- ``settings``: ``LedgerSettings`` (``REALM_LEDGER_*``).
- ``errors``: the ledger's errors (``InsufficientFunds``, ``IdConflict``...).
"""
