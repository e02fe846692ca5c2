"""Segmentation inference on the CPU: Carina's planned run against MONAI's sliding window with the
archive's settings, side by side in one run. Prints JSON.

The model is the zoo's ``spine_ct_vertebrae`` (MONAI UNet 8-64, instance normalisation, 48x40x32
windows at overlap 0.5, sw_batch_size 4); the image the shipped spine CT resampled to 256x256x128
(``--quick``: 128x128x64). Each figure is the median of ``--runs`` runs, the sides alternating:

- ``monai_metatensor``: MONAI's ``SlidingWindowInferer`` with the archive's settings on the
  pre-processed ``MetaTensor``, then ``AsDiscreted(argmax=True)``: Carina's path before the plan
  (what a MONAI pipeline written the usual way does);
- ``monai_tensor``: the same on a plain tensor;
- ``carina``: ``Predictor.predict`` with ``CARINA_INFERENCE_PLAN=auto`` (read to label map);
- ``carina_http``: one ``POST /v1/segmentation`` to ``carina serve`` (upload, read, write included);
- ``whole_network_only``: the network on the whole padded image in one pass (what a freed plan
  runs), with its per-label Dice against the configured window: the shipped model normalises per
  window, so the agreement check does not free it and the server keeps its windows.

    python benchmarks/inference.py [--quick] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from carina.archive import Archive
from carina.engine.export import ExportFormat, export_archive
from carina.engine.predict import Predictor
from carina.io import load_volume
from carina.zoo.install import zoo_archive_path
from server import carina_command, make_ct, running, server_env

MODEL = "spine_ct_vertebrae"


def dice(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], labels: int) -> dict[int, float]:
    scores = {}
    for value in range(1, labels + 1):
        x, y = a == value, b == value
        total = int(x.sum() + y.sum())
        scores[value] = round(1.0 if total == 0 else 2 * int((x & y).sum()) / total, 4)
    return scores


def conv_flops(network: torch.nn.Module, sample: torch.Tensor) -> int:
    """Multiply-adds x 2 of the network's convolutions on ``sample`` (forward hooks): what its
    forward pass computes, the rest (normalisation, activations) being memory-bound."""
    total = 0

    def count(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kernel = int(np.prod(module.kernel_size))  # type: ignore[arg-type]
        groups = int(module.groups)  # type: ignore[arg-type]
        if isinstance(module, torch.nn.ConvTranspose3d):
            per_input = int(module.out_channels) // groups * kernel
            total += 2 * inputs[0].numel() * per_input
        else:
            total += 2 * out.numel() * (int(module.in_channels) // groups) * kernel

    hooks = [
        m.register_forward_hook(count)
        for m in network.modules()
        if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)
    ]
    try:
        with torch.inference_mode():
            network(sample)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The best GFLOP/s of a ``size``-square matrix product in ``dtype`` (the machine's peak)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def compute_share(
    network: torch.nn.Module, image: torch.Tensor, onnx: Path | None
) -> dict[str, Any]:
    """The whole-image forward pass as a share of the measured matrix-multiply peak, per backend
    (PyTorch fp32, channels-last fp32, bf16 autocast, ONNX Runtime), best of 3 each."""
    flops = conv_flops(network, image)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    runs: dict[str, Callable[[], Any]] = {"torch_fp32": lambda: network(image)}
    last = image.contiguous(memory_format=torch.channels_last_3d)

    def channels_last() -> Any:
        network.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        try:
            return network(last)
        finally:
            network.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]

    def bf16() -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return network(image)

    runs["torch_fp32_channels_last"] = channels_last
    runs["torch_bf16_autocast"] = bf16
    if onnx is not None:
        from carina.engine.network import OnnxNetwork

        session = OnnxNetwork(onnx)
        runs["onnxruntime_fp32"] = lambda: session(image)
    seconds = {}
    with torch.inference_mode():
        for name, call in runs.items():
            call()
            seconds[name] = min(_timed(call) for _ in range(3))
    shares = {
        name: round(flops / s / 1e9 / peak["bf16" if "bf16" in name else "fp32"], 3)
        for name, s in seconds.items()
    }
    best = max(shares, key=lambda name: shares[name])
    return {
        "conv_gflop": round(flops / 1e9, 2),
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peak.items()},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "share_of_peak": shares,
        "best": best,
        "goal": ">= 0.5 of the peak for the best backend",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    shape = (128, 128, 64) if args.quick else (256, 256, 128)
    root = Path(tempfile.mkdtemp(prefix="carina-bench-inference-"))
    try:
        path = make_ct(root, shape)
        volume = load_volume(path)
        archive = Archive.open(zoo_archive_path(MODEL))
        carina = Predictor.from_archive(archive, device="cpu", plan="auto")
        reference = Predictor.from_archive(archive, device="cpu", plan="archive")
        from monai.transforms import AsDiscreted

        argmax = AsDiscreted(keys="pred", argmax=True)
        labels = len(carina.settings.labels)

        def monai(plain: bool) -> np.ndarray[Any, Any]:
            data = reference.preprocessing({"image": volume})
            image = data["image"].as_tensor() if plain else data["image"]
            with torch.inference_mode():
                logits = reference.inferer(image.unsqueeze(0), reference.network)[0]
            return np.asarray(argmax({"pred": logits})["pred"][0]).astype(np.uint8)

        results: dict[str, np.ndarray[Any, Any]] = {}
        times: dict[str, list[float]] = {"monai_metatensor": [], "monai_tensor": [], "carina": []}
        runs: dict[str, Callable[[], np.ndarray[Any, Any]]] = {
            "monai_metatensor": lambda: monai(False),
            "monai_tensor": lambda: monai(True),
            "carina": lambda: carina.predict(volume).volume.array,
        }
        order = list(runs)
        for pair in range(args.runs):
            for name in order if pair % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                results[name] = runs[name]()
                times[name].append(time.perf_counter() - start)

        network = reference.network
        data = reference.preprocessing({"image": volume})
        image = data["image"].as_tensor().unsqueeze(0)
        padded = [-(-n // 8) * 8 for n in shape]
        pad = [p for n, t in reversed(list(zip(shape, padded, strict=True))) for p in (0, t - n)]
        start = time.perf_counter()
        with torch.inference_mode():
            logits = network(torch.nn.functional.pad(image, pad))[0][
                :, : shape[0], : shape[1], : shape[2]
            ]
        whole_s = time.perf_counter() - start
        whole = torch.argmax(logits, dim=0).numpy().astype(np.uint8)
        copy = root / "archive"
        shutil.copytree(zoo_archive_path(MODEL), copy)
        export_archive(Archive.open(copy), ExportFormat.ONNX)
        share = compute_share(
            network, torch.nn.functional.pad(image, pad), copy / "models" / "model.onnx"
        )

        workspace = root / "workspace"
        subprocess.run(
            [carina_command(), "zoo", "install", MODEL, "--workspace", str(workspace)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        http: list[float] = []
        upload = path.read_bytes()
        env = server_env(threads=torch.get_num_threads(), workers=1, queue_limit=4, preload=True)
        with running(workspace, env) as server, httpx.Client(timeout=600) as client:
            url = f"{server.url}/v1/segmentation?model={MODEL}"
            client.post(url, files={"image": ("ct.nii.gz", upload)}).raise_for_status()
            for _ in range(args.runs):
                start = time.perf_counter()
                client.post(url, files={"image": ("ct.nii.gz", upload)}).raise_for_status()
                http.append(time.perf_counter() - start)
        median = {name: round(statistics.median(values), 3) for name, values in times.items()}
        median["carina_http"] = round(statistics.median(http), 3)
        seconds = {k: [round(v, 3) for v in vs] for k, vs in times.items()}
        seconds["carina_http"] = [round(v, 3) for v in http]
        configured = results["monai_metatensor"]
        report = {
            "benchmark": "inference",
            "model": MODEL,
            "image_shape": list(shape),
            "threads": torch.get_num_threads(),
            "plan": carina.last_plan.describe() if carina.last_plan else "archive",
            "seconds": seconds,
            "median_s": median,
            "ratio_monai_metatensor_over_carina": round(
                median["monai_metatensor"] / median["carina"], 2
            ),
            "ratio_monai_tensor_over_carina": round(median["monai_tensor"] / median["carina"], 2),
            "carina_vs_configured_dice": dice(results["carina"], configured, labels),
            "carina_equals_configured": bool(np.array_equal(results["carina"], configured)),
            "whole_network_only_s": round(whole_s, 3),
            "whole_vs_configured_dice": dice(whole, configured, labels),
            "whole_pass_compute": share,
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
