"""``carina data``: the shipped datasets and sample files."""

from __future__ import annotations

from pathlib import Path

import typer

from carina.cli.console import console, err_console

app = typer.Typer(help="Shipped real datasets and sample files.", no_args_is_help=True)


@app.command("list")
def list_data(
    samples: bool = typer.Option(False, "--samples", help="Also list the sample files."),
) -> None:
    """List the datasets (and with --samples the files) and whether they are installed."""
    from rich.table import Table

    from carina.data import DATASETS, SAMPLES, sample_available

    table = Table(title="datasets")
    table.add_column("name", no_wrap=True)
    for column in ("modality", "labels", "installed", "description"):
        table.add_column(column)
    for spec in DATASETS.values():
        labels = ", ".join(f"{v} {n}" for v, n in spec.labels.items())
        table.add_row(spec.name, spec.modality, labels, _yes(spec.available), spec.description)
    console.print(table)
    if samples:
        files = Table(title="sample files")
        files.add_column("name", no_wrap=True)
        for column in ("package", "installed", "description"):
            files.add_column(column)
        for sample in SAMPLES.values():
            available = sample_available(sample.name)
            files.add_row(sample.name, sample.distribution, _yes(available), sample.description)
        console.print(files)


@app.command("export")
def export(
    name: str = typer.Argument(..., help="Dataset name (see `carina data list`)."),
    folder: Path = typer.Argument(..., help="Output folder (MSD layout)."),
) -> None:
    """Write a dataset in the Medical Segmentation Decathlon layout (training, held-out halves)."""
    from carina.data import export_dataset

    manifest = export_dataset(name, folder, progress=lambda m: err_console.print(m, style="dim"))
    console.print(f"wrote {manifest}", highlight=False)


def _yes(value: bool) -> str:
    return "[green]yes[/]" if value else "[red]no[/]"
