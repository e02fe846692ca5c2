"""The MONAI Label protocol over Carina's models, datastore and learning loop
(``specs/monailabel-api.md``): the ``/info/`` document, inference params as the Slicer and OHIF
plugins send them, the datastore listings, the next image, training tasks and labels as the
plugins upload them.

Everything here is blocking (file reads, label checks) and runs in a worker pool; nothing
switches on a model's type beyond its kind's ``monai_label_type`` and guidance.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from carina.datastore import (
    ORIGINAL,
    LocalDatastore,
)
from carina.errors import CarinaError
from carina.io import load_volume
from carina.kinds import Guidance
from carina.server.services.aiaa import ImageSource
from carina.server.services.inference import InferenceOutput, Upload, encode_result, known_suffix
from carina.server.services.mldatastore import adopted_names, checksum, listing, remap_by_name
from carina.server.services.registry import ModelInfo, ModelRegistry
from carina.server.services.sessions import SessionStore
from carina.server.services.training import train_stats, trainable

log = logging.getLogger("carina.server")

#: How many extreme points a DExtr3D model needs; fewer give an empty answer (see docs).
EXTREME_POINTS = 6
#: Options every model offers in ``/info/`` (a list is a choice; its first value the default).
RESULT_OPTIONS: dict[str, Any] = {
    "result_extension": [".nrrd", ".nii.gz", ".nii", ".mha"],
    "result_dtype": ["uint8", "uint16"],
    "result_compress": False,
}
#: What a DExtr3D model's clients are told about driving it with points.
DEXTR3D_HINT = (
    " Click the structure's 6 extreme points (left, right, front, back, top, bottom) as "
    "foreground points; the answer is empty until all 6 are given."
)


# -- /info/ ---------------------------------------------------------------------------------------


def app_info(
    registry: ModelRegistry, store: LocalDatastore, workspace: Path, *, version: str
) -> dict[str, Any]:
    """The ``/info/`` document: labels as an array, every servable model with its MONAI Label
    type, labels, dimension, description and options, the trainers, strategies, scoring
    methods, the last training figures and the datastore counts. Never a top-level ``config``
    (Slicer takes that for a server older than MONAI Label 0.2)."""
    from carina.learning import STRATEGIES

    store_labels = [name for _, name in sorted(store.label_names().items())]
    models = {info.name: model_entry(info, store_labels) for info in registry.models()}
    labels = list(
        dict.fromkeys([*store_labels, *(x for m in models.values() for x in m["labels"])])
    )
    trainers = {
        info.name: {
            "description": f"Train {info.name} on the datastore's final labels",
            "config": {},
        }
        for info in trainable(registry)
    }
    return {
        "name": "Carina",
        "description": "Carina annotation server (MONAI Label API)",
        "version": version,
        "labels": labels,
        "models": models,
        "trainers": trainers,
        "strategies": {name: {"description": text} for name, text in STRATEGIES.items()},
        "scoring": {"uncertainty": {"description": SCORING_DESCRIPTION}},
        "train_stats": {name: train_stats(workspace, name) for name in trainers},
        "datastore": listing(store, "stats"),
    }


SCORING_DESCRIPTION = (
    "Score the unlabelled images with the current segmentation model (uncertainty and vote "
    "entropy under flips), for the uncertainty and entropy strategies"
)


def model_entry(info: ModelInfo, store_labels: Sequence[str]) -> dict[str, Any]:
    """One model of ``/info/``: ``type``, ``labels`` (an interactive model without labels of its
    own segments whatever the annotator works on: the datastore's labels, else ``foreground``),
    ``dimension``, ``description`` and ``config``."""
    spec = info.spec
    interactive = info.kind.guidance != Guidance.NONE
    labels = list(spec.labels) or (list(store_labels) if interactive else []) or ["foreground"]
    description = spec.description or info.name
    if info.kind.guidance == Guidance.EXTREME_POINTS:
        description += DEXTR3D_HINT
    return {
        "type": info.kind.monai_label_type,
        "labels": labels,
        "dimension": dimension(info),
        "description": description,
        "version": spec.version,
        "config": dict(RESULT_OPTIONS),
        # Carina's own keys (the plugins ignore them): what guidance the model takes (the
        # viewer tells DeepGrow from DExtr3D by it) and a colour for each label.
        "guidance": str(info.kind.guidance),
        "label_colors": label_colors(labels, spec.label_colors),
    }


#: The colours of labels 1, 2, ... that an archive does not colour itself (distinct on grey).
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)


def label_colors(labels: Sequence[str], chosen: dict[str, list[int]]) -> dict[str, list[int]]:
    """``[r, g, b]`` for each label: the archive's choice, else the palette by position."""
    return {
        name: list(chosen.get(name) or PALETTE[position % len(PALETTE)])
        for position, name in enumerate(labels)
    }


def dimension(info: ModelInfo) -> int:
    """2 for a model that works slice by slice (2D DeepGrow), else 3."""
    spec = info.spec
    return 2 if spec.dimensions == 2 or spec.deepgrow == "2D" else 3


# -- inference ------------------------------------------------------------------------------------


def carina_params(info: ModelInfo, params: dict[str, Any]) -> dict[str, Any] | None:
    """The params of a MONAI Label inference call as Carina's kinds take them: a DExtr3D
    model's ``foreground`` points are its extreme points. None when the call cannot run yet
    (a DExtr3D model with fewer than 6 points): the answer is then an empty label. A DeepEdit
    model's clicks come under each label's name (what the plugins send): the named ``label``'s
    (else the first label's) are its foreground."""
    if info.kind.monai_label_type == "deepedit":
        named = params.get("label")
        label = named if isinstance(named, str) and named else next(iter(info.spec.labels), "")
        return {
            **params,
            "label": label,
            "foreground": params.get(label) or params.get("foreground"),
        }
    if info.kind.guidance != Guidance.EXTREME_POINTS or "points" in params:
        return params
    points = params.get("foreground") or []
    if not isinstance(points, list) or len(points) < EXTREME_POINTS:
        return None
    return {**params, "points": points}


def label_names(
    info: ModelInfo, params: dict[str, Any], store_labels: Sequence[str]
) -> dict[str, int]:
    """The answer's ``label_names`` (name -> voxel value): a segmentation model's labels; for an
    interactive model, the segment the client named (``label``) or its first label, as 1."""
    if info.kind.guidance == Guidance.NONE or info.kind.monai_label_type == "deepedit":
        return {name: n for n, name in enumerate(info.spec.labels, start=1)}
    named = params.get("label")
    if isinstance(named, str) and named:
        return {named: 1}
    return {model_entry(info, store_labels)["labels"][0]: 1}


def empty_result(
    source: ImageSource, sessions: SessionStore, params: dict[str, Any]
) -> InferenceOutput:
    """The answer of a point model that cannot run yet: an empty label on the image's grid."""
    image = source.read(sessions)
    empty = image.with_array(np.zeros(image.shape, dtype=np.uint8))
    data, name, seconds = encode_result(
        empty, params, input_suffix=source.suffix, folder=source.scratch
    )
    count = len(params.get("foreground") or [])
    note = f"DExtr3D needs {EXTREME_POINTS} extreme points as foreground points; {count} given"
    return InferenceOutput({"message": note}, data, name, {"write": seconds})


def keep_original(
    store: LocalDatastore,
    scratch: Path,
    image_id: str,
    data: bytes,
    name: str,
    model: str,
    names: dict[str, int],
) -> None:
    """Keep a segmentation model's answer on a datastore image as its ``original`` label, with
    the datastore's values (matched by name); skipped, with a log line, when the model's labels
    are not the datastore's or the image went away."""
    suffix = known_suffix(name) or ".nii.gz"
    path = scratch / f"original-{uuid.uuid4().hex}{suffix}"
    try:
        path.write_bytes(data)
        label_info = [{"name": label, "idx": value} for label, value in names.items()]
        names_now = adopted_names(store, label_info)
        volume = remap_by_name(image_id, load_volume(path), label_info, names_now)
        info = {"model": model, "params": {"label_names": names}}
        store.save_label(image_id, volume, tag=ORIGINAL, saved_by=f"model:{model}", info=info)
    except (CarinaError, OSError) as exc:
        log.info(
            "model output not kept as original", extra={"model": model, "reason": str(exc)[:200]}
        )
    finally:
        path.unlink(missing_ok=True)


def model_files(registry: ModelRegistry) -> dict[str, Any]:
    """``GET /model/``: each model's weights checksum and modification time."""
    found = {}
    for info in registry.models():
        path = weights_file(registry, info.name)
        found[info.name] = {
            "checksum": checksum(path),
            "timestamp": int(path.stat().st_mtime),
            "type": info.kind.monai_label_type,
        }
    return found


def weights_file(registry: ModelRegistry, name: str) -> Path:
    """The weights the server runs for model ``name`` (TorchScript when present).

    Raises:
        ModelNotFound: no such model.
    """
    info = registry.model(name)
    root = registry.folder / info.name
    scripted = root / "models" / "model.ts"
    return scripted if scripted.is_file() else root / info.spec.model_file


def prepare(
    registry: ModelRegistry, store: LocalDatastore, model: str, params: dict[str, Any]
) -> tuple[ModelInfo, dict[str, Any] | None, dict[str, int]]:
    """A MONAI Label inference call before its image is read: the model, the params as
    Carina's kinds take them (:func:`carina_params`) and the answer's ``label_names``.

    Raises:
        ModelNotFound: no such model.
    """
    info = registry.model(model)
    store_labels = [name for _, name in sorted(store.label_names().items())]
    return info, carina_params(info, params), label_names(info, params, store_labels)


def image_uploads(uploads: Sequence[Upload]) -> list[Upload]:
    """The file parts that hold the image: every part but the scribbles ``label``."""
    return [upload for upload in uploads if upload.field != "label"]
