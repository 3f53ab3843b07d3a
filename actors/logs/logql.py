"""A LogQL subset: the parser and the per-line evaluation.

Grammar (what Realm takes; everything else is a 422 naming the position)::

    log query    := selector stage*
    selector     := "{" matcher ("," matcher)* "}"
    matcher      := label ("=" | "!=" | "=~" | "!~") string
    stage        := ("|=" | "!=" | "|~" | "!~") string           line filter
                  | "|" ("json" | "logfmt")                       field extraction
                  | "|" label op value ("and" label op value)*    label filter
    op           := "=" | "==" | "!=" | "=~" | "!~" | ">" | ">=" | "<" | "<="
    value        := string | number
    metric query := range_fn "(" log query "[" duration "]" ")"
                  | "sum" ["by" "(" labels ")"] "(" metric query ")" ["by" "(" labels ")"]
    range_fn     := "count_over_time" | "rate" | "bytes_over_time"

Strings are double-quoted (JSON escapes) or back-quoted (raw). Regular
expressions of matchers and label filters match the whole value (as Loki's);
a line filter's ``|~`` matches anywhere in the line. A label filter with a
number compares numerically and drops the lines whose label is not a number;
``=``/``!=`` with a string compare strings. A missing label is the empty string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from actors.logs.errors import BadQuery

#: Longest query text accepted.
MAX_QUERY_CHARS = 4_096
#: Most matchers in a selector and stages in a pipeline.
MAX_MATCHERS = 32
MAX_STAGES = 32
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RANGE_FUNCTIONS = ("count_over_time", "rate", "bytes_over_time")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800, "y": 31_536_000}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_OPERATORS = ("==", "!=", "=~", "!~", ">=", "<=", "|=", "|~", "=", ">", "<", "|")

MatchOp = Literal["=", "!=", "=~", "!~"]


@dataclass(frozen=True)
class Matcher:
    """A stream selector's matcher, or a label filter's string/regex comparison."""

    name: str
    op: MatchOp
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, name: str, op: str, value: str) -> Matcher:
        pattern = None
        if op in ("=~", "!~"):
            pattern = _regex(value)
        return cls(name, op, value, pattern)  # type: ignore[arg-type]

    def matches(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(value) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{_quote(self.value)}"


@dataclass(frozen=True)
class LineFilter:
    op: Literal["|=", "!=", "|~", "!~"]
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def keeps(self, line: str) -> bool:
        if self.op == "|=":
            return self.value in line
        if self.op == "!=":
            return self.value not in line
        assert self.pattern is not None
        found = self.pattern.search(line) is not None
        return found if self.op == "|~" else not found


@dataclass(frozen=True)
class Parser:
    kind: Literal["json", "logfmt"]


@dataclass(frozen=True)
class NumberFilter:
    name: str
    op: Literal["==", "!=", ">", ">=", "<", "<="]
    value: float

    def keeps(self, labels: dict[str, str]) -> bool:
        try:
            number = float(labels.get(self.name, ""))
        except ValueError:
            return False
        if math.isnan(number):
            return False
        return _COMPARE[self.op](number, self.value)


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


@dataclass(frozen=True)
class LabelFilter:
    """One or more comparisons joined by ``and``: all must hold."""

    tests: tuple[Matcher | NumberFilter, ...]

    def keeps(self, labels: dict[str, str]) -> bool:
        for test in self.tests:
            if isinstance(test, Matcher):
                if not test.matches(labels):
                    return False
            elif not test.keeps(labels):
                return False
        return True


Stage = LineFilter | Parser | LabelFilter


@dataclass(frozen=True)
class LogQuery:
    matchers: tuple[Matcher, ...]
    stages: tuple[Stage, ...] = ()

    def selects(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    @property
    def line_only(self) -> bool:
        """Only line filters: the stream's labels come out unchanged."""
        return all(isinstance(s, LineFilter) for s in self.stages)

    @property
    def selector(self) -> str:
        return "{" + ", ".join(str(m) for m in self.matchers) + "}"

    def line_filters(self) -> list[LineFilter]:
        """The line filters before the first parser (they can run on raw lines first)."""
        found = []
        for stage in self.stages:
            if not isinstance(stage, LineFilter):
                break
            found.append(stage)
        return found

    def run(self, line: str, labels: dict[str, str]) -> dict[str, str] | None:
        """The entry's labels after the pipeline, or None if a stage drops it."""
        current = labels
        for stage in self.stages:
            if isinstance(stage, LineFilter):
                if not stage.keeps(line):
                    return None
            elif isinstance(stage, Parser):
                extracted = parse_json(line) if stage.kind == "json" else parse_logfmt(line)
                current = {**current}
                for name, value in extracted.items():
                    # an extracted name that clashes with a stream label gets "_extracted"
                    current[f"{name}_extracted" if name in labels else name] = value
            elif not stage.keeps(current):
                return None
        return current


@dataclass(frozen=True)
class MetricQuery:
    function: Literal["count_over_time", "rate", "bytes_over_time"]
    range_s: float
    log: LogQuery
    #: None: no aggregation (one series per label set); else ``sum by (these)``.
    by: tuple[str, ...] | None = None


Query = LogQuery | MetricQuery


# --- field extraction -------------------------------------------------------------


def parse_json(line: str) -> dict[str, str]:
    """Top-level and nested fields of a JSON object line, nested names joined with
    ``_`` (as Loki's ``| json``); a line that is no object gives nothing."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}
    found: dict[str, str] = {}
    if isinstance(value, dict):
        _flatten(value, "", found)
    return found


def _flatten(value: dict[str, Any], prefix: str, into: dict[str, str]) -> None:
    for key, item in value.items():
        name = _sanitize(prefix + str(key))
        if isinstance(item, dict):
            _flatten(item, name + "_", into)
        elif isinstance(item, str):
            into[name] = item
        elif isinstance(item, bool):
            into[name] = "true" if item else "false"
        elif item is None:
            into[name] = ""
        elif isinstance(item, int | float):
            into[name] = repr(item) if isinstance(item, float) else str(item)
        else:
            into[name] = orjson.dumps(item).decode()


def _sanitize(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else "_" + cleaned


_LOGFMT = re.compile(r'([^\s=]+)(?:=("(?:[^"\\]|\\.)*"|[^\s]*))?')


def parse_logfmt(line: str) -> dict[str, str]:
    """``key=value key2="quoted value" flag`` pairs (a bare key is the empty string)."""
    found: dict[str, str] = {}
    for match in _LOGFMT.finditer(line):
        key, value = match.group(1), match.group(2) or ""
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                value = value[1:-1]
        found[_sanitize(key)] = value
    return found


# --- parsing ----------------------------------------------------------------------


def parse(text: str) -> Query:
    """A log or metric query, or ``BadQuery`` saying what and where."""
    if len(text) > MAX_QUERY_CHARS:
        raise BadQuery(f"a query has at most {MAX_QUERY_CHARS} characters")
    reader = _Reader(text)
    query = reader.query()
    reader.skip()
    if not reader.done:
        reader.fail("unexpected text after the query")
    return query


def parse_log(text: str) -> LogQuery:
    """A log query only (tail, delete)."""
    query = parse(text)
    if not isinstance(query, LogQuery):
        raise BadQuery("a log query is needed here, not a metric query")
    return query


def parse_duration(text: str) -> float:
    """``1h30m``, ``5m``, ``250ms`` in seconds."""
    position, total = 0, 0.0
    while position < len(text):
        match = _DURATION.match(text, position)
        if match is None:
            raise BadQuery(f"not a duration: {text!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not text or total <= 0:
        raise BadQuery(f"not a duration: {text!r}")
    return total


def _regex(value: str) -> re.Pattern[str]:
    try:
        return re.compile(value)
    except re.error as error:
        raise BadQuery(f"bad regular expression {value!r}: {error}") from None


def _quote(value: str) -> str:
    return orjson.dumps(value).decode()


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    @property
    def done(self) -> bool:
        return self.at >= len(self.text)

    def fail(self, message: str) -> None:
        raise BadQuery(f"{message} at position {self.at}", position=self.at)

    def skip(self) -> None:
        while not self.done and self.text[self.at].isspace():
            self.at += 1

    def peek(self, word: str) -> bool:
        self.skip()
        return self.text.startswith(word, self.at)

    def peek_word(self, word: str) -> bool:
        self.skip()
        end = self.at + len(word)
        return self.text.startswith(word, self.at) and (
            end >= len(self.text) or not (self.text[end].isalnum() or self.text[end] == "_")
        )

    def expect(self, word: str) -> None:
        if not self.peek(word):
            self.fail(f"expected {word!r}")
        self.at += len(word)

    def name(self) -> str:
        self.skip()
        match = LABEL_NAME.match(self.text, self.at)
        if match is None:
            self.fail("expected a label name")
            raise AssertionError
        self.at = match.end()
        return match.group()

    def operator(self, allowed: tuple[str, ...]) -> str:
        self.skip()
        for op in _OPERATORS:
            if self.text.startswith(op, self.at) and op in allowed:
                self.at += len(op)
                return op
        self.fail(f"expected one of {' '.join(allowed)}")
        raise AssertionError

    def string(self) -> str:
        self.skip()
        if self.done:
            self.fail("expected a string")
        quote = self.text[self.at]
        if quote == "`":
            end = self.text.find("`", self.at + 1)
            if end < 0:
                self.fail("unterminated string")
            value = self.text[self.at + 1 : end]
            self.at = end + 1
            return value
        if quote != '"':
            self.fail("expected a string")
        end = self.at + 1
        while end < len(self.text) and self.text[end] != '"':
            end += 2 if self.text[end] == "\\" else 1
        if end >= len(self.text):
            self.fail("unterminated string")
        try:
            value = orjson.loads(self.text[self.at : end + 1])
        except orjson.JSONDecodeError:
            self.fail("bad escape in string")
        self.at = end + 1
        assert isinstance(value, str)
        return value

    # --- the grammar ---

    def query(self) -> Query:
        self.skip()
        if self.peek("{"):
            return self.log_query()
        return self.metric_query()

    def metric_query(self) -> MetricQuery:
        if self.peek_word("sum"):
            self.at += 3
            by = self.grouping() if self.peek_word("by") else None
            self.expect("(")
            inner = self.metric_query()
            self.expect(")")
            if self.peek_word("by"):
                if by is not None:
                    self.fail("sum has one grouping")
                by = self.grouping()
            if inner.by is not None:
                self.fail("nested sums are not supported")
            return MetricQuery(inner.function, inner.range_s, inner.log, by or ())
        for function in RANGE_FUNCTIONS:
            if self.peek_word(function):
                self.at += len(function)
                self.expect("(")
                log = self.log_query()
                self.expect("[")
                end = self.text.find("]", self.at)
                if end < 0:
                    self.fail("expected ']'")
                range_s = parse_duration(self.text[self.at : end].strip())
                self.at = end + 1
                self.expect(")")
                return MetricQuery(function, range_s, log)  # type: ignore[arg-type]
        self.fail("expected a selector '{...}', sum, or " + ", ".join(RANGE_FUNCTIONS))
        raise AssertionError

    def grouping(self) -> tuple[str, ...]:
        self.at += 2  # "by"
        self.expect("(")
        names: list[str] = []
        if not self.peek(")"):
            names.append(self.name())
            while self.peek(","):
                self.at += 1
                names.append(self.name())
        self.expect(")")
        return tuple(names)

    def log_query(self) -> LogQuery:
        self.expect("{")
        matchers = [self.matcher()]
        while self.peek(","):
            self.at += 1
            matchers.append(self.matcher())
        self.expect("}")
        if len(matchers) > MAX_MATCHERS:
            self.fail(f"a selector has at most {MAX_MATCHERS} matchers")
        if not any(m.op in ("=", "=~") and not _matches_empty(m) for m in matchers):
            self.fail("a selector needs a matcher that does not match the empty value")
        stages: list[Stage] = []
        while True:
            self.skip()
            if self.peek("|=") or self.peek("|~") or self.peek("!=") or self.peek("!~"):
                op = self.operator(("|=", "|~", "!=", "!~"))
                value = self.string()
                pattern = _regex(value) if op in ("|~", "!~") else None
                stages.append(LineFilter(op, value, pattern))  # type: ignore[arg-type]
            elif self.peek("|"):
                self.at += 1
                if self.peek_word("json") or self.peek_word("logfmt"):
                    kind = self.name()
                    stages.append(Parser(kind))  # type: ignore[arg-type]
                else:
                    stages.append(self.label_filter())
            else:
                break
            if len(stages) > MAX_STAGES:
                self.fail(f"a pipeline has at most {MAX_STAGES} stages")
        return LogQuery(tuple(matchers), tuple(stages))

    def matcher(self) -> Matcher:
        name = self.name()
        op = self.operator(("=", "!=", "=~", "!~"))
        return Matcher.make(name, op, self.string())

    def label_filter(self) -> LabelFilter:
        tests = [self.label_test()]
        while self.peek_word("and") or self.peek(","):
            self.at += 1 if self.peek(",") else 3
            tests.append(self.label_test())
        return LabelFilter(tuple(tests))

    def label_test(self) -> Matcher | NumberFilter:
        name = self.name()
        op = self.operator(("==", "!=", "=~", "!~", ">=", "<=", "=", ">", "<"))
        self.skip()
        number = _NUMBER.match(self.text, self.at)
        if number is not None and self.text[self.at] not in '"`':
            self.at = number.end()
            if op in ("=~", "!~"):
                self.fail("a regular expression is a string")
            return NumberFilter(name, "==" if op == "=" else op, float(number.group()))  # type: ignore[arg-type]
        if op not in ("=", "==", "!=", "=~", "!~"):
            self.fail(f"{op} compares numbers")
        return Matcher.make(name, "=" if op == "==" else op, self.string())


def _matches_empty(matcher: Matcher) -> bool:
    if matcher.op == "=":
        return matcher.value == ""
    return matcher.pattern is not None and matcher.pattern.fullmatch("") is not None


__all__ = [
    "LabelFilter",
    "LineFilter",
    "LogQuery",
    "Matcher",
    "MetricQuery",
    "NumberFilter",
    "Parser",
    "Query",
    "parse",
    "parse_duration",
    "parse_json",
    "parse_log",
    "parse_logfmt",
]
