"""The client's address, as the ingress saw it.

Login throttles and session records key on it, so it must be the address
that opened the connection to Realm's ingress, never one a client wrote into
a header.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection


def client_address(connection: HTTPConnection) -> str:
    """The address of the client behind ``connection``; "" when unknown."""
    return connection.client.host if connection.client else ""


__all__ = ["client_address"]
