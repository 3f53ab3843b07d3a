"""Serve replicas' internal gRPC server on the node's address, not every interface.

Every Serve replica starts a gRPC server for calls from proxies and other
deployments, and Ray 2.60 binds it to ``[::]:0``: every interface, whatever
``http_options.host`` says. Its callers reach it at the replica's node address
(the address Ray registered for the node: 127.0.0.1 for ``make run``, which
sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), so that is the only address it
needs. ``bind_to_node_address`` runs first in every ingress replica's constructor
(``apps.common.ClientIngress``), before Serve starts that server, and makes Ray's
helper that adds the server's port
(``ray._common.tls_utils.add_port_to_grpc_server``, which also applies
``RAY_USE_TLS``) bind that address instead of a wildcard. Token
authentication still guards the server; this keeps it off other networks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

#: Addresses that mean "every interface".
WILDCARDS = frozenset({"[::]", "::", "0.0.0.0", "*", ""})


def bind_to_node_address() -> None:
    """Make the replica's gRPC server bind this node's address (see the module)."""
    import ray
    from ray._common import tls_utils

    original = tls_utils.add_port_to_grpc_server
    if getattr(original, "binds_node_address", False):
        return
    patched = node_address_binder(original, ray.util.get_node_ip_address())
    tls_utils.add_port_to_grpc_server = patched
    # The replica module imports the helper by name; if it is loaded already.
    replica = sys.modules.get("ray.serve._private.replica")
    if replica is not None:
        replica.add_port_to_grpc_server = patched  # type: ignore[attr-defined]


def node_address_binder(
    add_port: Callable[[Any, str], int], node_address: str
) -> Callable[[Any, str], int]:
    """``add_port`` with a wildcard address replaced by ``node_address``."""

    def add_port_on_node_address(server: Any, address: str) -> int:
        return add_port(server, on_node_address(address, node_address))

    add_port_on_node_address.binds_node_address = True  # type: ignore[attr-defined]
    return add_port_on_node_address


def on_node_address(address: str, node_address: str) -> str:
    """``host:port`` with a wildcard host replaced by ``node_address``."""
    host, _, port = address.rpartition(":")
    if host not in WILDCARDS:
        return address
    if ":" in node_address:  # IPv6
        return f"[{node_address}]:{port}"
    return f"{node_address}:{port}"


__all__ = ["bind_to_node_address", "node_address_binder", "on_node_address"]
