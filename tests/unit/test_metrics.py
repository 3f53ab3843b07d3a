"""Realm's metrics without Ray: the shared module keeps values in the process,
refuses wrong names and labels, hands counters to Ray in sums only once Ray is
up, and the ingress middleware labels requests by route template, not path."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket

from actors.runtime import metrics
from actors.runtime.errors import NotFound
from actors.runtime.settings import Settings
from apps.common import UNMATCHED, _service_of_module, service_app
from tests.conftest import ROOT


def unique(prefix: str) -> str:
    """A metric name no other test defined (names are unique per process)."""
    return f"realm_test_{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def forget_defined() -> Iterator[None]:
    """Metrics a test defines are dropped from the registry afterwards."""
    before = set(metrics.Metric.registry)
    yield
    for name in set(metrics.Metric.registry) - before:
        del metrics.Metric.registry[name]


# --- without Ray ------------------------------------------------------------------


def test_without_ray_nothing_is_sent_and_values_are_kept_in_the_process(forget_defined):
    assert not metrics.ray_is_up()
    counter = metrics.Counter(unique("c") + "_total", "test", ("kind",))
    counter.inc(kind="a")
    counter.inc(2.5, kind="a")
    counter.inc(0, kind="b")  # adds nothing
    assert counter.value(kind="a") == 3.5
    assert counter.value(kind="b") == 0
    assert counter._ray is None and counter._pending == {}
    counter.flush()  # nothing to hand over, nowhere to hand it
    histogram = metrics.Histogram(unique("h"), "test", ("kind",))
    histogram.observe(0.2, kind="a")
    histogram.bind(kind="a").observe(0.3)
    assert histogram.count(kind="a") == 2
    assert histogram.sum(kind="a") == pytest.approx(0.5)
    assert histogram._ray is None and histogram._pending == {}  # nothing kept for Ray
    gauge = metrics.Gauge(unique("g"), "test", ("kind",))
    gauge.set(5, kind="a")
    gauge.add(-2, kind="a")
    gauge.add(1, kind="b")
    assert (gauge.value(kind="a"), gauge.value(kind="b")) == (3, 1)
    assert "series=2" in repr(gauge) and "series=1" in repr(histogram)
    assert gauge._ray is None
    assert metrics.scrape_targets() == []


def test_wrong_names_labels_and_values_are_refused(forget_defined):
    with pytest.raises(ValueError, match="start with realm_"):
        metrics.Gauge("requests", "no prefix")
    with pytest.raises(ValueError, match="ends in _total"):
        metrics.Counter(unique("c"), "a counter without _total")
    name = unique("c") + "_total"
    counter = metrics.Counter(name, "test", ("service", "route"))
    with pytest.raises(ValueError, match="defined twice"):
        metrics.Counter(name, "again")
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(service="cache")  # a label missing
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(service="cache", route="/x", path="/x/1")  # one too many
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1, service="cache", route="/x")
    with pytest.raises(ValueError, match="positive and increasing"):
        metrics.Histogram(unique("h"), "test", boundaries=(0.0, 1.0))
    with pytest.raises(ValueError, match="positive and increasing"):
        metrics.Histogram(unique("h"), "test", boundaries=(2.0, 1.0))
    assert counter.values == {}  # refused calls recorded nothing


class FakeRayMetric:
    """Stands in for a ``ray.util.metrics`` object: what reached "Ray". Objects
    made with default tags (``set_default_tags``) record into the same calls,
    with those tags where a call passes none, as Ray's do."""

    def __init__(self, calls: list[tuple[str, float, dict[str, str]]] | None = None) -> None:
        self.calls: list[tuple[str, float, dict[str, str]]] = [] if calls is None else calls
        self.default_tags: dict[str, str] = {}

    def set_default_tags(self, tags: dict[str, str]) -> FakeRayMetric:
        self.default_tags = tags
        return self

    def _tags(self, tags: dict[str, str] | None) -> dict[str, str]:
        return {**self.default_tags, **(tags or {})}

    def inc(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("inc", value, self._tags(tags)))

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("observe", value, self._tags(tags)))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("set", value, self._tags(tags)))


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> Callable[[metrics.Metric], FakeRayMetric]:
    """Pretend Ray is up; each metric's Ray object is a ``FakeRayMetric``. The
    flusher thread is not started: the test flushes by hand."""
    monkeypatch.setattr(metrics, "ray_is_up", lambda: True)
    monkeypatch.setattr(metrics._flusher, "ensure", lambda: None)
    made: dict[str, FakeRayMetric] = {}

    def make(self: metrics.Metric) -> FakeRayMetric:
        # Every object made for one name records into the same calls, as in Ray.
        first = made.setdefault(self.name, FakeRayMetric())
        return FakeRayMetric(first.calls)

    for cls in (metrics.Counter, metrics.Gauge, metrics.Histogram):
        monkeypatch.setattr(cls, "_make", make)
    return lambda metric: made.setdefault(metric.name, FakeRayMetric())


def test_with_ray_counters_go_in_sums_and_the_others_as_recorded(forget_defined, fake_ray):
    counter = metrics.Counter(unique("c") + "_total", "test", ("kind",))
    for _ in range(1_000):
        counter.inc(kind="a")
    counter.inc(3, kind="b")
    counter.flush()
    sent = fake_ray(counter).calls
    assert sorted(sent, key=lambda c: c[2]["kind"]) == [
        ("inc", 1000.0, {"kind": "a"}),
        ("inc", 3.0, {"kind": "b"}),
    ]
    counter.flush()  # nothing new: nothing sent
    assert len(fake_ray(counter).calls) == 2
    assert counter.value(kind="a") == 1000  # still kept in the process too

    histogram = metrics.Histogram(unique("h"), "test", ("kind",))
    histogram.observe(0.25, kind="a")
    assert histogram.count(kind="a") == 1  # in the process at once
    histogram.flush()
    assert fake_ray(histogram).calls == [("observe", 0.25, {"kind": "a"})]
    gauge = metrics.Gauge(unique("g"), "test", ("kind",))
    gauge.add(1, kind="a")
    gauge.add(1, kind="a")
    gauge.add(-1, kind="a")
    assert [value for _, value, _ in fake_ray(gauge).calls] == [1, 2, 1]


def test_every_histogram_observation_reaches_ray_at_the_flush_each_on_its_own(
    forget_defined, fake_ray
):
    histogram = metrics.Histogram(unique("h"), "test", ("kind", "code"))
    hot = histogram.bind(kind="a", code=200)  # label values become strings, as by keyword
    values = [0.001 * n for n in range(1, 501)]
    for value in values:
        hot.observe(value)
    histogram.observe(7.0, kind="b", code="500")
    assert histogram.count(kind="a", code="200") == 500
    assert histogram.sum(kind="a", code="200") == pytest.approx(sum(values))
    assert fake_ray(histogram).calls == []  # nothing on the request's path
    histogram.flush()
    sent = fake_ray(histogram).calls
    assert sorted(c[1] for c in sent if c[2] == {"kind": "a", "code": "200"}) == values
    assert [c for c in sent if c[2] != {"kind": "a", "code": "200"}] == [
        ("observe", 7.0, {"kind": "b", "code": "500"})
    ]
    histogram.flush()  # nothing new: nothing sent
    assert len(fake_ray(histogram).calls) == 501
    hot.observe(0.5)
    metrics.flush_all()
    assert fake_ray(histogram).calls[-1] == ("observe", 0.5, {"kind": "a", "code": "200"})


def test_a_bound_series_is_checked_once_and_records_as_the_keyword_calls_do(
    forget_defined, fake_ray
):
    counter = metrics.Counter(unique("c") + "_total", "test", ("service", "route"))
    with pytest.raises(ValueError, match="takes labels"):
        counter.bind(service="cache")
    with pytest.raises(ValueError, match="takes labels"):
        metrics.Histogram(unique("h"), "test", ("kind",)).bind(kind="a", other="b")
    series = counter.bind(service="cache", route="/x")
    with pytest.raises(ValueError, match="only goes up"):
        series.inc(-1)
    series.inc()
    series.inc(0)  # adds nothing
    counter.inc(2, service="cache", route="/x")
    assert counter.value(service="cache", route="/x") == 3
    counter.flush()
    assert fake_ray(counter).calls == [("inc", 3.0, {"service": "cache", "route": "/x"})]


def test_a_followed_total_is_counted_by_its_growth_at_each_read_and_flush_until_stopped(
    forget_defined, fake_ray
):
    counter = metrics.Counter(unique("c") + "_total", "test", ("result",))
    hits = [5]  # a total kept elsewhere, already at 5 when followed
    followed = counter.follow(lambda: hits[0], result="hit")
    with pytest.raises(ValueError, match="takes labels"):
        counter.follow(lambda: 0, kind="hit")
    assert counter.value(result="hit") == 0  # what came before is not counted
    hits[0] += 3
    assert counter.value(result="hit") == 3
    hits[0] += 4
    counter.flush()
    assert fake_ray(counter).calls == [("inc", 7.0, {"result": "hit"})]
    counter.flush()  # no growth: nothing sent
    assert len(fake_ray(counter).calls) == 1
    hits[0] += 2
    followed.stop()  # counts the last growth
    hits[0] += 100
    assert counter.value(result="hit") == 9
    followed.stop()  # a second stop changes nothing
    assert counter.value(result="hit") == 9


def test_once_the_flusher_runs_recording_asks_ray_nothing_and_a_forked_child_asks_again(
    forget_defined, monkeypatch
):
    asked: list[bool] = []

    def ray_is_up() -> bool:
        asked.append(True)
        return True

    monkeypatch.setattr(metrics, "ray_is_up", ray_is_up)
    monkeypatch.setattr(metrics._flusher, "ensure", lambda: None)
    monkeypatch.setattr(metrics._flusher, "running", True)
    counter = metrics.Counter(unique("c") + "_total", "test", ("kind",))
    histogram = metrics.Histogram(unique("h"), "test", ("kind",))
    counter.bind(kind="a").inc()
    histogram.bind(kind="a").observe(0.5)
    assert asked == []
    assert counter._pending == {("a",): 1.0} and histogram._pending == {("a",): [0.5]}
    metrics._flusher.forked()  # what a child made by fork runs first
    assert not metrics._flusher.running
    counter.inc(kind="a")
    assert asked == [True] and counter._pending == {("a",): 2.0}


def test_flush_all_hands_over_every_counter_and_survives_a_failing_one(
    forget_defined, fake_ray, monkeypatch
):
    good = metrics.Counter(unique("good") + "_total", "test")
    bad = metrics.Counter(unique("bad") + "_total", "test")
    good.inc()
    bad.inc()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Ray said no")

    monkeypatch.setattr(bad, "flush", broken)
    metrics.flush_all()
    assert fake_ray(good).calls == [("inc", 1.0, {})]


def test_a_metric_ray_refuses_never_fails_its_caller(forget_defined, monkeypatch):
    monkeypatch.setattr(metrics, "ray_is_up", lambda: True)
    monkeypatch.setattr(metrics._flusher, "ensure", lambda: None)

    class Refusing(FakeRayMetric):
        def observe(self, value: float, tags: dict[str, str]) -> None:
            raise TypeError("Ray said no")

    histogram = metrics.Histogram(unique("h"), "test")
    monkeypatch.setattr(histogram, "_make", Refusing)
    histogram.observe(1.0)
    histogram.observe(2.0)
    histogram.flush()  # Ray refuses both: logged, not raised
    assert histogram.count() == 2  # still kept in the process

    def cannot_make() -> Any:
        raise ValueError("no such metric type")

    gauge = metrics.Gauge(unique("g"), "test")
    monkeypatch.setattr(gauge, "_make", cannot_make)
    gauge.set(3)
    assert gauge.value() == 3


def test_an_actor_is_labelled_by_its_public_class_never_its_name():
    class LedgerShard:
        pass

    class _LedgerShardProcess(LedgerShard):
        pass

    class Class(_LedgerShardProcess):  # what ray.remote makes of it
        pass

    assert metrics.kind_of(Class()) == "LedgerShard"
    assert metrics.kind_of(_LedgerShardProcess()) == "LedgerShard"
    assert metrics.kind_of(LedgerShard()) == "LedgerShard"


def test_make_run_takes_its_metrics_port_or_a_free_one_when_it_is_held(make_settings, capsys):
    import serve_app

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        chosen = serve_app.metrics_port(make_settings(metrics_port=port))
        assert chosen is not None and chosen != port
        assert f"Metrics port {port} is in use" in capsys.readouterr().out
    free = serve_app.free_port()
    assert serve_app.metrics_port(make_settings(metrics_port=free)) == free
    assert serve_app.metrics_port(make_settings(metrics_port=0)) is None  # Ray chooses


# --- the ingress middleware ----------------------------------------------------------


@pytest.fixture
def app(make_settings: Callable[..., Settings]) -> FastAPI:
    app = service_app(
        "mtest",
        title="metrics test",
        description="",
        settings=make_settings(max_body_bytes=1024),
    )

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        if item_id == "missing":
            raise NotFound("no such item", item=item_id)
        if item_id == "boom":
            raise RuntimeError("a bug")
        return {"id": item_id}

    @app.post("/items")
    async def add(body: dict[str, Any]) -> dict[str, Any]:
        return body

    @app.websocket("/live/{room}")
    async def live(socket: WebSocket, room: str) -> None:
        await socket.accept()
        await socket.send_json({"room": room})
        await socket.receive_text()
        await socket.close()

    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def requests(route: str, method: str, status: int) -> float:
    labels = {"service": "mtest", "route": route, "method": method, "status": str(status)}
    return metrics.HTTP_REQUESTS.value(**labels)


def timed(route: str, method: str, status: int) -> int:
    labels = {"service": "mtest", "route": route, "method": method, "status": str(status)}
    return metrics.HTTP_REQUEST_SECONDS.count(**labels)


async def test_requests_are_counted_and_timed_by_route_template_method_and_status(client):
    before = {
        "ok": requests("/items/{item_id}", "GET", 200),
        "missing": requests("/items/{item_id}", "GET", 404),
        "boom": requests("/items/{item_id}", "GET", 500),
        "nowhere": requests(UNMATCHED, "GET", 404),
        "too_large": requests(UNMATCHED, "POST", 413),
        "bad_body": requests("/items", "POST", 422),
        "timed": timed("/items/{item_id}", "GET", 200),
    }
    for item in ("1", "2", "3"):
        assert (await client.get(f"/items/{item}")).status_code == 200
    assert (await client.get("/items/missing")).status_code == 404
    assert (await client.get("/items/boom")).status_code == 500
    assert (await client.get("/no/such/route")).status_code == 404
    assert (await client.post("/items", content=b"x" * 2048)).status_code == 413
    assert (await client.post("/items", content=b"not json")).status_code == 422
    assert requests("/items/{item_id}", "GET", 200) - before["ok"] == 3
    assert requests("/items/{item_id}", "GET", 404) - before["missing"] == 1
    assert requests("/items/{item_id}", "GET", 500) - before["boom"] == 1
    assert requests(UNMATCHED, "GET", 404) - before["nowhere"] == 1
    assert requests(UNMATCHED, "POST", 413) - before["too_large"] == 1
    assert requests("/items", "POST", 422) - before["bad_body"] == 1
    assert timed("/items/{item_id}", "GET", 200) - before["timed"] == 3
    # No raw path ever becomes a label value.
    routes = {key[1] for key in metrics.HTTP_REQUESTS.values if key[0] == "mtest"}
    assert routes <= {"/items/{item_id}", "/items", UNMATCHED}, routes


async def test_an_unusual_method_is_labelled_other(client):
    before = requests("/items/{item_id}", "other", 405)
    assert (await client.request("BREW", "/items/1")).status_code == 405
    assert requests("/items/{item_id}", "other", 405) - before == 1


class Socket:
    """A WebSocket client speaking ASGI to ``app`` directly."""

    def __init__(self, app: FastAPI, path: str) -> None:
        scope = {"type": "websocket", "path": path, "headers": [], "query_string": b"",
                 "scheme": "ws", "server": ("test", 80), "client": ("127.0.0.1", 1),
                 "subprotocols": [], "asgi": {"version": "3.0"}}  # fmt: skip
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.create_task(app(scope, self.inbox.get, self.outbox.put))

    async def receive(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.outbox.get(), 5)

    async def close(self) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": "bye"})
        await asyncio.wait_for(self.task, 5)


async def test_open_websockets_are_counted_while_open(app):
    def open_now() -> float:
        return metrics.WEBSOCKETS_OPEN.value(service="mtest", route="/live/{room}")

    before = open_now()
    first = Socket(app, "/live/lobby")
    assert (await first.receive())["type"] == "websocket.accept"
    assert open_now() == before + 1
    second = Socket(app, "/live/other")
    assert (await second.receive())["type"] == "websocket.accept"
    assert open_now() == before + 2
    await second.close()
    assert open_now() == before + 1
    await first.close()
    assert open_now() == before


def test_the_service_label_comes_from_the_calling_apps_module():
    assert _service_of_module("apps.queue") == "queue"
    assert _service_of_module("apps.pubsub.sse") == "pubsub"
    assert _service_of_module("tests.unit.test_metrics") == ""


# --- the catalogue, its manual and the dashboard ----------------------------------------


def catalogue() -> set[str]:
    return {name for name in metrics.Metric.registry if not name.startswith("realm_test_")}


def test_every_metric_is_described_in_the_manual():
    manual = (ROOT / "docs" / "observability.md").read_text()
    for name in catalogue():
        assert f"`ray_{name}`" in manual, f"docs/observability.md does not describe {name}"
        for label in metrics.Metric.registry[name].labels:
            assert f"`{label}`" in manual, f"{name}'s label {label} is not in the manual"


def test_the_dashboard_queries_only_metrics_that_exist():
    dashboard = json.loads(Path(ROOT / "docs" / "grafana" / "realm.json").read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert exprs, "the dashboard has no queries"
    exported = set()
    for name, metric in metrics.Metric.registry.items():
        exported.add(f"ray_{name}")
        if isinstance(metric, metrics.Histogram):
            exported |= {f"ray_{name}_{part}" for part in ("bucket", "sum", "count")}
    used = {word for expr in exprs for word in re.findall(r"\bray_realm_\w+", expr)}
    assert used and used <= exported, used - exported
    # Every metric of the catalogue shows on some panel.
    shown = {re.sub(r"_(bucket|sum|count)$", "", word) for word in used}
    assert {f"ray_{name}" for name in catalogue()} - shown == set()
