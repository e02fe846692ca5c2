"""Interactive annotation models: DeepGrow (clicks) and DExtr3D (extreme points), and polygons.

Training pieces are MONAI transforms (:mod:`~carina.interactive.transforms`) and a click-simulation
iteration (:class:`~carina.interactive.simulation.ClickSimulation`); inference is
:class:`~carina.interactive.predict.InteractivePredictor`.

The names below import on first use, so that the server can use :mod:`.polygons` without
loading torch and MONAI at start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carina.interactive.simulation import ClickSimulation
    from carina.interactive.transforms import (
        AddGuidanced,
        InteractionCropd,
        KeepStructured,
        RandTruncated,
        SelectLabeld,
        StructureSliced,
    )

_WHERE = {
    "ClickSimulation": "simulation",
    "AddGuidanced": "transforms",
    "InteractionCropd": "transforms",
    "KeepStructured": "transforms",
    "RandTruncated": "transforms",
    "SelectLabeld": "transforms",
    "StructureSliced": "transforms",
}

__all__ = [
    "AddGuidanced",
    "ClickSimulation",
    "InteractionCropd",
    "KeepStructured",
    "RandTruncated",
    "SelectLabeld",
    "StructureSliced",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"carina.interactive.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'carina.interactive' has no attribute {name!r}")
