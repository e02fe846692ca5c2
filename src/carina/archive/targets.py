"""Finding the class or function a component's ``_target_`` names, as MONAI's ConfigParser does."""

from __future__ import annotations

import importlib
from typing import Any


def target_module(target: str) -> str | None:
    """The module that defines ``target`` (a dotted path, or a short name MONAI resolves)."""
    if "." in target:
        return target.rpartition(".")[0]
    from monai.bundle.config_item import ComponentLocator

    module_name = ComponentLocator().get_component_module_name(target)
    if isinstance(module_name, list):
        module_name = module_name[0] if module_name else None
    return module_name or None


def locate_target(target: str) -> Any:
    """The object ``target`` names, or None when it cannot be imported or lies outside MONAI and
    the allowed components (an uploaded config's target is never imported to look at it)."""
    from carina.archive.components import allowed_targets

    module_name = target_module(target)
    if module_name is None or "__main__" in module_name:
        return None
    if target not in allowed_targets() and not module_name.startswith("monai."):
        return None
    try:
        return getattr(importlib.import_module(module_name), target.rpartition(".")[2], None)
    except ImportError:
        return None
