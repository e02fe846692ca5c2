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


#: The evaluator's metric that holds the validation Dice of every label (a tensor).
PER_LABEL_DICE = "val_dice_per_label"


def channel_names(labels: dict[int, str] | None, outputs: int) -> list[str]:
    """The name of each output channel that validation scores (background excluded): the
    datalist's label names, ``label_N`` where it names none; one sigmoid output is its one label,
    else ``foreground``."""
    named = labels or {}
    if outputs == 1:
        foreground = [name for value, name in named.items() if value > 0]
        return foreground if len(foreground) == 1 else ["foreground"]
    return [named.get(value, f"label_{value}") for value in range(1, outputs)]


def dice_by_label(metrics: dict[str, Any], names: list[str]) -> dict[str, float] | None:
    """Label name -> validation Dice from an evaluator's metrics; None before any validation."""
    value = metrics.get(PER_LABEL_DICE)
    if value is None:
        return None
    scores = torch.as_tensor(value, dtype=torch.float64).flatten().tolist()
    return dict(zip(names, scores, strict=False))


def learning_rate(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the optimiser's first parameter group."""
    return float(optimizer.param_groups[0]["lr"])


class Progress:
    """Reports training progress to a callback, after every iteration and every epoch.

    Every report holds ``epoch``, ``epochs``, ``iteration``, ``iterations``, ``loss`` (this
    step's), ``lr`` (this epoch's learning rate), ``val_dice`` (the last validation's mean Dice),
    ``best_val_dice``, ``elapsed_s`` and ``eta_s``. The report at the end of an epoch (after its
    validation) adds ``epoch_end`` (True), ``epoch_loss`` (the epoch's mean loss), ``validated``
    (this epoch was) and ``val_dice_per_label`` (label name -> Dice when it was, else None).

    Args:
        report: called with each report.
        evaluator: the validation engine whose metrics are shown.
        labels: the names of the scored output channels (:func:`channel_names`).
    """

    def __init__(
        self,
        report: Callable[[dict[str, Any]], None],
        *,
        evaluator: Engine | None,
        labels: list[str],
    ) -> None:
        self.report = report
        self.evaluator = evaluator
        self.labels = labels
        self.started = 0.0
        self.first_iteration = 0
        self.losses: list[float] = []
        self.lr: float | None = None

    def attach(self, engine: Engine) -> None:
        """Report after every iteration and every epoch."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_STARTED, self._new_epoch)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _start(self, engine: Engine) -> None:
        self.started = time.perf_counter()
        self.first_iteration = engine.state.iteration

    def _new_epoch(self, engine: Engine) -> None:
        self.losses = []
        optimizer = getattr(engine, "optimizer", None)
        self.lr = learning_rate(optimizer) if optimizer is not None else None

    def _iteration(self, engine: Engine) -> None:
        values = self._common(engine)
        if values["loss"] is not None:
            self.losses.append(values["loss"])
        self.report(values)

    def _epoch(self, engine: Engine) -> None:
        values = self._common(engine)
        evaluator = self.evaluator
        validated = evaluator is not None and evaluator.state.epoch == engine.state.epoch
        metrics = getattr(evaluator.state, "metrics", {}) if evaluator and validated else {}
        values.update(
            epoch_end=True,
            epoch_loss=sum(self.losses) / len(self.losses) if self.losses else None,
            validated=validated,
            val_dice_per_label=dice_by_label(metrics, self.labels),
        )
        self.report(values)

    def _common(self, engine: Engine) -> dict[str, Any]:
        state = engine.state
        total = int(state.max_epochs or 0) * int(state.epoch_length or 0)
        done = state.iteration - self.first_iteration
        elapsed = time.perf_counter() - self.started
        output = state.output[0] if isinstance(state.output, list) else state.output
        loss = output.get("loss") if isinstance(output, dict) else None
        evaluator = self.evaluator.state if self.evaluator is not None else None
        best = getattr(evaluator, "best_metric", None)
        return {
            "epoch": state.epoch,
            "epochs": state.max_epochs,
            "iteration": state.iteration,
            "iterations": total,
            "loss": float(loss.detach()) if isinstance(loss, torch.Tensor) else loss,
            "lr": self.lr,
            "val_dice": getattr(evaluator, "metrics", {}).get("val_mean_dice"),
            "best_val_dice": best if best is not None and best >= 0 else None,
            "elapsed_s": elapsed,
            "eta_s": elapsed / done * (total - state.iteration) if done else None,
        }


def write_validation(engine: Engine, writer: Any, *, labels: list[str]) -> None:
    """TensorBoard after a validation: ``val_mean_dice`` and ``val/dice/<label>`` at its epoch
    (a ``TensorBoardStatsHandler`` epoch writer of the evaluator)."""
    epoch, metrics = engine.state.epoch, engine.state.metrics
    writer.add_scalar("val_mean_dice", metrics["val_mean_dice"], epoch)
    for name, score in (dice_by_label(metrics, labels) or {}).items():
        writer.add_scalar(f"val/dice/{name}", score, epoch)
    writer.flush()


def write_learning_rate(engine: Any, writer: Any) -> None:
    """TensorBoard after an epoch: ``train/lr``, the learning rate the epoch trained with (a
    ``TensorBoardStatsHandler`` epoch writer of the trainer, attached before the schedule steps)."""
    writer.add_scalar("train/lr", learning_rate(engine.optimizer), engine.state.epoch)
    writer.flush()
