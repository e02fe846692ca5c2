"""Training progress as a person follows it: a progress bar on a terminal, plain lines elsewhere.

Each epoch ends with one line (loss, validation Dice per label when the epoch validated, learning
rate, elapsed time and ETA): above the bar on a terminal, alone in a CI log, ``| tee`` or nohup.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from rich.console import Console

from carina.cli.console import err_console


def dice_text(value: float | None, *, digits: int = 4) -> str:
    """A Dice score as printed: ``0.8123``, or ``not measured`` where none was (no value, NaN, or
    a negative placeholder)."""
    if value is None or math.isnan(value) or value < 0:
        return "not measured"
    return f"{value:.{digits}f}"


def epoch_line(report: dict[str, Any]) -> str:
    """One line for the end of an epoch, from a training progress report (see
    :class:`carina.engine.handlers.Progress`)."""
    parts = [f"loss {_number(report.get('epoch_loss'), '.4f')}"]
    per_label = report.get("val_dice_per_label")
    if report.get("validated") and per_label is not None:
        scores = ", ".join(f"{name} {_number(dice, '.3f')}" for name, dice in per_label.items())
        parts.append(f"val Dice {scores} (mean {_number(report.get('val_dice'), '.3f')})")
    parts.append(f"lr {_number(report.get('lr'), '.3g')}")
    parts.append(f"elapsed {_duration(report.get('elapsed_s'))}")
    parts.append(f"ETA {_duration(report.get('eta_s'))}")
    return f"epoch {report['epoch']}/{report['epochs']}: " + ", ".join(parts)


def main_process() -> bool:
    """False in a ``torchrun`` worker of rank above 0, which trains without printing."""
    from carina.engine.distributed import DistributedContext

    return DistributedContext.from_environment().is_main


class TrainingDisplay:
    """Training progress on stderr: a live bar (epoch, step, loss, last validation Dice, learning
    rate, ETA) on a terminal, and an :func:`epoch_line` per epoch everywhere.

    Args:
        shown: False prints nothing (default: :func:`main_process`, so ``--nproc N`` prints once).
        console: where to print (default: stderr).
    """

    def __init__(self, *, shown: bool | None = None, console: Console | None = None) -> None:
        self.shown = main_process() if shown is None else shown
        self.console = console or err_console
        self.progress: Any = None

    def __enter__(self) -> TrainingDisplay:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        if not (self.shown and self.console.is_terminal):
            return self
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("val Dice {task.fields[dice]}"),
            TextColumn("lr {task.fields[lr]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=None, epoch="-", loss="-", dice="-", lr="-"
        )
        return self

    def announce(self, line: str) -> None:
        """Print a line from setting up (a note in yellow), before the first epoch."""
        if self.shown:
            style = "yellow" if line.startswith("note:") else None
            self.console.print(line, style=style, highlight=False, soft_wrap=True)

    def update(self, report: dict[str, Any]) -> None:
        """Show a progress report: the bar moves; the end of an epoch prints its line."""
        if not self.shown:
            return
        if self.progress is not None:
            self.progress.update(
                self.task,
                total=report["iterations"],
                completed=report["iteration"],
                epoch=f"{report['epoch']}/{report['epochs']}",
                loss=_number(report.get("loss"), ".4f"),
                dice=_number(report.get("val_dice"), ".3f"),
                lr=_number(report.get("lr"), ".3g"),
            )
        if report.get("epoch_end"):
            self.console.print(epoch_line(report), highlight=False, soft_wrap=True)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else str(timedelta(seconds=round(seconds)))
