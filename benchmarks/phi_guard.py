"""What the PHI guard adds to an upload: a 512x512x300 CT as a DICOM series in a zip (the shipped
spine CT resampled, written as single-frame slices) and as a NIfTI, scanned (``enforce``, the
default) and de-identified (``deid-on-ingest``), beside the time Carina takes to read the same
upload into a volume (what every request does anyway). Prints JSON.

    python benchmarks/phi_guard.py [--slices 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from carina.data.dicom_series import write_dicom_series
from carina.deid.guard import deidentify_file, file_findings
from carina.io import load_volume
from server import make_ct

MAX = 8 << 30


def timed(action: Callable[[], object], repeat: int) -> float:
    """The median seconds of ``action`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def figures(upload: Path, suffix: str, repeat: int, scratch: Path) -> dict[str, Any]:
    """Read, scan and de-identify one upload (each de-identification on a fresh copy)."""
    named = scratch / f"read{suffix}"
    shutil.copyfile(upload, named)
    copies = iter(range(repeat))

    def deidentify() -> None:
        copy = scratch / f"copy{next(copies)}"
        shutil.copyfile(upload, copy)
        deidentify_file(copy, bytes(32), max_bytes=MAX)

    return {
        "bytes": upload.stat().st_size,
        "read_s": timed(lambda: load_volume(named, max_bytes=MAX), repeat),
        "scan_s": timed(lambda: file_findings(upload, max_bytes=MAX), repeat),
        "deid_on_ingest_s": timed(deidentify, repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="carina-bench-phi-"))
    try:
        nifti = make_ct(root, (512, 512, args.slices))
        series = root / "series"
        series.mkdir()
        write_dicom_series(load_volume(nifti), series)
        packed = root / "series.zip"
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(series.iterdir()):
                archive.write(path, path.name)
        report = {
            "benchmark": "phi_guard",
            "image": f"512x512x{args.slices} CT",
            "dicom_zip": figures(packed, ".zip", args.repeat, root),
            "nifti": figures(nifti, ".nii.gz", args.repeat, root),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
