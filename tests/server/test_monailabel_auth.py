"""Sign-in on the MONAI Label and AIAA routes: tokens, roles (user < annotator < reviewer <
admin), the AIAA routes' own setting, CORS for OHIF on another origin, and the audit log."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from carina.audit import read_events
from carina.auth import Role, UserStore
from carina.settings import Settings
from tests.auth.conftest import cheap_hasher

PASSWORD = "correct horse battery"
ADMIN = "the admin token of this test"
ROLES = {"una": Role.USER, "ann": Role.ANNOTATOR, "rev": Role.REVIEWER, "adm": Role.ADMIN}


def make_client(workspace: Path, **settings: object) -> TestClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from carina.server import create_app

    app = create_app(Settings(workspace=workspace, preload_models=False, **settings))  # type: ignore[arg-type]
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def signed(workspace: Path) -> Iterator[TestClient]:
    users = UserStore(workspace, hasher=cheap_hasher())
    for name, role in ROLES.items():
        users.add(name, PASSWORD, [role])
    settings = {"cors_origins": ["http://localhost:3000"], "admin_token": ADMIN}
    with make_client(workspace, **settings) as client:
        yield client


def token(client: TestClient, name: str) -> dict[str, str]:
    answer = client.post("/auth/token", data={"username": name, "password": PASSWORD,
                                               "grant_type": "password"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return {"Authorization": f"{body['token_type']} {body['access_token']}"}


def test_sign_in_and_the_probe_slicer_makes(signed: TestClient, workspace: Path) -> None:
    probe = signed.get("/auth/")
    assert probe.status_code == 200 and probe.json()["enabled"] is True
    assert signed.get("/info/").status_code == 401
    wrong = signed.post("/auth/token", data={"username": "una", "password": "nope"})
    unknown = signed.post("/auth/token", data={"username": "ghost", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]
    headers = token(signed, "una")
    assert signed.get("/auth/token/valid", headers=headers).status_code == 200
    assert (
        signed.get("/auth/token/valid", headers={"Authorization": "Bearer x.y.z"}).status_code
        == 401
    )
    assert signed.get("/info/", headers=headers).status_code == 200
    events = read_events(workspace)
    assert [e.action for e in events].count("sign_in_failed") == 2
    assert any(e.action == "sign_in" and e.actor == "una" for e in events)
    assert "ghost" not in json.dumps([e.target for e in events]), "no name tried reaches the log"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/datastore/", "una"),
        ("PUT", "/datastore/image?image=x", "ann"),
        ("PUT", "/datastore/label?image=x", "ann"),
        ("PUT", "/datastore/label/info?label=x&tag=final", "ann"),
        ("DELETE", "/datastore/image?id=x", "adm"),
        ("DELETE", "/datastore/label?id=x&tag=final", "adm"),
        ("POST", "/train/spine_ct_vertebrae", "adm"),
        ("DELETE", "/train/", "adm"),
        ("DELETE", "/model/nope", "adm"),
        ("GET", "/datastore/dataset", "ann"),
    ],
)
def test_roles_gate_the_routes(signed: TestClient, method: str, path: str, allowed: str) -> None:
    order = list(ROLES)
    for name in order:
        answer = signed.request(method, path, headers=token(signed, name))
        if order.index(name) < order.index(allowed):
            assert answer.status_code == 403, (name, answer.text)
            assert "role" in answer.json()["error"]["message"][0]
        else:
            assert answer.status_code not in (401, 403), (name, answer.status_code, answer.text)


def test_only_reviewers_approve(signed: TestClient, workspace: Path, spine_ct_path: Path) -> None:
    import numpy as np

    from carina.io import load_volume, save_volume

    admin = token(signed, "adm")
    put = signed.put("/datastore/image?image=case", headers=admin,
                     files={"file": ("ct.nii.gz", spine_ct_path.read_bytes())})  # fmt: skip
    assert put.status_code == 200, put.text
    image = load_volume(spine_ct_path)
    label = workspace.parent / "label.nii.gz"
    save_volume(image.with_array(np.zeros(image.shape, np.uint8)), label)
    saved = signed.put("/datastore/label?image=case", headers=token(signed, "ann"),
                       files={"label": ("label.nii.gz", label.read_bytes())})  # fmt: skip
    assert saved.status_code == 200, saved.text
    approval = {"info": json.dumps({"status": "approved"})}
    refused = signed.put("/datastore/label/info?label=case&tag=final", data=approval,
                         headers=token(signed, "ann"))  # fmt: skip
    assert refused.status_code == 403
    approved = signed.put("/datastore/updatelabelinfo?label=case&tag=final", data=approval,
                          headers=token(signed, "rev"))  # fmt: skip
    assert approved.status_code == 200, approved.text
    listing = signed.get("/datastore/?output=all", headers=admin).json()
    assert listing["objects"]["case"]["image"]["info"]["status"] == "approved"
    assert listing["objects"]["case"]["labels"]["final"]["info"]["user"] == "ann"


@pytest.mark.parametrize(
    ("routes", "without_token"), [("follow", 401), ("open", 200), ("off", 404)]
)
def test_aiaa_routes_follow_their_own_setting(
    workspace: Path, routes: str, without_token: int
) -> None:
    UserStore(workspace, hasher=cheap_hasher()).add("una", PASSWORD, [Role.USER])
    with make_client(workspace, aiaa_routes=routes) as client:
        assert client.get("/v1/models").status_code == without_token
        assert client.get("/v1/models/").status_code == without_token, "the slash twin too"
        assert client.get("/info/").status_code == 401, "MONAI Label routes always need a token"
        if routes != "off":
            assert client.get("/v1/models", headers=token(client, "una")).status_code == 200


def test_admin_token_still_opens_the_admin_routes(signed: TestClient) -> None:
    assert signed.get("/admin/model/spine_ct_vertebrae").status_code == 401
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    assert signed.get("/admin/model/spine_ct_vertebrae", headers=bearer).status_code == 200
    assert signed.delete("/train/", headers=bearer).status_code == 200, "the admin token is admin"
    admin = token(signed, "adm")
    assert signed.get("/admin/model/spine_ct_vertebrae", headers=admin).status_code == 200
    assert (
        signed.get("/admin/model/spine_ct_vertebrae", headers=token(signed, "rev")).status_code
        == 403
    )


def test_cors_preflight_for_ohif_on_another_origin(signed: TestClient) -> None:
    preflight = signed.options(
        "/datastore/label?image=x",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "PUT",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in preflight.headers
    other = signed.options(
        "/info/", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in other.headers


def test_serve_refuses_a_public_address_without_sign_in(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from carina.cli.main import app

    result = CliRunner().invoke(
        app, ["serve", "--workspace", str(tmp_path / "ws"), "--host", "0.0.0.0", "--port", "1"]
    )
    assert result.exit_code != 0
    assert "--insecure-no-auth" in str(result.exception)
