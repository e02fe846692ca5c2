"""Which image to annotate next (active learning).

A strategy looks at the datastore's images and picks one that has no ``final`` label yet and that
nobody holds locked: ``first`` takes them in import order, ``random`` at random. Model-based
strategies (uncertainty, entropy) rank the same candidates by the current model's scores.
"""

from __future__ import annotations

import random as random_module
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from carina.datastore import ImageRecord, ImageStatus, LocalDatastore
from carina.errors import DatastoreError

Strategy = Callable[[Sequence[ImageRecord]], ImageRecord]


def first(candidates: Sequence[ImageRecord]) -> ImageRecord:
    """The first unlabelled image in import order."""
    return candidates[0]


def random(candidates: Sequence[ImageRecord]) -> ImageRecord:
    """Any unlabelled image, at random."""
    return random_module.SystemRandom().choice(list(candidates))


#: The strategies by name, with what each does (shown to clients).
STRATEGIES: dict[str, tuple[Strategy, str]] = {
    "random": (random, "a random unlabelled image"),
    "first": (first, "the first unlabelled image, in import order"),
}


def next_image(store: LocalDatastore, strategy: str = "random") -> ImageRecord | None:
    """The image to annotate next by ``strategy``; None when every image is labelled.

    Raises:
        DatastoreError: an unknown strategy.
    """
    if strategy not in STRATEGIES:
        raise DatastoreError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    candidates = [
        r for r in store.images() if r.status == ImageStatus.UNLABELLED and not _locked(r)
    ]
    return STRATEGIES[strategy][0](candidates) if candidates else None


def _locked(record: ImageRecord) -> bool:
    lock = record.info.get("lock")
    if not isinstance(lock, dict):
        return False
    try:
        until = datetime.fromisoformat(str(lock.get("until")))
    except ValueError:
        return False
    return until > datetime.now(UTC)
