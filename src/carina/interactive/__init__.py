"""Interactive annotation models: DeepGrow (clicks) and DExtr3D (extreme points), and polygons.

Training pieces are MONAI transforms (:mod:`~carina.interactive.transforms`) and a click-simulation
iteration (:class:`~carina.interactive.simulation.ClickSimulation`); inference is
:class:`~carina.interactive.predict.InteractivePredictor`.
"""

from carina.interactive.simulation import ClickSimulation
from carina.interactive.transforms import (
    AddGuidanced,
    InteractionCropd,
    KeepStructured,
    RandTruncated,
    SelectLabeld,
    StructureSliced,
)

__all__ = [
    "AddGuidanced",
    "ClickSimulation",
    "InteractionCropd",
    "KeepStructured",
    "RandTruncated",
    "SelectLabeld",
    "StructureSliced",
]
