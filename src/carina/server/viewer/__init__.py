"""The browser annotation viewer at ``/viewer/``: static pages shipped in the wheel, and the one
route they need beyond the MONAI Label API, ``/viewer/api/image`` (any datastore or session image
as NIfTI, the format the viewer reads, with the geometry Carina reads it with).

The viewer is a static page (``static/index.html``, ``app.js``, ``app.css``) over Niivue, whose
browser build is vendored under ``static/vendor/`` (versions and licences in
``static/vendor/LICENSES.md``; ``make viewer-assets`` rebuilds it from
``viewer/package-lock.json``).
Nothing is fetched from elsewhere: the Content-Security-Policy allows this server only.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from carina.errors import NotFoundError, RequestError
from carina.io import save_volume
from carina.io.formats import suffix_of
from carina.server.openapi import (
    TAG_VIEWER,
    USER_SECURITY,
    with_security,
)
from carina.server.openapi_ml import (
    ML_FILE_ANSWER,
    ml_responses,
)
from carina.server.routing import audit, image_target, in_pool
from carina.server.state import ServicesDep, UserDep

router = APIRouter(tags=[TAG_VIEWER])

#: The viewer's pages may load and call this server only (Niivue needs blob: for results).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self' blob: data:; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_NIFTI = (".nii", ".nii.gz")


@dataclass(frozen=True)
class Asset:
    """One file of the viewer, held in memory, revalidated by its ETag."""

    content: bytes
    media_type: str

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.content).hexdigest()[:20] + '"'

    def response(self, request: Request) -> Response:
        headers = {
            "ETag": self.etag,
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.content, media_type=self.media_type, headers=headers)


@cache
def assets() -> dict[str, Asset]:
    """Every file under ``static/`` by its path there (``vendor/niivue.min.js``)."""
    found: dict[str, Asset] = {}
    todo = [(resources.files(__package__) / "static", "")]
    while todo:
        folder, prefix = todo.pop()
        for entry in folder.iterdir():
            name = f"{prefix}{entry.name}"
            if entry.is_dir():
                todo.append((entry, f"{name}/"))
            elif Path(name).suffix in _MEDIA_TYPES:
                found[name] = Asset(entry.read_bytes(), _MEDIA_TYPES[Path(name).suffix])
    return found


@router.get("/viewer/", include_in_schema=False)
async def page(request: Request) -> Response:
    """The viewer's page."""
    return assets()["index.html"].response(request)


@router.get(
    "/viewer/api/image",
    summary="An image as NIfTI for the viewer",
    responses=ml_responses({200: ML_FILE_ANSWER}, 400, 403, 404, 422, 440, 503, 504),
)
# Declared here so that it comes before the catch-all of the viewer's files.
@router.get("/viewer/api/image/", include_in_schema=False)
async def image(
    request: Request,
    services: ServicesDep,
    who: UserDep,
    image: Annotated[str | None, Query(description="a datastore image id")] = None,
    session_id: Annotated[str | None, Query(description="a session's id")] = None,
) -> Response:
    """A datastore image (``image``) or a session's image (``session_id``) as NIfTI: a NIfTI
    file as stored, any other format (a DICOM series, NRRD, MHA) converted with its exact
    geometry, so that the viewer's millimetres map to the voxel indices the models take."""
    if (image is None) == (session_id is None):
        raise RequestError("give either image (a datastore id) or session_id")
    scratch = Path(tempfile.mkdtemp(prefix="viewer-", dir=services.scratch))

    def nifti() -> Path:
        if session_id is not None:
            volume = services.sessions.volume(session_id)
        else:
            assert image is not None
            services.store.image(image)  # ImageNotFound for an unknown id
            stored = services.store.image_path(image)
            if stored.is_file() and suffix_of(stored) in _NIFTI:
                return stored
            volume = services.store.volume(image)
        target = scratch / "image.nii"
        save_volume(volume, target)
        return target

    try:
        path = await in_pool(request, services, nifti, pool=services.io)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if image is not None:
        await audit(request, services, "read", image_target(image))
    name = "image.nii.gz" if path.name.endswith(".gz") else "image.nii"
    return FileResponse(
        path,
        filename=name,
        media_type="application/octet-stream",
        background=BackgroundTask(shutil.rmtree, scratch, True),
    )


@router.get("/viewer/{name:path}", include_in_schema=False)
async def asset(request: Request, name: str) -> Response:
    """A file of the viewer (only those shipped: a name is a key, never a path)."""
    found = assets().get(name)
    if found is None:
        raise NotFoundError(f"the viewer has no file {name[:64]!r}")
    return found.response(request)


with_security(router, USER_SECURITY)
