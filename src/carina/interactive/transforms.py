"""MONAI transforms that prepare interactive-model training samples: labels and guidance.

The pipeline for one structure of one image: ``SelectLabeld`` (binary mask of one label value) ->
``EnsureChannelFirstd`` -> (``KeepStructured`` around a random spatial transform, ``RandTruncated``)
-> ``InteractionCropd`` (:mod:`~carina.interactive.cropping`) -> intensity normalisation ->
``AddGuidanced`` (DeepGrow: foreground and background click channels; DExtr3D: one heat-map
channel of the extreme points); 2D models take one slice (``StructureSliced``).

Each is an array transform with a dictionary version that only routes keys to it, as MONAI's are.
A random one draws its parameters in ``randomize`` (from the structure's mask), then applies them
to every key unchanged.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform

from carina.interactive.guidance import gaussian_map

#: Key under which InteractionCropd leaves the user's points, in ROI coordinates.
POINTS_KEY = "points"


class DrawnFromMaskd(Randomizable, MapTransform):
    """A dictionary transform over a random array transform (``self.array``) that draws its
    parameters from the structure's mask under ``label_key``: it seeds the array transform as
    its own, draws through it once per sample, then applies the draw to every key."""

    array: Randomizable

    def __init__(self, keys: KeysCollection, label_key: str, array: Randomizable) -> None:
        MapTransform.__init__(self, keys)
        self.label_key = label_key
        self.array = array

    def set_random_state(self, seed: int | None = None, state: Any = None) -> DrawnFromMaskd:
        super().set_random_state(seed, state)
        self.array.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw from the structure's channel-first mask ``data``."""
        self.array.randomize(data)


class SelectLabel(Transform):
    """A label map as the binary (uint8) mask of one label value.

    Args:
        value: the label value kept (or given per call).
    """

    def __init__(self, value: int | None = None) -> None:
        self.value = value

    def __call__(self, label: Any, value: int | None = None) -> Any:
        chosen = self.value if value is None else value
        if chosen is None:
            raise ValueError("SelectLabel needs the label value to keep")
        if isinstance(label, torch.Tensor):
            return (label == int(chosen)).to(torch.uint8)
        return (np.asarray(label) == int(chosen)).astype(np.uint8)


class SelectLabeld(MapTransform):
    """Dictionary version of :class:`SelectLabel`: the value is the sample's ``value_key``."""

    def __init__(self, keys: KeysCollection, value_key: str = "label_value") -> None:
        super().__init__(keys)
        self.value_key = value_key
        self.selector = SelectLabel()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        value = int(out[self.value_key])
        for key in self.key_iterator(out):
            out[key] = self.selector(out[key], value)
        return out


class KeepStructured(Randomizable, MapTransform):
    """Runs a random spatial dictionary transform unless it would lose the structure.

    A rotation or zoom can move a small structure near the border out of the volume, which would
    leave nothing to train on. When the transformed mask keeps less than ``min_keep`` of the
    structure's voxels, the sample goes on untransformed. It wraps a dictionary transform (one
    random draw applied to image and label with their own interpolation), as MONAI's own
    wrappers do, so it has no array version.

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
        """Nothing of its own: the wrapped transform draws its parameters when it runs."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        before = float(np.asarray(data[self.label_key]).sum())
        out = dict(self.transform(dict(data)))
        after = float((np.asarray(out[self.label_key]) > 0.5).sum())
        return out if after >= self.min_keep * before and after > 0 else dict(data)


class AddGuidance(Transform):
    """Appends guidance channels to a channel-first image: Gaussian maps of points given in the
    image's (ROI) voxel coordinates.

    ``mode="clicks"``: DeepGrow's foreground and background channels (the points are foreground
    clicks; no background click yet). ``mode="heatmap"``: DExtr3D's one heat-map channel.
    """

    def __init__(self, sigma: float = 2.0, mode: str = "clicks") -> None:
        if mode not in ("clicks", "heatmap"):
            raise ValueError(f"mode must be 'clicks' or 'heatmap', not {mode!r}")
        self.sigma = sigma
        self.mode = mode

    def __call__(self, img: Any, points: npt.ArrayLike | None = None) -> torch.Tensor:
        if points is None:
            raise ValueError("AddGuidance needs the points of the guidance")
        image = torch.as_tensor(img).float()
        maps = [gaussian_map(image.shape[1:], points, self.sigma)]
        if self.mode == "clicks":
            maps.append(np.zeros(image.shape[1:], dtype=np.float32))
        guidance = torch.from_numpy(np.stack(maps))
        return torch.cat([image[:1], guidance], dim=0)


class AddGuidanced(MapTransform):
    """Dictionary version of :class:`AddGuidance`: the points are taken (and removed) from
    ``points_key``, where :class:`~carina.interactive.cropping.InteractionCropd` left them."""

    def __init__(
        self,
        image_key: str = "image",
        points_key: str = POINTS_KEY,
        sigma: float = 2.0,
        mode: str = "clicks",
    ) -> None:
        super().__init__([image_key])
        self.image_key = image_key
        self.points_key = points_key
        self.guidance = AddGuidance(sigma=sigma, mode=mode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        points = np.asarray(out.pop(self.points_key))
        out[self.image_key] = self.guidance(out[self.image_key], points)
        return out


class StructureSlice(Randomizable, Transform):
    """One slice along the last axis through the structure, for 2D models.

    Args:
        random: a random slice through the structure (training), else its largest slice.
    """

    def __init__(self, random: bool = True) -> None:
        self.random = random
        self.index = 0

    def randomize(self, data: Any = None) -> None:
        """Pick the slice from the structure's channel-first mask ``data``.

        Raises:
            ValueError: the mask is empty.
        """
        label = np.asarray(data)[0] > 0
        areas = label.reshape(-1, label.shape[-1]).sum(axis=0)
        slices = np.flatnonzero(areas)
        if len(slices) == 0:
            raise ValueError("the structure mask is empty")
        self.index = (
            int(slices[self.R.randint(len(slices))]) if self.random else int(areas.argmax())
        )

    def __call__(self, img: Any, label: Any = None, randomize: bool = True) -> Any:
        if randomize:
            self.randomize(img if label is None else label)
        return img[..., self.index]


class StructureSliced(DrawnFromMaskd):
    """Dictionary version of :class:`StructureSlice`: the slice is picked from ``label_key`` and
    taken from every key."""

    def __init__(self, keys: KeysCollection, label_key: str = "label", random: bool = True) -> None:
        self.slicer = StructureSlice(random=random)
        super().__init__(keys, label_key, self.slicer)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        self.randomize(out[self.label_key])
        for key in self.key_iterator(out):
            out[key] = self.slicer(out[key], randomize=False)
        return out
