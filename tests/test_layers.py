"""The dependency direction of DESIGN.md, checked on the import statements of every module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import carina

PACKAGE = Path(carina.__file__).parent

#: Layer of each top-level part; a module may import only parts of its own layer or lower ones.
LAYERS = {
    "errors": 0, "settings": 0, "schemas": 0, "environment": 0, "__init__": 0, "client": 0,
    "io": 1, "data": 1, "archive": 1,
    "engine": 2, "interactive": 2,
    "server": 3, "fl": 3, "automl": 3, "zoo": 3, "cloud": 3,
    "cli": 4, "__main__": 5,
}  # fmt: skip


def part_of(module: Path) -> str:
    return module.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_parts(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n.split(".")[1] for n in names if n.startswith("carina.") and n.count(".") >= 1}


def test_every_part_has_a_layer() -> None:
    parts = {part_of(m) for m in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYERS), f"add {parts - set(LAYERS)} to LAYERS"


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module in PACKAGE.rglob("*.py"):
        part = part_of(module)
        for imported in imported_parts(module):
            if imported == "cli" and part not in ("cli", "__main__"):
                wrong.append(f"{module.relative_to(PACKAGE)} imports carina.cli")
            elif LAYERS[imported] > LAYERS[part]:
                wrong.append(f"{module.relative_to(PACKAGE)} ({part}) imports carina.{imported}")
    assert not wrong, "\n".join(wrong)


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from carina.cli.main import app\n"
        "CliRunner().invoke(app, ['--help'])\n"
        "heavy = {'torch', 'monai', 'numpy', 'nibabel', 'SimpleITK', 'pydicom'}\n"
        "heavy &= set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "[]"
