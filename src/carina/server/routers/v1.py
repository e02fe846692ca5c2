"""``/v1``: the model list and the inference calls of the AIAA protocol (spec sections 3-4.8)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from carina.io import Volume
from carina.server.openapi import (
    API_SECURITY,
    FIXPOLYGON_RESPONSES,
    INFERENCE_BODY,
    INFERENCE_RESPONSES,
    MASK2POLYGON_RESPONSES,
    MODELS_RESPONSES,
    POLYGON_BODY,
    TAG_API,
)
from carina.server.routing import guard_uploads, in_pool, request_scratch
from carina.server.services import aiaa, polygons
from carina.server.state import Services, ServicesDep
from carina.server.wire import (
    file_response,
    json_response,
    multipart_response,
    read_form,
    server_timing,
)

router = APIRouter(tags=[TAG_API], default_response_class=Response)


@router.get(
    "/v1/models",
    summary="Retrieve the list of available models",
    description="Every model installed on this server, sorted by name; with `model=NAME` "
    "exactly one object. `label` keeps models with that label (case-insensitive; substring "
    "match when no label is equal), `type` models of that type.",
    openapi_extra=API_SECURITY,
    responses=MODELS_RESPONSES,
)
def list_models(
    services: ServicesDep,
    model: str | None = None,
    label: str | None = None,
    type: str | None = None,
) -> Response:
    if model:
        return json_response(aiaa.model_entry(services.registry.model(model)).model_dump())
    entries = aiaa.list_models(services.registry, label=label, type=type)
    return json_response([entry.model_dump() for entry in entries])


def _inference_route(path: str, summary: str, description: str) -> None:
    async def endpoint(
        request: Request,
        services: ServicesDep,
        model: str,
        session_id: str | None = None,
        output: str | None = None,
    ) -> Response:
        return await run_inference(request, services, model, session_id, output)

    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        summary=summary,
        description=description,
        openapi_extra=INFERENCE_BODY,
        responses=INFERENCE_RESPONSES,
    )


_inference_route(
    "/v1/segmentation",
    "Run automatic segmentation",
    "Segment the uploaded image (or the session's) with a `segmentation` model. The answer's "
    "params hold the 6 extreme `points` and the `bbox` of the mask.",
)
_inference_route(
    "/v1/dextr3d",
    "Run DExtr3D annotation from 6 extreme points",
    '`params`: `{"points": [[i, j, k], ...]}` with at least 6 extreme points of the structure '
    "(voxel indices of the uploaded image). Works on the full image or on a client's crop.",
)
_inference_route(
    "/v1/deepgrow",
    "Run DeepGrow from clicks",
    "`params`: `foreground` and `background` click lists, optional `current_point` "
    "(2D models: its slice) and `spatial_size`. The mask is full size; 3D adds `crop`.",
)
_inference_route(
    "/v1/inference",
    "Run any model",
    "The generic call: the server dispatches on the model's type (segmentation, annotation, "
    "deepgrow) with the same params as the specific endpoints.",
)


async def run_inference(
    request: Request,
    services: Services,
    model: str,
    session_id: str | None,
    output: str | None,
) -> Response:
    """Read the request, run the model in the worker pool, encode the AIAA answer."""
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        await guard_uploads(request, services, uploads)
        source = services.image_source(session_id, uploads, scratch)
        registry, sessions = services.registry, services.sessions

        def read() -> tuple[aiaa.PreparedInference, Volume, float]:
            prepared = aiaa.prepare_inference(registry, model=model, source=source, params=params)
            return (prepared, *aiaa.read_image(source, sessions))

        prepared, image, seconds = await in_pool(request, services, read, pool=services.io)
        result = await in_pool(
            request,
            services,
            lambda: aiaa.infer(
                registry, prepared, image, source=source, read_seconds=seconds, sessions=sessions
            ),
        )
    services.metrics.observe_stages(result.timings)
    headers = {"Server-Timing": server_timing(result.timings)}
    if output == "image" and result.image is not None:
        return file_response(result.image, result.image_name, headers=headers)
    if output == "json":
        return json_response(result.params, headers=headers)
    return multipart_response(result.params, result.image, result.image_name, headers=headers)


@router.post(
    "/v1/mask2polygon",
    summary="Convert a mask to per-slice polygons",
    description='`params`: `{"more_points": N}` (more vertices for larger N) and a binary '
    "mask. Answer: a JSON list with one entry per slice k, each a list of polygons of [j, i] "
    "vertices.",
    openapi_extra=POLYGON_BODY,
    responses=MASK2POLYGON_RESPONSES,
)
async def post_mask2polygon(request: Request, services: ServicesDep) -> Response:
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        await guard_uploads(request, services, uploads)
        source = services.image_source(None, uploads, scratch)
        found = await in_pool(
            request, services, lambda: polygons.mask_to_polygons(source, params), pool=services.io
        )
    return json_response(found)


@router.post(
    "/v1/fixpolygon",
    summary="Move one polygon vertex and rasterise",
    description="`params`: `poly`, `vertex_offset`, `dimension` (2 or 3), `polygon_index`, "
    "`vertex_index`, `propagate_neighbor`; 3D adds `slice_index` and `propagate_neighbor_3d`. "
    'Answer: multipart with `{"poly": ...}` and the mask (PNG for a 2D image).',
    openapi_extra=POLYGON_BODY,
    responses=FIXPOLYGON_RESPONSES,
)
async def post_fixpolygon(request: Request, services: ServicesDep) -> Response:
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        await guard_uploads(request, services, uploads)
        source = services.image_source(None, uploads, scratch)
        poly, data, name = await in_pool(
            request, services, lambda: polygons.fix_polygon(source, params), pool=services.io
        )
    return multipart_response({"poly": poly}, data, name)
