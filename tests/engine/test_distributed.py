"""Two-process DDP training with gloo on CPU (torchrun), through the library and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from carina.cli.engine import _without_launch_options
from carina.engine.distributed import torchrun_command
from tests.archive.conftest import copy_example

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun_environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}


@pytest.mark.integration
def test_two_ranks_end_with_identical_parameters(tmp_path: Path, data_dir: Path) -> None:
    archive = copy_example("spine_ct_vertebrae", tmp_path / "spine")
    out = tmp_path / "ranks"
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [str(WORKER), str(archive), str(data_dir), str(out)]
    process = subprocess.run(
        command,
        env=torchrun_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    rank0 = torch.load(out / "rank0.pt", weights_only=True)
    rank1 = torch.load(out / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    last = torch.load(archive / "models" / "checkpoint_last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 6, "2 epochs of 3 steps on each rank"
    assert (archive / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_cli_nproc_2_trains(tmp_path: Path, data_dir: Path) -> None:
    archive = copy_example("spine_ct_vertebrae", tmp_path / "spine")
    command = [sys.executable, "-m", "carina", "train", str(archive), "--nproc", "2"]
    command += ["--set", "epochs=1", "--set", "iterations_per_epoch=3", "--device", "cpu"]
    environment = {**torchrun_environment(), "CARINA_DATA_DIR": str(data_dir)}
    process = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert (archive / "models" / "model.pt").is_file()
    assert process.stdout.count("trained 1 epochs (3 steps)") == 1, "rank 0 alone reports"
    epochs = [line for line in process.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 1 and epochs[0].startswith("epoch 1/1: loss "), process.stderr


def test_launch_command_passes_the_rest_through() -> None:
    arguments = ["train", "arch", "--nproc", "2", "--set", "epochs=1", "--master-port=29511"]
    kept = _without_launch_options(arguments)
    assert kept == ["train", "arch", "--set", "epochs=1"]
    command = torchrun_command(
        2, kept, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29511
    )
    assert command[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=2"]
    assert "--nnodes=2" in command and "--node_rank=1" in command
    assert "--master_addr=10.0.0.1" in command and "--master_port=29511" in command
    assert command[-6:] == ["-m", "carina", "train", "arch", "--set", "epochs=1"]
