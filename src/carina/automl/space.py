"""An archive's search space (:mod:`carina.archive.search`) as Optuna parameters.

A float block becomes ``suggest_float`` (log scale for learning rates); an enum block becomes
``suggest_categorical`` over its choices, stored as plain values when a choice is one plain value
and as JSON text otherwise. The archive's own values are always a point of the space: an own float
outside its range widens nothing (Optuna takes a fixed value as given), an own choice missing from
the targets is added as one more choice, so the first trial can replay the archive as it is.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import optuna

from carina.archive.search import SearchParam, SearchSpace, choice_label


def labels(param: SearchParam) -> list[Any]:
    """The categorical choices of an enum parameter, the archive's own choice included."""
    found = [choice_label(choice) for choice in param.choices]
    own = choice_label(param.own)
    return found if own in found else [*found, own]


def distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    """Each parameter's Optuna distribution."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for param in space.params:
        if param.kind == "float":
            out[param.name] = optuna.distributions.FloatDistribution(
                param.low, param.high, log=param.log
            )
        else:
            out[param.name] = optuna.distributions.CategoricalDistribution(labels(param))
    return out


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Sample every parameter for ``trial``; returns name -> value to write into the config."""
    values: dict[str, Any] = {}
    # The first trial replays the archive even where its own value lies outside the range.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
        for param in space.params:
            values[param.name] = _suggest_one(trial, param)
    return values


def _suggest_one(trial: optuna.Trial, param: SearchParam) -> Any:
    if param.kind == "float":
        return trial.suggest_float(param.name, param.low, param.high, log=param.log)
    return decode(param, trial.suggest_categorical(param.name, labels(param)))


def decode(param: SearchParam, label: Any) -> list[Any]:
    """An enum parameter's stored choice back as its values, one per config key."""
    for choice in [*param.choices, param.own]:
        if choice_label(choice) == label:
            return list(choice)
    return list(json.loads(label)) if isinstance(label, str) else [label]


def own_params(space: SearchSpace) -> dict[str, Any]:
    """The archive's own values as the study stores them (the first trial's fixed params)."""
    return {
        param.name: param.own if param.kind == "float" else choice_label(param.own)
        for param in space.params
    }
