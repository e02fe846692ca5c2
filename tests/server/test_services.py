"""The server's services alone (no HTTP): params, model entries, sessions, the worker pool."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from carina.archive import Archive
from carina.errors import (
    ConfigError,
    InferenceTimeoutError,
    RequestError,
    ServerBusyError,
    SessionExpired,
    SessionNotFound,
)
from carina.io import Volume
from carina.kinds import KINDS, ModelKind, kind_of
from carina.server.services.aiaa import model_entry
from carina.server.services.inference import Upload, basename, choose_inputs, known_suffix
from carina.server.services.params import as_point, as_points, parse_params
from carina.server.services.registry import ModelInfo, check_model_name
from carina.server.services.runner import InferenceRunner
from carina.server.services.sessions import SessionStore
from carina.server.wire import multipart_response


def test_params_in_every_encoding_clients_use() -> None:
    for empty in (None, "", "null", "{}", b"  "):
        assert parse_params(empty) == {}
    assert parse_params('"{\\"a\\": 1}"') == {"a": 1}
    assert as_points("[[41,71,64],[42,70,60]]", "points") == [[41, 71, 64], [42, 70, 60]]
    assert as_points([["1", 2.0, 3]], "points") == [[1, 2, 3]]
    assert as_point([4, 5, 6], "current_point") == [4, 5, 6]
    assert as_point([[4, 5, 6]], "current_point") == [4, 5, 6]
    assert as_point("[[4, 5, 6]]", "current_point") == [4, 5, 6]
    assert as_point(None, "current_point") is None
    assert as_points("[1, 2]", "foreground") == [[1, 2]]  # a click on a planar image (a PNG)
    for bad in ("[1]", "[1, 2, 3, 4]", "[[1.5, 2, 3]]", "[[true, 2, 3]]", '"x"'):
        with pytest.raises(RequestError):
            as_points(bad, "points")


def test_client_file_names_are_never_paths() -> None:
    assert basename("C:\\Users\\me\\Temp\\tmpab12cd.nii.gz") == "tmpab12cd.nii.gz"
    assert basename("/home/u/../../etc/passwd") == "passwd"
    assert known_suffix("/x/tmp.NII.GZ") == ".nii.gz"
    assert known_suffix("blob") == "" and known_suffix(".nii.gz") == ""
    uploads = [Upload(f"image{n}", "f.dcm", Path("x")) for n in (10, 2, 1)]
    assert [u.field for u in choose_inputs(uploads)] == ["image1", "image2", "image10"]
    both = [Upload("datapoint", "a", Path("a")), Upload("image", "b", Path("b"))]
    assert [u.field for u in choose_inputs(both)] == ["image"]


def archive_with(folder: Path, config: dict[str, Any]) -> Archive:
    """An archive holding ``config`` as its config_aiaa.json."""
    (folder / "config").mkdir(parents=True)
    (folder / "config" / "config_aiaa.json").write_text(json.dumps(config))
    return Archive.open(folder)


def served(folder: Path, config: dict[str, Any]) -> ModelKind:
    """The kind that would serve an archive holding ``config`` as its config_aiaa.json."""
    archive = archive_with(folder, config)
    return kind_of(archive, archive.serving_config())


def test_model_entries_follow_the_spec_mapping(tmp_path: Path) -> None:
    clara3 = {
        "version": 3,
        "type": "annotation",
        "labels": ["spleen"],
        "pre_transforms": [],
        "inference": {"additional_info": {"organ": "spleen"}},
    }
    annotation = archive_with(tmp_path / "ann", clara3).serving_config()
    entry = model_entry(ModelInfo("ann", annotation, KINDS["annotation"])).model_dump()
    assert entry["version"] == "3" and entry["padding"] == 20 and entry["roi"] == [128] * 3
    assert entry["sigma"] == 3.0 and entry["organ"] == "spleen"
    clara4 = {
        "version": 1,
        "type": "deepgrow",
        "labels": [],
        "pre_transforms": [
            {
                "name": "monai.apps.deepgrow.transforms.AddGuidanceFromPointsd",
                "args": {"dimensions": 2},
            }
        ],
        "inference": {"meta_data": {}},
    }
    deepgrow = archive_with(tmp_path / "dg2", clara4).serving_config()
    assert (
        model_entry(ModelInfo("dg", deepgrow, KINDS["deepgrow"])).model_dump()["deepgrow"] == "2D"
    )
    # Listed only when servable: Clara's DeepGrow ran a network its config does not define.
    with pytest.raises(ConfigError, match=r"config_aiaa\.json: network_def: required"):
        served(tmp_path / "clara", clara4)
    unet = {"_target_": "UNet"}
    with pytest.raises(ConfigError, match=r"config_aiaa\.json: roi: required for deepgrow"):
        served(tmp_path / "dg", {"type": "deepgrow", "labels": [], "network_def": unet})
    with pytest.raises(ConfigError, match=r"config_aiaa\.json: type: 'magic' is not a kind"):
        served(tmp_path / "magic", {"type": "magic", "labels": [], "network_def": unet})
    for bad in ("..", "../x", "a/b", ".hidden", "", "x" * 200):
        with pytest.raises(RequestError):
            check_model_name(bad)


def test_multipart_answer_layout() -> None:
    response = multipart_response({"points": [[1, 2, 3]]}, b"DATA\r\n--", "result.nii.gz")
    boundary = response.headers["content-type"].split("boundary=")[1]
    assert boundary.isalnum() and len(boundary) == 32
    assert (
        bytes(response.body)
        == (
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n'
            f'Content-Type: application/json\r\n\r\n{{"points":[[1,2,3]]}}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="result.nii.gz"\r\nContent-Type: application/octet-stream\r\n\r\n'
            f"DATA\r\n--\r\n--{boundary}--\r\n"
        ).encode()
    )
    assert response.headers["content-length"] == str(len(response.body))


def test_sessions_expire_and_take_the_shorter_lifetime(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, default_expiry=3600, max_expiry=100)
    volume = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    info = store.create(volume, expiry=0)
    assert info.expiry == 100, "min(default, max)"
    assert np.array_equal(store.volume(info.name).array, volume.array)
    short = store.create(volume, expiry=1)
    time.sleep(2.1)
    with pytest.raises(SessionExpired):
        store.volume(short.name)
    assert not (tmp_path / short.name).exists()
    store.info(info.name, touch=True)
    assert store.purge() == 0
    store.delete(info.name)
    with pytest.raises(SessionNotFound):
        store.info(info.name)
    with pytest.raises(SessionNotFound):
        store.info("../../etc")
    with pytest.raises(RequestError):
        store.create(volume, save_as=".exe")
    assert list(tmp_path.iterdir()) == []


def test_decoded_session_images_stay_within_their_memory(tmp_path: Path) -> None:
    """Later calls on a session reuse its decoded image; past the budget the least recently
    used go; a changed file is read again."""
    volume = Volume(np.zeros((64, 64, 32), dtype=np.int16), np.eye(4))  # 256 KiB each
    store = SessionStore(tmp_path, default_expiry=3600, max_expiry=3600, cache_bytes=600 * 1024)
    first, second, third = (store.create(volume).name for _ in range(3))
    decoded = store.volume(first)
    assert store.volume(first) is decoded, "decoded once"
    store.volume(second)
    assert store.volume(first) is decoded, "two fit"
    store.volume(third)  # 768 KiB: the least recently used (second) goes
    assert store.volume(first) is decoded
    assert second not in store._cache and third in store._cache
    image = next((tmp_path / first).glob("image*"))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert store.volume(first) is not decoded, "a changed file is read again"


def sleep_then(value: int, seconds: float) -> int:
    time.sleep(seconds)
    return value


def test_worker_pool_bounds_its_queue_and_times_out() -> None:
    async def scenario() -> None:
        runner = InferenceRunner(workers=1, queue_limit=1, timeout=5)
        release = threading.Event()
        first = asyncio.create_task(runner.run(release.wait))
        second = asyncio.create_task(runner.run(lambda: 2))
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusyError) as busy:
            await runner.run(lambda: 3)
        assert busy.value.retry_after >= 1
        release.set()
        assert await first is True and await second == 2
        # The limit counts from a job's start, not from its wait in the queue.
        queued = InferenceRunner(workers=1, queue_limit=2, timeout=0.4)
        runs = [queued.run(functools.partial(sleep_then, n, 0.25)) for n in range(3)]
        assert await asyncio.gather(*runs) == [0, 1, 2]
        queued.shutdown()
        slow = InferenceRunner(workers=1, queue_limit=0, timeout=0.1)
        with pytest.raises(InferenceTimeoutError):
            await slow.run(lambda: time.sleep(0.5))
        runner.shutdown()
        slow.shutdown()

    asyncio.run(scenario())
