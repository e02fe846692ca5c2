"""``Client``: the AIAA API of a Carina (or Clara AIAA) server, from Python, on httpx.

Uploads stream from disk; result files are written atomically; every failure is a
:class:`~carina.errors.ApiError` with the server's message. Nothing is retried: a
:class:`~carina.errors.ServerBusyError` says when to try again.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from carina import __version__
from carina.client.errors import ProtocolError, ServerUnreachableError, error_from_response
from carina.client.files import FilePart, file_part, image_parts, write_atomically
from carina.client.multipart import read_answer
from carina.errors import ModelNotFound, NotFoundError, SessionNotFound
from carina.schemas import ModelEntry, SessionCreated, SessionInfo

log = logging.getLogger(__name__)

#: A voxel index ``[i, j, k]`` (ITK order) of the uploaded or session image.
Point = Sequence[int]
#: Result formats the server writes (``result_extension``), chosen from the output's name.
_RESULT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".png")


class Endpoint(StrEnum):
    """The inference calls of the AIAA API (``POST /v1/<endpoint>?model=...``)."""

    SEGMENTATION = "segmentation"
    DEXTR3D = "dextr3d"
    DEEPGROW = "deepgrow"
    INFERENCE = "inference"


@dataclass(frozen=True)
class InferenceResult:
    """What an inference call gave.

    Attributes:
        params: the answer's params (``points``, ``bbox``, ``crop``, a class label, ...).
        output: the result file written, or None when none was asked for.
        server_timing: milliseconds per server stage (``read``, ``pre``, ``infer``, ``post``,
            ``write``), from the ``Server-Timing`` header; empty when the server sends none.
        seconds: the whole call as the client saw it (upload, queue, inference, download).
    """

    params: dict[str, Any]
    output: Path | None
    server_timing: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


class Client:
    """A connection to an annotation server; use it as a context manager, or call :meth:`close`.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:5000`` or ``https://host/aiaa`` behind a
            proxy's path prefix (``http://`` is assumed without a scheme).
        timeout: seconds to wait for a connection, for each read and for each write.
        admin_token: bearer token of the admin routes (``/admin/model/...``).
        api_token: bearer token for the other routes, for a server started with
            ``CARINA_API_TOKEN`` (off by default).
        verify: check the server's TLS certificate (``False`` for a self-signed one); a CA
            bundle's path, or an :class:`ssl.SSLContext`.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 60.0,
        admin_token: str | None = None,
        api_token: str | None = None,
        verify: bool | str | Path | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if "://" not in base_url:
            base_url = "http://" + base_url
        self.base_url = base_url.rstrip("/")
        self._admin_token = admin_token
        self._api_token = api_token
        if isinstance(verify, str | Path):
            verify = ssl.create_default_context(cafile=str(verify))
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            timeout=timeout,
            verify=verify,
            transport=transport,
            headers={"User-Agent": f"carina-client/{__version__}"},
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- models ----------------------------------------------------------------------------------

    def models(self, label: str | None = None, type: str | None = None) -> list[ModelEntry]:
        """The server's models, optionally those with a label or of a type (``segmentation``...)."""
        query = {k: v for k, v in (("label", label), ("type", type)) if v}
        answer = self._json(self._send("GET", "v1/models", params=query))
        if not isinstance(answer, list):
            raise ProtocolError("GET /v1/models: a JSON list expected")
        return [ModelEntry.model_validate(item) for item in answer]

    def model(self, name: str) -> ModelEntry:
        """One model's entry.

        Raises:
            ModelNotFound: no such model.
        """
        response = self._send("GET", "v1/models", params={"model": name}, not_found=ModelNotFound)
        return ModelEntry.model_validate(self._json(response))

    # -- inference -------------------------------------------------------------------------------

    def infer(
        self,
        endpoint: Endpoint | str,
        model: str,
        image: Path | None,
        params: Mapping[str, Any],
        *,
        output: Path | None = None,
        session_id: str | None = None,
    ) -> InferenceResult:
        """Run ``model`` through ``/v1/<endpoint>`` on an uploaded image or a session's.

        Args:
            endpoint: ``segmentation``, ``dextr3d``, ``deepgrow`` or ``inference`` (the server
                dispatches on the model's type; the endpoint matters to other servers).
            model: the model's name.
            image: the image file (or a DICOM series folder), or None with ``session_id``.
            params: the call's params; ``result_extension`` is added from ``output``'s suffix.
            output: where to write the result image; None asks for params only.
            session_id: run on this session's image (no upload).

        Raises:
            SessionExpired: ``session_id`` is unknown or expired (HTTP 440).
            ModelNotFound: no such model.
            ProtocolError: ``output`` was asked for and the server sent no result image.
            ApiError: any other failure; FileError: ``image`` cannot be read.
        """
        if image is None and session_id is None:
            raise ValueError("give an image, or the session_id of an uploaded one")
        endpoint = Endpoint(endpoint)
        query = {"model": model}
        if session_id:
            query["session_id"] = session_id
        sent = dict(params)
        if output is None:
            query["output"] = "json"
        elif "result_extension" not in sent and (suffix := _result_suffix(output)):
            sent["result_extension"] = suffix
        start = time.perf_counter()
        response = self._post_form(
            f"v1/{endpoint}",
            sent,
            image_parts(image) if image is not None and not session_id else [],
            query=query,
            not_found=ModelNotFound,
        )
        written = self._save_answer(response, output)
        return InferenceResult(
            params=written[0],
            output=written[1],
            server_timing=parse_server_timing(response.headers.get("server-timing", "")),
            seconds=time.perf_counter() - start,
        )

    def segment(
        self, model: str, image: Path | None, *, output: Path, session_id: str | None = None
    ) -> dict[str, Any]:
        """Automatic segmentation; writes the label map to ``output`` and returns the params
        (``points``: the mask's 6 extreme points; ``bbox``)."""
        return self.infer(
            Endpoint.SEGMENTATION, model, image, {}, output=output, session_id=session_id
        ).params

    def annotate(
        self,
        model: str,
        image: Path | None,
        points: Sequence[Point],
        *,
        output: Path,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """DExtr3D: segment the structure whose extreme points (at least 6) are given."""
        params = {"points": [_point(p) for p in points]}
        return self.infer(
            Endpoint.DEXTR3D, model, image, params, output=output, session_id=session_id
        ).params

    def deepgrow(
        self,
        model: str,
        image: Path | None,
        foreground: Sequence[Point],
        background: Sequence[Point] = (),
        *,
        output: Path,
        current_point: Point | None = None,
        spatial_size: Sequence[int] | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """DeepGrow from clicks; a 2D model works on the slice of ``current_point`` (default: the
        last foreground click). Returns the params (3D models add ``crop``)."""
        params: dict[str, Any] = {
            "foreground": [_point(p) for p in foreground],
            "background": [_point(p) for p in background],
        }
        if current_point is not None:
            params["current_point"] = _point(current_point)
        if spatial_size is not None:
            params["spatial_size"] = [int(s) for s in spatial_size]
        return self.infer(
            Endpoint.DEEPGROW, model, image, params, output=output, session_id=session_id
        ).params

    def inference(
        self,
        model: str,
        image: Path | None,
        params: Mapping[str, Any],
        *,
        output: Path | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """The generic call: any model with its own params; without ``output`` only the params
        come back (a classification)."""
        return self.infer(
            Endpoint.INFERENCE, model, image, params, output=output, session_id=session_id
        ).params

    # -- polygons --------------------------------------------------------------------------------

    def mask2polygon(self, mask: Path, more_points: int = 0) -> list[Any]:
        """Per-slice polygons of a binary mask: one list per slice ``k``, each a list of polygons
        of ``[j, i]`` vertices."""
        response = self._post_form(
            "v1/mask2polygon", {"more_points": int(more_points)}, image_parts(mask)
        )
        answer = self._json(response)
        if not isinstance(answer, list):
            raise ProtocolError("POST /v1/mask2polygon: a JSON list expected")
        return answer

    def fixpolygon(self, image: Path, params: Mapping[str, Any], *, output: Path) -> dict[str, Any]:
        """Move one polygon vertex (``poly``, ``vertex_offset``, ``polygon_index``,
        ``vertex_index``, ...); writes the new mask and returns ``{"poly": ...}``."""
        response = self._post_form("v1/fixpolygon", dict(params), image_parts(image))
        return self._save_answer(response, output)[0]

    # -- sessions --------------------------------------------------------------------------------

    def create_session(self, image: Path, expiry: int | None = None) -> SessionCreated:
        """Upload an image once for many calls; ``expiry``: idle seconds before the server forgets
        it (None: the server's default; it grants at most its maximum).

        Returns:
            ``session_id`` (for ``session_id=`` of the inference calls) and ``session_info``.
        """
        query = {"expiry": str(int(expiry))} if expiry is not None else {}
        response = self._send("PUT", "session/", params=query, files=image_parts(image))
        return SessionCreated.model_validate(self._json(response))

    def session(self, session_id: str, *, touch: bool = False) -> SessionInfo:
        """A session's info; ``touch`` also refreshes its last access.

        Raises:
            SessionNotFound: unknown or expired.
        """
        query = {"update_ts": "true"} if touch else {}
        response = self._send(
            "GET", _path("session", session_id), params=query, not_found=SessionNotFound
        )
        return SessionInfo.model_validate(self._json(response))

    def close_session(self, session_id: str) -> bool:
        """Delete a session; False when the server did not know it."""
        try:
            self._send("DELETE", _path("session", session_id), not_found=SessionNotFound)
        except NotFoundError:
            return False
        return True

    # -- admin -----------------------------------------------------------------------------------

    def install_model(self, name: str, archive_zip: Path) -> ModelEntry:
        """Install or replace model ``name`` from an archive zip (validated by the server first)."""
        response = self._send(
            "PUT", _path("admin/model", name), files=[file_part("data", archive_zip)], admin=True
        )
        return ModelEntry.model_validate(self._json(response))

    def install_model_files(
        self, name: str, config: Path, model_file: Path | None = None
    ) -> ModelEntry:
        """Install or replace model ``name`` from a ``config_aiaa.json`` and a model file
        (TorchScript ``model.ts`` or weights ``model.pt``; None for a pipeline)."""
        files = [file_part("config", config, "application/json")]
        if model_file is not None:
            files.append(file_part("data", model_file))
        response = self._send("PUT", _path("admin/model", name), files=files, admin=True)
        return ModelEntry.model_validate(self._json(response))

    def patch_model(self, name: str, config: Mapping[str, Any] | Path) -> ModelEntry:
        """Replace a model's ``config_aiaa.json`` (a dict, or a file), keeping its weights."""
        if isinstance(config, Path):
            body = config.read_bytes()
        else:
            body = json.dumps(dict(config)).encode()
        response = self._send(
            "PATCH",
            _path("admin/model", name),
            content=body,
            headers={"Content-Type": "application/json"},
            admin=True,
            not_found=ModelNotFound,
        )
        return ModelEntry.model_validate(self._json(response))

    def delete_model(self, name: str) -> ModelEntry:
        """Unload and remove a model; returns its last entry."""
        response = self._send(
            "DELETE", _path("admin/model", name), admin=True, not_found=ModelNotFound
        )
        return ModelEntry.model_validate(self._json(response))

    def model_config(self, name: str) -> dict[str, Any]:
        """A model's current ``config_aiaa.json``."""
        response = self._send(
            "GET", _path("admin/model", name), admin=True, not_found=ModelNotFound
        )
        answer = self._json(response)
        if not isinstance(answer, dict):
            raise ProtocolError("GET /admin/model: a JSON object expected")
        return answer

    # -- operations ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The readiness answer (``{"status": "ok", "models": N}``).

        Raises:
            ServerBusyError: the server is up but not ready (HTTP 503).
        """
        answer = self._json(self._send("GET", "health/ready"))
        if not isinstance(answer, dict):
            raise ProtocolError("GET /health/ready: a JSON object expected")
        return answer

    # -- transport -------------------------------------------------------------------------------

    def _post_form(
        self,
        path: str,
        params: Mapping[str, Any],
        parts: list[FilePart],
        *,
        query: Mapping[str, str] | None = None,
        not_found: type[NotFoundError] = NotFoundError,
    ) -> httpx.Response:
        """POST a multipart ``params`` part (JSON text, as every AIAA client sends it) + files."""
        files: list[tuple[str, Any]] = [("params", (None, json.dumps(params))), *parts]
        return self._send("POST", path, params=query, files=files, not_found=not_found)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        files: Sequence[tuple[str, Any]] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        admin: bool = False,
        not_found: type[NotFoundError] = NotFoundError,
    ) -> httpx.Response:
        """One request; a non-200 answer becomes its :class:`~carina.errors.ApiError`."""
        all_headers = dict(headers or {})
        token = self._admin_token if admin else self._api_token
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        url = f"{self.base_url}/{path}"
        try:
            response = self._http.request(
                method,
                path,
                params=params,
                files=list(files) if files else None,
                content=content,
                headers=all_headers,
            )
        except httpx.TimeoutException as exc:
            raise ServerUnreachableError(f"{method} {url}: no answer in time ({exc})") from exc
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ServerUnreachableError(f"{method} {url}: {reason}") from exc
        finally:
            for _, part in files or ():
                closer = getattr(part[1], "close", None) if isinstance(part, tuple) else None
                if callable(closer):
                    closer()
        log.debug("%s %s -> %d", method, path, response.status_code)
        if response.status_code != 200:
            raise error_from_response(response, not_found=not_found)
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            where = f"{response.request.method} {response.request.url.path}"
            raise ProtocolError(f"{where}: the answer is not JSON") from exc

    @staticmethod
    def _save_answer(
        response: httpx.Response, output: Path | None
    ) -> tuple[dict[str, Any], Path | None]:
        answer = read_answer(response.content, response.headers.get("content-type", ""))
        if output is None:
            return answer.params, None
        if answer.file is None:
            raise ProtocolError(
                f"{response.request.url.path}: the server answered no result image "
                f"(params {json.dumps(answer.params)[:200]})"
            )
        write_atomically(output, answer.file)
        return answer.params, Path(output)


def parse_server_timing(header: str) -> dict[str, float]:
    """``read;dur=3.6, infer;dur=930`` as ``{"read": 3.6, "infer": 930.0}`` (milliseconds)."""
    timings = {}
    for metric in header.split(","):
        name, *fields = (f.strip() for f in metric.split(";"))
        for item in fields:
            key, _, value = item.partition("=")
            if name and key.strip().lower() == "dur":
                try:
                    timings[name] = float(value.strip().strip('"'))
                except ValueError:
                    continue
    return timings


def _point(point: Point) -> list[int]:
    values = [int(v) for v in point]
    if len(values) not in (2, 3):
        raise ValueError(f"a point is [i, j, k] (or [i, j] in 2D), not {list(point)!r}")
    return values


def _path(prefix: str, name: str) -> str:
    return f"{prefix}/{quote(name, safe='')}"


def _result_suffix(output: Path) -> str | None:
    name = Path(output).name.lower()
    return next((s for s in _RESULT_SUFFIXES if name.endswith(s)), None)
