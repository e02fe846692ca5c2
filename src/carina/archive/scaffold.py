"""``carina archive new``: a working archive from a template, for a shipped dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from carina.archive.schema import ModelType
from carina.errors import ArchiveError, ConfigError

#: Crop sizes that fit the shipped volumes (multiples of 8 for a 3-level UNet).
_ROI = {"spine_ct": [48, 40, 32], "spine_mr": [48, 40, 32], "brain_mr": [64, 64, 48]}


def scaffold_archive(
    target: str | Path,
    *,
    task: str = "segmentation",
    labels: list[str] | None = None,
    dataset: str = "spine_ct",
) -> Path:
    """Write a new archive folder that trains on ``dataset`` and serves the result.

    Raises:
        ArchiveError: ``target`` exists or the task has no template.
        DatasetError: unknown dataset.
    """
    from carina.data import get_dataset

    target = Path(target)
    if target.exists():
        raise ArchiveError(f"{target.name}: already exists; choose a new folder")
    try:
        model_type = ModelType(task)
    except ValueError as exc:
        raise ConfigError("--task", task, "use segmentation, deepgrow or annotation") from exc
    if model_type != ModelType.SEGMENTATION:
        raise ArchiveError(f"no template for task {task!r} yet")
    spec = get_dataset(dataset)
    names = labels or [name for value, name in sorted(spec.labels.items()) if value > 0]
    if len(names) != len(spec.labels) - 1:
        raise ConfigError(
            "--labels", ",".join(names), f"{dataset} has {len(spec.labels) - 1} labels"
        )
    family = dataset.removesuffix("_vertebra")
    roi = _ROI.get(family, [64, 64, 48])
    intensity = _intensity(spec.modality)
    load = {"_target_": "carina.engine.transforms.LoadVolumed", "keys": ["image", "label"]}
    channel = {
        "_target_": "EnsureChannelFirstd",
        "keys": ["image", "label"],
        "channel_dim": "no_channel",
    }
    inferer = {
        "_target_": "SlidingWindowInferer",
        "roi_size": roi,
        "sw_batch_size": 4,
        "overlap": 0.5,
    }
    train: dict[str, Any] = {
        "task": "segmentation",
        "epochs": 10,
        "iterations_per_epoch": 100,
        "val_interval": 2,
        "batch_size": 1,
        "learning_rate": 0.01,
        "seed": 0,
        "amp": True,
        "cache": "memory",
        "dataset": {"name": "@DATASET"},
        "network_def": {
            "_target_": "UNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": len(names) + 1,
            "channels": [8, 16, 32, 64],
            "strides": [2, 2, 2],
            "num_res_units": 1,
        },
        "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
        "optimizer": {"_target_": "torch.optim.Adam", "_mode_": "callable", "lr": "@learning_rate"},
        "lr_scheduler": {
            "_target_": "torch.optim.lr_scheduler.PolynomialLR",
            "_mode_": "callable",
            "total_iters": "@epochs",
            "power": 0.9,
        },
        "train_preprocessing": [
            load,
            channel,
            intensity,
            {"_target_": "SpatialPadd", "keys": ["image", "label"], "spatial_size": roi},
            {
                "_target_": "RandSpatialCropd",
                "keys": ["image", "label"],
                "roi_size": roi,
                "random_size": False,
            },
            {"_target_": "RandFlipd", "keys": ["image", "label"], "prob": 0.5, "spatial_axis": 2},
        ],
        "val_preprocessing": [load, channel, intensity],
        "val_inferer": inferer,
    }
    serving = {
        "version": "1",
        "type": "segmentation",
        "labels": names,
        "description": f"{', '.join(names)} from {spec.modality} ({dataset}); research use only",
        "preprocessing": [
            {**load, "keys": "image"},
            {**channel, "keys": "image"},
            intensity,
        ],
        "inferer": inferer,
        "postprocessing": [{"_target_": "AsDiscreted", "keys": "pred", "argmax": True}],
    }
    files = {
        "config/environment.json": {"DATASET": dataset},
        "config/config_train.json": train,
        "config/config_validation.json": {"split": "validation", "inferer": inferer},
        "config/config_aiaa.json": serving,
    }
    for relative, content in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")
    (target / "docs").mkdir()
    (target / "docs" / "README.md").write_text(
        f"# {target.name}\n\nSegmentation of {', '.join(names)} in {spec.modality}, trained on the "
        f"shipped dataset `{dataset}` (one subject: validation uses the held-out half).\n\n"
        f"    carina train {target.name}\n    carina validate {target.name}\n\n"
        "For research use, not for diagnosis.\n"
    )
    return target


def _intensity(modality: str) -> dict[str, Any]:
    if modality == "CT":
        return {
            "_target_": "ScaleIntensityRanged",
            "keys": "image",
            "a_min": -1000,
            "a_max": 1000,
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": True,
        }
    return {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True}
