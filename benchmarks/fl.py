"""Federated-learning overhead: wall time per round of a 2-site simulation against the same local
epochs trained without FL on one site, in the same run. Prints JSON.

python benchmarks/fl.py [--rounds 3] [--local-epochs 4] [--iterations 50]

Each site trains with one CPU thread; so does the local baseline. A round's FL time is measured
between the ends of consecutive rounds (start-up and shut-down are reported apart), so the
overhead is what FL adds to every round: the global model's evaluation at the sites, the transfers,
the aggregation and the sites waiting for each other.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "examples" / "archives" / "spine_vertebra"
SITES = {"site-1": "spine_ct_vertebra", "site-2": "spine_mr_vertebra"}


def copy_archive(folder: Path, iterations: int) -> Path:
    shutil.copytree(ARCHIVE, folder, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    config = folder / "config" / "config_train.json"
    content = json.loads(config.read_text())
    content["iterations_per_epoch"] = iterations
    config.write_text(json.dumps(content, indent=2))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-epochs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()

    import torch

    from carina.archive import Archive
    from carina.data import ensure_dataset
    from carina.engine.train import TrainOptions, train_archive
    from carina.fl.job import JobSpec
    from carina.fl.simulate import simulate

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="carina-bench-fl-") as scratch:
        root = Path(scratch)
        data = root / "data"
        for name in SITES.values():
            ensure_dataset(name, data / name)
        local = copy_archive(root / "local", args.iterations)
        opened = Archive.open(
            local, overrides={"DATASET": SITES["site-1"], "epochs": args.local_epochs}
        )
        start = time.perf_counter()
        train_archive(opened, TrainOptions(data_dir=data))
        local_round = time.perf_counter() - start

        federated = copy_archive(root / "federated", args.iterations)
        ends: list[float] = []
        spec = JobSpec(
            archive=federated, sites=SITES, rounds=args.rounds, local_epochs=args.local_epochs,
            threads=1,
        )  # fmt: skip
        start = time.perf_counter()
        result = simulate(
            spec,
            workspace=root / "ws",
            data_dir=data,
            progress=lambda _report: ends.append(time.perf_counter()),
        )
        total = time.perf_counter() - start
    per_round = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else float("nan")
    print(
        json.dumps(
            {
                "benchmark": "fl",
                "rounds": args.rounds,
                "local_epochs": args.local_epochs,
                "iterations_per_epoch": args.iterations,
                "local_training_per_round_s": round(local_round, 1),
                "fl_round_s": round(per_round, 1),
                "fl_overhead_per_round": round(per_round / local_round - 1, 3),
                "fl_first_round_s": round(ends[0] - start, 1) if ends else None,
                "fl_total_s": round(total, 1),
                "bytes_per_round": result.bytes_per_round,
                "final_global_dice": result.final,
                "target_overhead": 0.25,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
