"""``carina infer``: segment files, folders and DICOM series in a batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer

from carina.cli.console import console


def infer(
    archive: Path = typer.Argument(..., help="Archive folder."),
    images: list[Path] = typer.Argument(..., help="Images, DICOM folders or zips."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the label maps."),
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
    """Segment images; each label map keeps its input's exact geometry."""
    from carina.archive import Archive
    from carina.engine.failures import model_failures
    from carina.engine.predict import Predictor
    from carina.errors import CarinaError

    if plan not in (None, "auto", "archive"):
        raise CarinaError(f"--plan {plan!r}: choose auto or archive")
    if output_format not in ("image", "dicom-seg"):
        raise CarinaError(f"--format {output_format!r}: choose image or dicom-seg")
    chosen: Literal["auto", "archive"] | None = (
        "archive" if plan == "archive" else "auto" if plan == "auto" else None
    )
    predictor = Predictor.from_archive(
        Archive.open(archive), device=device, batch=True, plan=chosen
    )
    output.mkdir(parents=True, exist_ok=True)
    for image in images:
        stem = image.name.split(".")[0] or image.name
        target = output / f"{stem}_seg{'.dcm' if output_format == 'dicom-seg' else suffix}"
        with model_failures(archive.name):
            if output_format == "dicom-seg":
                prediction = _predict_seg(predictor, image, target)
            else:
                prediction = predictor.predict_to_file(image, target)
        total = sum(prediction.timings.values())
        console.print(f"{image.name} -> {target.name} ({total:.2f} s)", highlight=False)


def _predict_seg(predictor: Any, image: Path, target: Path) -> Any:
    """Segment a DICOM series and write the label map as a DICOM SEG referencing it."""
    import time

    from carina.errors import ImageReadError
    from carina.io.dicom import read_headers
    from carina.io.dicom_seg import write_seg
    from carina.settings import Settings

    headers = read_headers(image, max_bytes=Settings().max_image_bytes) if image.exists() else []
    if not headers:
        raise ImageReadError(image, "--format dicom-seg needs a DICOM series (folder or zip)")
    prediction = predictor.predict(image)
    start = time.perf_counter()
    write_seg(prediction.volume, headers, list(predictor.settings.labels), target)
    prediction.timings["write"] = time.perf_counter() - start
    return prediction
