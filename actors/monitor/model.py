"""Labels, matchers, templates and rules: the data every monitoring actor shares.

A *label set* is a ``dict[str, str]``; its fingerprint (``fingerprint``) names a
series or an alert. A *matcher* is ``name op value`` with Prometheus's four
operators (``=``, ``!=``, ``=~``, ``!~``; regexes are anchored). A *rule* is
data (``Rule``): what it reads (a series by name, events by name, a LogQL
metric query, or nothing for the watchdog), how it reduces a window to a
value, the comparison that makes it active, ``for`` / ``keep_firing_for``,
and the labels and annotations of its alerts, which may use ``{{ $labels.x }}``
and ``{{ $value }}``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from actors.monitor.errors import BadRule

#: The owner of Realm's own rules, alerts and routes (the admin sees them).
SYSTEM_OWNER = "realm"
KINDS = ("threshold", "absence", "event", "logql", "always")
FUNCTIONS = ("avg", "max", "min", "sum", "count", "rate", "increase", "delta", "last")
OPS = (">", ">=", "<", "<=", "==", "!=")
MAX_NAME_CHARS = 128
MAX_LABELS = 32
MAX_LABEL_VALUE_CHARS = 1_024
MAX_TEMPLATE_CHARS = 4_096
_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:.\-]*$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')
_TEMPLATE = re.compile(r"\{\{\s*(\$labels\.([A-Za-z_][A-Za-z0-9_]*)|\$value|\$owner)\s*\}\}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
#: Characters that make a regex more than a literal alternation like ``a|b|c``.
_REGEX_META = frozenset(".^$*+?{}[]\\()")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800, "y": 31_536_000}

Labels = dict[str, str]


def fingerprint(labels: Labels) -> str:
    """A stable name of a label set (order does not matter)."""
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def check_name(value: Any, what: str) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_NAME_CHARS
        or not _NAME.match(value)
    ):
        raise BadRule(f"{what} is 1 to {MAX_NAME_CHARS} of letters, digits, _ : . -", field=what)
    return value


def check_labels(labels: Any, what: str = "labels") -> Labels:
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise BadRule(f"{what} is a map of at most {MAX_LABELS} labels", field=what)
    for name, value in labels.items():
        if not isinstance(name, str) or not _LABEL.match(name) or len(name) > MAX_NAME_CHARS:
            raise BadRule(f"label name {str(name)[:64]!r} is not [A-Za-z_][A-Za-z0-9_]*")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE_CHARS:
            raise BadRule(f"label {name} is a string of at most {MAX_LABEL_VALUE_CHARS} chars")
    return dict(labels)


def parse_duration(value: Any, what: str = "a duration") -> float:
    """Seconds from ``30``, ``"30s"``, ``"1m30s"`` or ``"500ms"``."""
    if isinstance(value, bool):
        raise BadRule(f"{what} is seconds or a duration like 1m30s")
    if isinstance(value, int | float):
        if value < 0:
            raise BadRule(f"{what} is not negative")
        return float(value)
    if isinstance(value, str) and value and len(value) <= 32:
        parts = _DURATION.findall(value)
        if parts and "".join(n + u for n, u in parts) == value:
            return sum(float(n) * _UNITS[u] for n, u in parts)
    raise BadRule(f"{what} is seconds or a duration like 1m30s")


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str

    @functools.cached_property
    def pattern(self) -> re.Pattern[str] | None:
        return _regex(self.value) if self.op in ("=~", "!~") else None

    @functools.cached_property
    def required(self) -> frozenset[str] | None:
        """The values a label must hold for this matcher to match, when they are a few
        non-empty strings (``x="a"``, ``x=~"a|b"``); None when it cannot be said so simply
        (``!=``, ``!~``, a real regex, or one that matches the empty value)."""
        if self.op == "=":
            return frozenset((self.value,)) if self.value else None
        if self.op != "=~" or _REGEX_META.intersection(self.value.replace("|", "")):
            return None
        values = self.value.split("|")
        return frozenset(values) if all(values) else None

    def matches(self, labels: Labels) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(got) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


_REGEXES: dict[str, re.Pattern[str]] = {}


def _regex(value: str) -> re.Pattern[str]:
    found = _REGEXES.get(value)
    if found is None:
        found = re.compile(value)
        if len(_REGEXES) < 10_000:
            _REGEXES[value] = found
    return found


def parse_matcher(value: Any) -> Matcher:
    """``name="v"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"`` (or Alertmanager's
    ``{"name", "value", "isRegex", "isEqual"}``)."""
    if isinstance(value, dict):
        name, text = value.get("name"), value.get("value")
        if not isinstance(name, str) or not isinstance(text, str) or not _LABEL.match(name):
            raise BadRule("a matcher is {name, value, isRegex?, isEqual?}")
        regex, equal = bool(value.get("isRegex", False)), bool(value.get("isEqual", True))
        op = ("=~" if equal else "!~") if regex else ("=" if equal else "!=")
        matcher = Matcher(name, op, text)
    else:
        if not isinstance(value, str) or len(value) > MAX_TEMPLATE_CHARS:
            raise BadRule('a matcher is a string like name="value"')
        found = _MATCHER.match(value)
        if found is None:
            raise BadRule(f'matcher {value[:64]!r} is not name="v", !=, =~ or !~')
        text = re.sub(r"\\(.)", r"\1", found.group(3))
        matcher = Matcher(found.group(1), found.group(2), text)
    if matcher.op in ("=~", "!~"):
        try:
            _regex(matcher.value)
        except re.error as error:
            raise BadRule(f"matcher {matcher.name}: bad regex ({error})") from None
    return matcher


def parse_matchers(values: Any) -> list[Matcher]:
    if not isinstance(values, list) or len(values) > MAX_LABELS:
        raise BadRule(f"matchers are a list of at most {MAX_LABELS}")
    return [parse_matcher(v) for v in values]


def matches_all(matchers: list[Matcher], labels: Labels) -> bool:
    return all(m.matches(labels) for m in matchers)


def render(template: str, labels: Labels, value: float | None, owner: str = "") -> str:
    """Expand ``{{ $labels.name }}``, ``{{ $value }}`` and ``{{ $owner }}``."""

    def one(found: re.Match[str]) -> str:
        if found.group(2):
            return labels.get(found.group(2), "")
        if found.group(1) == "$owner":
            return owner
        return "" if value is None else f"{value:g}"

    return _TEMPLATE.sub(one, template)


def check_template(text: Any, what: str) -> str:
    if not isinstance(text, str) or len(text) > MAX_TEMPLATE_CHARS:
        raise BadRule(f"{what} is a string of at most {MAX_TEMPLATE_CHARS} characters")
    leftover = _TEMPLATE.sub("", text)
    if "{{" in leftover:
        raise BadRule(f"{what}: only {{{{ $labels.x }}}}, {{{{ $value }}}}, {{{{ $owner }}}}")
    return text


@dataclass
class Rule:
    """One alerting rule (see the module's docstring)."""

    id: str
    owner: str
    alert: str
    kind: str
    #: Series name (threshold, absence) or event name (event); empty otherwise.
    input: str = ""
    matchers: list[str] = field(default_factory=list)
    fn: str = "last"
    window_s: float = 60.0
    op: str = ">"
    threshold: float = 0.0
    #: Labels the value is aggregated by (empty: one alert per series).
    by: list[str] = field(default_factory=list)
    #: How series are aggregated by ``by``: sum, max, min or avg (empty: as ``fn`` suits).
    agg: str = ""
    query: str = ""
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    labels: Labels = field(default_factory=dict)
    annotations: Labels = field(default_factory=dict)
    group: str = ""

    @property
    def key(self) -> str:
        """What the rule is sharded by: its input's name, or its id."""
        return self.input or self.id

    def compiled(self) -> list[Matcher]:
        return [parse_matcher(m) for m in self.matchers]

    def holds(self, value: float) -> bool:
        t = self.threshold
        return {
            ">": value > t,
            ">=": value >= t,
            "<": value < t,
            "<=": value <= t,
            "==": value == t,
            "!=": value != t,
        }[self.op]


def check_rule(rule: Rule, *, max_window_s: float) -> Rule:
    """``rule`` if it is well formed; ``BadRule`` otherwise."""
    check_name(rule.alert, "alert")
    if rule.kind not in KINDS:
        raise BadRule(f"kind is one of {', '.join(KINDS)}")
    if rule.kind in ("threshold", "absence", "event"):
        check_name(rule.input, "input")
    elif rule.input:
        raise BadRule(f"a {rule.kind} rule reads no input")
    if rule.kind == "logql" and not (isinstance(rule.query, str) and 1 <= len(rule.query) <= 4_096):
        raise BadRule("a logql rule gives its query (1 to 4096 characters)")
    rule.matchers = [str(m) for m in parse_matchers(rule.matchers)]
    if rule.fn not in FUNCTIONS:
        raise BadRule(f"fn is one of {', '.join(FUNCTIONS)}")
    if rule.op not in OPS:
        raise BadRule(f"op is one of {' '.join(OPS)}")
    if not 0 < rule.window_s <= max_window_s:
        raise BadRule(f"window_s is above 0 and at most {max_window_s:g} (the retention)")
    for name, value in (("for_s", rule.for_s), ("keep_firing_for_s", rule.keep_firing_for_s)):
        if not 0 <= value <= 864_000:
            raise BadRule(f"{name} is 0 to 864000")
    if not isinstance(rule.threshold, float | int) or rule.threshold != rule.threshold:
        raise BadRule("threshold is a number")
    if rule.agg not in ("", "sum", "max", "min", "avg"):
        raise BadRule("agg is sum, max, min or avg")
    if not isinstance(rule.by, list) or len(rule.by) > MAX_LABELS:
        raise BadRule(f"by is a list of at most {MAX_LABELS} label names")
    for name in rule.by:
        if not isinstance(name, str) or not _LABEL.match(name):
            raise BadRule("by names labels")
    check_labels(rule.labels)
    check_labels(rule.annotations, "annotations")
    for name, text in [*rule.labels.items(), *rule.annotations.items()]:
        check_template(text, name)
    return rule


# --- Prometheus rule files ---------------------------------------------------------

_EXPR = re.compile(
    r"^\s*(?:(?P<agg>sum|max|min|avg)\s*(?:by\s*\((?P<by>[^)]*)\)\s*)?\(\s*)?"
    r"(?P<fn>avg|max|min|sum|count|rate|increase|delta|last)_over_time\s*\(\s*"
    r"(?P<input>[A-Za-z_:][A-Za-z0-9_:.]*)\s*(?:\{(?P<matchers>[^}]*)\})?\s*"
    r"\[(?P<window>[0-9a-z.]+)\]\s*\)\s*\)?\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>-?[0-9.eE+]+)\s*$"
)
_RATE = re.compile(r"\b(rate|increase|delta)\s*\(")
_ABSENT = re.compile(
    r"^\s*absent_over_time\s*\(\s*(?P<input>[A-Za-z_:][A-Za-z0-9_:.]*)\s*"
    r"(?:\{(?P<matchers>[^}]*)\})?\s*\[(?P<window>[0-9a-z.]+)\]\s*\)\s*$"
)
_EVENTS = re.compile(
    r"^\s*events\s*\(\s*(?P<input>[A-Za-z_:][A-Za-z0-9_:.]*)\s*(?:\{(?P<matchers>[^}]*)\})?\s*"
    r"\[(?P<window>[0-9a-z.]+)\]\s*\)\s*(?:(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>-?[0-9.eE+]+))?\s*$"
)
_SPLIT = re.compile(r',\s*(?=[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*")')


def _matcher_list(text: str | None) -> list[str]:
    if not text or not text.strip():
        return []
    return [str(parse_matcher(part)) for part in _SPLIT.split(text.strip().rstrip(","))]


def parse_expr(expr: str) -> dict[str, Any]:
    """The rule fields of an expression in the subset Realm evaluates:

    - ``<fn>_over_time(name{m}[w]) <op> x``, ``rate(name{m}[w]) <op> x`` and
      ``increase(...)``, optionally wrapped in ``sum|max|min|avg by (l) (...)``;
    - ``absent_over_time(name{m}[w])``;
    - ``events(name{m}[w]) <op> x`` (events pushed to Realm);
    - ``vector(1)`` (always true: the watchdog);
    - ``logql:<LogQL metric query> <op> x`` (evaluated by the logs service).
    """
    if not isinstance(expr, str) or len(expr) > MAX_TEMPLATE_CHARS:
        raise BadRule("expr is a string of at most 4096 characters")
    text = expr.strip()
    if text == "vector(1)":
        return {"kind": "always", "fn": "last", "op": ">", "threshold": 0.0}
    if text.startswith("logql:"):
        found = re.match(
            r"^logql:(?P<q>.+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<t>-?[0-9.eE+]+)$", text
        )
        if not found:
            raise BadRule("a logql expr is logql:<query> <op> <number>")
        return {
            "kind": "logql",
            "query": found["q"].strip(),
            "op": found["op"],
            "threshold": float(found["t"]),
        }
    text = _RATE.sub(lambda m: f"{m.group(1)}_over_time(", text)
    found = _EXPR.match(text)
    if found:
        return {
            "kind": "threshold",
            "input": found["input"],
            "matchers": _matcher_list(found["matchers"]),
            "fn": found["fn"],
            "window_s": parse_duration(found["window"], "the window"),
            "op": found["op"],
            "threshold": float(found["threshold"]),
            "by": [b.strip() for b in (found["by"] or "").split(",") if b.strip()],
            "agg": found["agg"] or "",
        }
    found = _ABSENT.match(text)
    if found:
        return {
            "kind": "absence",
            "input": found["input"],
            "fn": "count",
            "matchers": _matcher_list(found["matchers"]),
            "window_s": parse_duration(found["window"], "the window"),
            "op": "==",
            "threshold": 0.0,
        }
    found = _EVENTS.match(text)
    if found:
        return {
            "kind": "event",
            "input": found["input"],
            "fn": "count",
            "matchers": _matcher_list(found["matchers"]),
            "window_s": parse_duration(found["window"], "the window"),
            "op": found["op"] or ">",
            "threshold": float(found["threshold"] or 0),
        }
    raise BadRule(f"expr {expr[:80]!r} is not in the subset Realm evaluates (see docs/monitor.md)")


def rules_from_yaml(text: str, owner: str, *, max_window_s: float, max_rules: int) -> list[Rule]:
    """Alerting rules of a Prometheus rule file (``groups: [{name, rules: [{alert,
    expr, for, keep_firing_for, labels, annotations}]}]``); recording rules are refused."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadRule(f"not YAML: {str(error)[:200]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise BadRule("a rule file is {groups: [{name, rules: [...]}]}")
    rules: list[Rule] = []
    for group in data["groups"]:
        if not isinstance(group, dict) or not isinstance(group.get("rules"), list):
            raise BadRule("a group is {name, rules: [...]}")
        name = check_name(group.get("name"), "group name")
        for item in group["rules"]:
            if not isinstance(item, dict) or "alert" not in item or "expr" not in item:
                raise BadRule("each rule is an alerting rule {alert, expr, ...}")
            fields = parse_expr(item["expr"])
            rule = Rule(
                id=f"{name}/{item['alert']}/{len(rules)}",
                owner=owner,
                alert=str(item["alert"]),
                for_s=parse_duration(item.get("for", 0), "for"),
                keep_firing_for_s=parse_duration(item.get("keep_firing_for", 0), "keep_firing_for"),
                labels={str(k): str(v) for k, v in (item.get("labels") or {}).items()},
                annotations={str(k): str(v) for k, v in (item.get("annotations") or {}).items()},
                group=name,
                **fields,
            )
            rules.append(check_rule(rule, max_window_s=max_window_s))
            if len(rules) > max_rules:
                raise BadRule(f"a rule file holds at most {max_rules} rules")
    return rules


__all__ = [
    "FUNCTIONS",
    "KINDS",
    "OPS",
    "SYSTEM_OWNER",
    "Labels",
    "Matcher",
    "Rule",
    "check_labels",
    "check_name",
    "check_rule",
    "fingerprint",
    "matches_all",
    "parse_duration",
    "parse_expr",
    "parse_matcher",
    "parse_matchers",
    "render",
    "rules_from_yaml",
]
