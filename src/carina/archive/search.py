"""AutoML search spaces declared in ``config_train.json``: Clara-style ``"search"`` blocks.

A block sits in any component (or at the top level, for top-level keys such as
``learning_rate``)::

    {"_target_": "RandFlipd", "keys": ["image", "label"], "prob": 0.5,
     "search": [{"domain": "transform", "type": "float", "args": ["prob"], "targets": [0.0, 1.0]},
                {"domain": "transform", "type": "enum", "args": ["@disabled"],
                 "targets": [[true], [false]]}]}

* ``args`` name keys of that component (for a Clara component, keys of its ``"args"``);
  ``@disabled`` switches the component on or off (MONAI's ``_disabled_``, Clara's ``disabled``).
* ``float``: ``targets`` is ``[low, high]``; every arg gets the one sampled value. Learning rates
  (domain ``lr``) are searched on a log scale unless ``"log": false``.
* ``enum``: ``targets`` is a list of choices, each a list with one value per arg.
* ``"key#alias"`` links values across blocks: every arg with the same alias gets one value (the
  blocks must agree on type and targets).

:func:`find_search` parses and checks the blocks (errors name the key path); :func:`apply` writes
sampled values into a copy of the config; :func:`strip_search` removes the component blocks and
:func:`drop_disabled` the switched-off list items before the config is built. Nothing here
imports Optuna (``carina.automl`` maps the space onto it).
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from carina.archive.schema import validate
from carina.errors import ConfigError

DISABLED = "@disabled"
Path_ = tuple[str | int, ...]


class SearchBlock(BaseModel):
    """One item of a ``"search"`` list, as written."""

    model_config = ConfigDict(extra="forbid")

    domain: str = Field(min_length=1)
    type: Literal["float", "enum"]
    args: list[str] = Field(min_length=1)
    targets: list[Any]
    log: bool | None = None

    @field_validator("args", mode="before")
    @classmethod
    def _one_arg_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


@dataclass(frozen=True)
class Location:
    """Where a searched value goes: the component's key path and the key inside it."""

    component: Path_
    key: str
    clara: bool = False

    @property
    def label(self) -> str:
        """``train_preprocessing[5].prob``, ``learning_rate``."""
        key = "@disabled" if self.key in ("_disabled_", "disabled") else self.key
        return _label((*self.component, key))


@dataclass
class SearchParam:
    """One searched value (a float range or a set of choices) and the keys it sets.

    Attributes:
        name: the parameter's name in the study: the alias, else the location's label.
        kind: ``float`` or ``enum``.
        low, high, log: the float range.
        choices: for ``enum``, each choice's values, one per location.
        locations: the config keys set (one value each for ``float``; per position for ``enum``).
        own: the archive's own value (float) or own choice (a list of values, one per location).
        domain: the block's domain (lr, net, transform, ...).
    """

    name: str
    kind: Literal["float", "enum"]
    locations: list[Location]
    own: Any
    domain: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: list[list[Any]] = field(default_factory=list)

    def values(self, sampled: Any) -> list[tuple[Location, Any]]:
        """The (location, value) pairs a sampled value sets."""
        if self.kind == "float":
            return [(location, sampled) for location in self.locations]
        return list(zip(self.locations, sampled, strict=True))


@dataclass
class SearchSpace:
    """Every searched value of a config."""

    params: list[SearchParam] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.params)

    def by_name(self) -> dict[str, SearchParam]:
        """Parameters by name."""
        return {param.name: param for param in self.params}


def find_search(config: dict[str, Any], file: str = "config_train.json") -> SearchSpace:
    """Parse and check every ``"search"`` block of a training config.

    Raises:
        ConfigError: a malformed block, an empty range, an unknown key, a type mismatch, or
            aliased blocks that disagree; the message names the block's key path.
    """
    found: dict[str, SearchParam] = {}
    for component, blocks in _blocks(config, ()):
        owner = _get(config, component)
        for index, raw in enumerate(blocks):
            where = _label((*component, "search", index))
            try:
                block = validate(SearchBlock, raw, file)
            except ConfigError as exc:
                key = f"{where}.{exc.key}" if exc.key else where
                raise ConfigError(file, key, exc.reason) from None
            for param in _params(block, owner, component, where, file):
                _merge(found, param, where, file)
    return SearchSpace(list(found.values()))


def apply(config: dict[str, Any], values: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """A copy of ``config`` with each parameter's sampled value written to its keys."""
    out = copy.deepcopy(config)
    params = space.by_name()
    for name, sampled in values.items():
        for location, value in params[name].values(sampled):
            owner = _get(out, location.component)
            clara_arg = location.clara and not _is_flag(location)
            target = owner.setdefault("args", {}) if clara_arg else owner
            target[location.key] = value
    return out


def strip_search(config: Any, *, top: bool = True) -> Any:
    """``config`` without the ``"search"`` blocks of its components (a top-level block stays:
    the typed settings know it)."""
    if isinstance(config, dict):
        return {
            key: strip_search(value, top=False)
            for key, value in config.items()
            if not (key == "search" and not top)
        }
    if isinstance(config, list):
        return [strip_search(item, top=False) for item in config]
    return config


def drop_disabled(config: Any) -> Any:
    """``config`` without the list items switched off by ``"_disabled_": true`` (a searched
    ``@disabled`` writes it; MONAI would build them as ``None``)."""
    if isinstance(config, dict):
        return {key: drop_disabled(value) for key, value in config.items()}
    if isinstance(config, list):
        return [
            drop_disabled(item)
            for item in config
            if not (isinstance(item, dict) and item.get("_disabled_") in (True, "true", "True"))
        ]
    return config


def choice_label(values: list[Any]) -> Any:
    """A choice as the study stores it: the value itself when it is one plain value, else JSON."""
    if len(values) == 1 and (values[0] is None or isinstance(values[0], bool | int | float | str)):
        return values[0]
    return json.dumps(values)


def _blocks(node: Any, path: Path_) -> list[tuple[Path_, list[Any]]]:
    found: list[tuple[Path_, list[Any]]] = []
    if isinstance(node, dict):
        if "search" in node:
            blocks = node["search"]
            if not isinstance(blocks, list):
                raise ConfigError("config_train.json", _label((*path, "search")), "must be a list")
            found.append((path, blocks))
        for key, value in node.items():
            if key != "search":
                found += _blocks(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _blocks(value, (*path, index))
    return found


def _get(config: Any, path: Path_) -> Any:
    node = config
    for part in path:
        node = node[part]
    return node


def _label(path: Path_) -> str:
    """A key path as text: ``train_preprocessing[5].search[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def _is_flag(location: Location) -> bool:
    return location.key in ("_disabled_", "disabled")


Members = list[tuple[int, Location, Any]]


def _params(
    block: SearchBlock, owner: dict[str, Any], component: Path_, where: str, file: str
) -> list[SearchParam]:
    groups = _groups(block, owner, component, where, file)
    if block.type == "float":
        return [
            _float_param(block, alias, members, where, file) for alias, members in groups.items()
        ]
    choices = _choices(block, where, file)
    if len(groups) > 1:
        raise ConfigError(file, f"{where}.args", "an enum block's args share one alias or none")
    ((alias, members),) = groups.items()
    for number, choice in enumerate(choices):
        for position, location, own in members:
            _same_type(choice[position], own, location, f"{where}.targets[{number}]", file)
    return [
        SearchParam(
            name=alias or "+".join(location.label for _, location, _ in members),
            kind="enum",
            locations=[location for _, location, _ in members],
            own=[own for _, _, own in members],
            domain=block.domain,
            choices=choices,
        )
    ]


def _groups(
    block: SearchBlock, owner: dict[str, Any], component: Path_, where: str, file: str
) -> dict[str, Members]:
    """The block's args by alias: each arg's position, where it is set, and its own value."""
    clara = bool(component) and "_target_" not in owner and ("name" in owner or "path" in owner)
    keys = owner.get("args", {}) if clara else owner
    groups: dict[str, Members] = {}
    for position, arg in enumerate(block.args):
        key, _, alias = arg.partition("#")
        if key == DISABLED:
            if not component:
                raise ConfigError(file, f"{where}.args", "@disabled needs a component")
            flag = "disabled" if clara else "_disabled_"
            location = Location(component, flag, clara)
            own: Any = owner.get(flag, False)
        elif key in keys:
            location = Location(component, key, clara)
            own = keys[key]
        else:
            names = sorted(k for k in keys if not k.startswith("_") and k != "search")
            guess = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {guess[0]!r}?" if guess else f"keys: {', '.join(names)}"
            place = _label(component) if component else "the top level"
            raise ConfigError(file, f"{where}.args", f"unknown key {key!r} in {place} ({hint})")
        groups.setdefault(alias, []).append((position, location, own))
    return groups


def _float_param(
    block: SearchBlock, alias: str, members: Members, where: str, file: str
) -> SearchParam:
    """One float parameter over every place its alias is set."""
    low, high = _range(block, where, file)
    for _, location, own in members:
        if isinstance(own, bool) or not isinstance(own, int | float):
            raise ConfigError(
                file,
                f"{where}.args",
                f"type mismatch: a float search needs a number at {location.label}, "
                f"which is {json.dumps(own)}",
            )
    log = block.log if block.log is not None else block.domain == "lr"
    if log and low <= 0:
        raise ConfigError(file, f"{where}.targets", "a log-scale range must be above 0")
    return SearchParam(
        name=alias or members[0][1].label,
        kind="float",
        locations=[location for _, location, _ in members],
        own=float(members[0][2]),
        domain=block.domain,
        low=low,
        high=high,
        log=log,
    )


def _range(block: SearchBlock, where: str, file: str) -> tuple[float, float]:
    targets = block.targets
    if len(targets) != 2 or not all(
        isinstance(t, int | float) and not isinstance(t, bool) for t in targets
    ):
        raise ConfigError(file, f"{where}.targets", "a float search needs [low, high] numbers")
    low, high = float(targets[0]), float(targets[1])
    if not low < high:
        raise ConfigError(
            file, f"{where}.targets", f"empty range: low {low} is not below high {high}"
        )
    return low, high


def _choices(block: SearchBlock, where: str, file: str) -> list[list[Any]]:
    if not block.targets:
        raise ConfigError(file, f"{where}.targets", "empty range: an enum search needs choices")
    choices = []
    for index, choice in enumerate(block.targets):
        values = choice
        if len(block.args) == 1 and not (isinstance(choice, list) and len(choice) == 1):
            values = [choice]  # a single arg's choices may be written bare
        if not isinstance(values, list) or len(values) != len(block.args):
            raise ConfigError(
                file,
                f"{where}.targets[{index}]",
                f"each choice is a list of {len(block.args)} value(s), one per arg",
            )
        choices.append(values)
    return choices


def _same_type(value: Any, own: Any, location: Location, where: str, file: str) -> None:
    def kind(item: Any) -> str:
        if isinstance(item, bool):
            return "a boolean"
        if isinstance(item, int | float):
            return "a number"
        if isinstance(item, str):
            return "text"
        if isinstance(item, list):
            return "a list"
        if isinstance(item, dict):
            return "an object"
        return "null"

    if own is None or (isinstance(own, str) and own.startswith(("@", "$"))):
        return  # unset or computed: any value may go there
    if kind(value) != kind(own):
        raise ConfigError(
            file,
            where,
            f"type mismatch: {location.label} is {kind(own)}, "
            f"the choice {json.dumps(value)} is {kind(value)}",
        )


def _merge(found: dict[str, SearchParam], param: SearchParam, where: str, file: str) -> None:
    """Join blocks that share an alias: one value (float) or one choice number (enum)."""
    other = found.get(param.name)
    if other is None:
        found[param.name] = param
        return
    if param.kind == "float":
        agree = (other.kind, other.low, other.high, other.log) == (
            "float", param.low, param.high, param.log
        )  # fmt: skip
    else:
        agree = other.kind == "enum" and len(other.choices) == len(param.choices)
    if not agree:
        raise ConfigError(
            file, where, f"alias {param.name!r} is searched with other targets elsewhere"
        )
    if param.kind == "enum":
        other.choices = [a + b for a, b in zip(other.choices, param.choices, strict=True)]
        other.own = other.own + param.own
    other.locations += param.locations
