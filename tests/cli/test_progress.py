"""The printing logic of ``carina train``: epoch lines, one printing rank, summaries without
placeholders."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from carina.cli.engine import _report
from carina.cli.progress import TrainingDisplay, dice_text
from carina.engine.train import TrainResult


def reports(epochs: int = 2, steps: int = 3) -> list[dict[str, Any]]:
    """What :class:`carina.engine.handlers.Progress` sends for a run validated at its last epoch."""
    out: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        common = {"epoch": epoch, "epochs": epochs, "iterations": epochs * steps, "lr": 0.01}
        for step in range(1, steps + 1):
            iteration = (epoch - 1) * steps + step
            eta = 10.0 * (epochs * steps - iteration)
            out.append({**common, "iteration": iteration, "loss": 1.0 / iteration, "eta_s": eta})
        validated = epoch == epochs
        scores = {"L2": 0.5, "L3": math.nan} if validated else None
        out.append(
            {
                **out[-1],
                "epoch_end": True,
                "epoch_loss": 0.25,
                "validated": validated,
                "val_dice": 0.5 if validated else None,
                "val_dice_per_label": scores,
                "elapsed_s": 62.4 * epoch,
            }
        )
    return out


def shown(display: TrainingDisplay) -> list[str]:
    with display:
        display.announce("pretrained weights from model.pt: 33 tensors loaded")
        for report in reports():
            display.update(report)
    return display.console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def test_a_log_gets_the_setup_then_one_line_per_epoch() -> None:
    log = Console(file=io.StringIO(), force_terminal=False, width=60)
    assert shown(TrainingDisplay(shown=True, console=log)) == [
        "pretrained weights from model.pt: 33 tensors loaded",
        "epoch 1/2: loss 0.2500, lr 0.01, elapsed 0:01:02, ETA 0:00:30",
        "epoch 2/2: loss 0.2500, val Dice L2 0.500, L3 - (mean 0.500), lr 0.01, elapsed 0:02:05, "
        "ETA 0:00:00",
    ]


def test_a_terminal_gets_the_same_lines_above_the_bar() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True, width=200, color_system=None)
    lines = shown(TrainingDisplay(shown=True, console=terminal))
    text = "\n".join(lines)
    assert "epoch 1/2: loss 0.2500, lr 0.01" in text and "val Dice L2 0.500, L3 -" in text
    assert "step 6/6" in text, "the bar"


def test_other_ranks_print_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    log = Console(file=io.StringIO(), force_terminal=False)
    display = TrainingDisplay(console=log)
    assert not display.shown
    assert shown(display) == []
    monkeypatch.setenv("RANK", "0")
    assert TrainingDisplay(console=log).shown


def result(best: float | None, epoch: int | None) -> TrainResult:
    return TrainResult(
        best_metric=best,
        best_epoch=epoch,
        last_metric=best,
        epochs=4,
        iterations=12,
        device="cpu",
        amp=False,
        network=torch.nn.Identity(),
        transfer=None,
        frozen=[],
        notes=[],
    )


def test_summaries_say_when_no_dice_was_measured(capsys: pytest.CaptureFixture[str]) -> None:
    _report(result(None, None), Path("arch/models/model.pt"))
    _report(result(0.81234, 3), Path("arch/models/model.pt"))
    first, second = capsys.readouterr().out.splitlines()
    assert first == (
        "trained 4 epochs (12 steps); validation mean Dice not measured; "
        "weights in arch/models/model.pt"
    )
    assert "best validation mean Dice 0.8123 at epoch 3;" in second
    assert [dice_text(v) for v in (None, math.nan, -1.0, 0.5)] == ["not measured"] * 3 + ["0.5000"]
