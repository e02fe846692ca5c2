"""``/session``: upload an image once, then run many calls on it (spec 4.9)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from carina.errors import NotSupportedError, RequestError
from carina.server.openapi import SESSION_BODY, SESSION_CREATED, SESSION_INFO, TAG_API
from carina.server.routers import both, request_scratch
from carina.server.routers.v1 import _in_pool
from carina.server.services.inference import read_uploads
from carina.server.services.params import as_bool, as_int
from carina.server.state import ServicesDep
from carina.server.wire import json_response, read_form

router = APIRouter(tags=[TAG_API])


@both(
    router,
    "/session",
    "PUT",
    documented="/session/",
    summary="Create a session",
    description="Upload an image once (any file part name; several parts form a DICOM "
    "series). `expiry` in seconds (0 or absent: the server default, 3600); the server "
    "grants at most its maximum. Answer: `session_id` and `session_info`.",
    openapi_extra=SESSION_BODY,
    responses=SESSION_CREATED,
)
async def create_session(
    request: Request,
    services: ServicesDep,
    expiry: str | None = None,
    save_as: str | None = None,
) -> Response:
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        if "dicom" in params:
            raise NotSupportedError(
                "pulling a series from a DICOM server is not enabled; upload the image instead"
            )
        if not uploads:
            raise RequestError("no image: upload the session's image as a file part")
        lifetime = as_int(expiry, "expiry") if expiry not in (None, "") else None

        def job() -> Any:
            volume = read_uploads(uploads, scratch, max_bytes=services.settings.max_image_bytes)
            return services.sessions.create(volume, expiry=lifetime, save_as=save_as)

        info = await _in_pool(request, services, job)
    return json_response({"session_id": info.name, "session_info": info.model_dump()})


@router.get("/session/{session_id}", summary="Get a session", responses=SESSION_INFO)
def get_session(session_id: str, services: ServicesDep, update_ts: str | None = None) -> Response:
    """The session's info; ``update_ts=true`` refreshes its last access. 404 when unknown."""
    touch = as_bool(update_ts, "update_ts") if update_ts else False
    return json_response(services.sessions.info(session_id, touch=touch).model_dump())


@router.delete("/session/{session_id}", summary="Delete a session", responses=SESSION_INFO)
def delete_session(session_id: str, services: ServicesDep) -> Response:
    """Delete the session and its image. 404 when unknown."""
    return json_response(services.sessions.delete(session_id).model_dump())
