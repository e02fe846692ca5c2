"""The CPU image, built and run for real with podman, without Docker Hub and without a Docker
engine: a Debian base made by mmdebstrap, ``podman build --isolation=chroot`` of
deploy/docker/Dockerfile.cpu from the repository, then the container started as a user starts it
(the workspace as a volume, the zoo model installed by the entry point), as its non-root user with
a read-only root filesystem: its HEALTHCHECK passes, one segmentation goes through the published
port, and nothing it made is left (its own podman storage under the test's folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
MODEL = "spine_ct_vertebrae"
TOOLS = ("podman", "mmdebstrap", "runc")
#: Build and start within these many seconds (a cold build installs torch and MONAI).
BUILD_TIMEOUT = 1500
START_TIMEOUT = 240

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS) or os.geteuid() != 0,
    reason="needs root with podman, mmdebstrap and runc (make test installs them from Debian)",
)


@dataclass(frozen=True)
class Podman:
    """podman with its own storage, runtime and configuration under one folder."""

    folder: Path

    def command(self, *arguments: str) -> list[str]:
        return [
            "podman",
            "--root", str(self.folder / "storage"),
            "--runroot", str(self.folder / "run"),
            "--runtime", "runc",
            "--cgroup-manager", "cgroupfs",
            *arguments,
        ]  # fmt: skip

    def __call__(
        self, *arguments: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "CONTAINERS_CONF": str(self.folder / "containers.conf")}
        done = subprocess.run(
            self.command(*arguments),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(arguments)}: {done.stderr[-3000:]}")
        return done


def _pip_setting(name: str) -> str | None:
    """What pip on this machine is configured with (``global.cert``, ``global.find-links``)."""
    listed = subprocess.run(
        ["python", "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.split(".", 1)[-1] == name and key.startswith(("global.", ":env:.")):
            return value.strip().strip("'\"")
    return None


def _build_arguments(podman: Podman) -> list[str]:
    """Build arguments that let pip inside the build reach what pip here reaches: the certificate
    bundle the registries are checked against, and the wheel folder holding the CPU torch."""
    arguments = ["--build-arg", f"BASE_IMAGE={BASE}"]
    cert, wheels = _pip_setting("cert"), _pip_setting("find-links")
    if cert and Path(cert).is_file():
        arguments += ["-v", f"{cert}:/host-ca.crt:ro", "--build-arg", "PIP_CERT=/host-ca.crt"]
    if wheels and Path(wheels).is_dir():
        arguments += [
            "-v",
            f"{wheels}:/host-wheels:ro",
            "--build-arg",
            "PIP_FIND_LINKS=/host-wheels",
        ]
        arguments += ["--build-arg", "TORCH_INDEX="]  # the CPU wheel is there
    return arguments


BASE = "localhost/carina-test-base:bookworm"
IMAGE = "localhost/carina-test:cpu"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """The image built from the repository, in a podman storage of its own (removed after)."""
    folder = tmp_path_factory.mktemp("podman")
    (folder / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\n'
    )
    tool = Podman(folder)
    try:
        rootfs = folder / "rootfs.tar"
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=minbase",
             "--include=ca-certificates,python3,python3-venv,passwd", "bookworm", str(rootfs)],
            check=True, timeout=600, capture_output=True,
        )  # fmt: skip
        tool("import", str(rootfs), BASE, timeout=300)
        rootfs.unlink()
        tool(
            # docker format: an OCI image drops HEALTHCHECK
            "build", "--format=docker", "--isolation=chroot", "--network=host", "--layers=false",
            *_build_arguments(tool),
            "-f", str(ROOT / "deploy" / "docker" / "Dockerfile.cpu"), "-t", IMAGE, str(ROOT),
            timeout=BUILD_TIMEOUT,
        )  # fmt: skip
        yield tool
    finally:
        tool("rm", "--all", "--force", check=False)
        tool("system", "reset", "--force", check=False, timeout=300)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Container:
    name: str
    url: str


@pytest.fixture(scope="module")
def container(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The image started as deploy/docker/compose.yaml starts it: a workspace volume, the zoo
    model installed by the entry point, the port on the loopback; and a read-only root
    filesystem."""
    workspace = tmp_path_factory.mktemp("image-workspace")
    os.chown(workspace, 10001, 10001)  # the image's user owns what it writes
    port = free_port()
    name = f"carina-test-{port}"
    podman(
        "run", "--detach", "--name", name, "--read-only",
        "--publish", f"127.0.0.1:{port}:5000",
        "--volume", f"{workspace}:/workspace",
        "--env", f"CARINA_ZOO={MODEL}", "--env", "OMP_NUM_THREADS=1",
        # as deploy/docker/compose.yaml: published on the loopback only, no sign-in
        "--env", "CARINA_INSECURE_NO_AUTH=true",
        IMAGE,
    )  # fmt: skip
    try:
        _wait_healthy(podman, name)
        yield Container(name, f"http://127.0.0.1:{port}")
    finally:
        podman("rm", "--force", name, check=False)


def _wait_healthy(podman: Podman, name: str) -> None:
    """Run the image's HEALTHCHECK until it passes (the entry point installs the model first)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if podman("healthcheck", "run", name, check=False).returncode == 0:
            return
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        if not state.get("Running"):
            logs = podman("logs", name, check=False)
            raise AssertionError(f"the container stopped: {(logs.stdout + logs.stderr)[-3000:]}")
        time.sleep(3)
    logs = podman("logs", name, check=False)
    raise AssertionError(f"not healthy in {START_TIMEOUT} s: {(logs.stdout + logs.stderr)[-3000:]}")


def test_the_image_serves_one_segmentation(container: Container, spine_ct_path: Path) -> None:
    from carina.client.multipart import read_answer
    from carina.io import load_volume

    models = httpx.get(f"{container.url}/v1/models", timeout=30).json()
    assert MODEL in {entry["name"] for entry in models}
    answer = httpx.post(
        f"{container.url}/v1/segmentation?model={MODEL}",
        files={"datapoint": ("ct.nii.gz", spine_ct_path.read_bytes())},
        data={"params": "{}"},
        timeout=300,
    )
    assert answer.status_code == 200, answer.text
    result = read_answer(answer.content, answer.headers["content-type"])
    assert result.file is not None and result.filename
    labels = _labels(result.file, result.filename)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert labels.shape == load_volume(spine_ct_path).shape


def _labels(data: bytes, filename: str) -> np.ndarray:
    import tempfile

    from carina.io import load_volume

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(filename).name
        path.write_bytes(data)
        return np.asarray(load_volume(path).array)


def test_it_runs_as_its_user_on_a_read_only_root(podman: Podman, container: Container) -> None:
    assert podman("exec", container.name, "id", "-u").stdout.strip() == "10001"
    refused = podman("exec", container.name, "touch", "/opt/carina/written", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    kept = podman("exec", container.name, "ls", "/workspace/models").stdout.split()
    assert MODEL in kept
