"""A new model kind is one module and its registration: the toy threshold kind, served."""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from carina.client.multipart import read_answer
from carina.kinds import KINDS
from carina.server import create_app
from carina.settings import Settings
from tests.kinds.toy_kind import THRESHOLD

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

LEVEL = 200


def toy_archive(folder: Path, **config: object) -> None:
    (folder / "config").mkdir(parents=True)
    content = {"type": "threshold", "labels": ["bright"], **config}
    (folder / "config" / "config_aiaa.json").write_text(json.dumps(content))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    toy_archive(tmp_path / "models" / "bright", meta_data={"threshold": LEVEL})
    toy_archive(tmp_path / "models" / "levelless")
    toy_archive(tmp_path / "models" / "unlabelled", labels="bright")
    return tmp_path


def client_for(workspace: Path, **kinds: object) -> TestClient:
    app = create_app(Settings(workspace=workspace, preload_models=False), **kinds)  # type: ignore[arg-type]
    return TestClient(app)


@pytest.fixture
def client(workspace: Path) -> Iterator[TestClient]:
    with client_for(workspace, kinds={**KINDS, "threshold": THRESHOLD}) as test_client:
        yield test_client


def test_the_registered_kind_is_listed_and_served(client: TestClient, spine_ct_path: Path) -> None:
    models = client.get("/v1/models").json()
    assert [(m["name"], m["type"], m["labels"]) for m in models] == [
        ("bright", "threshold", ["bright"])
    ]
    with spine_ct_path.open("rb") as image:
        answer = client.post(
            "/v1/inference",
            params={"model": "bright"},
            files={"params": (None, "{}"), "image": ("ct.nii.gz", image)},
        )
    assert answer.status_code == 200, answer.text
    parsed = read_answer(answer.content, answer.headers["content-type"])
    assert parsed.file is not None
    result = nib.Nifti1Image.from_bytes(gzip.decompress(parsed.file))
    ct = nib.load(spine_ct_path)
    expected = np.asarray(ct.dataobj) > LEVEL
    assert np.array_equal(np.asarray(result.dataobj) > 0, expected)
    assert np.allclose(result.affine, ct.affine)
    # A kind without guidance answers the mask's extreme points and box, as segmentation does.
    low = np.argwhere(expected).min(0).tolist()
    assert parsed.params["bbox"][0] == low and len(parsed.params["points"]) == 6


def test_a_config_the_kind_refuses_is_reported_not_listed(client: TestClient) -> None:
    health = client.get("/health/ready").json()
    assert health["models"] == 1
    assert health["broken"] == {
        "levelless": "models/levelless/config/config_aiaa.json: meta_data.threshold: "
        "a number is required",
        "unlabelled": "models/unlabelled/config/config_aiaa.json: labels: "
        "Input should be a valid list",
    }
    missing = client.post("/v1/inference", params={"model": "levelless"})
    assert missing.status_code == 404 and "meta_data.threshold" in missing.text


def test_without_its_registration_the_kind_is_not_served(workspace: Path) -> None:
    with client_for(workspace) as plain:
        assert plain.get("/v1/models").json() == []
        broken = plain.get("/health").json()["broken"]
        assert plain.get("/v1/models", params={"model": "bright"}).status_code == 404
    assert broken["bright"] == (
        "models/bright/config/config_aiaa.json: type: 'threshold' is not a kind this server "
        "runs (segmentation, others, deepgrow, annotation, deepedit)"
    )
