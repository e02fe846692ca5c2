"""Model-based scores of how much an image would teach the model: its current model's
uncertainty, from test-time augmentation (the image and its three axis flips).

``uncertainty``: 1 - the mean Dice between the four label maps (0 when every flip agrees).
``entropy``: the mean vote entropy (nats) over the voxels any map calls foreground, an
epistemic-style measure of disagreement.

Scores are cached per image and per model version (the sha256 of its weights) under
``WORKSPACE/datastore/scores/<model>/<version>/``, one file per image, so replicas share them
and a new model's scores are computed afresh. :func:`refresh_scores` fills the cache for a
bounded number of images and stops at once when its event is set; :class:`BackgroundScorer`
runs it on a thread whenever the model's version changes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from carina.archive import Archive
from carina.datastore import ImageStatus, LocalDatastore
from carina.datastore.stats import foreground_dice
from carina.errors import ConfigError, WorkCancelledError
from carina.files import atomic_write_bytes
from carina.limits import cancellable, check_cancelled

log = logging.getLogger(__name__)
SCORES = ("uncertainty", "entropy")
#: Images scored after a promotion (the rest are scored when a strategy asks for them).
SCORE_REFRESH_LIMIT = 20


def model_version(model_root: Path) -> str:
    """The sha256 (first 16 hex digits) of the model's weights: a new version when they change."""
    layout = Archive.open(model_root).layout
    weights = layout.torchscript if layout.torchscript.is_file() else layout.weights
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


def image_scores(
    store: LocalDatastore,
    model_root: Path,
    image_id: str,
    *,
    device: str | None = None,
    predictor: Any = None,
) -> dict[str, float]:
    """The image's scores under the model's current version (computed once, then cached;
    ``predictor``: the model's, when the caller already built it)."""
    path = _cache_path(store, model_root, image_id)
    if path.is_file():
        return dict(json.loads(path.read_text()))
    predictor = predictor or model_predictor(model_root, device)
    maps = flip_label_maps(predictor, store.volume(image_id))
    scores = {"uncertainty": uncertainty(maps), "entropy": vote_entropy(maps)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(scores).encode())
    return scores


def refresh_scores(
    store: LocalDatastore,
    model_root: Path,
    *,
    limit: int = 50,
    cancelled: threading.Event | None = None,
    device: str | None = None,
) -> int:
    """Score up to ``limit`` unlabelled images that have no score for the current model version;
    returns how many were scored. Setting ``cancelled`` stops it within one flip.

    Raises:
        WorkCancelledError: ``cancelled`` was set.
    """
    missing = [
        r.id
        for r in store.images()
        if r.status == ImageStatus.UNLABELLED and not _cache_path(store, model_root, r.id).is_file()
    ][:limit]
    predictor = LazyPredictor(model_root, device)
    with cancellable(cancelled or threading.Event()):
        check_cancelled()
        for image_id in missing:
            image_scores(store, model_root, image_id, predictor=predictor)
    return len(missing)


def flip_label_maps(predictor: Any, volume: Any) -> list[np.ndarray[Any, Any]]:
    """The model's label maps of the image and of its flips along each spatial axis (each
    flipped back onto the image's grid)."""
    maps = [np.asarray(predictor.predict(volume).volume.array)]
    for axis in range(volume.spatial_ndim):
        check_cancelled()
        flipped = volume.with_array(np.ascontiguousarray(np.flip(volume.array, axis=axis)))
        label = np.asarray(predictor.predict(flipped).volume.array)
        maps.append(np.flip(label, axis=axis))
    return maps


def uncertainty(maps: list[np.ndarray[Any, Any]]) -> float:
    """1 - the mean foreground Dice between every pair of label maps."""
    pairs = list(itertools.combinations(maps, 2))
    return 1.0 - float(np.mean([foreground_dice(a, b) for a, b in pairs])) if pairs else 0.0


def vote_entropy(maps: list[np.ndarray[Any, Any]]) -> float:
    """The mean entropy of the label votes over the voxels any map calls foreground."""
    stack = np.stack(maps)
    anywhere = np.any(stack != 0, axis=0)
    if not anywhere.any():
        return 0.0
    votes = stack[:, anywhere]
    entropy = np.zeros(votes.shape[1])
    for value in np.unique(votes):
        share = (votes == value).mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy -= np.where(share > 0, share * np.log(share), 0.0)
    return float(entropy.mean())


class BackgroundScorer:
    """Keeps the scores of one model fresh on a thread: after each change of the model's
    weights it scores the unlabelled images again (bounded by ``limit`` per version)."""

    def __init__(self, store: LocalDatastore, model_root: Path, *, limit: int = 50) -> None:
        self.store = store
        self.model_root = model_root
        self.limit = limit
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        self._version: str | None = None

    def poke(self) -> bool:
        """Start scoring when the model's version changed and no run is going; True if started."""
        version = model_version(self.model_root)
        if version == self._version or (self._thread is not None and self._thread.is_alive()):
            return False
        self._version = version
        self._cancelled.clear()
        self._thread = threading.Thread(target=self._run, name="carina-scores", daemon=True)
        self._thread.start()
        return True

    @property
    def running(self) -> bool:
        """Whether a scoring run is going."""
        return self._thread is not None and self._thread.is_alive()

    def cancel(self, timeout: float = 10.0) -> None:
        """Stop a run (it ends within one flip) and wait for it."""
        self._cancelled.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            refresh_scores(self.store, self.model_root, limit=self.limit, cancelled=self._cancelled)
        except WorkCancelledError:
            log.info("score refresh cancelled", extra={"model": self.model_root.name})
        except Exception as exc:  # a broken model must not end the server
            log.warning("score refresh failed", extra={"reason": str(exc)[:300]})


def model_predictor(model_root: Path, device: str | None = None) -> Any:
    """The segmentation predictor of the model scores are computed with.

    Raises:
        ConfigError: not a segmentation model.
    """
    from carina.engine.predict import Predictor

    archive = Archive.open(model_root)
    if archive.serving_config().type not in ("segmentation", "others"):
        raise ConfigError(
            archive.layout.serving_config.name,
            "type",
            "uncertainty and entropy need a segmentation model (interactive ones need clicks)",
        )
    return Predictor.from_archive(archive, device=device)


class LazyPredictor:
    """The model's predictor, built on its first use (never, when every score is cached)."""

    def __init__(self, model_root: Path, device: str | None = None) -> None:
        self.model_root = model_root
        self.device = device
        self._predictor: Any = None

    def predict(self, volume: Any) -> Any:
        """The model's prediction of ``volume``."""
        if self._predictor is None:
            self._predictor = model_predictor(self.model_root, self.device)
        return self._predictor.predict(volume)


def _cache_path(store: LocalDatastore, model_root: Path, image_id: str) -> Path:
    key = hashlib.sha256(image_id.encode()).hexdigest()[:32]
    return store.root / "scores" / model_root.name / model_version(model_root) / f"{key}.json"
