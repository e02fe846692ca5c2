"""Large CTs through ``carina serve``: peak memory of 4 workers segmenting a 512x512x600 CT at once,
and DeepGrow 3D click latency on a session holding a 512x512x300 CT. Prints JSON.

Both volumes are the shipped spine CT resampled (``server.make_ct``). ``memory``: a server with
``CARINA_INFERENCE_WORKERS=4`` (each worker one thread: the cores shared, no oversubscription),
``spine_ct_vertebrae``, four concurrent ``POST /v1/segmentation`` of the 512x512x600 CT; the
resident
memory of the server's process tree is sampled every 0.2 s (goal: peak <= 24 GiB). ``clicks``: a
server with ``deepgrow_3d``, one ``PUT /session/`` with the 512x512x300 CT, then one-click
``POST /v1/deepgrow?session_id=`` requests at the deepest voxel of each vertebra and at voxels
around it (goal: p95 <= 1.0 s, the full-size mask answer included).

    python benchmarks/large_images.py [--part memory|clicks|both] [--clicks 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from scipy import ndimage

from carina.data import locate_sample
from carina.interactive.guidance import deepest_point
from carina.io import load_volume
from server import carina_command, make_ct, percentiles, running, segment, server_env, tree_rss_mib

GIB = 1024**3


def install(workspace: Path, model: str) -> None:
    command = [carina_command(), "zoo", "install", model, "--workspace", str(workspace)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


class PeakMemory:
    """The largest resident memory of a process tree, sampled every 0.2 s from its own thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mib = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _poll(self) -> None:
        while not self.done.is_set():
            self.peak_mib = max(self.peak_mib, tree_rss_mib(self.pid))
            self.done.wait(0.2)


def memory(root: Path) -> dict[str, Any]:
    """Four concurrent 512x512x600 segmentations on four workers: peak RSS and seconds."""
    shape = (512, 512, 600)
    image = make_ct(root, shape).read_bytes()
    workspace = root / "memory"
    install(workspace, "spine_ct_vertebrae")
    env = server_env(threads=1, workers=4, queue_limit=8, preload=True)
    with running(workspace, env) as server, httpx.Client(timeout=3600) as client:
        idle = tree_rss_mib(server.process.pid)
        start = time.perf_counter()
        with PeakMemory(server.process.pid) as peak, ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: segment(client, server.url, image), range(4)))
        wall = time.perf_counter() - start
    return {
        "shape": list(shape),
        "workers": 4,
        "threads_per_worker": 1,
        "upload_mib": round(len(image) / 2**20, 1),
        "statuses": [reply.status for reply in replies],
        "seconds": [round(reply.seconds, 1) for reply in replies],
        "wall_s": round(wall, 1),
        "idle_rss_mib": round(idle, 1),
        "peak_rss_gib": round(peak.peak_mib / 1024, 2),
        "goal": "peak <= 24 GiB, every request 200",
    }


def clicks(root: Path, count: int) -> dict[str, Any]:
    """One-click DeepGrow 3D requests on a 512x512x300 session: latency percentiles."""
    shape = (512, 512, 300)
    path = make_ct(root, shape)
    labels = load_volume(locate_sample("spine_ct_vertebrae")).array
    zoom = [n / s for n, s in zip(shape, labels.shape, strict=True)]
    points = []
    rng = np.random.default_rng(0)
    for value in (21, 22, 23):
        mask = ndimage.zoom((labels == value).astype(np.uint8), zoom, order=0) > 0
        points.append(deepest_point(mask))
        inside = np.argwhere(ndimage.binary_erosion(mask, iterations=4))
        points += [tuple(int(v) for v in p) for p in inside[rng.choice(len(inside), 8)]]
    points = (points * (count // len(points) + 1))[:count]
    workspace = root / "clicks"
    install(workspace, "deepgrow_3d")
    env = server_env(threads=2, workers=1, queue_limit=4, preload=True)
    latencies, statuses = [], []
    with running(workspace, env) as server, httpx.Client(timeout=600) as client:
        start = time.perf_counter()
        created = client.put(
            f"{server.url}/session/", files={"image": ("ct.nii.gz", path.read_bytes())}
        )
        created.raise_for_status()
        session_s = time.perf_counter() - start
        session = created.json()["session_id"]
        url = f"{server.url}/v1/deepgrow?model=deepgrow_3d&session_id={session}"
        for index, point in enumerate([points[0], *points]):
            params = json.dumps({"foreground": [list(map(int, point))], "background": []})
            start = time.perf_counter()
            answer = client.post(url, data={"params": params})
            seconds = time.perf_counter() - start
            if index:  # the first request warms the model and the session cache
                latencies.append(seconds)
                statuses.append(answer.status_code)
    return {
        "shape": list(shape),
        "session_create_s": round(session_s, 2),
        "clicks": len(latencies),
        "statuses": sorted(set(statuses)),
        "latency_s": percentiles(latencies),
        "goal": "p95 <= 1.0 s",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("memory", "clicks", "both"), default="both")
    parser.add_argument("--clicks", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="carina-bench-large-"))
    report: dict[str, Any] = {"benchmark": "large_images"}
    try:
        if args.part in ("clicks", "both"):
            report["deepgrow_session_clicks"] = clicks(root, args.clicks)
        if args.part in ("memory", "both"):
            report["four_workers_512x512x600"] = memory(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
