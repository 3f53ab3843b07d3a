"""The scheduler (service 7): cron, interval and one-shot schedules, fired exactly once.

- ``client``: ``SchedulerClient``, the service's public face (create, get,
  list, update, delete, pause, resume, upcoming, history, stats), and
  ``owner_tag``/``routing_key`` (an owner's schedules share a partition).
- ``partition``: ``Scheduler``, one partition's schedules as a ``Durable``
  actor (timers, decisions, hand-offs), and ``SchedulerPartitionActor``.
- ``model``: ``Spec``, ``Schedule``, ``Run``, the policies ``Misfire`` and
  ``Overlap``, ``normalize`` (a spec checked), ``plan``, ``jitter_ms``.
- ``timers``: ``Timers``, events at wall-clock times under one asyncio timer.
- ``triggers``: ``Cron``, ``Every``, ``Once`` (due times, time zones, DST),
  ``check_cron``, ``parse_at``, ``zone``.
- ``targets``: ``QueueTarget``, ``PubSubTarget``, ``register_target``,
  ``owner_principal`` (who a firing acts as), ``target_scope``.
- ``settings``: ``SchedulerSettings`` (``REALM_SCHEDULER_*``).
- ``errors``: ``ScheduleNotFound``, ``BadCron``, ``UnknownTimeZone``, ``UnknownTarget``.
"""
