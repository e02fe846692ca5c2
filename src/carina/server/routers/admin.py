"""``/admin/model/{name}``: install, reconfigure and remove models (bearer token, spec 4.11)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from carina.errors import RequestError
from carina.server.openapi import (
    ADMIN_BODY,
    ADMIN_SECURITY,
    MODEL_CONFIG,
    MODEL_DELETED,
    MODEL_INSTALLED,
    MODEL_PATCHED,
    PATCH_BODY,
    TAG_ADMIN_MODEL,
)
from carina.server.routing import in_pool, request_scratch
from carina.server.services import aiaa
from carina.server.services.admin import install_model
from carina.server.services.params import parse_params
from carina.server.state import AdminDep
from carina.server.wire import json_response, read_form

router = APIRouter(tags=[TAG_ADMIN_MODEL], default_response_class=Response)


@router.get(
    "/admin/model/{name}",
    summary="Get a model's serving config",
    openapi_extra=ADMIN_SECURITY,
    responses=MODEL_CONFIG,
)
def get_model_config(name: str, services: AdminDep) -> Response:
    """The model's current ``config_aiaa.json``."""
    return json_response(services.registry.config(name))


@router.put(
    "/admin/model/{name}",
    summary="Install or replace a model",
    openapi_extra=ADMIN_BODY,
    responses=MODEL_INSTALLED,
)
async def put_model(name: str, request: Request, services: AdminDep) -> Response:
    """Multipart ``data`` = an archive zip, or ``config`` (config_aiaa.json) + ``data`` (model.ts
    or model.pt). The archive is validated in the worker pool (no code, config loads, weights
    fit) before it replaces anything. NGC downloads are not enabled (501)."""
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        info = await in_pool(
            request, services, lambda: install_model(services.registry, name, params, uploads)
        )
    return json_response(aiaa.model_entry(info).model_dump())


@router.patch(
    "/admin/model/{name}",
    summary="Replace a model's serving config",
    openapi_extra=PATCH_BODY,
    responses=MODEL_PATCHED,
)
async def patch_model(name: str, request: Request, services: AdminDep) -> Response:
    """JSON body = a new ``config_aiaa.json``; the weights stay. Validated before it is used."""
    config = parse_params(await request.body())
    if not config:
        raise RequestError("the body must be the new config_aiaa.json (a JSON object)")
    info = await in_pool(request, services, lambda: services.registry.patch_config(name, config))
    return json_response(aiaa.model_entry(info).model_dump())


@router.delete(
    "/admin/model/{name}",
    summary="Remove a model",
    openapi_extra=ADMIN_SECURITY,
    responses=MODEL_DELETED,
)
def delete_model(name: str, services: AdminDep) -> Response:
    """Unload and remove the model; answers its last entry."""
    return json_response(aiaa.deleted_entry(name, services.registry.delete(name)).model_dump())
