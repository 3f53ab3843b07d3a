"""The task queue (service 2): durable named job queues run by worker actors.

- ``client``: ``QueueClient``, the public face (the HTTP front and other
  services use only this; every call names the queue's owner), ``job_spec``,
  ``JobDidNotSucceed``; and, for other services, ``QueueSettings``,
  ``resolve_handler``, ``JobState``, ``JobArgsTooLarge``, ``UnknownHandler``,
  ``QueueNotFound``.
- ``directory``: ``QueueDirectory``, which queues exist and whose they are (the
  per-owner quota), and the only place queue actors are started; its actor
  ``QueueDirectoryActor`` (``queue-directory``).
- ``jobqueue``: ``JobQueue``, one queue's durable state and operations, its
  snapshot ``QueueSnapshot``, ``check_limits``, and the actor ``JobQueueActor``
  (``queue/<owner>/<name>/<incarnation>``).
- ``table``: ``JobTable``, a queue's jobs and their indexes (by state, ready,
  due, expiring, by key).
- ``dispatcher``: ``Dispatcher``, which hands ready jobs to workers within the
  limits and journals their outcomes; ``WorkerPool``, ``Slots``, ``TokenBucket``.
- ``workers``: ``JobWorker`` actors and their ``RayWorkerPool``, ``JobContext``
  (what a handler gets), ``JobSlots`` (the global concurrency) and its ``SlotsClient``.
- ``model``: ``Job``, ``JobSpec``, ``JobState``, ``Work``, ``Outcome``,
  ``prepare`` (checks an enqueue), ``backoff_s``, ``resolve_handler``,
  ``job_handler``, ``HandlerCache``, ``queue_actor_name``, the limits a caller
  may set.
- ``stats``: ``Tally``, what a queue counts.
- ``handlers``: sample job handlers (``noop``, ``echo``, ``sleep``, ``fail``, ...).
- ``settings``: ``QueueSettings`` (``REALM_QUEUE_*``).
- ``errors``: ``QueueNotFound``, ``JobNotFound``, ``UnknownHandler``,
  ``JobArgsTooLarge``, ``JobStateConflict``.
"""
