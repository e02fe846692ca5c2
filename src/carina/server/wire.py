"""The AIAA wire format: multipart answers (spec 2.4 R1-R7), JSON answers, the error body, and
reading the multipart requests every client sends (spec 2.3)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request, Response
from starlette.datastructures import UploadFile

from carina.errors import RequestError
from carina.server.services.inference import Upload, basename
from carina.server.services.params import parse_params

#: Parser limits far above Starlette's defaults: a DICOM series is hundreds of files, a 3D
#: fixpolygon ``params`` part many megabytes (spec 2.3 rule 6).
_MAX_PARTS = 100_000
_MAX_PART_SIZE = 256 * 1024**2
#: The longest error message sent.
MAX_MESSAGE = 1000


def json_response(
    value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON answer with Content-Length (never chunked)."""
    body = json.dumps(value).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_response(
    status: int, message: str, kind: str, *, headers: Mapping[str, str] | None = None
) -> Response:
    """The Clara 4.x error body: ``{"error": {"message": [...], "type": ...}, "success": false}``

    A message is cut at :data:`MAX_MESSAGE` characters: whatever of the request it quotes is
    echoed in part only.
    """
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    body = {"error": {"message": [message], "type": kind}, "success": False}
    return json_response(body, status=status, headers=headers)


def multipart_response(
    params: dict[str, Any],
    image: bytes | None,
    image_name: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``params`` (application/json) then, if any, one ``image`` part (octet-stream).

    The boundary is 32 hex digits, unquoted; no preamble; the whole body is built in memory and
    sent with Content-Length, never chunked or compressed (R1-R7).
    """
    boundary = uuid.uuid4().hex
    parts = [
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="params"\r\n'
        "Content-Type: application/json\r\n\r\n".encode()
        + json.dumps(params, separators=(",", ":")).encode()
        + b"\r\n"
    ]
    if image is not None:
        parts.append(
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="image"; filename="{image_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + image
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return Response(
        b"".join(parts),
        media_type=f"multipart/form-data; boundary={boundary}",
        headers=headers,
    )


def file_response(data: bytes, name: str, *, headers: Mapping[str, str] | None = None) -> Response:
    """``output=image``: only the result file (what OHIF and XNAT read)."""
    all_headers = {"Content-Disposition": f'attachment; filename="{name}"', **(headers or {})}
    return Response(data, media_type="application/octet-stream", headers=all_headers)


async def read_form(request: Request, scratch: Path) -> tuple[dict[str, Any], list[Upload]]:
    """``params`` and the file parts of a request; files are written under ``scratch``.

    A request without a multipart body (Python and C++ clients send none with a session)
    gives ``{}`` and no files; a JSON body is taken as the params.

    Raises:
        RequestError: an unreadable multipart body or params.
    """
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("application/json"):
        return parse_params(await request.body()), []
    if not content_type.startswith(("multipart/", "application/x-www-form-urlencoded")):
        body = await request.body()
        if body.strip():
            raise RequestError(
                "the body must be multipart/form-data with a 'params' part and the image file"
            )
        return {}, []
    try:
        form = await request.form(
            max_files=_MAX_PARTS, max_fields=_MAX_PARTS, max_part_size=_MAX_PART_SIZE
        )
    except RequestError:
        raise
    except Exception as exc:  # Starlette's MultiPartException, or a broken stream
        raise RequestError(f"the multipart body cannot be read: {exc}") from exc
    params: dict[str, Any] = {}
    uploads: list[Upload] = []
    try:
        for n, (field, value) in enumerate(form.multi_items()):
            if isinstance(value, UploadFile):
                target = scratch / f"part{n:05d}"
                await anyio.to_thread.run_sync(_save, value, target)
                uploads.append(Upload(field, basename(value.filename or ""), target))
            elif field == "params":
                params = parse_params(value)
            elif field not in params:
                params[field] = value
    finally:
        await form.close()
    return params, uploads


def _save(upload: UploadFile, target: Path) -> None:
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1024 * 1024)


def server_timing(timings: Mapping[str, float]) -> str:
    """``read;dur=1.2, pre;dur=...`` in milliseconds (the ``Server-Timing`` header)."""
    order = ["read", "pre", "infer", "post", "write"]
    names = order + [k for k in timings if k not in order]
    return ", ".join(f"{k};dur={timings[k] * 1000:.1f}" for k in names if k in timings)
