"""DExtr3D (``annotation`` models): a structure from its extreme points."""

from __future__ import annotations

from typing import TYPE_CHECKING

from carina.kinds.base import Guidance, InferenceRequest, InferenceResult, ModelKind, NetworkRunner

if TYPE_CHECKING:
    from carina.archive import Archive
    from carina.engine.evaluate import CaseScorer
    from carina.interactive.predict import InteractivePredictor


class DExtr3DRunner(NetworkRunner):
    """Runs a DExtr3D archive's :class:`~carina.interactive.predict.InteractivePredictor`."""

    predictor: InteractivePredictor

    def run(self, request: InferenceRequest) -> InferenceResult:
        """The structure whose extreme points (at least 6) the user placed."""
        result = self.predictor.dextr3d(
            request.image, request.extreme_points, max_work_bytes=request.max_work_bytes
        )
        return InferenceResult(result.volume, result.crop, result.timings)


def load(archive: Archive, device: str | None) -> DExtr3DRunner:
    """The runner of a DExtr3D archive."""
    from carina.interactive.predict import InteractivePredictor

    return DExtr3DRunner(InteractivePredictor.from_archive(archive, device=device))


def scorer(archive: Archive, device: str | None) -> CaseScorer:
    """Each held-out structure from its 6 extreme points."""
    from carina.interactive.evaluate import dextr3d_scorer

    return dextr3d_scorer(archive, device)


DEXTR3D = ModelKind(
    name="annotation",
    guidance=Guidance.EXTREME_POINTS,
    load=load,
    scorer=scorer,
    # The plugins drive it as a point model: the foreground points are its extreme points.
    monai_label_type="deepgrow",
)
