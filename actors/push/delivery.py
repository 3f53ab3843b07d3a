"""Sending one batch: attempts with bounded retry, backoff with full jitter, and
``Retry-After`` honoured; dead tokens never retried; expired messages never sent.

``send_batch`` is what a delivery job runs (``actors.push.jobs:deliver``),
written without Ray so that tests drive it against the stand-ins directly.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from actors.push.model import Device
from actors.push.providers import Outcome, Provider
from actors.push.settings import PushSettings
from actors.push.shard import Report

Sleep = Callable[[float], Awaitable[None]]


def backoff_s(config: PushSettings, attempt: int, hint: float | None) -> float:
    """Wait before attempt ``attempt + 1``: full jitter up to the exponential
    ceiling, and at least the provider's ``Retry-After``."""
    ceiling = min(config.retry_base_s * 2 ** (attempt - 1), config.retry_max_s)
    wait = random.uniform(0, ceiling)
    return max(wait, hint) if hint is not None else wait


async def attempt(provider: Provider, device: Device, message: dict[str, Any]) -> Outcome:
    try:
        return await provider.send(device, message)
    except httpx.TimeoutException:
        return Outcome("retry", "timeout")
    except httpx.TransportError:
        return Outcome("retry", "network")
    except Exception as error:  # a provider that cannot be used (settings, bad key...)
        return Outcome("failed", f"provider_error:{type(error).__name__}")


async def send_one(
    provider: Provider,
    device: Device,
    message: dict[str, Any],
    config: PushSettings,
    *,
    first: Outcome | None = None,
    sleep: Sleep = asyncio.sleep,
) -> Report:
    attempts = 0
    outcome = first
    while True:
        if outcome is None:
            outcome = await attempt(provider, device, message)
        attempts += 1
        if outcome.state != "retry":
            break
        if attempts >= config.max_attempts:
            return Report(device.id, "failed", outcome.reason or "retries_exhausted", attempts)
        wait = backoff_s(config, attempts, outcome.retry_after_s)
        if wait > config.retry_max_s:
            return Report(device.id, "failed", f"{outcome.reason}:retry_after_too_long", attempts)
        if time.time() + wait >= message["created_at"] + message["ttl_s"]:
            return Report(device.id, "expired", "ttl", attempts)
        await sleep(wait)
        outcome = None
    latency = (time.time() - message["created_at"]) * 1000 if outcome.state == "delivered" else None
    return Report(device.id, outcome.state, outcome.reason, attempts, latency)


async def send_batch(
    providers: dict[str, Provider],
    devices: list[Device],
    message: dict[str, Any],
    config: PushSettings,
    report: Callable[[list[Report]], Awaitable[Any]],
    *,
    sleep: Sleep = asyncio.sleep,
) -> list[Report]:
    """Send ``message`` to ``devices`` (any platforms), ``send_concurrency`` at a time;
    ``report`` each chunk's outcomes as it finishes, so that a job that dies midway
    is run again for the devices still pending only."""
    done: list[Report] = []
    step = config.send_concurrency
    for start in range(0, len(devices), step):
        chunk = devices[start : start + step]
        firsts: dict[str, Outcome] = {}
        by_platform: dict[str, list[Device]] = {}
        for device in chunk:
            by_platform.setdefault(device.platform, []).append(device)
        for platform, group in by_platform.items():
            provider = providers.get(platform)
            if provider is None:
                firsts.update({d.id: Outcome("failed", "platform_not_configured") for d in group})
                continue
            try:
                batch = await provider.send_many(group, message)
            except Exception:
                batch = None
            if batch is not None:
                firsts.update({d.id: o for d, o in zip(group, batch, strict=True)})
        reports = await asyncio.gather(
            *(
                send_one(
                    providers[d.platform] if d.platform in providers else Provider(),
                    d,
                    message,
                    config,
                    first=firsts.get(d.id),
                    sleep=sleep,
                )
                for d in chunk
            )
        )
        await report(list(reports))
        done.extend(reports)
    return done


__all__ = ["attempt", "backoff_s", "send_batch", "send_one"]
