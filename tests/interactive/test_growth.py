"""Windows that hold the structure: a 3D interactive model's window grows (bounded in steps and mm)
when its mask reaches an edge inside the image, and not when the edge is the image's; the
mirror completion that teaches the zoo's DeepGrow whole vertebrae from half ones."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from carina.archive import ServingConfig
from carina.interactive.mirror import RandMirrorComplete, RandMirrorCompleted
from carina.interactive.predict import InteractivePredictor
from carina.interactive.window import Window
from carina.io import Volume
from tests.interactive.test_guidance import ball


def test_a_mask_at_an_inner_edge_grows_the_window_around_its_centre() -> None:
    window = Window((10, 10, 10), (20, 20, 20), (10, 10, 10))
    probability = torch.zeros(10, 10, 10)
    probability[3:10, 4:6, 4:6] = 1.0  # reaches the window's high edge on axis 0
    grown = window.grown(probability, (60, 60, 60), centre=(20, 20, 20), border=2, limit=[80] * 3)
    assert grown is not None and grown.roi == window.roi
    assert len(set(grown.size)) == 1 and grown.size[0] > 20, "one factor on every axis"
    middle = np.asarray(grown.start) + np.asarray(grown.size) / 2
    assert np.allclose(middle, 20.5, atol=1.0)
    capped = window.grown(probability, (60, 60, 60), centre=(20, 20, 20), border=2, limit=[22] * 3)
    assert capped is not None and max(capped.size) <= 22
    assert (
        window.grown(probability, (60, 60, 60), centre=(20,) * 3, border=2, limit=[20] * 3) is None
    )


def test_no_growth_at_the_image_border_or_for_an_inner_mask() -> None:
    window = Window((0, 0, 0), (20, 20, 20), (10, 10, 10))
    edge = torch.zeros(10, 10, 10)
    edge[0:4, 4:6, 4:6] = 1.0  # at the low edge, which is the image's border
    assert window.grown(edge, (20, 40, 40), centre=(10,) * 3, border=2, limit=[80] * 3) is None
    inner = torch.zeros(10, 10, 10)
    inner[3:7, 3:7, 3:7] = 1.0
    assert window.grown(inner, (60, 60, 60), centre=(10,) * 3, border=2, limit=[80] * 3) is None
    assert window.grown(torch.zeros(10, 10, 10), (60,) * 3, centre=(10,) * 3, border=2,
                        limit=[80] * 3) is None  # fmt: skip


class Threshold(torch.nn.Module):
    """A stand-in network: foreground wherever the image channel is bright."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return (batch[:, :1] - 0.5) * 40


def predictor(**settings: object) -> InteractivePredictor:
    config = ServingConfig(
        type="deepgrow", labels=[], roi=[16, 16, 16], window=20.0, margin=2, **settings
    )
    return InteractivePredictor(
        Threshold(), Compose([]), settings=config, device=torch.device("cpu")
    )


def test_deepgrow_grows_until_the_mask_holds_the_structure() -> None:
    structure = ball((64, 64, 64), (32, 32, 32), 14)
    volume = Volume(array=structure.astype(np.float32), affine=np.eye(4))
    grown = predictor(max_window=60.0).deepgrow(volume, [(32, 32, 32)])
    mask = grown.volume.array > 0
    assert grown.windows > 1
    assert 2 * (mask & structure).sum() / (mask.sum() + structure.sum()) > 0.95
    once = predictor(grow_steps=0).deepgrow(volume, [(32, 32, 32)])
    assert once.windows == 1 and once.volume.array.sum() < 0.7 * structure.sum()
    bounded = predictor(max_window=24.0).deepgrow(volume, [(32, 32, 32)])
    assert all(high - low <= 24 for low, high in bounded.crop)


def test_mirror_completion_joins_the_mirror_at_the_face_the_structure_touches() -> None:
    label = np.zeros((1, 6, 5, 4), np.uint8)
    label[0, 2:4, 1:3, 2:4] = 1  # touches the high face of axis 2
    affine = np.diag([-1.5, 1.5, 2.0, 1.0])[[2, 1, 0, 3]]  # axis 2 is left-right (x)
    image = MetaTensor(torch.arange(120, dtype=torch.float32).reshape(1, 6, 5, 4), affine=affine)
    data = {"image": image, "label": MetaTensor(torch.from_numpy(label), affine=affine)}
    mirror = RandMirrorCompleted(["image", "label"], prob=1.0)
    out = mirror(data)
    assert out["image"].shape == (1, 6, 5, 8) and out["label"].shape == (1, 6, 5, 8)
    assert torch.equal(out["image"][..., 4:], torch.flip(image, dims=(3,)))
    assert int(out["label"].sum()) == 2 * int(label.sum())
    assert np.allclose(np.asarray(out["image"].affine), affine)
    low = np.flip(label, axis=3).copy()
    flipped = RandMirrorComplete(prob=1.0)(MetaTensor(torch.from_numpy(low), affine=affine))
    assert flipped.shape[-1] == 8
    shift = np.asarray(flipped.affine)[:3, 3] - affine[:3, 3]
    assert np.allclose(shift, -affine[:3, 2] * 4), "the first voxel keeps its place"
    both = np.ones((1, 6, 5, 4), np.uint8)
    assert (
        RandMirrorComplete(prob=1.0)(MetaTensor(torch.from_numpy(both), affine=affine)).shape[-1]
        == 4
    )
    assert RandMirrorCompleted(["image", "label"], prob=0.0)(data)["image"].shape[-1] == 4


def test_linear_window_equals_interpolate_on_random_windows() -> None:
    """The window read plane by plane (memory order, only the planes used) equals the padded box
    resized by ``interpolate``; the mask pasted back near its ROI voxels equals the whole window
    resized and thresholded; a Fortran-ordered volume (as NIfTI reads) gives the same."""
    from carina.interactive.window import _resize

    rng = np.random.default_rng(0)
    for _ in range(12):
        shape = tuple(int(n) for n in rng.integers(20, 70, 3))
        data = rng.integers(-1000, 1000, shape).astype(np.int16)
        roi = tuple(int(n) for n in rng.integers(8, 32, 3))
        window = Window(
            tuple(int(n) for n in rng.integers(-20, 40, 3)),
            tuple(int(n) for n in rng.integers(5, 90, 3)),
            roi,
        )
        in_image, in_window = window._overlap(shape)
        inside = torch.from_numpy(data)[None][(slice(None), *in_image)].float()
        fill = float(inside.min()) if inside.numel() else 0.0
        box = torch.full((1, *window.size), fill)
        box[(slice(None), *in_window)] = inside
        expected = _resize(box, roi, "trilinear")
        for layout in (data, np.asfortranarray(data)):
            got = window.extract(torch.from_numpy(layout)[None], fill=None)
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-2)
        probability = torch.from_numpy(rng.random(roi).astype(np.float32))
        whole = _resize(probability[None], window.size, "trilinear")[0]
        reference = np.zeros(shape, np.uint8)
        reference[tuple(in_image)] = (whole[tuple(in_window)] > 0.5).numpy()
        assert np.array_equal(window.paste_mask(probability, shape), reference)
