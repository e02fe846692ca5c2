"""Search blocks in config_train.json: parsing, checks with key paths, values written back, and
the Optuna space they make."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from carina.archive import Archive
from carina.archive.search import apply, drop_disabled, find_search, strip_search
from carina.automl.space import distributions, own_params, suggest
from carina.cli.main import app
from carina.errors import ConfigError
from tests.automl.conftest import POOR_LR, search_archive


def config_of(archive: Path) -> dict[str, Any]:
    return json.loads((archive / "config" / "config_train.json").read_text())


def write(archive: Path, config: dict[str, Any]) -> None:
    (archive / "config" / "config_train.json").write_text(json.dumps(config))


def test_blocks_become_typed_parameters_with_the_archives_own_values(tmp_path: Path) -> None:
    archive = search_archive(tmp_path / "a")
    config = config_of(archive)
    config["train_preprocessing"][6]["search"] = [
        {"domain": "transform", "type": "float", "args": ["prob#aug_p"], "targets": [0.0, 1.0]}
    ]
    config["train_preprocessing"][7]["search"] = [
        {"domain": "transform", "type": "float", "args": ["prob#aug_p"], "targets": [0.0, 1.0]}
    ]
    config["network_def"]["search"] = [
        {"domain": "net", "type": "enum", "args": ["channels", "num_res_units"],
         "targets": [[[8, 16, 32, 64], 1], [[16, 32, 64, 128], 2]]}
    ]  # fmt: skip
    space = find_search(config)
    params = space.by_name()
    assert set(params) == {
        "learning_rate", "train_preprocessing[5].@disabled", "aug_p",
        "network_def.channels+network_def.num_res_units",
    }  # fmt: skip
    lr = params["learning_rate"]
    assert (lr.low, lr.high, lr.log, lr.own) == (1e-4, 3e-2, True, POOR_LR), "lr: log scale"
    assert not params["aug_p"].log
    assert [loc.label for loc in params["aug_p"].locations] == [
        "train_preprocessing[6].prob", "train_preprocessing[7].prob"
    ], "one alias, one value, two keys"  # fmt: skip
    values = {
        "learning_rate": 0.01,
        "aug_p": 0.25,
        "train_preprocessing[5].@disabled": [True],
        "network_def.channels+network_def.num_res_units": [[16, 32, 64, 128], 2],
    }
    out = apply(config, values, space)
    assert out["learning_rate"] == 0.01
    assert out["train_preprocessing"][6]["prob"] == out["train_preprocessing"][7]["prob"] == 0.25
    assert out["train_preprocessing"][5]["_disabled_"] is True
    assert out["network_def"]["num_res_units"] == 2
    assert config["learning_rate"] == POOR_LR, "the archive's own config is untouched"
    built = drop_disabled(strip_search(out))
    assert len(built["train_preprocessing"]) == len(config["train_preprocessing"]) - 1
    assert "search" not in json.dumps(built["train_preprocessing"]) and "search" in built


def test_clara_components_search_their_args(tmp_path: Path) -> None:
    config = {
        "epochs": 10, "learning_rate": 1e-4,
        "train": {"pre_transforms": [
            {"name": "RandomAxisFlip", "args": {"fields": ["image"], "probability": 0.0},
             "search": [{"domain": "transform", "type": "float", "args": ["probability"],
                         "targets": [0.0, 1.0]},
                        {"domain": "transform", "type": "enum", "args": "@disabled",
                         "targets": [[True], [False]]}]}]},
    }  # fmt: skip
    space = find_search(config)
    assert {p.name for p in space.params} == {
        "train.pre_transforms[0].probability", "train.pre_transforms[0].@disabled"
    }  # fmt: skip
    out = apply(
        config,
        {"train.pre_transforms[0].probability": 0.5, "train.pre_transforms[0].@disabled": [True]},
        space,
    )
    flip = out["train"]["pre_transforms"][0]
    assert flip["args"]["probability"] == 0.5 and flip["disabled"] is True


@pytest.mark.parametrize(
    ("block", "where", "message"),
    [
        ({"domain": "lr", "type": "float", "args": ["learning_rate"], "targets": [0.01, 0.001]},
         "search[0].targets", "empty range"),
        ({"domain": "lr", "type": "enum", "args": ["learning_rate"], "targets": []},
         "search[0].targets", "empty range"),
        ({"domain": "lr", "type": "float", "args": ["learning_rat"], "targets": [1e-4, 1e-2]},
         "search[0].args", "unknown key 'learning_rat'.*did you mean 'learning_rate'"),
        ({"domain": "lr", "type": "float", "args": ["task"], "targets": [1e-4, 1e-2]},
         "search[0].args", "type mismatch"),
        ({"domain": "lr", "type": "enum", "args": ["batch_size"], "targets": [[2], ["four"]]},
         "search[0].targets[1]", "type mismatch: batch_size is a number"),
        ({"domain": "lr", "type": "float", "args": ["learning_rate"], "targets": [0, 1e-2]},
         "search[0].targets", "log-scale range must be above 0"),
        ({"domain": "lr", "type": "int", "args": ["learning_rate"], "targets": [1, 2]},
         "search[0].type", "float' or 'enum'"),
    ],
)  # fmt: skip
def test_archive_check_names_the_key_path_of_a_bad_block(
    tmp_path: Path, data_dir: Path, block: dict[str, Any], where: str, message: str
) -> None:
    archive = search_archive(tmp_path / "a")
    config = config_of(archive)
    config["search"] = [block]
    write(archive, config)
    with pytest.raises(ConfigError, match=rf"config_train\.json.*{re.escape(where)}.*{message}"):
        Archive.open(archive).search_space()
    result = CliRunner().invoke(app, ["archive", "check", str(archive)])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)


def test_a_searched_component_still_trains_and_serves(tmp_path: Path) -> None:
    """Search blocks inside components never reach MONAI's constructors."""
    archive = Archive.open(search_archive(tmp_path / "a"))
    resolved = archive.train_config().resolved
    transforms = resolved.instantiate("train_preprocessing")
    assert type(transforms[5]).__name__ == "RandFlipd"


def test_the_optuna_space_starts_from_the_archive(tmp_path: Path) -> None:
    space = Archive.open(search_archive(tmp_path / "a")).search_space()
    kinds = distributions(space)
    assert isinstance(kinds["learning_rate"], optuna.distributions.FloatDistribution)
    assert kinds["learning_rate"].log
    assert kinds["train_preprocessing[5].@disabled"].choices == (True, False)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(own_params(space))
    values = suggest(study.ask(), space)
    assert values == {"learning_rate": POOR_LR, "train_preprocessing[5].@disabled": [False]}
    sampled = suggest(study.ask(), space)
    assert 1e-4 <= sampled["learning_rate"] <= 3e-2


def test_the_command_line_runs_by_default_and_refuses_an_archive_without_search(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    archive = search_archive(tmp_path / "a")
    checked = runner.invoke(app, ["archive", "check", str(archive)])
    assert "AutoML search over learning_rate, train_preprocessing[5].@disabled" in " ".join(
        checked.output.split()
    )
    config = config_of(archive)
    del config["search"], config["train_preprocessing"][5]["search"]
    write(archive, config)
    result = runner.invoke(app, ["automl", str(archive), "--trials", "2"])
    assert isinstance(result.exception, ConfigError)
    assert "no search blocks" in str(result.exception)
    result = runner.invoke(app, ["automl", str(archive), "--pruner", "random"])
    assert isinstance(result.exception, ConfigError) and "median" in str(result.exception)
    assert "Join a running study" in runner.invoke(app, ["automl", "worker", "--help"]).output
