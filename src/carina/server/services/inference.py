"""The files of an inference call: the uploaded parts to a volume, a label map to result bytes.

Shared by every API: uploads are read under generated names (a client's file name may identify a
patient), several parts form a DICOM series, and results are written in the format asked.
Everything here is blocking and runs in the worker pool.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carina.errors import RequestError
from carina.io import Volume, load_volume, save_volume
from carina.io.formats import READ_SUFFIXES, WRITE_SUFFIXES
from carina.server.services.params import as_bool

#: Suffixes kept from an uploaded file's name to choose its reader (others are sniffed), and the
#: A DICOM SEG result (``result_extension=.dcm``, MONAI Label's ``output=dicom_seg``).
SEG_SUFFIX = ".dcm"
#: result formats a client may ask for (``result_extension``): those of ``carina.io``, and SEG.
KNOWN_SUFFIXES = tuple(sorted(READ_SUFFIXES, key=len, reverse=True))
RESULT_SUFFIXES = (*WRITE_SUFFIXES, SEG_SUFFIX)
_DTYPES = {"uint8": np.uint8, "uint16": np.uint16}


@dataclass(frozen=True)
class Upload:
    """One uploaded file part, already on local disk (never under its client-given name)."""

    field: str
    filename: str
    path: Path


@dataclass
class InferenceOutput:
    """What a call returns: the params for the client and the result image (None: params only)."""

    params: dict[str, Any]
    image: bytes | None
    image_name: str
    timings: dict[str, float] = field(default_factory=dict)


def basename(filename: str) -> str:
    """The file name after the last ``/`` or ``\\`` (client paths are never used as paths)."""
    return re.split(r"[/\\]", filename)[-1].strip()


def known_suffix(filename: str) -> str:
    """The reader-choosing suffix of a client's file name, or ``""`` to sniff the content."""
    name = basename(filename).lower()
    return next((s for s in KNOWN_SUFFIXES if name.endswith(s) and len(name) > len(s)), "")


def choose_inputs(uploads: Sequence[Upload]) -> list[Upload]:
    """The image parts, per spec 2.3 rule 1: ``image``, else ``datapoint``, else ``file(s)``,
    else every file part in name order (``image0..N`` of a DICOM series)."""
    for wanted in (("image",), ("datapoint",), ("file", "files")):
        chosen = [u for u in uploads if u.field in wanted]
        if chosen:
            return chosen
    return sorted(uploads, key=lambda u: _natural(u.field))


def _natural(text: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def read_uploads(uploads: Sequence[Upload], scratch: Path, *, max_bytes: int) -> Volume:
    """The volume in the chosen upload parts (one file, or several as one DICOM series).

    Raises:
        RequestError: no file part.
        ImageReadError: the image cannot be read (the message names the client's file name).
    """
    chosen = choose_inputs(uploads)
    if not chosen:
        raise RequestError("no image: send the image as a file part (e.g. 'image')")
    if len(chosen) == 1:
        return load_volume(_named_copy(chosen[0], scratch, 0), max_bytes=max_bytes)
    folder = scratch / "series"
    folder.mkdir()
    for n, upload in enumerate(chosen):
        _named_copy(upload, folder, n)
    return load_volume(folder, max_bytes=max_bytes)


def _named_copy(upload: Upload, folder: Path, n: int) -> Path:
    """The upload under a generated name that keeps only its format suffix (hard link when
    possible): the client's file name may identify a patient and never reaches a message or log.
    """
    target = folder / f"image{n:05d}{known_suffix(upload.filename)}"
    try:
        target.hardlink_to(upload.path)
    except OSError:
        shutil.copyfile(upload.path, target)
    return target


def result_format(params: dict[str, Any], *, input_suffix: str) -> tuple[str, str]:
    """The result's file suffix and dtype name a call asks for: ``result_extension`` (default:
    ``.png`` for a PNG input, else ``.nii.gz``), ``result_dtype`` (``uint8`` default, ``uint16``)
    as the browser clients send them; ``result_compress`` is checked here (:func:`encode_result`
    writes ``.nrrd`` and ``.mha`` raw when it is false).

    Raises:
        RequestError: an unknown format or dtype.
    """
    default = ".png" if input_suffix == ".png" else ".nii.gz"
    suffix = str(params.get("result_extension") or default).lower()
    if not suffix.startswith("."):
        suffix = "." + suffix
    if suffix not in RESULT_SUFFIXES:
        raise RequestError(
            f"params.result_extension: one of {', '.join(RESULT_SUFFIXES)}, not {suffix!r}"[:300]
        )
    dtype_name = str(params.get("result_dtype") or "uint8").lower()
    if dtype_name not in _DTYPES:
        raise RequestError(f"params.result_dtype: uint8 or uint16, not {dtype_name!r}"[:300])
    as_bool(params.get("result_compress", True), "result_compress")
    return suffix, dtype_name


def encode_result(
    volume: Volume,
    params: dict[str, Any],
    *,
    input_suffix: str,
    folder: Path,
    labels: Sequence[str] = (),
    dicom: Callable[[], list[Any]] | None = None,
) -> tuple[bytes, str, float]:
    """The result image as file bytes in the format asked (:func:`result_format`); its file
    name; seconds taken. A uint8 result that holds values over 255 is written as uint16. The
    file is written in ``folder`` (the request's scratch folder) and removed. ``.dcm`` asks for a
    DICOM SEG: ``dicom()`` gives the source series' datasets, ``labels`` the segments' names.

    Raises:
        RequestError: an unknown format or dtype, or a SEG asked of an image that is not DICOM.
    """
    start = time.perf_counter()
    suffix, dtype_name = result_format(params, input_suffix=input_suffix)
    array = np.asarray(volume.array)
    if dtype_name == "uint8" and array.size and int(array.max()) > 255:
        dtype_name = "uint16"
    result = volume.with_array(array.astype(_DTYPES[dtype_name], copy=False))
    path = folder / f"result-{uuid.uuid4().hex}{suffix}"
    try:
        if suffix == SEG_SUFFIX:
            _write_seg(result, dicom, labels, path)
        else:
            compress = as_bool(params.get("result_compress", True), "result_compress")
            save_volume(result, path, compress=compress)
        data = path.read_bytes()
    finally:
        path.unlink(missing_ok=True)
    return data, f"result{suffix}", time.perf_counter() - start


def _write_seg(
    result: Volume,
    dicom: Callable[[], list[Any]] | None,
    labels: Sequence[str],
    path: Path,
) -> None:
    from carina.io.dicom_seg import write_seg

    datasets = dicom() if dicom is not None else []
    if not datasets:
        raise RequestError(
            "a DICOM SEG result (result_extension .dcm, output=dicom_seg) references the DICOM "
            "series it was computed on: send the image as DICOM (a series or its zip), or ask "
            "for .nii.gz"
        )
    write_seg(result, datasets, list(labels), path)
