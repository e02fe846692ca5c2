"""How long ``carina --help`` takes, start to exit, against a bare ``python -c pass``. Prints JSON.

python benchmarks/cli_startup.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time


def wall_times(command: list[str], repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` runs, after one warm-up run."""
    subprocess.run(command, capture_output=True, check=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    carina = shutil.which("carina") or f"{sys.prefix}/bin/carina"
    help_times = wall_times([carina, "--help"], args.repeats)
    bare_times = wall_times([sys.executable, "-c", "pass"], args.repeats)
    print(
        json.dumps(
            {
                "benchmark": "cli_startup",
                "repeats": args.repeats,
                "carina_help_median_s": round(statistics.median(help_times), 3),
                "carina_help_max_s": round(max(help_times), 3),
                "python_bare_median_s": round(statistics.median(bare_times), 3),
                "goal": "carina --help well under 1 s",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
