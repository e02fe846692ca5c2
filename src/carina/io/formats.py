"""Choosing a reader or writer: by file suffix first, else by the first bytes of the content."""

from __future__ import annotations

import zlib
from pathlib import Path

from carina.errors import ImageReadError, ImageWriteError
from carina.io.volume import ImageFormat

#: Formats and suffixes :func:`carina.io.load_volume` reads by suffix (others are sniffed).
READ_SUFFIXES: dict[str, ImageFormat] = {
    ".nii.gz": ImageFormat.NIFTI,
    ".nii": ImageFormat.NIFTI,
    ".nrrd": ImageFormat.NRRD,
    ".nhdr": ImageFormat.NRRD,
    ".mha": ImageFormat.METAIMAGE,
    ".mhd": ImageFormat.METAIMAGE,
    ".dcm": ImageFormat.DICOM,
    ".dicom": ImageFormat.DICOM,
    ".zip": ImageFormat.DICOM,
    ".png": ImageFormat.PNG,
    ".jpg": ImageFormat.JPEG,
    ".jpeg": ImageFormat.JPEG,
}

#: Formats and suffixes :func:`carina.io.save_volume` writes (single files only).
WRITE_SUFFIXES: dict[str, ImageFormat] = {
    ".nii.gz": ImageFormat.NIFTI,
    ".nii": ImageFormat.NIFTI,
    ".nrrd": ImageFormat.NRRD,
    ".mha": ImageFormat.METAIMAGE,
    ".png": ImageFormat.PNG,
}

_NIFTI_MAGICS = (b"n+1\0", b"ni1\0", b"n+2\0", b"ni2\0")


def suffix_of(path: Path) -> str:
    """The lower-case suffix that names a format, ``.nii.gz`` counted as one."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def read_format(path: Path) -> ImageFormat:
    """The format to read ``path`` with: a folder is a DICOM series, else suffix, else content.

    Raises:
        ImageReadError: when neither the suffix nor the content names a supported format.
    """
    if path.is_dir():
        return ImageFormat.DICOM
    suffix = suffix_of(path)
    if suffix in READ_SUFFIXES:
        return READ_SUFFIXES[suffix]
    try:
        with path.open("rb") as stream:
            head = stream.read(1024)
    except OSError as exc:
        raise ImageReadError(path, f"cannot open the file ({exc.strerror})") from exc
    sniffed = sniff_format(head)
    if sniffed is None:
        known = ", ".join(sorted(READ_SUFFIXES))
        shown = f"suffix {suffix!r}" if suffix else "no suffix"
        raise ImageReadError(
            path, f"unknown image format ({shown}, content not recognised); supported: {known}"
        )
    return sniffed


def sniff_format(head: bytes) -> ImageFormat | None:
    """The format named by a file's first bytes (at least 352 of them), or None."""
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return ImageFormat.PNG
    if head[:3] == b"\xff\xd8\xff":
        return ImageFormat.JPEG
    if head[128:132] == b"DICM":
        return ImageFormat.DICOM
    if head[:4] == b"PK\x03\x04":
        return ImageFormat.DICOM
    if head[:4] == b"NRRD":
        return ImageFormat.NRRD
    if head[:2] == b"\x1f\x8b":
        try:
            inner = zlib.decompressobj(wbits=31).decompress(head)
        except zlib.error:
            return None
        return ImageFormat.NIFTI if _is_nifti(inner) else None
    if _is_nifti(head):
        return ImageFormat.NIFTI
    text = head[:256]
    if b"ObjectType" in text or (b"NDims" in text and b"ElementType" in text):
        return ImageFormat.METAIMAGE
    return None


def write_format(path: Path) -> ImageFormat:
    """The format to write ``path`` in, from its suffix.

    Raises:
        ImageWriteError: for a suffix Carina does not write.
    """
    suffix = suffix_of(path)
    if suffix not in WRITE_SUFFIXES:
        known = ", ".join(WRITE_SUFFIXES)
        raise ImageWriteError(
            path, f"cannot write {suffix or 'files without a suffix'}; use {known}"
        )
    return WRITE_SUFFIXES[suffix]


def _is_nifti(head: bytes) -> bool:
    return head[344:348] in _NIFTI_MAGICS or head[4:8] in _NIFTI_MAGICS
