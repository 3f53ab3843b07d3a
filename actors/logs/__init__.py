"""Distributed logs (service 10): ingest, LogQL queries, live tail, retention.

- ``client.py``: ``LogsClient``, the service's Python face (and ``install_handler``'s way in);
- ``shard.py``: ``LogShard`` (durable: streams, heads, chunk index) and its Ray actor;
- ``logql.py``: the LogQL subset: parser, matchers, pipeline;
- ``model.py``: entries, streams, chunks, input rules and rate limits;
- ``handler.py``: the ``logging`` handler that ships Realm's own logs;
- ``settings.py`` (``REALM_LOGS_*``), ``errors.py``.
"""
