"""``carina fl``: federated learning on NVIDIA FLARE, driven by archives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from carina.cli.console import console, err_console

app = typer.Typer(
    help="Federated learning on NVIDIA FLARE: jobs, simulation, provisioning.",
    no_args_is_help=True,
)

SITES = typer.Option(
    ..., "--site", metavar="NAME=DATASET", help="NAME=DATASET: a site and its data (repeat)."
)
ROUNDS = typer.Option(3, "--rounds", min=1, help="Federated rounds.")
ALGORITHM = typer.Option("fedavg", "--algorithm", help="fedavg, fedprox, fedopt or scaffold.")
LOCAL_EPOCHS = typer.Option(1, "--local-epochs", min=1, help="Epochs each site trains per round.")
PERCENTILE = typer.Option(
    None, "--percentile", min=0, max=100, help="Share only updates above this percentile (75)."
)
SVT = typer.Option(
    None, "--svt-fraction", min=0, max=1, help="Differential privacy: share this fraction (SVT)."
)
SVT_EPSILON = typer.Option(0.1, "--svt-epsilon", help="SVT privacy budget epsilon.")
EXCLUDE = typer.Option(
    [], "--exclude", metavar="NAME", help="Tensor name or regex never shared (repeat)."
)
HE = typer.Option(
    False,
    "--he",
    help="Homomorphic encryption of the aggregation (kits provisioned with FLARE's HEBuilder).",
)


def _spec(
    archive: Path,
    site: list[str],
    rounds: int,
    algorithm: str,
    local_epochs: int,
    percentile: float | None,
    svt_fraction: float | None,
    svt_epsilon: float,
    exclude: list[str],
    **extra: Any,
) -> Any:
    from carina.errors import ConfigError
    from carina.fl.job import Algorithm, JobSpec, Privacy, parse_sites

    try:
        chosen = Algorithm(algorithm)
    except ValueError:
        names = ", ".join(a.value for a in Algorithm)
        raise ConfigError("--algorithm", algorithm, f"unknown: give {names}") from None
    privacy = Privacy(
        percentile=percentile, svt_fraction=svt_fraction, svt_epsilon=svt_epsilon, exclude=exclude
    )
    return JobSpec(
        archive=archive,
        sites=parse_sites(site),
        rounds=rounds,
        algorithm=chosen,
        local_epochs=local_epochs,
        privacy=privacy,
        **extra,
    )


@app.command("job")
def job(
    archive: Path = typer.Argument(..., help="Archive folder."),
    site: list[str] = SITES,
    rounds: int = ROUNDS,
    algorithm: str = ALGORITHM,
    local_epochs: int = LOCAL_EPOCHS,
    percentile: float | None = PERCENTILE,
    svt_fraction: float | None = SVT,
    svt_epsilon: float = SVT_EPSILON,
    exclude: list[str] = EXCLUDE,
    he: bool = HE,
    output: Path = typer.Option(Path("fl_jobs"), "-o", "--output", help="Folder for the job."),
) -> None:
    """Write an NVFlare job for ARCHIVE (submit it with FLARE's admin tools or `carina fl poc`)."""
    from carina.fl.job import write_job

    spec = _spec(
        archive, site, rounds, algorithm, local_epochs, percentile, svt_fraction, svt_epsilon,
        exclude, homomorphic=he,
    )  # fmt: skip
    console.print(f"job written to {write_job(spec, output)}", highlight=False)


@app.command("simulate")
def simulate(
    archive: Path = typer.Argument(..., help="Archive folder."),
    site: list[str] = SITES,
    rounds: int = ROUNDS,
    algorithm: str = ALGORITHM,
    local_epochs: int = LOCAL_EPOCHS,
    percentile: float | None = PERCENTILE,
    svt_fraction: float | None = SVT,
    svt_epsilon: float = SVT_EPSILON,
    exclude: list[str] = EXCLUDE,
    threads: int = typer.Option(0, help="CPU threads per site (0: torch's default)."),
    workspace: Path | None = typer.Option(None, help="Simulator workspace (default: a temp dir)."),
    timeout: float = typer.Option(6 * 3600, help="Seconds before the run is stopped."),
) -> None:
    """Run the job in FLARE's simulator; on success the global model becomes models/model.pt."""
    import tempfile

    from carina.cli.progress import dice_text
    from carina.fl.simulate import simulate as run
    from carina.settings import Settings

    spec = _spec(
        archive, site, rounds, algorithm, local_epochs, percentile, svt_fraction, svt_epsilon,
        exclude, threads=threads,
    )  # fmt: skip

    def show(report: dict[str, Any]) -> None:
        scores = ", ".join(
            f"{name} {dice_text(metrics.get('global_dice'), digits=3)}"
            for name, metrics in sorted(report["sites"].items())
        )
        err_console.print(
            f"round {report['round'] + 1}/{report['of']}: global model Dice at the sites: {scores}",
            highlight=False,
        )

    with tempfile.TemporaryDirectory(prefix="carina-fl-sim-") as scratch:
        result = run(
            spec,
            workspace=workspace or Path(scratch),
            data_dir=Settings().data_dir,
            timeout=timeout,
            progress=show,
        )
    finals = ", ".join(f"{name} {dice_text(dice)}" for name, dice in result.final.items())
    console.print(
        f"{spec.rounds} rounds in {result.seconds:.0f} s; final global model Dice: {finals} "
        f"(mean {dice_text(result.mean_dice)}); weights in {result.weights}"
        + (f", previous kept as {result.previous.name}" if result.previous else ""),
        highlight=False,
    )


@app.command("provision")
def provision(
    project: Path = typer.Argument(..., help="FLARE project file (project.yml)."),
    workspace: Path = typer.Option(Path("fl_kits"), "-w", "--workspace", help="Output folder."),
) -> None:
    """Make startup kits (mutual TLS) for the server, every site and the admins of PROJECT."""
    from carina.fl.provision import provision as make_kits

    kits = make_kits(project, workspace)
    console.print(f"startup kits in {kits}", highlight=False)
    for kit in sorted(path.name for path in kits.iterdir() if path.is_dir()):
        console.print(f"  {kit}", highlight=False)


@app.command("poc")
def poc(
    archive: Path = typer.Argument(..., help="Archive folder."),
    kits: Path = typer.Option(..., "--kits", help="Provisioned kits (carina fl provision)."),
    site: list[str] = SITES,
    rounds: int = ROUNDS,
    algorithm: str = ALGORITHM,
    local_epochs: int = LOCAL_EPOCHS,
    percentile: float | None = PERCENTILE,
    svt_fraction: float | None = SVT,
    svt_epsilon: float = SVT_EPSILON,
    exclude: list[str] = EXCLUDE,
    he: bool = HE,
    timeout: float = typer.Option(3600, help="Seconds before the job is aborted."),
) -> None:
    """Start the server and the sites of KITS on this machine, run the job over mutual TLS,
    install the global model in ARCHIVE, stop everything."""
    from carina.fl.provision import run_poc
    from carina.settings import Settings

    spec = _spec(
        archive, site, rounds, algorithm, local_epochs, percentile, svt_fraction, svt_epsilon,
        exclude, homomorphic=he,
    )  # fmt: skip
    result = run_poc(
        spec,
        kits,
        data_dir=Settings().data_dir,
        timeout=timeout,
        progress=lambda line: err_console.print(line, highlight=False),
    )
    console.print(
        f"job {result.job_id} {result.status} in {result.seconds:.0f} s; "
        f"weights in {result.weights}",
        highlight=False,
    )
