"""Click maps, simulated clicks, extreme points and the crop window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carina.interactive.guidance import (
    bounding_box,
    corrective_click,
    deepest_point,
    extreme_points,
    gaussian_map,
)
from carina.interactive.window import Window


def ball(shape: tuple[int, ...], centre: tuple[int, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape)
    offsets = grid - np.asarray(centre).reshape((-1,) + (1,) * len(shape))
    return (offsets**2).sum(0) <= radius**2


def test_gaussian_map_peaks_at_the_points_and_ignores_outside() -> None:
    heatmap = gaussian_map((20, 20, 20), [(5, 5, 5), (15, 12, 3), (40, 0, 0)], sigma=2.0)
    assert heatmap[5, 5, 5] == pytest.approx(1.0) and heatmap[15, 12, 3] == pytest.approx(1.0)
    assert heatmap[5, 5, 7] == pytest.approx(np.exp(-4 / 8), rel=1e-5)
    assert heatmap[0, 19, 19] == 0.0 and heatmap.dtype == np.float32


def test_deepest_point_is_the_centre_of_a_ball() -> None:
    mask = ball((30, 30, 30), (12, 15, 17), 6)
    assert deepest_point(mask) == (12, 15, 17)
    rng = np.random.default_rng(0)
    sampled = deepest_point(mask, rng)
    assert sampled is not None and mask[sampled]
    assert deepest_point(np.zeros((4, 4, 4), bool)) is None


def test_corrective_click_targets_the_largest_error() -> None:
    truth = ball((40, 40, 40), (20, 20, 20), 8)
    prediction = truth.copy()
    prediction[20:, :, :] = False  # half missed: a foreground click in the missed part
    click = corrective_click(truth, prediction)
    assert click is not None and click.foreground and click.point[0] >= 20 and truth[click.point]
    spurious = truth | ball((40, 40, 40), (5, 5, 5), 4)
    click = corrective_click(truth, spurious)
    assert (
        click is not None
        and not click.foreground
        and spurious[click.point]
        and not truth[click.point]
    )
    assert corrective_click(truth, truth) is None


def test_extreme_points_touch_each_side() -> None:
    mask = np.zeros((10, 12, 14), bool)
    mask[2:7, 3:9, 4:11] = True
    points = extreme_points(mask)
    assert len(points) == 6
    assert points[0][0] == 2 and points[1][0] == 6
    assert points[2][1] == 3 and points[3][1] == 8
    assert points[4][2] == 4 and points[5][2] == 10
    labels = mask.astype(np.uint8) * 3  # a label map: every non-zero voxel counts
    assert extreme_points(labels) == points
    assert extreme_points(np.zeros((2, 2, 2))) == []


def test_bounding_box_is_low_inclusive_high_exclusive() -> None:
    mask = np.zeros((10, 12, 14), np.uint8)
    mask[2:7, 3:9, 4:11] = 2
    box = bounding_box(mask)
    assert box == ((2, 3, 4), (7, 9, 11))
    assert mask[2:7, 3:9, 4:11].all() and mask.sum() == mask[2:7, 3:9, 4:11].sum()
    assert bounding_box(np.zeros((3, 3), bool)) is None


def test_window_extracts_resizes_and_pastes_back() -> None:
    image = torch.arange(20 * 20 * 20, dtype=torch.float32).reshape(1, 20, 20, 20)
    window = Window.around(
        [5, 5, 5], [9, 9, 9], roi=(8, 8, 8), margin=[0, 0, 0], min_size=(8, 8, 8)
    )
    assert window.size == (8, 8, 8) and window.start == (3, 3, 3)
    crop = window.extract(image)
    assert torch.equal(crop, image[:, 3:11, 3:11, 3:11])
    pasted = window.paste_mask(torch.ones(8, 8, 8), (20, 20, 20))
    assert pasted.dtype == np.uint8 and pasted.sum() == 512
    assert pasted[3, 3, 3] == 1 and pasted[2, 3, 3] == 0
    edge = Window.around([0, 0, 0], [2, 2, 2], roi=(8, 8, 8), margin=[0, 0, 0], min_size=(8, 8, 8))
    assert edge.start == (-3, -3, -3) and edge.clipped((20, 20, 20)) == [[0, 5]] * 3
    assert edge.extract(image)[0, 0, 0, 0] == 0.0  # outside the image: zeros
    big = Window.around([0, 0, 0], [16, 16, 16], roi=(8, 8, 8), margin=[0, 0, 0])
    assert big.extract(image).shape == (1, 8, 8, 8)
    np.testing.assert_allclose(
        big.to_roi([[0.5, 0.5, 0.5], [15.5, 15.5, 15.5]]), [[0, 0, 0], [7.5, 7.5, 7.5]]
    )


def test_deepgrow_window_stays_centred_on_the_first_click() -> None:
    from carina.interactive.window import deepgrow_window

    spacing = np.array([2.0, 2.0, 2.0])
    one = deepgrow_window(np.array([[20.0, 20, 20]]), (8, 8, 8), window_mm=32, spacing=spacing)
    assert one.start == (12, 12, 12) and one.size == (16, 16, 16)
    near = deepgrow_window(
        np.array([[20.0, 20, 20], [25, 16, 22]]), (8, 8, 8), window_mm=32, spacing=spacing, margin=2
    )
    assert near == one  # a later click inside the window does not move it
    far = deepgrow_window(
        np.array([[20.0, 20, 20], [33, 18, 20]]), (8, 8, 8), window_mm=32, spacing=spacing, margin=2
    )
    assert far.size == (31, 16, 16) and far.start == (5, 12, 12)  # grown, still centred on 20
    assert far.start[0] + 2 <= 33 < far.start[0] + far.size[0] - 2
    sized = deepgrow_window(
        np.array([[20.0, 20, 20]]), (8, 8, 8), window_mm=32, spacing=spacing, size=(10, 10, 10)
    )
    assert sized.start == (15, 15, 15) and sized.size == (10, 10, 10)


def test_truncation_cuts_through_the_structure_and_keeps_enough_of_it() -> None:
    from carina.interactive import RandTruncated

    structure = ball((24, 24, 24), (12, 12, 12), 8)
    label = torch.from_numpy(structure[None].astype(np.uint8))
    image = torch.arange(24**3, dtype=torch.float32).reshape(1, 24, 24, 24)
    cut = RandTruncated(["image", "label"], prob=1.0, min_keep=0.6)
    cut.set_random_state(0)
    shapes = set()
    for _ in range(30):
        out = cut({"image": image, "label": label})
        kept = int(out["label"].sum())
        assert out["image"].shape == out["label"].shape
        assert 0.6 * structure.sum() <= kept <= structure.sum()
        # a cut, not a resampling: the output is the block of the input that starts at its
        # first voxel, with the label cut the same way
        start = np.unravel_index(int(out["image"][0, 0, 0, 0]), (24, 24, 24))
        block = tuple(slice(a, a + n) for a, n in zip(start, out["image"].shape[1:], strict=True))
        assert torch.equal(out["image"][0], image[0][block])
        assert torch.equal(out["label"][0], label[0][block])
        shapes.add(tuple(out["image"].shape))
    assert len(shapes) > 5  # different axes, sides and planes
    never = RandTruncated(["image", "label"], prob=0.0)
    assert never({"image": image, "label": label})["image"] is image
    with pytest.raises(ValueError, match="min_keep"):
        RandTruncated(["image"], min_keep=0.0)
    with pytest.raises(ValueError, match="max_cuts"):
        RandTruncated(["image"], max_cuts=0)


def test_truncation_may_cut_along_two_axes() -> None:
    from carina.interactive import RandTruncated

    structure = ball((24, 24, 24), (12, 12, 12), 8)
    label = torch.from_numpy(structure[None].astype(np.uint8))
    image = torch.arange(24**3, dtype=torch.float32).reshape(1, 24, 24, 24)
    cut = RandTruncated(["image", "label"], prob=1.0, min_keep=0.6, max_cuts=2)
    cut.set_random_state(1)
    axes_cut = []
    for _ in range(40):
        out = cut({"image": image, "label": label})
        kept = int(out["label"].sum())
        assert 0.6 * 0.6 * structure.sum() <= kept <= structure.sum()
        start = np.unravel_index(int(out["image"][0, 0, 0, 0]), (24, 24, 24))
        block = tuple(slice(a, a + n) for a, n in zip(start, out["image"].shape[1:], strict=True))
        assert torch.equal(out["label"][0], label[0][block])
        axes_cut.append(sum(n < 24 for n in out["image"].shape[1:]))
    assert set(axes_cut) == {1, 2}  # one plane or two, never three


def test_keep_structure_undoes_a_transform_that_loses_the_structure() -> None:
    from monai.transforms import Lambdad

    from carina.interactive import KeepStructured

    label = torch.zeros(1, 10, 10, 10)
    label[0, 0:3, 0:3, 0:3] = 1
    data = {"image": torch.rand(1, 10, 10, 10), "label": label}
    shift_out = Lambdad(["image", "label"], lambda x: torch.roll(x, 5, dims=1) * 0)
    kept = KeepStructured(shift_out)(data)
    assert torch.equal(kept["label"], label) and torch.equal(kept["image"], data["image"])
    flip = Lambdad(["image", "label"], lambda x: torch.flip(x, dims=[1]))
    flipped = KeepStructured(flip)(data)
    assert flipped["label"][0, 9, 0, 0] == 1 and flipped["label"][0, 0, 0, 0] == 0


@pytest.mark.parametrize("mode", ["extreme", "deepgrow"])
def test_crop_keeps_label_and_image_aligned(mode: str) -> None:
    """The training target must sit on the image voxels it labels: a structure whose image is
    its own mask gives the same ROI mask from either key, also where it touches the border."""
    from carina.interactive import InteractionCropd

    structure = ball((30, 26, 20), (15, 12, 2), 7)[None].astype(np.float32)
    crop = InteractionCropd(["image", "label"], roi=(48, 48, 48), mode=mode, window=40.0)
    out = crop({"image": torch.from_numpy(structure * 100.0), "label": torch.from_numpy(structure)})
    assert torch.equal(out["label"], (out["image"] > 50.0).float())
    assert out["label"].sum() > 0
