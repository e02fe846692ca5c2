"""``carina archive new``: a working archive from a template, trained on shipped datasets or on
one's own folder (a ``dataset.json`` from ``carina dataset init``).

Templates: ``segmentation`` (one dataset's labels), ``deepgrow`` (3D or 2D clicks, every labelled
structure of the given datasets) and ``annotation`` (DExtr3D extreme points, likewise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from carina.archive.schema import ModelType
from carina.errors import ArchiveError, ConfigError

#: Crop sizes that fit the shipped volumes (multiples of 8 for a 3-level UNet).
_ROI = {"spine_ct": [48, 40, 32], "spine_mr": [48, 40, 32], "brain_mr": [64, 64, 48]}
#: The array axis that runs left-right in each shipped dataset: flips along it are anatomical.
_LR_AXIS = {"spine_ct": 2, "spine_mr": 2, "brain_mr": 0}
_LOAD = "carina.engine.transforms.LoadVolumed"
_ADAM = {"_target_": "torch.optim.Adam", "_mode_": "callable", "lr": "@learning_rate"}
_POLY = {
    "_target_": "torch.optim.lr_scheduler.PolynomialLR",
    "_mode_": "callable",
    "total_iters": "@epochs",
    "power": 0.9,
}


def scaffold_archive(
    target: str | Path,
    *,
    task: str = "segmentation",
    labels: list[str] | None = None,
    dataset: str | list[str] = "spine_ct",
    dimensions: int = 3,
) -> Path:
    """Write a new archive folder that trains on shipped data and serves the result.

    Args:
        target: the new folder.
        task: ``segmentation``, ``deepgrow`` or ``annotation``.
        labels: label names (segmentation; default: the dataset's).
        dataset: a shipped dataset, or several for the interactive tasks.
        dimensions: 3, or 2 for a 2D DeepGrow model.

    Raises:
        ArchiveError: ``target`` exists.
        ConfigError: unknown task, wrong labels, or 2D for a task other than DeepGrow.
        DatasetError: unknown dataset.
    """
    target = Path(target)
    if target.exists():
        raise ArchiveError(f"{target.name}: already exists; choose a new folder")
    try:
        model_type = ModelType(task)
    except ValueError as exc:
        raise ConfigError("--task", task, "use segmentation, deepgrow or annotation") from exc
    names = [dataset] if isinstance(dataset, str) else list(dataset)
    if dimensions == 2 and model_type != ModelType.DEEPGROW:
        raise ConfigError("--dimensions", "2", "only DeepGrow has a 2D template")
    folder = _dataset_folder(names)
    if folder is not None:
        train, serving, what = _own_segmentation(model_type, folder, labels, target)
        names = [folder.name]
    else:
        train, serving, what = _template(model_type, names, labels, dimensions)
    files = {
        "config/environment.json": {"DATASET": names[0] if len(names) == 1 else names},
        "config/config_train.json": train,
        "config/config_validation.json": {"split": "validation"},
        "config/config_aiaa.json": serving,
    }
    if model_type == ModelType.SEGMENTATION:
        files["config/config_validation.json"]["inferer"] = train["val_inferer"]
    for relative, content in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")
    _write_readme(target, what, folder, names)
    return target


def _write_readme(target: Path, what: str, folder: Path | None, names: list[str]) -> None:
    """``docs/README.md``: what the model does, what it trains on, how to train it."""
    (target / "docs").mkdir()
    trained_on = (
        f"the dataset `{folder}` (its dataset.json: training and validation cases)"
        if folder is not None
        else f"the shipped dataset(s) {', '.join(f'`{n}`' for n in names)} (one subject each: "
        "validation uses the held-out half)"
    )
    (target / "docs" / "README.md").write_text(
        f"# {target.name}\n\n{what[0].upper()}{what[1:]}, trained on {trained_on}.\n\n"
        f"    carina train {target.name}\n    carina validate {target.name}\n\n"
        "For research use, not for diagnosis.\n"
    )


def _dataset_folder(names: list[str]) -> Path | None:
    """The folder (or ``dataset.json``) of one's own data ``--dataset`` names, or None for
    shipped dataset names.

    Raises:
        ConfigError: a folder without ``dataset.json`` (``carina dataset init`` writes one).
    """
    if len(names) != 1 or not ("/" in names[0] or Path(names[0]).exists()):
        return None
    path = Path(names[0])
    folder = path.parent if path.name == "dataset.json" else path
    if not (folder / "dataset.json").is_file():
        raise ConfigError(
            "--dataset", names[0], "no dataset.json there: run `carina dataset init` on it first"
        )
    return folder


def _own_segmentation(
    model_type: ModelType, folder: Path, labels: list[str] | None, target: Path
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A segmentation template on one's own dataset: its labels and modality from its
    ``dataset.json``, recorded as the archive's datalist (relative to the archive when the
    dataset was given relative).

    Raises:
        ConfigError: another task, or labels that are not the dataset's.
    """
    import os

    if model_type != ModelType.SEGMENTATION:
        raise ConfigError(
            "--task", model_type.value, "a folder of one's own data trains segmentation archives"
        )
    document = json.loads((folder / "dataset.json").read_text())
    listed = document.get("labels") or {}
    names = [str(n) for v, n in sorted((int(k), n) for k, n in listed.items()) if v > 0]
    if labels and labels != names:
        raise ConfigError("--labels", ",".join(labels), f"the dataset's labels are {names}")
    if not names:
        raise ConfigError(
            "dataset.json", "labels", "names no label: run `carina dataset init --labels ...`"
        )
    modality = str((document.get("modality") or {}).get("0", "MR"))
    train, serving = _segmentation(folder.name, modality, names)
    datalist = folder / "dataset.json"
    relative = os.path.relpath(datalist.resolve(), target.resolve())
    train["dataset"] = {"datalist": relative if not folder.is_absolute() else str(datalist)}
    return train, serving, f"{', '.join(names)} in {modality}"


def _template(
    model_type: ModelType, names: list[str], labels: list[str] | None, dimensions: int
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The training and serving configs of the task, and what the model does, in words.

    Raises:
        ConfigError: wrong labels, or several datasets for a segmentation.
        DatasetError: unknown dataset.
    """
    from carina.data import get_dataset

    specs = [get_dataset(name) for name in names]
    if model_type == ModelType.DEEPGROW:
        train, serving = _deepgrow(names, dimensions)
        return train, serving, f"any structure from clicks ({dimensions}D DeepGrow)"
    if model_type != ModelType.SEGMENTATION:
        train, serving = _annotation(names)
        return train, serving, "any structure from its 6 extreme points (DExtr3D)"
    if len(specs) != 1:
        raise ConfigError("--dataset", ",".join(names), "segmentation trains on one dataset")
    spec = specs[0]
    label_names = labels or [name for value, name in sorted(spec.labels.items()) if value > 0]
    if len(label_names) != len(spec.labels) - 1:
        raise ConfigError(
            "--labels", ",".join(label_names), f"{spec.name} has {len(spec.labels) - 1} labels"
        )
    train, serving = _segmentation(spec.name, spec.modality, label_names)
    return train, serving, f"{', '.join(label_names)} in {spec.modality}"


def _segmentation(
    dataset: str, modality: str, labels: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    roi = _ROI.get(dataset.removesuffix("_vertebra"), [64, 64, 48])
    intensity = _intensity(modality)
    load = {"_target_": _LOAD, "keys": ["image", "label"]}
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
    train = {
        **_schedule(epochs=10, learning_rate=0.01),
        "task": "segmentation",
        "dataset": {"name": "@DATASET"},
        "network_def": _unet(3, 1, len(labels) + 1, [8, 16, 32, 64]),
        "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
        "optimizer": _ADAM,
        "lr_scheduler": _POLY,
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
            {
                "_target_": "RandFlipd",
                "keys": ["image", "label"],
                "prob": 0.5,
                "spatial_axis": _LR_AXIS.get(dataset.removesuffix("_vertebra"), 0),
            },
        ],
        "val_preprocessing": [load, channel, intensity],
        "val_inferer": inferer,
    }
    serving = {
        "version": "1",
        "type": "segmentation",
        "labels": labels,
        "description": f"{', '.join(labels)} in {modality} ({dataset}); research use only",
        "modality": modality,
        "preprocessing": [{**load, "keys": "image"}, {**channel, "keys": "image"}, intensity],
        "inferer": inferer,
        "postprocessing": [{"_target_": "AsDiscreted", "keys": "pred", "argmax": True}],
    }
    return train, serving


def _interactive_data(
    roi: list[int], crop: dict[str, Any], guidance: dict[str, Any], *, train: bool, lr_axis: int
) -> list[Any]:
    keys = ["image", "label"]
    items: list[Any] = [
        {"_target_": _LOAD, "keys": keys},
        {"_target_": "carina.interactive.SelectLabeld", "keys": "label"},
        {"_target_": "EnsureChannelFirstd", "keys": keys, "channel_dim": "no_channel"},
    ]
    if len(roi) == 2:
        items.append(
            {"_target_": "carina.interactive.StructureSliced", "keys": keys, "random": train}
        )
    if train:  # before the crop, which places the simulated input on the flipped structure
        flip_axis = lr_axis if len(roi) == 3 else min(lr_axis, 1)
        items.append(
            {"_target_": "RandFlipd", "keys": keys, "prob": 0.5, "spatial_axis": flip_axis}
        )
    items.append(crop)
    items.append({"_target_": "NormalizeIntensityd", "keys": "image"})
    items.append(guidance)
    return items


def _deepgrow(datasets: list[str], dimensions: int) -> tuple[dict[str, Any], dict[str, Any]]:
    roi = [64, 64, 64] if dimensions == 3 else [96, 96]
    sigma, margin, window = 2.0, 6, 112.0 if dimensions == 3 else 144.0

    def crop(train: bool) -> dict[str, Any]:
        return {
            "_target_": "carina.interactive.InteractionCropd",
            "keys": ["image", "label"], "roi": roi, "mode": "deepgrow", "window": window,
            "jitter": 4 if train else 0, "random": train,
        }  # fmt: skip

    def guidance(train: bool) -> dict[str, Any]:
        return {"_target_": "carina.interactive.AddGuidanced", "sigma": sigma, "mode": "clicks"}

    train = {
        **_schedule(epochs=24, learning_rate=0.01, batch_size=2),
        "task": "deepgrow",
        "per_structure": True,
        "dataset": {"name": "@DATASET"},
        "network_def": _unet(
            dimensions, 3, 1, [8, 16, 32, 64] if dimensions == 3 else [16, 32, 64, 128]
        ),
        "loss": {"_target_": "DiceCELoss", "sigmoid": True},
        "optimizer": _ADAM,
        "lr_scheduler": _POLY,
        "train_preprocessing": _interactive_data(
            roi, crop(True), guidance(True), train=True, lr_axis=_lr_axis(datasets)
        ),
        "val_preprocessing": _interactive_data(
            roi, crop(False), guidance(False), train=False, lr_axis=_lr_axis(datasets)
        ),
        "val_inferer": {"_target_": "SimpleInferer"},
        "iteration_update": {
            "_target_": "carina.interactive.ClickSimulation",
            "max_clicks": 3,
            "sigma": sigma,
        },
    }
    serving = {
        "version": "1",
        "type": "deepgrow",
        "labels": [],
        "description": f"{dimensions}D DeepGrow: any structure from foreground/background clicks",
        "deepgrow": f"{dimensions}D",
        "roi": roi,
        "sigma": sigma,
        "window": window,
        "margin": margin,
        "preprocessing": [{"_target_": "NormalizeIntensityd", "keys": "image"}],
    }
    return train, serving


def _annotation(datasets: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    roi, sigma, padding = [48, 48, 48], 3.0, 10.0

    def crop(train: bool) -> dict[str, Any]:
        return {
            "_target_": "carina.interactive.InteractionCropd",
            "keys": ["image", "label"], "roi": roi, "mode": "extreme",
            "padding": padding, "perturb": 2 if train else 0,
        }  # fmt: skip

    heatmap = {"_target_": "carina.interactive.AddGuidanced", "sigma": sigma, "mode": "heatmap"}
    train = {
        **_schedule(epochs=16, learning_rate=0.01, batch_size=2),
        "task": "annotation",
        "per_structure": True,
        "dataset": {"name": "@DATASET"},
        "network_def": _unet(3, 2, 1, [16, 32, 64, 128]),
        "loss": {"_target_": "DiceCELoss", "sigmoid": True},
        "optimizer": _ADAM,
        "lr_scheduler": _POLY,
        "train_preprocessing": _interactive_data(
            roi, crop(True), heatmap, train=True, lr_axis=_lr_axis(datasets)
        ),
        "val_preprocessing": _interactive_data(
            roi, crop(False), heatmap, train=False, lr_axis=_lr_axis(datasets)
        ),
        "val_inferer": {"_target_": "SimpleInferer"},
    }
    serving = {
        "version": "1",
        "type": "annotation",
        "labels": [],
        "description": "DExtr3D: any structure from its 6 extreme points",
        "roi": roi,
        "sigma": sigma,
        "padding": padding,
        "preprocessing": [{"_target_": "NormalizeIntensityd", "keys": "image"}],
    }
    return train, serving


def _lr_axis(datasets: list[str]) -> int:
    """The left-right axis shared by the datasets (flips along it are anatomical)."""
    axes = {_LR_AXIS.get(name.removesuffix("_vertebra"), 0) for name in datasets}
    if len(axes) != 1:
        raise ConfigError("--dataset", ",".join(datasets), "the datasets' left-right axes differ")
    return axes.pop()


def _schedule(*, epochs: int, learning_rate: float, batch_size: int = 1) -> dict[str, Any]:
    return {
        "epochs": epochs,
        "iterations_per_epoch": 100,
        "val_interval": 2,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": 0,
        "amp": True,
        "cache": "memory",
    }


def _unet(dimensions: int, inputs: int, outputs: int, channels: list[int]) -> dict[str, Any]:
    return {
        "_target_": "UNet",
        "spatial_dims": dimensions,
        "in_channels": inputs,
        "out_channels": outputs,
        "channels": channels,
        "strides": [2] * (len(channels) - 1),
        "num_res_units": 1,
    }


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
