"""The delivery job: what the task queue runs for each batch of a notification.

Enqueued by a push shard as ``actors.push.jobs:deliver`` (this module must be
under ``REALM_QUEUE_HANDLER_MODULES``). The job's arguments name only the
shard, the notification and the batch: the devices, the message and the
provider settings come from the shard (``claim``), so the queue's journal
never holds a token or a credential. A job run again (its worker died, its
lease ran out) claims only the devices still pending.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from actors.push.delivery import send_batch
from actors.push.providers import (
    ApnsProvider,
    FcmProvider,
    InAppProvider,
    Provider,
    WebhookProvider,
    WebPushProvider,
)
from actors.push.settings import PushSettings
from actors.push.shard import SHARD_PREFIX, Report
from actors.runtime.hashing import Rendezvous

#: Providers per worker process, by their settings (connections and tokens are reused).
_providers: dict[str, dict[str, Provider]] = {}


def shard_of(user: str, shards: int) -> str:
    return f"{SHARD_PREFIX}-{Rendezvous(shards).owner(user)}"


def providers_for(config: PushSettings, namespace: str) -> dict[str, Provider]:
    key = json.dumps([config.model_dump(mode="json"), namespace], sort_keys=True)
    found = _providers.get(key)
    if found is None:
        import ray

        from actors.runtime.supervision import call

        # connections kept open for every request a job may have in flight (two jobs
        # at once per worker), so a burst reuses them rather than reconnecting
        pool = config.send_concurrency * 2
        http = httpx.AsyncClient(
            # waiting for a free connection is not the provider being slow: no pool timeout
            timeout=httpx.Timeout(config.request_timeout_s, pool=None),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        )

        async def deliver(
            shard: str, targets: list[tuple[str, str]], message: dict[str, Any]
        ) -> list[str]:
            handle = ray.get_actor(shard, namespace=namespace)
            stored: list[str] = await call(handle, "inbox_deliver", targets, message)
            return stored

        found = {
            "webhook": WebhookProvider(config, http),
            "webpush": WebPushProvider(config, http),
            "inapp": InAppProvider(deliver, lambda user: shard_of(user, config.shards)),
        }
        if config.fcm_project_id and config.fcm_credentials_file:
            found["fcm"] = FcmProvider(config, http)
        if config.apns_key_file and config.apns_topic:
            found["apns"] = ApnsProvider(config)
        _providers[key] = found
    return found


async def deliver(shard: str, namespace: str, notification: str, batch: int) -> dict[str, int]:
    """Send batch ``batch`` of ``notification`` (accepted by shard ``shard``)."""
    import ray

    from actors.runtime.supervision import call

    handle = ray.get_actor(shard, namespace=namespace)
    claim = await call(handle, "claim", notification, batch)
    devices = claim["devices"]
    if not devices:
        return {"sent": 0}
    config = PushSettings(**claim["config"])
    providers = providers_for(config, namespace)

    async def report(reports: list[Report]) -> None:
        await call(handle, "report", notification, reports)

    reports = await send_batch(providers, devices, claim["message"], config, report)
    counts: dict[str, int] = {"sent": len(reports)}
    for one in reports:
        counts[one.state] = counts.get(one.state, 0) + 1
    return counts


__all__ = ["deliver", "providers_for", "shard_of"]
