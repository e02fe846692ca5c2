"""2D PNG and JPEG images (for 2D models and the polygon tools), through Pillow.

A raster image is a planar volume: ``array[i, j]`` with ``i`` the column (x) and ``j`` the row
(y), the transpose of Pillow's row-major array, and colour components as a trailing axis. Its
affine is the identity (1 mm pixels, no position), since these formats carry no geometry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from carina.errors import ImageReadError
from carina.io.volume import ImageFormat, Volume, VolumeMeta

_MODES = {"1": "L", "P": "RGBA", "LA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "I;16": "I;16"}


def read_raster(path: Path, image_format: ImageFormat, *, max_bytes: int) -> Volume:
    """Read a PNG or JPEG file; the pixel count is checked before decoding.

    Raises:
        ImageReadError: unreadable or truncated file, or pixels over ``max_bytes``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            bands = len(image.getbands())
            nbytes = image.width * image.height * max(bands, 1) * 2
            if nbytes > max_bytes:
                raise ImageReadError(
                    path, f"decoded image would take {nbytes} bytes, over the limit of {max_bytes}"
                )
            mode = _MODES.get(image.mode)
            if image.mode == "P" and "transparency" not in image.info:
                mode = "RGB"
            pixels = np.asarray(image.convert(mode) if mode and mode != image.mode else image)
    except ImageReadError:
        raise
    except FileNotFoundError as exc:
        raise ImageReadError(path, "no such file") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"not a readable {image_format.value} image ({exc})") from exc
    axes = (1, 0, *range(2, pixels.ndim))
    return Volume(
        array=pixels.transpose(axes),
        affine=np.eye(4),
        spatial_ndim=2,
        meta=VolumeMeta(format=image_format, geometry_known=False),
    )


def write_png(volume: Volume, target: Path) -> None:
    """Write a planar volume as PNG (8 or 16 bit grey, RGB or RGBA)."""
    from PIL import Image

    array: Any = volume.array
    if volume.spatial_ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif volume.spatial_ndim != 2:
        raise ValueError(f"PNG holds one 2D plane, not an array of shape {volume.array.shape}")
    if array.ndim == 3 and array.shape[2] not in (3, 4):
        raise ValueError(f"PNG holds 1, 3 or 4 channels, not {array.shape[2]}")
    if array.dtype == np.bool_ or (
        array.dtype.kind in "iu" and array.min() >= 0 and array.max() < 256
    ):
        array = array.astype(np.uint8)
    elif array.dtype.kind in "iu" and array.min() >= 0 and array.max() < 65536 and array.ndim == 2:
        array = array.astype(np.uint16)
    else:
        raise ValueError(f"PNG holds integers in 0..65535, not {array.dtype} values")
    axes = (1, 0, *range(2, array.ndim))
    Image.fromarray(np.ascontiguousarray(array.transpose(axes))).save(target, format="PNG")
