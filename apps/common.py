"""What every service's HTTP front shares: the app factory, the ingress base and
replica options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from ray.serve import Application

from actors.auth.client import SessionVerifier
from actors.runtime.settings import Settings
from apps.errors import install_error_handlers
from apps.limits import BodyLimit
from apps.signin import install_verifier


def service_app(*, title: str, description: str, settings: Settings) -> FastAPI:
    """A FastAPI app with Realm's error envelope and body limit.

    OpenAPI lives at ``/<prefix>/docs`` (Serve mounts the app under its prefix).
    """
    app = FastAPI(
        title=f"Realm {title}",
        description=description,
        version="0.1.0",
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


#: Concurrent requests a replica of a streaming ingress takes. Every open
#: WebSocket, SSE stream or long poll holds one for as long as it lasts, so the
#: shared REALM_MAX_ONGOING_REQUESTS (256, sized for short requests) would let a
#: replica hold only that many, and the next would hang in the opening handshake.
MAX_STREAMS_PER_REPLICA = 10_000


def ingress_options(settings: Settings, *, streams: bool = False) -> dict[str, Any]:
    """Serve options for an ingress deployment.

    Replicas ask for no CPU (on a small machine a replica's default CPU would
    starve the actors behind it); their requests mostly await actor calls, so
    one replica can work on many at once. ``streams``: the ingress holds
    long-lived connections (see ``MAX_STREAMS_PER_REPLICA``).
    """
    ongoing = settings.max_ongoing_requests
    return {
        "num_replicas": settings.replicas,
        "max_ongoing_requests": max(ongoing, MAX_STREAMS_PER_REPLICA) if streams else ongoing,
        "ray_actor_options": {"num_cpus": 0},
    }


class ClientIngress:
    """Base of a service's Serve ingress: a replica holding one service client.

    A subclass names how to make its client (``make_client(settings)``, an
    object with ``start()`` and ``close()``) and its app
    (``make_app(client, settings)``), and is decorated with
    ``@serve.deployment`` and ``@serve.ingress()``. The replica is ready once
    the client has started (every actor behind it answers), builds its app
    then, and closes the client on graceful shutdown.

    With ``requires_user = True`` the replica also holds a ``SessionVerifier``
    and installs it, so routes can take the principals of ``apps.signin``.
    """

    make_client: Callable[[Settings], Any]
    make_app: Callable[[Any, Settings], FastAPI]
    requires_user: bool = False

    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        self.settings = settings
        self.client = type(self).make_client(settings)
        self.auth = SessionVerifier(settings) if self.requires_user else None
        await self.client.start()
        if self.auth is not None:
            await self.auth.start()

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = type(self).make_app(self.client, self.settings)
        if self.auth is not None:
            install_verifier(app, self.auth)
        return app

    async def __del__(self) -> None:  # Serve awaits it on graceful shutdown
        await self.client.close()
        if self.auth is not None:
            await self.auth.close()


def ingress_application(ingress: Any, settings: Settings, *, streams: bool = False) -> Application:
    """The Serve application of an ingress deployment, with Realm's replica options."""
    return ingress.options(**ingress_options(settings, streams=streams)).bind(settings)
