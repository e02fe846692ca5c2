"""The MONAI Label datastore routes (``/datastore/...``) and the next image
(``/activelearning/{strategy}``): images and versioned labels as the Slicer and OHIF plugins
send and fetch them. Ids are opaque; the datastore never makes one a path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from carina.datastore import FINAL
from carina.errors import NotFoundError, RequestError
from carina.server.openapi import (
    TAG_MONAI_LABEL,
    USER_SECURITY,
    with_security,
)
from carina.server.openapi_ml import (
    ML_ADD_RESPONSES,
    ML_APPROVE_RESPONSES,
    ML_BODY,
    ML_DELETE_RESPONSES,
    ML_FILE_ANSWER,
    ML_FILE_RESPONSES,
    ML_LABEL_INFO_RESPONSES,
    ml_json,
    ml_responses,
)
from carina.server.routing import (
    audit,
    download,
    download_scratch,
    guard_uploads,
    image_target,
    in_pool,
    request_scratch,
    small_value,
)
from carina.server.services import mldatastore
from carina.server.services.params import parse_params
from carina.server.state import (
    AdminUserDep,
    AnnotatorDep,
    Services,
    ServicesDep,
    UserDep,
)
from carina.server.wire import (
    json_response,
    read_form,
)

router = APIRouter(tags=[TAG_MONAI_LABEL], default_response_class=Response)


# -- images and labels -----------------------------------------------------------------------------


@router.get(
    "/datastore/",
    responses=ml_responses(
        ml_json(
            {"total": 3, "completed": 1, "label_tags": {"final": 1}},
            schema={"type": ["object", "array"]},
        ),
        400,
        403,
        503,
        504,
    ),
    summary="The datastore: stats (default), all objects, or train pairs",
)
async def datastore(
    request: Request, services: ServicesDep, who: UserDep, output: str | None = None
) -> Response:
    found = await in_pool(
        request, services, lambda: mldatastore.listing(services.store, output), pool=services.io
    )
    return json_response(found)


async def _add_image(request: Request, services: Services, image: str | None, who: Any) -> Response:
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        await guard_uploads(request, services, uploads, image_id=image)
        files = [u for u in uploads if u.field == "file"] or uploads
        if len(files) != 1:
            raise RequestError("send exactly one image file as the 'file' part")
        info = {k: v for k, v in params.items() if k != "client_id" and small_value(v)}
        info["uploaded_by"] = who.name
        record = await in_pool(
            request,
            services,
            lambda: mldatastore.add_image(services.store, files[0], image, info),
            pool=services.io,
        )
    await audit(request, services, "upload_image", image_target(record.id))
    return json_response({"image": record.id})


@router.put(
    "/datastore/", responses=ML_ADD_RESPONSES, summary="Add an image (the path Slicer uses)"
)
@router.put("/datastore/image", responses=ML_ADD_RESPONSES, summary="Add an image")
async def put_image(
    request: Request, services: ServicesDep, who: AnnotatorDep, image: str | None = None
) -> Response:
    """Add an image (``image=`` id), as both paths MONAI Label has for it."""
    return await _add_image(request, services, image, who)


@router.delete(
    "/datastore/", responses=ML_DELETE_RESPONSES, summary="Remove an image and its labels (admin)"
)
@router.delete(
    "/datastore/image",
    responses=ML_DELETE_RESPONSES,
    summary="Remove an image and its labels (admin)",
)
async def delete_image(
    request: Request, services: ServicesDep, who: AdminUserDep, id: str
) -> Response:
    """Remove an image (``id=``) and every version of its labels."""
    await in_pool(request, services, lambda: services.store.delete_image(id), pool=services.io)
    await audit(request, services, "delete_image", image_target(id))
    return json_response({})


@router.head(
    "/datastore/image",
    include_in_schema=False,
    summary="Whether an image exists (and has this checksum)",
)
async def head_image(
    request: Request,
    services: ServicesDep,
    who: UserDep,
    image: str,
    check_sum: str | None = None,
) -> Response:
    def check() -> None:
        path = services.store.image_path(image)
        if check_sum and path.is_file():
            wanted = check_sum if ":" in check_sum else f"SHA256:{check_sum}"
            if wanted.upper() != mldatastore.checksum(path).upper():
                raise NotFoundError("the image's checksum differs")

    await in_pool(request, services, check, pool=services.io)
    return Response(status_code=200)


@router.get(
    "/datastore/image",
    responses=ML_FILE_RESPONSES,
    summary="Download an image (a DICOM series as a zip)",
)
async def get_image(request: Request, services: ServicesDep, who: UserDep, image: str) -> Response:
    scratch = Path(await anyio.to_thread.run_sync(download_scratch, services))
    path, name = await in_pool(
        request,
        services,
        lambda: mldatastore.image_file(services.store, image, scratch),
        pool=services.io,
    )
    await audit(request, services, "read", image_target(image))
    return download(path, name, scratch)


@router.get(
    "/datastore/image/info",
    responses=ml_responses(ml_json({"name": "case.nii.gz", "ts": 0}), 400, 403, 404, 422, 503, 504),
    summary="An image's info",
)
async def get_image_info(
    request: Request, services: ServicesDep, who: UserDep, image: str
) -> Response:
    record = await in_pool(request, services, lambda: services.store.image(image), pool=services.io)
    return json_response(mldatastore.public_info(record) | {"name": record.name})


@router.put(
    "/datastore/image/info",
    responses=ml_responses(
        ml_json({"name": "case.nii.gz", "ts": 0}),
        *ML_BODY,
    ),
    summary="Merge into an image's info",
)
async def put_image_info(
    request: Request, services: ServicesDep, who: AnnotatorDep, image: str
) -> Response:
    async with request_scratch(services.scratch) as scratch:
        params, _ = await read_form(request, scratch)
    changes = parse_params(params["info"]) if isinstance(params.get("info"), str) else params
    changes = {k: v for k, v in changes.items() if k not in ("lock", "approved", "client_id")}
    record = await in_pool(
        request, services, lambda: services.store.update_info(image, changes), pool=services.io
    )
    await audit(request, services, "update_image_info", image_target(image))
    return json_response(mldatastore.public_info(record))


@router.put(
    "/datastore/label",
    responses=ml_responses(
        ml_json({"image": "case", "label": "case", "tag": "final"}),
        *ML_BODY,
    ),
    summary="Save a label (a new version of its tag)",
)
async def put_label(
    request: Request,
    services: ServicesDep,
    who: AnnotatorDep,
    image: str,
    tag: str = FINAL,
) -> Response:
    tag = tag or FINAL
    async with request_scratch(services.scratch) as scratch:
        params, uploads = await read_form(request, scratch)
        await guard_uploads(request, services, uploads)
        labels = [u for u in uploads if u.field == "label"] or uploads
        if len(labels) != 1:
            raise RequestError("send exactly one label file as the 'label' part")
        saved_by = who.name if who.via != "open" else str(params.get("client_id") or who.name)

        def save() -> Any:
            store = services.store
            volume = mldatastore.label_volume(
                store, image, labels[0], params, services.settings.max_image_bytes
            )
            info = {k: v for k, v in params.items() if small_value(v)}
            return store.save_label(image, volume, tag=tag, saved_by=saved_by, info=info)

        version = await in_pool(request, services, save, pool=services.io)
    await audit(request, services, "save_label", image_target(image), tag=tag)
    return json_response({"image": image, "label": image, "tag": tag, "version": version.version})


@router.delete(
    "/datastore/label",
    responses=ML_DELETE_RESPONSES,
    summary="Remove every version of an image's label tag (admin)",
)
async def delete_label(
    request: Request, services: ServicesDep, who: AdminUserDep, id: str, tag: str
) -> Response:
    count = await in_pool(
        request, services, lambda: services.store.delete_label(id, tag), pool=services.io
    )
    if count == 0:
        raise NotFoundError(f"image {id[:64]!r} has no {tag[:64]!r} label")
    await audit(request, services, "delete_label", image_target(id), tag=tag)
    return json_response({})


@router.head(
    "/datastore/label", include_in_schema=False, summary="Whether an image has a label of this tag"
)
async def head_label(
    request: Request, services: ServicesDep, who: UserDep, image: str, tag: str
) -> Response:
    await in_pool(
        request,
        services,
        lambda: mldatastore.label_file(services.store, image, tag),
        pool=services.io,
    )
    return Response(status_code=200)


@router.get(
    "/datastore/label", responses=ML_FILE_RESPONSES, summary="Download the latest label of a tag"
)
async def get_label(
    request: Request, services: ServicesDep, who: UserDep, label: str, tag: str
) -> Response:
    path, name = await in_pool(
        request,
        services,
        lambda: mldatastore.label_file(services.store, label, tag),
        pool=services.io,
    )
    await audit(request, services, "read", image_target(label), tag=tag)
    return FileResponse(path, filename=name, media_type="application/octet-stream")


@router.get(
    "/datastore/label/info", responses=ML_LABEL_INFO_RESPONSES, summary="The latest label's info"
)
async def get_label_info(
    request: Request, services: ServicesDep, who: UserDep, label: str, tag: str
) -> Response:
    found = await in_pool(
        request,
        services,
        lambda: mldatastore.label_info(services.store, label, tag),
        pool=services.io,
    )
    return json_response(found)


async def _approve_or_note(
    request: Request, services: Services, who: Any, label: str, tag: str, params: dict[str, Any]
) -> Response:
    """``/datastore/label/info`` and ``updatelabelinfo``: ``"status": "approved"`` on a final
    label approves it (reviewers); other keys are not kept (label versions never change)."""
    from carina.auth import Role
    from carina.errors import ForbiddenError

    changes = parse_params(params["info"]) if isinstance(params.get("info"), str) else params
    if str(changes.get("status", "")).lower() not in ("approved", "approve"):
        raise RequestError('label info can only approve a label: send {"status": "approved"}')
    if tag != FINAL:
        raise RequestError("only a final label can be approved")
    if not who.has(Role.REVIEWER):
        raise ForbiddenError(f"{who.name!r} may not approve labels: it needs the reviewer role")
    record = await in_pool(
        request, services, lambda: services.store.approve(label, by=who.name), pool=services.io
    )
    await audit(request, services, "approve", image_target(label))
    return json_response(mldatastore.label_info(services.store, record.id, FINAL))


@router.put(
    "/datastore/label/info",
    responses=ML_APPROVE_RESPONSES,
    summary="Approve a final label (reviewers)",
)
@router.put(
    "/datastore/updatelabelinfo",
    responses=ML_APPROVE_RESPONSES,
    summary="Approve a final label (the Reviewer module)",
)
async def put_label_info(
    request: Request, services: ServicesDep, who: AnnotatorDep, label: str, tag: str = FINAL
) -> Response:
    """Both paths MONAI Label has for label info (the second is its Reviewer module's)."""
    async with request_scratch(services.scratch) as scratch:
        params, _ = await read_form(request, scratch)
    return await _approve_or_note(request, services, who, label, tag, params)


@router.get(
    "/datastore/dataset",
    responses=ml_responses({200: ML_FILE_ANSWER}, 403, 422, 503, 504),
    summary="Every final label with its image, as a zip",
)
async def get_dataset(request: Request, services: ServicesDep, who: AnnotatorDep) -> Response:
    scratch = Path(await anyio.to_thread.run_sync(download_scratch, services))
    path = await in_pool(
        request,
        services,
        lambda: mldatastore.dataset_zip(services.store, scratch),
        pool=services.io,
    )
    await audit(request, services, "export", "datastore")
    return download(path, "dataset.zip", scratch)


# -- active learning --------------------------------------------------------


@router.post(
    "/activelearning/{strategy}",
    responses=ml_responses(
        ml_json({"id": "case", "name": "case.nii.gz", "checksum": "SHA256:..."}),
        *ML_BODY,
    ),
    summary="The next image to annotate",
)
async def activelearning(
    request: Request, services: ServicesDep, who: UserDep, strategy: str
) -> Response:
    body = parse_params(await request.body())
    holder = who.name if who.via != "open" else str(body.get("client_id") or who.name)
    found = await in_pool(
        request,
        services,
        lambda: mldatastore.next_sample(
            services.store,
            services.registry,
            strategy,
            body,
            holder=holder,
            device=services.settings.device,
        ),
    )
    if found:
        await audit(request, services, "next_image", image_target(found["id"]), strategy=strategy)
    return json_response(found)


with_security(router, USER_SECURITY)
