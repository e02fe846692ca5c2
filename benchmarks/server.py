"""The annotation server over HTTP: start time, idle memory, health under load, HTTP overhead and
throughput of ``carina serve``, its MONAI Label routes, and MONAI Label 0.8.5 itself side by side
(``--monailabel W``, see ``server_peer.py``; DESIGN.md's figures otherwise). Prints JSON.

Each server is a ``carina serve`` subprocess in its own process group on a free port, over a
temporary workspace with ``spine_ct_vertebrae`` installed; every one is stopped (SIGTERM to the
group, then SIGKILL) and the workspace deleted at the end. Start time and idle memory come from
servers that preload nothing; the load figures from one with the default settings (the model
preloads once the server is ready; ``/health/live`` is polled meanwhile). The image is the shipped
spine CT resampled to 256x256x128 (``--quick``: 96x96x48) and written as ``.nii.gz``. The server
and the in-process pipeline it is compared with get the same torch thread count (``--threads``);
their runs alternate so that both see the same background load.

    python benchmarks/server.py [--quick] [--requests 3] [--per-client 1] [--threads N]
                                [--monailabel W]

On the 2-core reference machine one 256x256x128 request of this model takes about 16 s (840
sliding windows of 48x40x32; argmax post-processing 2.4 s of it), so the full run takes about
12 minutes; ``--quick`` takes about one.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from scipy import ndimage

from carina.data import locate_sample
from carina.io import Volume, load_volume, save_volume
from carina.zoo import load_index
from server_monailabel import abba, info_under_inference, monai_label_vs_aiaa, upload
from server_peer import side_by_side, spawn_until_info

MODEL = "spine_ct_vertebrae"
#: Every zoo model: the MONAI Label routes are measured on a server holding all of them.
ZOO = sorted(load_index())
SHAPE = (256, 256, 128)
QUICK_SHAPE = (96, 96, 48)
#: Measured on the same machine (DESIGN.md, "Measured on the reference machine").
BASELINE = {
    "monai_label_0_8_5": {
        "start_to_ready_s": "7-9",
        "idle_rss_gib": "1.2-2",
        "health_stall_behind_one_inference_s": 22,
        "source": "DESIGN.md, measured on the same 2-core machine",
    }
}


@dataclass
class Server:
    """A running ``carina serve``: its process (a group leader), address and log file."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    ready_s: float


@dataclass
class Reply:
    """One segmentation request as the client saw it."""

    seconds: float
    status: int
    server_timing_ms: dict[str, float] = field(default_factory=dict)


def make_ct(folder: Path, shape: tuple[int, int, int]) -> Path:
    """The shipped spine CT resampled to ``shape``, written as ``.nii.gz``."""
    ct = load_volume(locate_sample("spine_ct_image"))
    zoom = [n / s for n, s in zip(shape, ct.shape, strict=True)]
    image = ndimage.zoom(ct.array.astype(np.float32), zoom, order=1).astype(np.int16)
    affine = ct.affine @ np.diag([1 / z for z in zoom] + [1.0])
    path = folder / f"ct_{'x'.join(map(str, shape))}.nii.gz"
    save_volume(Volume(array=image, affine=affine), path)
    return path


def carina_command() -> str:
    return shutil.which("carina") or f"{sys.prefix}/bin/carina"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(*, threads: int, workers: int, queue_limit: int, preload: bool) -> dict[str, str]:
    """The environment of a benchmark server: fixed threads and pool, a preset admin token, and
    whether installed models load in the background once it is ready (the default).

    The inference timeout is raised to an hour: it counts the time a job waits in the queue, so
    with the default 300 s the 5th of 8 queued minute-long requests would get a 504.
    """
    return {
        **os.environ,
        "CARINA_PRELOAD_MODELS": str(preload).lower(),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "CARINA_INFERENCE_WORKERS": str(workers),
        "CARINA_QUEUE_LIMIT": str(queue_limit),
        "CARINA_INFERENCE_TIMEOUT": "3600",
        "CARINA_ADMIN_TOKEN": secrets.token_urlsafe(24),
        "CARINA_GRACE_PERIOD": "5",
    }


def start_server(workspace: Path, env: dict[str, str], *, timeout: float = 120.0) -> Server:
    """Spawn ``carina serve`` and wait for the first 200 of ``/health/ready``.

    Raises:
        RuntimeError: the server exited or was not ready within ``timeout`` (its log is shown).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workspace.parent / f"server-{port}.log"
    command = [carina_command(), "serve", "--workspace", str(workspace)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(process, url, log, 0.0)
    try:
        with httpx.Client(timeout=5.0) as client:
            while time.perf_counter() - start < timeout and process.poll() is None:
                try:
                    if client.get(f"{url}/health/ready").status_code == 200:
                        server.ready_s = time.perf_counter() - start
                        return server
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
        raise RuntimeError(f"carina serve did not become ready:\n{log.read_text()[-2000:]}")
    except BaseException:
        stop_server(server)
        raise


def stop_server(server: Server) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not exited 15 s later."""
    if server.process.poll() is not None:
        return
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
    except ProcessLookupError:
        pass


@contextmanager
def running(workspace: Path, env: dict[str, str]) -> Iterator[Server]:
    server = start_server(workspace, env)
    try:
        yield server
    finally:
        stop_server(server)


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (``VmRSS``), in MiB."""
    total_kib, todo = 0, [pid]
    while todo:
        current = todo.pop()
        proc = Path(f"/proc/{current}")
        try:
            status = (proc / "status").read_text()
            total_kib += next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
            )
            for task in (proc / "task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total_kib / 1024


def wait_for_models(url: str, *, timeout: float) -> float | None:
    """Seconds until ``/metrics`` reports a loaded model; None if none loads within ``timeout``."""
    start = time.perf_counter()
    with httpx.Client(timeout=timeout) as client:
        while time.perf_counter() - start < timeout:
            text = client.get(f"{url}/metrics").text
            loaded = [line for line in text.splitlines() if line.startswith("carina_models_loaded")]
            if loaded and float(loaded[0].split()[-1]) >= 1:
                return time.perf_counter() - start
            time.sleep(0.05)
    return None


def parse_server_timing(header: str) -> dict[str, float]:
    """``read;dur=1.2, pre;dur=3.4`` -> ``{"read": 1.2, "pre": 3.4}`` (milliseconds)."""
    stages = {}
    for item in header.split(","):
        name, _, rest = item.strip().partition(";")
        if rest.startswith("dur="):
            stages[name] = float(rest[4:])
    return stages


def segment(client: httpx.Client, url: str, image: bytes) -> Reply:
    """One ``/v1/segmentation`` request; any transport error or non-200 answer is a failure."""
    start = time.perf_counter()
    try:
        response = client.post(
            f"{url}/v1/segmentation",
            params={"model": MODEL},
            data={"params": "{}"},
            files={"image": ("ct.nii.gz", image, "application/octet-stream")},
        )
    except httpx.HTTPError:
        return Reply(time.perf_counter() - start, 0)
    seconds = time.perf_counter() - start
    ok = response.status_code == 200 and b'name="image"' in response.content
    timing = parse_server_timing(response.headers.get("server-timing", ""))
    return Reply(seconds, response.status_code if ok else -response.status_code, timing)


def percentiles(values: list[float], scale: float = 1.0) -> dict[str, float]:
    array = np.asarray(values) * scale
    return {
        "p50": round(float(np.percentile(array, 50)), 2),
        "p95": round(float(np.percentile(array, 95)), 2),
        "p99": round(float(np.percentile(array, 99)), 2),
        "max": round(float(array.max()), 2),
    }


class HealthPoller:
    """Polls ``/health/live`` from its own thread (10 ms apart) and keeps each latency."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        with httpx.Client(timeout=120.0) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    ok = client.get(f"{self.url}/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - start)
                self.failures += not ok
                self._stop.wait(0.01)

    def summary(self) -> dict[str, Any]:
        ms = percentiles(self.latencies, 1000.0) if self.latencies else {}
        return {"polls": len(self.latencies), "failures": self.failures, **_suffix(ms, "_ms")}


def _suffix(values: dict[str, float], suffix: str) -> dict[str, float]:
    return {key + suffix: value for key, value in values.items()}


def concurrent_requests(url: str, image: bytes, *, clients: int, each: int) -> dict[str, Any]:
    """``clients`` threads, each with its own connection, send ``each`` requests at once."""
    barrier = threading.Barrier(clients)

    def client_run() -> list[Reply]:
        with httpx.Client(timeout=1800.0) as client:
            barrier.wait()
            return [segment(client, url, image) for _ in range(each)]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        replies = [r for rs in pool.map(lambda _: client_run(), range(clients)) for r in rs]
    wall = time.perf_counter() - start
    good = [r.seconds for r in replies if r.status == 200]
    return {
        "clients": clients,
        "per_client": each,
        "requests": len(replies),
        "failures": len(replies) - len(good),
        "statuses": sorted({r.status for r in replies}),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(good) / wall, 3),
        **(_suffix(percentiles(good), "_s") if good else {}),
    }


@contextmanager
def inprocess_pipeline(
    archive: Path, path: Path, threads: int
) -> Iterator[Callable[[], dict[str, float]]]:
    """A function that runs load_volume + predict + save_volume(.nii.gz) in this process once
    and returns the seconds per stage; the predictor is built and warmed up first.

    Like the server, it runs in a one-thread pool; that thread sets the torch thread count (an
    OpenMP thread count belongs to the thread that sets it).
    """
    # Imported here so that the client process stays light while the servers start.
    import torch

    from carina.archive import Archive
    from carina.engine.predict import Predictor

    predictor = Predictor.from_archive(Archive.open(archive))
    target = path.with_name("inprocess-result.nii.gz")

    def once() -> dict[str, float]:
        start = time.perf_counter()
        volume = load_volume(path)
        read = time.perf_counter() - start
        prediction = predictor.predict(volume)
        start = time.perf_counter()
        save_volume(prediction.volume, target)
        return {**prediction.timings, "read": read, "write": time.perf_counter() - start}

    with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(threads,)) as pool:

        def run() -> dict[str, float]:
            return pool.submit(once).result()

        run()
        yield run


def http_overhead(
    url: str, image: bytes, inprocess: Callable[[], dict[str, float]], repeats: int
) -> dict[str, Any]:
    """``repeats`` pairs of one HTTP request and one in-process run, in ABBA order so that both
    see the same background load; medians, the overhead share and the stages on both sides."""
    replies, rows = [], []
    with httpx.Client(timeout=1800.0) as client:
        for repeat in range(repeats):
            for side in abba(["http", "inprocess"], repeat):
                if side == "http":
                    replies.append(segment(client, url, image))
                else:
                    rows.append(inprocess())
    failed = [r.status for r in replies if r.status != 200]
    if failed:
        raise RuntimeError(f"sequential segmentation requests failed: {failed}")
    http = statistics.median(r.seconds for r in replies)
    local = statistics.median(sum(row.values()) for row in rows)
    stages = {
        key: round(statistics.median(r.server_timing_ms[key] for r in replies), 1)
        for key in replies[0].server_timing_ms
    }
    shares = [
        (r.seconds - sum(row.values())) / r.seconds for r, row in zip(replies, rows, strict=True)
    ]
    return {
        "requests": repeats,
        "http_median_s": round(http, 3),
        "inprocess_median_s": round(local, 3),
        "overhead_share": round((http - local) / http, 3),
        "overhead_share_per_pair": [round(share, 3) for share in shares],
        "server_timing_ms": stages,
        "server_total_ms": round(sum(stages.values()), 1),
        "outside_server_timing_ms": round(http * 1000 - sum(stages.values()), 1),
        "outside_server_timing_share": round(1 - sum(stages.values()) / (http * 1000), 3),
        "inprocess_stages_ms": {
            key: round(statistics.median(row[key] for row in rows) * 1000, 1)
            for key in ("read", "pre", "infer", "post", "write")
        },
    }


def carina_for_peer(
    threads: int,
) -> Callable[[Path, int], tuple[subprocess.Popen[bytes], str, float]]:
    """How the side-by-side starts ``carina serve``: no preloading, ready at ``GET /info/``."""
    env = server_env(threads=threads, workers=1, queue_limit=8, preload=False)

    def start(workspace: Path, port: int) -> tuple[subprocess.Popen[bytes], str, float]:
        url = f"http://127.0.0.1:{port}"
        command = [carina_command(), "serve", "--workspace", str(workspace)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        log = workspace.parent / f"carina-{port}.log"
        process, seconds = spawn_until_info(
            command, env, url, log, cwd=workspace.parent, timeout=120.0
        )
        return process, url, seconds

    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="96x96x48, 2 requests, 1 each")
    parser.add_argument("--requests", type=int, default=3, help="sequential requests (overhead)")
    parser.add_argument("--per-client", type=int, default=1, help="requests per throughput client")
    parser.add_argument("--starts", type=int, default=3, help="server starts timed")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--monailabel",
        type=Path,
        default=os.environ.get("CARINA_BENCH_MONAILABEL"),
        help="the folder W of ../shared/peers/monailabel_setup.sh: MONAI Label 0.8.5 side by side",
    )
    args = parser.parse_args()
    shape = QUICK_SHAPE if args.quick else SHAPE
    repeats = 2 if args.quick else args.requests
    per_client = 1 if args.quick else args.per_client
    with tempfile.TemporaryDirectory(prefix="carina-bench-") as tmp:
        root = Path(tmp)
        workspace = root / "workspace"
        install = [carina_command(), "zoo", "install", MODEL, "--workspace", str(workspace)]
        subprocess.run(install, capture_output=True, check=True)
        ct = make_ct(root, shape)
        image = ct.read_bytes()

        # 1-2: start to ready and idle memory, one server at a time, without preloading.
        idle_env = server_env(threads=args.threads, workers=1, queue_limit=8, preload=False)
        starts, idle_rss = [], []
        for _ in range(args.starts):
            with running(workspace, idle_env) as server:
                starts.append(server.ready_s)
                idle_rss.append(tree_rss_mib(server.process.pid))

        # 3-5: default settings (models preload once ready), one inference at a time, a queue
        # deep enough for 8 clients.
        env = server_env(threads=args.threads, workers=1, queue_limit=8, preload=True)
        with running(workspace, env) as server:
            with HealthPoller(server.url) as preload_poll:
                preload_s = wait_for_models(server.url, timeout=120.0)
            with httpx.Client(timeout=1800.0) as client:
                first = segment(client, server.url, image)
            if first.status != 200:
                raise RuntimeError(f"the first request failed ({first.status})")
            archive = workspace / "models" / MODEL
            with inprocess_pipeline(archive, ct, args.threads) as inprocess:
                overhead = http_overhead(server.url, image, inprocess, repeats)
            with HealthPoller(server.url) as poll:
                under_load = concurrent_requests(server.url, image, clients=4, each=1)
            throughput = concurrent_requests(server.url, image, clients=8, each=per_client)
            loaded_rss = tree_rss_mib(server.process.pid)

        # 6-7: the MONAI Label routes on a server with every zoo model (models preload).
        full = root / "full"
        for name in ZOO:
            command = [carina_command(), "zoo", "install", name, "--workspace", str(full)]
            subprocess.run(command, capture_output=True, check=True)
        with running(full, env) as server:
            wait_for_models(server.url, timeout=300.0)
            upload(server.url, "bench", image)
            with httpx.Client(timeout=1800.0) as client:
                segment(client, server.url, image)  # the model is loaded and warm
            info_load = info_under_inference(
                server.url, "bench", inferences=4, seconds=10.0 if args.quick else 30.0
            )
            routes = monai_label_vs_aiaa(server.url, image, repeats=repeats * 2)

        # 8: MONAI Label 0.8.5 itself on the same image and network.
        if args.monailabel is None:
            monai_label: dict[str, Any] = {
                "run": "not run: set up the peer with ../shared/peers/monailabel_setup.sh "
                "and pass --monailabel W (or CARINA_BENCH_MONAILABEL=W)"
            }
        else:
            monai_label = side_by_side(
                args.monailabel,
                root,
                carina_server=carina_for_peer(args.threads),
                rss_mib=tree_rss_mib,
                free_port=free_port,
                threads=args.threads,
                starts=args.starts,
                repeats=repeats * 2,
            )

    health = poll.summary()
    result = {
        "benchmark": "server",
        "model": MODEL,
        "shape": list(shape),
        "image_mib": round(len(image) / 2**20, 2),
        "threads": args.threads,
        "quick": args.quick,
        "start_to_ready_s": round(statistics.median(starts), 3),
        "start_to_ready_runs_s": [round(s, 3) for s in starts],
        "idle_rss_mib": round(statistics.median(idle_rss), 1),
        "health_live_p50_ms": health.get("p50_ms"),
        "health_live_p99_ms": health.get("p99_ms"),
        "health_live_max_ms": health.get("max_ms"),
        "health_live_under_load": {
            "server": "CARINA_INFERENCE_WORKERS=1, CARINA_QUEUE_LIMIT=8, model loaded",
            "load": under_load,
            **health,
        },
        "start_to_ready_with_preload_s": round(server.ready_s, 3),
        "preload": {
            "ready_to_model_loaded_s": None if preload_s is None else round(preload_s, 3),
            "health_live": preload_poll.summary(),
        },
        "first_request_s": round(first.seconds, 3),
        "http_overhead": overhead,
        "throughput": throughput,
        "rss_after_requests_mib": round(loaded_rss, 1),
        "monai_label_routes": {
            "models": len(ZOO),
            "info_while_4_inferences": info_load,
            "infer_monai_label_vs_aiaa": routes,
        },
        "monai_label": monai_label,
        "baseline": BASELINE,
        "goals": {
            "start_to_ready_s": "<= 2 (MONAI Label 7-9)",
            "idle_rss_mib": "<= 400 (MONAI Label 1.2-2 GiB)",
            "health_live_p99_ms": "<= 50 (MONAI Label: blocked 22 s)",
            "overhead_share": "<= 0.10",
            "throughput_failures": "0",
            "info_p99_ms_while_4_inferences": "<= 20 with 5 models",
            "infer_monai_label_vs_aiaa_ratio": "<= 1.05",
            "monai_label_side_by_side": "ratios Carina / MONAI Label 0.8.5, measured in this run",
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
