"""The AIAA protocol over Carina's model kinds: model entries, typed requests from the params the
clients send, and the params of each answer (spec sections 4 and 5.3).

Nothing here switches on a model's type: what a request carries and what its answer reports
follow the kind's :class:`~carina.kinds.Guidance`, so a new kind is served without a change here.
Everything is blocking and runs in the worker pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carina.engine.failures import model_failures
from carina.errors import NotSupportedError, RequestError
from carina.io import ImageFormat, Volume, load_volume
from carina.io.checks import check_volume
from carina.kinds import Guidance, InferenceRequest, InferenceResult, check_request
from carina.schemas import ModelEntry, SessionInfo
from carina.server.services.inference import (
    InferenceOutput,
    Upload,
    choose_inputs,
    encode_result,
    known_suffix,
    read_uploads,
    result_format,
)
from carina.server.services.params import as_int, as_point, as_points, as_size
from carina.server.services.registry import ModelInfo, ModelRegistry
from carina.server.services.sessions import SessionStore
from carina.settings import DEFAULT_MAX_WORK_BYTES

log = logging.getLogger(__name__)

#: How an uploaded image is named in messages (never by the client's file name).
_SHOWN_NAME = "the uploaded image"


def model_entry(info: ModelInfo) -> ModelEntry:
    """The ``/v1/models`` entry of a model (spec 5.3): its serving config's name, type, labels,
    description and version; ``padding``, ``roi`` and ``sigma`` for DExtr3D models, ``deepgrow``
    for DeepGrow models; its card's ``license``, ``source`` (zoo, bundle, nnunet, upload,
    archive) and ``format``; then the config's ``meta_data`` (which never overrides those)."""
    spec = info.spec
    entry: dict[str, Any] = {
        "name": info.name,
        "type": spec.type,
        "labels": spec.labels,
        "description": spec.description,
        "version": spec.version,
    }
    if info.kind.guidance == Guidance.EXTREME_POINTS:
        entry.update(padding=spec.padding, roi=spec.roi, sigma=spec.sigma)
    if spec.deepgrow is not None:
        entry["deepgrow"] = spec.deepgrow
    if info.card is not None:
        card = info.card
        entry.update(license=card.license, source=card.source.value, format=card.format)
    for key, value in spec.meta_data.items():
        entry.setdefault(key, value)
    return ModelEntry.model_validate(entry)


def list_models(
    registry: ModelRegistry, *, label: str | None = None, type: str | None = None
) -> list[ModelEntry]:
    """Every servable model's entry, sorted by name: ``type`` keeps models of that type,
    ``label`` models with that label (case-insensitive; a substring when no label is equal)."""
    entries = [model_entry(info) for info in registry.models()]
    if type:
        entries = [e for e in entries if e.type.lower() == type.lower()]
    if label:
        wanted = label.lower()
        exact = [e for e in entries if wanted in (x.lower() for x in e.labels)]
        entries = exact or [e for e in entries if any(wanted in x.lower() for x in e.labels)]
    return entries


def deleted_entry(name: str, info: ModelInfo | None) -> ModelEntry:
    """The answer of a delete: the model's last entry (a bare one for a broken archive)."""
    return model_entry(info) if info is not None else ModelEntry(name=name, type="others")


def request_fields(guidance: Guidance, params: dict[str, Any]) -> dict[str, Any]:
    """The typed guidance of an inference call, as :class:`InferenceRequest` fields: the params
    the model's guidance uses, checked (spec 2.6: points as JSON text or lists,
    ``current_point`` as ``[i, j, k]`` or ``[[i, j, k]]``). A ``spatial_size`` is checked
    whatever the model, so that a bad one is refused before any work.

    Raises:
        RequestError: a param of the wrong shape or out of range, naming it.
    """
    size = as_size(params.get("spatial_size"), "spatial_size")
    if guidance == Guidance.EXTREME_POINTS:
        points = as_points(params.get("points", params.get("extreme_points")), "points")
        return {"extreme_points": _tuples(points)}
    if guidance == Guidance.CLICKS:
        current = as_point(params.get("current_point"), "current_point")
        return {
            "foreground": _tuples(as_points(params.get("foreground"), "foreground")),
            "background": _tuples(as_points(params.get("background"), "background")),
            "current_point": tuple(current) if current is not None else None,
            "spatial_size": tuple(size) if size is not None else None,
            "label": label if isinstance(label := params.get("label"), str) and label else None,
        }
    return {}


def answer_params(
    info: ModelInfo, request: InferenceRequest, result: InferenceResult
) -> dict[str, Any]:
    """The ``params`` part of an answer: the guidance a model used, echoed (DeepGrow adds the
    window it looked at, for 3D models); for a model that takes none, the 6 extreme ``points``
    and the ``bbox`` (inclusive corners) of its mask, which DExtr3D clients start from."""
    guidance = info.kind.guidance
    if guidance == Guidance.EXTREME_POINTS:
        return {"points": _lists(request.extreme_points)}
    if guidance == Guidance.CLICKS:
        out: dict[str, Any] = {
            "foreground": _lists(request.foreground),
            "background": _lists(request.background),
        }
        if result.crop is not None and info.spec.dimensions == 3:
            out["crop"] = result.crop
        return out
    from carina.interactive.guidance import bounding_box, extreme_points

    mask = np.asarray(result.label.array)
    points = _lists(extreme_points(mask))
    box = bounding_box(mask)
    bbox = [list(box[0]), [v - 1 for v in box[1]]] if box is not None else []
    return {"points": points, "extreme_points": points, "bbox": bbox}


@dataclass(frozen=True)
class ImageSource:
    """Where a call's image comes from: a session, the uploaded file parts, or a stored file.

    Attributes:
        session_id: the session's id (its image is used; uploads are ignored).
        uploads: the request's file parts, on local disk.
        scratch: this request's folder for decoded copies.
        max_bytes: the largest decoded image accepted.
        max_work_bytes: the working memory the call may ask for.
        stored: an image file (or DICOM series folder) on the server, such as a datastore
            image, used when there is no session and no upload.
    """

    session_id: str | None
    uploads: Sequence[Upload]
    scratch: Path
    max_bytes: int
    max_work_bytes: int = DEFAULT_MAX_WORK_BYTES
    stored: Path | None = None

    @property
    def suffix(self) -> str:
        """The uploaded image's format suffix (``""`` for a session or an unknown format)."""
        if self.session_id:
            return ""
        chosen = choose_inputs(self.uploads)
        if chosen:
            return known_suffix(chosen[0].filename)
        return known_suffix(self.stored.name) if self.stored is not None else ""

    def read(self, sessions: SessionStore) -> Volume:
        """The image (the session's, else the upload's), checked: something a model can take.

        Raises:
            SessionExpired: the session is unknown or expired.
            RequestError, ImageReadError: no image, or an unreadable or unusable one.
        """
        if self.session_id:
            return check_volume(sessions.volume(self.session_id), source="the session's image")
        if self.stored is not None and not self.uploads:
            volume = load_volume(self.stored, max_bytes=self.max_bytes)
            return check_volume(volume, source="the datastore image")
        return self.read_upload()

    def dicom_headers(self, sessions: SessionStore) -> list[Any]:
        """The DICOM datasets of the call's image (headers; empty when it is not DICOM): what a
        DICOM SEG result references.

        Raises:
            SessionExpired, ImageReadError: as :meth:`read`.
        """
        from carina.io.dicom import read_headers

        if self.session_id:
            return sessions.dicom_headers(self.session_id)
        chosen = choose_inputs(self.uploads)
        paths = [upload.path for upload in chosen] or ([self.stored] if self.stored else [])
        return [ds for path in paths for ds in read_headers(path, max_bytes=self.max_bytes)]

    def read_upload(self) -> Volume:
        """The uploaded image, checked (see :func:`carina.io.checks.check_volume`).

        Raises:
            RequestError, ImageReadError: no image, or an unreadable or unusable one.
        """
        volume = read_uploads(self.uploads, self.scratch, max_bytes=self.max_bytes)
        return check_volume(volume, source=_SHOWN_NAME)


@dataclass(frozen=True)
class PreparedInference:
    """An inference call checked before any work: its model and its typed guidance."""

    info: ModelInfo
    fields: dict[str, Any]
    params: dict[str, Any]


def prepare_inference(
    registry: ModelRegistry, *, model: str, source: ImageSource, params: dict[str, Any]
) -> PreparedInference:
    """Everything about a call that can be refused without reading its image: the model, an
    image to read, the guidance params and the result format.

    Raises:
        ModelNotFound, RequestError: as named.
    """
    info = registry.model(model)
    if not source.session_id and not source.uploads and source.stored is None:
        raise RequestError("no image: upload one as a file part, or give a session_id")
    fields = request_fields(info.kind.guidance, params)
    result_format(params, input_suffix=source.suffix)
    return PreparedInference(info, fields, params)


def read_image(source: ImageSource, sessions: SessionStore) -> tuple[Volume, float]:
    """The call's image, checked, and the seconds reading it took.

    Raises:
        SessionExpired, RequestError, ImageReadError: as named.
    """
    start = time.perf_counter()
    image = source.read(sessions)
    return image, time.perf_counter() - start


def infer(
    registry: ModelRegistry,
    prepared: PreparedInference,
    image: Volume,
    *,
    source: ImageSource,
    read_seconds: float = 0.0,
    sessions: SessionStore | None = None,
) -> InferenceOutput:
    """Run the model's runner on the typed request; encode the label map in the format asked
    (``result_extension``, ``result_dtype``; ``.dcm``: a DICOM SEG of the request's DICOM image,
    its session's when ``sessions`` holds it).

    Raises:
        ModelNotFound, GuidanceError, ImageReadError: the model went away, or cannot use this
            image or guidance.
        ModelRunError: a step of the model's pipeline failed on this image.
    """
    request = InferenceRequest(image, **prepared.fields, max_work_bytes=source.max_work_bytes)
    check_request(request, prepared.info.spec)
    with model_failures(prepared.info.name):
        result = registry.runner(prepared.info.name).run(request)
    params = prepared.params
    data, name, write = encode_result(
        result.label,
        params,
        input_suffix=source.suffix,
        folder=source.scratch,
        labels=_result_labels(prepared.info, request),
        dicom=lambda: source.dicom_headers(sessions) if sessions is not None else [],
    )
    timings = {**result.timings, "read": read_seconds, "write": write}
    answer = answer_params(prepared.info, request, result)
    if result.warnings:  # clients show or ignore it; the log keeps it for the operator
        answer["warnings"] = result.warnings
        log.warning(
            "inference warning", extra={"model": prepared.info.name, "warnings": result.warnings}
        )
    return InferenceOutput(answer, data, name, timings)


def run_inference(
    registry: ModelRegistry,
    sessions: SessionStore,
    *,
    model: str,
    source: ImageSource,
    params: dict[str, Any],
) -> InferenceOutput:
    """One AIAA inference call in one go: :func:`prepare_inference`, :func:`read_image`,
    :func:`infer` (a server runs the steps in different pools).

    Raises:
        ModelNotFound, SessionExpired, RequestError, GuidanceError, ImageReadError: as named.
    """
    prepared = prepare_inference(registry, model=model, source=source, params=params)
    image, seconds = read_image(source, sessions)
    return infer(registry, prepared, image, source=source, read_seconds=seconds, sessions=sessions)


def _result_labels(info: ModelInfo, request: InferenceRequest) -> list[str]:
    """The names of a result's values: a segmentation model's labels; for an interactive one,
    the label the client named, else the model's first label, else ``structure``."""
    if info.kind.guidance == Guidance.NONE:
        return list(info.spec.labels)
    named = getattr(request, "label", None)
    return [named or next(iter(info.spec.labels), "") or "structure"]


def create_session(
    sessions: SessionStore,
    source: ImageSource,
    params: dict[str, Any],
    *,
    expiry: str | None,
    save_as: str | None,
) -> SessionInfo:
    """A new session holding the uploaded image (spec 4.9).

    Raises:
        NotSupportedError: the client asked to pull a series from a DICOM server.
        RequestError, ImageReadError: no image, an unreadable one, or a bad ``expiry``.
    """
    if "dicom" in params:
        raise NotSupportedError(
            "pulling a series from a DICOM server is not enabled; upload the image instead"
        )
    if not source.uploads:
        raise RequestError("no image: upload the session's image as a file part")
    lifetime = as_int(expiry, "expiry") if expiry not in (None, "") else None
    volume = source.read(sessions)
    dicom = source.dicom_headers(sessions) if volume.meta.format == ImageFormat.DICOM else []
    return sessions.create(volume, expiry=lifetime, save_as=save_as, dicom=dicom)


def _tuples(points: list[list[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(point) for point in points)


def _lists(points: Sequence[Sequence[int]]) -> list[list[int]]:
    return [[int(v) for v in point] for point in points]
