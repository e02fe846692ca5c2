"""NIfTI-1 and NIfTI-2 (``.nii``, ``.nii.gz``), read straight into the final array.

nibabel parses and writes the header; the voxels are inflated (with ISA-L when installed) directly
into a preallocated array, so a compressed volume costs one pass and no intermediate copy.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import numpy.typing as npt

from carina.errors import ImageReadError
from carina.io.volume import ImageFormat, Volume, VolumeMeta
from carina.limits import check_cancelled

_CHUNK = 1 << 24
_HEADER_SIZES = {348: 1, 540: 2}
#: Large images (decoded size) that inflate more than this ratio are refused as bombs.
BOMB_FLOOR = 256 * 1024**2
BOMB_RATIO = 200
#: The most header-extension data (between the header and the voxels) accepted.
_MAX_EXTENSIONS = 64 * 1024**2
#: Data accepted after the voxels (a gzip member or junk that would otherwise be inflated in full).
_MAX_TRAILING = 1 << 20


def read_nifti(path: Path, *, max_bytes: int) -> Volume:
    """Read a NIfTI file (plain or gzip-compressed) into a :class:`Volume`.

    Raises:
        ImageReadError: empty, truncated or corrupt file, bad header, non-invertible affine, or
            decoded voxels over ``max_bytes``.
    """
    try:
        with _open_for_reading(path) as stream:
            return _read_stream(path, stream, max_bytes=max_bytes)
    except ImageReadError:
        raise
    except _decoder_errors() as exc:
        raise ImageReadError(path, f"corrupt or truncated compressed data ({exc})") from exc


def write_nifti(volume: Volume, target: Path, *, compress_level: int | None) -> None:
    """Write ``volume`` as NIfTI-1 to ``target`` (already a temporary path; see ``save_volume``).

    When the volume came from a NIfTI file and its affine is unchanged, the source header's
    geometry fields (qform, sform, pixdim, units) are kept exactly, so a label map written on an
    image's grid is geometry-identical to that image's file.

    Args:
        volume: what to write.
        target: the path; gzip-compressed when ``compress_level`` is not None.
        compress_level: zlib-style level 1-9, or None for an uncompressed ``.nii``.
    """
    import nibabel as nib

    array = volume.array.astype(np.uint8) if volume.array.dtype == np.bool_ else volume.array
    header = _reusable_header(volume)
    image = nib.Nifti1Image(array, None if header is not None else volume.affine, header=header)
    if header is None:
        image.set_qform(volume.affine, code=1)
        image.set_sform(volume.affine, code=1)
    image.set_data_dtype(array.dtype)
    out = image.header
    out.set_slope_inter(1.0, 0.0)
    out.set_intent("none")
    out["descrip"] = b"carina"
    out["aux_file"] = b""
    out["cal_min"] = out["cal_max"] = 0
    raw = image.to_bytes()
    if compress_level is None:
        target.write_bytes(raw)
    else:
        target.write_bytes(_gzip_compress(raw, compress_level))


def nifti_header_geometry(header_bytes: bytes) -> dict[str, Any]:
    """The geometry fields of a NIfTI header, for comparing two files exactly."""
    header = _parse_header(Path("header"), header_bytes)
    keys = ["dim", "pixdim", "qform_code", "sform_code", "xyzt_units"]
    keys += ["quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"]
    keys += ["srow_x", "srow_y", "srow_z"]
    return {key: header[key].tobytes() for key in keys}


def _reusable_header(volume: Volume) -> Any:
    """The source NIfTI header (as NIfTI-1) when the volume's affine is still the one it gave."""
    import nibabel as nib

    source = volume.meta.nifti_header
    if source is None:
        return None
    header = _parse_header(Path("header"), source)
    if not np.array_equal(header.get_best_affine(), volume.affine):
        return None
    return header if isinstance(header, nib.Nifti1Header) else nib.Nifti1Header.from_header(header)


def _read_stream(path: Path, stream: IO[bytes], *, max_bytes: int) -> Volume:
    first = stream.read(4)
    if not first:
        raise ImageReadError(path, "the file is empty")
    size = _header_size(path, first)
    head = first + _read_exact(path, stream, size - 4, what="header")
    header = _parse_header(path, head)
    shape = tuple(int(n) for n in header.get_data_shape())
    if not shape or any(not 0 <= n < 2**31 for n in shape):
        raise ImageReadError(path, f"invalid NIfTI header (dimensions {list(shape)})")
    dtype = header.get_data_dtype()
    nbytes = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
    if nbytes > max_bytes:
        raise ImageReadError(
            path, f"decoded image would take {nbytes} bytes, over the limit of {max_bytes}"
        )
    _check_ratio(path, nbytes)
    with np.errstate(all="ignore"):
        affine = header.get_best_affine()
    if not (np.all(np.isfinite(affine)) and abs(np.linalg.det(affine[:3, :3])) > 1e-12):
        raise ImageReadError(
            path, "the affine (qform/sform/pixdim) is not invertible: the geometry is unusable"
        )
    offset = int(header.get_data_offset())
    if offset > size:
        _skip(path, stream, offset - size)
    array = np.empty(shape, dtype=dtype, order="F")
    _fill(path, stream, array)
    _check_end(path, stream)
    return Volume(
        array=_finish_array(array, header),
        affine=affine,
        spatial_ndim=2 if len(shape) == 2 else 3,
        meta=VolumeMeta(format=ImageFormat.NIFTI, nifti_header=bytes(head)),
    )


def _check_ratio(path: Path, nbytes: int) -> None:
    """Refuse a large compressed image that would inflate far more than any scan does: real CT
    and MR compress about 2-5 to 1, a decompression bomb thousands to 1. Checked before a byte
    is inflated; a real image of that kind can be sent uncompressed (``.nii``)."""
    try:
        with path.open("rb") as probe:
            compressed = probe.read(2) == b"\x1f\x8b"
        size = path.stat().st_size
    except OSError:
        return
    if compressed and nbytes >= BOMB_FLOOR and nbytes > BOMB_RATIO * size:
        raise ImageReadError(
            path,
            f"{size} compressed bytes would inflate to {nbytes} ({nbytes // max(size, 1)} to 1, "
            f"over {BOMB_RATIO} to 1 for images of {BOMB_FLOOR >> 20} MiB or more): refused as a "
            "decompression bomb; send a real image of this kind uncompressed (.nii)",
        )


def _check_end(path: Path, stream: IO[bytes]) -> None:
    """Read to the end (so that gzip checks its CRC), refusing more than a little trailing data:
    a second gzip member could otherwise inflate to any size."""
    trailing = 0
    while chunk := stream.read(min(_CHUNK, _MAX_TRAILING + 1)):
        check_cancelled()
        trailing += len(chunk)
        if trailing > _MAX_TRAILING:
            raise ImageReadError(path, f"more than {_MAX_TRAILING} bytes of data after the voxels")


def _decoder_errors() -> tuple[type[BaseException], ...]:
    """What the file and gzip decoders raise on corrupt data (ISA-L has an error of its own)."""
    try:
        from isal.igzip_lib import IsalError
    except ImportError:
        return (OSError, EOFError, zlib.error)
    return (OSError, EOFError, zlib.error, cast(type[BaseException], IsalError))


def _header_size(path: Path, first: bytes) -> int:
    for order in ("little", "big"):
        value = int.from_bytes(first, "little" if order == "little" else "big")
        if value in _HEADER_SIZES:
            return value
    raise ImageReadError(path, "not a NIfTI file (bad header size field)")


def _parse_header(path: Path, head: bytes) -> Any:
    import nibabel as nib
    from nibabel.spatialimages import HeaderDataError

    klass = nib.Nifti1Header if len(head) == 348 else nib.Nifti2Header
    try:
        return klass.from_fileobj(io.BytesIO(head), check=True)
    except (HeaderDataError, ValueError) as exc:
        raise ImageReadError(path, f"invalid NIfTI header ({exc})") from exc


def _finish_array(array: npt.NDArray[Any], header: Any) -> npt.NDArray[Any]:
    if array.dtype.names:  # RGB24 / RGBA32: colour components become a trailing axis
        array = np.stack([array[name] for name in array.dtype.names], axis=-1)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    slope, inter = header.get_slope_inter()
    if slope is None or (slope == 1.0 and (inter is None or inter == 0.0)):
        return array
    out_dtype = np.float64 if array.dtype == np.float64 else np.float32
    scaled: npt.NDArray[np.floating[Any]] = array.astype(out_dtype)
    scaled *= out_dtype(slope)
    if inter:
        scaled += out_dtype(inter)
    return scaled


def _fill(path: Path, stream: IO[bytes], array: npt.NDArray[Any]) -> None:
    view = array.reshape(-1, order="A").data.cast("B")
    done = 0
    while done < len(view):
        check_cancelled()
        count = stream.readinto(view[done : done + _CHUNK])  # type: ignore[attr-defined]
        if not count:
            raise ImageReadError(
                path, f"the file is truncated: {len(view)} bytes of voxels expected, {done} found"
            )
        done += count


def _skip(path: Path, stream: IO[bytes], count: int) -> None:
    """Pass over the header extensions (at most :data:`_MAX_EXTENSIONS` bytes), in chunks."""
    if count > _MAX_EXTENSIONS:
        raise ImageReadError(
            path, f"the voxels would start {count} bytes after the header (vox_offset): invalid"
        )
    while count > 0:
        count -= len(_read_exact(path, stream, min(count, _CHUNK), what="header extensions"))


def _read_exact(path: Path, stream: IO[bytes], count: int, *, what: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise ImageReadError(path, f"the file is truncated inside the {what}")
    return data


def _open_for_reading(path: Path) -> IO[bytes]:
    try:
        with path.open("rb") as probe:
            magic = probe.read(2)
    except OSError as exc:
        raise ImageReadError(path, f"cannot open the file ({exc.strerror})") from exc
    if magic != b"\x1f\x8b":
        return path.open("rb")
    try:
        from isal import igzip

        return cast(IO[bytes], igzip.open(path, "rb"))
    except ImportError:
        return cast(IO[bytes], gzip.open(path, "rb"))


def _gzip_compress(data: bytes, level: int) -> bytes:
    try:
        from isal import igzip
    except ImportError:
        return gzip.compress(data, compresslevel=level, mtime=0)
    # ISA-L has levels 0-3; zlib's 1 is about ISA-L's 1, zlib's 6 about ISA-L's 2.
    compressed: bytes = igzip.compress(
        data, compresslevel=min(3, max(0, (level + 3) // 4)), mtime=0
    )
    return compressed
