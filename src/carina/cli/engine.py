"""``carina train``, ``validate``, ``infer`` and ``export``: one library call each."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from carina.cli.console import console, err_console
from carina.cli.progress import TrainingDisplay, dice_text
from carina.errors import ConfigError

if TYPE_CHECKING:
    from carina.engine.train import TrainResult


def train(
    archive: Path = typer.Argument(..., help="Archive folder."),
    dataset: Path | None = typer.Option(None, help="Dataset folder (dataset.json) or datalist."),
    datastore: Path | None = typer.Option(
        None,
        help="A workspace: train on its datastore's final labels, then promote the result over "
        "WORKSPACE/models/NAME if it is no worse on the same validation images.",
    ),
    set_: list[str] = typer.Option(
        [], "--set", metavar="NAME=VALUE", help="NAME=VALUE (variable) or a.b.c=VALUE (key)."
    ),
    pretrained: Path | None = typer.Option(None, help="Archive or weights file to start from."),
    freeze: list[str] = typer.Option(
        [], metavar="GLOB", help="Glob of parameter names to freeze at first."
    ),
    freeze_epochs: int | None = typer.Option(None, help="Epochs before frozen layers train."),
    resume: bool = typer.Option(False, help="Continue from models/checkpoint_last.pt."),
    nproc: int = typer.Option(1, help="Processes (GPUs) on this node, through torchrun."),
    nnodes: int = typer.Option(1, help="Nodes (torchrun)."),
    node_rank: int = typer.Option(0, help="This node's rank (torchrun)."),
    master_addr: str | None = typer.Option(None, help="Rendezvous host (torchrun)."),
    master_port: int | None = typer.Option(None, help="Rendezvous port (torchrun)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 (default: CUDA if present)."),
) -> None:
    """Train an archive; best weights to models/model.pt, last epoch to checkpoint_last.pt."""
    distributed = nproc > 1 or nnodes > 1
    if datastore is not None:
        if distributed:
            raise ConfigError(
                "--datastore", "", "trains in one process: leave out --nproc/--nnodes"
            )
        _train_from_datastore(archive, datastore, device)
        return
    from carina.archive import Archive, parse_override
    from carina.engine.train import TrainOptions, check_training, train_archive
    from carina.settings import Settings

    opened = Archive.open(archive, overrides=dict(parse_override(s) for s in set_))
    options = TrainOptions(
        dataset=dataset,
        data_dir=Settings().data_dir,
        pretrained=pretrained,
        freeze=freeze,
        freeze_epochs=freeze_epochs,
        resume=resume,
        device=device,
    )
    if distributed:
        check_training(opened, options)  # a config or data error: one line, not one per process
        raise typer.Exit(_launch(nproc, nnodes, node_rank, master_addr, master_port))
    with TrainingDisplay() as display:
        options.progress, options.announce = display.update, display.announce
        result = train_archive(opened, options)
    if display.shown:  # the other ranks of --nproc N print nothing
        _report(result, opened.layout.weights)


def _launch(
    nproc: int, nnodes: int, node_rank: int, master_addr: str | None, master_port: int | None
) -> int:
    """Run this command again under ``torchrun`` (without the launch options); its exit status."""
    from carina.engine.distributed import launch, torchrun_command

    command = torchrun_command(
        nproc,
        _without_launch_options(sys.argv[1:]),
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
    )
    return launch(command, nproc=nproc)


def _report(result: TrainResult, weights: Path) -> None:
    """The summary after training (what setting up found was announced before it)."""
    validation = (
        "validation mean Dice not measured"
        if result.best_metric is None
        else f"best validation mean Dice {result.best_metric:.4f} at epoch {result.best_epoch}"
    )
    console.print(
        f"trained {result.epochs} epochs ({result.iterations} steps); {validation}; "
        f"weights in {weights}",
        highlight=False,
        soft_wrap=True,
    )


def validate(
    archive: Path = typer.Argument(..., help="Archive folder."),
    dataset: Path | None = typer.Option(None, help="Dataset folder or datalist."),
    device: str | None = typer.Option(None, help="cpu, cuda, ..."),
) -> None:
    """Score the archive on its validation cases; writes eval/metrics.json and a per-case CSV."""
    from carina.archive import Archive
    from carina.kinds import validate_archive
    from carina.settings import Settings

    result = validate_archive(
        Archive.open(archive),
        dataset=dataset,
        data_dir=Settings().data_dir,
        device=device,
        progress=lambda line: err_console.print(line, style="dim", highlight=False),
    )
    labels = ", ".join(f"{name} {score:.4f}" for name, score in result.per_label.items())
    console.print(f"mean Dice {result.mean_dice:.4f} ({labels})", highlight=False)
    console.print(f"wrote {result.metrics_path}", highlight=False)


def export(
    archive: Path = typer.Argument(..., help="Archive folder."),
    export_format: str = typer.Option("torchscript", "--format", help="torchscript or onnx."),
    input_shape: str | None = typer.Option(None, help="Sample input, e.g. 1,1,96,96,96."),
) -> None:
    """Export the network to models/model.ts or models/model.onnx, checked against PyTorch."""
    from carina.archive import Archive
    from carina.engine.export import ExportFormat, export_archive

    shape = tuple(int(v) for v in input_shape.split(",")) if input_shape else None
    result = export_archive(Archive.open(archive), ExportFormat(export_format), input_shape=shape)
    console.print(
        f"wrote {result.path}; max abs difference from PyTorch {result.max_abs_diff:.2e} "
        f"on input {list(result.input_shape)}",
        highlight=False,
    )


_LAUNCH_OPTIONS = {"--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port"}


def _train_from_datastore(archive: Path, workspace: Path, device: str | None) -> None:
    from carina.learning import train_from_datastore
    from carina.settings import Settings

    settings = Settings()
    with TrainingDisplay() as display:
        result = train_from_datastore(
            archive,
            workspace,
            max_bytes=settings.max_image_bytes,
            data_dir=settings.data_dir,
            device=device,
            progress=display.update,
        )
    decision = result.decision
    served = "none" if decision.served_dice is None else dice_text(decision.served_dice)
    verdict = "promoted" if decision.promoted else "refused: the served model stays"
    console.print(
        f"job {result.job}: validation mean Dice {dice_text(decision.candidate_dice)} (served: "
        f"{served}); {verdict}",
        highlight=False,
        soft_wrap=True,
    )


def _without_launch_options(arguments: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
            continue
        name = argument.split("=", 1)[0]
        if name in _LAUNCH_OPTIONS:
            skip = "=" not in argument
            continue
        out.append(argument)
    return out
