"""Write a volume as a classic single-frame DICOM series (real pixels, true geometry).

No multi-slice CT series ships with the installed packages, so tests and benchmarks make one from a
shipped volume. The files are CT (or MR) Image Storage objects with the volume's exact geometry:
``i`` runs along the rows, ``j`` down the columns and ``k`` across the slices, as Carina reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

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
    from pydicom.uid import generate_uid

    if volume.spatial_ndim != 3 or volume.array.ndim != 3 or volume.array.dtype.kind not in "iu":
        raise ValueError("write_dicom_series takes a 3D volume of integers")
    if rescale_intercept is None:
        rescale_intercept = min(0, int(volume.array.min()))
    stored = volume.array.astype(np.int64) - rescale_intercept
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError("voxels minus the intercept do not fit unsigned 16 bits")
    geometry = _SeriesGeometry.of(volume)
    common = {
        "Modality": modality,
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": series_uid or generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
        "SeriesDescription": description,
        "PatientName": "",  # the shipped data is public and de-identified: the series says so
        "PatientID": "PAT-CARINASAMPLE",
        "PatientIdentityRemoved": "YES",
        "DeidentificationMethod": "Carina sample series made from shipped de-identified data",
        "RescaleIntercept": str(rescale_intercept),
        "RescaleSlope": "1",
    }
    rng = np.random.default_rng()
    written = []
    for k in range(volume.array.shape[2]):
        path = Path(folder) / f"{rng.integers(1 << 40):011x}.dcm"
        dataset = _slice_dataset(path, _SOP_CLASS[modality], geometry, k, stored[:, :, k])
        for keyword, value in common.items():
            setattr(dataset, keyword, value)
        pydicom.dcmwrite(path, dataset, enforce_file_format=True)
        written.append(path)
    return written


@dataclass(frozen=True)
class _SeriesGeometry:
    """Where a series' slices sit, in DICOM's LPS patient coordinates."""

    lps: npt.NDArray[np.float64]
    spacing: npt.NDArray[np.float64]

    @classmethod
    def of(cls, volume: Volume) -> _SeriesGeometry:
        lps = LPS_TO_RAS @ volume.affine
        return cls(lps, np.linalg.norm(lps[:3, :3], axis=0))

    def position(self, k: int) -> list[str]:
        return [f"{v:.6f}" for v in self.lps[:3, 3] + k * self.lps[:3, 2]]

    def orientation(self) -> list[str]:
        rows, columns = self.lps[:3, 0] / self.spacing[0], self.lps[:3, 1] / self.spacing[1]
        return [f"{v:.8f}" for v in (*rows, *columns)]


def _slice_dataset(
    path: Path, sop_class: str, geometry: _SeriesGeometry, k: int, pixels: npt.NDArray[Any]
) -> Any:
    """Slice ``k``: its file meta, instance, geometry and 16-bit unsigned pixels."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = geometry.position(k)
    ds.ImageOrientationPatient = geometry.orientation()
    ds.PixelSpacing = [f"{geometry.spacing[1]:.6f}", f"{geometry.spacing[0]:.6f}"]
    ds.SliceThickness = f"{geometry.spacing[2]:.6f}"
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(pixels.T.astype("<u2")).tobytes()
    return ds
