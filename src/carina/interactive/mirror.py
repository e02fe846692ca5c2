"""A training transform that completes a structure cut by the left-right midline with its mirror.

The shipped datasets are one subject each, held out by halves: training sees only the left or the
right half of every vertebra, cut at the middle of the left-right axis. A user, though, clicks in
whole vertebrae. ``RandMirrorCompleted`` shows the model whole structures made from the training
half alone: where the structure ends at the image's left or right face (the split plane), the
volume is extended by its own mirror image across that face. The spine is close to symmetric about
the midline, so the completed vertebra is a plausible whole one; nothing of the held-out half is
used.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import RandomizableTransform

from carina.interactive.transforms import DrawnFromMaskd


class RandMirrorComplete(RandomizableTransform):
    """With probability ``prob``, extends a channel-first volume by its mirror image across the
    left-right face its structure touches (drawn from the mask); a structure that touches both
    faces or neither stays as it is.

    The left-right axis is the voxel axis most aligned with the patient's x axis in the array's
    affine (a MONAI ``MetaTensor``'s); without an affine nothing is done. The affine of the result
    keeps the first voxel where it was (mirroring at the low face moves the origin).
    """

    def __init__(self, prob: float = 0.5) -> None:
        RandomizableTransform.__init__(self, prob)
        self.plan: tuple[int, bool] | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw whether to mirror, and find the axis and face from the channel-first mask."""
        super().randomize(None)
        self.plan = None
        affine = getattr(data, "affine", None)
        if not self._do_transform or affine is None:
            return
        label = np.asarray(data)[0] > 0
        matrix = np.asarray(affine, dtype=np.float64)[:3, : label.ndim]
        axis = int(np.argmax(np.abs(matrix[0])))
        low = bool(np.take(label, 0, axis=axis).any())
        high = bool(np.take(label, -1, axis=axis).any())
        if low != high:
            self.plan = (axis, high)

    def __call__(self, img: Any, label: Any = None, randomize: bool = True) -> Any:
        """``img`` with its mirror joined at the drawn face (drawn first from ``label``, or
        ``img``, unless ``randomize`` is False)."""
        if randomize:
            self.randomize(img if label is None else label)
        if self.plan is None:
            return img
        axis, high = self.plan
        dim = axis + 1  # channel first
        mirrored = torch.flip(img, dims=(dim,))
        joined = torch.cat([img, mirrored] if high else [mirrored, img], dim=dim)
        affine = getattr(img, "affine", None)
        if affine is not None and not high:
            moved = torch.as_tensor(affine).clone()
            moved[: len(moved) - 1, -1] -= moved[: len(moved) - 1, axis] * img.shape[dim]
            joined.affine = moved  # type: ignore[attr-defined]
        return joined


class RandMirrorCompleted(DrawnFromMaskd):
    """Dictionary version of :class:`RandMirrorComplete`: drawn from ``label_key``, applied to
    every key.

    Args:
        keys: channel-first arrays (image and label).
        label_key: the binary structure mask.
        prob: as :class:`RandMirrorComplete`.
    """

    def __init__(self, keys: KeysCollection, label_key: str = "label", prob: float = 0.5) -> None:
        self.mirror = RandMirrorComplete(prob=prob)
        super().__init__(keys, label_key, self.mirror)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize(data[self.label_key])
        out = dict(data)
        if self.mirror.plan is None:
            return out
        for key in self.key_iterator(out):
            out[key] = self.mirror(out[key], randomize=False)
        return out
