"""``/session``: upload an image once, then run many calls on it (spec 4.9)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from carina.server.openapi import (
    API_SECURITY,
    SESSION_BODY,
    SESSION_CREATED,
    SESSION_DELETED,
    SESSION_INFO,
    TAG_API,
)
from carina.server.routing import guard_uploads, in_pool, request_scratch
from carina.server.services import aiaa
from carina.server.services.params import as_bool
from carina.server.state import ServicesDep
from carina.server.wire import json_response, read_form

router = APIRouter(tags=[TAG_API], default_response_class=Response)


@router.put(
    "/session/",
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
        await guard_uploads(request, services, uploads)
        source = services.image_source(None, uploads, scratch)
        info = await in_pool(
            request,
            services,
            lambda: aiaa.create_session(
                services.sessions, source, params, expiry=expiry, save_as=save_as
            ),
            pool=services.io,
        )
    return json_response({"session_id": info.name, "session_info": info.model_dump()})


@router.get(
    "/session/{session_id}",
    summary="Get a session",
    openapi_extra=API_SECURITY,
    responses=SESSION_INFO,
)
def get_session(session_id: str, services: ServicesDep, update_ts: str | None = None) -> Response:
    """The session's info; ``update_ts=true`` refreshes its last access. 404 when unknown."""
    touch = as_bool(update_ts, "update_ts") if update_ts else False
    return json_response(services.sessions.info(session_id, touch=touch).model_dump())


@router.delete(
    "/session/{session_id}",
    summary="Delete a session",
    openapi_extra=API_SECURITY,
    responses=SESSION_DELETED,
)
def delete_session(session_id: str, services: ServicesDep) -> Response:
    """Delete the session and its image. 404 when unknown."""
    return json_response(services.sessions.delete(session_id).model_dump())
