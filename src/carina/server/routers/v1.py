"""``/v1``: the model list and the inference calls of the AIAA protocol (spec sections 3-4.8)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, Request, Response

from carina.archive.schema import ModelType
from carina.errors import RequestError
from carina.server.openapi import INFERENCE_BODY, MODELS_EXAMPLE, POLYGON_BODY, TAG_API
from carina.server.routers import both, request_scratch
from carina.server.services.inference import (
    InferenceOutput,
    choose_inputs,
    encode_result,
    known_suffix,
    read_uploads,
    run_model,
)
from carina.server.services.params import as_int, as_points
from carina.server.state import Services, ServicesDep
from carina.server.wire import file_response, json_response, multipart_response, read_form

router = APIRouter(tags=[TAG_API])


@both(
    router,
    "/v1/models",
    "GET",
    summary="Retrieve the list of available models",
    description="Every model installed on this server, sorted by name; with `model=NAME` "
    "exactly one object. `label` keeps models with that label (case-insensitive; substring "
    "match when no label is equal), `type` models of that type.",
    responses={200: {"content": {"application/json": {"example": MODELS_EXAMPLE}}}},
)
def list_models(
    services: ServicesDep,
    model: str | None = None,
    label: str | None = None,
    type: str | None = None,
) -> Response:
    if model:
        return json_response(services.registry.entry(model).model_dump())
    entries = services.registry.entries()
    if type:
        entries = [e for e in entries if e.type.lower() == type.lower()]
    if label:
        wanted = label.lower()
        exact = [e for e in entries if wanted in (x.lower() for x in e.labels)]
        entries = exact or [e for e in entries if any(wanted in x.lower() for x in e.labels)]
    return json_response([e.model_dump() for e in entries])


def _inference_route(path: str, summary: str, description: str) -> None:
    async def endpoint(
        request: Request,
        services: ServicesDep,
        model: str,
        session_id: str | None = None,
        output: str | None = None,
    ) -> Response:
        return await run_inference(request, services, model, session_id, output)

    both(
        router,
        path,
        "POST",
        summary=summary,
        description=description,
        openapi_extra=INFERENCE_BODY,
        responses={
            200: {"description": "multipart: `params` (JSON) then the label map `image`"},
            440: {"description": "session unknown or expired"},
        },
    )(endpoint)


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
        entry = await anyio.to_thread.run_sync(services.registry.entry, model)
        kind = ModelType(entry.type)
        if not session_id and not uploads:
            raise RequestError("no image: upload one as a file part, or give a session_id")
        chosen = choose_inputs(uploads)
        suffix = known_suffix(chosen[0].filename) if chosen and not session_id else ""

        def job() -> InferenceOutput:
            start = time.perf_counter()
            if session_id:
                volume = services.sessions.volume(session_id)
            else:
                volume = read_uploads(uploads, scratch, max_bytes=services.settings.max_image_bytes)
            read = time.perf_counter() - start
            predictor = services.registry.predictor(model)
            result, out, timings = run_model(predictor, kind, volume, params)
            image, name, write = encode_result(result, params, input_suffix=suffix)
            timings.update(read=read, write=write)
            return InferenceOutput(out, image, name, timings)

        result = await _in_pool(request, services, job)
    for stage, seconds in result.timings.items():
        services.metrics.stages.labels(stage).observe(seconds)
    headers = {"Server-Timing": server_timing(result.timings)}
    if output == "image" and result.image is not None:
        return file_response(result.image, result.image_name, headers=headers)
    if output == "json":
        return json_response(result.params, headers=headers)
    return multipart_response(result.params, result.image, result.image_name, headers=headers)


async def _in_pool(request: Request, services: Services, job: Any) -> Any:
    """Run ``job`` in the worker pool; a client that goes away while it waits drops it."""
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
        return await services.runner.run(job, cancelled=cancelled)
    finally:
        services.metrics.queue_depth.dec()
        services.metrics.models_loaded.set(services.registry.loaded_count())
        watcher.cancel()


def server_timing(timings: dict[str, float]) -> str:
    """``read;dur=1.2, pre;dur=...`` in milliseconds (the ``Server-Timing`` header)."""
    order = ["read", "pre", "infer", "post", "write"]
    names = order + [k for k in timings if k not in order]
    return ", ".join(f"{k};dur={timings[k] * 1000:.1f}" for k in names if k in timings)


@both(
    router,
    "/v1/mask2polygon",
    "POST",
    summary="Convert a mask to per-slice polygons",
    description='`params`: `{"more_points": N}` (more vertices for larger N) and a binary '
    "mask. Answer: a JSON list with one entry per slice k, each a list of polygons of [j, i] "
    "vertices.",
    openapi_extra=POLYGON_BODY,
)
async def post_mask2polygon(request: Request, services: ServicesDep) -> Response:
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        more_points = as_int(params.get("more_points", 0), "more_points")

        def job() -> list[Any]:
            from carina.interactive.polygons import mask2polygon

            volume = read_uploads(uploads, scratch, max_bytes=services.settings.max_image_bytes)
            return mask2polygon(np.asarray(volume.array) > 0, more_points)

        polygons = await _in_pool(request, services, job)
    return json_response(polygons)


@both(
    router,
    "/v1/fixpolygon",
    "POST",
    summary="Move one polygon vertex and rasterise",
    description="`params`: `poly`, `vertex_offset`, `dimension` (2 or 3), `polygon_index`, "
    "`vertex_index`, `propagate_neighbor`; 3D adds `slice_index` and `propagate_neighbor_3d`. "
    'Answer: multipart with `{"poly": ...}` and the mask (PNG for a 2D image).',
    openapi_extra=POLYGON_BODY,
)
async def post_fixpolygon(request: Request, services: ServicesDep) -> Response:
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        chosen = choose_inputs(uploads)
        suffix = known_suffix(chosen[0].filename) if chosen else ""

        def job() -> tuple[Any, bytes, str]:
            volume = read_uploads(uploads, scratch, max_bytes=services.settings.max_image_bytes)
            poly, mask = apply_fixpolygon(params, tuple(volume.shape))
            data, name, _ = encode_result(
                volume.with_array(mask), {}, input_suffix=".png" if suffix == ".png" else ""
            )
            return poly, data, name

        poly, data, name = await _in_pool(request, services, job)
    return multipart_response({"poly": poly}, data, name)


def apply_fixpolygon(params: dict[str, Any], shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The edited polygons and their mask on ``shape`` (Clara 1.x key names accepted).

    Raises:
        RequestError: missing or malformed keys, or indices outside the polygons.
    """
    from carina.interactive.polygons import fixpolygon, fixpolygon_3d, polygons_to_mask

    poly = params.get("poly", params.get("prev_poly"))
    if isinstance(poly, str):
        try:
            poly = json.loads(poly) if poly else None
        except json.JSONDecodeError as exc:
            raise RequestError("params.poly: not a JSON list of polygons") from exc
    if not isinstance(poly, list):
        raise RequestError("params.poly: the polygons to edit are missing")
    offset = as_points(params.get("vertex_offset"), "vertex_offset", dims=2)
    if len(offset) != 1:
        raise RequestError("params.vertex_offset: one [dx, dy] offset expected")
    polygon_index = as_int(
        params.get("polygon_index", params.get("polygonIndex", 0)), "polygon_index"
    )
    vertex_index = as_int(params.get("vertex_index", params.get("vertexIndex", 0)), "vertex_index")
    neighbours = as_int(params.get("propagate_neighbor", 0), "propagate_neighbor")
    dimension = as_int(params.get("dimension", 2), "dimension")
    try:
        if dimension == 3:
            new = fixpolygon_3d(
                poly,
                slice_index=as_int(params.get("slice_index", 0), "slice_index"),
                polygon_index=polygon_index,
                vertex_index=vertex_index,
                vertex_offset=offset[0],
                propagate_neighbor=neighbours,
                propagate_neighbor_3d=as_int(
                    params.get("propagate_neighbor_3d", 0), "propagate_neighbor_3d"
                ),
            )
            return new, polygons_to_mask(new, shape)
        new_2d = fixpolygon(
            poly,
            polygon_index=polygon_index,
            vertex_index=vertex_index,
            vertex_offset=offset[0],
            propagate_neighbor=neighbours,
        )
        return new_2d, polygons_to_mask([new_2d], shape)
    except (IndexError, TypeError, ValueError) as exc:
        raise RequestError(f"params: {exc}") from exc
