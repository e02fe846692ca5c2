"""Polygons of label maps (``mask2polygon``) and editing them (``fixpolygon``), as AIAA defines.

A polygon is a list of integer vertices ``[j, i]`` (row, column of an ITK index: the order MITK
reads), on the boundary pixels of one connected region of one slice; ``mask2polygon`` returns one
list of polygons per slice ``k``. ``more_points`` sets the vertex density: the traced boundary is
simplified (Douglas-Peucker) with a tolerance of ``1 / (1 + more_points)`` pixels, so a larger
value keeps more vertices. A region the simplified polygon would no longer cover faithfully (Dice
below 0.97 when filled back, as happens to small or thin regions) keeps more of its vertices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from carina.limits import check_cancelled

Vertex = list[int]
Polygon = list[Vertex]

#: A simplified polygon must rasterise back to at least this Dice with its region.
_FAITHFUL = 0.97
_FINEST = 0.05

#: Moore neighbourhood, clockwise from west, as (row, column) steps.
_NEIGHBOURS = [(0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1)]


def mask2polygon(mask: npt.ArrayLike, more_points: int = 0) -> list[list[Polygon]]:
    """Per-slice polygons of a 3D mask ``[i, j, k]`` (or one slice of a 2D mask ``[i, j]``).

    Returns:
        A list with one entry per slice ``k``: the polygons of that slice's regions, each a
        list of ``[j, i]`` vertices. A 2D mask gives a list of one entry.
    """
    array = np.asarray(mask) > 0
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"mask2polygon takes a 2D or 3D mask, not {array.ndim}D")
    tolerance = 1.0 / (1 + max(0, int(more_points)))
    return [slice_polygons(array[:, :, k].T, tolerance) for k in range(array.shape[2])]


def slice_polygons(rows_cols: npt.NDArray[np.bool_], tolerance: float) -> list[Polygon]:
    """The outer boundary polygons of each 8-connected region of a 2D ``[row, col]`` mask."""
    labels, count = ndimage.label(rows_cols, structure=np.ones((3, 3), dtype=int))
    polygons = []
    for region in range(1, count + 1):
        check_cancelled()
        mask = labels == region
        boundary = _trace(mask)
        polygon = [[r, c] for r, c in boundary]
        current = tolerance
        while len(boundary) > 3 and current >= _FINEST:
            candidate = [[r, c] for r, c in _simplify(boundary, current)]
            if _dice(rasterize([candidate], mask.shape) > 0, mask) >= _FAITHFUL:
                polygon = candidate
                break
            current /= 2  # too coarse for this small or thin region: keep more vertices
        polygons.append(polygon)
    return polygons


def _dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    return float(2 * (a & b).sum() / max(1, int(a.sum()) + int(b.sum())))


def rasterize(
    polygons: Sequence[Sequence[Sequence[int]]], shape: tuple[int, int]
) -> npt.NDArray[np.uint8]:
    """Fill polygons of ``[row, col]`` vertices (boundary pixels included) into a ``shape`` mask."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        xy = [(int(c), int(r)) for r, c in polygon]
        if len(xy) == 1:
            draw.point(xy, fill=1)
        elif len(xy) == 2:
            draw.line(xy, fill=1)
        elif xy:
            draw.polygon(xy, fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8)


def polygons_to_mask(
    per_slice: Sequence[Sequence[Sequence[Sequence[int]]]], shape: tuple[int, ...]
) -> npt.NDArray[np.uint8]:
    """Rasterise per-slice polygons (as :func:`mask2polygon` returns) into an ``[i, j, k]`` mask."""
    mask = np.zeros(shape if len(shape) == 3 else (*shape, 1), dtype=np.uint8)
    for k, polygons in enumerate(per_slice[: mask.shape[2]]):
        mask[:, :, k] = rasterize(polygons, (mask.shape[1], mask.shape[0])).T
    return mask if len(shape) == 3 else mask[:, :, 0]


def fixpolygon(
    polygons: list[Polygon],
    *,
    polygon_index: int,
    vertex_index: int,
    vertex_offset: Sequence[int],
    propagate_neighbor: int = 0,
) -> list[Polygon]:
    """Move one vertex by ``vertex_offset``; its neighbours follow, less the farther they are.

    The ``propagate_neighbor`` vertices on each side move by the offset times
    ``1 - distance / (propagate_neighbor + 1)`` (rounded), so the edit stays smooth.

    Raises:
        IndexError: no such polygon or vertex.
    """
    if not 0 <= polygon_index < len(polygons):
        raise IndexError(f"polygon_index {polygon_index} is not one of {len(polygons)} polygons")
    polygon = polygons[polygon_index]
    if not 0 <= vertex_index < len(polygon):
        raise IndexError(f"vertex_index {vertex_index} is not one of {len(polygon)} vertices")
    offset = np.asarray(vertex_offset, dtype=np.float64)
    moved = [list(v) for v in polygon]
    reach = max(0, int(propagate_neighbor))
    count = len(polygon)
    for distance in range(-min(reach, count // 2), min(reach, count // 2) + 1):
        weight = 1.0 - abs(distance) / (reach + 1)
        index = (vertex_index + distance) % count
        moved[index] = [round(v + weight * o) for v, o in zip(polygon[index], offset, strict=True)]
    return [moved if i == polygon_index else [list(v) for v in p] for i, p in enumerate(polygons)]


def fixpolygon_3d(
    per_slice: list[list[Polygon]],
    *,
    slice_index: int,
    polygon_index: int,
    vertex_index: int,
    vertex_offset: Sequence[int],
    propagate_neighbor: int = 0,
    propagate_neighbor_3d: int = 0,
) -> list[list[Polygon]]:
    """:func:`fixpolygon` on slice ``slice_index``, and on up to ``propagate_neighbor_3d`` slices
    each side with the offset scaled down linearly; there the vertex nearest to the moved one in
    the polygon of the same index is moved.

    Raises:
        IndexError: no such slice, polygon or vertex.
    """
    if not 0 <= slice_index < len(per_slice):
        raise IndexError(f"slice_index {slice_index} is not one of {len(per_slice)} slices")
    out = [[[list(v) for v in polygon] for polygon in polygons] for polygons in per_slice]
    polygons = per_slice[slice_index]
    if not 0 <= polygon_index < len(polygons):
        raise IndexError(f"polygon_index {polygon_index} is not one of {len(polygons)} polygons")
    anchor = np.asarray(polygons[polygon_index][vertex_index] if 0 <= vertex_index < len(
        polygons[polygon_index]) else [0, 0])  # fmt: skip
    reach = max(0, int(propagate_neighbor_3d))
    for distance in range(-reach, reach + 1):
        k = slice_index + distance
        if not 0 <= k < len(per_slice) or polygon_index >= len(per_slice[k]):
            continue
        target = per_slice[k][polygon_index]
        if not target:
            continue
        nearest = vertex_index if distance == 0 else int(
            np.argmin(((np.asarray(target) - anchor) ** 2).sum(axis=1))
        )  # fmt: skip
        weight = 1.0 - abs(distance) / (reach + 1)
        offset = [round(weight * o) for o in vertex_offset]
        out[k] = fixpolygon(
            out[k],
            polygon_index=polygon_index,
            vertex_index=nearest,
            vertex_offset=offset,
            propagate_neighbor=propagate_neighbor,
        )
    return out


def _trace(region: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Moore-neighbour tracing of a region's outer boundary, clockwise, from its top-left pixel.

    Stops when the start pixel is about to be left the way it was first left (Jacob's
    criterion), so thin parts that are crossed twice are traced completely.
    """
    padded = np.pad(region, 1)
    rows, cols = np.nonzero(padded)
    start = (int(rows[0]), int(cols[0]))  # first in raster order: its west neighbour is outside

    def step(pixel: tuple[int, int], backtrack: int) -> tuple[tuple[int, int], int] | None:
        for turn in range(8):
            direction = (backtrack + turn) % 8
            dr, dc = _NEIGHBOURS[direction]
            candidate = (pixel[0] + dr, pixel[1] + dc)
            if padded[candidate]:
                # the last background pixel seen, as a direction from the candidate
                return candidate, (direction + 6) % 8 if direction % 2 == 0 else (direction + 5) % 8
        return None

    first = step(start, 0)
    if first is None:
        return [(start[0] - 1, start[1] - 1)]
    boundary = [start]
    current, backtrack = first
    for _ in range(4 * padded.size):
        moved = step(current, backtrack)
        assert moved is not None
        if current == start and moved[0] == first[0]:
            break
        boundary.append(current)
        current, backtrack = moved
    return [(r - 1, c - 1) for r, c in boundary]


def _simplify(points: list[tuple[int, int]], tolerance: float) -> list[tuple[int, int]]:
    """Douglas-Peucker simplification of a closed polyline."""
    array = np.asarray(points, dtype=np.float64)
    far = int(np.argmax(((array - array[0]) ** 2).sum(axis=1)))
    first = _douglas_peucker(array[: far + 1], tolerance)
    second = _douglas_peucker(np.vstack([array[far:], array[:1]]), tolerance)
    kept = [*first[:-1], *second[:-1]]
    return [(int(r), int(c)) for r, c in kept]


def _douglas_peucker(
    points: npt.NDArray[np.float64], tolerance: float
) -> list[npt.NDArray[np.float64]]:
    if len(points) <= 2:
        return list(points)
    start, end = points[0], points[-1]
    segment = end - start
    length = np.hypot(*segment)
    if length == 0:
        distances = np.hypot(*(points - start).T)
    else:
        distances = np.abs(
            segment[0] * (points[:, 1] - start[1]) - segment[1] * (points[:, 0] - start[0])
        )
        distances /= length
    index = int(np.argmax(distances))
    if distances[index] <= tolerance:
        return [start, end]
    left = _douglas_peucker(points[: index + 1], tolerance)
    right = _douglas_peucker(points[index:], tolerance)
    return [*left[:-1], *right]
