"""The client and ``carina client`` against a real server process (one per module, on a free port)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from carina.cli.main import app
from carina.client import (
    AuthError,
    Client,
    Endpoint,
    ModelNotFound,
    SessionExpired,
    SessionNotFound,
)
from carina.io import Volume, load_volume
from carina.zoo import install_archive, zoo_archive_path
from tests.servers import ADMIN_TOKEN, start_server

pytestmark = pytest.mark.integration

TOKEN = ADMIN_TOKEN
#: The centre [i, j, k] of vertebra L3 in the shipped spine CT (73 x 47 x 73).
BONE = [26, 21, 35]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``carina serve`` in its own process group, with spine_ct_vertebrae and deepgrow_2d."""
    workspace = tmp_path_factory.mktemp("workspace")
    for name in ("spine_ct_vertebrae", "deepgrow_2d"):
        install_archive(name, workspace)
    running = start_server(workspace, env={"CARINA_DEVICE": "cpu", "CARINA_GRACE_PERIOD": "1"})
    try:
        yield running.url
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Client]:
    with Client(server, admin_token=TOKEN) as opened:
        yield opened


def binary_mask(path: Path) -> Path:
    """A 20 x 16 x 6 mask with a 5 x 4 rectangle on slices 2 and 3."""
    array = np.zeros((20, 16, 6), np.uint8)
    array[5:10, 4:8, 2:4] = 1
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.0, 1.0])), path)
    return path


def test_health_and_model_list(client: Client) -> None:
    assert client.health()["status"] == "ok"
    assert [m.name for m in client.models()] == ["deepgrow_2d", "spine_ct_vertebrae"]
    assert [m.name for m in client.models(type="deepgrow")] == ["deepgrow_2d"]
    assert [m.name for m in client.models(label="l3")] == ["spine_ct_vertebrae"]
    entry = client.model("spine_ct_vertebrae")
    assert entry.type == "segmentation" and entry.labels == ["L2", "L3", "L4"]
    assert (client.model("deepgrow_2d").model_extra or {})["deepgrow"] == "2D"


def test_unknown_model_raises_model_not_found(
    client: Client, spine_ct_path: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelNotFound) as raised:
        client.model("no_such_model")
    assert raised.value.status == 404 and "no_such_model" in raised.value.message
    with pytest.raises(ModelNotFound):
        client.segment("no_such_model", spine_ct_path, output=tmp_path / "never.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_segmentation_writes_label_map_on_input_grid(
    client: Client, spine_ct_path: Path, spine_ct: Volume, tmp_path: Path
) -> None:
    output = tmp_path / "seg.nii.gz"
    result = client.infer(
        Endpoint.SEGMENTATION, "spine_ct_vertebrae", spine_ct_path, {}, output=output
    )
    assert result.output == output
    assert len(result.params["points"]) == 6
    assert {"read", "infer", "write"} <= set(result.server_timing)
    labels = load_volume(output)
    assert labels.shape == spine_ct.shape
    np.testing.assert_allclose(labels.affine, spine_ct.affine, atol=1e-4)
    found = set(np.unique(np.asarray(labels.array)).tolist())
    assert found <= {0, 1, 2, 3} and len(found) > 1
    assert [p.name for p in tmp_path.iterdir()] == ["seg.nii.gz"], "no temporary file is left"


def test_inference_without_output_returns_params_only(client: Client, spine_ct_path: Path) -> None:
    params = client.inference("spine_ct_vertebrae", spine_ct_path, {})
    assert len(params["points"]) == 6 and len(params["bbox"]) == 2


def test_session_deepgrow_close_then_440(
    client: Client, spine_ct_path: Path, spine_ct: Volume, tmp_path: Path
) -> None:
    created = client.create_session(spine_ct_path, expiry=120)
    session_id = created.session_id
    assert created.session_info.expiry == 120
    assert client.session(session_id).name == session_id
    output = tmp_path / "grow.nii.gz"
    params = client.deepgrow(
        "deepgrow_2d", None, [BONE], [[5, 5, BONE[2]]], output=output, session_id=session_id
    )
    assert params["foreground"] == [BONE]
    grown = load_volume(output)
    assert grown.shape == spine_ct.shape
    slices = np.flatnonzero(np.asarray(grown.array).sum(axis=(0, 1)))
    assert slices.tolist() == [BONE[2]], "a 2D model fills the clicked slice only"
    assert np.asarray(grown.array)[tuple(BONE)] > 0
    assert client.session(session_id, touch=True).last_access_ts >= created.session_info.create_ts

    assert client.close_session(session_id) is True
    assert client.close_session(session_id) is False
    with pytest.raises(SessionExpired) as raised:
        client.deepgrow("deepgrow_2d", None, [BONE], output=output, session_id=session_id)
    assert raised.value.status == 440 and session_id in raised.value.message
    with pytest.raises(SessionNotFound):
        client.session(session_id)


def test_annotate_sends_extreme_points(client: Client, spine_ct_path: Path, tmp_path: Path) -> None:
    # No annotation model ships; the server dispatches on the model's type (spec 4.5), so the
    # segmentation model answers the DExtr3D call and the wire path is what is checked here.
    points = [[18, 21, 35], [33, 21, 35], [26, 13, 35], [26, 29, 35], [26, 21, 28], [26, 21, 42]]
    output = tmp_path / "annotation.nii.gz"
    params = client.annotate("spine_ct_vertebrae", spine_ct_path, points, output=output)
    assert "points" in params and output.is_file()


def test_mask2polygon_returns_one_list_per_slice(client: Client, tmp_path: Path) -> None:
    polygons = client.mask2polygon(binary_mask(tmp_path / "mask.nii.gz"))
    assert len(polygons) == 6
    assert [len(s) for s in polygons] == [0, 0, 1, 1, 0, 0]
    vertices = np.array(polygons[2][0])
    assert vertices[:, 0].min() == 4 and vertices[:, 0].max() == 7, "vertices are [j, i]"
    assert vertices[:, 1].min() == 5 and vertices[:, 1].max() == 9


def test_fixpolygon_moves_a_vertex_and_writes_the_mask(client: Client, tmp_path: Path) -> None:
    mask = binary_mask(tmp_path / "mask.nii.gz")
    polygons = client.mask2polygon(mask)
    params = {
        "poly": polygons,
        "dimension": 3,
        "slice_index": 2,
        "polygon_index": 0,
        "vertex_index": 0,
        "vertex_offset": [2, 2],
        "propagate_neighbor": 0,
    }
    output = tmp_path / "fixed.nii.gz"
    answer = client.fixpolygon(mask, params, output=output)
    moved = answer["poly"][2][0][0]
    assert moved == [polygons[2][0][0][0] + 2, polygons[2][0][0][1] + 2]
    assert answer["poly"][3] == polygons[3]
    assert load_volume(output).shape == (20, 16, 6)


def test_admin_install_patch_delete(client: Client, tmp_path: Path) -> None:
    source = zoo_archive_path("brain_mr_tissue")
    archive = tmp_path / "brain.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(source.rglob("*")):
            if file.is_file():
                out.write(file, file.relative_to(source).as_posix())
    entry = client.install_model("brain_copy", archive)
    assert entry.name == "brain_copy" and entry.labels == ["grey matter", "white matter"]
    assert "brain_copy" in [m.name for m in client.models()]

    config = client.model_config("brain_copy")
    assert config["type"] == "segmentation"
    assert client.patch_model("brain_copy", {**config, "description": "patched"}).description == (
        "patched"
    )
    assert client.model("brain_copy").description == "patched"

    assert client.delete_model("brain_copy").name == "brain_copy"
    with pytest.raises(ModelNotFound):
        client.model("brain_copy")
    with pytest.raises(ModelNotFound):
        client.delete_model("brain_copy")


def test_admin_install_from_config_and_weights(client: Client, tmp_path: Path) -> None:
    source = zoo_archive_path("brain_mr_tissue")
    config = json.loads((source / "config" / "config_aiaa.json").read_text())
    train = json.loads((source / "config" / "config_train.json").read_text())
    config_file = tmp_path / "config_aiaa.json"
    config_file.write_text(json.dumps({**config, "network_def": train["network_def"]}))
    entry = client.install_model_files("brain_files", config_file, source / "models" / "model.pt")
    assert entry.name == "brain_files" and entry.type == "segmentation"
    client.delete_model("brain_files")


def test_admin_with_wrong_or_no_token_raises_auth_error(server: str) -> None:
    for token in ("wrong-token", None):
        with Client(server, admin_token=token) as intruder, pytest.raises(AuthError) as raised:
            intruder.delete_model("deepgrow_2d")
        assert raised.value.status == 401
    with Client(server) as anyone:
        assert "deepgrow_2d" in [m.name for m in anyone.models()]


runner = CliRunner()


def test_cli_models(server: str) -> None:
    result = runner.invoke(app, ["client", "--server", server, "models"])
    assert result.exit_code == 0, result.output
    assert "spine_ct_vertebrae  segmentation" in result.stdout
    assert "labels: L2, L3, L4" in result.stdout
    assert "deepgrow_2d  deepgrow (2D)" in result.stdout


def test_cli_segment_writes_the_file(
    server: str, spine_ct_path: Path, spine_ct: Volume, tmp_path: Path
) -> None:
    output = tmp_path / "seg.nii.gz"
    result = runner.invoke(
        app,
        [
            *("client", "--server", server, "segment", str(spine_ct_path)),
            *("--model", "spine_ct_vertebrae", "-o", str(output)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {output} (labels: L2 L3 L4; ")
    assert "server: read" in result.stdout and "infer" in result.stdout
    assert load_volume(output).shape == spine_ct.shape


def test_cli_session_and_unknown_model(server: str, spine_ct_path: Path, tmp_path: Path) -> None:
    created = runner.invoke(
        app, ["client", "--server", server, "session", "create", str(spine_ct_path)]
    )
    assert created.exit_code == 0, created.output
    session_id = created.stdout.strip()
    info = runner.invoke(app, ["client", "--server", server, "session", "info", session_id])
    assert info.exit_code == 0 and json.loads(info.stdout)["name"] == session_id
    deleted = runner.invoke(app, ["client", "--server", server, "session", "delete", session_id])
    assert deleted.exit_code == 0 and session_id in deleted.stdout
    again = runner.invoke(app, ["client", "--server", server, "session", "delete", session_id])
    assert again.exit_code == 1 and isinstance(again.exception, SessionNotFound)
    missing = runner.invoke(
        app,
        [
            *("client", "--server", server, "segment", "--session", session_id),
            *("--model", "no_such_model", "-o", str(tmp_path / "never.nii.gz")),
        ],
    )
    assert missing.exit_code == 1 and isinstance(missing.exception, ModelNotFound)


def test_cli_error_is_one_red_line_and_status_1(server: str, tmp_path: Path) -> None:
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "carina",
            "client",
            "--server",
            server,
            "segment",
            "--session",
            "none",
            "--model",
            "no_such_model",
            "-o",
            str(tmp_path / "x.nii.gz"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert process.returncode == 1
    assert process.stderr.strip() == "error: model 'no_such_model' not found (HTTP 404)"
