"""``carina fl simulate``: run a federated job in FLARE's simulator on this machine, then install
the global model into the archive.

The simulator and every site process run in their own process group; on a timeout or Ctrl-C the
whole tree is killed (the simulator puts its workers in new sessions, so the tree is walked rather
than one group killed). Nothing in the archive changes unless every round succeeded: then
``models/model.pt`` is replaced atomically (the previous one kept as ``models/model_before_fl.pt``)
and ``eval/fl_metrics.json`` and TensorBoard logs (``logs/fl/``) record every round and site.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from carina.errors import CarinaError, ConfigError
from carina.fl.client import ERROR_MARKER
from carina.fl.components import GLOBAL_MODEL
from carina.fl.job import JobSpec, write_job

Progress = Callable[[dict[str, Any]], None]
_Result = TypeVar("_Result", bound="FLResult")


class FLError(CarinaError):
    """A federated job failed; the message names the site and its reason when known."""


@dataclass
class FLResult:
    """The outcome of a federated run.

    Attributes:
        rounds: per round, each site's metrics and the aggregate (as FLARE recorded them).
        final: site -> mean Dice of the final global model on that site's validation cases.
        mean_dice: the mean of ``final``.
        weights: the archive's new ``models/model.pt``.
        previous: where the replaced weights were kept (None when there were none).
        seconds: wall time of the run, simulator start to model installed.
        bytes_per_round: model payload sent per round (every site down and up).
        workspace: the simulator's workspace (logs of the server and each site).
    """

    rounds: list[dict[str, Any]]
    final: dict[str, float]
    mean_dice: float
    weights: Path
    previous: Path | None
    seconds: float
    bytes_per_round: int
    workspace: Path
    extra: dict[str, Any] = field(default_factory=dict)


def simulate(
    spec: JobSpec,
    *,
    workspace: Path,
    data_dir: Path,
    timeout: float = 6 * 3600,
    progress: Progress | None = None,
) -> FLResult:
    """Run ``spec`` in the simulator under ``workspace``; install the result (module docstring).

    Raises:
        ConfigError: homomorphic encryption was asked for (it needs provisioned kits).
        FLError: a site failed (its reason quoted), the simulator failed, or ``timeout`` passed;
            the archive is unchanged.
    """
    if spec.homomorphic:
        raise ConfigError(
            "--he",
            "",
            "FLARE's simulator has no encryption keys: run encrypted jobs with `carina fl poc` "
            "on kits provisioned with HEBuilder",
        )
    spec.python = sys.executable
    started = time.time()
    if workspace.exists():
        shutil.rmtree(workspace)
    job_dir = write_job(spec, workspace / "jobs")
    run_dir = workspace / "simulation"
    command = [
        sys.executable, "-m", "nvflare.private.fed.app.simulator.simulator", str(job_dir),
        "-w", str(run_dir), "-c", ",".join(spec.sites), "-t", str(len(spec.sites)),
    ]  # fmt: skip
    env = dict(os.environ, CARINA_DATA_DIR=str(data_dir))
    if spec.threads:
        env["OMP_NUM_THREADS"] = str(spec.threads)
    code = _run_tree(command, run_dir, env, timeout, spec, progress)
    server = run_dir / "server" / "simulate_job"
    rounds = read_rounds(server)
    if code != 0 or len(rounds) < spec.rounds or not (server / GLOBAL_MODEL).is_file():
        raise FLError(failure_reason(run_dir, code, len(rounds), spec.rounds))
    return install_result(FLResult, spec, server, data_dir, started=started, workspace=workspace)


def install_result(
    kind: type[_Result],
    spec: JobSpec,
    server: Path,
    data_dir: Path,
    *,
    started: float,
    workspace: Path,
    context: Path | None = None,
    **extra: Any,
) -> _Result:
    """Score the server's final global model at every site, install it in the archive, write
    ``eval/fl_metrics.json``; return the outcome as ``kind`` (``extra`` fills its own fields).
    ``context`` is a site's TenSEAL context, to decrypt a homomorphically encrypted model."""
    from carina.archive import Archive

    archive = Archive.open(spec.archive)
    global_model = server / GLOBAL_MODEL
    weights, previous, final, size = _finish(archive, global_model, spec, data_dir, context)
    result = kind(
        rounds=read_rounds(server),
        final=final,
        mean_dice=sum(final.values()) / len(final),
        weights=weights,
        previous=previous,
        seconds=time.time() - started,
        bytes_per_round=2 * size * len(spec.sites),
        workspace=workspace,
        **extra,
    )
    write_metrics(archive, spec, result)
    return result


def _run_tree(
    command: list[str],
    run_dir: Path,
    env: dict[str, str],
    timeout: float,
    spec: JobSpec,
    progress: Progress | None,
) -> int | None:
    """Run the simulator; report rounds as they finish; kill the whole tree at the end."""
    import psutil

    run_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[int, psutil.Process] = {}
    reported = 0
    with (run_dir.parent / "simulator.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.time() + timeout
        try:
            while process.poll() is None:
                try:
                    for child in psutil.Process(process.pid).children(recursive=True):
                        seen.setdefault(child.pid, child)
                except psutil.NoSuchProcess:
                    pass
                rounds = read_rounds(run_dir / "server" / "simulate_job")
                for row in rounds[reported:]:
                    if progress is not None:
                        progress({"round": row["round"], "of": spec.rounds, "sites": row["sites"]})
                reported = len(rounds)
                if time.time() > deadline:
                    break
                time.sleep(1.0)
        finally:
            code = process.poll()
            _kill([psutil.Process(process.pid)] if code is None else [], list(seen.values()))
    return code if code is not None else None


def _kill(main: list[Any], others: list[Any]) -> None:
    import psutil

    alive = []
    for process in [*main, *others]:
        try:
            process.kill()
            alive.append(process)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=10)


def read_rounds(server: Path) -> list[dict[str, Any]]:
    """Per-round metrics as FLARE's metrics writer recorded them: round, sites, aggregate."""
    path = server / "metrics" / "round_metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            raw = json.loads(line)
        except ValueError:
            continue  # a line being written
        rows.append(
            {
                "round": int(raw["round"]),
                "sites": {
                    site["name"]: {m["name"]: m["value"] for m in site["metrics"]}
                    for site in raw.get("sites", [])
                },
                "aggregated": {m["name"]: m["value"] for m in raw.get("aggregated_metrics", [])},
            }
        )
    return rows


def failure_reason(run_dir: Path, code: int | None, done: int, rounds: int) -> str:
    """Why a simulation failed, from the sites' error lines and the server's error log."""
    reasons = []
    for log in sorted(run_dir.glob("site-*/log.txt")) + sorted(run_dir.glob("*/log.txt")):
        for line in log.read_text(errors="replace").splitlines():
            if ERROR_MARKER in line:
                reasons.append(line.split(ERROR_MARKER, 1)[1].strip())
    reasons = list(dict.fromkeys(reasons))
    state = "timed out" if code is None else f"ended with status {code}"
    summary = f"federated job {state} after {done} of {rounds} rounds"
    if reasons:
        return summary + ": " + "; ".join(reasons)
    errors = run_dir / "server" / "error_log.txt"
    if errors.is_file():
        lines = [line for line in errors.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return summary + ": " + lines[-1][-300:]
    return summary + f" (see {run_dir})"


def _finish(
    archive: Any, global_model: Path, spec: JobSpec, data_dir: Path, context: Path | None
) -> tuple[Path, Path | None, dict[str, float], int]:
    """Score the global model at every site, then install it; the archive stays whole on error."""
    import torch

    from carina.fl.site import LocalSite
    from carina.fl.weights import load_global, stored_bytes, to_state_dict

    try:
        weights = load_global(global_model, context=context)
    except ValueError as exc:
        raise FLError(str(exc)) from None
    final = {}
    for site, dataset in spec.sites.items():
        local = LocalSite(
            archive=archive.layout.root,
            work_dir=global_model.parents[3] / "final" / site,
            dataset=dataset,
            data_dir=data_dir,
        )
        final[site] = local.evaluate(weights)
        template = local.template()
    state = to_state_dict(weights, template)
    layout = archive.layout
    layout.models_dir.mkdir(parents=True, exist_ok=True)
    partial = layout.models_dir / "model.pt.partial"
    torch.save(state, partial)
    previous = None
    if layout.weights.is_file():
        previous = layout.models_dir / "model_before_fl.pt"
        shutil.copy2(layout.weights, previous)
    partial.replace(layout.weights)
    return layout.weights, previous, final, stored_bytes(global_model)


def write_metrics(archive: Any, spec: JobSpec, result: FLResult) -> Path:
    """``eval/fl_metrics.json`` (atomic) and TensorBoard scalars under ``logs/fl/``."""
    from torch.utils.tensorboard import SummaryWriter

    from carina import __version__

    layout = archive.layout
    document = {
        "job": spec.job_name,
        "algorithm": spec.algorithm.value,
        "sites": spec.sites,
        "rounds": result.rounds,
        "local_epochs": spec.local_epochs,
        "privacy": {
            "percentile": spec.privacy.percentile,
            "svt_fraction": spec.privacy.svt_fraction,
            "exclude": spec.privacy.exclude,
            "homomorphic_encryption": spec.homomorphic,
        },
        "final": result.final,
        "mean_dice": result.mean_dice,
        "seconds": round(result.seconds, 1),
        "bytes_per_round": result.bytes_per_round,
        "carina_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    eval_dir: Path = layout.root / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    partial = eval_dir / "fl_metrics.json.partial"
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(eval_dir / "fl_metrics.json")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    with SummaryWriter(log_dir=str(layout.logs_dir / "fl" / stamp)) as writer:
        for row in result.rounds:
            for site, metrics in row["sites"].items():
                for name, value in metrics.items():
                    writer.add_scalar(f"{site}/{name}", float(value), row["round"])
            for name, value in row["aggregated"].items():
                writer.add_scalar(f"aggregated/{name}", float(value), row["round"])
        for site, value in result.final.items():
            writer.add_scalar(f"{site}/final_global_dice", value, len(result.rounds))
    return eval_dir / "fl_metrics.json"
