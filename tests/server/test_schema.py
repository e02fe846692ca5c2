"""The API description tells the truth: schemathesis sends generated requests to every route of a
server holding real models and checks each answer against ``/openapi.json`` (status, content type,
headers, body, ``Allow``, no 500); real answers of every kind are checked the same way; a 405 names
every method of its path, and every route answers in both trailing-slash spellings."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from carina.io import Volume, save_volume
from carina.server import create_app
from carina.settings import Settings

ADMIN_TOKEN = "admin-secret"
API_TOKEN = "api-secret"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MODEL = "spine_ct_vertebrae"
#: What an answer must agree with the schema on (the checks that send no request of their own).
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Generated requests also get an undocumented method, whose 405 must list the path's methods.
CHECKS = [*CONFORMANCE, allow_header_conformance, unsupported_method]
#: Enough generated requests per route to reach each documented answer; the file runs in ~30 s.
EXAMPLES = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


def served_schema() -> dict[str, Any]:
    """The schema a server sends (it does not depend on the workspace's contents)."""
    with tempfile.TemporaryDirectory() as folder:
        return create_app(Settings(workspace=Path(folder), preload_models=False)).openapi()


#: A documented 5xx is no server error: a feature not enabled (501), the queue full (503), an
#: inference past the time limit (504). A 500 always is.
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", 501, 503, 504]}}}
)
schema = schemathesis.openapi.from_dict(served_schema(), config=CONFIG)


def build(workspace: Path, **extra: Any) -> FastAPI:
    settings = Settings(workspace=workspace, admin_token=ADMIN_TOKEN, preload_models=False, **extra)
    return create_app(settings)


@pytest.fixture(scope="module")
def shared_workspace(tmp_path_factory: pytest.TempPathFactory, model_store: Path) -> Path:
    """One workspace with the real models for the generated requests (a random model name or
    session id finds nothing to change in it)."""
    folder = tmp_path_factory.mktemp("schema") / "workspace"
    shutil.copytree(model_store, folder / "models")
    return folder


# schemathesis ends an app's lifespan after each test, and Carina's lifespan cleans up for good
# (its scratch folder, its worker pool): each test gets its own app over the shared workspace.
@pytest.fixture
def app(shared_workspace: Path) -> FastAPI:
    return build(shared_workspace)


@pytest.fixture
def token_app(shared_workspace: Path) -> FastAPI:
    return build(shared_workspace, api_token=API_TOKEN)


@schema.parametrize()
@EXAMPLES
def test_generated_requests_with_the_admin_token(case: schemathesis.Case, app: FastAPI) -> None:
    case.call_and_validate(app=app, headers=ADMIN, checks=CHECKS)


@schema.parametrize()
@EXAMPLES
def test_generated_requests_without_a_token(case: schemathesis.Case, app: FastAPI) -> None:
    case.call_and_validate(app=app, checks=CHECKS)


@schema.parametrize()
@EXAMPLES
def test_generated_requests_to_a_server_with_an_api_token(
    case: schemathesis.Case, token_app: FastAPI
) -> None:
    case.call_and_validate(app=token_app, headers=ADMIN, checks=CHECKS)


@pytest.fixture
def client(workspace: Path) -> Iterator[TestClient]:
    with TestClient(build(workspace), raise_server_exceptions=False) as test_client:
        yield test_client


def conforms(method: str, path: str, answer: Any, **query: str) -> None:
    """``answer`` (to a request for ``path``, a schema path) is one the schema describes."""
    named = {key: query.pop(key) for key in ("name", "session_id") if f"{{{key}}}" in path}
    case = schema[path][method].Case(path_parameters=named or None, query=query or None)
    answer.request.read()  # schemathesis copies the request, which httpx may still stream
    case.validate_response(answer, checks=CONFORMANCE)


def test_inference_answers_match_the_schema(client: TestClient, spine_ct_path: Path) -> None:
    image = {"image": ("ct.nii.gz", spine_ct_path.read_bytes())}
    created = client.put("/session/", files=image)
    conforms("PUT", "/session/", created)
    session = created.json()["session_id"]
    kinds = {}
    for output in ("", "image", "json"):
        query = {"model": MODEL, "session_id": session, **({"output": output} if output else {})}
        answer = client.post("/v1/segmentation", params=query)
        conforms("POST", "/v1/segmentation", answer, **query)
        kinds[output] = answer.headers["content-type"].split(";")[0]
    assert kinds == {
        "": "multipart/form-data",
        "image": "application/octet-stream",
        "json": "application/json",
    }
    for method in ("GET", "DELETE"):
        answer = client.request(method, f"/session/{session}")
        conforms(method, "/session/{session_id}", answer, session_id=session)
    gone = client.post("/v1/inference", params={"model": MODEL, "session_id": session})
    assert gone.status_code == 440
    conforms("POST", "/v1/inference", gone)
    for query in ({}, {"model": MODEL}, {"model": "none"}):
        conforms("GET", "/v1/models", client.get("/v1/models", params=query), **query)


def test_polygon_answers_match_the_schema(client: TestClient, tmp_path: Path) -> None:
    mask = np.zeros((40, 30, 3), dtype=np.uint8)
    mask[10:25, 8:20, 1] = 1
    save_volume(Volume(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    files = {"datapoint": ("m.nii.gz", (tmp_path / "mask.nii.gz").read_bytes())}
    answer = client.post("/v1/mask2polygon", files=files, data={"params": "{}"})
    conforms("POST", "/v1/mask2polygon", answer)
    polygon = answer.json()[1][0]
    save_volume(Volume(mask[:, :, 1:2] * 0, np.eye(4)), tmp_path / "slice.png")
    fix = {"poly": [polygon], "vertex_offset": [2, 2], "dimension": 2}
    fix |= {"polygon_index": 0, "vertex_index": 0, "propagate_neighbor": 1}
    files = {"image": ("slice.png", (tmp_path / "slice.png").read_bytes())}
    answer = client.post("/v1/fixpolygon", files=files, data={"params": json.dumps(fix)})
    assert answer.headers["content-type"].startswith("multipart/form-data")
    conforms("POST", "/v1/fixpolygon", answer)


def test_admin_and_operations_answers_match_the_schema(client: TestClient) -> None:
    path, url = "/admin/model/{name}", f"/admin/model/{MODEL}"
    config = client.get(url, headers=ADMIN)
    answers = {
        "GET": config,
        "PATCH": client.patch(url, headers=ADMIN, json=config.json()),
        "GET without the token": client.get(url),
        "PUT from NGC": client.put(url, headers=ADMIN, data={"params": '{"ngc": "x"}'}),
        "DELETE": client.delete(url, headers=ADMIN),
        "DELETE again": client.delete(url, headers=ADMIN),
    }
    statuses = {what: answer.status_code for what, answer in answers.items()}
    assert statuses == {
        "GET": 200,
        "PATCH": 200,
        "GET without the token": 401,
        "PUT from NGC": 501,
        "DELETE": 200,
        "DELETE again": 404,
    }
    for what, answer in answers.items():
        conforms(what.split()[0], path, answer, name=MODEL)
    for route in ("/logs/", "/health/live", "/health/ready", "/metrics"):
        answer = client.get(route, headers=ADMIN)
        assert answer.status_code == 200, route
        conforms("GET", route, answer)


def test_refusals_match_the_schema(workspace: Path, spine_ct_path: Path) -> None:
    query = {"model": MODEL}
    strict = build(workspace, max_upload_bytes=1_000_000, inference_timeout=0.001)
    with TestClient(strict, raise_server_exceptions=False) as client:
        too_big = client.post(
            "/v1/segmentation", params=query, files={"image": ("a", b"0" * 10**6)}
        )
        assert too_big.status_code == 413
        conforms("POST", "/v1/segmentation", too_big, **query)
        image = {"image": ("ct.nii.gz", spine_ct_path.read_bytes())}
        late = client.post("/v1/segmentation", params=query, files=image)
        assert late.status_code == 504
        conforms("POST", "/v1/segmentation", late, **query)
    with TestClient(build(workspace, rate_limit=0.01), raise_server_exceptions=False) as client:
        answers = [client.get("/v1/models") for _ in range(2)]
        assert [answer.status_code for answer in answers] == [200, 429]
        conforms("GET", "/v1/models", answers[-1])


def test_the_schema_promises_no_422_and_one_error_body() -> None:
    served = served_schema()
    assert "HTTPValidationError" not in served["components"]["schemas"]
    for path, item in served["paths"].items():
        for method, operation in item.items():
            answers = operation["responses"]
            # FastAPI's validation 422 never: only what the datastore refuses (MONAI Label, the
            # viewer) or a model that fails on the image, each with the error body.
            if "422" in answers:
                assert {"MONAI Label", "Viewer"} & set(operation["tags"]) or "ModelRunError" in str(
                    answers["422"]["description"]
                ), (method, path)
                assert answers["422"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"
                }, (method, path)
            # Every route with a body or a query answers a bad one with 400 (a malformed
            # session id is 404 like an unknown one, so DELETE /session/{id} has no 400).
            query = [p for p in operation.get("parameters", []) if p["in"] == "query"]
            if query or operation.get("requestBody"):
                assert "400" in answers, (method, path)
            for status, answer in answers.items():
                if not status.startswith("2"):
                    body = answer["content"]["application/json"]["schema"]
                    assert body == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/admin/model/x", "DELETE, GET, PATCH, PUT"),
        ("/session/0", "DELETE, GET"),
        ("/session/", "PUT"),
        ("/v1/models", "GET"),
        ("/docs", "GET, HEAD"),
    ],
)
def test_405_names_every_method_of_the_path(client: TestClient, path: str, allowed: str) -> None:
    for spelling in (path.rstrip("/"), path.rstrip("/") + "/"):
        answer = client.post(spelling, headers=ADMIN)
        assert answer.status_code == 405, spelling
        assert answer.headers["allow"] == allowed, spelling
        assert answer.json()["error"]["type"] == "HTTPException"


def test_both_spellings_of_parameter_routes_answer(client: TestClient, spine_ct_path: Path) -> None:
    image = {"image": ("ct.nii.gz", spine_ct_path.read_bytes())}
    session = client.put("/session", files=image).json()["session_id"]
    for spelling in (f"/session/{session}", f"/session/{session}/"):
        assert client.get(spelling).status_code == 200, spelling
    assert client.delete(f"/session/{session}/").status_code == 200
    for spelling in (f"/admin/model/{MODEL}", f"/admin/model/{MODEL}/"):
        answer = client.get(spelling, headers=ADMIN, follow_redirects=False)
        assert answer.status_code == 200, spelling
        assert answer.json()["type"] == "segmentation"
