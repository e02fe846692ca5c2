"""Uploaded archives are data: every code vector in every config file is refused before anything
is built, and the list of allowed components holds only components that compute on data."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from carina.archive import Archive
from carina.archive.components import allowed_names, allowed_targets
from carina.errors import UntrustedCodeError
from tests.archive.conftest import copy_example, write_json

#: Each way a config can run code, write or read files, or reach the network, as a change to a
#: config value (``where`` is a key of the file the change lands in).
VECTORS: dict[str, Any] = {
    "expression": "$__import__('os').system('touch PWNED')",
    "include": "%/etc/hosts::x",
    "lambda": "lambda x: x",
    "file_writing_target": {
        "_target_": "monai.networks.utils.save_state",
        "src": {},
        "path": "PWNED",
    },
    "short_file_writing_target": {"_target_": "save_state", "src": {}, "path": "PWNED"},
    "torch_save": {"_target_": "torch.save", "obj": 1, "f": "PWNED"},
    "subprocess": {"_target_": "subprocess.run", "args": ["touch", "PWNED"]},
    "file_reading_transform": {"_target_": "LoadImaged", "keys": "image"},
    "file_writing_transform": {"_target_": "SaveImaged", "keys": "image", "output_dir": "."},
    "function_calling_transform": {"_target_": "Lambdad", "keys": "image", "func": "@x"},
    "network_touching_target": {"_target_": "monai.apps.download_url", "url": "http://x"},
    "downloading_network": {
        "_target_": "DenseNet121",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "pretrained": True,
    },
    "debug_mode": {"_target_": "Identity", "_mode_": "debug"},
    "requires": {"_target_": "Identity", "_requires_": "@network_def"},
    "disabled_expression": {"_target_": "Identity", "_disabled_": "$print('x') or True"},
}
#: Every config file of an MMAR, and the key each change is put under.
MMAR_FILES = {
    "config_train.json": "loss",
    "config_aiaa.json": "extra",
    "config_validation.json": "extra",
    "environment.json": "EXTRA",
    "config_inference.json": "extra",
    "anything_else.json": "extra",
}


def planted(root: Path, file: str, key: str, value: Any) -> Path:
    """``value`` put under ``key`` of ``file`` (created when the archive has none)."""
    folder = "configs" if file in ("metadata.json", "inference.json") else "config"
    path = root / folder / file
    content = json.loads(path.read_text()) if path.is_file() else {}
    content[key] = value
    return write_json(path, content)


@pytest.mark.parametrize("vector", sorted(VECTORS))
@pytest.mark.parametrize("file", sorted(MMAR_FILES))
def test_every_code_vector_in_every_mmar_config_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str, vector: str
) -> None:
    monkeypatch.chdir(tmp_path)
    root = copy_example("spine_ct_vertebrae", tmp_path / "upload")
    planted(root, file, MMAR_FILES[file], VECTORS[vector])
    with pytest.raises(UntrustedCodeError) as caught:
        Archive.open(root, trusted=False)
    assert any(f.startswith(f"config/{file}: ") for f in caught.value.findings)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("vector", sorted(VECTORS))
@pytest.mark.parametrize("file", ["metadata.json", "inference.json"])
def test_every_code_vector_in_every_bundle_config_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str, vector: str
) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "bundle"
    write_json(root / "configs" / "metadata.json", {"version": "1", "network_data_format": {}})
    write_json(root / "configs" / "inference.json", {"network_def": {"_target_": "UNet"}})
    planted(root, file, "extra", VECTORS[vector])
    with pytest.raises(UntrustedCodeError) as caught:
        Archive.open(root, trusted=False)
    assert any(f.startswith(f"configs/{file}: extra") for f in caught.value.findings)


def test_expression_in_environment_reached_by_reference_never_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: ``environment.json`` holds the expression, a config only references it."""
    monkeypatch.chdir(tmp_path)
    root = copy_example("spine_ct_vertebrae", tmp_path / "upload")
    planted(root, "environment.json", "CMD", "$__import__('pathlib').Path('PWNED').touch()")
    aiaa = json.loads((root / "config" / "config_aiaa.json").read_text())
    aiaa["inferer"]["sw_batch_size"] = "@CMD"
    write_json(root / "config" / "config_aiaa.json", aiaa)
    with pytest.raises(UntrustedCodeError, match=r"config/environment.json: CMD: Python"):
        Archive.open(root, trusted=False).serving_pipeline()
    assert not (tmp_path / "PWNED").exists()


def test_save_state_inside_monai_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 2: a ``_target_`` inside the MONAI modules that were allowed wholesale."""
    monkeypatch.chdir(tmp_path)
    root = copy_example("spine_ct_vertebrae", tmp_path / "upload")
    aiaa = json.loads((root / "config" / "config_aiaa.json").read_text())
    aiaa["postprocessing"].append(VECTORS["file_writing_target"])
    write_json(root / "config" / "config_aiaa.json", aiaa)
    with pytest.raises(UntrustedCodeError, match="save_state' is not an allowed component"):
        Archive.open(root, trusted=False)
    assert not (tmp_path / "PWNED").exists()


def test_debug_mode_is_refused(tmp_path: Path) -> None:
    """Item 3: ``"_mode_": "debug"`` would start the Python debugger in the server."""
    root = copy_example("spine_ct_vertebrae", tmp_path / "upload")
    aiaa = json.loads((root / "config" / "config_aiaa.json").read_text())
    aiaa["inferer"]["_mode_"] = "debug"
    write_json(root / "config" / "config_aiaa.json", aiaa)
    with pytest.raises(UntrustedCodeError, match="inferer: _mode_ 'debug'"):
        Archive.open(root, trusted=False)


def test_clara_expression_in_an_mmar_config_is_refused(tmp_path: Path) -> None:
    root = copy_example("spine_ct_vertebrae", tmp_path / "upload")
    planted(root, "config_train.json", "learning_rate", "#__import__('os').getcwd()")
    with pytest.raises(UntrustedCodeError, match="learning_rate: Python expression"):
        Archive.open(root, trusted=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &x [1, 2]\nb: *x\n", "aliases"),
        ("a: " + "[" * 200 + "]" * 200 + "\n", "nested deeper"),
        ("a: !!python/object/apply:os.system ['touch PWNED']\n", "cannot be checked"),
    ],
)
def test_hostile_yaml_configs_cannot_be_checked_and_are_refused(
    tmp_path: Path, text: str, expected: str
) -> None:
    root = tmp_path / "bundle"
    write_json(root / "configs" / "metadata.json", {"version": "1"})
    (root / "configs" / "inference.yaml").write_text(text)
    with pytest.raises(UntrustedCodeError, match=expected):
        Archive.open(root, trusted=False)


def test_deeply_nested_config_is_a_clear_error(tmp_path: Path) -> None:
    root = copy_example("spine_ct_vertebrae", tmp_path / "upload")
    (root / "config" / "config_aiaa.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UntrustedCodeError, match=r"config_aiaa.json: cannot be checked .*nested"):
        Archive.open(root, trusted=False)
    from carina.errors import ConfigError

    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        Archive.open(root).serving_config()


@pytest.mark.parametrize(
    "name",
    ["spine_ct_vertebrae", "brain_mr_tissue", "deepgrow_2d", "deepgrow_3d", "annotation_dextr3d"],
)
def test_the_shipped_archives_are_accepted_as_uploads(tmp_path: Path, name: str) -> None:
    root = copy_example(name, tmp_path / name)
    archive = Archive.open(root, trusted=False)
    archive.serving_pipeline()
    archive.train_config()
    archive.validation_config()


# -- the list itself -----------------------------------------------------------------------------

#: Argument names that would let a config name a file, a URL or a function to call.
_DANGEROUS_ARGUMENTS = {
    "func", "filename", "output_dir", "writer", "reader", "url", "path", "file", "cache_dir",
    "logger_handler", "lr_lambda", "path_or_repo_id", "pretrained_url", "data_root_dir",
}  # fmt: skip


def _families() -> tuple[type, ...]:
    import monai.inferers
    import monai.metrics
    import torch
    from monai.transforms import Transform

    return (
        Transform,
        torch.nn.Module,
        monai.inferers.Inferer,
        monai.metrics.Metric,
        torch.optim.Optimizer,
        torch.optim.lr_scheduler.LRScheduler,
        torch.optim.lr_scheduler.ReduceLROnPlateau,
    )


def test_every_allowed_component_exists_and_takes_no_file_url_or_function() -> None:
    import importlib

    families = _families()
    problems = []
    for package, names in allowed_names().items():
        module = importlib.import_module(package)
        for name in names:
            component = getattr(module, name, None)
            ours = package.startswith("carina.")  # reviewed here, e.g. an iteration_update
            if not inspect.isclass(component) or not (ours or issubclass(component, families)):
                problems.append(f"{package}.{name}: missing or not a component class")
                continue
            arguments = set(inspect.signature(component.__init__).parameters)
            if arguments & _DANGEROUS_ARGUMENTS:
                problems.append(f"{package}.{name}: takes {arguments & _DANGEROUS_ARGUMENTS}")
    assert problems == []


def test_short_names_resolve_to_the_allowed_component() -> None:
    """A bare name is resolved by MONAI; it must land on the very class the list allows."""
    from monai.bundle import ConfigComponent

    targets = allowed_targets()
    for name in (t for t in targets if "." not in t):
        located = ConfigComponent({"_target_": name}).resolve_module_name()
        assert located in targets or f"{located}.{name}" in targets, name
