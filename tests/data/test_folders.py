"""One's own folder as a dataset: the layouts found, each pair checked (bad ones skipped with the
reason), a fixed split stated in ``dataset.json`` (by case or patient, seeded, order-free), a
``dataset.json`` with only ``training`` split the same way, ``archive new --dataset`` recording
the folder, ``validate`` following a ``train --dataset``, relative FL site folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from carina.archive import Archive
from carina.cli.main import app
from carina.data.folders import SplitRule, init_dataset, split_cases
from carina.engine.data import record_trained_on, resolve_cases
from carina.errors import DatasetError
from carina.fl.job import parse_sites

MAX = 1 << 30


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from carina.data.msd import export_dataset

    folder = tmp_path_factory.mktemp("spine_ct")
    export_dataset("spine_ct", folder)
    return folder


def own_folder(
    export: Path, target: Path, *, images: str, labels: str, copies: int = 2, nnunet: bool = False
) -> Path:
    """The exported CT as one's own folder: ``copies`` cases of each half, no dataset.json."""
    (target / images).mkdir(parents=True)
    (target / labels).mkdir(parents=True)
    for half in ("train", "heldout"):
        for n in range(copies):
            name = f"pat{n}_{half}"
            image = f"{name}_0000.nii.gz" if nnunet else f"{name}.nii.gz"
            shutil.copy(export / "imagesTr" / f"spine_ct_{half}.nii.gz", target / images / image)
            shutil.copy(
                export / "labelsTr" / f"spine_ct_{half}.nii.gz", target / labels / f"{name}.nii.gz"
            )
    return target


def test_msd_layout_with_bad_pairs_and_an_unlabelled_image(export: Path, tmp_path: Path) -> None:
    folder = own_folder(export, tmp_path / "mine", images="imagesTr", labels="labelsTr")
    image = export / "imagesTr" / "spine_ct_train.nii.gz"
    shutil.copy(image, folder / "imagesTr" / "broken.nii.gz")
    (folder / "labelsTr" / "broken.nii.gz").write_bytes(b"\x1f\x8b not a gzip")
    shutil.copy(image, folder / "imagesTr" / "shifted.nii.gz")
    label = nib.load(export / "labelsTr" / "spine_ct_train.nii.gz")
    shifted = label.affine.copy()
    shifted[:3, 3] += 5.0
    nib.save(
        nib.Nifti1Image(np.asanyarray(label.dataobj), shifted),
        folder / "labelsTr" / "shifted.nii.gz",
    )
    shutil.copy(image, folder / "imagesTr" / "waiting.nii.gz")

    report = init_dataset(folder, labels=["L2", "L3", "L4"], modality="CT", max_bytes=MAX)
    document = json.loads((folder / "dataset.json").read_text())
    assert report.training + report.validation == 4 and report.validation == 1
    assert report.unlabelled == 1 and document["test"] == ["imagesTr/waiting.nii.gz"]
    assert sorted(line.split(":")[0] for line in report.skipped) == [
        "broken.nii.gz",
        "shifted.nii.gz",
    ]
    assert "not the image's" in next(s for s in report.skipped if s.startswith("shifted"))
    assert document["labels"] == {"0": "background", "1": "L2", "2": "L3", "3": "L4"}
    assert document["split"] == {
        "validation_fraction": 0.2, "seed": 0, "group_by": None, "by": "case"
    }  # fmt: skip
    assert all(not Path(c["image"]).is_absolute() for c in document["training"])
    first = document["validation"]
    init_dataset(folder, labels=["L2", "L3", "L4"], max_bytes=MAX)
    assert json.loads((folder / "dataset.json").read_text())["validation"] == first


def test_plain_and_nnunet_layouts(export: Path, tmp_path: Path) -> None:
    plain = own_folder(export, tmp_path / "plain", images="images", labels="labels")
    report = init_dataset(plain, max_bytes=MAX)
    assert report.layout == "images/ + labels/" and report.training + report.validation == 4
    assert report.labels == {1: "label 1", 2: "label 2", 3: "label 3"}, "named from the values"

    raw = own_folder(
        export, tmp_path / "raw", images="imagesTr", labels="labelsTr", copies=3, nnunet=True
    )
    shutil.copy(
        raw / "imagesTr" / "pat0_train_0000.nii.gz", raw / "imagesTr" / "pat0_train_0001.nii.gz"
    )
    report = init_dataset(raw, max_bytes=MAX)
    assert report.layout.startswith("nnU-Net raw") and "1 extra channel" in report.layout
    assert report.training + report.validation == 6 and not report.skipped


def test_the_split_keeps_a_patients_scans_together_and_is_reproducible() -> None:
    cases = [{"image": f"pat{p}_{scan}.nii.gz"} for p in range(10) for scan in ("t1", "t2")]
    rule = SplitRule(validation=0.3, seed=7, group=r"^(pat\d+)_")
    train, val = split_cases(cases, rule)
    patients = {c["image"].split("_")[0] for c in val}
    assert len(patients) == 3 and len(val) == 6
    assert not patients & {c["image"].split("_")[0] for c in train}
    assert split_cases(list(reversed(cases)), rule) == (train, val), "order-free"
    assert split_cases(cases, SplitRule(validation=0.3, seed=8, group=r"^(pat\d+)_"))[1] != val
    with pytest.raises(DatasetError, match="at least two"):
        split_cases(cases[:2], rule)
    with pytest.raises(DatasetError, match="regular expression"):
        split_cases(cases, SplitRule(group="(unclosed"))


def test_a_training_only_dataset_json_is_split(export: Path, tmp_path: Path) -> None:
    folder = own_folder(export, tmp_path / "msd", images="imagesTr", labels="labelsTr")
    init_dataset(folder, labels=["L2", "L3", "L4"], max_bytes=MAX)
    document = json.loads((folder / "dataset.json").read_text())
    document["training"] += document.pop("validation")
    del document["split"]
    (folder / "dataset.json").write_text(json.dumps(document))
    archive = Archive.open(
        Path(__file__).parents[2] / "examples" / "archives" / "spine_ct_vertebrae"
    )
    settings = archive.train_config().settings.dataset
    cases = resolve_cases(archive, settings, override=folder, data_dir=tmp_path)
    assert len(cases.train) == 3 and len(cases.val) == 1
    assert "lists no 'validation' cases" in cases.notes[0]


def test_archive_new_records_the_folder_and_validate_follows_train(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    own_folder(export, tmp_path / "mydata", images="imagesTr", labels="labelsTr")
    init_dataset(Path("mydata"), labels=["L2", "L3", "L4"], modality="CT", max_bytes=MAX)
    result = CliRunner().invoke(app, ["archive", "new", "models/mine", "--dataset", "mydata"])
    assert result.exit_code == 0, result.output
    config = json.loads(Path("models/mine/config/config_train.json").read_text())
    assert config["dataset"] == {"datalist": "../../mydata/dataset.json"}
    archive = Archive.open(Path("models/mine"))
    cases = resolve_cases(archive, archive.train_config().settings.dataset, data_dir=tmp_path)
    assert len(cases.train) + len(cases.val) == 4 and cases.labels == {
        0: "background",
        1: "L2",
        2: "L3",
        3: "L4",
    }

    refused = CliRunner().invoke(app, ["archive", "new", "other", "--dataset", "mydata/imagesTr"])
    assert refused.exit_code != 0 and "carina dataset init" in str(refused.exception)

    elsewhere = own_folder(export, tmp_path / "elsewhere", images="images", labels="labels")
    init_dataset(elsewhere, max_bytes=MAX)
    record_trained_on(archive, elsewhere)
    settings = archive.train_config().settings.dataset
    scored = resolve_cases(archive, settings, data_dir=tmp_path, trained=True)
    assert scored.datalist == (elsewhere / "dataset.json").resolve()
    assert "trained on" in scored.notes[0]
    record_trained_on(archive, None)
    assert resolve_cases(archive, settings, data_dir=tmp_path, trained=True).notes == []


def test_relative_fl_site_folders_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site_a").mkdir()
    sites = parse_sites(["a=site_a", "b=spine_ct_vertebra", "c=../elsewhere/data"])
    assert sites["a"] == str(tmp_path / "site_a")
    assert sites["b"] == "spine_ct_vertebra", "a shipped dataset stays a name"
    assert sites["c"] == str((tmp_path / "../elsewhere/data").resolve())
