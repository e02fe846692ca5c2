"""The interactive transforms as MONAI array/dictionary pairs: the dictionary version only routes
keys to the array version, and a random one draws in ``randomize`` and then applies the same
draw to every array."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carina.interactive import (
    AddGuidance,
    AddGuidanced,
    InteractionCrop,
    InteractionCropd,
    RandTruncate,
    RandTruncated,
    SelectLabel,
    SelectLabeld,
    StructureSlice,
    StructureSliced,
)
from tests.interactive.test_guidance import ball


@pytest.fixture
def sample() -> dict[str, torch.Tensor]:
    structure = ball((24, 20, 16), (12, 9, 7), 6)
    label = torch.from_numpy(structure[None].astype(np.uint8))
    image = torch.arange(24 * 20 * 16, dtype=torch.float32).reshape(1, 24, 20, 16)
    return {"image": image, "label": label}


def test_select_label_keeps_one_value() -> None:
    labels = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    assert SelectLabel(1)(labels).tolist() == [[0, 1], [0, 1]]
    assert SelectLabel()(torch.from_numpy(labels), 2).tolist() == [[0, 0], [1, 0]]
    out = SelectLabeld("label")({"label": labels, "label_value": 2})
    assert np.array_equal(out["label"], SelectLabel(2)(labels))
    with pytest.raises(ValueError, match="label value"):
        SelectLabel()(labels)


def test_guidance_pair_appends_the_same_channels() -> None:
    image = torch.rand(1, 12, 12, 12)
    points = np.array([[3.0, 4, 5], [8, 8, 8]])
    array = AddGuidance(sigma=2.0, mode="heatmap")(image, points)
    routed = AddGuidanced(sigma=2.0, mode="heatmap")({"image": image, "points": points})
    assert array.shape == (2, 12, 12, 12) and torch.equal(routed["image"], array)
    assert "points" not in routed
    clicks = AddGuidance(mode="clicks")(image, points[:1])
    assert clicks.shape == (3, 12, 12, 12) and float(clicks[2].abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("array", "mapped"),
    [
        (
            lambda: RandTruncate(prob=1.0, min_keep=0.5, max_cuts=2),
            lambda: RandTruncated(["image", "label"], prob=1.0, min_keep=0.5, max_cuts=2),
        ),
        (
            lambda: InteractionCrop(roi=(8, 8, 8), mode="extreme", perturb=2),
            lambda: InteractionCropd(["image", "label"], roi=(8, 8, 8), mode="extreme", perturb=2),
        ),
        (
            lambda: InteractionCrop(roi=(8, 8, 8), window=20.0, jitter=3, random=True),
            lambda: InteractionCropd(
                ["image", "label"], roi=(8, 8, 8), window=20.0, jitter=3, random=True
            ),
        ),
        (lambda: StructureSlice(random=True), lambda: StructureSliced(["image", "label"])),
    ],
)
def test_random_pairs_draw_once_and_agree(
    sample: dict[str, torch.Tensor], array: object, mapped: object
) -> None:
    for seed in range(5):
        transform = array()  # type: ignore[operator]
        routed = mapped()  # type: ignore[operator]
        transform.set_random_state(seed)
        routed.set_random_state(seed)
        out = routed(dict(sample))
        transform.randomize(sample["label"])  # the draw, from the structure
        extra = {"mask": True} if isinstance(transform, InteractionCrop) else {}
        image = transform(sample["image"], randomize=False)
        label = transform(sample["label"], randomize=False, **extra)
        assert torch.equal(torch.as_tensor(out["image"]), torch.as_tensor(image))
        assert torch.equal(torch.as_tensor(out["label"]), torch.as_tensor(label))
        again = transform(sample["image"], randomize=False)  # applying does not draw
        assert torch.equal(torch.as_tensor(again), torch.as_tensor(image))


def test_crop_leaves_the_points_it_answers(sample: dict[str, torch.Tensor]) -> None:
    crop = InteractionCrop(roi=(8, 8, 8), mode="extreme", padding=0.0)
    crop.randomize(sample["label"])
    assert crop.points.shape == (6, 3)
    assert (crop.points >= -0.5).all() and (crop.points <= 7.5).all()
    with pytest.raises(ValueError, match="empty"):
        crop.randomize(torch.zeros(1, 4, 4, 4))
