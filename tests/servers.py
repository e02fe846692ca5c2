"""Real ``carina serve`` processes for tests: a free port, its own process group, a readiness
wait, and a stop by signal to the group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ADMIN_TOKEN = "test-admin-token"


def dead_pid() -> int:
    """The pid of a process that has ended (for work folders whose owner is gone)."""
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()
    return finished.pid


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
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


def start_server(
    workspace: Path,
    *,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    tls: bool = False,
) -> ServerProcess:
    """Start ``carina serve`` on a free port and wait until ``/health/ready`` answers 200.

    ``args`` go to ``carina serve``; ``tls`` says they make it serve HTTPS (checked unverified).
    """
    port = free_port()
    log = workspace.parent / f"serve-{port}.log"
    environment = {
        **os.environ,
        "CARINA_ADMIN_TOKEN": ADMIN_TOKEN,
        "OMP_NUM_THREADS": "1",
        "CARINA_PRELOAD_MODELS": "false",
        **(env or {}),
    }
    environment.pop("CARINA_API_TOKEN", None)
    command = [sys.executable, "-m", "carina", "serve", "--workspace", str(workspace)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    scheme = "https" if tls else "http"
    server = ServerProcess(process, f"{scheme}://127.0.0.1:{port}", port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"carina serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=2, verify=False).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError("carina serve did not become ready in 60 s")


def postgres_binaries() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them off the PATH)."""
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    folders = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return folders[0] if folders else None


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust authentication, its own group)."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then kill the group if it lingers."""
        ServerProcess(self.process, self.url, 0, Path()).stop(signal.SIGINT, timeout=30)


def start_postgres(root: Path, database: str = "carina") -> PostgresServer:
    """``initdb`` a cluster under ``root`` and start ``postgres`` on a free port, as the
    ``postgres`` user when running as root (``initdb`` refuses root); create ``database``."""
    import psycopg

    binaries = postgres_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (make test installs Debian's postgresql)")
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    subprocess.run(
        [*prefix, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True, capture_output=True, timeout=120, cwd=root,
    )  # fmt: skip
    port = free_port()
    with (root / "server.log").open("ab") as log:
        process = subprocess.Popen(
            [*prefix, str(binaries / "postgres"), "-D", str(data), "-p", str(port),
             "-k", str(root), "-h", "127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
        )  # fmt: skip
    deadline = time.time() + 60
    while True:
        try:
            connection = psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
            )
            break
        except psycopg.OperationalError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError((root / "server.log").read_text()[-2000:]) from None
            time.sleep(0.5)
    with connection:
        connection.execute(f"CREATE DATABASE {database}")
    return PostgresServer(process, f"postgresql://postgres@127.0.0.1:{port}/{database}")
