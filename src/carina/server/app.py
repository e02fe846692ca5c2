"""``create_app(settings)``: the annotation server's FastAPI app, its services and middleware."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carina import __version__
from carina.auth import Role
from carina.errors import PayloadTooLargeError, RequestTimeoutError
from carina.kinds import Kinds
from carina.server.docs import add_docs_routes
from carina.server.errors import install_error_handlers
from carina.server.openapi import DESCRIPTION, TAGS
from carina.server.routers import admin, datastore, monailabel, ops, session, v1
from carina.server.routing import add_slash_twins
from carina.server.services.logs import setup_logging
from carina.server.services.tokens import bearer_matches
from carina.server.state import Services, needs
from carina.server.viewer import router as viewer_router
from carina.server.wire import error_response
from carina.settings import Settings

log = logging.getLogger("carina.server")
access = logging.getLogger("carina.server.access")

#: Paths open without the optional API token: health checks, docs and their assets, the
#: viewer's page and files (a browser cannot send a token for them; its API calls can).
_OPEN = re.compile(
    r"^/(health(/.*)?|docs/?|openapi\.json/?|static/.*|favicon\.[a-z]+/?|viewer/?"
    r"|viewer/(?!api/).*)?$"
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: The slowest a request body may arrive on average once the body timeout has passed (bytes/s).
MIN_BODY_RATE = 1024
#: Paths a load balancer polls: never rate limited.
_HEALTH = re.compile(r"^/health(/.*)?$")


def create_app(settings: Settings | None = None, *, kinds: Kinds | None = None) -> FastAPI:
    """The server over ``settings.workspace``: routes, services, error handlers, middleware.

    Args:
        settings: the settings (default: from the environment).
        kinds: the model kinds served (default: every kind Carina has, :data:`carina.kinds.KINDS`).
    """
    settings = settings or Settings()
    workspace = settings.workspace.resolve()
    log_file = setup_logging(workspace)
    services = Services.build(settings, log_file=log_file, kinds=kinds)

    app = FastAPI(
        title="Carina annotation server",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        redirect_slashes=False,
        root_path=settings.root_path,
        lifespan=functools.partial(_lifespan, services=services),
    )
    app.state.services = services
    install_error_handlers(app)
    # NVIDIA's AIAA clients cannot send tokens: their routes follow CARINA_AIAA_ROUTES.
    signed_in = [Depends(needs(Role.USER))]
    aiaa = [] if settings.aiaa_routes == "open" else signed_in
    if settings.aiaa_routes != "off":
        app.include_router(v1.router, dependencies=aiaa)
    app.include_router(session.router, dependencies=aiaa)
    for module in (monailabel, datastore, admin, ops):
        app.include_router(module.router)
    app.include_router(viewer_router)
    add_docs_routes(app)
    add_slash_twins(app.router)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        # Tokens travel in the Authorization header, never in cookies: no credentials mode,
        # so even an allow-list of "*" never lets a page borrow a user's session.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            allow_credentials=False,
            expose_headers=["Server-Timing", "X-Request-ID", "Content-Disposition"],
            max_age=600,
        )
    app.add_middleware(RequestMiddleware, services=services)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI, *, services: Services) -> AsyncIterator[None]:
    """A first sweep before serving (a replacement cut short is rolled back before any request
    sees the model), then the periodic sweeper, background model loading, and a clean stop."""
    services.start()
    await asyncio.to_thread(_sweep, services)
    sweeper = asyncio.create_task(_purge_sessions(services))
    if services.settings.preload_models:
        # A moment after ready: importing torch holds the interpreter for seconds.
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, loop.run_in_executor, None, preload_models, services)
    log.info(
        "server ready",
        extra={"version": __version__, "models": len(services.registry.models())},
    )
    try:
        yield
    finally:
        sweeper.cancel()
        await asyncio.to_thread(services.stop)
        shutil.rmtree(services.scratch, ignore_errors=True)
        log.info("server stopped")


async def _purge_sessions(services: Services) -> None:
    """Periodically: expired sessions, and what killed processes left."""
    while True:
        await asyncio.sleep(services.settings.session_purge_interval)
        await asyncio.to_thread(_sweep, services)


def _sweep(services: Services) -> None:
    try:
        services.sessions.purge()
        services.registry.sweep()
    except OSError as exc:
        log.warning("workspace sweep failed", extra={"reason": exc.strerror})


def preload_models(services: Services) -> None:
    """Load every installed model (within the memory budget), after the server is ready."""
    for info in services.registry.models():
        try:
            services.registry.runner(info.name)
        except Exception as exc:  # a broken archive must not stop the others
            log.warning(
                "model could not be preloaded", extra={"model": info.name, "reason": str(exc)}
            )
    services.metrics.models_loaded.set(services.registry.loaded_count())


class RequestMiddleware:
    """Per request: an id (``X-Request-ID``), the body size limit, the optional API token,
    metrics and one access-log line (route template, status, time; no query, no file names)."""

    def __init__(self, app: ASGIApp, *, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500}
        limit = self.services.settings.max_upload_bytes

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        client = (scope.get("client") or ("unknown", 0))[0]
        in_flight = self.services.in_flight
        refusal = self._refusal(scope, headers, limit, client)
        if refusal is None and not in_flight.enter(client):
            refusal = error_response(
                429,
                f"this address has {in_flight.limit} requests in flight; retry shortly",
                "TooManyRequestsError",
                headers={"Retry-After": "1"},
            )
        if refusal is not None:
            await refusal(scope, receive, send_wrapped)
        else:
            try:
                await self.app(scope, self._bounded(receive, limit), send_wrapped)
            finally:
                in_flight.leave(client)
        self._record(scope, status["code"], time.perf_counter() - start, request_id)

    def _bounded(self, receive: Receive, limit: int) -> Receive:
        """``receive`` that refuses a body over ``limit`` bytes (413), and one that pauses longer
        than the body timeout between two pieces or, past that time, arrives slower than
        :data:`MIN_BODY_RATE` on average (408)."""
        timeout = self.services.settings.body_timeout
        state = {"received": 0, "complete": False, "start": time.monotonic()}

        async def bounded() -> Message:
            if state["complete"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise RequestTimeoutError(
                    f"the request body paused for more than {timeout:g} s"
                ) from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["complete"] = not message.get("more_body", False)
                if state["received"] > limit:
                    raise PayloadTooLargeError(f"the request body is larger than {limit} bytes")
                elapsed = time.monotonic() - state["start"]
                if elapsed > timeout and state["received"] < MIN_BODY_RATE * elapsed:
                    raise RequestTimeoutError(
                        f"the request body arrives slower than {MIN_BODY_RATE} bytes/s"
                    )
            return message

        return bounded

    def _refusal(self, scope: Scope, headers: dict[str, str], limit: int, client: str) -> Any:
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return error_response(
                413, f"the request body is larger than {limit} bytes", "PayloadTooLargeError"
            )
        path = scope["path"]
        wait = None if _HEALTH.match(path) else self.services.rate_limiter.retry_after(client)
        if wait is not None:
            return error_response(
                429,
                "too many requests from this address; retry shortly",
                "TooManyRequestsError",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        token = self.services.settings.api_token
        if (
            token is not None
            and not _OPEN.match(path)
            and not path.startswith(("/admin/", "/logs"))
            and scope["method"] != "OPTIONS"
            and not bearer_matches(headers.get("authorization"), token.get_secret_value())
        ):
            return error_response(
                401,
                "this server needs 'Authorization: Bearer <API token>'",
                "AuthError",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        metrics = self.services.metrics
        metrics.requests.labels(method, template, str(status)).inc()
        metrics.latency.labels(method, template).observe(seconds)
        access.info(
            "request",
            extra={
                "request_id": request_id,
                "method": method,
                "route": template,
                "status": status,
                "ms": round(seconds * 1000, 1),
            },
        )
