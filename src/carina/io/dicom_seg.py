"""DICOM Segmentation (SEG): a label map written against its source series, and read back.

A label map on the grid of a DICOM series becomes a BINARY Segmentation (highdicom) with one segment
per label value: named from the model's labels, coded with SNOMED CT where Carina knows the
structure (vertebrae C1-L5, intervertebral discs, grey and white matter, CSF, organs the standard's
code lists name) and as a generic tissue otherwise. It references its source series the way viewers
need (ReferencedSeriesSequence, a source image per frame, the frame of reference), takes its
geometry from the source, and copies the patient and study attributes from the source only; empty
frames are left out. Reading a SEG back gives the label map on its source's grid, voxel for voxel.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from carina import __version__
from carina.errors import ImageReadError, ImageWriteError
from carina.files import atomic_path
from carina.io.volume import LPS_TO_RAS, ImageFormat, Volume, VolumeMeta

#: The most segments a SEG gets: label values are 8-bit here, as viewers expect.
MAX_SEGMENTS = 255
#: Segment category of a structure Carina codes, and of one it does not.
_ANATOMY = "AnatomicalStructure"
_TISSUE = "Tissue"
_ORDINALS = {
    "1": "First", "2": "Second", "3": "Third", "4": "Fourth", "5": "Fifth", "6": "Sixth",
    "7": "Seventh", "8": "Eighth", "9": "Ninth", "10": "Tenth", "11": "Eleventh", "12": "Twelfth",
}  # fmt: skip
_REGIONS = {"C": "Cervical", "T": "Thoracic", "L": "Lumbar"}
_DISC = r"(?:disc|intervertebral disc)\s+([ctl])(\d{1,2})\s*-\s*[ctls]\d{1,2}"
_NAMED = {
    "grey matter": "GrayMatter",
    "gray matter": "GrayMatter",
    "white matter": "WhiteMatter",
    "csf": "CerebrospinalFluid",
    "cerebrospinal fluid": "CerebrospinalFluid",
}


def segment_codes(name: str) -> tuple[Any, Any]:
    """The (category, type) SNOMED CT codes of a label name: ``L3``/``L3 vertebra`` -> L3
    vertebra, ``disc C5-C6`` -> the intervertebral disc of C5, ``grey matter``, ``spleen``, ...;
    a name Carina does not know -> (Tissue, Tissue)."""
    from pydicom.sr.codedict import codes

    text = name.strip().lower()
    keyword = _NAMED.get(text)
    vertebra = re.fullmatch(r"(?:vertebra\s+)?([ctl])(\d{1,2})(?:\s+vertebra)?", text)
    disc = re.fullmatch(
        r"(?:disc|intervertebral disc)\s+([ctl])(\d{1,2})\s*-\s*[ctls]\d{1,2}", text
    )
    if vertebra:
        keyword = f"{vertebra[1].upper()}{vertebra[2]}Vertebra"
    elif disc and disc[2] in _ORDINALS:
        region = _REGIONS[disc[1].upper()]
        keyword = f"IntervertebralDiscStructureOf{_ORDINALS[disc[2]]}{region}Vertebra"
    elif keyword is None:
        keyword = "".join(part.capitalize() for part in re.split(r"[\s_-]+", text))
    concept = getattr(codes.SCT, keyword, None) if keyword else None
    if concept is None:
        return getattr(codes.SCT, _TISSUE), getattr(codes.SCT, _TISSUE)
    return getattr(codes.SCT, _ANATOMY), concept


def write_seg(
    labels: Volume,
    source: Sequence[Any],
    names: Sequence[str],
    target: str | Path,
    *,
    algorithm: str = "Carina",
    series_description: str = "Carina segmentation",
) -> Path:
    """Write the label map ``labels`` (on the grid of the series ``source``, pydicom datasets) as
    a DICOM SEG file at ``target``; value ``n`` is segment ``n``, named ``names[n - 1]`` (``label
    n`` past the names).

    Raises:
        ImageWriteError: not a label map (values other than 0-255 integers).
        ImageReadError: the label map is not on the source series' grid, or the source cannot
            be referenced (no frame of reference, not an image series).
    """
    import highdicom as hd

    path = Path(target)
    array = np.asarray(labels.array)
    low, high = (int(array.min(initial=0)), int(array.max(initial=0))) if array.size else (0, 0)
    if array.dtype.kind not in "iub" or low < 0 or high > MAX_SEGMENTS:
        raise ImageWriteError(
            path,
            f"a DICOM SEG holds a label map (integers 0-{MAX_SEGMENTS}), not an image of "
            f"{array.dtype} values {low}..{high}",
        )
    images, grid = _source_grid(_source_images(source))
    mask = hd.Volume(
        array=array.astype(np.uint8),
        affine=LPS_TO_RAS @ np.asarray(labels.affine),
        coordinate_system="PATIENT",
        frame_of_reference_uid=images[0].FrameOfReferenceUID,
    )
    try:
        frames = mask.match_geometry(grid, tol=1e-3).array
    except (RuntimeError, ValueError) as exc:
        raise ImageReadError(
            path,
            f"the label map ({labels.shape}) is not on the grid of the source series "
            f"({len(images)} images): {str(exc)[:200]}",
        ) from exc
    count = max(high, len(names), 1)
    segments = [_description(number, names, algorithm) for number in range(1, count + 1)]
    with warnings.catch_warnings():
        # an empty (de-identified) PatientName is not a name highdicom can check
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        seg = _segmentation(hd, images, frames, segments, algorithm, series_description)
    with atomic_path(path) as partial:
        seg.save_as(partial, enforce_file_format=True)
    return path


def _segmentation(
    hd: Any, images: list[Any], mask: Any, segments: list[Any], algorithm: str, description: str
) -> Any:
    return hd.seg.Segmentation(
        source_images=images,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(images[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Carina",
        manufacturer_model_name=algorithm,
        software_versions=__version__,
        device_serial_number="0",
        series_description=description,
    )


def read_seg(path: str | Path, *, reference: Volume | None = None, dataset: Any = None) -> Volume:
    """A DICOM SEG as a label map (segment numbers as values): on the grid of ``reference`` (its
    source series as Carina reads it) when given, else on the SEG's own grid (the frames it
    holds). ``dataset``: the SEG already parsed from ``path``.

    Raises:
        ImageReadError: not a readable Segmentation, or it does not fit ``reference``.
    """
    import highdicom as hd
    import pydicom

    where = Path(path)
    try:
        parsed = dataset if dataset is not None else pydicom.dcmread(where)
        seg = hd.seg.Segmentation.from_dataset(parsed)
        volume = seg.get_volume(combine_segments=True, relabel=False)
    except Exception as exc:  # pydicom and highdicom raise many kinds on a bad file
        raise ImageReadError(where, f"not a readable DICOM Segmentation ({exc})") from exc
    if reference is not None:
        grid = hd.VolumeGeometry(
            affine=LPS_TO_RAS @ np.asarray(reference.affine),
            spatial_shape=reference.shape[:3],
            coordinate_system="PATIENT",
            frame_of_reference_uid=seg.FrameOfReferenceUID,
        )
        try:
            volume = _on_grid(volume, grid)
        except (RuntimeError, ValueError) as exc:
            raise ImageReadError(where, f"the segmentation does not fit the image: {exc}") from exc
    return Volume(
        array=np.asarray(volume.array),
        affine=LPS_TO_RAS @ np.asarray(volume.affine),
        meta=VolumeMeta(format=ImageFormat.DICOM, modality="SEG", series_uid=seg.SeriesInstanceUID),
    )


def segmentation_of(path: str | Path) -> Any:
    """The SEG dataset at ``path`` (parsed, pixels not decoded), or None when ``path`` is no
    DICOM Segmentation (another DICOM object, or not DICOM at all)."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # not DICOM, or too broken to be a SEG: the caller reads it another way
        return None
    return dataset if str(dataset.get("Modality", "")) == "SEG" else None


def segment_names(dataset: Any) -> dict[int, str]:
    """A SEG's segment numbers and labels (``SegmentLabel``)."""
    return {
        int(item.SegmentNumber): str(item.get("SegmentLabel", "") or f"label {item.SegmentNumber}")
        for item in dataset.get("SegmentSequence", [])
    }


def _on_grid(volume: Any, grid: Any) -> Any:
    """``volume`` (a SEG's, covering only its non-empty frames) placed on the source grid."""
    import highdicom as hd

    inverse = np.linalg.inv(grid.affine)
    matched = volume.match_orientation(grid)
    array = np.zeros(grid.spatial_shape, dtype=matched.array.dtype)
    start = np.rint((inverse @ np.append(matched.position, 1.0))[:3]).astype(int)
    stop = start + np.asarray(matched.spatial_shape)
    if np.any(start < 0) or np.any(stop > np.asarray(grid.spatial_shape)):
        raise ValueError("the segmentation lies outside the source series")
    array[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = matched.array
    return hd.Volume(
        array=array,
        affine=grid.affine,
        coordinate_system="PATIENT",
        frame_of_reference_uid=grid.frame_of_reference_uid,
    )


#: Type 2 attributes of the patient and study modules a SEG copies from its source: a source that
#: leaves them out (allowed for some objects, common after de-identification) gets them empty.
_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


def _source_images(source: Sequence[Any]) -> list[Any]:
    """The image datasets of ``source`` (copies, with absent Type 2 attributes empty); the
    headers suffice (read with ``stop_before_pixels``: the pixels are not used)."""
    images = [
        ds for ds in source if ("Rows" in ds and "ImagePositionPatient" in ds) or "PixelData" in ds
    ]
    if not images:
        raise ImageReadError(Path("source"), "the source holds no image")
    if "FrameOfReferenceUID" not in images[0]:
        raise ImageReadError(Path("source"), "the source series has no FrameOfReferenceUID")
    completed = []
    for dataset in images:
        missing = [keyword for keyword in _TYPE2 if keyword not in dataset]
        if missing or "PixelData" not in dataset:
            dataset = dataset.copy()
            for keyword in missing:
                setattr(dataset, keyword, "")
            if "PixelData" not in dataset:
                dataset.PixelData = b""  # highdicom asks for the element, not the pixels
        completed.append(dataset)
    return completed


def _source_grid(images: list[Any]) -> tuple[list[Any], Any]:
    """The source images in the order of their frames along the slice normal, and their grid
    (a highdicom ``VolumeGeometry`` from the headers alone): frame ``n`` of the SEG's pixel array
    is then derived from image ``n``.

    Raises:
        ImageReadError: the images do not form one regular grid.
    """
    import highdicom as hd

    try:
        if len(images) == 1 and int(getattr(images[0], "NumberOfFrames", 1) or 1) > 1:
            geometry = hd.image.Image.from_dataset(images[0]).get_volume_geometry()
            if geometry is None:
                raise ValueError("its frames do not form a regular volume")
            return images, geometry
        orientation = np.asarray(images[0].ImageOrientationPatient, dtype=np.float64)
        normal = np.cross(orientation[:3], orientation[3:])
        ordered = sorted(
            images, key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, float))
        )
        for _ in range(2):  # the geometry's slice axis may run against the normal: reverse
            positions = [np.asarray(ds.ImagePositionPatient, np.float64) for ds in ordered]
            step = float(np.linalg.norm(positions[-1] - positions[0])) / max(len(ordered) - 1, 1)
            first = ordered[0]
            geometry = hd.VolumeGeometry.from_attributes(
                image_position=positions[0].tolist(),
                image_orientation=orientation.tolist(),
                rows=int(first.Rows),
                columns=int(first.Columns),
                pixel_spacing=[float(v) for v in first.PixelSpacing],
                spacing_between_slices=step or 1.0,
                number_of_frames=len(ordered),
                coordinate_system="PATIENT",
                frame_of_reference_uid=first.FrameOfReferenceUID,
            )
            last = np.asarray(geometry.affine) @ np.array([len(ordered) - 1, 0, 0, 1.0])
            if np.allclose(last[:3], positions[-1], atol=1e-2 * max(step, 1.0)):
                break
            ordered = ordered[::-1]
        else:
            raise ValueError("the slice positions are not evenly spaced along one line")
        return ordered, geometry
    except (AttributeError, ValueError, IndexError, TypeError) as exc:
        raise ImageReadError(
            Path("source"), f"the source series has no usable geometry ({exc})"
        ) from exc


def _description(number: int, names: Sequence[str], algorithm: str) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    name = names[number - 1] if number <= len(names) else f"label {number}"
    category, kind = segment_codes(name)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm[:64],
            version=__version__,
            family=codes.cid7162.ArtificialIntelligence,
        ),
    )
