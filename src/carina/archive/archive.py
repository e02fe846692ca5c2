"""Opening an archive: its variables, and its configs resolved to Bundle syntax and typed settings.

``Archive.open(path)`` reads nothing heavy. ``serving_config()`` reads the typed serving description
(:mod:`carina.archive.serving`) without torch or MONAI; ``train_config()`` and
``serving_pipeline()`` read, translate (Clara syntax), rewrite (legacy MONAI names), check for code
(untrusted archives) and validate.
Components are instantiated later, through :class:`ResolvedConfig`, by MONAI's ``ConfigParser``.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carina.archive.bundle_code import bundle_code, check_imports
from carina.archive.clara import is_clara_train_config, translate_train_config
from carina.archive.layout import ArchiveKind, ArchiveLayout, find_root
from carina.archive.legacy import rewrite_legacy
from carina.archive.schema import (
    ServingConfig,
    TrainSettings,
    ValidationConfig,
    read_json,
    validate,
)
from carina.archive.search import SearchSpace, drop_disabled, find_search, strip_search
from carina.archive.security import (
    find_code_files,
    find_code_in_config,
    find_code_in_configs,
    refuse_code,
)
from carina.archive.serving import (
    bundle_serving_config,
    json_object,
    nnunet_serving_config,
    serving_content,
)
from carina.errors import ArchiveError, ConfigError


@dataclass
class ResolvedConfig:
    """A Bundle-syntax config ready for MONAI's ``ConfigParser``.

    Attributes:
        file: the file it came from, for error messages.
        content: the config (components and settings).
        variables: extra top-level ids that references may use (the archive's variables).
        notes: legacy rewrites and dropped sections, for ``carina archive check``.
        code_root: a trusted Bundle's folder: components are built with its own code importable
            (:func:`~carina.archive.bundle_code.bundle_code`); None for everything else.
    """

    file: str
    content: dict[str, Any]
    variables: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    code_root: Path | None = None
    _parser: Any = field(default=None, repr=False)

    def instantiate(self, key: str) -> Any:
        """Build the component (or list of components) at ``key``.

        Raises:
            ConfigError: naming the file, the key (and list index) and what went wrong.
        """
        value = self.content.get(key)
        if value is None:
            raise ConfigError(self.file, key, "required component is missing")
        if isinstance(value, list):
            return [self._build(f"{key}::{index}", f"{key}.{index}") for index in range(len(value))]
        return self._build(key, key)

    def _build(self, config_id: str, shown: str) -> Any:
        code = bundle_code(self.code_root) if self.code_root else contextlib.nullcontext()
        try:
            with code:
                return self.parser.get_parsed_content(config_id)
        except ModuleNotFoundError as exc:
            raise ConfigError(self.file, shown, _unknown_component(str(exc))) from exc
        except KeyError as exc:
            raise ConfigError(self.file, shown, f"reference to an undefined id {exc}") from exc
        except Exception as exc:  # a component's own code (a trusted Bundle's) may raise anything
            cause = exc.__cause__ or exc
            raise ConfigError(self.file, shown, _first_line(cause)) from exc

    @property
    def parser(self) -> Any:
        """The MONAI ``ConfigParser`` over the content and variables (built once)."""
        if self._parser is None:
            from monai.bundle import ConfigParser

            self._parser = ConfigParser({**self.variables, **self.content})
        return self._parser


@dataclass
class TrainConfig:
    """``config_train.json``: typed settings plus the components to instantiate."""

    settings: TrainSettings
    resolved: ResolvedConfig


@dataclass
class ServingPipeline:
    """What inference needs: typed serving settings plus the components to instantiate."""

    settings: ServingConfig
    resolved: ResolvedConfig


@dataclass
class Archive:
    """A model archive folder (Carina/Clara MMAR or MONAI Bundle).

    Attributes:
        layout: its paths.
        kind: MMAR or Bundle.
        trusted: False for archives that arrived from elsewhere (uploads): configs and folders
            that hold code are refused instead of run.
        overrides: ``--set`` values: a plain ``NAME`` sets a variable (or a top-level key of
            ``config_train.json``), a dotted ``a.b.c`` sets that key of ``config_train.json``.
    """

    layout: ArchiveLayout
    kind: ArchiveKind
    trusted: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(
        cls, path: str | Path, *, trusted: bool = True, overrides: Mapping[str, Any] | None = None
    ) -> Archive:
        """Open the archive in folder ``path`` (or in its single wrapping sub-folder).

        Raises:
            ArchiveError: not a folder, or not an archive.
            UntrustedCodeError: an untrusted archive holds code: folders of it, pickled
                checkpoints, or anything but allowed components in any config file.
        """
        folder = Path(path)
        if not folder.is_dir():
            hint = " (unpack it first: carina archive unpack)" if folder.suffix == ".zip" else ""
            raise ArchiveError(f"{folder.name}: no such archive folder{hint}")
        layout = ArchiveLayout(find_root(folder))
        archive = cls(layout, layout.kind(), trusted, dict(overrides or {}))
        if not trusted:
            refuse_code(find_code_in_configs(layout) + find_code_files(layout.root))
        return archive

    @property
    def name(self) -> str:
        """The archive's folder name."""
        return self.layout.root.name

    def variables(self) -> dict[str, Any]:
        """``environment.json`` with plain-name overrides applied."""
        env_path = self.layout.environment
        environment = read_json(env_path) if env_path.is_file() else {}
        if not isinstance(environment, dict):
            raise ConfigError(env_path.name, "", "must be a JSON object of variables")
        for name, value in self.overrides.items():
            if "." not in name and name in environment:
                environment[name] = value
        return environment

    def train_config(self) -> TrainConfig:
        """The training config, translated, rewritten, checked and validated.

        Raises:
            ConfigError: naming the file and key of the first problem.
        """
        if self.kind != ArchiveKind.MMAR:
            raise ArchiveError(
                f"{self.name}: training a {self.kind.value} model here is not supported; serve it"
            )
        file = self.layout.train_config.name
        variables = self.variables()
        raw = json_object(read_json(self.layout.train_config), file)
        notes: list[str] = []
        if is_clara_train_config(raw):
            raw, notes = translate_train_config(raw, variables, file=file)
        content = drop_disabled(strip_search(self._with_overrides(raw, variables, file)))
        content, legacy_notes = rewrite_legacy(content)
        self._check_code(content, file)
        settings = validate(TrainSettings, _resolve_settings(content, variables), file)
        resolved = ResolvedConfig(file, content, variables, notes + legacy_notes)
        return TrainConfig(settings, resolved)

    def search_space(self) -> SearchSpace:
        """The AutoML search blocks of ``config_train.json``, parsed and checked.

        Raises:
            ConfigError: a malformed block, naming its key path.
        """
        file = self.layout.train_config.name
        return find_search(json_object(read_json(self.layout.train_config), file), file)

    def serving_config(self, *, batch: bool = False) -> ServingConfig:
        """The typed serving config: what the model is and how it is served (no components are
        built). ``batch`` prefers ``config_inference.json``; a Bundle's ``metadata.json`` maps to
        the same. A serving config without a network takes ``config_train.json``'s.

        Raises:
            ConfigError: naming the file and key of the first problem.
        """
        if self.kind == ArchiveKind.BUNDLE:
            return bundle_serving_config(self.layout)
        if self.kind == ArchiveKind.NNUNET:
            return nnunet_serving_config(self.layout)
        file, content = serving_content(self.layout, self.variables(), batch=batch)
        return validate(ServingConfig, self._with_network(content), file)

    def serving_pipeline(self, *, batch: bool = False) -> ServingPipeline:
        """The serving config with its components ready to build: legacy names rewritten, the
        network taken from ``config_train.json`` when the serving config has none, code refused
        in untrusted archives.

        Raises:
            ConfigError: naming the file and key of the first problem.
            UntrustedCodeError: an untrusted archive's config holds code.
        """
        if self.kind == ArchiveKind.BUNDLE:
            return self._bundle_serving()
        if self.kind == ArchiveKind.NNUNET:
            raise ArchiveError(
                f"{self.name}: an nnU-Net folder runs through nnunetv2's own predictor, not a "
                "Carina pipeline (check it with `carina model check`)"
            )
        variables = self.variables()
        file, raw = serving_content(self.layout, variables, batch=batch)
        content, notes = rewrite_legacy(raw)
        content = self._with_network(content)
        self._check_code(content, file)
        settings = validate(ServingConfig, content, file)
        return ServingPipeline(settings, ResolvedConfig(file, content, variables, notes))

    def _with_network(self, content: dict[str, Any]) -> dict[str, Any]:
        """``content`` with ``config_train.json``'s network when it names none itself."""
        if content.get("network_def") is None and self.layout.train_config.is_file():
            return {**content, "network_def": self.train_config().settings.network_def}
        return content

    def validation_config(self) -> ValidationConfig:
        """``config_validation.json`` (all defaults when the file is absent)."""
        path = self.layout.validation_config
        if not path.is_file():
            return ValidationConfig()
        content, _ = rewrite_legacy(json_object(read_json(path), path.name))
        self._check_code(content, path.name)
        return validate(ValidationConfig, content, path.name)

    def _bundle_serving(self) -> ServingPipeline:
        file = self.layout.bundle_inference.name
        content = json_object(read_json(self.layout.bundle_inference), file)
        content, notes = rewrite_legacy(content)
        # published Bundles say "." (run from their folder); the server runs from elsewhere
        content["bundle_root"] = str(self.layout.root)
        self._check_code(content, file)
        for key in ("network_def", "preprocessing", "inferer"):
            if key not in content:
                raise ConfigError(file, key, "required id is missing")
        settings = bundle_serving_config(self.layout)
        code_root = None
        if self.trusted:
            code_root = self.layout.root
            check_imports(content, file=file, root=code_root)
        return ServingPipeline(settings, ResolvedConfig(file, content, {}, notes, code_root))

    def _with_overrides(
        self, config: dict[str, Any], variables: dict[str, Any], file: str
    ) -> dict[str, Any]:
        """The training config with ``--set`` applied (a serving config follows its network)."""
        config = copy.deepcopy(config)
        for name, value in self.overrides.items():
            if "." in name:
                _set_path(config, name.split("."), value, file)
            elif name not in variables:
                if name not in config:
                    known = sorted(
                        set(variables)
                        | {k for k, v in config.items() if not isinstance(v, dict | list)}
                    )
                    guess = difflib.get_close_matches(name, known, n=1)
                    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
                    raise ConfigError(file, name, f"not a variable nor a top-level key{hint}")
                config[name] = value
        return config

    def _check_code(self, content: dict[str, Any], file: str) -> None:
        if not self.trusted:
            refuse_code(find_code_in_config(content, file=file))


def _resolve_settings(content: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """The config with ``"@NAME"`` strings in its plain settings (not its components) replaced
    by the variable or top-level value they name, so the typed settings see real values."""
    scalars = {k: v for k, v in content.items() if not isinstance(v, dict | list)}
    names = {**scalars, **variables}

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("@") and value[1:] in names:
            return names[value[1:]]
        if isinstance(value, dict) and "_target_" not in value:
            return {key: resolve(item) for key, item in value.items()}
        return value

    components = set(TrainSettings.model_fields) & {
        "network_def", "loss", "optimizer", "lr_scheduler", "train_preprocessing",
        "val_preprocessing", "train_postprocessing", "val_inferer", "val_postprocessing",
        "iteration_update", "val_iteration_update",
    }  # fmt: skip
    return {k: v if k in components else resolve(v) for k, v in content.items()}


def parse_override(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` as ``(NAME, value)``; the value is JSON when it parses, else text.

    Raises:
        ConfigError: no ``=`` or an empty name.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError("--set", text, "expected NAME=VALUE or a.b.c=VALUE")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip(), value


def _set_path(config: dict[str, Any], path: list[str], value: Any, file: str) -> None:
    current: Any = config
    for depth, part in enumerate(path[:-1]):
        key: Any = int(part) if isinstance(current, list) and part.isdigit() else part
        try:
            current = current[key]
        except (KeyError, IndexError, TypeError) as exc:
            where = ".".join(path[: depth + 1])
            raise ConfigError(file, where, "no such key to --set under") from exc
    last: Any = path[-1]
    if isinstance(current, list):
        if not last.isdigit() or int(last) >= len(current):
            raise ConfigError(file, ".".join(path), "no such list index")
        last = int(last)
    elif not isinstance(current, dict):
        raise ConfigError(file, ".".join(path), "cannot set a key inside a plain value")
    current[last] = value


def _unknown_component(message: str) -> str:
    name = message.split("'")[1] if "'" in message else message
    from monai.bundle.config_item import ComponentLocator

    locator = ComponentLocator()
    locator.get_component_module_name(name)  # builds the table of MONAI components
    known = list(locator._components_table or {})
    guess = difflib.get_close_matches(name.rpartition(".")[2], known, n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return f"unknown component {name!r}{hint}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
