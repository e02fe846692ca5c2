"""Training an archive on MONAI's engines: SupervisedTrainer, SupervisedEvaluator and handlers.

A :class:`TrainingRun` builds everything from the archive's ``config_train.json`` in named stages
(data, network, optimisation, engines, handlers, run, finish), each of which a caller may
override; ``train_archive`` runs them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from carina.archive import Archive
from carina.engine.data import record_trained_on, resolve_cases
from carina.engine.distributed import DistributedContext
from carina.engine.handlers import LastCheckpoint, Progress, Unfreeze, channel_names, unwrap
from carina.engine.network import build_network, pick_device
from carina.engine.stages import (
    Engines,
    Optimisation,
    TrainingData,
    build_evaluator,
    build_loaders,
    build_trainer,
    restore_best,
)
from carina.engine.transfer import TransferReport, freeze, load_pretrained
from carina.errors import ArchiveError, ConfigError

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """What ``carina train`` adds to the archive's config.

    Attributes:
        dataset: a dataset folder (``dataset.json``) or datalist, instead of the archive's.
        data_dir: where shipped datasets are exported on first use.
        pretrained: an archive folder or weights file to start from.
        freeze: glob patterns of parameter names to freeze for the first phase.
        freeze_epochs: how many epochs the first phase lasts (default: half of the epochs).
        resume: continue from ``models/checkpoint_last.pt``.
        device: ``cpu``, ``cuda``, ``cuda:1``... (default: CUDA when present).
        progress: called with progress reports on rank 0 (see :class:`Progress`).
        announce: called on rank 0 before the first step with each line a person should read
            first: the config's notes, what the pretrained weights loaded and skipped, what is
            frozen.
    """

    dataset: Path | None = None
    data_dir: Path = field(default_factory=lambda: Path.home() / ".cache/carina/datasets")
    pretrained: Path | None = None
    freeze: list[str] = field(default_factory=list)
    freeze_epochs: int | None = None
    resume: bool = False
    device: str | None = None
    progress: Callable[[dict[str, Any]], None] | None = None
    announce: Callable[[str], None] | None = None


@dataclass
class TrainResult:
    """The outcome of a training run (``best_metric``, ``best_epoch``, ``last_metric``: validation
    mean Dice, None when no validation scored; ``seconds``: the trainer's run, validation
    included; ``stopped``: it ended before its last epoch)."""

    best_metric: float | None
    best_epoch: int | None
    last_metric: float | None
    epochs: int
    iterations: int
    device: str
    amp: bool
    network: torch.nn.Module
    transfer: TransferReport | None
    frozen: list[str]
    notes: list[str]
    seconds: float = 0.0
    stopped: bool = False


class TrainingRun:
    """One training run of an archive, as its ``config_train.json`` says, in named stages.

    :meth:`execute` runs them in order: :meth:`data`, :meth:`network`, :meth:`optimisation`,
    :meth:`engines`, :meth:`handlers`, :meth:`run`, :meth:`finish`. Every component and the
    data are built (so checked) before the first step. Federated sites and AutoML trials
    override the stage they change (a site starts its network from the global weights and adds
    its algorithm's gradient terms as handlers; a trial adds its pruner), as nnU-Net's trainer
    exposes hooks.

    Best weights go to ``models/model.pt`` (a state dict), the last epoch with optimizer state to
    ``models/checkpoint_last.pt``; TensorBoard logs to ``logs/``.

    Raises:
        ConfigError, ArchiveError: from any stage, before a training step, for a config or data
            problem (naming the file and key).
    """

    def __init__(self, archive: Archive, options: TrainOptions | None = None) -> None:
        self.archive = archive
        self.options = options or TrainOptions()
        self.config = archive.train_config()
        self.settings = self.config.settings
        self.context = DistributedContext.from_environment()
        self.transfer: TransferReport | None = None
        self.frozen: list[str] = []

    def execute(self) -> TrainResult:
        """Run every stage and train; see the class docstring."""
        from monai.utils import set_determinism

        seed = self.settings.seed
        self.context.start()
        try:
            set_determinism(seed=seed)  # before the network is built: same initial weights
            data = self.data()
            network = self.network(data)
            optimisation = self.optimisation(network)
            if self.context.enabled:
                set_determinism(seed=seed + self.context.rank)  # each rank its own augmentations
            engines = self.engines(data, network, optimisation)
            self.handlers(engines, optimisation)
            self.announce()
            seconds = self.run(engines)
            result = self.finish(engines, seconds)
            self.context.barrier()  # ranks leave together: gloo aborts one whose peer is gone
            return result
        finally:
            set_determinism(seed=None)
            self.context.stop()

    def check(self) -> list[str]:
        """Build the data, network and optimisation without training; returns the notes."""
        self.optimisation(self.network(self.data()))
        return self.config.resolved.notes

    # -- the stages ------------------------------------------------------------------------------

    def data(self) -> TrainingData:
        """The cases (from ``--dataset``, the datalist or a shipped dataset) and their
        pre-processing, validation inferer and custom iterations."""
        from monai.transforms import Compose

        settings, resolved, options = self.settings, self.config.resolved, self.options
        if options.resume and not self.archive.layout.last_checkpoint.is_file():
            raise ArchiveError(
                f"{self.archive.name}: nothing to resume from (no models/checkpoint_last.pt)"
            )
        cases = resolve_cases(
            self.archive,
            settings.dataset,
            override=options.dataset,
            data_dir=options.data_dir,
            structures=settings.per_structure,
        )
        resolved.notes.extend(note for note in cases.notes if note not in resolved.notes)
        return TrainingData(
            cases=cases,
            train_transforms=Compose(resolved.instantiate("train_preprocessing")),
            val_transforms=Compose(resolved.instantiate("val_preprocessing")),
            val_inferer=resolved.instantiate("val_inferer"),
            iteration_update=_optional(resolved, "iteration_update"),
            val_iteration_update=_optional(resolved, "val_iteration_update"),
        )

    def network(self, data: TrainingData) -> torch.nn.Module:
        """The network, its outputs checked against the labels; pretrained weights loaded and
        layers frozen when the options say so."""
        network = build_network(self.config.resolved)
        labels = data.cases.labels
        outputs = self.output_channels(network)
        if not self.settings.per_structure and labels is not None and len(labels) != outputs:
            raise ConfigError(
                self.config.resolved.file,
                "network_def.out_channels",
                f"the network has {outputs} outputs but {data.cases.datalist.name} names "
                f"{len(labels)} labels ({', '.join(labels.values())})",
            )
        if self.options.pretrained:
            self.transfer = load_pretrained(network, self.options.pretrained)
        if self.options.freeze:
            self.frozen = freeze(network, self.options.freeze)
        return network

    def optimisation(self, network: torch.nn.Module) -> Optimisation:
        """The loss, and the optimiser and schedule Carina builds with the network's parameters
        (the config gives them in ``callable`` mode)."""
        resolved = self.config.resolved
        optimizer = _called(resolved, "optimizer", list(network.parameters()))
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(resolved.file, "optimizer", "must build a torch optimizer")
        scheduler = (
            _called(resolved, "lr_scheduler", optimizer) if self.settings.lr_scheduler else None
        )
        return Optimisation(resolved.instantiate("loss"), optimizer, scheduler)

    def engines(
        self, data: TrainingData, network: torch.nn.Module, optimisation: Optimisation
    ) -> Engines:
        """The network on its device (wrapped for DDP under ``torchrun``), the data loaders, and
        MONAI's evaluator (mean Dice, best weights) and trainer."""
        context = self.context
        device = context.device if context.enabled else pick_device(self.options.device)
        placed = network.to(device)
        if context.enabled:
            placed = context.wrap(placed)
        layout = self.archive.layout
        train_loader, val_loader = build_loaders(self.settings, data, layout.root, context)
        amp = self.settings.amp and device.type == "cuda"
        main = layout if context.is_main else None
        outputs = self.output_channels(network)
        labels = channel_names(data.cases.labels, outputs)
        evaluator = build_evaluator(
            data,
            placed,
            val_loader,
            outputs=outputs,
            labels=labels,
            layout=main,
            device=device,
            amp=amp,
        )
        trainer = build_trainer(
            self.settings,
            data,
            placed,
            optimisation,
            train_loader,
            evaluator,
            logs=main.logs_dir if main is not None else None,
            device=device,
            amp=amp,
        )
        return Engines(trainer, evaluator, placed, device, amp, labels)

    def handlers(self, engines: Engines, optimisation: Optimisation) -> None:
        """Carina's handlers: the last checkpoint and progress (rank 0), unfreezing after the
        first phase, and the state to resume from."""
        from monai.handlers import CheckpointLoader

        trainer, evaluator, network = engines.trainer, engines.evaluator, engines.network
        layout, options = self.archive.layout, self.options
        if self.context.is_main:
            LastCheckpoint(
                layout.last_checkpoint,
                network=network,
                optimizer=optimisation.optimizer,
                scheduler=optimisation.scheduler,
                evaluator=evaluator,
            ).attach(trainer)
            if options.progress is not None:
                Progress(options.progress, evaluator=evaluator, labels=engines.labels).attach(
                    trainer
                )
        if self.frozen:
            Unfreeze(network, self.frozen, epochs=self.freeze_epochs).attach(trainer)
        if options.resume:
            load: dict[str, Any] = {
                "network": network,
                "optimizer": optimisation.optimizer,
                "trainer": trainer,
            }
            if optimisation.scheduler is not None:
                load["lr_scheduler"] = optimisation.scheduler
            CheckpointLoader(
                load_path=str(layout.last_checkpoint), load_dict=load, map_location=cast(Any, "cpu")
            ).attach(trainer)
            restore_best(layout.last_checkpoint, evaluator)

    def announce(self) -> None:
        """Tell ``options.announce`` (on rank 0) what setting up found, before the first step:
        the config's notes, the pretrained weights loaded and skipped, the frozen tensors."""
        tell = self.options.announce
        if tell is None or not self.context.is_main:
            return
        lines = [f"note: {note}" for note in self.config.resolved.notes]
        lines += self.transfer.lines() if self.transfer is not None else []
        if self.frozen:
            lines.append(
                f"frozen until epoch {self.freeze_epochs} ends: {len(self.frozen)} tensors"
            )
        for line in lines:
            tell(line)

    @property
    def freeze_epochs(self) -> int:
        """The epochs of the first phase, in which the frozen tensors do not train."""
        epochs = self.options.freeze_epochs
        return self.settings.epochs // 2 if epochs is None else epochs

    def run(self, engines: Engines) -> float:
        """Train; returns the seconds it took (validation included)."""
        self.archive.layout.models_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        engines.trainer.run()
        return time.perf_counter() - started

    def finish(self, engines: Engines, seconds: float) -> TrainResult:
        """The result; weights are saved if validation never ran (rank 0)."""
        layout, trainer, evaluator = self.archive.layout, engines.trainer, engines.evaluator
        network = unwrap(engines.network)
        if self.context.is_main and not layout.weights.is_file():
            torch.save(network.state_dict(), layout.weights)
        if self.context.is_main:
            record_trained_on(self.archive, self.options.dataset)
        best_epoch = int(getattr(evaluator.state, "best_metric_epoch", -1))  # MONAI's -1: none
        last = evaluator.state.metrics.get("val_mean_dice")
        return TrainResult(
            best_metric=float(evaluator.state.best_metric) if best_epoch > 0 else None,
            best_epoch=best_epoch if best_epoch > 0 else None,
            last_metric=float(last) if last is not None else None,
            epochs=int(trainer.state.epoch),
            iterations=int(trainer.state.iteration),
            device=str(engines.device),
            amp=engines.amp,
            network=network,
            transfer=self.transfer,
            frozen=self.frozen,
            notes=self.config.resolved.notes,
            seconds=seconds,
            stopped=int(trainer.state.epoch) < int(trainer.state.max_epochs or 0),
        )

    def output_channels(self, network: torch.nn.Module) -> int:
        """How many outputs the network has, from its definition.

        Raises:
            ArchiveError: the definition does not say.
        """
        definition = self.settings.network_def
        for key in ("out_channels", "num_classes", "out_channels_seg"):
            if isinstance(definition.get(key), int):
                return int(definition[key])
        raise ArchiveError(f"cannot tell how many outputs {type(network).__name__} has")


def check_training(archive: Archive, options: TrainOptions) -> list[str]:
    """Build every component and find the data without training; returns the notes.

    Raises:
        ConfigError, ArchiveError: the first problem, naming the file and key.
    """
    return TrainingRun(archive, options).check()


def train_archive(archive: Archive, options: TrainOptions | None = None) -> TrainResult:
    """Train ``archive`` as its ``config_train.json`` says (:class:`TrainingRun`).

    Raises:
        ConfigError, ArchiveError: before any training step, for a config or data problem.
    """
    return TrainingRun(archive, options).execute()


def _optional(resolved: Any, key: str) -> Any:
    return resolved.instantiate(key) if resolved.content.get(key) is not None else None


def _called(resolved: Any, key: str, argument: Any) -> Any:
    """A component given in ``callable`` mode (a partial), called with what Carina supplies."""
    built = resolved.instantiate(key)
    if not callable(built) or isinstance(built, torch.optim.Optimizer):
        raise ConfigError(
            resolved.file,
            key,
            'give "_mode_": "callable" so that Carina passes the '
            + ("network's parameters" if key == "optimizer" else "optimizer"),
        )
    try:
        return built(argument)
    except (TypeError, ValueError) as exc:
        raise ConfigError(resolved.file, key, str(exc)) from exc
