"""The MONAI Label API (``specs/monailabel-api.md``): what its Slicer plugin, its OHIF v3
extension and its Python client call, next to AIAA v1 on the same server and workspace.

Paths are declared once in the spelling the plugins use; ``add_slash_twins`` adds the other,
so that no call is ever redirected (Slicer's ``http.client`` does not follow redirects).
Image ids are opaque (volume names, SeriesInstanceUIDs): the datastore never makes them paths.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from carina import __version__
from carina.audit import opaque
from carina.errors import AuthError, NotFoundError, RequestError
from carina.server.openapi import (
    TAG_MONAI_LABEL,
    USER_SECURITY,
    with_security,
)
from carina.server.openapi_ml import (
    ML_FILE_RESPONSES,
    ML_INFER_RESPONSES,
    ML_INFO_EXAMPLE,
    ML_TASK_EXAMPLE,
    ML_TASK_RESPONSES,
    ml_json,
    ml_responses,
)
from carina.server.routing import (
    audit,
    guard_uploads,
    image_target,
    in_pool,
    request_scratch,
)
from carina.server.services import aiaa, mldatastore, monailabel, training
from carina.server.services.admin import install_model
from carina.server.services.inference import Upload
from carina.server.services.params import as_bool, parse_params
from carina.server.state import (
    AdminUserDep,
    AnnotatorDep,
    Services,
    ServicesDep,
    UserDep,
    principal,
)
from carina.server.wire import (
    file_response,
    json_response,
    multipart_response,
    read_form,
    server_timing,
)

router = APIRouter(tags=[TAG_MONAI_LABEL], default_response_class=Response)


# -- info and sign-in --------------------------------------------------------------------------


@router.get(
    "/info/",
    responses=ml_responses(
        ml_json(ML_INFO_EXAMPLE, "The app info both plugins read."), 403, 503, 504
    ),
    summary="App info: models, labels, trainers, strategies, datastore",
)
async def info(request: Request, services: ServicesDep, who: UserDep) -> Response:
    document = await in_pool(
        request,
        services,
        lambda: monailabel.app_info(
            services.registry, services.store, services.workspace, version=__version__
        ),
        pool=services.io,
    )
    return json_response(document)


@router.get(
    "/auth/",
    responses=ml_responses(ml_json({"enabled": True, "client_id": "carina", "realm": None})),
    summary="Whether sign-in is on (Slicer asks before every call)",
)
def auth_enabled(services: ServicesDep) -> Response:
    return json_response(services.auth.describe())


@router.post(
    "/auth/token",
    responses=ml_responses(
        ml_json({"access_token": "eyJ...", "token_type": "Bearer", "expires_in": 3600}),
        400,
        408,
        413,
    ),
    summary="Sign in: the password grant (form-urlencoded)",
)
async def auth_token(request: Request, services: ServicesDep) -> Response:
    form = await request.form()
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    await form.close()
    try:
        token = await anyio.to_thread.run_sync(services.auth.token, username, password)
    except AuthError:
        await audit(request, services, "sign_in_failed", f"user:{opaque(username)}")
        raise
    request.state.principal = services.auth.verify(f"Bearer {token['access_token']}")
    await audit(request, services, "sign_in")
    return json_response(token)


@router.get(
    "/auth/token/valid",
    responses=ml_responses(ml_json({"username": "ada", "roles": ["admin"]})),
    summary="Whether the request's token is valid (200) or not",
)
def auth_token_valid(request: Request, services: ServicesDep) -> Response:
    who = principal(request, services)
    return json_response({"username": who.name, "roles": sorted(str(r) for r in who.roles)})


# -- inference ---------------------------------------------------------------------------------


@router.post(
    "/infer/{model}",
    responses=ML_INFER_RESPONSES,
    summary="Run a model on a datastore image, an upload or a session",
)
async def infer(
    request: Request,
    services: ServicesDep,
    who: UserDep,
    model: str,
    image: str | None = None,
    session_id: str | None = None,
    output: str | None = None,
) -> Response:
    if output not in (None, "", "all", "image", "json", "dicom_seg"):
        raise RequestError(f"output must be all, image, json or dicom_seg, not {output[:32]!r}")
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        await guard_uploads(request, services, uploads)
        if output == "dicom_seg":  # the result as a DICOM SEG of the (DICOM) image
            params = {**params, "result_extension": ".dcm"}
        images = monailabel.image_uploads(uploads)
        stored = None
        if not session_id and not images:
            if not image:
                raise RequestError(
                    "name the image (?image=ID), upload it as 'file', or give a session_id"
                )
            stored = await in_pool(
                request, services, lambda: services.store.image_path(image), pool=services.io
            )
        source = services.image_source(session_id, images, scratch, stored=stored)
        info, translated, names = await in_pool(
            request,
            services,
            lambda: monailabel.prepare(services.registry, services.store, model, params),
            pool=services.io,
        )
        result = await _run(request, services, source, model, params, translated)
        services.metrics.observe_stages(result.timings)
    answer = {**result.params, "label_names": names, "latencies": _latencies(result.timings)}
    target = image_target(image) if stored is not None and image else None
    await audit(request, services, "infer", target, model=model)
    headers = {"Server-Timing": server_timing(result.timings)}
    background = None
    as_seg = result.image_name.endswith(".dcm")  # a SEG is no label map of the stored image
    keep = info.kind.guidance.value == "none" and result.image and not as_seg
    if stored is not None and image and keep:
        background = BackgroundTask(
            _keep_original, services, image, result.image, result.image_name, model, names
        )
    if output in ("image", "dicom_seg"):
        response = file_response(result.image or b"", result.image_name, headers=headers)
    elif output == "json":
        response = json_response(answer, headers=headers)
    else:
        response = multipart_response(answer, result.image, result.image_name, headers=headers)
    response.background = background
    return response


async def _run(
    request: Request,
    services: Services,
    source: Any,
    model: str,
    params: dict[str, Any],
    translated: dict[str, Any] | None,
) -> Any:
    """Read the image (I/O pool), run the model (inference pool); a DExtr3D model still
    waiting for its 6 points (``translated`` None) answers an empty label."""
    registry, sessions = services.registry, services.sessions
    if translated is None:
        return await in_pool(
            request,
            services,
            lambda: monailabel.empty_result(source, sessions, params),
            pool=services.io,
        )

    def read() -> tuple[aiaa.PreparedInference, Any, float]:
        prepared = aiaa.prepare_inference(registry, model=model, source=source, params=translated)
        return (prepared, *aiaa.read_image(source, sessions))

    prepared, volume, seconds = await in_pool(request, services, read, pool=services.io)
    return await in_pool(
        request,
        services,
        lambda: aiaa.infer(
            registry, prepared, volume, source=source, read_seconds=seconds, sessions=sessions
        ),
    )


def _latencies(timings: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 4) for key, value in timings.items()} | {
        "total": round(sum(timings.values()), 4)
    }


async def _keep_original(
    services: Services, image_id: str, data: bytes, name: str, model: str, names: dict[str, int]
) -> None:
    """After answering: keep a segmentation model's output on a datastore image as its
    ``original`` label (what Slicer reads back, and what corrections are measured against)."""
    await services.io.run(
        lambda: monailabel.keep_original(
            services.store, services.scratch, image_id, data, name, model, names
        )
    )


# -- training and scoring --------------------------------------------------------------------------


@router.post(
    "/train/",
    responses=ml_responses(
        ml_json({"spine_ct_vertebrae": {"result": ML_TASK_EXAMPLE}}), 400, 403, 404, 408, 413
    ),
    summary="Start every trainer named in the body (all when none)",
)
async def train_all(request: Request, services: ServicesDep, who: AdminUserDep) -> Response:
    body = parse_params(await request.body())
    names = [info.name for info in training.trainable(services.registry)]
    chosen = [name for name in body if name in names] or names
    answer = {}
    for name in chosen:
        started = await anyio.to_thread.run_sync(
            training.start, services.registry, services.workspace, name, services.settings.device
        )
        answer[name] = {"result": started, "detail": started.get("details")}
        await audit(request, services, "train", f"model:{name}")
    return json_response(answer)


@router.post(
    "/train/{model}",
    responses=ml_responses(ml_json(ML_TASK_EXAMPLE), 400, 403, 404, 408, 413),
    summary="Start training a model on the datastore's final labels",
)
async def train(request: Request, services: ServicesDep, who: AdminUserDep, model: str) -> Response:
    started = await anyio.to_thread.run_sync(
        lambda: training.start(
            services.registry, services.workspace, model, services.settings.device
        )
    )
    await audit(request, services, "train", f"model:{model}")
    return json_response(started)


@router.get(
    "/train/",
    responses=ML_TASK_RESPONSES,
    summary="The last training task (404: none); check_if_running: 200 or 404",
)
async def train_status(
    request: Request, services: ServicesDep, who: UserDep, check_if_running: str | None = None
) -> Response:
    if check_if_running and as_bool(check_if_running, "check_if_running"):
        found = await anyio.to_thread.run_sync(
            training.running, services.registry, services.workspace
        )
        if found is None:
            raise NotFoundError("no training is running")
        return json_response(found)
    last = await anyio.to_thread.run_sync(training.last_task, services.registry, services.workspace)
    if last is None:
        raise NotFoundError("no training task has run")
    return json_response(last)


@router.delete(
    "/train/",
    responses=ml_responses(
        ml_json(ML_TASK_EXAMPLE, "The task asked to stop, or null.", {"type": ["object", "null"]}),
        403,
    ),
    summary="Stop the running training",
)
async def train_stop(request: Request, services: ServicesDep, who: AdminUserDep) -> Response:
    stopped = await anyio.to_thread.run_sync(training.stop, services.registry, services.workspace)
    await audit(request, services, "stop_train")
    return json_response(stopped)


@router.get(
    "/scoring/",
    responses=ml_responses(ml_json({"model": "spine_ct_vertebrae", "status": "DONE"}), 403),
    summary="The scoring run of the unlabelled images",
)
def scoring(services: ServicesDep, who: UserDep) -> Response:
    return json_response(services.scoring_status())


@router.post(
    "/scoring/{method}",
    responses=ml_responses(
        ml_json({"model": "spine_ct_vertebrae", "status": "RUNNING"}), 400, 403, 404, 408, 413
    ),
    summary="Score the unlabelled images for active learning",
)
async def start_scoring(
    request: Request, services: ServicesDep, who: AnnotatorDep, method: str
) -> Response:
    if method != "uncertainty":
        raise NotFoundError(f"no scoring method {method[:64]!r} (methods: uncertainty)")
    body = parse_params(await request.body())
    model = mldatastore.scoring_model(services.registry, body.get("model"))
    status = await anyio.to_thread.run_sync(services.start_scoring, model)
    await audit(request, services, "score", f"model:{model.name}")
    return json_response(status)


@router.delete(
    "/scoring/", responses=ml_responses(ml_json({}), 403), summary="Stop the scoring run"
)
async def stop_scoring(request: Request, services: ServicesDep, who: AnnotatorDep) -> Response:
    await anyio.to_thread.run_sync(services.stop_scoring)
    return json_response(services.scoring_status())


# -- models --------------------------------------------------------------------------------------


@router.get(
    "/model/",
    responses=ml_responses(
        ml_json({"spine_ct_vertebrae": {"checksum": "SHA256:...", "timestamp": 0}}), 403, 503, 504
    ),
    summary="Every model with its weights' checksum and time",
)
async def models(request: Request, services: ServicesDep, who: UserDep) -> Response:
    found = await in_pool(
        request, services, lambda: monailabel.model_files(services.registry), pool=services.io
    )
    return json_response(found)


@router.get("/model/{name}", responses=ML_FILE_RESPONSES, summary="Download a model's weights")
async def get_model(request: Request, services: ServicesDep, who: UserDep, name: str) -> Response:
    path = await in_pool(
        request,
        services,
        lambda: monailabel.weights_file(services.registry, name),
        pool=services.io,
    )
    await audit(request, services, "read", f"model:{name}")
    return FileResponse(
        path, filename=f"{name}{path.suffix}", media_type="application/octet-stream"
    )


@router.put(
    "/model/{name}",
    responses=ml_responses(
        ml_json(ML_INFO_EXAMPLE["models"]["spine_ct_vertebrae"]), 400, 403, 408, 413, 501, 503, 504
    ),
    summary="Install or replace a model from an archive zip (admin)",
)
async def put_model(
    request: Request, services: ServicesDep, who: AdminUserDep, name: str
) -> Response:
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        uploads = [Upload("data", u.filename, u.path) for u in uploads]
        info = await in_pool(
            request, services, lambda: install_model(services.registry, name, params, uploads)
        )
    await audit(request, services, "upload_model", f"model:{name}")
    return json_response(monailabel.model_entry(info, []))


@router.delete(
    "/model/{name}",
    responses=ml_responses(ml_json({}), 400, 403, 404),
    summary="Remove a model (admin)",
)
async def delete_model(
    request: Request, services: ServicesDep, who: AdminUserDep, name: str
) -> Response:
    removed = await anyio.to_thread.run_sync(services.registry.delete, name)
    if removed is None:
        raise NotFoundError(f"model {name[:64]!r} is not installed")
    await audit(request, services, "delete_model", f"model:{name}")
    return json_response({})


with_security(router, USER_SECURITY)
