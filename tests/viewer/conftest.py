"""A real server with the zoo's models and the shipped spine CT in its datastore, and Debian's
Chromium driven by Playwright; a failing test leaves a screenshot under test-output/viewer/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from carina.data import locate_sample
from carina.datastore import open_datastore
from carina.settings import DEFAULT_MAX_IMAGE_BYTES
from carina.zoo import install_archive
from tests.servers import ServerProcess, start_server
from tests.viewer.browser import CHROMIUM_ARGS, Viewer, chromium_path, shot_on_failure

IMAGE_ID = "spine_ct"
MODELS = ("spine_ct_vertebrae", "deepgrow_3d", "annotation_dextr3d")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def viewer_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding the zoo models the viewer drives (copied for each server)."""
    workspace = tmp_path_factory.mktemp("viewer-models") / "workspace"
    for name in MODELS:
        install_archive(name, workspace)
    return workspace


def viewer_workspace(root: Path, models: Path) -> Path:
    """A fresh workspace: the models, and the shipped spine CT in the datastore."""
    workspace = root / "workspace"
    shutil.copytree(models, workspace)
    open_datastore(workspace, max_bytes=DEFAULT_MAX_IMAGE_BYTES).add_image(
        locate_sample("spine_ct_image"), image_id=IMAGE_ID
    )
    return workspace


@pytest.fixture
def viewer_server(tmp_path: Path, viewer_models: Path) -> Iterator[ServerProcess]:
    running = start_server(viewer_workspace(tmp_path, viewer_models))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def open_viewer(chromium: Any, url: str, request: pytest.FixtureRequest) -> Iterator[Viewer]:
    """A 1280x800 page on ``url``/viewer/; a screenshot when the test fails."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Nothing the page does may break its own Content-Security-Policy.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.goto(f"{url}/viewer/")
    try:
        yield Viewer(page)
        assert not errors, errors
    finally:
        failed = getattr(request.node, "report_call", None)
        if failed is not None and failed.failed:
            folder = Path(request.config.rootpath) / "test-output" / "viewer"
            shot_on_failure(page, folder, request.node.name)
        context.close()


@pytest.fixture
def viewer(
    chromium: Any, viewer_server: ServerProcess, request: pytest.FixtureRequest
) -> Iterator[Viewer]:
    """The viewer on a fresh server with sign-in off, ready."""
    with open_viewer(chromium, viewer_server.url, request) as opened:
        opened.ready()
        yield opened
