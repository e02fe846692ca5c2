"""Real server processes: two replicas on one workspace act as one service; a full queue
answers 503; health answers while inferences run; SIGTERM lets in-flight requests finish."""

from __future__ import annotations

import io
import json
import shutil
import signal
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from carina.io import Volume, save_volume
from tests.servers import ADMIN_TOKEN, ServerProcess, start_server

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def eventually(check: Callable[[], bool], *, within: float = 2.0) -> bool:
    """Poll ``check`` until it holds or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def model_names(server: ServerProcess) -> list[str]:
    return [m["name"] for m in httpx.get(f"{server.url}/v1/models").json()]


def archive_zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.rglob("*"):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


@pytest.fixture
def big_ct(spine_ct: Volume, tmp_path: Path) -> Path:
    """The shipped CT at twice its size in-plane: an inference of seconds on one thread."""
    array = np.asarray(spine_ct.array)
    for axis in range(2):
        array = np.repeat(array, 2, axis=axis)
    affine = spine_ct.affine.copy()
    affine[:3, :2] /= 2
    path = tmp_path / "big_ct.nii.gz"
    save_volume(Volume(array, affine), path)
    return path


def segment(server: ServerProcess, image: Path) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/segmentation?model=spine_ct_vertebrae",
        files={"image": ("ct.nii.gz", image.read_bytes())},
        data={"params": "{}"},
        timeout=300,
    )


def test_two_replicas_share_models_and_sessions(
    workspace: Path, tmp_path: Path, spine_ct_path: Path
) -> None:
    first = start_server(workspace)
    second = start_server(workspace)
    try:
        # A model installed through one replica is served by the other, without a restart.
        data = archive_zip(workspace / "models" / "deepgrow_2d")
        answer = httpx.put(
            f"{first.url}/admin/model/clicks",
            files={"data": ("clicks.zip", data)},
            headers=ADMIN,
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        assert eventually(lambda: "clicks" in model_names(second))
        # A session created through one is used through the other.
        created = httpx.put(
            f"{second.url}/session/?expiry=600",
            files={"image": ("ct.nii.gz", spine_ct_path.read_bytes())},
            timeout=60,
        )
        session = created.json()["session_id"]
        assert eventually(lambda: httpx.get(f"{first.url}/session/{session}").status_code == 200)
        click = {"foreground": [[36, 23, 36]], "background": []}
        used = httpx.post(
            f"{first.url}/v1/deepgrow?model=clicks&session_id={session}",
            data={"params": json.dumps(click)},
            timeout=120,
        )
        assert used.status_code == 200, used.text
        # Deleting through one removes it for both, with its image.
        assert httpx.delete(f"{first.url}/session/{session}").status_code == 200
        assert not (workspace / "sessions" / session).exists()
        assert eventually(lambda: httpx.get(f"{second.url}/session/{session}").status_code == 404)
        gone = httpx.post(
            f"{second.url}/v1/deepgrow?model=clicks&session_id={session}",
            data={"params": json.dumps(click)},
        )
        assert gone.status_code == 440
        assert httpx.delete(f"{second.url}/admin/model/clicks", headers=ADMIN).status_code == 200
        assert eventually(lambda: "clicks" not in model_names(first))
        # Replacing a model through one makes the other reload it.
        shutil.copytree(workspace / "models" / "deepgrow_2d", tmp_path / "replacement")
        config_path = tmp_path / "replacement" / "config" / "config_aiaa.json"
        config = json.loads(config_path.read_text())
        config["description"] = "replaced"
        answer = httpx.patch(
            f"{first.url}/admin/model/deepgrow_2d", json=config, headers=ADMIN, timeout=120
        )
        assert answer.status_code == 200, answer.text
        assert eventually(
            lambda: (
                httpx.get(f"{second.url}/v1/models?model=deepgrow_2d").json()["description"]
                == "replaced"
            )
        )
    finally:
        first.stop()
        second.stop()


def test_session_expiry_deletes_the_image(workspace: Path, spine_ct_path: Path) -> None:
    server = start_server(workspace, env={"CARINA_SESSION_PURGE_INTERVAL": "0.2"})
    try:
        created = httpx.put(
            f"{server.url}/session/?expiry=1",
            files={"image": ("ct.nii.gz", spine_ct_path.read_bytes())},
            timeout=60,
        )
        session = created.json()["session_id"]
        assert (workspace / "sessions" / session).is_dir()
        assert eventually(lambda: not (workspace / "sessions" / session).exists(), within=5)
        assert httpx.get(f"{server.url}/session/{session}").status_code == 404
    finally:
        server.stop()


def test_full_queue_is_503_and_health_stays_live(workspace: Path, big_ct: Path) -> None:
    server = start_server(
        workspace, env={"CARINA_INFERENCE_WORKERS": "1", "CARINA_QUEUE_LIMIT": "1"}
    )
    try:
        assert segment(server, big_ct).status_code == 200  # loads the model
        answers: list[httpx.Response] = []
        threads = [
            threading.Thread(target=lambda: answers.append(segment(server, big_ct)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        live = httpx.get(f"{server.url}/health/live", timeout=5)
        assert live.status_code == 200
        for thread in threads:
            thread.join()
        codes = sorted(a.status_code for a in answers)
        assert codes.count(200) >= 2 and 503 in codes, codes
        for busy in (a for a in answers if a.status_code == 503):
            assert int(busy.headers["retry-after"]) >= 1
            assert busy.json()["error"]["type"] == "ServerBusyError"
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "carina_inference_queue_depth" in metrics and "carina_models_loaded 1.0" in metrics
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_requests(workspace: Path, big_ct: Path) -> None:
    server = start_server(workspace)
    assert segment(server, big_ct).status_code == 200  # loads the model
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(segment(server, big_ct).status_code))
    thread.start()
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    thread.join(120)
    assert results == [200], "the in-flight request finished"
    # uvicorn exits by re-raising the signal once in-flight requests are done.
    assert server.process.wait(60) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health/live")
