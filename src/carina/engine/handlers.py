"""Ignite event handlers Carina adds to MONAI's trainer: last checkpoint, progress, unfreezing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from carina.files import atomic_path


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel or DataParallel wrapper."""
    inner = getattr(network, "module", network)
    return inner if isinstance(inner, torch.nn.Module) else network


class LastCheckpoint:
    """Saves network, optimizer, scheduler, trainer and best-metric state after every epoch.

    The file is written to a temporary name and renamed, so an interrupted run (Ctrl-C, kill)
    leaves the previous complete checkpoint in place for ``--resume``.
    """

    def __init__(
        self,
        path: Path,
        *,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None,
        evaluator: Engine | None,
    ) -> None:
        self.path = path
        self.network = network
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.evaluator = evaluator

    def attach(self, engine: Engine) -> None:
        """Save at the end of every epoch."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state: dict[str, Any] = {
            "network": unwrap(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": engine.state_dict(),
        }
        if self.scheduler is not None:
            state["lr_scheduler"] = self.scheduler.state_dict()
        if self.evaluator is not None:
            state["best"] = {
                "metric": float(getattr(self.evaluator.state, "best_metric", -1.0)),
                "epoch": int(getattr(self.evaluator.state, "best_metric_epoch", -1)),
            }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


class BestWeights:
    """Saves the network's state dict (atomically) whenever validation reaches a new best.

    Attached to the evaluator; MONAI's evaluator keeps ``best_metric`` and ``best_metric_epoch``.
    (MONAI's own CheckpointSaver writes in place, which a kill can leave half-written.)
    """

    def __init__(self, path: Path, network: torch.nn.Module) -> None:
        self.path = path
        self.network = network

    def attach(self, evaluator: Engine) -> None:
        """Check after each validation run."""
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, evaluator: Engine) -> None:
        state = evaluator.state
        if getattr(state, "best_metric_epoch", -1) != state.epoch:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save(unwrap(self.network).state_dict(), tmp)


class Unfreeze:
    """Lets frozen parameters train again once ``epochs`` epochs have completed."""

    def __init__(self, network: torch.nn.Module, names: list[str], *, epochs: int) -> None:
        self.network = network
        self.names = names
        self.epochs = epochs

    def attach(self, engine: Engine) -> None:
        """Check at the end of every epoch (also right at the start, for resumed runs)."""
        engine.add_event_handler(Events.STARTED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from carina.engine.transfer import unfreeze

        if self.names and engine.state.epoch >= self.epochs:
            unfreeze(unwrap(self.network), self.names)
            self.names = []


class Progress:
    """Reports epoch, step, loss, validation Dice and remaining time to a callback.

    Args:
        report: called with a dict (``epoch``, ``epochs``, ``iteration``, ``iterations``,
            ``loss``, ``val_dice``, ``eta_s``) after every iteration and validation.
        evaluator: the validation engine whose key metric is shown.
    """

    def __init__(
        self, report: Callable[[dict[str, Any]], None], *, evaluator: Engine | None
    ) -> None:
        self.report = report
        self.evaluator = evaluator
        self.started = 0.0
        self.first_iteration = 0

    def attach(self, engine: Engine) -> None:
        """Report after every iteration."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _start(self, engine: Engine) -> None:
        self.started = time.perf_counter()
        self.first_iteration = engine.state.iteration

    def __call__(self, engine: Engine) -> None:
        state = engine.state
        total = int(state.max_epochs or 0) * int(state.epoch_length or 0)
        done = state.iteration - self.first_iteration
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (total - state.iteration) if done else None
        output = state.output[0] if isinstance(state.output, list) else state.output
        loss = output.get("loss") if isinstance(output, dict) else None
        best = getattr(self.evaluator.state, "best_metric", None) if self.evaluator else None
        metrics = getattr(self.evaluator.state, "metrics", {}) if self.evaluator else {}
        self.report(
            {
                "epoch": state.epoch,
                "epochs": state.max_epochs,
                "iteration": state.iteration,
                "iterations": total,
                "loss": float(loss.detach()) if isinstance(loss, torch.Tensor) else loss,
                "val_dice": metrics.get("val_mean_dice"),
                "best_val_dice": best if best is not None and best >= 0 else None,
                "eta_s": eta,
            }
        )
