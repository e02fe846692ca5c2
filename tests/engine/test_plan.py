"""The inference plan: the planned run (whole image, or the largest windows that fit) agrees with the
archive's configured sliding window (per-label Dice >= 0.99) for every shipped segmentation model
on the shipped CT and MR; the fast argmax is bit-identical to MONAI's; the archive's configuration
can be forced; a budget too small for one window is refused before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from carina.archive import Archive
from carina.data import get_dataset
from carina.engine.agreement import check_plan
from carina.engine.plan import NetworkProfile, plan_inference
from carina.engine.predict import Predictor, argmax_labels
from carina.errors import GuidanceError
from carina.io import Volume
from carina.zoo.install import zoo_archive_path

SEGMENTATION = ["spine_ct_vertebrae", "brain_mr_tissue"]


@pytest.fixture(scope="module")
def images() -> dict[str, Volume]:
    """The shipped CT, spine MR and brain MR, and the CT resampled to 256x256x128."""
    found = {name: get_dataset(name).build().image for name in ("spine_ct", "spine_mr", "brain_mr")}
    ct = found["spine_ct"]
    zoom = [n / s for n, s in zip((256, 256, 128), ct.shape, strict=True)]
    big = ndimage.zoom(ct.array.astype(np.float32), zoom, order=1).astype(np.int16)
    found["spine_ct_256"] = Volume(
        array=big, affine=ct.affine @ np.diag([*(1 / z for z in zoom), 1])
    )
    return found


def dice_per_label(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    scores = {}
    for value in sorted((set(np.unique(a)) | set(np.unique(b))) - {0}):
        x, y = a == value, b == value
        scores[int(value)] = 2 * float((x & y).sum()) / float(x.sum() + y.sum())
    return scores


@pytest.mark.parametrize("model", SEGMENTATION)
def test_planned_inference_agrees_with_the_archive_configuration(
    model: str, images: dict[str, Volume], tmp_path: Path
) -> None:
    """The shipped models normalise per window (MONAI's UNet default): they keep their windows,
    and the agreement check says why they are not freed."""
    root = tmp_path / model
    shutil.copytree(zoo_archive_path(model), root)
    archive = Archive.open(root)
    planned = Predictor.from_archive(archive, device="cpu", plan="auto")
    exact = Predictor.from_archive(archive, device="cpu", plan="archive")
    names = ["spine_ct", "spine_mr", "brain_mr"] + (["spine_ct_256"] if "spine" in model else [])
    for name in names:
        ours = planned.predict(images[name]).volume.array
        assert planned.last_plan is not None and planned.last_plan.mode == "windows"
        reference = exact.predict(images[name]).volume.array
        assert exact.last_plan is None, "the archive's inferer ran as configured"
        scores = dice_per_label(ours, reference)
        assert all(score >= 0.99 for score in scores.values()), (model, name, scores)
    check = check_plan(archive, {"spine_ct": images["spine_ct"]})
    assert not check.passed and "depends on its window" in check.reason
    record = json.loads((root / "eval" / "inference_plan.json").read_text())
    assert record["passed"] is False and record["scores"]["spine_ct"]


def test_a_network_freed_by_its_agreement_check_runs_the_whole_image(
    images: dict[str, Volume], tmp_path: Path
) -> None:
    """A per-voxel network (no window dependence) passes the check; then the whole image runs
    in one pass, in agreement; new weights need a new check."""
    root = tmp_path / "voxelwise"
    shutil.copytree(zoo_archive_path("spine_ct_vertebrae"), root)
    config = json.loads((root / "config" / "config_aiaa.json").read_text())
    network = {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 4, "kernel_size": 1}
    (root / "config" / "config_aiaa.json").write_text(
        json.dumps({**config, "network_def": network})
    )
    torch.manual_seed(0)
    torch.save(torch.nn.Conv3d(1, 4, 1).state_dict(), root / "models" / "model.pt")
    archive = Archive.open(root)
    assert not Predictor.from_archive(archive, device="cpu").free
    check = check_plan(archive, {n: images[n] for n in ("spine_ct", "spine_mr")})
    assert check.passed, check
    assert all(score >= 0.99 for scores in check.scores.values() for score in scores.values())
    freed = Predictor.from_archive(archive, device="cpu")
    assert freed.free
    ours = freed.predict(images["spine_ct_256"]).volume.array
    assert freed.last_plan is not None and freed.last_plan.mode == "whole"
    reference = Predictor.from_archive(archive, device="cpu", plan="archive").predict(
        images["spine_ct_256"]
    )
    assert min(dice_per_label(ours, reference.volume.array).values()) >= 0.99
    windows = freed.predict(images["spine_ct_256"], budget=40 * 2**20)
    assert freed.last_plan.mode == "windows" and freed.last_plan.roi != (48, 40, 32)
    assert min(dice_per_label(windows.volume.array, reference.volume.array).values()) >= 0.99
    torch.save(torch.nn.Conv3d(1, 4, 1).state_dict(), root / "models" / "model.pt")
    assert not Predictor.from_archive(archive, device="cpu").free, "new weights, no check yet"


def test_fast_argmax_is_bit_identical_to_monai() -> None:
    """Ties (integer logits) resolve to the first channel in both."""
    from monai.transforms import AsDiscreted

    from carina.engine.predict import _restore

    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.integers(0, 3, size=(4, 17, 13, 9)).astype(np.float32))
    reference = _restore(AsDiscreted(keys="pred", argmax=True)({"pred": logits}), None)
    ours = argmax_labels(logits)
    assert ours.dtype == reference.dtype == np.uint8
    assert np.array_equal(ours, reference)
    channels_last = logits.unsqueeze(0).contiguous(memory_format=torch.channels_last_3d)[0]
    assert np.array_equal(argmax_labels(channels_last), reference)


def test_plans_follow_the_budget() -> None:
    profile = NetworkProfile(stride=(8, 8, 8), bytes_per_voxel=100.0)
    whole = plan_inference((250, 250, 120), profile, budget=2**30, archive_roi=(48, 40, 32))
    kept = plan_inference(
        (250, 250, 120), profile, budget=2**30, archive_roi=(48, 40, 32), free=False
    )
    assert (kept.mode, kept.roi, kept.batch) == ("windows", (48, 40, 32), 4)
    assert (whole.mode, whole.roi) == ("whole", (256, 256, 120))
    windows = plan_inference((250, 250, 120), profile, budget=100 * 2**20, archive_roi=(48, 40, 32))
    assert windows.mode == "windows" and windows.roi is not None
    assert all(r >= a and r % 8 == 0 for r, a in zip(windows.roi, (48, 40, 32), strict=True))
    assert windows.work_bytes <= 100 * 2**20
    with pytest.raises(
        GuidanceError, match=r"windows of its own size needs about .*\(CARINA_MAX_WORK_BYTES\)"
    ):
        plan_inference((250, 250, 120), profile, budget=2**20, archive_roi=(48, 40, 32))


def test_the_setting_forces_the_archive_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    archive = Archive.open(zoo_archive_path("spine_ct_vertebrae"))
    assert Predictor.from_archive(archive, device="cpu").planned
    monkeypatch.setenv("CARINA_INFERENCE_PLAN", "archive")
    assert not Predictor.from_archive(archive, device="cpu").planned
