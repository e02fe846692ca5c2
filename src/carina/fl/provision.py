"""``carina fl provision`` and ``carina fl poc``: startup kits with mutual TLS, and a real FLARE
server with its sites on this machine to try a job end to end before kits go to the hospitals.

Provisioning is FLARE's own (``nvflare provision``): a root CA, a certificate and key per server,
site and admin, signed start-up files. The POC starts the server and each site from their kits as
separate processes (each in its own process group), logs in with the admin kit over mutual TLS,
submits the archive's job, waits, downloads the server's result, installs the global model as
``carina fl simulate`` does, and shuts everything down, killing what did not stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carina.errors import ConfigError
from carina.fl.components import GLOBAL_MODEL
from carina.fl.job import JobSpec, write_job
from carina.fl.simulate import FLError, FLResult, install_result

HE_BUILDER = "nvflare.lighter.impl.he.HEBuilder"
SERVER_CONTEXT = "server_context.tenseal"
SITE_CONTEXT = "client_context.tenseal"


def provision(project: Path, workspace: Path) -> Path:
    """Run FLARE's provisioning for ``project``; return the folder holding the kits.

    Raises:
        ConfigError: the project file is missing or FLARE refused it (its message quoted).
    """
    from carina.fl.names import check_project

    if not project.is_file():
        raise ConfigError(project.name, "", "no such project file")
    check_project(project)
    tool = Path(sys.executable).parent / "nvflare"
    command = [str(tool), "provision", "-p", str(project), "-w", str(workspace), "--force"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        lines = [line.strip() for line in f"{done.stdout}\n{done.stderr}".splitlines()]
        said = [line for line in lines if line and not line.startswith(("Hint:", "Project yaml"))]
        detail = " ".join(said[-3:]) or f"exit {done.returncode}"
        raise ConfigError(project.name, "", f"provisioning failed: FLARE says: {detail[:600]}")
    produced = sorted(workspace.glob("*/prod_*"), key=lambda path: path.stat().st_mtime)
    if not produced:
        raise ConfigError(project.name, "", f"provisioning wrote no kits under {workspace}")
    return produced[-1]


def project_file(
    path: Path,
    *,
    name: str,
    sites: list[str],
    port: int,
    admin: str = "admin@carina.local",
    homomorphic: bool = False,
) -> Path:
    """Write a minimal project file: server on localhost:``port``, the sites, one admin; with
    ``homomorphic``, FLARE's HEBuilder adds TenSEAL contexts to the kits (the sites' with the
    secret key, the server's without)."""
    import yaml

    participants: list[dict[str, Any]] = [
        {"name": "localhost", "type": "server", "org": "carina", "fed_learn_port": port,
         "admin_port": port},
        *({"name": site, "type": "client", "org": "carina"} for site in sites),
        {"name": admin, "type": "admin", "org": "carina", "role": "project_admin"},
    ]  # fmt: skip
    project = {
        "api_version": 3,
        "name": name,
        "description": "Carina federated learning",
        "participants": participants,
        "builders": [
            {"path": "nvflare.lighter.impl.workspace.WorkspaceBuilder",
             "args": {"template_file": "master_template.yml"}},
            {"path": "nvflare.lighter.impl.static_file.StaticFileBuilder",
             "args": {"config_folder": "config"}},
            {"path": "nvflare.lighter.impl.cert.CertBuilder"},
            *([{"path": HE_BUILDER}] if homomorphic else []),
            {"path": "nvflare.lighter.impl.signature.SignatureBuilder"},
        ],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(project, sort_keys=False))
    return path


@dataclass(frozen=True)
class Kits:
    """The kits found in a provisioned folder: server, sites and admin."""

    server: Path
    sites: dict[str, Path]
    admin: Path

    @classmethod
    def find(cls, folder: Path) -> Kits:
        """Sort the kits of ``folder`` by the start-up file each holds.

        Raises:
            ConfigError: no server or admin kit.
        """
        servers = [p for p in folder.iterdir() if (p / "startup" / "fed_server.json").is_file()]
        admins = [p for p in folder.iterdir() if (p / "startup" / "fed_admin.json").is_file()]
        sites = {
            p.name: p for p in folder.iterdir() if (p / "startup" / "fed_client.json").is_file()
        }
        if len(servers) != 1 or not admins:
            raise ConfigError(folder.name, "", "not a folder of FLARE kits (server, sites, admin)")
        return cls(server=servers[0], sites=sites, admin=admins[0])


@dataclass
class PocResult(FLResult):
    """A POC run: FLResult plus the job's id and final status."""

    job_id: str = ""
    status: str = ""


def _start(kit: Path, module: str, config: str, extra: list[str], env: dict[str, str]) -> Any:
    """Start one FLARE process from its kit, in its own session, its output in the kit's log."""
    command = [
        sys.executable, "-u", "-m", module, "-m", str(kit), "-s", config,
        "--set", "secure_train=true", "config_folder=config", *extra,
    ]  # fmt: skip
    with (kit / "carina_poc.log").open("ab") as log:
        return subprocess.Popen(
            command, cwd=kit, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def run_poc(
    spec: JobSpec,
    kits_dir: Path,
    *,
    data_dir: Path,
    timeout: float = 3600,
    progress: Callable[[str], None] | None = None,
) -> PocResult:
    """Run ``spec`` on a real server and sites started from ``kits_dir`` (module docstring).

    Raises:
        ConfigError: the kits lack a site the job names, or homomorphic encryption is asked of
            kits provisioned without FLARE's HEBuilder.
        FLError: the job did not finish completed (its status and the sites' reasons quoted),
            or ``timeout`` passed; the archive is unchanged.
    """
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    say = progress or (lambda _line: None)
    kits = Kits.find(kits_dir)
    missing = [site for site in spec.sites if site not in kits.sites]
    if missing:
        raise ConfigError(kits_dir.name, "", f"no kit for site {', '.join(missing)}")
    context = _check_encryption(kits, spec) if spec.homomorphic else None
    spec.python = sys.executable
    started = time.time()
    processes = _start_all(kits, spec, data_dir)
    session = None
    try:
        session = _login(new_secure_session, kits.admin, deadline=time.time() + 120)
        while len(session.get_connected_client_list()) < len(spec.sites):
            if time.time() - started > 180:
                raise FLError("the sites did not connect to the server within 3 minutes")
            time.sleep(1)
        say(f"server and {len(spec.sites)} sites connected over mutual TLS")
        with tempfile.TemporaryDirectory(prefix="carina-fl-poc-") as scratch:
            job_dir = write_job(spec, Path(scratch))
            job_id = session.submit_job(str(job_dir))
            say(f"job {job_id} submitted")
            session.wait_for_job(job_id, timeout=timeout, poll_interval=2.0)
            status = str(session.get_job_status(job_id))
            result_dir = Path(session.download_job_result(job_id))
        server = _result_workspace(result_dir)
        if "COMPLETED" not in status or not (server / GLOBAL_MODEL).is_file():
            reasons = _site_reasons([kits.sites[s] for s in spec.sites], job_id)
            raise FLError(f"job {job_id} ended {status}" + (f": {reasons}" if reasons else ""))
        return install_result(
            PocResult, spec, server, data_dir, started=started, workspace=server,
            context=context, job_id=job_id, status=status,
        )  # fmt: skip
    finally:
        if session is not None:
            with contextlib.suppress(Exception):  # the processes are killed below anyway
                session.shutdown("all")
        _stop(processes)


def _start_all(kits: Kits, spec: JobSpec, data_dir: Path) -> list[Any]:
    """The FLARE server and every site of the job, each from its kit."""
    env = dict(os.environ, CARINA_DATA_DIR=str(data_dir))
    if spec.threads:
        env["OMP_NUM_THREADS"] = str(spec.threads)
    org = ["org=carina"]
    processes = [
        _start(kits.server, "nvflare.private.fed.app.server.server_train", "fed_server.json",
               org, env)
    ]  # fmt: skip
    for site in spec.sites:
        processes.append(
            _start(kits.sites[site], "nvflare.private.fed.app.client.client_train",
                   "fed_client.json", [f"uid={site}", *org], env)
        )  # fmt: skip
    return processes


def _check_encryption(kits: Kits, spec: JobSpec) -> Path:
    """The TenSEAL context the POC decrypts the result with (the first site's: this machine holds
    every kit); every kit of the run must hold its context."""
    lacking = [
        kit.name
        for kit, name in [
            (kits.server, SERVER_CONTEXT),
            *((kits.sites[site], SITE_CONTEXT) for site in spec.sites),
        ]
        if not (kit / "startup" / name).is_file()
    ]
    if lacking:
        raise ConfigError(
            kits.server.parent.name,
            "",
            f"homomorphic encryption needs kits provisioned with {HE_BUILDER} (add it before "
            "the SignatureBuilder in the project file); "
            f"no TenSEAL context in {', '.join(lacking)}",
        )
    return kits.sites[next(iter(spec.sites))] / "startup" / SITE_CONTEXT


def _login(new_session: Any, admin: Path, *, deadline: float) -> Any:
    """Log in as the admin kit's user once the server accepts connections."""
    user = json.loads((admin / "startup" / "fed_admin.json").read_text())["admin"]["username"]
    while True:
        try:
            return new_session(user, str(admin), timeout=10.0)
        except Exception:
            if time.time() > deadline:
                raise FLError("could not log in to the FLARE server within 2 minutes") from None
            time.sleep(2)


def _result_workspace(result_dir: Path) -> Path:
    """The server's run folder inside a downloaded job result."""
    for candidate in [result_dir / "workspace", *result_dir.rglob("workspace")]:
        if (candidate / "metrics").is_dir() or (candidate / GLOBAL_MODEL).is_file():
            return candidate
    return result_dir / "workspace"


def _site_reasons(site_kits: list[Path], job_id: str) -> str:
    from carina.fl.client import ERROR_MARKER

    reasons = []
    for kit in site_kits:
        for log in [kit / job_id / "log.txt", kit / "log.txt"]:
            if log.is_file():
                for line in log.read_text(errors="replace").splitlines():
                    if ERROR_MARKER in line:
                        reasons.append(line.split(ERROR_MARKER, 1)[1].strip())
    return "; ".join(dict.fromkeys(reasons))


def _stop(processes: list[Any]) -> None:
    """Wait a little for a clean exit, then kill each process tree."""
    import psutil

    tree: list[Any] = []
    for process in processes:
        try:
            root = psutil.Process(process.pid)
            tree += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    _gone, alive = psutil.wait_procs(tree, timeout=20)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=10)
    for process in processes:
        process.wait(timeout=10)  # reap them
