"""The stack the fuzz run works on and the users the runs sign in as."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from serve_app import SERVICES


@dataclass(frozen=True)
class Stack:
    #: Root URL of every service (``<base_url>/cache``...).
    base_url: str
    #: The ``Authorization`` header each service's run signs in with, by service
    #: name: one user for every service but auth, whose run signs its user out
    #: and so has a user of its own. Both sign up before any run starts (the
    #: runs may get sign-ups and sign-ins from this address throttled).
    users: dict[str, str]


def users(base_url: str) -> dict[str, str]:
    shared, own = sign_up(base_url), sign_up(base_url)
    return {service.name: own if service.name == "auth" else shared for service in SERVICES}


def sign_up(base_url: str, *, within_s: float = 60.0) -> str:
    """Register a new user and log in; their ``Authorization`` header."""
    username = f"fuzz-{uuid.uuid4().hex[:12]}"
    password = "correct horse battery staple"
    account = {"username": username, "password": password}
    deadline = time.monotonic() + within_s
    with httpx.Client(base_url=f"{base_url}/auth", timeout=30) as auth:
        while True:  # the ingress may still be taking its routes
            try:
                created = auth.post("/register", json=account)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert created.status_code == 201, created.text
        answer = auth.post("/login", json=account)
        assert answer.status_code == 200, answer.text
    return f"Bearer {answer.json()['token']}"


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Stack:
    """The stack: the session's own (``tests/stack.py``: every built service, as
    ``make run`` deploys them; ``make test`` fuzzes the stack the integration tests
    ran on, after them), or, with ``REALM_FUZZ_URL`` (say ``http://127.0.0.1:8000``
    of ``make run``), one that runs already."""
    base_url = os.environ.get("REALM_FUZZ_URL", "").rstrip("/")
    if not base_url:
        base_url = request.getfixturevalue("base_url")
    return Stack(base_url, users(base_url))


__all__ = ["SERVICES", "Stack"]
