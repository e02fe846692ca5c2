"""Carina's MONAI transforms: loading any supported image with Carina's reader.

``LoadVolume`` reads a path (or takes an already read :class:`~carina.io.Volume`) and returns a
MONAI ``MetaTensor`` whose affine is the volume's RAS affine, array order ``[i, j, k]``: the same
order and geometry in training, validation, batch inference and the server.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from carina.io import Volume, load_volume
from carina.settings import DEFAULT_MAX_IMAGE_BYTES


def volume_to_tensor(volume: Volume, *, dtype: torch.dtype | None = None) -> MetaTensor:
    """A ``MetaTensor`` of the volume's voxels with its affine and source metadata."""
    array = np.asarray(volume.array)
    if array.dtype in (np.uint16, np.uint32):  # torch lacks arithmetic on these
        array = array.astype(np.int32 if array.dtype == np.uint16 else np.int64)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif not array.flags.writeable:
        array = array.copy()
    tensor = torch.from_numpy(array)
    if dtype is not None:
        tensor = tensor.to(dtype)
    meta = {
        "affine": torch.as_tensor(volume.affine, dtype=torch.float64),
        "original_affine": torch.as_tensor(volume.affine, dtype=torch.float64),
        "spatial_shape": np.asarray(volume.shape),
        "space": "RAS",
        "original_channel_dim": "no_channel" if array.ndim == volume.spatial_ndim else -1,
    }
    return MetaTensor(tensor, meta=meta)


class LoadVolume(Transform):
    """Read an image (any format ``carina.io`` reads) into a ``MetaTensor`` (no channel axis).

    Args:
        dtype: convert the voxels to this torch dtype (default: keep the stored type).
        max_bytes: the largest decoded image accepted.
    """

    def __init__(
        self, dtype: torch.dtype | str | None = None, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    ) -> None:
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.max_bytes = max_bytes

    def __call__(self, source: str | Path | Volume) -> MetaTensor:
        volume = (
            source if isinstance(source, Volume) else load_volume(source, max_bytes=self.max_bytes)
        )
        tensor = volume_to_tensor(volume, dtype=self.dtype)
        if not isinstance(source, Volume):
            tensor.meta["filename_or_obj"] = Path(source).name
        return tensor


class LoadVolumed(MapTransform):
    """Dictionary version of :class:`LoadVolume`: loads each key's path or volume in place."""

    def __init__(
        self,
        keys: KeysCollection,
        dtype: torch.dtype | str | None = None,
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume(dtype=dtype, max_bytes=max_bytes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = self.loader(out[key])
        return out
