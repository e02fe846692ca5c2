"""The HTTP routes: thin shells that validate, call a service and encode the answer."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter

EndpointT = TypeVar("EndpointT", bound=Callable[..., Any])


def both(
    router: APIRouter, path: str, method: str, *, documented: str | None = None, **kwargs: Any
) -> Callable[[EndpointT], EndpointT]:
    """Register an endpoint at ``path`` and ``path/``: clients differ, and a redirect would lose
    a PUT's body (spec 2.1). ``documented`` is the spelling the API docs show (default ``path``).
    """

    def register(endpoint: EndpointT) -> EndpointT:
        shown = documented or path
        for spelling in (path, path + "/"):
            router.add_api_route(
                spelling,
                endpoint,
                methods=[method],
                include_in_schema=spelling == shown,
                **kwargs,
            )
        return endpoint

    return register


@contextlib.asynccontextmanager
async def request_scratch(root: Path) -> AsyncIterator[Path]:
    """A folder on this replica's local disk for one request's files, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="req-", dir=root))
    try:
        yield folder
    finally:
        await anyio.to_thread.run_sync(shutil.rmtree, folder, True)
