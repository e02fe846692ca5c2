"""AutoML throughput and overhead: trials per hour with 1 and 2 local workers on this machine, and
the time each trial spends outside training (config clone, data and network set-up, storage)
against the training itself. Prints JSON.

python benchmarks/automl.py [--trials 4] [--epochs 2] [--iterations 50]

The archive is the vertebra example with a learning-rate search; the pruner is off so that every
trial trains the same epochs. Each worker gets cores / W threads. A trial's training time is the
trainer's run (validation included); its overhead is the rest of the trial as the worker timed it.
Worker start-up (Python, torch and MONAI imports) is paid once per worker and reported apart. The
baseline is the same training run directly with ``carina train``'s engine, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "examples" / "archives" / "spine_vertebra"


def search_archive(folder: Path, *, epochs: int, iterations: int) -> Path:
    shutil.copytree(ARCHIVE, folder, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    path = folder / "config" / "config_train.json"
    config = json.loads(path.read_text())
    config.update(epochs=epochs, iterations_per_epoch=iterations)
    config["search"] = [
        {"domain": "lr", "type": "float", "args": ["learning_rate"], "targets": [1e-3, 3e-2]}
    ]
    path.write_text(json.dumps(config, indent=2))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()

    import torch

    from carina.archive import Archive
    from carina.automl.run import run_study
    from carina.automl.study import StudySpec, load
    from carina.data import ensure_dataset
    from carina.engine.train import TrainOptions, train_archive

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="carina-bench-automl-") as scratch:
        root = Path(scratch)
        data = root / "data"
        ensure_dataset("spine_ct_vertebra", data / "spine_ct_vertebra")
        plain = search_archive(root / "plain", epochs=args.epochs, iterations=args.iterations)
        torch.set_num_threads(cores)
        started = time.perf_counter()
        baseline = train_archive(Archive.open(plain), TrainOptions(data_dir=data))
        baseline_wall = time.perf_counter() - started
        runs = {}
        for workers in (1, 2):
            archive = search_archive(
                root / f"w{workers}", epochs=args.epochs, iterations=args.iterations
            )
            spec = StudySpec(archive=archive, study="bench", trials=args.trials, pruner="none")
            started = time.perf_counter()
            outcome = run_study(spec, workers=workers, data_dir=data)
            wall = time.perf_counter() - started
            assert spec.storage is not None and outcome.result is not None
            trials = load(spec.storage, "bench").trials
            train = [float(t.user_attrs["train_seconds"]) for t in trials]
            whole = [float(t.user_attrs["trial_seconds"]) for t in trials]
            overhead = [(w - t) / t for w, t in zip(whole, train, strict=True)]
            busy = sum(whole) / workers
            runs[f"workers_{workers}"] = {
                "trials": len(trials),
                "threads_per_worker": max(1, cores // workers),
                "wall_s": round(wall, 1),
                "trials_per_hour": round(len(trials) / wall * 3600, 1),
                "trials_per_hour_excluding_startup": round(len(trials) / busy * 3600, 1),
                "startup_and_results_s": round(wall - busy, 1),
                "train_s_per_trial_mean": round(statistics.mean(train), 2),
                "overhead_s_per_trial_mean": round(
                    statistics.mean(whole) - statistics.mean(train), 3
                ),
                "overhead_pct_per_trial_mean": round(100 * statistics.mean(overhead), 2),
                "overhead_pct_per_trial_max": round(100 * max(overhead), 2),
                "best_dice": round(outcome.result.best_value, 4),
            }
    print(
        json.dumps(
            {
                "benchmark": "automl",
                "cores": cores,
                "epochs_per_trial": args.epochs,
                "iterations_per_epoch": args.iterations,
                "baseline_plain_training": {
                    "wall_s": round(baseline_wall, 1),
                    "train_s": round(baseline.seconds, 1),
                    "threads": cores,
                },
                **runs,
                "target_overhead_pct": 5.0,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
