"""Interactive annotation models: DeepGrow (clicks) and DExtr3D (extreme points), and polygons.

Training pieces are MONAI array/dictionary transform pairs (:mod:`~carina.interactive.transforms`,
:mod:`~carina.interactive.cropping`) and a click-simulation iteration
(:class:`~carina.interactive.simulation.ClickSimulation`); inference is
:class:`~carina.interactive.predict.InteractivePredictor`, scoring
:mod:`~carina.interactive.evaluate`.

The names below import on first use, so that the server can use :mod:`.polygons` without
loading torch and MONAI at start (archives name them as ``carina.interactive.SelectLabeld``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carina.interactive.cropping import (
        InteractionCrop,
        InteractionCropd,
        RandTruncate,
        RandTruncated,
    )
    from carina.interactive.mirror import RandMirrorComplete, RandMirrorCompleted
    from carina.interactive.simulation import ClickSimulation
    from carina.interactive.transforms import (
        AddGuidance,
        AddGuidanced,
        KeepStructured,
        SelectLabel,
        SelectLabeld,
        StructureSlice,
        StructureSliced,
    )

_WHERE = {
    "ClickSimulation": "simulation",
    "AddGuidance": "transforms",
    "AddGuidanced": "transforms",
    "InteractionCrop": "cropping",
    "InteractionCropd": "cropping",
    "KeepStructured": "transforms",
    "RandMirrorComplete": "mirror",
    "RandMirrorCompleted": "mirror",
    "RandTruncate": "cropping",
    "RandTruncated": "cropping",
    "SelectLabel": "transforms",
    "SelectLabeld": "transforms",
    "StructureSlice": "transforms",
    "StructureSliced": "transforms",
}

__all__ = [
    "AddGuidance",
    "AddGuidanced",
    "ClickSimulation",
    "InteractionCrop",
    "InteractionCropd",
    "KeepStructured",
    "RandMirrorComplete",
    "RandMirrorCompleted",
    "RandTruncate",
    "RandTruncated",
    "SelectLabel",
    "SelectLabeld",
    "StructureSlice",
    "StructureSliced",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"carina.interactive.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'carina.interactive' has no attribute {name!r}")
