"""The protocol every model kind implements, and the typed objects that cross it.

An API route turns its wire parameters into an :class:`InferenceRequest`, asks the model's
:class:`Runner` to run it, and encodes the :class:`InferenceResult` its own way. A
:class:`ModelKind` says how to load a runner from an archive, what guidance the kind takes, what a
serving config needs to be servable, and how the kind is scored on held-out data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from carina.archive.schema import ServingConfig
from carina.errors import ConfigError, GuidanceError
from carina.settings import DEFAULT_MAX_WORK_BYTES

if TYPE_CHECKING:
    from carina.archive import Archive
    from carina.engine.evaluate import ScorerFactory
    from carina.io import Volume

#: A voxel index ``[i, j, k]`` (``[i, j]`` in 2D) of the request's image.
Point = tuple[int, ...]


class Guidance(StrEnum):
    """What a user gives a model besides the image."""

    NONE = "none"
    """Nothing: automatic segmentation."""
    CLICKS = "clicks"
    """Foreground and background clicks (DeepGrow)."""
    EXTREME_POINTS = "extreme_points"
    """At least 6 extreme points of the structure (DExtr3D)."""


@dataclass(frozen=True)
class InferenceRequest:
    """One image and the user's guidance, parsed from any API's parameters.

    Attributes:
        image: the image, as read.
        foreground: clicks inside the structure.
        background: clicks outside it.
        extreme_points: the structure's extreme points.
        current_point: the click that selects the slice of a 2D model.
        label: the structure the clicks are for, in a model of several (DeepEdit); None: its
            first.
        spatial_size: the window a DeepGrow model looks at, in voxels (default: the model's).
        max_work_bytes: the working memory the request may ask for (estimated before running).
    """

    image: Volume
    foreground: tuple[Point, ...] = ()
    background: tuple[Point, ...] = ()
    extreme_points: tuple[Point, ...] = ()
    current_point: Point | None = None
    label: str | None = None
    spatial_size: tuple[int, ...] | None = None
    max_work_bytes: int = DEFAULT_MAX_WORK_BYTES


@dataclass
class InferenceResult:
    """A label map on the request image's grid, and how it was made.

    Attributes:
        label: the label map (value n is ``spec.labels[n - 1]``; interactive kinds give 0/1).
        crop: the part of the image the model looked at, half-open ``[[i0, i1], [j0, j1], ...]``
            (interactive kinds), else None.
        timings: seconds per stage (``read``, ``pre``, ``infer``, ``post``).
        warnings: what the user should know about the result (an image of another modality
            than the model's).
    """

    label: Volume
    crop: list[list[int]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Runner(Protocol):
    """A loaded model of some kind, ready to answer requests (thread-safe for one at a time)."""

    spec: ServingConfig

    def run(self, request: InferenceRequest) -> InferenceResult:
        """Run the model on one request.

        Raises:
            GuidanceError: guidance the model cannot use (too few points, outside the image).
            ImageReadError, ArchiveError: the image or the model's output is unusable.
        """
        ...

    def memory_bytes(self) -> int:
        """About how much memory the loaded model holds (for the registry's budget)."""
        ...


class NetworkRunner:
    """What the runners of network kinds share: a loaded predictor (with its serving
    ``settings`` and its ``network``), the spec it serves, and its memory."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.spec: ServingConfig = predictor.settings

    def memory_bytes(self) -> int:
        """The network's share of memory."""
        from carina.engine.network import network_bytes

        return network_bytes(self.predictor.network)


def check_request(request: InferenceRequest, spec: ServingConfig) -> None:
    """What every kind needs of a request before it runs: a greyscale image with as many
    spatial axes as the model works in (a 2D model also takes the slices of a 3D image), and a
    ``spatial_size`` of that many sizes.

    Raises:
        ImageReadError: an image the model cannot take.
        GuidanceError: a ``spatial_size`` of the wrong length.
    """
    from carina.engine.fit import check_dimensions

    image = request.image
    dimensions = spec.dimensions or 3
    check_dimensions(image, dimensions)
    size = request.spatial_size
    if size is not None and len(size) not in (dimensions, image.spatial_ndim):
        raise GuidanceError(
            f"spatial_size needs {dimensions} sizes for this {dimensions}D model, got {list(size)}"
        )


def serving_file(archive: Archive) -> str:
    """The name of the file an archive's serving config comes from, for error messages."""
    layout = archive.layout
    return layout.bundle_metadata.name if archive.kind == "bundle" else layout.serving_config.name


def needs_network(archive: Archive, spec: ServingConfig) -> None:
    """The check of the kinds that run a network: the serving config defines one (itself, or
    through ``config_train.json``), the archive holds TorchScript, or it is a Bundle or an
    nnU-Net folder.

    Raises:
        ConfigError: no network anywhere.
    """
    own_config = archive.kind in ("bundle", "nnunet")
    if spec.network_def is None and not own_config and not archive.layout.torchscript.is_file():
        raise ConfigError(
            serving_file(archive),
            "network_def",
            "required when there is no config_train.json or models/model.ts",
        )


@dataclass(frozen=True)
class ModelKind:
    """One kind of model, as the server and the engine see it.

    Attributes:
        name: the serving config's ``type`` this kind serves.
        guidance: what a user gives the model besides the image.
        load: builds the runner from an archive, on a device (None: CUDA when present).
        check: raises :class:`~carina.errors.ConfigError` (naming the file and key) when a
            valid serving config still cannot be served by this kind; reads files, not torch.
        scorer: builds the validation scorer of an archive of this kind (None: not scored).
        monai_label_type: the model ``type`` MONAI Label's clients see in ``/info/``, which
            decides where the Slicer and OHIF plugins offer it (``segmentation``: automatic;
            ``deepgrow``: foreground and background points).
    """

    name: str
    guidance: Guidance
    load: Callable[[Archive, str | None], Runner]
    check: Callable[[Archive, ServingConfig], None] = needs_network
    scorer: ScorerFactory | None = None
    monai_label_type: str = "segmentation"
