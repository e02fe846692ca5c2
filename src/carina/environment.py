"""What Carina runs on: package versions, compute devices and thread counts."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

from carina import __version__

_PACKAGES = ("torch", "monai", "numpy", "nibabel", "SimpleITK", "pydicom", "isal")


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None (found without importing it)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_environment() -> dict[str, Any]:
    """Versions, CUDA devices (an empty list means CPU only) and threads, as plain data."""
    versions: dict[str, str | None] = {"carina": __version__, "python": platform.python_version()}
    versions.update({name: package_version(name) for name in _PACKAGES})
    devices: list[dict[str, Any]] = []
    threads: dict[str, Any] = {"cpu_count": os.cpu_count()}
    if versions["torch"] is not None:
        import torch

        threads["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                devices.append(
                    {
                        "index": index,
                        "name": props.name,
                        "memory_gib": round(props.total_memory / 1024**3, 1),
                        "capability": f"{props.major}.{props.minor}",
                    }
                )
    return {"versions": versions, "devices": devices, "threads": threads}
