"""Realm's own runtime as monitoring input, and Realm's default rules.

One ``RuntimeWatcher`` actor (named ``monitor-watcher``) polls, every
``watch_interval_s``:

- Ray's actors (state API, or the GCS table when the state API is not served):
  ``realm_actor_restarts_total{actor, class}`` per named actor of the
  deployment's namespace, and a ``realm_actor_death`` event when one dies;
- Ray's nodes: ``realm_node_lost`` once per node that went away;
- the store: ``realm_store_up`` (1 when a read answers, else 0);
- Prometheus text targets (``scrape_targets``, loopback unless allowed) every
  ``scrape_interval_s``, into series of the same names.

Everything goes in as ``SYSTEM_OWNER``'s samples and events, where the default
rules (``default_rules``) read them; their alerts are the admin's.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from actors.monitor.alerting import Receiver, Route
from actors.monitor.client import MonitorClient
from actors.monitor.model import SYSTEM_OWNER, Rule, check_rule, parse_expr
from actors.monitor.receivers import check_url
from actors.monitor.settings import MonitorSettings
from actors.runtime.clock import SystemClock, every
from actors.runtime.settings import Settings
from actors.runtime.store import open_store
from actors.runtime.supervision import Restart, remote_actor

log = logging.getLogger(__name__)
WATCHER_NAME = "monitor-watcher"


def default_rules(config: MonitorSettings) -> list[Rule]:
    """Realm's own rules (owner ``SYSTEM_OWNER``)."""
    window = f"{config.restart_window_s:g}s"
    specs = [
        (
            "RealmActorRestarting",
            f"increase(realm_actor_restarts_total[{window}]) > {config.restart_limit}",
            "critical",
            "actor {{ $labels.actor }} restarted {{ $value }} times in " + window,
        ),
        (
            "RealmNodeLost",
            "events(realm_node_lost[10m]) > 0",
            "critical",
            "a node left the cluster",
        ),
        (
            "RealmActorDied",
            "events(realm_actor_death[10m]) > 0",
            "warning",
            "an actor died for good",
        ),
        (
            "RealmStoreUnavailable",
            "max_over_time(realm_store_up[30s]) < 1",
            "critical",
            "the store does not answer",
        ),
        (
            "RealmQueueDeadLetters",
            'sum by (queue) (delta(ray_realm_queue_jobs{state="dead"}[5m])) > 0',
            "warning",
            "dead letters growing in {{ $labels.queue }}",
        ),
        (
            "RealmReplicaErrors",
            'sum by (service) (rate(ray_realm_http_requests_total{status=~"5.."}[5m])) > 1',
            "warning",
            "replicas of {{ $labels.service }} answer {{ $value }} errors/s",
        ),
        ("Watchdog", "vector(1)", "none", "always firing: its absence means monitoring is down"),
    ]
    rules = []
    for alert, expr, severity, summary in specs:
        fields = parse_expr(expr)
        if alert == "RealmActorDied":
            fields["by"] = ["actor"]
        rule = Rule(
            id=f"realm/{alert}",
            owner=SYSTEM_OWNER,
            alert=alert,
            group="realm",
            for_s=config.default_for_s,
            labels={"severity": severity},
            annotations={"summary": summary},
            **fields,
        )
        rules.append(check_rule(rule, max_window_s=config.retention_s))
    return rules


def realm_series(text: str) -> str:
    """Only Realm's own series (``ray_realm_*``, histogram buckets left out) of a
    node's Prometheus text. The node's exporter also serves every series of Ray
    itself, thousands of them and more as a session's actors come and go: scraped
    whole, they would fill the system owner's series limit and crowd out Realm's
    restart counters."""
    kept = []
    for line in text.splitlines():
        if line.startswith("# "):
            parts = line.split(" ", 3)
            if len(parts) > 2 and parts[2].startswith("ray_realm_"):
                kept.append(line)
        elif line.startswith("ray_realm_"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if not name.endswith("_bucket"):
                kept.append(line)
    return "\n".join(kept) + "\n"


def parse_prometheus(text: str, at: float) -> list[tuple[str, dict[str, str], float, float]]:
    """Samples of a Prometheus text exposition (``prometheus_client``'s parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append(
                (
                    sample.name,
                    {k: str(v) for k, v in sample.labels.items()},
                    at,
                    float(sample.value),
                )
            )
    return samples


class RuntimeWatcher:
    def __init__(self, settings: Settings, client: MonitorClient) -> None:
        self.settings = settings
        self.config = MonitorSettings.of(settings)
        self.client = client
        self.store = open_store(settings, "monitor-probe")
        self.dead_actors: set[str] = set()
        self.lost_nodes: set[str] = set()
        self.last_scrape = 0.0
        self.polls = 0
        #: Whether Ray's state API answers (it needs the dashboard, which Realm
        #: does not start); after its first failure the GCS table is read instead.
        self.state_api = True
        #: This namespace's named actors' ids, by name (for the GCS table).
        self.actor_ids: dict[str, str] = {}
        #: Every id ``actor_ids`` ever held.
        self.tracked: set[str] = set()
        #: One client for every scrape: each new ``httpx.AsyncClient`` loads the CA
        #: bundle into an OpenSSL context of its own, memory the process does not
        #: get back (one per scrape grew the watcher by 3.5 MiB a minute).
        self._http: httpx.AsyncClient | None = None

    async def install(self) -> None:
        """Realm's default rules, rules file and admin route (idempotent)."""
        for rule in default_rules(self.config):
            await self.client.put_rule(SYSTEM_OWNER, rule)
        if self.config.rules_file:
            text = Path(self.config.rules_file).read_text(encoding="utf-8")  # noqa: ASYNC240
            await self.client.load_rules(SYSTEM_OWNER, text)
        if self.config.admin_webhook:
            check_url(self.config.admin_webhook, allow_remote=self.config.allow_remote_targets)
            secret = self.config.admin_webhook_secret or uuid.uuid4().hex
            route = Route(
                receiver="admin",
                group_by=["alertname"],
                routes=[
                    Route(
                        receiver="none",
                        matchers=['alertname="Watchdog"'],
                        repeat_interval_s=self.config.default_repeat_interval_s,
                    )
                ],
            )
            await self.client.configure(
                SYSTEM_OWNER,
                route,
                [
                    Receiver("admin", "webhook", self.config.admin_webhook, secret),
                    Receiver("none", "none"),
                ],
                [],
            )

    def actors(self) -> list[dict[str, Any]]:
        """This namespace's actors, from Ray's state API when the dashboard serves
        it, otherwise (and from then on) from the GCS's actor table."""
        if self.state_api:
            try:
                return self._actors_from_state_api()
            except Exception:  # the state API is served by the dashboard
                self.state_api = False
        import ray

        # The GCS's table names no namespace: this namespace's actors are found by
        # their names (resolved to ids once; an id outlives its restarts), and only
        # their rows are read (the whole table holds every actor the cluster ever
        # ran, dead ones included, and grows for as long as it runs).
        # A name whose actor died for good may come back as a new actor: its old
        # id stays tracked (for its death), its new one is added.
        namespace = self.settings.namespace
        # (An actor whose death was reported is read no more.)
        live = self.tracked - self.dead_actors
        rows = {i: ray._private.state.actors(actor_id=i) for i in live}
        for named in ray.util.list_named_actors(all_namespaces=True):
            name = named["name"]
            known = self.actor_ids.get(name)
            if named["namespace"] != namespace or (
                known in live and rows.get(known, {}).get("State") != "DEAD"
            ):
                continue
            with contextlib.suppress(Exception):  # gone since it was listed
                found = ray.get_actor(name, namespace=namespace)._actor_id.hex()
                self.actor_ids[name] = found
                self.tracked.add(found)
                rows[found] = ray._private.state.actors(actor_id=found)
        return [
            {
                "id": i,
                "name": a.get("Name", ""),
                "class": a.get("ActorClassName", ""),
                "state": a.get("State", ""),
                "restarts": int(a.get("NumRestarts", 0)),
            }
            for i, a in rows.items()
            if a
        ]

    def _actors_from_state_api(self) -> list[dict[str, Any]]:
        from ray.util.state import list_actors

        found = list_actors(
            filters=[("ray_namespace", "=", self.settings.namespace)],
            limit=10_000,
            timeout=5,
            raise_on_missing_output=False,
        )
        return [
            {
                "id": a.actor_id,
                "name": a.name,
                "class": a.class_name,
                "state": a.state,
                "restarts": a.num_restarts,
            }
            for a in found
        ]

    async def poll(self) -> None:
        import ray

        now = time.time()
        samples: list[tuple[str, dict[str, str], float, float]] = []
        events: list[tuple[str, dict[str, str], float, dict[str, Any]]] = []
        for actor in self.actors():
            if not actor["name"]:
                continue
            labels = {"actor": actor["name"], "class": actor["class"]}
            samples.append(("realm_actor_restarts_total", labels, now, float(actor["restarts"])))
            if actor["state"] == "DEAD" and actor["id"] not in self.dead_actors:
                self.dead_actors.add(actor["id"])
                events.append(("realm_actor_death", labels, now, {"actor_id": actor["id"]}))
        for node in ray.nodes():
            if not node.get("Alive", True) and node["NodeID"] not in self.lost_nodes:
                self.lost_nodes.add(node["NodeID"])
                events.append(("realm_node_lost", {"node": node["NodeID"][:16]}, now, {}))
        try:
            await self.store.head("monitor-probe")
            up = 1.0
        except Exception:
            up = 0.0
        samples.append(("realm_store_up", {}, now, up))
        if now - self.last_scrape >= self.config.scrape_interval_s:
            self.last_scrape = now
            samples.extend(await self.scrape(now))
        for start in range(0, len(samples), self.config.max_batch):
            await self.client.ingest(SYSTEM_OWNER, samples[start : start + self.config.max_batch])
        if events:
            await self.client.events(SYSTEM_OWNER, events)
        self.polls += 1

    async def scrape(self, now: float) -> list[tuple[str, dict[str, str], float, float]]:
        found = []
        targets = [(u.strip(), False) for u in self.config.scrape_targets.split(",") if u.strip()]
        if self.config.scrape_realm:
            from actors.runtime.metrics import scrape_targets

            targets += [(url, True) for url in scrape_targets()]
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0, trust_env=False)
        for url, realm_node in targets:
            try:
                check_url(url, allow_remote=self.config.allow_remote_targets)
                answer = await self._http.get(url)
                text = realm_series(answer.text) if realm_node else answer.text
                found.extend(parse_prometheus(text, now))
                found.append(("up", {"instance": url}, now, 1.0))
            except Exception as error:
                log.info("scrape of %s failed: %r", url, error)
                found.append(("up", {"instance": url}, now, 0.0))
        return found

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class _WatcherProcess(RuntimeWatcher):
    # No start hooks (``registry.START_HOOKS``) here: with them, the watcher's
    # resident size grew 184.5 -> 325.7 MiB in a 10-minute soak (+76%, against
    # +6-9% without); which of the hooks does it was not separated.
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        client = MonitorClient(settings)
        super().__init__(settings, client)
        await client.start()
        await self.install()
        self._loop = every(SystemClock(), self.config.watch_interval_s, self.poll)

    async def ping(self) -> int:
        return self.polls


#: Its state (what it already reported) is ephemeral: after a restart it reports
#: deaths again, which only refreshes an event rule's window.
WatcherActor = remote_actor(_WatcherProcess, restart=Restart.PERMANENT)

__all__ = [
    "WATCHER_NAME",
    "RuntimeWatcher",
    "WatcherActor",
    "default_rules",
    "parse_prometheus",
    "realm_series",
]
