"""A MONAI Bundle (inference.json + metadata.json + model.pt) written here loads and infers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from carina.archive import Archive, ArchiveKind
from carina.engine.predict import Predictor
from carina.engine.train import TrainResult
from carina.errors import UntrustedCodeError

SCALE = {"a_min": -1000, "a_max": 1000, "b_min": 0.0, "b_max": 1.0, "clip": True}
INFERENCE = {
    "imports": ["$import torch"],
    "bundle_root": ".",
    "device": "$torch.device('cpu')",
    "network_def": {
        "_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 4,
        "channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1,
    },
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", **SCALE},
        ],
    },
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [48, 40, 32], "sw_batch_size": 4, "overlap": 0.5},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "$@bundle_root + '/eval'"},
        ],
    },
}  # fmt: skip
METADATA = {
    "version": "0.1.0",
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "2.4",
    "optional_packages_version": {},
    "task": "Lumbar vertebra segmentation",
    "description": "A bundle written by the Carina tests",
    "authors": "Carina",
    "copyright": "public domain",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "num_channels": 1}},
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 4,
                "channel_def": {"0": "background", "1": "L2", "2": "L3", "3": "L4"},
            }
        },
    },
}


def write_bundle(root: Path, weights: Path) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(INFERENCE))
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    shutil.copy(weights, root / "models" / "model.pt")
    return root


def test_bundle_infers_like_the_archive_it_was_made_from(
    trained: tuple[Path, TrainResult], tmp_path: Path, spine_ct_path: Path
) -> None:
    spine, _ = trained
    bundle = write_bundle(tmp_path / "spine_bundle", spine / "models" / "model.pt")
    archive = Archive.open(bundle)
    assert archive.kind == ArchiveKind.BUNDLE
    predictor = Predictor.from_archive(archive)
    assert predictor.settings.labels == ["L2", "L3", "L4"]
    from_bundle = predictor.predict(spine_ct_path).volume
    from_archive = Predictor.from_archive(Archive.open(spine)).predict(spine_ct_path).volume
    assert from_bundle.shape == from_archive.shape
    np.testing.assert_allclose(from_bundle.affine, from_archive.affine)
    assert (from_bundle.array != from_archive.array).mean() < 1e-3
    assert not (bundle / "eval").exists(), "SaveImaged is dropped when serving"


def test_bundle_with_expressions_is_refused_when_untrusted(
    trained: tuple[Path, TrainResult], tmp_path: Path
) -> None:
    spine, _ = trained
    bundle = write_bundle(tmp_path / "spine_bundle", spine / "models" / "model.pt")
    with pytest.raises(UntrustedCodeError, match=r"inference\.json: imports\.0: Python expression"):
        Archive.open(bundle, trusted=False).serving_pipeline()
