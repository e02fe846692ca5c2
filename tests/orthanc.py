"""A real Orthanc with its DICOMweb plugin (Debian's ``orthanc`` and ``orthanc-dicomweb``), started
as a plain process on 127.0.0.1 with its own config and storage, stopped by its PID."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "carina", "orthanc-test-password"


@dataclass(frozen=True)
class Orthanc:
    url: str  # the DICOMweb root
    process: subprocess.Popen[bytes]


@contextmanager
def running_orthanc(folder: Path) -> Iterator[Orthanc]:
    """Orthanc on a free port, storing under ``folder``, basic authentication on; skips the test
    when Orthanc or its DICOMweb plugin is not installed."""
    binary = shutil.which("Orthanc")
    if binary is None or not PLUGIN.is_file():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (.ci/system-deps.sh)")
    port = free_port()
    storage = folder / "db"
    storage.mkdir(parents=True)
    config = {
        "Name": "CarinaTest", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "HttpPort": port, "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD}, "DicomServerEnabled": False,
        "OrthancExplorerEnabled": False, "WebDavEnabled": False, "HttpThreadsCount": 4,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False,
                     "Host": f"127.0.0.1:{port}", "Ssl": False},
    }  # fmt: skip
    (folder / "orthanc.json").write_text(json.dumps(config))
    with (folder / "orthanc.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/system", auth=(USER, PASSWORD)).is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise RuntimeError((folder / "orthanc.log").read_text()[-2000:])
        yield Orthanc(f"http://127.0.0.1:{port}/dicom-web", process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
