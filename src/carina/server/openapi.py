"""What the API description says: tag groups, request bodies, examples, and every answer a route
can give (status, content type, body schema, headers), so that ``/openapi.json`` tells the truth.

Routes take their ``responses=`` and ``openapi_extra=`` from here; :func:`finish_schema` then
drops what FastAPI adds on its own but Carina never sends (422: validation errors are 400 here)
and names the two bearer tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from carina.schemas import ErrorBody, ModelEntry, SessionCreated, SessionInfo

TAG_API = "API (v1)"
TAG_ADMIN_MODEL = "Admin (model)"
TAG_ADMIN_OTHERS = "Admin (others)"
TAG_MONAI_LABEL = "MONAI Label"
TAG_VIEWER = "Viewer"

TAGS = [
    {
        "name": TAG_API,
        "description": "What viewers call (3D Slicer, MITK, OHIF): models, segmentation, "
        "DExtr3D, DeepGrow, polygons and sessions. No credentials: the existing AIAA clients "
        "send none (unless the server is given an API token).",
    },
    {
        "name": TAG_ADMIN_MODEL,
        "description": "Install, replace, reconfigure and remove models. Every call needs "
        "`Authorization: Bearer <admin token>`.",
    },
    {
        "name": TAG_MONAI_LABEL,
        "description": "What MONAI Label's 3D Slicer plugin, OHIF v3 extension and Python "
        "client call: app info, inference on datastore images, the datastore, the next image, "
        "training and sign-in. With sign-in on, `Authorization: Bearer <token>` from "
        "`POST /auth/token`; roles user < annotator < reviewer < admin.",
    },
    {
        "name": TAG_VIEWER,
        "description": "What the browser viewer at `/viewer/` calls beyond the MONAI Label "
        "routes: an image as NIfTI. Same sign-in as the MONAI Label routes.",
    },
    {"name": TAG_ADMIN_OTHERS, "description": "Logs, health checks and metrics."},
]

DESCRIPTION = (
    "Carina's AI-assisted annotation server, compatible with the NVIDIA Clara AIAA clients. "
    "Points are integer voxel indices `[i, j, k]` of the uploaded image; results keep its grid. "
    "Inference answers are `multipart/form-data`: a `params` JSON part, then the label map as "
    "an `image` part (gzip NIfTI unless `result_extension` says otherwise); `output=image` "
    "answers the file alone (`application/octet-stream`), `output=json` the params alone. "
    'Every error is `{"error": {"message": [...], "type": ...}, "success": false}` '
    "(`ErrorBody`): 400 for any bad input, 401 without the token a route needs, "
    "404 for an unknown model, session or path, 405 (with `Allow`) for a method the path does "
    "not take, 413 for a body over the limit, 422 when a model fails on the image (the model, "
    "step and cause named), 440 for an expired session on an inference call, "
    "501 for a feature not enabled, 503 (with `Retry-After`) when the queue is full and 504 "
    "when an inference runs past the time limit. Every path answers with and without a "
    "trailing slash, never with a redirect."
)

#: Names of the security schemes (``components.securitySchemes``).
ADMIN_TOKEN = "adminToken"
API_TOKEN = "apiToken"
USER_TOKEN = "userToken"
SECURITY_SCHEMES = {
    USER_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "With sign-in on: a signed-in user's token from `POST /auth/token` (or "
        "the identity provider's, with OIDC), carrying the role the route needs.",
    },
    ADMIN_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin token (`CARINA_ADMIN_TOKEN`, or the one the server wrote "
        "to its workspace), needed by every admin route from every address.",
    },
    API_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "Only when the server is given `CARINA_API_TOKEN`: then every route but "
        "the health checks and the docs needs it.",
    },
}
#: ``openapi_extra`` of the routes that take the optional API token, and of the admin routes.
API_SECURITY: dict[str, Any] = {"security": [{}, {API_TOKEN: []}]}
ADMIN_SECURITY: dict[str, Any] = {"security": [{ADMIN_TOKEN: []}]}
#: ``openapi_extra`` of the MONAI Label routes: open, or a user's token, or the API token.
USER_SECURITY: dict[str, Any] = {"security": [{}, {USER_TOKEN: []}, {API_TOKEN: []}]}

MODELS_EXAMPLE = [
    {
        "name": "annotation_dextr3d",
        "type": "annotation",
        "labels": [],
        "description": "DExtr3D: any structure from its 6 extreme points",
        "version": "1",
        "padding": 10.0,
        "roi": [48, 48, 48],
        "sigma": 3.0,
    },
    {
        "name": "spine_ct_vertebrae",
        "type": "segmentation",
        "labels": ["L2", "L3", "L4"],
        "description": "Lumbar vertebrae L2-L4 in CT",
        "version": "1",
    },
]


def _form(properties: dict[str, Any], *, security: dict[str, Any]) -> dict[str, Any]:
    """An ``openapi_extra`` with a multipart request body of these fields."""
    schema = {"type": "object", "properties": properties}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}}, **security}


def _file(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


def _multipart(params_example: dict[str, Any]) -> dict[str, Any]:
    return _form(
        {
            "params": {
                "type": "string",
                "description": "JSON object (may be absent, empty or null)",
                "example": params_example,
            },
            "image": _file(
                "the image (any part name is accepted: image, datapoint, file, image0..N for a "
                "DICOM series); omit it with session_id"
            ),
        },
        security=API_SECURITY,
    )


INFERENCE_BODY = _multipart({"foreground": [[41, 71, 64]], "background": []})
POLYGON_BODY = _multipart({"more_points": 10})
SESSION_BODY = _form(
    {
        "image": _file("the image; several parts (image0..N) form a DICOM series"),
        "params": {"type": "string", "example": "{}"},
    },
    security=API_SECURITY,
)
ADMIN_BODY = _form(
    {
        "config": _file("config_aiaa.json (with data: the model file)"),
        "data": _file(
            "an archive zip alone, or the model file (model.ts TorchScript or model.pt "
            "weights) with config"
        ),
    },
    security=ADMIN_SECURITY,
)

SESSION_INFO_EXAMPLE = {
    "name": "5f2e344c-eb68-41f1-93be-02fc00000001",
    "image": "image.nii",
    "meta": {"shape": [512, 512, 120], "spacing": [0.7, 0.7, 2.5]},
    "create_ts": 1764360893,
    "last_access_ts": 1764360893,
    "expiry": 600,
}
CONFIG_EXAMPLE = {
    "version": "1",
    "type": "segmentation",
    "labels": ["L2", "L3", "L4"],
    "description": "Lumbar vertebrae L2-L4 in CT",
    "preprocessing": [{"_target_": "carina.engine.transforms.LoadVolumed", "keys": "image"}],
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [48, 40, 32]},
}
PATCH_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {"type": "object", "description": "the new config_aiaa.json"},
                "example": CONFIG_EXAMPLE,
            }
        }
    },
    **ADMIN_SECURITY,
}

# Answers. ``Responses`` is what a route decorator's ``responses=`` takes.
Responses = dict[int | str, dict[str, Any]]

_TEXT = {"type": "string"}
_ERRORS = {
    400: "A bad input: malformed params or body, a bad name or query value, an unreadable "
    "image, unusable points, an invalid archive.",
    401: "The server has an API token (`CARINA_API_TOKEN`) and the request did not carry it.",
    404: "No such model or session.",
    408: "The request body paused for longer than `CARINA_BODY_TIMEOUT` seconds.",
    413: "The request body is larger than `CARINA_MAX_UPLOAD_BYTES`.",
    429: "Too many requests from this address (`CARINA_RATE_LIMIT`): try again after "
    "`Retry-After` seconds.",
    403: "Sign-in is on and the user's roles do not allow this route (user < annotator < "
    "reviewer < admin).",
    409: "The id is taken by another image.",
    422: "The datastore refuses the label or image: unreadable, another grid than its image's, "
    "values or segment names it does not have, a bad id or tag.",
    440: "Session Expired: `session_id` names a session that is unknown or expired.",
    501: "A feature this server does not enable.",
    503: "The inference queue is full: try again after `Retry-After` seconds.",
    504: "The inference ran past `CARINA_INFERENCE_TIMEOUT`.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "whole seconds to wait before trying again",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
_ADMIN_401 = {
    "description": "No or a wrong admin token.",
    "headers": {"WWW-Authenticate": {"description": "`Bearer`", "required": True, "schema": _TEXT}},
}


def errors(*statuses: int, admin: bool = False, why: Mapping[int, str] | None = None) -> Responses:
    """``responses`` entries of error answers, each with the error body (``ErrorBody``).

    Args:
        statuses: the statuses the route can answer.
        admin: the route needs the admin token (its 401 says so, with ``WWW-Authenticate``).
        why: descriptions of some statuses for this route, instead of the usual ones.
    """
    found: Responses = {}
    for status in sorted(statuses):
        entry: dict[str, Any] = {"model": ErrorBody, "description": _ERRORS[status]}
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        if status == 401 and admin:
            entry.update(_ADMIN_401)
        if why and status in why:
            entry["description"] = why[status]
        found[status] = entry
    return found


#: Errors of every route but the health checks: the API token (or admin token), the rate limit.
ANY_ROUTE = (401, 429)
#: Errors of a route that reads a body, and of one that also runs in the worker pool.
_BODY = (*ANY_ROUTE, 400, 408, 413)
POOL = (*_BODY, 503, 504)


def json_ok(model: Any, example: object, description: str = "OK") -> Responses:
    """A 200 JSON answer whose body is ``model`` (a pydantic model or a JSON schema dict)."""
    content: dict[str, Any] = {"example": example}
    entry: dict[str, Any] = {"description": description, "content": {"application/json": content}}
    if isinstance(model, dict):
        content["schema"] = model
    else:
        entry["model"] = model
    return {200: entry}


SERVER_TIMING = {
    "Server-Timing": {
        "description": "time of each stage in ms: read, pre, infer, post, write",
        "required": True,
        "schema": _TEXT,
    }
}
MULTIPART_ANSWER = {
    "schema": {
        "type": "object",
        "required": ["params"],
        "properties": {
            "params": {"type": "object", "description": "the answer's params"},
            "image": {"type": "string", "format": "binary", "description": "the label map"},
        },
    },
    "encoding": {
        "params": {"contentType": "application/json"},
        "image": {"contentType": "application/octet-stream"},
    },
}
BINARY = {"schema": {"type": "string", "format": "binary"}}

_MODEL_422 = (
    "The model failed on this image (`ModelRunError`): the message names the model, the step of "
    "its pipeline and the cause, e.g. a two-channel model given a one-channel image."
)

INFERENCE_RESPONSES: Responses = {
    200: {
        "description": "By default `multipart/form-data`: `params` (JSON) then the label map "
        "`image`; with `output=image` the file alone, with `output=json` the params alone.",
        "headers": SERVER_TIMING,
        "content": {
            "multipart/form-data": MULTIPART_ANSWER,
            "application/octet-stream": BINARY,
            "application/json": {
                "schema": {"type": "object"},
                "example": {"points": [[30, 20, 10]], "bbox": [[10, 5, 3], [40, 30, 20]]},
            },
        },
    },
    **errors(*POOL, 404, 422, 440, why={404: "No such model.", 422: _MODEL_422}),
}
MODELS_RESPONSES: Responses = {
    **json_ok(
        list[ModelEntry] | ModelEntry,
        MODELS_EXAMPLE,
        "Every model, or with `model=NAME` that model's entry alone.",
    ),
    **errors(*ANY_ROUTE, 400, 404, why={404: "`model=` names no installed model."}),
}
MASK2POLYGON_RESPONSES: Responses = {
    **json_ok(
        {"type": "array", "items": {"type": "array"}},
        [[[[10, 12], [11, 14], [13, 12]]], []],
        "One entry per slice k: a list of polygons of [j, i] vertices.",
    ),
    **errors(*POOL),
}
FIXPOLYGON_RESPONSES: Responses = {
    200: {
        "description": '`multipart/form-data`: `{"poly": ...}` (JSON) then the mask `image`.',
        "content": {"multipart/form-data": MULTIPART_ANSWER},
    },
    **errors(*POOL),
}
SESSION_CREATED: Responses = {
    **json_ok(
        SessionCreated,
        {"session_id": SESSION_INFO_EXAMPLE["name"], "session_info": SESSION_INFO_EXAMPLE},
    ),
    **errors(*POOL, 501, why={501: "Pulling a series from a DICOM server is not enabled."}),
}
_SESSION_404 = "No such session (never created, expired, deleted, or a malformed id)."
SESSION_INFO: Responses = {
    **json_ok(SessionInfo, SESSION_INFO_EXAMPLE),
    **errors(*ANY_ROUTE, 400, 404, why={400: "A bad `update_ts`.", 404: _SESSION_404}),
}
SESSION_DELETED: Responses = {
    **json_ok(SessionInfo, SESSION_INFO_EXAMPLE, "The deleted session's last info."),
    **errors(*ANY_ROUTE, 404, why={404: _SESSION_404}),
}
_MODEL_404 = "No such model."
MODEL_CONFIG: Responses = {
    **json_ok({"type": "object"}, CONFIG_EXAMPLE, "The model's `config_aiaa.json`."),
    **errors(*ANY_ROUTE, 400, 404, admin=True, why={404: _MODEL_404}),
}
MODEL_INSTALLED: Responses = {
    **json_ok(ModelEntry, MODELS_EXAMPLE[1], "The model's new entry."),
    **errors(*POOL, 501, admin=True, why={501: "Downloading models from NGC is not enabled."}),
}
MODEL_PATCHED: Responses = {
    **json_ok(ModelEntry, MODELS_EXAMPLE[1], "The model's new entry."),
    **errors(*POOL, 404, admin=True, why={404: _MODEL_404}),
}
MODEL_DELETED: Responses = {
    **json_ok(ModelEntry, MODELS_EXAMPLE[1], "The removed model's last entry."),
    **errors(*ANY_ROUTE, 400, 404, admin=True, why={404: _MODEL_404}),
}
LOGS_RESPONSES: Responses = {
    200: {
        "description": "The last lines of this replica's log (JSON lines).",
        "content": {"text/plain": {"schema": _TEXT}},
    },
    **errors(*ANY_ROUTE, 400, admin=True),
}
_STATUS_OK = {"type": "object", "required": ["status"], "properties": {"status": _TEXT}}
LIVE_RESPONSES: Responses = json_ok(_STATUS_OK, {"status": "ok"}, "The process answers.")
READY_RESPONSES: Responses = {
    **json_ok(
        {
            "type": "object",
            "required": ["status", "models"],
            "properties": {
                "status": _TEXT,
                "models": {"type": "integer"},
                "broken": {"type": "object", "additionalProperties": _TEXT},
            },
        },
        {"status": "ok", "models": 4},
        "Ready; `broken` names installed archives that cannot be served, and why.",
    ),
    503: {
        "model": ErrorBody,
        "description": "Not ready: the workspace or the model index cannot be used.",
    },
}
METRICS_RESPONSES: Responses = {
    200: {
        "description": "Prometheus text exposition format (version 1.0.0).",
        "content": {"text/plain": {"schema": _TEXT}},
    },
    **errors(*ANY_ROUTE),
}


# -- MONAI Label --------------------------------------------------------------------------------


def with_security(router: APIRouter, security: dict[str, Any]) -> None:
    """Declare ``security`` on every route of ``router`` that declares none itself."""
    for route in router.routes:
        if isinstance(route, APIRoute) and "security" not in (route.openapi_extra or {}):
            route.openapi_extra = {**(route.openapi_extra or {}), **security}


def finish_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Make FastAPI's schema say what the server sends, in place; running it again changes
    nothing. FastAPI's 422 answers (and their schemas) go: Carina answers a validation error
    with 400 and the error body (a 422 is only a label the datastore refuses). The bearer
    token schemes are named."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                answers = operation["responses"]
                if "HTTPValidationError" in str(answers.get("422", "")):
                    answers.pop("422")
                operation["responses"] = dict(sorted(answers.items()))
    components = schema.setdefault("components", {})
    found = components.get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        found.pop(name, None)
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    return schema


def install_schema(app: FastAPI) -> None:
    """Have ``app.openapi()`` (and so ``/openapi.json``) return the finished schema."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        return finish_schema(build())

    app.openapi = openapi  # type: ignore[method-assign]
