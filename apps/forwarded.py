"""The client's address, as the ingress saw it.

Login throttles and session records key on it, so it must be the address that
opened the connection to Realm's ingress, never one a client wrote into a
header. A request reaches a replica one of two ways (Ray Serve 2.60):

- **HAProxy** (``RAY_SERVE_ENABLE_HA_PROXY=1``, what ``make run`` uses when
  there is a binary): HAProxy connects to the replica's own HTTP server
  ("direct ingress"), or, while an application has no replica, to Serve's
  fallback proxy, which hands the request on. Either way the replica's peer is
  HAProxy: 127.0.0.1 when it runs on the replica's node, that node's address
  otherwise. Realm's HAProxy (``apps/haproxy-loopback``) drops every
  forwarded-address header the client sent and sets ``X-Forwarded-For`` to the
  address that connected to it. So: a request from HAProxy's address carries
  the client's address in exactly one ``X-Forwarded-For`` value, and that is
  the one read; from any other peer, the header is ignored.
- **Serve's Python proxy**: the proxy hands the ASGI scope to the replica, and
  its ``client`` is the peer that connected to the proxy: the client itself.
  No header is read.

Either way uvicorn must not rewrite the peer from ``X-Forwarded-For`` first
(it does so for peers in ``FORWARDED_ALLOW_IPS``, 127.0.0.1 by default): Realm
sets ``FORWARDED_ALLOW_IPS`` empty for every Ray process
(``serve_app.configure_ingress``; ``cluster.yaml``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time

from starlette.requests import HTTPConnection

log = logging.getLogger(__name__)

#: The addresses HAProxy connects from on a replica's own node (Serve connects
#: to a local replica through its localhost address).
LOOPBACK = frozenset({"127.0.0.1", "::1"})
#: How often, at most, a peer that is not a known ingress looks the cluster's
#: node addresses up again (a Ray node may have joined since).
NODES_REFRESH_S = 30.0


def client_address(connection: HTTPConnection) -> str:
    """The address of the client behind ``connection``; "" when unknown."""
    host = connection.client.host if connection.client else ""
    peer = _normal(host) or host
    if not peer or not behind_haproxy() or not is_ingress(peer):
        return peer
    forwarded = connection.headers.getlist("x-forwarded-for")
    if len(forwarded) != 1 or "," in forwarded[0]:
        return peer  # not as Realm's HAProxy sets it: one address
    return _normal(forwarded[0].strip()) or peer


def behind_haproxy() -> bool:
    """Whether Serve's ingress is HAProxy (Serve's own switch, which every Ray
    process of the cluster inherits)."""
    return os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"


def is_ingress(peer: str) -> bool:
    """Whether ``peer`` is an address HAProxy connects to replicas from: this
    node's loopback, or the address of a node of the Ray cluster."""
    return peer in LOOPBACK or _nodes.has(peer)


class _NodeAddresses:
    """The addresses of the Ray cluster's live nodes, looked up again at most
    every ``NODES_REFRESH_S`` when an unknown peer asks (a blocking call to Ray's
    GCS; so a stream of requests from other peers costs one lookup per period)."""

    def __init__(self) -> None:
        self.addresses: frozenset[str] = frozenset()
        self.looked_up_at = -NODES_REFRESH_S

    def has(self, peer: str) -> bool:
        if peer in self.addresses:
            return True
        now = time.monotonic()
        if now - self.looked_up_at < NODES_REFRESH_S:
            return False
        self.looked_up_at = now
        try:
            import ray

            if not ray.is_initialized():
                return False
            self.addresses = frozenset(
                _normal(node["NodeManagerAddress"]) for node in ray.nodes() if node["Alive"]
            )
        except Exception:
            log.exception("could not look up the Ray cluster's node addresses")
            return False
        return peer in self.addresses


_nodes = _NodeAddresses()


def _normal(address: str) -> str:
    """``address`` as one spelling (IPv4 for an IPv4-mapped IPv6 address); "" if
    it is not an IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


__all__ = ["behind_haproxy", "client_address", "is_ingress"]
