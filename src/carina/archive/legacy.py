"""Rewrites of component names and arguments that current MONAI removed (mmar.md section 8).

Applied to Bundle-syntax components (``{"_target_": ..., kwargs}``) before MONAI's ``ConfigParser``
sees them, whether they came from a Carina archive, a Clara MMAR (after translation) or a Bundle.
Every rewrite is returned as a note and logged as a warning.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from carina.archive.targets import locate_target

log = logging.getLogger(__name__)

#: Removed class (last dotted part) -> (replacement, arguments it implies).
_RENAMED: dict[str, tuple[str, dict[str, Any]]] = {
    "AddChannel": ("EnsureChannelFirst", {"channel_dim": "no_channel"}),
    "AddChanneld": ("EnsureChannelFirstd", {"channel_dim": "no_channel"}),
    "AsChannelFirst": ("EnsureChannelFirst", {}),
    "AsChannelFirstd": ("EnsureChannelFirstd", {}),
    "SplitChannel": ("SplitDim", {}),
    "SplitChanneld": ("SplitDimd", {}),
    "LoadNifti": ("LoadImage", {}),
    "LoadNiftid": ("LoadImaged", {}),
    "LoadPNG": ("LoadImage", {}),
    "LoadPNGd": ("LoadImaged", {}),
    "LoadNumpy": ("LoadImage", {}),
    "LoadNumpyd": ("LoadImaged", {}),
    "NiftiSaver": ("SaveImage", {}),
    "PNGSaver": ("SaveImage", {}),
    "TransformInverter": ("Invertd", {}),
}

#: Keyword arguments renamed across MONAI, applied when the target no longer takes the old name.
_RENAMED_ARGS = {"dimensions": "spatial_dims", "n_classes": "num_classes"}


def rewrite_legacy(config: Any, *, where: str = "") -> tuple[Any, list[str]]:
    """A copy of ``config`` with removed names and arguments rewritten, and the notes.

    Args:
        config: any JSON value; every dict with ``_target_`` inside it is checked.
        where: the key path of ``config`` inside its file, for the notes.
    """
    notes: list[str] = []
    return _walk(config, where, notes), notes


def _walk(value: Any, where: str, notes: list[str]) -> Any:
    if isinstance(value, list):
        return [
            _walk(item, f"{where}.{i}" if where else str(i), notes) for i, item in enumerate(value)
        ]
    if not isinstance(value, dict):
        return value
    out = {
        key: _walk(item, f"{where}.{key}" if where else key, notes) for key, item in value.items()
    }
    target = out.get("_target_")
    if isinstance(target, str):
        out = _rewrite_component(out, target, where, notes)
    return out


def _rewrite_component(
    component: dict[str, Any], target: str, where: str, notes: list[str]
) -> dict[str, Any]:
    prefix, _, name = target.rpartition(".")
    if name in _RENAMED:
        replacement, implied = _RENAMED[name]
        new_target = (
            replacement if not prefix.startswith("monai.") else f"monai.transforms.{replacement}"
        )
        component = {**component, "_target_": new_target}
        if name.startswith("AsChannelFirst"):
            component["channel_dim"] = component.pop("channel_dim", -1)
        elif name.startswith("SplitChannel"):
            component["dim"] = component.pop("channel_dim", 0)
        for key, default in implied.items():
            component.setdefault(key, default)
        _note(notes, where, f"{name} was removed from MONAI; using {replacement}")
    if name.startswith("AsDiscrete"):
        component = _rewrite_as_discrete(component, where, notes)
    return _rename_arguments(component, where, notes)


def _rewrite_as_discrete(component: dict[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    component = dict(component)
    if component.pop("threshold_values", False):
        component["threshold"] = component.pop("logit_thresh", 0.5)
        _note(notes, where, "AsDiscrete threshold_values/logit_thresh is now threshold")
    else:
        component.pop("logit_thresh", None)
    if component.get("to_onehot") is True:
        classes = component.pop("n_classes", component.pop("num_classes", None))
        component["to_onehot"] = classes
        _note(notes, where, "AsDiscrete to_onehot=true with n_classes is now to_onehot=N")
    return component


def _rename_arguments(component: dict[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    stale = [key for key in _RENAMED_ARGS if key in component]
    if not stale:
        return component
    parameters = _parameters(component["_target_"])
    if parameters is None:
        return component
    component = dict(component)
    for old in stale:
        new = _RENAMED_ARGS[old]
        if old not in parameters and new in parameters:
            component[new] = component.pop(old)
            _note(notes, where, f"argument {old!r} is now {new!r}")
    return component


def _parameters(target: str) -> set[str] | None:
    located = locate_target(target)
    if located is None:
        return None
    try:
        return set(inspect.signature(located).parameters)
    except (TypeError, ValueError):
        return None


def _note(notes: list[str], where: str, text: str) -> None:
    message = f"{where}: {text}" if where else text
    notes.append(message)
    log.warning("legacy config: %s", message)
