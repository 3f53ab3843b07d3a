"""apps.forwarded.client_address: whom the replica believes about a client's address,
and apps.listeners: the replica's gRPC server on the node's address."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from starlette.requests import HTTPConnection

from apps import forwarded, listeners
from apps.forwarded import client_address


def connection(peer: str | None, *forwarded_for: str) -> HTTPConnection:
    scope: dict[str, Any] = {
        "type": "http",
        "client": (peer, 50_000) if peer is not None else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded_for],
    }
    return HTTPConnection(scope)


@pytest.fixture
def haproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve's ingress is HAProxy (as every Ray process sees it)."""
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")


@pytest.fixture
def python_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)


@pytest.fixture(autouse=True)
def no_known_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarded, "_nodes", forwarded._NodeAddresses())


@pytest.mark.usefixtures("haproxy")
@pytest.mark.parametrize("ingress", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_behind_haproxy_the_address_haproxy_set_is_the_clients(ingress):
    assert client_address(connection(ingress, "198.51.100.7")) == "198.51.100.7"
    assert client_address(connection(ingress, " 2001:db8::5 ")) == "2001:db8::5"
    assert client_address(connection(ingress, "::ffff:198.51.100.7")) == "198.51.100.7"


@pytest.mark.usefixtures("haproxy")
def test_behind_haproxy_a_header_from_any_other_peer_is_ignored():
    # Another loopback address is a local client, not HAProxy (which connects
    # from 127.0.0.1); a remote peer is no node of the cluster.
    for peer in ("127.0.0.2", "127.9.8.7", "203.0.113.4"):
        assert client_address(connection(peer, "198.51.100.7")) == peer


@pytest.mark.usefixtures("haproxy")
def test_behind_haproxy_anything_but_one_address_in_one_header_is_not_believed():
    ingress = "127.0.0.1"
    for headers in [
        (),  # none: the request did not come through Realm's HAProxy
        ("198.51.100.7", "203.0.113.9"),  # two headers
        ("198.51.100.7, 203.0.113.9",),  # a list, as a proxy that appends writes it
        ("not an address",),
        ("",),
    ]:
        assert client_address(connection(ingress, *headers)) == ingress, headers


@pytest.mark.usefixtures("python_proxy")
def test_behind_serves_python_proxy_the_peer_is_the_client_whatever_it_sends():
    # Before: uvicorn took X-Forwarded-For from a loopback peer, so any local
    # client could name its own address.
    for peer in ("127.0.0.1", "::1", "198.51.100.7"):
        assert client_address(connection(peer, "203.0.113.9")) == peer


def test_an_unknown_peer_is_an_empty_address_and_a_named_one_is_kept(haproxy):
    assert client_address(connection(None, "198.51.100.7")) == ""
    assert client_address(connection("testclient", "198.51.100.7")) == "testclient"


class FakeRay:
    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.node_list = nodes
        self.lookups = 0

    def is_initialized(self) -> bool:
        return True

    def nodes(self) -> list[dict[str, Any]]:
        self.lookups += 1
        return self.node_list


@pytest.mark.usefixtures("haproxy")
def test_haproxy_on_another_node_of_the_cluster_is_an_ingress(monkeypatch):
    ray = FakeRay(
        [
            {"NodeManagerAddress": "192.0.2.11", "Alive": True},
            {"NodeManagerAddress": "192.0.2.12", "Alive": False},
        ]
    )
    monkeypatch.setitem(sys.modules, "ray", ray)
    now = [1000.0]
    monkeypatch.setattr(forwarded.time, "monotonic", lambda: now[0])

    assert client_address(connection("192.0.2.11", "198.51.100.7")) == "198.51.100.7"
    assert client_address(connection("192.0.2.12", "198.51.100.7")) == "192.0.2.12"  # dead node
    # Unknown peers look the nodes up again at most once per period.
    for _ in range(100):
        assert client_address(connection("203.0.113.4", "198.51.100.7")) == "203.0.113.4"
    assert ray.lookups == 1
    now[0] += forwarded.NODES_REFRESH_S
    ray.node_list.append({"NodeManagerAddress": "192.0.2.13", "Alive": True})
    assert client_address(connection("192.0.2.13", "198.51.100.7")) == "198.51.100.7"
    assert ray.lookups == 2


@pytest.mark.usefixtures("haproxy")
def test_without_ray_only_loopback_is_an_ingress():
    # tests/unit never starts Ray: a peer that is not loopback is not looked up.
    assert client_address(connection("192.0.2.11", "198.51.100.7")) == "192.0.2.11"


@pytest.mark.parametrize(
    ("address", "bound"),
    [
        ("[::]:0", "127.0.0.1:0"),
        ("0.0.0.0:9000", "127.0.0.1:9000"),
        (":0", "127.0.0.1:0"),
        ("192.0.2.5:0", "192.0.2.5:0"),  # an address already chosen is kept
        ("[2001:db8::1]:0", "[2001:db8::1]:0"),
    ],
)
def test_a_wildcard_grpc_address_becomes_the_node_address(address, bound):
    assert listeners.on_node_address(address, "127.0.0.1") == bound


def test_an_ipv6_node_address_is_bracketed():
    assert listeners.on_node_address("[::]:0", "2001:db8::7") == "[2001:db8::7]:0"


def test_the_binder_passes_the_node_address_to_rays_helper():
    calls: list[tuple[object, str]] = []

    def add_port(server: object, address: str) -> int:
        calls.append((server, address))
        return 4242

    binder = listeners.node_address_binder(add_port, "127.0.0.1")
    server = object()
    assert binder(server, "[::]:0") == 4242
    assert calls == [(server, "127.0.0.1:0")]
    assert binder.binds_node_address  # type: ignore[attr-defined]
