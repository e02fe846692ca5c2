"""The API documentation page: served offline at /, /docs and /docs/, rendered by a real browser."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning
from starlette.types import ASGIApp, Receive, Scope, Send

from carina.server import docs
from carina.server.docs import REDOC_JS_PATH, add_docs_routes

with warnings.catch_warnings():
    # Starlette 1.x warns at import when its test client runs on httpx rather than httpx2.
    warnings.filterwarnings(
        "ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning
    )
    from fastapi.testclient import TestClient

TAGS = ("API (v1)", "Admin (model)", "Admin (others)")
URL_PATTERN = re.compile(r"https?://", re.IGNORECASE)


def build_app() -> FastAPI:
    """A small app shaped like Carina's: the three tags, one route each, no built-in docs."""
    app = FastAPI(
        title="Carina test server",
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        openapi_tags=[{"name": tag} for tag in TAGS],
    )

    @app.get("/v1/models", tags=[TAGS[0]])
    async def list_models() -> list[str]:
        return []

    @app.delete("/admin/model/{name}", tags=[TAGS[1]])
    async def delete_model(name: str) -> dict[str, str]:
        return {"name": name}

    @app.get("/logs/", tags=[TAGS[2]])
    async def logs() -> str:
        return ""

    add_docs_routes(app)
    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(build_app()) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/", "/docs", "/docs/"])
def test_docs_page_is_html_without_redirect(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<title>Carina test server</title>" in page
    assert 'spec-url="/openapi.json"' in page
    assert f'src="{REDOC_JS_PATH}?v=' in page
    assert URL_PATTERN.search(page) is None, "the page must not load anything from the internet"
    assert "hide-download-button" not in page
    # ReDoc renders the tag names in the browser; the served HTML does not hold them.
    assert not any(tag in page for tag in TAGS)


def test_docs_page_answers_head(client: TestClient) -> None:
    response = client.head("/docs/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


def test_docs_routes_stay_out_of_the_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/v1/models", "/admin/model/{name}", "/logs/"}
    assert [tag["name"] for tag in schema["tags"]] == list(TAGS)
    assert "description" not in schema["info"]


def test_redoc_script_is_served_by_carina(client: TestClient) -> None:
    response = client.get(REDOC_JS_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/javascript"
    assert int(response.headers["content-length"]) == len(response.content) > 100_000
    assert "max-age=" in response.headers["cache-control"]
    assert b"Download OpenAPI specification" in response.content


@pytest.mark.parametrize("path", ["/static/favicon.png", "/favicon.ico"])
def test_favicon(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_docs_page_honours_the_root_path() -> None:
    with TestClient(build_app(), root_path="/aiaa") as test_client:
        page = test_client.get("/docs/").text
    assert 'spec-url="/aiaa/openapi.json"' in page
    assert f'src="/aiaa{REDOC_JS_PATH}?v=' in page
    assert 'href="/aiaa/static/favicon.png"' in page


def test_docs_page_stays_up_without_the_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docs, "_static_dir", lambda: None)
    with TestClient(build_app()) as test_client:
        assert test_client.get("/docs/").status_code == 200
        assert test_client.get(REDOC_JS_PATH).status_code == 404


def test_an_app_without_openapi_is_refused() -> None:
    with pytest.raises(ValueError, match="openapi_url"):
        add_docs_routes(FastAPI(openapi_url=None, docs_url=None, redoc_url=None))


class RecordPaths:
    """ASGI wrapper that records the path of every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@contextmanager
def serve(app: ASGIApp) -> Iterator[int]:
    """Run ``app`` with uvicorn on 127.0.0.1 in a thread; yields the port."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", ws="none", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-docs-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
            time.sleep(0.05)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def dump_dom(url: str, *, profile: Path, timeout: float = 90.0) -> str:
    """The DOM of ``url`` after headless Chromium ran its scripts; external hosts unresolvable."""
    command = [
        "chromium",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            # Chromium forks helpers into its own process group: end the group we started.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, f"chromium exited with {process.returncode}: {err[-2000:]}"
    return out


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_redoc_renders_offline_in_chromium(tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium on PATH (apt-get install chromium)")
    app = RecordPaths(build_app())
    with serve(app) as port:
        dom = dump_dom(f"http://127.0.0.1:{port}/", profile=tmp_path / "chromium-profile")
    for tag in TAGS:
        assert tag in dom, f"ReDoc did not render the tag group {tag!r}"
    assert "Download" in dom
    assert "/openapi.json" in app.paths
    assert REDOC_JS_PATH in app.paths


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_carina_docs_page_renders_in_chromium(tmp_path: Path) -> None:
    """The real server's page: three groups, the model list route, the download link."""
    if shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium on PATH (apt-get install chromium)")
    from carina.server import create_app
    from carina.settings import Settings

    app = RecordPaths(create_app(Settings(workspace=tmp_path / "workspace", admin_token="t")))
    with serve(app) as port:
        dom = dump_dom(f"http://127.0.0.1:{port}/", profile=tmp_path / "chromium-profile")
    for tag in TAGS:
        assert tag in dom, f"ReDoc did not render the tag group {tag!r}"
    assert "Retrieve the list of available models" in dom
    assert "Download" in dom
    assert REDOC_JS_PATH in app.paths
