"""MONAI dictionary transforms that prepare interactive-model training samples.

The pipeline for one structure of one image: ``SelectLabeld`` (binary mask of one label value) ->
``EnsureChannelFirstd`` -> ``InteractionCropd`` (a window around the structure, or around its
extreme points plus padding in mm, resized to the ROI) -> intensity normalisation ->
``AddGuidanced`` (DeepGrow: foreground and background click channels; DExtr3D: one
heat-map channel of the extreme points).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from carina.interactive.guidance import deepest_point, extreme_points, gaussian_map
from carina.interactive.window import Window

#: Key under which InteractionCropd leaves the extreme points, in ROI coordinates.
POINTS_KEY = "points"


def _spacing(image: Any) -> np.ndarray[Any, Any]:
    affine = getattr(image, "affine", None)
    ndim = image.ndim - 1
    if affine is None:
        return np.ones(ndim)
    matrix = np.asarray(affine, dtype=np.float64)[:3, :ndim]
    spacing: np.ndarray[Any, Any] = np.linalg.norm(matrix, axis=0)
    return spacing


class SelectLabeld(MapTransform):
    """Turns a label map into the binary mask of the value stored under ``value_key``."""

    def __init__(self, keys: KeysCollection, value_key: str = "label_value") -> None:
        super().__init__(keys)
        self.value_key = value_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        value = int(out[self.value_key])
        for key in self.key_iterator(out):
            label = out[key]
            out[key] = (
                (label == value).to(torch.uint8)
                if isinstance(label, torch.Tensor)
                else (np.asarray(label) == value).astype(np.uint8)
            )
        return out


class KeepStructured(Randomizable, MapTransform):
    """Runs a random spatial transform unless it would lose the structure.

    A rotation or zoom can move a small structure near the border out of the volume, which would
    leave nothing to train on. When the transformed mask keeps less than ``min_keep`` of the
    structure's voxels, the sample goes on untransformed.

    Args:
        transform: the dictionary transform to run (e.g. ``RandAffined`` on image and label).
        label_key: the binary structure mask.
        min_keep: the least share of the structure's voxels that must remain.
    """

    def __init__(self, transform: Any, label_key: str = "label", min_keep: float = 0.5) -> None:
        MapTransform.__init__(self, [label_key])
        self.transform = transform
        self.label_key = label_key
        self.min_keep = min_keep

    def set_random_state(self, seed: int | None = None, state: Any = None) -> KeepStructured:
        super().set_random_state(seed, state)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """The wrapped transform draws its own parameters."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        before = float(np.asarray(data[self.label_key]).sum())
        out = dict(self.transform(dict(data)))
        after = float((np.asarray(out[self.label_key]) > 0.5).sum())
        return out if after >= self.min_keep * before and after > 0 else dict(data)


class RandTruncated(Randomizable, MapTransform):
    """Cuts the volume by a random plane through the structure, as an image border cuts it.

    The held-out structures of the shipped data (and many a user's) end at the image border: a
    field of view or a split plane cuts them. With probability ``prob`` this drops the slices on
    one side of a plane across the structure along one random axis, keeping at least
    ``min_keep`` of the structure's voxels, so training sees structures cut in many places. With
    ``max_cuts`` above 1 it cuts 1 to ``max_cuts`` times, each along another axis (a field of
    view and a split plane may both cut one structure); every cut keeps ``min_keep`` of what the
    cuts before it left.

    Args:
        keys: channel-first arrays to cut (image and label).
        label_key: the binary structure mask.
        prob: probability of a cut.
        min_keep: the least share of the structure's voxels that stays.
        max_cuts: the most planes, one per axis.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        prob: float = 0.5,
        min_keep: float = 0.5,
        max_cuts: int = 1,
    ) -> None:
        MapTransform.__init__(self, keys)
        if not 0.0 < min_keep <= 1.0:
            raise ValueError(f"min_keep must be in (0, 1], not {min_keep}")
        if max_cuts < 1:
            raise ValueError(f"max_cuts must be at least 1, not {max_cuts}")
        self.label_key = label_key
        self.prob = prob
        self.min_keep = min_keep
        self.max_cuts = max_cuts

    def randomize(self, data: Any = None) -> None:
        """Nothing to draw ahead: the plane is sampled in ``__call__``."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        if self.R.rand() >= self.prob:
            return out
        ndim = np.asarray(out[self.label_key]).ndim - 1
        if self.max_cuts == 1:  # the draws of one cut as they always were: builds reproduce
            return self._cut(out, int(self.R.randint(ndim)))
        cuts = int(self.R.randint(1, min(self.max_cuts, ndim) + 1))
        for axis in self.R.permutation(ndim)[:cuts]:
            out = self._cut(out, int(axis))
        return out

    def _cut(self, out: dict[Hashable, Any], axis: int) -> dict[Hashable, Any]:
        """Drops the slices on one side of a plane across ``axis``, keeping ``min_keep``."""
        label = np.asarray(out[self.label_key])[0] > 0
        total = int(label.sum())
        if total == 0:
            return out
        other = tuple(a for a in range(label.ndim) if a != axis)
        counts = label.sum(axis=other)
        if self.R.rand() < 0.5:  # keep from the plane upwards
            kept = np.cumsum(counts[::-1])[::-1]
            starts = np.flatnonzero((kept >= self.min_keep * total) & (counts > 0))
            part = slice(int(starts[self.R.randint(len(starts))]), None)
        else:  # keep up to the plane
            kept = np.cumsum(counts)
            stops = np.flatnonzero((kept >= self.min_keep * total) & (counts > 0))
            part = slice(0, int(stops[self.R.randint(len(stops))]) + 1)
        index = (slice(None),) * (axis + 1) + (part,)
        for key in self.key_iterator(out):
            out[key] = out[key][index]
        return out


class InteractionCropd(Randomizable, MapTransform):
    """Crops image and label to the window an interactive model sees, resized to ``roi``, and
    leaves the user input that window answers, in ROI coordinates, under ``points``.

    Args:
        keys: the image (first) and label keys.
        label_key: the binary structure mask (channel first).
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
        MapTransform.__init__(self, keys)
        if mode not in ("deepgrow", "extreme"):
            raise ValueError(f"mode must be 'deepgrow' or 'extreme', not {mode!r}")
        self.label_key = label_key
        self.roi = tuple(int(v) for v in roi)
        self.mode = mode
        self.window = window
        self.padding = padding
        self.jitter = jitter
        self.perturb = perturb
        self.random = random

    def randomize(self, data: Any = None) -> None:
        """Nothing to draw ahead: the window is sampled in ``__call__``."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        label = np.asarray(out[self.label_key])[0] > 0
        ndim = label.ndim
        if not label.any():
            raise ValueError("the structure mask is empty")
        spacing = _spacing(out[self.label_key])
        if self.mode == "deepgrow":
            rng = np.random.default_rng(self.R.randint(2**31)) if self.random else None
            click = np.asarray(deepest_point(label, rng), dtype=np.float64)
            shift = self.R.uniform(-self.jitter, self.jitter, ndim) if self.jitter else None
            window = deepgrow_window(
                click[None], self.roi, window_mm=self.window, spacing=spacing, shift=shift
            )
            points = click[None]
        else:
            points = np.asarray(extreme_points(label), dtype=np.float64)
            if self.perturb:
                points += self.R.randint(-self.perturb, self.perturb + 1, points.shape)
                points = np.clip(points, 0, np.asarray(label.shape) - 1)
            window = Window.around(
                points.min(0), points.max(0) + 1, self.roi, margin=self.padding / spacing
            )
        out[POINTS_KEY] = window.to_roi(points).astype(np.float32)
        # The label is resized like the image and the prediction (linear, voxel centres aligned)
        # and then thresholded: "nearest" resizing picks voxels off-centre, shifting the training
        # target by up to half a voxel against the image, which the model would learn.
        first = True
        for key in self.key_iterator(out):
            tensor = torch.as_tensor(np.asarray(out[key]))
            cropped = window.extract(tensor, mode="trilinear", fill=None if first else 0.0)
            out[key] = cropped if first else (cropped > 0.5).to(torch.float32)
            first = False
        return out


def deepgrow_window(
    clicks: np.ndarray[Any, Any],
    roi: Sequence[int],
    *,
    window_mm: float,
    spacing: np.ndarray[Any, Any],
    margin: float = 0.0,
    shift: np.ndarray[Any, Any] | None = None,
    size: Sequence[int] | None = None,
) -> Window:
    """The DeepGrow window: a cube of ``window_mm`` (or ``size`` voxels) centred on the first
    click, grown per axis, still centred there, until every click lies ``margin`` voxels inside.

    Training centres the window on the one simulated first click, so inference keeps it there:
    re-centring on all the clicks would move the structure off the centre the model has learnt
    (a corrective click at the tip of a process shifted it by a quarter of the window).
    """
    first = clicks[0]
    base = np.asarray(size, np.float64) if size is not None else window_mm / spacing
    spread = np.abs(clicks - first).max(0)
    return Window.around(
        first,
        first + 1,
        roi,
        margin=[margin] * len(roi),
        min_size=np.maximum(base, 2 * (spread + margin) + 1),
        shift=shift,
    )


class AddGuidanced(MapTransform):
    """Appends the guidance channels of the points under ``points_key`` (ROI coordinates).

    ``mode="clicks"``: DeepGrow's foreground and background channels (the points are foreground
    clicks; no background click yet). ``mode="heatmap"``: DExtr3D's one heat-map channel.
    """

    def __init__(
        self,
        image_key: str = "image",
        points_key: str = POINTS_KEY,
        sigma: float = 2.0,
        mode: str = "clicks",
    ) -> None:
        super().__init__([image_key])
        if mode not in ("clicks", "heatmap"):
            raise ValueError(f"mode must be 'clicks' or 'heatmap', not {mode!r}")
        self.image_key = image_key
        self.points_key = points_key
        self.sigma = sigma
        self.mode = mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        image = torch.as_tensor(out[self.image_key]).float()
        points = np.asarray(out.pop(self.points_key))
        maps = [gaussian_map(image.shape[1:], points, self.sigma)]
        if self.mode == "clicks":
            maps.append(np.zeros(image.shape[1:], dtype=np.float32))
        guidance = torch.from_numpy(np.stack(maps))
        out[self.image_key] = torch.cat([image[:1], guidance], dim=0)
        return out


class StructureSliced(Randomizable, MapTransform):
    """Takes one slice along the last axis through the structure, for 2D models.

    Args:
        keys: channel-first arrays to slice (image and label).
        label_key: the binary structure mask.
        random: a random slice through the structure (training), else its largest slice.
    """

    def __init__(self, keys: KeysCollection, label_key: str = "label", random: bool = True) -> None:
        MapTransform.__init__(self, keys)
        self.label_key = label_key
        self.random = random

    def randomize(self, data: Any = None) -> None:
        """Nothing to draw ahead: the slice is sampled in ``__call__``."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        label = np.asarray(out[self.label_key])[0] > 0
        areas = label.reshape(-1, label.shape[-1]).sum(axis=0)
        slices = np.flatnonzero(areas)
        if len(slices) == 0:
            raise ValueError("the structure mask is empty")
        k = int(slices[self.R.randint(len(slices))]) if self.random else int(np.argmax(areas))
        for key in self.key_iterator(out):
            out[key] = out[key][..., k]
        return out
