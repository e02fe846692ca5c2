"""MONAI transforms that choose the part of a volume an interactive model trains on.

``RandTruncate`` cuts a structure by a random plane, as an image border cuts it; ``InteractionCrop``
crops the window the model sees at inference (around a click, or around the extreme points) and
resizes it to the network's input. Both draw from the structure's mask in ``randomize`` and then cut
or crop every array the same way; their dictionary versions only route keys.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.config import KeysCollection
from monai.transforms import Randomizable, RandomizableTransform, Transform

from carina.interactive.guidance import deepest_point, extreme_points
from carina.interactive.transforms import POINTS_KEY, DrawnFromMaskd
from carina.interactive.window import Window, deepgrow_window


class RandTruncate(RandomizableTransform):
    """Cuts the volume by a random plane through the structure, as an image border cuts it.

    The held-out structures of the shipped data (and many a user's) end at the image border: a
    field of view or a split plane cuts them. With probability ``prob`` this drops the slices on
    one side of a plane across the structure along one random axis, keeping at least
    ``min_keep`` of the structure's voxels, so training sees structures cut in many places. With
    ``max_cuts`` above 1 it cuts 1 to ``max_cuts`` times, each along another axis (a field of
    view and a split plane may both cut one structure); every cut keeps ``min_keep`` of what the
    cuts before it left.

    Args:
        prob: probability of a cut.
        min_keep: the least share of the structure's voxels that stays.
        max_cuts: the most planes, one per axis.
    """

    def __init__(self, prob: float = 0.5, min_keep: float = 0.5, max_cuts: int = 1) -> None:
        RandomizableTransform.__init__(self, prob)
        if not 0.0 < min_keep <= 1.0:
            raise ValueError(f"min_keep must be in (0, 1], not {min_keep}")
        if max_cuts < 1:
            raise ValueError(f"max_cuts must be at least 1, not {max_cuts}")
        self.min_keep = min_keep
        self.max_cuts = max_cuts
        self.cuts: list[tuple[int, slice]] = []

    def randomize(self, data: Any = None) -> None:
        """Draw whether to cut and the planes, from the structure's channel-first mask ``data``
        (each plane is drawn on what the planes before it left)."""
        super().randomize(None)
        self.cuts = []
        if not self._do_transform:
            return
        label = np.asarray(data)[0] > 0
        if self.max_cuts == 1:  # the draws of one cut as they always were: builds reproduce
            axes = [int(self.R.randint(label.ndim))]
        else:
            count = int(self.R.randint(1, min(self.max_cuts, label.ndim) + 1))
            axes = [int(axis) for axis in self.R.permutation(label.ndim)[:count]]
        for axis in axes:
            part = self._plane(label, axis)
            if part is not None:
                self.cuts.append((axis, part))
                label = label[(slice(None),) * axis + (part,)]

    def _plane(self, label: npt.NDArray[np.bool_], axis: int) -> slice | None:
        """The slices kept on one side of a random plane across ``axis`` (None: empty mask)."""
        total = int(label.sum())
        if total == 0:
            return None
        other = tuple(a for a in range(label.ndim) if a != axis)
        counts = label.sum(axis=other)
        if self.R.rand() < 0.5:  # keep from the plane upwards
            kept = np.cumsum(counts[::-1])[::-1]
            starts = np.flatnonzero((kept >= self.min_keep * total) & (counts > 0))
            return slice(int(starts[self.R.randint(len(starts))]), None)
        kept = np.cumsum(counts)
        stops = np.flatnonzero((kept >= self.min_keep * total) & (counts > 0))
        return slice(0, int(stops[self.R.randint(len(stops))]) + 1)

    def __call__(self, img: Any, label: Any = None, randomize: bool = True) -> Any:
        """``img`` cut by the drawn planes (drawn first from ``label``, or ``img``, unless
        ``randomize`` is False)."""
        if randomize:
            self.randomize(img if label is None else label)
        for axis, part in self.cuts:
            img = img[(slice(None),) * (axis + 1) + (part,)]
        return img


class RandTruncated(DrawnFromMaskd):
    """Dictionary version of :class:`RandTruncate`: the planes are drawn from ``label_key`` and
    cut every key.

    Args:
        keys: channel-first arrays to cut (image and label).
        label_key: the binary structure mask.
        prob, min_keep, max_cuts: as :class:`RandTruncate`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        prob: float = 0.5,
        min_keep: float = 0.5,
        max_cuts: int = 1,
    ) -> None:
        self.truncate = RandTruncate(prob=prob, min_keep=min_keep, max_cuts=max_cuts)
        super().__init__(keys, label_key, self.truncate)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize(data[self.label_key])
        if not self.truncate.cuts:
            return dict(data)
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = self.truncate(out[key], randomize=False)
        return out


class InteractionCrop(Randomizable, Transform):
    """Crops the window an interactive model sees, resized to ``roi``, from a channel-first
    array; the user input that window answers is left in :attr:`points` (ROI coordinates).

    Args:
        roi: the network's input size.
        mode: ``"deepgrow"``: a cube of ``window`` millimetres centred on a simulated click inside
            the structure (``points`` = that click), as inference centres it on the user's click;
            ``"extreme"``: the box of the 6 extreme points plus ``padding`` millimetres
            (``points`` = the 6 points).
        window: DeepGrow window edge in millimetres.
        padding: DExtr3D padding in millimetres (converted per axis with the spacing).
        jitter: random shift of the window centre, in voxels (training).
        perturb: random displacement of each extreme point, in voxels (training).
        random: a random deep voxel as the click (training) instead of the deepest one.
    """

    def __init__(
        self,
        roi: Sequence[int] = (48, 48, 48),
        mode: str = "deepgrow",
        window: float = 128.0,
        padding: float = 10.0,
        jitter: int = 0,
        perturb: int = 0,
        random: bool = False,
    ) -> None:
        if mode not in ("deepgrow", "extreme"):
            raise ValueError(f"mode must be 'deepgrow' or 'extreme', not {mode!r}")
        self.roi = tuple(int(v) for v in roi)
        self.mode = mode
        self.window = window
        self.padding = padding
        self.jitter = jitter
        self.perturb = perturb
        self.random = random
        self.box: Window | None = None
        self.points = np.zeros((0, len(self.roi)), dtype=np.float32)

    def randomize(self, data: Any = None) -> None:
        """Draw the window (and the user input it answers) from the structure's channel-first
        mask ``data``, whose affine (a MONAI ``MetaTensor``'s) gives the spacing.

        Raises:
            ValueError: the mask is empty.
        """
        label = np.asarray(data)[0] > 0
        if not label.any():
            raise ValueError("the structure mask is empty")
        spacing = _spacing(data)
        if self.mode == "deepgrow":
            rng = np.random.default_rng(self.R.randint(2**31)) if self.random else None
            click = np.asarray(deepest_point(label, rng), dtype=np.float64)
            shift = self.R.uniform(-self.jitter, self.jitter, label.ndim) if self.jitter else None
            box = deepgrow_window(
                click[None], self.roi, window_mm=self.window, spacing=spacing, shift=shift
            )
            points = click[None]
        else:
            points = np.asarray(extreme_points(label), dtype=np.float64)
            if self.perturb:
                points += self.R.randint(-self.perturb, self.perturb + 1, points.shape)
                points = np.clip(points, 0, np.asarray(label.shape) - 1)
            box = Window.around(
                points.min(0), points.max(0) + 1, self.roi, margin=self.padding / spacing
            )
        self.box = box
        self.points = box.to_roi(points).astype(np.float32)

    def __call__(
        self, img: Any, label: Any = None, randomize: bool = True, mask: bool = False
    ) -> torch.Tensor:
        """The window of ``img`` at ``roi`` (drawn first from ``label``, or ``img``, unless
        ``randomize`` is False). An image is resized linearly and filled beyond its border with
        its window's minimum; a ``mask`` is resized the same way, filled with 0 and thresholded
        at 0.5, so that it stays on the image voxels it labels."""
        if randomize:
            self.randomize(img if label is None else label)
        if self.box is None:
            raise ValueError("InteractionCrop: no window drawn yet (randomize first)")
        tensor = torch.as_tensor(np.asarray(img))
        cropped = self.box.extract(tensor, mode="trilinear", fill=0.0 if mask else None)
        # "nearest" resizing would pick voxels off-centre, shifting the training target by up to
        # half a voxel against the image, which the model would learn.
        return (cropped > 0.5).to(torch.float32) if mask else cropped


class InteractionCropd(DrawnFromMaskd):
    """Dictionary version of :class:`InteractionCrop`: the window is drawn from ``label_key``,
    the first key is cropped as the image and the others as masks, and the user input the window
    answers goes to ``points``.

    Args:
        keys: the image (first) and label keys.
        label_key: the binary structure mask (channel first).
        roi, mode, window, padding, jitter, perturb, random: as :class:`InteractionCrop`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        roi: Sequence[int] = (48, 48, 48),
        mode: str = "deepgrow",
        window: float = 128.0,
        padding: float = 10.0,
        jitter: int = 0,
        perturb: int = 0,
        random: bool = False,
    ) -> None:
        self.cropper = InteractionCrop(roi, mode, window, padding, jitter, perturb, random)
        super().__init__(keys, label_key, self.cropper)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        self.randomize(out[self.label_key])
        out[POINTS_KEY] = self.cropper.points
        for n, key in enumerate(self.key_iterator(out)):
            out[key] = self.cropper(out[key], randomize=False, mask=n > 0)
        return out


def _spacing(image: Any) -> npt.NDArray[np.float64]:
    """Voxel spacing of a channel-first array from its affine (ones when it has none)."""
    affine = getattr(image, "affine", None)
    ndim = image.ndim - 1
    if affine is None:
        return np.ones(ndim)
    matrix = np.asarray(affine, dtype=np.float64)[:3, :ndim]
    spacing: npt.NDArray[np.float64] = np.linalg.norm(matrix, axis=0)
    return spacing
