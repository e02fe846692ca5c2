"""``carina infer``: segment files, folders and DICOM series in a batch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

from carina.cli.console import console, err_console

if TYPE_CHECKING:
    from carina.archive import Archive
    from carina.engine.batch import Batch, CaseResult
    from carina.engine.predict import Predictor


def infer(
    archive: Path = typer.Argument(..., help="Archive folder."),
    inputs: list[Path] | None = typer.Argument(
        None,
        help="Image files, folders (each image file in it, each DICOM series) or DICOM zips. "
        "None: the archive's dataset (its test images, else its validation images).",
    ),
    output: Path | None = typer.Option(None, "-o", "--output", help="Folder for the label maps."),
    series: list[str] = typer.Option(
        [],
        metavar="UID",
        help="The DICOM series to run where a folder or zip holds several (repeatable; all: "
        "every one). Without it such a folder is listed and skipped.",
    ),
    list_series: bool = typer.Option(
        False, "--list-series", help="List the DICOM series of the inputs and stop."
    ),
    dataset: Path | None = typer.Option(
        None, help="Run on this dataset's test images (else its validation images)."
    ),
    suffix: str = typer.Option(".nii.gz", help="Output format: .nii.gz, .nii, .nrrd or .mha."),
    output_format: str = typer.Option(
        "image",
        "--format",
        help="image (as --suffix) or dicom-seg: a DICOM SEG referencing each input series.",
    ),
    device: str | None = typer.Option(None, help="cpu, cuda, ..."),
    plan: str | None = typer.Option(
        None,
        help="auto: the whole image in one pass when it fits CARINA_MAX_WORK_BYTES, else the "
        "largest windows that fit; archive: the archive's sliding window exactly (default: "
        "CARINA_INFERENCE_PLAN, auto).",
    ),
) -> None:
    """Segment images; each label map keeps its input's exact geometry. A case that cannot be
    read or run is skipped with its reason (exit status 1 at the end); OUTPUT/volumes.csv lists
    every case with the volume of each label in mL."""
    from carina.archive import Archive
    from carina.engine.batch import collect_cases
    from carina.errors import CarinaError
    from carina.settings import Settings

    chosen = _checked_plan(plan, output_format)
    if output is None and not list_series:
        raise CarinaError("-o/--output: name the folder for the label maps")
    settings = Settings()
    opened = Archive.open(archive)
    found = _inputs(opened, inputs, dataset, settings.data_dir)
    batch = collect_cases(found, series=series, max_bytes=settings.max_image_bytes)
    if list_series or output is None:
        _list(batch)
        return
    from carina.engine.predict import Predictor

    predictor = Predictor.from_archive(opened, device=device, batch=True, plan=chosen)
    if _run(predictor, batch, output, output_format, suffix, archive.name):
        raise typer.Exit(1)


def _checked_plan(plan: str | None, output_format: str) -> Literal["auto", "archive"] | None:
    from carina.errors import CarinaError

    if plan not in (None, "auto", "archive"):
        raise CarinaError(f"--plan {plan!r}: choose auto or archive")
    if output_format not in ("image", "dicom-seg"):
        raise CarinaError(f"--format {output_format!r}: choose image or dicom-seg")
    return "archive" if plan == "archive" else "auto" if plan == "auto" else None


def _run(
    predictor: Predictor, batch: Batch, output: Path, output_format: str, suffix: str, model: str
) -> int:
    """Run the batch, write volumes.csv, print a summary; how many cases were skipped."""
    from carina.engine.batch import CSV_NAME, run_cases, write_volumes_csv
    from carina.settings import Settings

    for result in batch.skipped:
        _show(result)
    output.mkdir(parents=True, exist_ok=True)
    results = run_cases(
        predictor,
        batch.cases,
        output,
        output_format="dicom-seg" if output_format == "dicom-seg" else "image",
        suffix=suffix,
        max_bytes=Settings().max_image_bytes,
        model=model,
        done=_show,
    )
    everything = [*results, *batch.skipped]
    write_volumes_csv(everything, list(predictor.settings.labels), output / CSV_NAME)
    failed = sum(1 for r in everything if r.error)
    console.print(
        f"segmented {len(everything) - failed} of {len(everything)}; {failed} skipped; label "
        f"volumes in {output / CSV_NAME}",
        highlight=False,
        soft_wrap=True,
    )
    return failed


def _inputs(
    archive: Archive, inputs: list[Path] | None, dataset: Path | None, data_dir: Path
) -> list[Path]:
    """The inputs given, else the images of ``--dataset`` or of the archive's dataset."""
    from carina.engine.data import dataset_images

    if inputs and dataset is None:
        return inputs
    found = dataset_images(archive, override=dataset, data_dir=data_dir)
    err_console.print(
        f"running on {found.describe()}", style="dim", highlight=False, soft_wrap=True
    )
    return [*(inputs or []), *found.images]


def _show(result: CaseResult) -> None:
    if result.error:
        lines = [f"skipped {result.source}: {result.error}", *(f"  {d}" for d in result.details)]
        err_console.print("\n".join(lines), style="yellow", highlight=False, soft_wrap=True)
        return
    assert result.output is not None
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", style="yellow", highlight=False, soft_wrap=True)
    console.print(
        f"{result.name} -> {result.output.name} ({result.seconds:.2f} s)",
        highlight=False,
        soft_wrap=True,
    )


def _list(batch: Batch) -> None:
    for source, found in batch.series.items():
        console.print(f"{source}: {len(found)} DICOM series", highlight=False, soft_wrap=True)
        for info in found:
            console.print(f"  {info.describe()}", highlight=False, soft_wrap=True)
    for case in batch.cases:
        if case.series is None:
            console.print(f"{case.source}: an image file", highlight=False, soft_wrap=True)
