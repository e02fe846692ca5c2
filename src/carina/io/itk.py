"""NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) through SimpleITK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from carina.errors import ImageReadError
from carina.io.volume import (
    ImageFormat,
    ItkGeometry,
    Volume,
    VolumeMeta,
    affine_from_itk,
    itk_from_affine,
)


def read_itk(path: Path, image_format: ImageFormat, *, max_bytes: int) -> Volume:
    """Read an NRRD or MetaImage file; the header is checked before any voxel is decoded.

    Raises:
        ImageReadError: unreadable header or data, unsupported dimension, or voxels over
            ``max_bytes``.
    """
    import SimpleITK as sitk

    if not path.is_file() or path.stat().st_size == 0:
        raise ImageReadError(path, "the file is empty" if path.is_file() else "no such file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("NrrdImageIO" if image_format == ImageFormat.NRRD else "MetaImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageReadError(
            path, f"invalid {image_format.value} header ({_itk_reason(path, exc)})"
        ) from exc
    size = reader.GetSize()
    if len(size) not in (2, 3):
        raise ImageReadError(path, f"{len(size)}-dimensional images are not supported (2 or 3)")
    components = reader.GetNumberOfComponents()
    itemsize = sitk.Image([1] * len(size), reader.GetPixelID()).GetSizeOfPixelComponent()
    nbytes = int(np.prod(size, dtype=np.int64)) * components * itemsize
    if nbytes > max_bytes:
        raise ImageReadError(
            path, f"decoded image would take {nbytes} bytes, over the limit of {max_bytes}"
        )
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(path, f"cannot decode the voxels ({_itk_reason(path, exc)})") from exc
    geometry = ItkGeometry(
        origin=tuple(image.GetOrigin()),
        spacing=tuple(image.GetSpacing()),
        direction=tuple(image.GetDirection()),
        nrrd_lines=_nrrd_geometry_lines(path) if image_format == ImageFormat.NRRD else (),
    )
    return Volume(
        array=_to_nifti_order(sitk.GetArrayFromImage(image), len(size), components),
        affine=_checked_affine(path, geometry),
        spatial_ndim=len(size),
        meta=VolumeMeta(format=image_format, itk_geometry=geometry),
    )


def write_itk(volume: Volume, target: Path, *, compress: bool = True) -> None:
    """Write ``volume`` with SimpleITK; the format follows ``target``'s suffix.

    When the volume came from an ITK file and its affine is unchanged, the source's origin, spacing
    and direction are written exactly as they were read.
    """
    import SimpleITK as sitk

    ndim = volume.spatial_ndim
    extra = volume.array.ndim - ndim
    if extra > 1:
        raise ValueError(f"cannot write an array of shape {volume.array.shape} as an ITK image")
    array = volume.array.astype(np.uint8) if volume.array.dtype == np.bool_ else volume.array
    axes = tuple(reversed(range(ndim))) + tuple(range(ndim, array.ndim))
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(axes)), isVector=extra == 1)
    source = volume.meta.itk_geometry
    if (
        source is not None
        and len(source.spacing) == ndim
        and np.array_equal(affine_from_itk(source), volume.affine)
    ):
        geometry = source
    else:
        geometry = itk_from_affine(volume.affine, ndim)
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    sitk.WriteImage(image, str(target), useCompression=compress)
    if geometry.nrrd_lines and target.suffix.lower() == ".nrrd":
        _patch_nrrd_geometry(target, geometry.nrrd_lines)


_NRRD_GEOMETRY_KEYS = ("space:", "space directions:", "space origin:")
_NRRD_HEADER_LIMIT = 1 << 16


def _nrrd_geometry_lines(path: Path) -> tuple[str, ...]:
    with path.open("rb") as stream:
        head = stream.read(_NRRD_HEADER_LIMIT).split(b"\n\n", 1)[0]
    lines = head.decode("latin-1").splitlines()
    return tuple(line for line in lines if line.startswith(_NRRD_GEOMETRY_KEYS))


def _patch_nrrd_geometry(target: Path, source_lines: tuple[str, ...]) -> None:
    """Put the source's geometry lines into a just-written NRRD whose lines have the same shape."""
    data = target.read_bytes()
    head, separator, body = data.partition(b"\n\n")
    by_key = {line.split(":", 1)[0]: line for line in source_lines}
    lines = head.decode("latin-1").split("\n")
    for index, line in enumerate(lines):
        key = line.split(":", 1)[0]
        if key in by_key and len(by_key[key].split()) == len(line.split()):
            lines[index] = by_key[key]
    target.write_bytes("\n".join(lines).encode("latin-1") + separator + body)


def _to_nifti_order(array: Any, ndim: int, components: int) -> Any:
    axes = tuple(reversed(range(ndim))) + ((ndim,) if components > 1 else ())
    return array.transpose(axes)


def _checked_affine(path: Path, geometry: ItkGeometry) -> Any:
    affine = affine_from_itk(geometry)
    if not abs(np.linalg.det(affine[:3, :3])) > 1e-12:
        raise ImageReadError(
            path, "the spacing or direction is degenerate: the geometry is unusable"
        )
    return affine


def _itk_reason(path: Path, exc: RuntimeError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else "unknown ITK error"
    return reason.replace(str(path.parent), "").replace(str(path), path.name)
