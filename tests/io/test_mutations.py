"""Every decoder error maps to ImageReadError: real files of each format, truncated and with bytes
changed at seeded random places, are read or refused with a message, never with another error."""

from __future__ import annotations

import io
import random
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from carina.errors import ImageReadError
from carina.io import Volume, load_volume, save_volume

MUTATIONS = 1000


def seed_file(suffix: str, folder: Path, ct_series: Path) -> bytes:
    """A small valid file of the format (a DICOM file or zip from the real CT series)."""
    if suffix in (".dcm", ".zip"):
        files = sorted(ct_series.iterdir())[:3]
        if suffix == ".dcm":
            return files[0].read_bytes()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in files:
                archive.write(path, path.name)
        return buffer.getvalue()
    array = np.arange(12 * 10 * 8, dtype=np.int16).reshape(12, 10, 8)
    volume = Volume(array=array, affine=np.diag([0.8, 0.9, 2.0, 1.0]))
    if suffix == ".png":
        volume = Volume(array=array[:, :, 0].astype(np.uint8), affine=np.eye(4), spatial_ndim=2)
    path = folder / f"seed{suffix}"
    save_volume(volume, path)
    return path.read_bytes()


def mutated(data: bytes, rng: random.Random) -> bytes:
    """``data`` cut short, or with 1-8 bytes changed (mostly in the header)."""
    if rng.random() < 0.3:
        return data[: rng.randrange(len(data))]
    changed = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        span = min(len(changed), 600) if rng.random() < 0.7 else len(changed)
        changed[rng.randrange(span)] = rng.randrange(256)
    return bytes(changed)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".dcm", ".zip"])
def test_mutated_files_are_read_or_refused_clearly(
    tmp_path: Path, ct_series: Path, suffix: str
) -> None:
    data = seed_file(suffix, tmp_path, ct_series)
    rng = random.Random(suffix)
    target = tmp_path / f"case{suffix}"
    for _ in range(MUTATIONS):
        target.write_bytes(mutated(data, rng))
        with warnings.catch_warnings():  # the libraries' own warnings are not errors here
            warnings.simplefilter("ignore")
            try:
                load_volume(target, max_bytes=50_000_000)
            except ImageReadError as exc:
                assert str(exc).startswith(f"case{suffix}: ")
