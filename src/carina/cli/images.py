"""``carina convert``: any readable image to any writable format, DICOM SEG both ways."""

from __future__ import annotations

from pathlib import Path

import typer

from carina.cli.console import console


def convert(
    source: Path = typer.Argument(
        ..., help="Image file, DICOM series folder or zip of one series, or a DICOM SEG."
    ),
    target: Path | None = typer.Argument(
        None, help="Output file: .nii.gz, .nii, .nrrd, .mha, .png, or .dcm (a DICOM SEG)."
    ),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output file (as TARGET)."),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        help="The DICOM series a SEG refers to: writing .dcm needs it (the label map must be on "
        "its grid); reading a SEG places it on the series' grid.",
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="Segment names of a SEG, comma-separated: value n is the n-th."
    ),
) -> None:
    """Convert an image, keeping its exact geometry (e.g. a DICOM series folder to .nii.gz); a
    label map to a DICOM SEG of its series (--reference), and a SEG back to a label map."""
    from carina.io import load_volume, save_volume
    from carina.io.dicom import read_series
    from carina.io.dicom_seg import read_seg, write_seg
    from carina.settings import Settings

    destination = output or target
    if destination is None or (output is not None and target is not None):
        raise typer.BadParameter("give the output file once: as TARGET or with -o", param_hint="-o")
    limit = Settings().max_image_bytes
    names = [name.strip() for name in labels.split(",")] if labels else []
    if destination.suffix.lower() == ".dcm":
        if reference is None:
            raise typer.BadParameter(
                "a DICOM SEG refers to its source series: give it with --reference SERIES",
                param_hint="--reference",
            )
        series, datasets = read_series(reference, max_bytes=limit)
        mask = load_volume(source, max_bytes=limit)
        write_seg(mask, datasets, names, destination)
        console.print(
            f"{destination.name}: DICOM SEG of series {series.meta.series_uid}, "
            f"{int(mask.array.max(initial=0))} segment(s)",
            highlight=False,
        )
        return
    if reference is not None:
        volume = read_seg(source, reference=load_volume(reference, max_bytes=limit))
    else:
        volume = load_volume(source, max_bytes=limit)
    save_volume(volume, destination)
    spacing = " x ".join(f"{s:.4g}" for s in volume.spacing[: volume.spatial_ndim])
    console.print(
        f"{destination.name}: {' x '.join(map(str, volume.array.shape))} {volume.array.dtype}, "
        f"spacing {spacing} mm, orientation {''.join(volume.axis_codes[: volume.spatial_ndim])}",
        highlight=False,
    )
