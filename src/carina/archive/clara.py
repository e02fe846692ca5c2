"""Clara Train 3.x/4.x MMAR configs translated to Carina's Bundle-syntax configs (mmar.md 5-8).

Clara components (``{"name" | "path", "args", "disabled", "ref"}``) become ``{"_target_", ...}``;
``{VAR}`` is substituted (a string that is exactly ``"{VAR}"`` takes the variable's JSON type);
``@name`` references map to Carina's ids; ``#expr`` and ``lambda`` strings become ``$``
expressions, which only trusted archives may evaluate. The optimizer idiom
``"params": "#@model.parameters()"`` is recognised and turned into data (a callable component that
Carina calls with the network's parameters), so it is not code.

Carina wires trainer, evaluator, handlers and metrics itself (the 4.0 "by role" wiring for both
dialects), so those sections are read for their settings and otherwise dropped, with a note.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from carina.errors import ConfigError

#: Clara section/key -> Carina id.
_COMPONENT_IDS = {
    ("train", "model"): "network_def",
    ("train", "loss"): "loss",
    ("train", "optimizer"): "optimizer",
    ("train", "lr_scheduler"): "lr_scheduler",
    ("train", "pre_transforms"): "train_preprocessing",
    ("train", "post_transforms"): "train_postprocessing",
    ("validate", "pre_transforms"): "val_preprocessing",
    ("validate", "post_transforms"): "val_postprocessing",
    ("validate", "inferer"): "val_inferer",
}
_REFERENCE_IDS = {"model": "network_def", "loss": "loss", "optimizer": "optimizer"}
_TOP_LEVEL = {
    "epochs": "epochs",
    "learning_rate": "learning_rate",
    "num_interval_per_valid": "val_interval",
    "num_training_epoch_per_valid": "val_interval",
    "amp": "amp",
    "use_amp": "amp",
}
_DROPPED = {
    "trainer", "evaluator", "handlers", "key_metric", "additional_metrics", "metrics",
    "dataloader", "image_pipeline", "inferer", "aux_ops", "batch_transforms", "lr_policy",
    "iteration", "dataset",
}  # fmt: skip

#: Clara 3.x (TensorFlow) transform names -> MONAI dictionary transforms (mmar.md 8.2).
_CLARA3_TRANSFORMS = {
    "LoadNifti": "LoadImaged",
    "ConvertToChannelsFirst": "EnsureChannelFirstd",
    "ScaleByResolution": "Spacingd",
    "ScaleIntensityRange": "ScaleIntensityRanged",
    "FastPosNegRatioCropROI": "RandCropByPosNegLabeld",
    "RandomSpatialFlip": "RandFlipd",
    "ArgmaxAcrossChannels": "AsDiscreted",
    "TFScanWindowInferer": "SlidingWindowInferer",
    "Focal": "FocalLoss",
    "Dice": "DiceLoss",
    "ComputeAverageDice": "MeanDice",
}
_CLARA3_ARGS = {"fields": "keys", "target_resolution": "pixdim", "size": "spatial_size"}

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PARAMS_IDIOM = re.compile(r"^\$\s*@network_def\s*\.\s*parameters\s*\(\s*\)\s*$")


def is_clara_train_config(config: dict[str, Any]) -> bool:
    """True for a Clara-style ``config_train.json`` (sections ``train``/``validate``)."""
    return isinstance(config.get("train"), dict)


def translate_train_config(
    config: dict[str, Any], variables: dict[str, Any], *, file: str
) -> tuple[dict[str, Any], list[str]]:
    """A Clara ``config_train.json`` as a Carina train config, and notes on what was dropped.

    Args:
        config: the Clara config.
        variables: environment variables and ``--set`` overrides (they win over top-level keys).
        file: the config's file name, for errors.
    """
    variables = {**{k: v for k, v in config.items() if not isinstance(v, dict | list)}, **variables}
    context = _Context(config, variables, file)
    notes: list[str] = []
    out: dict[str, Any] = {}
    for clara_key, carina_key in _TOP_LEVEL.items():
        if clara_key in config:
            out[carina_key] = context.value(config[clara_key], clara_key)
    seed = (config.get("determinism") or {}).get("random_seed")
    if seed is not None:
        out["seed"] = context.value(seed, "determinism.random_seed")
    for (section, key), carina_id in _COMPONENT_IDS.items():
        value = (config.get(section) or {}).get(key)
        if value is not None:
            translated = context.value(value, f"{section}.{key}")
            if translated is not _DISABLED:
                out[carina_id] = translated
    _translate_data(config, context, out)
    if "optimizer" in out:
        out["optimizer"] = _callable_optimizer(out["optimizer"])
    if "lr_scheduler" in out:
        out["lr_scheduler"] = _callable_scheduler(out["lr_scheduler"])
    for section in ("train", "validate"):
        dropped = sorted(set(config.get(section) or {}) & _DROPPED - {"dataset", "dataloader"})
        if dropped:
            notes.append(
                f"{file}: {section}: {', '.join(dropped)} are wired by Carina's engine and ignored"
            )
    if "search" in config:
        out["search"] = config["search"]
    return out, notes


def translate_serving_config(
    config: dict[str, Any], variables: dict[str, Any], *, file: str
) -> dict[str, Any]:
    """A Clara ``config_aiaa.json`` (3.x or 4.x) as a Carina serving config."""
    if "preprocessing" in config or "pre_transforms" not in config:
        return config
    context = _Context(config, variables, file)
    inference = config.get("inference") or {}
    aiaa = inference.get("AIAA") or {}
    args = aiaa.get("args") or inference.get("args") or inference
    roi = args.get("roi")
    if args.get("scanning_window") and roi:
        inferer: dict[str, Any] = {
            "_target_": "SlidingWindowInferer",
            "roi_size": roi,
            "overlap": args.get("overlap", 0.25),
            "sw_batch_size": args.get("batch_size", 1),
        }
    else:
        inferer = {"_target_": "SimpleInferer"}
    post = [
        item
        for item in (config.get("post_transforms") or [])
        if not str(item.get("name", "")).endswith(("Restored", "RestoreLabeld", "Writer"))
    ]
    out: dict[str, Any] = {
        "version": str(config.get("version", "1")),
        "type": config.get("type"),
        "labels": config.get("labels", []),
        "description": config.get("description", ""),
        "preprocessing": context.value(config["pre_transforms"], "pre_transforms"),
        "inferer": inferer,
        "postprocessing": context.value(post, "post_transforms"),
        "meta_data": inference.get("meta_data") or inference.get("additional_info") or {},
    }
    dimensions = _guidance_dimensions(out["preprocessing"])
    if dimensions is not None and "deepgrow" not in out["meta_data"]:
        out["deepgrow"] = f"{dimensions}D"
    return out


def _guidance_dimensions(preprocessing: list[Any]) -> int | None:
    """The ``dimensions`` of MONAI's ``AddGuidanceFromPointsd`` in a Clara DeepGrow pipeline."""
    for item in preprocessing:
        if isinstance(item, dict) and str(item.get("_target_", "")).endswith(
            "AddGuidanceFromPointsd"
        ):
            dims = item.get("dimensions", item.get("spatial_dims", 3))
            return 2 if dims == 2 else 3
    return None


def _translate_data(config: dict[str, Any], context: _Context, out: dict[str, Any]) -> None:
    train = config.get("train") or {}
    dataset = train.get("dataset") or {}
    image_pipeline = (train.get("image_pipeline") or {}).get("args") or {}
    settings: dict[str, Any] = {}
    datalist = dataset.get("data_list_file_path") or image_pipeline.get("data_list_file_path")
    root = dataset.get("data_file_base_dir") or image_pipeline.get("data_file_base_dir")
    if datalist:
        settings["datalist"] = context.value(datalist, "train.dataset.data_list_file_path")
    if root:
        settings["root"] = context.value(root, "train.dataset.data_file_base_dir")
    key = dataset.get("data_list_key") or image_pipeline.get("data_list_key")
    if key:
        settings["train_key"] = key
    val_key = ((config.get("validate") or {}).get("dataset") or {}).get("data_list_key")
    if val_key:
        settings["val_key"] = val_key
    if settings:
        out["dataset"] = settings
    name = str(dataset.get("name", ""))
    if name:
        out["cache"] = {"CacheDataset": "memory", "PersistentDataset": "disk"}.get(
            name.rpartition(".")[2], "none"
        )
    loader_args = (train.get("dataloader") or {}).get("args") or {}
    batch = loader_args.get("batch_size") or image_pipeline.get("output_batch_size")
    if batch is not None:
        out["batch_size"] = context.value(batch, "train.dataloader.args.batch_size")


def _callable_optimizer(component: dict[str, Any]) -> dict[str, Any]:
    params = component.get("params")
    if isinstance(params, str) and _PARAMS_IDIOM.match(params):
        component = {k: v for k, v in component.items() if k != "params"}
    return {**component, "_mode_": "callable"}


def _callable_scheduler(component: dict[str, Any]) -> dict[str, Any]:
    component = {k: v for k, v in component.items() if k != "optimizer"}
    return {**component, "_mode_": "callable"}


class _Context:
    """Variables and named definitions of one Clara config, for translating its values."""

    def __init__(self, config: dict[str, Any], variables: dict[str, Any], file: str) -> None:
        self.variables = variables
        self.file = file
        self.definitions: dict[str, Any] = {}
        self._collect(config)

    def _collect(self, value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                self._collect(item)
        elif isinstance(value, dict):
            name = value.get("name")
            if (isinstance(name, str) and "args" in value) or (
                isinstance(name, str) and "path" in value
            ):
                class_name, _, alias = name.partition("#")
                self.definitions.setdefault(class_name, value)
                if alias:
                    self.definitions.setdefault(alias, value)
            for item in value.values():
                self._collect(item)

    def value(self, value: Any, where: str) -> Any:
        if isinstance(value, list):
            items = [self.value(item, f"{where}.{i}") for i, item in enumerate(value)]
            return [item for item in items if item is not _DISABLED]
        if isinstance(value, dict):
            if "ref" in value and len(value) <= 2:
                return self._reference(value, where)
            if "name" in value or "path" in value:
                return self._component(value, where)
            return {key: self.value(item, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, str):
            return self._string(value, where)
        return value

    def _reference(self, value: dict[str, Any], where: str) -> Any:
        name = value["ref"]
        if name not in self.definitions:
            raise ConfigError(
                self.file, where, f"ref {name!r} names no component defined in the file"
            )
        definition = copy.deepcopy(self.definitions[name])
        definition["name"] = definition["name"].partition("#")[0]
        return self._component(definition, where)

    def _component(self, value: dict[str, Any], where: str) -> Any:
        disabled = self.value(value.get("disabled", False), f"{where}.disabled")
        if disabled is True or str(disabled).lower() == "true":
            return _DISABLED
        name = str(value.get("name", "")).partition("#")[0]
        target = str(value.get("path") or name)
        if not target:
            raise ConfigError(self.file, where, "a component needs a name or a path")
        short = target.rpartition(".")[2]
        args = dict(value.get("args") or {})
        if short in _CLARA3_TRANSFORMS and not target.startswith("monai."):
            target = _CLARA3_TRANSFORMS[short]
            args = {_CLARA3_ARGS.get(k, k): v for k, v in args.items()}
            if short == "ArgmaxAcrossChannels":
                args.setdefault("argmax", True)
        out: dict[str, Any] = {"_target_": target}
        for key, item in args.items():
            out[key] = self.value(item, f"{where}.args.{key}")
        return out

    def _string(self, text: str, where: str) -> Any:
        if text.startswith("#"):
            return "$" + _REFERENCE.sub(self._reference_id, text[1:])
        if text.startswith("lambda"):
            return "$" + text
        if text.startswith("@"):
            return "@" + _REFERENCE_IDS.get(text[1:], text[1:])
        exact = _VARIABLE.fullmatch(text)
        if exact:
            return self._variable(exact.group(1), where)
        return _VARIABLE.sub(lambda m: str(self._variable(m.group(1), where)), text)

    def _variable(self, name: str, where: str) -> Any:
        if name not in self.variables:
            raise ConfigError(self.file, where, f"variable {{{name}}} is not defined")
        return self.variables[name]

    @staticmethod
    def _reference_id(match: re.Match[str]) -> str:
        return "@" + _REFERENCE_IDS.get(match.group(1), match.group(1))


_REFERENCE = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")


class _Disabled:
    pass


_DISABLED = _Disabled()
