"""``carina convert``: any readable image to any writable format."""

from __future__ import annotations

from pathlib import Path

import typer

from carina.cli.console import console


def convert(
    source: Path = typer.Argument(
        ..., help="Image file, DICOM series folder or zip of one series."
    ),
    target: Path = typer.Argument(..., help="Output file: .nii.gz, .nii, .nrrd, .mha or .png."),
) -> None:
    """Convert an image, keeping its exact geometry (e.g. a DICOM series folder to .nii.gz)."""
    from carina.io import load_volume, save_volume
    from carina.settings import Settings

    volume = load_volume(source, max_bytes=Settings().max_image_bytes)
    save_volume(volume, target)
    spacing = " x ".join(f"{s:.4g}" for s in volume.spacing[: volume.spatial_ndim])
    console.print(
        f"{target.name}: {' x '.join(map(str, volume.array.shape))} {volume.array.dtype}, "
        f"spacing {spacing} mm, orientation {''.join(volume.axis_codes[: volume.spatial_ndim])}",
        highlight=False,
    )
