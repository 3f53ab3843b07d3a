"""The shared actor runtime: written once, imports no service (``docs/architecture.md``).

Durable state
    store       ``Store``, ``SQLiteStore`` (a file per actor), ``RedisStore``, ``open_store``
    codec       ``encode``, ``decode``, ``convert``: records and snapshots as data
    journal     ``Journal`` (group commit), ``Durable`` (``execute``, ``record``, ``reply``;
                ``schema_version``, ``upgrade_record``, ``upgrade_state``)

Actors and their supervision
    supervision ``Restart`` presets, ``remote_actor``, ``get_or_create``, ``call``,
                ``ActorRef``, ``recover`` (a durable actor's start), ``report_start``
    shards      ``Shards``: N named actors of one class, keys routed by hashing
    hashing     ``Rendezvous`` hashing
    backoff     ``Backoff``, ``retrying``, ``retry_call``: every retry
    clock       ``Clock``, ``SystemClock``, ``FakeClock``, ``every``
    heap        ``HeapFreezer``: long-lived state kept out of full garbage collections;
                ``tune_collector``; ``allocation_probe`` (a fixed piece of work, timed)

Fan-out, near caching, batching
    fanout      ``Mailboxes`` (the owner's side of long-poll fan-out), ``follow`` (the follower's)
    leases      ``Leases``: the owner's side of near caching
    near_cache  ``NearCache``: local copies under leases, ``read_through``
    batching    ``Coalescer``: concurrent requests become batched actor calls

Configuration and errors
    registry    ``SERVICES``: every service, the one list
    settings    ``Settings`` (runtime and HTTP), ``Section`` (a service's settings)
    errors      ``RealmError`` and the errors every service shares
    metrics     Realm's own metrics (``ray.util.metrics``), defined once: the catalogue
"""
