"""``carina dataset``: one's own folder of scans as a dataset to train on."""

from __future__ import annotations

from pathlib import Path

import typer

from carina.cli.console import console, err_console

app = typer.Typer(
    help="Your own folder of images and labels as a dataset: find, check, split.",
    no_args_is_help=True,
)


@app.command("init")
def init(
    folder: Path = typer.Argument(
        ..., help="imagesTr/+labelsTr/ (MSD, nnU-Net raw) or images/+labels/ inside."
    ),
    validation: float = typer.Option(
        0.2, min=0.0, max=0.9, help="Share of the cases (or patients) that validate."
    ),
    seed: int = typer.Option(0, help="Seed of the split (the same seed, the same split)."),
    group_by: str | None = typer.Option(
        None,
        help="Regular expression whose first group, found in a file name, names the patient: "
        "one patient's scans stay on one side (e.g. '^(pat\\d+)_').",
    ),
    labels: str = typer.Option(
        "", help="Label names for values 1, 2, ... (default: dataset.json's, else 'label N')."
    ),
    modality: str | None = typer.Option(None, help="CT or MR (how intensities are normalised)."),
) -> None:
    """Find the image/label pairs of FOLDER, check each, write FOLDER/dataset.json with a fixed
    training/validation split, and say what was found and skipped."""
    from carina.data.folders import SplitRule, init_dataset
    from carina.settings import Settings

    names = [name.strip() for name in labels.split(",") if name.strip()]
    report = init_dataset(
        folder,
        rule=SplitRule(validation=validation, seed=seed, group=group_by),
        labels=names or None,
        modality=modality.upper() if modality else None,
        max_bytes=Settings().max_image_bytes,
        progress=lambda line: err_console.print(line, style="dim", highlight=False),
    )
    for line in report.skipped:
        err_console.print(f"skipped {line}", style="yellow", highlight=False, soft_wrap=True)
    listed = ", ".join(f"{value} {name}" for value, name in sorted(report.labels.items()))
    console.print(
        f"{report.layout}: {report.training} training and {report.validation} validation cases"
        f" ({listed}); {report.unlabelled} without a label; {len(report.skipped)} skipped",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"wrote {report.manifest}; next: carina archive new MODEL --dataset {folder}",
        highlight=False,
        soft_wrap=True,
    )
