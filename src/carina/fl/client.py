"""The site program FLARE runs in every round's client process (through FLARE's Client API).

``python carina_site.py --dataset NAME_OR_FOLDER --local-epochs E [--algorithm A]`` (the job
writes that small launcher next to the archive's configs): receive the global weights, train them
with Carina's engine on this site's data, send back the weights and metrics. Any failure is printed
as one ``CARINA_SITE_ERROR`` line and ends the process at once, so that the server marks the round
failed immediately (and the simulator's caller can quote the reason) instead of waiting for a
heartbeat timeout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

ERROR_MARKER = "CARINA_SITE_ERROR"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The launcher's arguments."""
    parser = argparse.ArgumentParser(prog="carina_site")
    parser.add_argument("--archive", type=Path, required=True, help="the archive's folder")
    parser.add_argument("--dataset", required=True, help="shipped dataset name or folder")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--algorithm", default="fedavg")
    parser.add_argument(
        "--fedprox-mu", type=float, default=0.01, help="FedProx's mu when the server sends none"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the site's rounds until the server stops the job."""
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import nvflare.client as flare

    flare.init()
    site = flare.get_site_name()
    try:
        _rounds(flare, args)
    except Exception as exc:
        traceback.print_exc()
        print(f"{ERROR_MARKER} {site}: {describe(exc)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)


def describe(exc: BaseException) -> str:
    """The most telling message of an exception chain: Carina's own error when one is inside
    (MONAI wraps a transform's error in its own RuntimeError), else the innermost one."""
    from carina.errors import CarinaError

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    chosen = next((item for item in chain if isinstance(item, CarinaError)), chain[-1])
    return f"{type(chosen).__name__}: {chosen}"


def _rounds(flare: Any, args: argparse.Namespace) -> None:
    import torch
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
    from nvflare.app_common.app_constant import AlgorithmConstants
    from nvflare.app_common.utils.fedprox_utils import get_fedprox_mu

    from carina.fl.algorithms import Scaffold, fedprox
    from carina.fl.site import LocalSite
    from carina.settings import Settings

    if args.threads:
        torch.set_num_threads(args.threads)
    site = LocalSite(
        archive=args.archive,
        work_dir=Path.cwd() / "carina_site",
        dataset=args.dataset,
        data_dir=args.data_dir or Settings().data_dir,
        device=args.device,
    )
    scaffold = Scaffold() if args.algorithm == "scaffold" else None
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        finish = None
        if args.algorithm == "fedprox":
            site.handlers = [fedprox(float(get_fedprox_mu(model) or args.fedprox_mu))]
        elif scaffold is not None:
            scaffold.begin_round((model.meta or {}).get(AlgorithmConstants.SCAFFOLD_CTRL_GLOBAL))
            site.handlers = [scaffold.handlers()]
            finish = scaffold.finish
        result = site.train_round(
            model.params,
            epochs=args.local_epochs,
            round_=int(model.current_round or 0),
            finish=finish,
        )
        flare.send(
            FLModel(
                params=result.weights,
                params_type=ParamsType.FULL,
                metrics=result.metrics,
                meta={"NUM_STEPS_CURRENT_ROUND": result.steps, **result.meta},
            )
        )


LAUNCHER = '''"""Carina's site program for this job (see carina.fl.client)."""
import sys
from pathlib import Path

from carina.fl.client import main

here = Path(__file__).resolve().parent
main(["--archive", str(here / "carina_archive"), *sys.argv[1:]])
'''
