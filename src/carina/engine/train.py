"""Training an archive on MONAI's engines: SupervisedTrainer, SupervisedEvaluator and handlers.

``train_archive`` builds everything from the archive's ``config_train.json`` (every component and
the data are checked before the first step), then runs the trainer. Best weights go to
``models/model.pt`` (a state dict), the last epoch with optimizer state to
``models/checkpoint_last.pt``; TensorBoard logs to ``logs/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from carina.archive import Archive, TrainConfig
from carina.archive.schema import CacheMode
from carina.engine.data import CaseLists, resolve_cases
from carina.engine.distributed import DistributedContext
from carina.engine.handlers import BestWeights, LastCheckpoint, Progress, Unfreeze, unwrap
from carina.engine.network import build_network, pick_device
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
        progress: called with progress reports on rank 0.
        handlers: called with the trainer before it runs, to attach more handlers (federated
            learning adds its proximal or control-variate gradient terms this way).
        validated: called after every validation with the epoch and its mean Dice; returning
            True stops training there (AutoML's pruner).
    """

    dataset: Path | None = None
    data_dir: Path = field(default_factory=lambda: Path.home() / ".cache/carina/datasets")
    pretrained: Path | None = None
    freeze: list[str] = field(default_factory=list)
    freeze_epochs: int | None = None
    resume: bool = False
    device: str | None = None
    progress: Callable[[dict[str, Any]], None] | None = None
    handlers: list[Callable[[Any], None]] = field(default_factory=list)
    validated: Callable[[int, float], bool] | None = None


@dataclass
class TrainResult:
    """The outcome of a training run (``seconds``: the trainer's run, validation included)."""

    best_metric: float
    best_epoch: int
    last_metric: float
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


@dataclass
class _Parts:
    """Everything built (and so checked) before training starts."""

    config: TrainConfig
    cases: CaseLists
    network: torch.nn.Module
    loss: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_transforms: Any
    val_transforms: Any
    val_inferer: Any
    num_classes: int
    iteration_update: Any
    val_iteration_update: Any


def check_training(archive: Archive, options: TrainOptions) -> list[str]:
    """Build every component and find the data without training; returns the notes.

    Raises:
        ConfigError, ArchiveError: the first problem, naming the file and key.
    """
    parts = _build(archive, archive.train_config(), options)
    return parts.config.resolved.notes


def train_archive(archive: Archive, options: TrainOptions | None = None) -> TrainResult:
    """Train ``archive`` as its ``config_train.json`` says; see the module docstring.

    Raises:
        ConfigError, ArchiveError: before any training step, for a config or data problem.
    """
    from monai.utils import set_determinism

    options = options or TrainOptions()
    context = DistributedContext.from_environment()
    context.start()
    try:
        config = archive.train_config()
        seed = config.settings.seed
        set_determinism(seed=seed)  # before the network is built: same initial weights every run
        parts = _build(archive, config, options)
        if context.enabled:
            set_determinism(seed=seed + context.rank)  # each rank draws its own augmentations
        return _run(archive, parts, options, context)
    finally:
        set_determinism(seed=None)
        context.stop()


def _build(archive: Archive, config: TrainConfig, options: TrainOptions) -> _Parts:
    from monai.transforms import Compose

    settings, resolved = config.settings, config.resolved
    if options.resume and not archive.layout.last_checkpoint.is_file():
        raise ArchiveError(f"{archive.name}: nothing to resume from (no models/checkpoint_last.pt)")
    cases = resolve_cases(
        archive,
        settings.dataset,
        override=options.dataset,
        data_dir=options.data_dir,
        structures=settings.per_structure,
    )
    network = build_network(resolved)
    num_classes = _output_channels(settings.network_def, network)
    if not settings.per_structure and cases.labels is not None and len(cases.labels) != num_classes:
        raise ConfigError(
            config.resolved.file,
            "network_def.out_channels",
            f"the network has {num_classes} outputs but {cases.datalist.name} names "
            f"{len(cases.labels)} labels ({', '.join(cases.labels.values())})",
        )
    loss = resolved.instantiate("loss")
    optimizer = _called(resolved, "optimizer", list(network.parameters()))
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(resolved.file, "optimizer", "must build a torch optimizer")
    scheduler = _called(resolved, "lr_scheduler", optimizer) if settings.lr_scheduler else None
    return _Parts(
        config=config,
        cases=cases,
        network=network,
        loss=loss,
        optimizer=optimizer,
        scheduler=scheduler,
        train_transforms=Compose(resolved.instantiate("train_preprocessing")),
        val_transforms=Compose(resolved.instantiate("val_preprocessing")),
        val_inferer=resolved.instantiate("val_inferer"),
        num_classes=num_classes,
        iteration_update=_optional(resolved, "iteration_update"),
        val_iteration_update=_optional(resolved, "val_iteration_update"),
    )


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


def _output_channels(definition: dict[str, Any], network: torch.nn.Module) -> int:
    for key in ("out_channels", "num_classes", "out_channels_seg"):
        if isinstance(definition.get(key), int):
            return int(definition[key])
    raise ArchiveError(f"cannot tell how many outputs {type(network).__name__} has")


def _run(
    archive: Archive, parts: _Parts, options: TrainOptions, context: DistributedContext
) -> TrainResult:
    from ignite.engine import Events
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import (
        CheckpointLoader,
        LrScheduleHandler,
        MeanDice,
        StatsHandler,
        TensorBoardStatsHandler,
        ValidationHandler,
        from_engine,
    )
    from monai.inferers import SimpleInferer
    from monai.transforms import Activationsd, AsDiscreted, Compose

    settings = parts.config.settings
    layout = archive.layout
    device = pick_device(options.device) if not context.enabled else context.device
    network = parts.network.to(device)
    transfer = load_pretrained(network, options.pretrained) if options.pretrained else None
    frozen = freeze(network, options.freeze) if options.freeze else []
    if context.enabled:
        network = context.wrap(network)
    train_loader, val_loader = _loaders(parts, settings.cache, layout.root, context)
    amp = settings.amp and device.type == "cuda"
    if parts.num_classes == 1:  # one sigmoid output: a binary mask
        post = Compose(
            [Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)]
        )
    else:
        post = Compose(
            [AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=parts.num_classes)]
        )
    val_handlers: list[Any] = []
    if context.is_main:
        val_handlers.append(BestWeights(layout.weights, network))
        val_handlers.append(
            TensorBoardStatsHandler(log_dir=str(layout.logs_dir), output_transform=lambda _: None)
        )
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=val_loader,
        network=network,
        inferer=parts.val_inferer,
        postprocessing=post,
        key_val_metric={
            "val_mean_dice": MeanDice(
                include_background=False, output_transform=from_engine(["pred", "label"])
            )
        },
        val_handlers=val_handlers,
        amp=amp,
        iteration_update=parts.val_iteration_update,
    )
    train_handlers: list[Any] = [
        ValidationHandler(validator=evaluator, interval=settings.val_interval, epoch_level=True)
    ]
    if parts.scheduler is not None:
        train_handlers.append(LrScheduleHandler(parts.scheduler, print_lr=False))
    if context.is_main:
        train_handlers += [
            StatsHandler(iteration_log=False, tag_name="loss", output_transform=_loss_of),
            TensorBoardStatsHandler(
                log_dir=str(layout.logs_dir), tag_name="train_loss", output_transform=_loss_of
            ),
        ]
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=settings.epochs,
        train_data_loader=train_loader,
        network=network,
        optimizer=parts.optimizer,
        loss_function=parts.loss,
        epoch_length=settings.iterations_per_epoch,
        inferer=SimpleInferer(),
        train_handlers=train_handlers,
        amp=amp,
        decollate=False,  # nothing post-processes training outputs: skip per-item copies
        iteration_update=parts.iteration_update,
        optim_set_to_none=True,
    )
    if context.is_main:
        LastCheckpoint(
            layout.last_checkpoint,
            network=network,
            optimizer=parts.optimizer,
            scheduler=parts.scheduler,
            evaluator=evaluator,
        ).attach(trainer)
        if options.progress is not None:
            Progress(options.progress, evaluator=evaluator).attach(trainer)
    if frozen:
        epochs = (
            options.freeze_epochs if options.freeze_epochs is not None else settings.epochs // 2
        )
        Unfreeze(network, frozen, epochs=epochs).attach(trainer)
    if options.resume:
        load: dict[str, Any] = {
            "network": network,
            "optimizer": parts.optimizer,
            "trainer": trainer,
        }
        if parts.scheduler is not None:
            load["lr_scheduler"] = parts.scheduler
        CheckpointLoader(
            load_path=str(layout.last_checkpoint), load_dict=load, map_location=cast(Any, "cpu")
        ).attach(trainer)
        _restore_best(layout.last_checkpoint, evaluator)
    for attach in options.handlers:
        attach(trainer)
    stopped = False
    if options.validated is not None:
        validated = options.validated

        def after_validation(engine: Any) -> None:
            nonlocal stopped
            dice = float(engine.state.metrics.get("val_mean_dice", -1.0))
            if validated(int(trainer.state.epoch), dice):
                stopped = True
                trainer.terminate()

        evaluator.add_event_handler(Events.COMPLETED, after_validation)
    layout.models_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - started
    if context.is_main and not layout.weights.is_file():
        torch.save(unwrap(network).state_dict(), layout.weights)
    return TrainResult(
        best_metric=float(getattr(evaluator.state, "best_metric", -1.0)),
        best_epoch=int(getattr(evaluator.state, "best_metric_epoch", -1)),
        last_metric=float(evaluator.state.metrics.get("val_mean_dice", -1.0)),
        epochs=int(trainer.state.epoch),
        iterations=int(trainer.state.iteration),
        device=str(device),
        amp=amp,
        network=unwrap(network),
        transfer=transfer,
        frozen=frozen,
        notes=parts.config.resolved.notes,
        seconds=seconds,
        stopped=stopped,
    )


def _loss_of(output: Any) -> float:
    """The training loss from the trainer's output (a dict, or a list of them when decollated)."""
    item = output[0] if isinstance(output, list) else output
    loss = item["loss"]
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def _loaders(
    parts: _Parts, cache: CacheMode, root: Path, context: DistributedContext
) -> tuple[Any, Any]:
    from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
    from torch.utils.data.distributed import DistributedSampler

    settings = parts.config.settings

    def dataset(items: list[dict[str, Any]], transform: Any, name: str) -> Any:
        if cache == CacheMode.MEMORY:
            return CacheDataset(items, transform, progress=False, num_workers=None)
        if cache == CacheMode.DISK:
            return PersistentDataset(items, transform, cache_dir=root / ".cache" / name)
        return Dataset(items, transform)

    train_set = dataset(parts.cases.train, parts.train_transforms, "train")
    val_set = dataset(parts.cases.val, parts.val_transforms, "val")
    sampler: DistributedSampler[Any] | None = (
        DistributedSampler(train_set, shuffle=True) if context.enabled else None
    )
    workers = settings.num_workers
    train_loader = DataLoader(
        train_set,
        batch_size=settings.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    val_loader = DataLoader(val_set, batch_size=1, num_workers=0)
    return train_loader, val_loader


def _restore_best(path: Path, evaluator: Any) -> None:
    """Carry the best validation score over a resume, so a worse model never replaces it."""
    best = torch.load(path, map_location="cpu", weights_only=True).get("best")
    if best and best["metric"] >= 0:
        evaluator.state.best_metric = best["metric"]
        evaluator.state.best_metric_epoch = best["epoch"]
