"""mask2polygon and fixpolygon on the real vertebra masks and on small shapes."""

from __future__ import annotations

import numpy as np
import pytest

from carina.data import locate_sample
from carina.interactive.polygons import (
    fixpolygon,
    fixpolygon_3d,
    mask2polygon,
    polygons_to_mask,
    rasterize,
)
from carina.io import load_volume


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("more_points", [0, 2, 10])
@pytest.mark.parametrize(
    ("sample", "values"),
    [("spine_ct_vertebrae", (21, 22, 23)), ("spine_mr_vertebrae", (5, 6, 7, 105, 106))],
)
def test_polygons_rasterise_back_on_every_slice(
    sample: str, values: tuple[int, ...], more_points: int
) -> None:
    labels = load_volume(locate_sample(sample)).array
    for value in values:
        mask = labels == value
        polygons = mask2polygon(mask, more_points)
        assert len(polygons) == mask.shape[2]
        restored = polygons_to_mask(polygons, mask.shape) > 0
        for k in range(mask.shape[2]):
            if mask[:, :, k].any():
                assert dice(mask[:, :, k], restored[:, :, k]) >= 0.95, (value, k)
            else:
                assert polygons[k] == [] and not restored[:, :, k].any()


def test_more_points_gives_more_vertices_and_vertices_are_row_column() -> None:
    mask = np.zeros((40, 30, 1), bool)
    yy, xx = np.mgrid[:30, :40]
    mask[:, :, 0] = (((xx - 20) / 15.0) ** 2 + ((yy - 12) / 8.0) ** 2 <= 1).T
    counts = [sum(len(p) for p in mask2polygon(mask, n)[0]) for n in (0, 3, 20)]
    assert counts[0] < counts[1] <= counts[2]
    vertices = np.asarray(mask2polygon(mask, 3)[0][0])
    assert vertices[:, 0].max() < 30 and vertices[:, 1].max() >= 30  # [j, i]: rows, then columns


def test_two_regions_give_two_polygons_and_a_pixel_stays_a_pixel() -> None:
    mask = np.zeros((10, 10), bool)
    mask[1:4, 1:4] = True
    mask[6:9, 5:9] = True
    mask[0, 9] = True
    polygons = mask2polygon(mask)[0]
    assert len(polygons) == 3
    assert [[9, 0]] in polygons
    np.testing.assert_array_equal(polygons_to_mask([polygons], (10, 10)) > 0, mask)


def test_fixpolygon_moves_a_vertex_and_drags_neighbours() -> None:
    square = [[2, 2], [2, 6], [2, 10], [6, 10], [10, 10], [10, 6], [10, 2], [6, 2]]
    moved = fixpolygon(
        [square], polygon_index=0, vertex_index=1, vertex_offset=[-2, 0], propagate_neighbor=1
    )
    assert moved[0][1] == [0, 6]
    assert moved[0][0] == [1, 2] and moved[0][2] == [1, 10]
    assert moved[0][4] == [10, 10]
    grown = rasterize([moved[0]], (12, 12))
    assert grown[0, 6] == 1 and rasterize([square], (12, 12))[0, 6] == 0
    with pytest.raises(IndexError, match="vertex_index 8"):
        fixpolygon([square], polygon_index=0, vertex_index=8, vertex_offset=[1, 1])


def test_fixpolygon_3d_propagates_to_neighbouring_slices() -> None:
    square = [[2, 2], [2, 6], [2, 10], [6, 10], [10, 10], [10, 6], [10, 2], [6, 2]]
    per_slice = [[square] for _ in range(5)]
    moved = fixpolygon_3d(
        per_slice, slice_index=2, polygon_index=0, vertex_index=1,
        vertex_offset=[-4, 0], propagate_neighbor_3d=1,
    )  # fmt: skip
    assert [moved[k][0][1] for k in range(5)] == [[2, 6], [0, 6], [-2, 6], [0, 6], [2, 6]]
