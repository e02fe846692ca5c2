"""Batch inference for real studies: files, folders and DICOM series in; label maps and a CSV of
label volumes out.

An input is an image file (NIfTI, NRRD, MetaImage, PNG, a DICOM file or zip) or a folder. A
folder is searched: every image file in it is a case, and its DICOM files are grouped by series
(:func:`carina.io.dicom_files.find_series`). A folder (or zip) holding one series is one case; one
holding several is listed, and run only for the series chosen (``series``: UIDs, or ``all``). A
case that cannot be read or run is skipped with its reason and the batch goes on; ``volumes.csv``
beside the label maps holds every case, its status and the volume of each label in millilitres.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from carina.errors import CarinaError, ImageReadError
from carina.files import atomic_write_bytes
from carina.io.dicom_files import SeriesInfo, find_series, folder_files
from carina.io.formats import READ_SUFFIXES, suffix_of

if TYPE_CHECKING:
    from carina.engine.predict import Prediction, Predictor
    from carina.io import Volume

#: Suffixes of files that are images by themselves (not parts of a DICOM series).
_IMAGE_FILES = frozenset(s for s in READ_SUFFIXES if s not in (".dcm", ".dicom", ".zip"))
CSV_NAME = "volumes.csv"
OutputFormat = Literal["image", "dicom-seg"]


@dataclass(frozen=True)
class Case:
    """One image to segment: a file, or one DICOM series of a folder or zip."""

    name: str
    source: Path
    series: SeriesInfo | None = None


@dataclass
class CaseResult:
    """What became of a case: its label map and label volumes, or why it was skipped."""

    name: str
    source: Path
    series_uid: str = ""
    output: Path | None = None
    volumes_ml: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    #: lines that explain the error (the series to choose from)
    details: list[str] = field(default_factory=list)
    #: what to check in a result (an image of another modality than the model's)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Batch:
    """The cases found in the inputs, what was left out and why."""

    cases: list[Case] = field(default_factory=list)
    skipped: list[CaseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    series: dict[Path, list[SeriesInfo]] = field(default_factory=dict)


def collect_cases(inputs: Sequence[Path], *, series: Sequence[str], max_bytes: int) -> Batch:
    """The cases of ``inputs``; ``series``: the UIDs to run where an input has several series
    (``["all"]``: every one). A UID that no input holds is reported as skipped."""
    batch = Batch()
    chosen = set(series)
    for path in inputs:
        try:
            _collect(path, batch, chosen, max_bytes=max_bytes)
        except CarinaError as exc:
            batch.skipped.append(CaseResult(path.name, path, error=_reason(exc, path)))
    found = {info.uid for listed in batch.series.values() for info in listed}
    for uid in sorted(chosen - found - {"all"}):
        batch.skipped.append(CaseResult(uid, Path(uid), uid, error="no input holds this series"))
    _unique_names(batch.cases)
    return batch


def _collect(path: Path, batch: Batch, chosen: set[str], *, max_bytes: int) -> None:
    if not path.exists():
        raise ImageReadError(path, "no such file or folder")
    if path.is_file() and not zipfile.is_zipfile(path):
        batch.cases.append(Case(_stem(path), path))  # any format load_volume reads
        return
    if path.is_dir():
        files = folder_files(path)  # one walk for the image files and the zips
        images = [p for p in files if _is_image_file(p)]
        zips = [p for p in files if suffix_of(p) == ".zip"]
        batch.cases += [Case(_stem(p), p) for p in images]
        for archive in zips:
            _collect(archive, batch, chosen, max_bytes=max_bytes)
    found = find_series(path, max_bytes=max_bytes)
    batch.series[path] = found
    if path.is_dir() and not found and not batch.cases:
        raise ImageReadError(path, "no image file or DICOM series in this folder")
    if not path.is_dir() and not found:
        raise ImageReadError(path, "no DICOM image series in this zip")
    if len(found) == 1 and (not chosen or found[0].uid in chosen or "all" in chosen):
        batch.cases.append(Case(_stem(path), path, found[0]))
        return
    picked = [s for s in found if s.uid in chosen or "all" in chosen]
    if len(found) > 1 and not chosen:
        error = f"{len(found)} DICOM series: choose with --series UID (or --series all)"
        listing = [s.describe() for s in found]
        batch.skipped.append(CaseResult(_stem(path), path, error=error, details=listing))
        return
    names = _series_names(path, picked)
    batch.cases += [Case(name, path, info) for name, info in zip(names, picked, strict=True)]


def run_cases(
    predictor: Predictor,
    cases: Sequence[Case],
    output: Path,
    *,
    output_format: OutputFormat = "image",
    suffix: str = ".nii.gz",
    max_bytes: int,
    model: str = "model",
    done: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Segment each case into ``output`` (``<name>_seg<suffix>``, or ``.dcm`` for a DICOM SEG);
    a case that cannot be read or run is skipped with its reason (a model failure told as
    :func:`~carina.engine.failures.model_failures` does for ``model``); ``done`` hears each
    result as it comes."""
    from carina.engine.failures import model_failures

    labels = list(predictor.settings.labels)
    results: list[CaseResult] = []
    for case in cases:
        start = time.perf_counter()
        extension = ".dcm" if output_format == "dicom-seg" else suffix
        target = output / f"{case.name}_seg{extension}"
        result = CaseResult(case.name, case.source, case.series.uid if case.series else "")
        try:
            with model_failures(model):
                prediction = _Job(predictor, case, target, output_format, max_bytes).run()
            result.output = target
            result.volumes_ml = label_volumes(prediction.volume, labels)
            result.warnings = prediction.warnings
        except CarinaError as exc:
            result.error = _reason(exc, case.source)
        result.seconds = time.perf_counter() - start
        results.append(result)
        if done is not None:
            done(result)
    return results


@dataclass(frozen=True)
class _Job:
    """The run of one case: read it (a series alone from its folder), segment, write."""

    predictor: Predictor
    case: Case
    target: Path
    output_format: OutputFormat
    max_bytes: int

    def run(self) -> Prediction:
        from carina.io import save_volume

        if self.output_format == "image" and self.case.series is None:
            return self.predictor.predict_to_file(self.case.source, self.target)
        volume, headers = self._read()
        prediction = self.predictor.predict(volume)
        start = time.perf_counter()
        if self.output_format == "dicom-seg":
            from carina.io.dicom_seg import write_seg

            write_seg(prediction.volume, headers, list(self.predictor.settings.labels), self.target)
        else:
            save_volume(prediction.volume, self.target)
        prediction.timings["write"] = time.perf_counter() - start
        return prediction

    def _read(self) -> tuple[Volume, list[Any]]:
        from carina.io import ImageFormat
        from carina.io.dicom import read_series
        from carina.io.formats import read_format

        series, source = self.case.series, self.case.source
        if series is not None:
            files = series.files or None
            uid = None if files else series.uid or None
            return read_series(source, max_bytes=self.max_bytes, files=files, series_uid=uid)
        if read_format(source) != ImageFormat.DICOM:
            raise ImageReadError(
                source, "--format dicom-seg needs a DICOM series (a folder, zip or file)"
            )
        return read_series(source, max_bytes=self.max_bytes)


def label_volumes(volume: Volume, labels: Sequence[str]) -> dict[str, float | None]:
    """The volume of each label in millilitres (None for a 2D image or one without geometry)."""
    if volume.spatial_ndim != 3 or not volume.meta.geometry_known:
        return dict.fromkeys(labels)
    voxel_ml = abs(float(np.linalg.det(volume.affine[:3, :3]))) / 1000.0
    counts = np.bincount(volume.array.ravel(), minlength=len(labels) + 1)
    return {name: float(counts[value]) * voxel_ml for value, name in enumerate(labels, start=1)}


def write_volumes_csv(results: Sequence[CaseResult], labels: Sequence[str], target: Path) -> None:
    """One row per case: name, input, series, output, status, reason, warnings, seconds, and
    the mL of each label."""
    stream = io.StringIO()
    writer = csv.writer(stream)
    header = ["case", "input", "series_uid", "output", "status", "reason", "warnings", "seconds"]
    writer.writerow([*header, *(f"{name} (mL)" for name in labels)])
    for r in results:
        volumes = ["" if r.volumes_ml.get(n) is None else f"{r.volumes_ml[n]:.3f}" for n in labels]
        writer.writerow(
            [
                r.name,
                str(r.source),
                r.series_uid,
                r.output.name if r.output else "",
                "skipped" if r.error else "segmented",
                "; ".join([r.error, *r.details]) if r.error else "",
                "; ".join(r.warnings),
                f"{r.seconds:.2f}",
                *volumes,
            ]
        )
    atomic_write_bytes(target, stream.getvalue().encode())


def _is_image_file(path: Path) -> bool:
    return not path.name.startswith(".") and suffix_of(path) in _IMAGE_FILES


def _stem(path: Path) -> str:
    return path.name.split(".")[0] or path.name


def _series_names(source: Path, picked: Sequence[SeriesInfo]) -> list[str]:
    """Names of several series of one input: their own sub-folders when they have distinct
    ones, else the series numbers, else the UIDs' last digits."""
    stem = _stem(source)
    folders = [_folder_name(info, source) for info in picked]
    if all(folders) and len(set(folders)) == len(folders):
        return [f"{stem}_{folder}" for folder in folders]
    numbers = [info.number for info in picked]
    if all(numbers) and len(set(numbers)) == len(numbers):
        return [f"{stem}_s{number}" for number in numbers]
    return [
        f"{stem}_{info.uid.rsplit('.', 1)[-1][-12:] or index}" for index, info in enumerate(picked)
    ]


def _folder_name(info: SeriesInfo, source: Path) -> str:
    parents = {file.parent for file in info.files}
    if len(parents) != 1:
        return ""
    (parent,) = parents
    relative = parent.relative_to(source) if parent.is_relative_to(source) else Path()
    return "_".join(relative.parts)


def _unique_names(cases: list[Case]) -> None:
    """Make output names unique: a repeated name gets its file's folder, then a count."""
    seen: set[str] = set()
    for index, case in enumerate(cases):
        name = case.name
        if name in seen and case.series is None and case.source.parent.name:
            name = f"{case.source.parent.name}_{name}"
        base, count = name, 2
        while name in seen:
            name, count = f"{base}_{count}", count + 1
        seen.add(name)
        if name != case.name:
            cases[index] = dataclasses.replace(case, name=name)


def _reason(exc: CarinaError, source: Path) -> str:
    """The error's message without a leading path (the CSV names the input already)."""
    text = str(exc)
    for prefix in (f"{source}: ", f"{source.name}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text
