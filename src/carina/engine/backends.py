"""What runs a segmentation network on this machine, and at which precision.

- ``torch``: PyTorch in fp32 (channels-last where it helps, see :mod:`carina.engine.predict`); on
  a CUDA device with fp16 autocast (AMP).
- ``onnx``: ONNX Runtime on the archive's ``models/model.onnx`` (``carina export --format onnx``),
  with the worker's thread count.
- ``auto`` (the default): ``torch``, in bf16 autocast instead of fp32 only on a CPU with native
  bf16 (AVX512-BF16 or AMX) and only for an archive whose recorded bf16 check
  (``eval/bf16_check.json``, :func:`carina.engine.agreement.check_bf16`) passed for its weights
  on this CPU model: per-label Dice >= 0.99 against fp32 and measured faster. On a CPU without
  native bf16 the arithmetic is emulated and slower (measured here for the zoo's 3D UNet).

The backend is chosen per model (``backend`` in ``config_aiaa.json``) or for every model
(``CARINA_INFERENCE_BACKEND``); the model's choice wins.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import torch

from carina.errors import ArchiveError

Backend = Literal["auto", "torch", "onnx"]
Precision = Literal["fp32", "bf16", "fp16"]
#: Where an archive records its bf16 accuracy and speed check.
BF16_RECORD = "eval/bf16_check.json"
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _cpuinfo(field: str) -> str:
    """The first ``field`` line's value in ``/proc/cpuinfo`` ("" where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith(field):
            return line.partition(":")[2].strip()
    return ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    return frozenset(_cpuinfo("flags").split())


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or ``"unknown"``."""
    return _cpuinfo("model name") or "unknown"


def native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX-BF16)."""
    return any(flag in cpu_flags() for flag in _BF16_FLAGS)


def weights_sha256(weights: Path) -> str:
    """The sha256 of a weights file ("" when there is none): what a recorded check holds for."""
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else ""


def bf16_is_checked(root: Path, weights: Path) -> bool:
    """Whether the archive at ``root`` records a bf16 check that passed (accuracy and speed) for
    these weights on this CPU model."""
    try:
        record = json.loads((root / BF16_RECORD).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("passed") is True
        and record.get("faster") is True
        and record.get("cpu") == cpu_model()
        and record.get("weights_sha256") == weights_sha256(weights)
    )


def choose_precision(
    device: torch.device, backend: Backend, root: Path, weights: Path
) -> Precision:
    """The precision a network runs at: fp16 AMP on CUDA; bf16 on a CPU with native bf16 for a
    checked archive under ``auto``; fp32 otherwise (and always under ``onnx``)."""
    if backend == "onnx":
        return "fp32"
    if device.type == "cuda":
        return "fp16"
    if backend == "auto" and native_bf16() and bf16_is_checked(root, weights):
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: Precision) -> Any:
    """The autocast context of a precision (none for fp32)."""
    if precision == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def onnx_network(onnx: Path, device: torch.device) -> torch.nn.Module:
    """The archive's ONNX export, for the ``onnx`` backend.

    Raises:
        ArchiveError: no export, or a device other than the CPU.
    """
    from carina.engine.network import OnnxNetwork

    if device.type != "cpu":
        raise ArchiveError(f"backend 'onnx' runs on the CPU, not on {device}")
    if not onnx.is_file():
        raise ArchiveError(
            f"backend 'onnx': {onnx.parent.name}/{onnx.name} does not exist; write it with "
            f"`carina export {onnx.parent.parent} --format onnx`"
        )
    return OnnxNetwork(onnx)
