"""The admin model upload (spec 4.11): which parts of the request install what."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from carina.errors import NotSupportedError, RequestError
from carina.server.services.inference import Upload
from carina.server.services.registry import ModelInfo, ModelRegistry


def install_model(
    registry: ModelRegistry, name: str, params: dict[str, Any], uploads: Sequence[Upload]
) -> ModelInfo:
    """Install (or replace) ``name`` from an upload: ``data`` an archive zip, or ``config`` (a
    ``config_aiaa.json``, as a file part or a form field) with ``data`` (model.ts or model.pt).

    Raises:
        NotSupportedError: the client asked for an NGC download.
        RequestError, ConfigError, ArchiveError, UntrustedCodeError: nothing was installed.
    """
    if "path" in params or "ngc" in params:
        raise NotSupportedError("downloading models from NGC is not enabled; upload an archive zip")
    files = {upload.field: upload for upload in uploads}
    data = files.get("data") or files.get("file") or files.get("archive")
    config = files["config"].path.read_bytes() if "config" in files else params.get("config")
    if config is not None:
        raw = config if isinstance(config, bytes) else _text(config).encode()
        return registry.install_files(
            name, raw, data.path if data else None, data.filename if data else ""
        )
    if data is None:
        raise RequestError("upload 'data' (an archive zip), or 'config' and 'data'")
    return registry.install_zip(name, data.path)


def _text(config: Any) -> str:
    """A config sent as a form field: JSON text, or already parsed from ``params``."""
    return config if isinstance(config, str) else json.dumps(config)
