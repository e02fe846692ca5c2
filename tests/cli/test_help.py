"""``--help`` names what each argument and option takes in words a user reads (``<path>``,
``NAME=VALUE``), never as a Python type (``<list[Path]>``)."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from carina.cli.main import app
from carina.cli.reference import _context, _walk

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md"


def test_no_parameter_shows_a_python_type() -> None:
    root = typer.main.get_command(app)
    shown = []
    for command, ctx in _walk(root, _context(root, "carina", None)):
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            words = [*(record or ()), param.display_type_rich(ctx) or ""]
            if any("<list[" in word for word in words):
                shown.append(f"{ctx.command_path} {param.name}: {words[0]}")
    assert not shown, shown


def test_a_variadic_argument_shows_one_values_type() -> None:
    shown = CliRunner().invoke(app, ["zoo", "verify", "--help"], env={"COLUMNS": "120"})
    assert shown.exit_code == 0
    assert re.search(r"names\.\.\.\s+<str>", shown.output) and "list[" not in shown.output
    shown = CliRunner().invoke(app, ["deid", "--help"], env={"COLUMNS": "120"})
    assert re.search(r"inputs\.\.\.\s+<path>", shown.output) and "list[" not in shown.output


def test_the_reference_shows_no_python_type() -> None:
    assert "<list[" not in REFERENCE.read_text()
