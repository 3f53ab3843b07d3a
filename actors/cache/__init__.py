"""The distributed cache (service 4): JSON values in memory over N shard actors.

    client      ``CacheClient`` (``connect``): routing by rendezvous hashing,
                batches split per shard, coalesced reads, near cache,
                get-or-compute; ``encode``/``decode`` (values as JSON bytes)
    shard       ``CacheShard`` (TTL, eviction, single flight, near-cache leases),
                ``CacheShardActor``, ``SHARDS_PREFIX``; ``check_key``,
                ``check_value``, ``check_batch`` (the limits)
    eviction    ``LRU``, ``LFU``, ``eviction_order``
    errors      ``KeyTooLong``, ``ValueTooLarge``, ``KeyNotFound``, ``NotAnInteger``,
                ``LoaderFailed``, ``LoadTimedOut``
    settings    ``CacheSettings`` (``REALM_CACHE_*``)

Not durable by design: a restarted shard starts empty. Other services use
only ``client``.
"""
