"""Which image to annotate next (active learning).

A strategy picks, among the images that have no ``final`` label and that nobody holds locked:
``first`` in import order, ``random`` at random, ``uncertainty`` and ``entropy`` the one the
current model is least sure of (test-time augmentation, :mod:`carina.learning.scores`; scores
cached per image and model version, missing ones computed for at most ``limit`` candidates).
"""

from __future__ import annotations

import random as random_module
from datetime import UTC, datetime
from pathlib import Path

from carina.datastore import ImageRecord, ImageStatus, LocalDatastore
from carina.errors import DatastoreError

#: The strategies by name, with what each does (shown to clients).
STRATEGIES: dict[str, str] = {
    "random": "a random unlabelled image",
    "first": "the first unlabelled image, in import order",
    "uncertainty": "the unlabelled image whose label maps under flips agree least (1 - Dice)",
    "entropy": "the unlabelled image with the highest vote entropy under flips",
}


def next_image(
    store: LocalDatastore,
    strategy: str = "random",
    *,
    model: Path | None = None,
    limit: int = 20,
    device: str | None = None,
) -> ImageRecord | None:
    """The image to annotate next by ``strategy``; None when every image is labelled.

    Args:
        store: the datastore.
        strategy: a name of :data:`STRATEGIES`.
        model: the served model's archive folder (``uncertainty`` and ``entropy``).
        limit: at most this many candidates are scored when their scores are missing.
        device: where the model runs.

    Raises:
        DatastoreError: an unknown strategy, or a model-based one without a model.
    """
    if strategy not in STRATEGIES:
        raise DatastoreError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    candidates = [
        r for r in store.images() if r.status == ImageStatus.UNLABELLED and not _locked(r)
    ]
    if not candidates:
        return None
    if strategy == "first":
        return candidates[0]
    if strategy == "random":
        return random_module.SystemRandom().choice(candidates)
    if model is None:
        raise DatastoreError(f"the {strategy} strategy needs a model to score the images with")
    from carina.learning.scores import LazyPredictor, image_scores

    predictor = LazyPredictor(model, device)
    scored = [
        (image_scores(store, model, r.id, predictor=predictor)[strategy], r)
        for r in candidates[:limit]
    ]
    return max(scored, key=lambda pair: pair[0])[1]


def _locked(record: ImageRecord) -> bool:
    """Whether someone holds the image (``LocalDatastore.lock``) and the time has not run out."""
    lock = record.info.get("lock")
    if not isinstance(lock, dict):
        return False
    try:
        until = datetime.fromisoformat(str(lock.get("until")))
    except ValueError:
        return False
    return until > datetime.now(UTC)
