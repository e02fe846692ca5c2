"""Bad input gets a 4xx with the spec's error body, never a 500, and changes nothing stored."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from carina.server import create_app
from carina.settings import Settings
from tests.server.conftest import two_channel_archive
from tests.servers import ADMIN_TOKEN, ServerProcess

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def client(workspace: Path) -> Iterator[TestClient]:
    settings = Settings(
        workspace=workspace,
        admin_token=ADMIN_TOKEN,
        max_upload_bytes=4_000_000,
        max_image_bytes=200_000_000,
        preload_models=False,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def snapshot(workspace: Path) -> dict[str, int]:
    """Every file under models/ and sessions/ with its size (what must not change)."""
    found = {}
    for folder in ("models", "sessions"):
        for path in sorted((workspace / folder).rglob("*")):
            if path.is_file():
                found[str(path.relative_to(workspace))] = path.stat().st_size
    return found


def error_of(response: object) -> tuple[int, str, str]:
    status = response.status_code  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "success"} and body["success"] is False
    assert isinstance(body["error"]["message"], list)
    return status, body["error"]["type"], body["error"]["message"][0]


def upload(data: bytes, name: str = "/home/u/tmp.nii.gz") -> dict[str, tuple[str, bytes]]:
    return {"datapoint": (name, data)}


def test_corrupt_and_truncated_images(
    client: TestClient, workspace: Path, spine_ct_path: Path
) -> None:
    before = snapshot(workspace)
    good = spine_ct_path.read_bytes()
    cases = {
        "random bytes": os.urandom(5000),
        "truncated gzip": good[: len(good) // 2],
        "empty": b"",
    }
    for what, data in cases.items():
        response = client.post(
            "/v1/segmentation?model=spine_ct_vertebrae", files=upload(data), data={"params": "{}"}
        )
        status, _kind, message = error_of(response)
        assert status == 400, (what, message)
        assert "tmp.nii.gz" in message or "image" in message.lower(), message
        assert "/home/u" not in message and str(workspace) not in message
    assert snapshot(workspace) == before


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ("not json", "params"),
        ("[1, 2]", "params"),
        ('{"foreground": "[[1, 2]]"}', "foreground"),
        ('{"foreground": [[1, 2, 3]], "spatial_size": "abc"}', "spatial_size"),
        ('{"foreground": [[1000, 2, 3]]}', "outside"),
        ('{"foreground": [[1, 2, 3]], "current_point": [[1, 2, 3], [4, 5, 6]]}', "current_point"),
    ],
)
def test_wrong_deepgrow_params(
    client: TestClient, spine_ct_path: Path, params: str, needle: str
) -> None:
    response = client.post(
        "/v1/deepgrow?model=deepgrow_3d",
        files=upload(spine_ct_path.read_bytes()),
        data={"params": params},
    )
    status, _, message = error_of(response)
    assert status == 400 and needle in message, message


def test_too_few_extreme_points(client: TestClient, spine_ct_path: Path) -> None:
    response = client.post(
        "/v1/dextr3d?model=annotation_dextr3d",
        files=upload(spine_ct_path.read_bytes()),
        data={"params": json.dumps({"points": [[1, 2, 3]] * 5})},
    )
    status, _kind, message = error_of(response)
    assert status == 400 and "6" in message, message


def test_unknown_model_route_and_method(client: TestClient) -> None:
    assert error_of(client.get("/v1/models?model=nope"))[:2] == (404, "ModelNotFound")
    assert error_of(client.get("/v2/nothing"))[0] == 404
    assert error_of(client.delete("/v1/models"))[0] == 405
    assert error_of(client.get("/session/../../etc/passwd"))[0] == 404
    assert error_of(client.get("/session/not-a-uuid"))[0] == 404


def test_oversized_upload_is_413(client: TestClient, workspace: Path) -> None:
    before = snapshot(workspace)
    response = client.put("/session/", files={"image": ("big.nii", b"\0" * 5_000_000)})
    assert error_of(response)[:2] == (413, "PayloadTooLargeError")
    assert snapshot(workspace) == before


def test_admin_needs_the_token(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
        response = client.delete("/admin/model/spine_ct_vertebrae", headers=headers)
        assert error_of(response)[:2] == (401, "AuthError")
    assert client.get("/v1/models?model=spine_ct_vertebrae").status_code == 200


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def archive_entries(workspace: Path, name: str = "spine_ct_vertebrae") -> dict[str, bytes]:
    root = workspace / "models" / name
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }


def test_hostile_archive_uploads_change_nothing(client: TestClient, workspace: Path) -> None:
    entries = archive_entries(workspace)
    hostile = {
        "zip slip": zip_bytes({**entries, "../../evil.txt": b"x"}),
        "absolute path": zip_bytes({**entries, "/tmp/evil.txt": b"x"}),
        "zip bomb": zip_bytes({**entries, "models/bomb.bin": b"\0" * 250_000_000}),
        "not a zip": b"PK\x03\x04 but not really",
        "code": zip_bytes({**entries, "custom/net.py": b"import os"}),
        "no config": zip_bytes({"models/model.pt": entries["models/model.pt"]}),
        "wrong weights": zip_bytes({**entries, "models/model.pt": b"\0" * 100}),
    }
    before = snapshot(workspace)
    for what, data in hostile.items():
        for name in ("spine_ct_vertebrae", "newcomer"):
            response = client.put(
                f"/admin/model/{name}", files={"data": ("m.zip", data)}, headers=ADMIN
            )
            status, _, message = error_of(response)
            assert status in (400, 413), (what, status, message)
            assert str(workspace) not in message
        assert snapshot(workspace) == before, what
    assert not (workspace.parent / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()
    assert not [p for p in (workspace / "models").iterdir() if p.name.startswith(".")]


def test_tensorflow_model_and_bad_names(client: TestClient, workspace: Path) -> None:
    config = (
        workspace / "models" / "spine_ct_vertebrae" / "config" / "config_aiaa.json"
    ).read_bytes()
    response = client.put(
        "/admin/model/spleen",
        files={"config": ("config_aiaa.json", config), "data": ("model.trt.pb", b"tf")},
        headers=ADMIN,
    )
    status, _, message = error_of(response)
    assert status == 400 and "TensorFlow" in message
    for name in ("..", ".hidden", "a%2F..%2Fb", "x" * 200):
        response = client.delete(f"/admin/model/{name}", headers=ADMIN)
        assert response.status_code in (400, 404), name


def test_admin_install_patch_delete_round_trip(client: TestClient, workspace: Path) -> None:
    data = zip_bytes(archive_entries(workspace))
    response = client.put("/admin/model/copy", files={"data": ("m.zip", data)}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["labels"] == ["L2", "L3", "L4"]
    config = client.get("/admin/model/copy", headers=ADMIN).json()
    config["description"] = "patched"
    assert client.patch("/admin/model/copy", json=config, headers=ADMIN).status_code == 200
    assert client.get("/v1/models?model=copy").json()["description"] == "patched"
    config["network_def"] = {"_target_": "UNet", "spatial_dims": 3}
    status, _, _ = error_of(client.patch("/admin/model/copy", json=config, headers=ADMIN))
    assert status == 400
    assert client.get("/v1/models?model=copy").json()["description"] == "patched"
    assert client.delete("/admin/model/copy", headers=ADMIN).status_code == 200
    assert not (workspace / "models" / "copy").exists()


def test_half_finished_upload(server: ServerProcess, workspace: Path) -> None:
    """A client that promises more bytes than it sends and hangs up creates nothing."""
    head = (
        "PUT /session/ HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: multipart/form-data; boundary=b0\r\nContent-Length: 100000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            head.encode()
            + b'--b0\r\nContent-Disposition: form-data; name="image"; filename="a.nii"\r\n\r\n'
            + b"\0" * 1000
        )
    time.sleep(0.5)
    import httpx

    assert httpx.get(f"{server.url}/health/ready").status_code == 200
    assert not [p for p in (workspace / "sessions").iterdir() if not p.name.startswith(".")]


def test_admin_token_file_is_private(tmp_path: Path) -> None:
    from carina.server.services.tokens import admin_token

    first = admin_token(tmp_path, None)
    assert first.generated and first.path is not None
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    again = admin_token(tmp_path, None)
    assert not again.generated and again.value == first.value
    assert admin_token(tmp_path, "given").value == "given"


def test_optional_features_and_empty_guidance(client: TestClient, spine_ct_path: Path) -> None:
    dicom = {"dicom": {"server_address": "127.0.0.1", "server_port": 11112, "ae_title": "X"}}
    status, kind, _ = error_of(client.put("/session/?expiry=0", json=dicom))
    assert (status, kind) == (501, "NotSupportedError")
    ngc = {"path": "nvidia/med/clara_ct_seg_spleen_amp", "version": "1"}
    assert error_of(client.put("/admin/model/spleen", json=ngc, headers=ADMIN))[0] == 501
    # DeepGrow with no foreground click: nothing to grow, an empty mask (not an error).
    answer = client.post(
        "/v1/deepgrow?model=deepgrow_3d&output=json",
        files=upload(spine_ct_path.read_bytes()),
        data={"params": '{"foreground": [], "background": [[1, 2, 3]]}'},
    )
    assert answer.status_code == 200 and answer.json()["foreground"] == []


def test_a_model_that_does_not_fit_the_image(
    client: TestClient, workspace: Path, spine_ct_path: Path
) -> None:
    """A two-channel model given a one-channel CT: 422 naming the model, the step and the cause,
    through both APIs; the traceback stays in the server log."""
    two_channel_archive(workspace / "models" / "spine_ct_vertebrae", workspace / "models")
    image = spine_ct_path.read_bytes()
    answers = [
        client.post(
            "/v1/segmentation?model=two_channel", files=upload(image), data={"params": "{}"}
        ),
        client.post("/infer/two_channel", files={"file": ("ct.nii.gz", image)}),
    ]
    for answer in answers:
        status, kind, message = error_of(answer)
        assert (status, kind) == (422, "ModelRunError"), message
        assert message.startswith("two_channel: the model failed on this image"), message
        assert "channels" in message and "Traceback" not in message
