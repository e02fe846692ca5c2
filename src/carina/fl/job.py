"""``carina fl job``: an NVFlare job made from a Carina archive.

The server starts from the archive's weights (or its freshly initialised network) and aggregates
with the chosen algorithm; every site runs Carina's own engine through FLARE's Client API on its
own data (a shipped dataset name or a folder that exists at that site). The job carries the
archive's configs, never its weights to the sites nor any data.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from carina.errors import ArchiveError, ConfigError

SITE_LAUNCHER = "carina_site.py"
ARCHIVE_IN_JOB = "carina_archive"


class Algorithm(StrEnum):
    """How the server combines the sites' updates."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDOPT = "fedopt"
    SCAFFOLD = "scaffold"


@dataclass
class Privacy:
    """FLARE's privacy filters on what each site sends (they then send weight differences).

    Attributes:
        percentile: share only the updates above this percentile of magnitude (e.g. 75), as
            FLARE's PercentilePrivacy; ``percentile_gamma`` clips what is shared (the default,
            1.0, only cuts outliers: a Carina update rarely moves a weight by more).
        svt_fraction: share this fraction of the updates through the sparse-vector technique
            (FLARE's SVTPrivacy, differential privacy) with ``svt_epsilon`` and ``svt_noise_var``.
        exclude: names or regular expressions of tensors never shared (they stay global).
    """

    percentile: float | None = None
    percentile_gamma: float = 1.0
    svt_fraction: float | None = None
    svt_epsilon: float = 0.1
    svt_noise_var: float = 0.1
    svt_gamma: float = 1e-5
    exclude: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """True when any filter is asked for."""
        return self.percentile is not None or self.svt_fraction is not None or bool(self.exclude)

    def filters(self) -> list[Any]:
        """The FLARE filter components, in the order they apply."""
        from nvflare.app_common.filters.exclude_vars import ExcludeVars
        from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy
        from nvflare.app_common.filters.svt_privacy import SVTPrivacy

        found: list[Any] = []
        if self.exclude:
            found.append(ExcludeVars(exclude_vars=list(self.exclude)))
        if self.percentile is not None:
            found.append(PercentilePrivacy(percentile=self.percentile, gamma=self.percentile_gamma))
        if self.svt_fraction is not None:
            found.append(
                SVTPrivacy(
                    fraction=self.svt_fraction,
                    epsilon=self.svt_epsilon,
                    noise_var=self.svt_noise_var,
                    gamma=self.svt_gamma,
                )
            )
        return found


@dataclass
class JobSpec:
    """What a federated job does.

    Attributes:
        archive: the archive folder.
        sites: site name -> that site's data (shipped dataset name or folder at the site).
        rounds: federated rounds.
        algorithm: aggregation algorithm.
        local_epochs: epochs each site trains per round.
        privacy: filters on what sites send.
        fedprox_mu: FedProx's proximal weight.
        server_optimizer: FedOpt's server optimiser, ``momentum`` or ``adam``; ``server_lr``.
        homomorphic: aggregate under homomorphic encryption (FLARE's TenSEAL CKKS components):
            each site encrypts its weighted update, the server sums ciphertexts it cannot read,
            only the sites decrypt. Needs kits provisioned with FLARE's ``HEBuilder``
            (``carina fl poc``; FLARE's simulator has no keys for it).
        threads: torch CPU threads per site process (0: torch's default).
        python: the command that runs Python with Carina at the sites.
        name: the job's name (default: ``<archive>_fl``).
    """

    archive: Path
    sites: dict[str, str]
    rounds: int = 3
    algorithm: Algorithm = Algorithm.FEDAVG
    local_epochs: int = 1
    privacy: Privacy = field(default_factory=Privacy)
    fedprox_mu: float = 0.01
    server_optimizer: str = "momentum"
    server_lr: float = 1.0
    homomorphic: bool = False
    threads: int = 0
    python: str = "python3"
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.sites:
            raise ConfigError("--site", "", "give at least one site as NAME=DATASET")
        for site in self.sites:
            if not site or not all(c.isalnum() or c in "-_." for c in site):
                raise ConfigError("--site", site, "a site name is letters, digits, '-', '_', '.'")
        if self.rounds < 1 or self.local_epochs < 1:
            raise ConfigError("--rounds", str(self.rounds), "rounds and local epochs must be >= 1")
        if self.algorithm == Algorithm.SCAFFOLD and self.privacy.active:
            raise ConfigError("--algorithm", "scaffold", "privacy filters cannot apply to SCAFFOLD")
        if self.homomorphic and self.algorithm not in (Algorithm.FEDAVG, Algorithm.FEDPROX):
            raise ConfigError(
                "--he",
                self.algorithm.value,
                "homomorphic encryption aggregates by weighted averaging: use fedavg or fedprox",
            )
        if self.homomorphic and self.privacy.active:
            raise ConfigError(
                "--he", "", "the server never sees the encrypted updates; drop the privacy filters"
            )

    @property
    def job_name(self) -> str:
        """The job's folder name."""
        return self.name or f"{Path(self.archive).name}_fl"


def parse_sites(items: list[str]) -> dict[str, str]:
    """``NAME=DATASET`` items as a dict (order kept); a dataset given as a relative folder or
    file is made absolute here (the sites run in other working folders).

    Raises:
        ConfigError: an item without ``=``, or a site named twice.
    """
    sites: dict[str, str] = {}
    for item in items:
        name, sep, dataset = item.partition("=")
        if not sep or not name or not dataset:
            raise ConfigError("--site", item, "write it as NAME=DATASET (site-1=spine_ct_vertebra)")
        if name in sites:
            raise ConfigError("--site", name, "named twice")
        local = Path(dataset).expanduser()
        sites[name] = str(local.resolve()) if "/" in dataset or local.exists() else dataset
    return sites


def initial_weights(archive: Path) -> dict[str, Any]:
    """The archive's ``models/model.pt``, or its network freshly initialised with its seed."""
    import torch
    from monai.utils import set_determinism

    from carina.archive import Archive
    from carina.engine.network import build_network, load_state_dict
    from carina.fl.weights import to_numpy

    opened = Archive.open(archive)
    config = opened.train_config()
    set_determinism(seed=config.settings.seed)
    try:
        network: torch.nn.Module = build_network(config.resolved)
    finally:
        set_determinism(seed=None)
    if opened.layout.weights.is_file():
        try:
            network.load_state_dict(load_state_dict(opened.layout.weights))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1].strip()[:200]
            raise ArchiveError(
                f"{opened.name}: models/model.pt does not fit the network of config_train.json "
                f"({first}); move it away to start from fresh weights"
            ) from None
    return to_numpy(network.state_dict())


def build_job(spec: JobSpec, staging: Path) -> Any:
    """The FLARE job (a ``BaseFedJob``), its files staged under ``staging``."""
    import numpy as np
    from nvflare.client.config import ExchangeFormat, TransferType
    from nvflare.fuel.utils.constants import FrameworkType
    from nvflare.job_config.base_fed_job import BaseFedJob
    from nvflare.job_config.script_runner import ScriptRunner

    from carina.archive import Archive
    from carina.fl.client import LAUNCHER
    from carina.fl.components import INITIAL_MODEL, ArchivePersistor

    archive = Archive.open(spec.archive)
    archive.train_config()  # a broken config fails here, not at every site
    server_files = staging / "server"
    site_files = staging / "site"
    server_files.mkdir(parents=True)
    np.savez(server_files / INITIAL_MODEL, **initial_weights(archive.layout.root))
    shutil.copytree(archive.layout.root / "config", site_files / ARCHIVE_IN_JOB / "config")
    launcher = staging / SITE_LAUNCHER
    launcher.write_text(LAUNCHER)

    count = len(spec.sites)
    job = BaseFedJob(
        name=spec.job_name, min_clients=count, key_metric="global_dice", key_metric_mode="max"
    )
    if spec.homomorphic:
        _encrypted_server(job, spec)
    else:
        job.to_server(ArchivePersistor(), id="persistor")
        job.to_server(_controller(spec))
    job.to_server(str(server_files))
    transfer = TransferType.DIFF if spec.privacy.active else TransferType.FULL
    for site, dataset in spec.sites.items():
        arguments = ["--dataset", dataset, "--local-epochs", str(spec.local_epochs)]
        arguments += ["--algorithm", spec.algorithm.value, "--threads", str(spec.threads)]
        arguments += ["--fedprox-mu", str(spec.fedprox_mu)]
        runner = ScriptRunner(
            script=str(launcher),
            script_args=arguments,
            launch_external_process=True,
            command=f"{spec.python} -u",
            framework=FrameworkType.NUMPY,
            server_expected_format=ExchangeFormat.NUMPY,
            params_transfer_type=transfer,
        )
        job.to(runner, site)
        job.to(str(site_files), site)
        for privacy_filter in spec.privacy.filters():
            job.to(privacy_filter, site, filter_type="TASK_RESULT", tasks=["train"])
        if spec.homomorphic:
            _encrypted_site(job, site)
    return job


def _controller(spec: JobSpec) -> Any:
    """The server's workflow for the chosen algorithm (plain weights)."""
    from nvflare.app_common.workflows.fedavg import FedAvg
    from nvflare.app_common.workflows.scaffold import Scaffold

    from carina.fl.components import FedOptServer

    common: dict[str, Any] = {
        "num_clients": len(spec.sites), "num_rounds": spec.rounds, "persistor_id": "persistor"
    }  # fmt: skip
    if spec.algorithm == Algorithm.SCAFFOLD:
        return Scaffold(**common)
    if spec.algorithm == Algorithm.FEDOPT:
        return FedOptServer(optimizer=spec.server_optimizer, server_lr=spec.server_lr, **common)
    mu = spec.fedprox_mu if spec.algorithm == Algorithm.FEDPROX else None
    return FedAvg(**common, fedprox_mu=mu)


def _encrypted_server(job: Any, spec: JobSpec) -> None:
    """The server of an encrypted job: FLARE's scatter-and-gather over ciphertexts.

    The aggregator sums the sites' encrypted, step-weighted weights and divides by the total
    steps; the global model stays encrypted on the server (saved as ciphertexts), and the sites
    decrypt it with their secret key when the next round starts.
    """
    from nvflare.apis.dxo import DataKind
    from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather
    from nvflare.app_opt.he.intime_accumulate_model_aggregator import (
        HEInTimeAccumulateWeightedAggregator,
    )
    from nvflare.app_opt.he.model_serialize_filter import HEModelSerializeFilter
    from nvflare.app_opt.he.model_shareable_generator import HEModelShareableGenerator

    from carina.fl.components import ArchivePersistor

    job.to_server(HEModelSerializeFilter(), id="model_serialize_filter")
    job.to_server(ArchivePersistor(filter_id="model_serialize_filter"), id="persistor")
    job.to_server(HEModelShareableGenerator(), id="shareable_generator")
    # Sites send full weights. Weighting by steps happens at the sites, before encryption; the
    # server only divides by the total.
    aggregator = HEInTimeAccumulateWeightedAggregator(
        expected_data_kind=DataKind.WEIGHTS, weigh_by_local_iter=False
    )
    job.to_server(aggregator, id="aggregator")
    job.to_server(
        ScatterAndGather(
            min_clients=len(spec.sites),
            num_rounds=spec.rounds,
            wait_time_after_min_received=0,
            aggregator_id="aggregator",
            persistor_id="persistor",
            shareable_generator_id="shareable_generator",
        )
    )


def _encrypted_site(job: Any, site: str) -> None:
    """A site of an encrypted job decrypts the global model it receives and encrypts its result."""
    from nvflare.app_opt.he.model_decryptor import HEModelDecryptor
    from nvflare.app_opt.he.model_encryptor import HEModelEncryptor

    job.to(HEModelDecryptor(), site, filter_type="TASK_DATA", tasks=["train"])
    encryptor = HEModelEncryptor(weigh_by_local_iter=True)  # each site weighs by its own steps
    job.to(encryptor, site, filter_type="TASK_RESULT", tasks=["train"])


def write_job(spec: JobSpec, out_dir: Path) -> Path:
    """Write the job folder ``out_dir/<job name>`` (replacing an older one); return it."""
    target = Path(out_dir) / spec.job_name
    with tempfile.TemporaryDirectory(prefix="carina-fl-") as staging:
        job = build_job(spec, Path(staging))
        exported = Path(staging) / "export"
        job.export_job(str(exported))
        # FLARE copies the sources of non-FLARE components into the apps; Carina is installed on
        # the server and at the sites, so the copies would only shadow it (and need custom-code
        # rights to submit).
        for copied in (exported / spec.job_name).glob("app_*/custom/carina"):
            shutil.rmtree(copied)
        if target.exists():
            shutil.rmtree(target)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        shutil.move(str(exported / spec.job_name), target)
    return target


def simulation_python() -> str:
    """The Python running this process (what a simulated site must use)."""
    return sys.executable
