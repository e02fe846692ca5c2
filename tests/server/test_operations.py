"""Operations and security: TLS, the optional API token, CORS, private logs and metrics, the API
description, and the model cache (memory budget, reload on change)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from carina.server import create_app
from carina.server.services.registry import ModelRegistry
from carina.settings import Settings
from tests.servers import start_server


def make_client(workspace: Path, **settings: object) -> TestClient:
    config = Settings(workspace=workspace, admin_token="a", preload_models=False, **settings)  # type: ignore[arg-type]
    return TestClient(create_app(config), raise_server_exceptions=False)


@pytest.fixture
def client(workspace: Path) -> Iterator[TestClient]:
    with make_client(workspace) as test_client:
        yield test_client


@pytest.mark.integration
def test_self_signed_tls(workspace: Path) -> None:
    server = start_server(workspace, args=["--ssl-self-signed"], tls=True)
    try:
        assert httpx.get(f"{server.url}/health/live", verify=False).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/health/live")
        assert not list(workspace.rglob("*.pem")), "TLS keys stay off the shared workspace"
    finally:
        server.stop()


def test_optional_api_token_guards_all_but_health_and_docs(workspace: Path) -> None:
    with make_client(workspace, api_token="secret") as client:
        assert client.get("/v1/models").status_code == 401
        assert (
            client.get("/v1/models", headers={"Authorization": "Bearer secret"}).status_code == 200
        )
        for open_path in ("/health/live", "/health/ready", "/", "/docs/", "/openapi.json"):
            assert client.get(open_path).status_code == 200, open_path


def test_cors_is_off_unless_origins_are_set(workspace: Path, client: TestClient) -> None:
    origin = {"Origin": "http://viewer.example"}
    assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
    with make_client(workspace, cors_origins=["http://viewer.example"]) as allowed:
        answer = allowed.get("/v1/models", headers=origin)
        assert answer.headers["access-control-allow-origin"] == "http://viewer.example"


def test_logs_and_metrics_carry_no_file_name_or_patient_data(
    client: TestClient, workspace: Path, spine_ct_path: Path
) -> None:
    secret = "DOE_JOHN_1970"
    client.post(
        "/v1/segmentation?model=spine_ct_vertebrae",
        files={"image": (f"/data/{secret}/{secret}.nii.gz", spine_ct_path.read_bytes())},
        data={"params": "{}"},
    )
    client.post(
        "/v1/segmentation?model=spine_ct_vertebrae",
        files={"image": (f"{secret}.nii.gz", b"corrupt")},
    )
    logged = "".join(p.read_text() for p in (workspace / "logs").glob("*.log"))
    assert '"route": "/v1/segmentation"' in logged
    for record in logged.splitlines():
        json.loads(record)  # JSON lines
    assert secret not in logged
    assert secret not in client.get("/logs?lines=1000").text
    assert secret not in client.get("/metrics").text


def test_openapi_describes_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/models",
        "/v1/segmentation",
        "/v1/dextr3d",
        "/v1/deepgrow",
        "/v1/inference",
        "/v1/mask2polygon",
        "/v1/fixpolygon",
        "/session/",
        "/session/{session_id}",
        "/logs/",
        "/admin/model/{name}",
        "/health/ready",
        "/health/live",
        "/metrics",
        "/info/",
        "/infer/{model}",
        "/datastore/",
        "/datastore/label",
        "/activelearning/{strategy}",
        "/train/",
        "/auth/token",
    ):
        assert path in paths, path
    assert set(paths["/admin/model/{name}"]) == {"get", "put", "patch", "delete"}
    body = paths["/v1/deepgrow"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["params"]["example"]
    tags = {"API (v1)", "MONAI Label", "Viewer", "Admin (model)", "Admin (others)"}
    assert {t["name"] for t in spec["tags"]} == tags


def test_every_route_answers_with_and_without_a_trailing_slash(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = [(method, path) for path, item in spec["paths"].items() for method in item]
    routes += [
        ("get", "/health"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
        ("get", "/favicon.ico"),
    ]
    unanswered = []
    for method, path in routes:
        concrete = path.replace("{session_id}", "0" * 8 + "-0000-0000-0000-" + "0" * 12)
        concrete = concrete.replace("{name}", "no_such_model")
        for spelling in {concrete.rstrip("/"), concrete.rstrip("/") + "/"}:
            answer = client.request(method, spelling, headers={"Authorization": "Bearer a"})
            body = answer.json() if "json" in answer.headers.get("content-type", "") else {}
            kind = body.get("error", {}).get("type") if isinstance(body, dict) else None
            if (
                answer.status_code in (404, 405) and kind == "HTTPException"
            ) or 300 <= answer.status_code < 400:
                unanswered.append(f"{method.upper()} {spelling}: {answer.status_code}")
    assert not unanswered


def test_model_cache_budget_and_reload(workspace: Path) -> None:
    registry = ModelRegistry(workspace / "models", memory_budget=1, device="cpu", max_bytes=10**9)
    first = registry.runner("spine_ct_vertebrae")
    assert registry.runner("spine_ct_vertebrae") is first, "cached"
    registry.runner("deepgrow_2d")
    assert registry.loaded_count() == 1, "the budget keeps only the last one"
    weights = workspace / "models" / "deepgrow_2d" / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    before = registry.runner("deepgrow_2d")
    time.sleep(0.01)
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, weights)
    after = registry.runner("deepgrow_2d")
    assert after is not before, "new weights are loaded"
    assert all(float(p.detach().abs().sum()) == 0 for p in after.predictor.network.parameters())
    shutil.rmtree(workspace / "models" / "deepgrow_2d")
    assert [e.name for e in registry.models()] == [
        "annotation_dextr3d",
        "deepgrow_3d",
        "spine_ct_vertebrae",
    ]
