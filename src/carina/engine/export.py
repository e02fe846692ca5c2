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
        if export_format == ExportFormat.ONNX:
            network_def = pipeline.settings.network_def or {}
            describe_onnx(tmp, pipeline.settings.labels, network_def, pipeline.resolved.content)
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


def describe_onnx(
    path: Path, labels: list[str], network_def: dict[str, Any], content: dict[str, Any]
) -> None:
    """Write into the ONNX file what running it without Carina needs (its metadata, read with
    ``session.get_modelmeta().custom_metadata_map``): ``carina.labels`` (JSON, value 1 first),
    ``carina.spatial_multiple`` (each spatial size of the input must be a multiple of it: pad),
    ``carina.preprocessing`` (the archive's intensity transforms, JSON), and the archive's
    sliding window (``carina.roi_size``, ``carina.overlap``) when it has one: the windows
    ``carina infer`` runs, which a network with instance norm needs to give the same answer."""
    import json

    import onnx

    model = onnx.load(str(path))
    multiple = spatial_multiple(network_def)
    steps = [
        step
        for step in content.get("preprocessing") or []
        if isinstance(step, dict)
        and not str(step.get("_target_", "")).endswith(
            ("LoadVolumed", "LoadImaged", "EnsureChannelFirstd")
        )
    ]
    inferer = content.get("inferer")
    window = (
        {
            "carina.roi_size": json.dumps(inferer.get("roi_size")),
            "carina.overlap": str(inferer.get("overlap", 0.25)),
        }
        if isinstance(inferer, dict)
        and str(inferer.get("_target_", "")).endswith("SlidingWindowInferer")
        else {}
    )
    described = {
        "carina.labels": json.dumps(list(labels)),
        "carina.preprocessing": json.dumps(steps),
        **({"carina.spatial_multiple": str(multiple)} if multiple else {}),
        **window,
    }
    kept = [p for p in model.metadata_props if p.key not in described]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in described.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def spatial_multiple(network_def: dict[str, Any]) -> int | None:
    """What every spatial size of the input must be a multiple of, for an encoder that halves
    it: the product of a UNet's (or DynUNet's) strides; None when the definition does not say."""
    strides = network_def.get("strides")
    if not isinstance(strides, list) or not strides:
        return None
    product = 1
    for stride in strides:
        value = max(stride) if isinstance(stride, list) and stride else stride
        if not isinstance(value, int) or value < 1:
            return None
        product *= value
    return product
