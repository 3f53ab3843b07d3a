"""The resource manager (service 11): leased mutexes and semaphores with fencing tokens.

    client      ``ResourcesClient``: pools and groups routed over the pool actors
                by rendezvous hashing, acquires withdrawn when their caller goes
    pool        ``ResourcePool`` (acquire and its FIFO queue, renew, release,
                expiry, validate, stats), ``ResourcePoolActor``, ``SHARD_PREFIX``
    model       ``PoolBook`` (the journaled state: ``PoolState``, ``Lease``,
                ``Usage``, ``BookSnapshot``), ``PoolSpec``, ``PoolKind``,
                ``LeaseState``, ``WaitQueue``, ``Waiter``; input checks
                ``check_name``, ``check_group``, ``make_spec``, ``check_ttl``;
                ``pick_least_loaded`` (group acquires)
    errors      ``PoolNotFound``, ``GroupNotFound``, ``PoolExists``, ``LeaseNotFound``,
                ``LeaseExpired``, ``NotLeaseHolder``, ``AcquireTimedOut``,
                ``AcquireCancelled``, ``QuotaExceeded``
    settings    ``ResourcesSettings`` (``REALM_RESOURCES_*``)

Leases, tokens and counts are durable; waiters are not (a restart's retried
calls queue again). Other services use only ``client``.
"""
