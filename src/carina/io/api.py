"""``load_volume`` and ``save_volume``: one entry point per direction, the format chosen here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from carina.errors import ImageReadError, ImageWriteError
from carina.files import atomic_path
from carina.io.formats import read_format, suffix_of, write_format
from carina.io.volume import ImageFormat, Volume
from carina.settings import DEFAULT_MAX_IMAGE_BYTES


def load_volume(path: str | Path, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> Volume:
    """Read an image file, a DICOM series folder or a zip of one series.

    Args:
        path: the file or folder. The format comes from the suffix (``.nii.gz``, ``.nii``,
            ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, ``.dcm``, ``.zip``, ``.png``, ``.jpg``), else
            from the content; a folder is read as a DICOM series.
        max_bytes: the largest decoded image accepted (a guard against decompression bombs).

    Returns:
        The volume, indexed ``[i, j, k]`` in NIfTI order with a RAS affine.

    Raises:
        ImageReadError: naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file or folder")
    image_format = read_format(path)
    if image_format == ImageFormat.NIFTI:
        from carina.io.nifti import read_nifti

        return read_nifti(path, max_bytes=max_bytes)
    if image_format in (ImageFormat.NRRD, ImageFormat.METAIMAGE):
        from carina.io.itk import read_itk

        return read_itk(path, image_format, max_bytes=max_bytes)
    if image_format == ImageFormat.DICOM:
        from carina.io.dicom import read_dicom

        return read_dicom(path, max_bytes=max_bytes)
    from carina.io.raster import read_raster

    return read_raster(path, image_format, max_bytes=max_bytes)


def save_volume(
    volume: Volume, path: str | Path, *, compress_level: int | None = None, compress: bool = True
) -> None:
    """Write ``volume`` to ``path`` atomically; the format comes from the suffix.

    Nothing appears at ``path`` unless the whole file was written: the data goes to a temporary
    name beside it, is fsynced, then renamed.

    Args:
        volume: the volume to write.
        path: ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha`` or ``.png``.
        compress_level: gzip level for ``.nii.gz``; by default 1 for label maps (one-byte integer
            or boolean arrays, which compress fast and well at 1) and 6 for intensity images.
        compress: False writes ``.nrrd`` and ``.mha`` uncompressed (raw voxels, as browser
            viewers read them fastest); ``.nii.gz`` is compressed by its name.

    Raises:
        ImageWriteError: unsupported suffix, an array the format cannot hold, or an OS error.
    """
    path = Path(path)
    image_format = write_format(path)
    if not path.parent.is_dir():
        raise ImageWriteError(path, "the folder does not exist")
    suffix = suffix_of(path)
    try:
        with atomic_path(path, suffix=suffix) as tmp:
            if image_format == ImageFormat.NIFTI:
                from carina.io.nifti import write_nifti

                level = None
                if suffix == ".nii.gz":
                    level = compress_level or (1 if _is_label_map(volume) else 6)
                write_nifti(volume, tmp, compress_level=level)
            elif image_format == ImageFormat.PNG:
                from carina.io.raster import write_png

                write_png(volume, tmp)
            else:
                from carina.io.itk import write_itk

                write_itk(volume, tmp, compress=compress)
    except (ValueError, OSError, RuntimeError) as exc:
        raise ImageWriteError(path, str(exc)) from exc


def _is_label_map(volume: Volume) -> bool:
    return volume.array.dtype == np.bool_ or (
        volume.array.dtype.kind in "iu" and volume.array.dtype.itemsize == 1
    )
