"""The Celery peer of ``benchmarks/queue.py``: a no-op task on the local Redis (db 5).

The worker is started by the benchmark as
``celery -A benchmarks.queue_celery worker``. A task that carries its enqueue
time ``t`` records ``start - t`` in a Redis list (the benchmark samples one
job in 100 this way, plus the last one, which marks the end of the run).
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER_URL = os.environ.get("REALM_BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/5")
QUEUE = "bench-noop"
LATENCIES = "bench:celery:latency"

app = Celery("realm_bench", broker=BROKER_URL)
app.conf.update(
    task_ignore_result=True,  # no result backend: the no-op's result is not read
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_redis: redis.Redis | None = None


@app.task(name="bench.noop")
def noop(t: float | None = None) -> None:
    global _redis
    if t is not None:
        started = time.time()
        if _redis is None:
            _redis = redis.Redis.from_url(BROKER_URL)
        _redis.rpush(LATENCIES, started - t)
