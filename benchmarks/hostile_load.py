"""Normal annotation work under attack: normal requests' latency (ms, 2xx answers) and errors
(other answers, transport errors), hostile requests' statuses, the server's peak RSS, in a quiet
run (the baseline) then a hostile run. Prints JSON.

One ``carina serve`` (default settings, models preloaded, own process group, always stopped)
over a temporary workspace with the zoo's spine_ct_vertebrae, deepgrow_2d and deepgrow_3d; its
process tree's RSS is sampled every 0.2 s; each client has its own 127.x.y.z address. Normal:
``--clients`` threads, ``--think`` s apart, loop over rounds on the shipped spine CT (73x47x73):
GET /v1/models, PUT /session/, DeepGrow clicks in L3 (3D and 2D models in turn; click lists grow
as Slicer sends them), every ``--seg-every``-th round a segmentation of an uploaded 48x40x48
crop, DELETE of the session. Hostile: ``--hostile`` threads, 0.1 s apart, rotate through gzip
bombs (the CT then ``--bomb-gib`` GiB of zeros; a header claiming 32767^3 voxels; one claiming
``--bomb-image-mib`` MiB that the zeros hold), the CT at 0.001 mm spacing, spatial_size
[100000]*3, params nested 100,000 deep and a click at 10**400; ``--stalled`` connections from
their addresses promise a 1 GB body and send a few bytes (half drip one every ``--drip`` s),
each reopened once the server ends it.

    python benchmarks/hostile_load.py [--quiet-seconds 30] [--seconds 60] [--stalled 256]

Smoke check: ``--quiet-seconds 5 --seconds 10``. Goal (the security issue): no normal error
under attack, and a p99 within 2x of the quiet run's.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import psutil

from carina.data import locate_sample
from carina.interactive.guidance import deepest_point
from carina.io import Volume, load_volume, save_volume
from carina.zoo import install_archive

MODELS = ("spine_ct_vertebrae", "deepgrow_2d", "deepgrow_3d")
BLOCK = 1 << 20
OCTET = "application/octet-stream"
DEEPGROW_3D = "/v1/deepgrow?model=deepgrow_3d"
DEEPGROW_2D = "/v1/deepgrow?model=deepgrow_2d"
SEGMENTATION = "/v1/segmentation?model=spine_ct_vertebrae"


@dataclass(frozen=True)
class Payloads:
    """Request bodies built once: the real CT, a crop of it, clicks in L3, the hostile files."""

    ct: bytes
    crop: bytes
    clicks: list[list[int]]  # three in L3 on one slice, then one in L2 or L4
    bomb_trailing: bytes
    bomb_claim: bytes
    bomb_image: bytes
    fine_spacing: bytes


@dataclass
class Record:
    """One request as its client saw it: kind, seconds, status or exception name."""

    kind: str
    seconds: float
    status: str


def gzip_with_zeros(prefix: bytes, zeros: int) -> bytes:
    """A valid gzip file of ``prefix`` then ``zeros`` zero bytes (whole MiB), built cheaply: a fully
    flushed deflate block of 1 MiB of zeros refers to nothing before it, so it can be repeated."""
    zeros -= zeros % BLOCK
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    piece = deflate.compress(bytes(BLOCK)) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc, block = zlib.crc32(prefix), bytes(BLOCK)
    for _ in range(zeros // BLOCK):
        crc = zlib.crc32(block, crc)
    trailer = crc.to_bytes(4, "little") + ((len(prefix) + zeros) % 2**32).to_bytes(4, "little")
    return b"".join([gzip.compress(b"")[:10], body, piece * (zeros // BLOCK), b"\x03\0", trailer])


def claimed_header(shape: tuple[int, ...]) -> bytes:
    """A NIfTI-1 header (and empty extension flag) of an int16 image of ``shape``, 1 mm."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    return bytes(header.binaryblock) + bytes(4)


def build_payloads(folder: Path, *, bomb_gib: float, image_mib: int) -> Payloads:
    """The shipped CT, clicks in its L3 (one slice) and one in L2/L4, a crop, the bombs."""
    ct_path = locate_sample("spine_ct_image")
    ct = load_volume(ct_path)
    labels = np.asarray(load_volume(locate_sample("spine_ct_vertebrae")).array)
    first = [int(v) for v in deepest_point(labels == 22)]
    plane = labels[:, :, first[2]]
    picks = np.argwhere(plane == 22)[np.random.default_rng(0).choice((plane == 22).sum(), 2)]
    points = [*picks, np.argwhere(np.isin(plane, (21, 23)))[0]]  # then a click in L2 or L4
    crop = ct.crop(0, 12, 60).crop(1, 4, 44).crop(2, 12, 60)
    fine = Volume(ct.array, ct.affine @ np.diag([0.001 / s for s in ct.spacing] + [1]))
    for name, volume in (("crop", crop), ("fine", fine)):
        save_volume(volume, folder / f"{name}.nii.gz")
    return Payloads(
        ct=ct_path.read_bytes(),
        crop=(folder / "crop.nii.gz").read_bytes(),
        clicks=[first, *([int(i), int(j), first[2]] for i, j in points)],
        bomb_trailing=gzip_with_zeros(gzip.decompress(ct_path.read_bytes()), int(bomb_gib * 2**30)),
        bomb_claim=gzip.compress(claimed_header((32_767,) * 3) + bytes(1000)),
        bomb_image=gzip_with_zeros(claimed_header((image_mib, 1024, 512)), image_mib * BLOCK),
        fine_spacing=(folder / "fine.nii.gz").read_bytes(),
    )


def start_server(workspace: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``carina serve`` (own process group) once ready; RuntimeError with its log after 120 s."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k != "CARINA_API_TOKEN"}
    env |= {"CARINA_ADMIN_TOKEN": secrets.token_urlsafe(24), "CARINA_PRELOAD_MODELS": "true"}
    command = [sys.executable, "-m", "carina", "serve", "--workspace", str(workspace)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                    return process, url
            time.sleep(0.05)
        raise RuntimeError(f"carina serve did not become ready:\n{log.read_text()[-2000:]}")
    except BaseException:
        stop_server(process)
        raise


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not exited 40 s later."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def connect(address: str, timeout: float) -> httpx.Client:
    """A client from ``address``: per-address limits tell clients apart as with real ones."""
    return httpx.Client(timeout=timeout, transport=httpx.HTTPTransport(local_address=address))


def spawn(target: Callable[..., None], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def sample_rss(pid: int, samples: list[tuple[float, float]], done: threading.Event) -> None:
    """Appends (time, MiB) of the RSS of ``pid`` and all its descendants every 0.2 s."""
    root = psutil.Process(pid)
    while not done.wait(0.2):
        with contextlib.suppress(psutil.Error):
            rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            samples.append((time.monotonic(), rss / 2**20))


def peak(samples: list[tuple[float, float]], start: float, stop: float) -> float:
    return round(max((rss for t, rss in samples if start <= t <= stop), default=0.0), 1)


@dataclass(frozen=True)
class Bench:
    """What every phase shares: the server's URL, the payloads, the options, the RSS samples."""

    url: str
    data: Payloads
    args: argparse.Namespace
    rss: list[tuple[float, float]]


@dataclass
class Annotator:
    """A client's connection, request log and phase end; normal clients also ``annotate``."""

    client: httpx.Client
    bench: Bench
    log: list[Record]
    deadline: float

    def pause(self) -> bool:
        """Sleeps the think time; True once the phase is over."""
        time.sleep(self.bench.args.think)
        return time.monotonic() >= self.deadline

    def send(self, kind: str, method: str, route: str, **kwargs: Any) -> httpx.Response:
        """One request, logged with its status (and the error type of a spec error body); a
        transport error is logged by its class name and raised."""
        start = time.perf_counter()
        try:
            response = self.client.request(method, self.bench.url + route, **kwargs)
        except httpx.HTTPError as exc:
            self.log.append(Record(kind, time.perf_counter() - start, type(exc).__name__))
            raise
        status = str(response.status_code)
        if not response.is_success:
            with contextlib.suppress(ValueError, LookupError, TypeError):
                status += " " + str(response.json()["error"]["type"])
        self.log.append(Record(kind, time.perf_counter() - start, status))
        return response

    def annotate(self, turn: int) -> None:
        """One round on the CT; stops early when a session is refused or the phase is over."""
        data = self.bench.data
        self.send("models", "GET", "/v1/models")
        files = {"image": ("ct.nii.gz", data.ct, OCTET)}
        created = None if self.pause() else self.send("session", "PUT", "/session/", files=files)
        if created is None or not created.is_success:
            return
        session = created.json()["session_id"]
        model = "deepgrow_3d" if turn % 2 == 0 else "deepgrow_2d"
        a, b, c, back = data.clicks
        steps = [([a], [], a), ([a, b], [], b), ([a, b], [back], back), ([a, b, c], [back], c)]
        for fg, bg, current in steps:
            if model == "deepgrow_2d" and current in bg:
                continue  # a 2D model segments the current point's slice: a foreground click
            if self.pause():
                return
            params = json.dumps({"foreground": fg, "background": bg, "current_point": current})
            route = f"/v1/deepgrow?model={model}&session_id={session}"
            self.send(model, "POST", route, data={"params": params})
        if turn % self.bench.args.seg_every == 0 and not self.pause():
            crop = {"image": ("crop.nii.gz", data.crop, OCTET)}
            self.send("segmentation", "POST", SEGMENTATION, data={"params": "{}"}, files=crop)
        if not self.pause():
            self.send("session_delete", "DELETE", f"/session/{session}")


def normal_client(bench: Bench, log: list[Record], deadline: float, n: int) -> None:
    """Annotation rounds with its own connection until ``deadline``."""
    with connect(f"127.0.1.{n + 1}", bench.args.timeout) as client:
        annotator = Annotator(client, bench, log, deadline)
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):  # logged by send()
                annotator.annotate(n)
            n += 1
            if time.monotonic() < deadline:
                annotator.pause()


def attack_table(data: Payloads) -> list[tuple[str, str, str, bytes, str]]:
    """Each hostile request: its name, method, route, uploaded file and params."""
    click = data.clicks[0]
    grow = json.dumps({"foreground": [click], "current_point": click})
    huge = json.dumps({"foreground": [click], "current_point": click, "spatial_size": [10**5] * 3})
    nested = '{"foreground": ' + "[" * 100_000 + "]" * 100_000 + "}"
    far = '{"foreground": [[1' + "0" * 400 + ", 23, 36]]}"
    return [
        ("bomb_trailing_session", "PUT", "/session/", data.bomb_trailing, "{}"),
        ("bomb_trailing_deepgrow", "POST", DEEPGROW_3D, data.bomb_trailing, grow),
        ("bomb_claim_session", "PUT", "/session/", data.bomb_claim, "{}"),
        ("bomb_image_deepgrow", "POST", DEEPGROW_3D, data.bomb_image, grow),
        ("spacing_deepgrow_3d", "POST", DEEPGROW_3D, data.fine_spacing, grow),
        ("spacing_deepgrow_2d", "POST", DEEPGROW_2D, data.fine_spacing, grow),
        ("spacing_segmentation", "POST", SEGMENTATION, data.fine_spacing, "{}"),
        ("spatial_size_deepgrow_3d", "POST", DEEPGROW_3D, data.ct, huge),
        ("spatial_size_deepgrow_2d", "POST", DEEPGROW_2D, data.ct, huge),
        ("spatial_size_segmentation", "POST", SEGMENTATION, data.ct, huge),
        ("nested_json", "POST", DEEPGROW_3D, data.ct, nested),
        ("huge_coordinate", "POST", DEEPGROW_3D, data.ct, far),
    ]


def hostile_client(bench: Bench, log: list[Record], deadline: float, n: int) -> None:
    """Sends the attacks in turn, client ``n`` from the ``5n``-th, until ``deadline``."""
    table, turn = attack_table(bench.data), 5 * n
    with connect(f"127.0.2.{n + 1}", 120.0) as client:
        attacker = Annotator(client, bench, log, deadline)
        while time.monotonic() < deadline:
            name, method, route, body, params = table[turn % len(table)]
            files = {"image": ("image.nii.gz", body, OCTET)}
            with contextlib.suppress(httpx.HTTPError):  # logged by send()
                attacker.send(name, method, route, data={"params": params}, files=files)
            turn += 1
            time.sleep(0.1)


class StalledBodies(threading.Thread):
    """Holds ``count`` connections that promise a 1 GB body: even ones drip a byte every ``drip``
    s, odd ones stall; one the server ends is counted by outcome and reopened a second later."""

    def __init__(self, url: str, count: int, drip: float, clients: int) -> None:
        super().__init__(daemon=True)
        self.port, self.drip, self.clients = int(url.rsplit(":", 1)[1]), drip, max(clients, 1)
        self.slots: list[tuple[socket.socket | None, float]] = [(None, 0.0)] * count
        self.outcomes, self.held_s = Counter[str](), list[float]()  # held_s: until the end
        self.done = threading.Event()

    def _open(self, slot: int) -> socket.socket | None:
        route = "PUT /session/" if slot % 4 < 2 else f"POST {DEEPGROW_3D}"
        head = f"{route} HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\nContent-Type: multi"
        head += "part/form-data; boundary=b\r\n\r\n--b\r\nContent-Disposition: form-data;"
        with contextlib.suppress(OSError):
            source = (f"127.0.2.{slot % self.clients + 1}", 0)  # the hostile clients' addresses
            sock = socket.create_connection(("127.0.0.1", self.port), 2, source)
            sock.sendall(f'{head} name="image"; filename="a.nii.gz"\r\n\r\n\x1f'.encode())
            sock.setblocking(False)  # recv and send below must never wait
            return sock
        return None

    @staticmethod
    def _check(sock: socket.socket, drip: bool) -> str | None:
        """How the server ended the connection (status, closed, reset); None while open."""
        try:
            reply = sock.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:  # still open; the next turn sees what a failed drip meant
            if drip:
                with contextlib.suppress(OSError):
                    sock.send(b"\0", socket.MSG_DONTWAIT)
            return None
        except OSError:
            return "reset"
        parts = reply.split(b" ", 2)
        return parts[1].decode(errors="replace") if len(parts) > 2 else "closed_without_answer"

    def run(self) -> None:
        last_drip = time.monotonic()
        while not self.done.wait(0.2):
            now = time.monotonic()
            drip = now - last_drip >= self.drip
            last_drip = now if drip else last_drip
            for slot, (sock, since) in enumerate(self.slots):
                if sock is None:
                    if now >= since and not self.done.is_set():
                        opened = self._open(slot)
                        self.outcomes["opened" if opened else "connect_failed"] += 1
                        self.slots[slot] = (opened, time.monotonic() + (opened is None))
                    continue
                outcome = self._check(sock, drip and slot % 2 == 0)
                if outcome is not None:
                    sock.close()
                    self.outcomes[outcome] += 1
                    self.held_s.append(now - since)
                    self.slots[slot] = (None, now + 1.0)
        for sock, _ in self.slots:
            if sock is not None:
                sock.close()
                self.outcomes["held_to_end"] += 1


def percentiles(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values) * scale
    quantiles = {f"p{q}": round(float(np.percentile(array, q)), 1) for q in (50, 95, 99)}
    return {"n": len(values), **quantiles, "max": round(float(array.max()), 1)}


def normal_summary(log: list[Record], seconds: float) -> dict[str, Any]:
    """Requests, errors by kind and status, latency percentiles (ms, 2xx answers) per kind."""
    good = [r for r in log if r.status.startswith("2")]
    errors = Counter(f"{r.kind} {r.status}" for r in log if not r.status.startswith("2"))
    kinds = sorted({r.kind for r in good})
    return {
        "requests": len(log),
        "requests_per_s": round(len(log) / seconds, 2),
        "errors": sum(errors.values()),
        "error_statuses": dict(errors),
        "latency_ms": {
            "overall": percentiles([r.seconds for r in good]),
            **{k: percentiles([r.seconds for r in good if r.kind == k]) for k in kinds},
        },
    }


def run_phase(bench: Bench, *, hostile: bool) -> dict[str, Any]:
    """Normal clients (and, when ``hostile``, the attackers) for one phase; its figures."""
    args = bench.args
    log: list[Record] = []
    attacks: list[Record] = []
    start = time.monotonic()
    deadline = start + (args.seconds if hostile else args.quiet_seconds)
    stalled = StalledBodies(bench.url, args.stalled if hostile else 0, args.drip, args.hostile)
    stalled.start()
    attackers = [
        spawn(hostile_client, bench, attacks, deadline, n) for n in range(hostile * args.hostile)
    ]
    normal = [spawn(normal_client, bench, log, deadline, n) for n in range(args.clients)]
    for thread in normal:
        thread.join()
    for thread in attackers:
        thread.join(timeout=max(0.0, deadline + 30 - time.monotonic()))
    stalled.done.set()
    stalled.join()
    figures: dict[str, Any] = {
        "normal": normal_summary(log, time.monotonic() - start),
        "server_rss_peak_mib": peak(bench.rss, start, time.monotonic()),
    }
    if hostile:
        names = sorted({r.kind for r in attacks})
        figures["hostile"] = {
            "requests": len(attacks),
            "statuses": {k: dict(Counter(r.status for r in attacks if r.kind == k)) for k in names},
            "ms": {k: percentiles([r.seconds for r in attacks if r.kind == k]) for k in names},
            "stalled_bodies": {**stalled.outcomes, "held_s": percentiles(stalled.held_s, 1.0)},
        }
    return figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet-seconds", type=float, default=30.0, help="quiet run (baseline)")
    parser.add_argument("--seconds", type=float, default=60.0, help="hostile run")
    parser.add_argument("--clients", type=int, default=8, help="normal clients")
    parser.add_argument("--hostile", type=int, default=8, help="hostile clients")
    parser.add_argument("--stalled", type=int, default=256, help="stalled-body connections held")
    parser.add_argument("--drip", type=float, default=5.0, help="seconds between drip bytes")
    parser.add_argument("--think", type=float, default=0.5, help="normal seconds between requests")
    parser.add_argument("--seg-every", type=int, default=3, help="rounds per crop segmentation")
    parser.add_argument("--timeout", type=float, default=60.0, help="normal request timeout, s")
    parser.add_argument("--bomb-gib", type=float, default=4.0, help="trailing zeros of bomb, GiB")
    parser.add_argument("--bomb-image-mib", type=int, default=1024, help="claimed image, MiB")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the server is stopped
    with tempfile.TemporaryDirectory(prefix="carina-hostile-") as tmp:
        root = Path(tmp)
        for name in MODELS:
            install_archive(name, root / "workspace")
        data = build_payloads(root, bomb_gib=args.bomb_gib, image_mib=args.bomb_image_mib)
        process, url = start_server(root / "workspace", root / "server.log")
        bench, done, warm = Bench(url, data, args, []), threading.Event(), list[Record]()
        spawn(sample_rss, process.pid, bench.rss, done)
        try:
            with connect("127.0.0.1", args.timeout) as client:  # warm-up: both DeepGrow models
                warm_up = Annotator(client, bench, warm, deadline=math.inf)
                for turn in (0, 3):
                    with contextlib.suppress(httpx.HTTPError):
                        warm_up.annotate(turn)
            idle = round(bench.rss[-1][1], 1) if bench.rss else None
            quiet = run_phase(bench, hostile=False)
            hostile = run_phase(bench, hostile=True)
            exit_code = process.poll()
        finally:
            done.set()
            stop_server(process)
    before = quiet["normal"]["latency_ms"]["overall"].get("p99")
    after = hostile["normal"]["latency_ms"]["overall"].get("p99")
    ratio = round(after / before, 2) if before and after else None
    errors = hostile["normal"]["errors"]
    result = {
        "benchmark": "hostile_load",
        "server": f"carina serve, defaults, {os.cpu_count()} CPUs, models: {', '.join(MODELS)}",
        "settings": vars(args),
        "bomb_bytes": {k: len(getattr(data, k)) for k in ("bomb_trailing", "bomb_image")},
        "warm_up_errors": [f"{r.kind} {r.status}" for r in warm if not r.status.startswith("2")],
        "server_rss_after_warm_up_mib": idle,
        "quiet": quiet,
        "hostile": hostile,
        "server_exit_code_after_attack": exit_code,
        "baseline": "the quiet run: the same server and normal clients, before the attack",
        "result": {
            "p99_quiet_ms": before,
            "p99_hostile_ms": after,
            "p99_ratio": ratio,
            "normal_errors_under_attack": errors,
            "goal": "p99_ratio <= 2 and normal_errors_under_attack == 0",
            "p99_ratio_met": ratio is not None and ratio <= 2,
            "met": ratio is not None and ratio <= 2 and errors == 0,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
