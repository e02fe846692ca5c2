"""The PHI guard's look at a file that enters the server: what in it may identify a patient, and
the file made safe (``deid-on-ingest``).

The format is sniffed, never taken from the name: DICOM (``DICM`` at 128, or parsed), zips (every
member, after bounded extraction), NIfTI (``descrip``, ``aux_file``, ``intent_name``, ``db_name``
and the header extensions: a DICOM extension is scanned as DICOM, others as free text), NRRD and
MetaImage (every key/value line of the header). Findings name an attribute and a reason, never a
value. Image ids and file names are scanned as free text (a DICOM UID is an id, not text).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import shutil
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from carina.deid.dataset import deidentify_dataset
from carina.deid.keys import load_key
from carina.deid.options import DeidOptions
from carina.deid.scan import Finding, pydicom_warnings_logged, scan_dataset
from carina.deid.text import text_findings
from carina.errors import IdentifiedDataError, UnsafeZipError
from carina.files import atomic_path, checked_members, iter_member_bytes
from carina.settings import Settings

#: The header keys of NRRD and MetaImage that describe the grid and the encoding, not a person.
_GRID_KEYS = re.compile(
    r"(?i)^(type|dimension|space|sizes|space directions|space origin|space units|kinds|endian|"
    r"encoding|spacings|thicknesses|axis mins|axis maxs|centers|centerings|labels|units|"
    r"measurement frame|data file|datafile|byte skip|byteskip|line skip|content|min|max|"
    r"oldmin|oldmax|block size|sample units|objecttype|ndims|binarydata|binarydatabyteordermsb|"
    r"compresseddata|compresseddatasize|transformmatrix|offset|centerofrotation|anatomical"
    r"orientation|elementspacing|dimsize|elementtype|elementdatafile|elementnumberofchannels|"
    r"headersize|position|orientation|rotation|elementsize|elementtype)$"
)
_PERSONAL_KEY = re.compile(r"(?i)patient|birth|accession|physician|operator|institution")
_NIFTI_TEXT = ("descrip", "aux_file", "intent_name", "db_name")
_UID = re.compile(r"^\d+(\.\d+)+$")
#: Runs of digits in a name are slice numbers and dates more often than anything else: they count
#: only when the name says it is a record number.
_NUMBERS_IN_NAMES = {"an MRN-like number", "a telephone number"}


class Named(Protocol):
    """A file that entered the server: where it is, and the name its sender gave it."""

    @property
    def path(self) -> Path: ...

    @property
    def filename(self) -> str: ...


#: How much of each zip member is read first (a DICOM header is rarely longer).
_ZIP_HEAD = 64 << 10
#: The PixelData tag as little- and big-endian bytes: where a header ends.
_PIXEL_DATA = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
#: How much of an uploaded header is read (NIfTI extensions and NRRD headers are small).
_HEADER_BYTES = 1 << 20


ENFORCE, DEID, WARN, OFF = "enforce", "deid-on-ingest", "warn", "off"


@dataclass(frozen=True)
class GuardOutcome:
    """What the guard did with a request's data: ``action`` (``passed``, ``warned``,
    ``deidentified``) and the attributes found."""

    action: str
    tags: list[str]


@dataclass(frozen=True)
class PhiGuard:
    """The server's guard (see the module's description).

    Attributes:
        mode: enforce, deid-on-ingest, warn or off.
        allow: attributes the operator accepts.
        key_file: the key deid-on-ingest pseudonymises with.
        max_bytes: the most an upload may unpack to.
    """

    mode: str
    allow: frozenset[str]
    key_file: Path
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings, workspace: Path) -> PhiGuard:
        key_file = settings.deid_key_file or workspace / "secrets" / "deid.key"
        allow = frozenset(settings.phi_allow)
        return cls(settings.phi_guard, allow, key_file, settings.max_image_bytes)

    def check_files(self, uploads: Sequence[Named], *, image_id: str | None = None) -> GuardOutcome:
        """Look at a request's files, their names and the image id it gives; under
        ``deid-on-ingest`` replace each file that needs it with its de-identified copy.

        Raises:
            IdentifiedDataError: ``enforce`` and something was found; or ``deid-on-ingest`` and
                what cannot be de-identified was found (an image id, or what is left after).
        """
        if self.mode == OFF:
            return GuardOutcome("passed", [])
        names = name_findings(image_id, "image id") if image_id else []
        names += [f for u in uploads for f in name_findings(u.filename, "file name")]
        names = self._kept(names)
        in_files = {id(u): self._kept(self._findings([u])) for u in uploads}
        found = list(dict.fromkeys([*names, *(f for fs in in_files.values() for f in fs)]))
        if not found:
            return GuardOutcome("passed", [])
        if self.mode == WARN:
            return GuardOutcome("warned", _tags(found))
        if self.mode == ENFORCE:
            raise IdentifiedDataError("the upload", [(f.tag, f.reason) for f in found])
        if names:  # ids and names are the client's to change (a name may become an id)
            raise IdentifiedDataError("the image id", [(f.tag, f.reason) for f in names])
        key = load_key(self.key_file, create=True)
        for upload in (u for u in uploads if in_files[id(u)]):
            deidentify_file(upload.path, key, max_bytes=self.max_bytes)
        left = self._kept(self._findings(uploads))
        if left:
            raise IdentifiedDataError("the de-identified upload", [(f.tag, f.reason) for f in left])
        return GuardOutcome("deidentified", _tags(found))

    def check_series(self, folder: Path) -> list[str]:
        """Look at a series fetched from a PACS (before it enters the cache): the attributes
        found under ``warn``, nothing under ``off``.

        Raises:
            IdentifiedDataError: ``enforce`` or ``deid-on-ingest`` and something was found (a
                PACS datastore cannot keep a de-identified copy: its SEGs must reference the
                PACS's own series).
        """
        if self.mode == OFF:
            return []
        found = [
            f
            for path in sorted(folder.iterdir())
            for f in file_findings(path, max_bytes=self.max_bytes, allow=self.allow)
        ]
        found = list(dict.fromkeys(found))
        if found and self.mode != WARN:
            raise IdentifiedDataError(
                "the series from the PACS",
                [(f.tag, f.reason) for f in found]
                + [
                    (
                        "guard",
                        "a PACS datastore needs de-identified series, or CARINA_PHI_GUARD=warn",
                    )
                ],
            )
        return _tags(found)

    def _kept(self, found: list[Finding]) -> list[Finding]:
        """``found`` without what the operator allows."""
        return [f for f in found if f.tag.rsplit(">", 1)[-1] not in self.allow]

    def _findings(self, uploads: Sequence[Named]) -> list[Finding]:
        return [
            f
            for upload in uploads
            for f in file_findings(upload.path, max_bytes=self.max_bytes, allow=self.allow)
        ]


def _tags(found: list[Finding]) -> list[str]:
    return sorted({f.tag for f in found})


def name_findings(name: str, what: str) -> list[Finding]:
    """Why an image id or a file name (``what``: ``image id``, ``file name``) looks identifying."""
    stem = re.sub(r"(\.(nii|nrrd|nhdr|mha|mhd|dcm|zip|gz|seg))+$", "", name.strip(), flags=re.I)
    if not stem or _UID.fullmatch(stem):
        return []
    labelled = re.search(r"(?i)mrn|mr#|record", stem)
    return [
        Finding(what, reason)
        for reason in text_findings(stem)
        if reason not in _NUMBERS_IN_NAMES or (labelled and reason == "an MRN-like number")
    ]


def file_findings(
    path: Path, *, max_bytes: int, allow: frozenset[str] = frozenset()
) -> list[Finding]:
    """What in the file at ``path`` may identify a patient (empty: nothing, or not a format that
    carries text about a person)."""
    kind = sniff(path)
    if kind == "dicom":
        return _dicom_findings(_dicom_objects(path, max_bytes=max_bytes), allow)
    if kind == "zip" and zipfile.is_zipfile(path):  # a broken zip: its reader says what is wrong
        return _dicom_findings(_zip_objects(path, max_bytes=max_bytes), allow)
    if kind == "nifti":
        return _nifti_findings(path, allow)
    if kind in ("nrrd", "mha"):
        return _header_findings(_head(path), allow)
    return []


def deidentify_file(path: Path, key: bytes, *, max_bytes: int) -> None:
    """Make the file at ``path`` what ``deid-on-ingest`` keeps, in place: DICOM (a file, or each
    object of a zip) de-identified by the basic profile with the research options; NIfTI, NRRD or
    MetaImage rewritten with Carina's writer (the grid and the voxels, no text)."""
    kind = sniff(path)
    options = DeidOptions()
    if kind == "dicom":
        import pydicom

        result = deidentify_dataset(pydicom.dcmread(path, force=True), key, options)
        with atomic_path(path) as partial:
            result.dataset.save_as(partial, enforce_file_format=True)
    elif kind == "zip":
        _deidentify_zip(path, key, options, max_bytes=max_bytes)
    elif kind in ("nifti", "nrrd", "mha"):
        import dataclasses

        from carina.io import load_volume, save_volume

        suffix = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}[kind]
        with _named(path, suffix) as named:
            volume = load_volume(named, max_bytes=max_bytes)
        # the grid and the voxels; nothing of the source header (its text fields, extensions)
        volume = dataclasses.replace(
            volume, meta=dataclasses.replace(volume.meta, nifti_header=None)
        )
        clean = path.with_name(f"{path.name}.clean{suffix}")
        save_volume(volume, clean)
        clean.replace(path)


def sniff(path: Path) -> str:
    """``dicom``, ``zip``, ``nifti``, ``nrrd``, ``mha`` or ``other``, from the bytes."""
    head = _head(path, 512)
    if head[:2] == b"PK":
        return "zip"
    if head[128:132] == b"DICM":
        return "dicom"
    if head[344:348] in (b"n+1\0", b"ni1\0", b"n+2\0"):
        return "nifti"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if re.match(rb"(?i)\s*(ObjectType|NDims)\s*=", head):
        return "mha"
    return "other"


def _head(path: Path, size: int = _HEADER_BYTES) -> bytes:
    """The first bytes of the file, through gzip when it is compressed."""
    with path.open("rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        stream: Any = gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw
        try:
            return bytes(stream.read(size))
        except (OSError, EOFError, zlib.error):
            return b""  # a broken file: its reader says what is wrong with it


def _dicom_objects(path: Path, *, max_bytes: int) -> Iterator[Any]:
    import pydicom

    yield pydicom.dcmread(path, stop_before_pixels=True, force=True)


def _zip_objects(path: Path, *, max_bytes: int) -> Iterator[Any]:
    import pydicom

    with zipfile.ZipFile(path) as archive:
        for member in checked_members(archive, max_bytes=max_bytes):
            with archive.open(member) as stream:  # the header only: it comes before the pixels
                head = stream.read(_ZIP_HEAD)
            if head[128:132] != b"DICM":
                continue
            if len(head) == _ZIP_HEAD and not any(tag in head for tag in _PIXEL_DATA):
                # the header goes on past the head (or no pixels at all): the whole member
                (_, head), *_ = iter_member_bytes(archive, [member], max_bytes=max_bytes)
            yield pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True, force=True)


def _dicom_findings(objects: Iterator[Any], allow: frozenset[str]) -> list[Finding]:
    found: dict[Finding, None] = {}
    try:
        for dataset in objects:
            found.update(dict.fromkeys(scan_dataset(dataset, allow=allow)))
    except UnsafeZipError:
        raise
    except Exception as exc:  # pydicom raises many kinds on a hostile file
        found[Finding("file", f"a malformed DICOM object ({type(exc).__name__})")] = None
    return list(found)


def _nifti_findings(path: Path, allow: frozenset[str]) -> list[Finding]:
    import nibabel as nib
    import pydicom

    try:
        with _named(path, ".nii.gz" if _gzipped(path) else ".nii") as named:
            header: Any = nib.load(named).header
    except Exception:  # a broken header: its reader says what is wrong with it
        return []
    found = []
    for field in _NIFTI_TEXT:
        if field in header and field not in allow:
            text = bytes(header[field]).split(b"\0")[0].decode("latin-1")
            found += [Finding(f"NIfTI {field}", reason) for reason in text_findings(text)]
    for extension in getattr(header, "extensions", []):
        try:
            with pydicom_warnings_logged():  # nibabel parses a DICOM extension with pydicom
                content = extension.get_content()
        except Exception:  # an unparsable extension is itself a finding
            found.append(Finding("NIfTI extension", "an unreadable header extension"))
            continue
        if isinstance(content, pydicom.Dataset) or extension.get_code() == 2:
            try:
                with pydicom_warnings_logged():
                    dataset = (
                        content
                        if isinstance(content, pydicom.Dataset)
                        else pydicom.dcmread(io.BytesIO(bytes(content)), force=True)
                    )
            except Exception:  # an unparsable DICOM extension is itself a finding
                found.append(Finding("NIfTI extension", "an unreadable DICOM header extension"))
                continue
            found += [
                Finding(f"NIfTI DICOM extension>{f.tag}", f.reason)
                for f in scan_dataset(dataset, allow=allow)
            ]
        else:
            data = content if isinstance(content, bytes) else str(content).encode()
            text = data.decode("latin-1", errors="replace")
            found += [Finding("NIfTI extension", reason) for reason in text_findings(text)]
    return found


def _header_findings(head: bytes, allow: frozenset[str]) -> list[Finding]:
    """The key/value lines of an NRRD or MetaImage header (NRRD's ends at its first empty line,
    MetaImage's at ``ElementDataFile``): values of keys other than the grid's, as free text; a
    key that names a patient or site attribute is a finding when it has a value."""
    nrrd = head.startswith(b"NRRD")
    lines = head.split(b"\n\n", 1)[0].splitlines()[1:] if nrrd else head.splitlines()
    found = []
    for raw in lines:
        match = re.match(r"\s*([^:=#][^:=]*?)\s*(?::=|:|=)\s*(.*)$", raw.decode("latin-1"))
        if match is None:
            continue
        key, value = match.group(1), match.group(2).strip()
        if key.lower().replace(" ", "") == "elementdatafile":
            break
        if _GRID_KEYS.match(key) or key in allow or not value:
            continue
        reasons = text_findings(value)
        if not reasons and _PERSONAL_KEY.search(key):
            reasons = ["a patient or site attribute"]
        found += [Finding(f"header {key[:40]}", reason) for reason in reasons]
    return found


def _deidentify_zip(path: Path, key: bytes, options: DeidOptions, *, max_bytes: int) -> None:
    import pydicom

    with zipfile.ZipFile(path) as archive:
        members = checked_members(archive, max_bytes=max_bytes)
        with atomic_path(path) as partial, zipfile.ZipFile(partial, "w") as out:
            for number, (_, data) in enumerate(
                iter_member_bytes(archive, members, max_bytes=max_bytes)
            ):
                if data[128:132] != b"DICM":
                    continue  # only DICOM objects are kept: other members may be anything
                result = deidentify_dataset(pydicom.dcmread(io.BytesIO(data)), key, options)
                buffer = io.BytesIO()
                result.dataset.save_as(buffer, enforce_file_format=True)
                out.writestr(f"{number:05d}.dcm", buffer.getvalue())


def _gzipped(path: Path) -> bool:
    with path.open("rb") as raw:
        return raw.read(2) == b"\x1f\x8b"


@contextlib.contextmanager
def _named(path: Path, suffix: str) -> Iterator[Path]:
    """A hard link to ``path`` whose name ends in ``suffix`` (readers choose by it), removed
    after use."""
    named = path.with_name(f"{path.name}.named{suffix}")
    named.unlink(missing_ok=True)
    try:
        named.hardlink_to(path)
    except OSError:
        shutil.copyfile(path, named)
    try:
        yield named
    finally:
        named.unlink(missing_ok=True)
