"""Samples and events in memory, by owner and name, with the window functions rules use.

A series is a name plus a label set; its samples are ``(t, value)`` pairs with
``t`` in wall-clock seconds, kept in arrival order (out-of-order samples are
dropped, as Prometheus does) for ``retention_s`` and at most
``max_samples_per_series``. Events (name, labels, severity, data) are kept the
same way for event rules.

Rules find their series through an index: per owner and name, each ``label=value``
lists the series holding it (in the order they were made), so a rule with an
equality matcher (or a regex that is a plain alternation, ``x=~"a|b"``) reads only
the series it can match instead of every series of its name; its other matchers
(``!=``, ``!~``, real regexes) then filter those.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from actors.monitor.model import Labels, Matcher, fingerprint, matches_all


@dataclass
class Series:
    name: str
    labels: Labels
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    fp: str = ""  #: the fingerprint of its labels
    serial: int = 0  #: the order series were made in (the index keeps answers in it)


@dataclass
class Event:
    at: float
    labels: Labels
    data: dict[str, Any]


Posted = tuple[int, Event]  #: an event in the index, after its serial


class SeriesStore:
    """Every series and event of one evaluator (see the module's docstring)."""

    def __init__(
        self, *, max_samples: int, max_series_per_owner: int, max_events: int, max_bytes: int
    ) -> None:
        self.max_samples = max_samples
        self.max_series = max_series_per_owner
        self.max_events = max_events
        self.max_bytes = max_bytes
        #: Bytes each owner holds: label sets of its series, events' labels and data.
        self.bytes: dict[str, int] = {}
        self.series: dict[tuple[str, str], dict[str, Series]] = {}  #: (owner, name) -> fp -> series
        #: (owner, name) -> (label, value) -> the series holding it, by fingerprint.
        self.postings: dict[tuple[str, str], dict[tuple[str, str], dict[str, Series]]] = {}
        self.serial = 0
        self.counts: dict[str, int] = {}  #: series per owner
        self.events: dict[tuple[str, str], deque[Event]] = {}
        #: (owner, name) -> (label, value) -> the kept events holding it, oldest first,
        #: each with its serial (the order events came in).
        self.event_postings: dict[tuple[str, str], dict[tuple[str, str], deque[Posted]]] = {}
        self.event_serial = 0
        self.dropped = 0  #: samples refused (over the series limit, or out of order)

    def add(self, owner: str, name: str, labels: Labels, at: float, value: float) -> bool:
        by_fp = self.series.setdefault((owner, name), {})
        key = fingerprint(labels)
        series = by_fp.get(key)
        if series is None:
            size = series_bytes(name, labels, self.max_samples)
            if (
                self.counts.get(owner, 0) >= self.max_series
                or self.bytes.get(owner, 0) + size > self.max_bytes
            ):
                self.dropped += 1
                return False
            self.serial += 1
            series = Series(name, labels, deque(maxlen=self.max_samples), key, self.serial)
            by_fp[key] = series
            postings = self.postings.setdefault((owner, name), {})
            for pair in labels.items():
                postings.setdefault(pair, {})[key] = series
            self.counts[owner] = self.counts.get(owner, 0) + 1
            self.bytes[owner] = self.bytes.get(owner, 0) + size
        if series.samples and at < series.samples[-1][0]:
            self.dropped += 1
            return False
        series.samples.append((at, value))
        return True

    def add_event(
        self, owner: str, name: str, labels: Labels, at: float, data: dict[str, Any]
    ) -> bool:
        size = event_bytes(name, labels, data)
        if self.bytes.get(owner, 0) + size > self.max_bytes:
            self.dropped += 1
            return False
        kept = self.events.setdefault((owner, name), deque(maxlen=self.max_events))
        postings = self.event_postings.setdefault((owner, name), {})
        if len(kept) == kept.maxlen:
            old = kept[0]
            self.bytes[owner] -= event_bytes(name, old.labels, old.data)
            _unpost(postings, old)
        event = Event(at, labels, data)
        kept.append(event)
        self.event_serial += 1
        for pair in labels.items():
            postings.setdefault(pair, deque()).append((self.event_serial, event))
        self.bytes[owner] = self.bytes.get(owner, 0) + size
        return True

    def matching(self, owner: str, name: str, matchers: list[Matcher]) -> Iterator[Series]:
        """The series of ``name`` that every matcher matches, in the order they were made."""
        by_fp = self.series.get((owner, name))
        if not by_fp:
            return
        postings = self.postings[(owner, name)]
        lists: list[dict[str, Series]] = []
        rest: list[Matcher] = []
        for matcher in matchers:
            values = matcher.required
            if values is None:
                rest.append(matcher)
            elif len(values) == 1:
                lists.append(postings.get((matcher.name, next(iter(values))), {}))
            else:
                merged = [s for v in values for s in postings.get((matcher.name, v), {}).values()]
                merged.sort(key=lambda s: s.serial)
                lists.append({s.fp: s for s in merged})
        pool: Iterable[Series] = by_fp.values()
        if lists:
            lists.sort(key=len)
            pool = lists[0].values()
            if len(lists) > 1:
                pool = [s for s in pool if all(s.fp in other for other in lists[1:])]
        for series in pool:
            if not rest or matches_all(rest, series.labels):
                yield series

    def events_in(
        self, owner: str, name: str, matchers: list[Matcher], since: float, until: float
    ) -> Iterator[Event]:
        """The events of ``name`` in ``(since, until]`` that every matcher matches, in the
        order they came in."""
        kept = self.events.get((owner, name))
        if not kept:
            return
        postings = self.event_postings[(owner, name)]
        best: tuple[int, Matcher, Iterable[Posted]] | None = None
        for matcher in matchers:
            values = matcher.required
            if values is None:
                continue
            found = [postings[(matcher.name, v)] for v in values if (matcher.name, v) in postings]
            size = sum(len(f) for f in found)
            if best is None or size < best[0]:
                pool = found[0] if len(found) == 1 else heapq.merge(*found)
                best = (size, matcher, pool)
        if best is None:
            events: Iterable[Event] = kept
            rest = matchers
        else:
            events = (event for _, event in best[2])
            rest = [m for m in matchers if m is not best[1]]
        for event in events:
            if since < event.at <= until and (not rest or matches_all(rest, event.labels)):
                yield event

    def prune(self, before: float) -> None:
        """Forget samples and events at or before ``before``, and empty series."""
        for key, by_fp in list(self.series.items()):
            for fp, series in list(by_fp.items()):
                samples = series.samples
                while samples and samples[0][0] <= before:
                    samples.popleft()
                if not samples:
                    del by_fp[fp]
                    postings = self.postings[key]
                    for pair in series.labels.items():
                        posting = postings[pair]
                        del posting[fp]
                        if not posting:
                            del postings[pair]
                    self.counts[key[0]] -= 1
                    self.bytes[key[0]] -= series_bytes(series.name, series.labels, self.max_samples)
            if not by_fp:
                del self.series[key]
                del self.postings[key]
        for key, events in list(self.events.items()):
            indexed = self.event_postings[key]
            while events and events[0].at <= before:
                old = events.popleft()
                self.bytes[key[0]] -= event_bytes(key[1], old.labels, old.data)
                _unpost(indexed, old)
            if not events:
                del self.events[key]
                del self.event_postings[key]

    def size(self) -> int:
        return sum(len(s.samples) for by_fp in self.series.values() for s in by_fp.values()) + sum(
            len(e) for e in self.events.values()
        )

    def dump(self) -> list[tuple[str, str, Labels, list[tuple[float, float]]]]:
        return [
            (owner, s.name, s.labels, list(s.samples))
            for (owner, _), by_fp in self.series.items()
            for s in by_fp.values()
        ]

    def dump_events(self) -> list[tuple[str, str, list[Event]]]:
        return [(owner, name, list(events)) for (owner, name), events in self.events.items()]


def _unpost(postings: dict[tuple[str, str], deque[Posted]], old: Event) -> None:
    """Take the oldest kept event out of the index: it is first in each of its postings."""
    for pair in old.labels.items():
        posting = postings[pair]
        if posting and posting[0][1] is old:
            posting.popleft()
        if not posting:
            del postings[pair]


def series_bytes(name: str, labels: Labels, max_samples: int) -> int:
    """What a series may come to hold: its name and labels, and its samples at most."""
    return 64 + len(name) + sum(len(k) + len(v) for k, v in labels.items()) + 16 * max_samples


def event_bytes(name: str, labels: Labels, data: dict[str, Any]) -> int:
    labels_size = sum(len(k) + len(v) for k, v in labels.items())
    return 64 + len(name) + labels_size + len(orjson.dumps(data))


_time = operator.itemgetter(0)


def window(
    samples: deque[tuple[float, float]], since: float, until: float
) -> list[tuple[float, float]]:
    """The points in ``(since, until]``; samples are in time order (``add`` keeps them so)."""
    if not samples:
        return []
    if samples[0][0] > since and samples[-1][0] <= until:
        return list(samples)
    lo = bisect.bisect_right(samples, since, key=_time)
    hi = bisect.bisect_right(samples, until, lo=lo, key=_time)
    return list(itertools.islice(samples, lo, hi))


def reduce(fn: str, points: list[tuple[float, float]]) -> float | None:
    """``fn`` over a window's points (None when it has no value, as PromQL gives none)."""
    if fn == "count":
        return float(len(points))
    if not points:
        return None
    values = [v for _, v in points]
    if fn == "avg":
        return sum(values) / len(values)
    if fn == "max":
        return max(values)
    if fn == "min":
        return min(values)
    if fn == "sum":
        return sum(values)
    if fn == "last":
        return values[-1]
    if len(points) < 2:
        return None
    if fn == "delta":  # a gauge's change over the window
        return values[-1] - values[0]
    grown = 0.0
    for (_, before), (_, after) in itertools.pairwise(points):
        grown += after - before if after >= before else after  # a counter reset
    if fn == "increase":
        return grown
    span = points[-1][0] - points[0][0]
    return grown / span if span > 0 else None  # rate


def combine(fn: str, values: list[float]) -> float:
    """Values of several series aggregated by ``by`` labels."""
    if fn in ("max",):
        return max(values)
    if fn in ("min",):
        return min(values)
    if fn in ("avg", "last"):
        return sum(values) / len(values)
    return sum(values)  # sum, count, rate, increase


__all__ = ["Event", "Series", "SeriesStore", "combine", "reduce", "window"]
