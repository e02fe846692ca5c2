"""Whether an image fits a model: its dimensions (an error) and its modality (a warning)."""

from __future__ import annotations

import numpy as np

from carina.archive import ModelType, ServingConfig
from carina.errors import ArchiveError, ImageReadError
from carina.io import Volume

#: Hounsfield units below which a voxel is air: a CT in HU holds many, an MR none.
_AIR_HU = -500.0


def check_dimensions(image: Volume, dimensions: int, where: str = "image") -> None:
    """That a model of ``dimensions`` spatial axes can take ``image``: a greyscale image with at
    least that many (a 2D model also takes the slices of a 3D image).

    Raises:
        ImageReadError: naming both (``3D greyscale images``, ``a 2D image of 64x64 voxels``).
    """
    if image.spatial_ndim < dimensions or image.array.ndim != image.spatial_ndim:
        shape = "x".join(str(n) for n in image.array.shape)
        greyscale = image.array.ndim == image.spatial_ndim
        kind = f"a {image.spatial_ndim}D image" if greyscale else "an image"
        raise ImageReadError(
            where,
            f"this model works on {dimensions}D greyscale images, not on {kind} of {shape} voxels",
        )


def modality_warning(image: Volume, declared: str | None, where: str = "image") -> str | None:
    """A warning when ``image`` is not of the modality a model ``declared`` (None: fine). The
    image's modality is its DICOM Modality when it has one; else a CT model is told of an image
    with no voxel of air in Hounsfield units (an MR, or a CT not in HU), and an MR model of one
    where a tenth of the voxels are (a CT)."""
    if declared is None:
        return None
    found = image.meta.modality.upper() if image.meta.modality else None
    if found is not None:
        if found == declared:
            return None
        return f"{where} is {found} but this model was trained on {declared}: check the result"
    if declared not in ("CT", "MR") or image.array.size == 0:
        return None
    air = float(np.count_nonzero(image.array < _AIR_HU)) / image.array.size
    if declared == "CT" and air == 0.0:
        return (
            f"{where} has no voxel below {_AIR_HU:.0f} HU (no air), so it looks like an MR or a "
            "CT not in Hounsfield units, but this model was trained on CT: check the result"
        )
    if declared == "MR" and air > 0.1:
        return (
            f"{where} has {air:.0%} of its voxels below {_AIR_HU:.0f}, as a CT in Hounsfield "
            "units, but this model was trained on MR: check the result"
        )
    return None


#: The kinds that segment only from a person's points, and what those points are.
_GUIDED = {
    ModelType.DEEPGROW: (
        "DeepGrow",
        "the structure under a person's clicks (a viewer's DeepGrow tool, carina client deepgrow, "
        "AIAA /v1/deepgrow or MONAI Label /infer with foreground points)",
    ),
    ModelType.ANNOTATION: (
        "DExtr3D",
        "a structure from its 6 extreme points (a viewer's annotation tool, carina client "
        "annotate, AIAA /v1/dextr3d)",
    ),
}


def not_automatic(spec: ServingConfig, name: str) -> None:
    """That a model segments on its own (what ``carina infer`` and ``validate`` ask).

    Raises:
        ArchiveError: an interactive model, naming what it needs and where to use it.
    """
    if spec.type in _GUIDED:
        kind, what = _GUIDED[ModelType(spec.type)]
        raise ArchiveError(
            f"{name} is a {kind} model: it segments {what}, not an image on its own; "
            "automatic segmentation needs a segmentation model"
        )
