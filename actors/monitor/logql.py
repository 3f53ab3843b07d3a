"""A LogQL metric query as a rule's input, through the logs service's client.

The rule's owner is the logs tenant queried: a user's rule reads that user's logs
only. The value is the query's point at the evaluation time (one step).
"""

from __future__ import annotations

from typing import Any

from actors.monitor.model import Labels
from actors.runtime.settings import Settings


class LogsQuery:
    def __init__(self, settings: Settings) -> None:
        from actors.logs import client

        self._module: Any = client
        self.client = client.LogsClient(settings)

    async def instant(self, owner: str, query: str, at: float) -> list[tuple[Labels, float]]:
        parsed = self._module.logql.parse(query)
        if not isinstance(parsed, self._module.MetricQuery):
            raise ValueError("a LogQL rule input is a metric query (count_over_time, rate, ...)")
        end_ns = int(at * 1e9)
        series = await self.client.metric(owner, parsed, start_ns=end_ns, end_ns=end_ns, step_ns=1)
        return [(dict(labels), points[-1][1]) for labels, points in series if points]


__all__ = ["LogsQuery"]
