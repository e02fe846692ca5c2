"""``carina automl``: search an archive's training configuration with Optuna."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from carina.cli.console import console, err_console


class _RunByDefault(TyperGroup):
    """``carina automl ARCHIVE ...`` runs a study; ``carina automl worker ...`` joins one."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunByDefault,
    help="AutoML on Optuna: `carina automl ARCHIVE --trials N`, or `carina automl worker`.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    archive: Path = typer.Argument(..., help="Archive folder with search blocks."),
    trials: int = typer.Option(
        20, "--trials", min=1, help="Trials in all (the first replays the archive)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Local worker processes."),
    storage: str | None = typer.Option(
        None,
        help="postgresql://... or a journal file (default: ARCHIVE/automl/STUDY/study.journal).",
    ),
    study: str = typer.Option("default", "--study", help="Study name (resumes when it exists)."),
    timeout: float | None = typer.Option(None, help="Seconds after which no new trial starts."),
    epochs_per_trial: int | None = typer.Option(
        None, "--epochs-per-trial", min=1, help="Epochs per trial (default: the archive's)."
    ),
    pruner: str = typer.Option("median", help="median, hyperband or none."),
    stale_after: float = typer.Option(
        120.0, help="Seconds without heartbeat before a running trial counts as dead."
    ),
    threads: int | None = typer.Option(
        None, help="CPU threads per worker (default: cores / workers)."
    ),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 (default: CUDA when present)."),
) -> None:
    """Search ARCHIVE's "search" blocks; the best trial becomes ARCHIVE/automl/STUDY/best/."""
    from carina.automl.run import run_study
    from carina.automl.study import StudySpec
    from carina.settings import Settings

    spec = StudySpec(
        archive=archive, study=study, storage=storage, trials=trials,
        epochs_per_trial=epochs_per_trial, pruner=pruner, stale_after=stale_after,
    )  # fmt: skip
    with StudyDisplay(trials) as display:
        outcome = run_study(
            spec, workers=workers, data_dir=Settings().data_dir, timeout=timeout,
            threads=threads, device=device, progress=display.update,
        )  # fmt: skip
    summary, result = outcome.summary, outcome.result
    if result is None:
        console.print(
            f"study {study!r} not finished ({summary.done}/{summary.total} trials); run the same "
            f"command to resume. Worker logs: {outcome.logs[0].parent}",
            highlight=False,
        )
        return
    first = f"{result.first_value:.4f}" if result.first_value is not None else "-"
    console.print(
        f"{summary.complete} trials complete, {summary.pruned} pruned, {summary.failed} failed; "
        f"best validation Dice {result.best_value:.4f} (trial {result.best_trial}; the archive's "
        f"own values: {first})",
        highlight=False,
    )
    console.print(f"best archive: {result.best}", highlight=False)
    console.print(f"trials: {result.csv}", highlight=False)
    for plot in result.plots:
        console.print(f"plot: {plot}", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


@app.command("worker")
def worker(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str = typer.Option(..., "--storage", help="The study's storage URL or journal file."),
    archive: Path | None = typer.Option(None, help="The archive, where this machine mounts it."),
    data_dir: Path | None = typer.Option(None, help="Where shipped datasets are exported."),
    deadline: float | None = typer.Option(None, help="Unix time after which no trial starts."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 (default: CUDA when present)."),
) -> None:
    """Join a running study: take its queued trials until none is left."""
    import logging

    from carina.automl.study import run_worker
    from carina.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report = run_worker(
        storage, study, data_dir=data_dir or Settings().data_dir, archive=archive,
        deadline=deadline, device=device,
    )  # fmt: skip
    console.print(f"ran trials {report.ran or 'none'}", highlight=False)


class StudyDisplay:
    """A line of progress: trials done of all, pruned, failed, running, best Dice so far."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __enter__(self) -> StudyDisplay:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("trials"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err_console,
        )  # fmt: skip
        self.progress.start()
        self.task = self.progress.add_task("automl", total=self.total, status="starting")
        return self

    def update(self, summary: Any) -> None:
        best = (
            f"best Dice {summary.best_value:.4f} (trial {summary.best_trial})"
            if summary.best_value is not None
            else "no trial finished yet"
        )
        self.progress.update(
            self.task,
            total=summary.total,
            completed=summary.done,
            status=f"{summary.pruned} pruned, {summary.failed} failed, "
            f"{summary.running} running; {best}",
        )

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
