"""DICOM: a single file, a folder holding one series, or a ``.zip`` of one series.

Slices (or the frames of an enhanced multi-frame object) are ordered by their position along the
slice normal, never by file name; the third affine column is the true step between consecutive
slice positions, so reversed or tilted stacks keep their exact geometry. Rescale slope and intercept
are applied. Pixel data that pydicom can decode (RLE, JPEG, JPEG-LS, JPEG 2000 with the pylibjpeg
plugins) is supported.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from carina.errors import ImageReadError
from carina.io.dicom_files import datasets, malformed_errors, parse_dataset
from carina.io.volume import LPS_TO_RAS, ImageFormat, Volume, VolumeMeta
from carina.limits import check_cancelled

log = logging.getLogger(__name__)

_ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class _Frame:
    """One 2D plane of the series: a single-frame file or one frame of a multi-frame object."""

    source: str
    dataset: Any
    frame: int | None
    position: npt.NDArray[np.float64] | None
    orientation: npt.NDArray[np.float64] | None
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float


def read_dicom(path: Path, *, max_bytes: int) -> Volume:
    """Read one DICOM series from a file, a folder (searched recursively) or a zip file.

    Raises:
        ImageReadError: no DICOM image found, no pixel data, several series, missing,
            duplicated or inconsistent slices, undecodable pixel data, unsafe zip, or voxels over
            ``max_bytes``.
    """
    return read_series(path, max_bytes=max_bytes)[0]


def read_series(
    path: Path,
    *,
    max_bytes: int,
    files: Sequence[Path] | None = None,
    series_uid: str | None = None,
) -> tuple[Volume, list[Any]]:
    """:func:`read_dicom`, and the series' image datasets (for objects derived from it: a SEG).
    ``files``: read these files of ``path`` only (a series :func:`find_series` found);
    ``series_uid``: read that series of several (in a zip or folder).

    Raises:
        ImageReadError: as :func:`read_dicom`; no series ``series_uid`` in ``path``.
    """
    try:
        found = list(datasets(path, max_bytes=max_bytes, files=files))
        images = [(name, ds) for name, ds in found if "PixelData" in ds]
        if series_uid is not None:
            images = [(n, ds) for n, ds in images if ds.get("SeriesInstanceUID") == series_uid]
            if not images:
                raise ImageReadError(path, f"no DICOM series {series_uid} here")
        if not images:
            if not found:
                raise ImageReadError(path, "no DICOM file found")
            kind = found[0][1].get("SOPClassUID")
            described = f" ({getattr(kind, 'name', kind)})" if kind is not None else ""
            raise ImageReadError(path, f"the DICOM object{described} contains no pixel data")
        if len(images) == 1 and str(images[0][1].get("Modality", "")) == "SEG":
            from carina.io.dicom_seg import read_seg

            return read_seg(path, dataset=images[0][1]), [images[0][1]]
        volume = _series_volume(path, images, max_bytes=max_bytes)
        return volume, [ds for _, ds in images]
    except malformed_errors() as exc:  # pydicom parses lazily: any access may meet a broken element
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ImageReadError(path, f"a malformed DICOM file ({reason})") from exc


def read_headers(path: Path, *, max_bytes: int) -> list[Any]:
    """The image datasets of a DICOM file, folder or zip, parsed but not decoded (for a SEG
    referencing them); empty when ``path`` holds no DICOM image.

    Raises:
        ImageReadError: a malformed file or an unsafe zip.
    """
    try:
        if path.is_file() and not zipfile.is_zipfile(path):
            dataset = parse_dataset(path.name, path, force=False, strict=False)
            return [dataset] if dataset is not None and "PixelData" in dataset else []
        return [ds for _, ds in datasets(path, max_bytes=max_bytes) if "PixelData" in ds]
    except malformed_errors() as exc:
        raise ImageReadError(path, f"a malformed DICOM file ({type(exc).__name__})") from exc


def _series_volume(path: Path, images: list[tuple[str, Any]], *, max_bytes: int) -> Volume:
    """The volume of one series' image datasets (checked, sorted, stacked)."""
    _check_single_series(path, images)
    frames = [frame for name, ds in images for frame in _frames(name, ds)]
    _check_same_grid(path, frames)
    for frame in frames:
        _check_geometry(path, frame)
    nbytes = _decoded_bytes(images[0][1]) * len(frames)
    if nbytes > max_bytes:
        raise ImageReadError(
            path, f"decoded image would take {nbytes} bytes, over the limit of {max_bytes}"
        )
    frames, step = _sort_frames(path, frames)
    array = _pixels(path, frames)
    first = images[0][1]
    affine = _affine(frames[0], step)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageReadError(path, "the slice positions give no usable geometry")
    return Volume(
        array=array,
        affine=affine,
        meta=VolumeMeta(
            format=ImageFormat.DICOM,
            modality=str(first.get("Modality", "")) or None,
            series_uid=str(first.get("SeriesInstanceUID", "")) or None,
            geometry_known=frames[0].position is not None,
        ),
    )


# --- checks ------------------------------------------------------------------------------------


def _check_single_series(path: Path, images: list[tuple[str, Any]]) -> None:
    series: dict[str, list[Any]] = {}
    for _, ds in images:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    if len(series) <= 1:
        return
    described = "; ".join(
        f"{uid or '(no UID)'} "
        f"'{members[0].get('SeriesDescription', '') or members[0].get('Modality', '')}' "
        f"({len(members)} files)"
        for uid, members in sorted(series.items(), key=lambda item: -len(item[1]))
    )
    raise ImageReadError(path, f"{len(series)} DICOM series found, give one at a time: {described}")


def _check_same_grid(path: Path, frames: list[_Frame]) -> None:
    sizes = {(int(f.dataset.Rows), int(f.dataset.Columns)) for f in frames}
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise ImageReadError(path, f"the slices have different sizes ({shown})")
    with_geometry = [f for f in frames if f.orientation is not None and f.position is not None]
    if with_geometry and len(with_geometry) != len(frames):
        raise ImageReadError(path, "some slices have a position and orientation and others not")
    if not with_geometry:
        return
    reference = with_geometry[0]
    for frame in with_geometry:
        assert frame.orientation is not None and reference.orientation is not None
        if not np.allclose(frame.orientation, reference.orientation, atol=_ORIENTATION_TOLERANCE):
            raise ImageReadError(
                path,
                f"mixed slice orientations: {frame.source} differs from {reference.source}",
            )
    if len({f.pixel_spacing for f in frames}) > 1:
        raise ImageReadError(path, "the slices have different pixel spacings")


def _check_geometry(path: Path, frame: _Frame) -> None:
    """Pixel spacing, position and orientation that give a usable geometry (finite, non-zero)."""
    spacing = frame.pixel_spacing
    if spacing is not None and not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ImageReadError(path, f"the pixel spacing {list(spacing)} is not positive and finite")
    for name, values in (("position", frame.position), ("orientation", frame.orientation)):
        if values is not None and not np.all(np.isfinite(values)):
            raise ImageReadError(path, f"the image {name} is not finite")


def _sort_frames(path: Path, frames: list[_Frame]) -> tuple[list[_Frame], npt.NDArray[np.float64]]:
    """Frames ordered along the slice normal, and the LPS step from one slice to the next."""
    first = frames[0]
    if first.position is None or first.orientation is None:
        by_number = sorted(
            frames, key=lambda f: (int(f.dataset.get("InstanceNumber") or 0), f.source)
        )
        return (by_number if first.frame is None else frames), np.array([0.0, 0.0, 1.0])
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    if len(frames) == 1:
        return frames, normal * _slice_thickness(first.dataset)
    distances = np.array([float(np.dot(f.position, normal)) for f in frames])  # type: ignore[arg-type]
    order = np.argsort(distances, kind="stable")
    ordered = [frames[i] for i in order]
    gaps = np.diff(distances[order])
    typical = float(np.median(gaps))
    tolerance = max(0.01, 0.01 * typical)
    for index, gap in enumerate(gaps):
        if gap < tolerance:
            raise ImageReadError(
                path,
                f"duplicated slice: {ordered[index].source} and {ordered[index + 1].source} "
                f"share the position {distances[order][index]:.3f} mm along the slice normal",
            )
    for index, gap in enumerate(gaps):
        if abs(gap - typical) > max(0.01, 0.05 * typical):
            what = "missing slice(s)" if gap > 1.5 * typical else "irregular slice spacing"
            raise ImageReadError(
                path,
                f"{what}: {gap:.3f} mm between {ordered[index].source} and "
                f"{ordered[index + 1].source}, where the series spacing is {typical:.3f} mm",
            )
    last = ordered[-1].position
    assert last is not None and ordered[0].position is not None
    return ordered, (last - ordered[0].position) / (len(ordered) - 1)


def _slice_thickness(dataset: Any) -> float:
    for value in (
        dataset.get("SpacingBetweenSlices"),
        dataset.get("SliceThickness"),
        _functional(dataset, None, "PixelMeasuresSequence", "SliceThickness"),
    ):
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


# --- frames and geometry -----------------------------------------------------------------------


def _frames(name: str, dataset: Any) -> Iterable[_Frame]:
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    if count == 1 and "PerFrameFunctionalGroupsSequence" not in dataset:
        yield _frame(name, dataset, None)
        return
    per_frame_positions = "PerFrameFunctionalGroupsSequence" in dataset and any(
        "PlanePositionSequence" in group for group in dataset.PerFrameFunctionalGroupsSequence
    )
    offsets = dataset.get("GridFrameOffsetVector")
    for index in range(count):
        frame = _frame(f"{name} frame {index + 1}", dataset, index)
        if per_frame_positions or frame.position is None or frame.orientation is None:
            yield frame
            continue
        # Legacy multi-frame (RT dose, NM): one position, frames stepped along the normal.
        normal = np.cross(frame.orientation[:3], frame.orientation[3:])
        if offsets is not None:
            shift = float(offsets[index]) - float(offsets[0])
        else:
            shift = index * _slice_thickness(dataset)
        yield dataclasses.replace(frame, position=frame.position + shift * normal)


def _frame(source: str, dataset: Any, index: int | None) -> _Frame:
    position = _functional(dataset, index, "PlanePositionSequence", "ImagePositionPatient")
    orientation = _functional(dataset, index, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _functional(dataset, index, "PixelMeasuresSequence", "PixelSpacing")
    if spacing is None:
        spacing = dataset.get("ImagerPixelSpacing")
    slope = _functional(dataset, index, "PixelValueTransformationSequence", "RescaleSlope")
    if slope in (None, ""):
        slope = dataset.get("DoseGridScaling")  # RT dose: stored value x scaling = Gy
    intercept = _functional(dataset, index, "PixelValueTransformationSequence", "RescaleIntercept")
    has_geometry = position is not None and orientation is not None
    return _Frame(
        source=source,
        dataset=dataset,
        frame=index,
        position=np.array([float(v) for v in position]) if has_geometry else None,
        orientation=_unit_orientation(orientation) if has_geometry else None,
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
        slope=float(slope) if slope not in (None, "") else 1.0,
        intercept=float(intercept) if intercept not in (None, "") else 0.0,
    )


def _functional(dataset: Any, index: int | None, sequence: str, keyword: str) -> Any:
    """An attribute from the per-frame, then the shared functional groups, then the top level."""
    groups = []
    if index is not None and "PerFrameFunctionalGroupsSequence" in dataset:
        groups.append(dataset.PerFrameFunctionalGroupsSequence[index])
    if "SharedFunctionalGroupsSequence" in dataset:
        groups.append(dataset.SharedFunctionalGroupsSequence[0])
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return dataset.get(keyword)


def _unit_orientation(values: Any) -> npt.NDArray[np.float64]:
    orientation = np.array([float(v) for v in values])
    row, column = orientation[:3], orientation[3:]
    with np.errstate(all="ignore"):  # a zero vector gives NaN, refused by _check_geometry
        return np.concatenate([row / np.linalg.norm(row), column / np.linalg.norm(column)])


def _affine(first: _Frame, step: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    row_spacing, column_spacing = first.pixel_spacing or (1.0, 1.0)
    lps = np.eye(4)
    if first.orientation is not None and first.position is not None:
        lps[:3, 0] = first.orientation[:3] * column_spacing
        lps[:3, 1] = first.orientation[3:] * row_spacing
        lps[:3, 3] = first.position
    else:
        lps[:3, 0] = [column_spacing, 0.0, 0.0]
        lps[:3, 1] = [0.0, row_spacing, 0.0]
    lps[:3, 2] = step
    return LPS_TO_RAS @ lps


# --- pixels ------------------------------------------------------------------------------------


def _decoded_bytes(dataset: Any) -> int:
    bits = int(dataset.get("BitsAllocated", 16) or 16)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    return int(dataset.Rows) * int(dataset.Columns) * samples * max(1, bits // 8)


def _pixels(path: Path, frames: list[_Frame]) -> npt.NDArray[Any]:
    """Stack the frames' stored values, apply the rescale, and return the ``[i, j, k]`` array."""
    decoded: dict[int, npt.NDArray[Any]] = {}
    stack: npt.NDArray[Any] | None = None
    for k, frame in enumerate(frames):
        check_cancelled()
        plane = _plane(path, frame, decoded)
        if stack is None:
            stack = np.empty((len(frames), *plane.shape), dtype=plane.dtype)
        stack[k] = plane
    assert stack is not None
    stack = _rescale(stack, frames)
    axes = (2, 1, 0, *range(3, stack.ndim))
    return stack.transpose(axes)


def _plane(path: Path, frame: _Frame, cache: dict[int, npt.NDArray[Any]]) -> npt.NDArray[Any]:
    dataset = frame.dataset
    if frame.frame is None:
        fast = _native_plane(dataset)
        if fast is not None:
            return fast
    key = id(dataset)
    if key not in cache:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[key] = dataset.pixel_array
        except Exception as exc:  # pydicom raises many types for undecodable data
            raise ImageReadError(
                path, f"cannot decode the pixel data of {frame.source} ({_reason(exc)})"
            ) from exc
    pixels = cache[key]
    if frame.frame is None:
        return pixels
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    return pixels[frame.frame] if count > 1 else pixels


def _native_plane(dataset: Any) -> npt.NDArray[Any] | None:
    """The stored values of an uncompressed single-sample frame, read without pydicom's handlers."""
    file_meta = getattr(dataset, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is None or syntax.is_compressed or int(dataset.get("SamplesPerPixel", 1)) != 1:
        return None
    bits = int(dataset.BitsAllocated)
    signed = int(dataset.get("PixelRepresentation", 0)) == 1
    if bits not in (8, 16, 32) or (signed and int(dataset.get("BitsStored", bits)) != bits):
        return None
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}").newbyteorder(
        "<" if syntax.is_little_endian else ">"
    )
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    data = dataset.PixelData
    if len(data) < rows * columns * dtype.itemsize:
        return None  # let pydicom report the truncation
    plane = np.frombuffer(data, dtype=dtype, count=rows * columns).reshape(rows, columns)
    return plane if dtype.isnative else plane.astype(dtype.newbyteorder("="))


def _rescale(stack: npt.NDArray[Any], frames: list[_Frame]) -> npt.NDArray[Any]:
    slopes = np.array([f.slope for f in frames])
    intercepts = np.array([f.intercept for f in frames])
    if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
        return stack if stack.dtype.isnative else stack.astype(stack.dtype.newbyteorder("="))
    if (
        np.all(slopes == 1.0)
        and np.all(intercepts == np.round(intercepts))
        and stack.dtype.kind in "iu"
    ):
        target = _fitting_integer(
            int(stack.min()) + int(intercepts.min()), int(stack.max()) + int(intercepts.max())
        )
        out = stack.astype(target)
        if np.all(intercepts == intercepts[0]):
            out += target.type(intercepts[0])
        else:
            for k, intercept in enumerate(intercepts):
                out[k] += target.type(intercept)
        return out
    out = stack.astype(np.float32)
    for k, (slope, intercept) in enumerate(zip(slopes, intercepts, strict=True)):
        out[k] *= np.float32(slope)
        out[k] += np.float32(intercept)
    return out


def _fitting_integer(low: int, high: int) -> np.dtype[Any]:
    for candidate in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.int64)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
