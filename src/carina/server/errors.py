"""Domain errors to HTTP, in one table; every error answer has the AIAA error body (spec 2.7).

A bad input is a 4xx naming what is wrong, never a 500; an unexpected failure is a 500 whose
message carries the request id, never a server path or a traceback.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import Match

from carina.errors import (
    ApiError,
    ArchiveError,
    CarinaError,
    ConfigError,
    DatasetError,
    DatastoreError,
    FileError,
    GuidanceError,
    IdentifiedDataError,
    ModelRunError,
    ServerBusyError,
    TooManyRequestsError,
    UnsafeZipError,
    WorkCancelledError,
    WorkTooLargeError,
)
from carina.server.wire import error_response

log = logging.getLogger(__name__)

#: The statuses of the errors that are not API errors (those carry their own ``http_status``):
#: every one is a problem with what the request sent.
STATUS: list[tuple[type[CarinaError], int]] = [
    (WorkTooLargeError, 413),
    (GuidanceError, 400),
    (FileError, 400),
    (ConfigError, 400),
    (ArchiveError, 400),
    (UnsafeZipError, 400),
    (DatasetError, 400),
    (DatastoreError, 422),
    (IdentifiedDataError, 422),
    (ModelRunError, 422),
    (WorkCancelledError, 503),
]


def status_of(exc: CarinaError) -> int:
    """The HTTP status of a domain error (500 for one the table does not know)."""
    if isinstance(exc, ApiError):
        return exc.http_status
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Map Carina's errors, FastAPI's validation errors and Starlette's HTTP errors to the body."""

    async def carina_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CarinaError)
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        if isinstance(exc, ServerBusyError | TooManyRequestsError):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after or 1)))
        if status == 500:
            log.error("unhandled domain error", extra=_context(request), exc_info=exc)
        if isinstance(exc, IdentifiedDataError):
            await _audit_refusal(request, exc)
        return error_response(status, str(exc), type(exc).__name__, headers=headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ()))
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return error_response(400, "; ".join(problems) or "invalid request", "RequestError")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        message = {404: "no such endpoint", 405: "method not allowed on this endpoint"}.get(
            exc.status_code, str(exc.detail)
        )
        return error_response(exc.status_code, message, "HTTPException", headers=headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("internal error", extra=_context(request), exc_info=exc)
        request_id = getattr(request.state, "request_id", "")
        return error_response(
            500,
            f"internal server error (request {request_id}); see the server log",
            "InternalError",
        )

    app.add_exception_handler(CarinaError, carina_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def allowed_methods(request: Request) -> list[str]:
    """Every method the request's path takes, over all the routes that match it.

    Starlette's 405 names only the methods of the first route that matched the path, while
    Carina declares one route per method (and its trailing-slash twin).
    """
    scope = {**request.scope, "method": ""}
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods.update(route.methods or ())
    return sorted(methods)


def _context(request: Request) -> dict[str, str]:
    route = request.scope.get("route")
    return {
        "request_id": getattr(request.state, "request_id", ""),
        "route": getattr(route, "path", "") if route else "",
        "method": request.method,
    }


async def _audit_refusal(request: Request, exc: IdentifiedDataError) -> None:
    """A PHI guard refusal in the audit log: who, and the attributes' names (never values)."""
    from carina.server.routing import audit

    services = getattr(request.app.state, "services", None)
    if services is not None:
        await audit(request, services, "phi_refused", None, tags=exc.tags)
