"""Server fixtures: a workspace with real models, an in-process client, real server processes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from carina.zoo import install_archive
from tests.servers import ServerProcess, start_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "archives"


def untrained_archive(name: str, target: Path, *, seed: int = 0) -> Path:
    """An example archive with freshly initialised weights: exercises the serving path of an
    interactive model type that the zoo does not ship yet (its output is not meant to be good)."""
    from carina.archive import Archive
    from carina.engine.network import build_network

    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("models", "eval"))
    torch.manual_seed(seed)
    network = build_network(Archive.open(target).serving_pipeline().resolved)
    (target / "models").mkdir()
    torch.save(network.state_dict(), target / "models" / "model.pt")
    return target


def two_channel_archive(source: Path, models: Path, name: str = "two_channel") -> Path:
    """A copy of the segmentation archive ``source`` whose network takes two input channels
    (fresh weights): a model that does not fit a one-channel image."""
    import json

    from carina.archive import Archive
    from carina.engine.network import build_network

    target = models / name
    shutil.copytree(source, target)
    config_file = target / "config" / "config_aiaa.json"
    config = json.loads(config_file.read_text())
    network = Archive.open(target).serving_pipeline().resolved.content["network_def"]
    config["network_def"] = {**network, "in_channels": 2}
    config_file.write_text(json.dumps(config))
    resolved = Archive.open(target).serving_pipeline().resolved
    torch.save(build_network(resolved).state_dict(), target / "models" / "model.pt")
    return target


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``models/`` folder: two zoo models and untrained DExtr3D / DeepGrow 3D archives."""
    workspace = tmp_path_factory.mktemp("store")
    for name in ("spine_ct_vertebrae", "deepgrow_2d"):
        install_archive(name, workspace)
    untrained_archive("annotation_dextr3d", workspace / "models" / "annotation_dextr3d")
    untrained_archive("deepgrow_3d", workspace / "models" / "deepgrow_3d")
    return workspace / "models"


@pytest.fixture
def workspace(tmp_path: Path, model_store: Path) -> Path:
    """A fresh workspace holding a copy of the model store."""
    folder = tmp_path / "workspace"
    shutil.copytree(model_store, folder / "models")
    return folder


@pytest.fixture
def server(workspace: Path) -> Iterator[ServerProcess]:
    """One real server on a fresh workspace, stopped at the end."""
    running = start_server(workspace)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, model_store: Path
) -> Iterator[ServerProcess]:
    """One real server for a whole test module (tests must not change its models)."""
    folder = tmp_path_factory.mktemp("shared") / "workspace"
    shutil.copytree(model_store, folder / "models")
    running = start_server(folder)
    try:
        yield running
    finally:
        running.stop()
