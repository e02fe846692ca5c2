"""What the API documentation page shows: tag groups, request bodies and examples."""

from __future__ import annotations

from typing import Any

TAG_API = "API (v1)"
TAG_ADMIN_MODEL = "Admin (model)"
TAG_ADMIN_OTHERS = "Admin (others)"

TAGS = [
    {
        "name": TAG_API,
        "description": "What viewers call (3D Slicer, MITK, OHIF): models, segmentation, "
        "DExtr3D, DeepGrow, polygons and sessions. No credentials: the existing AIAA clients "
        "send none.",
    },
    {
        "name": TAG_ADMIN_MODEL,
        "description": "Install, replace, reconfigure and remove models. Every call needs "
        "`Authorization: Bearer <admin token>`.",
    },
    {"name": TAG_ADMIN_OTHERS, "description": "Logs, health checks and metrics."},
]

DESCRIPTION = (
    "Carina's AI-assisted annotation server, compatible with the NVIDIA Clara AIAA clients. "
    "Points are integer voxel indices `[i, j, k]` of the uploaded image; results keep its grid. "
    "Inference answers are `multipart/form-data`: a `params` JSON part, then the label map as "
    "an `image` part (gzip NIfTI unless `result_extension` says otherwise). Every error is "
    '`{"error": {"message": [...], "type": ...}, "success": false}`; 440 means the session '
    "expired."
)

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


def _form(properties: dict[str, Any]) -> dict[str, Any]:
    """An ``openapi_extra`` with a multipart request body of these fields."""
    schema = {"type": "object", "properties": properties}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}}}


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
        }
    )


INFERENCE_BODY = _multipart({"foreground": [[41, 71, 64]], "background": []})
POLYGON_BODY = _multipart({"more_points": 10})
SESSION_BODY = _form(
    {
        "image": _file("the image; several parts (image0..N) form a DICOM series"),
        "params": {"type": "string", "example": "{}"},
    }
)
ADMIN_BODY = _form(
    {
        "config": _file("config_aiaa.json (with data: the model file)"),
        "data": _file(
            "an archive zip alone, or the model file (model.ts TorchScript or model.pt "
            "weights) with config"
        ),
    }
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


def json_example(example: object, description: str = "OK") -> dict[int | str, dict[str, object]]:
    """A ``responses`` entry: a 200 JSON answer with an example."""
    return {
        200: {"description": description, "content": {"application/json": {"example": example}}}
    }


SESSION_CREATED = json_example(
    {"session_id": SESSION_INFO_EXAMPLE["name"], "session_info": SESSION_INFO_EXAMPLE}
)
SESSION_INFO = json_example(SESSION_INFO_EXAMPLE)
MODEL_ENTRY = json_example(MODELS_EXAMPLE[1])
MODEL_CONFIG = json_example(CONFIG_EXAMPLE)
