"""Run under torchrun by test_distributed.py: train an archive, save this rank's parameters.

python -m torch.distributed.run --nproc_per_node=2 tests/engine/ddp_worker.py ARCHIVE DATA OUT
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from carina.archive import Archive
from carina.engine.train import TrainOptions, train_archive


def main() -> None:
    archive, data_dir, out = (Path(arg) for arg in sys.argv[1:4])
    overrides = {"epochs": 2, "iterations_per_epoch": 3, "val_interval": 2}
    result = train_archive(
        Archive.open(archive, overrides=overrides), TrainOptions(data_dir=data_dir, device="cpu")
    )
    rank = int(os.environ["RANK"])
    torch.save(result.network.state_dict(), out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
