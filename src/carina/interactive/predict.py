"""Inference of interactive models: DeepGrow from clicks, DExtr3D from extreme points.

Both crop a window around the user's points (DeepGrow: centred on the first foreground click, at
least the model's window, and holding every foreground click plus a margin; DExtr3D: the points'
box plus ``padding`` millimetres), resize it to the ROI, add the guidance channels, run the
network, and paste the mask back into the full image grid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from carina.archive import Archive, ModelType, ServingConfig
from carina.engine.network import load_network, pick_device
from carina.errors import GuidanceError
from carina.interactive.guidance import gaussian_map
from carina.interactive.window import Window, deepgrow_window
from carina.io import Volume
from carina.limits import check_cancelled, check_work
from carina.settings import DEFAULT_MAX_WORK_BYTES

Points = Sequence[Sequence[int]]


@dataclass
class InteractiveResult:
    """A mask on the input's grid, the region the model looked at, and the time per stage."""

    volume: Volume
    crop: list[list[int]]
    timings: dict[str, float] = field(default_factory=dict)
    #: how many windows the network saw (more than one when the mask reached the first's edge)
    windows: int = 1


class InteractivePredictor:
    """Runs a DeepGrow (``deepgrow``) or DExtr3D (``annotation``) archive.

    Args:
        network: the trained network (guidance channels after the image channel).
        preprocessing: callable on ``{"image": crop}`` (intensity normalisation of the window).
        settings: the serving settings (``roi``, ``sigma``, ``margin``/``padding``, ``deepgrow``).
        device: where the network runs.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        preprocessing: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        settings: ServingConfig,
        device: torch.device,
    ) -> None:
        if settings.type not in (ModelType.DEEPGROW, ModelType.ANNOTATION) or not settings.roi:
            raise GuidanceError(f"not an interactive model with a roi: {settings.type}")
        self.network = network.to(device).eval()
        self.preprocessing = preprocessing
        self.settings = settings
        self.device = device
        self.roi = tuple(settings.roi)
        self.sigma = _setting(settings.sigma, "sigma")

    @classmethod
    def from_archive(cls, archive: Archive, *, device: str | None = None) -> InteractivePredictor:
        """Build the predictor of an interactive archive."""
        from monai.transforms import Compose

        pipeline = archive.serving_pipeline()
        resolved, settings = pipeline.resolved, pipeline.settings
        network = load_network(
            resolved,
            archive.layout.root / settings.model_file,
            torchscript=archive.layout.torchscript,
            onnx=archive.layout.onnx,
        )
        items = (
            resolved.instantiate("preprocessing") if resolved.content.get("preprocessing") else []
        )
        return cls(network, Compose(items), settings=settings, device=pick_device(device))

    @property
    def is_2d(self) -> bool:
        """True for a 2D DeepGrow model (it works on one slice)."""
        return len(self.roi) == 2

    def deepgrow(
        self,
        volume: Volume,
        foreground: Points,
        background: Points = (),
        *,
        current_point: Sequence[int] | None = None,
        spatial_size: Sequence[int] | None = None,
        max_work_bytes: int = DEFAULT_MAX_WORK_BYTES,
    ) -> InteractiveResult:
        """Segment the structure the foreground clicks are in; background clicks exclude.

        The model looks at a window centred on the first foreground click, as in training: a cube
        of the model's ``window`` millimetres, or ``spatial_size`` voxels when given, grown to hold
        the later foreground clicks plus the margin. A 2D model segments only
        slice ``current_point[2]`` (else the last foreground click's).

        Raises:
            GuidanceError: no foreground click, a click outside the image, or a window over
                ``max_work_bytes`` of working memory.
        """
        if self.is_2d:
            return self._deepgrow_2d(
                volume, foreground, background, current_point, spatial_size, max_work_bytes
            )
        fg = _checked(foreground, volume.shape, "foreground", minimum=1)
        bg = _checked(background, volume.shape, "background", minimum=0)
        image = torch.from_numpy(_native(volume.array))[None]
        window = self._deepgrow_window(fg, volume.spacing, spatial_size)
        return self._run(
            image,
            window,
            lambda box: self._click_maps(box, fg, bg),
            volume,
            centre=np.asarray(fg[0], np.float64),
            max_work_bytes=max_work_bytes,
        )

    def _deepgrow_2d(
        self,
        volume: Volume,
        foreground: Points,
        background: Points,
        current_point: Sequence[int] | None,
        spatial_size: Sequence[int] | None,
        max_work_bytes: int,
    ) -> InteractiveResult:
        """2D DeepGrow on slice ``current_point[2]`` of a volume (else the last foreground
        click's), or on a planar image (a PNG), whose clicks are ``[i, j]`` (or ``[i, j, 0]``)."""
        planar = len(volume.shape) == 2
        shape = (*volume.shape, 1) if planar else volume.shape
        fg = _checked(_on_plane(foreground, planar), shape, "foreground", minimum=1)
        bg = _checked(_on_plane(background, planar), shape, "background", minimum=0)
        k = int(current_point[2]) if current_point is not None and not planar else int(fg[-1][2])
        if not 0 <= k < shape[2]:
            raise GuidanceError(f"current_point slice {k} is outside the image")
        fg = [p for p in fg if p[2] == k]
        bg = [p for p in bg if p[2] == k]
        if not fg:
            raise GuidanceError(f"no foreground click on slice {k}")
        image = torch.from_numpy(_native(volume.array))[None]
        plane = image if planar else image[..., k]
        size = list(spatial_size)[:2] if spatial_size is not None else None
        result, window, timings = self._run_deepgrow(
            plane, [p[:2] for p in fg], [p[:2] for p in bg], volume.spacing[:2], size,
            max_work_bytes,
        )  # fmt: skip
        if planar:
            return InteractiveResult(volume.with_array(result), window.clipped(shape[:2]), timings)
        mask = np.zeros(volume.shape, dtype=np.uint8)
        mask[:, :, k] = result
        crop = [*window.clipped(shape[:2]), [k, k + 1]]
        return InteractiveResult(volume.with_array(mask), crop, timings)

    def dextr3d(
        self, volume: Volume, points: Points, *, max_work_bytes: int = DEFAULT_MAX_WORK_BYTES
    ) -> InteractiveResult:
        """Segment the structure whose extreme points (at least 6) the user placed.

        Raises:
            GuidanceError: fewer than 6 points, a point outside the image, or a window over
                ``max_work_bytes`` of working memory.
        """
        checked = _checked(points, volume.shape, "extreme", minimum=6)
        padding = _setting(self.settings.padding, "padding")
        spacing = np.asarray(volume.spacing[: len(self.roi)], np.float64)
        array = np.asarray(checked, dtype=np.float64)
        window = Window.around(array.min(0), array.max(0) + 1, self.roi, margin=padding / spacing)
        image = torch.from_numpy(_native(volume.array))[None]
        return self._run(
            image,
            window,
            lambda box: [gaussian_map(self.roi, box.to_roi(checked), self.sigma)],
            volume,
            centre=(array.min(0) + array.max(0)) / 2,
            max_work_bytes=max_work_bytes,
        )

    def _run_deepgrow(
        self,
        image: torch.Tensor,
        fg: list[tuple[int, ...]],
        bg: list[tuple[int, ...]],
        spacing: Sequence[float],
        size: Sequence[int] | None,
        max_work_bytes: int,
    ) -> tuple[np.ndarray[Any, Any], Window, dict[str, float]]:
        """A 2D DeepGrow slice: one window, no growth."""
        window = self._deepgrow_window(fg, spacing, size)
        timings: dict[str, float] = {}
        shape = tuple(image.shape[1:])
        probability = self._probability(
            image, window, self._click_maps(window, fg, bg), shape, max_work_bytes, timings
        )
        start = time.perf_counter()
        mask = window.paste_mask(probability, shape)
        timings["post"] = time.perf_counter() - start
        return mask, window, timings

    def _deepgrow_window(
        self, fg: list[tuple[int, ...]], spacing: Sequence[float], size: Sequence[int] | None
    ) -> Window:
        return deepgrow_window(
            np.asarray(fg, dtype=np.float64),
            self.roi,
            window_mm=_setting(self.settings.window, "window"),
            spacing=np.asarray(spacing, dtype=np.float64),
            margin=_setting(self.settings.margin, "margin"),
            size=size,
        )

    def _click_maps(
        self, window: Window, fg: list[tuple[int, ...]], bg: list[tuple[int, ...]]
    ) -> list[np.ndarray[Any, Any]]:
        return [
            gaussian_map(self.roi, window.to_roi(fg), self.sigma),
            gaussian_map(self.roi, window.to_roi(bg) if bg else [], self.sigma),
        ]

    def _run(
        self,
        image: torch.Tensor,
        window: Window,
        guidance: Callable[[Window], list[np.ndarray[Any, Any]]],
        volume: Volume,
        *,
        centre: np.ndarray[Any, Any],
        max_work_bytes: int,
    ) -> InteractiveResult:
        """Run the network on ``window``; while the mask touches an edge of the window that lies
        inside the image (its last ROI voxel: the structure goes on beyond it), grow the window
        around ``centre`` (at most ``grow_steps`` times, up to ``max_window`` mm) and run again.
        The grown window holds the smaller one, so its mask is the answer."""
        timings: dict[str, float] = {}
        shape = volume.shape
        spacing = np.asarray(volume.spacing[: len(self.roi)], np.float64)
        limit = _setting(self.settings.max_window, "max_window") / spacing
        probability = self._probability(
            image, window, guidance(window), shape, max_work_bytes, timings
        )
        windows = 1
        for _ in range(self.settings.grow_steps):
            border = float(np.max(1 / window.scale))  # one ROI voxel
            bigger = window.grown(probability, shape, centre=centre, border=border, limit=limit)
            if bigger is None:
                break
            window, windows = bigger, windows + 1
            probability = self._probability(
                image, window, guidance(window), shape, max_work_bytes, timings
            )
        start = time.perf_counter()
        mask = window.paste_mask(probability, shape)
        timings["post"] = time.perf_counter() - start
        return InteractiveResult(
            volume.with_array(mask), window.clipped(shape), timings, windows=windows
        )

    def _probability(
        self,
        image: torch.Tensor,
        window: Window,
        guidance: list[np.ndarray[Any, Any]],
        shape: tuple[int, ...],
        max_work_bytes: int,
        timings: dict[str, float],
    ) -> torch.Tensor:
        """The network's foreground probability on ``window`` (``roi``-sized, on the CPU); the
        seconds are added to ``timings`` under ``pre`` and ``infer``."""
        # The window is cut out and resized back at its size in image voxels (float32, twice).
        window_bytes = 8 * math.prod(window.size) + 4 * math.prod(shape)
        check_work(window_bytes, max_work_bytes, f"a window of {list(window.size)} voxels")
        start = time.perf_counter()
        window_image = window.extract(image, fill=None)
        crop = self.preprocessing({"image": window_image})["image"]
        if hasattr(crop, "as_tensor"):  # a MONAI MetaTensor: drop the metadata machinery
            crop = crop.as_tensor()
        channels = [crop.float()[:1], *(torch.from_numpy(g)[None] for g in guidance)]
        batch = torch.cat(channels, dim=0)[None].to(self.device)
        timings["pre"] = timings.get("pre", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        check_cancelled()
        with torch.inference_mode():
            probability = torch.sigmoid(self.network(batch).float())[0, 0].cpu()
        timings["infer"] = timings.get("infer", 0.0) + time.perf_counter() - start
        return probability


def _setting(value: float | None, key: str) -> float:
    """A setting the serving config fills for its kind (``ServingConfig`` gives the defaults).

    Raises:
        GuidanceError: the config has none (it was not built for this kind of model).
    """
    if value is None:
        raise GuidanceError(f"the serving config has no {key} for this interactive model")
    return float(value)


def _native(array: Any) -> np.ndarray[Any, Any]:
    """The voxels as an array torch can hold without converting the whole volume to float."""
    data = np.asarray(array)
    if data.dtype in (np.uint16, np.uint32):
        return data.astype(np.int32)
    if data.dtype == np.bool_ or not data.flags.writeable:
        return data.astype(np.uint8 if data.dtype == np.bool_ else data.dtype)
    return data


def _on_plane(points: Points, planar: bool) -> Points:
    """The clicks on a planar image as ``[i, j, 0]`` (clients send ``[i, j]`` or
    ``[i, j, 0]``); on a volume, as they are."""
    if not planar:
        return points
    return [[*point, 0] if len(point) == 2 else point for point in points]


def _checked(
    points: Points, shape: Sequence[int], what: str, *, minimum: int
) -> list[tuple[int, ...]]:
    checked = []
    for point in points:
        if len(point) != len(shape):
            raise GuidanceError(f"{what} point {list(point)} needs {len(shape)} coordinates")
        index = tuple(round(float(v)) for v in point)
        if any(not 0 <= v < n for v, n in zip(index, shape, strict=True)):
            raise GuidanceError(f"{what} point {list(point)} is outside the image {list(shape)}")
        checked.append(index)
    if len(checked) < minimum:
        raise GuidanceError(f"at least {minimum} {what} point(s) needed, got {len(checked)}")
    return checked
