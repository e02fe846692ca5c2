"""The :class:`Volume`: a voxel array with its exact geometry.

Conventions, stated once:

* ``array`` is indexed ``[i, j, k]`` in the order of the file's voxel axes as nibabel reports them
  (NIfTI order). For DICOM and ITK files this is the transpose of SimpleITK's ``[k, j, i]`` array:
  ``i`` runs along a DICOM row (the fastest axis), ``j`` down the columns, ``k`` across slices.
  Axes after the spatial ones (time, channels, colour components) follow them.
* ``affine`` maps ``(i, j, k, 1)`` to **RAS+** world millimetres, like NIfTI. DICOM and ITK use
  LPS+; readers and writers convert at the edge by negating the first two rows, which is exact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

#: Negates x and y: turns an LPS affine into a RAS one and back (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class ImageFormat(StrEnum):
    """The file formats Carina reads."""

    NIFTI = "nifti"
    NRRD = "nrrd"
    METAIMAGE = "metaimage"
    DICOM = "dicom"
    PNG = "png"
    JPEG = "jpeg"


@dataclass(frozen=True)
class ItkGeometry:
    """Origin, spacing and direction exactly as an ITK file (NRRD, MetaImage) stored them, in LPS.

    ``nrrd_lines`` keeps an NRRD source's ``space``, ``space directions`` and ``space origin``
    header lines verbatim: NRRD stores direction times spacing, which does not survive a split into
    spacing and direction to the last bit.
    """

    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]
    nrrd_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeMeta:
    """What a reader learned about an image besides its voxels and geometry.

    Attributes:
        format: the format the image was read from.
        modality: DICOM modality (``CT``, ``MR``, ...) when known.
        series_uid: DICOM SeriesInstanceUID when known.
        nifti_header: the source NIfTI header bytes; writing NIfTI with an unchanged affine reuses
            its geometry fields, so a label map is geometry-identical to the image it came from.
        itk_geometry: the same for NRRD and MetaImage sources.
        geometry_known: False when the source carried no position or orientation (identity used).
    """

    format: ImageFormat | None = None
    modality: str | None = None
    series_uid: str | None = None
    nifti_header: bytes | None = field(default=None, repr=False)
    itk_geometry: ItkGeometry | None = None
    geometry_known: bool = True


@dataclass(frozen=True, eq=False)
class Volume:
    """A voxel array, its RAS affine and what was known about its source.

    Attributes:
        array: voxels indexed ``[i, j, k, ...]`` (see the module docstring).
        affine: 4x4 matrix from voxel indices to RAS+ millimetres.
        spatial_ndim: 2 for a planar image (PNG, a 2D NIfTI), else 3.
        meta: format, modality, series UID and the source geometry.
    """

    array: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    spatial_ndim: int = 3
    meta: VolumeMeta = field(default_factory=VolumeMeta)

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
        if self.spatial_ndim not in (2, 3) or self.array.ndim < self.spatial_ndim:
            raise ValueError(
                f"array of shape {self.array.shape} has fewer than {self.spatial_ndim} spatial axes"
            )
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial shape (2 or 3 sizes)."""
        return tuple(int(n) for n in self.array.shape[: self.spatial_ndim])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along ``i``, ``j`` and ``k``."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def origin(self) -> tuple[float, float, float]:
        """RAS position of voxel ``[0, 0, 0]`` in millimetres."""
        return (float(self.affine[0, 3]), float(self.affine[1, 3]), float(self.affine[2, 3]))

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """3x3 matrix whose columns are the RAS unit directions of ``i``, ``j`` and ``k``."""
        direction: npt.NDArray[np.float64] = self.affine[:3, :3] / np.asarray(self.spacing)
        return direction

    @property
    def axis_codes(self) -> tuple[str, str, str]:
        """The anatomical direction each spatial axis points to, as nibabel's ``aff2axcodes``."""
        from nibabel.orientations import aff2axcodes

        codes = aff2axcodes(self.affine)
        return (str(codes[0]), str(codes[1]), str(codes[2]))

    def with_array(self, array: npt.NDArray[Any]) -> Volume:
        """A volume on the same grid (affine, metadata) holding another array, e.g. a label map."""
        if tuple(array.shape[: self.spatial_ndim]) != self.shape:
            raise ValueError(f"array shape {array.shape} does not fit the grid {self.shape}")
        return dataclasses.replace(self, array=array)

    def crop(self, axis: int, start: int, stop: int) -> Volume:
        """The voxels ``start:stop`` along one spatial axis, with the affine moved to match."""
        if not 0 <= axis < self.spatial_ndim:
            raise ValueError(f"axis {axis} is not a spatial axis")
        index = [slice(None)] * self.array.ndim
        index[axis] = slice(start, stop)
        shift = np.eye(4)
        shift[axis, 3] = start
        return dataclasses.replace(
            self,
            array=self.array[tuple(index)],
            affine=self.affine @ shift,
            meta=dataclasses.replace(self.meta, nifti_header=None, itk_geometry=None),
        )


def affine_from_itk(geometry: ItkGeometry) -> npt.NDArray[np.float64]:
    """The RAS affine of an ITK image's LPS origin, spacing and direction (2D or 3D)."""
    ndim = len(geometry.spacing)
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(ndim, ndim)
    lps = np.eye(4)
    lps[:ndim, :ndim] = direction * np.asarray(geometry.spacing, dtype=np.float64)
    lps[:ndim, 3] = geometry.origin
    return LPS_TO_RAS @ lps


def itk_from_affine(affine: npt.NDArray[np.float64], ndim: int) -> ItkGeometry:
    """The LPS origin, spacing and direction of a RAS affine, for an ITK image of ``ndim`` axes."""
    lps = (LPS_TO_RAS @ affine)[:ndim]
    spacing = np.linalg.norm(lps[:, :ndim], axis=0)
    direction = lps[:, :ndim] / spacing
    return ItkGeometry(
        origin=tuple(float(v) for v in lps[:, 3]),
        spacing=tuple(float(v) for v in spacing),
        direction=tuple(float(v) for v in direction.ravel()),
    )
