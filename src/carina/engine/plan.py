"""How to run a segmentation network on one image: the inference plan.

An archive's sliding window (say 48x40x32 windows at overlap 0.5, about 900 of them on a
256x256x128 CT) is its training-time choice, not what a 3D fully convolutional network needs at
inference: most of its time is the overhead of small windows. Before running, the plan decides, from
the network's measured memory per voxel and the request's working-memory budget:

- ``whole``: the whole image in one pass, padded to a multiple of the network's stride, when that
  fits the budget;
- ``windows``: otherwise the largest windows (multiples of the stride) that fit, with the archive's
  overlap and blending, and as many windows per batch as fit;
Without a plan the archive's own inferer runs unchanged: for inferers that are not a sliding window,
and when the setting forces it (``CARINA_INFERENCE_PLAN=archive``, ``carina infer --plan archive``).

The archive's configured sliding window stays the reference. A network is free to run on other
windows only when it does not depend on the window (no instance or group normalisation, no
attention) and its archive records a passed agreement check
(:func:`carina.engine.agreement.check_plan`, ``carina archive plan-check``): per-label Dice >= 0.99
between the planned and the configured run on the images checked, for the weights checked.
Otherwise the archive's windows run, without MetaTensor overhead.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from carina.limits import check_work

#: Bytes of working memory per voxel beyond what the module outputs account for (temporaries
#: inside operations, the input and output, allocator slack): a margin on the measured peak.
_MARGIN = 1.5
#: Bytes per voxel assumed for a network that cannot be measured (an export): a 3D U-Net's.
_OPAQUE_BYTES_PER_VOXEL = 256.0
#: The network's stride when it does not say (four halvings: enough for the usual 3D U-Nets).
_DEFAULT_STRIDE = 16

PlanMode = Literal["whole", "windows"]
#: What the setting chooses: plan each image, or run the archive's inferer as configured.
PlanChoice = Literal["auto", "archive"]


@dataclass(frozen=True)
class InferencePlan:
    """How one image is run.

    Attributes:
        mode: ``whole`` or ``windows`` (see the module).
        roi: the window size (``windows``), the padded image (``whole``).
        batch: windows per network call.
        work_bytes: the working memory estimated for it.
    """

    mode: PlanMode
    roi: tuple[int, ...]
    batch: int
    work_bytes: int

    def describe(self) -> str:
        """The plan in a few words, for logs and ``Server-Timing``."""
        size = "x".join(map(str, self.roi))
        return f"{self.mode} {size} batch {self.batch} ({self.work_bytes / 2**20:.0f} MiB)"


@dataclass(frozen=True)
class NetworkProfile:
    """What planning needs to know of a network: its stride per axis, the peak bytes its module
    outputs hold per input voxel (measured once on a small input), and whether its output depends
    on the window it is given beyond the voxels' context (instance or group normalisation,
    attention): such a network keeps the archive's windows."""

    stride: tuple[int, ...]
    bytes_per_voxel: float
    window_dependent: bool = False


def profile_network(network: torch.nn.Module, channels: int, dims: int) -> NetworkProfile:
    """Measure a network on a small input: the peak of the bytes its modules' outputs hold at
    once, per input voxel, and its stride (from its ``strides``, else 16). An export
    (TorchScript, ONNX) is not measured: it keeps the archive's windows."""
    stride = network_stride(network, dims)
    if isinstance(network, torch.jit.ScriptModule) or not any(True for _ in network.parameters()):
        # an export (TorchScript, ONNX) cannot be looked into: it keeps the archive's windows
        return NetworkProfile(stride, _OPAQUE_BYTES_PER_VOXEL, window_dependent=True)
    probe = tuple(max(2 * s, 32) for s in stride)
    live: dict[int, int] = {}
    peak = 0

    def release(key: int) -> None:
        live.pop(key, None)

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal peak
        for tensor in output if isinstance(output, list | tuple) else (output,):
            if not isinstance(tensor, torch.Tensor):
                continue
            key = tensor.untyped_storage().data_ptr()
            if key not in live:
                live[key] = tensor.untyped_storage().nbytes()
                weakref.finalize(tensor, release, key)
        peak = max(peak, sum(live.values()))

    handles = [m.register_forward_hook(hook) for m in network.modules() if not list(m.children())]
    try:
        device = next(iter(network.parameters()), torch.empty(0)).device
        with torch.inference_mode():
            network(torch.zeros((1, channels, *probe), device=device))
    finally:
        for handle in handles:
            handle.remove()
    per_voxel = _MARGIN * peak / math.prod(probe) + 4 * (channels + 1)
    return NetworkProfile(stride, per_voxel, window_dependent(network))


def window_dependent(network: torch.nn.Module) -> bool:
    """Whether a network normalises over, or attends across, the window it is given: instance
    normalisation without running statistics (MONAI's UNet default), group or layer
    normalisation, attention. Its output for a voxel then changes with the window's size, so
    the whole image in one pass would not agree with the archive's sliding window."""
    from torch.nn.modules.instancenorm import _InstanceNorm

    for module in network.modules():
        if isinstance(module, _InstanceNorm) and not module.track_running_stats:
            return True
        if isinstance(
            module, torch.nn.GroupNorm | torch.nn.LayerNorm | torch.nn.MultiheadAttention
        ):
            return True
        if any(word in type(module).__name__ for word in ("Attention", "Transformer", "Swin")):
            return True
    return False


def network_stride(network: torch.nn.Module, dims: int) -> tuple[int, ...]:
    """The factor each spatial size must be divisible by: the product of the network's
    ``strides`` (MONAI's UNet and DynUNet say them), else 16 per axis."""
    strides = getattr(network, "strides", None)
    if not isinstance(strides, list | tuple) or not strides:
        return (_DEFAULT_STRIDE,) * dims
    total = [1] * dims
    for step in strides:
        per_axis = list(step) if isinstance(step, list | tuple) else [step] * dims
        if len(per_axis) != dims or not all(isinstance(s, int) and s > 0 for s in per_axis):
            return (_DEFAULT_STRIDE,) * dims
        total = [t * s for t, s in zip(total, per_axis, strict=True)]
    return tuple(total)


def plan_inference(
    shape: tuple[int, ...],
    profile: NetworkProfile,
    *,
    budget: int,
    archive_roi: tuple[int, ...],
    archive_batch: int = 4,
    free: bool = True,
) -> InferencePlan:
    """The plan for an image of spatial ``shape``: the whole image when its padded size fits
    ``budget``, else the largest windows of at least the archive's size that fit (a batch of them
    as large as fits, up to 8). A window-dependent network, or one not ``free`` to change its
    windows (no passed agreement check), keeps the archive's windows and batch.

    Raises:
        GuidanceError: not even one window of the archive's size fits the budget.
    """
    if profile.window_dependent or not free:
        check_work(_bytes(archive_roi, profile) * archive_batch, budget, "running this model")
        return InferencePlan("windows", archive_roi, archive_batch, _bytes(archive_roi, profile))
    padded = tuple(_round_up(n, s) for n, s in zip(shape, profile.stride, strict=True))
    whole = _bytes(padded, profile)
    if whole <= budget:
        return InferencePlan("whole", padded, 1, whole)
    roi = tuple(
        _round_up(min(n, r), s) for n, r, s in zip(shape, archive_roi, profile.stride, strict=True)
    )
    check_work(_bytes(roi, profile), budget, "running this model on windows of its own size")
    while True:  # grow the smallest side while the window fits and is smaller than the image
        candidates = [
            tuple(
                r + s if i == axis else r
                for i, (r, s) in enumerate(zip(roi, profile.stride, strict=True))
            )
            for axis in sorted(range(len(roi)), key=lambda a: roi[a])
            if roi[axis] < padded[axis]
        ]
        fitting = [c for c in candidates if _bytes(c, profile) <= budget]
        if not fitting:
            break
        roi = fitting[0]
    batch = max(1, min(8, budget // max(_bytes(roi, profile), 1)))
    return InferencePlan("windows", roi, int(batch), _bytes(roi, profile) * int(batch))


def _bytes(size: tuple[int, ...], profile: NetworkProfile) -> int:
    return int(math.prod(size) * profile.bytes_per_voxel)


def _round_up(value: int, step: int) -> int:
    return max(step, -(-value // step) * step)


def run_planned(
    plan: InferencePlan, image: torch.Tensor, network: Any, reference: Any
) -> torch.Tensor:
    """Run ``network`` on a batch of one ``image`` (``[1, C, *spatial]``) as ``plan`` says;
    ``reference`` is the archive's sliding-window inferer (its overlap and blending are kept)."""
    from monai.inferers import SlidingWindowInferer
    from monai.utils import ensure_tuple_rep

    if plan.mode == "whole":
        spatial = image.shape[2:]
        pad: list[int] = []
        for size, target in reversed(list(zip(spatial, plan.roi, strict=True))):
            pad += [0, target - size]
        logits: torch.Tensor = network(torch.nn.functional.pad(image, pad))
        crop: tuple[Any, ...] = (..., *(slice(0, n) for n in spatial))
        return logits[crop]
    inferer = reference
    configured = tuple(ensure_tuple_rep(reference.roi_size, len(plan.roi)))
    if (plan.roi, plan.batch) != (configured, reference.sw_batch_size):
        inferer = SlidingWindowInferer(
            roi_size=plan.roi,
            sw_batch_size=plan.batch,
            overlap=reference.overlap,
            mode=reference.mode,
            sigma_scale=reference.sigma_scale,
            padding_mode=reference.padding_mode,
            cval=reference.cval,
        )
    result: torch.Tensor = inferer(image, network)
    return result


#: Where an archive records its agreement check (the weights' sha256, the scores, passed or not).
PLAN_RECORD = "eval/inference_plan.json"
#: The per-label Dice the planned run must reach against the archive's configuration.
AGREEMENT = 0.99


def plan_is_checked(root: Path, weights: Path) -> bool:
    """Whether the archive at ``root`` records a passed agreement check for these weights."""
    import hashlib
    import json

    try:
        record = json.loads((root / PLAN_RECORD).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("passed") is not True or not weights.is_file():
        return False
    return bool(record.get("weights_sha256") == hashlib.sha256(weights.read_bytes()).hexdigest())
