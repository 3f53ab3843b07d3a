"""The LogQL subset: parsing (and its refusals) and per-line evaluation."""

from __future__ import annotations

import pytest

from actors.logs.errors import BadQuery
from actors.logs.logql import (
    LabelFilter,
    LineFilter,
    LogQuery,
    Matcher,
    MetricQuery,
    NumberFilter,
    Parser,
    parse,
    parse_duration,
    parse_json,
    parse_log,
    parse_logfmt,
)


def log(text: str) -> LogQuery:
    return parse_log(text)


@pytest.mark.parametrize(
    ("op", "value", "labels", "expected"),
    [
        ("=", "x", {"app": "x"}, True),
        ("=", "x", {"app": "y"}, False),
        ("!=", "x", {"app": "y"}, True),
        ("!=", "x", {"app": "x"}, False),
        ("=~", "x|y", {"app": "y"}, True),
        ("=~", "x", {"app": "xx"}, False),  # anchored
        ("!~", "x.*", {"app": "xyz"}, False),
        ("!~", "x.*", {"app": "abc"}, True),
    ],
)
def test_matchers(op: str, value: str, labels: dict[str, str], expected: bool) -> None:
    query = log(f'{{job="j", app{op}"{value}"}}')
    assert query.selects({"job": "j", **labels}) is expected


def test_selector_parts_and_quoting() -> None:
    query = log('{ app = "a\\"b" , env=~`prod|dev` }')
    assert query.matchers == (
        Matcher.make("app", "=", 'a"b'),
        Matcher.make("env", "=~", "prod|dev"),
    )
    assert query.selects({"app": 'a"b', "env": "dev"})
    assert not query.selects({"app": 'a"b', "env": "qa"})
    assert query.selector == '{app="a\\"b", env=~"prod|dev"}'


@pytest.mark.parametrize(
    ("stages", "line", "kept"),
    [
        ('|= "needle"', "a needle here", True),
        ('|= "needle"', "nothing", False),
        ('!= "debug"', "debug line", False),
        ('!= "debug"', "info line", True),
        ('|~ "err(or)?"', "an error", True),
        ('|~ "^err"', "an error", False),  # a line regex is not anchored, ^ still works
        ('!~ "[0-9]+"', "abc", True),
        ('!~ "[0-9]+"', "a1c", False),
        ('|= "a" |= "b" != "c"', "a b", True),
        ('|= "a" |= "b" != "c"', "a b c", False),
    ],
)
def test_line_filters(stages: str, line: str, kept: bool) -> None:
    query = log('{app="x"} ' + stages)
    assert all(isinstance(s, LineFilter) for s in query.stages)
    assert (query.run(line, {"app": "x"}) is not None) is kept


def test_json_extracts_nested_fields_and_filters_them() -> None:
    query = log('{app="x"} | json | status >= 500 and method="GET"')
    assert isinstance(query.stages[0], Parser)
    line = '{"status": 503, "method": "GET", "req": {"path": "/a", "ms": 12.5}}'
    labels = query.run(line, {"app": "x"})
    assert labels == {
        "app": "x", "status": "503", "method": "GET", "req_path": "/a", "req_ms": "12.5",
    }  # fmt: skip
    assert query.run('{"status": 404, "method": "GET"}', {"app": "x"}) is None
    assert query.run("not json", {"app": "x"}) is None  # no status: not a number


def test_logfmt_and_every_comparison() -> None:
    line = 'level=warn dur=1.5 msg="disk almost full" flag'
    assert parse_logfmt(line) == {
        "level": "warn",
        "dur": "1.5",
        "msg": "disk almost full",
        "flag": "",
    }
    cases = {
        "dur > 1": True, "dur > 1.5": False, "dur >= 1.5": True, "dur < 2": True,
        "dur <= 1": False, "dur == 1.5": True, "dur != 1.5": False, "dur = 1.5": True,
        'level = "warn"': True, 'level != "warn"': False, 'level =~ "w.*"': True,
        'level =~ "w"': False, 'level !~ "e.*"': True, 'msg = "disk almost full"': True,
    }  # fmt: skip
    for test, expected in cases.items():
        query = log('{app="x"} | logfmt | ' + test)
        assert (query.run(line, {"app": "x"}) is not None) is expected, test


def test_extracted_name_clashing_with_a_stream_label_is_renamed() -> None:
    query = log('{app="x"} | json')
    assert query.run('{"app": "inner"}', {"app": "x"}) == {"app": "x", "app_extracted": "inner"}


def test_label_filter_on_a_stream_label_without_parser() -> None:
    query = log('{app=~".+"} | app="y"')
    assert isinstance(query.stages[0], LabelFilter)
    assert query.run("l", {"app": "y"}) is not None
    assert query.run("l", {"app": "z"}) is None


def test_metric_queries() -> None:
    query = parse('sum by (level) (count_over_time({app="x"} | json [1m]))')
    assert isinstance(query, MetricQuery)
    assert (query.function, query.range_s, query.by) == ("count_over_time", 60.0, ("level",))
    assert query.log.stages == (Parser("json"),)
    after = parse('sum(rate({app="x"} |= "e" [5m])) by (host, app)')
    assert isinstance(after, MetricQuery)
    assert (after.function, after.range_s, after.by) == ("rate", 300.0, ("host", "app"))
    plain = parse('bytes_over_time({app="x"}[1h30m])')
    assert isinstance(plain, MetricQuery)
    assert (plain.by, plain.range_s) == (None, 5_400.0)
    total = parse('sum(count_over_time({app="x"}[10s]))')
    assert isinstance(total, MetricQuery) and total.by == ()


def test_number_filters_are_numbers() -> None:
    query = log('{app="x"} | logfmt | n > -2.5e1')
    stage = query.stages[1]
    assert isinstance(stage, LabelFilter)
    assert stage.tests == (NumberFilter("n", ">", -25.0),)


def test_durations() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1h30m") == 5_400
    assert parse_duration("2d") == 172_800
    for bad in ("", "5", "1x", "m", "0s"):
        with pytest.raises(BadQuery):
            parse_duration(bad)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        '{app="x"',
        '{app="x",}',
        "{app=x}",
        '{app!="x"}',  # every matcher would match the empty value
        '{app=~".*"}',
        '{app="x"} |= needle',
        '{app="x"} |= "unterminated',
        '{app="x"} |~ "("',
        '{app="x"} | json | status > "5"',
        '{app="x"} | logfmt | a =~ 5',
        '{app="x"} extra',
        'count_over_time({app="x"})',
        'count_over_time({app="x"}[1m]',
        'rate({app="x"}[zz])',
        'max(count_over_time({app="x"}[1m]))',
        'sum(sum(count_over_time({app="x"}[1m])))',
        'sum by (a) (count_over_time({app="x"}[1m])) by (b)',
        '{9app="x"}',
        "x" * 5_000,
    ],
)
def test_refusals_name_a_position(text: str) -> None:
    with pytest.raises(BadQuery):
        parse(text)


def test_log_only_places_refuse_metric_queries() -> None:
    with pytest.raises(BadQuery):
        parse_log('count_over_time({app="x"}[1m])')


def test_json_values() -> None:
    assert parse_json('{"a": true, "b": null, "c": [1, 2], "d": 1.0, "e-f": "x"}') == {
        "a": "true", "b": "", "c": "[1,2]", "d": "1.0", "e_f": "x",
    }  # fmt: skip
    assert parse_json("[1]") == {}
