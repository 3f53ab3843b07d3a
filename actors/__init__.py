"""Realm's actors: the shared runtime, and one module per service.

Runtime
    settings    ``Settings`` read from ``REALM_*`` variables
    errors      ``RealmError`` and its tree
    clock       ``Clock``, ``SystemClock``, ``FakeClock``
    store       ``Store``, ``SQLiteStore``, ``RedisStore``, ``open_store``
    journal     ``Journal`` (group commit), ``Durable`` (event-sourced actor state)
    supervision ``Restart`` presets, ``remote_actor``, ``get_or_create``, ``call``,
                ``ActorRef``, ``report_start``, ``recover`` (a durable actor's start)
    fanout      ``Mailboxes``: per-follower long-poll with acknowledgements
    leases      ``Leases``: owner side of lease-based near caching
    near_cache  ``NearCache``: client side (local copies, following owners)
    batching    ``Coalescer``: concurrent requests become batched actor calls
    hashing     ``Rendezvous`` hashing
    eviction    ``LRU`` and ``LFU`` orders

Services
    cache         ``CacheShard`` / ``CacheShardActor`` (service 4)
    cache_client  ``CacheClient`` (routing, batching, near cache)
    auth          ``UserStore``, ``SessionStore`` (service 6)
    auth_client   ``AuthClient``, ``Principal``
    topics        ``check_topic``, ``check_pattern``, ``matches``, ``SubscriptionIndex``
    pubsub        ``Broker``, ``BrokerActor``, ``Message`` (service 5)
    pubsub_client ``PubSubClient``, ``Subscription``: publish, subscribe (resume, queue
                  groups), request/reply from Python
    resources     ``ResourcePool`` / ``ResourcePoolActor`` (service 11): leases, fencing
                  tokens, fair queues, quotas
    resources_client ``ResourcesClient`` (routing, waits with deadlines, groups)
    job_model     ``JobState``, ``Job``, ``QueueConfig``, ``backoff_s``, handler resolution
    jobqueue      ``JobQueue`` / ``JobQueueActor`` (service 2): durable jobs, leases,
                  retries, dead letters, the dispatcher
    job_workers   ``JobWorker`` actors, ``RayWorkerPool``, ``JobSlots`` (global concurrency)
    job_handlers  sample job handlers (``noop``, ``echo``, ``sleep``, ``fail``, ...)
    queue_client  ``QueueClient``: enqueue, get, list, cancel, retry, stats, wait
    triggers      ``Cron``, ``Every``, ``Once``: due times in IANA zones, the DST rules
    scheduler     ``Scheduler`` / ``SchedulerPartitionActor`` (service 7): schedules,
                  timers, exactly-once firing, misfire and overlap policies
    scheduler_targets ``Target``, ``QueueTarget``, ``PubSubTarget``, ``register_target``
    scheduler_client ``SchedulerClient``: create, get, list, update, delete, pause,
                  resume, upcoming, history
    ledger_model  ``AccountSpec``, ``TransferSpec``, ``Kind``, ``chains``: the ledger's
                  domain types and input rules
    ledger        ``LedgerShard`` / ``LedgerShardActor`` (service 8): accounts,
                  transfers, pending timeouts, history, the shard side of 2PC
    ledger_coordinator ``TxCoordinator`` / ``TxCoordinatorActor``: 2PC decision log,
                  presumed-abort recovery
    ledger_client ``LedgerClient``: routing same-shard vs 2PC, batching, post/void
"""

from actors.clock import Clock, FakeClock, SystemClock
from actors.errors import RealmError
from actors.journal import Durable, Journal
from actors.settings import Settings
from actors.store import RedisStore, SQLiteStore, Store, open_store
from actors.supervision import ActorRef, Restart, call, get_or_create, remote_actor, report_start

__all__ = [
    "ActorRef",
    "Clock",
    "Durable",
    "FakeClock",
    "Journal",
    "RealmError",
    "RedisStore",
    "Restart",
    "SQLiteStore",
    "Settings",
    "Store",
    "SystemClock",
    "call",
    "get_or_create",
    "open_store",
    "remote_actor",
    "report_start",
]
