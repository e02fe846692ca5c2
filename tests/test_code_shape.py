"""The shape STYLE asks of the code: short functions, small modules (checked on every file)."""

from __future__ import annotations

import ast
from pathlib import Path

import carina

PACKAGE = Path(carina.__file__).parent
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500


def test_no_function_is_longer_than_60_lines() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length}")
    assert not long, "split these (decorators and docstrings count):\n" + "\n".join(long)


def test_no_module_is_longer_than_500_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE)}: {lines}"
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, "split these by concept:\n" + "\n".join(long)
