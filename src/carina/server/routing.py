"""What every router shares: a request's scratch folder, the worker pool, the trailing-slash rule.

Routers parse a request, call one service function (blocking ones through :func:`in_pool`) and
encode the answer; no router imports another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from starlette.background import BackgroundTask
from starlette.routing import Route

from carina.audit import opaque
from carina.errors import ForbiddenError
from carina.server.services.inference import Upload
from carina.server.services.runner import InferenceRunner
from carina.server.state import Services

T = TypeVar("T")


@contextlib.asynccontextmanager
async def request_scratch(root: Path) -> AsyncIterator[Path]:
    """A folder on this replica's local disk for one request's files, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="req-", dir=root))
    try:
        yield folder
    finally:
        await anyio.to_thread.run_sync(shutil.rmtree, folder, True)


async def in_pool(
    request: Request,
    services: Services,
    job: Callable[[], T],
    *,
    pool: InferenceRunner | None = None,
) -> T:
    """Run ``job`` in a bounded worker pool (default: the inference pool; ``services.io`` for
    reading and storing images); a client that goes away cancels it, waiting or running.

    Raises:
        ServerBusyError: the queue is full (HTTP 503 with ``Retry-After``).
        InferenceTimeoutError: the job ran past the server's limit.
    """
    cancelled = threading.Event()

    async def watch() -> None:
        while not cancelled.is_set():
            if await request.is_disconnected():
                cancelled.set()
                return
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch())
    services.metrics.queue_depth.inc()
    try:
        return await (pool or services.runner).run(job, cancelled=cancelled)
    finally:
        services.metrics.queue_depth.dec()
        services.metrics.models_loaded.set(services.registry.loaded_count())
        watcher.cancel()


def add_slash_twins(router: APIRouter) -> None:
    """Make every route answer with and without a trailing slash (spec 2.1: clients differ, and
    a redirect would lose a PUT's body). Each route is declared once, in the spelling the API
    documentation shows; its twin is added here, left out of the schema. Included routers get
    theirs too: FastAPI includes a router lazily (an ``_IncludedRouter`` entry holding the
    router itself, whose routes it re-reads when they change), so the twins go into the
    included router, path parameters and all. Running it again adds nothing."""
    routes = [route for route in router.routes if isinstance(route, Route)]
    taken = {(route.path, method) for route in routes for method in route.methods or ()}
    for route in routes:
        twin = route.path[:-1] if route.path.endswith("/") else route.path + "/"
        methods = sorted(m for m in route.methods or () if (twin, m) not in taken)
        if route.path == "/" or not methods:
            continue
        if isinstance(route, APIRoute):
            # The twin runs exactly what the route runs: its dependencies (a token check
            # declared on the route), its response class and status, under the same name.
            router.add_api_route(
                twin,
                route.endpoint,
                methods=methods,
                include_in_schema=False,
                tags=list(route.tags),
                summary=route.summary,
                dependencies=list(route.dependencies),
                response_class=route.response_class,
                status_code=route.status_code,
                name=route.name,
            )
        else:
            router.add_route(twin, route.endpoint, methods=methods, include_in_schema=False)
        taken.update((twin, method) for method in methods)
    for included in router.routes:
        inner = getattr(included, "original_router", None)  # FastAPI's lazily included routers
        if isinstance(inner, APIRouter):
            add_slash_twins(inner)


async def audit(
    request: Request,
    services: Services,
    action: str,
    target: str | None = None,
    **detail: Any,
) -> None:
    """One line of the audit log for what the request did (in a thread: it is fsynced)."""
    who = getattr(request.state, "principal", None)
    await anyio.to_thread.run_sync(
        lambda: services.audit.record(
            actor=who.name if who is not None else "anonymous",
            action=action,
            target=target,
            request_id=getattr(request.state, "request_id", None),
            detail=detail or None,
        )
    )


#: The header with which an admin lets one request's data past the PHI guard (its value: why).
PHI_OVERRIDE = "X-Carina-PHI-Override"


async def guard_uploads(
    request: Request, services: Services, uploads: Sequence[Upload], *, image_id: str | None = None
) -> None:
    """Run the PHI guard on a request's files before anything reads them (see
    :class:`carina.deid.guard.PhiGuard`); warnings and de-identifications are audited. An admin
    may let one request through with the :data:`PHI_OVERRIDE` header and a reason (audited).

    Raises:
        IdentifiedDataError: the guard refused the data (422).
        ForbiddenError: the override header from someone who is not an admin, or no reason.
    """
    if not uploads and image_id is None:
        return
    guard, reason = services.phi, request.headers.get(PHI_OVERRIDE)
    if reason is not None:
        from carina.auth import Role

        who = getattr(request.state, "principal", None)
        if who is None or not who.has(Role.ADMIN) or not reason.strip():
            raise ForbiddenError(f"{PHI_OVERRIDE} is an admin's, with a reason")
        guard = dataclasses.replace(guard, mode="warn")
    outcome = await in_pool(
        request, services, lambda: guard.check_files(uploads, image_id=image_id), pool=services.io
    )
    if outcome.action != "passed":
        action = "phi_override" if reason is not None else f"phi_{outcome.action}"
        detail = {"reason": reason.strip()[:200]} if reason is not None else {}
        await audit(request, services, action, None, tags=outcome.tags, **detail)


def image_target(image_id: str) -> str:
    """How the audit log names an image: the datastore's digest of its id (an id may be a
    patient's name)."""
    return f"image:{opaque(image_id)}"


def small_value(value: Any) -> bool:
    """Whether a client's value is small enough to keep in a record (2000 characters as JSON)."""
    return len(json.dumps(value, default=str)) <= 2000


def download_scratch(services: Services) -> str:
    """A folder for one download's files (removed by :func:`download` once it is sent)."""
    return tempfile.mkdtemp(prefix="dl-", dir=services.scratch)


def download(path: Path, name: str, scratch: Path) -> FileResponse:
    """The file with a ``Content-Disposition`` file name (Slicer picks its reader by it); the
    download's scratch folder goes once it is sent."""
    return FileResponse(
        path,
        filename=name,
        media_type="application/octet-stream",
        background=BackgroundTask(shutil.rmtree, scratch, True),
    )
