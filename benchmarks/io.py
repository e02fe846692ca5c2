"""Image loading speed: Carina vs nibabel and SimpleITK on the same files, in the same run.

Makes a 512x512x300 int16 CT from the shipped tptbox CT (trilinear upsampling plus scanner-like
noise, so it compresses like a real scan), writes it as ``.nii.gz`` (gzip level 6, as dcm2niix does)
and as a 300-file DICOM series, then times each reader. Prints JSON.

    python benchmarks/io.py [--repeats 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from carina.data.dicom_series import write_dicom_series
from carina.data.sources import locate_sample
from carina.io import Volume, load_volume

SHAPE = (512, 512, 300)


def make_ct(workdir: Path) -> tuple[Path, Path]:
    """The benchmark's NIfTI file and DICOM folder, made once per work folder."""
    nifti, dicom = workdir / "ct_512x512x300.nii.gz", workdir / "ct_series"
    if nifti.exists() and dicom.is_dir():
        return nifti, dicom
    source = load_volume(locate_sample("spine_ct_image"))
    zoom = [n / s for n, s in zip(SHAPE, source.shape, strict=True)]
    upsampled = ndimage.zoom(source.array.astype(np.float32), zoom, order=1)
    noise = np.random.default_rng(0).normal(0.0, 12.0, SHAPE).astype(np.float32)
    array = np.clip(np.round(upsampled + noise), -1024, 3071).astype(np.int16)
    affine = source.affine @ np.diag([1 / z for z in zoom] + [1.0])
    image = nib.Nifti1Image(array, affine)
    image.header.set_data_dtype(np.int16)
    nib.openers.Opener.default_compresslevel = 6
    nib.save(image, nifti)
    dicom.mkdir()
    write_dicom_series(Volume(array=array, affine=affine), dicom)
    return nifti, dicom


def timed(function: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median and minimum wall time of ``function`` over ``repeats`` runs (after one warm-up)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4)}


def sitk_series(folder: Path) -> Any:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        nifti, dicom = make_ct(workdir)
        n = args.repeats
        nifti_times = {
            "carina": timed(lambda: load_volume(nifti), n),
            "nibabel_get_fdata": timed(lambda: nib.load(nifti).get_fdata(), n),
            "nibabel_dataobj": timed(lambda: np.asanyarray(nib.load(nifti).dataobj), n),
            "simpleitk": timed(lambda: sitk.GetArrayFromImage(sitk.ReadImage(str(nifti))), n),
        }
        dicom_times = {
            "carina": timed(lambda: load_volume(dicom), n),
            "simpleitk": timed(lambda: sitk_series(dicom), n),
        }
    fastest_other = min(
        nifti_times["nibabel_get_fdata"]["median_s"], nifti_times["simpleitk"]["median_s"]
    )
    result = {
        "benchmark": "io",
        "shape": list(SHAPE),
        "dtype": "int16",
        "repeats": n,
        "nifti_gz": nifti_times,
        "dicom_series_300": dicom_times,
        "ratios": {
            "nifti_carina_over_fastest_of_nibabel_simpleitk": round(
                nifti_times["carina"]["median_s"] / fastest_other, 3
            ),
            "nifti_goal": "<= 1.0",
            "dicom_carina_over_simpleitk": round(
                dicom_times["carina"]["median_s"] / dicom_times["simpleitk"]["median_s"], 3
            ),
            "dicom_goal": "<= 1.2",
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
