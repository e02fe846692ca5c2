"""DeepEdit: a MONAI Bundle whose network takes the image and one click map per label.

Without clicks it segments automatically; with clicks it corrects. The clicks go into the Bundle's
pre-processing under each label's name (``{"spleen": [[i, j, k], ...], "background": [...]}``,
voxel indices of the request image), the way its ``AddGuidanceFromPointsDeepEditd`` reads them.
The foreground clicks are the first label's (or the one the request names), the background
clicks are ``background``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carina.kinds.base import Guidance, InferenceRequest, InferenceResult, ModelKind, NetworkRunner
from carina.kinds.segmentation import load as load_segmentation

if TYPE_CHECKING:
    from carina.archive import Archive


class DeepEditRunner(NetworkRunner):
    """Runs a DeepEdit Bundle's predictor with the request's clicks under the label names."""

    def run(self, request: InferenceRequest) -> InferenceResult:
        """The label map of the whole image, corrected by the clicks (none: automatic)."""
        labels = self.spec.labels
        target = request.label if request.label in labels else (labels[0] if labels else "")
        clicks: dict[str, object] = {name: [] for name in labels}
        clicks[target] = [list(p) for p in request.foreground]
        clicks["background"] = [list(p) for p in request.background]
        prediction = self.predictor.predict(request.image, extra=clicks)
        return InferenceResult(prediction.volume, timings=prediction.timings)


def load(archive: Archive, device: str | None) -> DeepEditRunner:
    """The runner of a DeepEdit Bundle."""
    runner = load_segmentation(archive, device)
    assert isinstance(runner, NetworkRunner)
    return DeepEditRunner(runner.predictor)


DEEPEDIT = ModelKind(
    name="deepedit",
    guidance=Guidance.CLICKS,
    load=load,
    monai_label_type="deepedit",
)
