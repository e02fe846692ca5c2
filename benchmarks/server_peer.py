"""MONAI Label 0.8.5 itself beside ``carina serve``, measured by ``benchmarks/server.py``:
start-to-ready, idle memory and ``/infer`` latency on the same image and the same network, each
as a ratio (Carina / MONAI Label) from one run.

The peer is the one ``../shared/peers/monailabel_setup.sh`` installs in its own venv under a
folder ``W`` (its radiology app, ``segmentation_spleen`` only, no pretrained download). Carina
serves an archive written here with the same network (MONAI ``UNet`` 16-256, two residual units,
batch norm), the same pre-processing (RAS, 1 mm, intensity window -57..164 then -1..1), the same
sliding window (160^3, overlap 0.25, one window per batch) and post-processing (softmax, argmax,
largest component). Both servers load the same weights: the archive's ``model.pt`` is also
published as the peer's ``model/segmentation_spleen.pt`` for the run (removed afterwards), so the
two label maps must agree, which the run checks. The archive's agreement check
(``carina archive plan-check`` on the upload) runs first, as a user would run it: when the planned
run (here the whole 96^3 image instead of one zero-padded 160^3 window) agrees with the configured
one, Carina's server plans its runs; likewise the bf16 check (``plan-check --bf16``): on a CPU
with native bf16, when bf16 agrees with fp32 and is faster, the server computes in bf16.

Both servers get the same torch thread count and are asked the same questions: ``GET /info/``
until the first 200 (start to ready), the resident memory of the process tree right then (idle),
and ``POST /infer/segmentation_spleen?output=image`` with the setup's 96^3 upload, alternated
between the servers in ABBA order after one warm-up request each.

One DeepGrow 3D click (``POST /infer/deepgrow_3d`` with one foreground point at the image's centre)
is timed the same way: each server's own DeepGrow 3D as a user meets it, not the same network. The
peer's is MONAI Label's radiology ``deepgrow_3d`` (``BasicUNet`` 32-512 on a 128x192x192 crop,
seeded weights published as its model for the run, its pretrained ones cannot be downloaded here);
Carina's the zoo's ``deepgrow_3d`` (UNet 16-128 on a 112 mm window at 64^3).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from carina.archive import Archive
from carina.engine.agreement import check_bf16, check_plan
from carina.engine.backends import bf16_is_checked, native_bf16
from carina.io import load_volume
from carina.zoo.install import install_archive
from server_monailabel import abba

MODEL = "segmentation_spleen"
DEEPGROW = "deepgrow_3d"
NETWORK: dict[str, Any] = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "num_res_units": 2,
    "norm": "batch",
}
#: The peer's radiology ``segmentation_spleen`` pipeline, as a Carina inference config.
CONFIG: dict[str, Any] = {
    "version": "1",
    "type": "segmentation",
    "labels": ["spleen"],
    "description": "MONAI Label's radiology segmentation_spleen network, for the side-by-side",
    "network_def": NETWORK,
    "preprocessing": [
        {"_target_": "carina.engine.transforms.LoadVolumed", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": [1.0, 1.0, 1.0]},
        {
            "_target_": "ScaleIntensityRanged",
            "keys": "image",
            "a_min": -57,
            "a_max": 164,
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": True,
        },
        {"_target_": "ScaleIntensityd", "keys": "image", "minv": -1.0, "maxv": 1.0},
    ],
    "inferer": {
        "_target_": "SlidingWindowInferer",
        "roi_size": [160, 160, 160],
        "sw_batch_size": 1,
        "overlap": 0.25,
    },
    "postprocessing": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        {"_target_": "KeepLargestConnectedComponentd", "keys": "pred"},
    ],
    "model_file": "models/model.pt",
}


def write_archive(workspace: Path) -> Path:
    """``WORKSPACE/models/segmentation_spleen``: the peer's network with seeded weights."""
    import torch
    from monai.networks.nets import UNet

    folder = workspace / "models" / MODEL
    (folder / "config").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "config" / "config_aiaa.json").write_text(json.dumps(CONFIG, indent=2))
    torch.manual_seed(0)
    network = UNet(**{k: v for k, v in NETWORK.items() if k != "_target_"})
    torch.save({"model": network.state_dict()}, folder / "models" / "model.pt")
    return folder


class Peer:
    """The MONAI Label 0.8.5 install of ``monailabel_setup.sh`` under ``folder`` (its ``W``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.bin = folder / "venv-ml" / "bin"
        self.work = folder / "mlwork"
        self.app = self.work / "apps" / "radiology"
        self.upload = self.work / "inputs" / "upload96.nii.gz"
        missing = [p for p in (self.bin / "monailabel", self.app, self.upload) if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"{folder} is not a MONAI Label peer set up by monailabel_setup.sh "
                f"(missing {', '.join(map(str, missing))})"
            )

    def stop_setup_server(self) -> None:
        """The setup script leaves a server running on port 8765: stop it (its PID file)."""
        pid_file = self.work / "server.pid"
        if pid_file.is_file():
            with suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            pid_file.unlink()

    def command(self, port: int) -> list[str]:
        confs = {"models": f"{MODEL},{DEEPGROW}", "use_pretrained_model": "false"}
        confs["sam2"] = "false"
        confs["scribbles"] = "false"
        command = [str(self.bin / "monailabel"), "start_server", "--app", str(self.app)]
        command += ["--studies", str(self.work / "studies"), "--host", "127.0.0.1"]
        command += ["--port", str(port)]
        for key, value in confs.items():
            command += ["--conf", key, value]
        return command

    def env(self, threads: int) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(self.work / "stubs"),
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
        }

    @contextmanager
    def weights(self, archive: Path) -> Iterator[None]:
        """The archive's weights published as the peer's segmentation model for the run, and
        seeded weights for its DeepGrow 3D network (its ``BasicUNet``)."""
        import torch
        from monai.networks.nets import BasicUNet

        targets = [self.app / "model" / f"{name}.pt" for name in (MODEL, DEEPGROW)]
        for target in targets:
            if target.exists():
                raise FileExistsError(f"{target} exists: this run would replace the peer's model")
        targets[0].parent.mkdir(exist_ok=True)
        try:
            targets[0].write_bytes((archive / "models" / "model.pt").read_bytes())
            torch.manual_seed(0)
            deepgrow = BasicUNet(3, 3, 1, features=(32, 64, 128, 256, 512, 32))
            torch.save(deepgrow.state_dict(), targets[1])
            yield
        finally:
            for target in targets:
                target.unlink(missing_ok=True)


def spawn_until_info(
    command: list[str], env: dict[str, str], url: str, log: Path, *, cwd: Path, timeout: float
) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``command`` in its own process group; seconds until ``GET /info/`` answers 200.

    Raises:
        RuntimeError: it exited or did not answer within ``timeout`` (its log is shown).
    """
    with log.open("wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    with httpx.Client(timeout=5.0) as client:
        while time.perf_counter() - start < timeout and process.poll() is None:
            try:
                if client.get(f"{url}/info/").status_code == 200:
                    return process, time.perf_counter() - start
            except httpx.TransportError:
                pass
            time.sleep(0.01)
    stop_group(process)
    raise RuntimeError(f"{command[0]} did not answer /info/:\n{log.read_text()[-3000:]}")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL 15 s later."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def infer(
    client: httpx.Client, url: str, image: bytes, target: Path, *, model: str = MODEL
) -> float:
    """One ``/infer/MODEL?output=image`` (DeepGrow: one click at the image centre); seconds,
    the label map written to ``target``.

    Raises:
        RuntimeError: the answer was not a 200.
    """
    params = {"foreground": [[48, 48, 48]], "background": []} if model == DEEPGROW else {}
    start = time.perf_counter()
    answer = client.post(
        f"{url}/infer/{model}",
        params={"output": "image"},
        data={"params": json.dumps(params)},
        files={"file": ("upload96.nii.gz", image)},
    )
    seconds = time.perf_counter() - start
    if answer.status_code != 200:
        raise RuntimeError(f"{url}/infer/{model}: {answer.status_code} {answer.text[:300]}")
    target.write_bytes(answer.content)
    return seconds


def side_by_side(
    peer_folder: Path,
    root: Path,
    *,
    carina_server: Callable[[Path, int], tuple[subprocess.Popen[bytes], str, float]],
    rss_mib: Callable[[int], float],
    free_port: Callable[[], int],
    threads: int,
    starts: int,
    repeats: int,
) -> dict[str, Any]:
    """Both servers, started ``starts`` times each (alternated) and then asked the same
    ``/infer`` ``repeats`` times (alternated); medians and Carina / MONAI Label ratios.

    ``carina_server(workspace, port)`` starts ``carina serve`` (no preloading) and returns its
    process, URL and seconds to the first 200 of ``/info/``.
    """
    peer = Peer(peer_folder)
    peer.stop_setup_server()
    workspace = root / "peer-workspace"
    archive = write_archive(workspace)
    plan = check_plan(Archive.open(archive), {"upload96": peer.upload})
    bf16 = check_bf16(Archive.open(archive), {"upload96": peer.upload})
    install_archive(DEEPGROW, workspace)
    image = peer.upload.read_bytes()
    ready: dict[str, list[float]] = {"carina": [], "monai_label": []}
    idle: dict[str, list[float]] = {"carina": [], "monai_label": []}
    latency: dict[str, list[float]] = {"carina": [], "monai_label": []}
    click: dict[str, list[float]] = {"carina": [], "monai_label": []}

    def start_peer() -> tuple[subprocess.Popen[bytes], str, float]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process, seconds = spawn_until_info(
            peer.command(port),
            peer.env(threads),
            url,
            root / f"monailabel-{port}.log",
            cwd=peer.work,
            timeout=300.0,
        )
        return process, url, seconds

    starters = {"carina": lambda: carina_server(workspace, free_port()), "monai_label": start_peer}
    with peer.weights(archive):
        for _ in range(starts):
            for name, starter in starters.items():
                process, _, seconds = starter()
                try:
                    ready[name].append(seconds)
                    idle[name].append(rss_mib(process.pid))
                finally:
                    stop_group(process)

        running = {name: starter() for name, starter in starters.items()}
        try:
            with httpx.Client(timeout=1800.0) as client:
                outputs = {name: root / f"{name}-label.nii.gz" for name in running}
                for name, (_, url, _) in running.items():
                    infer(client, url, image, outputs[name])  # the model loads
                for repeat in range(repeats):
                    for name in abba(list(running), repeat):
                        url = running[name][1]
                        latency[name].append(infer(client, url, image, outputs[name]))
                masks = {name: root / f"{name}-deepgrow.nii.gz" for name in running}
                for name, (_, url, _) in running.items():
                    infer(client, url, image, masks[name], model=DEEPGROW)
                for repeat in range(repeats):
                    for name in abba(list(running), repeat):
                        url = running[name][1]
                        click[name].append(infer(client, url, image, masks[name], model=DEEPGROW))
            loaded = {name: rss_mib(process.pid) for name, (process, _, _) in running.items()}
        finally:
            for process, _, _ in running.values():
                stop_group(process)

    labels = {name: load_volume(path).array for name, path in outputs.items()}
    agreement = float(np.mean(labels["carina"] == labels["monai_label"]))

    def median(values: dict[str, list[float]], name: str) -> float:
        return statistics.median(values[name])

    def ratio(values: dict[str, list[float]]) -> float:
        return round(median(values, "carina") / median(values, "monai_label"), 3)

    return {
        "peer": "MONAI Label 0.8.5, radiology app, segmentation_spleen (../shared/peers)",
        "image": "the setup's upload96.nii.gz (96^3, 1 mm; one 160^3 window)",
        "threads": threads,
        "starts": starts,
        "repeats": repeats,
        "order": "ABBA",
        "start_to_ready_s": {k: round(median(ready, k), 3) for k in ready},
        "start_to_ready_runs_s": {k: [round(s, 3) for s in v] for k, v in ready.items()},
        "idle_rss_mib": {k: round(median(idle, k), 1) for k in idle},
        "infer_s": {k: round(median(latency, k), 3) for k in latency},
        "infer_runs_s": {k: [round(s, 3) for s in v] for k, v in latency.items()},
        "deepgrow_click_s": {k: round(median(click, k), 3) for k in click},
        "deepgrow_click_runs_s": {k: [round(s, 3) for s in v] for k, v in click.items()},
        "rss_after_inference_mib": {k: round(v, 1) for k, v in loaded.items()},
        "label_agreement": round(agreement, 6),
        "plan_check": {
            "passed": plan.passed,
            "reason": plan.reason,
            "plans": plan.plans,
            "scores": plan.scores,
        },
        "bf16_check": {
            "passed": bf16.passed,
            "seconds_bf16_fp32": [bf16.seconds["ours"], bf16.seconds["reference"]],
            "scores": bf16.scores,
            "native_bf16": native_bf16(),
            "used": native_bf16() and bf16_is_checked(archive, archive / "models" / "model.pt"),
        },
        "label_voxels": {k: int(np.count_nonzero(v)) for k, v in labels.items()},
        "ratios_carina_over_monai_label": {
            "start_to_ready": ratio(ready),
            "idle_rss": ratio(idle),
            "infer": ratio(latency),
            "deepgrow_click": ratio(click),
        },
    }
