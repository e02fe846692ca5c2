"""FLARE's simulator driven by Carina: the global model lands in the archive only after success,
failures name the site and leave the archive as it was, and (slow) the acceptance run: a CT site and
an MR site train one vertebra model that beats each site's local-only model on both held-out parts.

The simulator and its site processes run in their own process groups and are killed as a tree.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from carina.archive import Archive
from carina.engine.train import TrainOptions, train_archive
from carina.fl.job import JobSpec, Privacy
from carina.fl.simulate import FLError, simulate
from carina.kinds import validate_archive
from tests.fl.conftest import quick_archive

SITES = {"site-1": "spine_ct_vertebra", "site-2": "spine_mr_vertebra"}
pytestmark = pytest.mark.integration


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fresh_weights(archive: Path) -> dict[str, torch.Tensor]:
    """A real state dict of the archive's network (what a previous training would have left)."""
    from carina.engine.network import build_network

    return dict(build_network(Archive.open(archive).train_config().resolved).state_dict())


def test_a_short_simulation_installs_the_global_model(tmp_path: Path, data_dir: Path) -> None:
    archive = quick_archive(tmp_path / "archive")
    (archive / "models").mkdir()
    torch.save(fresh_weights(archive), archive / "models" / "model.pt")
    before = digest(archive / "models" / "model.pt")
    reports: list[dict[str, object]] = []
    spec = JobSpec(archive=archive, sites=SITES, rounds=2, local_epochs=1, threads=1)
    result = simulate(spec, workspace=tmp_path / "ws", data_dir=data_dir, progress=reports.append)
    assert [report["round"] for report in reports] == [0, 1]
    assert set(result.final) == set(SITES) and all(0 <= d <= 1 for d in result.final.values())
    assert result.previous == archive / "models" / "model_before_fl.pt"
    assert digest(result.previous) == before
    state = torch.load(archive / "models" / "model.pt", weights_only=True)
    assert "model.0.conv.unit0.conv.weight" in state
    metrics = json.loads((archive / "eval" / "fl_metrics.json").read_text())
    assert [row["round"] for row in metrics["rounds"]] == [0, 1]
    assert set(metrics["rounds"][1]["sites"]) == set(SITES)
    assert {"global_dice", "local_dice", "steps"} <= set(metrics["rounds"][1]["sites"]["site-2"])
    assert metrics["final"] == result.final and metrics["bytes_per_round"] > 1_000_000
    assert list((archive / "logs" / "fl").rglob("events.out.tfevents.*"))


def test_a_missing_site_dataset_fails_clearly_and_keeps_the_model(
    tmp_path: Path, data_dir: Path
) -> None:
    archive = quick_archive(tmp_path / "archive")
    (archive / "models").mkdir()
    torch.save(fresh_weights(archive), archive / "models" / "model.pt")
    before = digest(archive / "models" / "model.pt")
    spec = JobSpec(
        archive=archive, sites={"site-1": "spine_ct_vertebra", "site-2": "/data/missing"}, rounds=1
    )
    with pytest.raises(FLError) as caught:
        simulate(spec, workspace=tmp_path / "ws", data_dir=data_dir, timeout=600)
    message = str(caught.value)
    assert "site-2" in message and "/data/missing" in message and "0 of 1 rounds" in message
    assert digest(archive / "models" / "model.pt") == before
    assert not (archive / "models" / "model_before_fl.pt").exists()
    assert not (archive / "eval" / "fl_metrics.json").exists()


def test_a_site_crashing_mid_round_fails_the_job(tmp_path: Path, data_dir: Path) -> None:
    """site-2's data reads at first but one image is corrupt: it crashes while training."""
    archive = quick_archive(tmp_path / "archive")
    broken = tmp_path / "broken"
    shutil.copytree(data_dir / "spine_mr_vertebra", broken)
    manifest = json.loads((broken / "dataset.json").read_text())
    image = broken / manifest["training"][0]["image"]
    image.write_bytes(image.read_bytes()[:300])  # truncated gzip
    spec = JobSpec(
        archive=archive, sites={"site-1": "spine_ct_vertebra", "site-2": str(broken)}, rounds=2
    )
    with pytest.raises(FLError, match=r"site-2: ImageReadError: spine_mr_vertebra_train"):
        simulate(spec, workspace=tmp_path / "ws", data_dir=data_dir, timeout=600)
    assert not (archive / "models" / "model.pt").exists()


def local_only(archive: Path, dataset: str, epochs: int, data_dir: Path) -> float:
    """Train on one site's data only; mean Dice over both held-out parts."""
    opened = Archive.open(archive, overrides={"DATASET": dataset, "epochs": epochs})
    train_archive(opened, TrainOptions(data_dir=data_dir))
    scores = [
        validate_archive(
            Archive.open(archive), dataset=data_dir / name, data_dir=data_dir
        ).mean_dice
        for name in SITES.values()
    ]
    return sum(scores) / len(scores)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_acceptance_federated_beats_local_only_and_survives_the_percentile_filter(
    tmp_path: Path, data_dir: Path
) -> None:
    from tests.fl.conftest import FL_ARCHIVE

    rounds, local_epochs = 3, 4
    federated = tmp_path / "federated"
    shutil.copytree(FL_ARCHIVE, federated)
    spec = JobSpec(
        archive=federated, sites=SITES, rounds=rounds, local_epochs=local_epochs, threads=1
    )
    result = simulate(spec, workspace=tmp_path / "ws", data_dir=data_dir)
    baselines = {}
    for site, dataset in SITES.items():
        copy = tmp_path / f"local-{site}"
        shutil.copytree(FL_ARCHIVE, copy)
        baselines[site] = local_only(copy, dataset, rounds * local_epochs, data_dir)
    print({"federated": result.final, "mean": result.mean_dice, "local_only": baselines})
    assert result.mean_dice >= 0.7
    assert all(result.mean_dice > score for score in baselines.values())

    filtered = tmp_path / "filtered"
    shutil.copytree(FL_ARCHIVE, filtered)
    private = JobSpec(
        archive=filtered,
        sites=SITES,
        rounds=rounds,
        local_epochs=local_epochs,
        threads=1,
        privacy=Privacy(percentile=75),
    )
    with_filter = simulate(private, workspace=tmp_path / "ws-filter", data_dir=data_dir)
    print({"percentile_75": with_filter.final, "mean": with_filter.mean_dice})
    assert with_filter.mean_dice >= result.mean_dice - 0.05


def test_cli_simulate_reports_each_round(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from carina.cli.main import app

    monkeypatch.setenv("CARINA_DATA_DIR", str(data_dir))
    archive = quick_archive(tmp_path / "archive", iterations=4)
    sites = [item for site, data in SITES.items() for item in ("--site", f"{site}={data}")]
    result = CliRunner().invoke(
        app,
        [
            "fl",
            "simulate",
            str(archive),
            *sites,
            "--rounds",
            "2",
            "--threads",
            "1",
            "--workspace",
            str(tmp_path / "ws"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "round 1/2: global model Dice at the sites: site-1 " in result.stderr
    assert "round 2/2" in result.stderr
    assert "2 rounds in" in result.stdout and "mean" in result.stdout
