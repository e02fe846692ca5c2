"""MONAI Bundles as the Model Zoo writes them (imports, $ expressions, scripts/, LoadImaged,
Invertd, SaveImaged) run as their authors wrote them once the operator trusts them with
``carina model add``; an upload stays data unless the server allows code; what a bundle lacks is
named before it is installed."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from carina.archive import Archive
from carina.cli.main import app
from carina.errors import ArchiveError, ConfigError
from carina.settings import Settings
from carina.zoo.servable import add_model, check_model
from tests.engine.zoo_bundles import deepedit_bundle, segmentation_bundle, swin_bundle
from tests.server.wire import parse_multipart_poco

ADMIN = {"Authorization": "Bearer admin-secret"}


def zipped(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return target


def label_of(data: bytes) -> nib.Nifti1Image:
    """The label map of an answer: a NIfTI file, or the file part of an AIAA multipart answer."""
    if data.startswith(b"--"):
        _, file_part = parse_multipart_poco(data)
        assert file_part is not None
        data = file_part
    return nib.Nifti1Image.from_stream(io.BytesIO(gzip.decompress(data)))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three bundles as the zoo writes them: a folder, and two zips."""
    folder = tmp_path_factory.mktemp("bundles")
    segmentation_bundle(folder / "spine_seg")
    zipped(deepedit_bundle(folder / "spine_deepedit"), folder / "spine_deepedit.zip")
    zipped(swin_bundle(folder / "spine_swin"), folder / "spine_swin.zip")
    return folder


def test_model_add_trusts_a_bundles_code_and_both_apis_serve_it(
    bundles: Path, tmp_path: Path, spine_ct_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    runner = CliRunner()
    added = runner.invoke(
        app, ["model", "add", str(bundles / "spine_seg"), "--workspace", str(workspace)]
    )
    assert added.exit_code == 0, added.output
    assert "segmentation model (bundle, from bundle), labels L2, L3, L4" in added.output
    assert "license: Apache License" in added.output
    assert "needs (installed): numpy" in added.output
    assert "runs its own code: scripts/: a folder of code" in added.output
    for name in ("spine_deepedit", "spine_swin"):
        zip_path = str(bundles / f"{name}.zip")
        result = runner.invoke(app, ["model", "add", zip_path, "--workspace", str(workspace)])
        assert result.exit_code == 0, result.output
    again = runner.invoke(
        app, ["model", "add", str(bundles / "spine_seg"), "--workspace", str(workspace)]
    )
    assert again.exit_code != 0 and "installed already: pass --replace" in str(again.exception)
    listed = runner.invoke(app, ["model", "list", "--workspace", str(workspace), "--json"])
    cards = {c["name"]: c for c in json.loads(listed.output)["models"]}
    assert {n: (c["kind"], c["source"]) for n, c in cards.items()} == {
        "spine_seg": ("segmentation", "bundle"),
        "spine_deepedit": ("deepedit", "bundle"),
        "spine_swin": ("segmentation", "bundle"),
    }
    assert not (workspace / "models" / "spine_seg" / "eval").exists()

    image = spine_ct_path.read_bytes()
    source = nib.load(spine_ct_path)
    with TestClient(create_app_for(workspace)) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()}
        assert models["spine_swin"]["license"].startswith("Apache License")
        assert models["spine_seg"]["source"] == "bundle"
        info = client.get("/info/").json()["models"]
        assert info["spine_deepedit"]["type"] == "deepedit"
        for name in ("spine_seg", "spine_swin", "spine_deepedit"):
            aiaa = client.post(
                f"/v1/segmentation?model={name}",
                files={"image": ("ct.nii.gz", image)},
                data={"params": "{}"},
            )
            assert aiaa.status_code == 200, aiaa.text
            label = label_of(aiaa.content)
            assert label.shape == source.shape
            np.testing.assert_allclose(label.affine, source.affine, atol=1e-4)
            answer = client.post(
                f"/infer/{name}",
                params={"output": "image"},
                files={"file": ("ct.nii.gz", image)},
                data={"params": '{"result_extension": ".nii.gz"}'},
            )
            assert answer.status_code == 200, answer.text
            assert np.array_equal(label_of(answer.content).get_fdata(), label.get_fdata())
        # DeepEdit: the clicks under the label's name (what the plugins send) change the answer
        click = [[int(n) // 2 for n in source.shape]]
        clicked = client.post(
            "/infer/spine_deepedit",
            params={"output": "image"},
            files={"file": ("ct.nii.gz", image)},
            data={"params": json.dumps({"vertebra": click, "background": [[2, 2, 2]],
                                        "result_extension": ".nii.gz"})},
        )  # fmt: skip
        assert clicked.status_code == 200, clicked.text
        aiaa_clicked = client.post(
            "/v1/deepgrow?model=spine_deepedit",
            files={"datapoint": ("ct.nii.gz", image)},
            data={"params": json.dumps({"foreground": click, "background": [[2, 2, 2]]})},
        )
        assert aiaa_clicked.status_code == 200, aiaa_clicked.text
    with_clicks = label_of(clicked.content).get_fdata()
    assert np.array_equal(with_clicks, label_of(aiaa_clicked.content).get_fdata())
    assert not np.array_equal(with_clicks, label.get_fdata())


def create_app_for(workspace: Path, **settings: object) -> object:
    from carina.server import create_app

    return create_app(Settings(workspace=workspace, preload_models=False, **settings))  # type: ignore[arg-type]


def test_each_bundles_scripts_package_is_its_own(tmp_path: Path) -> None:
    """Two bundles each with a ``scripts`` package: each builds with its own."""
    first = segmentation_bundle(tmp_path / "first")
    second = segmentation_bundle(tmp_path / "second")
    marks = [
        Archive.open(root).serving_pipeline().resolved.instantiate("mark")
        for root in (first, second, first)
    ]
    assert marks == ["first", "second", "first"]


def test_an_upload_with_code_is_refused_unless_the_server_allows_it(
    bundles: Path, tmp_path: Path, spine_ct_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    image = spine_ct_path.read_bytes()
    data = (bundles / "spine_swin.zip").read_bytes()
    for allowed, status in ((False, 400), (True, 200)):
        app_ = create_app_for(workspace, admin_token="admin-secret", allow_code_uploads=allowed)
        with TestClient(app_) as client:  # type: ignore[arg-type]
            answer = client.put("/admin/model/swin", files={"data": ("m.zip", data)}, headers=ADMIN)
            assert answer.status_code == status, answer.text
            if not allowed:
                assert "contains code" in answer.text and "carina model add" in answer.text
                assert not (workspace / "models" / "swin").exists()
            else:
                assert client.get("/v1/models").json()[0]["source"] == "upload"
    # a server started without the setting does not run the code it once allowed
    with TestClient(create_app_for(workspace)) as client:  # type: ignore[arg-type]
        answer = client.post("/v1/segmentation?model=swin", files={"image": ("ct.nii.gz", image)})
        assert answer.status_code == 400 and "Python expression" in answer.text


def test_what_a_bundle_lacks_is_named_before_it_is_installed(
    tmp_path: Path, spine_ct_path: Path
) -> None:
    models = tmp_path / "workspace" / "models"
    needy = segmentation_bundle(tmp_path / "needy")
    inference = json.loads((needy / "configs" / "inference.json").read_text())
    inference["imports"].append("$import carina_no_such_package")
    (needy / "configs" / "inference.json").write_text(json.dumps(inference))
    with pytest.raises(
        ConfigError, match=r"imports\.4: .*needs the package 'carina_no_such_package'"
    ):
        add_model(needy, models)
    assert not (models / "needy").exists()

    broken_script = segmentation_bundle(tmp_path / "broken_script")
    (broken_script / "scripts" / "transforms.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(
        ConfigError, match=r"imports\.3: 'import scripts' fails: RuntimeError: boom"
    ):
        add_model(broken_script, models)

    misfit = segmentation_bundle(tmp_path / "misfit")
    inference = json.loads((misfit / "configs" / "inference.json").read_text())
    inference["network_def"]["channels"] = [8, 16, 32, 128]
    (misfit / "configs" / "inference.json").write_text(json.dumps(inference))
    with pytest.raises(ArchiveError, match=r"model\.pt.*(size mismatch|do not fit)"):
        add_model(misfit, models)
    # installed by hand (copied), `carina model check` names the same problem
    shutil.copytree(misfit, models / "misfit")
    checked = CliRunner().invoke(
        app, ["model", "check", "misfit", "--workspace", str(models.parent)]
    )
    assert checked.exit_code != 0
    with pytest.raises(ArchiveError, match=r"size mismatch|do not fit"):
        check_model(models / "misfit", name="misfit")
    assert [p.name for p in models.iterdir() if not p.name.startswith(".")] == ["misfit"]

    # copied in by hand, the server names what is missing once it tries to load them, in
    # /health too, and the others serve on
    shutil.copytree(needy, models / "needy")
    segmentation_bundle(models / "fine")
    image = spine_ct_path.read_bytes()
    with TestClient(create_app_for(models.parent)) as client:  # type: ignore[arg-type]
        for name, status, reason in (
            ("needy", 400, "needs the package 'carina_no_such_package'"),
            ("misfit", 400, "the weights do not fit the network"),
            ("needy", 404, "needs the package 'carina_no_such_package'"),
            ("fine", 200, ""),
        ):
            answer = client.post(
                f"/v1/segmentation?model={name}", files={"image": ("ct.nii.gz", image)}
            )
            assert answer.status_code == status and reason in answer.text, answer.text
        broken = client.get("/health").json()["broken"]
        assert "carina_no_such_package" in broken["needy"]
        assert "models/misfit" in broken["misfit"] and "do not fit" in broken["misfit"]
        assert [m["name"] for m in client.get("/v1/models").json()] == ["fine"]
