"""One error envelope for every service.

``install_error_handlers`` makes each FastAPI app answer every failure as
``{"error": {"code", "message", "details"}}``: domain errors (``RealmError``)
with their own code and status, bad input with 422, unknown routes with 404,
an actor that is gone with 503, and anything unexpected with 500 (logged,
details withheld). Routes never build an ``HTTPException`` themselves.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.runtime.errors import RealmError
from actors.runtime.supervision import unwrap

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def envelope(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 429 and isinstance(details, dict) and "retry_after_s" in details:
        headers["Retry-After"] = str(max(1, math.ceil(details["retry_after_s"])))
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers)


async def _realm_error(request: Request, error: Exception) -> JSONResponse:
    cause = unwrap(error)
    if not isinstance(cause, RealmError):
        return await _unexpected(request, error)
    return envelope(cause.status, cause.code, cause.message, cause.details)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [
        {"where": ".".join(str(part) for part in problem["loc"]), "problem": problem["msg"]}
        for problem in error.errors()
    ]
    return envelope(422, "invalid_input", "the request is not valid", {"problems": problems})


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = _HTTP_CODES.get(error.status_code, "http_error")
    return envelope(error.status_code, code, str(error.detail))


async def _actor_gone(_: Request, error: Exception) -> JSONResponse:
    log.warning("actor unavailable: %r", error)
    return envelope(503, "unavailable", "a service actor is not available; retry shortly")


async def _unexpected(_: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=error)
    return envelope(500, "internal", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RealmError, _realm_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RayActorError, _actor_gone)
    app.add_exception_handler(Exception, _unexpected)
