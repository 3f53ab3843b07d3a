"""One settings model, read from ``REALM_*`` environment variables.

Settings are read once where an application is built (the driver, or the Serve
controller for ``serve deploy``) and passed to actors and replicas as an
argument, so every process of a deployment agrees on them whatever its own
environment holds. Units are in the names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REALM_", frozen=True, extra="ignore")

    # --- runtime -----------------------------------------------------------
    #: Ray namespace that holds every named actor of this deployment.
    namespace: str = "realm"
    #: ``redis://host:port/db`` selects the Redis store (clusters); empty selects
    #: SQLite under ``data_dir`` (one machine).
    store_url: str = ""
    #: Where the SQLite store keeps its file.
    data_dir: Path = Path("data")
    #: Prefix of every key the store writes, so deployments can share a Redis.
    store_prefix: str = "realm"
    #: SQLite ``synchronous`` pragma: FULL survives power loss, NORMAL only a
    #: process crash (which is what an actor restart is).
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    #: Journal entries between snapshots; bounds replay time after a restart.
    snapshot_every: int = Field(10_000, ge=1)
    #: Most journal entries committed in one group commit.
    group_commit_max: int = Field(1_000, ge=1)

    # --- HTTP --------------------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    #: Replicas per service ingress.
    replicas: int = Field(1, ge=1)
    #: Requests one replica works on at once; requests are light (they await actors).
    max_ongoing_requests: int = Field(256, ge=1)
    #: Largest request body accepted; mset batches are the biggest bodies.
    max_body_bytes: int = Field(8 * MiB, ge=1024)

    # --- cache (service 4) -------------------------------------------------
    cache_shards: int = Field(4, ge=1, le=1024)
    cache_max_entries: int = Field(1_000_000, ge=1)
    cache_max_bytes: int = Field(256 * MiB, ge=1024)
    cache_eviction: Literal["lru", "lfu"] = "lru"
    cache_sweep_interval_s: float = Field(1.0, gt=0)
    #: Longest a near-cache copy lives without hearing from its shard; also the
    #: longest a write waits for a near cache that stopped answering.
    cache_near_lease_s: float = Field(2.0, gt=0)
    cache_near_max_entries: int = Field(10_000, ge=1)
    #: Whether the HTTP ingress keeps a near cache in front of the shards.
    cache_http_near_cache: bool = True
    #: How long concurrent misses wait for one get-or-compute loader.
    cache_load_timeout_s: float = Field(30.0, gt=0)
    max_key_bytes: int = Field(1024, ge=1)
    max_value_bytes: int = Field(1 * MiB, ge=1)
    max_batch_keys: int = Field(1_000, ge=1)

    # --- auth (service 6) --------------------------------------------------
    auth_session_shards: int = Field(2, ge=1, le=256)
    #: A session ends after this long without use...
    auth_idle_timeout_s: float = Field(1800.0, gt=0)
    #: ...and this long after login, whatever its use.
    auth_absolute_timeout_s: float = Field(7 * 86400.0, gt=0)
    #: How stale a session's last-use time may get before a check refreshes it.
    auth_touch_interval_s: float = Field(60.0, gt=0)
    #: Longest a replica trusts its copy of a session without hearing from its shard.
    auth_session_lease_s: float = Field(2.0, gt=0)
    #: argon2id cost (OWASP's minimum: 19 MiB, 2 passes, 1 lane).
    auth_argon2_memory_kib: int = Field(19_456, ge=8)
    auth_argon2_time_cost: int = Field(2, ge=1)
    auth_argon2_parallelism: int = Field(1, ge=1)
    auth_min_password_chars: int = Field(8, ge=1)
    #: Longer passwords are refused before hashing (a 1 MB password is not a minute of work).
    auth_max_password_bytes: int = Field(1024, ge=8)
    auth_max_username_chars: int = Field(64, ge=1)
    #: Failed logins allowed (per username and per client address) before a lockout.
    auth_max_failures: int = Field(5, ge=1)
    #: Wait after the first failed login; it doubles with each further failure.
    auth_backoff_base_s: float = Field(1.0, ge=0)
    auth_lockout_s: float = Field(900.0, gt=0)
    auth_reset_token_ttl_s: float = Field(900.0, gt=0)
    #: A user registering with this name gets the admin role (empty: nobody).
    auth_admin_username: str = ""
    #: Development only: password-reset tokens are also written to the log.
    auth_dev_mode: bool = False

    # --- pub/sub (service 5) ------------------------------------------------
    pubsub_brokers: int = Field(2, ge=1, le=256)
    #: Messages kept per topic for resuming subscribers, and for how long.
    pubsub_history_max: int = Field(1_000, ge=0)
    pubsub_history_max_age_s: float = Field(3_600.0, gt=0)
    #: Largest message payload (the JSON-encoded ``data`` over HTTP and WebSocket).
    pubsub_max_payload_bytes: int = Field(1 * MiB, ge=64)
    #: Messages waiting to be sent to one WebSocket or SSE client; a client
    #: that falls further behind is disconnected as a slow consumer.
    pubsub_send_buffer: int = Field(1_000, ge=1)
    #: Subscriptions one WebSocket connection may hold.
    pubsub_max_subscriptions: int = Field(100, ge=1)
    #: Seconds between keepalives on an idle SSE stream (and session re-checks).
    pubsub_keepalive_s: float = Field(15.0, gt=0)
    #: ``module:function`` called as ``f(user, action, subject) -> bool`` (action
    #: ``publish`` with a topic, or ``subscribe`` with a pattern) after the
    #: built-in rules; empty: the built-in rules only.
    pubsub_acl_hook: str = ""

    # --- task queue (service 2) ---------------------------------------------
    #: Comma-separated module prefixes a job's handler must come from: an enqueue
    #: names code to run, so only these modules may be named.
    queue_handler_modules: str = "actors.queue.handlers"
    #: Worker actors per queue (placed by Ray, SPREAD over nodes).
    queue_workers: int = Field(2, ge=1, le=256)
    #: Jobs running at once per queue, unless the queue is configured otherwise...
    queue_concurrency: int = Field(64, ge=1)
    #: ...and over all queues together (a shared slot actor hands them out).
    queue_global_concurrency: int = Field(1_024, ge=1)
    #: Most jobs handed to a worker in one call (batching keeps per-job cost low).
    queue_batch_max: int = Field(256, ge=1)
    #: A running job's lease; a worker renews it every ``queue_heartbeat_s``.
    queue_visibility_timeout_s: float = Field(30.0, gt=0)
    queue_heartbeat_s: float = Field(5.0, gt=0)
    #: Attempts before a job is dead-lettered, unless the job says.
    queue_max_attempts: int = Field(5, ge=1, le=1_000)
    #: A run longer than this is cancelled and counts as a failed attempt, unless the job says.
    queue_job_timeout_s: float = Field(300.0, gt=0)
    #: Retry n waits between half and all of min(base * 2^(n-1), max).
    queue_backoff_base_s: float = Field(1.0, ge=0)
    queue_backoff_max_s: float = Field(300.0, ge=0)
    #: Succeeded and cancelled jobs (and their results) are kept this long, dead ones longer.
    queue_result_ttl_s: float = Field(3_600.0, gt=0)
    queue_dead_ttl_s: float = Field(7 * 86_400.0, gt=0)
    #: A unique key holds its job for this long after the enqueue, unless the job says.
    queue_unique_for_s: float = Field(3_600.0, gt=0)
    queue_max_args_bytes: int = Field(64 * 1024, ge=2)
    queue_max_result_bytes: int = Field(1 * MiB, ge=2)
    #: Most jobs in one enqueue batch.
    queue_max_batch_jobs: int = Field(1_000, ge=1)
    #: Finished jobs kept per queue (in its memory) before the soonest-expiring go early.
    queue_max_finished_jobs: int = Field(100_000, ge=0)

    # --- resources (service 11) ---------------------------------------------
    #: Resource-pool actors; pools (and groups) are spread over them by hashing.
    resources_shards: int = Field(2, ge=1, le=256)
    #: Lease TTL when neither the request nor the pool names one.
    resources_default_ttl_s: float = Field(30.0, gt=0)
    #: Longest TTL a lease may ask for (a dead holder blocks others at most this long).
    resources_max_ttl_s: float = Field(3_600.0, gt=0)
    #: Longest an acquire may wait (long-poll or WebSocket).
    resources_max_wait_s: float = Field(300.0, ge=0)
    #: Waiters queued per pool before acquires are refused (429), unless the pool says.
    resources_max_waiters: int = Field(10_000, ge=1)
    #: How often a pool actor ends expired leases and wakes waiters for them.
    resources_sweep_interval_s: float = Field(0.05, gt=0)

    # --- scheduler (service 7) ----------------------------------------------
    #: Scheduler partition actors; schedules are spread over them by hashing
    #: (fixed for a deployment: changing it moves schedules to other owners).
    scheduler_partitions: int = Field(2, ge=1, le=256)
    #: A firing is decided and journaled this long before it is due, so the
    #: hand-off to its target at the due time waits for no store write.
    scheduler_decide_ahead_ms: int = Field(250, ge=0, le=60_000)
    #: Runs kept per schedule in its history.
    scheduler_history_max: int = Field(100, ge=1, le=10_000)
    #: Most missed runs one catch-up fires under the fire-all misfire policy.
    scheduler_max_catchup: int = Field(100, ge=1, le=10_000)
    #: Longest wait between attempts to hand a firing to a target that failed.
    scheduler_retry_max_s: float = Field(30.0, gt=0)
    #: Largest target payload (a queue job's args, a pub/sub payload) as JSON.
    scheduler_max_payload_bytes: int = Field(64 * 1024, ge=2)

    # --- ledger (service 8) -------------------------------------------------
    #: Ledger shard actors; accounts are spread over them by rendezvous hashing
    #: of the account id (fixed for a deployment: changing it moves accounts).
    ledger_shards: int = Field(4, ge=1, le=256)
    #: Two-phase-commit coordinator actors; a cross-shard transfer goes to the
    #: one its (first) transfer id hashes to.
    ledger_coordinators: int = Field(2, ge=1, le=256)
    #: Most accounts or transfers in one batch request.
    ledger_max_batch: int = Field(1_000, ge=1, le=100_000)
    #: Most history entries in one page.
    ledger_history_page_max: int = Field(1_000, ge=1)
    #: How often shards (and coordinators) void pending transfers whose timeout passed.
    ledger_pending_sweep_s: float = Field(1.0, gt=0)
    #: A shard asks the coordinator about a transaction it prepared this long
    #: ago and heard nothing more of; a coordinator re-drives stalled ones as often.
    ledger_in_doubt_after_s: float = Field(5.0, gt=0)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()
