"""One error envelope for every service.

``install_error_handlers`` makes each FastAPI app answer every failure as
``{"error": {"code", "message", "details", "request_id"}}``: domain errors
(``RealmError``) with their own code and status, bad input with 422, unknown
routes with 404, an actor that is gone with 503, and anything unexpected with
500. Routes never build an ``HTTPException`` themselves.

A client error (4xx) keeps its message and details: they speak of the request.
A server fault (5xx) answers its code, its class's fixed message and the
request id, nothing else: its own message and details (a store's address, a
file, the text of another error) go to the log, in a line that names the same
request id. The id is Serve's (the ``X-Request-ID`` header of the answer);
``RequestIds`` makes it known to every envelope made while a request is
answered, in a handler or not (``apps.limits``, a WebSocket handshake).

``document_errors`` writes the same into an app's OpenAPI: the envelope's
schema, and on each route every status it can answer.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from ray.exceptions import RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from actors.runtime.errors import RealmError, Unavailable
from actors.runtime.supervision import unwrap

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}

#: The request header Serve's proxy sets on every request (keeping a client's
#: own), and answers as ``X-Request-ID``.
REQUEST_ID_HEADER = "x-request-id"
#: What a request id may look like to be used as it is (it can come from a client).
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_STATE_KEY = "realm_request_id"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def request_id_of(connection: HTTPConnection | Scope) -> str:
    """The request's id: Serve's (its ``x-request-id`` header), or a new one where
    there is none or it is not a plain token; the same for the whole request."""
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    state = scope.setdefault("state", {})
    known = state.get(_STATE_KEY)
    if isinstance(known, str):
        return known
    found = ""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            found = value.decode("latin-1")
            break
    request_id = found if _PLAIN_ID.fullmatch(found) else uuid.uuid4().hex
    state[_STATE_KEY] = request_id
    return request_id


#: The request id of the request being answered (set by ``RequestIds``), for an
#: envelope made where the request is not at hand (``apps.limits``, a handshake).
_current_request_id: ContextVar[str | None] = ContextVar("realm_request_id", default=None)


class RequestIds:
    """ASGI middleware: makes the request id known to every envelope made while a
    request (or WebSocket) is being answered. Install it outermost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = _current_request_id.set(request_id_of(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            _current_request_id.reset(token)


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route of ``app``, those of included routers too, as FastAPI sees
    them once included (``path_format``, ``methods``, ``dependant``...)."""
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context


def allowed_methods(app: FastAPI, scope: Scope) -> set[str]:
    """The methods ``app`` documents at the path of ``scope``: those of the most
    concrete path template that matches it, as OpenAPI reads paths
    (``/transfers/batch`` before ``/transfers/{transfer_id}``)."""
    by_template: dict[str, set[str]] = {}
    for route in api_routes(app):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            by_template.setdefault(route.path_format, set()).update(route.methods or ())
    if not by_template:
        return set()
    concrete = min(by_template, key=lambda template: template.count("{"))
    return by_template[concrete]


def envelope(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    *,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An answer in the envelope. A fault (5xx) shows its code's fixed message
    (``RealmError.summary``) and no details, whatever is passed: log them first
    (``public_error``). ``request_id``: by default the one of the request being
    answered (``RequestIds``), else a new one."""
    request_id = request_id or _current_request_id.get() or uuid.uuid4().hex
    if status >= 500:  # whoever made it: a fault's own words are for the log only
        message, details = RealmError.by_code.get(code, RealmError).summary(), None
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": request_id,
        }
    }
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 429 and isinstance(details, dict) and "retry_after_s" in details:
        headers["Retry-After"] = str(max(1, math.ceil(details["retry_after_s"])))
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers)


def public_error(error: RealmError, request_id: str, where: str = "") -> dict[str, Any]:
    """``error`` as a client may see it (``RealmError.to_dict``); a fault (5xx) is
    logged first, whole, under ``request_id``. For any answer that carries an
    error: HTTP, a WebSocket frame."""
    if error.is_fault:
        log.warning(
            "request %s%s: %d %s: %s %s",
            request_id,
            f" ({where})" if where else "",
            error.status,
            error.code,
            error.message,
            error.details,
        )
    return error.to_dict()


def error_response(connection: HTTPConnection, error: RealmError) -> JSONResponse:
    """The envelope answering ``error`` on ``connection`` (a request or a
    WebSocket handshake being refused)."""
    request_id = request_id_of(connection)
    where = f"{connection.scope.get('method', 'WS')} {connection.url.path}"
    public = public_error(error, request_id, where)
    return envelope(error.status, **public, request_id=request_id)


async def _realm_error(request: Request, error: Exception) -> JSONResponse:
    cause = unwrap(error)
    if not isinstance(cause, RealmError):
        return await _unexpected(request, error)
    return error_response(request, cause)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [
        {"where": ".".join(str(part) for part in problem["loc"]), "problem": problem["msg"]}
        for problem in error.errors()
    ]
    return envelope(
        422,
        "invalid_input",
        "the request is not valid",
        {"problems": problems},
        request_id=request_id_of(request),
    )


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    status = error.status_code
    request_id = request_id_of(request)
    if status >= 500:
        log.warning("request %s: %d %s", request_id, status, error.detail)
        message = _phrase(status)
    else:
        message = str(error.detail)
    code = _HTTP_CODES.get(status, "http_error")
    headers = dict(error.headers or {})
    if status == 405:  # Starlette names the methods of one route only
        methods = allowed_methods(request.app, request.scope)
        if methods:
            headers["Allow"] = ", ".join(sorted(methods))
    return envelope(status, code, message, request_id=request_id, headers=headers)


async def _actor_gone(request: Request, error: Exception) -> JSONResponse:
    request_id = request_id_of(request)
    log.warning("request %s: actor unavailable: %r", request_id, error)
    return envelope(503, Unavailable.code, Unavailable.summary(), request_id=request_id)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    request_id = request_id_of(request)
    log.error(
        "request %s (%s %s): unexpected error",
        request_id,
        request.method,
        request.url.path,
        exc_info=error,
    )
    return envelope(500, "internal", "internal error", request_id=request_id)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RealmError, _realm_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RayActorError, _actor_gone)
    app.add_exception_handler(Exception, _unexpected)


# --- OpenAPI ------------------------------------------------------------------------

#: The envelope's schema, a component of every service's OpenAPI.
ENVELOPE_SCHEMA_NAME = "ErrorEnvelope"
ENVELOPE_SCHEMA: dict[str, Any] = {
    "title": "Error envelope",
    "description": "Every error answer, whatever the status.",
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details", "request_id"],
            "additionalProperties": False,
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Stable, and unique across Realm: branch on this.",
                },
                "message": {"type": "string", "description": "For people; may change."},
                "details": {
                    "type": "object",
                    "description": "What the error is about (names, limits, "
                    "`problems` for a 422); always empty on a 5xx.",
                },
                "request_id": {
                    "type": "string",
                    "description": "The request's id, as in the `X-Request-ID` header; "
                    "the log names it beside a fault's details.",
                },
            },
        }
    },
}

#: What each status means, whatever the route.
STATUS_MEANING: dict[int, str] = {
    400: "The body does not decode (it is not UTF-8 text); JSON that does not parse is a 422.",
    401: "No valid credentials: an `Authorization: Bearer <token>` that is missing, "
    "malformed, unknown, expired or revoked.",
    403: "The caller may not do this: a scope it does not hold, a role it lacks, "
    "or an owner's limit reached.",
    404: "No such thing, or not the caller's (another owner's object answers 404 too), "
    "or no such route.",
    409: "The request conflicts with the current state.",
    413: "The body, or a value in it, is over a size limit.",
    422: "The request is not valid: `details.problems` says where and what, "
    "or `details` names the rule it breaks.",
    429: "Too many requests, or a bounded queue is full; retry later (`Retry-After`, "
    "when given, says when).",
    500: "An unexpected fault; the log has its details under the `request_id`.",
    502: "Something the service called on the caller's behalf failed.",
    503: "A service actor or the store is not answering; retry shortly.",
    504: "Nothing answered in time.",
}
#: Statuses any route can answer: no route, a body over the size limit
#: (checked on any request), a conflict, a throttle, a fault, an actor away.
ANY_ROUTE = (404, 409, 413, 429, 500, 503)
#: Statuses of a route that reads a body.
WITH_BODY = (400, 422)
#: Statuses of a route that takes parameters (path, query, header, cookie).
WITH_PARAMETERS = (422,)
#: Statuses of a route that needs a principal.
SIGNED_IN = (401, 403)

_HEADERS = {
    401: {
        "WWW-Authenticate": {
            "description": "`Bearer`",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before retrying, when known.",
            "schema": {"type": "string"},
        }
    },
}


def error_codes(service: str) -> dict[int, list[str]]:
    """The codes of every error class known now, of the runtime or of ``service``,
    by status."""
    codes: dict[int, list[str]] = {500: [RealmError.code]}
    for status, code in _HTTP_CODES.items():
        codes.setdefault(status, []).append(code)
    own = (f"actors.{service}.", "actors.runtime.")
    for code, cls in RealmError.by_code.items():
        if cls.__module__.startswith(own):
            codes.setdefault(cls.status, []).append(code)
    return {status: sorted(set(found)) for status, found in codes.items()}


def error_response_doc(status: int, codes: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI response object of an error status."""
    description = STATUS_MEANING.get(status, _phrase(status))
    listed = sorted(set(codes))
    if listed:
        description += " Codes: " + ", ".join(f"`{code}`" for code in listed) + "."
    doc: dict[str, Any] = {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ENVELOPE_SCHEMA_NAME}"}}
        },
    }
    if status in _HEADERS:
        doc["headers"] = _HEADERS[status]
    return doc


def document_errors(
    schema: dict[str, Any],
    statuses: dict[tuple[str, str], set[int]],
    codes: dict[str, dict[int, list[str]]] | None = None,
) -> dict[str, Any]:
    """Put the envelope into an OpenAPI ``schema`` (in place; returned too).

    ``statuses``: for each ``(path, method)`` (as the schema spells them, the
    method lower-case) the error statuses its route can answer. Every error
    status an operation lists, given here or declared by its route
    (``responses={504: {}}``), gets the envelope's schema and a description;
    ``codes`` (by path) names the error codes of each status.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components[ENVELOPE_SCHEMA_NAME] = ENVELOPE_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            wanted = statuses.get((path, method), set())
            wanted |= {int(s) for s in responses if s.isdigit() and int(s) >= 400}
            for status in sorted(wanted):
                declared = responses.get(str(status), {})
                doc = error_response_doc(status, (codes or {}).get(path, {}).get(status, ()))
                own = declared.get("description")
                if own and own not in (_phrase(status), "Validation Error", "Additional Response"):
                    doc["description"] = own
                responses[str(status)] = doc
            operation["responses"] = dict(sorted(responses.items()))
    # FastAPI's own 422 schemas are no longer referred to.
    text = repr(schema.get("paths", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{name}'" not in text:
            components.pop(name, None)
    return schema
