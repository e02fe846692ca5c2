"""``carina model``: the served models of a workspace (add, check, list, history, rollback)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from carina.cli.console import console

if TYPE_CHECKING:
    from carina.zoo.servable import ModelCheck

app = typer.Typer(
    help="Served models: add (trusting their code), check, list, promotion history, rollback.",
    no_args_is_help=True,
)
WORKSPACE = typer.Option(Path("workspace"), help="Workspace folder (models/ inside).")


@app.command("add")
def add(
    source: Path = typer.Argument(
        ..., help="A model folder or zip: Carina/Clara archive, MONAI Bundle, nnU-Net v2 results."
    ),
    name: str | None = typer.Option(None, help="Name to serve it under (default: its folder's)."),
    replace: bool = typer.Option(False, help="Replace an installed model of that name."),
    workspace: Path = WORKSPACE,
) -> None:
    """Check a model the way the server loads it, then install it into WORKSPACE/models/.

    Adding is the decision to trust the model's code: a Bundle's $ expressions, imports and
    scripts/ run in the server (an upload over HTTP stays data unless the server allows code).
    """
    from carina.zoo.servable import add_model

    target, report = add_model(source, workspace / "models", name=name, replace=replace)
    _print_check(report)
    console.print(f"installed: {target}", highlight=False)


@app.command("check")
def check(name: str = typer.Argument(...), workspace: Path = WORKSPACE) -> None:
    """Load an installed model as the server would: configs, requirements, imports, weights."""
    from carina.archive.layout import UPLOAD_MARKER, check_model_name, find_root
    from carina.errors import ModelNotFound
    from carina.zoo.servable import check_model

    folder = workspace / "models" / check_model_name(name)
    if not folder.is_dir():
        raise ModelNotFound(f"model {name!r} not found in {workspace / 'models'}")
    marker = folder / UPLOAD_MARKER
    # an upload is data, unless an admin was allowed to upload code with it
    trusted = not marker.is_file() or '"code": true' in marker.read_text()
    _print_check(check_model(find_root(folder), name=name, trusted=trusted))


@app.command("list")
def list_models(
    workspace: Path = WORKSPACE,
    as_json: bool = typer.Option(False, "--json", help="Print the model cards as JSON."),
) -> None:
    """The model card of every installed model (and why a broken one cannot be served)."""
    from carina.server.services.registry import ModelRegistry

    logging.getLogger("carina.server.services.registry").setLevel(logging.ERROR)  # said below
    registry = ModelRegistry(workspace / "models", memory_budget=0, device="cpu", max_bytes=0)
    index = registry.index()
    cards = [info.card.as_dict() for info in index.models if info.card is not None]
    if as_json:
        console.print_json(json.dumps({"models": cards, "broken": index.broken}))
        return
    for card in cards:
        labels = ", ".join(card["labels"]) or "(any)"
        console.print(
            f"[bold]{card['name']}[/]: {card['kind']} ({card['format']}, from {card['source']}), "
            f"version {card['version']}, labels {labels}; license: "
            f"{card['license'] or 'not stated'}",
            highlight=False,
        )
    for name, problem in index.broken.items():
        console.print(f"[red]{name}[/]: cannot be served: {problem}", highlight=False)


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


def _print_check(report: ModelCheck) -> None:
    card = report.card
    labels = ", ".join(card.labels) or "(any)"
    console.print(
        f"{card.name}: {card.kind} model ({card.format}, from {card.source.value}), "
        f"labels {labels}, version {card.version}",
        highlight=False,
    )
    console.print(f"  license: {card.license or 'not stated'}", highlight=False)
    for line in report.checked:
        console.print(f"  ok: {line}", highlight=False)
    if report.needs:
        console.print(f"  needs (installed): {', '.join(report.needs)}", highlight=False)
    for line in report.code:
        console.print(f"  runs its own code: {line}", highlight=False)
