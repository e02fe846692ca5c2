"""Automatic segmentation: the archive's pipeline (pre -> inferer -> post) on the whole image."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from carina.kinds.base import (
    Guidance,
    InferenceRequest,
    InferenceResult,
    ModelKind,
    NetworkRunner,
    Runner,
)
from carina.limits import check_work

if TYPE_CHECKING:
    from carina.archive import Archive
    from carina.engine.evaluate import CaseScorer
    from carina.engine.predict import Predictor


class SegmentationRunner(NetworkRunner):
    """Runs a segmentation archive's :class:`~carina.engine.predict.Predictor`."""

    predictor: Predictor

    def run(self, request: InferenceRequest) -> InferenceResult:
        """The label map of the whole image (guidance, if any, is not used).

        Raises:
            GuidanceError: the image needs more working memory than the request may use.
        """
        voxels = math.prod(request.image.shape)
        channels = len(self.spec.labels) + 1
        check_work(4 * voxels * (2 + channels), request.max_work_bytes, "segmenting this image")
        prediction = self.predictor.predict(request.image, budget=request.max_work_bytes)
        return InferenceResult(
            prediction.volume, timings=prediction.timings, warnings=prediction.warnings
        )


def load(archive: Archive, device: str | None) -> Runner:
    """The runner of a segmentation archive (a MONAI Bundle too; an nnU-Net folder runs
    through nnunetv2's own predictor)."""
    from carina.engine.predict import Predictor

    if archive.kind == "nnunet":
        from carina.kinds.nnunet import load as load_nnunet

        return load_nnunet(archive, device)
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
