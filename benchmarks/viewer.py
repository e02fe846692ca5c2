"""The browser viewer in Debian's Chromium (software WebGL through SwiftShader, as on this
machine): opening an image to first paint, DeepGrow click to overlay, and a brush stroke to
screen, each beside a baseline measured in the same run. Prints JSON.

The image is the shipped spine CT resampled to 256x256x128 (``--quick``: 128x128x64), in a
datastore served by ``carina serve`` with the zoo's ``spine_ct_vertebrae`` and ``deepgrow_3d``
(preloaded). The page is 1280x800.

- Open: ``openImage`` in the page (the image over HTTP as NIfTI, the label if any, Niivue's load,
  the first frame after it). Baseline: bare Niivue (its build from the same server, no Carina
  code) loading the same NIfTI bytes from memory and painting.
- DeepGrow: a click on a vertebra's centre to the frame after the overlay changed (the page
  times it from the pointerup). Baseline: the same DeepGrow request through the HTTP API from
  Python, so the difference is the viewer's own cost.
- Brush: each pointer move of a 40-step pen stroke, from the move event to the next animation
  frame (the frame that shows it) and the time Niivue's handler takes. Baseline: the same
  stroke in bare Niivue.

    python benchmarks/viewer.py [--quick] [--repeats 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from carina.data import locate_sample
from carina.datastore import open_datastore
from carina.io import load_volume
from carina.settings import DEFAULT_MAX_IMAGE_BYTES
from carina.zoo import install_archive
from server import make_ct, running, server_env, wait_for_models

SHAPE = (256, 256, 128)
QUICK_SHAPE = (128, 128, 64)
IMAGE_ID = "ct"
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
GOALS = {
    "open_to_first_paint_s": "<= 2 for 256x256x128",
    "deepgrow_click_to_overlay_s": "<= 1.5",
    "brush_move_to_frame_ms_p95": "<= 16.7 (one frame at 60 Hz)",
}

#: Bare Niivue: the same build, the same options as the viewer, no Carina code.
BARE_PAGE = """<!DOCTYPE html><html><body style="margin:0">
<div style="position:absolute;left:230px;top:36px;width:800px;height:736px">
<canvas id="gl" style="width:100%;height:100%"></canvas></div>
<script src="{url}/viewer/vendor/niivue.umd.js"></script></body></html>"""


def wait(page: Any, expression: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        time.sleep(0.02)


def vertebra_centre(ct_shape: tuple[int, int, int]) -> list[int]:
    """The centre of L3 in the resampled CT (the shipped mask's centroid, scaled)."""
    mask = np.asarray(load_volume(locate_sample("spine_ct_vertebrae")).array) == 22
    centre = np.argwhere(mask).mean(axis=0)
    return [round(float(c) * n / s) for c, n, s in zip(centre, ct_shape, mask.shape, strict=True)]


def open_in_viewer(page: Any) -> float:
    """Seconds from ``openImage`` to the first frame after the image is shown."""
    return float(
        page.evaluate(
            """async (id) => {
              const v = window.carinaViewer;
              v.state.dirty = false;
              const start = performance.now();
              await v.openImage(id);
              await new Promise(requestAnimationFrame);
              return (performance.now() - start) / 1000;
            }""",
            IMAGE_ID,
        )
    )


def open_bare(page: Any, nifti: bytes) -> float:
    """Seconds for bare Niivue to load the same bytes from memory and paint."""
    return float(
        page.evaluate(
            """async (b64) => {
              const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
              const start = performance.now();
              const nv = window.bare;
              const url = URL.createObjectURL(new Blob([bytes]));
              await nv.loadVolumes([{ url, name: "image.nii.gz", colormap: "gray" }]);
              nv.createEmptyDrawing();
              await new Promise(requestAnimationFrame);
              URL.revokeObjectURL(url);
              return (performance.now() - start) / 1000;
            }""",
            base64.b64encode(nifti).decode(),
        )
    )


def page_position(page: Any, voxel: list[int]) -> list[float]:
    """Show one axial slice through ``voxel``; its page position."""
    page.click("#layouts button[data-layout='axial']")
    return list(page.evaluate("(voxel) => window.carinaViewer.goToVoxel(voxel)", voxel))


def canvas_centre(page: Any) -> list[float]:
    box = page.locator("canvas").bounding_box()
    return [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2]


def deepgrow_click(page: Any, position: list[float]) -> float:
    """Seconds from the click's pointerup to the frame after the overlay changed."""
    page.evaluate(
        """() => {
          window.__steps = window.carinaViewer.state.history.length;
          const clicked = () => { window.__clicked = performance.now(); };
          window.carinaViewer.nv.canvas.addEventListener(
            "pointerup", clicked, { once: true, capture: true });
        }"""
    )
    page.mouse.click(*position)
    return float(
        page.evaluate(
            """async () => {
              const state = window.carinaViewer.state;
              const message = document.getElementById("message");
              const started = performance.now();
              while (state.history.length === window.__steps) {
                const text = message.textContent;
                if (!state.busy && message.classList.contains("error")) throw new Error(text);
                if (performance.now() - started > 120000)
                  throw new Error(`no overlay in 120 s: ${JSON.stringify(state.points)} ${text}`);
                await new Promise(requestAnimationFrame);
              }
              await new Promise(requestAnimationFrame);
              return (performance.now() - window.__clicked) / 1000;
            }"""
        )
    )


def deepgrow_api(url: str, points: list[list[int]]) -> float:
    start = time.perf_counter()
    answer = httpx.post(
        f"{url}/infer/deepgrow_3d",
        params={"image": IMAGE_ID, "output": "image"},
        data={"params": json.dumps({"foreground": points, "result_extension": ".nii.gz"})},
        timeout=300,
    )
    answer.raise_for_status()
    return time.perf_counter() - start


def brush_stroke(page: Any, start: list[float], nv: str, steps: int = 40) -> dict[str, float]:
    """A pen stroke; per move: event to next animation frame, and the handler's own time."""
    page.evaluate(
        """(nvName) => {
          const nv = nvName === "bare" ? window.bare : window.carinaViewer.nv;
          if (nvName === "bare") { nv.setDrawingEnabled(true); nv.setPenValue(1, false); }
          window.__moves = [];
          const canvas = nv.canvas;
          // Capture phase: before Niivue's listener; bubble phase (added after Niivue's): after.
          canvas.addEventListener("mousemove", (e) => {
            if (!e.buttons) return;
            const begin = performance.now();
            const record = { begin };
            window.__moves.push(record);
            requestAnimationFrame(() => { record.frame = performance.now() - begin; });
          }, { capture: true });
          canvas.addEventListener("mousemove", (e) => {
            const record = window.__moves[window.__moves.length - 1];
            if (e.buttons && record && record.handled === undefined)
              record.handled = performance.now() - record.begin;
          });
        }""",
        nv,
    )
    mouse = page.mouse
    mouse.move(*start)
    mouse.down()
    for n in range(1, steps + 1):
        mouse.move(start[0] + n * 2, start[1] + n)
    mouse.up()
    page.evaluate("new Promise(requestAnimationFrame)")
    moves = page.evaluate("window.__moves")
    frames = sorted(m["frame"] for m in moves if "frame" in m)
    handled = sorted(m["handled"] for m in moves if "handled" in m)
    return {
        "moves": len(moves),
        "move_to_frame_ms_p50": round(statistics.median(frames), 2),
        "move_to_frame_ms_p95": round(frames[int(0.95 * (len(frames) - 1))], 2),
        "handler_ms_p50": round(statistics.median(handled), 2),
        "handler_ms_p95": round(handled[int(0.95 * (len(handled) - 1))], 2),
    }


def progress(text: str) -> None:
    print(f"[viewer benchmark] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128x128x64")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = QUICK_SHAPE if args.quick else SHAPE
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="carina-viewer-bench-") as tmp:
        root = Path(tmp)
        workspace = root / "workspace"
        for name in ("spine_ct_vertebrae", "deepgrow_3d"):
            install_archive(name, workspace)
        ct = make_ct(root, shape)
        nifti = ct.read_bytes()
        datastore = open_datastore(workspace, max_bytes=DEFAULT_MAX_IMAGE_BYTES)
        datastore.add_image(ct, image_id=IMAGE_ID)
        centre = vertebra_centre(shape)
        env = server_env(threads=2, workers=1, queue_limit=8, preload=True)
        with running(workspace, env) as server, sync_playwright() as playwright:
            wait_for_models(server.url, timeout=300.0)
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{server.url}/viewer/")
            wait(page, "document.body.dataset.ready === 'true'")
            progress("opening the image")
            opens = [open_in_viewer(page) for _ in range(args.repeats)]
            progress(f"opened in {opens} s; DeepGrow")

            deepgrow_api(server.url, [centre])  # the model is warm
            position = page_position(page, centre)
            page.click("#tool-buttons button[data-tool='deepgrow']")
            clicks, api = [], []
            for _ in range(args.repeats):
                clicks.append(deepgrow_click(page, position))
                page.keyboard.press("Control+z")  # back to no label, no pending points
                api.append(deepgrow_api(server.url, [centre]))
            progress(f"DeepGrow clicks {clicks} s; brush")
            page.click("#tool-buttons button[data-tool='brush']")
            brush = brush_stroke(page, [position[0] - 60, position[1] - 40], "viewer")

            progress("bare Niivue")
            bare = browser.new_page(viewport={"width": 1280, "height": 800})
            bare.set_content(BARE_PAGE.format(url=server.url))
            bare.evaluate(
                """async () => {
                  const nv = new window.niivue.Niivue({ isColorbar: false,
                    multiplanarShowRender: window.niivue.SHOW_RENDER.NEVER,
                    isRadiologicalConvention: true, isForceMouseClickToVoxelCenters: true });
                  await nv.attachTo("gl");
                  window.bare = nv;
                }"""
            )
            bare_opens = [open_bare(bare, nifti) for _ in range(args.repeats)]
            bare.evaluate("window.bare.setSliceType(0)")  # axial, as the viewer's stroke
            bare_centre = canvas_centre(bare)
            bare_brush = brush_stroke(bare, [bare_centre[0] - 60, bare_centre[1] - 40], "bare")
            browser.close()

    result = {
        "benchmark": "viewer",
        "shape": list(shape),
        "image_mib": round(len(nifti) / 2**20, 2),
        "browser": "Debian Chromium, headless, SwiftShader (software WebGL2), 1280x800",
        "repeats": args.repeats,
        "open_to_first_paint_s": round(statistics.median(opens), 3),
        "open_runs_s": [round(s, 3) for s in opens],
        "deepgrow_click_to_overlay_s": round(statistics.median(clicks), 3),
        "deepgrow_click_runs_s": [round(s, 3) for s in clicks],
        "brush": brush,
        "baseline": {
            "bare_niivue_load_and_paint_s": round(statistics.median(bare_opens), 3),
            "deepgrow_through_the_api_s": round(statistics.median(api), 3),
            "bare_niivue_brush": bare_brush,
        },
        "goals": GOALS,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
