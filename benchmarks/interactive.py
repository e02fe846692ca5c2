"""One DeepGrow 3D click and one DExtr3D request on a 256x256x128 CT, without HTTP. Prints JSON.

Each request is what the server does: read the uploaded file, pre-process, run the network,
post-process (paste the mask back into the full grid), write the result file. The volume is the
shipped spine CT resampled to 256x256x128 (with its vertebra mask, for the clicks).

    python benchmarks/interactive.py [--repeats 7] [--deepgrow ARCHIVE] [--dextr ARCHIVE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from carina.archive import Archive
from carina.data import locate_sample
from carina.interactive.guidance import deepest_point, extreme_points
from carina.interactive.predict import InteractivePredictor
from carina.io import Volume, load_volume, save_volume
from carina.zoo import zoo_archive_path

SHAPE = (256, 256, 128)


def make_volume(folder: Path) -> tuple[Path, np.ndarray[Any, Any]]:
    """The resampled CT as ``.nii.gz`` and the L3 mask on the same grid."""
    ct = load_volume(locate_sample("spine_ct_image"))
    labels = load_volume(locate_sample("spine_ct_vertebrae")).array
    zoom = [n / s for n, s in zip(SHAPE, ct.shape, strict=True)]
    image = ndimage.zoom(ct.array.astype(np.float32), zoom, order=1).astype(np.int16)
    mask = ndimage.zoom((labels == 22).astype(np.uint8), zoom, order=0) > 0
    affine = ct.affine @ np.diag([1 / z for z in zoom] + [1.0])
    path = folder / "ct_256x256x128.nii.gz"
    save_volume(Volume(array=image, affine=affine), path)
    return path, mask


def run(request: Any, path: Path, target: Path, repeats: int) -> dict[str, Any]:
    """Median seconds per stage over ``repeats`` requests (after a warm-up)."""
    rows = []
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        volume = load_volume(path)
        read = time.perf_counter() - start
        result = request(volume)
        start = time.perf_counter()
        save_volume(result.volume, target)
        write = time.perf_counter() - start
        if attempt:
            rows.append({"read": read, **result.timings, "write": write})
    stages = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    totals = [sum(row.values()) for row in rows]
    total = statistics.median(totals)
    return {
        "median_s": round(total, 4),
        "stages_s": {key: round(value, 4) for key, value in stages.items()},
        "network_share": round(stages["infer"] / total, 3),
        "rest_share": round(1 - stages["infer"] / total, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--deepgrow", type=Path, default=zoo_archive_path("deepgrow_3d"))
    parser.add_argument("--dextr", type=Path, default=zoo_archive_path("annotation_dextr3d"))
    args = parser.parse_args()
    deepgrow = InteractivePredictor.from_archive(Archive.open(args.deepgrow), device="cpu")
    dextr = InteractivePredictor.from_archive(Archive.open(args.dextr), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path, mask = make_volume(Path(tmp))
        click = deepest_point(mask)
        points = extreme_points(mask)
        out = Path(tmp) / "result.nii.gz"
        results = {
            "deepgrow_3d_click": run(
                lambda v: deepgrow.deepgrow(v, [click]), path, out, args.repeats
            ),
            "dextr3d": run(lambda v: dextr.dextr3d(v, points), path, out, args.repeats),
        }
    print(
        json.dumps(
            {
                "benchmark": "interactive",
                "shape": list(SHAPE),
                "device": "cpu",
                "repeats": args.repeats,
                **results,
                "goal": "median <= 1 s each (MONAI Label: DeepGrow 3D 18-20 s, DeepEdit 10-16 s)",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
