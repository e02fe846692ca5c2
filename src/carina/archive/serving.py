"""Reading an archive's serving description, once, into the typed :class:`ServingConfig`.

Four forms are read: Carina's ``config/config_aiaa.json`` (or ``config_inference.json`` for batch
inference), a Clara 3.x/4.x ``config_aiaa.json`` (translated by :mod:`carina.archive.clara`), a
MONAI Bundle's ``configs/metadata.json`` with ``configs/inference.json``, and an nnU-Net v2 results
folder's ``dataset.json`` (with Carina's optional ``carina.json``). Reading needs neither
torch nor MONAI (Clara configs with removed MONAI names aside), so a server lists its models in
milliseconds; the components stay Bundle-syntax dicts, built later through
:class:`~carina.archive.archive.ResolvedConfig`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

from carina.archive.clara import translate_serving_config
from carina.archive.layout import ArchiveLayout
from carina.archive.schema import (
    ModelType,
    NnUNetSettings,
    ServingConfig,
    dicom_modality,
    read_json,
    validate,
)
from carina.errors import ConfigError


def serving_content(
    layout: ArchiveLayout, variables: dict[str, Any], *, batch: bool = False
) -> tuple[str, dict[str, Any]]:
    """The serving config file's name and its content in Carina's form (Clara translated).

    ``batch`` prefers ``config_inference.json`` when the archive has one.

    Raises:
        ConfigError: the file is missing, not JSON, or not an object.
    """
    path = layout.inference_config
    if not (batch and path.is_file()):
        path = layout.serving_config
    raw = json_object(read_json(path), path.name)
    return path.name, translate_serving_config(raw, variables, file=path.name)


def bundle_serving_config(layout: ArchiveLayout) -> ServingConfig:
    """The typed serving config of a MONAI Bundle, from its ``metadata.json``.

    Raises:
        ConfigError: ``metadata.json`` is missing or malformed.
    """
    metadata = json_object(read_json(layout.bundle_metadata), layout.bundle_metadata.name)
    missing = bundle_requirements(metadata)
    if missing:
        raise ConfigError(
            layout.bundle_metadata.name,
            "optional_packages_version" if "not installed" in missing[0] else "monai_version",
            f"the bundle needs {'; '.join(missing)}",
        )
    return ServingConfig(
        version=str(metadata.get("version", "1")),
        type=_bundle_type(layout),
        labels=bundle_labels(metadata),
        description=str(metadata.get("description", "")),
        license=bundle_license(layout, metadata),
        modality=_bundle_modality(metadata),
    )


def _bundle_modality(metadata: dict[str, Any]) -> str | None:
    """The modality a Bundle's ``network_data_format.inputs.image`` declares, if any."""
    inputs = (metadata.get("network_data_format") or {}).get("inputs") or {}
    image = inputs.get("image") if isinstance(inputs, dict) else None
    declared = image.get("modality") if isinstance(image, dict) else None
    return dicom_modality(declared) if isinstance(declared, str) else None


#: Transforms by which a Bundle's pre-processing takes DeepEdit clicks.
_DEEPEDIT = ("AddGuidanceFromPointsDeepEditd", "AddGuidanceSignalDeepEditd")


def _bundle_type(layout: ArchiveLayout) -> str:
    """``deepedit`` for a Bundle whose pre-processing takes DeepEdit clicks, else
    ``segmentation`` (reads ``inference.json`` when there is one; it is small)."""
    path = layout.bundle_inference
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return ModelType.SEGMENTATION
    return "deepedit" if any(name in text for name in _DEEPEDIT) else ModelType.SEGMENTATION


#: Where a Bundle keeps its licence text (the Model Zoo's bundles have ``LICENSE``).
_LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "docs/LICENSE", "docs/LICENSE.txt")


def bundle_license(layout: ArchiveLayout, metadata: dict[str, Any]) -> str:
    """A Bundle's licence: ``metadata.json``'s ``license``, else the first line of its licence
    file, else its ``copyright``; empty when none says."""
    stated = str(metadata.get("license") or "").strip()
    for name in () if stated else _LICENSE_FILES:
        path = layout.root / name
        if path.is_file():
            with path.open(encoding="utf-8", errors="replace") as text:
                stated = next((line.strip() for line in text if line.strip()), "")
            break
    return (stated or str(metadata.get("copyright") or "").strip())[:200]


def bundle_requirements(metadata: dict[str, Any]) -> list[str]:
    """What a Bundle's ``metadata.json`` asks for that this installation lacks: each package of
    ``optional_packages_version`` that is not installed, then a MONAI of another major version."""
    missing = []
    for name, wanted in (metadata.get("optional_packages_version") or {}).items():
        try:
            importlib.metadata.version(str(name))
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{name} {wanted} (not installed)")
    wanted_monai = str(metadata.get("monai_version") or "")
    try:
        installed = importlib.metadata.version("monai")
    except importlib.metadata.PackageNotFoundError:
        installed = ""
    if wanted_monai and installed and wanted_monai.split(".")[0] != installed.split(".")[0]:
        missing.append(f"MONAI {wanted_monai} (this installation has MONAI {installed})")
    return missing


def bundle_labels(metadata: dict[str, Any]) -> list[str]:
    """The label names of a Bundle's first output (``channel_def``), background left out.

    Raises:
        ConfigError: a channel that is not a number.
    """
    outputs = (metadata.get("network_data_format") or {}).get("outputs") or {}
    first: dict[str, Any] = next(iter(outputs.values()), {}) or {}
    channels: dict[str, Any] = first.get("channel_def") or {}
    try:
        ordered = sorted((int(value), str(name)) for value, name in channels.items())
    except ValueError as exc:
        raise ConfigError(
            "metadata.json", "network_data_format.outputs.channel_def", "keys must be numbers"
        ) from exc
    return [name for value, name in ordered if value > 0]


def json_object(value: Any, file: str) -> dict[str, Any]:
    """``value`` if it is a JSON object.

    Raises:
        ConfigError: it is not.
    """
    if not isinstance(value, dict):
        raise ConfigError(file, "", "must be a JSON object")
    return value


def nnunet_serving_config(layout: ArchiveLayout) -> ServingConfig:
    """The typed serving config of an nnU-Net v2 results folder: labels from ``dataset.json``,
    the folds and checkpoint of ``carina.json`` (all present), one input channel.

    Raises:
        ConfigError: ``nnunetv2`` is not installed, ``plans.json`` is missing, region-based or
            multi-channel models, a fold without its checkpoint, naming the file and key.
    """
    file = layout.nnunet_dataset.name
    if importlib.util.find_spec("nnunetv2") is None:
        raise ConfigError(
            file, "", "serving an nnU-Net folder needs the package nnunetv2, which is not "
            "installed (pip install 'carina[nnunet]')"
        )  # fmt: skip
    dataset = json_object(read_json(layout.nnunet_dataset), file)
    if not layout.nnunet_plans.is_file():
        raise ConfigError(
            layout.nnunet_plans.name, "", "missing: an nnU-Net results folder holds dataset.json, "
            "plans.json and fold_N/checkpoint_final.pth, as nnUNetv2_train writes them"
        )  # fmt: skip
    plans = json_object(read_json(layout.nnunet_plans), layout.nnunet_plans.name)
    settings = validate(
        NnUNetSettings,
        read_json(layout.nnunet_settings) if layout.nnunet_settings.is_file() else {},
        layout.nnunet_settings.name,
    )
    folds = [str(f) for f in settings.folds] if settings.folds else layout.nnunet_folds()
    for fold in folds:
        if not (layout.root / f"fold_{fold}" / settings.checkpoint).is_file():
            raise ConfigError(
                layout.nnunet_settings.name,
                "folds",
                f"fold_{fold}/{settings.checkpoint} is missing",
            )
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    if not isinstance(channels, dict) or len(channels) != 1:
        raise ConfigError(
            file, "channel_names", f"the model takes {len(channels)} images per case "
            f"({', '.join(map(str, dict(channels).values()))}); Carina serves models of one image"
        )  # fmt: skip
    labels = nnunet_labels(dataset, file)
    trained = layout.root.name.split("__")  # Trainer__Plans__configuration, when not renamed
    where = f" ({trained[-1]})" if len(trained) == 3 else ""
    mirroring = "with" if settings.mirroring else "without"
    described = f"nnU-Net v2 {plans.get('dataset_name', '')}{where}, folds {', '.join(folds)}"
    return ServingConfig(
        version=settings.version,
        type=ModelType.SEGMENTATION,
        labels=labels,
        description=settings.description or f"{described}, {mirroring} test-time mirroring",
        license=settings.license or str(dataset.get("licence") or dataset.get("license") or ""),
        model_file=f"fold_{folds[0]}/{settings.checkpoint}",
        modality=dicom_modality(str(next(iter(channels.values())))),
    )


def nnunet_labels(dataset: dict[str, Any], file: str) -> list[str]:
    """The label names of an nnU-Net ``dataset.json`` in value order, background left out.

    Raises:
        ConfigError: a region-based label (a list of values), a value that is not a whole
            number, or values with gaps.
    """
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(file, "labels", "must map each label name to its value")
    values = {}
    for name, value in labels.items():
        if isinstance(value, list | tuple):
            raise ConfigError(
                file, f"labels.{name}", "region-based models (labels as lists) are not served"
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(file, f"labels.{name}", f"{value!r} is not a label value")
        values[value] = str(name)
    if sorted(values) != list(range(len(values))):
        raise ConfigError(file, "labels", f"values must be 0..{len(values) - 1} without gaps")
    return [values[v] for v in sorted(values) if v > 0]
