"""Durable storage behind one small interface.

A store keeps, for each *stream* (one durable actor's key space):

- a journal: records numbered 1, 2, 3, ... appended in order;
- at most one snapshot: opaque bytes valid as of one journal number; writing it
  drops the journal records it covers;
- counters (restart counts and the like).

``append`` names the head it expects (the last number it knows of). If the
stream has moved past that, another incarnation of the actor wrote to it and the
append fails with ``JournalConflict``, so a stale actor cannot interleave its
writes with its successor's.

Two implementations: ``SQLiteStore`` (embedded default, a file per actor in
the data dir, WAL) and ``RedisStore`` (clusters; the same Redis that gives Ray's GCS its
fault tolerance). Both pass ``tests/integration/test_store_contract.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from actors.runtime.errors import JournalConflict, StoreUnavailable
from actors.runtime.settings import Settings


class Store(Protocol):
    async def append(self, stream: str, head: int, records: Sequence[bytes]) -> int:
        """Append ``records`` as numbers head+1, head+2, ...; return the new head."""

    async def read(self, stream: str, after: int = 0) -> list[tuple[int, bytes]]:
        """Journal records numbered above ``after``, in order."""

    async def head(self, stream: str) -> int:
        """The number of the last record appended (0 for a new stream)."""

    async def write_snapshot(self, stream: str, seq: int, data: bytes) -> None:
        """Keep ``data`` as the state after record ``seq``; drop records up to it."""

    async def read_snapshot(self, stream: str) -> tuple[int, bytes] | None:
        """The latest snapshot as ``(seq, data)``, or None."""

    async def incr(self, key: str, by: int = 1) -> int:
        """Add to a counter and return its new value."""

    async def delete_stream(self, stream: str) -> None:
        """Forget a stream: journal, snapshot and head."""

    async def close(self) -> None: ...


def open_store(settings: Settings, actor: str) -> Store:
    """The store of the actor named ``actor``: Redis when ``store_url`` is set,
    else an SQLite file of its own, ``<data_dir>/<store_prefix>/<actor>.sqlite3``.

    A file per actor because SQLite takes one writer per file: actors sharing
    one would queue for its write lock (a cross-shard ledger transfer commits
    in three actors in a row)."""
    if settings.store_url:
        return RedisStore(settings.store_url, prefix=settings.store_prefix)
    path = Path(settings.data_dir) / settings.store_prefix / f"{_file_name(actor)}.sqlite3"
    return SQLiteStore(path, synchronous=settings.sqlite_synchronous)


def _file_name(actor: str) -> str:
    """``actor`` as a file name: anything but letters, digits, '-', '_' and '.' is escaped."""
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in actor)


# --- SQLite ----------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    stream TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (stream, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    stream TEXT PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""


class SQLiteStore:
    """SQLite in WAL mode; every call runs on one private thread, off the event loop.

    Running off the loop is what makes group commit happen: while one commit
    is on the thread, the actor keeps taking calls and their records queue up
    for the next one.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as error:
            # The path and SQLite's words are for the log: a fault's details never
            # reach an answer (see actors.runtime.errors).
            raise StoreUnavailable(f"sqlite: {error}", path=str(self.path)) from error

    @staticmethod
    def _head(db: sqlite3.Connection, stream: str) -> int:
        row = db.execute("SELECT seq FROM heads WHERE stream = ?", (stream,)).fetchone()
        return int(row[0]) if row else 0

    def _append(self, stream: str, head: int, records: Sequence[bytes]) -> int:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            current = self._head(db, stream)
            if current != head:
                raise JournalConflict(stream=stream, expected=head, found=current)
            db.executemany(
                "INSERT INTO journal (stream, seq, data) VALUES (?, ?, ?)",
                [(stream, head + i, data) for i, data in enumerate(records, 1)],
            )
            new_head = head + len(records)
            db.execute(
                "INSERT INTO heads (stream, seq) VALUES (?, ?) "
                "ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq",
                (stream, new_head),
            )
            db.execute("COMMIT")
            return new_head
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def append(self, stream: str, head: int, records: Sequence[bytes]) -> int:
        if not records:
            return head
        result: int = await self._run(self._append, stream, head, list(records))
        return result

    def _read(self, stream: str, after: int) -> list[tuple[int, bytes]]:
        rows = self._connect().execute(
            "SELECT seq, data FROM journal WHERE stream = ? AND seq > ? ORDER BY seq",
            (stream, after),
        )
        return [(int(seq), bytes(data)) for seq, data in rows]

    async def read(self, stream: str, after: int = 0) -> list[tuple[int, bytes]]:
        result: list[tuple[int, bytes]] = await self._run(self._read, stream, after)
        return result

    async def head(self, stream: str) -> int:
        result: int = await self._run(lambda: self._head(self._connect(), stream))
        return result

    def _write_snapshot(self, stream: str, seq: int, data: bytes) -> None:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO snapshots (stream, seq, data) VALUES (?, ?, ?) "
                "ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, data = excluded.data "
                "WHERE excluded.seq >= snapshots.seq",
                (stream, seq, data),
            )
            db.execute("DELETE FROM journal WHERE stream = ? AND seq <= ?", (stream, seq))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def write_snapshot(self, stream: str, seq: int, data: bytes) -> None:
        await self._run(self._write_snapshot, stream, seq, data)

    def _read_snapshot(self, stream: str) -> tuple[int, bytes] | None:
        row = (
            self._connect()
            .execute("SELECT seq, data FROM snapshots WHERE stream = ?", (stream,))
            .fetchone()
        )
        return (int(row[0]), bytes(row[1])) if row else None

    async def read_snapshot(self, stream: str) -> tuple[int, bytes] | None:
        result: tuple[int, bytes] | None = await self._run(self._read_snapshot, stream)
        return result

    def _incr(self, key: str, by: int) -> int:
        row = (
            self._connect()
            .execute(
                "INSERT INTO counters (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value RETURNING value",
                (key, by),
            )
            .fetchone()
        )
        return int(row[0])

    async def incr(self, key: str, by: int = 1) -> int:
        result: int = await self._run(self._incr, key, by)
        return result

    def _delete_stream(self, stream: str) -> None:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        for table in ("journal", "heads", "snapshots"):
            db.execute(f"DELETE FROM {table} WHERE stream = ?", (stream,))
        db.execute("COMMIT")

    async def delete_stream(self, stream: str) -> None:
        await self._run(self._delete_stream, stream)

    async def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(_close)
        self._executor.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"<SQLiteStore path={str(self.path)!r}>"


# --- Redis -----------------------------------------------------------------

# Check the head and append in one atomic step: a Redis transaction would not
# roll back the records that did go in when one fails.
_APPEND_LUA = """
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local expected = tonumber(ARGV[1])
if head ~= expected then
  return redis.error_reply('CONFLICT ' .. head)
end
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], '0-' .. (expected + i - 1), 'd', ARGV[i])
end
local new_head = expected + #ARGV - 1
redis.call('SET', KEYS[2], new_head)
return new_head
"""

_SNAPSHOT_LUA = """
local current = tonumber(redis.call('HGET', KEYS[1], 'seq') or '-1')
local seq = tonumber(ARGV[1])
if seq >= current then
  redis.call('HSET', KEYS[1], 'seq', seq, 'data', ARGV[2])
end
redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. (seq + 1))
return seq
"""


class RedisStore:
    """Redis: a stream per journal, a hash per snapshot, plain keys for heads.

    Keys share a ``{stream}`` hash tag so they live in one Redis Cluster slot.
    """

    def __init__(self, url: str, *, prefix: str = "realm") -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.prefix = prefix
        self._redis = aioredis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._append_script = self._redis.register_script(_APPEND_LUA)
        self._snapshot_script = self._redis.register_script(_SNAPSHOT_LUA)

    def _key(self, stream: str, kind: str) -> str:
        return f"{self.prefix}:{{{stream}}}:{kind}"

    async def _run(self, coro: Any) -> Any:
        import redis.exceptions

        try:
            return await coro
        except redis.exceptions.ResponseError as error:
            if str(error).startswith("CONFLICT"):
                raise
            raise StoreUnavailable(f"redis: {error}", url=redacted(self.url)) from error
        except (redis.exceptions.RedisError, OSError) as error:
            raise StoreUnavailable(f"redis: {error}", url=redacted(self.url)) from error

    async def append(self, stream: str, head: int, records: Sequence[bytes]) -> int:
        import redis.exceptions

        if not records:
            return head
        keys = [self._key(stream, "journal"), self._key(stream, "head")]
        try:
            new_head = await self._run(self._append_script(keys=keys, args=[head, *records]))
        except redis.exceptions.ResponseError as error:
            found = int(str(error).split()[1])
            raise JournalConflict(stream=stream, expected=head, found=found) from error
        return int(new_head)

    async def read(self, stream: str, after: int = 0) -> list[tuple[int, bytes]]:
        entries = await self._run(self._redis.xrange(self._key(stream, "journal"), f"(0-{after}"))
        return [(int(entry_id.split(b"-")[1]), fields[b"d"]) for entry_id, fields in entries]

    async def head(self, stream: str) -> int:
        value = await self._run(self._redis.get(self._key(stream, "head")))
        return int(value or 0)

    async def write_snapshot(self, stream: str, seq: int, data: bytes) -> None:
        keys = [self._key(stream, "snapshot"), self._key(stream, "journal")]
        await self._run(self._snapshot_script(keys=keys, args=[seq, data]))

    async def read_snapshot(self, stream: str) -> tuple[int, bytes] | None:
        found = await self._run(self._redis.hgetall(self._key(stream, "snapshot")))
        if not found:
            return None
        return int(found[b"seq"]), found[b"data"]

    async def incr(self, key: str, by: int = 1) -> int:
        value = await self._run(self._redis.incrby(f"{self.prefix}:counter:{key}", by))
        return int(value)

    async def delete_stream(self, stream: str) -> None:
        kinds = ("journal", "head", "snapshot")
        await self._run(self._redis.delete(*(self._key(stream, kind) for kind in kinds)))

    async def close(self) -> None:
        await self._redis.aclose()

    def __repr__(self) -> str:
        return f"<RedisStore url={redacted(self.url)!r} prefix={self.prefix!r}>"


def redacted(url: str) -> str:
    """``url`` without its password (``redis://user:***@host:6379/0``), fit for a
    log line or an error's details. Query parameters go too: they can carry one."""
    parts = urlsplit(url)
    try:
        if parts.password is None and not parts.query:
            return url
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
    except ValueError:  # a port that is not a number: show nothing of it
        return f"{parts.scheme}://(unreadable)"
    if parts.username is not None or parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc}"
    return f"{parts.scheme}://{netloc}{parts.path}"
