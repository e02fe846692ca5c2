"""``carina datastore`` as a user runs it: import the exported spine CT, list, take the next image,
save labels, show, stats, export, delete."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from carina.cli.main import app

runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_datastore_commands(tmp_path: Path, spine_export: Path) -> None:
    workspace = ["--workspace", str(tmp_path / "ws")]
    images = tmp_path / "images"
    images.mkdir()
    for name in ("spine_ct_train", "spine_ct_heldout"):
        (images / f"{name}.nii.gz").write_bytes(
            (spine_export / "imagesTr" / f"{name}.nii.gz").read_bytes()
        )
    assert "imported 2 images, 0 with a final label" in run(
        "datastore", "import", str(images), *workspace
    )
    assert "spine_ct_train  unlabelled" in run("datastore", "list", *workspace)
    chosen = run("datastore", "next", "--strategy", "first", *workspace).strip()
    assert chosen == "spine_ct_heldout"  # import order is file-name order
    label = spine_export / "labelsTr" / f"{chosen}.nii.gz"
    run("datastore", "label", chosen, str(label), "--tag", "original", "--by", "model", *workspace)
    run("datastore", "label", chosen, str(label), "--by", "ann", *workspace)
    shown = json.loads(run("datastore", "show", chosen, *workspace))
    assert shown["status"] == "labelled" and set(shown["labels"]) == {"original", "final"}
    run("datastore", "approve", chosen, "--by", "reviewer", *workspace)
    assert json.loads(run("datastore", "show", chosen, *workspace))["status"] == "approved"
    stats = json.loads(run("datastore", "stats", *workspace))
    assert stats["by_status"] == {"approved": 1, "unlabelled": 1}
    assert stats["mean_dice_original_final"] == 1.0
    manifest = Path(run("datastore", "export", str(tmp_path / "out"), *workspace).strip())
    assert json.loads(manifest.read_text())["numTraining"] == 1
    run("datastore", "delete", chosen, *workspace)
    refused = runner.invoke(
        app, ["datastore", "label", "spine_ct_train", str(label), "--tag", "a/b", *workspace]
    )
    assert refused.exit_code != 0 and "label tag" in str(refused.exception)


def test_the_workspace_chooses_its_datastore(tmp_path: Path) -> None:
    workspace = ["--workspace", str(tmp_path / "ws")]
    assert run("datastore", "source", *workspace).strip() == "local"
    url = "dicomweb+https://pacs.example/dicom-web/"
    assert "is dicomweb+https://pacs.example/dicom-web" in run(
        "datastore", "source", url, *workspace
    )
    assert run("datastore", "source", *workspace).strip() == url.rstrip("/")
    refused = runner.invoke(app, ["datastore", "source", "https://pacs/dicom-web", *workspace])
    assert refused.exit_code != 0 and "dicomweb+https://" in str(refused.exception)
    assert run("datastore", "source", "local", *workspace).strip().endswith("is local")
