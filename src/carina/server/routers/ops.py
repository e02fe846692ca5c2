"""Logs, health checks and Prometheus metrics."""

from __future__ import annotations

import os

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from carina.server.openapi import (
    ADMIN_SECURITY,
    API_SECURITY,
    LIVE_RESPONSES,
    LOGS_RESPONSES,
    METRICS_RESPONSES,
    READY_RESPONSES,
    TAG_ADMIN_OTHERS,
)
from carina.server.services.logs import tail
from carina.server.state import AdminDep, ServicesDep
from carina.server.wire import error_response, json_response

router = APIRouter(tags=[TAG_ADMIN_OTHERS], default_response_class=Response)


@router.get(
    "/logs/",
    summary="Server logs",
    description="The last `lines` lines of the answering replica's log.",
    openapi_extra=ADMIN_SECURITY,
    responses=LOGS_RESPONSES,
)
def get_logs(services: AdminDep, lines: int = 100) -> Response:
    """The last ``lines`` lines of this replica's log (JSON lines, tracebacks left out), as text;
    needs the admin token."""
    text = tail(services.log_file, min(max(lines, 0), 100_000))
    return Response(text.encode(), media_type="text/plain; charset=utf-8")


@router.get("/health/live", summary="Liveness", responses=LIVE_RESPONSES)
async def live() -> Response:
    """The process is up and its event loop answers."""
    return json_response({"status": "ok"})


@router.get("/health", include_in_schema=False)
@router.get(
    "/health/ready", summary="Readiness (what load balancers check)", responses=READY_RESPONSES
)
def ready(services: ServicesDep) -> Response:
    """The workspace is readable and writable and the model index loads (models load lazily).

    Installed archives that cannot be served are listed under ``broken`` with why (their config
    file and key); they do not make the replica unready.
    """
    problems = []
    for folder in (services.workspace / "models", services.workspace / "sessions"):
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            problems.append(f"{folder.name}/ is not readable and writable")
    try:
        index = services.registry.index()
    except OSError as exc:
        problems.append(f"the model index cannot be read ({exc.strerror})")
    if problems:
        return error_response(503, "; ".join(problems), "NotReady")
    answer: dict[str, object] = {"status": "ok", "models": len(index.models)}
    if index.broken:
        answer["broken"] = index.broken
    return json_response(answer)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    openapi_extra=API_SECURITY,
    responses=METRICS_RESPONSES,
)
def metrics(services: ServicesDep) -> Response:
    """Requests, latencies, inference stages, queue depth and loaded models."""
    services.metrics.models_loaded.set(services.registry.loaded_count())
    services.metrics.queue_depth.set(services.runner.pending)
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
