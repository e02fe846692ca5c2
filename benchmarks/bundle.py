"""A MONAI Bundle served by Carina against the same Bundle run by MONAI's own ``monai.bundle run``,
on the same image, side by side in one run. Prints JSON.

The Bundle is written here with the structure of the Model Zoo's ``spleen_ct_segmentation`` 0.5.9
(its ``inference.json`` ids, UNet 16-256 with two residual units and batch norm, RAS, 1.5x1.5x2 mm,
-57..164 HU, 96^3 sliding windows at overlap 0.5, softmax, Invertd, argmax, SaveImaged, the
``evaluator``/``checkpointloader``/``initialize``/``run`` ids) and seeded random weights (the
published weights cannot be downloaded here). The image is the shipped spine CT resampled to
256x256x128 voxels of 1.5x1.5x2 mm, an abdomen-sized field of view (``--quick``: 128x128x64).

Three figures, each the median of ``--runs`` runs in ABBA order (which side goes first swaps from
pair to pair, so both see the same background load):

- ``cold``: ``carina infer BUNDLE IMAGE -o OUT`` against ``monai.bundle.run(...)`` in a new Python
  process (what ``python -m monai.bundle run`` executes), start-up, loading and writing included.
- ``served``: one ``POST /v1/segmentation`` to a running ``carina serve`` holding the Bundle
  (loaded), against the same ``monai.bundle run`` process (MONAI has no server).
- ``agreement``: the share of voxels where Carina's and MONAI's label maps agree (1.0: the same
  computation).

    python benchmarks/bundle.py [--quick] [--runs 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from carina.data import locate_sample
from carina.io import Volume, load_volume, save_volume
from server import carina_command, running, server_env

SHAPE = (256, 256, 128)
QUICK_SHAPE = (128, 128, 64)
SPACING = (1.5, 1.5, 2.0)
NETWORK = {
    "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "batch",
}  # fmt: skip
KEYS = "@image_key"
INFERENCE = {
    "imports": ["$import glob", "$import numpy", "$import os"],
    "bundle_root": ".",
    "image_key": "image",
    "output_dir": "$@bundle_root + '/eval'",
    "output_ext": ".nii.gz",
    "output_dtype": "$numpy.float32",
    "output_postfix": "trans",
    "separate_folder": True,
    "load_pretrain": True,
    "dataset_dir": "/workspace/data/Task09_Spleen",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": {"_target_": "UNet", **NETWORK},
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": KEYS},
            {"_target_": "EnsureChannelFirstd", "keys": KEYS},
            {"_target_": "Orientationd", "keys": KEYS, "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": KEYS, "pixdim": list(SPACING), "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": KEYS, "a_min": -57, "a_max": 164,
             "b_min": 0.0, "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": KEYS},
        ],
    },
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1,
                   "shuffle": False, "num_workers": 0},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 4,
                "overlap": 0.5},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing",
             "orig_keys": KEYS, "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
             "output_ext": "@output_ext", "output_dtype": "@output_dtype",
             "output_postfix": "@output_postfix", "separate_folder": "@separate_folder"},
        ],
    },
    "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
    "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device",
                  "val_data_loader": "@dataloader", "network": "@network", "inferer": "@inferer",
                  "postprocessing": "@postprocessing", "val_handlers": "@handlers", "amp": True},
    "checkpointloader": {"_target_": "CheckpointLoader",
                         "load_path": "$@bundle_root + '/models/model.pt'",
                         "load_dict": {"model": "@network"}},
    "initialize": ["$monai.utils.set_determinism(seed=123)",
                   "$@checkpointloader(@evaluator) if @load_pretrain else None"],
    "run": ["$@evaluator.run()"],
}  # fmt: skip
METADATA = {
    "version": "0.5.9",
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "2.4",
    "optional_packages_version": {"nibabel": "5.2.1", "pytorch-ignite": "0.4.11"},
    "name": "Spleen CT segmentation (structure; random weights)",
    "task": "Decathlon spleen segmentation",
    "description": "spleen_ct_segmentation's structure with seeded random weights",
    "authors": "Carina benchmarks",
    "copyright": "Copyright (c) MONAI Consortium (structure)",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "num_channels": 1}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                             "channel_def": {"0": "background", "1": "spleen"}}},
    },
}  # fmt: skip
#: Runs ``monai.bundle run`` as ``python -m monai.bundle run`` does (without its ``fire`` CLI).
MONAI_RUN = (
    "import sys; from monai.bundle import run; "
    "run(config_file=sys.argv[1] + '/configs/inference.json', "
    "meta_file=sys.argv[1] + '/configs/metadata.json', logging_file=None, "
    "bundle_root=sys.argv[1], datalist=[sys.argv[2]], output_dir=sys.argv[3])"
)


def write_bundle(root: Path) -> Path:
    from monai.networks.nets import UNet

    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(INFERENCE, indent=2))
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA, indent=2))
    torch.manual_seed(0)
    torch.save(UNet(**NETWORK).state_dict(), root / "models" / "model.pt")
    return root


def make_image(folder: Path, shape: tuple[int, int, int]) -> Path:
    """The spine CT resampled to ``shape`` voxels of :data:`SPACING` mm (its orientation kept)."""
    ct = load_volume(locate_sample("spine_ct_image"))
    zoom = [n / s for n, s in zip(shape, ct.shape, strict=True)]
    image = ndimage.zoom(ct.array.astype(np.float32), zoom, order=1).astype(np.int16)
    directions = ct.affine[:3, :3] / np.linalg.norm(ct.affine[:3, :3], axis=0)
    affine = np.eye(4)
    affine[:3, :3] = directions * np.asarray(SPACING)
    affine[:3, 3] = ct.affine[:3, 3]
    path = folder / "ct.nii.gz"
    save_volume(Volume(array=image, affine=affine), path)
    return path


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def label_in(folder: Path) -> np.ndarray[Any, Any]:
    found = sorted(folder.rglob("*.nii.gz"))
    assert len(found) == 1, f"expected one label map in {folder}, found {found}"
    return np.asarray(nib.load(found[0]).dataobj).squeeze().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    shape = QUICK_SHAPE if args.quick else SHAPE
    root = Path(tempfile.mkdtemp(prefix="carina-bench-bundle-"))
    try:
        bundle = write_bundle(root / "spleen_ct_segmentation")
        image = make_image(root, shape)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(args.threads),
            "CARINA_TORCH_THREADS": str(args.threads),
        }
        carina = [carina_command(), "infer", str(bundle), str(image), "--device", "cpu"]
        monai = [sys.executable, "-c", MONAI_RUN, str(bundle), str(image)]
        times: dict[str, list[float]] = {
            "carina_cli": [],
            "monai_bundle_run": [],
            "carina_served": [],
        }
        outputs = {"carina": root / "out_carina", "monai": root / "out_monai"}

        def run_carina() -> None:
            shutil.rmtree(outputs["carina"], ignore_errors=True)
            times["carina_cli"].append(timed([*carina, "-o", str(outputs["carina"])], env))

        def run_monai() -> None:
            shutil.rmtree(outputs["monai"], ignore_errors=True)
            times["monai_bundle_run"].append(timed([*monai, str(outputs["monai"])], env))

        for pair in range(args.runs):  # ABBA: which side goes first swaps each pair
            first, second = (run_carina, run_monai) if pair % 2 == 0 else (run_monai, run_carina)
            first()
            second()
        ours, theirs = label_in(outputs["carina"]), label_in(outputs["monai"])

        workspace = root / "workspace"
        (workspace / "models").mkdir(parents=True)
        shutil.copytree(bundle, workspace / "models" / bundle.name)
        server_settings = server_env(threads=args.threads, workers=1, queue_limit=4, preload=True)
        data = image.read_bytes()
        with running(workspace, server_settings) as server, httpx.Client(timeout=600) as client:
            url = f"{server.url}/v1/segmentation?model={bundle.name}"
            client.post(url, files={"image": ("ct.nii.gz", data)}).raise_for_status()  # warm
            for _ in range(args.runs):
                start = time.perf_counter()
                client.post(url, files={"image": ("ct.nii.gz", data)}).raise_for_status()
                times["carina_served"].append(time.perf_counter() - start)
        median = {name: round(statistics.median(values), 3) for name, values in times.items()}
        report = {
            "benchmark": "bundle",
            "image": {"shape": list(shape), "spacing_mm": list(SPACING)},
            "bundle": "spleen_ct_segmentation structure (UNet 16-256, 96^3 windows, overlap 0.5)",
            "threads": args.threads,
            "runs": args.runs,
            "seconds": {name: [round(v, 3) for v in values] for name, values in times.items()},
            "median_s": median,
            "ratio_cold_carina_over_monai": round(
                median["carina_cli"] / median["monai_bundle_run"], 3
            ),
            "ratio_served_carina_over_monai": round(
                median["carina_served"] / median["monai_bundle_run"], 3
            ),
            "target": "Carina's time <= monai.bundle run's (ratio <= 1)",
            "agreement": round(float((ours == theirs).mean()), 6),
            "labelled_voxels": {"carina": int((ours > 0).sum()), "monai": int((theirs > 0).sum())},
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
