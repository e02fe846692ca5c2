"""The services one server process holds, built in ``create_app`` and injected into routes."""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from carina.kinds import KINDS, Kinds
from carina.server.services.metrics import ServerMetrics
from carina.server.services.registry import ModelRegistry
from carina.server.services.runner import InferenceRunner
from carina.server.services.sessions import SessionStore
from carina.server.services.tokens import admin_token
from carina.settings import Settings


@dataclass
class Services:
    """Everything a route needs: settings, models, sessions, the worker pool, metrics."""

    settings: Settings
    workspace: Path
    registry: ModelRegistry
    sessions: SessionStore
    runner: InferenceRunner
    metrics: ServerMetrics
    admin_token: str
    log_file: Path
    scratch: Path

    @classmethod
    def build(cls, settings: Settings, *, log_file: Path, kinds: Kinds | None = None) -> Services:
        """Services over ``settings.workspace`` (created when missing), serving ``kinds``
        (default: every kind Carina has)."""
        workspace = settings.workspace.resolve()
        (workspace / "models").mkdir(parents=True, exist_ok=True)
        (workspace / "sessions").mkdir(parents=True, exist_ok=True)
        configured = settings.admin_token.get_secret_value() if settings.admin_token else None
        return cls(
            settings=settings,
            workspace=workspace,
            registry=ModelRegistry(
                workspace / "models",
                memory_budget=settings.model_memory_mib * 1024**2,
                device=settings.device,
                max_bytes=settings.max_image_bytes,
                kinds=KINDS if kinds is None else kinds,
            ),
            sessions=SessionStore(
                workspace / "sessions",
                default_expiry=settings.session_expiry,
                max_expiry=settings.session_max_expiry,
            ),
            runner=InferenceRunner(
                workers=settings.inference_workers,
                queue_limit=settings.queue_limit,
                timeout=settings.inference_timeout,
                initializer=functools.partial(
                    limit_threads,
                    settings.torch_threads
                    or max(1, (os.cpu_count() or 1) // settings.inference_workers),
                ),
            ),
            metrics=ServerMetrics(),
            admin_token=admin_token(workspace, configured).value,
            log_file=log_file,
            # Uploads and decoded copies stay on this replica's local disk, never the workspace.
            scratch=Path(tempfile.mkdtemp(prefix="carina-server-")),
        )


def limit_threads(count: int) -> None:
    """Give the calling worker thread ``count`` CPU threads for its tensor operations.

    OpenMP's thread count is per thread: a worker thread otherwise uses every core, and two
    workers on two cores would run four threads.
    """
    import torch

    torch.set_num_threads(count)


def get_services(request: Request) -> Services:
    """The app's services (a FastAPI dependency)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
