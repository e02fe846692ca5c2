"""Server fixtures: a workspace with real models, an in-process client, real server processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from carina.zoo import install_archive

ADMIN_TOKEN = "test-admin-token"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "archives"


def untrained_archive(name: str, target: Path, *, seed: int = 0) -> Path:
    """An example archive with freshly initialised weights: exercises the serving path of an
    interactive model type that the zoo does not ship yet (its output is not meant to be good)."""
    from carina.archive import Archive
    from carina.engine.network import build_network

    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("models", "eval"))
    torch.manual_seed(seed)
    network = build_network(Archive.open(target).serving_config().resolved)
    (target / "models").mkdir()
    torch.save(network.state_dict(), target / "models" / "model.pt")
    return target


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``models/`` folder: two zoo models and untrained DExtr3D / DeepGrow 3D archives."""
    workspace = tmp_path_factory.mktemp("store")
    for name in ("spine_ct_vertebrae", "deepgrow_2d"):
        install_archive(name, workspace)
    untrained_archive("annotation_dextr3d", workspace / "models" / "annotation_dextr3d")
    untrained_archive("deepgrow_3d", workspace / "models" / "deepgrow_3d")
    return workspace / "models"


@pytest.fixture
def workspace(tmp_path: Path, model_store: Path) -> Path:
    """A fresh workspace holding a copy of the model store."""
    folder = tmp_path / "workspace"
    shutil.copytree(model_store, folder / "models")
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """A ``carina serve`` process on 127.0.0.1 (its own process group)."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 30) -> int:
        """Signal the process group and wait; kill it if it does not exit."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return int(self.process.returncode)


def start_server(workspace: Path, *, env: dict[str, str] | None = None) -> ServerProcess:
    """Start ``carina serve`` on a free port and wait until ``/health/ready`` answers 200."""
    port = free_port()
    log = workspace.parent / f"serve-{port}.log"
    environment = {
        **os.environ,
        "CARINA_ADMIN_TOKEN": ADMIN_TOKEN,
        "OMP_NUM_THREADS": "1",
        "CARINA_PRELOAD_MODELS": "false",
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "carina",
                "serve",
                "--workspace",
                str(workspace),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"carina serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError("carina serve did not become ready in 60 s")


@pytest.fixture
def server(workspace: Path) -> Iterator[ServerProcess]:
    """One real server on a fresh workspace, stopped at the end."""
    running = start_server(workspace)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, model_store: Path
) -> Iterator[ServerProcess]:
    """One real server for a whole test module (tests must not change its models)."""
    folder = tmp_path_factory.mktemp("shared") / "workspace"
    shutil.copytree(model_store, folder / "models")
    running = start_server(folder)
    try:
        yield running
    finally:
        running.stop()


def params_json(value: object) -> str:
    return json.dumps(value)
