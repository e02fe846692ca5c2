"""The dependency direction of docs/explanation/architecture.md, checked on every import statement
(inside functions and ``TYPE_CHECKING`` blocks too): imports point down the layers, and no cycle
exists between packages, between the parts of any package, or between modules."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import carina

PACKAGE = Path(carina.__file__).parent
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "explanation" / "architecture.md"

#: Layer of each top-level part; a module may import only parts of its own layer or lower ones,
#: and parts of one layer must not import each other in a cycle.
LAYERS = {
    "__init__": 0, "errors": 0, "settings": 0, "schemas": 0, "environment": 0,
    "files": 1, "limits": 1, "client": 1, "auth": 1, "audit": 1,
    "io": 2, "data": 2, "archive": 2, "deid": 2,
    "engine": 3, "interactive": 3,
    "kinds": 4, "zoo": 4, "datastore": 4, "learning": 4,
    "server": 5, "fl": 5, "automl": 5, "cloud": 5,
    "cli": 6,
    "__main__": 7,
}  # fmt: skip

Graph = dict[str, set[str]]


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module under ``root`` (the folder of ``package``) by dotted name."""
    names = {}
    for path in root.rglob("*.py"):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(root: Path, package: str) -> Graph:
    """Module -> the modules of ``package`` it imports, from every import statement."""
    modules = module_names(root, package)
    graph: Graph = defaultdict(set)
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*here[: len(here) - node.level + 1], *filter(None, [base])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def collapse(graph: Graph, parent: str) -> Graph:
    """The graph between the direct children (sub-packages and modules) of package ``parent``."""
    prefix = parent + "."

    def child(module: str) -> str | None:
        return prefix + module[len(prefix) :].split(".")[0] if module.startswith(prefix) else None

    collapsed: Graph = defaultdict(set)
    for source, targets in graph.items():
        for target in targets:
            a, b = child(source), child(target)
            if a and b and a != b:
                collapsed[a].add(b)
    return collapsed


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def all_cycles(root: Path, package: str) -> list[list[str]]:
    """Cycles between modules, and between the parts of every package (the top one included)."""
    graph = import_graph(root, package)
    packages = [
        name for name, path in module_names(root, package).items() if path.name == "__init__.py"
    ]
    found = cycles(graph)
    for parent in packages:
        found += cycles(collapse(graph, parent))
    return found


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_has_a_layer() -> None:
    parts = {part_of(name) for name in module_names(PACKAGE, "carina")}
    assert parts <= set(LAYERS), f"add {parts - set(LAYERS)} to LAYERS (and the architecture doc)"


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, targets in import_graph(PACKAGE, "carina").items():
        part = part_of(module)
        for imported in {part_of(target) for target in targets} - {part}:
            if imported == "cli" and part != "__main__":
                wrong.append(f"{module} imports carina.cli")
            elif part == "client" and imported not in ("errors", "schemas", "__init__"):
                wrong.append(f"{module}: the client may import only errors and schemas")
            elif LAYERS[imported] > LAYERS[part]:
                wrong.append(f"{module} (layer {LAYERS[part]}) imports carina.{imported}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_at_any_level() -> None:
    assert all_cycles(PACKAGE, "carina") == []


def plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_cycle_check_finds_planted_cycles(tmp_path: Path) -> None:
    between_packages = plant(
        tmp_path / "one",
        {
            "__init__.py": "",
            "low/__init__.py": "",
            "low/a.py": "def late():\n    from one.high.b import thing\n",
            "high/__init__.py": "",
            "high/b.py": "from one.low import a\nthing = 1\n",
        },
    )
    assert ["one.high", "one.low"] in all_cycles(between_packages, "one")
    between_modules = plant(
        tmp_path / "two",
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from two.a import x\n",
        },
    )
    found = all_cycles(between_modules, "two")
    assert ["two.a", "two.b"] in found
    acyclic = plant(tmp_path / "three", {"__init__.py": "", "a.py": "from three import b\n"})
    (acyclic / "b.py").write_text("import os\n")
    assert all_cycles(acyclic, "three") == []


def test_no_router_imports_another() -> None:
    graph = import_graph(PACKAGE, "carina")
    routers = {name for name in graph if name.startswith("carina.server.routers.")}
    wrong = [f"{name} imports {target}" for name in routers for target in graph[name] & routers]
    assert not wrong, "\n".join(wrong)


def documented_layers(text: str) -> Iterable[tuple[int, str]]:
    """``(layer, part)`` from the architecture doc's table rows ``| 3 | `engine`, ... |``."""
    for match in re.finditer(r"^\|\s*(\d+)\s*\|([^|]+)\|", text, re.MULTILINE):
        for part in re.findall(r"`([a-z_]+)`", match.group(2)):
            yield int(match.group(1)), part


def test_the_architecture_doc_states_these_layers() -> None:
    documented = {part: layer for layer, part in documented_layers(ARCHITECTURE.read_text())}
    assert documented == LAYERS


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
