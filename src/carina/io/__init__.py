"""Medical image reading and writing with exact geometry.

``load_volume`` reads NIfTI, NRRD, MetaImage, DICOM (file, series folder, zip), PNG and JPEG into a
:class:`Volume`; ``save_volume`` writes NIfTI, NRRD, MetaImage and PNG atomically. See
:mod:`carina.io.volume` for the array order and the affine convention.
"""

from carina.io.api import load_volume, save_volume
from carina.io.volume import ImageFormat, ItkGeometry, Volume, VolumeMeta

__all__ = ["ImageFormat", "ItkGeometry", "Volume", "VolumeMeta", "load_volume", "save_volume"]
