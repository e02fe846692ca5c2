"""The OpenAPI answers of the MONAI Label routes (and the viewer's), beside those of the AIAA
routes in :mod:`carina.server.openapi`."""

from __future__ import annotations

from typing import Any

from carina.server.openapi import (
    ANY_ROUTE,
    BINARY,
    MULTIPART_ANSWER,
    POOL,
    SERVER_TIMING,
    Responses,
    errors,
    json_ok,
)

_ML_401 = "Sign-in is on and the request has no valid token (or the server's API token is missing)."
_ML_404 = "No such image, label, model, strategy, trainer or scoring method."
_OBJECT = {"type": "object"}
#: What a MONAI Label route that reads a body and touches the datastore can answer.
ML_BODY = (400, 403, 404, 408, 413, 422, 503, 504)
ML_FILE_ANSWER = {
    "description": "The file, with its name in `Content-Disposition`.",
    "content": {"application/octet-stream": BINARY},
}


def ml_responses(ok: Responses, *statuses: int) -> Responses:
    """The answers of a MONAI Label route: ``ok`` and the error ``statuses`` (plus 401, 429)."""
    why = {401: _ML_401, 404: _ML_404}
    return {**ok, **errors(*ANY_ROUTE, *statuses, why=why)}


def ml_json(example: object, description: str = "OK", schema: Any = None) -> Responses:
    """A 200 JSON answer of a MONAI Label route."""
    return json_ok(schema or _OBJECT, example, description)


_ML_MODEL_EXAMPLE = {"type": "segmentation", "labels": ["L2", "L3"], "dimension": 3}
ML_INFO_EXAMPLE: dict[str, Any] = {
    "name": "Carina",
    "labels": ["L2", "L3"],
    "models": {"spine_ct_vertebrae": {**_ML_MODEL_EXAMPLE, "description": "L2-L3", "config": {}}},
    "trainers": {"spine_ct_vertebrae": {"description": "Train on final labels", "config": {}}},
    "strategies": {"random": {"description": "a random unlabelled image"}},
    "datastore": {"total": 3, "completed": 1, "label_tags": {"final": 1}},
}
ML_TASK_EXAMPLE = {
    "id": "20261203T101500000000Z",
    "status": "RUNNING",
    "start_ts": "2026-12-03 10:15:00",
    "details": [],
}
_ML_422 = (
    "The datastore refuses the `label` part, or the model failed on this image "
    "(`ModelRunError`: the model, the failing step and the cause)."
)
ML_INFER_RESPONSES: Responses = {
    200: {
        "description": "By default `multipart/form-data`: `params` (JSON: `label_names`, "
        "`latencies`) then the label map as a file part; `output=image`: the file alone; "
        "`output=json`: the params alone.",
        "headers": SERVER_TIMING,
        "content": {
            "multipart/form-data": MULTIPART_ANSWER,
            "application/octet-stream": BINARY,
            "application/json": {"schema": _OBJECT, "example": {"label_names": {"L2": 1}}},
        },
    },
    **errors(*POOL, 403, 404, 422, 440, why={401: _ML_401, 404: _ML_404, 422: _ML_422}),
}
ML_FILE_RESPONSES: Responses = ml_responses({200: ML_FILE_ANSWER}, 400, 403, 404, 422, 503, 504)
ML_TASK_RESPONSES: Responses = ml_responses(ml_json(ML_TASK_EXAMPLE), 400, 403, 404)

ML_ADD_RESPONSES: Responses = ml_responses(
    ml_json({"image": "case"}), 400, 403, 408, 409, 413, 422, 503, 504
)
ML_DELETE_RESPONSES: Responses = ml_responses(ml_json({}), 400, 403, 404, 422, 503, 504)
ML_LABEL_INFO_RESPONSES: Responses = ml_responses(
    ml_json({"user": "ann", "ts": 0, "version": "..."}), 400, 403, 404, 422, 503, 504
)
ML_APPROVE_RESPONSES: Responses = ml_responses(
    ml_json({"user": "ann", "ts": 0, "version": "..."}),
    *ML_BODY,
)
