"""Distributed logs (service 10): ingest, LogQL queries, live tail, retention.

- ``client.py``: ``LogsClient``, the service's Python face;
- ``shard.py``: ``LogShard`` (durable: streams, heads, chunk index) and its Ray actor;
- ``logql.py``: the LogQL subset: parser, matchers, pipeline;
- ``model.py``: entries, streams, heads, input rules and rate limits;
- ``chunks.py``: the chunk file format, and the arrays queries run over (numpy);
- ``handler.py``: the ``logging`` handler that ships Realm's own logs, and its start hook;
- ``settings.py`` (``REALM_LOGS_*``), ``errors.py``.
"""
