"""``carina zoo``: the pretrained archives shipped with Carina."""

from __future__ import annotations

from pathlib import Path

import typer

from carina.cli.console import console, err_console

app = typer.Typer(help="Pretrained archives: list, install, verify, build.", no_args_is_help=True)


@app.command("list")
def list_zoo() -> None:
    """List the zoo's archives with their type, labels and held-out metric."""
    from carina.zoo import load_index

    for entry in load_index().values():
        dice = entry.metrics.get("mean_dice")
        score = f"held-out mean Dice {dice:.3f}" if isinstance(dice, float) else "no metric"
        console.print(
            f"[bold]{entry.name}[/]  {entry.type}  {score}  {entry.size / 1e6:.1f} MB",
            highlight=False,
        )
        console.print(f"  labels: {', '.join(entry.labels) or '(any structure)'}", highlight=False)
        console.print(f"  {entry.description}", highlight=False)


@app.command("install")
def install(
    source: str = typer.Argument(..., help="A zoo name, or an https:// or file:// URL of a zip."),
    workspace: Path = typer.Option(Path("workspace"), help="Workspace folder (models/ inside)."),
    sha256: str | None = typer.Option(None, help="sha256 of the zip (required for URLs)."),
    name: str | None = typer.Option(None, help="Model name for a URL (default: the zip's name)."),
) -> None:
    """Install an archive into WORKSPACE/models/NAME after checking its sha256."""
    from carina.errors import ArchiveError
    from carina.zoo import install_archive, install_from_url

    if "://" not in source:
        target = install_archive(source, workspace)
    else:
        if sha256 is None:
            raise ArchiveError("--sha256 is required to install from a URL")
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        with Progress(
            *Progress.get_default_columns(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err_console,
        ) as bar:
            task = bar.add_task("download", total=None)
            target = install_from_url(
                source,
                workspace,
                sha256=sha256,
                name=name,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    console.print(f"installed {target}", highlight=False)


@app.command("verify")
def verify(
    names: list[str] = typer.Argument(None, help="Archives to check (default: all)."),
) -> None:
    """Check the shipped archives against the index's sha256 sums."""
    from carina.errors import ArchiveError
    from carina.zoo import verify_zoo

    report = verify_zoo(names or None)
    for name, problems in report.items():
        status = "[green]ok[/]" if not problems else f"[red]{'; '.join(problems)}[/]"
        console.print(f"{name}: {status}")
    if any(report.values()):
        raise ArchiveError("some archives do not match the index")


@app.command("build")
def build(
    name: str = typer.Argument(..., help="Archive to (re)build from its example config."),
    output: Path = typer.Option(
        Path("zoo"),
        "-o",
        "--output",
        help="Zoo folder to write: OUTPUT/archives/NAME and its entry in OUTPUT/index.json "
        "(never the installed package; in a clone, src/carina/zoo regenerates the shipped zoo).",
    ),
    set_: list[str] = typer.Option(
        [], "--set", metavar="NAME=VALUE", help="NAME=VALUE overrides, as for carina train."
    ),
) -> None:
    """Retrain a zoo archive from the shipped data into a zoo folder, validate it and print its
    metric."""
    from carina.archive import parse_override
    from carina.cli.progress import TrainingDisplay
    from carina.settings import Settings
    from carina.zoo.build import build_archive

    with TrainingDisplay() as display:
        result = build_archive(
            name,
            output=output,
            data_dir=Settings().data_dir,
            overrides=dict(parse_override(s) for s in set_),
            progress=display.update,
        )
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics["per_label"].items())
    console.print(
        f"{name}: mean Dice {result.metrics['mean_dice']:.4f} ({scores})", highlight=False
    )
    console.print(
        f"wrote {result.path} (sha256 of manifest {result.entry.sha256[:12]}...)", highlight=False
    )
