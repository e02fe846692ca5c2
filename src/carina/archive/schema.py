"""Typed models of an archive's configs, validated at the edge.

Scalar settings (epochs, batch size, labels, ...) are pydantic models with unknown keys forbidden,
so a typo fails with the file and the key path. Components (network, loss, transforms, inferer)
stay in MONAI Bundle syntax and are instantiated by MONAI's ``ConfigParser``; the models below only
check that they are there and have the right shape.
"""

from __future__ import annotations

import difflib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from carina.errors import ConfigError
from carina.limits import JsonLimitError, loads_json

Component = dict[str, Any]


class ModelType(StrEnum):
    """The model types of the AIAA protocol."""

    SEGMENTATION = "segmentation"
    ANNOTATION = "annotation"
    DEEPGROW = "deepgrow"
    CLASSIFICATION = "classification"
    OTHERS = "others"
    PIPELINE = "pipeline"


class CacheMode(StrEnum):
    """How training caches the deterministic part of its pre-processing."""

    MEMORY = "memory"
    DISK = "disk"
    NONE = "none"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSettings(_Strict):
    """Where the training data is.

    Attributes:
        name: a shipped dataset (``carina data list``), or several to train on together,
            exported on first use when no datalist is given.
        datalist: an MSD ``dataset.json`` or Clara datalist, relative to the archive root.
        root: the folder the datalist's paths are relative to (default: the datalist's folder).
        train_key: the datalist key of the training cases.
        val_key: the datalist key of the validation (held-out) cases.
    """

    name: str | list[str] | None = None
    datalist: str | None = None
    root: str | None = None
    train_key: str = "training"
    val_key: str = "validation"


class TrainSettings(_Strict):
    """The scalar settings of ``config_train.json``; the components sit beside them."""

    task: ModelType = ModelType.SEGMENTATION
    epochs: int = Field(ge=1)
    iterations_per_epoch: int | None = Field(default=None, ge=1)
    val_interval: int = Field(default=1, ge=1)
    batch_size: int = Field(default=1, ge=1)
    learning_rate: float = Field(gt=0)
    seed: int = 0
    amp: bool = True
    cache: CacheMode = CacheMode.MEMORY
    num_workers: int = Field(default=0, ge=0)
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    network_def: Component
    loss: Component
    optimizer: Component
    lr_scheduler: Component | None = None
    train_preprocessing: list[Component]
    val_preprocessing: list[Component]
    train_postprocessing: list[Component] = Field(default_factory=list)
    val_inferer: Component
    val_postprocessing: list[Component] = Field(default_factory=list)
    per_structure: bool = False
    iteration_update: Component | None = None
    val_iteration_update: Component | None = None
    search: list[dict[str, Any]] = Field(default_factory=list)


class NnUNetSettings(_Strict):
    """``carina.json`` beside an nnU-Net v2 results folder: how Carina runs it (all optional).

    Attributes:
        folds: the folds to ensemble (``0``..``4`` or ``"all"``); None: every ``fold_*`` that has
            the checkpoint.
        checkpoint: the checkpoint file in each fold folder.
        mirroring: test-time mirroring along the axes the model was trained to allow (nnU-Net's
            default; up to 8 passes in 3D, so about 8 times the time).
        tile_step_size: sliding-window step as a fraction of the patch (nnU-Net's 0.5).
        description, version, license: shown on the model's card.
    """

    folds: list[int | Literal["all"]] | None = Field(default=None, min_length=1)
    checkpoint: str = Field(default="checkpoint_final.pth", pattern=r"^[A-Za-z0-9_.-]+\.pth$")
    mirroring: bool = True
    tile_step_size: float = Field(default=0.5, gt=0, le=1)
    description: str = ""
    version: str = "1"
    license: str = ""


#: A colour as ``[r, g, b]``, each 0-255.
RGB = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]


class ServingConfig(_Strict):
    """What a model is and how it is served: the one typed form of every serving description.

    Read from Carina's ``config_aiaa.json``, a Clara 3.x/4.x ``config_aiaa.json`` (translated
    first) or a MONAI Bundle's ``metadata.json`` + ``inference.json`` by
    :meth:`carina.archive.Archive.serving_config`; the registry, the APIs, the command line and the
    engine all use it. Settings a file leaves out get the defaults of the AIAA protocol (spec 5.3),
    so every reader sees the same values.

    Attributes:
        type: the model kind (``segmentation``, ``annotation`` for DExtr3D, ``deepgrow``, ...).
        labels: the structure of each label value: value n is ``labels[n - 1]``.
        dimensions: 2 or 3, the spatial dimensions the network works in.
        roi: the network's input size (interactive models).
        sigma: the Gaussian width of a click or extreme point, in ROI voxels.
        padding: DExtr3D's margin around the extreme points, in millimetres.
        margin: DeepGrow's margin around the clicks, in voxels.
        window: DeepGrow's window edge, in millimetres.
        grow_steps: how many times a 3D interactive model's window may grow when the mask
            reaches its border (DeepGrow 3D, DExtr3D; 0: never).
        max_window: the largest edge a grown window may reach, in millimetres (default: twice
            DeepGrow's ``window``; DExtr3D: 300).
        deepgrow: ``"2D"`` or ``"3D"`` for DeepGrow (and pipeline) models, else None.
        meta_data: extra information clients are shown with the model (Clara's ``meta_data`` or
            ``additional_info``).
        label_colors: the colour of some labels, by name, as ``[r, g, b]`` (0-255); viewers draw
            the others in Carina's palette.
        license: the terms the model may be used under, as its authors state them (a Bundle's
            ``metadata.json`` ``license`` or its ``LICENSE`` file); empty when not stated.
        modality: the imaging modality the model was trained on, as DICOM names it (``CT``,
            ``MR``, ``PT``, ...; ``MRI`` is read as ``MR``); an image of another one runs with a
            warning naming both. None: not declared.
        backend: what runs the network (``auto``, ``torch``, ``onnx``; see
            :mod:`carina.engine.backends`); None: the server's ``CARINA_INFERENCE_BACKEND``.
        preprocessing, inferer, postprocessing, network_def: the components, in Bundle syntax.
    """

    version: str = "1"
    type: str
    labels: list[str]
    description: str = ""
    preprocessing: list[Component] | Component | None = None
    inferer: Component | None = None
    postprocessing: list[Component] | Component | None = None
    network_def: Component | None = None
    model_file: str = "models/model.pt"
    dimensions: Literal[2, 3] | None = None
    roi: list[int] | None = Field(default=None, min_length=2, max_length=3)
    sigma: float | None = Field(default=None, gt=0)
    padding: float | None = Field(default=None, ge=0)
    margin: int | None = Field(default=None, ge=0)
    window: float | None = Field(default=None, gt=0)
    grow_steps: int = Field(default=2, ge=0, le=8)
    max_window: float | None = Field(default=None, gt=0)
    deepgrow: Literal["2D", "3D"] | None = None
    meta_data: dict[str, Any] = Field(default_factory=dict)
    label_colors: dict[str, RGB] = Field(default_factory=dict)
    license: str = ""
    backend: Literal["auto", "torch", "onnx"] | None = None
    modality: str | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> str:
        return str(value)

    @field_validator("type", mode="before")
    @classmethod
    def _type_name(cls, value: Any) -> str:
        name = str(value or "").strip().lower()
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"must name a model type ({', '.join(ModelType)}), not {value!r}")
        return name

    @field_validator("modality", mode="before")
    @classmethod
    def _modality_name(cls, value: Any) -> Any:
        return dicom_modality(value) if isinstance(value, str) else value

    @field_validator("deepgrow", mode="before")
    @classmethod
    def _deepgrow_upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _protocol_defaults(self) -> ServingConfig:
        if self.type == ModelType.ANNOTATION:
            self.padding = 20.0 if self.padding is None else self.padding
            self.roi = self.roi or [128, 128, 128]
            self.sigma = self.sigma or 3.0
            self.max_window = self.max_window or 300.0
        elif self.type == ModelType.DEEPGROW:
            self.sigma = self.sigma or 2.0
            self.window = self.window or 128.0
            self.margin = 8 if self.margin is None else self.margin
            self.max_window = self.max_window or 2 * self.window
        declared = self.deepgrow or self.meta_data.get("deepgrow")
        if self.type in (ModelType.DEEPGROW, ModelType.PIPELINE) or declared:
            self.deepgrow = _deepgrow_kind(declared, self.roi)
        self.dimensions = self.dimensions or _dimensions(self)
        return self


def _deepgrow_kind(declared: Any, roi: list[int] | None) -> Literal["2D", "3D"]:
    if isinstance(declared, str) and declared.upper() in ("2D", "3D"):
        return "2D" if declared.upper() == "2D" else "3D"
    return "2D" if roi is not None and len(roi) == 2 else "3D"


def _dimensions(config: ServingConfig) -> Literal[2, 3]:
    if config.deepgrow is not None:
        return 2 if config.deepgrow == "2D" else 3
    if config.roi is not None:
        return 2 if len(config.roi) == 2 else 3
    spatial = (config.network_def or {}).get("spatial_dims")
    return 2 if spatial == 2 else 3


class ValidationConfig(_Strict):
    """``config_validation.json``: which datalist key to score and the inferer to use."""

    split: str | None = None
    inferer: Component | None = None


ModelT = TypeVar("ModelT", bound=BaseModel)


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column.

    Raises:
        ConfigError: the file is missing or not valid JSON.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(path.name, "", "the file is missing") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path.name, "", "not valid JSON (not UTF-8 text)") from exc
    try:
        return loads_json(text, what="the file")
    except json.JSONDecodeError as exc:
        raise ConfigError(
            path.name, "", f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    except JsonLimitError as exc:
        raise ConfigError(path.name, "", str(exc).removeprefix("the file: ")) from exc


def validate(model: type[ModelT], data: Any, file: str) -> ModelT:
    """``model.model_validate(data)`` with the first error turned into a :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key shows up as "unknown" and as "missing": report the cause first.
        error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        location = [str(part) for part in error["loc"]]
        key = ".".join(location)
        if error["type"] == "extra_forbidden":
            known = _known_fields(model, location[:-1])
            guess = difflib.get_close_matches(location[-1], known, n=1)
            hint = (
                f" (did you mean {guess[0]!r}?)" if guess else f"; known keys: {', '.join(known)}"
            )
            raise ConfigError(file, key, f"unknown key{hint}") from exc
        if error["type"] == "missing":
            raise ConfigError(file, key, "required key is missing") from exc
        raise ConfigError(file, key, error["msg"]) from exc


def _known_fields(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for part in path:
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None or not hasattr(field.annotation, "model_fields"):
            return []
        current = field.annotation
    return sorted(current.model_fields)


def dicom_modality(name: str) -> str | None:
    """A modality as DICOM names it (``MR`` for ``MRI``, ``T1`` or ``FLAIR``), or None for a name
    that is no modality (empty, ``noNorm`` and other channel names)."""
    text = name.strip().upper()
    if text in ("MRI", "T1", "T2", "T1W", "T2W", "T1C", "T1CE", "FLAIR", "ADC", "DWI", "PD"):
        return "MR"
    return text if re.fullmatch(r"CT|MR|PT|US|CR|DX|MG|XA|NM|OCT|SM|OT", text) else None
