"""The AIAA polygon calls: a mask to per-slice polygons, and one vertex moved then rasterised
(spec 4.6-4.7, Clara 1.x key names accepted). Blocking; runs in the worker pool."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from carina.errors import RequestError
from carina.limits import check_work
from carina.server.services.aiaa import ImageSource
from carina.server.services.inference import encode_result
from carina.server.services.params import as_int, as_points


def mask_to_polygons(source: ImageSource, params: dict[str, Any]) -> list[Any]:
    """The uploaded mask's polygons, one list per slice k (``more_points``: more vertices).

    Raises:
        RequestError, ImageReadError: a bad ``more_points``, no mask or an unreadable one.
    """
    from carina.interactive.polygons import mask2polygon

    more_points = as_int(params.get("more_points", 0), "more_points")
    volume = source.read_upload()
    # A mask copy, its contour images and the polygons: a few bytes per voxel.
    check_work(8 * math.prod(volume.shape), source.max_work_bytes, "tracing this mask")
    return mask2polygon(np.asarray(volume.array) > 0, more_points)


def fix_polygon(source: ImageSource, params: dict[str, Any]) -> tuple[Any, bytes, str]:
    """The edited polygons, and their mask on the uploaded image's grid as file bytes (PNG for
    a PNG image) with its file name.

    Raises:
        RequestError: missing or malformed keys, or indices outside the polygons.
        ImageReadError: the image cannot be read.
    """
    volume = source.read_upload()
    poly, mask = apply_fixpolygon(params, tuple(volume.shape))
    png = ".png" if source.suffix == ".png" else ""
    data, name, _ = encode_result(
        volume.with_array(mask), {}, input_suffix=png, folder=source.scratch
    )
    return poly, data, name


def apply_fixpolygon(params: dict[str, Any], shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The edited polygons and their mask on ``shape``.

    Raises:
        RequestError: missing or malformed keys, or indices outside the polygons.
    """
    from carina.interactive.polygons import fixpolygon, fixpolygon_3d, polygons_to_mask

    poly = _polygons(params.get("poly", params.get("prev_poly")))
    offset = as_points(params.get("vertex_offset"), "vertex_offset", dims=2)
    if len(offset) != 1:
        raise RequestError("params.vertex_offset: one [dx, dy] offset expected")
    edit: dict[str, Any] = {
        "polygon_index": as_int(
            params.get("polygon_index", params.get("polygonIndex", 0)), "polygon_index"
        ),
        "vertex_index": as_int(
            params.get("vertex_index", params.get("vertexIndex", 0)), "vertex_index"
        ),
        "vertex_offset": offset[0],
        "propagate_neighbor": as_int(params.get("propagate_neighbor", 0), "propagate_neighbor"),
    }
    try:
        if as_int(params.get("dimension", 2), "dimension") == 3:
            new = fixpolygon_3d(
                poly,
                slice_index=as_int(params.get("slice_index", 0), "slice_index"),
                propagate_neighbor_3d=as_int(
                    params.get("propagate_neighbor_3d", 0), "propagate_neighbor_3d"
                ),
                **edit,
            )
            return new, polygons_to_mask(new, shape)
        new_2d = fixpolygon(poly, **edit)
        return new_2d, polygons_to_mask([new_2d], shape)
    except (IndexError, TypeError, ValueError, OverflowError) as exc:
        raise RequestError(f"params: {exc}"[:300]) from exc


def _polygons(value: Any) -> list[Any]:
    """``poly`` as a list (clients send it as a list or as JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else None
        except json.JSONDecodeError as exc:
            raise RequestError("params.poly: not a JSON list of polygons") from exc
    if not isinstance(value, list):
        raise RequestError("params.poly: the polygons to edit are missing")
    return value
