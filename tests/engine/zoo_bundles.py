"""MONAI Bundles written here the way the MONAI Model Zoo writes them, with random weights of the
right shapes: ``imports``, ``$`` expressions, ``@`` references, a ``scripts/`` package used as a
``_target_`` and from an expression, ``LoadImaged`` with ``bundle_root: "."``, ``Invertd`` and
``SaveImaged`` in post-processing, and the ``evaluator``/``initialize``/``run`` ids that
``monai.bundle run`` executes.

- :func:`segmentation_bundle`: ``spleen_ct_segmentation``'s structure (UNet, RAS, spacing,
  sliding window, softmax, Invertd, argmax) on the spine CT's labels, with a transform of its own.
- :func:`deepedit_bundle`: ``spleen_deepedit_annotation``'s (DynUNet on image + one click map per
  label, the DeepEdit transforms, an orientation transform from ``scripts/``).
- :func:`swin_bundle`: ``swin_unetr_btcv_segmentation``'s (SwinUNETR, 96-voxel windows there,
  64 here so that the test is quick).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

SCRIPTS_TRANSFORMS = '''"""Transforms of this bundle."""

import numpy as np
from monai.transforms import MapTransform, Transform

MARK = "{mark}"


class ClipIntensityd(MapTransform):
    """Clip the image to a range (a transform the bundle brings itself)."""

    def __init__(self, keys, low, high):
        super().__init__(keys)
        self.low, self.high = low, high

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key].clamp(self.low, self.high)
        return d


class OrientationGuidanced(Transform):
    """Clicks given in the original image's voxels, mapped to the oriented image's voxels."""

    def __init__(self, ref_image, label_names):
        self.ref_image, self.label_names = ref_image, label_names

    def __call__(self, data):
        d = dict(data)
        meta = d[self.ref_image].meta
        to_new = np.linalg.inv(np.asarray(meta["affine"])) @ np.asarray(meta["original_affine"])
        for name in self.label_names:
            points = d.get(name) or []
            if points:
                homogeneous = np.c_[np.asarray(points, dtype=float), np.ones(len(points))]
                d[name] = np.rint(homogeneous @ to_new.T)[:, :3].astype(int).tolist()
        return d
'''

COMMON = {
    "bundle_root": ".",
    "image_key": "image",
    "output_dir": "$@bundle_root + '/eval'",
    "output_ext": ".nii.gz",
    "output_dtype": "$numpy.float32",
    "output_postfix": "trans",
    "separate_folder": True,
    "load_pretrain": True,
    "dataset_dir": "/workspace/data",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network": "$@network_def.to(@device)",
    "dataset": {
        "_target_": "Dataset",
        "data": "$[{'image': i} for i in @datalist]",
        "transform": "@preprocessing",
    },
    "dataloader": {
        "_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
        "num_workers": 0,
    },
    "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
    "evaluator": {
        "_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
        "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
        "val_handlers": "@handlers", "amp": False,
    },
    "checkpointloader": {
        "_target_": "CheckpointLoader",
        "load_path": "$@bundle_root + '/models/model.pt'",
        "load_dict": {"model": "@network"},
        "map_location": "@device",
    },
    "initialize": [
        "$monai.utils.set_determinism(seed=123)",
        "$@checkpointloader(@evaluator) if @load_pretrain else None",
    ],
    "run": ["$@evaluator.run()"],
}  # fmt: skip

POSTPROCESSING = [
    {"_target_": "Activationsd", "keys": "pred", "softmax": True},
    {
        "_target_": "Invertd", "keys": "pred", "transform": "@preprocessing",
        "orig_keys": "@image_key", "nearest_interp": False, "to_tensor": True,
    },
    {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    {
        "_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
        "output_ext": "@output_ext", "output_dtype": "@output_dtype",
        "output_postfix": "@output_postfix", "separate_folder": "@separate_folder",
    },
]  # fmt: skip

SPINE_LABELS = {"0": "background", "1": "L2", "2": "L3", "3": "L4"}


def metadata(
    name: str, labels: dict[str, str], *, channels: int = 1, **extra: Any
) -> dict[str, Any]:
    """A Model Zoo ``metadata.json`` (schema 20220324's keys)."""
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": "0.5.9",
        "changelog": {"0.5.9": "written by the Carina tests"},
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.4",
        "optional_packages_version": {"nibabel": "5.2.1", "pytorch-ignite": "0.4.11"},
        "name": name,
        "task": "Lumbar vertebra segmentation",
        "description": f"{name}: written by the Carina tests with random weights",
        "authors": "Carina tests",
        "copyright": "Copyright (c) Carina tests",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT",
                                 "num_channels": channels, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation",
                                 "num_channels": len(labels), "channel_def": labels}},
        },
        **extra,
    }  # fmt: skip


def _write(root: Path, inference: dict[str, Any], meta: dict[str, Any], network: Any) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "scripts").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    (root / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    (root / "scripts" / "__init__.py").write_text("from . import transforms\n")
    mark = root.name
    (root / "scripts" / "transforms.py").write_text(SCRIPTS_TRANSFORMS.replace("{mark}", mark))
    (root / "LICENSE").write_text("Apache License\nVersion 2.0, January 2004\n")
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


def segmentation_bundle(root: Path) -> Path:
    """``spleen_ct_segmentation``'s structure, for the spine CT (labels L2-L4)."""
    from monai.networks.nets import UNet

    net_args = {
        "spatial_dims": 3, "in_channels": 1, "out_channels": 4, "channels": [8, 16, 32, 64],
        "strides": [2, 2, 2], "num_res_units": 2, "norm": "batch",
    }  # fmt: skip
    keys = "@image_key"
    inference = {
        "imports": ["$import glob", "$import numpy", "$import os", "$import scripts"],
        **COMMON,
        "mark": "$scripts.transforms.MARK",
        "network_def": {"_target_": "UNet", **net_args},
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": keys},
                {"_target_": "EnsureChannelFirstd", "keys": keys},
                {"_target_": "Orientationd", "keys": keys, "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": keys, "pixdim": [2.0, 2.0, 2.0], "mode": "bilinear"},
                {"_target_": "scripts.transforms.ClipIntensityd", "keys": keys, "low": -1000, "high": 2000},
                {"_target_": "ScaleIntensityRanged", "keys": keys, "a_min": -1000, "a_max": 1000,
                 "b_min": 0.0, "b_max": 1.0, "clip": True},
                {"_target_": "EnsureTyped", "keys": keys},
            ],
        },
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 64], "sw_batch_size": 2, "overlap": 0.25},
        "postprocessing": {"_target_": "Compose", "transforms": POSTPROCESSING},
    }  # fmt: skip
    return _write(root, inference, metadata(root.name, SPINE_LABELS), UNet(**net_args))


def deepedit_bundle(root: Path) -> Path:
    """``spleen_deepedit_annotation``'s structure: one ``vertebra`` label with click maps."""
    from monai.networks.nets import DynUNet

    label_names = {"vertebra": 1, "background": 0}
    net_args = {
        "spatial_dims": 3, "in_channels": 3, "out_channels": 2, "kernel_size": [3, 3, 3, 3],
        "strides": [1, 2, 2, [2, 2, 1]], "upsample_kernel_size": [2, 2, [2, 2, 1]],
        "norm_name": "instance", "deep_supervision": False, "res_block": True,
    }  # fmt: skip
    keys = "@image_key"
    network_def = {
        **net_args,
        "_target_": "DynUNet",
        "in_channels": "$len(@label_names) + @number_intensity_ch",
        "out_channels": "$len(@label_names)",
    }
    inference = {
        "imports": ["$import glob", "$import numpy", "$import os", "$import ignite"],
        **COMMON,
        "label_names": label_names,
        "spatial_size": [64, 64, 32],
        "number_intensity_ch": 1,
        "network_def": network_def,
        "preprocessing_transforms": [
            {"_target_": "LoadImaged", "keys": keys},
            {"_target_": "EnsureChannelFirstd", "keys": keys},
            {"_target_": "Orientationd", "keys": keys, "axcodes": "RAS"},
            {"_target_": "ScaleIntensityRanged", "keys": keys, "a_min": -175, "a_max": 250,
             "b_min": 0.0, "b_max": 1.0, "clip": True},
        ],
        "deepedit_transforms": [
            {"_target_": "scripts.transforms.OrientationGuidanced", "ref_image": keys,
             "label_names": "@label_names"},
            {"_target_": "AddGuidanceFromPointsDeepEditd", "ref_image": keys, "guidance": "guidance",
             "label_names": "@label_names"},
            {"_target_": "Resized", "keys": keys, "spatial_size": "@spatial_size", "mode": "area"},
            {"_target_": "ResizeGuidanceMultipleLabelDeepEditd", "guidance": "guidance", "ref_image": keys},
            {"_target_": "AddGuidanceSignalDeepEditd", "keys": keys, "guidance": "guidance",
             "number_intensity_ch": "@number_intensity_ch"},
        ],
        "extra_transforms": [{"_target_": "EnsureTyped", "keys": keys}],
        "preprocessing": {
            "_target_": "Compose",
            "transforms": "$@preprocessing_transforms + @deepedit_transforms + @extra_transforms",
        },
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "EnsureTyped", "keys": "pred"}, *POSTPROCESSING],
        },
    }  # fmt: skip
    meta = metadata(root.name, {"0": "background", "1": "vertebra"}, channels=3)
    return _write(root, inference, meta, DynUNet(**net_args))


def swin_bundle(root: Path) -> Path:
    """``swin_unetr_btcv_segmentation``'s structure (a small SwinUNETR), for the spine CT."""
    from monai.networks.nets import SwinUNETR

    net_args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 4, "feature_size": 12,
                "use_checkpoint": False}  # fmt: skip
    keys = "@image_key"
    inference = {
        "imports": ["$import glob", "$import numpy", "$import os"],
        **COMMON,
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "network_def": {"_target_": "SwinUNETR", **net_args},
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": keys},
                {"_target_": "EnsureChannelFirstd", "keys": keys},
                {"_target_": "Orientationd", "keys": keys, "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": keys, "pixdim": [3.0, 3.0, 3.0], "mode": "bilinear"},
                {"_target_": "ScaleIntensityRanged", "keys": keys, "a_min": -175, "a_max": 250,
                 "b_min": 0.0, "b_max": 1.0, "clip": True},
                {"_target_": "EnsureTyped", "keys": keys},
            ],
        },
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 64], "sw_batch_size": 1, "overlap": 0.25},
        "postprocessing": {"_target_": "Compose", "transforms": POSTPROCESSING},
    }  # fmt: skip
    inference["checkpointloader"] = {**COMMON["checkpointloader"], "load_path": "$@checkpoint"}
    return _write(root, inference, metadata(root.name, SPINE_LABELS), SwinUNETR(**net_args))
