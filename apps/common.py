"""What every service's HTTP front shares: the app factory, the ingress base and
replica options."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from ray.serve import Application
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.auth.client import SessionVerifier
from actors.runtime import metrics
from actors.runtime.settings import Settings
from actors.runtime.supervision import run_start_hooks
from apps import signin
from apps.errors import (
    ANY_ROUTE,
    SIGNED_IN,
    WITH_BODY,
    WITH_PARAMETERS,
    RequestIds,
    api_routes,
    document_errors,
    error_codes,
    install_error_handlers,
)
from apps.limits import BodyLimit
from apps.listeners import bind_to_node_address
from apps.signin import install_verifier


def service_app(
    service: str, *, description: str, settings: Settings, title: str | None = None
) -> FastAPI:
    """A FastAPI app with Realm's error envelope, body limit and request metrics.

    ``service`` is the registry's name (it labels the app's metrics); ``title``
    what the OpenAPI page calls it, by default the same. OpenAPI lives at
    ``/<prefix>/docs`` (Serve mounts the app under its prefix).
    """
    app = FastAPI(
        title=f"Realm {title or service}",
        description=description,
        version="0.1.0",
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, service=service)
    app.add_middleware(RequestIds)  # the last added runs first
    install_openapi(app)
    return app


#: The route label of a request no route matched (or refused before routing).
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that answered ``scope`` (``/keys/{key}``), never the
    raw path: a label with few values."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED


class RequestMetrics:
    """ASGI middleware: every HTTP request counted and timed by service, route
    template, method and status (``realm_http_requests_total``,
    ``realm_http_request_seconds``), and open WebSockets counted
    (``realm_websockets_open``). A request that raises counts as a 500 (what
    the outer error handler answers). A streamed answer (SSE) is timed to its end.

    Each label set's series are bound once and kept (few: routes x methods x
    statuses), so a request records without building or checking labels."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self._series: dict[
            tuple[str, str, int], tuple[metrics.CounterSeries, metrics.HistogramSeries]
        ] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope.get("method", "")
            key = (route_template(scope), method if method in metrics.METHODS else "other", status)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._bind(*key)
            series[0].inc()
            series[1].observe(time.perf_counter() - started)

    def _bind(
        self, route: str, method: str, status: int
    ) -> tuple[metrics.CounterSeries, metrics.HistogramSeries]:
        labels = {"service": self.service, "route": route, "method": method, "status": str(status)}
        return metrics.HTTP_REQUESTS.bind(**labels), metrics.HTTP_REQUEST_SECONDS.bind(**labels)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        opened: str | None = None  # the route, once the socket is accepted

        async def send_accept(message: Message) -> None:
            nonlocal opened
            if message["type"] == "websocket.accept" and opened is None:
                opened = route_template(scope)
                metrics.WEBSOCKETS_OPEN.add(1, service=self.service, route=opened)
            await send(message)

        try:
            await self.app(scope, receive, send_accept)
        finally:
            if opened is not None:
                metrics.WEBSOCKETS_OPEN.add(-1, service=self.service, route=opened)


#: The bearer scheme routes that need a principal name in the OpenAPI.
BEARER = "bearer"


def _needs_principal(dependant: Dependant) -> bool:
    """Whether a route depends on signing in: on any dependency of ``apps.signin``
    (``Scope(...)``, ``CurrentUser``, ``StreamUser``...)."""
    return getattr(dependant.call, "__module__", None) == signin.__name__ or any(
        _needs_principal(sub) for sub in dependant.dependencies
    )


def _has_parameters(dependant: Dependant) -> bool:
    own = (dependant.path_params, dependant.query_params, dependant.header_params)
    return (
        any(own)
        or bool(dependant.cookie_params)
        or any(_has_parameters(sub) for sub in dependant.dependencies)
    )


def route_errors(route: Any) -> set[int]:
    """The error statuses ``route`` can answer, whatever it does: see ``apps.errors``
    (``ANY_ROUTE``...). A route declares the others it answers (``responses={504: {}}``)."""
    statuses = set(ANY_ROUTE)
    if route.body_field is not None:
        statuses |= set(WITH_BODY)
    if _has_parameters(route.dependant):
        statuses |= set(WITH_PARAMETERS)
    if _needs_principal(route.dependant):
        statuses |= set(SIGNED_IN)
    return statuses


def _service_of(route: Any) -> str:
    """``cache`` for a route defined in ``apps.cache`` (or ``apps.pubsub.sse``)."""
    return _service_of_module(getattr(route.endpoint, "__module__", ""))


def _service_of_module(module: str) -> str:
    """``cache`` for ``apps.cache`` (or ``apps.pubsub.sse``); empty outside ``apps``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "apps" else ""


def install_openapi(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document every error a route can answer, in the
    envelope (``apps.errors.document_errors``), and the bearer token of every
    route that needs a principal."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        statuses: dict[tuple[str, str], set[int]] = {}
        codes: dict[str, dict[int, list[str]]] = {}
        signed_in: set[tuple[str, str]] = set()
        for route in api_routes(app):
            if not route.include_in_schema:
                continue
            for method in route.methods:
                key = (route.path_format, method.lower())
                statuses[key] = route_errors(route)
                if _needs_principal(route.dependant):
                    signed_in.add(key)
            codes[route.path_format] = error_codes(_service_of(route))
        document_errors(schema, statuses, codes)
        if signed_in:
            schemes = schema["components"].setdefault("securitySchemes", {})
            schemes[BEARER] = {"type": "http", "scheme": "bearer"}
            for path, method in signed_in:
                operation = schema["paths"].get(path, {}).get(method)
                if operation is not None:
                    operation.setdefault("security", [{BEARER: []}])
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


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
        # Before Serve starts this replica's gRPC server, which it does once this
        # constructor has returned.
        bind_to_node_address()
        self.settings = settings
        module = type(self).__module__.split(".")  # apps.<service>[.<module>]
        run_start_hooks(settings, module[1] if len(module) > 1 else module[0], type(self).__name__)
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
