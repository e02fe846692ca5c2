"""Federated learning on NVIDIA FLARE (nvflare 2.9), driven by Carina archives.

FLARE's API stays inside this package: :mod:`.job` writes jobs from archives, :mod:`.client` is the
program each site runs (Carina's own engine through FLARE's Client API, :mod:`.site` without FLARE),
:mod:`.components` holds the server-side pieces, :mod:`.simulate` runs FLARE's simulator and
:mod:`.provision` makes mutual-TLS startup kits and runs a local proof of concept with them.
Importing this package imports neither FLARE nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carina.fl.job import Algorithm, JobSpec, Privacy, write_job
    from carina.fl.simulate import FLError, FLResult, simulate

__all__ = ["Algorithm", "FLError", "FLResult", "JobSpec", "Privacy", "simulate", "write_job"]

_WHERE = {
    "Algorithm": "carina.fl.job",
    "JobSpec": "carina.fl.job",
    "Privacy": "carina.fl.job",
    "write_job": "carina.fl.job",
    "FLError": "carina.fl.simulate",
    "FLResult": "carina.fl.simulate",
    "simulate": "carina.fl.simulate",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'carina.fl' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(_WHERE[name]), name)
