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
from carina.io import load_volume

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
    # What the server hands it: the image already read (LoadImaged still gets a file).
    from_volume = predictor.predict(load_volume(spine_ct_path)).volume
    assert np.array_equal(from_volume.array, from_bundle.array)
    np.testing.assert_allclose(from_volume.affine, from_bundle.affine)


def test_bundle_with_expressions_is_refused_when_untrusted(
    trained: tuple[Path, TrainResult], tmp_path: Path
) -> None:
    spine, _ = trained
    bundle = write_bundle(tmp_path / "spine_bundle", spine / "models" / "model.pt")
    with pytest.raises(UntrustedCodeError, match=r"inference\.json: imports\.0: Python expression"):
        Archive.open(bundle, trusted=False).serving_pipeline()


def test_a_bundle_copied_into_the_workspace_is_served_by_both_apis(
    trained: tuple[Path, TrainResult], tmp_path: Path, spine_ct_path: Path
) -> None:
    """The server hands a Bundle's LoadImaged a file, not the image it already read."""
    import gzip
    import io

    import nibabel as nib
    from fastapi.testclient import TestClient

    from carina.server import create_app
    from carina.settings import Settings

    spine, _ = trained
    workspace = tmp_path / "workspace"
    bundle = write_bundle(workspace / "models" / "spine_bundle", spine / "models" / "model.pt")
    expected = Predictor.from_archive(Archive.open(bundle)).predict(spine_ct_path).volume.array
    image = spine_ct_path.read_bytes()
    settings = Settings(workspace=workspace, preload_models=False)
    with TestClient(create_app(settings)) as client:
        aiaa = client.post(
            "/v1/segmentation?model=spine_bundle",
            files={"image": ("ct.nii.gz", image)},
            data={"params": "{}"},
        )
        assert aiaa.status_code == 200, aiaa.text
        answer = client.post(
            "/infer/spine_bundle",
            params={"output": "image"},
            files={"file": ("ct.nii.gz", image)},
            data={"params": '{"result_extension": ".nii.gz"}'},
        )
        assert answer.status_code == 200, answer.text
    served = nib.Nifti1Image.from_stream(io.BytesIO(gzip.decompress(answer.content)))
    assert np.array_equal(np.asarray(served.dataobj), expected)


def test_a_bundle_needing_a_missing_package_is_named_and_the_others_serve(tmp_path: Path) -> None:
    """metadata.json's optional_packages_version and monai_version are checked when the bundle
    is read: /health lists it with the reason, a request names the package, others serve."""
    from fastapi.testclient import TestClient

    from carina.errors import ConfigError
    from carina.server import create_app
    from carina.settings import Settings
    from carina.zoo import install_archive

    workspace = tmp_path / "workspace"
    install_archive("spine_ct_vertebrae", workspace)
    weights = workspace / "models" / "spine_ct_vertebrae" / "models" / "model.pt"
    needy = write_bundle(workspace / "models" / "needy", weights)
    metadata = {**METADATA, "optional_packages_version": {"carina-no-such-package": "2.1"}}
    (needy / "configs" / "metadata.json").write_text(json.dumps(metadata))
    old = write_bundle(workspace / "models" / "old_monai", weights)
    (old / "configs" / "metadata.json").write_text(
        json.dumps({**METADATA, "monai_version": "0.9.1"})
    )
    with pytest.raises(
        ConfigError,
        match=r"metadata\.json: optional_packages_version: .*"
        r"carina-no-such-package 2\.1 \(not installed\)",
    ):
        Archive.open(needy).serving_pipeline()
    with pytest.raises(ConfigError, match=r"monai_version: the bundle needs MONAI 0\.9\.1"):
        Archive.open(old).serving_pipeline()
    settings = Settings(workspace=workspace, preload_models=False)
    with TestClient(create_app(settings)) as client:
        broken = client.get("/health").json()["broken"]
        assert "carina-no-such-package" in broken["needy"] and "MONAI 0.9.1" in broken["old_monai"]
        answer = client.post(
            "/v1/segmentation?model=needy",
            files={"image": ("ct.nii.gz", b"unused")},
            data={"params": "{}"},
        )
        assert answer.status_code == 404 and "carina-no-such-package" in answer.text
        assert [m["name"] for m in client.get("/v1/models").json()] == ["spine_ct_vertebrae"]
