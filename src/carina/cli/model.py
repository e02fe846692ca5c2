"""``carina model``: the served models of a workspace (history and rollback)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from carina.cli.console import console

app = typer.Typer(help="Served models: promotion history, rollback.", no_args_is_help=True)
WORKSPACE = typer.Option(Path("workspace"), help="Workspace folder (models/ inside).")


@app.command("history")
def show_history(name: str = typer.Argument(...), workspace: Path = WORKSPACE) -> None:
    """Every promotion, refusal and rollback of a model, with the figures, as JSON."""
    from carina.learning import history

    console.print_json(json.dumps(history(workspace / "models", name)))


@app.command("rollback")
def rollback(name: str = typer.Argument(...), workspace: Path = WORKSPACE) -> None:
    """Put back the weights the last promotion replaced (every replica picks them up)."""
    from carina.learning import rollback as roll_back

    record = roll_back(workspace / "models", name)
    console.print(f"{name}: restored the weights of {record['restored']}", highlight=False)
