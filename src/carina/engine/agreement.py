"""The agreement check that frees an archive's inference plan (``carina archive plan-check``).

The planned run (the whole image in one pass, or larger windows) and the archive's configured
sliding window are run on the same images; the per-label Dice between the two label maps must be at
least :data:`~carina.engine.plan.AGREEMENT` on every image for every label either finds. The result
is recorded in ``eval/inference_plan.json`` with the sha256 of the weights it holds for; only then,
and only for a network that does not depend on its window, does the server plan other windows.

:func:`check_bf16` does the same for bf16 autocast against fp32, timing both: recorded in
``eval/bf16_check.json``, it lets the ``auto`` backend compute in bf16 on this CPU model when the
labels agree and bf16 was faster (:mod:`carina.engine.backends`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carina import __version__
from carina.archive import Archive
from carina.engine.backends import BF16_RECORD, cpu_model, native_bf16, weights_sha256
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
    seconds: dict[str, float] = field(default_factory=dict)


def check_plan(
    archive: Archive, images: dict[str, Path | Volume], *, device: str | None = None
) -> PlanCheck:
    """Run the planned and the configured inference on ``images`` (by name), score their
    agreement and record it in the archive (``eval/inference_plan.json``)."""
    planned = Predictor.from_archive(archive, device=device, plan="auto", backend="torch")
    planned.free = True
    exact = Predictor.from_archive(archive, device=device, plan="archive", backend="torch")
    check = _compare(planned, exact, images)
    worst = _worst(check)
    profile = planned.profile
    if profile is not None and profile.window_dependent:
        check.passed, check.reason = (
            False,
            "the network depends on its window (normalisation or attention)",
        )
    elif worst < AGREEMENT:
        check.passed, check.reason = False, f"lowest per-label Dice {worst:.4f} < {AGREEMENT}"
    _record(archive, PLAN_RECORD, {**_summary(check, worst), "plans": check.plans})
    return check


def check_bf16(
    archive: Archive, images: dict[str, Path | Volume], *, device: str | None = None
) -> PlanCheck:
    """Run the archive in bf16 autocast and in fp32 on ``images``, score their agreement, time
    both, and record it (``eval/bf16_check.json``, with this CPU's model and whether it has
    native bf16). It passes when every label agrees (Dice >= 0.99); the ``auto`` backend uses
    bf16 only when it passed and was faster, on a CPU with native bf16."""
    fast = Predictor.from_archive(archive, device=device, backend="torch")
    fast.precision = "bf16"
    exact = Predictor.from_archive(archive, device=device, backend="torch")
    exact.precision = "fp32"
    check = _compare(fast, exact, images)
    worst = _worst(check)
    if worst < AGREEMENT:
        check.passed, check.reason = False, f"lowest per-label Dice {worst:.4f} < {AGREEMENT}"
    faster = check.seconds["ours"] < check.seconds["reference"]
    _record(
        archive,
        BF16_RECORD,
        {
            **_summary(check, worst),
            "faster": faster,
            "seconds": check.seconds,
            "cpu": cpu_model(),
            "native_bf16": native_bf16(),
        },
    )
    return check


def _compare(ours: Predictor, reference: Predictor, images: dict[str, Path | Volume]) -> PlanCheck:
    """Both predictors on every image: per-label Dice of their label maps, total seconds each,
    and the plan ``ours`` ran."""
    check = PlanCheck(passed=True, seconds={"ours": 0.0, "reference": 0.0})
    for name, image in images.items():
        maps = []
        for side, predictor in (("ours", ours), ("reference", reference)):
            start = time.perf_counter()
            maps.append(predictor.predict(image).volume.array)
            check.seconds[side] += time.perf_counter() - start
        check.plans[name] = ours.last_plan.describe() if ours.last_plan else "archive"
        check.scores[name] = {
            label: round(_dice(maps[0] == value, maps[1] == value), 6)
            for value, label in enumerate(ours.settings.labels, start=1)
        }
    check.seconds = {side: round(value, 4) for side, value in check.seconds.items()}
    return check


def _worst(check: PlanCheck) -> float:
    return min((s for scores in check.scores.values() for s in scores.values()), default=1.0)


def _dice(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _summary(check: PlanCheck, worst: float) -> dict[str, Any]:
    return {
        "passed": check.passed,
        "reason": check.reason,
        "min_dice": round(worst, 6),
        "threshold": AGREEMENT,
        "scores": check.scores,
    }


def _record(archive: Archive, name: str, fields: dict[str, Any]) -> None:
    weights = archive.layout.root / archive.serving_config().model_file
    record = {
        **fields,
        "weights_sha256": weights_sha256(weights),
        "carina_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    target = archive.layout.root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, (json.dumps(record, indent=2) + "\n").encode())
