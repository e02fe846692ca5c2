"""``carina datastore``: the images and labels of a workspace's datastore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from carina.cli.console import console, err_console

if TYPE_CHECKING:
    from carina.datastore import LocalDatastore

app = typer.Typer(
    help="The datastore: import images and labels, list, label, choose the next image, export.",
    no_args_is_help=True,
)
WORKSPACE = typer.Option(Path("workspace"), help="Workspace folder (datastore/ inside).")


def _store(workspace: Path) -> LocalDatastore:
    from carina.datastore import open_datastore
    from carina.settings import Settings

    return open_datastore(workspace, max_bytes=Settings().max_image_bytes)


@app.command("source")
def source(
    url: str | None = typer.Argument(
        None, help="'local' or 'dicomweb+https://host/dicom-web' (a PACS); none: show it."
    ),
    workspace: Path = WORKSPACE,
) -> None:
    """Show or set where the workspace's images live: local, or a PACS over DICOMweb."""
    from carina.datastore import datastore_source, set_datastore_source
    from carina.settings import Settings

    if url is None:
        console.print(datastore_source(workspace, Settings()), highlight=False, markup=False)
        return
    chosen = set_datastore_source(workspace, url)
    console.print(
        f"the datastore of {workspace} is {chosen}", highlight=False, markup=False, soft_wrap=True
    )
    if chosen != "local":
        err_console.print(
            "sign in to the PACS with CARINA_DICOMWEB_USER and CARINA_DICOMWEB_PASSWORD, or "
            "CARINA_DICOMWEB_TOKEN (never kept on the workspace)",
            highlight=False,
            soft_wrap=True,
        )


@app.command("import")
def import_images(
    folder: Path = typer.Argument(..., help="Images (imagesTr/ or images/, or the folder itself)."),
    workspace: Path = WORKSPACE,
) -> None:
    """Add a folder of images, with the labels of a labelsTr/ or labels/ folder as 'final'."""
    from carina.datastore import import_folder

    report = import_folder(_store(workspace), folder, progress=err_console.print)
    console.print(
        f"imported {len(report.images)} images, {len(report.labels)} with a final label; "
        f"skipped {len(report.skipped)}",
        highlight=False,
    )


@app.command("list")
def list_images(workspace: Path = WORKSPACE) -> None:
    """List the images in import order with their status and label tags."""
    for record in _store(workspace).images():
        tags = ", ".join(sorted(record.labels)) or "no labels"
        console.print(f"{record.id}  {record.status}  {tags}", highlight=False, markup=False)


@app.command("show")
def show(image_id: str = typer.Argument(...), workspace: Path = WORKSPACE) -> None:
    """One image as JSON: its status, metadata and every label version."""
    store = _store(workspace)
    record = store.image(image_id)
    versions = {
        tag: [
            {"version": v.version, "saved_by": v.saved_by, "saved_at": v.saved_at.isoformat()}
            for v in store.label_versions(image_id, tag)
        ]
        for tag in record.labels
    }
    document = {
        "id": record.id,
        "name": record.name,
        "status": str(record.status),
        "imported_at": record.imported_at.isoformat(),
        "info": record.info,
        "labels": versions,
    }
    console.print_json(json.dumps(document))


@app.command("label")
def save_label(
    image_id: str = typer.Argument(...),
    label: Path = typer.Argument(..., help="A label map on the image's grid."),
    tag: str = typer.Option("final", help="final (done by a person), original (a model's), ..."),
    by: str = typer.Option("cli", help="Who saves it."),
    workspace: Path = WORKSPACE,
) -> None:
    """Save a new version of an image's label (checked against the image first)."""
    version = _store(workspace).save_label(image_id, label, tag=tag, saved_by=by)
    console.print(f"saved {tag} label {version.version} of {image_id}", highlight=False)


@app.command("approve")
def approve(
    image_id: str = typer.Argument(...),
    by: str = typer.Option(..., help="The reviewer who approves."),
    workspace: Path = WORKSPACE,
) -> None:
    """Approve an image's latest final label (a newer final label needs approval again)."""
    _store(workspace).approve(image_id, by=by)
    console.print(f"approved the final label of {image_id}", highlight=False, markup=False)


@app.command("next")
def next_sample(
    strategy: str = typer.Option("random", help="random, first, uncertainty or entropy."),
    model: str | None = typer.Option(
        None, help="The served model (in WORKSPACE/models) uncertainty and entropy score with."
    ),
    workspace: Path = WORKSPACE,
) -> None:
    """Print the id of the image to annotate next (nothing when every image is labelled)."""
    from carina.learning import next_image

    served = workspace / "models" / model if model else None
    record = next_image(_store(workspace), strategy, model=served)
    if record is None:
        err_console.print("every image has a final label")
        raise typer.Exit(code=1)
    console.print(record.id, highlight=False, markup=False)


@app.command("export")
def export(
    folder: Path = typer.Argument(..., help="Where to write imagesTr/, labelsTr/, dataset.json."),
    workspace: Path = WORKSPACE,
) -> None:
    """Write the images with a final label, and those labels, in the MSD layout."""
    from carina.datastore import export_final_labels

    console.print(str(export_final_labels(_store(workspace), folder)), highlight=False)


@app.command("delete")
def delete(image_id: str = typer.Argument(...), workspace: Path = WORKSPACE) -> None:
    """Remove an image and all its labels."""
    _store(workspace).delete_image(image_id)
    console.print(f"deleted {image_id}", highlight=False, markup=False)


@app.command("stats")
def stats(workspace: Path = WORKSPACE) -> None:
    """Counts by status, and per image the Dice of original vs final and the time spent."""
    from carina.datastore import datastore_stats

    console.print_json(json.dumps(datastore_stats(_store(workspace))))
