"""Chunk files: a stream's entries in columns (``ChunkData``), MessagePack, compressed
with zstd; and what a read of one gives (``Chunk``): the columns, plus the arrays
metric queries and line searches run over (numpy). Only the shards read and write
chunks: a process that just ships logs (``actors.logs.handler``) never imports this.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import zstandard

from actors.logs.model import ChunkData, Entry

ZSTD_LEVEL = 3

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ChunkData)


def encode_chunk(entries: list[Entry]) -> bytes:
    """Entries (sorted by time) as a compressed chunk."""
    return encoded_chunk(entries)[0]


def encoded_chunk(entries: list[Entry] | ChunkData) -> tuple[bytes, Chunk]:
    """Entries (sorted by time; or their columns) as a compressed chunk, and that chunk
    decoded (what a read of the file would give, without reading it)."""
    data = entries if isinstance(entries, ChunkData) else ChunkData.of(entries)
    raw = _encoder.encode(data)
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw), Chunk.of(data, len(raw))


#: What joins a chunk's lines for a substring search (``Chunk.text``).
LINE_SEP = "\x00"


class Chunk:
    """A decoded chunk: columns, plus what metric queries need as arrays."""

    __slots__ = ("_cum", "_text", "_ts", "data", "size")

    def __init__(self, blob: bytes) -> None:
        raw = zstandard.ZstdDecompressor().decompress(blob)
        self._set(_decoder.decode(raw), len(raw))

    @classmethod
    def of(cls, data: ChunkData, size: int) -> Chunk:
        made = cls.__new__(cls)
        made._set(data, size)
        return made

    def _set(self, data: ChunkData, size: int) -> None:
        self.data: ChunkData = data
        self.size = size
        self._ts: np.ndarray[Any, Any] | None = None
        self._cum: np.ndarray[Any, Any] | None = None
        self._text: tuple[str, np.ndarray[Any, Any]] | None = None

    @property
    def ts(self) -> np.ndarray[Any, Any]:
        if self._ts is None:
            self._ts = np.asarray(self.data.ts, dtype=np.int64)
        return self._ts

    @property
    def cumulative_bytes(self) -> np.ndarray[Any, Any]:
        """``cum[i]``: bytes of the lines before entry ``i`` (length count + 1)."""
        if self._cum is None:
            sizes = np.fromiter((len(s.encode()) for s in self.data.lines), np.int64)
            self._cum = np.concatenate(([0], np.cumsum(sizes)))
        return self._cum

    def text(self) -> tuple[str, np.ndarray[Any, Any]]:
        """The lines joined by ``LINE_SEP``, and where each starts in it (length count + 1:
        the last is where a line after the last would start). A substring search over it
        runs at C speed instead of one Python test per line; a needle without
        ``LINE_SEP`` cannot match across two lines. Made on the first ``|=`` that reads
        the chunk, kept with it (as much again as the lines, while it is cached)."""
        if self._text is None:
            lines = self.data.lines
            sizes = np.fromiter(map(len, lines), np.int64, len(lines)) + 1
            starts = np.concatenate(([0], np.cumsum(sizes)))
            self._text = (LINE_SEP.join(lines), starts)
        return self._text

    def entries(self) -> list[Entry]:
        d = self.data
        return list(zip(d.ts, d.seq, d.lines, d.metadata, strict=True))


def steps(start_ns: int, end_ns: int, step_ns: int) -> np.ndarray[Any, Any]:
    return np.arange(start_ns, end_ns + 1, step_ns, dtype=np.int64)


def window_sums(
    ts: np.ndarray[Any, Any],
    at: np.ndarray[Any, Any],
    range_ns: int,
    cumulative: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """For each step ``t`` in ``at``: how many of the sorted ``ts`` lie in
    ``(t - range, t]``, or with ``cumulative`` (see ``Chunk.cumulative_bytes``) their bytes."""
    high = np.searchsorted(ts, at, side="right")
    low = np.searchsorted(ts, at - range_ns, side="right")
    if cumulative is None:
        return (high - low).astype(np.float64)
    return (cumulative[high] - cumulative[low]).astype(np.float64)


__all__ = [
    "LINE_SEP",
    "ZSTD_LEVEL",
    "Chunk",
    "encode_chunk",
    "encoded_chunk",
    "steps",
    "window_sums",
]
