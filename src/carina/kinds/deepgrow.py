"""DeepGrow: the structure under the user's foreground clicks, in 2D (one slice) or 3D."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from carina.archive.schema import ServingConfig
from carina.errors import ConfigError, GuidanceError
from carina.kinds.base import (
    Guidance,
    InferenceRequest,
    InferenceResult,
    ModelKind,
    NetworkRunner,
    needs_network,
    serving_file,
)

if TYPE_CHECKING:
    from carina.archive import Archive
    from carina.engine.evaluate import CaseScorer
    from carina.interactive.predict import InteractivePredictor


class DeepGrowRunner(NetworkRunner):
    """Runs a DeepGrow archive's :class:`~carina.interactive.predict.InteractivePredictor`."""

    predictor: InteractivePredictor

    def run(self, request: InferenceRequest) -> InferenceResult:
        """The structure the foreground clicks are in; with background clicks alone, an empty
        mask (clients may send them).

        Raises:
            GuidanceError: no click at all (the model was asked for automatic segmentation).
        """
        image = request.image
        if not request.foreground and not request.background:
            raise GuidanceError(
                "a DeepGrow model segments the structure under a person's clicks: give at least "
                "one foreground click (params foreground, [[i, j, k]]); automatic segmentation "
                "needs a segmentation model"
            )
        if not request.foreground:
            return InferenceResult(image.with_array(np.zeros(image.shape, dtype=np.uint8)))
        result = self.predictor.deepgrow(
            image,
            request.foreground,
            request.background,
            current_point=request.current_point,
            spatial_size=request.spatial_size,
            max_work_bytes=request.max_work_bytes,
        )
        return InferenceResult(result.volume, result.crop, result.timings)


def check(archive: Archive, spec: ServingConfig) -> None:
    """A DeepGrow model needs a network and its input size.

    Raises:
        ConfigError: no network, or no ``roi``.
    """
    needs_network(archive, spec)
    if spec.roi is None:
        raise ConfigError(
            serving_file(archive), "roi", "required for deepgrow models (the network's input size)"
        )


def load(archive: Archive, device: str | None) -> DeepGrowRunner:
    """The runner of a DeepGrow archive."""
    from carina.interactive.predict import InteractivePredictor

    return DeepGrowRunner(InteractivePredictor.from_archive(archive, device=device))


def scorer(archive: Archive, device: str | None) -> CaseScorer:
    """One click at each held-out structure's deepest voxel."""
    from carina.interactive.evaluate import deepgrow_scorer

    return deepgrow_scorer(archive, device)


DEEPGROW = ModelKind(
    name="deepgrow",
    guidance=Guidance.CLICKS,
    load=load,
    check=check,
    scorer=scorer,
    monai_label_type="deepgrow",
)
