"""Model-based next-image strategies: uncertainty and entropy from test-time flips of the served
spine CT model, cached per image and model version, recomputed after the weights change, bounded
and cancellable in the background."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from carina.datastore import LocalDatastore
from carina.errors import DatastoreError, WorkCancelledError
from carina.learning import next_image
from carina.learning.scores import (
    BackgroundScorer,
    model_version,
    refresh_scores,
    uncertainty,
    vote_entropy,
)
from carina.zoo import install_archive


@pytest.fixture
def scored(
    tmp_path: Path, store: LocalDatastore, spine_export: Path
) -> tuple[LocalDatastore, Path]:
    for name in ("spine_ct_train", "spine_ct_heldout"):
        store.add_image(spine_export / "imagesTr" / f"{name}.nii.gz")
    return store, install_archive("spine_ct_vertebrae", tmp_path / "workspace")


def test_scores_of_agreeing_and_disagreeing_maps() -> None:
    same = np.zeros((4, 4, 4), np.uint8)
    same[1:3, 1:3, 1:3] = 1
    assert uncertainty([same, same, same]) == 0.0 and vote_entropy([same, same]) == 0.0
    other = np.zeros_like(same)
    other[0, 0, 0] = 1
    assert uncertainty([same, other]) == 1.0
    assert vote_entropy([same, other]) == pytest.approx(np.log(2))


def test_model_strategies_pick_an_unlabelled_image_and_cache_per_version(
    scored: tuple[LocalDatastore, Path],
) -> None:
    store, model = scored
    for strategy in ("uncertainty", "entropy"):
        chosen = next_image(store, strategy, model=model, device="cpu")
        assert chosen is not None and chosen.id.startswith("spine_ct_")
    version = model_version(model)
    cached = sorted((store.root / "scores" / model.name / version).glob("*.json"))
    assert len(cached) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert refresh_scores(store, model) == 0  # nothing missing for this version
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    weights = model / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    torch.save({k: v * 0.5 if v.is_floating_point() else v for k, v in state.items()}, weights)
    assert model_version(model) != version
    assert refresh_scores(store, model, limit=1) == 1  # bounded
    with pytest.raises(DatastoreError, match="needs a model"):
        next_image(store, "uncertainty")


def test_background_scoring_starts_on_a_new_version_and_cancels(
    scored: tuple[LocalDatastore, Path],
) -> None:
    store, model = scored
    scorer = BackgroundScorer(store, model)
    assert scorer.poke() and not scorer.poke()  # one run per version
    scorer.cancel()
    event = threading.Event()
    event.set()
    start = time.perf_counter()
    with pytest.raises(WorkCancelledError):
        refresh_scores(store, model, cancelled=event)
    assert time.perf_counter() - start < 5
