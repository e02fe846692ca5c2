"""De-identify files and folders into an output folder, with a report of what was done.

Each DICOM instance found becomes ``OUT/<new StudyInstanceUID>/<new SeriesInstanceUID>/<new
SOPInstanceUID>.dcm``, written atomically; files that are not DICOM (and DICOMDIRs) are passed over
and counted. The output must not overlap an input: nothing is ever written into an input. The
report counts files and actions per attribute, and names no value and no input file (folder and
file names of hospital exports often hold patients' names).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carina import __version__
from carina.deid.dataset import DeidResult, deidentify_dataset
from carina.deid.options import DeidOptions
from carina.deid.pseudonyms import Pseudonyms
from carina.deid.scan import pixel_findings, pydicom_warnings_logged
from carina.deid.table import OPTION_MEANINGS, load_table
from carina.errors import DeidentificationError
from carina.files import atomic_path


@dataclass
class DeidReport:
    """What :func:`deidentify_files` did (JSON with :meth:`as_dict`, free of patient data).

    Attributes:
        options: the options it ran with.
        key_fingerprint: a short name of the key (tells keys apart; reveals nothing of one).
        what_if: nothing was written.
        inputs: files looked at.
        written: DICOM instances written (or that would be, with ``what_if``).
        not_dicom: files passed over: not DICOM, or no instance (a DICOMDIR).
        duplicates: instances written a second time (the same SOP instance in two files).
        pixel_warnings: instances whose pixels may show identifying text (a US, secondary
            capture or XA/RF image without BurnedInAnnotation NO, or one marked YES): pixels are
            never cleaned, so check these.
        failures: ``(input file, reason)`` of files that could not be de-identified; the paths
            are shown to the user, never written to the report.
        actions: attribute -> action code -> instances.
    """

    options: DeidOptions
    key_fingerprint: str
    what_if: bool = False
    inputs: int = 0
    written: int = 0
    not_dicom: int = 0
    duplicates: int = 0
    pixel_warnings: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)
    actions: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, result: DeidResult) -> None:
        """Count the actions of one instance."""
        for attribute, code in result.actions:
            self.actions.setdefault(attribute, Counter())[code] += 1

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON: counts, options and actions; no value, no input path."""
        reasons = Counter(reason for _, reason in self.failures)
        return {
            "carina": __version__,
            "table": load_table().source,
            "method": [
                {"code": code, "meaning": OPTION_MEANINGS[code]}
                for code in self.options.method_codes()
            ],
            "options": self.options.as_dict(),
            "key_fingerprint": self.key_fingerprint,
            "what_if": self.what_if,
            "files": {
                "inputs": self.inputs,
                "written": self.written,
                "not_dicom": self.not_dicom,
                "failed": len(self.failures),
                "duplicates": self.duplicates,
                "pixel_warnings": self.pixel_warnings,
            },
            "failures": dict(sorted(reasons.items())),
            "actions": {
                attribute: dict(sorted(codes.items()))
                for attribute, codes in sorted(self.actions.items())
            },
        }


def deidentify_files(
    inputs: Sequence[Path],
    out: Path,
    key: bytes,
    options: DeidOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
    what_if: bool = False,
) -> DeidReport:
    """De-identify every DICOM instance of ``inputs`` (files, or folders searched recursively)
    into ``out`` (see the module's description).

    Args:
        inputs: files and folders.
        out: the output folder (made when missing).
        key: the pseudonyms' key (:func:`carina.deid.load_key`).
        options: what is kept.
        progress: called with (files done, files in all) after each file.
        what_if: de-identify in memory only: the report says what would be written.

    Raises:
        DeidentificationError: an input that does not exist, or an output that overlaps an
            input or is a file.
    """
    files = _input_files(inputs, out)
    report = DeidReport(options=options, key_fingerprint=Pseudonyms(key).fingerprint())
    report.what_if = what_if
    report.inputs = len(files)
    written: set[Path] = set()
    for done, path in enumerate(files, start=1):
        result = _deidentify_file(path, key, options, report)
        if result is not None:
            target = _target(out, result)
            report.duplicates += target in written
            written.add(target)
            report.written += 1
            report.add(result)
            report.pixel_warnings += bool(pixel_findings(result.dataset))
            if not what_if:
                _write(result, target)
        if progress is not None:
            progress(done, len(files))
    return report


def check_output(inputs: Sequence[Path], out: Path) -> None:
    """Refuse inputs that do not exist, and an output folder that is a file or overlaps an
    input (inside it, or holding it).

    Raises:
        DeidentificationError: naming the input or the output and the fix.
    """
    target = out.resolve()
    if target.exists() and not target.is_dir():
        raise DeidentificationError(f"the output {out.name} is a file: give a folder")
    for given in inputs:
        if not given.exists():
            raise DeidentificationError(f"{given.name}: no such file or folder")
        source = given.resolve()
        if target == source or target.is_relative_to(source) or source.is_relative_to(target):
            raise DeidentificationError(
                f"the output folder {out.name} overlaps the input {given.name}: choose an output "
                "folder outside every input (an input is never written into)"
            )


def _input_files(inputs: Sequence[Path], out: Path) -> list[Path]:
    """The files of ``inputs``, in order (see :func:`check_output` for what is refused)."""
    check_output(inputs, out)
    files: list[Path] = []
    for given in inputs:
        source = given.resolve()
        if source.is_dir():
            found = (p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
            files.extend(sorted(found))
        else:
            files.append(source)
    return files


def _deidentify_file(
    path: Path, key: bytes, options: DeidOptions, report: DeidReport
) -> DeidResult | None:
    """One file de-identified; None (counted) when it is not DICOM or failed."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with pydicom_warnings_logged():
            dataset = pydicom.dcmread(path)
    except InvalidDicomError:
        report.not_dicom += 1
        return None
    except Exception as exc:  # pydicom raises many kinds on a hostile file
        report.failures.append((path, f"not a readable DICOM file ({type(exc).__name__})"))
        return None
    if "SOPInstanceUID" not in dataset:
        report.not_dicom += 1
        return None
    try:
        with pydicom_warnings_logged():
            return deidentify_dataset(dataset, key, options)
    except DeidentificationError as exc:
        report.failures.append((path, str(exc)))
        return None


def _target(out: Path, result: DeidResult) -> Path:
    ds = result.dataset
    study = str(ds.get("StudyInstanceUID", "") or "no-study")
    series = str(ds.get("SeriesInstanceUID", "") or "no-series")
    return out / study / series / f"{ds.SOPInstanceUID}.dcm"


def _write(result: DeidResult, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as partial, pydicom_warnings_logged():
        result.dataset.save_as(partial, enforce_file_format=True)
