"""Settings of the task queue: ``REALM_QUEUE_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import MiB, Section


class QueueSettings(Section, service="queue"):
    """The task queue: read once, where the deployment is built."""

    handler_modules: str = "actors.queue.handlers,actors.push.jobs"
    """Comma-separated module prefixes a job's handler must come from: an enqueue names code to
    run, so only these modules may be named.
    """

    max_queues_per_owner: int = Field(10, ge=0, le=10_000)
    """Queues one owner (a user, and the API keys acting for them) may hold; creating one
    more is refused (403 ``limit_reached``) until one is deleted.
    """

    max_jobs_per_queue: int = Field(100_000, ge=1, le=10_000_000)
    """Jobs not finished yet (scheduled, queued, running, failed) one queue holds; an enqueue
    beyond it is refused (429 ``queue_full``).
    """

    max_queue_bytes: int = Field(64 * MiB, ge=1_024, le=16 * 1_024 * MiB)
    """Bytes of arguments (as JSON) of the jobs not finished yet that one queue holds; an
    enqueue beyond it is refused (429 ``queue_full``).
    """

    max_finished_bytes: int = Field(64 * MiB, ge=0, le=16 * 1_024 * MiB)
    """Bytes of finished jobs (arguments and results, as JSON) one queue keeps; beyond it the
    soonest-expiring are forgotten early (as with ``max_finished_jobs``).
    """

    max_job_timeout_s: float = Field(86_400.0, gt=0, le=30 * 86_400.0)
    """Longest ``timeout_s`` a job may ask for (and the most ``job_timeout_s`` may be)."""

    max_delay_s: float = Field(30 * 86_400.0, gt=0, le=366 * 86_400.0)
    """Furthest in the future a job may be due (``delay_s``, ``run_at``), and the longest
    ``unique_for_s`` a job may ask for.
    """

    workers: int = Field(2, ge=1, le=256)
    """Worker actors per queue (placed by Ray, SPREAD over nodes)."""

    concurrency: int = Field(64, ge=1)
    """Jobs running at once per queue, unless the queue is configured otherwise."""

    global_concurrency: int = Field(1_024, ge=1)
    """Jobs running at once over all queues together (a shared slot actor hands them out)."""

    batch_max: int = Field(256, ge=1)
    """Most jobs handed to a worker in one call (batching keeps per-job cost low)."""

    visibility_timeout_s: float = Field(30.0, gt=0)
    """A running job's lease; a worker renews it every ``queue_heartbeat_s``."""

    heartbeat_s: float = Field(5.0, gt=0)
    """How often a worker renews the leases of its running jobs."""

    max_attempts: int = Field(5, ge=1, le=1_000)
    """Attempts before a job is dead-lettered, unless the job says."""

    job_timeout_s: float = Field(300.0, gt=0)
    """A run longer than this is cancelled and counts as a failed attempt, unless the job says.
    """

    backoff_base_s: float = Field(1.0, ge=0)
    """Retry n waits between half and all of min(base * 2^(n-1), max)."""

    backoff_max_s: float = Field(300.0, ge=0)
    """Longest wait before a retry (see ``backoff_base_s``)."""

    result_ttl_s: float = Field(3_600.0, gt=0)
    """Succeeded and cancelled jobs (and their results) are kept this long, dead ones longer.
    """

    dead_ttl_s: float = Field(7 * 86_400.0, gt=0)
    """How long dead-lettered jobs are kept for inspection and retry."""

    unique_for_s: float = Field(3_600.0, gt=0)
    """A unique key holds its job for this long after the enqueue, unless the job says."""

    max_args_bytes: int = Field(64 * 1024, ge=2)
    """Largest job arguments, as JSON bytes (larger: 413)."""

    max_result_bytes: int = Field(1 * MiB, ge=2)
    """Largest job result kept, as JSON bytes."""

    max_batch_jobs: int = Field(1_000, ge=1)
    """Most jobs in one enqueue batch."""

    max_finished_jobs: int = Field(100_000, ge=0)
    """Finished jobs kept per queue (in its memory) before the soonest-expiring go early."""
