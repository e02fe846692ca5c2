"""The shipped datasets: real images with label maps, and their held-out split.

Each dataset is one subject, so validation uses the half of the volume that training never sees:
the volume is cut at the middle voxel plane of the patient's left-right axis; the lower-index half
trains and the other half is held out (DESIGN.md, "Contracts between the parts").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from carina.data.sources import SAMPLES, locate_sample, sample_available
from carina.errors import DatasetError
from carina.io import ImageFormat, Volume, VolumeMeta, load_volume


@dataclass(frozen=True)
class Case:
    """An image and its label map on the same grid."""

    image: Volume
    label: Volume


@dataclass(frozen=True)
class Split:
    """A case cut in two along its left-right axis."""

    train: Case
    heldout: Case
    axis: int
    index: int
    axis_code: str


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset built from shipped files.

    Attributes:
        name: the dataset's name (``spine_ct``...).
        description: one line for ``carina data list``.
        modality: ``CT`` or ``MR``.
        labels: label value -> name, background included.
        samples: the shipped files it is built from.
        build: makes the full-volume case.
    """

    name: str
    description: str
    modality: str
    labels: dict[int, str]
    samples: tuple[str, ...]
    build: Callable[[], Case] = field(repr=False)

    @property
    def available(self) -> bool:
        """True when every shipped file it needs is installed."""
        return all(sample_available(name) for name in self.samples)

    @property
    def licences(self) -> list[str]:
        """The licence notices of its source files."""
        return sorted({SAMPLES[name].licence for name in self.samples})


def _remap(values: npt.NDArray[np.integer], mapping: dict[int, int]) -> npt.NDArray[np.uint8]:
    lookup = np.zeros(int(values.max()) + 1, dtype=np.uint8)
    for source, target in mapping.items():
        if source < lookup.size:
            lookup[source] = target
    remapped: npt.NDArray[np.uint8] = lookup[values]
    return remapped


def _spine_case(image: str, mask: str, mapping: dict[int, int]) -> Callable[[], Case]:
    def build() -> Case:
        volume = load_volume(locate_sample(image))
        source = load_volume(locate_sample(mask))
        if source.shape != volume.shape or not np.allclose(source.affine, volume.affine, atol=1e-4):
            raise DatasetError(f"{mask} is not on the grid of {image}")
        return Case(volume, volume.with_array(_remap(np.asarray(source.array), mapping)))

    return build


def _brain_case() -> Case:
    """MNI152 2009a at 2 mm: 2x2x2 block means of the 1 mm T1 and tissue probability maps."""
    t1 = load_volume(locate_sample("mni152_t1"))
    gm = _block_mean(load_volume(locate_sample("mni152_gm")).array) / 255.0
    wm = _block_mean(load_volume(locate_sample("mni152_wm")).array) / 255.0
    label = np.zeros(gm.shape, dtype=np.uint8)
    label[(gm >= 0.5) & (gm >= wm)] = 1
    label[(wm >= 0.5) & (wm > gm)] = 2
    # Voxel (0, 0, 0) of the 2 mm grid is the centre of the 1 mm block [0:2, 0:2, 0:2].
    affine = t1.affine @ np.array(
        [[2.0, 0, 0, 0.5], [0, 2.0, 0, 0.5], [0, 0, 2.0, 0.5], [0, 0, 0, 1.0]]
    )
    meta = VolumeMeta(format=ImageFormat.NIFTI, modality="MR")
    image = Volume(array=_block_mean(t1.array).astype(np.float32), affine=affine, meta=meta)
    return Case(image, image.with_array(label))


def _block_mean(array: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    x, y, z = (n // 2 * 2 for n in array.shape[:3])
    blocks = np.asarray(array[:x, :y, :z], dtype=np.float64).reshape(
        x // 2, 2, y // 2, 2, z // 2, 2
    )
    means: npt.NDArray[np.float64] = blocks.mean(axis=(1, 3, 5))
    return means


_CT_SAMPLES = ("spine_ct_image", "spine_ct_vertebrae")
_MR_SAMPLES = ("spine_mr_image", "spine_mr_vertebrae")
_CT_MAPPING = {21: 1, 22: 2, 23: 3}
_MR_MAPPING = {5: 1, 6: 2, 7: 3, 105: 4, 205: 4, 106: 5, 206: 5, 207: 3}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "spine_ct",
            "lumbar spine CT (tptbox): three vertebrae",
            "CT",
            {0: "background", 1: "L2", 2: "L3", 3: "L4"},
            _CT_SAMPLES,
            _spine_case(*_CT_SAMPLES, _CT_MAPPING),
        ),
        DatasetSpec(
            "spine_mr",
            "cervical spine T2w MR (tptbox): three vertebrae and two discs",
            "MR",
            {0: "background", 1: "C5", 2: "C6", 3: "C7", 4: "disc C5-C6", 5: "disc C6-C7"},
            _MR_SAMPLES,
            _spine_case(*_MR_SAMPLES, _MR_MAPPING),
        ),
        DatasetSpec(
            "spine_ct_vertebra",
            "lumbar spine CT (tptbox): vertebra vs background",
            "CT",
            {0: "background", 1: "vertebra"},
            _CT_SAMPLES,
            _spine_case(*_CT_SAMPLES, dict.fromkeys(_CT_MAPPING, 1)),
        ),
        DatasetSpec(
            "spine_mr_vertebra",
            "cervical spine T2w MR (tptbox): vertebra vs background, discs as background",
            "MR",
            {0: "background", 1: "vertebra"},
            _MR_SAMPLES,
            _spine_case(*_MR_SAMPLES, {k: 1 for k, v in _MR_MAPPING.items() if v <= 3}),
        ),
        DatasetSpec(
            "brain_mr",
            "MNI152 2009a T1 at 2 mm (nilearn): grey and white matter",
            "MR",
            {0: "background", 1: "grey matter", 2: "white matter"},
            ("mni152_t1", "mni152_gm", "mni152_wm"),
            _brain_case,
        ),
    ]
}


def get_dataset(name: str) -> DatasetSpec:
    """The dataset called ``name``.

    Raises:
        DatasetError: for an unknown name.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def split_heldout(case: Case, labels: dict[int, str]) -> Split:
    """Cut a case at the middle voxel plane of its left-right axis.

    Raises:
        DatasetError: the volume has no left-right axis, or a label is missing from a half.
    """
    codes = case.label.axis_codes
    axes = [axis for axis, code in enumerate(codes) if code in "LR"]
    if not axes:
        raise DatasetError(f"the volume has no left-right axis (axis codes {''.join(codes)})")
    axis = axes[0]
    size = case.label.shape[axis]
    middle = size // 2
    halves = [
        Case(case.image.crop(axis, start, stop), case.label.crop(axis, start, stop))
        for start, stop in ((0, middle), (middle, size))
    ]
    for half, which in zip(halves, ("training", "held-out"), strict=True):
        present = set(np.unique(half.label.array).tolist())
        missing = sorted(set(labels) - present)
        if missing:
            names = ", ".join(labels[value] for value in missing)
            raise DatasetError(f"the {which} half has no voxel of: {names}")
    return Split(halves[0], halves[1], axis=axis, index=middle, axis_code=codes[axis])
