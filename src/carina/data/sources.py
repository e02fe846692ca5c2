"""Real sample files shipped inside installed packages, found without importing those packages.

The files are located through ``importlib.metadata``: tptbox (spine CT and MR with vertebra masks),
nilearn (the MNI152 2009a template and its tissue probability maps) and pydicom-data plus pydicom
(real DICOM objects in many transfer syntaxes).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from carina.errors import DatasetError


@dataclass(frozen=True)
class SampleFile:
    """A file shipped by an installed distribution."""

    name: str
    distribution: str
    path: str
    description: str
    licence: str

    @property
    def install_hint(self) -> str:
        """The command that installs the distribution holding this file."""
        if self.distribution == "tptbox":
            return "pip install --no-deps tptbox==1.1.0"
        return f"pip install {self.distribution}  (or: pip install 'carina[data]')"


_TPTBOX_LICENCE = "TPTBox test data, GPL-3.0 (github.com/Hendrik-code/TPTBox)"
_MNI_LICENCE = (
    "ICBM 2009a nonlinear symmetric template, Copyright (C) 1993-2009 Louis Collins, McConnell "
    "Brain Imaging Centre, Montreal Neurological Institute, McGill University; free use with "
    "the copyright notice kept (shipped by nilearn, BSD-3-Clause)"
)
_PYDICOM_LICENCE = "pydicom test files (MIT; see each file's source in pydicom-data)"

SAMPLES: dict[str, SampleFile] = {
    sample.name: sample
    for sample in [
        SampleFile(
            "spine_ct_image",
            "tptbox",
            "TPTBox/tests/sample_ct/sub-ct_label-22_ct.nii.gz",
            "lumbar spine CT, 73x47x73 at 1.5 mm, Hounsfield units",
            _TPTBOX_LICENCE,
        ),
        SampleFile(
            "spine_ct_vertebrae",
            "tptbox",
            "TPTBox/tests/sample_ct/sub-ct_seg-vert_label-22_msk.nii.gz",
            "vertebra mask of the spine CT (labels 21, 22, 23)",
            _TPTBOX_LICENCE,
        ),
        SampleFile(
            "spine_mr_image",
            "tptbox",
            "TPTBox/tests/sample_mri/sub-mri_label-6_T2w.nii.gz",
            "cervical spine T2-weighted MR, 68x52x67 at 1.5 mm",
            _TPTBOX_LICENCE,
        ),
        SampleFile(
            "spine_mr_vertebrae",
            "tptbox",
            "TPTBox/tests/sample_mri/sub-mri_seg-vert_label-6_msk.nii.gz",
            "vertebra and disc mask of the spine MR (5-7, discs 105-106, endplates 205-207)",
            _TPTBOX_LICENCE,
        ),
        SampleFile(
            "mni152_t1",
            "nilearn",
            "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
            "MNI152 2009a T1 template, 197x233x189 at 1 mm",
            _MNI_LICENCE,
        ),
        SampleFile(
            "mni152_gm",
            "nilearn",
            "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
            "MNI152 2009a grey-matter probability map",
            _MNI_LICENCE,
        ),
        SampleFile(
            "mni152_wm",
            "nilearn",
            "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
            "MNI152 2009a white-matter probability map",
            _MNI_LICENCE,
        ),
        SampleFile(
            "dicom_enhanced_mr",
            "pydicom-data",
            "data_store/data/emri_small.dcm",
            "enhanced multi-frame MR, 10 frames of 64x64",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_enhanced_mr_rle",
            "pydicom-data",
            "data_store/data/emri_small_RLE.dcm",
            "the enhanced MR, RLE lossless",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_enhanced_mr_jpeg2000",
            "pydicom-data",
            "data_store/data/emri_small_jpeg_2k_lossless.dcm",
            "the enhanced MR, JPEG 2000 lossless",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_enhanced_mr_jpegls",
            "pydicom-data",
            "data_store/data/emri_small_jpeg_ls_lossless.dcm",
            "the enhanced MR, JPEG-LS lossless",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_enhanced_mr_big_endian",
            "pydicom-data",
            "data_store/data/emri_small_big_endian.dcm",
            "the enhanced MR, explicit VR big endian",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_enhanced_ct",
            "pydicom-data",
            "data_store/data/eCT_Supplemental.dcm",
            "enhanced CT with functional groups, 2 frames of 512x512",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_ct_slice",
            "pydicom",
            "pydicom/data/test_files/CT_small.dcm",
            "one CT slice, 128x128",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_mr_slice",
            "pydicom",
            "pydicom/data/test_files/MR_small.dcm",
            "one MR slice, 64x64",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_mr_slice_jpeg2000",
            "pydicom",
            "pydicom/data/test_files/MR_small_jp2klossless.dcm",
            "the MR slice, JPEG 2000 lossless",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_mr_slice_jpegls",
            "pydicom",
            "pydicom/data/test_files/MR_small_jpeg_ls_lossless.dcm",
            "the MR slice, JPEG-LS lossless",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_mr_slice_rle",
            "pydicom",
            "pydicom/data/test_files/MR_small_RLE.dcm",
            "the MR slice, RLE lossless",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_rt_plan",
            "pydicom",
            "pydicom/data/test_files/rtplan.dcm",
            "an RT plan: a DICOM object without pixel data",
            _PYDICOM_LICENCE,
        ),
        SampleFile(
            "dicom_rt_dose",
            "pydicom",
            "pydicom/data/test_files/rtdose.dcm",
            "an RT dose grid: legacy multi-frame with a frame offset vector",
            _PYDICOM_LICENCE,
        ),
    ]
}


def locate_sample(name: str) -> Path:
    """The path of a shipped sample file.

    Raises:
        DatasetError: the name is unknown, or its package is not installed.
    """
    if name not in SAMPLES:
        raise DatasetError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    sample = SAMPLES[name]
    try:
        distribution = importlib.metadata.distribution(sample.distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DatasetError(
            f"sample {name!r} ships with {sample.distribution}, which is not installed: "
            f"{sample.install_hint}"
        ) from exc
    path = Path(str(distribution.locate_file(sample.path)))
    if not path.is_file():
        raise DatasetError(
            f"sample {name!r} is missing from the installed {sample.distribution} "
            f"{distribution.version}: {sample.install_hint}"
        )
    return path


def sample_available(name: str) -> bool:
    """True when :func:`locate_sample` would find the file."""
    try:
        locate_sample(name)
    except DatasetError:
        return False
    return True
