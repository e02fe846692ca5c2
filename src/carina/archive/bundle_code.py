"""A trusted Bundle's own code: its ``imports``, its ``$`` expressions and its ``scripts/`` package.

MONAI runs a Bundle with the Bundle's folder on ``sys.path``, so ``"$import scripts"`` finds the
Bundle's ``scripts/``. A server holds many Bundles, most with a package of that same name, so each
Bundle's components are built with its folder on the path and its own modules in
``sys.modules``, and the modules of the others put aside (:func:`bundle_code`); objects built keep
the modules they were built with. Only trusted Bundles get here: an upload with code is refused
before (:mod:`carina.archive.security`) unless the server allows code uploads.

:func:`check_imports` imports what a config's ``imports`` and ``$import`` expressions name before
anything is built, so a missing package is named with the key that needs it (MONAI's own parser
silently replaces a module it cannot import with a placeholder that fails later).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from carina.errors import ConfigError

#: One Bundle's code on the path at a time (``sys.path`` and ``sys.modules`` are process-wide).
_LOCK = threading.RLock()


def own_modules(root: Path) -> set[str]:
    """The top-level module names a Bundle's folder provides (``scripts``, ``*.py`` files)."""
    if not root.is_dir():
        return set()
    names = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    names |= {p.stem for p in root.glob("*.py")}
    return {name for name in names if name.isidentifier()}


@contextlib.contextmanager
def bundle_code(root: Path) -> Iterator[None]:
    """Within: ``root`` first on ``sys.path``, its own modules (and only its) importable."""
    names = own_modules(root)
    with _LOCK:
        aside = {n: m for n, m in sys.modules.items() if n.split(".")[0] in names}
        for name in aside:
            del sys.modules[name]
        sys.path.insert(0, str(root))
        try:
            yield
        finally:
            sys.path.remove(str(root))
            for name in [n for n in sys.modules if n.split(".")[0] in names]:
                del sys.modules[name]
            sys.modules.update(aside)


def check_imports(content: dict[str, Any], *, file: str, root: Path) -> None:
    """Import every module a config's import statements name, with the Bundle's code on the path.

    Raises:
        ConfigError: naming the key of the first statement whose import fails, and the package
            that is missing (or the error the Bundle's own module raised).
    """
    with bundle_code(root):
        for where, statement in import_statements(content):
            module = _module_of(statement)
            if module is None:
                continue
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                missing = exc.name or module
                raise ConfigError(
                    file,
                    where,
                    f"{statement.strip()!r} needs the package {missing!r}, which is not "
                    "installed here (install it in the server's environment)",
                ) from exc
            except Exception as exc:  # the Bundle's own module failed while importing
                raise ConfigError(
                    file, where, f"{statement.strip()!r} fails: {type(exc).__name__}: {exc}"
                ) from exc


def import_statements(content: Any, where: str = "") -> list[tuple[str, str]]:
    """Each ``$import``/``$from ... import`` string of a config, as ``(key, statement)``."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[Any, str]] = [(content, where)]
    while stack:
        value, at = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{at}.{i}" if at else str(i)) for i, v in enumerate(value))
        elif isinstance(value, str) and value.lstrip().startswith("$"):
            statement = value.lstrip()[1:].strip()
            if statement.startswith(("import ", "from ")):
                found.append((at, statement))
    return sorted(found)


def _module_of(statement: str) -> str | None:
    """The module an import statement imports (None: not a plain import statement)."""
    try:
        node = next(iter(ast.parse(statement).body), None)
    except SyntaxError:
        return None
    if isinstance(node, ast.Import) and node.names:
        return node.names[0].name
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return node.module
    return None
