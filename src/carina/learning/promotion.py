"""Promotion and rollback: a trained candidate replaces the served model only when it scores no
worse on the same validation images; the previous weights are kept for rollback.

The served archive (``WORKSPACE/models/NAME``) keeps ``history.json`` (every decision: the rule,
both figures, promoted or not) and ``history/<stamp>/model.pt`` (the weights each promotion or
rollback replaced). A new version is staged beside the served one and installed in one rename,
so every replica picks it up on its next request, without a restart.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carina.archive.pack import install_folder
from carina.errors import ArchiveError, ModelNotFound
from carina.files import atomic_write_bytes, owned_folder

HISTORY = "history.json"
HISTORY_DIR = "history"
#: The promotion rule, recorded with every decision.
RULE = "promote when the candidate's validation mean Dice >= the served model's on the same images"


@dataclass(frozen=True)
class Decision:
    """A job's outcome for the served model."""

    job: str
    candidate_dice: float
    served_dice: float | None
    promoted: bool
    rule: str = RULE
    time: str = ""


def decide(job: str, candidate_dice: float, served_dice: float | None) -> Decision:
    """Promote when there is no served model yet, or the candidate is not worse."""
    promoted = served_dice is None or candidate_dice >= served_dice
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return Decision(job, candidate_dice, served_dice, promoted, RULE, now)


def promote(candidate: Path, models: Path, name: str, decision: Decision) -> Path:
    """Install the candidate's weights (and metrics) as model ``name``; the served weights go to
    its history. Returns the served folder."""
    served = models / name
    staging = owned_folder(models, f".{name}.promote")
    try:
        staged = staging / name
        shutil.copytree(served if served.is_dir() else candidate, staged)
        _keep_weights(served, staged, decision.job)
        (staged / "models").mkdir(exist_ok=True)
        shutil.copyfile(candidate / "models" / "model.pt", staged / "models" / "model.pt")
        if (candidate / "eval").is_dir():
            shutil.copytree(candidate / "eval", staged / "eval", dirs_exist_ok=True)
        if (candidate / "logs").is_dir():  # the job's TensorBoard events, kept with the model
            shutil.copytree(candidate / "logs", staged / "logs" / decision.job)
        _append_history(staged, {"action": "promote", **asdict(decision)})
        return install_folder(staged, models, name, copy=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def record_refusal(models: Path, name: str, decision: Decision) -> None:
    """Note a refused candidate in the served model's history (its weights are untouched)."""
    served = models / name
    if served.is_dir():
        _append_history(served, {"action": "refuse", **asdict(decision)})


def rollback(models: Path, name: str) -> dict[str, Any]:
    """Put back the weights the last promotion (or rollback) replaced; returns the record.

    Raises:
        ModelNotFound: no such model.
        ArchiveError: no earlier weights are kept.
    """
    served = models / name
    if not served.is_dir():
        raise ModelNotFound(f"model {name!r} not found")
    kept = sorted((served / HISTORY_DIR).glob("*/model.pt"))
    if not kept:
        raise ArchiveError(f"{name}: no earlier weights to roll back to")
    previous = kept[-1]
    staging = owned_folder(models, f".{name}.rollback")
    try:
        staged = staging / name
        shutil.copytree(served, staged)
        _keep_weights(served, staged, "rollback")
        shutil.copyfile(previous, staged / "models" / "model.pt")
        shutil.rmtree(staged / HISTORY_DIR / previous.parent.name)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        record = {"action": "rollback", "restored": previous.parent.name, "time": stamp}
        _append_history(staged, record)
        install_folder(staged, models, name, copy=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def history(models: Path, name: str) -> list[dict[str, Any]]:
    """The served model's decisions, oldest first."""
    path = models / name / HISTORY
    return list(json.loads(path.read_text())) if path.is_file() else []


def _keep_weights(served: Path, staged: Path, job: str) -> None:
    weights = served / "models" / "model.pt"
    if weights.is_file():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        kept = staged / HISTORY_DIR / f"{stamp}-{job}"
        kept.mkdir(parents=True)
        shutil.copyfile(weights, kept / "model.pt")


def _append_history(root: Path, record: dict[str, Any]) -> None:
    path = root / HISTORY
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries.append(record)
    atomic_write_bytes(path, (json.dumps(entries, indent=2) + "\n").encode())
