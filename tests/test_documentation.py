"""Docs that cannot drift: the references against the code they describe, the links, the layout
in the README, and the command blocks marked runnable, run as a user would run them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from carina.cli.main import app as cli_app
from carina.cli.reference import render, updated
from carina.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
MARKDOWN = [ROOT / "README.md", *PAGES]
KINDS = {
    "tutorials": "Tutorials",
    "how-to": "How-to guides",
    "reference": "Reference",
    "explanation": "Explanation",
}
RUNNABLE = re.compile(
    r"^<!-- runnable(?P<slow>: slow)? -->\n```(?P<lang>bash|python)\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)


def test_cli_reference_is_the_apps() -> None:
    page = DOCS / "reference" / "cli.md"
    text = page.read_text()
    assert updated(text, render(cli_app)) == text, "run `make docs` and commit the result"


def test_server_reference_lists_every_endpoint(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
        from carina.server import create_app

    schema = create_app(Settings(workspace=tmp_path, preload_models=False)).openapi()
    served = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    table = (DOCS / "reference" / "server.md").read_text()
    documented = set(re.findall(r"^\|[^|]*\| `([A-Z]+)` \| `(/[^`]*)` \|", table, re.MULTILINE))
    assert documented == served


def test_settings_reference_names_every_setting() -> None:
    table = (DOCS / "reference" / "settings.md").read_text()
    documented = set(re.findall(r"^\| `(CARINA_[A-Z_]+)` \|", table, re.MULTILINE))
    assert documented == {f"CARINA_{name.upper()}" for name in Settings.model_fields}


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


def test_the_index_files_every_page_under_its_kind() -> None:
    index = (DOCS / "index.md").read_text()
    sections = dict(re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", index, re.MULTILINE | re.DOTALL))
    assert set(sections) == set(KINDS.values())
    for page in PAGES:
        if page.name == "index.md":
            continue
        relative = page.relative_to(DOCS)
        kind = KINDS[relative.parts[0]]
        assert f"]({relative.as_posix()})" in sections[kind], f"{relative} under {kind}"


def test_readme_layout_matches_src() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```", 2)[1]
    described = set(re.findall(r"^  ([a-z_]+)\s", layout, re.MULTILINE))
    package = ROOT / "src" / "carina"
    parts = {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    parts |= {p.stem for p in package.glob("*.py") if not p.stem.startswith("__")}
    assert described == parts
    assert "../shared" not in readme, "developer docs live in the repository"


def blocks(*, slow: bool) -> list[tuple[Path, list[tuple[str, str]]]]:
    """Each page's runnable blocks, in order: the short ones of every page, or (``slow``) all
    the blocks of the pages that have a slow one. Short blocks never rely on slow ones."""
    found = []
    for page in MARKDOWN:
        matches = list(RUNNABLE.finditer(page.read_text()))
        chosen = [(m["lang"], m["code"]) for m in matches if slow or not m["slow"]]
        if chosen and (not slow or any(m["slow"] for m in matches)):
            found.append((page, chosen))
    return found


def page_id(value: object) -> str:
    return str(value.relative_to(ROOT)) if isinstance(value, Path) else "blocks"


def run_blocks(page: Path, marked: list[tuple[str, str]], folder: Path, data_dir: Path) -> None:
    """Run a page's blocks in order in one folder, as a user with a clone of Carina would: the
    venv's commands on PATH, the examples beside them, a home of their own."""
    shutil.copytree(ROOT / "examples", folder / "examples", ignore=shutil.ignore_patterns("models"))
    home = folder / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "CARINA_DATA_DIR": str(data_dir),
    }
    env.pop("CARINA_WORKSPACE", None)
    for n, (lang, code) in enumerate(marked):
        command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable]
        done = subprocess.run(
            command,
            input=code if lang == "python" else None,
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert done.returncode == 0, (
            f"{page.relative_to(ROOT)} block {n + 1}:\n{code}\n--- output:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.mark.integration
@pytest.mark.parametrize(("page", "marked"), blocks(slow=False), ids=page_id)
def test_short_command_blocks_run(
    page: Path, marked: list[tuple[str, str]], tmp_path: Path, data_dir: Path
) -> None:
    run_blocks(page, marked, tmp_path, data_dir)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("page", "marked"), blocks(slow=True), ids=page_id)
def test_every_command_block_runs(
    page: Path, marked: list[tuple[str, str]], tmp_path: Path, data_dir: Path
) -> None:
    run_blocks(page, marked, tmp_path, data_dir)
