"""An nnU-Net v2 results folder, trained here by nnunetv2 itself on the shipped spine CT (a tiny
network, two iterations), is added with ``carina model add`` and served by both APIs: labels from
its dataset.json, folds and mirroring from carina.json, the answer on the input's grid and equal to
nnunetv2's own predictor's."""

from __future__ import annotations

import gzip
import io
import json
import multiprocessing.pool
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from carina.archive import Archive
from carina.data import get_dataset, split_heldout
from carina.errors import ConfigError
from carina.io import save_volume
from carina.kinds import InferenceRequest, load_runner
from carina.server import create_app
from carina.settings import Settings
from carina.zoo.servable import add_model

pytest.importorskip("nnunetv2")

DATASET = "Dataset001_Spine"


class _ThreadPools:
    """Stands in for ``multiprocessing`` in nnU-Net's planning modules: their ``spawn`` pools
    become thread pools, so planning starts no interpreter (about 10 s less on 2 cores)."""

    class _Context:
        Pool = staticmethod(multiprocessing.pool.ThreadPool)

    @staticmethod
    def get_context(_method: str) -> type:
        return _ThreadPools._Context


def raw_dataset(raw: Path) -> None:
    """The spine CT's two halves (train, held out) as an nnU-Net raw dataset."""
    spec = get_dataset("spine_ct")
    split = split_heldout(spec.build(), spec.labels)
    folder = raw / DATASET
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    for index, case in enumerate((split.train, split.heldout)):
        save_volume(case.image, folder / "imagesTr" / f"spine_{index:03d}_0000.nii.gz")
        save_volume(case.label, folder / "labelsTr" / f"spine_{index:03d}.nii.gz")
    labels = {"background": 0, **{name: value for value, name in spec.labels.items() if value}}
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": 2,
        "file_ending": ".nii.gz",
        "licence": "GPL-3.0 (TPTBox test data)",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nnUNetv2 plan + preprocess + train (fold 0: train half; 1 epoch of 2 iterations)."""
    root = tmp_path_factory.mktemp("nnunet")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("raw", "preprocessed", "results"):
            patch.setenv(f"nnUNet_{name}", str(root / name))
        patch.setenv("nnUNet_n_proc_DA", "1")
        import nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor as fingerprint
        import nnunetv2.preprocessing.preprocessors.default_preprocessor as preprocessor
        from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (
            extract_fingerprint_dataset,
            plan_experiments,
            preprocess,
        )
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        patch.setattr(fingerprint, "multiprocessing", _ThreadPools)
        patch.setattr(preprocessor, "multiprocessing", _ThreadPools)

        class Fingerprint(fingerprint.DatasetFingerprintExtractor):  # type: ignore[misc]
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, **kwargs)
                self.num_foreground_voxels_for_intensitystats = 1e5

        raw_dataset(root / "raw")
        extract_fingerprint_dataset(1, Fingerprint, 1, check_dataset_integrity=True, clean=True)
        plan_experiments([1])
        plans_file = root / "preprocessed" / DATASET / "nnUNetPlans.json"
        plans = load_json(str(plans_file))
        network = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
        stages = network["n_stages"]  # a tiny network: the test is about serving, not quality
        network["features_per_stage"] = [min(4 * 2**i, 32) for i in range(stages)]
        network["n_conv_per_stage"] = [1] * stages
        network["n_conv_per_stage_decoder"] = [1] * (stages - 1)
        save_json(plans, str(plans_file), sort_keys=False)
        preprocess([1], configurations=("3d_fullres",), num_processes=(1,))
        splits = [{"train": ["spine_000"], "val": ["spine_001"]}]
        save_json(splits, str(root / "preprocessed" / DATASET / "splits_final.json"))
        patch.setenv("nnUNet_n_proc_DA", "0")
        plans["continue_training"] = False
        dataset = load_json(str(root / "preprocessed" / DATASET / "dataset.json"))
        trainer = nnUNetTrainer(plans, "3d_fullres", 0, dataset, device=torch.device("cpu"))
        trainer.num_epochs, trainer.num_iterations_per_epoch = 1, 2
        trainer.num_val_iterations_per_epoch = 1
        trainer.run_training()
    return Path(trainer.output_folder_base)


def test_a_trained_nnunet_folder_is_added_and_served_by_both_apis(
    results: Path, tmp_path: Path, spine_ct_path: Path
) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    assert (results / "fold_0" / "checkpoint_final.pth").is_file()
    workspace = tmp_path / "workspace"
    target, report = add_model(results.parent, workspace / "models")
    assert target.name == DATASET and report.card.source == "nnunet"
    assert report.card.labels == ["L2", "L3", "L4"]
    assert report.card.license == "GPL-3.0 (TPTBox test data)"
    assert "with test-time mirroring" in report.card.description

    # nnunetv2's own loader and predictor, on the same file
    reference = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    reference.initialize_from_trained_model_folder(str(results), use_folds=(0,))
    reader = reference.plans_manager.image_reader_writer_class()
    data, properties = reader.read_images([str(spine_ct_path)])
    expected = reference.predict_single_npy_array(data, properties, None, None, False)
    expected = np.asarray(expected).transpose(2, 1, 0)  # SimpleITK's (z, y, x) -> NIfTI's (i, j, k)

    image = spine_ct_path.read_bytes()
    source = nib.load(spine_ct_path)
    settings = Settings(workspace=workspace, preload_models=False)
    with TestClient(create_app(settings)) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()}
        assert models[DATASET]["labels"] == ["L2", "L3", "L4"]
        assert models[DATASET]["source"] == "nnunet"
        answer = client.post(
            f"/infer/{DATASET}",
            params={"output": "image"},
            files={"file": ("ct.nii.gz", image)},
            data={"params": '{"result_extension": ".nii.gz"}'},
        )
        assert answer.status_code == 200, answer.text
        aiaa = client.post(
            f"/v1/segmentation?model={DATASET}", files={"image": ("ct.nii.gz", image)}
        )
        assert aiaa.status_code == 200, aiaa.text
    served = nib.Nifti1Image.from_stream(io.BytesIO(gzip.decompress(answer.content)))
    assert served.shape == source.shape
    np.testing.assert_allclose(served.affine, source.affine, atol=1e-4)
    assert np.array_equal(np.asarray(served.dataobj), expected)


def test_folds_and_mirroring_are_settings_and_bad_folders_are_named(
    results: Path, tmp_path: Path, spine_ct_path: Path
) -> None:
    from carina.io import load_volume

    folder = tmp_path / "spine_nnunet"
    shutil.copytree(results, folder)
    (folder / "carina.json").write_text(json.dumps({"folds": [0], "mirroring": False}))
    _, runner = load_runner(folder, device="cpu", trusted=False)
    assert "without test-time mirroring" in runner.spec.description
    image = load_volume(spine_ct_path)
    result = runner.run(InferenceRequest(image=image))
    assert result.label.shape == image.shape and result.label.array.max() <= 3

    (folder / "carina.json").write_text(json.dumps({"folds": [3]}))
    with pytest.raises(
        ConfigError, match=r"carina\.json: folds: fold_3/checkpoint_final\.pth is missing"
    ):
        Archive.open(folder).serving_config()
    (folder / "carina.json").write_text(json.dumps({"fold": [0]}))
    with pytest.raises(ConfigError, match=r"carina\.json: fold: .*did you mean 'folds'"):
        Archive.open(folder).serving_config()
    (folder / "carina.json").unlink()
    (folder / "plans.json").unlink()
    with pytest.raises(ConfigError, match=r"plans\.json: missing"):
        Archive.open(folder).serving_config()
