"""The inference pipeline: read -> pre-process -> inferer -> post-process -> restore -> write.

One :class:`Predictor` serves ``carina infer``, ``carina validate`` and the annotation server. The
result is a label map on the exact grid of the input (its geometry copied, not recomputed).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from carina.archive import Archive, ServingConfig
from carina.engine.backends import Backend, Precision, autocast, choose_precision, onnx_network
from carina.engine.fit import check_dimensions, modality_warning, not_automatic
from carina.engine.network import load_network, pick_device
from carina.engine.plan import (
    InferencePlan,
    NetworkProfile,
    PlanChoice,
    plan_inference,
    plan_is_checked,
    profile_network,
    run_planned,
)
from carina.engine.transforms import LoadVolumed
from carina.errors import ArchiveError
from carina.io import Volume, load_volume, save_volume
from carina.io.formats import suffix_of
from carina.limits import checked_calls
from carina.settings import DEFAULT_MAX_WORK_BYTES, Settings

#: Post-processing steps a server never runs: they write files.
_WRITERS = ("SaveImage", "SaveImaged")


@dataclass
class Prediction:
    """A prediction, where the time went (seconds per stage) and what the user should know
    about it (an image of another modality than the model's)."""

    volume: Volume
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Predictor:
    """Runs an archive's serving pipeline on one image at a time.

    Args:
        network: the trained network (in eval mode on ``device``).
        preprocessing: callable on ``{"image": ...}``; a Carina pipeline starts with
            :class:`LoadVolumed` (fed the read volume), a Bundle's with ``LoadImaged`` (fed a path).
        inferer: a MONAI inferer.
        postprocessing: callable on ``{"image", "pred"}``.
        settings: the serving settings (type, labels, ...).
        device: where the network runs.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        preprocessing: Callable[[dict[str, Any]], dict[str, Any]],
        inferer: Any,
        postprocessing: Callable[[dict[str, Any]], dict[str, Any]] | None,
        *,
        settings: ServingConfig,
        device: torch.device,
        feeds_volume: bool,
        planned: bool = False,
        free: bool = False,
        precision: Precision = "fp32",
    ) -> None:
        self.network = network.to(device).eval()
        self.preprocessing = preprocessing
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.settings = settings
        self.device = device
        self.feeds_volume = feeds_volume
        self.planned = planned
        #: the post-processing is exactly AsDiscreted(argmax=True): taken channels-last instead
        self.fast_argmax = _only_argmax(postprocessing)
        self.free = free
        #: fp32, bf16 autocast (a checked archive on a CPU with native bf16) or fp16 AMP (CUDA)
        self.precision = precision
        self.last_plan: InferencePlan | None = None
        self.profile: NetworkProfile | None = None
        self._channels_last = False

    @classmethod
    def from_archive(
        cls,
        archive: Archive,
        *,
        device: str | None = None,
        batch: bool = False,
        plan: PlanChoice | None = None,
        backend: Backend | None = None,
    ) -> Predictor:
        """Build the predictor of an archive (``batch``: prefer ``config_inference.json``).
        ``plan``: ``auto`` plans each image's run (:mod:`carina.engine.plan`; a Carina archive
        with a sliding-window inferer), ``archive`` runs the archive's inferer as configured;
        default: the ``CARINA_INFERENCE_PLAN`` setting. ``backend``: what runs the network
        (:mod:`carina.engine.backends`); default: the archive's ``backend``, else the
        ``CARINA_INFERENCE_BACKEND`` setting.

        Raises:
            ConfigError, ArchiveError: a component or the weights cannot be loaded.
        """
        from monai.transforms import Compose

        not_automatic(archive.serving_config(batch=batch), archive.layout.root.name)
        pipeline = archive.serving_pipeline(batch=batch)
        resolved, settings = pipeline.resolved, pipeline.settings
        weights = archive.layout.root / settings.model_file
        chosen = backend or settings.backend or Settings().inference_backend
        where = pick_device(device)
        if chosen == "onnx":
            network = onnx_network(archive.layout.onnx, where)
        else:
            network = load_network(
                resolved, weights, torchscript=archive.layout.torchscript, onnx=archive.layout.onnx
            )
        pre = _as_compose(resolved.instantiate("preprocessing"))
        post_items = (
            resolved.instantiate("postprocessing") if resolved.content.get("postprocessing") else []
        )
        post = _as_compose(post_items, drop=_WRITERS)
        first = pre.transforms[0] if pre.transforms else None
        return cls(
            network,
            pre,
            resolved.instantiate("inferer"),
            post if post.transforms else Compose([]),
            settings=settings,
            device=where,
            feeds_volume=isinstance(first, LoadVolumed),
            planned=(plan or Settings().inference_plan) == "auto" and archive.kind == "mmar",
            free=plan_is_checked(archive.layout.root, weights),
            precision=choose_precision(where, chosen, archive.layout.root, weights),
        )

    def predict(
        self,
        source: str | Path | Volume,
        *,
        extra: dict[str, Any] | None = None,
        budget: int = DEFAULT_MAX_WORK_BYTES,
    ) -> Prediction:
        """Segment one image; the label map has the input's grid and geometry. ``extra`` goes
        into the pre-processing's data beside the image (a DeepEdit Bundle's clicks); ``budget``
        is the working memory the inference plan may use.

        Raises:
            ImageReadError: the image cannot be read.
            ArchiveError: the pipeline did not return a label map on the input grid.
        """
        from monai.data import MetaTensor

        timings: dict[str, float] = {}
        start = time.perf_counter()
        volume = source if isinstance(source, Volume) else load_volume(source)
        where = Path(source).name if not isinstance(source, Volume) else "image"
        check_dimensions(volume, self.settings.dimensions or 3, where)
        warning = modality_warning(volume, self.settings.modality, where)
        timings["read"] = time.perf_counter() - start

        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            feed: Any = volume if self.feeds_volume else _file_for(source, volume, stack)
            data = self.preprocessing({**(extra or {}), "image": feed})
        image = data["image"]
        timings["pre"] = time.perf_counter() - start

        start = time.perf_counter()
        batch = (image.as_tensor() if isinstance(image, MetaTensor) else image).unsqueeze(0)
        with torch.inference_mode(), autocast(self.device, self.precision):
            logits = self._infer(batch.to(self.device), budget)
        logits = logits[0].float().cpu()
        timings["infer"] = time.perf_counter() - start

        start = time.perf_counter()
        spatial_steps = isinstance(image, MetaTensor) and bool(image.applied_operations)
        if self.fast_argmax and not spatial_steps:
            labels = argmax_labels(logits)  # what AsDiscreted(argmax=True) gives, 5x faster
        else:
            if isinstance(image, MetaTensor):
                logits = MetaTensor(
                    logits, meta=image.meta, applied_operations=image.applied_operations
                )
            data["pred"] = logits
            data = self.postprocessing(data) if self.postprocessing is not None else data
            labels = _restore(data, self.preprocessing)
        timings["post"] = time.perf_counter() - start
        if labels.shape != volume.shape:
            raise ArchiveError(
                f"the pipeline returned a label map of shape {labels.shape} for an image of "
                f"shape {volume.shape}: add a restoring step (Invertd) to its post-processing"
            )
        return Prediction(volume.with_array(labels), timings, [warning] if warning else [])

    def _infer(self, batch: torch.Tensor, budget: int) -> torch.Tensor:
        """The network's logits for ``batch``, run as planned for its size (or as configured)."""
        from monai.inferers import SlidingWindowInferer
        from monai.utils import ensure_tuple_rep

        network = checked_calls(self.network)
        if not self.planned or not isinstance(self.inferer, SlidingWindowInferer):
            return self.inferer(batch, network)  # type: ignore[no-any-return]
        if self.profile is None:
            self.profile = profile_network(self.network, batch.shape[1], batch.ndim - 2)
            self._channels_last = not self.profile.window_dependent and _channels_last_helps(
                self.network, self.device, batch.ndim
            )
            if self._channels_last:
                self.network.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        if self._channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        roi = tuple(int(n) for n in ensure_tuple_rep(self.inferer.roi_size, batch.ndim - 2))
        plan = plan_inference(
            tuple(batch.shape[2:]),
            self.profile,
            budget=budget,
            archive_roi=roi,
            archive_batch=int(self.inferer.sw_batch_size),
            free=self.free,
        )
        self.last_plan = plan
        return run_planned(plan, batch, network, self.inferer)

    def predict_to_file(self, source: str | Path | Volume, target: str | Path) -> Prediction:
        """:meth:`predict`, then write the label map atomically (its time under ``write``)."""
        prediction = self.predict(source)
        start = time.perf_counter()
        save_volume(prediction.volume, target)
        prediction.timings["write"] = time.perf_counter() - start
        return prediction


def _file_for(source: str | Path | Volume, volume: Volume, stack: contextlib.ExitStack) -> str:
    """What a pipeline that starts with its own reader (a Bundle's ``LoadImaged``) is given: the
    NIfTI file it was asked about, else the image Carina read written as NIfTI (a DICOM series,
    NRRD, an upload already in memory), so that it reads the same voxels and geometry."""
    if not isinstance(source, Volume) and suffix_of(Path(source)) in (".nii", ".nii.gz"):
        return str(source)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="carina-feed-")))
    save_volume(volume, folder / "image.nii")
    return str(folder / "image.nii")


def argmax_labels(logits: torch.Tensor) -> np.ndarray[Any, Any]:
    """The label map of ``[C, *spatial]`` logits: the channel of the largest value, the first on
    ties (as ``torch.argmax``), as uint8 (uint16 past 255 channels). The channels are made the
    innermost axis first: the reduction then reads memory in order."""
    innermost = logits.movedim(0, -1).contiguous()
    labels = torch.argmax(innermost, dim=-1)
    dtype = torch.uint8 if logits.shape[0] <= 256 else torch.int32
    array = labels.to(dtype).numpy()
    return array if dtype == torch.uint8 else array.astype(np.uint16)


def _channels_last_helps(network: torch.nn.Module, device: torch.device, ndim: int) -> bool:
    """Whether to run a network channels-last: a PyTorch 3D network on the CPU, where its
    convolutions on a whole image run about 15 % faster and the argmax over channels reads memory
    in order (on small windows it does not help)."""
    from carina.engine.network import OnnxNetwork

    plain = not isinstance(network, OnnxNetwork | torch.jit.ScriptModule)
    return plain and device.type == "cpu" and ndim == 5


def _only_argmax(postprocessing: Any) -> bool:
    """Whether a post-processing is exactly ``AsDiscreted(keys="pred", argmax=True)``."""
    from monai.transforms import AsDiscreted

    transforms = list(getattr(postprocessing, "transforms", []) or [])
    if len(transforms) != 1 or type(transforms[0]) is not AsDiscreted:
        return False
    step = transforms[0]
    converter = step.converter
    return (
        tuple(step.keys) == ("pred",)
        and list(step.argmax) == [True]
        and list(step.to_onehot) == [None]
        and list(step.threshold) == [None]
        and list(step.rounding) == [None]
        and converter.kwargs == {}
    )


def _restore(data: dict[str, Any], preprocessing: Any) -> np.ndarray[Any, Any]:
    """The prediction as a label array on the input grid, undoing spatial pre-processing."""
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    pred = data["pred"]
    if isinstance(pred, MetaTensor) and pred.applied_operations:
        inverter = Invertd(
            keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=True
        )
        pred = inverter(cast(dict[Hashable, Any], data))["pred"]
    array = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    if array.ndim == 4:
        array = array[0] if array.shape[0] == 1 else np.argmax(array, axis=0)
    array = np.rint(array) if array.dtype.kind == "f" else array
    return array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16)


def _as_compose(items: Any, *, drop: tuple[str, ...] = ()) -> Any:
    from monai.transforms import Compose

    transforms = list(items.transforms) if isinstance(items, Compose) else list(items or [])
    return Compose([t for t in transforms if type(t).__name__ not in drop])
