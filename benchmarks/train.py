"""Training speed of the spine CT example archive: Carina's engine vs a plain MONAI loop.

Both train the same network, loss, optimizer and transforms on the same data for the same number
of steps, each in its own process (so peak memory is its own). Carina caches the deterministic
pre-processing (CacheDataset) and runs MONAI's SupervisedTrainer; the reference is the loop a MONAI
tutorial writes: Dataset + DataLoader + forward/backward/step. Prints JSON.

    python benchmarks/train.py [--steps 200] [--warmup 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from carina.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "examples" / "archives" / "spine_ct_vertebrae"


def run_carina(steps: int, warmup: int, workdir: Path, device: str) -> dict[str, Any]:
    from carina.archive import Archive
    from carina.engine.train import TrainOptions, train_archive

    archive = workdir / "spine"
    shutil.copytree(ARCHIVE, archive, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    marks: dict[int, float] = {}

    def progress(report: dict[str, Any]) -> None:
        marks.setdefault(report["iteration"], time.perf_counter())

    overrides = {"epochs": 1, "iterations_per_epoch": steps, "val_interval": 1000}
    start = time.perf_counter()
    train_archive(
        Archive.open(archive, overrides=overrides),
        TrainOptions(data_dir=Settings().data_dir, device=device, progress=progress),
    )
    total = time.perf_counter() - start
    return _figures(marks, steps, warmup, total)


def run_reference(steps: int, warmup: int, workdir: Path, device: str) -> dict[str, Any]:
    import torch
    from monai.data import DataLoader, Dataset
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        RandFlipd,
        RandSpatialCropd,
        ScaleIntensityRanged,
        SpatialPadd,
    )
    from monai.utils import set_determinism

    from carina.data import ensure_dataset
    from carina.engine.data import resolve_cases

    start = time.perf_counter()
    datalist = ensure_dataset("spine_ct", Settings().data_dir / "spine_ct")
    from carina.archive import Archive
    from carina.archive.schema import DatasetSettings

    cases = resolve_cases(
        Archive.open(ARCHIVE), DatasetSettings(), override=datalist, data_dir=workdir
    )
    set_determinism(seed=0)
    keys = ["image", "label"]
    roi = [48, 40, 32]
    transform = Compose(
        [
            LoadImaged(keys=keys),
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
            ScaleIntensityRanged(
                keys="image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True
            ),
            SpatialPadd(keys=keys, spatial_size=roi),
            RandSpatialCropd(keys=keys, roi_size=roi, random_size=False),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=2),
        ]
    )
    loader = DataLoader(Dataset(cases.train, transform), batch_size=1, shuffle=True)
    network = UNet(3, 1, 4, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1).to(device)
    scaler = torch.amp.GradScaler(enabled=device.startswith("cuda"))
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    network.train()
    marks: dict[int, float] = {}
    step = 0
    while step < steps:
        for batch in loader:
            optimizer.zero_grad()
            image, label = batch["image"].to(device), batch["label"].to(device)
            with torch.autocast("cuda", enabled=device.startswith("cuda")):
                loss = loss_function(network(image), label)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            marks[step] = time.perf_counter()
            if step == steps:
                break
    total = time.perf_counter() - start
    return _figures(marks, steps, warmup, total)


def _figures(marks: dict[int, float], steps: int, warmup: int, total: float) -> dict[str, Any]:
    steady = (steps - warmup) / (marks[steps] - marks[warmup])
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "steps_per_s": round(steady, 3),
        "total_s": round(total, 2),
        "peak_rss_mib": round(peak_mib, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (AMP on CUDA for both)")
    parser.add_argument("--run", choices=["carina", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        import torch

        torch.set_num_threads(torch.get_num_threads())
        runner = run_carina if args.run == "carina" else run_reference
        print(json.dumps(runner(args.steps, args.warmup, args.workdir, args.device)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for which in ("reference", "carina"):
            command = [sys.executable, __file__, "--run", which, "--steps", str(args.steps)]
            command += ["--warmup", str(args.warmup), "--workdir", tmp, "--device", args.device]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[which] = json.loads(output.strip().splitlines()[-1])
    print(
        json.dumps(
            {
                "benchmark": "train",
                "archive": "spine_ct_vertebrae",
                "steps": args.steps,
                "device": args.device,
                "carina": results["carina"],
                "plain_monai_loop": results["reference"],
                "ratio_steps_per_s": round(
                    results["carina"]["steps_per_s"] / results["reference"]["steps_per_s"], 3
                ),
                "goal": "ratio >= 1.0",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
