"""The container files, tested without a Docker engine: lint, references, structure, and the
entry point run in the test venv (plain HTTP, a mounted certificate, a self-signed one)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from carina.server.run import self_signed_certificate
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = [DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.gpu"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_structure_and_references(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    stages = [args for keyword, args in steps if keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage: build, then a runtime without the build tools"
    for keyword, args in steps:
        if keyword == "COPY" and "--from=" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and not users[-1].startswith("0")
    assert ("EXPOSE", "5000") in steps
    health = next(args for keyword, args in steps if keyword == "HEALTHCHECK")
    assert "carina.server.healthcheck" in health
    assert ("ENTRYPOINT", '["carina-entrypoint"]') in steps
    text = dockerfile.read_text()
    if dockerfile.name.endswith("gpu"):
        assert "nvidia/cuda:" in text and "runtime" in text and "whl/cu" in text
    else:
        assert "whl/cpu" in text
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK)


def test_compose_file() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    server = compose["services"]["carina"]
    build = server["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKERFILES[0]
    assert "workspace:/workspace" in server["volumes"] and "workspace" in compose["volumes"]
    assert ":?" in server["environment"]["CARINA_ADMIN_TOKEN"], "no default admin token"
    gpu = compose["services"]["carina-gpu"]
    assert gpu["build"]["dockerfile"].endswith("Dockerfile.gpu")
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


@contextmanager
def entrypoint(tmp_path: Path, **env: str) -> Iterator[int]:
    """Run deploy/docker/entrypoint.sh with the test venv on PATH; yields the port."""
    port = free_port()
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "CARINA_WORKSPACE": str(tmp_path / "workspace"),
        "CARINA_HOST": "127.0.0.1",
        "CARINA_PORT": str(port),
        "CARINA_ADMIN_TOKEN": "t",
        "CARINA_PRELOAD_MODELS": "false",
        "CARINA_TLS_CERT": str(tmp_path / "none.crt"),
        **env,
    }
    process = subprocess.Popen(
        ["sh", str(DOCKER / "entrypoint.sh")],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not healthy(port, environment):
            assert process.poll() is None, "the entry point exited"
            assert time.monotonic() < deadline, "no /health/live within 90 s"
            time.sleep(0.3)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def healthy(port: int, environment: dict[str, str]) -> bool:
    """The container's HEALTHCHECK command, run as Docker would."""
    check = subprocess.run(
        [sys.executable, "-m", "carina.server.healthcheck"],
        env={**environment, "CARINA_PORT": str(port)},
        timeout=30,
    )
    return check.returncode == 0


@pytest.mark.integration
def test_entrypoint_installs_the_zoo_and_serves_http(tmp_path: Path) -> None:
    with entrypoint(tmp_path, CARINA_ZOO="deepgrow_2d") as port:
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [m["name"] for m in models] == ["deepgrow_2d"]
    assert (tmp_path / "workspace" / "models" / "deepgrow_2d" / "manifest.json").is_file()


@pytest.mark.integration
def test_entrypoint_serves_tls(tmp_path: Path) -> None:
    with entrypoint(tmp_path, CARINA_SSL_SELF_SIGNED="true") as port:
        assert httpx.get(f"https://127.0.0.1:{port}/health/live", verify=False).status_code == 200
    mounted = self_signed_certificate(tmp_path / "certs", hostname="localhost")
    with entrypoint(
        tmp_path, CARINA_TLS_CERT=str(mounted.certfile), CARINA_TLS_KEY=str(mounted.keyfile)
    ) as port:
        answer = httpx.get(
            f"https://localhost:{port}/health/ready",
            verify=ssl.create_default_context(cafile=str(mounted.certfile)),
        )
        assert answer.status_code == 200
