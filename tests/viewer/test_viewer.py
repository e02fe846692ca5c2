"""The browser viewer at /viewer/, in Debian's Chromium against a real server: what the annotator
sees is what the server holds, voxel for voxel."""

from __future__ import annotations

import io
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Error as PlaywrightError

from carina.auth import Role, UserStore
from carina.data import locate_sample
from carina.io import load_volume
from tests.auth.conftest import cheap_hasher
from tests.server.conftest import two_channel_archive
from tests.servers import ServerProcess, start_server
from tests.viewer.browser import Viewer, nifti_array
from tests.viewer.conftest import IMAGE_ID, open_viewer, viewer_workspace

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


def server_label(url: str, tag: str) -> np.ndarray:
    answer = httpx.get(f"{url}/datastore/label", params={"label": IMAGE_ID, "tag": tag})
    answer.raise_for_status()
    return nifti_array(answer.content)


def truth(name: str) -> np.ndarray:
    """The shipped spine CT's vertebra mask (21: L2, 22: L3, 23: L4) of ``name``."""
    value = {"L2": 21, "L3": 22, "L4": 23}[name]
    return np.asarray(load_volume(locate_sample("spine_ct_vertebrae")).array) == value


def centre_of(mask: np.ndarray) -> tuple[int, int, int]:
    """A voxel of ``mask`` nearest its centroid."""
    points = np.argwhere(mask)
    nearest = points[np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1))]
    return tuple(int(v) for v in nearest)  # type: ignore[return-value]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b)))


def test_the_page_is_served_offline_and_locked_down(viewer_server: ServerProcess) -> None:
    url = viewer_server.url
    page = httpx.get(f"{url}/viewer/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-eval" not in policy
    assert httpx.get(f"{url}/viewer").text == page.text  # no redirect
    for name in ("app.js", "app.css", "vendor/niivue.umd.js", "vendor/LICENSES.md"):
        assert httpx.get(f"{url}/viewer/{name}").status_code == 200, name
    for name in ("index.html", "app.js", "app.css"):
        text = httpx.get(f"{url}/viewer/{name}").text
        assert not re.search(r"https?://", text), f"{name} points outside the server"
    again = httpx.get(f"{url}/viewer/app.js", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 200
    etag = httpx.get(f"{url}/viewer/app.js").headers["etag"]
    assert httpx.get(f"{url}/viewer/app.js", headers={"If-None-Match": etag}).status_code == 304
    for bad in ("nothing.js", "..%2F..%2Fpyproject.toml", "vendor", "static/app.js"):
        assert httpx.get(f"{url}/viewer/{bad}").status_code == 404, bad
    assert httpx.get(f"{url}/viewer/api/image").status_code == 400
    assert httpx.get(f"{url}/viewer/api/image", params={"image": "nope"}).status_code == 404
    image = httpx.get(f"{url}/viewer/api/image/", params={"image": IMAGE_ID})
    assert image.status_code == 200 and nifti_array(image.content).shape == (73, 47, 73)


def test_the_vendored_niivue_is_the_locked_one() -> None:
    lock = json.loads((ROOT / "viewer" / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/@niivue/niivue"]["version"]
    static = resources.files("carina.server.viewer") / "static" / "vendor"
    licences = (static / "LICENSES.md").read_text()
    assert f"@niivue/niivue {version}: BSD-2-Clause" in licences
    assert f"@niivue/niivue {version}" in licences.splitlines()[2]
    assert (static / "niivue.umd.js").read_bytes().startswith(b"(function(")


def overlay_colours(viewer: Viewer) -> dict[int, tuple[int, int, int]]:
    labels = viewer.page.evaluate("window.carinaViewer.state.labels")
    return {label["value"]: tuple(label["color"]) for label in labels}


def screen_labels(viewer: Viewer, step: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """For a grid of canvas pixels: the label whose colour the screenshot shows (0: none) and
    the image voxel under each (-1 off the image)."""
    viewer.page.locator("#opacity").fill("1")
    png = viewer.page.locator("#gl").screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    box = viewer.page.locator("#gl").bounding_box()
    assert box is not None
    ys, xs = np.mgrid[1 : pixels.shape[0] - 1 : step, 1 : pixels.shape[1] - 1 : step]
    points = [
        (box["x"] + x + 0.5, box["y"] + y + 0.5)
        for x, y in zip(xs.ravel(), ys.ravel(), strict=True)
    ]
    voxels = viewer.voxels_at(points)
    colours = overlay_colours(viewer)
    shown = np.zeros(len(points), dtype=int)
    for n, (x, y) in enumerate(zip(xs.ravel(), ys.ravel(), strict=True)):
        rgb = pixels[y, x]
        for value, colour in colours.items():
            if np.abs(rgb - np.asarray(colour)).max() <= 12:
                shown[n] = value
    where = np.asarray([v if v is not None else [-1, -1, -1] for v in voxels], dtype=float)
    return shown, np.rint(where).astype(int)


def test_worklist_help_and_layouts_at_1280x800(viewer: Viewer) -> None:
    page = viewer.page
    assert "1 images: 1 unlabelled, 0 labelled, 0 approved" in (page.text_content("#counts") or "")
    page.fill("#search", "zzz")
    assert page.locator("#images li").count() == 0
    page.fill("#search", "spine")
    assert page.locator("#images li").count() == 1
    page.click("#next")  # the next image by the chosen strategy
    viewer.wait(f"window.carinaViewer.state.current?.id === {IMAGE_ID!r}")
    viewer.idle()
    for control in page.locator("button:visible, select:visible, input:visible").all():
        box = control.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1280, control.inner_text()
    for layout in ("axial", "coronal", "sagittal", "render", "multi"):
        page.click(f"#layouts button[data-layout='{layout}']")
    for preset, (level, width) in {"bone": (400, 1800), "lung": (-600, 1500)}.items():
        page.click(f"#presets button[data-preset='{preset}']")
        assert page.input_value("#level") == str(level) and page.input_value("#width") == str(width)
    page.keyboard.press("t")  # CT soft tissue
    assert page.input_value("#width") == "400"
    page.keyboard.press("?")
    viewer.wait("document.getElementById('help').open")
    assert page.locator("#shortcuts tr").count() >= 20
    page.keyboard.press("Escape")
    viewer.wait("!document.getElementById('help').open")


def test_segmentation_overlay_matches_the_server_label(
    viewer: Viewer, viewer_server: ServerProcess
) -> None:
    viewer.open(IMAGE_ID)
    viewer.page.click("#run")
    viewer.idle()
    assert "voxels labelled" in viewer.message(), viewer.message()
    original = server_label(viewer_server.url, "original")
    viewer.axial_through(centre_of(original == 2))
    shown, voxels = screen_labels(viewer)
    inside = voxels[:, 0] >= 0
    expected = original[tuple(voxels[inside].T)]
    shown = shown[inside]
    assert np.count_nonzero(expected) > 200  # the slice crosses the vertebrae
    for value in (1, 2, 3):
        if np.count_nonzero(expected == value):
            assert dice(shown == value, expected == value) >= 0.95, value
    assert np.mean(shown == expected) >= 0.98


def test_deepgrow_brush_erase_undo_and_save_are_voxel_exact(
    viewer: Viewer, viewer_server: ServerProcess
) -> None:
    url = viewer_server.url
    l3 = truth("L3")
    centre = centre_of(l3)
    page = viewer.page
    viewer.open(IMAGE_ID)
    page.click("#tool-buttons button[data-tool='deepgrow']")
    x, y = viewer.axial_through(centre)
    page.mouse.click(x, y)
    viewer.idle()
    assert page.evaluate("window.carinaViewer.state.points.foreground") == [list(centre)]
    grown = viewer.drawing()
    assert np.count_nonzero(grown) > 100, viewer.message()
    assert dice(grown > 0, l3) >= 0.4  # one click at its centre
    assert np.count_nonzero(grown.astype(bool) & l3) / np.count_nonzero(grown) >= 0.5

    page.keyboard.press("2")
    page.click("#tool-buttons button[data-tool='brush']")
    page.locator("#brush-size").fill("2")
    page.locator("#brush-size").dispatch_event("change")
    viewer.stroke((x - 40, y - 35), (x + 40, y - 35))
    painted = viewer.drawing()
    assert np.count_nonzero(painted == 2) > np.count_nonzero(grown == 2) + 20
    page.click("#tool-buttons button[data-tool='eraser']")
    viewer.stroke((x - 10, y - 35), (x + 10, y - 35))
    assert np.count_nonzero(viewer.drawing() == 2) < np.count_nonzero(painted == 2)
    page.keyboard.press("Control+z")
    shown = viewer.drawing()
    assert np.array_equal(shown, painted)
    page.keyboard.press("Control+s")
    viewer.idle()
    assert viewer.message() == "Saved.", viewer.message()
    saved = server_label(url, "final")
    assert saved.shape == shown.shape and np.array_equal(saved, shown)
    assert page.text_content(f"#images li[data-id='{IMAGE_ID}'] .status") == "labelled"
    assert page.evaluate("window.carinaViewer.state.dirty") is False


def extreme_points(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """The six extreme points of ``mask``: its first and last voxel along each axis."""
    points = np.argwhere(mask)
    found = []
    for axis in range(3):
        for pick in (np.argmin, np.argmax):
            found.append(tuple(int(v) for v in points[pick(points[:, axis])]))
    return found  # type: ignore[return-value]


def sign_in(viewer: Viewer, name: str) -> None:
    viewer.wait("document.getElementById('sign-in').open")
    viewer.page.fill("#sign-in input[name=username]", name)
    viewer.page.fill("#sign-in input[name=password]", PASSWORD)
    viewer.page.click("#sign-in button[type=submit]")
    viewer.ready()


def test_dextr3d_then_a_reviewer_approves_with_sign_in_on(
    chromium: Any, tmp_path: Path, viewer_models: Path, request: pytest.FixtureRequest
) -> None:
    workspace = viewer_workspace(tmp_path, viewer_models)
    users = UserStore(workspace, hasher=cheap_hasher())
    users.add("ann", PASSWORD, [Role.ANNOTATOR])
    users.add("rev", PASSWORD, [Role.REVIEWER])
    server = start_server(workspace)
    try:
        l4 = truth("L4")
        with open_viewer(chromium, server.url, request) as viewer:
            page = viewer.page
            viewer.wait("document.getElementById('sign-in').open")
            assert page.locator("#images li").count() == 0  # nothing before signing in
            page.evaluate("sessionStorage.setItem('carina.token', 'left-from-yesterday')")
            page.reload()  # a stale token: asked to sign in again, not an error
            sign_in(viewer, "ann")
            viewer.open(IMAGE_ID)
            assert page.is_disabled("#approve")  # annotators do not approve
            page.click("#tool-buttons button[data-tool='dextr3d']")
            points = extreme_points(l4)
            for point in points[:5]:
                page.mouse.click(*viewer.axial_through(point))
            sent = page.evaluate("window.carinaViewer.state.points.extreme")
            assert sent == [list(p) for p in points[:5]]  # the voxels clicked, exactly
            page.mouse.click(*viewer.axial_through(points[5]))
            viewer.idle()
            drawn = viewer.drawing()
            assert dice(drawn > 0, l4) >= 0.75, viewer.message()
            page.click("#save")
            viewer.idle()
            assert viewer.message() == "Saved."
            page.click("#sign-out")
            page.goto(f"{server.url}/viewer/?image={IMAGE_ID}")  # a link to the image
            sign_in(viewer, "rev")
            viewer.wait(f"window.carinaViewer.state.current?.id === {IMAGE_ID!r}")
            viewer.idle()
            assert np.array_equal(viewer.drawing(), drawn)  # reload shows the saved version
            assert "by ann" in (page.text_content("#label-state") or "")
            page.click("#approve")
            viewer.idle()
            assert viewer.message() == "Approved.", viewer.message()
            assert page.text_content(f"#images li[data-id='{IMAGE_ID}'] .status") == "approved"
    finally:
        server.stop()


def test_a_corrupt_upload_and_a_failing_model_leave_the_edits(
    chromium: Any, tmp_path: Path, viewer_models: Path, request: pytest.FixtureRequest
) -> None:
    workspace = viewer_workspace(tmp_path, viewer_models)
    two_channel_archive(workspace / "models" / "spine_ct_vertebrae", workspace / "models")
    server = start_server(workspace)
    try:
        with open_viewer(chromium, server.url, request) as viewer:
            page = viewer.page
            viewer.ready()
            viewer.open(IMAGE_ID)
            page.click("#tool-buttons button[data-tool='brush']")
            x, y = viewer.axial_through((36, 23, 36))
            viewer.stroke((x - 30, y), (x + 30, y))
            edits = viewer.drawing()
            assert np.count_nonzero(edits) > 10

            page.select_option("#model", "two_channel")
            page.click("#run")
            viewer.idle()
            assert viewer.message().startswith("two_channel: the model failed on this image")
            assert page.get_attribute("#message", "class") == "error"
            assert np.array_equal(viewer.drawing(), edits)

            corrupt = {
                "name": "scan.nii.gz",
                "mimeType": "application/gzip",
                "buffer": b"\x1f\x8bno",
            }
            page.set_input_files("#file", files=[corrupt])
            viewer.wait("document.getElementById('drop-choice').open")
            page.click("#drop-datastore")
            viewer.idle()
            assert "scan" in viewer.message() and page.get_attribute("#message", "class") == "error"
            assert np.array_equal(viewer.drawing(), edits)
            assert page.evaluate("window.carinaViewer.state.dirty") is True
            assert page.evaluate("window.carinaViewer.state.current.id") == IMAGE_ID
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.type), dialog.dismiss()))
            with pytest.raises(PlaywrightError):  # leaving with unsaved edits warns: stay
                page.goto("about:blank", timeout=5000)
            assert dialogs == ["beforeunload"]
            assert page.evaluate("window.carinaViewer.state.dirty") is True
    finally:
        server.stop()
