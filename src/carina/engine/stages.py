"""What the stages of a :class:`~carina.engine.train.TrainingRun` build: the data, the
optimisation, and MONAI's trainer and evaluator with their data loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from carina.archive.layout import ArchiveLayout
from carina.archive.schema import CacheMode, TrainSettings
from carina.engine.data import CaseLists
from carina.engine.distributed import DistributedContext
from carina.engine.handlers import (
    PER_LABEL_DICE,
    BestWeights,
    write_learning_rate,
    write_validation,
)


@dataclass
class TrainingData:
    """What a run trains and validates on: the cases and their processing, all built (checked).

    Attributes:
        cases: the training and validation cases (files checked to exist).
        train_transforms, val_transforms: the pre-processing pipelines.
        val_inferer: the validation inferer.
        iteration_update, val_iteration_update: custom iterations (DeepGrow's click simulation).
    """

    cases: CaseLists
    train_transforms: Any
    val_transforms: Any
    val_inferer: Any
    iteration_update: Any
    val_iteration_update: Any


@dataclass
class Optimisation:
    """What the training steps minimise and how: loss, optimiser and learning-rate schedule."""

    loss: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any | None


@dataclass
class Engines:
    """MONAI's trainer and evaluator, wired to the network on its device; ``labels`` names the
    output channels validation scores."""

    trainer: Any
    evaluator: Any
    network: torch.nn.Module
    device: torch.device
    amp: bool
    labels: list[str] = field(default_factory=list)


def build_evaluator(
    data: TrainingData,
    network: torch.nn.Module,
    loader: Any,
    *,
    outputs: int,
    labels: list[str],
    layout: ArchiveLayout | None,
    device: torch.device,
    amp: bool,
) -> Any:
    """MONAI's evaluator: the validation inferer, mean Dice of ``outputs`` channels and the Dice
    of each (named by ``labels``), and (given the archive's ``layout``) best weights and
    TensorBoard."""
    from monai.engines import SupervisedEvaluator
    from monai.handlers import MeanDice, TensorBoardStatsHandler, from_engine
    from monai.transforms import Activationsd, AsDiscreted, Compose

    if outputs == 1:  # one sigmoid output: a binary mask
        post = Compose(
            [Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)]
        )
    else:
        post = Compose(
            [AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=outputs)]
        )
    handlers: list[Any] = []
    if layout is not None:  # the main process keeps the best weights and the logs
        handlers.append(BestWeights(layout.weights, network))
        handlers.append(
            TensorBoardStatsHandler(
                log_dir=str(layout.logs_dir),
                output_transform=lambda _: None,
                epoch_event_writer=partial(write_validation, labels=labels),
            )
        )
    dice = partial(
        MeanDice, include_background=False, output_transform=from_engine(["pred", "label"])
    )
    return SupervisedEvaluator(
        device=device,
        val_data_loader=loader,
        network=network,
        inferer=data.val_inferer,
        postprocessing=post,
        key_val_metric={"val_mean_dice": dice()},
        additional_metrics={PER_LABEL_DICE: dice(reduction="mean_batch")},
        val_handlers=handlers,
        amp=amp,
        iteration_update=data.val_iteration_update,
    )


def build_trainer(
    settings: TrainSettings,
    data: TrainingData,
    network: torch.nn.Module,
    optimisation: Optimisation,
    loader: Any,
    evaluator: Any,
    *,
    logs: Path | None,
    device: torch.device,
    amp: bool,
) -> Any:
    """MONAI's trainer: validation every ``val_interval`` epochs, the schedule, and (given a
    ``logs`` folder) the loss in the log and the loss and learning rate in TensorBoard."""
    from monai.engines import SupervisedTrainer
    from monai.handlers import (
        LrScheduleHandler,
        StatsHandler,
        TensorBoardStatsHandler,
        ValidationHandler,
    )
    from monai.inferers import SimpleInferer

    handlers: list[Any] = [
        ValidationHandler(validator=evaluator, interval=settings.val_interval, epoch_level=True)
    ]
    if logs is not None:  # the main process logs the loss (and the rate, before the schedule)
        handlers += [
            StatsHandler(iteration_log=False, tag_name="loss", output_transform=loss_of),
            TensorBoardStatsHandler(
                log_dir=str(logs),
                tag_name="train_loss",
                output_transform=loss_of,
                epoch_event_writer=write_learning_rate,
            ),
        ]
    if optimisation.scheduler is not None:
        handlers.append(LrScheduleHandler(optimisation.scheduler, print_lr=False))
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=settings.epochs,
        train_data_loader=loader,
        network=network,
        optimizer=optimisation.optimizer,
        loss_function=optimisation.loss,
        epoch_length=settings.iterations_per_epoch,
        inferer=SimpleInferer(),
        train_handlers=handlers,
        amp=amp,
        decollate=False,  # nothing post-processes training outputs: skip per-item copies
        iteration_update=data.iteration_update,
        optim_set_to_none=True,
    )
    _validate_last_epoch(trainer, evaluator, settings.val_interval)
    return trainer


def _validate_last_epoch(trainer: Any, evaluator: Any, interval: int) -> None:
    """Validate after the last epoch too when ``interval`` does not fall on it: the weights a
    run ends with are always scored (and kept when they are the best)."""
    from ignite.engine import Events

    def last(engine: Any) -> None:
        epoch = engine.state.epoch
        if epoch == engine.state.max_epochs and epoch % interval:
            evaluator.run(epoch)

    trainer.add_event_handler(Events.EPOCH_COMPLETED, last)


def loss_of(output: Any) -> float:
    """The training loss from the trainer's output (a dict, or a list of them when decollated)."""
    item = output[0] if isinstance(output, list) else output
    loss = item["loss"]
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def build_loaders(
    settings: TrainSettings, data: TrainingData, root: Path, context: DistributedContext
) -> tuple[Any, Any]:
    """The training loader (a distributed sampler under ``torchrun``) and the validation one,
    over datasets cached as the config says (memory, or disk under ``root/.cache``)."""
    from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
    from torch.utils.data.distributed import DistributedSampler

    def dataset(items: list[dict[str, Any]], transform: Any, name: str) -> Any:
        if settings.cache == CacheMode.MEMORY:
            return CacheDataset(items, transform, progress=False, num_workers=None)
        if settings.cache == CacheMode.DISK:
            return PersistentDataset(items, transform, cache_dir=root / ".cache" / name)
        return Dataset(items, transform)

    train_set = dataset(data.cases.train, data.train_transforms, "train")
    val_set = dataset(data.cases.val, data.val_transforms, "val")
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


def restore_best(path: Path, evaluator: Any) -> None:
    """Carry the best validation score over a resume, so a worse model never replaces it."""
    best = torch.load(path, map_location="cpu", weights_only=True).get("best")
    if best and best["metric"] >= 0:
        evaluator.state.best_metric = best["metric"]
        evaluator.state.best_metric_epoch = best["epoch"]
