"""The security and reliability probe of issue 21, one test per defect it found (numbered as in
the issue), against the in-process app or a real ``carina serve``.

Items 15 (TLS profile) and 16 (the schema tells the truth) are tested in ``test_tls.py`` and
``test_schema.py``; the upload test matrix over every config file and code vector is in
``tests/archive/test_security.py``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import signal
import socket
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from carina.server import create_app
from carina.settings import Settings
from tests.server.test_bad_input import archive_entries, error_of, snapshot, zip_bytes
from tests.servers import ADMIN_TOKEN, dead_pid, start_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
INFERENCE_ROUTES = [
    "/v1/segmentation?model=spine_ct_vertebrae",
    "/v1/inference?model=spine_ct_vertebrae",
    "/v1/dextr3d?model=annotation_dextr3d",
    "/v1/deepgrow?model=deepgrow_3d",
    "/v1/inference?model=deepgrow_2d",
    "/v1/mask2polygon",
    "/v1/fixpolygon",
]


def make_client(workspace: Path, **overrides: Any) -> TestClient:
    settings = Settings(
        workspace=workspace,
        admin_token=ADMIN_TOKEN,
        max_upload_bytes=50_000_000,
        max_image_bytes=200_000_000,
        preload_models=False,
        **overrides,
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(workspace: Path) -> Iterator[TestClient]:
    with make_client(workspace) as test_client:
        yield test_client


def nifti(array: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    return gzip.compress(nib.Nifti1Image(array, np.eye(4) if affine is None else affine).to_bytes())


def upload_archive(client: TestClient, name: str, entries: dict[str, bytes]) -> Any:
    return client.put(
        f"/admin/model/{name}", files={"data": ("m.zip", zip_bytes(entries))}, headers=ADMIN
    )


def with_config(entries: dict[str, bytes], file: str, change: Any) -> dict[str, bytes]:
    content = json.loads(entries.get(f"config/{file}", b"{}"))
    change(content)
    return {**entries, f"config/{file}": json.dumps(content).encode()}


# -- uploads that run code or write files --------------------------------------------------------


def test_01_expression_in_environment_json_never_runs(
    client: TestClient, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    entries = archive_entries(workspace)
    entries = with_config(
        entries, "environment.json", lambda c: c.update(CMD="$open('PWNED', 'w').close() or 4")
    )
    entries = with_config(
        entries, "config_aiaa.json", lambda c: c["inferer"].update(sw_batch_size="@CMD")
    )
    before = snapshot(workspace)
    status, kind, message = error_of(upload_archive(client, "evil", entries))
    assert (status, kind) == (400, "UntrustedCodeError")
    assert "config/environment.json: CMD: Python expression" in message
    assert not (tmp_path / "PWNED").exists() and snapshot(workspace) == before


def test_01_uploaded_archive_is_checked_again_whenever_it_is_loaded(
    client: TestClient, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Preloading at start (and any later load) runs the upload check again: code written into
    an uploaded archive afterwards never runs; an operator's own folder stays trusted."""
    from carina.server.services.registry import UPLOAD_MARKER

    monkeypatch.chdir(tmp_path)
    assert upload_archive(client, "uploaded", archive_entries(workspace)).status_code == 200
    root = workspace / "models" / "uploaded"
    assert (root / UPLOAD_MARKER).is_file()
    environment = root / "config" / "environment.json"
    environment.write_text(json.dumps({"CMD": "$open('PWNED', 'w').close() or 4"}))
    aiaa = json.loads((root / "config" / "config_aiaa.json").read_text())
    aiaa["inferer"]["sw_batch_size"] = "@CMD"
    (root / "config" / "config_aiaa.json").write_text(json.dumps(aiaa))
    response = client.post(
        "/v1/segmentation?model=uploaded", files={"image": ("a.nii.gz", nifti(np.zeros((8,) * 3)))}
    )
    status, kind, _ = error_of(response)
    assert (status, kind) == (400, "UntrustedCodeError")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("target", ["monai.networks.utils.save_state", "save_state"])
def test_02_file_writing_target_refused_at_upload_and_patch(
    client: TestClient, workspace: Path, tmp_path: Path, target: str
) -> None:
    written = tmp_path / "written.pt"
    component = {"_target_": target, "src": {}, "path": str(written)}
    entries = with_config(
        archive_entries(workspace),
        "config_aiaa.json",
        lambda c: c["postprocessing"].append(component),
    )
    status, _, message = error_of(upload_archive(client, "evil", entries))
    assert status == 400 and "is not an allowed component" in message
    config = client.get("/admin/model/spine_ct_vertebrae", headers=ADMIN).json()
    config["postprocessing"].append(component)
    status, _, _ = error_of(
        client.patch("/admin/model/spine_ct_vertebrae", json=config, headers=ADMIN)
    )
    assert status == 400 and not written.exists()
    assert (
        "save_state"
        not in (workspace / "models/spine_ct_vertebrae/config/config_aiaa.json").read_text()
    )


def test_03_debug_mode_is_refused(client: TestClient, workspace: Path) -> None:
    entries = with_config(
        archive_entries(workspace),
        "config_aiaa.json",
        lambda c: c["inferer"].update(_mode_="debug"),
    )
    status, _, message = error_of(upload_archive(client, "evil", entries))
    assert status == 400 and "_mode_ 'debug'" in message


# -- 500s for bad input --------------------------------------------------------------------------


def corrupt_gzip() -> bytes:
    data = bytearray(nifti(np.arange(20**3, dtype=np.int16).reshape((20,) * 3)))
    for index in range(40, len(data) - 10, 7):
        data[index] ^= 0x5A
    return bytes(data)


def test_04_corrupt_compressed_nifti_is_400_on_every_endpoint(client: TestClient) -> None:
    data = corrupt_gzip()
    params = {"points": [[1, 1, 1]] * 6, "foreground": [[1, 1, 1]], "poly": [[[1, 1]]]}
    for route in INFERENCE_ROUTES:
        response = client.post(
            route, files={"image": ("a.nii.gz", data)}, data={"params": json.dumps(params)}
        )
        status, _, message = error_of(response)
        assert status == 400 and "corrupt" in message, (route, message)
    status, _, _ = error_of(client.put("/session/", files={"image": ("a.nii.gz", data)}))
    assert status == 400


def test_05_deeply_nested_json_is_400(client: TestClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(
        "/v1/segmentation?model=spine_ct_vertebrae",
        files={"image": ("a.nii.gz", nifti(np.zeros((8,) * 3)))},
        data={"params": deep},
    )
    status, _, message = error_of(response)
    assert status == 400 and "nested deeper" in message
    status, _, message = error_of(
        client.patch(
            "/admin/model/spine_ct_vertebrae",
            content=b'{"a":' + deep.encode() + b"}",
            headers={**ADMIN, "Content-Type": "application/json"},
        )
    )
    assert status == 400 and "nested deeper" in message


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((8, 8, 8, 3), np.int16), ((8, 8, 8, 1, 2), np.int16), ((8, 8, 8), np.complex64)],
    ids=["4d", "5d", "complex"],
)
def test_06_images_no_model_can_take_are_refused_by_sessions(
    client: TestClient, workspace: Path, shape: tuple[int, ...], dtype: Any
) -> None:
    before = snapshot(workspace)
    data = nifti(np.zeros(shape, dtype=dtype))
    status, _, message = error_of(client.put("/session/", files={"image": ("a.nii.gz", data)}))
    assert status == 400, message
    assert snapshot(workspace) == before


def test_06_rgb_and_2d_nifti_are_refused_by_3d_models(client: TestClient) -> None:
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    image = nib.Nifti1Image(rgb, np.eye(4))
    image.header.set_data_dtype(rgb.dtype)
    cases = {"rgb": gzip.compress(image.to_bytes()), "2d": nifti(np.zeros((16, 16), np.int16))}
    for what, data in cases.items():
        response = client.post(
            "/v1/segmentation?model=spine_ct_vertebrae", files={"image": ("a.nii.gz", data)}
        )
        status, _, message = error_of(response)
        assert status == 400, (what, message)


@pytest.mark.parametrize("defect", ["zero spacing", "infinite spacing", "NaN position"])
def test_07_dicom_with_unusable_geometry_is_refused(
    client: TestClient, ct_series: Path, defect: str
) -> None:
    import pydicom

    files = sorted(ct_series.iterdir())[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, path in enumerate(files):
            dataset = pydicom.dcmread(path)
            with warnings.catch_warnings():  # pydicom warns of what we plant on purpose
                warnings.simplefilter("ignore")
                if defect == "zero spacing":
                    dataset.PixelSpacing = [0, 0]
                elif defect == "infinite spacing":
                    dataset.PixelSpacing = ["inf", "1"]
                elif index == 2:
                    dataset.ImagePositionPatient = ["nan", "0", "0"]
                out = io.BytesIO()
                dataset.save_as(out)
            archive.writestr(path.name, out.getvalue())
    response = client.put("/session/", files={"image": ("series.zip", buffer.getvalue())})
    status, _, message = error_of(response)
    assert status == 400, message


def test_08_huge_point_and_short_spatial_size_are_400(client: TestClient) -> None:
    image = {"image": ("a.nii.gz", nifti(np.zeros((16,) * 3, np.int16)))}
    cases = {
        "10**400": ("dextr3d?model=annotation_dextr3d", '{"points": [[' + "1" * 401 + ",1,1]]}"),
        "short spatial_size": (
            "deepgrow?model=deepgrow_3d",
            json.dumps({"foreground": [[8, 8, 8]], "spatial_size": [32, 32]}),
        ),
    }
    for what, (route, params) in cases.items():
        status, _, message = error_of(
            client.post(f"/v1/{route}", files=image, data={"params": params})
        )
        assert status == 400, (what, message)


def test_08_weights_that_do_not_fit_and_non_torchscript_are_400(
    client: TestClient, workspace: Path
) -> None:
    config = (workspace / "models/spine_ct_vertebrae/config/config_aiaa.json").read_bytes()
    train = json.loads(
        (workspace / "models/spine_ct_vertebrae/config/config_train.json").read_text()
    )
    config_with_net = json.loads(config)
    config_with_net["network_def"] = train["network_def"]
    weights = io.BytesIO()
    torch.save({"layer.weight": torch.zeros(3, 3)}, weights)
    before = snapshot(workspace)
    for what, (name, data) in {
        "weights that do not fit": ("model.pt", weights.getvalue()),
        "not TorchScript": ("model.ts", b"PK\x03\x04 not a torchscript file"),
    }.items():
        response = client.put(
            "/admin/model/newcomer",
            files={
                "config": ("config_aiaa.json", json.dumps(config_with_net)),
                "data": (name, data),
            },
            headers=ADMIN,
        )
        status, _, message = error_of(response)
        assert status == 400, (what, message)
    assert snapshot(workspace) == before


# -- unbounded work ------------------------------------------------------------------------------


def test_09_spacing_and_spatial_size_are_bounded(workspace: Path) -> None:
    tiny = nifti(np.zeros((16,) * 3, np.int16), np.diag([0.001, 0.001, 0.001, 1]))
    fine = nifti(np.zeros((16,) * 3, np.int16), np.diag([0.2, 0.2, 0.2, 1]))
    click = json.dumps({"foreground": [[8, 8, 8]]})
    with make_client(workspace, max_work_bytes=256 * 2**20) as client:
        status, _, message = error_of(client.put("/session/", files={"image": ("a.nii.gz", tiny)}))
        assert status == 400 and "voxel size" in message
        huge = json.dumps({"foreground": [[8, 8, 8]], "spatial_size": [100_000] * 3})
        for params in (huge, json.dumps({"foreground": [[8, 8, 8]], "spatial_size": [4000] * 3})):
            response = client.post(
                "/v1/deepgrow?model=deepgrow_3d",
                files={"image": ("a.nii.gz", fine)},
                data={"params": params},
            )
            status, _, message = error_of(response)
            assert status in (400, 413), message  # a size refused as such, or as too much work
        response = client.post(
            "/v1/deepgrow?model=deepgrow_3d",
            files={"image": ("a.nii.gz", fine)},
            data={"params": click},
        )
        status, _, message = error_of(response)
        assert status == 413 and "working memory" in message


def test_10_a_timed_out_job_frees_its_worker_within_a_second() -> None:
    import asyncio

    from carina.errors import InferenceTimeoutError
    from carina.limits import check_cancelled
    from carina.server.services.runner import InferenceRunner

    stopped = threading.Event()

    def endless() -> None:
        try:
            while True:
                check_cancelled()
                time.sleep(0.01)
        finally:
            stopped.set()

    async def scenario() -> float:
        runner = InferenceRunner(workers=1, queue_limit=1, timeout=0.3)
        with pytest.raises(InferenceTimeoutError):
            await runner.run(endless)
        start = time.perf_counter()
        assert await runner.run(lambda: 42) == 42  # the only worker took it at once
        runner.shutdown()
        return time.perf_counter() - start

    assert asyncio.run(scenario()) < 1.0
    assert stopped.is_set()


def test_10_gzip_trailing_data_and_mask_tracing_are_bounded(workspace: Path) -> None:
    head = nifti(np.zeros((8,) * 3, np.uint8))
    bomb = head + gzip.compress(b"\0" * 50_000_000)
    mask = nifti(np.ones((200, 200, 200), np.uint8))
    with make_client(workspace, max_work_bytes=32 * 2**20) as client:
        start = time.perf_counter()
        status, _, message = error_of(
            client.post("/v1/mask2polygon", files={"image": ("m.nii.gz", bomb)})
        )
        assert status == 400 and "after the voxels" in message
        assert time.perf_counter() - start < 5
        status, _, message = error_of(
            client.post("/v1/mask2polygon", files={"image": ("m.nii.gz", mask)})
        )
        assert status == 413 and "working memory" in message


@pytest.mark.integration
def test_11_stalled_bodies_time_out_and_clients_are_rate_limited(workspace: Path) -> None:
    env = {"CARINA_BODY_TIMEOUT": "1", "CARINA_MAX_CLIENT_REQUESTS": "20"}
    server = start_server(workspace, env=env)
    try:
        head = (
            "PUT /session/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            "Content-Type: multipart/form-data; boundary=b0\r\n\r\n--b0\r\n"
        )
        stalled = []
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.settimeout(5)
            sock.sendall(head.encode())
            stalled.append(sock)
            time.sleep(0.005)
        answers = [sock.recv(200) for sock in stalled]
        assert sum(a.startswith(b"HTTP/1.1 429") for a in answers) >= 20
        assert sum(a.startswith(b"HTTP/1.1 408") for a in answers) >= 15, answers
        for sock in stalled:
            sock.close()
        start = time.perf_counter()
        assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 200
        assert time.perf_counter() - start < 1.0
    finally:
        server.stop()
    limited = start_server(workspace, env={"CARINA_RATE_LIMIT": "1"})
    try:
        statuses = [httpx.get(f"{limited.url}/v1/models").status_code for _ in range(8)]
        assert statuses[:4] == [200] * 4 and statuses[-1] == 429
        refused = httpx.get(f"{limited.url}/v1/models")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert httpx.get(f"{limited.url}/health/ready").status_code == 200
    finally:
        limited.stop()


# -- leftovers and leaks -------------------------------------------------------------------------


def test_12_leftovers_of_killed_processes_are_swept_and_the_previous_model_serves(
    workspace: Path,
) -> None:
    from carina.files import owner_tag

    host = owner_tag().split("@")[1]
    tag = f"@{host}@{dead_pid()}@"
    models, sessions = workspace / "models", workspace / "sessions"
    sessions.mkdir(exist_ok=True)
    shutil.move(models / "spine_ct_vertebrae", models / f".spine_ct_vertebrae.old{tag}123")
    leftovers = [
        models / f".spine_ct_vertebrae.upload{tag}abc",
        models / f".spine_ct_vertebrae.install{tag}abc",
        models / f".deepgrow_2d.deleted{tag}abc",
        sessions / f".0d5b2f76-3c33-4c1e-9a43-2f4b4c0a1e7d.new{tag}",
    ]
    for folder in leftovers:
        (folder / "big").mkdir(parents=True)
    with make_client(workspace) as client:
        assert client.get("/v1/models?model=spine_ct_vertebrae").status_code == 200
    assert not [p for p in models.iterdir() if p.name.startswith(".")]
    assert not [p for p in sessions.iterdir() if p.name.startswith(".")]


@pytest.mark.integration
@pytest.mark.parametrize("delay", [0.05, 0.6, 1.5])
def test_12_kill_9_during_an_upload_and_a_session_then_restart(
    workspace: Path, tmp_path: Path, spine_ct_path: Path, delay: float
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    entries = archive_entries(workspace)
    data = zip_bytes({**entries, "docs/padding.bin": os.urandom(30_000_000)})
    server = start_server(workspace, env=env)
    threads = [
        threading.Thread(
            target=_quietly,
            args=(server.url + "/admin/model/spine_ct_vertebrae", "data", data, ADMIN),
        ),
        threading.Thread(
            target=_quietly,
            args=(server.url + "/session/", "image", spine_ct_path.read_bytes(), {}),
        ),
    ]
    for thread in threads:
        thread.start()
    time.sleep(delay)
    server.stop(signal.SIGKILL)
    for thread in threads:
        thread.join()
    restarted = start_server(workspace, env=env)
    try:
        time.sleep(0.5)  # the first sweep runs as the server starts
        assert httpx.get(f"{restarted.url}/v1/models?model=spine_ct_vertebrae").status_code == 200
        hidden = [
            p.name
            for folder in ("models", "sessions")
            for p in (workspace / folder).iterdir()
            if p.name.startswith(".")
        ]
        assert hidden == []
        assert [p.name for p in temp.iterdir()] == [
            p.name for p in temp.iterdir() if f"@{restarted.process.pid}@" in p.name
        ]
    finally:
        restarted.stop()


def _quietly(url: str, field: str, data: bytes, headers: dict[str, str]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.put(url, files={field: ("a.bin", data)}, headers=headers, timeout=30)


def test_13_logs_need_the_admin_token_and_show_no_traceback(
    client: TestClient, workspace: Path
) -> None:
    import logging

    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        logging.getLogger("carina.server").error("failed", exc_info=exc)
    assert client.get("/logs/").status_code == 401
    response = client.get("/logs/?lines=1000", headers=ADMIN)
    assert response.status_code == 200
    assert "exception_type" in response.text and "RuntimeError" in response.text
    assert "Traceback" not in response.text and ".py" not in response.text
    log_file = next((workspace / "logs").glob("*.log"))
    assert "Traceback" in log_file.read_text()


def test_14_long_session_id_is_not_echoed_whole(client: TestClient) -> None:
    long_id = "a" * 10_000
    for response in (
        client.get(f"/session/{long_id}"),
        client.post(
            f"/v1/segmentation?model=spine_ct_vertebrae&session_id={long_id}",
            data={"params": "{}"},
        ),
    ):
        _, _, message = error_of(response)
        assert len(message) < 200 and "a" * 100 not in message


def test_16_a_model_deleted_through_another_replica_is_404_not_400(workspace: Path) -> None:
    """Two replicas on one workspace: one deletes while the other is about to load."""
    from carina.errors import ModelNotFound
    from carina.server.services.registry import ModelRegistry

    replicas = [
        ModelRegistry(workspace / "models", memory_budget=2**30, device="cpu", max_bytes=2**30)
        for _ in range(2)
    ]
    assert replicas[0].model("spine_ct_vertebrae").name == "spine_ct_vertebrae"
    replicas[1].delete("spine_ct_vertebrae")
    for call in (
        lambda: replicas[0]._load("spine_ct_vertebrae"),
        lambda: replicas[0].runner("spine_ct_vertebrae"),
        lambda: replicas[0].config("spine_ct_vertebrae"),
    ):
        with pytest.raises(ModelNotFound):
            call()
