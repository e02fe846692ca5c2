"""What counts as code in an archive, and the check that refuses it in untrusted archives.

Code is: ``$`` expressions and ``%`` includes in a config that MONAI would evaluate, lambda strings,
a ``_target_`` outside the component libraries Carina allows (any importable callable could
otherwise be called with config arguments), the transforms that call functions or write files
(``Lambda``, ``SaveImage``), ``custom/``, ``BYOC/`` or ``scripts/`` folders, and checkpoints that
need pickle (anything ``torch.load(weights_only=True)`` refuses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from carina.archive.layout import CODE_FOLDERS
from carina.archive.targets import target_module
from carina.errors import UntrustedCodeError

#: Modules whose components an untrusted archive may name.
ALLOWED_MODULES = (
    "monai.transforms",
    "monai.networks",
    "monai.losses",
    "monai.inferers",
    "monai.metrics",
    "monai.apps.deepgrow.transforms",
    "torch.optim",
    "carina.engine.transforms",
    "carina.interactive",
)
#: Components refused even inside the allowed modules: they call functions or write files.
DENIED_COMPONENTS = {"Lambda", "Lambdad", "RandLambda", "RandLambdad", "SaveImage", "SaveImaged"}


def find_code_in_config(config: Any, *, file: str) -> list[str]:
    """Each piece of code in a Bundle-syntax config, as ``"file: key: what"``."""
    findings: list[str] = []
    _scan(config, file, "", findings)
    return findings


def find_code_files(root: Path) -> list[str]:
    """Code folders and pickled checkpoints in an archive folder."""
    import torch

    findings = [f"{name}/: a folder of code" for name in CODE_FOLDERS if (root / name).exists()]
    findings += [
        f"{path.relative_to(root)}: Python source"
        for path in sorted(root.rglob("*.py"))
        if not any(part in CODE_FOLDERS for part in path.relative_to(root).parts)
    ]
    for path in sorted((root / "models").glob("*.pt")) if (root / "models").is_dir() else []:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
            findings.append(
                f"models/{path.name}: not loadable as weights only ({type(exc).__name__})"
            )
    return findings


def refuse_code(findings: list[str]) -> None:
    """Raise :class:`UntrustedCodeError` when anything was found."""
    if findings:
        raise UntrustedCodeError(findings)


def _scan(value: Any, file: str, where: str, findings: list[str]) -> None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            _scan(item, file, f"{where}.{index}" if where else str(index), findings)
        return
    if isinstance(value, dict):
        target = value.get("_target_")
        if isinstance(target, str):
            problem = _target_problem(target)
            if problem:
                findings.append(f"{file}: {where or '(top)'}: {problem}")
        for key, item in value.items():
            _scan(item, file, f"{where}.{key}" if where else str(key), findings)
        return
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped.startswith("$"):
            findings.append(f"{file}: {where}: Python expression {_shorten(value)}")
        elif stripped.startswith("%"):
            findings.append(f"{file}: {where}: include of another file {_shorten(value)}")
        elif stripped.startswith("lambda"):
            findings.append(f"{file}: {where}: lambda {_shorten(value)}")


def _target_problem(target: str) -> str | None:
    name = target.rpartition(".")[2]
    if name in DENIED_COMPONENTS:
        return f"component {target!r} calls functions or writes files"
    module = target_module(target)
    if module is None:
        return None  # unknown names fail later, when the component is built
    if not module.startswith(ALLOWED_MODULES):
        return f"component {target!r} is outside the allowed libraries"
    return None


def _shorten(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
