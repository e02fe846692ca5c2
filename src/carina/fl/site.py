"""One site's part of a federated round, with Carina's own engine: no FLARE imports here.

A :class:`LocalSite` keeps a private copy of the archive's configs in its work folder (never the
weights of the archive it came from, and never another site's data). Each round it scores the
global model on its validation cases, trains from it for a few local epochs on its training cases,
and returns the new weights with its metrics.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from carina.archive import Archive
from carina.engine.stages import Engines, Optimisation, TrainingData
from carina.engine.train import TrainingRun, TrainOptions
from carina.errors import DatasetError
from carina.fl.weights import NumpyWeights, to_numpy, to_state_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundResult:
    """What a site sends back after a round.

    Attributes:
        weights: the locally trained weights (full model).
        metrics: ``global_dice`` (the received model on this site's validation cases),
            ``local_dice`` (the trained model, same cases), ``steps`` and ``train_cases``.
        steps: optimiser steps taken (FedAvg weights sites by them).
        meta: algorithm data for the server (SCAFFOLD's control-variate update).
    """

    weights: NumpyWeights
    metrics: dict[str, float]
    steps: int
    meta: dict[str, Any] = field(default_factory=dict)


def site_data(dataset: str) -> tuple[dict[str, Any], Path | None]:
    """Archive overrides and dataset folder for a site's data: a shipped name or a folder.

    Raises:
        DatasetError: neither an existing dataset folder or datalist nor a shipped dataset name.
    """
    from carina.data import DATASETS

    path = Path(dataset).expanduser()
    if path.exists():
        return {}, path
    if dataset in DATASETS:
        return {"DATASET": dataset}, None
    raise DatasetError(
        f"site data {dataset!r}: no such dataset folder, and not a shipped dataset "
        f"({', '.join(sorted(DATASETS))})"
    )


@dataclass
class LocalSite:
    """A site's archive copy and data.

    Attributes:
        archive: the archive the job was made from (only its configs are copied).
        work_dir: this site's folder (its archive copy, logs).
        dataset: a shipped dataset name or a dataset folder at this site.
        data_dir: where shipped datasets are exported.
        device: torch device (default CUDA when present).
        seed: the archive's seed is offset by the round, so augmentations differ between rounds.
        handlers: extra trainer handlers, built per round from the global weights (FedProx).
    """

    archive: Path
    work_dir: Path
    dataset: str
    data_dir: Path
    device: str | None = None
    handlers: list[Callable[[dict[str, torch.Tensor]], Callable[[Any], None]]] = field(
        default_factory=list
    )

    def __post_init__(self) -> None:
        self.overrides, self.dataset_path = site_data(self.dataset)
        self.copy = self.work_dir / "archive"
        if not self.copy.is_dir():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            staging = self.work_dir / "archive.partial"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(self.archive / "config", staging / "config")
            (staging / "models").mkdir()
            staging.rename(self.copy)

    def _open(self, **extra: Any) -> Any:
        return Archive.open(self.copy, overrides={**self.overrides, **extra})

    @cached_property
    def _config(self) -> Any:
        return self._open().train_config()

    def template(self) -> dict[str, torch.Tensor]:
        """The archive's network, freshly built once: names, shapes and dtypes of its tensors."""
        return self._template

    @cached_property
    def _template(self) -> dict[str, torch.Tensor]:
        from carina.engine.network import build_network

        return dict(build_network(self._config.resolved).state_dict())

    def evaluate(self, weights: Mapping[str, Any]) -> float:
        """Mean Dice of ``weights`` on this site's validation cases."""
        from carina.kinds import validate_archive

        archive = self._open()
        torch.save(to_state_dict(weights, self.template()), archive.layout.weights)
        result = validate_archive(
            archive, dataset=self.dataset_path, data_dir=self.data_dir, device=self.device
        )
        return float(result.mean_dice)

    def train_round(
        self,
        weights: Mapping[str, Any],
        *,
        epochs: int,
        round_: int,
        finish: Callable[[torch.nn.Module, int], dict[str, Any]] | None = None,
    ) -> RoundResult:
        """Score ``weights`` here, train from them for ``epochs``, return the new weights.

        ``finish(network, steps)`` runs after local training; what it returns goes into the
        result's ``meta`` (SCAFFOLD sends its control-variate update this way).
        """
        global_dice = self.evaluate(weights)
        start = to_state_dict(weights, self.template())
        archive = self._open(epochs=epochs, seed=self._seed() + round_)
        options = TrainOptions(
            dataset=self.dataset_path, data_dir=self.data_dir, device=self.device
        )
        attach = [make(start) for make in self.handlers]
        result = SiteTraining(archive, options, start=start, attach=attach).execute()
        trained = to_numpy(result.network.state_dict())
        local_dice = math.nan if result.last_metric is None else result.last_metric
        metrics = {
            "global_dice": global_dice,
            "local_dice": local_dice,
            "steps": float(result.iterations),
            "epochs": float(result.epochs),
        }
        log.info(
            "round %d: global Dice %.4f, after local training %.4f",
            round_,
            global_dice,
            local_dice,
        )
        meta = finish(result.network, result.iterations) if finish is not None else {}
        return RoundResult(weights=trained, metrics=metrics, steps=result.iterations, meta=meta)

    def _seed(self) -> int:
        return int(self._config.settings.seed)


class SiteTraining(TrainingRun):
    """A site's local training: Carina's training run with two stages overridden. The network
    starts from the round's global weights, and the handlers add the algorithm's gradient terms
    (FedProx's proximal term, SCAFFOLD's correction) to the trainer.

    Args:
        archive: the site's archive copy.
        options: data, device.
        start: the round's global weights (a full state dict of the network).
        attach: handlers to attach to the trainer.
    """

    def __init__(
        self,
        archive: Archive,
        options: TrainOptions,
        *,
        start: dict[str, torch.Tensor],
        attach: list[Callable[[Any], None]],
    ) -> None:
        super().__init__(archive, options)
        self.start = start
        self.attach = attach

    def network(self, data: TrainingData) -> torch.nn.Module:
        """The archive's network with the global weights."""
        network = super().network(data)
        network.load_state_dict(self.start)
        return network

    def handlers(self, engines: Engines, optimisation: Optimisation) -> None:
        """Carina's handlers, then the algorithm's."""
        super().handlers(engines, optimisation)
        for handler in self.attach:
            handler(engines.trainer)
