"""The agreement check that frees an archive's inference plan (``carina archive plan-check``).

The planned run (the whole image in one pass, or larger windows) and the archive's configured
sliding window are run on the same images; the per-label Dice between the two label maps must be at
least :data:`~carina.engine.plan.AGREEMENT` on every image for every label either finds. The result
is recorded in ``eval/inference_plan.json`` with the sha256 of the weights it holds for; only then,
and only for a network that does not depend on its window, does the server plan other windows.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carina import __version__
from carina.archive import Archive
from carina.engine.plan import AGREEMENT, PLAN_RECORD
from carina.engine.predict import Predictor
from carina.files import atomic_write_bytes
from carina.io import Volume


@dataclass
class PlanCheck:
    """The scores of an agreement check and whether it passed (and why not, when not)."""

    passed: bool
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)
    reason: str = ""


def check_plan(
    archive: Archive, images: dict[str, Path | Volume], *, device: str | None = None
) -> PlanCheck:
    """Run the planned and the configured inference on ``images`` (by name), score their
    agreement and record it in the archive (``eval/inference_plan.json``)."""
    planned = Predictor.from_archive(archive, device=device, plan="auto")
    planned.free = True
    exact = Predictor.from_archive(archive, device=device, plan="archive")
    labels = planned.settings.labels
    check = PlanCheck(passed=True)
    for name, image in images.items():
        ours = planned.predict(image).volume.array
        theirs = exact.predict(image).volume.array
        check.plans[name] = planned.last_plan.describe() if planned.last_plan else "archive"
        check.scores[name] = {
            label: round(_dice(ours == value, theirs == value), 6)
            for value, label in enumerate(labels, start=1)
        }
    worst = min((s for scores in check.scores.values() for s in scores.values()), default=1.0)
    profile = planned.profile
    if profile is not None and profile.window_dependent:
        check.passed, check.reason = (
            False,
            "the network depends on its window (normalisation or attention)",
        )
    elif worst < AGREEMENT:
        check.passed, check.reason = False, f"lowest per-label Dice {worst:.4f} < {AGREEMENT}"
    _record(archive, check, worst)
    return check


def _dice(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _record(archive: Archive, check: PlanCheck, worst: float) -> None:
    weights = archive.layout.root / archive.serving_config().model_file
    record = {
        "passed": check.passed,
        "reason": check.reason,
        "min_dice": round(worst, 6),
        "threshold": AGREEMENT,
        "scores": check.scores,
        "plans": check.plans,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()
        if weights.is_file()
        else "",
        "carina_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    target = archive.layout.root / PLAN_RECORD
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, (json.dumps(record, indent=2) + "\n").encode())
