"""One AutoML trial's training: Carina's training run with a pruner in its handlers stage."""

from __future__ import annotations

from typing import Any

import optuna
from ignite.engine import Events

from carina.archive import Archive
from carina.engine.stages import Engines, Optimisation
from carina.engine.train import TrainingRun, TrainOptions


class TrialTraining(TrainingRun):
    """After every validation the trial reports the mean Dice to the study's pruner, which may
    stop training there (never in the last epoch: a finished trial keeps its value).

    Args:
        archive: the trial's archive (the source's configs with the sampled values).
        options: data, device.
        trial: the Optuna trial.
        epochs: the trial's epochs.
    """

    def __init__(
        self, archive: Archive, options: TrainOptions, trial: optuna.Trial, *, epochs: int
    ) -> None:
        super().__init__(archive, options)
        self.trial = trial
        self.epochs = epochs

    def handlers(self, engines: Engines, optimisation: Optimisation) -> None:
        """Carina's handlers, then the report to the pruner after each validation."""
        super().handlers(engines, optimisation)
        trainer = engines.trainer

        def validated(evaluator: Any) -> None:
            epoch = int(trainer.state.epoch)
            self.trial.report(float(evaluator.state.metrics.get("val_mean_dice", -1.0)), epoch)
            if epoch < self.epochs and self.trial.should_prune():
                trainer.terminate()

        engines.evaluator.add_event_handler(Events.COMPLETED, validated)
