"""Push notifications (service 12): devices, notifications and their delivery.

- ``client.py``: ``PushClient``, the service's Python face;
- ``shard.py``: ``PushShard`` (durable: devices, outboxes, in-app inboxes, keyed
  by user id) and its Ray actor;
- ``jobs.py``: the delivery job the task queue runs (``actors.push.jobs:deliver``);
- ``delivery.py``: attempts, retries with backoff and ``Retry-After``;
- ``providers.py``: Web Push, FCM HTTP v1, APNs, webhook and in-app;
- ``model.py``: devices, notifications, deliveries, inboxes and input rules;
- ``settings.py`` (``REALM_PUSH_*``), ``errors.py``.
"""
