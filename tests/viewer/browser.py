"""Driving the viewer in Debian's Chromium through Playwright: launch, wait on the page's state,
map image voxels to screen positions and back, read the drawing."""

from __future__ import annotations

import base64
import gzip
import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

#: Headless WebGL2 on this machine's CPU (SwiftShader), as ../shared/specs/viewer-dicomweb.md found.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """Debian's Chromium (make test installs it when missing)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("Chromium is not installed (make test installs Debian's chromium)")


@dataclass
class Viewer:
    """One page of the viewer."""

    page: Any

    def wait(self, expression: str, timeout: float = 120.0) -> Any:
        """Poll ``expression`` in the page until it is truthy (``evaluate`` is not subject to the
        page's Content-Security-Policy, which forbids the string evaluation of
        ``wait_for_function``)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.page.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} stayed false for {timeout} s")
            time.sleep(0.05)

    def ready(self) -> None:
        self.wait("document.body.dataset.ready")
        assert self.page.evaluate("document.body.dataset.ready") == "true", self.message()

    def idle(self) -> None:
        """Wait for server work started by the last action to finish."""
        time.sleep(0.1)
        self.wait("!window.carinaViewer.state.busy")

    def message(self) -> str:
        return str(self.page.text_content("#message") or "")

    def open(self, image_id: str) -> None:
        self.page.click(f"#images li[data-id='{image_id}']")
        self.wait(f"window.carinaViewer.state.current?.id === {image_id!r}")
        self.idle()

    def axial_through(self, voxel: tuple[int, int, int]) -> tuple[float, float]:
        """Show one axial slice through ``voxel`` (of the image as the server reads it), the
        crosshair hidden; the page position of the voxel's centre."""
        self.page.click("#layouts button[data-layout='axial']")
        self.page.evaluate("window.carinaViewer.nv.opts.crosshairWidth = 0")
        x, y = self.page.evaluate("(voxel) => window.carinaViewer.goToVoxel(voxel)", list(voxel))
        return x, y

    def voxels_at(self, points: list[tuple[float, float]]) -> list[list[int] | None]:
        """The image voxel under each page position (None off the image)."""
        return list(
            self.page.evaluate(
                """(points) => {
                  const v = window.carinaViewer, nv = v.nv;
                  const rect = nv.canvas.getBoundingClientRect();
                  const dpr = nv.uiData.dpr || 1;
                  return points.map(([x, y]) => {
                    const frac = nv.canvasPos2frac([(x - rect.left) * dpr, (y - rect.top) * dpr]);
                    if (!frac || frac[0] < 0 || frac[0] > 1 || frac[1] < 0 || frac[1] > 1) return null;
                    return v.voxelAt(Array.from(nv.frac2mm(frac)).slice(0, 3));
                  });
                }""",
                [list(p) for p in points],
            )
        )

    def drawing(self) -> np.ndarray:
        """The drawing as the viewer would save it, on the image's grid."""
        encoded = self.page.evaluate(
            """async () => {
              const bytes = await window.carinaViewer.drawingNifti();
              let text = "";
              for (let i = 0; i < bytes.length; i += 0x8000)
                text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
              return btoa(text);
            }"""
        )
        return nifti_array(base64.b64decode(encoded))

    def stroke(self, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
        """A pen stroke with the left button, from ``start`` to ``end``."""
        mouse = self.page.mouse
        mouse.move(*start)
        mouse.down()
        for n in range(1, steps + 1):
            t = n / steps
            mouse.move(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t)
        mouse.up()
        self.wait("window.carinaViewer.state.history.length > 0")


def nifti_array(data: bytes) -> np.ndarray:
    """The voxel array of a NIfTI file's bytes (gzip or not)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    image = nib.Nifti1Image.from_stream(io.BytesIO(data))
    return np.asarray(image.dataobj)


def shot_on_failure(page: Any, folder: Path, name: str) -> Path:
    """A screenshot of the page for a failed step, next to the test output."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.png"
    page.screenshot(path=str(target))
    return target
