"""Monitoring and alerting (service 9): rules over samples, events and logs, and alerts.

- ``client.py``: ``MonitorClient``, the service's Python face;
- ``model.py``: labels, matchers, templates, rules and Prometheus rule files;
- ``series.py``: samples and events in memory, window functions;
- ``evaluator.py``: ``RuleEngine`` (durable): rules, alert lifecycle, outbox;
- ``alerting.py``: ``AlertManager`` (durable): routing, grouping, silences,
  inhibition, acknowledgements, notification log;
- ``receivers.py``: signed webhooks, pub/sub, push and chat receivers;
- ``watcher.py``: Realm's runtime events and default rules;
- ``actors.py``: the Ray actors; ``logql.py``: LogQL rule inputs;
- ``settings.py`` (``REALM_MONITOR_*``), ``errors.py``.
"""
