"""``carina export``: TorchScript and ONNX copies of an archive's network, checked against torch."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from carina.archive import Archive
from carina.engine.network import load_network
from carina.errors import ArchiveError
from carina.files import atomic_path

#: Largest difference from PyTorch's output an export may show.
TOLERANCE = 1e-4


class ExportFormat(StrEnum):
    """The export formats."""

    TORCHSCRIPT = "torchscript"
    ONNX = "onnx"


@dataclass
class ExportResult:
    """Where the export went and how far its output is from PyTorch's on a sample input."""

    path: Path
    max_abs_diff: float
    input_shape: tuple[int, ...]


def export_archive(
    archive: Archive, export_format: ExportFormat, *, input_shape: tuple[int, ...] | None = None
) -> ExportResult:
    """Export the trained network to ``models/model.ts`` or ``models/model.onnx``.

    The sample input is seeded noise of ``input_shape`` (default: one image of the inferer's
    window). The file is written atomically and kept only when the check passes.

    Raises:
        ArchiveError: no weights, or the export differs from PyTorch by more than 1e-4.
    """
    pipeline = archive.serving_pipeline()
    network = load_network(pipeline.resolved, archive.layout.root / pipeline.settings.model_file)
    network.eval()
    shape = input_shape or _sample_shape(
        pipeline.settings.network_def or {}, pipeline.resolved.content
    )
    sample = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    with torch.inference_mode():
        expected = network(sample).numpy()
    if export_format == ExportFormat.TORCHSCRIPT:
        target, save, run = archive.layout.torchscript, _save_torchscript, _run_torchscript
    else:
        target, save, run = archive.layout.onnx, _save_onnx, _run_onnx
    with atomic_path(target) as tmp:
        save(network, sample, tmp)
        difference = float(np.abs(run(tmp, sample) - expected).max())
        if not difference <= TOLERANCE:
            raise ArchiveError(
                f"{target.name}: the export differs from PyTorch by {difference:.2e} "
                f"(more than {TOLERANCE:g}); nothing was written"
            )
    return ExportResult(target, difference, shape)


def _sample_shape(network_def: dict[str, object], content: dict[str, object]) -> tuple[int, ...]:
    inferer = content.get("inferer")
    roi = inferer.get("roi_size") if isinstance(inferer, dict) else None
    channels = network_def.get("in_channels", 1)
    dims = network_def.get("spatial_dims", 3)
    size = list(roi) if isinstance(roi, list) else [64] * int(str(dims))
    return (1, int(str(channels)), *(int(s) for s in size))


def _save_torchscript(network: torch.nn.Module, sample: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        try:
            module = torch.jit.script(network)
        except Exception:  # networks that do not script are traced instead
            module = torch.jit.trace(network, sample)
        torch.jit.save(module, str(path))


def _run_torchscript(path: Path, sample: torch.Tensor) -> NDArray[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return module(sample).numpy()  # type: ignore[no-any-return]


def _save_onnx(network: torch.nn.Module, sample: torch.Tensor, path: Path) -> None:
    import logging

    from torch.export import Dim

    dynamic = {0: Dim.DYNAMIC, **dict.fromkeys(range(2, sample.ndim), Dim.DYNAMIC)}
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it lists every optional operator library it lacks
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.export internals
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                network,
                (sample,),
                str(path),
                input_names=["image"],
                output_names=["pred"],
                dynamic_shapes=(dynamic,),
                dynamo=True,
                # One self-contained file: external data would sit beside it under the name of
                # the temporary file it was written as, and be lost when the file is copied.
                external_data=False,
            )
    finally:
        exporter_log.setLevel(level)


def _run_onnx(path: Path, sample: torch.Tensor) -> NDArray[Any]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs: list[NDArray[Any]] = session.run(["pred"], {"image": sample.numpy()})
    return outputs[0]
