"""How the annotation goes: counts by status, and per image how much a person corrected the
model's output (Dice between the ``original`` and ``final`` labels) and the time spent when a
client reported it (``time_spent`` seconds in the final label's info)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from carina.datastore.local import LocalDatastore
from carina.datastore.records import FINAL, ORIGINAL, ImageRecord
from carina.io import load_volume


@dataclass(frozen=True)
class ImageScore:
    """One image's figures: Dice of original vs final (None: not both), seconds spent."""

    id: str
    status: str
    dice_original_final: float | None
    time_spent: float | None


def datastore_stats(store: LocalDatastore) -> dict[str, Any]:
    """Counts by status, label tags in use, and each image's :class:`ImageScore`."""
    records = store.images()
    scores = [image_score(record) for record in records]
    dices = [s.dice_original_final for s in scores if s.dice_original_final is not None]
    return {
        "total": len(records),
        "by_status": dict(Counter(str(r.status) for r in records)),
        "label_tags": sorted({tag for r in records for tag in r.labels}),
        "mean_dice_original_final": float(np.mean(dices)) if dices else None,
        "images": [s.__dict__ for s in scores],
    }


def image_score(record: ImageRecord) -> ImageScore:
    """The figures of one image (labels read only when both original and final exist)."""
    final = record.labels.get(FINAL)
    original = record.labels.get(ORIGINAL)
    dice = None
    if final is not None and original is not None:
        dice = foreground_dice(
            np.asarray(load_volume(original.path).array), np.asarray(load_volume(final.path).array)
        )
    spent = final.info.get("time_spent") if final is not None else None
    time_spent = float(spent) if isinstance(spent, int | float) else None
    return ImageScore(record.id, str(record.status), dice, time_spent)


def foreground_dice(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    """Mean Dice over the label values present in either map (1.0 when both are empty)."""
    values = [int(v) for v in np.union1d(np.unique(a), np.unique(b)) if v != 0]
    if not values:
        return 1.0
    dices = []
    for value in values:
        x, y = a == value, b == value
        dices.append(2.0 * float(np.logical_and(x, y).sum()) / float(x.sum() + y.sum()))
    return float(np.mean(dices))
