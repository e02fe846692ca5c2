"""The MONAI Label routes of ``carina serve``, measured by ``benchmarks/server.py``: ``/info/``
latency while inferences run on a server with every zoo model, and the same inference through
the MONAI Label API and through AIAA v1, alternated so that both see the same machine state."""

from __future__ import annotations

import json
import statistics
import threading
import time
from typing import Any

import httpx

MODEL = "spine_ct_vertebrae"


def upload(url: str, image_id: str, image: bytes) -> None:
    """Put ``image`` into the server's datastore under ``image_id``."""
    answer = httpx.put(
        f"{url}/datastore/image",
        params={"image": image_id},
        files={"file": ("image.nii.gz", image)},
        timeout=120,
    )
    answer.raise_for_status()


def info_under_inference(
    url: str, image_id: str, *, inferences: int, seconds: float
) -> dict[str, Any]:
    """``GET /info/`` every 20 ms for ``seconds`` while ``inferences`` clients run
    ``/infer/{model}`` on a datastore image back to back; its latency percentiles."""
    stop = threading.Event()
    done: list[int] = []
    failures: list[int] = []

    def infer() -> None:
        with httpx.Client(timeout=600) as client:
            while not stop.is_set():
                answer = client.post(
                    f"{url}/infer/{MODEL}", params={"image": image_id}, data={"params": "{}"}
                )
                (done if answer.status_code == 200 else failures).append(answer.status_code)

    workers = [threading.Thread(target=infer, daemon=True) for _ in range(inferences)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # every client has a request in flight
    latencies = []
    with httpx.Client(timeout=60) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            answer = client.get(f"{url}/info/")
            latencies.append(time.perf_counter() - start)
            if answer.status_code != 200 or len(json.loads(answer.content)["models"]) < 5:
                failures.append(answer.status_code)
            time.sleep(0.02)
    stop.set()
    for worker in workers:
        worker.join()
    ordered = sorted(latencies)
    return {
        "info_requests": len(latencies),
        "info_p50_ms": round(statistics.median(ordered) * 1000, 2),
        "info_p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
        "info_max_ms": round(ordered[-1] * 1000, 2),
        "inferences_completed": len(done),
        "failures": len(failures),
    }


def monai_label_vs_aiaa(url: str, image: bytes, *, repeats: int) -> dict[str, Any]:
    """The same segmentation of the same uploaded file through ``/infer/{model}`` and through
    ``/v1/segmentation``, ``repeats`` pairs in ABBA order (which goes first swaps each pair, so
    a drift in the machine's speed favours neither); median seconds and their ratio."""
    times: dict[str, list[float]] = {"monai_label": [], "aiaa": []}

    def monai_label(client: httpx.Client) -> None:
        answer = client.post(
            f"{url}/infer/{MODEL}",
            data={"params": json.dumps({"result_extension": ".nii.gz"})},
            files={"file": ("image.nii.gz", image)},
        )
        answer.raise_for_status()

    def aiaa(client: httpx.Client) -> None:
        answer = client.post(
            f"{url}/v1/segmentation",
            params={"model": MODEL},
            data={"params": "{}"},
            files={"image": ("image.nii.gz", image)},
        )
        answer.raise_for_status()

    calls = {"monai_label": monai_label, "aiaa": aiaa}
    with httpx.Client(timeout=600) as client:
        for repeat in range(repeats):
            for name in abba(list(calls), repeat):
                start = time.perf_counter()
                calls[name](client)
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "repeats": repeats,
        "order": "ABBA",
        "monai_label_infer_s": round(medians["monai_label"], 3),
        "aiaa_segmentation_s": round(medians["aiaa"], 3),
        "ratio": round(medians["monai_label"] / medians["aiaa"], 3),
    }


def abba(names: list[str], repeat: int) -> list[str]:
    """``names`` in order on even repeats and reversed on odd ones."""
    return names if repeat % 2 == 0 else names[::-1]
