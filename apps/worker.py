"""What every Ray worker process of Realm runs before any actor or replica does.

``setup`` is Realm's Ray ``worker_process_setup_hook``
(``serve_app.RAY_RUNTIME_ENV``, passed by every ``ray.init`` Realm makes):

- Serve replicas' internal gRPC servers bind the node's address, not ``[::]``
  (``apps.listeners``);
- the process's Python logs go to the logs service once its actor or replica
  starts, when its settings say so (``REALM_LOGS_SHIP_REALM_LOGS``; see
  ``actors.logs.handler``).
"""

from __future__ import annotations

from apps.listeners import bind_to_node_address


def setup() -> None:
    bind_to_node_address()
    ship_logs_on_start()


def ship_logs_on_start() -> None:
    """Add the logs service's shipper to the hooks every Realm actor and replica
    runs as it starts (``actors.runtime.supervision.START_HOOKS``)."""
    from actors.logs.client import ship_realm_logs
    from actors.runtime.supervision import START_HOOKS

    if ship_realm_logs not in START_HOOKS:
        START_HOOKS.append(ship_realm_logs)


__all__ = ["setup", "ship_logs_on_start"]
