"""Multi-process training through ``torchrun``: NCCL on GPUs, gloo on CPUs.

``carina train --nproc N`` re-runs the same command under ``python -m torch.distributed.run``;
each worker finds its rank in the environment ``torchrun`` sets and joins the process group.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class DistributedContext:
    """This process's place in a distributed run (a single process when ``world_size`` is 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    started: bool = False

    @classmethod
    def from_environment(cls) -> DistributedContext:
        """Read ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` as set by ``torchrun``."""
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
        )

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, which writes checkpoints, logs and progress."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """This rank's device: its local GPU, or the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def start(self) -> None:
        """Join the process group (NCCL with CUDA, gloo otherwise) when distributed."""
        if not self.enabled or torch.distributed.is_initialized():
            return
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank)
        torch.distributed.init_process_group(backend=backend)
        self.started = True

    def barrier(self) -> None:
        """Wait until every rank of the group this context joined is here."""
        if self.started and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def stop(self) -> None:
        """Leave the process group this context joined."""
        if self.started and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.started = False

    def wrap(self, network: torch.nn.Module) -> torch.nn.Module:
        """The network in DistributedDataParallel on this rank's device."""
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            return DistributedDataParallel(network, device_ids=[self.local_rank])
        return DistributedDataParallel(network)


def torchrun_command(
    nproc: int,
    arguments: Sequence[str],
    *,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
) -> list[str]:
    """The ``torchrun`` command line that runs ``carina ARGUMENTS`` on ``nproc`` processes."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    command += [f"--nnodes={nnodes}", f"--node_rank={node_rank}"]
    if master_addr:
        command.append(f"--master_addr={master_addr}")
    if master_port:
        command.append(f"--master_port={master_port}")
    elif nnodes == 1:
        command.append("--standalone")
    return [*command, "-m", "carina", *arguments]


def launch(command: list[str], *, nproc: int) -> int:
    """Run a ``torchrun`` command in the foreground and return its exit status.

    Each process gets an equal share of the CPU threads unless ``OMP_NUM_THREADS`` is set.
    """
    environment = dict(os.environ)
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(command, env=environment)
