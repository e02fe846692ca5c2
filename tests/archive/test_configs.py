"""Archive configs: typed settings, clear errors, --set, Clara translation, legacy names, code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from carina.archive import Archive, parse_override
from carina.archive.legacy import rewrite_legacy
from carina.engine.check import check_archive
from carina.engine.train import TrainOptions, check_training
from carina.errors import ArchiveError, ConfigError, UntrustedCodeError
from tests.archive.conftest import write_json


def edit(archive: Path, file: str, change: Any) -> None:
    path = archive / "config" / file
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_example_archive_checks(spine_archive: Path, data_dir: Path) -> None:
    report = check_archive(spine_archive, data_dir=data_dir)
    assert any("components build" in line for line in report.checked)
    assert any("model.pt" in note for note in report.notes)


def test_typo_in_a_key_names_file_key_and_suggestion(spine_archive: Path) -> None:
    edit(spine_archive, "config_train.json", lambda c: c.update(epoch=c.pop("epochs")))
    with pytest.raises(ConfigError) as caught:
        Archive.open(spine_archive).train_config()
    assert str(caught.value).startswith(
        "config_train.json: epoch: unknown key (did you mean 'epochs'?)"
    )


def test_typo_in_a_nested_key(spine_archive: Path) -> None:
    edit(spine_archive, "config_train.json", lambda c: c["dataset"].update(train_kye="training"))
    with pytest.raises(ConfigError, match=r"config_train.json: dataset.train_kye: unknown key"):
        Archive.open(spine_archive).train_config()


def test_unknown_component_name(spine_archive: Path, data_dir: Path) -> None:
    edit(spine_archive, "config_train.json", lambda c: c["loss"].update(_target_="DiceCELos"))
    with pytest.raises(ConfigError) as caught:
        check_training(Archive.open(spine_archive), TrainOptions(data_dir=data_dir))
    assert "config_train.json: loss: unknown component 'DiceCELos'" in str(caught.value)
    assert "did you mean 'DiceCELoss'" in str(caught.value)


def test_wrong_component_argument_names_the_list_item(spine_archive: Path, data_dir: Path) -> None:
    edit(
        spine_archive,
        "config_train.json",
        lambda c: c["train_preprocessing"][2].update(a_minimum=-1000),
    )
    with pytest.raises(ConfigError, match=r"config_train.json: train_preprocessing.2: .*a_minimum"):
        check_training(Archive.open(spine_archive), TrainOptions(data_dir=data_dir))


def test_missing_dataset_file(spine_archive: Path, tmp_path: Path, data_dir: Path) -> None:
    datalist = write_json(
        tmp_path / "data" / "dataset.json",
        {"labels": {"0": "background", "1": "L2", "2": "L3", "3": "L4"},
         "training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}],
         "validation": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}]},
    )  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        check_training(
            Archive.open(spine_archive), TrainOptions(dataset=datalist, data_dir=data_dir)
        )
    assert (
        str(caught.value) == "dataset.json: training.0.image: file imagesTr/a.nii.gz does not exist"
    )


def test_label_count_must_match_the_network(spine_archive: Path, data_dir: Path) -> None:
    edit(spine_archive, "config_train.json", lambda c: c["network_def"].update(out_channels=3))
    with pytest.raises(ConfigError) as caught:
        check_training(Archive.open(spine_archive), TrainOptions(data_dir=data_dir))
    message = str(caught.value)
    assert message.startswith("config_train.json: network_def.out_channels: the network has 3")
    assert "names 4 labels" in message


def test_set_overrides(spine_archive: Path) -> None:
    overrides = dict(
        parse_override(text)
        for text in ["epochs=3", "DATASET=spine_ct_vertebra", "network_def.channels=[4,8,16,32]"]
    )
    config = Archive.open(spine_archive, overrides=overrides).train_config()
    assert config.settings.epochs == 3
    assert config.settings.dataset.name == "spine_ct_vertebra"
    assert config.settings.network_def["channels"] == [4, 8, 16, 32]
    with pytest.raises(ConfigError, match=r"epoks: not a variable nor a top-level key \(did you"):
        Archive.open(spine_archive, overrides={"epoks": 3}).train_config()
    with pytest.raises(ConfigError, match="nothing: no such key"):
        Archive.open(spine_archive, overrides={"nothing.deeper.x": 1}).train_config()


def test_legacy_names_and_arguments_are_rewritten() -> None:
    config = {
        "pre": [
            {"_target_": "AddChanneld", "keys": "image"},
            {"_target_": "monai.transforms.AsChannelFirstd", "keys": "image"},
        ],
        "post": {"_target_": "AsDiscreted", "keys": "pred", "threshold_values": True, "logit_thresh": 0.4},
        "onehot": {"_target_": "AsDiscreted", "keys": "pred", "to_onehot": True, "n_classes": 3},
        "net": {"_target_": "UNet", "dimensions": 3, "in_channels": 1, "out_channels": 2,
                "channels": [4, 8], "strides": [2]},
    }  # fmt: skip
    rewritten, notes = rewrite_legacy(config)
    assert rewritten["pre"][0] == {
        "_target_": "EnsureChannelFirstd",
        "keys": "image",
        "channel_dim": "no_channel",
    }
    assert rewritten["pre"][1]["_target_"] == "monai.transforms.EnsureChannelFirstd"
    assert rewritten["pre"][1]["channel_dim"] == -1
    assert rewritten["post"]["threshold"] == 0.4 and "threshold_values" not in rewritten["post"]
    assert rewritten["onehot"]["to_onehot"] == 3
    assert rewritten["net"]["spatial_dims"] == 3 and "dimensions" not in rewritten["net"]
    assert len(notes) == 5 and any("AddChanneld was removed" in n for n in notes)
    from monai.bundle import ConfigParser

    parser = ConfigParser(rewritten)
    for key in ("pre", "post", "onehot", "net"):
        parser.get_parsed_content(key)


CLARA_41 = {
    "CLARA_TRAIN_VERSION": "4.1.0",
    "epochs": 4,
    "learning_rate": 2e-3,
    "num_interval_per_valid": 2,
    "amp": True,
    "determinism": {"random_seed": 7},
    "train": {
        "loss": {"name": "DiceCELoss", "args": {"to_onehot_y": True, "softmax": True}},
        "optimizer": {"name": "Adam", "path": "torch.optim.Adam",
                      "args": {"params": "#@model.parameters()", "lr": "{learning_rate}"}},
        "model": {"name": "UNet", "args": {"dimensions": 3, "in_channels": 1, "out_channels": 4,
                                           "channels": [8, 16, 32], "strides": [2, 2]}},
        "pre_transforms": [
            {"name": "LoadImaged", "args": {"keys": ["image", "label"]}},
            {"name": "AddChanneld", "args": {"keys": ["image", "label"]}},
            {"name": "ScaleIntensityRanged#Scale", "args": {"keys": "image", "a_min": -1000,
             "a_max": 1000, "b_min": 0.0, "b_max": 1.0, "clip": True}},
            {"name": "RandSpatialCropd", "args": {"keys": ["image", "label"], "roi_size": [32, 32, 32],
             "random_size": False}},
            {"name": "RandFlipd", "disabled": "{NO_FLIP}", "args": {"keys": ["image", "label"]}},
        ],
        "dataset": {"name": "CacheDataset", "data_list_file_path": "{DATASET_JSON}",
                    "data_file_base_dir": "{DATA_ROOT}", "data_list_key": "training",
                    "args": {"transform": "@pre_transforms"}},
        "dataloader": {"name": "DataLoader", "args": {"dataset": "@dataset", "batch_size": 2}},
        "handlers": [{"name": "StatsHandler", "rank": 0,
                      "args": {"output_transform": "#monai.handlers.from_engine(['loss'], first=True)"}}],
        "trainer": {"name": "SupervisedTrainer", "args": {"max_epochs": "{epochs}"}},
    },
    "validate": {
        "pre_transforms": [{"ref": "LoadImaged"}, {"ref": "AddChanneld"}, {"ref": "Scale"}],
        "inferer": {"name": "SlidingWindowInferer", "args": {"roi_size": [32, 32, 32]}},
        "dataset": {"name": "Dataset", "data_list_key": "validation"},
        "key_metric": {"name": "MeanDice", "log_label": "val_mean_dice",
                       "args": {"output_transform": "lambda x: (x['pred'], x['label'])"}},
    },
}  # fmt: skip


def clara_archive(root: Path, datalist: Path) -> Path:
    write_json(root / "config" / "config_train.json", CLARA_41)
    write_json(
        root / "config" / "environment.json",
        {"DATASET_JSON": str(datalist), "DATA_ROOT": str(datalist.parent), "NO_FLIP": True},
    )
    return root


def test_clara_41_config_translates_and_builds(tmp_path: Path, data_dir: Path) -> None:
    from carina.data import ensure_dataset

    datalist = ensure_dataset("spine_ct", data_dir / "spine_ct")
    archive = Archive.open(clara_archive(tmp_path / "clara", datalist), overrides={"epochs": 1})
    config = archive.train_config()
    settings = config.settings
    assert (settings.epochs, settings.learning_rate, settings.val_interval, settings.seed) == (
        1, 2e-3, 2, 7,
    )  # fmt: skip
    assert settings.batch_size == 2 and settings.cache == "memory"
    assert settings.dataset.datalist == str(datalist) and settings.dataset.val_key == "validation"
    assert settings.optimizer == {"_target_": "torch.optim.Adam", "lr": 2e-3, "_mode_": "callable"}
    assert [t["_target_"] for t in settings.val_preprocessing] == [
        "LoadImaged", "EnsureChannelFirstd", "ScaleIntensityRanged",
    ]  # fmt: skip
    assert len(settings.train_preprocessing) == 4, "the disabled RandFlipd is dropped"
    assert settings.network_def["spatial_dims"] == 3
    assert any("handlers, trainer" in note for note in config.resolved.notes)
    check_training(archive, TrainOptions(data_dir=data_dir))


def test_clara_config_with_code_is_refused_untrusted_and_accepted_trusted(
    tmp_path: Path, data_dir: Path
) -> None:
    from carina.data import ensure_dataset

    datalist = ensure_dataset("spine_ct", data_dir / "spine_ct")
    root = clara_archive(tmp_path / "clara", datalist)
    edit(
        root,
        "config_train.json",
        lambda c: c["train"]["pre_transforms"][2]["args"].update(a_min="#-1000 * 1"),
    )
    assert (
        Archive.open(root).train_config().settings.train_preprocessing[2]["a_min"] == "$-1000 * 1"
    )
    with pytest.raises(UntrustedCodeError) as caught:
        Archive.open(root, trusted=False).train_config()
    assert "config_train.json: train.pre_transforms.2.args.a_min: Python expression" in str(
        caught.value
    )


def test_untrusted_archive_refuses_code_folders_and_pickles(spine_archive: Path) -> None:
    (spine_archive / "custom").mkdir()
    (spine_archive / "custom" / "net.py").write_text("import os\n")
    (spine_archive / "models").mkdir()
    torch.save({"net": torch.nn.Linear(2, 2)}, spine_archive / "models" / "model.pt")
    with pytest.raises(UntrustedCodeError) as caught:
        Archive.open(spine_archive, trusted=False)
    assert "custom/: a folder of code" in caught.value.findings
    assert any(
        f.startswith("models/model.pt: not loadable as weights only") for f in caught.value.findings
    )
    Archive.open(spine_archive)  # the user's own folder is trusted


def test_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not a model archive"):
        Archive.open(tmp_path)
    with pytest.raises(ArchiveError, match="carina archive unpack"):
        Archive.open(tmp_path / "model.zip")


def test_invalid_json_names_line_and_column(spine_archive: Path) -> None:
    (spine_archive / "config" / "config_train.json").write_text('{"epochs": 3,\n "loss": }')
    with pytest.raises(ConfigError, match=r"config_train.json: not valid JSON \(line 2, column 10"):
        Archive.open(spine_archive).train_config()


def test_scaffolded_archive_checks(tmp_path: Path, data_dir: Path) -> None:
    from carina.archive.scaffold import scaffold_archive

    root = scaffold_archive(tmp_path / "mr_discs", dataset="spine_mr")
    report = check_archive(root, data_dir=data_dir)
    assert any("labels ['C5', 'C6', 'C7', 'disc C5-C6', 'disc C6-C7']" in c for c in report.checked)
    with pytest.raises(ArchiveError, match="already exists"):
        scaffold_archive(root)
    shutil.rmtree(root)
    with pytest.raises(ConfigError, match="has 5 labels"):
        scaffold_archive(root, dataset="spine_mr", labels=["a", "b"])
