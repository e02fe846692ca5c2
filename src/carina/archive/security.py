"""What counts as code in an archive, and the check that refuses it in untrusted archives.

An uploaded archive is data: its configs may only build the components of
:mod:`carina.archive.components`. Code is: ``$`` expressions, ``%`` includes and lambda strings
anywhere in any config file (``environment.json`` and ``metadata.json`` too: a ``@`` reference
reaches every id of every file MONAI parses); a ``_target_`` that is not an allowed component;
``_requires_`` (builds or evaluates other ids first); a ``_mode_`` other than ``default``,
``callable`` or ``partial`` (``debug`` starts the Python debugger); a ``_disabled_`` that is not a
plain boolean; a network argument that downloads weights; ``custom/``, ``BYOC/`` or ``scripts/``
folders, Python files, and checkpoints that need pickle (anything ``torch.load(weights_only=True)``
refuses; nnU-Net's ``fold_*/*.pth`` too). Nothing of an archive is built or imported before this
check passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from carina.archive.components import DOWNLOAD_ARGUMENTS, allowed_targets
from carina.archive.layout import CODE_FOLDERS, ArchiveLayout
from carina.archive.legacy import rewrite_legacy
from carina.errors import UntrustedCodeError
from carina.limits import MAX_JSON_DEPTH, JsonLimitError, loads_json

#: ``_mode_`` values that build the component (or a callable of it) and nothing else.
SAFE_MODES = ("default", "callable", "partial")
#: Config files of an archive, wherever they sit under ``config/`` or ``configs/``.
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def find_code_in_config(config: Any, *, file: str, clara: bool = False) -> list[str]:
    """Each piece of code in a config, as ``"file: key: what"`` (legacy names are judged by the
    component they are rewritten to). ``clara``: the file may be in Clara's syntax, where a
    string starting with ``#`` is an expression too."""
    findings: list[str] = []
    rewritten, _ = rewrite_legacy(config)
    stack: list[tuple[Any, str]] = [(rewritten, "")]
    while stack:  # iterative: a deeply nested config cannot exhaust the interpreter's stack
        value, where = stack.pop()
        if isinstance(value, list):
            stack.extend((item, _join(where, str(i))) for i, item in enumerate(value))
        elif isinstance(value, dict):
            findings += [f"{file}: {where or '(top)'}: {p}" for p in _component_problems(value)]
            stack.extend((item, _join(where, str(key))) for key, item in value.items())
        elif isinstance(value, str):
            problem = _string_problem(value, clara=clara)
            if problem:
                findings.append(f"{file}: {where}: {problem}")
    return sorted(findings)


def find_code_in_configs(layout: ArchiveLayout) -> list[str]:
    """Code in every config file of an archive (``config/`` and ``configs/``, any depth); a
    config that cannot be read is a finding too (it could not be checked)."""
    findings: list[str] = []
    for folder in (layout.config_dir, layout.root / "configs"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in CONFIG_SUFFIXES or not path.is_file():
                continue
            shown = str(path.relative_to(layout.root))
            try:
                content = _read_config(path)
            except Exception as exc:  # any parser error: unreadable means unchecked
                findings.append(f"{shown}: cannot be checked ({_first_line(exc)})")
                continue
            clara = folder == layout.config_dir
            findings += find_code_in_config(content, file=shown, clara=clara)
    return findings


def find_code_files(root: Path) -> list[str]:
    """Code folders and pickled checkpoints in an archive folder."""
    findings = [f"{name}/: a folder of code" for name in CODE_FOLDERS if (root / name).exists()]
    findings += [
        f"{path.relative_to(root)}: Python source"
        for path in sorted(root.rglob("*.py"))
        if not any(part in CODE_FOLDERS for part in path.relative_to(root).parts)
    ]
    checkpoints = sorted((root / "models").glob("*.pt")) if (root / "models").is_dir() else []
    checkpoints += sorted(root.glob("fold_*/*.pth"))  # an nnU-Net results folder's
    for path in checkpoints:
        try:
            load_weights_only(path)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
            findings.append(
                f"{path.relative_to(root).as_posix()}: not loadable as weights only "
                f"({type(exc).__name__})"
            )
    return findings


def load_weights_only(path: Path) -> Any:
    """A checkpoint loaded with ``torch.load(weights_only=True)``: tensors and plain data, plus
    NumPy scalars and dtypes (nnU-Net logs its figures as NumPy scalars); never other objects.

    Raises:
        Exception: whatever torch raises for a file that holds anything else, or is damaged.
    """
    import numpy as np
    import torch
    from numpy._core.multiarray import scalar

    numpy_data: list[Any] = [scalar, np.dtype, *{type(np.dtype(t)) for t in "?bBhHiIlLqQefdgFDG"}]
    with torch.serialization.safe_globals(numpy_data):
        return torch.load(path, map_location="cpu", weights_only=True)


def refuse_code(findings: list[str]) -> None:
    """Raise :class:`UntrustedCodeError` when anything was found."""
    if findings:
        raise UntrustedCodeError(findings)


def _component_problems(value: dict[str, Any]) -> list[str]:
    problems = []
    target = value.get("_target_")
    if "_target_" in value and not (isinstance(target, str) and target in allowed_targets()):
        problems.append(f"component {_shorten(str(target))} is not an allowed component")
    mode = value.get("_mode_", "default")
    if mode not in SAFE_MODES:
        problems.append(f"_mode_ {_shorten(str(mode))} (only {', '.join(SAFE_MODES)})")
    if "_requires_" in value:
        problems.append("_requires_ builds or evaluates other ids first")
    disabled = value.get("_disabled_", False)
    if not isinstance(disabled, bool) and str(disabled).strip().lower() not in ("true", "false"):
        problems.append(f"_disabled_ {_shorten(str(disabled))} is not true or false")
    if "_target_" in value:
        problems += [
            f"argument {name!r} downloads weights"
            for name in DOWNLOAD_ARGUMENTS
            if value.get(name) not in (None, False, "", 0)
        ]
    return problems


def _string_problem(value: str, *, clara: bool) -> str | None:
    stripped = value.lstrip()
    if stripped.startswith("$") or (clara and stripped.startswith("#")):
        return f"Python expression {_shorten(value)}"
    if stripped.startswith("%"):
        return f"include of another file {_shorten(value)}"
    if stripped.startswith("lambda"):
        return f"lambda {_shorten(value)}"
    return None


def _read_config(path: Path) -> Any:
    data = path.read_bytes()
    if path.suffix.lower() == ".json":
        return loads_json(data, what=path.name)
    try:
        import yaml
    except ImportError as exc:
        raise ValueError("a YAML config needs PyYAML, which is not installed") from exc
    depth = 0
    for event in yaml.parse(data, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise ValueError("YAML aliases are not accepted in uploaded configs")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise JsonLimitError(f"{path.name}: nested deeper than {MAX_JSON_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return json.loads(json.dumps(yaml.safe_load(data), default=str))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _shorten(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
