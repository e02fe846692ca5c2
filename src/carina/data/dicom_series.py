"""Write a volume as a classic single-frame DICOM series (real pixels, true geometry).

No multi-slice CT series ships with the installed packages, so tests and benchmarks make one from a
shipped volume. The files are CT (or MR) Image Storage objects with the volume's exact geometry:
``i`` runs along the rows, ``j`` down the columns and ``k`` across the slices, as Carina reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from carina.io.volume import LPS_TO_RAS, Volume

_SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    modality: str = "CT",
    rescale_intercept: int | None = None,
    series_uid: str | None = None,
    description: str = "carina test series",
) -> list[Path]:
    """Write ``volume`` (integer voxels) as one single-frame DICOM file per slice ``k``.

    The stored values are unsigned, ``voxel - rescale_intercept``, so reading the series back
    exercises the rescale. File names are random, so that nothing can rely on their order.

    Args:
        volume: a 3D volume with an integer array.
        folder: an existing folder to write into.
        modality: ``CT`` or ``MR``.
        rescale_intercept: the intercept stored in every slice; by default the volume's minimum
            when negative (as CT stores HU), else 0.
        series_uid: the SeriesInstanceUID; a new one by default.
        description: the SeriesDescription.

    Returns:
        The files written, in slice order.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    if volume.spatial_ndim != 3 or volume.array.ndim != 3 or volume.array.dtype.kind not in "iu":
        raise ValueError("write_dicom_series takes a 3D volume of integers")
    if rescale_intercept is None:
        rescale_intercept = min(0, int(volume.array.min()))
    stored = volume.array.astype(np.int64) - rescale_intercept
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError("voxels minus the intercept do not fit unsigned 16 bits")
    lps = LPS_TO_RAS @ volume.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_direction, column_direction = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    folder = Path(folder)
    rng = np.random.default_rng()
    written = []
    for k in range(volume.array.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(_SOP_CLASS[modality])
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{rng.integers(1 << 40):011x}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesDescription = description
        ds.PatientName, ds.PatientID = "Anonymous", "carina-test"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_direction, *column_direction)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = volume.array.shape[1], volume.array.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = str(rescale_intercept), "1"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T.astype("<u2")).tobytes()
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        written.append(path)
    return written
