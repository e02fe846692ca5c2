"""Reading an archive's serving description, once, into the typed :class:`ServingConfig`.

Three forms are read: Carina's ``config/config_aiaa.json`` (or ``config_inference.json`` for batch
inference), a Clara 3.x/4.x ``config_aiaa.json`` (translated by :mod:`carina.archive.clara`), and a
MONAI Bundle's ``configs/metadata.json`` with ``configs/inference.json``. Reading needs neither
torch nor MONAI (Clara configs with removed MONAI names aside), so a server lists its models in
milliseconds; the components stay Bundle-syntax dicts, built later through
:class:`~carina.archive.archive.ResolvedConfig`.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from carina.archive.clara import translate_serving_config
from carina.archive.layout import ArchiveLayout
from carina.archive.schema import ModelType, ServingConfig, read_json
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
    )


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
