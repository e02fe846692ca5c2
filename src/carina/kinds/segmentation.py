"""Automatic segmentation: the archive's pipeline (pre -> inferer -> post) on the whole image."""

from __future__ import annotations

from typing import TYPE_CHECKING

from carina.kinds.base import Guidance, InferenceRequest, InferenceResult, ModelKind, NetworkRunner

if TYPE_CHECKING:
    from carina.archive import Archive
    from carina.engine.evaluate import CaseScorer
    from carina.engine.predict import Predictor


class SegmentationRunner(NetworkRunner):
    """Runs a segmentation archive's :class:`~carina.engine.predict.Predictor`."""

    predictor: Predictor

    def run(self, request: InferenceRequest) -> InferenceResult:
        """The label map of the whole image (guidance, if any, is not used)."""
        prediction = self.predictor.predict(request.image)
        return InferenceResult(prediction.volume, timings=prediction.timings)


def load(archive: Archive, device: str | None) -> SegmentationRunner:
    """The runner of a segmentation archive (a MONAI Bundle too)."""
    from carina.engine.predict import Predictor

    return SegmentationRunner(Predictor.from_archive(archive, device=device))


def scorer(archive: Archive, device: str | None) -> CaseScorer:
    """Dice per label of the serving pipeline on each validation case."""
    from carina.engine.evaluate import segmentation_scorer

    return segmentation_scorer(archive, device)


SEGMENTATION = ModelKind(
    name="segmentation",
    guidance=Guidance.NONE,
    load=load,
    scorer=scorer,
)
