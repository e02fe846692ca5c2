"""A model kind of the tests' own: a threshold, served by a runner written in one module.

It needs no network: its serving config says the level in ``meta_data.threshold``. Registered
by passing ``{**KINDS, "threshold": THRESHOLD}`` to ``create_app``; nothing in Carina changes.
"""

from __future__ import annotations

import numpy as np

from carina.archive import Archive, ServingConfig
from carina.errors import ConfigError
from carina.kinds import Guidance, InferenceRequest, InferenceResult, ModelKind


class ThresholdRunner:
    """Label 1 where the image is above the level."""

    def __init__(self, spec: ServingConfig) -> None:
        self.spec = spec
        self.level = float(spec.meta_data["threshold"])

    def run(self, request: InferenceRequest) -> InferenceResult:
        mask = (np.asarray(request.image.array) > self.level).astype(np.uint8)
        return InferenceResult(request.image.with_array(mask), timings={"infer": 0.0})

    def memory_bytes(self) -> int:
        return 0


def check(archive: Archive, spec: ServingConfig) -> None:
    if not isinstance(spec.meta_data.get("threshold"), int | float):
        raise ConfigError("config_aiaa.json", "meta_data.threshold", "a number is required")


THRESHOLD = ModelKind(
    name="threshold",
    guidance=Guidance.NONE,
    load=lambda archive, device: ThresholdRunner(archive.serving_config()),
    check=check,
)
